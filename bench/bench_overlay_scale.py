"""Overlay scale: N hypervisors with 20 guests each, on the multi-host lab.

For each N: the time from `lab up` (namespaces, private OVS per hypervisor, the
controller, networks and ports through the REST API, guests) to full connectivity
(every guest reaches a guest of its network on another hypervisor), and the flows
on each chassis, beside what they should grow with: the ports on that chassis and
the remote MACs of the networks it has ports on.

    sudo .venv/bin/python -m bench.bench_overlay_scale [--sizes 3 6 10] [--guests 20]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from topologies.lab import Lab
from topologies.labspec import parse_spec

NETWORKS = (("alpha", "web", "vxlan", 1001), ("alpha", "db", "geneve", 1002),
            ("beta", "web", "vxlan", 2001), ("beta", "db", "gre", 2002))


def spec(n_hv: int, guests_per_hv: int) -> dict[str, Any]:
    hvs = [f"hv{i}" for i in range(1, n_hv + 1)]
    nets: dict[tuple[str, str], list[dict[str, Any]]] = {(p, n): [] for p, n, _, _ in NETWORKS}
    g = 0
    for hv in hvs:
        for _ in range(guests_per_hv):
            project, name, _, _ = NETWORKS[g % len(NETWORKS)]
            nets[(project, name)].append({"name": f"g{g}", "hypervisor": hv})
            g += 1
    projects: dict[str, list[dict[str, Any]]] = {}
    for i, (project, name, kind, seg) in enumerate(NETWORKS):
        projects.setdefault(project, []).append({
            "name": name, "type": kind, "segmentation_id": seg,
            "subnets": [{"cidr": f"10.{i}.0.0/16"}], "guests": nets[(project, name)]})
    return {"name": f"scale{n_hv}", "hypervisors": [{"name": h} for h in hvs],
            "controller": {}, "projects": [{"name": p, "networks": n}
                                           for p, n in projects.items()]}


def probes(lab: Lab) -> list[tuple[str, str]]:
    """Each guest and one guest of its network on another hypervisor."""
    info = {g: lab.guest_info(g) for g in lab.state.data["guests"]}
    out: list[tuple[str, str]] = []
    for g, i in sorted(info.items()):
        peers = [h for h, j in sorted(info.items()) if j["network"] == i["network"]
                 and j["project"] == i["project"] and j["hypervisor"] != i["hypervisor"]]
        if peers:
            out.append((g, peers[len(out) % len(peers)]))
    return out


def connected(lab: Lab, pairs: list[tuple[str, str]]) -> int:
    def one(pair: tuple[str, str]) -> bool:
        src, dst = pair
        ip = lab.guest_info(dst)["ip_cidr"].split("/")[0]
        return lab.guest(src).ping(ip, count=1, timeout=1)[1] == 1

    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(one, pairs))


def run(n_hv: int, guests: int) -> dict[str, Any]:
    t0 = time.monotonic()
    lab = Lab.up(parse_spec(spec(n_hv, guests)), name=f"scale{n_hv}-{secrets.token_hex(2)}",
                 progress=lambda _line: None)
    try:
        up = time.monotonic() - t0
        pairs = probes(lab)
        ok = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ok = connected(lab, pairs)
            if ok == len(pairs):
                break
        full = time.monotonic() - t0
        switches = lab.api.get("/v1/switches").ok()["switches"]
        flows = {s["chassis"]: s["installed_flows"] for s in switches}
        return {"n": n_hv, "guests": n_hv * guests, "up_s": up, "connected_s": full,
                "reached": ok, "probes": len(pairs), "flows": flows}
    finally:
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 10])
    parser.add_argument("--guests", type=int, default=20)
    args = parser.parse_args()
    rows = [run(n, args.guests) for n in args.sizes]
    print(f"command: sudo .venv/bin/python -m bench.bench_overlay_scale --sizes "
          f"{' '.join(map(str, args.sizes))} --guests {args.guests}")
    print(f"{'hvs':>4} {'guests':>6} {'lab up s':>9} {'connected s':>12} {'probes ok':>10} "
          f"{'flows/chassis min':>18} {'median':>7} {'max':>6}")
    for r in rows:
        f = list(r["flows"].values())
        print(f"{r['n']:>4} {r['guests']:>6} {r['up_s']:>9.1f} {r['connected_s']:>12.1f} "
              f"{r['reached']:>4}/{r['probes']:<5} {min(f):>18} {statistics.median(f):>7.0f} "
              f"{max(f):>6}")
    print("each chassis holds its own 20 guests (4 networks) and the MACs of the other "
          "guests of those 4 networks: flows grow with the guests on the networks a "
          "chassis serves, i.e. linearly in N here because every chassis serves all 4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
