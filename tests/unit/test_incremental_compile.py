"""The incremental compiler equals the full compile, flow for flow, after every step.

Random sequences of API changes (ports, networks, security-group rules, QoS rules,
routers with their interfaces and extra routes) and topology events (bindings, moves,
tunnels, provider patches) are applied to an intent and a
topology; after every step `Compiler.update` gets the step's deltas, and every
switch's desired state is compared with `compile_all` of the same inputs. The flow
keys an offer says changed must cover every key whose flow changed, and a switch
not offered anything must be one whose full compile did not change.
"""

from __future__ import annotations

import dataclasses
import uuid
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.compiler import compile_all
from controller.compiler.incremental import Compiler
from controller.intent import (
    FixedIP,
    Intent,
    Network,
    Port,
    QosPolicy,
    QosRule,
    Router,
    RouterInterface,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from controller.intent_delta import INTENT_ATTRS, IntentDelta
from controller.topology import (
    Binding,
    ChassisView,
    SwitchView,
    TopologyDelta,
    TopologyView,
    TunnelView,
)

DPIDS = (0xD1, 0xD2, 0xD3)
N_PORTS = 8


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"incremental-{kind}-{n}"))


NETS = [
    Network(_id("net", 0), "p", "n0", "vxlan", 100),
    Network(_id("net", 1), "p", "n1", "geneve", 101),
    Network(_id("net", 2), "q", "n2", "vlan", 102, physical_network="physnet1"),
    # flat on the same physical network as the VLAN one: untagged, beside it
    Network(_id("net", 3), "q", "n3", "flat", 1, physical_network="physnet1"),
]
# one IPv4 subnet per network, 10.0.<n>.0/24 (ports with host part < 4 use 10.0.0.x on
# every network: addresses collide across networks on purpose)
SUBNETS = [Subnet(_id("subnet", n), net.project_id, net.id, f"s{n}", 4, f"10.0.{n}.0/24",
                  f"10.0.{n}.1") for n, net in enumerate(NETS)]
N_ROUTERS = 2
EXTRA_ROUTES: list[tuple[tuple[str, str], ...]] = [
    (),
    (("10.0.1.128/25", "10.0.0.5"),),  # longer than the connected 10.0.1.0/24
    (("10.0.2.0/24", "10.0.1.4"), ("0.0.0.0/0", "10.0.0.2"), ("10.9.0.0/16", "10.7.0.1")),
]
SGS = [SecurityGroup(_id("sg", i), "p", f"sg{i}") for i in range(3)]
POLICIES = [QosPolicy(_id("qp", i), "p", f"qp{i}") for i in range(2)]


def _chassis(d: int) -> str:
    return f"hv{d & 0xF}"


def base_topology() -> dict[str, Any]:
    tunnels = {}
    for d in DPIDS:
        for r in DPIDS:
            if r != d:
                for t in ("vxlan", "geneve"):
                    ofport = 100 + (r & 0xF) + (t == "geneve") * 10
                    tunnels[(d, _chassis(r), t)] = TunnelView(d, _chassis(r), t, ofport)
    return {
        "switches": {d: SwitchView(d, _chassis(d), "br-int") for d in DPIDS},
        "chassis": {_chassis(d): ChassisView(_chassis(d), f"172.31.0.{d & 0xF}", d)
                    for d in DPIDS},
        "tunnels": tunnels,
        "provider_ports": {(d, "physnet1"): 90 for d in DPIDS[:2]},
        "bindings": {},
    }


# ---------------------------------------------------------------- steps
def port_step_for(index: Any) -> Any:
    return st.tuples(
        st.just("port"), index, st.integers(0, len(NETS) - 1),
        st.integers(1, 6),  # ip host part (collisions across networks on purpose)
        st.sampled_from([frozenset({0}), frozenset({1}), frozenset({0, 2}), frozenset()]),
        # the first choice is the one hypothesis favours: make it the rich one
        st.sampled_from([True, False]),  # port security
        st.sampled_from([True, True, True, False]),  # admin up
        st.sampled_from([None, 0, None, 1]),  # qos policy
        st.sampled_from(DPIDS + (None,)),  # bound where (None: left as it is)
    )


port_step = port_step_for(st.integers(0, N_PORTS - 1))
rule_step = st.tuples(
    st.just("rule"), st.integers(0, 7), st.integers(0, len(SGS) - 1),
    st.sampled_from(["ingress", "egress"]), st.sampled_from(["IPv4", "IPv6"]),
    st.sampled_from([None, "tcp", "udp", "icmp"]), st.sampled_from([None, 22, 80]),
    st.sampled_from([0, None, 1, 2]))
qos_rule_step = st.tuples(
    st.just("qos_rule"), st.integers(0, 3), st.integers(0, 1),
    st.sampled_from(["bandwidth_limit", "minimum_bandwidth", "dscp_marking"]),
    st.sampled_from(["egress", "ingress"]))
router_step = st.tuples(st.just("router"), st.integers(0, N_ROUTERS - 1),
                        st.sampled_from([True, True, False]),  # admin up
                        st.integers(0, len(EXTRA_ROUTES) - 1))
attach_step = st.tuples(st.just("attach"), st.integers(0, N_ROUTERS - 1),
                        st.integers(0, len(NETS) - 1))
# A populated start: ports on every switch, rules with and without remote groups, QoS,
# routers joining networks.
setup = st.tuples(st.tuples(*(port_step_for(st.just(i)) for i in range(N_PORTS - 2))),
                  st.lists(st.one_of(rule_step, qos_rule_step), min_size=2, max_size=8),
                  st.lists(st.one_of(router_step, attach_step), max_size=5))
steps = st.one_of(
    port_step,
    port_step,
    st.tuples(st.just("delete_port"), st.integers(0, N_PORTS - 1)),
    st.tuples(st.just("rename_port"), st.integers(0, N_PORTS - 1), st.text(max_size=3)),
    st.tuples(st.just("bind"), st.integers(0, N_PORTS - 1), st.sampled_from(DPIDS)),
    st.tuples(st.just("unbind"), st.integers(0, N_PORTS - 1)),
    st.tuples(st.just("network"), st.integers(0, len(NETS) - 1), st.booleans(),
              st.sampled_from([None, 0, 1]), st.integers(100, 103)),
    rule_step,
    st.tuples(st.just("delete_rule"), st.integers(0, 7)),
    qos_rule_step,
    st.tuples(st.just("delete_qos_rule"), st.integers(0, 3)),
    st.tuples(st.just("tunnel"), st.sampled_from(DPIDS), st.sampled_from(DPIDS),
              st.booleans()),
    router_step,
    st.tuples(st.just("delete_router"), st.integers(0, N_ROUTERS - 1)),
    attach_step,
    attach_step,
    st.tuples(st.just("detach"), st.integers(0, N_ROUTERS - 1), st.integers(0, len(NETS) - 1)),
    st.tuples(st.just("rename_subnet"), st.integers(0, len(NETS) - 1), st.text(max_size=3)),
    # Loom's DHCP on or off: the punt flows and meters of the subnet's ports
    st.tuples(st.just("subnet_dhcp"), st.integers(0, len(NETS) - 1), st.booleans()),
    st.tuples(st.just("provider"), st.sampled_from(DPIDS), st.booleans()),
)


class World:
    def __init__(self) -> None:
        self.generation = 1
        self.version = 1
        self.tables: dict[str, dict[str, Any]] = {a: {} for a in INTENT_ATTRS}
        self.tables["networks"] = {n.id: n for n in NETS}
        self.tables["security_groups"] = {g.id: g for g in SGS}
        self.tables["qos_policies"] = {p.id: p for p in POLICIES}
        self.tables["subnets"] = {s.id: s for s in SUBNETS}
        self.topo = base_topology()
        self.removed_tunnels: dict[tuple[int, str, str], TunnelView] = {}

    def intent(self) -> Intent:
        return Intent(generation=self.generation,
                      **{a: MappingProxyType(dict(t)) for a, t in self.tables.items()})

    def view(self) -> TopologyView:
        t = self.topo
        return TopologyView(self.version, MappingProxyType(dict(t["switches"])),
                            MappingProxyType(dict(t["bindings"])),
                            MappingProxyType(dict(t["chassis"])),
                            MappingProxyType(dict(t["tunnels"])),
                            MappingProxyType(dict(t["provider_ports"])))

    def apply(self, step: tuple) -> None:
        kind = step[0]
        ports = self.tables["ports"]
        if kind == "port":
            _, i, n, host, sgs, security, admin, policy, where = step
            net = NETS[n]
            pid = _id("port", i)
            old = ports.get(pid)
            if old is not None and old.network_id != net.id:
                net = NETS[[x.id for x in NETS].index(old.network_id)]  # no network moves
            ip = f"10.0.0.{host}" if host < 4 else f"10.0.{n}.{host}"
            if any(p.network_id == net.id and p.id != pid and p.fixed_ips[0].ip_address == ip
                   for p in ports.values()):
                return  # the API refuses an address in use on the network
            ports[pid] = Port(
                pid, net.project_id, net.id, f"p{i}", f"fa:16:3e:00:00:{i:02x}",
                (FixedIP(SUBNETS[NETS.index(net)].id, ip),),
                port_security_enabled=security,
                security_groups=tuple(SGS[s].id for s in sorted(sgs)) if security else (),
                admin_state_up=admin,
                qos_policy_id=None if policy is None else POLICIES[policy].id)
            if where is not None:
                self.topo["bindings"][pid] = Binding(pid, _chassis(where), "br-int", where,
                                                     10 + i, f"tap{i}")
        elif kind == "delete_port":
            ports.pop(_id("port", step[1]), None)
            self.topo["bindings"].pop(_id("port", step[1]), None)
        elif kind == "rename_port":
            pid = _id("port", step[1])
            if pid in ports:
                ports[pid] = dataclasses.replace(ports[pid], name=step[2],
                                                 revision_number=ports[pid].revision_number + 1)
        elif kind == "bind":
            pid, d = _id("port", step[1]), step[2]
            if pid in ports:
                self.topo["bindings"][pid] = Binding(pid, _chassis(d), "br-int", d,
                                                     10 + step[1], f"tap{step[1]}")
        elif kind == "unbind":
            self.topo["bindings"].pop(_id("port", step[1]), None)
        elif kind == "network":
            _, n, admin, policy, seg = step
            self.tables["networks"][NETS[n].id] = dataclasses.replace(
                NETS[n], admin_state_up=admin, segmentation_id=seg,
                qos_policy_id=None if policy is None else POLICIES[policy].id)
        elif kind == "rule":
            _, r, sg, direction, eth, proto, port_no, remote = step
            if proto not in ("tcp", "udp"):
                port_no = None
            if proto == "icmp" and eth == "IPv6":
                proto = "ipv6-icmp"
            self.tables["security_group_rules"][_id("rule", r)] = SecurityGroupRule(
                _id("rule", r), "p", SGS[sg].id, direction, eth, proto, port_no, port_no,
                remote_group_id=None if remote is None else SGS[remote].id)
        elif kind == "delete_rule":
            self.tables["security_group_rules"].pop(_id("rule", step[1]), None)
        elif kind == "qos_rule":
            _, r, policy, kind_, direction = step
            if kind_ == "dscp_marking":
                rule = QosRule(_id("qr", r), POLICIES[policy].id, kind_, dscp_mark=26)
            elif kind_ == "minimum_bandwidth":
                rule = QosRule(_id("qr", r), POLICIES[policy].id, kind_, min_kbps=2000,
                               direction="egress")
            else:
                rule = QosRule(_id("qr", r), POLICIES[policy].id, kind_, max_kbps=10000,
                               direction=direction)
            self.tables["qos_rules"][rule.id] = rule
        elif kind == "delete_qos_rule":
            self.tables["qos_rules"].pop(_id("qr", step[1]), None)
        elif kind == "router":
            _, r, admin, routes = step
            rid = _id("router", r)
            self.tables["routers"][rid] = Router(rid, "p", f"r{r}", admin_state_up=admin,
                                                 routes=EXTRA_ROUTES[routes])
        elif kind == "delete_router":
            rid = _id("router", step[1])
            if rid not in self.tables["routers"]:
                return
            del self.tables["routers"][rid]
            for n in range(len(NETS)):
                self._detach(step[1], n)
        elif kind == "attach":
            _, r, n = step
            rid = _id("router", r)
            riid = _id("ri", r * 10 + n)
            if rid not in self.tables["routers"] or riid in self.tables["router_interfaces"]:
                return
            net, sub = NETS[n], SUBNETS[n]
            pid = _id("rport", r * 10 + n)
            ports[pid] = Port(pid, net.project_id, net.id, "", f"fa:16:3e:0{r}:0{n}:fe",
                              (FixedIP(sub.id, f"10.0.{n}.{250 + r}"),),
                              port_security_enabled=False, device_id=rid,
                              device_owner="network:router_interface")
            self.tables["router_interfaces"][riid] = RouterInterface(riid, rid, pid, sub.id)
        elif kind == "detach":
            self._detach(step[1], step[2])
        elif kind == "rename_subnet":
            sub = self.tables["subnets"][SUBNETS[step[1]].id]
            self.tables["subnets"][sub.id] = dataclasses.replace(
                sub, name=step[2], revision_number=sub.revision_number + 1)
        elif kind == "subnet_dhcp":
            sub = self.tables["subnets"][SUBNETS[step[1]].id]
            self.tables["subnets"][sub.id] = dataclasses.replace(sub, enable_dhcp=step[2])
        elif kind == "provider":  # a chassis' patch to physnet1 comes or goes
            _, d, up = step
            if up:
                self.topo["provider_ports"][(d, "physnet1")] = 90
            else:
                self.topo["provider_ports"].pop((d, "physnet1"), None)
        elif kind == "tunnel":
            _, a, b, up = step
            if a == b:
                return
            for t in ("vxlan", "geneve"):
                key = (a, _chassis(b), t)
                if up and key in self.removed_tunnels:
                    self.topo["tunnels"][key] = self.removed_tunnels.pop(key)
                elif not up and key in self.topo["tunnels"]:
                    self.removed_tunnels[key] = self.topo["tunnels"].pop(key)
        self.generation += 1
        self.version += 1


    def _detach(self, r: int, n: int) -> None:
        self.tables["router_interfaces"].pop(_id("ri", r * 10 + n), None)
        self.tables["ports"].pop(_id("rport", r * 10 + n), None)


def intent_delta(old: Intent, new: Intent) -> IntentDelta:
    touched = {}
    for attr in INTENT_ATTRS:
        a, b = getattr(old, attr), getattr(new, attr)
        ids = frozenset(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if ids:
            touched[attr] = ids
    return IntentDelta(MappingProxyType(touched))


def topology_delta(old: TopologyView, new: TopologyView) -> TopologyDelta:
    def changed(a: Any, b: Any) -> set:
        return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}

    return TopologyDelta(
        bindings=frozenset(changed(old.bindings, new.bindings)),
        switches=frozenset(changed(old.switches, new.switches)),
        tunnels=frozenset(k[0] for k in changed(old.tunnels, new.tunnels)),
        provider_ports=frozenset(k[0] for k in changed(old.provider_ports,
                                                       new.provider_ports)),
        chassis=frozenset(changed(old.chassis, new.chassis)))


def assert_same(compiler: Compiler, intent: Intent, topo: TopologyView) -> None:
    full = compile_all(intent, topo)
    assert set(full) == set(compiler.switches)
    for dpid, want in full.items():
        got = compiler.desired(dpid)
        assert got is not None
        assert dict(got.flows) == dict(want.flows), f"switch {dpid:#x} flows differ"
        assert dict(got.groups) == dict(want.groups), f"switch {dpid:#x} groups differ"
        assert dict(got.meters) == dict(want.meters), f"switch {dpid:#x} meters differ"
        assert dict(got.shaping) == dict(want.shaping), f"switch {dpid:#x} shaping differs"
        assert set(got.port_keys) == set(want.port_keys)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup, st.lists(steps, min_size=1, max_size=30))
def test_incremental_equals_full_after_every_step(start: tuple, script: list[tuple]
                                                   ) -> None:
    world = World()
    for step in (*start[0], *start[1], *start[2]):
        world.apply(step)
    compiler = Compiler()
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    assert_same(compiler, intent, topo)
    for step in script:
        before = {d: compiler.desired(d) for d in DPIDS}
        world.apply(step)
        new_intent, new_topo = world.intent(), world.view()
        offers = compiler.update(new_intent, new_topo, intent_delta(intent, new_intent),
                                 topology_delta(topo, new_topo))
        intent, topo = new_intent, new_topo
        assert_same(compiler, intent, topo)
        for dpid in DPIDS:
            old, new = before[dpid], compiler.desired(dpid)
            assert old is not None and new is not None
            really = {k for k in set(old.flows) | set(new.flows)
                      if old.flows.get(k) != new.flows.get(k)}
            if dpid not in offers:
                assert new is old and not really
                continue
            keys = offers[dpid].changed_keys
            assert keys is not None, "an incremental step offered a full diff"
            assert really <= keys


def test_a_rename_touches_no_switch() -> None:
    world = World()
    compiler = Compiler()
    for step in [("port", 0, 0, 1, frozenset({0}), True, True, None, None), ("bind", 0, DPIDS[0]),
                 ("port", 1, 0, 2, frozenset({0}), True, True, None, None), ("bind", 1, DPIDS[1])]:
        world.apply(step)
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    world.apply(("rename_port", 0, "web-1"))
    new_intent, new_topo = world.intent(), world.view()
    evaluated = compiler.units_evaluated
    offers = compiler.update(new_intent, new_topo, intent_delta(intent, new_intent),
                             topology_delta(topo, new_topo))
    assert offers == {}
    assert compiler.units_evaluated == evaluated


def test_one_port_change_evaluates_what_it_touches_not_the_fleet() -> None:
    """50 ports bound on three switches; binding one more evaluates a handful of units."""
    world = World()
    compiler = Compiler()
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    for i in range(N_PORTS - 1):
        world.apply(("port", i, i % 2, i + 1, frozenset({0}), True, True, None, None))
        world.apply(("bind", i, DPIDS[i % 3]))
    world.apply(("rule", 0, 0, "ingress", "IPv4", "tcp", 22, 0))
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    world.apply(("port", N_PORTS - 1, 0, 9, frozenset({0}), True, True, None, None))
    world.apply(("bind", N_PORTS - 1, DPIDS[0]))
    new_intent, new_topo = world.intent(), world.view()
    evaluated = compiler.units_evaluated
    offers = compiler.update(new_intent, new_topo, intent_delta(intent, new_intent),
                             topology_delta(topo, new_topo))
    assert compiler.incremental_compiles == 1
    # its port, pipeline, network, group and member units here; its netport and member
    # units where the network and the group are
    assert compiler.units_evaluated - evaluated <= 12
    assert set(offers) <= set(DPIDS)
    assert_same(compiler, new_intent, new_topo)


def test_a_provider_patch_coming_or_going_updates_the_other_switches() -> None:
    """A remote port on a VLAN or flat network is reached over the physical network only
    where both chassis have the patch: when one chassis' patch goes (or comes back),
    the other switches drop (or add) their flows towards its ports."""
    for n in (2, 3):  # the VLAN network, the flat one
        world = World()
        compiler = Compiler()
        world.apply(("port", 0, n, 1, frozenset(), True, True, None, DPIDS[0]))
        world.apply(("port", 1, n, 2, frozenset(), True, True, None, DPIDS[1]))
        intent, topo = world.intent(), world.view()
        compiler.update(intent, topo, None, None)
        for step in [("provider", DPIDS[1], False), ("provider", DPIDS[1], True),
                     ("provider", DPIDS[0], False)]:
            world.apply(step)
            new_intent, new_topo = world.intent(), world.view()
            compiler.update(new_intent, new_topo, intent_delta(intent, new_intent),
                            topology_delta(topo, new_topo))
            intent, topo = new_intent, new_topo
            assert_same(compiler, intent, topo)
        assert compiler.incremental_compiles == 3
