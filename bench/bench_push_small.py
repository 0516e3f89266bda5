"""A small push onto a full switch: is its cost Loom's or ovs-vswitchd's?

Binding one port at 10,000 ports pushes some 20 flows onto a switch that holds
some 24,000 (issue 11). This pushes the same few flows (the flows of a few more
ports) onto a bridge that holds many flows and onto one that holds few, both ways
in the same run: Loom's SwitchSync (diff of the changed keys, encode, one ONF
bundle, barrier, commit) and `ovs-ofctl --bundle add-flows` (a process, its
connection, one bundle). If Loom's small push grows with the table as much as
ovs-ofctl's does, the cost is the switch's (a bundle commit revalidates against
the whole table); if only Loom's grows, it is Loom's. The bridges first get
`--bridge-ports` patch pairs (as bench_port_change's do), and the push is timed a
second time right after the switch reports a port added, a bind's moment.

Result (2 CPUs, Dec 2026): Loom's push of ~60 flows takes 1.8 ms onto 330 flows and
2.3 ms onto 23,000 (its diff 0.06-0.1 ms) with no other ports on the bridge; with
2,000 patch pairs it takes 14-25 ms, and 86-92 ms right after a port is added, and
ovs-ofctl's bundle (minus its empty run) grows alike: the cost is ovs-vswitchd's and
follows the bridge's ports, not its flows.

    sudo .venv/bin/python -m bench.bench_push_small [--sizes 300 24000] [--repeat 20]
        [--bridge-ports 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from bench.harness import LOOM_DPID, BenchHost, push_bridges, synthetic
from controller import ofwire
from controller.compiler import compile_switch
from controller.reconciler import SwitchSync, diff_flow_keys
from controller.topology import TopologyView

EXTRA_PORTS = 4  # ports whose flows make the small push


def _write(flows: list, path: Path, delete: bool = False) -> None:
    lines = []
    for f in flows:
        text = ofwire.to_ofctl(f)
        if delete:  # the same flows, out again: match only, by the line's own command
            text = "delete_strict " + ",".join(
                p for p in text.rsplit(",actions=", 1)[0].split(",")
                if not p.startswith("cookie="))
        lines.append(text + "\n")
    path.write_text("".join(lines))


def _patch_pair(name: str) -> list[str]:
    near, far = f"{name}a", f"{name}b"
    return ["--", "add-port", "br-int", near, "--", "set", "Interface", near, "type=patch",
            f"options:peer={far}", "--", "add-port", "br-base", far, "--", "set",
            "Interface", far, "type=patch", f"options:peer={near}"]


def one_size(host: BenchHost, channel: object, target: int, repeat: int,
             ports_seen: Optional[threading.Event] = None) -> dict:
    per_port = len(compile_switch(*synthetic(100, LOOM_DPID), LOOM_DPID).flows) / 100
    n_ports = max(2, round(target / per_port))
    intent, topo = synthetic(n_ports + EXTRA_PORTS, LOOM_DPID)
    full = compile_switch(intent, topo, LOOM_DPID)
    bound = dict(topo.bindings)
    for pid in sorted(bound)[-EXTRA_PORTS:]:  # the extra ports: not bound yet
        del bound[pid]
    base = compile_switch(intent, TopologyView(topo.version, topo.switches,
                                               MappingProxyType(bound)), LOOM_DPID)
    changed = frozenset(k for k in set(full.flows) | set(base.flows)
                        if full.flows.get(k) != base.flows.get(k))
    added = [full.flows[k] for k in sorted(changed, key=repr) if k in full.flows]
    removed = [base.flows[k] for k in sorted(changed, key=repr) if k not in full.flows]

    # Loom: the real reconciler, from `base` to `full` and back, timing the way there
    host.ovs.ofctl("del-flows", "br-int")
    sync = SwitchSync(channel)  # type: ignore[arg-type]
    sync.read_installed()
    sync.push(base)
    loom, loom_diff = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        diff = sync.push(full, changed)
        loom.append(time.perf_counter() - started)
        assert len(diff.adds) == len(added) and len(diff.deletes) == len(removed), diff.size
        sync.push(base, changed)
    # ...and as a bind does it: right after ovs-vswitchd reports a port added (a patch
    # pair, by `ovs-vsctl --no-wait`), with `bridge_ports` ports on the bridge already
    loom_after_add = []
    if ports_seen is not None:
        for i in range(repeat):
            ports_seen.clear()
            host.ovs.vsctl("--no-wait", *_patch_pair(f"x{target}n{i}"))
            if not ports_seen.wait(10):
                raise TimeoutError("no port status from the switch")
            started = time.perf_counter()
            sync.push(full, changed)
            loom_after_add.append(time.perf_counter() - started)
            sync.push(base, changed)
    t0 = time.perf_counter()
    for _ in range(repeat):
        diff_flow_keys(sync.installed or {}, full.flows, changed)
    loom_diff.append((time.perf_counter() - t0) / repeat)

    # ovs-ofctl: the same flows as text, one bundle each way
    host.ovs.ofctl("del-flows", "br-base")
    with tempfile.TemporaryDirectory() as tmp:
        base_file, add_file, del_file = (Path(tmp) / n for n in ("base", "add", "del"))
        _write(list(base.flows.values()), base_file)
        _write(added, add_file)
        _write(added, del_file, delete=True)
        host.ovs.ofctl("--bundle", "add-flows", "br-base", str(base_file), timeout=600)
        ofctl = []
        for _ in range(repeat):
            started = time.perf_counter()
            host.ovs.ofctl("--bundle", "add-flows", "br-base", str(add_file))
            ofctl.append(time.perf_counter() - started)
            host.ovs.ofctl("--bundle", "add-flows", "br-base", str(del_file))
        # the cost of the ovs-ofctl process and its connection alone: an empty bundle
        empty = Path(tmp) / "empty"
        empty.write_text("")
        spawn = []
        for _ in range(repeat):
            started = time.perf_counter()
            host.ovs.ofctl("--bundle", "add-flows", "br-base", str(empty))
            spawn.append(time.perf_counter() - started)
    return {"table": len(base.flows), "push": len(added) + len(removed),
            "loom_ms": statistics.median(loom) * 1000,
            "loom_diff_ms": statistics.median(loom_diff) * 1000,
            "loom_after_add_ms": statistics.median(loom_after_add) * 1000
            if loom_after_add else float("nan"),
            "ofctl_ms": statistics.median(ofctl) * 1000,
            "ofctl_empty_ms": statistics.median(spawn) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 24_000])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--bridge-ports", type=int, default=2000,
                        help="patch pairs on the bridges first (as bench_port_change's)")
    args = parser.parse_args()
    host = BenchHost("pushsmall")
    results = []
    try:
        catcher, channel = push_bridges(host)
        seen = threading.Event()

        def of_port(*_: Any) -> None:
            seen.set()

        catcher.of_port = of_port  # type: ignore[method-assign]
        if args.bridge_ports:  # the bench's bridge: thousands of ports, not two
            clauses: list[str] = []
            for i in range(args.bridge_ports):
                clauses += _patch_pair(f"bp{i}")
            host.ovs.vsctl("--no-wait", *clauses, timeout=600)
        for size in args.sizes:
            results.append(one_size(host, channel, size, args.repeat, seen))
    finally:
        host.close()
    print(f"command: sudo .venv/bin/python -m bench.bench_push_small --sizes "
          f"{' '.join(map(str, args.sizes))} --repeat {args.repeat} "
          f"--bridge-ports {args.bridge_ports}")
    print(f"{'table':>7} {'push':>5} {'loom ms':>8} {'after add-port':>15} {'diff ms':>8} "
          f"{'ofctl ms':>9} {'ofctl empty ms':>15}")
    for r in results:
        print(f"{r['table']:>7} {r['push']:>5} {r['loom_ms']:>8.2f} "
              f"{r['loom_after_add_ms']:>15.2f} {r['loom_diff_ms']:>8.3f} "
              f"{r['ofctl_ms']:>9.2f} {r['ofctl_empty_ms']:>15.2f}")
    print(f"medians of {args.repeat}; loom ms: SwitchSync.push of the flows of "
          f"{EXTRA_PORTS} more ports (diff, encode, bundle, barrier, commit); ofctl ms: "
          "ovs-ofctl --bundle add-flows of the same flows (incl. its process and "
          "connection, about 'ofctl empty ms'); after add-port: the same push as soon "
          "as the switch reports a port added (a bind's moment)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
