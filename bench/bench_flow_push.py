"""Flow push rate: Loom's reconciler vs `ovs-ofctl --bundle add-flows`, same flows, same run.

Both write into like bridges of one private ovs-vswitchd (netdev datapath, in its
own namespace). Loom's side is the real path: compile the intent, diff against
what the switch holds (read over OpenFlow), encode, send one ONF bundle over
os-ken's connection, wait for the commit reply. The baseline is the same flows as
text, installed by ovs-ofctl in one bundle.

    sudo .venv/bin/python -m bench.bench_flow_push [--sizes 10000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import LOOM_DPID, BenchHost, push_bridges, synthetic
from controller import ofwire
from controller.compiler import clear_caches, compile_switch
from controller.reconciler import SwitchSync


def flows_per_port() -> float:
    intent, topo = synthetic(1000, LOOM_DPID)
    return len(compile_switch(intent, topo, LOOM_DPID).flows) / 1000


def count_flows(host: BenchHost, bridge: str) -> int:
    return len(host.ovs.dump_flows(bridge, stats=False))


def run(sizes: list[int], repeat: int) -> list[dict]:
    host = BenchHost()
    results = []
    try:
        _, channel = push_bridges(host)
        per_port = flows_per_port()
        for size in sizes:
            n_ports = max(1, round(size / per_port))
            intent, topo = synthetic(n_ports, LOOM_DPID)
            loom_s, base_s, compile_s = [], [], []
            for _ in range(repeat):
                ofwire.clear_cache()
                clear_caches()
                started = time.perf_counter()
                desired = compile_switch(intent, topo, LOOM_DPID)
                compile_s.append(time.perf_counter() - started)
                n_flows = len(desired.flows)

                host.ovs.ofctl("del-flows", "br-int")
                sync = SwitchSync(channel)
                sync.read_installed()
                started = time.perf_counter()
                diff = sync.push(desired)
                loom_s.append(time.perf_counter() - started)
                assert len(diff.adds) == n_flows
                assert count_flows(host, "br-int") == n_flows

                host.ovs.ofctl("del-flows", "br-base")
                with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as fh:
                    for flow in desired.flows.values():
                        fh.write(ofwire.to_ofctl(flow) + "\n")
                    path = Path(fh.name)
                started = time.perf_counter()
                host.ovs.ofctl("--bundle", "add-flows", "br-base", str(path), timeout=600)
                base_s.append(time.perf_counter() - started)
                path.unlink()
                assert count_flows(host, "br-base") == n_flows
            loom = statistics.median(loom_s)
            base = statistics.median(base_s)
            results.append({
                "flows": n_flows, "ports": n_ports,
                "compile_s": statistics.median(compile_s),
                "loom_s": loom, "ofctl_s": base,
                "loom_rate": n_flows / loom, "ofctl_rate": n_flows / base,
                "ratio": base / loom,
            })
    finally:
        host.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = run(args.sizes, args.repeat)
    print(f"command: sudo .venv/bin/python -m bench.bench_flow_push --sizes "
          f"{' '.join(map(str, args.sizes))} --repeat {args.repeat}")
    print(f"{'flows':>8} {'ports':>6} {'compile s':>10} {'loom s':>8} {'ofctl s':>8} "
          f"{'loom/s':>9} {'ofctl/s':>9} {'ratio':>6}")
    for r in results:
        print(f"{r['flows']:>8} {r['ports']:>6} {r['compile_s']:>10.3f} {r['loom_s']:>8.3f} "
              f"{r['ofctl_s']:>8.3f} {r['loom_rate']:>9.0f} {r['ofctl_rate']:>9.0f} "
              f"{r['ratio']:>6.2f}")
    print("ratio = ofctl time / loom time (>= 1 means Loom is faster); medians of "
          f"{args.repeat} runs; compile time is reported apart and not in 'loom s'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
