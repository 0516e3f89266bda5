"""One chassis' OVSDB update: what it costs the topology, before and after the
incremental view (controller.topology, issue 11: "Topology changes carry their delta
too", at a cost that follows the change).

Every chassis has a br-int with `--ports` bound ports, a tunnel to every other chassis
and one provider patch. The update is one chassis' new state with one port's ofport
changed (and back, alternately): a binding changes, nothing else. The old code
(`--old-rev`, read with `git show`) rebuilt every chassis' bindings and a networkx
graph per event; the new one replaces that chassis' entries. "new, shared": the two
states share every unchanged InterfaceState object, as the chassis reader's do
(controller/southbound/chassis.py): only the changed interface is looked at.

Run: .venv/bin/python -m bench.bench_topology_delta [--chassis 5 50] [--ports 200]
     [--updates 200] [--old-rev 1c149ad]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller import topology as new_topology

ROOT = Path(__file__).resolve().parent.parent
# The last commit whose controller/topology.py rebuilt the whole view per event.
OLD_REV = "1c149ad"


def old_module(rev: str) -> ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:controller/topology.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="loom-bench-")) / "topology_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("topology_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def state(m: ModuleType, i: int, chassis: int, ports: int, bump: int = 0) -> Any:
    name = f"hv{i:03d}"
    ifaces = [m.InterfaceState(f"tap{i}-{p}", 10 + p + (bump if p == 0 else 0),
                               f"port-{i}-{p}") for p in range(ports)]
    ifaces += [m.InterfaceState(f"vx-hv{j:03d}", 5000 + j, None, "vxlan", f"10.0.{j // 250}."
                                f"{j % 250 + 1}", f"hv{j:03d}")
               for j in range(chassis) if j != i]
    ifaces.append(m.InterfaceState("patch-physnet1", 4000, None, "patch", physnet="physnet1"))
    return m.ChassisState(name, f"tcp:10.1.0.{i}:6640", True, f"10.0.{i // 250}.{i % 250 + 1}",
                          (m.BridgeState("br-int", 0x1000 + i, tuple(ifaces)),))


def shared_variants(m: ModuleType, i: int, chassis: int, ports: int) -> list[Any]:
    """The two states of the moving chassis as the chassis reader hands them out: every
    interface but the one that changed is the same object in both (the topology then
    looks at the changed interface only, `_ChassisPart.update`)."""
    base = state(m, i, chassis, ports)
    (br,) = base.bridges
    bumped = m.InterfaceState(br.interfaces[0].name, br.interfaces[0].ofport + 1000,
                              br.interfaces[0].iface_id)
    other = tuple(sorted((bumped,) + br.interfaces[1:], key=lambda x: x.name))
    return [m.ChassisState(base.name, base.remote, True, base.encap_ip,
                           (m.BridgeState("br-int", br.datapath_id, other),)), base]


def measure(m: ModuleType, chassis: int, ports: int, updates: int,
            shared: bool = False) -> dict[str, float]:
    topo = m.Topology()
    t0 = time.perf_counter()
    for i in range(chassis):
        topo.update_chassis(state(m, i, chassis, ports))
    fill = time.perf_counter() - t0
    moving = chassis // 2
    variants = shared_variants(m, moving, chassis, ports) if shared else [
        state(m, moving, chassis, ports, bump) for bump in (1000, 0)]
    times = []
    for k in range(updates):
        s = variants[k % 2]
        t = time.perf_counter()
        changed = topo.update_chassis(s)
        times.append(time.perf_counter() - t)
        assert changed
    view = topo.view()
    assert len(view.bindings) == chassis * ports and len(view.switches) == chassis
    return {"median_ms": statistics.median(times) * 1e3, "p90_ms": sorted(times)[
        int(len(times) * 0.9)] * 1e3, "fill_s": fill}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chassis", type=int, nargs="+", default=[5, 50])
    ap.add_argument("--ports", type=int, default=200)
    ap.add_argument("--updates", type=int, default=200, help="per run (the old code: a tenth)")
    ap.add_argument("--old-rev", default=OLD_REV,
                    help="git revision of the old controller/topology.py ('' to skip)")
    args = ap.parse_args()
    print("command: .venv/bin/python -m bench.bench_topology_delta " + " ".join(sys.argv[1:]))
    impls: list[tuple[str, ModuleType, int]] = []
    if args.old_rev:
        impls.append((f"old ({args.old_rev})", old_module(args.old_rev),
                      max(10, args.updates // 10)))
    impls.append(("new", new_topology, args.updates))
    impls.append(("new, shared", new_topology, args.updates))
    print(f"one chassis update (one binding changes), {args.ports} ports per chassis, "
          "tunnel mesh, one provider patch")
    print(f"{'code':<16}{'chassis':>8}{'bindings':>10}{'updates':>9}{'median ms':>11}"
          f"{'p90 ms':>9}{'fill s':>8}")
    results: dict[tuple[str, int], float] = {}
    for label, module, updates in impls:
        for n in args.chassis:
            r = measure(module, n, args.ports, updates, shared=label.endswith("shared"))
            results[(label, n)] = r["median_ms"]
            print(f"{label:<16}{n:>8}{n * args.ports:>10}{updates:>9}{r['median_ms']:>11.3f}"
                  f"{r['p90_ms']:>9.3f}{r['fill_s']:>8.2f}")
    lo, hi = min(args.chassis), max(args.chassis)
    for label, _, _ in impls:
        if lo != hi:
            print(f"{label}: {hi} chassis / {lo} chassis = "
                  f"{results[(label, hi)] / results[(label, lo)]:.1f}x")
    if args.old_rev:
        print(f"at {hi} chassis: old / new = "
              f"{results[(impls[0][0], hi)] / results[('new', hi)]:.0f}x")


if __name__ == "__main__":
    main()
