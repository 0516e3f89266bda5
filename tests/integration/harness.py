"""One hypervisor (private OVS in a namespace) run by the real controller process.

Shared by the single-host integration tests so each only says what it checks.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.guest import Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance


@dataclass
class SingleHost:
    sandbox: Sandbox
    hv: OvsInstance
    ctl: ControllerProcess
    guests: dict[str, Guest] = field(default_factory=dict)

    @property
    def api(self) -> ApiClient:
        return self.ctl.api

    def guest_for(self, name: str, port: dict[str, Any]) -> Guest:
        """A guest namespace bound to `port`, with the port's MAC and addresses."""
        v4 = [f["ip_address"] for f in port["fixed_ips"] if ":" not in f["ip_address"]]
        v6 = [f["ip_address"] for f in port["fixed_ips"] if ":" in f["ip_address"]]
        g = Guest(name, port["mac_address"], f"{v4[0]}/24" if v4 else None,
                  f"{v6[0]}/64" if v6 else None, sandbox=self.sandbox, ovs=self.hv,
                  bridge="br-int", port_id=port["id"])
        self.guests[name] = g
        wait_active(self.api, port["id"])
        return g


@contextmanager
def nothing_arrives(netns: str, bpf: str, settle: float = 1.0) -> Iterator[None]:
    """Fail if a frame matching `bpf` comes in at eth0 of `netns` while the block runs
    (tcpdump, inbound only: what the guest sends itself does not count)."""
    dump = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-Q", "in",
                             "-i", "eth0", "-c", "1", bpf],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(settle)  # tcpdump listening
        yield
        time.sleep(settle)  # anything still on its way
    finally:
        dump.terminate()
    seen, _ = dump.communicate(timeout=10)
    assert seen.strip() == "", f"arrived in {netns} ({bpf}): {seen}"


def assert_resolved_in_pipeline(asker: Guest, neighbour_netns: str, ip: str, mac: str
                                ) -> None:
    """`asker` pings `ip` and learns `mac` for it, and no multicast neighbour
    solicitation reaches the neighbour meanwhile: Loom's switch answered it."""
    with nothing_arrives(neighbour_netns, "icmp6 and ip6[40] == 135 and ip6 dst net ff02::/16"):
        out = asker.run(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", ip], check=False)
        assert " 0% packet loss" in out.stdout, out.stdout
        neigh = asker.run(["ip", "-6", "neigh", "show", ip]).stdout
        assert mac in neigh, neigh


def wait_active(api: ApiClient, port_id: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = api.get(f"/v2.0/ports/{port_id}").ok()["port"]["status"]
        if status == "ACTIVE":
            return
        time.sleep(0.1)
    raise AssertionError(f"port {port_id} still {status}")


@contextmanager
def single_host(state_dir: Path, extra_args: tuple[str, ...] = ()) -> Iterator[SingleHost]:
    sandbox = Sandbox()
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-hv1"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance("hv1", netns=sandbox.add_netns("hv1"), workdir=workdir, sandbox=sandbox,
                     system_id="hv1")
    ctl = None
    host = None
    try:
        hv.start()
        host_ip, _ = hv.add_mgmt_link()
        ctl = ControllerProcess(state_dir, [hv.db_remote], of_host=host_ip,
                                extra_args=extra_args)
        ctl.start()
        hv.wait_for_bridge("br-int", timeout=20)
        ctl.wait_switches(1)
        host = SingleHost(sandbox, hv, ctl)
        yield host
    finally:
        if host is not None:
            for g in host.guests.values():
                g.close()
        if ctl is not None:
            ctl.stop()
            print("controller log tail:\n" + ctl.log_tail(60))
        hv.close(remove_workdir=True)
        sandbox.cleanup()
