"""The multi-host lab: spec validation, the underlay carrying OVS userspace tunnels by
itself, guests through Loom, adding/removing hypervisors, and teardown that leaves
nothing behind, also after `up` was killed half-way.

Cross-hypervisor connectivity *through Loom* is not asserted here (tests of the
overlay do that); the underlay is proven without the controller, so a failing
overlay test points at the controller.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from topologies import netns as nsutil
from topologies.demo import render, run_matrix
from topologies.guest import Guest
from topologies.lab import Lab, status_text
from topologies.labspec import SpecError, load_spec, parse_spec
from topologies.labstate import LabState, state_path

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "topologies" / "specs" / "small.yaml"
DEMO = ROOT / "topologies" / "specs" / "demo.yaml"
TUNNEL_CAPTURE = {  # tcpdump filter, and what its -v output shows for key 5001
    "vxlan": ("udp port 4789", r"VXLAN.*vni 5001\b"),
    "gre": ("ip proto 47", r"GRE.*key=0x1389\b"),
    "geneve": ("udp port 6081", r"Geneve.*vni 0x1389\b"),
}
TUNNEL_LISTENER = {"vxlan": "vxlan_sys_4789", "gre": "gre_sys", "geneve": "genev_sys_6081"}


def _unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(3)}"


def _quiet(_line: str) -> None:
    pass


# -- spec ------------------------------------------------------------------------------
def test_shipped_specs_are_valid() -> None:
    demo = load_spec(DEMO)
    assert [h.name for h in demo.hypervisors] == ["hv1", "hv2", "hv3"]
    types = {n.type for p in demo.projects for n in p.networks}
    assert types == {"vxlan", "gre", "geneve"}
    cidrs = {p.name: {s.cidr for n in p.networks for s in n.subnets} for p in demo.projects}
    assert len(demo.projects) == 2 and all("10.0.0.0/24" in c for c in cidrs.values())
    assert len({g.spec.hypervisor for g in demo.guests()}) == 3
    assert len(load_spec(SMALL).hypervisors) == 2


def test_spec_errors_name_every_problem_and_where() -> None:
    bad = {
        "hypervisors": [{"name": "hv1"}, {"name": "hv1"}, {"name": "Bad_Name"}],
        "projects": [{"name": "p", "networks": [
            {"name": "n", "type": "vxlann", "subnets": [{"cidr": "10.0.0.1/24"}]},
            {"name": "m", "type": "vxlan", "segmentation_id": 1 << 24,
             "subnets": [{"cidr": "10.0.0.0/24"}],
             "guests": [{"name": "g1", "hypervisor": "hv9"},
                        {"name": "g2", "hypervisor": "hv1", "ip": "10.0.1.5"},
                        {"name": "g3", "hypervisor": "hv1", "ip": "10.0.0.1"}]},
        ]}],
        "controler": {},
    }
    with pytest.raises(SpecError) as err:
        parse_spec(bad, "bad.yaml")
    text = str(err.value)
    for expected in (
        "spec: unknown key 'controler'",
        "hypervisors[1].name: name 'hv1' already used at hypervisors[0].name",
        "hypervisors[2].name: 'Bad_Name' is not a valid name",
        "projects[0].networks[0].type: 'vxlann' is not one of",
        "projects[0].networks[0].subnets[0].cidr: '10.0.0.1/24' is not a network",
        "projects[0].networks[1].segmentation_id: 16777216 out of range 1-16777215 for vxlan",
        "projects[0].networks[1].guests[0].hypervisor: 'hv9' is not a hypervisor",
        "projects[0].networks[1].guests[1].ip: 10.0.1.5 is in none of the network's subnets",
        "projects[0].networks[1].guests[2].ip: 10.0.0.1 is reserved for 10.0.0.0/24's gateway",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


# -- the underlay by itself: OVS userspace tunnels, no controller -----------------------
@pytest.fixture(scope="module")
def underlay_lab() -> Iterator[Lab]:
    lab = Lab.up(SMALL, name=_unique("t-ul"), controller=False, progress=_quiet)
    try:
        yield lab
    finally:
        assert lab.down() == []


def test_hypervisors_have_identity_encap_ip_and_tunnel_route(underlay_lab: Lab) -> None:
    for name, other in (("hv1", "hv2"), ("hv2", "hv1")):
        hv = underlay_lab.hypervisor(name)
        ext = hv.ovs.vsctl("get", "Open_vSwitch", ".", "external_ids")
        assert f"system-id={name}" in ext and f'loom-encap-ip="{hv.encap_ip}"' in ext
        assert "172.31.0.0/24 dev br-phy" in hv.ovs.appctl("ovs/route/show")
        assert hv.ovs.vsctl("get", "Bridge", "br-phy", "fail_mode") == "standalone"
        assert hv.ovs.vsctl("get-controller", "br-phy") == ""
        # the encap IP lives only in the hypervisor's namespace, on br-phy
        addrs = nsutil.run(["ip", "-4", "-o", "addr", "show", "dev", "br-phy"],
                           netns=hv.netns).stdout
        assert f"{hv.encap_ip}/24" in addrs
        peer = underlay_lab.hypervisor(other)
        assert nsutil.run(["ping", "-c1", "-W2", peer.encap_ip], netns=hv.netns).returncode == 0
    assert "172.31.0." not in nsutil.run(["ip", "-4", "-o", "addr", "show"]).stdout


class _Capture:
    """tcpdump -v on the underlay bridge, started and known to be listening."""

    def __init__(self, netns: str, bpf: str, path: Path):
        self.path = path
        self.fh = open(path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = nsutil.popen(["tcpdump", "-i", "br-ul", "-nn", "-v", "-l", *bpf.split()],
                                 netns=netns, stdout=self.fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "listening on" not in path.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, path.read_text()
            time.sleep(0.05)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(5)
        self.fh.close()
        return self.path.read_text()


@pytest.mark.parametrize("tunnel_type", ["vxlan", "gre", "geneve"])
def test_underlay_carries_userspace_tunnels_by_itself(
    underlay_lab: Lab, tunnel_type: str, tmp_path: Path
) -> None:
    """br-tt on hv1 and hv2 with a tunnel port and NORMAL + set_field/set_tunnel flows,
    written with ovs-ofctl: guests ping and talk TCP over the tunnel; the underlay
    capture shows the key; a receiver that expects another key gets nothing."""
    hv1, hv2 = underlay_lab.hypervisor("hv1"), underlay_lab.hypervisor("hv2")
    guests: list[Guest] = []
    try:
        for i, (hv, peer) in enumerate(((hv1, hv2), (hv2, hv1)), start=1):
            hv.ovs.add_bridge("br-tt")
            hv.ovs.vsctl("add-port", "br-tt", "tun0", "--", "set", "Interface", "tun0",
                         f"type={tunnel_type}", f"options:remote_ip={peer.encap_ip}",
                         "options:key=flow", "ofport_request=10")
            g = Guest(f"u{i}", f"02:00:00:77:00:0{i}", f"192.168.77.{i}/24",
                      sandbox=underlay_lab.sandbox, ovs=hv.ovs, bridge="br-tt", mtu=1400)
            guests.append(g)
            tag = "set_field:5001->tun_id" if i == 1 else "set_tunnel:5001"
            hv.ovs.ofctl("add-flow", "br-tt",
                         f"priority=10,in_port={g.ofport},actions={tag},NORMAL")
            hv.ovs.ofctl("add-flow", "br-tt", "priority=10,in_port=10,tun_id=5001,actions=NORMAL")
            assert TUNNEL_LISTENER[tunnel_type] in hv.ovs.appctl("tnl/ports/show")
        u1, u2 = guests
        bpf, pattern = TUNNEL_CAPTURE[tunnel_type]
        cap = _Capture(underlay_lab.underlay_netns, bpf, tmp_path / "cap.txt")
        try:
            assert u1.ping("192.168.77.2", count=3, interval=0.2, timeout=2)[1] >= 2
            assert u2.ping("192.168.77.1", count=3, interval=0.2, timeout=2) == (3, 3)
            listener = u2.tcp_listen(5000)
            assert u1.tcp_connect("192.168.77.2", 5000, "over the underlay " * 3000,
                                  listener=listener)
        finally:
            text = cap.stop()
        assert re.search(r"172\.31\.0\.11\S* > 172\.31\.0\.12", text), text[:2000]
        assert re.search(r"172\.31\.0\.12\S* > 172\.31\.0\.11", text), text[:2000]
        assert re.search(pattern, text), text[:2000]
        # the key is honoured: hv2 now only accepts key 5002
        hv2.ovs.ofctl("del-flows", "br-tt", "in_port=10")
        hv2.ovs.ofctl("add-flow", "br-tt", "priority=10,in_port=10,tun_id=5002,actions=NORMAL")
        assert u1.ping("192.168.77.2", count=3, interval=0.2, timeout=1)[1] == 0
    finally:
        for g in guests:
            g.close()
        for hv in (hv1, hv2):
            hv.ovs.vsctl("--if-exists", "del-br", "br-tt")


# -- through Loom -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loom_lab() -> Iterator[Lab]:
    lab = Lab.up(SMALL, name=_unique("t-loom"), progress=_quiet)
    try:
        yield lab
    finally:
        if lab.controller is not None:
            print("controller log tail:\n" + lab.controller.log_tail(40))
        assert lab.down() == []


def test_lab_records_everything_it_made(loom_lab: Lab) -> None:
    data = json.loads(state_path(loom_lab.name).read_text())
    assert data["phase"] == "up" and data["prefix"] == loom_lab.prefix
    assert set(data["hypervisors"]) == {"hv1", "hv2"}
    assert set(data["guests"]) == {"s1", "s2", "s3", "t1", "t2"}
    assert set(data["api"]["ports"]) == set(data["guests"])
    assert len(data["api"]["networks"]) == 2 and len(data["api"]["subnets"]) == 2
    assert data["controller"]["of_target"].startswith(f"tcp:{data['mgmt']['host_ip']}:")
    assert data["mgmt"]["host_ip"].startswith("100.") and data["mgmt"]["host_ip"].endswith(".1")
    for ns in data["sandbox"]["netns"]:
        assert nsutil.netns_exists(ns)
    assert nsutil.link_exists(data["mgmt"]["bridge"])
    # another process' view: Lab.load attaches without creating anything
    other = Lab.load(loom_lab.name, progress=_quiet)
    assert other.guest("s2").ping("10.0.0.11", count=2, interval=0.2) == (2, 2)
    assert other.hypervisor("hv2").ovs.vsctl("br-exists", "br-int") == ""
    text = status_text(LabState.load(loom_lab.name))
    assert "controller: pid" in text and "running" in text and "NOT RUNNING" not in text
    assert text.count(" ACTIVE, netns") == 5


def test_controller_knows_every_chassis_and_its_encap_ip(loom_lab: Lab) -> None:
    chassis = {c["name"]: c for c in loom_lab.api.get("/v1/chassis").ok()["chassis"]}
    assert set(chassis) == {"hv1", "hv2"}
    for name, c in chassis.items():
        assert c["connected"] and c["encap_ip"] == loom_lab.hypervisor(name).encap_ip


def test_same_hypervisor_same_network_reach_through_loom(loom_lab: Lab) -> None:
    s1, s2 = loom_lab.guest("s1"), loom_lab.guest("s2")
    assert s1.ping("10.0.0.12", count=3, interval=0.2) == (3, 3)
    listener = s2.tcp_listen(8080)
    assert s1.tcp_connect("10.0.0.12", 8080, "through loom " * 2000, listener=listener)


def test_matrix_isolation_and_same_hypervisor_reach(loom_lab: Lab) -> None:
    """Every pair except same-network pairs across hypervisors (the overlay's tests)."""
    cells = run_matrix(loom_lab)
    print(render(cells))
    checked = [c for c in cells
               if not (c.expected and c.src.hypervisor != c.dst.hypervisor)]
    assert len(checked) == 14
    bad = [f"{c.src.name}->{c.dst.name}: {c.mark()}" for c in checked if not c.ok]
    assert not bad, render(cells)


def test_add_and_remove_a_hypervisor(loom_lab: Lab) -> None:
    hv3 = loom_lab.add_hypervisor("hv3")
    chassis = {c["name"]: c for c in loom_lab.api.get("/v1/chassis").ok()["chassis"]}
    assert chassis["hv3"]["source"] == "api" and chassis["hv3"]["connected"]
    assert hv3.ovs.wait_for_bridge("br-int", 10)
    loom_lab.remove_hypervisor("hv3")
    assert not nsutil.netns_exists(hv3.netns)
    assert "hv3" not in {c["name"] for c in loom_lab.api.get("/v1/chassis").ok()["chassis"]}
    # hv2 came from the command line: the controller is restarted without it
    old_pid = loom_lab.state.data["controller"]["pid"]
    loom_lab.remove_hypervisor("hv2")
    assert loom_lab.state.data["controller"]["pid"] != old_pid
    assert set(loom_lab.state.data["guests"]) == {"s1", "s2", "t1"}
    assert len(loom_lab.api.get("/v2.0/ports").ok()["ports"]) == 3
    assert loom_lab.guest("s1").ping("10.0.0.12", count=2, interval=0.2) == (2, 2)


# -- teardown ------------------------------------------------------------------------------
def _lab_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
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


def _wait_state(name: str, ready: Callable[[dict], object], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(state_path(name).read_text())
            if ready(data):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"state of {name} never got ready")


def test_cli_up_then_down_leaves_nothing() -> None:
    name = _unique("t-cli")
    up = _lab_cli("up", str(SMALL), "--name", name)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "is up in" in up.stdout and "guest s1:" in up.stdout
    data = json.loads(state_path(name).read_text())
    prefix, workdir = data["prefix"], data["workdir"]
    assert _leftovers(prefix, workdir), "nothing was made?"
    status = _lab_cli("status", name)
    assert status.returncode == 0 and "hypervisor hv2" in status.stdout
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []
    assert not state_path(name).exists()
    assert _lab_cli("down", name).returncode == 0  # idempotent


def test_down_after_up_was_killed_half_way() -> None:
    name = _unique("t-kill")
    proc = subprocess.Popen([sys.executable, "-m", "topologies.lab", "up", str(SMALL),
                             "--name", name], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # the controller's pid is recorded the moment it is spawned: health, switch
        # sync, API objects and guests (seconds) are still to come
        data = _wait_state(name, lambda d: d["controller"].get("pid"))
    finally:
        proc.kill()
        proc.wait()
    prefix, workdir = data["prefix"], data["workdir"]
    data = json.loads(state_path(name).read_text())
    assert data["phase"] == "creating"
    assert nsutil.netns_exists(f"{prefix}-hv1")
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []


def test_down_after_half_the_lab_and_half_the_state_vanished() -> None:
    name = _unique("t-half")
    assert _lab_cli("up", str(SMALL), "--name", name).returncode == 0
    state = LabState.load(name)
    prefix, workdir = state.prefix, str(state.workdir)
    # half the objects gone by hand: the controller died, two namespaces deleted ...
    os.kill(int(state.data["controller"]["pid"]), signal.SIGKILL)
    for ns in (f"{prefix}-ul", f"{prefix}-s1"):
        nsutil.run(["ip", "netns", "del", ns])
    # ... and half of every list in the record lost
    rec = state.data["sandbox"]
    for key in ("netns", "links", "processes"):
        rec[key] = rec[key][: len(rec[key]) // 2]
    state.data.pop("controller")
    state.save()
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []
