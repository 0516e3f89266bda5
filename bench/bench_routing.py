"""Distributed east-west routing (issue 12, phase 1): traffic routed vs switched, and
what routers cost the engine as they grow.

1. Traffic (root; the multi-host lab of tests/integration/test_routing.py: hypervisors
   as namespaces, a private ovsdb-server/ovs-vswitchd each, userspace datapath, the
   real controller process; everything made through the REST API). Project alpha has
   two VXLAN networks, front 10.1.1.0/24 and back 10.1.2.0/24, joined by one router
   (POST /v2.0/routers, PUT .../add_router_interface {"subnet_id"}); guests default-
   route through their subnet's gateway. iperf3 TCP (1 stream, ``--seconds`` s,
   ``-O 2``) from f1 (front, hv1) to:
       f2  front, hv2   switched (L2) across the VXLAN tunnel: the baseline
       k1  back,  hv2   routed, across the tunnel
       f3  front, hv1   switched on one chassis
       k2  back,  hv1   routed on one chassis
   ``--repeats`` rounds, the four pairs one after the other in each round (so routed
   and its baseline are measured minutes apart at most); the median per pair and the
   ratio routed / switched for each placement.

2. Engine (pure, as bench_incremental: Intent and TopologyView built in memory, the
   deltas the store and the topology would publish, controller.compiler.incremental.
   Compiler and compile_all). For R routers (``--routers``), router i of project pi has
   2, 3 or 4 subnets (i mod 3), each its own VXLAN network with ``--ports`` ports
   spread round-robin over ``--chassis`` chassis (so every router is present on every
   chassis: distributed routing's worst case), a default security group (remote group
   itself, as Neutron's) on every guest port. Flows per switch (all, l3, l3_resolve),
   and the engine time (median of ``--repeat``) of one change on router 0:
       add iface    attach one more subnet (its network has ports bound already):
                    router port + RouterInterface + router revision, as the API writes
       del iface    detach it again
       create       a port on one of router 0's networks
       bind         that port bound on chassis 0
       delete       the port deleted (and unbound)
       full         compile_all of the same inputs (what a change cost without the
                    incremental compiler)
   The same networks and ports without any router are the baseline (create, bind,
   delete, flows), in the same run; the ratio row is R=max vs R=min.

Floating IPs, SNAT and external gateways are not implemented (phase 1: east-west only),
so they are not measured.

    sudo .venv/bin/python -m bench.bench_routing [--routers 1 10 100] [--ports 10]
        [--chassis 4] [--repeat 15] [--seconds 10] [--repeats 3] [--wait-load 0]
        [--only engine traffic]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from controller.compiler import compile_all
from controller.compiler.incremental import Compiler
from controller.intent import (
    FixedIP,
    Intent,
    Network,
    Port,
    Router,
    RouterInterface,
    SecurityGroup,
    SecurityGroupRule,
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

ROUTER_INTERFACE = "network:router_interface"
OMIT = 2  # iperf3 -O: seconds of slow start left out


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return os.getloadavg()[0]


# ======================================================================== engine
def _id(kind: str, *n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-routing-{kind}-{'-'.join(map(str, n))}"))


def subnets_of_router(i: int) -> int:
    """Router i has 2, 3 or 4 subnets."""
    return 2 + i % 3


class RoutedWorld:
    """R routers (or none: `routed=False`), their subnets, networks and ports, the
    chassis and tunnels; published as snapshots with their deltas."""

    def __init__(self, routers: int, ports_per_subnet: int, chassis: int,
                 routed: bool = True) -> None:
        self.generation = self.version = 1
        self.touched: dict[str, set[str]] = {}  # what the next publish() reports
        self.bound: set[str] = set()
        self.last: Optional[Intent] = None
        self.networks: dict[str, Network] = {}
        self.subnets: dict[str, Subnet] = {}
        self.subnet_of: dict[str, str] = {}  # network id -> its (one) subnet id
        self.ports: dict[str, Port] = {}
        self.routers: dict[str, Router] = {}
        self.ifaces: dict[str, RouterInterface] = {}
        self.sgs: dict[str, SecurityGroup] = {}
        self.rules: dict[str, SecurityGroupRule] = {}
        self.bindings: dict[str, Binding] = {}
        self.dpids = [0x100 + c for c in range(chassis)]
        self.switches = {d: SwitchView(d, f"hv{d:x}", "br-int") for d in self.dpids}
        self.chassis = {f"hv{d:x}": ChassisView(f"hv{d:x}", f"10.0.{d >> 8}.{d & 0xFF}", d)
                        for d in self.dpids}
        self.tunnels = {(d, f"hv{r:x}", "vxlan"): TunnelView(d, f"hv{r:x}", "vxlan", 5000 + k)
                        for d in self.dpids for k, r in enumerate(self.dpids) if r != d}
        self.ports_per_subnet = ports_per_subnet
        self._net_count = 0
        self._port_count = 0
        self.router_nets: dict[int, list[str]] = {}  # router index -> its network ids
        for r in range(routers):
            project = f"p{r}"
            sg = SecurityGroup(_id("sg", r), project, "default")
            self.sgs[sg.id] = sg
            for rule in (
                    SecurityGroupRule(_id("rule", r, 0), project, sg.id, "ingress", "IPv4",
                                      remote_group_id=sg.id),
                    SecurityGroupRule(_id("rule", r, 1), project, sg.id, "egress", "IPv4"),
                    SecurityGroupRule(_id("rule", r, 2), project, sg.id, "ingress", "IPv4",
                                      "tcp", 22, 22)):
                self.rules[rule.id] = rule
            router = Router(_id("router", r), project, f"r{r}")
            if routed:
                self.routers[router.id] = router
            self.router_nets[r] = []
            for _ in range(subnets_of_router(r)):
                nid, sid = self.add_network(project, sg.id)
                self.router_nets[r].append(nid)
                if routed:
                    self.attach(r, nid, sid)

    # -- building blocks
    def add_network(self, project: str, sg: str) -> tuple[str, str]:
        """A VXLAN network with one /24 and `ports_per_subnet` bound guest ports."""
        g = self._net_count
        self._net_count += 1
        net = Network(_id("net", g), project, f"n{g}", "vxlan", 1000 + g, ct_zone=g + 1,
                      flood_group=g + 1)
        base = f"10.{g >> 8 & 0xFF}.{g & 0xFF}"
        sub = Subnet(_id("subnet", g), project, net.id, f"s{g}", 4, f"{base}.0/24", f"{base}.1")
        self.networks[net.id] = net
        self.subnets[sub.id] = sub
        self.subnet_of[net.id] = sub.id
        for h in range(self.ports_per_subnet):
            port = self.guest_port(net, sub, 10 + h, sg)
            self.ports[port.id] = port
            self.bind(port.id, self.dpids[self._port_count % len(self.dpids)])
        return net.id, sub.id

    def guest_port(self, net: Network, sub: Subnet, host: int, sg: str) -> Port:
        i = self._port_count
        self._port_count += 1
        ip = sub.cidr.rsplit(".", 1)[0] + f".{host}"
        return Port(_id("port", i), net.project_id, net.id, f"vm{i}",
                    f"fa:16:3e:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}",
                    (FixedIP(sub.id, ip),), security_groups=(sg,))

    def bind(self, pid: str, dpid: int) -> None:
        self.bindings[pid] = Binding(pid, f"hv{dpid:x}", "br-int", dpid,
                                     10 + len(self.bindings), f"tap{len(self.bindings)}")
        self.bound.add(pid)

    def attach(self, r: int, nid: str, sid: str) -> tuple[str, str]:
        """Router r gets an interface on subnet sid (a router port holding the gateway
        address), as add_router_interface {"subnet_id"} writes it; (port id, iface id)."""
        router = self.routers[_id("router", r)]
        sub = self.subnets[sid]
        g = int(self.networks[nid].segmentation_id) - 1000
        port = Port(_id("rport", r, g), router.project_id, nid, "",
                    f"fa:16:3f:{g >> 16 & 0xFF:02x}:{g >> 8 & 0xFF:02x}:{g & 0xFF:02x}",
                    (FixedIP(sid, str(sub.gateway_ip)),), port_security_enabled=False,
                    device_id=router.id, device_owner=ROUTER_INTERFACE)
        iface = RouterInterface(_id("ri", r, g), router.id, port.id, sid)
        self.ports[port.id] = port
        self.ifaces[iface.id] = iface
        self._bump(router)
        self._touch("ports", port.id)
        self._touch("router_interfaces", iface.id)
        return port.id, iface.id

    def detach(self, r: int, port_id: str, iface_id: str) -> None:
        del self.ifaces[iface_id]
        del self.ports[port_id]
        self._bump(self.routers[_id("router", r)])
        self._touch("ports", port_id)
        self._touch("router_interfaces", iface_id)

    def _bump(self, router: Router) -> None:
        self.routers[router.id] = dataclasses.replace(
            router, revision_number=router.revision_number + 1)
        self._touch("routers", router.id)

    def _touch(self, attr: str, oid: str) -> None:
        self.touched.setdefault(attr, set()).add(oid)

    # -- snapshots
    def intent(self) -> Intent:
        return Intent(self.generation, networks=MappingProxyType(dict(self.networks)),
                      subnets=MappingProxyType(dict(self.subnets)),
                      ports=MappingProxyType(dict(self.ports)),
                      security_groups=MappingProxyType(dict(self.sgs)),
                      security_group_rules=MappingProxyType(dict(self.rules)),
                      routers=MappingProxyType(dict(self.routers)),
                      router_interfaces=MappingProxyType(dict(self.ifaces)))

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


def table_counts(flows: Any) -> tuple[int, int, int]:
    """(all flows, in l3, in l3_resolve) of one switch's desired flows."""
    l3 = res = 0
    for f in flows.values():
        if f.table == "l3":
            l3 += 1
        elif f.table == "l3_resolve":
            res += 1
    return len(flows), l3, res


CHANGES = ("add iface", "del iface", "create", "bind", "delete")


def engine_size(routers: int, ports: int, chassis: int, repeat: int, routed: bool
                ) -> dict[str, Any]:
    world = RoutedWorld(routers, ports, chassis, routed)
    # the subnet that router 0 attaches and detaches, unrouted at first
    spare_net, spare_sub = world.add_network("p0", _id("sg", 0))
    compiler = Compiler()
    intent, view = world.intent(), world.view()
    world.touched, world.bound, world.last = {}, set(), intent
    started = time.perf_counter()
    compiler.update(intent, view, None, None)
    cold = (time.perf_counter() - started) * 1000
    counts = []
    for dpid in world.dpids:
        desired = compiler.desired(dpid)
        assert desired is not None
        counts.append(table_counts(desired.flows))
    target = world.router_nets[0][0]
    net, sub = world.networks[target], world.subnets[world.subnet_of[target]]
    dpid = world.dpids[0]
    times: dict[str, list[float]] = {k: [] for k in CHANGES}
    offered: dict[str, int] = {k: 0 for k in CHANGES}
    full: list[float] = []

    def measure(name: str, change: Callable[..., Any], *args: Any) -> Any:
        """Apply `change(*args)`, publish, and time the compiler's update; its result."""
        result = change(*args)
        intent, view, idelta, tdelta = world.publish()
        started = time.perf_counter()
        offers = compiler.update(intent, view, idelta, tdelta)
        times[name].append((time.perf_counter() - started) * 1000)
        offered[name] = max(offered[name], len(offers))
        return result

    def create(port: Port) -> None:
        world.ports[port.id] = port
        world._touch("ports", port.id)

    def delete(pid: str) -> None:
        del world.ports[pid]
        del world.bindings[pid]
        world._touch("ports", pid)
        world.bound.add(pid)

    for r in range(repeat):
        if routed:
            rport, iface = measure("add iface", world.attach, 0, spare_net, spare_sub)
            measure("del iface", world.detach, 0, rport, iface)
        port = world.guest_port(net, sub, 200 + r, _id("sg", 0))
        measure("create", create, port)
        measure("bind", world.bind, port.id, dpid)
        measure("delete", delete, port.id)
        if r < 3:
            intent, view = world.intent(), world.view()
            started = time.perf_counter()
            compile_all(intent, view)
            full.append((time.perf_counter() - started) * 1000)
    # the incremental compiler's state after every change is what a full compile gives
    intent, view = world.intent(), world.view()
    reference = compile_all(intent, view)
    same = all(dict(compiler.desired(d).flows) == dict(reference[d].flows)  # type: ignore[union-attr]
               for d in world.dpids)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items() if v}
    out["best"] = {k: min(v) for k, v in times.items() if v}
    out["best"]["full"] = min(full)
    out.update(routers=routers, routed=routed, ports=len(world.ports),
               nets=len(world.networks), full=statistics.median(full), cold=cold,
               flows=counts, offered=offered, same=same,
               fallbacks=compiler.full_compiles - 1)
    return out


def engine(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for routers in args.routers:
        for routed in (False, True):
            row = engine_size(routers, args.ports, args.chassis, args.repeat, routed)
            rows.append(row)
            _say(f"engine: {routers} routers, routed={routed}: {row['ports']} ports, "
                 f"flows {row['flows'][0]}, full {row['full']:.0f} ms")
    return rows


def _med(xs: list[int]) -> str:
    return f"{statistics.median(xs):.0f}"


def _ratios(rows: list[dict[str, Any]], get: Callable[[dict[str, Any], str], Any]) -> None:
    """The ratio row: the most routers against the fewest, per variant."""
    for routed in (False, True):
        mine = [r for r in rows if r["routed"] == routed]
        if len(mine) < 2:
            continue
        lo, hi = mine[0], mine[-1]
        cells = []
        for c in (*CHANGES, "full"):
            a, b = get(hi, c), get(lo, c)
            cells.append(f"{a / b:>8.1f}x" if a is not None and b else f"{'-':>9}")
        label = f"{hi['routers']}/{lo['routers']}"
        print(f"{'ratio':>7} {'routed' if routed else 'no routers':>10} {label:>6} "
              f"{hi['ports'] / lo['ports']:>5.0f}x {'':>5} {'':>6} " + " ".join(cells))


def engine_report(rows: list[dict[str, Any]], args: argparse.Namespace, load: list[float]
                  ) -> None:
    print(f"# engine: R routers (router i: 2 + i mod 3 VXLAN subnets), {args.ports} "
          f"bound ports per subnet round-robin over {args.chassis} chassis, a default "
          f"security group per project; every router is present on every chassis")
    print(f"# flows per switch (median over the {args.chassis} switches; all equal within "
          f"a few; l3 and l3_resolve include their table-miss flow) and one change's "
          f"engine time in ms (median of {args.repeat}); 'no routers' = the same networks "
          f"and ports, no router, same run; ports include one more unrouted subnet of "
          f"router 0's project, the one 'add iface' attaches, and the router ports")
    head = (f"{'routers':>7} {'variant':>10} {'ports':>6} {'flows':>6} {'l3':>5} "
            f"{'l3_res':>6} " + " ".join(f"{c:>9}" for c in (*CHANGES, "full"))
            + "  (cold ms, switches offered)")
    print(head)
    for row in rows:
        flows = row["flows"]
        cells = []
        for c in (*CHANGES, "full"):
            cells.append(f"{row[c]:>9.2f}" if c in row else f"{'-':>9}")
        offered = "/".join(str(row["offered"][c]) for c in CHANGES if c in row)
        print(f"{row['routers']:>7} {'routed' if row['routed'] else 'no routers':>10} "
              f"{row['ports']:>6} {_med([f[0] for f in flows]):>6} "
              f"{_med([f[1] for f in flows]):>5} {_med([f[2] for f in flows]):>6} "
              + " ".join(cells) + f"  ({row['cold']:.0f}, {offered})")
    _ratios(rows, lambda row, c: row.get(c))
    print(f"best of {args.repeat} (3 for full), ms: the least disturbed run, "
          f"for a box shared with other work")
    for row in rows:
        cells = [f"{row['best'][c]:>9.2f}" if c in row["best"] else f"{'-':>9}"
                 for c in (*CHANGES, "full")]
        print(f"{row['routers']:>7} {'routed' if row['routed'] else 'no routers':>10} "
              f"{'':>6} {'':>6} {'':>5} {'':>6} " + " ".join(cells))
    _ratios(rows, lambda row, c: row["best"].get(c))
    print("incremental state == compile_all after the changes: "
          + ", ".join(f"R={r['routers']}{'' if r['routed'] else ' (no routers)'} "
                      f"{r['same']}" for r in rows)
          + f"; fallbacks to a full compile: {sum(r['fallbacks'] for r in rows)}")
    print(f"1-minute load average during the engine part: {min(load):.1f}-{max(load):.1f}")
    print("floating IPs, SNAT and external gateways: not implemented in phase 1, "
          "not measured")


# ======================================================================== traffic
SPEC = """
name: routing-bench
hypervisors:
  - name: hv1
  - name: hv2
controller: {}
projects:
  - name: alpha
    networks:
      - name: front
        type: vxlan
        segmentation_id: 1301
        subnets: [{cidr: 10.1.1.0/24}]
        guests:
          - {name: f1, hypervisor: hv1, ip: 10.1.1.11}
          - {name: f2, hypervisor: hv2, ip: 10.1.1.12}
          - {name: f3, hypervisor: hv1, ip: 10.1.1.13}
      - name: back
        type: vxlan
        segmentation_id: 1302
        subnets: [{cidr: 10.1.2.0/24}]
        guests:
          - {name: k1, hypervisor: hv2, ip: 10.1.2.12}
          - {name: k2, hypervisor: hv1, ip: 10.1.2.13}
"""
GATEWAY = {"front": "10.1.1.1", "back": "10.1.2.1"}
# (label, sender, receiver); the ratio pairs each routed row with its switched baseline
PAIRS = (("switched, hv1 > hv2", "f1", "f2"), ("routed, hv1 > hv2", "f1", "k1"),
         ("switched, hv1 only", "f1", "f3"), ("routed, hv1 only", "f1", "k2"))


def wait_quiet(limit: float, wait_s: float) -> float:
    """Wait (up to wait_s) for the 1-minute load to be at most `limit`; the load then."""
    deadline = time.monotonic() + wait_s
    while _load() > limit and time.monotonic() < deadline:
        _say(f"1-minute load {_load():.2f} > {limit:g}: waiting "
             f"({deadline - time.monotonic():.0f} s left)")
        time.sleep(min(30.0, max(1.0, deadline - time.monotonic())))
    return _load()


def _make_router(lab: Any) -> str:
    api = lab.api
    resp = api.post("/v2.0/routers", {"router": {"name": "r1", "project_id": "alpha"}})
    if resp.status != 201:
        raise RuntimeError(f"POST /v2.0/routers: {resp.status} {resp.body}")
    rid = str(resp.body["router"]["id"])
    subnets = lab.state.data["api"]["subnets"]
    for key in ("alpha/front/10.1.1.0/24", "alpha/back/10.1.2.0/24"):
        resp = api.put(f"/v2.0/routers/{rid}/add_router_interface",
                       {"subnet_id": subnets[key]})
        if resp.status != 200:
            raise RuntimeError(f"add_router_interface: {resp.status} {resp.body}")
    return rid


def _ip(lab: Any, guest: str) -> str:
    return str(lab.guest_info(guest)["ip_cidr"].split("/")[0])


def _chassis_flows(lab: Any) -> dict[str, tuple[int, int, int]]:
    out = {}
    for hv in ("hv1", "hv2"):
        lines = [x for x in lab.hypervisor(hv).ovs.dump_flows("br-int") if "cookie=" in x]
        tables = [re.search(r"table=(\d+)", x) for x in lines]
        nums = [int(m.group(1)) if m else 0 for m in tables]
        out[hv] = (len(lines), nums.count(40), nums.count(45))
    return out


def traffic(args: argparse.Namespace) -> dict[str, Any]:
    from topologies.lab import Lab

    # the integration tests' iperf3 helper, imported (not copied); through importlib so
    # that `mypy bench` does not type-check the test files
    parallel_iperf: Callable[..., list[float]] = importlib.import_module(
        "tests.integration.test_qos").parallel_iperf
    started = time.monotonic()
    result: dict[str, Any] = {"runs": {p[0]: [] for p in PAIRS}, "load": []}
    with tempfile.TemporaryDirectory(prefix="loom-bench-routing-") as tmp:
        spec = Path(tmp) / "routing.yaml"
        spec.write_text(SPEC)
        lab = Lab.up(spec, name=f"brt-{secrets.token_hex(2)}", progress=_say)
        result["lab_s"] = time.monotonic() - started
        problems: list[str] = []
        try:
            _make_router(lab)
            for name in ("f1", "f2", "f3", "k1", "k2"):
                gw = GATEWAY[lab.guest_info(name)["network"]]
                lab.guest(name).run(["ip", "route", "replace", "default", "via", gw])
            deadline = time.monotonic() + 30
            for dst in ("f2", "k1", "f3", "k2"):  # every pair answers, ARP caches warm
                while lab.guest("f1").ping(_ip(lab, dst), count=1, timeout=1)[1] != 1:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"f1 cannot reach {dst} within 30 s")
            result["flows"] = _chassis_flows(lab)
            result["load_start"] = _load()
            g = lab.guest
            for rep in range(args.repeats):
                # every other round the other way round, so no pair always goes first
                order = list(enumerate(PAIRS))
                for k, (label, src, dst) in order if rep % 2 == 0 else order[::-1]:
                    result["load"].append(_load())
                    rate = parallel_iperf([(g(src), g(dst), 5600 + k, 1)],
                                          seconds=args.seconds, omit=OMIT)[0]
                    result["runs"][label].append(rate)
                    _say(f"round {rep + 1}: {label} ({src} > {dst}): {rate:.0f} Mbit/s, "
                         f"load {result['load'][-1]:.2f}")
            result["load"].append(_load())
        finally:
            problems = lab.down()
            _say(f"lab down: {problems or 'nothing left behind'}")
    result["problems"] = problems
    result["total_s"] = time.monotonic() - started
    return result


def traffic_report(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"# traffic: iperf3 TCP, 1 stream, {args.seconds} s (-O {OMIT}), {args.repeats} "
          f"round(s) of the 4 pairs in turn; 2 hypervisors (netns, private OVS, netdev "
          f"datapath), real controller; front and back are VXLAN /24s of one project, "
          f"one router between them; Mbit/s of TCP payload received")
    print(f"{'pair':22} {'from > to':9} {'Mbit/s median':>13}  each run")
    for label, src, dst in PAIRS:
        runs = res["runs"][label]
        print(f"{label:22} {src + ' > ' + dst:9} {statistics.median(runs):>13.0f}  "
              f"({', '.join(f'{x:.0f}' for x in runs)})")
    runs = res["runs"]
    for where in ("hv1 > hv2", "hv1 only"):
        routed = statistics.median(runs[f"routed, {where}"])
        switched = statistics.median(runs[f"switched, {where}"])
        rounds = [r / s for r, s in zip(runs[f"routed, {where}"], runs[f"switched, {where}"],
                                        strict=True)]
        print(f"ratio routed / switched, {where}: {routed / switched:.2f} (of the medians); "
              f"round by round {', '.join(f'{x:.2f}' for x in rounds)}, median "
              f"{statistics.median(rounds):.2f}")
    flows = ", ".join(f"{hv} {n} (l3 {l3}, l3_resolve {res_})"
                      for hv, (n, l3, res_) in res["flows"].items())
    print(f"flows on br-int with the router: {flows}")
    load = res["load"]
    print(f"1-minute load average: {res['load_start']:.2f} at the first run, "
          f"{min(load):.2f}-{max(load):.2f} "
          f"during the runs (median {statistics.median(load):.2f}); lab up in "
          f"{res['lab_s']:.0f} s; traffic part {res['total_s']:.0f} s")


# ======================================================================== main
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=("engine", "traffic"),
                        default=["engine", "traffic"])
    parser.add_argument("--routers", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--ports", type=int, default=10, help="bound ports per subnet")
    parser.add_argument("--chassis", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=15, help="engine: runs per change")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per iperf3 run")
    parser.add_argument("--repeats", type=int, default=3, help="traffic: rounds of the pairs")
    parser.add_argument("--max-load", type=float, default=2.0)
    parser.add_argument("--wait-load", type=float, default=0.0,
                        help="before the traffic, wait up to this many seconds for the "
                             "1-minute load to fall to --max-load")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if "traffic" in args.only and os.geteuid() != 0:
        print("the traffic part needs root (network namespaces, OVS, the lab); "
              "--only engine runs without", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the lab is torn down
    command = f".venv/bin/python -m bench.bench_routing {' '.join(raw)}".rstrip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs; "
          f"1-minute load {_load():.2f}")
    if args.wait_load > 0:
        before = _load()
        after = wait_quiet(args.max_load, args.wait_load)
        print(f"# waited for the 1-minute load to be <= {args.max_load:g} (at most "
              f"{args.wait_load:.0f} s): {before:.2f} -> {after:.2f}")
    rc = 0
    # traffic first: the most sensitive to load, and the engine part makes some
    if "traffic" in args.only:
        res = traffic(args)
        traffic_report(res, args)
        if res["problems"]:
            print(f"teardown problems: {res['problems']}", file=sys.stderr)
            rc = 1
    if "engine" in args.only:
        load = [_load()]
        rows = engine(args)
        load.append(_load())
        engine_report(rows, args, load)
        if not all(r["same"] for r in rows):
            rc = 1
    print(f"command: {'sudo ' if 'traffic' in args.only else ''}{command}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
