"""The same messages built through os-ken's generic classes: the reference ofwire is
tested against (bytes must be identical) and the baseline `bench/bench_encode.py`
measures. Never used on the hot path: this is what costs ~50 us per flow.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller import pipeline
from controller.flows import (
    Bucket,
    Conjunction,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Group,
    GroupAction,
    Meter,
    Output,
    PopVlan,
    PushVlan,
    RegMove,
    Resubmit,
    SetField,
    SetQueue,
    mac_text,
)
from controller.ofwire import consts as c
from controller.ofwire.encode import load_segments
from controller.ofwire.fields import FIELDS


class FakeDatapath:
    """Just what os-ken's message classes read from a datapath when serialising."""

    ofproto = ofp
    ofproto_parser = parser
    id = 1


DP = FakeDatapath()

# our name -> os-ken's name for the NXM header OVS uses inside Nicira actions
_NXM_NAMES = {
    "in_port": "in_port_nxm", "eth_dst": "eth_dst_nxm", "eth_src": "eth_src_nxm",
    "eth_type": "eth_type_nxm", "ip_proto": "ip_proto_nxm", "ipv4_src": "ipv4_src_nxm",
    "ipv4_dst": "ipv4_dst_nxm", "tcp_src": "tcp_src_nxm", "tcp_dst": "tcp_dst_nxm",
    "udp_src": "udp_src_nxm", "udp_dst": "udp_dst_nxm", "icmpv4_type": "icmpv4_type_nxm",
    "icmpv4_code": "icmpv4_code_nxm", "arp_op": "arp_op_nxm", "arp_spa": "arp_spa_nxm",
    "arp_tpa": "arp_tpa_nxm", "tunnel_id": "tunnel_id_nxm", "arp_sha": "arp_sha_nxm",
    "arp_tha": "arp_tha_nxm", "ipv6_src": "ipv6_src_nxm", "ipv6_dst": "ipv6_dst_nxm",
    "icmpv6_type": "icmpv6_type_nxm", "icmpv6_code": "icmpv6_code_nxm",
    "ipv6_nd_target": "nd_target", "ipv6_nd_sll": "nd_sll", "ipv6_nd_tll": "nd_tll",
}


def _user(field: str, value: int) -> Any:
    fmt = FIELDS[field].fmt
    if fmt == "mac":
        return mac_text(value)
    if fmt == "ip4":
        return str(ipaddress.IPv4Address(value))
    if fmt == "ip6":
        return str(ipaddress.IPv6Address(value))
    return value


def osken_match(flow: Flow) -> Any:
    """OFPMatch with the fields in OVS's order (os-ken would sort them by OXM number)."""
    fields = []
    for mf in sorted(flow.match, key=lambda m: FIELDS[m.field].order):
        value = _user(mf.field, mf.value)
        mask = mf.mask if mf.mask is not None else FIELDS[mf.field].exact_mask
        if mask is not None:
            value = (value, _user(mf.field, mask))
        fields.append((mf.field, value))
    return parser.OFPMatch(_ordered_fields=fields)


def _table(name: str) -> int:
    return pipeline.TABLE_IDS[name]


def osken_action(a: Any) -> Any:
    nx = parser
    if isinstance(a, Output):
        return parser.OFPActionOutput(a.port, a.max_len)
    if isinstance(a, SetField):
        if a.field == "in_port":  # OVS's form: NXM_OF_IN_PORT (see encode._set_field)
            return parser.OFPActionSetField(in_port_nxm=a.value)
        return parser.OFPActionSetField(**{a.field: _user(a.field, a.value)})
    if isinstance(a, RegMove):
        return nx.NXActionRegMove(src_field=_NXM_NAMES.get(a.src, a.src),
                                  dst_field=_NXM_NAMES.get(a.dst, a.dst), n_bits=a.n_bits,
                                  src_ofs=a.src_ofs, dst_ofs=a.dst_ofs)
    if isinstance(a, Resubmit):
        return nx.NXActionResubmitTable(in_port=c.NXAST_RESUBMIT_IN_PORT,
                                        table_id=_table(a.table))
    if isinstance(a, GroupAction):
        return parser.OFPActionGroup(a.group_id)
    if isinstance(a, PushVlan):
        return parser.OFPActionPushVlan(a.ethertype)
    if isinstance(a, PopVlan):
        return parser.OFPActionPopVlan()
    if isinstance(a, SetQueue):
        return parser.OFPActionSetQueue(a.queue_id)
    if isinstance(a, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(a, CtClear):
        return nx.NXActionCTClear()
    if isinstance(a, Conjunction):
        return nx.NXActionConjunction(clause=a.clause - 1, n_clauses=a.n_clauses,
                                      id_=a.conj_id)
    if isinstance(a, Ct):
        nested: list[Any] = []
        if a.nat:
            nested.append(nx.NXActionNAT(flags=0))
        if a.set_mark is not None:
            if a.mark_mask is None or a.mark_mask == 0xFFFFFFFF:
                nested.append(parser.OFPActionSetField(ct_mark=a.set_mark))
            else:
                for ofs, n, v in load_segments(a.set_mark, a.mark_mask):
                    nested.append(nx.NXActionRegLoad(ofs_nbits=(ofs << 6) | (n - 1),
                                                     dst="ct_mark", value=v))
        return nx.NXActionCT(
            flags=c.NX_CT_F_COMMIT if a.commit else 0,
            zone_src=a.zone_src or "",
            zone_ofs_nbits=15 if a.zone_src else a.zone,
            recirc_table=c.NX_CT_RECIRC_NONE if a.table is None else _table(a.table),
            alg=0, actions=nested)
    raise TypeError(a)


def osken_instructions(flow: Flow) -> list[Any]:
    out: list[Any] = []
    if flow.meter is not None:
        out.append(parser.OFPInstructionMeter(flow.meter))
    if flow.actions:
        out.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [osken_action(a) for a in flow.actions]))
    if flow.write_metadata is not None:
        out.append(parser.OFPInstructionWriteMetadata(*flow.write_metadata))
    if flow.goto is not None:
        out.append(parser.OFPInstructionGotoTable(_table(flow.goto)))
    return out


def osken_flow_mod(flow: Flow, command: int, xid: int | None = None) -> Any:
    delete = command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
    msg = parser.OFPFlowMod(
        DP, cookie=flow.cookie, cookie_mask=0, table_id=_table(flow.table), command=command,
        idle_timeout=0, hard_timeout=0, priority=flow.priority, buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, flags=0, match=osken_match(flow),
        instructions=[] if delete else osken_instructions(flow))
    if xid is not None:
        msg.set_xid(xid)
    return msg


def osken_bundle_add(flow: Flow, command: int, xid: int, bundle_id: int, flags: int) -> bytes:
    msg = parser.ONFBundleAddMsg(DP, bundle_id, flags, osken_flow_mod(flow, command, xid), [])
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def _bucket(b: Bucket) -> Any:
    return parser.OFPBucket(weight=b.weight, watch_port=b.watch_port,
                            watch_group=b.watch_group,
                            actions=[osken_action(a) for a in b.actions])


def osken_group_mod(group: Group, command: int, xid: int) -> bytes:
    buckets = [] if command == ofp.OFPGC_DELETE else [_bucket(b) for b in group.buckets]
    msg = parser.OFPGroupMod(DP, command, c.GROUP_TYPES[group.type], group.group_id, buckets)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_meter_mod(meter: Meter, command: int, xid: int) -> bytes:
    if command == ofp.OFPMC_DELETE:
        msg = parser.OFPMeterMod(DP, command, 0, meter.meter_id, [])
    else:
        unit = ofp.OFPMF_PKTPS if meter.pps else ofp.OFPMF_KBPS
        msg = parser.OFPMeterMod(DP, command, unit | ofp.OFPMF_BURST, meter.meter_id,
                                 [parser.OFPMeterBandDrop(meter.rate_kbps, meter.burst_kb)])
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_serialize(msg: Any) -> bytes:
    msg.serialize()
    return bytes(msg.buf)
