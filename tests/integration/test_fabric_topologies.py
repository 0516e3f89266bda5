"""The fabric runner takes any topology, and keeps the kernel's neighbour table big enough.

- a GraphML graph (a Topology Zoo network) and a ``mn --custom`` file run through
  ``python -m topologies.fabric run`` with Loom: every pair within a network answers,
  across networks nothing does;
- RSTP's Max Age follows the graph: a long path (with a loop, so RSTP must block a
  port) gets more than the old fixed 6 s, and converges;
- the neighbour table limits (one per machine, shared by every namespace) are raised
  for a run and given back after it, overlapping runs counted; a 60-host fabric
  reports zero overflows.

The first tests here need neither root nor Mininet (the counting and parsing logic,
on fake /proc trees); they live here, beside the runs they are about.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

from topologies import neigh
from topologies.fabric import Fabric, resolve_topo
from topologies.graphtopo import GraphTopo, RstpTimers
from topologies.mininet_topos import AdoptedTopo, FatTreeTopo, custom_topo, make_topo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mininet.*")

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "topologies" / "zoo"

CUSTOM = textwrap.dedent('''\
    """A plain Mininet custom file, as `mn --custom` takes: no Loom classes in it."""
    from mininet.topo import Topo


    class Ring(Topo):
        def build(self, n=4):
            switches = [self.addSwitch(f"sw{i}") for i in range(1, n + 1)]
            for i, sw in enumerate(switches, start=1):
                self.addHost(f"srv{i}")
                self.addLink(f"srv{i}", sw, bw=10)  # TCLink shaping: ignored
            for a, b in zip(switches, switches[1:] + switches[:1]):
                self.addLink(a, b)


    topos = {"ring": Ring}
''')


@pytest.fixture
def custom_file(tmp_path: Path) -> Path:
    path = tmp_path / "ring_topo.py"
    path.write_text(CUSTOM)
    return path


# -- topology arguments (no root) ------------------------------------------------------

def test_custom_topo_adopted(custom_file: Path) -> None:
    topo = custom_topo([custom_file], "ring", 5)
    assert isinstance(topo, AdoptedTopo)
    assert sorted(topo.tiers) == ["sw1", "sw2", "sw3", "sw4", "sw5"]
    assert topo.dpid("sw3") == "0000000000000003"  # Mininet's rule: first number in the name
    assert topo.host_number("srv4") == 4 and topo.host_links["srv4"] == [("srv4-eth0", "sw4")]
    assert topo.nodeInfo("srv2")["mac"] == "02:00:00:00:00:02"
    assert ("sw1", 2, "sw2", 2) in topo.declared and topo.has_loops
    assert topo.ignored and "bw" in topo.ignored[0]
    assert "ignored link options" in topo.describe()
    with pytest.raises(ValueError, match="define: ring"):
        custom_topo([custom_file], "mesh")


def test_resolve_topo_forms(custom_file: Path) -> None:
    assert isinstance(resolve_topo("fattree,4"), FatTreeTopo)
    assert len(resolve_topo("linear", ["n=3", "hosts_per_switch=2"]).host_links) == 6
    abilene = resolve_topo("abilene", ["2"])  # a shipped zoo graph, by name
    assert isinstance(abilene, GraphTopo) and len(abilene.host_links) == 22
    by_path = resolve_topo(str(ZOO / "Geant2001.graphml"), ["hosts_per_switch=0"])
    assert len(by_path.tiers) == 27 and not by_path.host_links
    assert len(resolve_topo("ring,3", custom=[str(custom_file)]).tiers) == 3
    # this repo's own module as a custom file keeps its FabricTopo classes
    own = resolve_topo("fattree", ["4"], custom=[str(ROOT / "topologies/mininet_topos.py")])
    assert isinstance(own, FatTreeTopo)
    with pytest.raises(ValueError, match="unknown topology"):
        resolve_topo("nosuch")
    with pytest.raises(ValueError, match="hosts_per_switch"):
        resolve_topo("abilene", ["1", "2"])


# -- neighbour table: counting, raising, restoring (fake /proc, no root) ----------------

ARP_CACHE = """\
entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast \
rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls
00000bb8 00000010 00000002 00000000   00000000 00000000 00000000   00000000         \
00000000         00000019         00000003       00000000            0000002a
00000bb8 00000005 00000000 00000000   00000006 00000002 00000000   00000000         \
00000000         00000000         00000001       00000000            00000010
"""


def test_parse_neigh_stat() -> None:
    stat = neigh.parse_neigh_stat(ARP_CACHE)
    assert stat["table_fulls"] == 0x2A + 0x10  # summed over the per-CPU lines
    assert stat["forced_gc_runs"] == 4
    assert stat["entries"] == 0xBB8  # table-wide, taken once


def test_overflows_counter(tmp_path: Path) -> None:
    (tmp_path / "arp_cache").write_text(ARP_CACHE)
    (tmp_path / "ndisc_cache").write_text(ARP_CACHE.replace("0000002a", "00000000"))
    now = neigh.overflows(tmp_path)
    assert now == neigh.Overflows(ipv4=58, ipv6=16) and now.total == 74
    assert (now - neigh.Overflows(50, 16)).describe().startswith("8 neighbour-table overflows")
    assert neigh.overflows(tmp_path / "absent") == neigh.Overflows(0, 0)


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "sys"
    for family in neigh.FAMILIES:
        base = proc / "net" / family / "neigh" / "default"
        base.mkdir(parents=True)
        for thresh, value in (("gc_thresh1", 128), ("gc_thresh2", 512), ("gc_thresh3", 1024)):
            (base / thresh).write_text(f"{value}\n")
    return proc


def _limits(proc: Path) -> dict[str, int]:
    keys = [neigh.sysctl_key(f, t) for f in neigh.FAMILIES for t in neigh.THRESHOLDS]
    return neigh.read_sysctls(keys, proc)


def test_limits_raised_and_restored(fake_proc: Path, tmp_path: Path) -> None:
    before = _limits(fake_proc)
    want = neigh.wanted_limits(60)
    assert want["net.ipv4.neigh.default.gc_thresh3"] == 16384  # Mininet's value, at least
    assert neigh.wanted_limits(150)["net.ipv6.neigh.default.gc_thresh3"] == 2 * 150 * 149
    with neigh.NeighLimits(want, state_dir=tmp_path / "st", proc_sys=fake_proc) as held:
        assert _limits(fake_proc) == want
        assert "ipv4 gc_thresh3 1024 -> 16384" in held.describe()
        assert (tmp_path / "st" / "state.json").exists()
    assert _limits(fake_proc) == before
    assert not (tmp_path / "st" / "state.json").exists()


def test_overlapping_holders_restore_once_at_the_end(fake_proc: Path, tmp_path: Path) -> None:
    st = tmp_path / "st"
    a = neigh.NeighLimits(neigh.wanted_limits(10), state_dir=st, proc_sys=fake_proc).acquire()
    b = neigh.NeighLimits(neigh.wanted_limits(100), state_dir=st, proc_sys=fake_proc).acquire()
    key = "net.ipv4.neigh.default.gc_thresh3"
    assert _limits(fake_proc)[key] == 2 * 100 * 99
    a.release()
    assert _limits(fake_proc)[key] == 2 * 100 * 99  # b still runs
    b.release()
    b.release()  # idempotent
    assert _limits(fake_proc)[key] == 1024 and b.restored[key] == 1024


def test_value_changed_by_someone_else_is_left_alone(fake_proc: Path, tmp_path: Path) -> None:
    held = neigh.NeighLimits(neigh.wanted_limits(10), state_dir=tmp_path / "st",
                             proc_sys=fake_proc).acquire()
    path = fake_proc / "net/ipv4/neigh/default/gc_thresh3"
    path.write_text("50000\n")  # e.g. someone's Mininet.init()
    held.release()
    assert path.read_text().strip() == "50000"
    assert (fake_proc / "net/ipv6/neigh/default/gc_thresh3").read_text().strip() == "1024"


def test_higher_limits_are_never_lowered(fake_proc: Path, tmp_path: Path) -> None:
    path = fake_proc / "net/ipv4/neigh/default/gc_thresh3"
    path.write_text("65536\n")
    with neigh.NeighLimits(neigh.wanted_limits(10), state_dir=tmp_path / "st",
                           proc_sys=fake_proc) as held:
        assert path.read_text().strip() == "65536"
        assert "ipv4 gc_thresh3 65536 (kept)" in held.describe()
    assert path.read_text().strip() == "65536"


def test_dead_holder_is_swept(fake_proc: Path, tmp_path: Path) -> None:
    """A SIGKILLed run's raise: the next holder keeps the true originals, and the last
    release (or `sweep`) restores them."""
    st = tmp_path / "st"
    held = neigh.NeighLimits(neigh.wanted_limits(10), state_dir=st, proc_sys=fake_proc)
    held.acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = json.loads((st / "state.json").read_text())
    state["holders"] = {"dead": {"pid": dead.pid, "start": "1"}}  # as if it had died
    (st / "state.json").write_text(json.dumps(state))
    key = "net.ipv4.neigh.default.gc_thresh3"
    again = neigh.NeighLimits(neigh.wanted_limits(10), state_dir=st, proc_sys=fake_proc)
    again.acquire()
    again.release()
    assert _limits(fake_proc)[key] == 1024
    # and sweep() alone, with nobody left to release
    (st / "state.json").write_text(json.dumps({**state, "raised": {key: 16384}}))
    (fake_proc / "net/ipv4/neigh/default/gc_thresh3").write_text("16384\n")
    assert neigh.sweep(st, fake_proc) == {key: 1024}
    assert _limits(fake_proc)[key] == 1024


# -- runs (root, Mininet, private OVS) --------------------------------------------------

LOCK_WAIT = 900  # one fabric per machine: another test's or bench's may be running


def _runner(*args: str, timeout: float = LOCK_WAIT + 150.0) -> str:
    """`python -m topologies.fabric run ARGS`; its output, once it exited cleanly."""
    proc = subprocess.run([sys.executable, "-m", "topologies.fabric", "run", *args,
                           "--lock-timeout", str(LOCK_WAIT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "stopped; nothing left behind" in out, out[-4000:]
    return out


def _pingall_line(out: str) -> str:
    return next(line for line in out.splitlines() if "] pingall:" in line)


def test_graphml_zoo_network_through_loom() -> None:
    """Abilene (11 switches, 14 links) from its GraphML file, two hosts a switch."""
    out = _runner(str(ZOO / "Abilene.graphml"), "2", "--start-controller", "--split",
                  "--pingall", "--deadline", "45")
    assert "graph Abilene: 11 switches, 22 hosts, 14 switch links" in out
    assert "462/462 pairs as expected (242 isolated by design)" in _pingall_line(out), out
    assert "0 neighbour-table overflows" in out


def test_custom_file_through_loom(custom_file: Path) -> None:
    """``mn --custom FILE --topo ring,5``, as the runner takes it, under Loom."""
    out = _runner("--custom", str(custom_file), "ring,5", "--start-controller", "--split",
                  "--pingall", "--deadline", "45")
    assert "ring (custom): 5 switches, 5 hosts" in out and "ignored link options" in out
    assert "20/20 pairs as expected (12 isolated by design)" in _pingall_line(out), out


def test_rstp_max_age_follows_a_long_path(tmp_path: Path) -> None:
    """A 14-switch path with a triangle at one end (a loop: RSTP must block a port),
    17 switches. The centre is 8 hops from either end: a Max Age of 6 leaves the ends
    without the root's information; the derived one (9) spans them and the tree
    converges."""
    graph = nx.lollipop_graph(3, 14)
    path = tmp_path / "lollipop.graphml"
    nx.write_graphml(graph, path)
    topo = resolve_topo(str(path))
    with Fabric(topo, lock_timeout=LOCK_WAIT) as fabric:
        assert fabric.stp and fabric.rstp_timers is not None
        timers = fabric.rstp_timers
        assert timers.max_age > 6 and timers.max_age >= timers.depth
        assert 2 * (timers.forward_delay - 1) >= timers.max_age
        fabric.wait_converged(60)
        assert fabric.ovs is not None
        for sw in (fabric.rstp_root, "s17"):  # the root, and the far end of the path
            shown = fabric.ovs.appctl("rstp/show", str(sw))
            assert f"stp-max-age     {timers.max_age}s" in shown, shown
        far = fabric.ovs.appctl("rstp/show", "s17")
        assert "root-port" in far and "stp-priority    4096" in far  # it found the root
        blocked = fabric.ovs.vsctl("--format=json", "--columns=rstp_status", "list", "Port")
        assert blocked.count("Alternate") == 1  # exactly the loop's port
        res = fabric.wait_pingall(deadline=30)
        assert not [pair for pair, loss in res.items() if loss], res


def test_rstp_max_age_above_28_reaches_every_bridge() -> None:
    """OVS takes a Max Age above 28 only once Forward Delay is raised (a second pass),
    and bridges keep the root's old times unless its information turns superior: the
    far end of a chain must show the root's 32 s, not the first pass's 28 s. (Timers
    forced: a graph really that deep would take minutes to build.)"""
    fabric = Fabric(make_topo("linear", 4), stp=True, lock_timeout=LOCK_WAIT)
    fabric.rstp_timers = RstpTimers(max_age=32, forward_delay=17, hello=2, depth=31)
    with fabric:
        assert fabric.rstp_root == "s1"
        fabric.wait_converged(60)
        assert fabric.ovs is not None
        assert "This bridge is the root" in fabric.ovs.appctl("rstp/show", "s1")
        for sw in ("s1", "s4"):
            shown = fabric.ovs.appctl("rstp/show", sw)
            assert shown.count("stp-max-age     32s") == 2, shown  # the root's and its own
            assert "stp-fwd-delay   17s" in shown


def test_sixty_hosts_limits_raised_no_overflow() -> None:
    """60 hosts resolving each other need 3540 neighbour entries, far past the kernel's
    default 1024 for the whole machine: the limits are raised during the run (and given
    back after), and no entry is refused."""
    keys = list(neigh.wanted_limits(1))
    before = neigh.read_sysctls(keys)
    topo = make_topo("linear", 20, 3)
    with Fabric(topo, start_controller=True, lock_timeout=LOCK_WAIT) as fabric:
        during = neigh.read_sysctls(keys)
        want = neigh.wanted_limits(60)
        assert all(during[k] >= want[k] for k in during), during
        assert fabric.ctl is not None
        fabric.wait_converged(30)
        fabric.ctl.wait_switches(20, timeout=30)
        fabric.bind_hosts()
        # 3540 pings at once through up to 19 userspace-datapath hops: on a busy
        # 2-vCPU machine a far pair's answer can take longer than a second, every
        # round alike (what this test checks is that no neighbour entry is refused).
        res = fabric.wait_pingall(deadline=90, timeout=4.0)
        assert len(res) == 60 * 59
        assert not [pair for pair, loss in res.items() if loss], fabric.pingall_rounds
        report = fabric.neigh_report()
        assert "gc_thresh3" in report and "0 neighbour-table overflows" in report, report
        assert fabric.neigh_overflows().total == 0
    state = neigh.STATE_DIR / "state.json"
    others = json.loads(state.read_text()).get("holders") if state.exists() else None
    if not others:  # nobody else (another run on this machine) holds them now
        assert neigh.read_sysctls(keys) == before
