"""Which pairs of ports gain or lose reachability with a change: a differential
reachability check (after Batfish's), run on Loom's own compiled tables.

The ports a change can affect are found from the flows it changes (the port a flow
belongs to, the ports its match names on its switch, the ports of a network or
router it belongs to), never by looking through every port. Each is paired with
the ports it could talk to (its network's, and those of the networks a router joins
to it), both ways. For every pair, protocol and address family, the simulator sends
the first packet of a connection before and after the change, and, when it arrives,
the reply: "allowed" (both arrive), "one-way" (the reply does not), "denied".

TCP and UDP ports are not tried one by one: the security-group rules of the two
ends (before and after) cut 1-65535 into ranges on which every rule agrees, and one
port per range is tried; adjacent ranges with the same outcome are reported as one.
ICMP is tried as an echo request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from controller import pipeline as pl
from controller.compiler.acl import ETH_ARP, ETH_IPV4, ETH_IPV6, IPPROTO
from controller.compiler.routing import ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST
from controller.explain.trace import ICMPV6_ECHO_REQUEST
from controller.flows import ip4, ip6, mac
from controller.intent import Intent, Port
from controller.simulate.conntrack import L4
from controller.simulate.fleet import Fleet
from controller.topology import TopologyView

PROTOCOLS = ("tcp", "udp", "icmp")
IP_PROTO = {p: IPPROTO[p] for p in PROTOCOLS}
ICMPV6_ECHO_REPLY = 129
ICMP_ECHO = {4: (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
             6: (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)}  # request, reply
SOURCE_PORT = 33000
MAX_TOUCHED = 64  # ports a change is checked for
MAX_PAIRS = 512  # port pairs (each way counts once)
_FLOOD_PRIORITIES = frozenset(
    v for k, v in pl.L2_LOOKUP.priorities.items() if k.startswith("flood"))
_INFRA = ("network:router", "network:dhcp", "network:floatingip")


@dataclass(frozen=True)
class Verdict:
    outcome: str  # allowed | one-way | denied
    why: Optional[str] = None  # denied / one-way: the table and priority that stopped it


def _addresses(port: Port, version: int) -> list[str]:
    return [f.ip_address for f in port.fixed_ips
            if ipaddress.ip_address(f.ip_address).version == version]


def endpoints(port: Port) -> bool:
    return not port.device_owner.startswith(_INFRA)


def peers_of(intent: Intent, port: Port, topo: TopologyView) -> list[Port]:
    """The ports `port` could talk to: its network's and the routed networks', bound
    to a switch (a plan changes no binding: an unbound port reaches nothing before
    and after)."""
    from controller.explain.tracer import routed_networks

    nets = {port.network_id} | routed_networks(intent, port.network_id)
    return [p for n in sorted(nets) for p in intent.ports_on_network(n)
            if p.id != port.id and endpoints(p) and p.id in topo.bindings]


def port_segments(rules: Iterable[Any], protocol: str) -> list[tuple[int, int]]:
    """1-65535 cut where any of `rules` (for `protocol` or any protocol) starts or ends."""
    cuts = {1, 65536}
    for rule in rules:
        if rule.protocol not in (protocol, str(IP_PROTO[protocol])) or \
                rule.port_range_min is None:
            continue
        low = rule.port_range_min
        high = rule.port_range_max if rule.port_range_max is not None else low
        cuts.update((max(1, low), min(65536, high + 1)))
    edges = sorted(cuts)
    return [(edges[i], edges[i + 1] - 1) for i in range(len(edges) - 1)]


def first_packet(intent: Intent, src: Port, dst: Port, version: int, protocol: str,
                 dst_port: Optional[int]) -> Optional[dict[str, int]]:
    """The first packet of a connection from `src` to `dst`'s first address of
    `version`, as the guest sends it (to its gateway's MAC when `dst` is on another
    network). None: one of them has no such address, or no router joins them."""
    from controller.explain.tracer import gateway_mac

    srcs, dsts = _addresses(src, version), _addresses(dst, version)
    if not srcs or not dsts:
        return None
    eth_dst = dst.mac_address
    if dst.network_id != src.network_id:
        gw = gateway_mac(intent, src, srcs[0])
        if gw is None:
            return None
        eth_dst = gw
    pkt = {"eth_src": mac(src.mac_address), "eth_dst": mac(eth_dst), "vlan_vid": 0,
           "nw_ttl": 64, "ip_dscp": 0, "ip_proto": IP_PROTO[protocol]}
    if version == 4:
        pkt.update(eth_type=ETH_IPV4, ipv4_src=ip4(srcs[0]), ipv4_dst=ip4(dsts[0]))
    else:
        pkt.update(eth_type=ETH_IPV6, ipv6_src=ip6(srcs[0]), ipv6_dst=ip6(dsts[0]))
    if protocol == "icmp":
        request, _ = ICMP_ECHO[version]
        if version == 4:
            pkt.update(icmpv4_type=request, icmpv4_code=0)
        else:
            pkt.update(ip_proto=IPPROTO["icmpv6"], icmpv6_type=request, icmpv6_code=0)
    else:
        names = L4[IP_PROTO[protocol]]
        pkt.update({names[0]: SOURCE_PORT, names[1]: dst_port or 1})
    return pkt


def reply_to(received: Mapping[str, int]) -> dict[str, int]:
    """The answer to a packet as it arrived: addresses, MACs and ports swapped."""
    pkt = {k: v for k, v in received.items() if k in _HEADER}
    pkt["eth_src"], pkt["eth_dst"] = received["eth_dst"], received["eth_src"]
    for a, b in (("ipv4_src", "ipv4_dst"), ("ipv6_src", "ipv6_dst"),
                 *(L4[p] for p in L4)):
        if a in received:
            pkt[a], pkt[b] = received[b], received[a]
    pkt["nw_ttl"] = 64
    if "icmpv4_type" in received:
        pkt["icmpv4_type"] = ICMP_ECHO[4][1]
    if "icmpv6_type" in received:
        pkt["icmpv6_type"] = ICMP_ECHO[6][1]
    return pkt


_HEADER = frozenset({"eth_src", "eth_dst", "eth_type", "vlan_vid", "nw_ttl", "ip_dscp",
                     "ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "tcp_src",
                     "tcp_dst", "udp_src", "udp_dst", "icmpv4_type", "icmpv4_code",
                     "icmpv6_type", "icmpv6_code"})


def connect(fleet: Fleet, topo: TopologyView, packet: Optional[dict[str, int]],
            src: Port, dst: Port) -> Verdict:
    """Send the first packet from `src` and, if it reaches `dst`, the reply."""
    a, b = topo.bindings.get(src.id), topo.bindings.get(dst.id)
    if packet is None or a is None or b is None:
        return Verdict("denied", "no address, route or binding")
    conntracks: dict = {}
    out = fleet.send(a.datapath_id, a.ofport, packet, conntracks)
    got = out.delivered_to(b.datapath_id, b.ofport)
    if got is None:
        return Verdict("denied", _stopped_at(out))
    back = fleet.send(b.datapath_id, b.ofport, reply_to(got.packet), conntracks)
    if back.delivered_to(a.datapath_id, a.ofport) is None:
        return Verdict("one-way", _stopped_at(back))
    return Verdict("allowed")


def _stopped_at(out: Any) -> Optional[str]:
    if not out.hits:
        return None
    from controller.explain.trace import priority_name

    _, flow = out.hits[-1]
    return f"{flow.table} {priority_name(flow.table, flow.priority)}"


@dataclass(frozen=True)
class End:
    """One end of a checked pair: a port, or the outside (seen through a floating IP)."""

    label: str
    view: Mapping[str, Any]

    @staticmethod
    def of(port: Port) -> End:
        return End(port.name or port.id, {"port": port.id, "name": port.name or None,
                                          "project_id": port.project_id})

    @staticmethod
    def outside(via: Optional[str] = None, port: Optional[int] = None) -> End:
        label = OUTSIDE if via is None else \
            f"{OUTSIDE} via {via}" + ("" if port is None else f":{port}")
        view: dict[str, Any] = {"outside": OUTSIDE}
        if via is not None:
            view["via"] = via if port is None else f"{via}:{port}"
        return End(label, view)


@dataclass(frozen=True)
class Change:
    src: End
    dst: End
    ethertype: str
    protocol: str
    ports: Optional[tuple[int, int]]
    before: Verdict
    after: Verdict

    def view(self) -> dict[str, Any]:
        what = self.protocol if self.ports is None else (
            f"{self.protocol}/{self.ports[0]}" if self.ports[0] == self.ports[1]
            else f"{self.protocol}/{self.ports[0]}-{self.ports[1]}")
        out: dict[str, Any] = {
            "from": dict(self.src.view), "to": dict(self.dst.view),
            "ethertype": self.ethertype, "protocol": self.protocol,
            "port_range": None if self.ports is None else list(self.ports),
            "before": self.before.outcome, "after": self.after.outcome,
            "text": f"{self.src.label} → {self.dst.label} "
                    f"{what}: {self.before.outcome} → {self.after.outcome}",
        }
        why = self.after.why if self.after.outcome != "allowed" else self.before.why
        if why:
            out["stopped_by"] = why
        return out


class Rules:
    """Security-group rules by group, indexed once per intent a plan looks at (not
    once per pair: a pair looks at its two ends' groups only)."""

    def __init__(self) -> None:
        self._by_intent: dict[int, tuple[Intent, dict[str, list[Any]]]] = {}

    def of(self, intent: Intent, port: Port, direction: str) -> list[Any]:
        held = self._by_intent.get(id(intent))
        if held is None or held[0] is not intent:
            index: dict[str, list[Any]] = {}
            for rule in intent.security_group_rules.values():
                index.setdefault(rule.security_group_id, []).append(rule)
            held = (intent, index)
            self._by_intent[id(intent)] = held
        return [r for sg in port.security_groups for r in held[1].get(sg, ())
                if r.direction == direction]


# (state: 0 before, 1 after; IP version; protocol; destination port) -> the verdict
Probe = Callable[[int, int, str, Optional[int]], Verdict]


def _compare(src: End, dst: End, versions: Iterable[int], rules: list[Any], probe: Probe,
             protocols: Iterable[str] = PROTOCOLS, only_port: Optional[int] = None
             ) -> tuple[list[Change], int]:
    """Each protocol (TCP and UDP per range of destination ports on which `rules`
    agree, or `only_port`), before and after: the ranges whose verdict changes, the
    adjacent ones with the same change as one; and the probes it took."""
    changes: list[Change] = []
    probes = 0
    for version in versions:
        ethertype = f"IPv{version}"
        for protocol in protocols:
            segments: list[Optional[tuple[int, int]]]
            if protocol == "icmp":
                segments = [None]
            elif only_port is not None:
                segments = [(only_port, only_port)]
            else:
                segments = list(port_segments(rules, protocol))
            run: Optional[Change] = None
            for seg in segments:
                was, now = (probe(state, version, protocol, None if seg is None else seg[0])
                            for state in (0, 1))
                probes += 2
                if was.outcome == now.outcome:
                    if run is not None:
                        changes.append(run)
                        run = None
                    continue
                if run is not None and seg is not None and run.ports is not None and \
                        (run.before.outcome, run.after.outcome) == (was.outcome, now.outcome):
                    run = Change(src, dst, ethertype, protocol, (run.ports[0], seg[1]),
                                 run.before, run.after)
                    continue
                if run is not None:
                    changes.append(run)
                run = Change(src, dst, ethertype, protocol, seg, was, now)
            if run is not None:
                changes.append(run)
    return changes, probes


def pair_changes(before: tuple[Intent, Fleet], after: tuple[Intent, Fleet],
                 topo: TopologyView, src_id: str, dst_id: str,
                 rules_of: Optional[Rules] = None) -> tuple[list[Change], int]:
    """What changes between `src_id` and `dst_id` (one way), and the probes it took."""
    states = (before, after)
    ends = [(intent.ports.get(src_id), intent.ports.get(dst_id)) for intent, _ in states]
    src = ends[1][0] or ends[0][0]
    dst = ends[1][1] or ends[0][1]
    assert src is not None and dst is not None
    index = rules_of or Rules()
    rules = [r for (intent, _), (s, d) in zip(states, ends, strict=True)
             for r in ((index.of(intent, s, "egress") if s else [])
                       + (index.of(intent, d, "ingress") if d else []))]

    def probe(state: int, version: int, protocol: str, port: Optional[int]) -> Verdict:
        (intent, fleet), (s, d) = states[state], ends[state]
        if s is None or d is None:
            return Verdict("denied", "no such port")
        return connect(fleet, topo, first_packet(intent, s, d, version, protocol, port), s, d)

    versions = [v for v in (4, 6) if _addresses(src, v) and _addresses(dst, v)]
    return _compare(End.of(src), End.of(dst), versions, rules, probe)


# ---------------------------------------------------------------- the outside
OUTSIDE = "203.0.113.10"  # a host beyond the upstream router (TEST-NET-3)
OUTSIDE_MAC = "02:00:00:cb:71:0a"  # its frames' source when no upstream MAC is known


def _external(intent: Intent, network_id: str) -> Optional[tuple[str, int]]:
    """(physical network, tag) of an external network a packet can come in by."""
    from controller.compiler.overlay import physnet_of, provider_tag

    net = intent.networks.get(network_id)
    physnet = None if net is None else physnet_of(net)
    if net is None or physnet is None:
        return None
    return physnet, provider_tag(net)


def _upstream_mac(topo: TopologyView, intent: Intent, network_id: str) -> int:
    net = intent.networks.get(network_id)
    if net is not None:
        for (key, _), hw in sorted(topo.mac_bindings.items()):
            if key == net.key:
                return hw
    return mac(OUTSIDE_MAC)


def answerer(fleet: Fleet, physnet: str, tag: int, address: str, asker: int
             ) -> Optional[tuple[int, int]]:
    """(switch, MAC) that answers ARP for `address` on the physical network: where a
    frame to it is delivered (the physical network learns where that MAC is)."""
    arp = {"eth_src": asker, "eth_dst": (1 << 48) - 1, "vlan_vid": tag, "eth_type": ETH_ARP,
           "arp_op": 1, "arp_spa": ip4(OUTSIDE), "arp_tpa": ip4(address), "arp_sha": asker,
           "arp_tha": 0}
    out = fleet.from_physnet(physnet, arp)
    for ex in out.exits:
        pkt = ex.packet
        if pkt.get("arp_op") == 2 and pkt.get("arp_spa") == ip4(address):
            return ex.datapath_id, pkt["arp_sha"]
    return None


def _to_outside(intent: Intent, fleet: Fleet, topo: TopologyView, port: Port,
                protocol: str, dst_port: Optional[int]) -> Verdict:
    """The port opens a connection to a host beyond the upstream router (SNAT, or its
    floating IP): it leaves by a provider patch, and the answer comes back in."""
    from controller.explain.tracer import gateway_mac

    b = topo.bindings.get(port.id)
    srcs = _addresses(port, 4)
    if b is None or not srcs:
        return Verdict("denied", "no address or binding")
    gw = gateway_mac(intent, port, srcs[0])
    if gw is None:
        return Verdict("denied", "no router on the port's subnet")
    pkt = _ip_packet(mac(port.mac_address), mac(gw), ip4(srcs[0]), ip4(OUTSIDE), protocol,
                     dst_port)
    cts: dict = {}
    out = fleet.send(b.datapath_id, b.ofport, pkt, cts)
    left = next((e for e in out.exits if e.packet.get("ipv4_dst") == ip4(OUTSIDE)), None)
    if left is None:
        return Verdict("denied", _stopped_at(out))
    back = fleet.from_physnet(left.physnet, reply_to(left.packet), cts,
                              only=left.datapath_id)
    if back.delivered_to(b.datapath_id, b.ofport) is None:
        return Verdict("one-way", _stopped_at(back))
    return Verdict("allowed")


def _from_outside(intent: Intent, fleet: Fleet, topo: TopologyView, port: Port,
                  network_id: str, address: str, protocol: str,
                  dst_port: Optional[int]) -> Verdict:
    """A host beyond the upstream router opens a connection to `address` (a floating
    IP, or one with a port forwarding) and it reaches `port`; the answer goes back."""
    ext = _external(intent, network_id)
    b = topo.bindings.get(port.id)
    if ext is None or b is None:
        return Verdict("denied", "no physical network to come in by, or no binding")
    physnet, tag = ext
    asker = _upstream_mac(topo, intent, network_id)
    where = answerer(fleet, physnet, tag, address, asker)
    if where is None:
        return Verdict("denied", f"nothing answers ARP for {address}")
    dpid, hw = where
    pkt = _ip_packet(asker, hw, ip4(OUTSIDE), ip4(address), protocol, dst_port)
    pkt["vlan_vid"] = tag
    cts: dict = {}
    out = fleet.from_physnet(physnet, pkt, cts, only=dpid)
    got = out.delivered_to(b.datapath_id, b.ofport)
    if got is None:
        return Verdict("denied", _stopped_at(out))
    back = fleet.send(b.datapath_id, b.ofport, reply_to(got.packet), cts)
    if not any(e.packet.get("ipv4_src") == ip4(address)
               and e.packet.get("ipv4_dst") == ip4(OUTSIDE) for e in back.exits):
        return Verdict("one-way", _stopped_at(back))
    return Verdict("allowed")


def _ip_packet(src_mac: int, dst_mac: int, src: int, dst: int, protocol: str,
               dst_port: Optional[int]) -> dict[str, int]:
    pkt = {"eth_src": src_mac, "eth_dst": dst_mac, "vlan_vid": 0, "nw_ttl": 64,
           "ip_dscp": 0, "ip_proto": IP_PROTO[protocol], "eth_type": ETH_IPV4,
           "ipv4_src": src, "ipv4_dst": dst}
    if protocol == "icmp":
        pkt.update(icmpv4_type=ICMP_ECHO[4][0], icmpv4_code=0)
    else:
        names = L4[IP_PROTO[protocol]]
        pkt.update({names[0]: SOURCE_PORT, names[1]: dst_port or 1})
    return pkt


def _ways_out(intent: Intent, port: Port) -> bool:
    """Whether a router with an external gateway serves the port's network."""
    routers = {p.device_id for p in intent.ports_on_network(port.network_id)
               if p.device_owner == "network:router_interface"}
    return any((r := intent.routers.get(rid)) is not None and r.external_network_id
               for rid in routers)


def outside_changes(before: tuple[Intent, Fleet], after: tuple[Intent, Fleet],
                    topo: TopologyView, port_id: str,
                    rules_of: Optional[Rules] = None) -> tuple[list[Change], int]:
    """What changes between the port and the outside: its connections out (through
    SNAT or its floating IP), and in through each of its floating IPs and port
    forwardings (before or after)."""
    states = (before, after)
    ports = [intent.ports.get(port_id) for intent, _ in states]
    port = ports[1] or ports[0]
    assert port is not None
    index = rules_of or Rules()
    changes: list[Change] = []
    probes = 0
    if any(p is not None and _ways_out(intent, p)
           for (intent, _), p in zip(states, ports, strict=True)):
        rules = [r for (intent, _), p in zip(states, ports, strict=True) if p is not None
                 for r in index.of(intent, p, "egress")]

        def out(state: int, version: int, protocol: str, dport: Optional[int]) -> Verdict:
            (intent, fleet), p = states[state], ports[state]
            if p is None:
                return Verdict("denied", "no such port")
            return _to_outside(intent, fleet, topo, p, protocol, dport)

        found, n = _compare(End.of(port), End.outside(), (4,), rules, out)
        changes += found
        probes += n
    inbound: dict[tuple[str, Optional[str], Optional[int]], str] = {}
    for intent, _ in states:  # (address, protocol, port) -> its external network
        for fip in intent.floating_ips.values():
            if fip.port_id == port_id:
                inbound[(fip.floating_ip_address, None, None)] = fip.floating_network_id
        for pf in intent.port_forwardings.values():
            held = intent.floating_ips.get(pf.floatingip_id)
            if pf.internal_port_id == port_id and held is not None:
                inbound[(held.floating_ip_address, pf.protocol, pf.external_port)] = \
                    held.floating_network_id
    rules = [r for (intent, _), p in zip(states, ports, strict=True) if p is not None
             for r in index.of(intent, p, "ingress")]
    for (address, protocol, ext_port), network_id in sorted(
            inbound.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2] or 0)):

        def into(state: int, version: int, proto: str, dport: Optional[int],
                 address: str = address, network_id: str = network_id) -> Verdict:
            (intent, fleet), p = states[state], ports[state]
            if p is None:
                return Verdict("denied", "no such port")
            return _from_outside(intent, fleet, topo, p, network_id, address, proto, dport)

        found, n = _compare(End.outside(address, ext_port), End.of(port), (4,), rules, into,
                            PROTOCOLS if protocol is None else (protocol,), ext_port)
        changes += found
        probes += n
    return changes, probes


def diff(before: tuple[Intent, Fleet], after: tuple[Intent, Fleet], topo: TopologyView,
         touched: Iterable[str]) -> dict[str, Any]:
    """The reachability plan: every pair involving a touched port whose verdict
    changes (ports both ways, and the outside), and what was checked."""
    base, new = before[0], after[0]
    touched = sorted(set(touched))
    truncated = len(touched) > MAX_TOUCHED
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    checked: list[str] = []
    for pid in touched[:MAX_TOUCHED]:
        port = new.ports.get(pid) or base.ports.get(pid)
        if port is None or not endpoints(port) or pid not in topo.bindings:
            continue
        checked.append(pid)
        peers = {p.id: p for intent in (base, new) if pid in intent.ports
                 for p in peers_of(intent, intent.ports[pid], topo)}
        for peer in sorted(peers):
            for pair in ((pid, peer), (peer, pid)):
                if pair not in seen:
                    seen.add(pair)
                    pairs.append(pair)
    if len(pairs) > MAX_PAIRS:
        truncated = True
        pairs = pairs[:MAX_PAIRS]
    changes: list[Change] = []
    probes = 0
    rules = Rules()
    for pid in checked:
        found, n = outside_changes(before, after, topo, pid, rules)
        changes.extend(found)
        probes += n
    for src_id, dst_id in pairs:
        found, n = pair_changes(before, after, topo, src_id, dst_id, rules)
        changes.extend(found)
        probes += n
    return {"changes": [c.view() for c in changes], "ports_checked": touched[:MAX_TOUCHED],
            "pairs_checked": len(pairs), "probes": probes, "truncated": truncated}


def touched_ports(changed: Mapping[int, Iterable[Any]], base: Intent, after: Intent,
                  bound: Mapping[tuple[int, int], str],
                  owner_of: Callable[[Optional[int]], Any]) -> set[str]:
    """The ports whose reachability the changed flows (per switch) can move: the port a
    flow belongs to; the ports its match names by in_port or the output port register
    on its switch (`bound`: (switch, ofport) -> port id); every
    port of a network, router, floating IP or port forwarding it belongs to."""
    out: set[str] = set()
    owners_seen: set[int] = set()
    for dpid, flows in changed.items():
        for flow in flows:
            for f in flow.match:
                if f.field in ("in_port", pl.REG_OUT_PORT) and f.mask is None:
                    pid = bound.get((dpid, f.value))
                    if pid is not None:
                        out.add(pid)
            if flow.cookie in owners_seen:
                continue
            owners_seen.add(flow.cookie)
            owner = owner_of(flow.cookie)
            if not isinstance(owner, dict) or not owner.get("id"):
                continue
            if owner["kind"] == "network" and flow.table == "l2_lookup" and \
                    flow.priority in _FLOOD_PRIORITIES:
                continue  # a port joining or leaving the flood set: no unicast path moves
            out.update(_ports_of_owner(owner["kind"], owner["id"], base, after))
    return out


def _ports_of_owner(kind: str, object_id: str, base: Intent, after: Intent) -> set[str]:
    out: set[str] = set()
    for intent in (base, after):
        if kind == "port":
            out.add(object_id)
        elif kind == "network":
            out.update(p.id for p in intent.ports_on_network(object_id) if endpoints(p))
        elif kind == "router":
            nets = {intent.ports[ri.port_id].network_id
                    for ri in intent.router_interfaces.values()
                    if ri.router_id == object_id and ri.port_id in intent.ports}
            out.update(p.id for n in sorted(nets) for p in intent.ports_on_network(n)
                       if endpoints(p))
        elif kind == "floating_ip":
            fip = intent.floating_ips.get(object_id)
            if fip is not None and fip.port_id:
                out.add(fip.port_id)
        elif kind == "port_forwarding":
            pf = intent.port_forwardings.get(object_id)
            if pf is not None:
                out.add(pf.internal_port_id)
    return out
