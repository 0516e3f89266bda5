"""The OpenFlow pipeline, declared once, as data.

Every table number, priority, register and cookie layout Loom uses is named here
and nowhere else. `Table.flow()` is the only way to build a flow, and it refuses,
at build time, a match on a field the stage does not own or a jump to a table the
stage may not reach — Faucet's lesson (`ValveTable`), applied to every stage, so a
compiler bug shows up as an exception in a unit test instead of a silent hole in
tenant isolation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

from controller.flows import (
    Action,
    Conjunction,
    Ct,
    Flow,
    Match,
    Resubmit,
)

# ---------------------------------------------------------------- registers
# metadata carries the network key (intent.object_key of the network id, 48 bits)
# from classify onwards: everything after classify is scoped by it, which is what
# isolates tenants whose addresses overlap.
METADATA_NETWORK_MASK = (1 << 48) - 1
REG_OUT_PORT = "reg7"  # ofport chosen by l2_lookup, consumed by ingress_acl and output
REG_CT_ZONE = "reg6"  # conntrack zone of the packet's port (security groups)
REG_FLAGS = "reg5"  # per-packet flag bits, below
REG_NEXTHOP = "reg4"  # IPv4 next hop chosen by a route in l3, resolved to a MAC in l3_resolve
FLAG_FROM_REMOTE = 0x1  # arrived over a tunnel or provider link: never send it back out

# ---------------------------------------------------------------- cookies
# A cookie names the owner of a flow: kind in the top byte, the owner's 48-bit key
# in the low bits, so `cookie -> intent object` is a dictionary lookup.
COOKIE_KIND_SHIFT = 56
COOKIE_KEY_MASK = (1 << 48) - 1
# The key of the security groups' shared ladder (Owner.PIPELINE): tables' misses use
# their table id as key, so this one stays clear of any table id.
ACL_LADDER_KEY = 0xAC1


class Owner:
    PIPELINE = 0x01
    NETWORK = 0x02
    PORT = 0x03
    SECURITY_GROUP_RULE = 0x04
    ROUTER = 0x05
    FLOATING_IP = 0x06
    QOS_POLICY = 0x07
    TUNNEL = 0x08
    FABRIC = 0x09
    PORT_FORWARDING = 0x0A

    NAMES: Mapping[int, str] = {
        0x01: "pipeline",
        0x02: "network",
        0x03: "port",
        0x04: "security_group_rule",
        0x05: "router",
        0x06: "floating_ip",
        0x07: "qos_policy",
        0x08: "tunnel",
        0x09: "fabric",
        0x0A: "port_forwarding",
    }


def cookie(kind: int, key: int = 0) -> int:
    return (kind << COOKIE_KIND_SHIFT) | (key & COOKIE_KEY_MASK)


def cookie_owner(value: int) -> tuple[str, int]:
    """(owner kind name, owner key) of a cookie; ('unknown', value) if it is not ours."""
    kind = value >> COOKIE_KIND_SHIFT
    name = Owner.NAMES.get(kind)
    if name is None:
        return ("unknown", value)
    return (name, value & COOKIE_KEY_MASK)


# ---------------------------------------------------------------- tables
class PipelineError(ValueError):
    """A flow that breaks its stage's declaration: a compiler bug, never user input."""


@dataclass(frozen=True)
class Table:
    name: str
    table_id: int
    purpose: str
    match_fields: frozenset[str]
    next_tables: tuple[str, ...]  # goto_table targets; the first is the miss target
    miss_drops: bool  # True: a miss drops; False: a miss goes to next_tables[0]
    priorities: Mapping[str, int]
    resubmits: tuple[str, ...] = ()  # tables reachable by NX resubmit / ct(table=)

    def flow(
        self,
        priority: str,
        match: Match,
        actions: Iterable[Action] = (),
        goto: Optional[str] = None,
        write_metadata: Optional[tuple[int, int]] = None,
        meter: Optional[int] = None,
        cookie: int = 0,
    ) -> Flow:
        if priority not in self.priorities:
            raise PipelineError(f"{self.name}: no priority named {priority!r}")
        for mf in match:
            if mf.field not in self.match_fields:
                raise PipelineError(f"{self.name}: may not match {mf.field}")
        if goto is not None and goto not in self.next_tables:
            raise PipelineError(f"{self.name}: may not go to {goto}")
        acts = tuple(actions)
        conj = [a for a in acts if isinstance(a, Conjunction)]
        if conj and (len(conj) != len(acts) or goto is not None):
            raise PipelineError(f"{self.name}: a conjunction clause can do nothing else")
        for act in acts:
            target = act.table if isinstance(act, (Resubmit, Ct)) else None
            if target is not None and target not in self.resubmits:
                raise PipelineError(f"{self.name}: may not resubmit to {target}")
        return Flow(
            table=self.name,
            priority=self.priorities[priority],
            match=match,
            actions=acts,
            goto=goto,
            write_metadata=write_metadata,
            meter=meter,
            cookie=cookie,
        )

    def miss_flow(self) -> Flow:
        return Flow(
            table=self.name,
            priority=0,
            match=(),
            goto=None if self.miss_drops else self.next_tables[0],
            cookie=cookie(Owner.PIPELINE, self.table_id),
        )


_NET = frozenset({"metadata"})
_L2 = frozenset({"eth_src", "eth_dst", "eth_type", "vlan_vid"})
_L3 = frozenset({"ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ip_dscp"})
_TTL = frozenset({"nw_ttl"})
_L4 = frozenset({"tcp_src", "tcp_dst", "udp_src", "udp_dst", "icmpv4_type", "icmpv4_code",
                 "icmpv6_type", "icmpv6_code"})
_CT = frozenset({"ct_state", "ct_zone", "ct_mark", REG_CT_ZONE})
# Both ACL tables share one priority ladder (see controller/compiler/acl.py for why).
_ACL_PRIORITIES = {
    "exempt": 300,  # port security disabled: no filtering at all
    "neighbor": 250,  # ARP and IPv6 ND (already pinned by port_security)
    "track": 200,  # untracked IP: send through conntrack, come back here
    "invalid": 190,  # conntrack says invalid, or the connection was revoked
    "reply": 180,  # replies and related traffic of allowed connections
    "rule": 100,  # a rule with no remote group: commit and pass
    "rule_conj": 90,  # rules with a remote group: conjunctive clauses and conj_id
    "revoke": 20,  # an established connection no rule allows any more: mark it
    "default_deny": 10,  # everything else to or from a filtered port
}

CLASSIFY = Table(
    "classify", 0,
    "in_port / VLAN tag / tunnel key -> network in metadata; fabric detours pass; "
    "unknown -> drop",
    frozenset({"in_port", "vlan_vid", "vlan_pcp", "tunnel_id", "eth_type"}),
    ("port_security", "arp_responder", "l2_lookup"),
    miss_drops=True,
    priorities={"lldp": 500, "detour": 400,
                # ARP from the physical network on a router's gateway chassis: answered
                # for the gateway and floating addresses (arp_responder), the upstream
                # router's replies punted (l3: "gateway_arp")
                "gateway_arp": 150,
                "port": 100, "tunnel": 100, "vlan": 100, "fabric": 100},
    resubmits=("classify",),  # the end of a fabric detour, as if come in on the link
)
# Fabric next-hop groups (one per destination switch) live above the flood groups.
FABRIC_GROUP_BASE = 0x40000000
OFPP_CONTROLLER = 0xFFFFFFFD
# A connection allowed by a rule that has since been removed is marked in conntrack
# (as the Neutron OVS firewall does) so neither direction passes any more.
CT_MARK_REVOKED = 0x1
CT_ZONE_SPAN = 65000  # zones 1..65000 for networks; 0 and the top are left alone
METER_ID_SPAN = 60000  # per-port egress meters 1..60000
CONJ_ID_MASK = 0xFFFFFFFF  # conjunction ids (32 bits; 0 is never used)
# Flood groups (one per network and switch) live in their own id space; groups have
# no cookie in OpenFlow 1.3, so the id is derived from the owning network's key.
GROUP_ID_MASK = 0x3FFFFFFF
PORT_SECURITY = Table(
    "port_security", 10,
    "source MAC and IPs must be the port's own, ARP and ND included",
    frozenset({"in_port", "eth_src", "eth_type", "ipv4_src", "ipv6_src", "arp_spa",
               "arp_sha", "ip_proto", "icmpv6_type", "ipv6_nd_sll", "ipv6_nd_target",
               "ipv6_nd_tll", "udp_src", "udp_dst"}),
    ("arp_responder",),
    miss_drops=True,
    priorities={
        # a DHCPv4 client packet from the port's own MAC, on a subnet Loom serves:
        # to the controller through the port's punt meter (controller/dhcp.py), never
        # on to the network (no other guest ever sees it), whatever the port's
        # security groups say, and whether port security is on or off
        "dhcp_punt": 300,
        "dhcp6_punt": 295,  # the same for DHCPv6 (controller/dhcp6.py)
        # an IPv6 router solicitation from the port, on a subnet whose router Loom
        # advertises (ipv6_ra_mode): the same way up (controller/router_advert.py)
        "rs_punt": 290,
        "exempt": 200,
        # a DHCP (v4 or v6) server's reply sent by a guest (rogue server): dropped; so is
        # a router advertisement (a rogue router)
        "dhcp_server_drop": 150, "router_advert_drop": 140,
        # a neighbour advertisement: only for the port's own addresses, with its own MAC
        # (or none) as target link-layer address
        "nd_advert": 120, "nd_advert_drop": 110,
        "allow": 100, "drop": 10},
)
# Packets punted to the controller go through an OpenFlow meter (packets per second):
# one per port, so a guest flooding DHCP requests exhausts only its own budget, and one
# per switch for the upstream router's ARP on a gateway chassis. Their ids sit above the
# QoS meters' 1..METER_ID_SPAN: PUNT_METER_BASE + ofport (ofports stay below 0xFF00).
PUNT_METER_BASE = 0x10000
PUNT_METER_UPSTREAM_ARP = PUNT_METER_BASE + 0xFFFE
PUNT_RATE_PPS = 10
PUNT_BURST_PACKETS = 20
UPSTREAM_ARP_RATE_PPS = 100
UPSTREAM_ARP_BURST_PACKETS = 200


def punt_meter_id(ofport: int) -> int:
    """The punt meter of the port at `ofport` (controller/compiler/ports.py)."""
    return PUNT_METER_BASE + ofport


def is_punt_meter(meter_id: int) -> bool:
    return PUNT_METER_BASE < meter_id <= PUNT_METER_UPSTREAM_ARP


def is_port_punt_meter(meter_id: int) -> bool:
    """A port's own punt meter (not the upstream ARP one)."""
    return PUNT_METER_BASE < meter_id < PUNT_METER_UPSTREAM_ARP
ARP_RESPONDER = Table(
    "arp_responder", 20,
    "answer ARP, and IPv6 neighbour solicitations sent to a solicited-node address, "
    "for addresses the controller knows, on the local switch (never flooded, never "
    "over a tunnel); duplicate address detection and unicast (reachability) "
    "solicitations pass on",
    _NET | frozenset({"eth_type", "arp_op", "arp_tpa", "ip_proto", "icmpv6_type",
                      "ipv6_src", "ipv6_dst", "ipv6_nd_target"}),
    ("egress_acl",),
    miss_drops=False,
    priorities={"dad": 110, "reply": 100},
    resubmits=("nd_reply",),
)
ND_REPLY = Table(
    "nd_reply", 25,
    "the second half of a neighbour advertisement built in arp_responder: its target "
    "link-layer address from its (rewritten) source MAC, then back out of the asking "
    "port (OVS sets nd_tll only on a packet that is already an advertisement)",
    frozenset({"eth_type", "ip_proto", "icmpv6_type"}),
    (),
    miss_drops=True,
    priorities={"reply": 100},
)
EGRESS_ACL = Table(
    "egress_acl", 30,
    "security groups, VM -> network direction, conntrack",
    _NET | _L2 | _L3 | _L4 | _CT | frozenset({"in_port", "conj_id"}),
    ("l3",),
    miss_drops=False,
    priorities=_ACL_PRIORITIES,
    resubmits=("egress_acl",),
)
ROUTE_PREFIX_MAX = 32  # IPv4


def route_priority(prefixlen: int) -> str:
    """The name of the l3 priority of a route to a /prefixlen: longest prefix first."""
    if not 0 <= prefixlen <= ROUTE_PREFIX_MAX:
        raise PipelineError(f"no IPv4 prefix length {prefixlen}")
    return f"route/{prefixlen}"


L3 = Table(
    "l3", 40,
    "routers, distributed: a packet to a router's MAC is answered (echo to the router's "
    "own addresses), dropped (TTL <= 1), or routed (longest prefix first: TTL - 1, "
    "source MAC, network and conntrack zone of the next network, next hop in "
    "REG_NEXTHOP, on to l3_resolve); anything else to a router's MAC drops; the rest "
    "passes to l2_lookup",
    _NET | _L2 | _L3 | _L4 | _CT | _TTL,
    ("l2_lookup", "snat", "l3_resolve"),
    miss_drops=False,
    priorities={
        # ARP to a router's gateway MAC from the physical network (the upstream router's
        # replies): copied to the controller, which learns the upstream's MAC
        "gateway_arp": 350,
        "echo": 300,  # ICMP echo request to one of the router's addresses: answered here
        "ttl_expired": 250,  # TTL 0 or 1 to a router's MAC: never forwarded, never punted
        # the routes: 100 + prefix length, so the longest prefix wins
        **{route_priority(n): 100 + n for n in range(ROUTE_PREFIX_MAX + 1)},
        # from the external network to a router's gateway MAC (gateway chassis only):
        # port forwarding, floating IP DNAT, then un-SNAT of the replies
        "dnat_port": 60, "dnat": 50, "unsnat": 40,
        "router_mac": 10,  # to a router's MAC and not routed (no route): drop, never flood
    },
    resubmits=("l3", "unnat"),
)
SNAT = Table(
    "snat", 42,
    "leaving through a router's external gateway: source NAT in the router's own "
    "conntrack zone to the port's floating IP (on the chassis its NAT runs on), else "
    "to the gateway address (enable_snat; gateway chassis), then on to l3_resolve on "
    "the external network; elsewhere the frame goes on to the gateway chassis "
    "(transit, through l2_lookup)",
    _NET | frozenset({"eth_dst", "eth_type", "ipv4_src"}),
    ("l3_resolve", "l2_lookup"),
    miss_drops=True,
    priorities={"fip": 200, "snat": 100, "transit": 90},
    resubmits=("l3_resolve",),
)
UNNAT = Table(
    "unnat", 43,
    "come in through a router's external gateway, after conntrack's un-SNAT or DNAT "
    "in the router's zone: routed into the internal subnet the destination is on; "
    "anything else (no connection, no floating IP) drops",
    _NET | frozenset({"eth_dst", "eth_type", "ipv4_dst"}),
    ("l3_resolve",),
    miss_drops=True,
    priorities={"route": 100},
)
L3_RESOLVE = Table(
    "l3_resolve", 45,
    "routed packets: next hop (REG_NEXTHOP) on the network they were routed into -> "
    "that port's MAC as destination, then l2_lookup as any packet of that network; "
    "unknown next hop -> drop",
    _NET | frozenset({REG_NEXTHOP}),
    ("l2_lookup",),
    miss_drops=True,
    # "upstream": on an external network, a next hop no flow names (a host of the
    # external subnet) goes to the upstream router, which delivers it on its link
    priorities={"resolve": 100, "upstream": 50},
)
L2_LOOKUP = Table(
    "l2_lookup", 50,
    "destination MAC -> local port, fabric next hop or tunnel; BUM -> flood set",
    _NET | frozenset({"eth_dst", "vlan_vid", REG_FLAGS}),
    ("ingress_acl",),
    miss_drops=True,
    priorities={
        # an 802.1Q-tagged frame on a flat network (a guest's own tag): drop, never
        # onto the physical network, where its tag would make it another network's
        "tagged": 200,
        "known_mac": 100, "remote_mac": 100,
        # to a router's MAC from elsewhere: towards the router's gateway chassis, or,
        # there, back to l3 (routing.py, gateway.py)
        "router": 100,
        "flood_from_remote": 20, "flood": 10,
    },
    resubmits=("ingress_acl", "l3"),
)
INGRESS_ACL = Table(
    "ingress_acl", 60,
    "security groups, network -> VM direction, conntrack",
    _NET | _L2 | _L3 | _L4 | _CT | frozenset({REG_OUT_PORT, "conj_id"}),
    ("qos",),
    miss_drops=False,
    priorities=_ACL_PRIORITIES,
    resubmits=("ingress_acl",),
)
QOS = Table(
    "qos", 70,
    "meters sharing a limited port between guaranteed senders",
    # a remote sender: the tunnel it comes through (in_port), its network (metadata)
    # and its source MAC
    _NET | frozenset({REG_OUT_PORT, "in_port", "eth_src"}),
    ("output",),
    miss_drops=False,
    priorities={"guarantee": 100, "guarantee_any_link": 90, "shared": 50},
)
OUTPUT = Table(
    "output", 80,
    "deliver to the port chosen by l2_lookup",
    frozenset({REG_OUT_PORT}),
    (),
    miss_drops=True,
    priorities={"deliver": 100},
)

PIPELINE: tuple[Table, ...] = (
    CLASSIFY, PORT_SECURITY, ARP_RESPONDER, ND_REPLY, EGRESS_ACL, L3, SNAT, UNNAT,
    L3_RESOLVE, L2_LOOKUP, INGRESS_ACL, QOS, OUTPUT,
)
TABLES: Mapping[str, Table] = {t.name: t for t in PIPELINE}
TABLE_IDS: Mapping[str, int] = {t.name: t.table_id for t in PIPELINE}
TABLE_NAMES: Mapping[int, str] = {t.table_id: t.name for t in PIPELINE}


def _check_pipeline() -> None:
    """The declaration itself must be coherent: jumps only forward, to declared tables."""
    for table in PIPELINE:
        for target in (*table.next_tables, *table.resubmits):
            if target not in TABLES:
                raise PipelineError(f"{table.name} names unknown table {target}")
        for target in table.next_tables:
            if TABLES[target].table_id <= table.table_id:
                raise PipelineError(f"{table.name} jumps backwards to {target}")
        if not table.miss_drops and not table.next_tables:
            raise PipelineError(f"{table.name} has no miss target")
        if 0 in table.priorities.values():
            raise PipelineError(f"{table.name}: priority 0 is reserved for the miss flow")


_check_pipeline()


def miss_flows() -> tuple[Flow, ...]:
    """The priority-0 flow of every table: drop or continue, as declared."""
    return tuple(t.miss_flow() for t in PIPELINE)


@dataclass(frozen=True)
class Explained:
    """A table as shown by `GET /v1/pipeline`."""

    name: str
    table_id: int
    purpose: str
    next_tables: tuple[str, ...]
    miss: str
    priorities: Mapping[str, int] = field(default_factory=dict)


def describe() -> list[Explained]:
    return [
        Explained(t.name, t.table_id, t.purpose, t.next_tables,
                  "drop" if t.miss_drops else f"goto {t.next_tables[0]}", dict(t.priorities))
        for t in PIPELINE
    ]
