"""Fabric discovery and failover on a Topology Zoo network: Loom against OVS's own RSTP.

The network is a real ISP map (default: Uninett 2010, 74 switches and 101 links,
shipped in ``topologies/zoo/``), one host per switch, run on Mininet (userspace
datapath) by ``topologies.fabric``. The same run, once under Loom (hosts bound on
two networks, ``--split``) and once with standalone OVS bridges running RSTP:

1. soak: every host pings every other host, round after round, for ``--soak``
   seconds. Loom: how often ``/v1/topology`` showed fewer fabric links than are
   cabled (a flap: discovery lost a link that was never cut) and the links the
   controller log says it lost. RSTP: how often the set of forwarding ports changed.
2. cut and restore: a 100 pps ping between two hosts at least ``--min-hops``
   switch hops apart; one link that the ping's path crosses (every shortest path
   under Loom, the spanning-tree path under RSTP; never a bridge of the graph) is
   cut (``ip link set down`` on both ends) and, once the network has settled, put
   back. Pings lost on the cut and on the restore, and the longest outage, per cut.

    sudo .venv/bin/python -m bench.bench_fabric_failover \
        [--graph topologies/zoo/Uninett2010.graphml] [--modes loom rstp]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import networkx as nx

from topologies import mininet_topos as mt
from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.fabric import Fabric, FabricError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GRAPH = ROOT / "topologies" / "zoo" / "Uninett2010.graphml"
PING_INTERVAL = 0.01  # 100 pps


# -- the topology ---------------------------------------------------------------------

class _GraphTopo(mt.FabricTopo):
    """A switch per graph node (``s1``.. in node order), `hosts_per_switch` hosts each.

    Only used when ``topologies.graphtopo`` (the runner's own graph support) is not
    there; it numbers switches the same simple way."""

    kind = "graph"

    def build(self, path: str = "", hosts_per_switch: int = 1) -> None:  # type: ignore[override]
        graph = nx.Graph(nx.read_graphml(path) if path.endswith(".graphml")
                         else nx.node_link_graph(json.loads(Path(path).read_text())))
        nodes = sorted(graph.nodes, key=lambda n: (len(str(n)), str(n)))
        name = {n: self.fabric_switch(f"s{i}", mt.TIER_PLAIN, 0, i)
                for i, n in enumerate(nodes, start=1)}
        for n in nodes:
            for _ in range(int(hosts_per_switch)):
                self.fabric_host(name[n])
        for a, b in sorted(graph.edges, key=lambda e: sorted((name[e[0]], name[e[1]]))):
            if a != b:
                self.link(name[a], name[b])


def load_topo(path: Path) -> mt.FabricTopo:
    """The runner's graph loader if it is there, else the local stand-in."""
    try:
        from topologies.graphtopo import graph_topo  # type: ignore[import-not-found]
    except ImportError:
        return _GraphTopo(path=str(path), hosts_per_switch=1)
    return graph_topo(str(path), hosts_per_switch=1)  # type: ignore[no-any-return]


def switch_graph(topo: mt.FabricTopo) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(topo.tiers)
    for a, _pa, b, _pb in topo.switch_links():
        graph.add_edge(a, b)
    return graph


def host_switch(topo: mt.FabricTopo, host: str) -> str:
    return topo.host_links[host][0][1]


def _host_no(host: str) -> int:
    return int(host[1:])


@dataclass(frozen=True)
class CutPlan:
    src: str
    dst: str
    hops: int  # switch hops between the two hosts' switches on the path used
    link: tuple[str, str]  # the link to cut (switch names)


def loom_cuts(topo: mt.FabricTopo, n: int, min_hops: int) -> list[CutPlan]:
    """`n` cuts, each of a link that every shortest path of a long host pair crosses.

    Pairs are of the same Loom network (`bind_hosts(split=True)`: same parity), longest
    first; the link is the crossed one nearest the middle of the path; never a bridge
    (cutting a bridge partitions the network: there is nothing to fail over to)."""
    graph = switch_graph(topo)
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    hosts = sorted(topo.host_links, key=_host_no)
    pairs = []
    for i, a in enumerate(hosts):
        for b in hosts[i + 1:]:
            if _host_no(a) % 2 != _host_no(b) % 2:
                continue
            sa, sb = host_switch(topo, a), host_switch(topo, b)
            d = nx.shortest_path_length(graph, sa, sb)
            if d >= min_hops:
                pairs.append((-d, _host_no(a), _host_no(b), a, b, sa, sb))
    out: list[CutPlan] = []
    used: set[frozenset[str]] = set()
    for negd, _, _, a, b, sa, sb in sorted(pairs):
        paths = list(nx.all_shortest_paths(graph, sa, sb))
        common = set.intersection(*({frozenset(e) for e in zip(p, p[1:], strict=False)}
                                    for p in paths))
        ref = paths[0]
        steps = [frozenset(e) for e in zip(ref, ref[1:], strict=False)]
        ok = [(abs(i - len(steps) / 2 + 0.5), i) for i, e in enumerate(steps)
              if e in common and e not in bridges and e not in used]
        if not ok:
            continue
        _, i = min(ok)
        used.add(steps[i])
        out.append(CutPlan(a, b, -negd, (ref[i], ref[i + 1])))
        if len(out) == n:
            break
    return out


# -- measuring ------------------------------------------------------------------------

@dataclass
class PingResult:
    sent: int
    lost: int
    outage_ms: float  # the longest run of lost pings, times the interval


def ping_around(fab: Fabric, src: str, dst_ip: str, seconds: float, at: float,
                action: Callable[[], None]) -> PingResult:
    """A 100 pps ping from `src` for `seconds`, running `action` `at` seconds in."""
    count = int(seconds / PING_INTERVAL)
    proc = subprocess.Popen(
        ["mnexec", "-a", str(fab.node(src).pid), "ping", "-n", "-i", str(PING_INTERVAL),
         "-W", "1", "-c", str(count), dst_ip],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(at)
        action()
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    got = {int(m.group(1)) for m in re.finditer(r"icmp_seq=(\d+) ttl", out)}
    m = re.search(r"(\d+) packets transmitted", out)
    sent = int(m.group(1)) if m else count
    longest = run = 0
    for seq in range(1, sent + 1):
        run = 0 if seq in got else run + 1
        longest = max(longest, run)
    return PingResult(sent, sent - len(got & set(range(1, sent + 1))),
                      longest * PING_INTERVAL * 1000)


def _answers(fab: Fabric, plan: CutPlan) -> bool:
    return fab.ping(plan.src, fab.host_ip(plan.dst), 1) == 0.0


def wait_for(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.2) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - t0


@contextmanager
def background_pingall(fab: Fabric, rounds: list[float]) -> Iterator[None]:
    """All hosts ping all others, round after round, until the block ends; `rounds`
    gets each round's fraction of pairs answered."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            res = fab.pingall(timeout=1.0, count=1)
            want = fab.expected_loss()
            good = [p for p, loss in want.items() if loss == 0.0]
            rounds.append(sum(1 for p in good if res.get(p) == 0.0) / max(len(good), 1))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(120)


@dataclass
class ModeResult:
    mode: str
    switches: int
    links: int
    ready_s: float = 0.0
    soak_s: float = 0.0
    soak_rounds: list[float] = field(default_factory=list)
    soak_flaps: int = 0  # polls that saw fewer links / forwarding-set changes
    soak_lost_log: int = 0  # links the controller log says were lost (Loom)
    soak_min_links: int = 0
    neigh: str = ""  # the runner's neighbour-table report (limits, overflows)
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end
    cuts: list[tuple[CutPlan, PingResult, PingResult]] = field(default_factory=list)


QUIET = r"fabric link|fabric rollout|group changes"


def wait_quiet(path: Path, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Until the controller has logged no link event, rollout step or push for `quiet`
    seconds: a cut measured while an earlier change is still rolling out measures both."""
    t0 = time.monotonic()
    offset = path.stat().st_size
    calm_since = time.monotonic()
    while time.monotonic() - calm_since < quiet:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the controller did not settle in {timeout:.0f} s")
        time.sleep(0.2)
        size = path.stat().st_size
        if size != offset and _log_count(path, offset, QUIET):
            calm_since = time.monotonic()
        offset = size


def wait_protected(path: Path, timeout: float = 60.0) -> bool:
    """Until the controller has worked out the repair of every link's loss for the
    fabric as it is now (its log says so after the last link event or rollout step):
    a cut then meets the steady state, not the seconds right after the last change."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = path.read_text(errors="replace")
        changes = [m.start() for m in re.finditer(
            r"fabric link \S+ <-> \S+ (lost|held|restored|learned)|fabric rollout", text)]
        last_change = changes[-1] if changes else 0
        if text.rfind("protection: the loss of each of", last_change) > last_change:
            return True
        time.sleep(0.5)
    return False


def _log_count(path: Path, offset: int, pattern: str) -> int:
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return len(re.findall(pattern, text))


@contextmanager
def fabric(fab: Fabric) -> Iterator[Fabric]:
    """Start and stop `fab`; a complaint of its final leftover check is reported, not
    raised, so the figures measured before it are still printed."""
    fab.start()
    failed = False
    try:
        yield fab
    except BaseException:
        failed = True
        raise
    finally:
        try:
            fab.stop(keep_logs=failed)
        except FabricError as exc:
            if failed:
                raise
            _say(f"fabric cleanup: {exc}")


def _neigh(fab: Fabric) -> str:
    report = getattr(fab, "neigh_report", None)
    return str(report()) if report is not None else ""


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_loom(topo: mt.FabricTopo, args: argparse.Namespace) -> ModeResult:
    state = Path(tempfile.mkdtemp(prefix="loom-failover-bench-"))
    ctl = ControllerProcess(state, [], extra_args=tuple(args.controller_arg or ()))
    ctl.start()
    _say(f"loom: controller log {ctl.log_path}")
    cabled = len(topo.switch_links())
    res = ModeResult("loom", len(topo.tiers), cabled)
    try:
        t0 = time.monotonic()
        with fabric(Fabric(topo, controller=f"tcp:127.0.0.1:{ctl.of_port}",
                           lock_timeout=args.lock_timeout)) as fab:
            fab.api = ApiClient(f"http://127.0.0.1:{ctl.rest_port}")
            fab.wait_converged(180)
            wait_for("every link discovered", lambda: len(fab.api_links()) == cabled, 180)
            fab.bind_hosts(split=True)
            ctl.wait_switches(len(topo.tiers), timeout=180)
            plans = loom_cuts(topo, args.cuts, args.min_hops)
            for plan in plans:
                wait_for(f"{plan.src} -> {plan.dst}", partial(_answers, fab, plan), 120, 0.5)
            res.ready_s = time.monotonic() - t0
            res.load.append(_load())
            _say(f"loom: ready in {res.ready_s:.1f} s; soak {args.soak:.0f} s")

            # 1. soak under all-pairs load
            offset = ctl.log_path.stat().st_size
            counts: list[int] = []
            t1 = time.monotonic()
            with background_pingall(fab, res.soak_rounds):
                while time.monotonic() - t1 < args.soak:
                    counts.append(len(fab.api_links()))
                    time.sleep(0.25)
            res.soak_s = time.monotonic() - t1
            res.soak_flaps = sum(1 for c in counts if c < cabled)
            res.soak_min_links = min(counts)
            res.soak_lost_log = _log_count(ctl.log_path, offset, r"fabric link .* lost")
            res.neigh = _neigh(fab)
            wait_for("links back after the soak", lambda: len(fab.api_links()) == cabled, 120)
            wait_quiet(ctl.log_path)

            # 2. cut and restore
            for plan in plans:
                a, b = plan.link
                dst_ip = fab.host_ip(plan.dst)
                wait_quiet(ctl.log_path)
                if args.wait_protection and not wait_protected(ctl.log_path):
                    _say("loom: no protection worked out in time; cutting anyway")
                cut = ping_around(fab, plan.src, dst_ip, args.cut_window, 1.5,
                                  partial(fab.cut_link, a, b))
                wait_for("cut link out of the topology",
                         lambda: len(fab.api_links()) == cabled - 1, 60)
                wait_quiet(ctl.log_path)
                back = ping_around(fab, plan.src, dst_ip, args.restore_window, 1.5,
                                   partial(fab.restore_link, a, b))
                wait_for("restored link in the topology",
                         lambda: len(fab.api_links()) == cabled, 60)
                wait_quiet(ctl.log_path)
                res.cuts.append((plan, cut, back))
                res.load.append(_load())
                _say(f"loom: cut {a}-{b} ({plan.src}->{plan.dst}, {plan.hops} hops): "
                     f"lost {cut.lost} on cut, {back.lost} on restore")
    finally:
        ctl.stop()
    return res


# -- RSTP -------------------------------------------------------------------------------

def _rstp_ports(fab: Fabric) -> dict[str, tuple[str, str]]:
    """Port name -> (role, state) of every bridge port under RSTP."""
    assert fab.ovs is not None
    out = fab.ovs.vsctl("--format=json", "--columns=name,rstp_status", "list", "Port")
    ports = {}
    for name, status in json.loads(out)["data"]:
        st = dict(status[1]) if isinstance(status, list) and status[0] == "map" else {}
        ports[name] = (str(st.get("rstp_port_role")), str(st.get("rstp_port_state")))
    return ports


def rstp_tree(fab: Fabric) -> nx.Graph:
    """The spanning tree RSTP forwards on: links whose both ends forward."""
    ports = _rstp_ports(fab)
    tree = nx.Graph()
    tree.add_nodes_from(fab.topo.tiers)
    for link in fab.links():
        if all(ports.get(p, ("", ""))[1] == "Forwarding" for p in (link.port, link.peer_port)):
            tree.add_edge(link.switch, link.peer)
    return tree


def _tree_joins(fab: Fabric, plan: CutPlan) -> bool:
    return bool(fab._rstp_settled()) and nx.has_path(  # noqa: SLF001
        rstp_tree(fab), host_switch(fab.topo, plan.src), host_switch(fab.topo, plan.dst))


def rstp_cut(fab: Fabric, plan: CutPlan, used: set[frozenset[str]]) -> CutPlan:
    """The same host pair; the link to cut is the one nearest the middle of its tree path
    that is not a bridge of the cabling (nor cut before in this run)."""
    graph = switch_graph(fab.topo)
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    tree = rstp_tree(fab)
    path = nx.shortest_path(tree, host_switch(fab.topo, plan.src), host_switch(fab.topo,
                                                                               plan.dst))
    steps = list(zip(path, path[1:], strict=False))
    ok = [(abs(i - len(steps) / 2 + 0.5), i) for i, e in enumerate(steps)
          if frozenset(e) not in bridges and frozenset(e) not in used]
    if not ok:  # every candidate cut already: take one again
        ok = [(abs(i - len(steps) / 2 + 0.5), i) for i, e in enumerate(steps)
              if frozenset(e) not in bridges]
    _, i = min(ok)
    used.add(frozenset(steps[i]))
    return CutPlan(plan.src, plan.dst, len(steps), steps[i])


def run_rstp(topo: mt.FabricTopo, plans: list[CutPlan], args: argparse.Namespace) -> ModeResult:
    res = ModeResult("rstp", len(topo.tiers), len(topo.switch_links()))
    t0 = time.monotonic()
    with fabric(Fabric(topo, lock_timeout=args.lock_timeout)) as fab:
        fab.wait_converged(300)
        for plan in plans:
            wait_for(f"{plan.src} -> {plan.dst}", partial(_answers, fab, plan), 120, 0.5)
        res.ready_s = time.monotonic() - t0
        res.load.append(_load())
        _say(f"rstp: converged in {res.ready_s:.1f} s; soak {args.soak:.0f} s")
        last = None
        changes = 0
        t1 = time.monotonic()
        with background_pingall(fab, res.soak_rounds):
            while time.monotonic() - t1 < args.soak:
                fwd = frozenset(p for p, (_, st) in _rstp_ports(fab).items()
                                if st == "Forwarding")
                changes += last is not None and fwd != last
                last = fwd
                time.sleep(0.5)
        res.soak_s = time.monotonic() - t1
        res.soak_flaps = changes
        res.neigh = _neigh(fab)
        used: set[frozenset[str]] = set()
        for base in plans:
            # the soak may have left RSTP reconverging: cut only a settled tree
            wait_for("RSTP settled", partial(_tree_joins, fab, base), 300, 0.5)
            plan = rstp_cut(fab, base, used)
            a, b = plan.link
            dst_ip = fab.host_ip(plan.dst)
            time.sleep(2.0)
            cut = ping_around(fab, plan.src, dst_ip, args.cut_window, 1.5,
                              partial(fab.cut_link, a, b))
            wait_for("RSTP settled after the cut", fab._rstp_settled, 120)  # noqa: SLF001
            time.sleep(2.0)
            back = ping_around(fab, plan.src, dst_ip, args.restore_window, 1.5,
                               partial(fab.restore_link, a, b))
            wait_for("RSTP settled after the restore", fab._rstp_settled, 120)  # noqa: SLF001
            res.cuts.append((plan, cut, back))
            res.load.append(_load())
            _say(f"rstp: cut {a}-{b} ({plan.src}->{plan.dst}, {plan.hops} hops): "
                 f"lost {cut.lost} on cut, {back.lost} on restore")
    return res


# -- report -------------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def report(graph: Path, topo: mt.FabricTopo, rows: list[ModeResult], argv: list[str],
           args: argparse.Namespace) -> None:
    print(f"command: sudo .venv/bin/python -m bench.bench_fabric_failover {' '.join(argv)}"
          .rstrip())
    print(f"network: {graph.name}: {len(topo.tiers)} switches, {len(topo.switch_links())} "
          f"links, {len(topo.host_links)} hosts (one per switch)")
    print(f"{'mode':5} {'ready s':>7} {'soak s':>6} {'pingall ok med':>14} {'flaps':>5} "
          f"{'min links':>9} {'lost (log)':>10}")
    for r in rows:
        med = statistics.median(r.soak_rounds) if r.soak_rounds else float("nan")
        print(f"{r.mode:5} {r.ready_s:>7.1f} {r.soak_s:>6.0f} {med:>13.0%} {r.soak_flaps:>5} "
              f"{r.soak_min_links if r.mode == 'loom' else r.links:>9} "
              f"{r.soak_lost_log if r.mode == 'loom' else '-':>10}")
    print(f"{'mode':5} {'pair':>10} {'hops':>4} {'cut link':>10} {'lost cut':>8} "
          f"{'outage ms':>9} {'lost restore':>12} {'outage ms':>9}")
    for r in rows:
        for plan, cut, back in r.cuts:
            print(f"{r.mode:5} {plan.src + '>' + plan.dst:>10} {plan.hops:>4} "
                  f"{'-'.join(plan.link):>10} {cut.lost:>8} {cut.outage_ms:>9.0f} "
                  f"{back.lost:>12} {back.outage_ms:>9.0f}")
        if r.cuts:
            print(f"{r.mode:5} {'median':>10} {'':>4} {'':>10} "
                  f"{statistics.median(c.lost for _, c, _ in r.cuts):>8.0f} "
                  f"{statistics.median(c.outage_ms for _, c, _ in r.cuts):>9.0f} "
                  f"{statistics.median(b.lost for _, _, b in r.cuts):>12.0f} "
                  f"{statistics.median(b.outage_ms for _, _, b in r.cuts):>9.0f}")
    for r in rows:
        if r.neigh:
            print(f"{r.mode}: {r.neigh}")
        if r.load:
            print(f"{r.mode}: 1-minute load average {min(r.load):.1f}-{max(r.load):.1f} "
                  "(machine shared with other work)")
    print("pingall ok: median share of same-network pairs answered per all-pairs round "
          "(the load); flaps: Loom: polls of /v1/topology (every 0.25 s) showing fewer fabric "
          "links than cabled, nothing cut; RSTP: changes of the set of forwarding ports "
          "(polled every 0.5 s); lost (log): links the controller logged as lost in the soak")
    print(f"lost cut / restore: pings at {1 / PING_INTERVAL:.0f} pps lost in a "
          f"{args.cut_window:g} s / {args.restore_window:g} s window, the link cut / restored "
          "1.5 s in; outage: the longest run of consecutive lost pings, in ms; hops: switch "
          "hops of the path (Loom: shortest; RSTP: the spanning tree's)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, default=DEFAULT_GRAPH,
                        help="GraphML or node-link JSON file (default: Uninett2010)")
    parser.add_argument("--soak", type=float, default=40.0, help="soak seconds")
    parser.add_argument("--cuts", type=int, default=3, help="links cut (one at a time)")
    parser.add_argument("--min-hops", type=int, default=8)
    parser.add_argument("--cut-window", type=float, default=5.0, help="ping seconds per cut")
    parser.add_argument("--restore-window", type=float, default=12.0,
                        help="ping seconds per restore (covers the hold-down)")
    parser.add_argument("--modes", nargs="+", choices=("loom", "rstp"), default=["loom", "rstp"])
    parser.add_argument("--controller-arg", action="append", help="extra controller argument")
    parser.add_argument("--wait-protection", action="store_true",
                        help="before each cut, wait until the controller logs the repair of "
                             "every link's loss worked out ahead (builds that do so: up to "
                             "commit ba791d6, or any build run with --no-fast-failover; with "
                             "fast failover the groups' detours make it unnecessary)")
    parser.add_argument("--older-build", action="store_true",
                        help="the controller is a build from before this benchmark (run "
                             "from its tree): do not wait for log lines it does not write")
    parser.add_argument("--lock-timeout", type=float, default=3600.0,
                        help="seconds to wait for another fabric run to finish")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the fabric is cleaned up
    topo = load_topo(args.graph)
    plans = loom_cuts(topo, args.cuts, args.min_hops)
    if not plans:
        print(f"no host pair {args.min_hops}+ hops apart with a cuttable link", file=sys.stderr)
        return 2
    rows = []
    if "loom" in args.modes:
        rows.append(run_loom(topo, args))
    if "rstp" in args.modes:
        rows.append(run_rstp(load_topo(args.graph), plans, args))
    report(args.graph, topo, rows, raw, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
