"""10,000 ports created one by one: is the rate steady? (issue 11)

A real northbound store (ovsdb-server in a temp dir) and the API app in-process with
the real engine as its runtime (not started, no switch), as bench_rest_reads does.
`--networks` networks with a /16 subnet each are created through the API, then `--ports`
ports one by one (`POST /v2.0/ports`, address allocated by the store, on the networks
in turn), each timed from the WSGI call to the encoded answer, i.e. through
validation, the store transaction (commit acknowledged by ovsdb-server) and the new
snapshot. Printed: median and p90 per block of `--block` creates; the goal is the
last block no slower than the first. `cpu` is the median CPU time this process
spent per create (all its threads; ovsdb-server's not included): unlike the wall
time it hardly moves when other processes compete for the CPUs.

    .venv/bin/python -m bench.bench_creates [--ports 10000] [--networks 100] [--block 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from webob import Request

from controller.engine import Engine
from controller.rest import make_app
from controller.store import EmbeddedOvsdb, NorthboundStore
from controller.topology import Topology


def post(app: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = Request.blank(path, method="POST", body=json.dumps(body).encode(),
                        content_type="application/json")
    resp = req.get_response(app)
    assert resp.status_int == 201, (path, resp.status, resp.text[:300])
    return resp.json  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--block", type=int, default=1000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loom-bench-creates-") as tmp:
        db = EmbeddedOvsdb(Path(tmp)).start()
        store = NorthboundStore(db.remote).connect(60)
        try:
            app = make_app(store, Engine(store, Topology()))
            nets = []
            for k in range(args.networks):
                net = post(app, "/v2.0/networks", {"network": {"name": f"n{k}"}})["network"]
                post(app, "/v2.0/subnets", {"subnet": {
                    "network_id": net["id"], "ip_version": 4,
                    "cidr": f"10.{k // 256}.{k % 256}.0/24" if args.ports // args.networks
                    < 250 else f"10.{k}.0.0/16"}})
                nets.append(net["id"])
            times: list[float] = []
            cpu: list[float] = []
            started = time.perf_counter()
            for i in range(args.ports):
                body = {"port": {"network_id": nets[i % len(nets)], "name": f"p{i}"}}
                c0 = time.process_time()
                t0 = time.perf_counter()
                post(app, "/v2.0/ports", body)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            total = time.perf_counter() - started
        finally:
            store.close()
            db.stop()
    print(f"# {args.ports} ports created one by one over {args.networks} networks, "
          f"in-process WSGI, real store; ms per create; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'ports':>13} {'median':>8} {'p90':>8} {'cpu':>8} {'creates/s':>10}")
    blocks, cpu_blocks = [], []
    for lo in range(0, len(times), args.block):
        block = sorted(times[lo:lo + args.block])
        med = statistics.median(block) * 1000
        p90 = block[int(len(block) * 0.9)] * 1000
        cpu_med = statistics.median(cpu[lo:lo + args.block]) * 1000
        blocks.append(med)
        cpu_blocks.append(cpu_med)
        print(f"{lo + 1:>6}-{lo + len(block):<6} {med:8.2f} {p90:8.2f} {cpu_med:8.2f} "
              f"{len(block) / sum(block):10.0f}")
    print(f"last block / first block (median): {blocks[-1] / blocks[0]:.2f}x, cpu "
          f"{cpu_blocks[-1] / cpu_blocks[0]:.2f}x; total {total:.0f} s")
    print("command: .venv/bin/python -m bench.bench_creates " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
