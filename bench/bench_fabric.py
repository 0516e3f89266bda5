"""Fabric at scale on Mininet (userspace datapath), through Loom.

For fat-tree k=4 and k=6: time from the switches connecting to full connectivity
(every pair within a network answers a ping), compile time and flows per switch,
and packets lost when an edge uplink is cut under a 100 pps ping, with Loom's
watched (fast-failover) buckets and without them (`--no-fast-failover`), in the
same run.

    sudo .venv/bin/python -m bench.bench_fabric [--k 4 6]
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


def run(k: int, fast_failover: bool) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="loom-fabric-bench-"))
    ctl = ControllerProcess(state, [], extra_args=() if fast_failover
                            else ("--no-fast-failover",))
    ctl.start()
    try:
        t0 = time.monotonic()
        with Fabric(mt.FatTreeTopo(k=k), controller=f"tcp:127.0.0.1:{ctl.of_port}") as fab:
            fab.api = ApiClient(f"http://127.0.0.1:{ctl.rest_port}")
            fab.wait_converged(60)
            connected = time.monotonic() - t0
            fab.bind_hosts(split=True)
            res = fab.wait_pingall(deadline=120, expect=fab.expected_loss())
            want = fab.expected_loss()
            bad = sum(1 for p, loss in res.items() if loss != want[p])
            leaked = sum(1 for p, loss in res.items() if want[p] == 1.0 and loss < 1.0)
            full = time.monotonic() - t0
            switches = fab.api.get("/v1/switches").ok()["switches"]
            flows = [s["installed_flows"] for s in switches]
            compile_sum = fab.api.metric("loom_compile_seconds_sum")
            compile_n = fab.api.metric("loom_compile_seconds_count")
            lost = cut_loss(fab)
            return {"k": k, "ff": fast_failover, "switches": len(switches),
                    "hosts": len(fab.hosts), "connected_s": connected, "full_s": full,
                    "wrong_pairs": bad, "leaked": leaked, "pairs": len(res), "flows": flows,
                    "compile_ms": 1000 * compile_sum / max(compile_n, 1), "cut_lost": lost}
    finally:
        ctl.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 6])
    args = parser.parse_args()
    rows = [run(k, ff) for k in args.k for ff in (True, False)]
    print(f"command: sudo .venv/bin/python -m bench.bench_fabric --k "
          f"{' '.join(map(str, args.k))}")
    print(f"{'k':>2} {'ff':>3} {'switches':>8} {'hosts':>5} {'switches up s':>13} "
          f"{'all pairs ok s':>14} {'wrong pairs':>11} {'leaked':>6} {'flows/switch med':>16} "
          f"{'max':>5} "
          f"{'compile ms':>10} {'lost on cut':>11}")
    for r in rows:
        print(f"{r['k']:>2} {'yes' if r['ff'] else 'no':>3} {r['switches']:>8} {r['hosts']:>5} "
              f"{r['connected_s']:>13.1f} {r['full_s']:>14.1f} "
              f"{r['wrong_pairs']:>5}/{r['pairs']:<5} {r['leaked']:>6} "
              f"{statistics.median(r['flows']):>16.0f} "
              f"{max(r['flows']):>5} {r['compile_ms']:>10.1f} {r['cut_lost']:>11}")
    print("wrong pairs: pairs whose pingall result differs from expected after 120 s of "
          "retries; leaked: of those, pairs of different networks that got an answer "
          "(an isolation failure; must be 0)")
    print("lost on cut: pings (of 400 at 100/s) lost when an edge switch's first uplink "
          "is cut; compile ms: mean over every compile of the run (all switches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
