"""Run every benchmark, as recorded in bench/RESULTS.md (`make bench`; needs root).

Each benchmark runs in its own process: os-ken's AppManager and config are
process-global, and a benchmark that crashes must not take the others with it.

    sudo .venv/bin/python -m bench [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, module, arguments, needs root)
BENCHES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("encode", "bench.bench_encode", (), False),
    ("flow_push", "bench.bench_flow_push", ("--sizes", "10000", "100000", "--repeat", "3"), True),
    ("rest_latency", "bench.bench_rest_latency", ("--ports", "500", "--bind", "100"), True),
    ("rest_reads", "bench.bench_rest_reads", ("--sizes", "100", "10000"), False),
    ("security_groups", "bench.bench_security_groups", (), True),
    ("overlay_scale", "bench.bench_overlay_scale", ("--sizes", "3", "6", "10"), True),
    ("fabric", "bench.bench_fabric", ("--k", "4", "6"), True),
    ("fabric_failover", "bench.bench_fabric_failover", (), True),
    ("qos_guarantees", "bench.bench_qos_guarantees", (), True),
    ("idle_connections", "bench.bench_idle_connections", ("--crowd", "1000", "--requests", "200"),
     False),
    ("incremental", "bench.bench_incremental", ("--sizes", "100", "10000"), False),
    ("creates", "bench.bench_creates", ("--ports", "10000"), False),
    ("topology_delta", "bench.bench_topology_delta", (), False),
    ("port_change", "bench.bench_port_change", ("--sizes", "100", "10000"), True),
    ("routing", "bench.bench_routing", ("--repeats", "2"), True),
    ("push_small", "bench.bench_push_small", ("--repeat", "15", "--bridge-ports", "2000"), True),
    # needs OVN from Debian (apt-get install ovn-central ovn-host): says so if missing
    ("cold_start", "bench.bench_cold_start", ("--ports", "10000"), True),
    ("nat", "bench.bench_nat", (), True),
    ("dhcp", "bench.bench_dhcp", (), True),
    # OVN's northd baseline needs ovn-central (skipped, and said so, if missing)
    ("ha", "bench.bench_ha", ("--repeat", "5"), True),
    ("plan", "bench.bench_plan", ("--sizes", "100", "10000"), False),
    ("drift", "bench.bench_drift", ("--sizes", "100", "10000"), True),
    ("group_meter_read", "bench.bench_group_meter_read", (), True),
)


def ovs_version() -> str:
    try:
        out = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0] if out else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[b[0] for b in BENCHES],
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; nproc {os.cpu_count()}; "
          f"{ovs_version()}; Python {platform.python_version()}", flush=True)
    failed = []
    for name, module, extra, needs_root in BENCHES:
        if args.only and name not in args.only:
            continue
        print(f"\n== {name}: {sys.executable} -m {module} {' '.join(extra)}".rstrip(),
              flush=True)
        if needs_root and os.geteuid() != 0:
            print(f"skipped: {name} needs root (network namespaces and a private OVS)")
            failed.append(name)
            continue
        started = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", module, *extra], cwd=ROOT).returncode
        print(f"-- {name}: exit {rc} in {time.monotonic() - started:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed or skipped: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
