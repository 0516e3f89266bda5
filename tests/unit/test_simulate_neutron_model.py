"""The pipeline simulator as the compiler's oracle (issue 15).

Random intents (two projects whose networks use the same addresses, ports spread
over three chassis joined by VXLAN tunnels, random security groups and rules) are
compiled by the real compiler; packets are run through the compiled tables of every
switch by `controller.simulate`; and each verdict is compared with a plain-Python
model of what Neutron's API promises:

- isolation: nothing crosses from one network to another without a router joining
  them (each project may have one, for its own two networks), whatever the
  addresses, even to a port holding the same IP in another project;
- port security: a packet from a port with port security on, with a source MAC or
  IP that is not the port's own, reaches no one;
- security groups: a connection passes when an egress rule of the sender's groups
  and an ingress rule of the receiver's groups allow it (protocol, port range or ICMP
  type, remote prefix, remote group members), a port without port security passes
  everything, and the reply of an allowed connection comes back (stateful).
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.compiler import compile_all
from controller.flows import ip4, mac
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
from controller.simulate.fleet import Fleet
from controller.simulate.reachability import connect, first_packet
from controller.simulate.switch import SwitchModel
from controller.topology import Binding, ChassisView, SwitchView, TopologyView, TunnelView

CHASSIS = ("hv1", "hv2", "hv3")
DPIDS = {name: 0x100 + i for i, name in enumerate(CHASSIS)}
PROJECTS = ("alpha", "beta")
PORTS = range(20, 40)  # the only ports rules name: ranges overlap often


def _id(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "sim-" + "-".join(map(str, parts))))


# ---------------------------------------------------------------- random intents
@dataclass(frozen=True)
class World:
    intent: Intent
    topo: TopologyView


rule_spec = st.fixed_dictionaries({
    "direction": st.sampled_from(("ingress", "egress")),
    "protocol": st.sampled_from((None, "tcp", "udp", "icmp")),
    "ports": st.one_of(st.none(), st.tuples(st.sampled_from(PORTS), st.integers(0, 6))),
    "remote": st.sampled_from(("any", "prefix", "host", "group")),
    "remote_group": st.integers(0, 2),
})
port_spec = st.fixed_dictionaries({
    "network": st.integers(0, 1),
    "chassis": st.sampled_from(CHASSIS),
    "security": st.sampled_from((True, True, True, False)),
    "groups": st.sets(st.integers(0, 2), min_size=1, max_size=2),
})
project_spec = st.fixed_dictionaries({
    "router": st.booleans(),  # a router joining the project's two networks
    "rules": st.lists(rule_spec, min_size=1, max_size=8),
    # as Neutron gives every new group: egress to anywhere
    "default_egress": st.lists(st.booleans(), min_size=3, max_size=3),
    "ports": st.lists(port_spec, min_size=1, max_size=4),
})


@st.composite
def worlds(draw: st.DrawFn) -> World:
    networks: dict[str, Network] = {}
    subnets: dict[str, Subnet] = {}
    ports: dict[str, Port] = {}
    groups: dict[str, SecurityGroup] = {}
    routers: dict[str, Router] = {}
    interfaces: dict[str, RouterInterface] = {}
    rules: dict[str, SecurityGroupRule] = {}
    bindings: dict[str, Binding] = {}
    ofports = dict.fromkeys(CHASSIS, 10)
    segment = 100
    for p, project in enumerate(PROJECTS):
        spec = draw(project_spec)
        sgs = [SecurityGroup(_id(project, "sg", i), project, f"{project}-sg{i}")
               for i in range(3)]
        groups.update((g.id, g) for g in sgs)
        nets = []
        for n in range(2):
            segment += 1
            net = Network(_id(project, "net", n), project, f"{project}-n{n}", "vxlan", segment)
            # the same addresses in every project: overlap is the point
            sub = Subnet(_id(project, "sub", n), project, net.id, f"s{n}", 4,
                         f"10.0.{n}.0/24", f"10.0.{n}.1")
            networks[net.id] = net
            subnets[sub.id] = sub
            nets.append((net, sub))
        for i, ps in enumerate(spec["ports"]):
            net, sub = nets[ps["network"]]
            security = ps["security"]
            port = Port(_id(project, "port", i), project, net.id, f"{project}-p{i}",
                        f"fa:16:3e:{p:02x}:{ps['network']:02x}:{i + 10:02x}",
                        (FixedIP(sub.id, f"10.0.{ps['network']}.{10 + i}"),),
                        port_security_enabled=security,
                        security_groups=tuple(sgs[g].id for g in sorted(ps["groups"]))
                        if security else ())
            ports[port.id] = port
            ofports[ps["chassis"]] += 1
            bindings[port.id] = Binding(port.id, ps["chassis"], "br-int", DPIDS[ps["chassis"]],
                                        ofports[ps["chassis"]], f"tap-{project}-{i}")
        if spec["router"]:
            router = Router(_id(project, "router"), project, f"{project}-r")
            routers[router.id] = router
            for n, (net, sub) in enumerate(nets):
                rport = Port(_id(project, "rport", n), project, net.id, "",
                             f"fa:16:3e:{p:02x}:{n:02x}:01", (FixedIP(sub.id, f"10.0.{n}.1"),),
                             port_security_enabled=False, device_id=router.id,
                             device_owner="network:router_interface")
                ports[rport.id] = rport
                ri = RouterInterface(_id(project, "ri", n), router.id, rport.id, sub.id)
                interfaces[ri.id] = ri
        own_ips = [f.ip_address for q in ports.values() if q.project_id == project
                   for f in q.fixed_ips]
        for r, rs in enumerate(spec["rules"]):
            low = high = None
            if rs["ports"] is not None and rs["protocol"] in ("tcp", "udp"):
                low, high = rs["ports"][0], rs["ports"][0] + rs["ports"][1]
            elif rs["ports"] is not None and rs["protocol"] == "icmp":
                low, high = (8, 0) if rs["ports"][1] % 2 == 0 else (0, None)
            prefix = group = None
            if rs["remote"] == "prefix":
                prefix = "10.0.0.0/24"
            elif rs["remote"] == "host" and own_ips:
                prefix = f"{own_ips[r % len(own_ips)]}/32"
            elif rs["remote"] == "group":
                group = sgs[rs["remote_group"]].id
            rule = SecurityGroupRule(
                _id(project, "rule", r), project, sgs[r % 3].id, rs["direction"], "IPv4",
                protocol=rs["protocol"], port_range_min=low, port_range_max=high,
                remote_ip_prefix=prefix, remote_group_id=group)
            rules[rule.id] = rule
        for g, wanted in enumerate(spec["default_egress"]):
            if wanted:
                rule = SecurityGroupRule(_id(project, "egress", g), project, sgs[g].id,
                                         "egress", "IPv4")
                rules[rule.id] = rule
    intent = Intent(1, networks=MappingProxyType(networks), subnets=MappingProxyType(subnets),
                    ports=MappingProxyType(ports), security_groups=MappingProxyType(groups),
                    security_group_rules=MappingProxyType(rules),
                    routers=MappingProxyType(routers),
                    router_interfaces=MappingProxyType(interfaces))
    tunnels = {}
    for here in CHASSIS:
        for j, there in enumerate(CHASSIS):
            if there != here:
                tunnels[(DPIDS[here], there, "vxlan")] = TunnelView(DPIDS[here], there, "vxlan",
                                                                   200 + j)
    topo = TopologyView(
        1, MappingProxyType({d: SwitchView(d, c, "br-int") for c, d in DPIDS.items()}),
        MappingProxyType(bindings),
        MappingProxyType({c: ChassisView(c, f"192.0.2.{i + 1}", DPIDS[c])
                          for i, c in enumerate(CHASSIS)}),
        MappingProxyType(tunnels))
    return World(intent, topo)


# ---------------------------------------------------------------- Neutron's promise
def _rule_allows(rule: SecurityGroupRule, intent: Intent, protocol: str,
                 dst_port: Optional[int], remote_ip: str) -> bool:
    if rule.ethertype != "IPv4":
        return False
    if rule.protocol is not None and rule.protocol != protocol:
        return False
    if rule.protocol in ("tcp", "udp") and rule.port_range_min is not None:
        high = rule.port_range_max if rule.port_range_max is not None else rule.port_range_min
        if dst_port is None or not rule.port_range_min <= dst_port <= high:
            return False
    if rule.protocol == "icmp" and rule.port_range_min is not None:
        if rule.port_range_min != 8:  # the probe is an echo request, type 8 code 0
            return False
        if rule.port_range_max is not None and rule.port_range_max != 0:
            return False
    if rule.remote_ip_prefix is not None and \
            ipaddress.ip_address(remote_ip) not in ipaddress.ip_network(rule.remote_ip_prefix):
        return False
    if rule.remote_group_id is not None:
        members = {f.ip_address for p in intent.ports.values()
                   if rule.remote_group_id in p.security_groups and p.port_security_enabled
                   for f in p.fixed_ips}
        if remote_ip not in members:
            return False
    return True


def joined(intent: Intent, src: Port, dst: Port) -> bool:
    """On one network, or on two networks with interfaces on one router."""
    if src.network_id == dst.network_id:
        return True
    routers_of = {net: {p.device_id for p in intent.ports.values() if p.network_id == net
                        and p.device_owner == "network:router_interface"}
                  for net in (src.network_id, dst.network_id)}
    return bool(routers_of[src.network_id] & routers_of[dst.network_id])


def guests(intent: Intent) -> list[Port]:
    return sorted((p for p in intent.ports.values() if not p.device_owner),
                  key=lambda p: p.id)


def neutron_outcome(intent: Intent, src: Port, dst: Port, protocol: str,
                    dst_port: Optional[int], src_ip: str, src_mac: str) -> str:
    """What Neutron's API promises for this connection: "allowed" (the first packet
    and its replies pass), or "denied"; and the one place Loom says less (README,
    limits): its routers deliver only to addresses ports hold (they send no ARP), so
    a guest without port security sending from another address is answered across a
    router by nobody: "one-way"."""
    if not joined(intent, src, dst):
        return "denied"
    if src.port_security_enabled and (
            src_mac != src.mac_address or src_ip not in {f.ip_address for f in src.fixed_ips}):
        return "denied"
    dst_ip = dst.fixed_ips[0].ip_address

    def side(port: Port, direction: str, remote_ip: str) -> bool:
        if not port.port_security_enabled:
            return True
        return any(_rule_allows(r, intent, protocol, dst_port, remote_ip)
                   for r in intent.security_group_rules.values()
                   if r.security_group_id in port.security_groups and r.direction == direction)

    if not (side(src, "egress", dst_ip) and side(dst, "ingress", src_ip)):
        return "denied"
    if src.network_id != dst.network_id and not any(
            f.ip_address == src_ip for p in intent.ports_on_network(src.network_id)
            for f in p.fixed_ips):
        return "one-way"
    return "allowed"


def _simulate(world: World, fleet: Fleet, src: Port, dst: Port, protocol: str,
              dst_port: Optional[int], src_ip: str, src_mac: str) -> str:
    pkt = first_packet(world.intent, src, dst, 4, protocol, dst_port)
    assert pkt is not None
    pkt["ipv4_src"], pkt["eth_src"] = ip4(src_ip), mac(src_mac)
    return connect(fleet, world.topo, pkt, src, dst).outcome


def _fleet(world: World) -> Fleet:
    desired = compile_all(world.intent, world.topo)
    return Fleet({d: SwitchModel(s) for d, s in desired.items()}, world.topo)


PROBES = (("tcp", 19), ("tcp", 22), ("tcp", 28), ("tcp", 40), ("udp", 22), ("udp", 33),
          ("icmp", None))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_security_groups_and_port_security_mean_what_neutron_says(world: World) -> None:
    fleet = _fleet(world)
    ports = guests(world.intent)
    for src in ports:
        for dst in ports:
            if src.id == dst.id or not joined(world.intent, src, dst):
                continue
            own_ip, own_mac = src.fixed_ips[0].ip_address, src.mac_address
            spoofed_ip = str(ipaddress.ip_address(own_ip) + 100)
            for protocol, dport in PROBES:
                for ip, hw in ((own_ip, own_mac), (spoofed_ip, own_mac),
                               (own_ip, "fa:16:3e:ee:ee:ee")):
                    want = neutron_outcome(world.intent, src, dst, protocol, dport, ip, hw)
                    got = _simulate(world, fleet, src, dst, protocol, dport, ip, hw)
                    assert got == want, (
                        f"{src.name} ({ip}, {hw}) -> {dst.name} {protocol}/{dport}: "
                        f"Neutron says {want}, the tables {got}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_no_packet_crosses_between_networks_or_projects(world: World) -> None:
    fleet = _fleet(world)
    ports = guests(world.intent)
    for src in ports:
        binding = world.topo.bindings[src.id]
        for dst in ports:
            if joined(world.intent, src, dst):
                continue
            # straight at the other port's MAC and address (the same address may be
            # the sender's own subnet's, in the other project), and flooded
            for eth_dst in (dst.mac_address, "ff:ff:ff:ff:ff:ff"):
                pkt = first_packet(world.intent, src, src, 4, "udp", 33)
                assert pkt is not None
                pkt.update(eth_dst=mac(eth_dst), ipv4_dst=ip4(dst.fixed_ips[0].ip_address))
                out = fleet.send(binding.datapath_id, binding.ofport, pkt)
                strays = [d.port_id for d in out.deliveries if d.port_id is not None and
                          not joined(world.intent, src, world.intent.ports[d.port_id])]
                assert not strays, f"{src.name} reached {strays}, on no network of its own"


def test_the_oracle_can_fail() -> None:
    """A hole a compiler bug could open (an allow-all flow above the ACL ladder of one
    port) is seen by the same comparison that passes above."""
    from controller import pipeline as pl
    from controller.compiler.core import DesiredSwitch
    from controller.flows import match

    project = "alpha"
    net = Network(_id("bug", "net"), project, "n", "vxlan", 7)
    sub = Subnet(_id("bug", "sub"), project, net.id, "s", 4, "10.0.0.0/24", "10.0.0.1")
    sg = SecurityGroup(_id("bug", "sg"), project, "closed")
    a, b = (Port(_id("bug", n), project, net.id, f"p{n}", f"fa:16:3e:00:00:0{n}",
                 (FixedIP(sub.id, f"10.0.0.{10 + n}"),), security_groups=(sg.id,))
            for n in (1, 2))
    intent = Intent(1, networks=MappingProxyType({net.id: net}),
                    subnets=MappingProxyType({sub.id: sub}),
                    ports=MappingProxyType({a.id: a, b.id: b}),
                    security_groups=MappingProxyType({sg.id: sg}))
    dpid = DPIDS["hv1"]
    topo = TopologyView(1, MappingProxyType({dpid: SwitchView(dpid, "hv1", "br-int")}),
                        MappingProxyType({p.id: Binding(p.id, "hv1", "br-int", dpid, 10 + i,
                                                        f"t{i}")
                                          for i, p in enumerate((a, b))}),
                        MappingProxyType({"hv1": ChassisView("hv1", "192.0.2.1", dpid)}))
    world = World(intent, topo)
    (desired,) = compile_all(intent, topo).values()
    fleet = Fleet({dpid: SwitchModel(desired)}, topo)
    ip, hw = a.fixed_ips[0].ip_address, a.mac_address
    assert neutron_outcome(intent, a, b, "tcp", 22, ip, hw) == "denied"
    assert _simulate(world, fleet, a, b, "tcp", 22, ip, hw) == "denied"
    hole = pl.INGRESS_ACL.flow("exempt", match(**{pl.REG_OUT_PORT: 11}), goto="qos")
    egress = pl.EGRESS_ACL.flow("exempt", match(in_port=10), goto="l3")
    holed = DesiredSwitch(dpid, desired.generation, desired.topology_version,
                          MappingProxyType({**desired.flows, hole.key: hole,
                                            egress.key: egress}),
                          desired.groups, desired.meters)
    fleet = Fleet({dpid: SwitchModel(holed)}, topo)
    assert _simulate(world, fleet, a, b, "tcp", 22, ip, hw) != "denied"


def test_a_fabric_carries_each_network_to_its_own_hosts_only() -> None:
    """Bare-metal hosts on a leaf-spine fabric (next-hop groups, fast-failover and
    select buckets, links between switches): a host reaches the hosts of its network
    on other leaves through the spines, and a frame to another network's host, known
    there only, is flooded within its own network and reaches no one else."""
    import dataclasses

    from test_compiler_fabric import leafspine

    _, _, hosts, intent, topo = leafspine()
    hosts = [dataclasses.replace(h, port_security_enabled=False) for h in hosts]
    intent = dataclasses.replace(intent, ports=MappingProxyType({p.id: p for p in hosts}))
    fleet = Fleet({d: SwitchModel(s) for d, s in compile_all(intent, topo).items()}, topo)
    h1, h2, h3, h4 = hosts  # h1-h3 on one network (leaves 201, 202, 203), h4 another (203)
    at = {h2.id: (0x202, 10), h3.id: (0x203, 10), h4.id: (0x203, 11)}
    for dst in (h2, h3, h4):
        pkt = first_packet(intent, h1, h2, 4, "udp", 53)
        assert pkt is not None
        pkt.update(eth_dst=mac(dst.mac_address), ipv4_dst=ip4(dst.fixed_ips[0].ip_address))
        reached = {(d.datapath_id, d.ofport) for d in fleet.send(0x201, 10, pkt).deliveries}
        if dst is h4:
            assert at[h4.id] not in reached and reached <= {at[h2.id], at[h3.id]}, reached
        else:
            assert at[dst.id] in reached, (dst.name, reached)
