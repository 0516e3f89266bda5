"""The flow model: frozen, hashable descriptions of OpenFlow 1.3 flows.

The compiler returns these; the reconciler diffs them; `ofwire` turns them into
bytes. Every value is an int (MACs, IPv4 and IPv6 addresses included) so a flow is
cheap to hash and compare, and encoding is a struct pack. A match is canonical:
fields sorted by name, value already masked, and a mask only when it is not all
ones, because that is how OVS reports a flow back and a restart must find the
installed flow equal to the desired one.

A field's width here is the width OVS keeps, which may be narrower than its wire
encoding: ct_state is 8 bits inside OVS (ovs-ofctl refuses any bit above 0xff) though
its NXM TLV is 32 bits, so `match(ct_state=0x22)`, `match(ct_state=(0x22, 0xff))` and
the `0x22/0xff` OVS reports back are one and the same MatchField.

Flows are never built directly outside `pipeline.Table.flow`, which checks the
stage's allowed fields and jumps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, Optional, Union

# name -> width in bits. The OXM encoding lives in ofwire; this is what the model needs.
FIELD_BITS: dict[str, int] = {
    "in_port": 32,
    "metadata": 64,
    "eth_dst": 48,
    "eth_src": 48,
    "eth_type": 16,
    "vlan_vid": 16,  # OFPVID_PRESENT | vid
    "vlan_pcp": 8,
    "ip_dscp": 8,
    "nw_ttl": 8,  # IPv4 TTL / IPv6 hop limit: only the Nicira field NXM_NX_IP_TTL
    "ip_proto": 8,
    "ipv4_src": 32,
    "ipv4_dst": 32,
    "tcp_src": 16,
    "tcp_dst": 16,
    "udp_src": 16,
    "udp_dst": 16,
    "icmpv4_type": 8,
    "icmpv4_code": 8,
    "arp_op": 16,
    "arp_spa": 32,
    "arp_tpa": 32,
    "arp_sha": 48,
    "arp_tha": 48,
    "ipv6_src": 128,
    "ipv6_dst": 128,
    "icmpv6_type": 8,
    "icmpv6_code": 8,
    "ipv6_nd_target": 128,
    "ipv6_nd_sll": 48,
    "ipv6_nd_tll": 48,
    # ND extensions (OVS 2.11+): the flags word of an NS/NA and its option's type,
    # written to turn a solicitation into an advertisement in the pipeline
    "nd_reserved": 32,
    "nd_options_type": 8,
    "tunnel_id": 64,
    "tun_ipv4_src": 32,
    "tun_ipv4_dst": 32,
    "ct_state": 8,  # 32 bits on the wire, 8 inside OVS: see the module docstring
    "ct_zone": 16,
    "ct_mark": 32,
    "conj_id": 32,  # set by a conjunctive match (see Conjunction); read-only
    **{f"reg{i}": 32 for i in range(16)},
}


# Fields OVS matches only exactly (ovs-fields(7) "Masking: not maskable"; ovs-ofctl says
# "invalid mask for field ..."). A flow_mod with such a mask fails, and with it the whole
# atomic bundle, so `match` refuses it when the flow is built.
UNMASKABLE: frozenset[str] = frozenset({
    "in_port", "eth_type", "vlan_pcp", "ip_dscp", "nw_ttl", "ip_proto", "icmpv4_type",
    "icmpv4_code", "icmpv6_type", "icmpv6_code", "arp_op", "ct_zone", "conj_id",
    "nd_reserved", "nd_options_type",
})

# ct_state bits (OVS lib/packets.h CS_*; os-ken has no names for them). A match on
# "+trk-inv-rpl" is `ct_state=(CT_TRK, CT_TRK | CT_INV | CT_RPL)`.
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20
CT_SNAT = 0x40
CT_DNAT = 0x80


def _all_ones(field: str) -> int:
    return (1 << FIELD_BITS[field]) - 1


@dataclass(frozen=True, order=True)
class MatchField:
    field: str
    value: int
    mask: Optional[int] = None  # None: exact match

    # The hash, once: a flow's key (table, priority, match) is hashed again at every
    # step (units, merge, flow map, diff), each time through every field of its match;
    # a third of a restart's first diff at 100,000 flows (issue 11). Not a dataclass
    # field: equality, order and repr stay the three above.
    _hash: ClassVar[int]  # (set per instance, by __post_init__)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.field, self.value, self.mask)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        # as the dataclass' own, without a tuple of each side per comparison (a
        # restart's first diff compares every field of every installed flow)
        if other.__class__ is not MatchField:
            return NotImplemented
        return (self.value == other.value  # type: ignore[attr-defined]
                and self.field == other.field  # type: ignore[attr-defined]
                and self.mask == other.mask)  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple:
        return (MatchField, (self.field, self.value, self.mask))  # (hash is per process)


Match = tuple[MatchField, ...]


def match(**fields: Union[int, tuple[int, int]]) -> Match:
    """Build a canonical match: `match(in_port=3, eth_dst=(0x01 << 40, 0x01 << 40))`.

    A value is an int that fits the field; a `(value, mask)` pair is reduced to the
    field's width (so `~x` masks work), its value masked, and written exact when the
    mask is all ones or left out when it is zero. A value wider than the field, or a
    partial mask on a field OVS cannot mask, raises ValueError: both would be silently
    changed (or refused) by the switch.
    """
    out = []
    for name, spec in fields.items():
        bits = FIELD_BITS.get(name)
        if bits is None:
            raise ValueError(f"unknown match field {name!r}")
        full = (1 << bits) - 1
        value, mask = spec if isinstance(spec, tuple) else (spec, full)
        if value < 0 or value > full:
            raise ValueError(f"{name}: {value:#x} does not fit in {bits} bits")
        mask &= full
        if mask == full:
            out.append(MatchField(name, value))
        elif mask == 0:
            continue
        elif name in UNMASKABLE:
            raise ValueError(f"{name} cannot be matched with a mask ({mask:#x})")
        else:
            out.append(MatchField(name, value & mask, mask))
    return tuple(sorted(out))


# ---------------------------------------------------------------- actions
@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = 0


@dataclass(frozen=True)
class SetField:
    field: str
    value: int


@dataclass(frozen=True)
class RegMove:
    """Nicira NXAST_REG_MOVE: copy n_bits from src[src_ofs:] to dst[dst_ofs:]."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True)
class Resubmit:
    """Nicira NXAST_RESUBMIT_TABLE to a pipeline table, keeping in_port.

    Used to run the later stages once per flood destination, as OVN expands its
    multicast groups.
    """

    table: str


@dataclass(frozen=True)
class GroupAction:
    group_id: int


@dataclass(frozen=True)
class PushVlan:
    ethertype: int = 0x8100


@dataclass(frozen=True)
class PopVlan:
    pass


@dataclass(frozen=True)
class SetQueue:
    queue_id: int


@dataclass(frozen=True)
class Nat:
    """NXAST_NAT inside ct(): source or destination translation to one IPv4 address
    (or a range), optionally a port (or range).

    ovs-ofctl: `nat(src=198.51.100.10)`, `nat(dst=10.0.0.5:80)`,
    `nat(src=1.2.3.4-1.2.3.9:1000-2000,persistent,random)`. Canonical as OVS reports
    it: a maximum equal to its minimum is no maximum (`1.2.3.4-1.2.3.4` is printed, and
    so compared, as `1.2.3.4`), so it is dropped here. OVS leaves a zero address or
    port out of the wire encoding, so neither is accepted.
    """

    kind: str  # "src" | "dst"
    ip_min: int  # IPv4 as int
    ip_max: Optional[int] = None
    port_min: Optional[int] = None
    port_max: Optional[int] = None
    persistent: bool = False
    random: bool = False  # NX_NAT_F_PROTO_RANDOM (ovs-ofctl "random")
    hash: bool = False  # NX_NAT_F_PROTO_HASH (ovs-ofctl "hash"); exclusive with random

    def __post_init__(self) -> None:
        if self.kind not in ("src", "dst"):
            raise ValueError(f"nat kind is 'src' or 'dst', not {self.kind!r}")
        if not 0 < self.ip_min <= 0xFFFFFFFF:
            raise ValueError(f"nat address {self.ip_min} is not a non-zero IPv4 address")
        if self.ip_max is not None:
            if not self.ip_min <= self.ip_max <= 0xFFFFFFFF:
                raise ValueError(f"nat address range {self.ip_min}-{self.ip_max} is empty")
            if self.ip_max == self.ip_min:
                object.__setattr__(self, "ip_max", None)
        if self.port_min is None:
            if self.port_max is not None:
                raise ValueError("nat port_max without port_min")
        else:
            if not 0 < self.port_min <= 0xFFFF:
                raise ValueError(f"nat port {self.port_min} is not in 1..65535")
            if self.port_max is not None:
                if not self.port_min <= self.port_max <= 0xFFFF:
                    raise ValueError(
                        f"nat port range {self.port_min}-{self.port_max} is empty")
                if self.port_max == self.port_min:
                    object.__setattr__(self, "port_max", None)
        if self.random and self.hash:
            raise ValueError("nat: 'hash' and 'random' are exclusive")


@dataclass(frozen=True)
class Ct:
    """Nicira NXAST_CT: send to conntrack, optionally commit, then resubmit to a table.

    `zone_src` names a register holding the zone (or None with `zone` immediate);
    `set_mark` commits a ct_mark value (with `mark_mask`); `nat` is a raw flag set
    for ct(nat) without addresses (reply direction un-NAT); `nat_spec` is
    nat(src=...)/nat(dst=...) with addresses (SNAT, DNAT): at most one of the two, and
    `nat_spec` only with `commit` (ovs-vswitchd refuses the flow otherwise).
    """

    commit: bool = False
    zone: int = 0
    zone_src: Optional[str] = None
    table: Optional[str] = None
    set_mark: Optional[int] = None
    mark_mask: Optional[int] = None
    nat: bool = False
    nat_spec: Optional[Nat] = None

    def __post_init__(self) -> None:
        if self.nat_spec is not None:
            if self.nat:
                raise ValueError("ct: plain nat and nat(src/dst=...) are exclusive")
            if not self.commit:
                # ovs-vswitchd: "CT action requires commit flag if actions other than
                # NAT without arguments are specified" (OFPBAC_BAD_ARGUMENT)
                raise ValueError("ct: nat(src/dst=...) needs commit")


@dataclass(frozen=True)
class Conjunction:
    """Nicira NXAST_CONJUNCTION: `conjunction(conj_id, clause/n_clauses)` in ovs-ofctl.

    `clause` is 1-based as in ovs-ofctl (the wire carries clause - 1). A packet that
    matches a flow of every clause 1..n_clauses of `conj_id` then matches the flow
    on `conj_id`. OVS allows 2 <= n_clauses <= 64, and a flow with a conjunction
    action may have no other action or instruction (but other conjunctions).
    """

    conj_id: int
    clause: int
    n_clauses: int

    def __post_init__(self) -> None:
        if not 0 <= self.conj_id <= 0xFFFFFFFF:
            raise ValueError(f"conj_id {self.conj_id} is not a 32-bit value")
        if not 2 <= self.n_clauses <= 64:
            raise ValueError(f"a conjunction has 2..64 clauses, not {self.n_clauses}")
        if not 1 <= self.clause <= self.n_clauses:
            raise ValueError(f"clause {self.clause} is not in 1..{self.n_clauses}")


@dataclass(frozen=True)
class DecTtl:
    """OFPAT_DEC_NW_TTL: decrement the IPv4 TTL (IPv6 hop limit) by one.

    OVS stops the packet (and would send it to a controller that asked for invalid-TTL
    packet-ins) when the TTL is already 0 or 1; Loom's routing flows drop such packets
    explicitly before they get here (compiler/routing.py)."""


@dataclass(frozen=True)
class CtClear:
    """Nicira NXAST_CT_CLEAR (`ct_clear`): forget the conntrack state of the packet, so
    the next ACL table tracks it afresh (in the zone REG_CT_ZONE then names)."""


Action = Union[Output, SetField, RegMove, Resubmit, GroupAction, PushVlan, PopVlan,
               SetQueue, Ct, Conjunction, DecTtl, CtClear]


# ---------------------------------------------------------------- flow
@dataclass(frozen=True)
class Flow:
    """One OpenFlow 1.3 flow. `table` and `goto` are pipeline table names."""

    table: str
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: Optional[str] = None
    write_metadata: Optional[tuple[int, int]] = None  # (value, mask)
    meter: Optional[int] = None
    cookie: int = 0

    @property
    def key(self) -> tuple[str, int, Match]:
        """What OpenFlow identifies a flow by: two flows with one key cannot coexist."""
        return (self.table, self.priority, self.match)

    def __eq__(self, other: object) -> bool:
        # as the dataclass' own (every field equal), without building a tuple of each
        # side: a restart compares every installed flow with its desired one (issue 11)
        if other.__class__ is not Flow:
            return NotImplemented
        o: Flow = other  # type: ignore[assignment]
        return (self is o or (self.cookie == o.cookie and self.priority == o.priority
                              and self.table == o.table and self.match == o.match
                              and self.actions == o.actions and self.goto == o.goto
                              and self.write_metadata == o.write_metadata
                              and self.meter == o.meter))


@dataclass(frozen=True)
class Bucket:
    actions: tuple[Action, ...]
    weight: int = 0
    watch_port: int = 0xFFFFFFFF  # OFPP_ANY
    watch_group: int = 0xFFFFFFFF  # OFPG_ANY


@dataclass(frozen=True)
class Group:
    group_id: int
    type: str  # all | select | indirect | ff
    buckets: tuple[Bucket, ...]
    # Groups have no cookie in OF1.3: the owner is kept for explain, not compared.
    cookie_owner: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Meter:
    """One drop band. `pps`: the rate is in packets per second and the burst in packets
    (the punt meters), else kbit/s and kbit (QoS)."""

    meter_id: int
    rate_kbps: int
    burst_kb: int
    owner: int = field(default=0, compare=False)
    pps: bool = False


# ---------------------------------------------------------------- value helpers
# Cached: a full compile turns each port's addresses into ints several times (its own
# flows, its neighbours' ARP, reach and resolve flows), each a parse by `ipaddress`.
@lru_cache(maxsize=65536)
def mac(text: str) -> int:
    return int(text.replace(":", "").replace("-", ""), 16)


@lru_cache(maxsize=65536)
def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


@lru_cache(maxsize=65536)
def ip6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


def mac_text(value: int) -> str:
    raw = value.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


MULTICAST_BIT = 1 << 40  # the I/G bit of the first octet of a MAC
