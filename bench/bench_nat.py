"""External gateways (issue 12): NAT throughput against plain L2, and flow growth with
routers and floating IPs.

1. Traffic (root; the lab of tests/integration/test_nat.py, its SPEC and its setup
   functions imported, not copied: two hypervisors as namespaces, a private OVS each,
   userspace datapath, the real controller, everything made through the REST API;
   the provider bridge br-ex on each hypervisor, joined by the veth phy0; hv2 the only
   gateway chassis; the outside host 198.51.100.1 on hv2's br-ex; guests with the
   network's MTU, the default groups letting TCP in). iperf3 TCP, 1 stream,
   ``--seconds`` s (``-O 1``), Mbit/s of payload received:
       (a) L2     a1 (alpha, hv1) -> a2 (alpha, hv2): one VXLAN network across the
                  tunnel, no router: the baseline
       (b) SNAT   a1 (hv1) -> the outside host: through the tunnel to the gateway
                  chassis hv2, the router's SNAT in conntrack, out of br-ex
       (c) FIP    the outside host -> b1's floating IP (beta, hv1, a1's very address;
                  the floating IP is on b1 so that a1 keeps going out through the
                  router's SNAT, not its own floating IP): hv1 maps the physical
                  network, so the floating IP is distributed there: br-ex, the
                  physical link to hv1, DNAT in conntrack on hv1
   ``--repeats`` rounds of the three in turn (every other round in reverse); the
   median per path and the ratios b/a, c/a.

2. Scale (pure compile, no OVS, as bench_incremental: Intent and TopologyView built
   in memory). 3 chassis (``--chassis``), all mapping the flat external network's
   physnet, the first ``--gateways`` of them flagged gateway. R routers (``--routers``)
   each with one internal VXLAN /16 and its gateway on the one shared external
   network (the upstream's MAC learnt); ``--guests`` guest ports in all (no security
   group), spread round-robin over the routers and bound round-robin over the
   chassis, the same at every size, so only routers and floating IPs vary; F floating
   IPs (``--fips``) on guests 0..F-1 (so spread over the routers), each with its
   floating port as the API writes it. Flows per chassis (compile_all) and the growth
   per router (F=0) and per floating IP (at each R).
   Then one floating IP associated (the API writes the floating IP only) and
   disassociated again, through the incremental ``Compiler.update``, at the largest
   (R, F) against 1 router / 10 FIPs (``--small``): engine CPU time
   (time.process_time, median of ``--repeat``; the cold compile under the engine's
   _gc_paused as bench_incremental does, each measured update with the collector
   off), the switches offered (must be the gateway chassis alone), the flow keys
   the offer names and the flows that really differ; compile_all of the same inputs
   as the reference, and the incremental state checked equal to it at the end.

    sudo .venv/bin/python -m bench.bench_nat [--only traffic scale] [--seconds 5]
        [--repeats 2] [--routers 1 10 100] [--fips 0 100 1000] [--guests 1000]
        [--chassis 3] [--gateways 1] [--repeat 10] [--small 1 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import ipaddress
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from controller.compiler import clear_caches, compile_all
from controller.compiler.incremental import Compiler
from controller.engine import _gc_paused
from controller.flows import ip4
from controller.intent import (
    FixedIP,
    FloatingIP,
    Intent,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
)
from controller.intent_delta import IntentDelta
from controller.topology import (
    Binding,
    ChassisView,
    SwitchView,
    TopologyDelta,
    TopologyView,
    TunnelView,
)

OMIT = 1  # iperf3 -O: seconds of slow start left out
PHYSNET = "ext"
PATCH = 90  # the provider patch's ofport on every chassis
UPSTREAM_MAC = 0x02AABBCCDDEE


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return os.getloadavg()[0]


# ======================================================================== scale
def _id(kind: str, *n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-nat-{kind}-{'-'.join(map(str, n))}"))


def _addr(base: str, n: int) -> str:
    return str(ipaddress.IPv4Address(base) + n)


def _mac(prefix: str, n: int) -> str:
    return f"{prefix}:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"


class NatWorld:
    """R routers with a gateway on one external network, G guests, F floating IP
    objects of which the first `associated` are associated; snapshots and deltas."""

    def __init__(self, routers: int, guests: int, fips: int, associated: int,
                 chassis: int, gateways: int) -> None:
        self.generation = self.version = 1
        self.last: Optional[Intent] = None
        self.touched: dict[str, set[str]] = {}
        ext = Network(_id("ext"), "admin", "public", "flat", 0, physical_network=PHYSNET,
                      router_external=True, shared=True, ct_zone=1, flood_group=1)
        es = Subnet(_id("es"), "admin", ext.id, "public-v4", 4, "198.18.0.0/15", "198.18.0.1")
        self.ext, self.es = ext, es
        self.networks: dict[str, Network] = {ext.id: ext}
        self.subnets: dict[str, Subnet] = {es.id: es}
        self.ports: dict[str, Port] = {}
        self.routers: dict[str, Router] = {}
        self.ifaces: dict[str, RouterInterface] = {}
        self.fips: dict[str, FloatingIP] = {}
        self.bindings: dict[str, Binding] = {}
        self.dpids = [0x100 + c for c in range(chassis)]
        self.gateway_dpids = self.dpids[:gateways]
        self.switches = {d: SwitchView(d, f"hv{d:x}", "br-int") for d in self.dpids}
        self.chassis = {f"hv{d:x}": ChassisView(f"hv{d:x}", f"172.31.{d >> 8}.{d & 0xFF}", d,
                                                gateway=d in self.gateway_dpids)
                        for d in self.dpids}
        self.tunnels = {(d, f"hv{r:x}", "vxlan"): TunnelView(d, f"hv{r:x}", "vxlan", 5000 + k)
                        for d in self.dpids for k, r in enumerate(self.dpids) if r != d}
        self.provider_ports = {(d, PHYSNET): PATCH for d in self.dpids}
        self.mac_bindings = {(ext.key, ip4("198.18.0.1")): UPSTREAM_MAC}
        self.router_of: list[str] = []  # router index -> id
        self.subnet_of: list[str] = []  # router index -> its internal subnet id
        for r in range(routers):
            project = f"p{r}"
            net = Network(_id("net", r), project, f"n{r}", "vxlan", 1000 + r, mtu=1450,
                          ct_zone=r + 2, flood_group=r + 2)
            sub = Subnet(_id("subnet", r), project, net.id, f"s{r}", 4, f"10.{r}.0.0/16",
                         f"10.{r}.0.1")
            gwp = Port(_id("gwport", r), "", ext.id, "", _mac("fa:16:3d", r),
                       (FixedIP(es.id, _addr("198.18.1.0", r)),), port_security_enabled=False,
                       device_owner="network:router_gateway", device_id=_id("router", r))
            router = Router(_id("router", r), project, f"r{r}", external_network_id=ext.id,
                            external_fixed_ips=gwp.fixed_ips, enable_snat=True,
                            gateway_port_id=gwp.id, snat_zone=30000 + r)
            rport = Port(_id("rport", r), project, net.id, "", _mac("fa:16:3f", r),
                         (FixedIP(sub.id, str(sub.gateway_ip)),), port_security_enabled=False,
                         device_owner="network:router_interface", device_id=router.id)
            self.networks[net.id] = net
            self.subnets[sub.id] = sub
            self.ports[gwp.id] = gwp
            self.ports[rport.id] = rport
            self.routers[router.id] = router
            iface = RouterInterface(_id("ri", r), router.id, rport.id, sub.id)
            self.ifaces[iface.id] = iface
            self.router_of.append(router.id)
            self.subnet_of.append(sub.id)
        self.guest_ids: list[str] = []
        for i in range(guests):
            r = i % routers
            sub = self.subnets[self.subnet_of[r]]
            ip = _addr(f"10.{r}.0.10", i // routers)
            port = Port(_id("port", i), f"p{r}", sub.network_id, f"vm{i}",
                        _mac("fa:16:3e", i), (FixedIP(sub.id, ip),))
            self.ports[port.id] = port
            self.guest_ids.append(port.id)
            d = self.dpids[i % chassis]
            self.bindings[port.id] = Binding(port.id, f"hv{d:x}", "br-int", d, 10 + i, f"tap{i}")
        for j in range(fips):
            fport = Port(_id("fport", j), "", ext.id, "", _mac("fa:16:3c", j),
                         (FixedIP(es.id, _addr("198.18.16.0", j)),),
                         device_owner="network:floatingip", device_id=_id("fip", j))
            self.ports[fport.id] = fport
            fip = FloatingIP(_id("fip", j), f"p{j % routers}", ext.id,
                             _addr("198.18.16.0", j), floating_port_id=fport.id)
            self.fips[fip.id] = fip
            if j < associated:
                self.associate(j, j)
        self.touched = {}

    def associate(self, j: int, guest: int) -> None:
        """Floating IP j on guest `guest`, as PUT /v2.0/floatingips/{id} writes it."""
        fip = self.fips[_id("fip", j)]
        port = self.ports[self.guest_ids[guest]]
        self.fips[fip.id] = dataclasses.replace(
            fip, port_id=port.id, fixed_ip_address=port.fixed_ips[0].ip_address,
            router_id=self.router_of[guest % len(self.router_of)],
            revision_number=fip.revision_number + 1)
        self.touched.setdefault("floating_ips", set()).add(fip.id)

    def disassociate(self, j: int) -> None:
        fip = self.fips[_id("fip", j)]
        self.fips[fip.id] = dataclasses.replace(
            fip, port_id=None, fixed_ip_address=None, router_id=None,
            revision_number=fip.revision_number + 1)
        self.touched.setdefault("floating_ips", set()).add(fip.id)

    def intent(self) -> Intent:
        return Intent(self.generation, networks=MappingProxyType(dict(self.networks)),
                      subnets=MappingProxyType(dict(self.subnets)),
                      ports=MappingProxyType(dict(self.ports)),
                      routers=MappingProxyType(dict(self.routers)),
                      router_interfaces=MappingProxyType(dict(self.ifaces)),
                      floating_ips=MappingProxyType(dict(self.fips)))

    def view(self) -> TopologyView:
        return TopologyView(self.version, MappingProxyType(dict(self.switches)),
                            MappingProxyType(dict(self.bindings)),
                            MappingProxyType(dict(self.chassis)),
                            MappingProxyType(dict(self.tunnels)),
                            MappingProxyType(dict(self.provider_ports)),
                            mac_bindings=MappingProxyType(dict(self.mac_bindings)))

    def publish(self) -> tuple[Intent, TopologyView, IntentDelta, TopologyDelta]:
        self.generation += 1
        idelta = IntentDelta(MappingProxyType({k: frozenset(v) for k, v in self.touched.items()}))
        self.touched = {}
        intent = self.intent()
        if self.last is not None:  # as the store's snapshot builder does
            intent.carry_ports_by_network(self.last, idelta.ids("ports"))
        self.last = intent
        return intent, self.view(), idelta, TopologyDelta()


GW_TABLES = ("l3", "snat", "unnat", "arp_responder", "l3_resolve")


def flow_counts(routers: int, fips: int, args: argparse.Namespace) -> dict[str, Any]:
    world = NatWorld(routers, args.guests, fips, fips, args.chassis, args.gateways)
    clear_caches()  # a cold compile: nothing memoised from the previous size
    started = time.process_time()
    out = compile_all(world.intent(), world.view())
    cpu = time.process_time() - started
    flows = {d: len(out[d].flows) for d in world.dpids}
    tables = {d: Counter(f.table for f in out[d].flows.values()) for d in world.dpids}
    return {"routers": routers, "fips": fips, "flows": flows, "tables": tables,
            "gateways": world.gateway_dpids, "cpu": cpu}


def _median_or(xs: list[int]) -> float:
    return statistics.median(xs) if xs else float("nan")


def scale_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for r in args.routers:
        for f in args.fips:
            row = flow_counts(r, f, args)
            rows.append(row)
            _say(f"scale: {r} routers, {f} fips: {row['flows']} ({row['cpu']:.1f} s cpu)")
    return rows


def scale_report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    gws = rows[0]["gateways"]
    dpids = sorted(rows[0]["flows"])
    print(f"# scale: flows per chassis (compile_all); {args.chassis} chassis, gateway "
          f"chassis: {', '.join(f'hv{d:x}' for d in gws)}; {args.guests} guest ports (no "
          f"security group) round-robin over the routers and bound round-robin over the "
          f"chassis; each router: one VXLAN /16, its gateway on one shared flat external "
          f"network; F floating IPs on guests 0..F-1")
    cols = " ".join(f"{f'hv{d:x}' + (' gw' if d in gws else ''):>9}" for d in dpids)
    print(f"{'routers':>7} {'fips':>5} {cols}   gateway chassis by table: "
          + " ".join(GW_TABLES) + "  (cold compile_all, CPU s)")
    for row in rows:
        gw = max(gws, key=lambda d: row["flows"][d])
        t = row["tables"][gw]
        print(f"{row['routers']:>7} {row['fips']:>5} "
              + " ".join(f"{row['flows'][d]:>9}" for d in dpids)
              + "   " + " ".join(f"{t[x]}" for x in GW_TABLES) + f"  ({row['cpu']:.2f})")

    def at(r: int, f: int) -> Optional[dict[str, Any]]:
        return next((x for x in rows if x["routers"] == r and x["fips"] == f), None)

    others = [d for d in dpids if d not in gws]
    lo_r, hi_r = min(args.routers), max(args.routers)
    lo_f, hi_f = min(args.fips), max(args.fips)
    a, b = at(lo_r, lo_f), at(hi_r, lo_f)
    if a is not None and b is not None and hi_r > lo_r:
        n = hi_r - lo_r
        gw_growth = (sum(b["flows"][d] for d in gws) - sum(a["flows"][d] for d in gws)) / n
        other = [(b["flows"][d] - a["flows"][d]) / n for d in others]
        print(f"per router ({lo_r} -> {hi_r} routers, {lo_f} fips): +{gw_growth:.1f} flows "
              f"on the gateway chassis (summed over {len(gws)}), "
              f"+{_median_or(other):.1f} on each other chassis (median)")
    if hi_f > lo_f:
        for r in args.routers:
            a, b = at(r, lo_f), at(r, hi_f)
            if a is None or b is None:
                continue
            n = hi_f - lo_f
            gw_growth = (sum(b["flows"][d] for d in gws) - sum(a["flows"][d] for d in gws)) / n
            other = [(b["flows"][d] - a["flows"][d]) / n for d in others]
            print(f"per floating IP ({lo_f} -> {hi_f}, {r} routers): +{gw_growth:.2f} flows "
                  f"on the gateway chassis, {_median_or(other):+.2f} on each other chassis")


def fip_change(routers: int, fips: int, args: argparse.Namespace) -> dict[str, Any]:
    """Associate (and disassociate) one spare floating IP with one spare guest, through
    the incremental compiler, `args.repeat` times each."""
    guests = max(fips + 1, routers)
    world = NatWorld(routers, guests, fips + 1, fips, args.chassis, args.gateways)
    spare = fips  # both the spare floating IP's index and the spare guest's
    compiler = Compiler()
    intent, view = world.intent(), world.view()
    world.last = intent
    started = time.process_time()
    with _gc_paused():  # as the engine runs a full compile (bench_incremental does too)
        compiler.update(intent, view, None, None)
    cold = time.process_time() - started
    times: dict[str, list[float]] = {"associate": [], "disassociate": []}
    offered: dict[str, set[int]] = {k: set() for k in times}
    named: dict[str, list[int]] = {k: [] for k in times}
    differ: dict[str, list[int]] = {k: [] for k in times}

    def measure(name: str, change: Callable[[], None]) -> None:
        change()
        intent, view, idelta, tdelta = world.publish()
        before = {d: dict(compiler.desired(d).flows) for d in world.dpids}  # type: ignore[union-attr]
        enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.process_time()
            offers = compiler.update(intent, view, idelta, tdelta)
            times[name].append((time.process_time() - t0) * 1000)
        finally:
            if enabled:
                gc.enable()
        offered[name] |= set(offers)
        for dpid, offer in offers.items():
            keys = offer.changed_keys
            named[name].append(-1 if keys is None else len(keys))
            now = offer.desired.flows
            old = before[dpid]
            differ[name].append(sum(1 for k in set(old) | set(now) if old.get(k) != now.get(k)))

    for _ in range(args.repeat):
        measure("associate", lambda: world.associate(spare, spare))
        measure("disassociate", lambda: world.disassociate(spare))
    full = []
    for _ in range(3):
        intent, view = world.intent(), world.view()
        t0 = time.process_time()
        reference = compile_all(intent, view)
        full.append((time.process_time() - t0) * 1000)
    same = all(dict(compiler.desired(d).flows) == dict(reference[d].flows)  # type: ignore[union-attr]
               for d in world.dpids)
    gw_flows = {d: len(reference[d].flows) for d in world.dpids}
    return {"routers": routers, "fips": fips, "times": times, "offered": offered,
            "named": named, "differ": differ, "full": statistics.median(full),
            "cold": cold, "same": same, "flows": gw_flows,
            "gateways": world.gateway_dpids, "fallbacks": compiler.full_compiles - 1}


def change_report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"# one floating IP associated / disassociated through Compiler.update: engine "
          f"CPU ms (process_time, collector off), median (min-max) of {args.repeat}; "
          f"offered: the switches offered; named: flow keys the offer names; differ: flows "
          f"that really differ on the offered switch; full: compile_all of the same "
          f"inputs (memoised pieces warm, as in the engine), CPU ms, median of 3")
    print(f"{'routers':>7} {'fips':>5} {'flows gw/other':>15} {'change':>12} {'ms':>7} "
          f"{'(min-max)':>15} {'offered':>8} {'named':>6} {'differ':>6} {'full ms':>9} "
          f"{'full/change':>11}")
    for row in rows:
        gws = row["gateways"]
        other = [row["flows"][d] for d in row["flows"] if d not in gws]
        flows = f"{max(row['flows'][d] for d in gws)}/{max(other) if other else 0}"
        for name in ("associate", "disassociate"):
            ts = row["times"][name]
            med = statistics.median(ts)
            offered = ",".join(f"hv{d:x}" + ("(gw)" if d in gws else "")
                               for d in sorted(row["offered"][name]))
            named = sorted(set(row["named"][name]))
            differ = sorted(set(row["differ"][name]))
            print(f"{row['routers']:>7} {row['fips']:>5} {flows:>15} {name:>12} {med:>7.3f} "
                  f"{f'({min(ts):.3f}-{max(ts):.3f})':>15} {offered:>8} "
                  f"{'/'.join(map(str, named)):>6} {'/'.join(map(str, differ)):>6} "
                  f"{row['full']:>9.0f} {row['full'] / med:>10.0f}x")
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        for name in ("associate", "disassociate"):
            a = statistics.median(lo["times"][name])
            b = statistics.median(hi["times"][name])
            print(f"ratio {name}, {hi['routers']} routers / {hi['fips']} fips against "
                  f"{lo['routers']} / {lo['fips']}: {b / a:.1f}x (full compile: "
                  f"{hi['full'] / lo['full']:.0f}x)")
    cold = ", ".join(f"{r['cold']:.2f}" for r in rows)
    print("incremental state == compile_all after the changes: "
          + ", ".join(f"{r['routers']}/{r['fips']} {r['same']}" for r in rows)
          + f"; fallbacks to a full compile: {sum(r['fallbacks'] for r in rows)}; "
          f"cold compile CPU s: {cold}")


# ======================================================================== traffic
def _iperf(src: Any, dst: Any, address: str, port: int, seconds: int) -> float:
    """Mbit/s received at `dst` (listening) from one TCP stream `src` -> `address`."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", dst.netns, "iperf3", "-s", "-1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not dst.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 -s -p {port} in {dst.name} not listening")
            time.sleep(0.05)
        out = subprocess.run(
            ["ip", "netns", "exec", src.netns, "iperf3", "-c", address, "-p", str(port),
             "-P", "1", "-t", str(seconds), "-O", str(OMIT), "-J"],
            capture_output=True, text=True, timeout=seconds + OMIT + 30, check=False).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        server.kill()
        server.wait(5)


PATHS = ("(a) L2", "(b) SNAT", "(c) FIP")


def traffic(args: argparse.Namespace) -> dict[str, Any]:
    from topologies.lab import Lab

    # the integration test's lab and setup, imported (not copied); through importlib so
    # that `mypy bench` does not type-check the test files
    nat = importlib.import_module("tests.integration.test_nat")
    started = time.monotonic()
    res: dict[str, Any] = {"runs": {p: [] for p in PATHS}, "load": [], "problems": []}
    with tempfile.TemporaryDirectory(prefix="loom-bench-nat-") as tmp:
        spec = Path(tmp) / "nat.yaml"
        spec.write_text(nat.SPEC)
        lab = Lab.up(spec, name=f"bnat-{secrets.token_hex(2)}", progress=_say)
        res["lab_s"] = time.monotonic() - started
        world = nat.World(lab)
        try:
            nat._physical_network(lab)
            nat._build(world)
            g, outside = world.guests, world.outside
            deadline = time.monotonic() + 40
            while g["a1"].ping(nat.OUTSIDE_IP, count=1, timeout=1)[1] != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("no SNATed ping to the outside in 40 s")
            resp = lab.api.post("/v2.0/floatingips", {"floatingip": {
                "floating_network_id": world.public["id"], "project_id": "beta",
                "port_id": world.ports["b1"]["id"]}})
            if resp.status not in (200, 201):
                raise RuntimeError(f"POST /v2.0/floatingips: {resp.status} {resp.body}")
            fip = str(resp.body["floatingip"]["floating_ip_address"])
            res["fip"] = fip
            deadline = time.monotonic() + 30
            while outside.ping(fip, count=1, timeout=1)[1] != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the floating IP never answered ping in 30 s")
            deadline = time.monotonic() + 30
            while g["a1"].ping(g["a2"].ip, count=1, timeout=1)[1] != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("a1 cannot reach a2 in 30 s")
            pairs: list[tuple[str, Any, Any, str]] = [
                ("(a) L2", g["a1"], g["a2"], str(g["a2"].ip)),
                ("(b) SNAT", g["a1"], outside, nat.OUTSIDE_IP),
                ("(c) FIP", outside, g["b1"], fip)]
            res["load_start"] = _load()
            for rep in range(args.repeats):
                order = list(enumerate(pairs))
                for k, (label, src, dst, address) in order if rep % 2 == 0 else order[::-1]:
                    res["load"].append(_load())
                    rate = _iperf(src, dst, address, 5700 + k, args.seconds)
                    res["runs"][label].append(rate)
                    _say(f"round {rep + 1}: {label}: {rate:.0f} Mbit/s, "
                         f"load {res['load'][-1]:.2f}")
            res["load"].append(_load())
        finally:
            for guest in world.guests.values():
                guest.close()
            if world.outside is not None:
                world.outside.close()
            res["problems"] = lab.down()
            _say(f"lab down: {res['problems'] or 'nothing left behind'}")
    res["total_s"] = time.monotonic() - started
    return res


def traffic_report(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"# traffic: iperf3 TCP, -P 1, {args.seconds} s (-O {OMIT}), {args.repeats} "
          f"round(s) of the 3 paths in turn; 2 hypervisors (netns, private OVS, netdev "
          f"datapath), real controller, hv2 the gateway chassis; Mbit/s of TCP payload "
          f"received")
    what = {"(a) L2": "a1 (hv1) > a2 (hv2), one VXLAN network",
            "(b) SNAT": "a1 (hv1) > outside (hv2 br-ex), router SNAT on hv2",
            "(c) FIP": f"outside > {res.get('fip', '?')} = b1 (hv1), DNAT on hv1"}
    print(f"{'path':9} {'from > to':52} {'median':>6}  each run")
    for p in PATHS:
        runs = res["runs"][p]
        print(f"{p:9} {what[p]:52} {statistics.median(runs):>6.0f}  "
              f"({', '.join(f'{x:.0f}' for x in runs)})")
    base = res["runs"]["(a) L2"]
    for p, name in (("(b) SNAT", "b/a"), ("(c) FIP", "c/a")):
        runs = res["runs"][p]
        rounds = [x / y for x, y in zip(runs, base, strict=True)]
        print(f"ratio {name}: {statistics.median(runs) / statistics.median(base):.2f} "
              f"(of the medians); round by round {', '.join(f'{x:.2f}' for x in rounds)}")
    load = res["load"]
    print(f"1-minute load average: {res['load_start']:.2f} at the first run, "
          f"{min(load):.2f}-{max(load):.2f} during the runs; lab up in {res['lab_s']:.0f} s; "
          f"traffic part {res['total_s']:.0f} s")


# ======================================================================== main
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=("traffic", "scale"),
                        default=["traffic", "scale"])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 run")
    parser.add_argument("--repeats", type=int, default=2, help="traffic: rounds of the paths")
    parser.add_argument("--routers", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--fips", type=int, nargs="+", default=[0, 100, 1000])
    parser.add_argument("--guests", type=int, default=1000,
                        help="guest ports in all (at least max --fips)")
    parser.add_argument("--chassis", type=int, default=3)
    parser.add_argument("--gateways", type=int, default=1, help="chassis flagged gateway")
    parser.add_argument("--repeat", type=int, default=10, help="scale: runs per FIP change")
    parser.add_argument("--small", type=int, nargs=2, default=[1, 10], metavar=("R", "F"),
                        help="the FIP change's baseline world: routers, floating IPs")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.guests < max(args.fips):
        parser.error("--guests must be at least the largest --fips")
    if not 1 <= args.gateways <= args.chassis:
        parser.error("--gateways must be 1..--chassis")
    if "traffic" in args.only and os.geteuid() != 0:
        print("the traffic part needs root (network namespaces, OVS, the lab); "
              "--only scale runs without", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the lab is torn down
    command = f".venv/bin/python -m bench.bench_nat {' '.join(raw)}".rstrip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs; "
          f"1-minute load {_load():.2f}")
    rc = 0
    if "traffic" in args.only:  # first: the most sensitive to load
        res = traffic(args)
        traffic_report(res, args)
        if res["problems"]:
            print(f"teardown problems: {res['problems']}", file=sys.stderr)
            rc = 1
    if "scale" in args.only:
        load = [_load()]
        rows = scale_table(args)
        load.append(_load())
        scale_report(rows, args)
        changes = [fip_change(args.small[0], args.small[1], args),
                   fip_change(max(args.routers), max(args.fips), args)]
        load.append(_load())
        change_report(changes, args)
        print(f"1-minute load average during the scale part: {min(load):.2f}-{max(load):.2f}")
        if not all(r["same"] for r in changes):
            rc = 1
    print(f"command: {'sudo ' if 'traffic' in args.only else ''}{command}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
