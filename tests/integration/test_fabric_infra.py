"""The Mininet fabric runner (topologies.fabric) and its topologies, without Loom:
standalone switches (OVS learning, RSTP where the topology has loops) on a private
userspace-datapath OVS. Also: cleanup leaves nothing (after an exception too), the
system OVS is never contacted, names of others are never deleted, and `links()`
matches the declared topology; and `test_pingall_through_loom`, the runner driving
Loom itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from mininet.net import Mininet

from topologies import netns as nsutil
from topologies.fabric import SYSTEM_OVS_RUNDIR, Fabric, FabricError
from topologies.mininet_topos import TOPOLOGIES, FabricTopo, host_mac, make_dpid, make_topo
from topologies.netns import STATE_DIR, Sandbox

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mininet.*")

# -- helpers ---------------------------------------------------------------------------

class SystemOvsTrap:
    """Proves nothing talks to the system OVS while a fabric runs.

    When the system OVS is not running, listen on its sockets (db.sock and
    <bridge>.mgmt for every switch name) and record any connection: an ovs-vsctl or
    ovs-ofctl that missed OVS_RUNDIR would land here. The socket files exist only for
    the test and are removed after. When the system OVS is running, its database
    file must be unchanged instead.
    """

    def __init__(self, switch_names: Sequence[str]):
        self.paths = [SYSTEM_OVS_RUNDIR / "db.sock"] + [
            SYSTEM_OVS_RUNDIR / f"{n}.mgmt" for n in switch_names
        ]
        self.hits: list[str] = []
        self._socks: dict[int, tuple[socket.socket, Path]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._db_stat: tuple[int, int] | None = None
        self.system_ovs_running = (SYSTEM_OVS_RUNDIR / "db.sock").exists()

    def __enter__(self) -> SystemOvsTrap:
        if self.system_ovs_running:
            db = Path("/etc/openvswitch/conf.db")
            if db.exists():
                self._db_stat = (db.stat().st_mtime_ns, db.stat().st_size)
            return self
        if not SYSTEM_OVS_RUNDIR.is_dir():
            return self  # nothing there to connect to: any attempt fails loudly anyway
        for path in self.paths:
            if path.exists():
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(16)
            self._socks[sock.fileno()] = (sock, path)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(list(self._socks), [], [], 0.1)
            for fd in ready:
                sock, path = self._socks[fd]
                conn, _ = sock.accept()
                self.hits.append(str(path))
                conn.close()

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5)
        for sock, path in self._socks.values():
            sock.close()
            path.unlink(missing_ok=True)
        if self._db_stat is not None:
            db = Path("/etc/openvswitch/conf.db")
            assert (db.stat().st_mtime_ns, db.stat().st_size) == self._db_stat, \
                "the system OVS database changed during the run"


def assert_nothing_left(fabric: Fabric, env_before: dict[str, str | None]) -> None:
    """Everything the run made is gone, checked independently of its own bookkeeping."""
    assert fabric.leftovers() == []
    existing = {line.split(":")[1].strip().split("@")[0]
                for line in nsutil.run(["ip", "-o", "link", "show"]).stdout.splitlines()}
    made = set(fabric._planned_names())  # noqa: SLF001 (the root-namespace names it creates)
    assert made and not made & existing, f"interfaces left: {sorted(made & existing)}"
    if fabric.ovs is not None:
        pgrep = subprocess.run(["pgrep", "-f", str(fabric.ovs.workdir)], capture_output=True,
                               text=True, check=False)
        assert pgrep.stdout.strip() == "", f"OVS daemons left: {pgrep.stdout}"
    for node, pid in fabric._shells.items():  # noqa: SLF001
        assert not Path(f"/proc/{pid}").exists() or "mininet:" not in Path(
            f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"), f"{node} shell left"
    if fabric.sandbox is not None:
        assert not (STATE_DIR / f"{fabric.sandbox.prefix}.json").exists()
    assert {k: os.environ.get(k) for k in env_before} == env_before


@pytest.fixture
def env_before() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR",
                                           "OVS_SYSCONFDIR")}


@contextlib.contextmanager
def run_fabric(topo: FabricTopo, env_before: dict[str, str | None],
               **kwargs: object) -> Iterator[Fabric]:
    """A started fabric inside a SystemOvsTrap; afterwards nothing may be left."""
    fabric = Fabric(topo, **kwargs)  # type: ignore[arg-type]
    with SystemOvsTrap(list(topo.tiers)) as trap, fabric:
        yield fabric
    assert trap.hits == [], f"something contacted the system OVS: {trap.hits}"
    assert_nothing_left(fabric, env_before)


def test_trap_catches_use_of_the_system_ovs() -> None:
    """The guard above is real: an ovs-vsctl without OVS_RUNDIR is caught."""
    if (SYSTEM_OVS_RUNDIR / "db.sock").exists() or not SYSTEM_OVS_RUNDIR.is_dir():
        pytest.skip("the system OVS is running (or absent): not poking at it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVS_")}
    with SystemOvsTrap(["s1"]) as trap:
        subprocess.run(["ovs-vsctl", "--timeout=2", "show"], env=env, capture_output=True,
                       check=False, timeout=10)
        subprocess.run(["ovs-ofctl", "--timeout=2", "show", "s1"], env=env,
                       capture_output=True, check=False, timeout=10)
        time.sleep(0.3)
    assert str(SYSTEM_OVS_RUNDIR / "db.sock") in trap.hits
    assert str(SYSTEM_OVS_RUNDIR / "s1.mgmt") in trap.hits
    assert not (SYSTEM_OVS_RUNDIR / "db.sock").exists()


# -- topologies (no root needed, but live here with the runner) -----------------------

def test_topologies_shapes_names_and_dpids() -> None:
    ft = make_topo("fattree", 4)
    assert len(ft.tiers) == 20 and len(ft.host_links) == 16 and len(ft.declared) == 48
    assert sorted(s for s in ft.tiers if s.startswith("c")) == ["c1", "c2", "c3", "c4"]
    assert ft.dpid("c3") == "0000000001000003"
    assert ft.dpid("a2_1") == "0000000002020001"
    assert ft.dpid("e1_2") == "0000000003010002"
    assert ft.nodeInfo("h16")["mac"] == "02:00:00:00:00:10" == host_mac(16)
    assert ft.nodeInfo("h16")["ip"] == "10.0.0.16/16"
    # fat-tree wiring: a<p>_<i> reaches cores (i-1)k/2+1..ik/2; edges reach all pod aggs
    assert {b for a, _, b, _ in ft.declared if a == "a3_2"} == {"c3", "c4"}
    peers = {b for a, _, b, _ in ft.declared if a == "e4_1"}
    peers |= {a for a, _, b, _ in ft.declared if b == "e4_1"}
    assert peers == {"h13", "h14", "a4_1", "a4_2"}
    ls = make_topo("leafspine", 2, 3, 2)
    assert ls.dpid("leaf3") == make_dpid(3, 0, 3) and ls.dpid("spine1") == "0000000001000001"
    assert len(ls.switch_links()) == 6 and ls.has_loops
    assert not make_topo("linear", 4, 2).has_loops and not make_topo("tree", 3, 2).has_loops
    tt = make_topo("threetier", 2, 2, 4, 3)
    assert len(tt.tiers) == 2 + 4 + 8 and len(tt.host_links) == 2 * 2 * 3
    assert tt.host_links["h1"] == [("h1-eth0", "t1_1"), ("h1-eth1", "t1_2")]
    assert tt.host_links["h4"] == [("h4-eth0", "t1_3"), ("h4-eth1", "t1_4")]
    for name, cls in TOPOLOGIES.items():
        topo = cls()
        dpids = [topo.dpid(s) for s in topo.tiers]
        assert len(set(dpids)) == len(dpids) and all(len(d) == 16 for d in dpids), name
    with pytest.raises(ValueError):
        make_topo("fattree", 3)


# -- standalone runs ------------------------------------------------------------------

@pytest.mark.parametrize(
    "name,args",
    [("linear", (3, 2)), ("tree", (2, 3)), ("leafspine", (2, 3, 2)), ("fattree", (4,))],
    ids=["linear-3x2", "tree-2x3", "leafspine-2-3-2", "fattree-4"],
)
def test_standalone_pingall(name: str, args: tuple[int, ...],
                            env_before: dict[str, str | None]) -> None:
    topo = make_topo(name, *args)
    t0 = time.monotonic()
    with run_fabric(topo, env_before) as fabric:
        assert fabric.stp == topo.has_loops
        up = time.monotonic() - t0
        converge = fabric.wait_converged(30)
        res = fabric.wait_pingall(deadline=30)
        lost = sorted(pair for pair, loss in res.items() if loss)
        assert not lost, f"{name}: lost {lost}"
        n = len(topo.host_links)
        assert len(res) == n * (n - 1)
        assert fabric.links() == fabric.declared_links()
        # ofports are Mininet's port numbers (ofport_request), dpids are the topo's
        for link in fabric.links():
            assert link.port.endswith(f"-eth{link.ofport}")
        sw = next(iter(topo.tiers))
        assert fabric.ovs is not None
        dpid = fabric.ovs.vsctl("get", "Bridge", sw, "other_config:datapath-id").strip('"')
        assert dpid == topo.dpid(sw)
        dp_type = fabric.ovs.vsctl("get", "Bridge", sw, "datapath_type")
        assert dp_type == "netdev"
        if name == "leafspine":
            # TCP works across the fabric (checksum offload is off everywhere)
            assert fabric.iperf("h1", "h6", seconds=1) > 10e6
    print(f"\n[{name}{args}] up {up:.1f}s, forwarding after {converge:.1f}s more, "
          f"pingall clean after {fabric.timings['pingall']:.1f}s "
          f"({len(topo.tiers)} switches, {len(topo.host_links)} hosts)")


def test_threetier_dual_homed_and_link_cut(env_before: dict[str, str | None]) -> None:
    topo = make_topo("threetier", 2, 2, 2, 2)
    with run_fabric(topo, env_before) as fabric:
        fabric.wait_converged(30)
        assert not [p for p, loss in fabric.wait_pingall(deadline=30).items() if loss]
        assert fabric.links() == fabric.declared_links()
        h1 = fabric.node("h1")
        assert h1.intf("h1-eth1").MAC() == host_mac(1, 1)
        assert fabric.edge_ports()["h1-eth1"] == ("t1_2", "t1_2-eth1")
        # second plane reaches every server's eth1
        for h in fabric.hosts[1:]:
            assert fabric.ping("h1", fabric.host_ip(h, 1), count=1) == 0.0
        # cut h1's first ToR: its eth0 address is gone from the fabric, eth1 still works
        fabric.cut_link("h1", "t1_1")
        assert fabric.ping("h2", fabric.host_ip("h1", 0), count=1) == 1.0
        assert fabric.ping("h2", fabric.host_ip("h1", 1), count=2) == 0.0
        fabric.restore_link("h1", "t1_1")
        # an aggregation-core link cut: RSTP moves traffic to the other core
        fabric.cut_link("a1_1", "c1")
        fabric.wait_converged(30)
        assert not [p for p, loss in fabric.wait_pingall(deadline=30).items() if loss]
        assert len(fabric.links()) == len(fabric.declared_links()) - 1  # only links that are up
        assert len(fabric.links(up_only=False)) == len(fabric.declared_links())
        fabric.restore_link("a1_1", "c1")
        assert fabric.links() == fabric.declared_links()


# -- cleanup and safety ---------------------------------------------------------------

def test_cleanup_after_exception_mid_build(monkeypatch: pytest.MonkeyPatch,
                                           env_before: dict[str, str | None]) -> None:
    real = Mininet.addLink
    calls = {"n": 0}

    def add_link_then_fail(self: Mininet, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("injected failure while adding links")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Mininet, "addLink", add_link_then_fail)
    topo = make_topo("leafspine", 2, 3, 2)
    fabric = Fabric(topo)
    with SystemOvsTrap(list(topo.tiers)) as trap, pytest.raises(RuntimeError, match="injected"):
        fabric.start()
    assert trap.hits == []
    assert calls["n"] == 7
    assert_nothing_left(fabric, env_before)
    assert fabric.ovs is not None
    shutil.rmtree(fabric.ovs.workdir, ignore_errors=True)  # kept for its logs


def test_cleanup_after_exception_in_use(env_before: dict[str, str | None]) -> None:
    topo = make_topo("linear", 2)
    fabric = Fabric(topo)
    with pytest.raises(ZeroDivisionError), fabric:
        assert fabric.ping("h1", fabric.host_ip("h2")) == 0.0
        raise ZeroDivisionError
    assert_nothing_left(fabric, env_before)
    assert fabric.ovs is not None
    shutil.rmtree(fabric.ovs.workdir, ignore_errors=True)


def test_refuses_names_it_did_not_make(sandbox: Sandbox,
                                       env_before: dict[str, str | None]) -> None:
    """An interface named like one of ours (another Mininet's?) stops the run and is
    left alone: the runner deletes only what it created."""
    sandbox.add_veth("s2-eth2", sandbox.name("peer"), None, None)
    fabric = Fabric(make_topo("linear", 2))
    with pytest.raises(FabricError, match="already exist"):
        fabric.start()
    assert nsutil.link_exists("s2-eth2")
    assert fabric.leftovers() == []
    assert {k: os.environ.get(k) for k in env_before} == env_before


# -- through Loom ---------------------------------------------------------------------

def test_pingall_through_loom(env_before: dict[str, str | None]) -> None:
    topo = make_topo("leafspine", 2, 3, 2)
    with run_fabric(topo, env_before, start_controller=True) as fabric:
        assert fabric.ctl is not None and fabric.api is not None
        fabric.wait_converged(30)
        fabric.ctl.wait_switches(len(topo.tiers), timeout=30)
        ports = fabric.bind_hosts(split=True)
        assert len(ports) == len(topo.host_links)
        lli = ports["h1-eth0"]["binding:profile"]["local_link_information"][0]
        assert lli["switch_id"] == topo.dpid("leaf1") and lli["port_id"] == "leaf1-eth1"
        want = fabric.expected_loss()
        res = fabric.wait_pingall(deadline=60, expect=want)
        assert res == want, sorted(p for p in res if res[p] != want[p])
        assert fabric.iperf("h1", "h5", seconds=1) > 10e6  # same network, leaf1 -> leaf3
        fabric.cut_link("leaf1", "spine1")
        res = fabric.wait_pingall(deadline=30, expect=want)
        assert res == want, sorted(p for p in res if res[p] != want[p])
