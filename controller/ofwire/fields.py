"""OXM/NXM encoding of every field in `flows.FIELD_BITS`.

Each field has two wire headers, as in Open vSwitch's meta-flow table:

* `oxm`: what OVS uses in an OpenFlow 1.3 match and in OFPAT_SET_FIELD (the OpenFlow
  basic class 0x8000 where the spec has the field, else the Nicira NXM1 class 0x0001);
* `nxm`: what OVS uses inside Nicira actions (NXAST_REG_MOVE, NXAST_REG_LOAD,
  NXAST_REG_LOAD2, NXAST_CT zone): the old NXM0/NXM1 header when the field has one,
  else the OXM one. Emitting what OVS emits keeps our bytes identical to what OVS
  reports back in a flow-stats reply, so a restart finds nothing to change.

`order` is the position OVS gives the field when it writes a match (lib/nx-match.c
`nx_put_raw`): encoding in that order makes our match bytes identical to the ones OVS
reports, which is what lets the decoder's per-TLV cache hit and what the unit tests
check against `ovs-ofctl`'s own encoding.

`text` is the field's name in `ovs-ofctl` flow syntax and `fmt` how its value is
written there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from controller.flows import FIELD_BITS

OFPXMC_NXM_0 = 0x0000
OFPXMC_NXM_1 = 0x0001
OFPXMC_OPENFLOW_BASIC = 0x8000
ERICOXM_OF = 0x1000  # OVS's class for nd_reserved and nd_options_type (ovs-fields(7))
OFPXMC_EXPERIMENTER = 0xFFFF


def oxm_header(oxm_class: int, field: int, nbytes: int, masked: bool = False) -> int:
    """The 32-bit OXM header: class(16) | field(7) | hasmask(1) | length(8)."""
    return (oxm_class << 16) | (field << 9) | (0x100 | 2 * nbytes if masked else nbytes)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    nbytes: int
    oxm: tuple[int, int]  # (class, field) used in matches and set_field
    nxm: tuple[int, int]  # (class, field) used inside Nicira actions
    nxm_nbytes: int  # NXM_OF_IN_PORT is 16 bits where the OXM in_port is 32
    order: int
    text: str
    fmt: str  # int | hex | mac | ip4 | ip6
    # OVS keeps some fields narrower than their OXM and writes an exact match on them
    # as value/mask: ct_state is 8 bits inside OVS (FIELD_BITS says 8, nbytes 4), so
    # "exact" is value/0xff on the wire, in what OVS reports and what ovs-ofctl sends.
    exact_mask: Optional[int] = None

    @property
    def header(self) -> int:
        return oxm_header(self.oxm[0], self.oxm[1], self.nbytes)

    @property
    def masked_header(self) -> int:
        return oxm_header(self.oxm[0], self.oxm[1], self.nbytes, True)

    @property
    def nx_header(self) -> int:
        return oxm_header(self.nxm[0], self.nxm[1], self.nxm_nbytes)

    @property
    def bits(self) -> int:
        return FIELD_BITS[self.name]


_B = OFPXMC_OPENFLOW_BASIC
_N0 = OFPXMC_NXM_0
_N1 = OFPXMC_NXM_1


def _f(name: str, nbytes: int, oxm: tuple[int, int], nxm: Optional[tuple[int, int]],
       order: int, text: str, fmt: str, nxm_nbytes: Optional[int] = None,
       exact_mask: Optional[int] = None) -> FieldSpec:
    return FieldSpec(name, nbytes, oxm, nxm or oxm, nxm_nbytes or nbytes, order, text, fmt,
                     exact_mask)


_SPECS: list[FieldSpec] = [
    # NXM_NX_CONJ_ID is NXM1 field 37 (ovs-fields(7); os-ken nicira_ext.py), not
    # maskable; OVS writes it before in_port (nx_put_raw's "Metadata" block).
    _f("conj_id", 4, (_N1, 37), None, -1, "conj_id", "int"),
    _f("in_port", 4, (_B, 0), (_N0, 0), 0, "in_port", "int", nxm_nbytes=2),
    _f("eth_src", 6, (_B, 4), (_N0, 2), 10, "eth_src", "mac"),
    _f("eth_dst", 6, (_B, 3), (_N0, 1), 11, "eth_dst", "mac"),
    _f("eth_type", 2, (_B, 5), (_N0, 3), 12, "eth_type", "hex"),
    _f("vlan_vid", 2, (_B, 6), None, 13, "vlan_vid", "hex"),
    _f("vlan_pcp", 1, (_B, 7), None, 14, "vlan_pcp", "int"),
    _f("ipv4_src", 4, (_B, 11), (_N0, 7), 20, "nw_src", "ip4"),
    _f("ipv4_dst", 4, (_B, 12), (_N0, 8), 21, "nw_dst", "ip4"),
    _f("ipv6_src", 16, (_B, 26), (_N1, 19), 22, "ipv6_src", "ip6"),
    _f("ipv6_dst", 16, (_B, 27), (_N1, 20), 23, "ipv6_dst", "ip6"),
    _f("ip_dscp", 1, (_B, 8), None, 24, "ip_dscp", "int"),
    # NXM_NX_IP_TTL (NXM1 field 29): OVS writes it after the DSCP, before ip_proto
    _f("nw_ttl", 1, (_N1, 29), None, 25, "nw_ttl", "int"),
    _f("ip_proto", 1, (_B, 10), (_N0, 6), 26, "ip_proto", "int"),
    _f("tcp_src", 2, (_B, 13), (_N0, 9), 30, "tcp_src", "int"),
    _f("tcp_dst", 2, (_B, 14), (_N0, 10), 31, "tcp_dst", "int"),
    _f("udp_src", 2, (_B, 15), (_N0, 11), 32, "udp_src", "int"),
    _f("udp_dst", 2, (_B, 16), (_N0, 12), 33, "udp_dst", "int"),
    _f("icmpv4_type", 1, (_B, 19), (_N0, 13), 34, "icmp_type", "int"),
    _f("icmpv4_code", 1, (_B, 20), (_N0, 14), 35, "icmp_code", "int"),
    _f("icmpv6_type", 1, (_B, 29), (_N1, 21), 36, "icmpv6_type", "int"),
    _f("icmpv6_code", 1, (_B, 30), (_N1, 22), 37, "icmpv6_code", "int"),
    _f("ipv6_nd_target", 16, (_B, 31), (_N1, 23), 38, "nd_target", "ip6"),
    _f("ipv6_nd_sll", 6, (_B, 32), (_N1, 24), 39, "nd_sll", "mac"),
    _f("ipv6_nd_tll", 6, (_B, 33), (_N1, 25), 40, "nd_tll", "mac"),
    _f("nd_reserved", 4, (ERICOXM_OF, 1), None, 41, "nd_reserved", "int"),
    _f("nd_options_type", 1, (ERICOXM_OF, 2), None, 42, "nd_options_type", "int"),
    _f("arp_op", 2, (_B, 21), (_N0, 15), 45, "arp_op", "int"),
    _f("arp_spa", 4, (_B, 22), (_N0, 16), 46, "arp_spa", "ip4"),
    _f("arp_tpa", 4, (_B, 23), (_N0, 17), 47, "arp_tpa", "ip4"),
    _f("arp_sha", 6, (_B, 24), (_N1, 17), 48, "arp_sha", "mac"),
    _f("arp_tha", 6, (_B, 25), (_N1, 18), 49, "arp_tha", "mac"),
    _f("tunnel_id", 8, (_B, 38), (_N1, 16), 50, "tun_id", "hex"),
    _f("tun_ipv4_src", 4, (_N1, 31), None, 51, "tun_src", "ip4"),
    _f("tun_ipv4_dst", 4, (_N1, 32), None, 52, "tun_dst", "ip4"),
    *[_f(f"reg{i}", 4, (_N1, i), None, 60 + i, f"reg{i}", "hex") for i in range(16)],
    _f("ct_state", 4, (_N1, 105), None, 80, "ct_state", "hex", exact_mask=0xFF),
    _f("ct_zone", 2, (_N1, 106), None, 81, "ct_zone", "int"),
    _f("ct_mark", 4, (_N1, 107), None, 82, "ct_mark", "hex"),
    _f("metadata", 8, (_B, 2), None, 90, "metadata", "hex"),
]

FIELDS: dict[str, FieldSpec] = {s.name: s for s in _SPECS}
assert set(FIELDS) == set(FIELD_BITS), set(FIELDS) ^ set(FIELD_BITS)

# header (exact or masked, OXM or NXM) -> (field name, masked)
BY_HEADER: dict[int, tuple[str, bool]] = {}
for _s in _SPECS:
    for _cls, _fld, _n in ((*_s.oxm, _s.nbytes), (*_s.nxm, _s.nxm_nbytes)):
        BY_HEADER.setdefault(oxm_header(_cls, _fld, _n), (_s.name, False))
        BY_HEADER.setdefault(oxm_header(_cls, _fld, _n, True), (_s.name, True))

# header without hasmask/length -> field name, for headers inside Nicira actions
BY_TYPE: dict[int, str] = {}
for _s in _SPECS:
    for _cls, _fld in (_s.oxm, _s.nxm):
        BY_TYPE.setdefault((_cls << 7) | _fld, _s.name)

UNKNOWN_PREFIX = "oxm_"


def unknown_field_name(header: int) -> str:
    """Name for a TLV we do not model: the full header, so the field re-encodes as is.

    Its MatchField carries the whole payload (value, and mask if any) as `value`.
    Such a flow never equals a desired one, and a DELETE_STRICT of it still sends
    the exact match OVS reported.
    """
    return f"{UNKNOWN_PREFIX}{header:08x}"


def parse_unknown_field_name(name: str) -> Optional[int]:
    if not name.startswith(UNKNOWN_PREFIX):
        return None
    try:
        return int(name[len(UNKNOWN_PREFIX):], 16)
    except ValueError:
        return None
