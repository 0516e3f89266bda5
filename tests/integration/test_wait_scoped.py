"""`?wait=true` waits for the switches a write changes, not for every switch (issue 11).

Two hypervisors (private OVS instances in their own namespaces) run by the real
controller process; project A's network has its port on hv1, project B's on hv2.
hv2's ovs-vswitchd is then frozen with SIGSTOP: its OpenFlow connection stays open
but nothing it is sent is ever answered, so every push to it hangs. A write on B's
network still times out (504: it changes hv2), while writes on A's network answer
within their wait as usual (they change hv1 only), confirmed installed on hv1.
Once hv2 is thawed, it catches up.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import wait_active
from topologies import netns as nsutil
from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

pytestmark = pytest.mark.integration

STUCK_TIMEOUT = 3  # wait_timeout of the writes that must time out
HEALTHY_TIMEOUT = 30  # wait_timeout of the writes that must not (a 504 says they waited)


@dataclass
class TwoHosts:
    hvs: dict[str, OvsInstance]
    ctl: ControllerProcess
    api: ApiClient
    nets: dict[str, dict[str, Any]]  # hv1 -> project A's network, hv2 -> project B's
    dpids: dict[str, str]


def _bind(hv: OvsInstance, name: str, port_id: str) -> None:
    hv.vsctl("add-port", "br-int", name, "--", "set", "Interface", name, "type=internal",
             f"external_ids:iface-id={port_id}")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[TwoHosts]:
    sandbox = Sandbox()
    hvs: dict[str, OvsInstance] = {}
    ctl = None
    try:
        for name in ("hv1", "hv2"):
            workdir = DEFAULT_BASE / f"{sandbox.prefix}-{name}"
            shutil.rmtree(workdir, ignore_errors=True)
            hvs[name] = OvsInstance(name, netns=sandbox.add_netns(name), workdir=workdir,
                                    sandbox=sandbox, system_id=name)
            hvs[name].start()
        h1, _ = hvs["hv1"].add_mgmt_link()
        h2, _ = hvs["hv2"].add_mgmt_link()
        # one OpenFlow target for both: hv2 reaches hv1's host address over its own link
        nsutil.run(["ip", "route", "add", f"{h1}/32", "via", h2], netns=hvs["hv2"].netns)
        ctl = ControllerProcess(tmp_path / "state", [hv.db_remote for hv in hvs.values()],
                                of_host=h1)
        ctl.start()
        switches = ctl.wait_switches(2)
        dpids = {s["chassis"]: s["datapath_id"] for s in switches}
        api = ctl.api
        nets = {}
        for hv, project, cidr in (("hv1", "pa", "10.1.0.0/24"), ("hv2", "pb", "10.2.0.0/24")):
            net = api.create("network", name=f"net-{hv}", project_id=project)
            api.create("subnet", network_id=net["id"], cidr=cidr, ip_version=4,
                       project_id=project)
            port = api.create("port", wait=True, network_id=net["id"], project_id=project)
            _bind(hvs[hv], f"vm-{hv}", port["id"])
            wait_active(api, port["id"])
            nets[hv] = net
        yield TwoHosts(hvs, ctl, api, nets, dpids)
    finally:
        for hv in hvs.values():
            pid = hv.vswitchd_pid
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
        if ctl is not None:
            ctl.stop()
            print("controller log tail:\n" + ctl.log_tail(60))
        for hv in hvs.values():
            hv.close(remove_workdir=True)
        sandbox.cleanup()


def _create_port(h: TwoHosts, hv: str, timeout: int) -> tuple[int, Any, int]:
    """POST a port on `hv`'s network with ?wait=true: (status, body, the store's
    generation just after, which includes the write)."""
    net = h.nets[hv]
    resp = h.api.post(f"/v2.0/ports?wait=true&wait_timeout={timeout}",
                      {"port": {"network_id": net["id"], "project_id": net["project_id"]}})
    return resp.status, resp.body, _latest_generation(h)


def _latest_generation(h: TwoHosts) -> int:
    return int(h.api.get("/v1/health").body["store"]["generation"])


def _synced(h: TwoHosts, hv: str) -> int:
    switch = next(s for s in h.api.get("/v1/switches").ok()["switches"]
                  if s["datapath_id"] == h.dpids[hv])
    return int(switch["synced_generation"] or -1)


def test_a_frozen_switch_holds_up_only_the_writes_that_change_it(hosts: TwoHosts) -> None:
    h = hosts
    status, _, _ = _create_port(h, "hv1", HEALTHY_TIMEOUT)
    assert status == 201
    pid = h.hvs["hv2"].vswitchd_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)

    # a write on hv2's network: changes hv2, which never answers -> 504
    status, body, _ = _create_port(h, "hv2", STUCK_TIMEOUT)
    assert status == 504, body
    assert body["NeutronError"]["type"] == "WaitTimeout", body

    # writes on hv1's network: only hv1 changes, so they answer within their wait
    for _ in range(3):
        status, body, generation = _create_port(h, "hv1", HEALTHY_TIMEOUT)
        assert status == 201, body
        assert _synced(h, "hv1") >= generation  # installed there, not merely answered
    port = body["port"]
    resp = h.api.request("PUT", f"/v2.0/ports/{port['id']}?wait=true&wait_timeout="
                         f"{HEALTHY_TIMEOUT}", {"port": {"admin_state_up": False}})
    assert resp.status == 200, resp.body
    assert _synced(h, "hv1") >= _latest_generation(h)
    assert _synced(h, "hv2") < _latest_generation(h)  # hv2 really is stuck meanwhile

    # hv2 is still waited for by the writes that change it
    status, body, _ = _create_port(h, "hv2", STUCK_TIMEOUT)
    assert status == 504, body

    # thawed, it catches up with every write
    os.kill(pid, signal.SIGCONT)
    target = _latest_generation(h)
    deadline = time.monotonic() + 120
    while _synced(h, "hv2") < target and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _synced(h, "hv2") >= target
