"""Fabric at scale on Mininet (userspace datapath), through Loom.

For fat-tree k=4 and k=6: time from the switches connecting to full connectivity
(every pair within a network answers a ping), compile time and flows per switch,
and packets lost when an edge uplink is cut under a 100 pps ping, with Loom's
watched (fast-failover) buckets and without them (`--no-fast-failover`), in the
same run. `--one-network` adds a Loom row with every host on one network;
`--standalone` a row for OVS's own learning switch + RSTP (no Loom), all-pairs only.

Every all-pairs figure comes with the first round's (the first packet of each pair,
ARP included: later rounds find warm caches) and with the neighbour-table overflows
the kernel counted during the run (``table_fulls``, machine-wide): the runner raises
the kernel's neighbour table limits for the run (`topologies.neigh`), without which
~50 hosts overflow the default 1024 entries and lose first packets.

    sudo .venv/bin/python -m bench.bench_fabric [--k 4 6] [--one-network] [--standalone]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from topologies import mininet_topos as mt
from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.fabric import Fabric


def cut_loss(fabric: Fabric) -> int:
    src = fabric.hosts[0]
    src_edge = fabric.edge_ports()[f"{src}-eth0"][0]
    dst = [h for h in fabric.hosts if fabric.host_network[h] == fabric.host_network[src]
           and fabric.edge_ports()[f"{h}-eth0"][0] != src_edge][-1]
    uplink = sorted({lk.peer if lk.switch == src_edge else lk.switch for lk in fabric.links()
                     if src_edge in (lk.switch, lk.peer)})[0]
    ping = subprocess.Popen(["mnexec", "-a", str(fabric.node(src).pid), "ping", "-n", "-q",
                             "-i", "0.01", "-c", "400", fabric.host_ip(dst)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    fabric.cut_link(src_edge, uplink)
    out, _ = ping.communicate(timeout=30)
    fabric.restore_link(src_edge, uplink)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return int(m.group(1)) - int(m.group(2)) if m else -1


def _pairs(fab: Fabric, deadline: float) -> dict[str, Any]:
    """All-pairs until clean (or `deadline`): wrong and leaked pairs, first round's."""
    want = fab.expected_loss()
    res = fab.wait_pingall(deadline=deadline, expect=want)
    return {"wrong_pairs": sum(1 for p, loss in res.items() if loss != want[p]),
            "leaked": sum(1 for p, loss in res.items() if want[p] == 1.0 and loss < 1.0),
            "pairs": len(res), "first_wrong": fab.pingall_rounds[0],
            "rounds": len(fab.pingall_rounds)}


def run_standalone(k: int) -> dict[str, Any]:
    """OVS NORMAL + RSTP, no Loom: the same fabric's all-pairs, one network."""
    with Fabric(mt.FatTreeTopo(k=k), lock_timeout=LOCK_WAIT) as fab:
        t0 = _built_at(fab)
        fab.wait_converged(60)
        connected = time.monotonic() - t0
        pairs = _pairs(fab, deadline=120)
        return {"k": k, "ff": None, "nets": 1, "switches": len(fab.topo.tiers),
                "hosts": len(fab.hosts),
                "connected_s": connected, "full_s": time.monotonic() - t0, **pairs,
                "flows": [0], "compile_ms": float("nan"), "cut_lost": -1,
                "overflows": fab.neigh_overflows().total,
                "limits": fab.neigh.describe() if fab.neigh else "not raised"}


LOCK_WAIT = 1800.0  # one fabric per machine: wait for another run's to finish


def _built_at(fab: Fabric) -> float:
    """When the build started (after any wait for the machine's fabric lock)."""
    return time.monotonic() - fab.timings["build"] - fab.timings["switches"]


def wait_links(fab: Fabric, timeout: float = 60.0) -> None:
    """Until Loom's topology shows every declared link up, so the first all-pairs round
    measures first packets, not discovery still under way."""
    assert fab.api is not None
    want = len(fab.declared_links())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = fab.api.get("/v1/topology").ok()["links"]
        if sum(1 for lk in links if lk["kind"] == "fabric" and lk["state"] == "up") >= want:
            return
        time.sleep(0.5)


def run(k: int, fast_failover: bool, split: bool = True) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="loom-fabric-bench-"))
    ctl = ControllerProcess(state, [], extra_args=() if fast_failover
                            else ("--no-fast-failover",))
    ctl.start()
    try:
        with Fabric(mt.FatTreeTopo(k=k), controller=f"tcp:127.0.0.1:{ctl.of_port}",
                    lock_timeout=LOCK_WAIT) as fab:
            t0 = _built_at(fab)
            fab.api = ApiClient(f"http://127.0.0.1:{ctl.rest_port}")
            fab.wait_converged(60)
            connected = time.monotonic() - t0
            wait_links(fab)
            fab.bind_hosts(split=split, wait=True)  # answered once installed everywhere
            pairs = _pairs(fab, deadline=120)
            full = time.monotonic() - t0
            switches = fab.api.get("/v1/switches").ok()["switches"]
            flows = [s["installed_flows"] for s in switches]
            compile_sum = fab.api.metric("loom_compile_seconds_sum")
            compile_n = fab.api.metric("loom_compile_seconds_count")
            overflowed = fab.neigh_overflows().total  # the all-pairs part, before the cut
            lost = cut_loss(fab)
            return {"k": k, "ff": fast_failover, "nets": 2 if split else 1,
                    "switches": len(switches),
                    "hosts": len(fab.hosts), "connected_s": connected, "full_s": full,
                    **pairs, "flows": flows, "overflows": overflowed,
                    "limits": fab.neigh.describe() if fab.neigh else "not raised",
                    "compile_ms": 1000 * compile_sum / max(compile_n, 1), "cut_lost": lost}
    finally:
        ctl.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--standalone", action="store_true",
                        help="also run OVS learning + RSTP without Loom (all-pairs only)")
    parser.add_argument("--one-network", action="store_true",
                        help="also run Loom with every host on one network (no host asks "
                        "for addresses Loom cannot answer)")
    args = parser.parse_args()
    rows = []
    for k in args.k:
        rows += [run(k, ff) for ff in (True, False)]
        if args.one_network:
            rows.append(run(k, True, split=False))
        if args.standalone:
            rows.append(run_standalone(k))
    print(f"command: sudo .venv/bin/python -m bench.bench_fabric --k "
          f"{' '.join(map(str, args.k))}" + (" --one-network" if args.one_network else "")
          + (" --standalone" if args.standalone else ""))
    print(f"{'k':>2} {'ff':>4} {'nets':>4} {'switches':>8} {'hosts':>5} {'switches up s':>13} "
          f"{'all pairs ok s':>14} {'first round':>11} {'wrong pairs':>11} {'leaked':>6} "
          f"{'neigh ovf':>9} {'flows/switch med':>16} {'max':>5} {'compile ms':>10} "
          f"{'lost on cut':>11}")
    for r in rows:
        ff = "rstp" if r["ff"] is None else "yes" if r["ff"] else "no"
        print(f"{r['k']:>2} {ff:>4} {r['nets']:>4} {r['switches']:>8} {r['hosts']:>5} "
              f"{r['connected_s']:>13.1f} {r['full_s']:>14.1f} "
              f"{r['first_wrong']:>5}/{r['pairs']:<5} "
              f"{r['wrong_pairs']:>5}/{r['pairs']:<5} {r['leaked']:>6} {r['overflows']:>9} "
              f"{statistics.median(r['flows']):>16.0f} "
              f"{max(r['flows']):>5} {r['compile_ms']:>10.1f} {r['cut_lost']:>11}")
    print("first round: pairs wrong in the first all-pairs round (first packets, ARP "
          "included); wrong pairs: pairs whose pingall result differs from expected after "
          "120 s of retries; leaked: of those, pairs of different networks that got an "
          "answer (an isolation failure; must be 0)")
    print("neigh ovf: neighbour entries the kernel refused during the all-pairs part "
          "(/proc/net/stat/{arp,ndisc}_cache table_fulls, machine-wide); "
          + "; ".join(sorted({r["limits"] for r in rows})))
    print("lost on cut: pings (of 400 at 100/s) lost when an edge switch's first uplink "
          "is cut (-1: not measured); compile ms: mean over every compile of the run (all "
          "switches); ff rstp: OVS learning switch + RSTP, no Loom; nets: Loom networks "
          "(2: odd and even hosts apart, each host also pings the other network's "
          "addresses, which nobody answers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
