"""The flow model: frozen, hashable descriptions of OpenFlow 1.3 flows.

The compiler returns these; the reconciler diffs them; `ofwire` turns them into
bytes. Every value is an int (MACs, IPv4 and IPv6 addresses included) so a flow is
cheap to hash and compare, and encoding is a struct pack. A match is canonical:
fields sorted by name, value already masked, and a mask only when it is not all
ones, because that is how OVS reports a flow back and a restart must find the
installed flow equal to the desired one.

Flows are never built directly outside `pipeline.Table.flow`, which checks the
stage's allowed fields and jumps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional, Union

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
    "tunnel_id": 64,
    "tun_ipv4_src": 32,
    "tun_ipv4_dst": 32,
    "ct_state": 32,
    "ct_zone": 16,
    "ct_mark": 32,
    **{f"reg{i}": 32 for i in range(16)},
}


def _all_ones(field: str) -> int:
    return (1 << FIELD_BITS[field]) - 1


@dataclass(frozen=True, order=True)
class MatchField:
    field: str
    value: int
    mask: Optional[int] = None  # None: exact match


Match = tuple[MatchField, ...]


def match(**fields: Union[int, tuple[int, int]]) -> Match:
    """Build a canonical match: `match(in_port=3, eth_dst=(0x01 << 40, 0x01 << 40))`."""
    out = []
    for name, spec in fields.items():
        if name not in FIELD_BITS:
            raise ValueError(f"unknown match field {name!r}")
        if isinstance(spec, tuple):
            value, mask = spec
            full = _all_ones(name)
            mask &= full
            if mask == full:
                out.append(MatchField(name, value & full))
            elif mask == 0:
                continue
            else:
                out.append(MatchField(name, value & mask, mask))
        else:
            out.append(MatchField(name, spec & _all_ones(name)))
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
class Ct:
    """Nicira NXAST_CT: send to conntrack, optionally commit, then resubmit to a table.

    `zone_src` names a register holding the zone (or None with `zone` immediate);
    `set_mark` commits a ct_mark value (with `mark_mask`); `nat` is a raw flag set
    for ct(nat) without addresses (reply direction un-NAT).
    """

    commit: bool = False
    zone: int = 0
    zone_src: Optional[str] = None
    table: Optional[str] = None
    set_mark: Optional[int] = None
    mark_mask: Optional[int] = None
    nat: bool = False


Action = Union[Output, SetField, RegMove, Resubmit, GroupAction, PushVlan, PopVlan,
               SetQueue, Ct]


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
    meter_id: int
    rate_kbps: int
    burst_kb: int
    owner: int = field(default=0, compare=False)


# ---------------------------------------------------------------- value helpers
def mac(text: str) -> int:
    return int(text.replace(":", "").replace("-", ""), 16)


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ip6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


def mac_text(value: int) -> str:
    raw = value.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


MULTICAST_BIT = 1 << 40  # the I/G bit of the first octet of a MAC
