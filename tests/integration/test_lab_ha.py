"""The HA lab (issue 14): `python -m topologies.lab up topologies/specs/ha.yaml` brings
up a 3-member raft northbound and two controller instances (real processes) sharing
it; both instances see each other alive and every chassis has an owner, every br-int
lists both OpenFlow targets with one master, guests reach each other across
hypervisors, an owner's death and the northbound leader's loss are survived, and
`down` leaves nothing behind.

One lab for the module, brought up with the CLI and attached with `Lab.load`, as an
operator would; the last test takes it down. Times are printed, never asserted.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for
from topologies import netns as nsutil
from topologies.lab import Lab
from topologies.labstate import state_path

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "topologies" / "specs" / "ha.yaml"
INSTANCES = {"c1", "c2"}
# same network, different hypervisors (ha.yaml): source, target IP
ACROSS = [("a1", "10.0.0.12"), ("a1", "10.0.0.13"), ("a2", "10.0.0.13"), ("b1", "10.0.0.22")]


def _quiet(_line: str) -> None:
    pass


def _lab_cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topologies.lab", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _leftovers(prefix: str, workdir: str) -> list[str]:
    left = [f"netns {n}" for n in nsutil.netns_list() if n.startswith(f"{prefix}-")]
    links = nsutil.run(["ip", "-o", "link", "show"]).stdout
    left += [f"link {m}" for m in re.findall(rf"\d+: ((?:lm-)?{prefix}[^:@ ]*)", links)]
    procs = subprocess.run(["pgrep", "-af", f"{workdir}/"], capture_output=True, text=True)
    left += [f"process {line}" for line in procs.stdout.splitlines()]
    if Path(workdir).exists():
        left.append(f"workdir {workdir}")
    return left


def _logs(lab: Lab) -> str:
    out = []
    for name in sorted(lab.controllers):
        out.append(f"--- controller {name} log tail:\n{lab.controller_by_name(name).log_tail(30)}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def ha_lab() -> Iterator[Lab]:
    name = f"t-ha-{secrets.token_hex(3)}"
    started = time.monotonic()
    up = _lab_cli("up", str(HA), "--name", name)
    if up.returncode != 0:
        if state_path(name).exists():
            _lab_cli("down", name)
        pytest.fail(f"lab up failed:\n{up.stdout}\n{up.stderr}")
    print(f"\nHA lab up in {time.monotonic() - started:.1f}s")
    lab = Lab.load(name, progress=_quiet)
    try:
        yield lab
    finally:
        if state_path(name).exists():  # a test failed before the last one's `down`
            print(_logs(lab))
            lab.down()


def _owners(lab: Lab, name: str) -> dict[str, str]:
    inst = (lab.health(name) or {}).get("instances") or {}
    return {k: o["owner"] for k, o in (inst.get("owners") or {}).items()}


def _ping_across(lab: Lab) -> dict[str, tuple[int, int]]:
    return {f"{src}->{dst}": lab.guest(src).ping(dst, count=3, interval=0.2)
            for src, dst in ACROSS}


def test_records_both_controllers_and_the_three_members(ha_lab: Lab) -> None:
    data = json.loads(state_path(ha_lab.name).read_text())
    assert set(data["controllers"]) == INSTANCES
    assert data["controller"] == data["controllers"]["c1"]  # the first, for older readers
    assert set(ha_lab.controllers) == INSTANCES and ha_lab.controller is not None
    assert ha_lab.controller.rest_port == data["controllers"]["c1"]["rest_port"]
    assert len({c["rest_port"] for c in data["controllers"].values()}) == 2
    assert len({c["of_target"] for c in data["controllers"].values()}) == 2
    members = data["nb"]["members"]
    assert [m["name"] for m in members] == ["nb1", "nb2", "nb3"]
    assert ha_lab.nb_remote == ",".join(m["remote"] for m in members)
    assert all(ha_lab.nb_member_running(i) for i in (1, 2, 3))
    for c in data["controllers"].values():
        cmdline = Path(f"/proc/{c['pid']}/cmdline").read_text().split("\0")
        assert cmdline[cmdline.index("--nb-db") + 1] == ha_lab.nb_remote
        assert cmdline[cmdline.index("--instance-name") + 1] == c["instance_name"]
    assert ha_lab.nb_leader() in (1, 2, 3)
    status = _lab_cli("status", ha_lab.name)
    assert status.returncode == 0, status.stderr
    for expected in ("controller c1: pid", "controller c2: pid", "nb1: pid", "nb3: pid",
                     "instances (as c1 sees them)"):
        assert expected in status.stdout, status.stdout
    assert "NOT RUNNING" not in status.stdout and "DEAD" not in status.stdout
    assert status.stdout.count(" ACTIVE, netns") == 5, status.stdout


def test_instances_see_each_other_and_every_chassis_has_an_owner(ha_lab: Lab) -> None:
    keys = {f"chassis:{hv.db_remote}" for hv in ha_lab.hypervisors.values()}
    assert keys == ha_lab.ownership_keys()
    for name in INSTANCES:
        inst = (ha_lab.health(name) or {}).get("instances")
        assert isinstance(inst, dict), (name, ha_lab.health(name))
        assert inst["instance"] == name
        alive = {i["name"] for i in inst["instances"] if i["alive"]}
        assert alive == INSTANCES, inst
        assert set(inst["owners"]) >= keys and {inst["owners"][k]["owner"] for k in keys} \
            <= INSTANCES, inst
    assert _owners(ha_lab, "c1") == _owners(ha_lab, "c2")  # one database, one answer


def test_every_bridge_lists_both_targets_and_has_one_master(ha_lab: Lab) -> None:
    targets = {ha_lab.controller_info(n)["of_target"] for n in INSTANCES}
    for hv in ha_lab.hypervisors.values():
        assert set(hv.ovs.vsctl("get-controller", "br-int").split()) == targets, hv.name
    owners = _owners(ha_lab, "c1")
    by_dpid: dict[str, dict[str, Any]] = {}
    for name in INSTANCES:
        switches = ha_lab.controller_by_name(name).api.get("/v1/switches").ok()["switches"]
        assert len(switches) == 3 and all(s["connected"] for s in switches), switches
        for s in switches:
            by_dpid.setdefault(s["datapath_id"], {})[name] = s
    for dpid, seen in by_dpid.items():
        roles = sorted(s["role"] for s in seen.values())
        assert roles == ["master", "slave"], (dpid, seen)
        master = next(n for n, s in seen.items() if s["role"] == "master")
        assert {s["owner"] for s in seen.values()} == {master}, seen
        chassis = seen[master]["chassis"]
        hv = ha_lab.hypervisor(chassis)
        assert owners[f"chassis:{hv.db_remote}"] == master


def test_guests_reach_each_other_across_hypervisors(ha_lab: Lab) -> None:
    got = _ping_across(ha_lab)
    assert all(v == (3, 3) for v in got.values()), got
    assert ha_lab.guest("a1").ping("10.0.0.22", count=2, interval=0.2)[1] == 0  # other tenant


def test_the_other_instance_takes_over_when_an_owner_dies(ha_lab: Lab) -> None:
    owners = _owners(ha_lab, "c1")
    victim = max(INSTANCES, key=lambda n: (list(owners.values()).count(n), n))
    survivor = (INSTANCES - {victim}).pop()
    started = time.monotonic()
    ha_lab.kill_controller(victim)
    ha_lab.wait_instances(alive=[survivor], timeout=30)
    assert set(_owners(ha_lab, survivor).values()) == {survivor}
    ha_lab.wait_switches(timeout=30)
    print(f"\n{victim} killed: {survivor} owns every chassis and synced in "
          f"{time.monotonic() - started:.1f}s")
    got = _ping_across(ha_lab)
    assert all(v == (3, 3) for v in got.values()), got
    ha_lab.start_controller(victim)
    ha_lab.wait_instances(timeout=30)
    ha_lab.wait_switches(timeout=30)
    assert ha_lab.running_controllers() == sorted(INSTANCES)


def test_writes_go_on_when_the_northbound_leader_stops(ha_lab: Lab) -> None:
    leader = ha_lab.nb_leader()
    assert leader is not None
    ha_lab.nb_member_stop(leader)
    started = time.monotonic()
    body = {"network": {"name": "after-leader", "project_id": "alpha",
                        "provider:network_type": "vxlan"}}

    def created() -> Any:
        resp = ha_lab.controller_by_name("c1").api.post("/v2.0/networks", body)
        return resp.body["network"]["id"] if resp.status == 201 else None

    net = wait_for("a write after the leader stopped", created, timeout=30, interval=0.2)
    print(f"\nnb{leader} (leader) stopped: a write went through in "
          f"{time.monotonic() - started:.1f}s; new leader nb{ha_lab.nb_leader()}")
    wait_for("c2 to read the network", lambda: ha_lab.controller_by_name("c2").api.get(
        f"/v2.0/networks/{net}").status == 200, timeout=30, interval=0.1)
    ha_lab.nb_member_start(leader)
    assert ha_lab.nb_member_running(leader)
    ha_lab.controller_by_name("c1").api.delete(f"/v2.0/networks/{net}")
    ha_lab.wait_stores()
    ha_lab.wait_instances(timeout=30)
    got = _ping_across(ha_lab)
    assert all(v == (3, 3) for v in got.values()), got


def test_down_leaves_nothing(ha_lab: Lab) -> None:
    prefix, workdir = ha_lab.prefix, str(ha_lab.state.workdir)
    assert _leftovers(prefix, workdir), "nothing was made?"
    down = _lab_cli("down", ha_lab.name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "controller c2 pid" in down.stdout and "northbound nb3 pid" in down.stdout
    assert _leftovers(prefix, workdir) == []
    assert not state_path(ha_lab.name).exists()


def test_down_after_ha_up_was_killed_half_way() -> None:
    """`up` SIGKILLed once the northbound runs and the controllers were spawned (before
    switches, API objects, guests): `down` still stops the members and controllers."""
    name = f"t-hakill-{secrets.token_hex(3)}"
    proc = subprocess.Popen([sys.executable, "-m", "topologies.lab", "up", str(HA),
                             "--name", name], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def spawned() -> Any:
        try:
            data = json.loads(state_path(name).read_text())
        except (OSError, ValueError):
            return None
        ctls = data.get("controllers") or {}
        return data if len(ctls) == 2 and all(c.get("pid") for c in ctls.values()) else None

    try:
        data = wait_for("both controllers spawned", spawned, timeout=60)
    finally:
        proc.kill()
        proc.wait()
    prefix, workdir = data["prefix"], data["workdir"]
    assert json.loads(state_path(name).read_text())["phase"] == "creating"
    assert any("nb/nb1/" in line for line in _leftovers(prefix, workdir))
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []
