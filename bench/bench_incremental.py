"""The engine's compile cost per change, incremental vs full, at 100 and 10,000 ports.

Pure: no switch, no store. Intent and topology are built in memory as the store and
the southbound would hand them over (the issue's layout: N ports on N/100 networks
with a security group naming itself as remote group, 10% bound on one chassis), and
the deltas are exactly what the store and the topology publish (`IntentDelta`,
`TopologyDelta`). For each size, median of `--repeat`:

  create       a new port on a network that has ports on the switch
  bind         that port bound on the switch
  update       its fixed IP changed
  rename       its name changed (no flow changes: nothing may be offered)
  delete       the port deleted (and unbound)
  full         `compile_all` of the same inputs, the reference (and what every
               change cost before the incremental compiler)

and, separately, the rename at 50 chassis x 200 bound ports (issue 11: no switch
offered anything, under 5 ms).

    .venv/bin/python -m bench.bench_incremental [--sizes 100 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from controller.compiler import compile_all
from controller.compiler.incremental import Compiler
from controller.engine import _gc_paused
from controller.intent import FixedIP, Intent, Network, Port, SecurityGroup, SecurityGroupRule
from controller.intent_delta import IntentDelta
from controller.topology import (
    Binding,
    ChassisView,
    SwitchView,
    TopologyDelta,
    TopologyView,
    TunnelView,
)


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-incremental-{kind}-{n}"))


SG = SecurityGroup(_id("sg", 0), "p", "default")
RULES = {r.id: r for r in (
    SecurityGroupRule(_id("rule", 0), "p", SG.id, "ingress", "IPv4", remote_group_id=SG.id),
    SecurityGroupRule(_id("rule", 1), "p", SG.id, "egress", "IPv4"),
    SecurityGroupRule(_id("rule", 2), "p", SG.id, "ingress", "IPv4", "tcp", 22, 22),
)}


class World:
    """Intent and topology as dicts, published as snapshots with their deltas."""

    def __init__(self, ports: int, chassis: int, bound_per_chassis: int) -> None:
        networks = max(1, ports // 100)
        self.generation = self.version = 1
        self.networks = {n.id: n for n in (
            Network(_id("net", i), "p", f"n{i}", "vxlan", 1000 + i) for i in range(networks))}
        net_ids = sorted(self.networks)
        self.ports: dict[str, Port] = {}
        for i in range(ports):
            self.ports[_id("port", i)] = self.port(i, net_ids[i % networks])
        self.dpids = [0x100 + c for c in range(chassis)]
        self.switches = {d: SwitchView(d, f"hv{d:x}", "br-int") for d in self.dpids}
        self.chassis = {f"hv{d:x}": ChassisView(f"hv{d:x}", f"10.0.{d >> 8}.{d & 0xFF}", d)
                        for d in self.dpids}
        self.tunnels = {(d, f"hv{r:x}", "vxlan"): TunnelView(d, f"hv{r:x}", "vxlan", 5000 + k)
                        for d in self.dpids for k, r in enumerate(self.dpids) if r != d}
        self.bindings: dict[str, Binding] = {}
        ids = sorted(self.ports)
        for c, d in enumerate(self.dpids):
            for k in range(bound_per_chassis):
                pid = ids[c * bound_per_chassis + k]
                self.bindings[pid] = Binding(pid, f"hv{d:x}", "br-int", d, 10 + k, f"tap{k}")
        self.touched: dict[str, set[str]] = {}
        self.bound: set[str] = set()
        self.last: Intent | None = None

    @staticmethod
    def port(i: int, network_id: str) -> Port:
        return Port(_id("port", i), "p", network_id, f"p{i}",
                    f"fa:16:3e:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}",
                    (FixedIP(_id("subnet", 0), f"10.{i >> 16 & 0xFF}.{i >> 8 & 0xFF}."
                                               f"{i & 0xFF}"),),
                    security_groups=(SG.id,))

    def intent(self) -> Intent:
        return Intent(self.generation, networks=MappingProxyType(dict(self.networks)),
                      ports=MappingProxyType(dict(self.ports)),
                      security_groups=MappingProxyType({SG.id: SG}),
                      security_group_rules=MappingProxyType(dict(RULES)))

    def view(self) -> TopologyView:
        return TopologyView(self.version, MappingProxyType(dict(self.switches)),
                            MappingProxyType(dict(self.bindings)),
                            MappingProxyType(dict(self.chassis)),
                            MappingProxyType(dict(self.tunnels)))

    def publish(self) -> tuple[Intent, TopologyView, IntentDelta, TopologyDelta]:
        self.generation += 1
        self.version += 1
        idelta = IntentDelta(MappingProxyType({k: frozenset(v) for k, v in self.touched.items()}))
        tdelta = TopologyDelta(bindings=frozenset(self.bound))
        self.touched, self.bound = {}, set()
        intent = self.intent()
        if self.last is not None:  # as the store's snapshot builder does
            intent.carry_ports_by_network(self.last, idelta.ids("ports"))
        self.last = intent
        return intent, self.view(), idelta, tdelta


def measure(world: World, compiler: Compiler, change: Callable[[], None]
            ) -> tuple[float, int]:
    """Apply one change; the compile time of it (ms) and the switches offered."""
    change()
    intent, view, idelta, tdelta = world.publish()
    started = time.perf_counter()
    offers = compiler.update(intent, view, idelta, tdelta)
    return (time.perf_counter() - started) * 1000, len(offers)


def one_size(ports: int, chassis: int, bound: int, repeat: int) -> dict[str, Any]:
    world = World(ports, chassis, bound)
    compiler = Compiler()
    intent, view = world.intent(), world.view()
    world.last = intent
    started = time.perf_counter()
    # as the engine runs a full compile: the collector off, and what it made frozen
    # after (left out of later collections, which would otherwise walk the whole
    # compiled state during each following one-port change)
    with _gc_paused():
        compiler.update(intent, view, None, None)
    cold = (time.perf_counter() - started) * 1000
    dpid = world.dpids[0]
    net_id = next(iter(world.bindings.values())).port_id
    net_id = world.ports[net_id].network_id
    times: dict[str, list[float]] = {k: [] for k in
                                     ("create", "bind", "update", "rename", "delete")}
    offered: dict[str, list[int]] = {k: [] for k in times}
    full: list[float] = []
    for r in range(repeat):
        n = ports + r
        pid = _id("port", n)

        def create(pid: str = pid, n: int = n) -> None:
            world.ports[pid] = World.port(n, net_id)
            world.touched.setdefault("ports", set()).add(pid)

        def bind(pid: str = pid, r: int = r) -> None:
            world.bindings[pid] = Binding(pid, f"hv{dpid:x}", "br-int", dpid, 60000 + r, "t")
            world.bound.add(pid)

        def update(pid: str = pid, r: int = r) -> None:
            world.ports[pid] = dataclasses.replace(
                world.ports[pid], fixed_ips=(FixedIP(_id("subnet", 0), f"10.250.0.{r + 1}"),))
            world.touched.setdefault("ports", set()).add(pid)

        def rename(pid: str = pid, r: int = r) -> None:
            world.ports[pid] = dataclasses.replace(world.ports[pid], name=f"renamed-{r}")
            world.touched.setdefault("ports", set()).add(pid)

        def delete(pid: str = pid) -> None:
            del world.ports[pid]
            del world.bindings[pid]
            world.touched.setdefault("ports", set()).add(pid)
            world.bound.add(pid)

        for name, fn in (("create", create), ("bind", bind), ("update", update),
                         ("rename", rename), ("delete", delete)):
            ms, n_offers = measure(world, compiler, fn)
            times[name].append(ms)
            offered[name].append(n_offers)
        if r < 3:
            intent, view = world.intent(), world.view()
            started = time.perf_counter()
            compile_all(intent, view)
            full.append((time.perf_counter() - started) * 1000)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    out["full"] = statistics.median(full)
    out["cold"] = cold
    out["offered"] = {k: max(v) for k, v in offered.items()}
    out["fallbacks"] = compiler.full_compiles - 1
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chassis", type=int, default=50)
    ap.add_argument("--per-chassis", type=int, default=200)
    args = ap.parse_args(argv)
    command = ".venv/bin/python -m bench.bench_incremental " + " ".join(argv)
    print(f"# engine compile per change (ms), median of {args.repeat}; one chassis, "
          f"10% of the ports bound on it; load average {os.getloadavg()[0]:.1f}")
    cols = ("create", "bind", "update", "rename", "delete", "full")
    print(f"{'ports':>8} " + " ".join(f"{c:>9}" for c in cols) + "   (cold ms, offered)")
    rows = []
    for size in args.sizes:
        row = one_size(size, 1, max(1, size // 10), args.repeat)
        rows.append(row)
        print(f"{size:>8} " + " ".join(f"{row[c]:>9.3f}" for c in cols)
              + f"   ({row['cold']:.0f}, {row['offered']}, fallbacks {row['fallbacks']})")
    if len(rows) >= 2:
        print(f"{'ratio':>8} " + " ".join(f"{rows[-1][c] / rows[0][c]:>8.1f}x" for c in cols))
    row = one_size(args.chassis * args.per_chassis, args.chassis, args.per_chassis, args.repeat)
    print(f"# {args.chassis} chassis x {args.per_chassis} bound ports: rename "
          f"{row['rename']:.3f} ms, switches offered {row['offered']['rename']}; "
          f"one-port create {row['create']:.3f} ms, bind {row['bind']:.3f} ms; "
          f"full compile {row['full']:.0f} ms")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
