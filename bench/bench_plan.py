"""What a dry run costs (issue 15): the plan of one change, with and without its
reachability diff, at 100 and 10,000 ports, beside the compile of the same change.

Pure: no switch, no store. The world is bench_incremental's (N ports on N/100
networks, one security group naming itself as remote group with an ingress rule for
tcp/22, `--bound` ports bound on each of `--chassis` chassis joined by VXLAN). Each
change is planned with `controller.plan.what_if` on the engine's own incremental
compiler (which then comes back to where it was), and, as the baseline, really
compiled (`Compiler.update`), in the same run. For each, median of `--repeat`:

  update       a bound port's fixed IP changed (its pairs with its network's ports)
  leave        a bound port's security groups emptied
  rename       a port's name changed (no flow changes: nothing to simulate)
  rule         a tcp/3306 ingress rule added to the group every port is in (every
               bound port is touched: the diff checks the first 64, says "truncated")

"plan" is `what_if` whole; "reach" the reachability diff's part of it (what_if
again with the diff left out: the difference); "compile" the real incremental
compile of the change; "probes" the packets simulated (before and after).

    .venv/bin/python -m bench.bench_plan [--sizes 100 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.bench_incremental import World, _id
from controller import plan as planning
from controller.compiler.incremental import Compiler
from controller.engine import _gc_paused
from controller.intent import FixedIP, SecurityGroupRule
from controller.intent_delta import delta_between, link, make_delta
from controller.plan import NO_TOPOLOGY_CHANGE
from controller.simulate.fleet import ModelCache
from controller.topology import Binding


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return (time.perf_counter() - started) * 1000, out


def one_size(ports: int, chassis: int, bound: int, repeat: int) -> dict[str, Any]:
    world = World(ports, chassis, bound)
    # the bound ports on as few networks as they fill, at every size: each has the
    # same number of bound neighbours to check (bench_incremental spreads them)
    by_network = sorted(world.ports.values(), key=lambda p: (p.network_id, p.id))
    world.bindings = {}
    for i, port in enumerate(by_network[:chassis * bound]):
        d = world.dpids[i % chassis]
        world.bindings[port.id] = Binding(port.id, f"hv{d:x}", "br-int", d, 10 + i // chassis,
                                          f"tap{i}")
    compiler = Compiler()
    models = ModelCache()  # the engine's: kept from one plan to the next
    base, view = world.intent(), world.view()
    world.last = base
    with _gc_paused():
        compiler.update(base, view, None, None)
    bound_ids = sorted(world.bindings)
    results: dict[str, dict[str, list[float]]] = {}

    def no_reach(*args: Any) -> dict[str, Any]:
        return {}

    real_reach = planning._reachability

    def record(name: str, after_of: Callable[[int], Any]) -> None:
        row = results.setdefault(name, {"plan": [], "bare": [], "compile": [], "probes": [],
                                        "changes": [], "truncated": []})
        for r in range(repeat):
            after = after_of(r)
            ms, (out, same) = _timed(partial(planning.what_if, compiler, after,
                                             planning.owner_resolver, models))
            assert same
            planning._reachability = no_reach  # type: ignore[assignment]
            try:
                bare, _ = _timed(partial(planning.what_if, compiler, after,
                                         planning.owner_resolver, models))
            finally:
                planning._reachability = real_reach  # type: ignore[assignment]
            delta = delta_between(base, after)
            assert delta is not None
            compile_ms, offers = _timed(partial(compiler.update, after, view, delta,
                                                NO_TOPOLOGY_CHANGE))
            back = compiler.update(base, view, delta, NO_TOPOLOGY_CHANGE)
            for done in (offers, back):  # noted, as the engine notes its compiles
                for dpid, offer in done.items():
                    models.note(dpid, offer.changed_keys, offer.desired)
            reach = out["reachability"]
            row["plan"].append(ms)
            row["bare"].append(bare)
            row["compile"].append(compile_ms)
            row["probes"].append(reach.get("probes", 0))
            row["changes"].append(len(reach.get("changes", ())))
            row["truncated"].append(1.0 if reach.get("truncated") else 0.0)

    def derived(touched: dict[str, set[str]], **attrs: Any) -> Any:
        """`base` changed, linked to it as the store links a transaction's view."""
        after = dataclasses.replace(base, generation=base.generation + 1, **attrs)
        delta = make_delta(touched)
        after.carry_ports_by_network(base, delta.ids("ports"))
        link(after, base, delta)
        return after

    def with_port(pid: str, **changes: Any) -> Any:
        ports = dict(base.ports)
        ports[pid] = dataclasses.replace(ports[pid], **changes)
        return derived({"ports": {pid}}, ports=ports)

    record("update", lambda r: with_port(bound_ids[r], fixed_ips=(
        FixedIP(_id("subnet", 0), f"10.250.0.{r + 1}"),)))
    record("leave", lambda r: with_port(bound_ids[r], security_groups=()))
    record("rename", lambda r: with_port(bound_ids[r], name=f"renamed-{r}"))
    sg = next(iter(base.security_groups))

    def rule(r: int) -> Any:
        new = SecurityGroupRule(_id("bench-plan-rule", r), "p", sg, "ingress", "IPv4", "tcp",
                                3306, 3306)
        return derived({"security_group_rules": {new.id}},
                       security_group_rules={**base.security_group_rules, new.id: new})

    record("rule", rule)
    return {name: {k: statistics.median(v) for k, v in row.items()}
            for name, row in results.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10000])
    ap.add_argument("--chassis", type=int, default=10)
    ap.add_argument("--bound", type=int, default=10, help="bound ports per chassis")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print("command: .venv/bin/python -m bench.bench_plan " + " ".join(argv))
    print(f"load: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    by_size = {}
    for size in args.sizes:
        by_size[size] = one_size(size, args.chassis, args.bound, args.repeat)
    print(f"\n{'change':8} {'ports':>6} {'plan ms':>8} {'reach ms':>9} {'compile ms':>11} "
          f"{'probes':>7} {'changes':>8} {'truncated':>9}")
    for size, rows in by_size.items():
        for name, row in rows.items():
            print(f"{name:8} {size:>6} {row['plan']:>8.1f} {row['plan'] - row['bare']:>9.1f} "
                  f"{row['compile']:>11.1f} {row['probes']:>7.0f} {row['changes']:>8.0f} "
                  f"{'yes' if row['truncated'] else 'no':>9}")
    if len(args.sizes) >= 2:
        small, big = by_size[min(args.sizes)], by_size[max(args.sizes)]
        print(f"\nplan at {max(args.sizes)} / at {min(args.sizes)} ports:")
        for name in small:
            print(f"  {name:8} {big[name]['plan'] / max(small[name]['plan'], 1e-3):5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
