"""controller.ofwire: bytes identical to os-ken's serialisers and to what ovs-ofctl
sends, decode(encode(x)) == x, and the normalisations a restart relies on.

No OVS daemon is needed: the ovs-ofctl checks use its offline subcommands
(`ofp-parse`, `parse-flows`) and a fake switch on a local TCP port that records what
`ovs-ofctl add-flows` sends. They are skipped when ovs-ofctl is not installed.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from os_ken.ofproto import ofproto_parser as okparser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from bench.bench_encode import tenant_flows
from controller import ofwire
from controller.flows import (
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_TRK,
    FIELD_BITS,
    UNMASKABLE,
    Bucket,
    Conjunction,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Group,
    GroupAction,
    MatchField,
    Meter,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    RegMove,
    Resubmit,
    SetField,
    SetQueue,
    ip4,
    ip6,
    mac,
    match,
)
from controller.ofwire import consts as c
from controller.ofwire import decode, encode, oskenfast
from controller.ofwire.ofctl import match_text
from controller.ofwire.oskenref import (
    DP,
    osken_bundle_add,
    osken_flow_mod,
    osken_group_mod,
    osken_meter_mod,
    osken_serialize,
)

OFCTL = shutil.which("ovs-ofctl")
needs_ofctl = pytest.mark.skipif(OFCTL is None, reason="ovs-ofctl not installed")

M48 = (1 << 48) - 1
M64 = (1 << 64) - 1
CONTROLLER, IN_PORT, LOCAL, NORMAL = 0xFFFFFFFD, 0xFFFFFFF8, 0xFFFFFFFE, 0xFFFFFFFA
V6 = ip6("fd00::1")
LL6 = ip6("fe80::1")

# Every field of flows.FIELD_BITS and every action, in flows OVS accepts (prerequisites
# met), masked where OVS allows a mask.
FLOWS: list[Flow] = [
    Flow("classify", 100, match(in_port=3), write_metadata=(5, M48), goto="port_security",
         cookie=0x0300000000000007),
    Flow("classify", 100, match(tunnel_id=(0x1234, 0xFFFF), tun_ipv4_src=ip4("192.168.0.1"),
                                tun_ipv4_dst=(ip4("192.168.1.0"), 0xFFFFFF00)),
         (SetField("reg0", 1), SetField("reg1", 2)), write_metadata=(9, M48),
         goto="l2_lookup", cookie=0x0800000000000001),
    Flow("classify", 100, match(in_port=4, vlan_vid=0x1000 | 10, vlan_pcp=3),
         (PopVlan(), SetField("reg3", 0xFFFFFFFF)), goto="port_security"),
    Flow("classify", 90, match(vlan_vid=(0x1000, 0x1000)), ()),
    Flow("port_security", 100, match(in_port=3, eth_src=mac("fa:16:3e:00:00:01"),
                                     eth_type=0x0806, arp_spa=ip4("10.0.0.5"),
                                     arp_sha=mac("fa:16:3e:00:00:01")),
         goto="arp_responder", cookie=0x0300000000000007),
    Flow("port_security", 100, match(in_port=3, eth_src=mac("fa:16:3e:00:00:01"),
                                     eth_type=0x86DD, ipv6_src=0, ip_proto=58,
                                     icmpv6_type=135, icmpv6_code=0,
                                     ipv6_nd_target=(V6, ~((1 << 64) - 1)),
                                     ipv6_nd_sll=mac("fa:16:3e:00:00:01")),
         goto="arp_responder"),
    Flow("port_security", 100, match(eth_type=0x86DD, ip_proto=58, icmpv6_type=136,
                                     ipv6_nd_tll=mac("fa:16:3e:00:00:02"),
                                     ipv6_dst=(LL6, ~((1 << 64) - 1))), goto="arp_responder"),
    Flow("port_security", 10, match(in_port=3), cookie=1),
    Flow("arp_responder", 100, match(metadata=5, eth_type=0x0806, arp_op=1,
                                     arp_tpa=ip4("10.0.0.1")),
         (RegMove("eth_src", "eth_dst", 48), SetField("eth_src", mac("fa:16:3e:00:00:fe")),
          SetField("arp_op", 2), RegMove("arp_sha", "arp_tha", 48),
          SetField("arp_sha", mac("fa:16:3e:00:00:fe")), RegMove("arp_spa", "arp_tpa", 32),
          SetField("arp_spa", ip4("10.0.0.1")), Output(IN_PORT))),
    Flow("arp_responder", 90, match(eth_type=0x0806, arp_tha=(mac("fa:16:3e:00:00:00"),
                                                              0xFFFFFF000000),
                                    arp_tpa=(ip4("10.0.0.0"), 0xFFFFFF00)), (Output(LOCAL),)),
    Flow("egress_acl", 200, match(metadata=5, eth_type=0x0800, ct_state=(0x22, 0x32)),
         goto="l3"),
    Flow("egress_acl", 100, match(metadata=(5, M48), in_port=3, eth_type=0x0800, ip_proto=6,
                                  ipv4_dst=(ip4("10.1.0.0"), 0xFFFF0000),
                                  tcp_dst=(8000, 0xFFC0), tcp_src=1024,
                                  ct_state=(0x21, 0x21)),
         (Ct(commit=True, zone_src="reg6", table="egress_acl"),)),
    Flow("egress_acl", 100, match(eth_type=0x0800, ip_proto=17, udp_src=68, udp_dst=(67, 0xFFFF),
                                  ip_dscp=46, ct_zone=5, ct_mark=(1, 1)),
         (Ct(commit=True, zone=7, set_mark=0xABC),), goto="l3"),
    Flow("egress_acl", 100, match(eth_type=0x0800, ip_proto=1, icmpv4_type=8, icmpv4_code=0,
                                  ct_state=0x21),
         (Ct(commit=True, zone=3, set_mark=0x5, mark_mask=0xF0F),)),
    Flow("l3", 100, match(metadata=5, eth_type=0x0800, ipv4_src=ip4("10.0.0.9"),
                          ct_state=(0x20, 0x20)),
         (Ct(table="l3", zone_src="reg6", nat=True),)),
    Flow("l3", 100, match(metadata=5, eth_type=0x0800, ipv4_dst=ip4("172.16.0.9")),
         (Ct(commit=True, zone_src="reg6", table="l3", nat=True, set_mark=2, mark_mask=2),
          SetField("eth_dst", mac("fa:16:3e:00:00:09")), SetField("ipv4_dst", ip4("10.0.0.9")),
          SetField("ip_dscp", 10)), goto="l2_lookup"),
    Flow("l3", 100, match(eth_type=0x86DD, ipv6_src=V6, ip_proto=6, tcp_dst=22),
         (SetField("ipv6_src", LL6), SetField("tcp_dst", 2222)), goto="l2_lookup"),
    # routing: TTL guard, a route (dec_ttl, ct_clear, next hop), resolve, echo reply
    Flow("l3", 250, match(metadata=5, eth_dst=mac("fa:16:3e:00:00:fe"), eth_type=0x0800,
                          nw_ttl=1), cookie=0x0500000000000003),
    Flow("l3", 124, match(metadata=5, eth_dst=mac("fa:16:3e:00:00:fe"), eth_type=0x0800,
                          ipv4_dst=(ip4("10.0.1.0"), 0xFFFFFF00)),
         (DecTtl(), SetField("eth_src", mac("fa:16:3e:00:01:fe")), SetField("reg6", 9),
          CtClear(), RegMove("ipv4_dst", "reg4", 32)),
         write_metadata=(7, M64), goto="l3_resolve", cookie=0x0500000000000003),
    Flow("l3_resolve", 100, match(metadata=7, reg4=ip4("10.0.1.5")),
         (SetField("eth_dst", mac("fa:16:3e:00:01:05")),), goto="l2_lookup"),
    Flow("l3", 300, match(metadata=5, eth_dst=mac("fa:16:3e:00:00:fe"), eth_type=0x0800,
                          ip_proto=1, icmpv4_type=8, ipv4_dst=ip4("10.0.1.1")),
         (RegMove("eth_src", "eth_dst", 48), SetField("eth_src", mac("fa:16:3e:00:00:fe")),
          RegMove("ipv4_src", "ipv4_dst", 32), SetField("ipv4_src", ip4("10.0.1.1")),
          SetField("icmpv4_type", 0), Output(IN_PORT))),
    Flow("l2_lookup", 100, match(metadata=5, eth_dst=mac("fa:16:3e:00:00:01")),
         (SetField("reg7", 3),), goto="ingress_acl", cookie=0x0300000000000007),
    Flow("l2_lookup", 10, match(metadata=5, eth_dst=(1 << 40, 1 << 40)),
         (SetField("reg7", 3), Resubmit("ingress_acl"), SetField("reg7", 4),
          Resubmit("ingress_acl"), GroupAction(9))),
    Flow("ingress_acl", 100, match(reg7=3, **{f"reg{i}": (i, 0xFF) for i in range(8, 16)}),
         (RegMove("reg8", "reg9", 8, 0, 8), RegMove("in_port", "reg2", 16),
          RegMove("metadata", "reg1", 16, 32, 16), RegMove("tunnel_id", "reg10", 24)),
         goto="qos"),
    Flow("ingress_acl", 100, match(reg0=1, reg1=(2, 0xF), reg2=3, reg3=4, reg4=5, reg5=6,
                                   reg6=7), goto="qos"),
    # stateful security groups: conjunctive clauses, conj_id, ct_state masks, ct() forms,
    # masked L4 ports and address prefixes (what controller/compiler/acl.py emits)
    Flow("egress_acl", 90, match(in_port=3, eth_type=0x0800, ip_proto=6,
                                 tcp_dst=(0x1F40, 0xFFF0), tcp_src=(1024, 0xFC00)),
         (Conjunction(7, 1, 2),)),
    Flow("egress_acl", 90, match(metadata=5, eth_type=0x0800,
                                 ipv4_dst=(ip4("10.2.0.0"), 0xFFFF0000)),
         (Conjunction(7, 2, 2), Conjunction(0xFFFFFFFF, 3, 64), Conjunction(8, 1, 3))),
    Flow("egress_acl", 90, match(conj_id=7, eth_type=0x0800, ip_proto=6,
                                 ct_state=(CT_TRK, CT_TRK | CT_INV | CT_RPL)),
         (Ct(commit=True, zone_src="reg6"),), goto="l3", cookie=0x0400000000000009),
    Flow("ingress_acl", 200, match(eth_type=0x86DD, ct_state=(0, CT_TRK)),
         (Ct(table="ingress_acl", zone=9),)),
    Flow("ingress_acl", 180, match(eth_type=0x86DD, ct_state=CT_TRK | CT_EST,
                                   ct_mark=(0, 1)), goto="qos"),
    Flow("ingress_acl", 180, match(eth_type=0x0800, ct_state=(CT_TRK | CT_REL,
                                                              CT_TRK | CT_REL | CT_INV)),
         goto="qos"),
    Flow("ingress_acl", 100, match(eth_type=0x86DD, ipv6_src=(ip6("fd00:1::"), ~((1 << 80) - 1)),
                                   ipv6_dst=(V6, ~((1 << 64) - 1)), ip_proto=17,
                                   udp_dst=(0x1000, 0xF000), udp_src=(53, 0xFFFF)),
         (Ct(commit=True, zone=9),), goto="qos"),
    Flow("ingress_acl", 100, match(eth_type=0x86DD, ip_proto=58, icmpv6_type=128,
                                   icmpv6_code=0, ct_state=CT_TRK | CT_NEW),
         (Ct(commit=True, zone=9, set_mark=1),), goto="qos"),
    Flow("ingress_acl", 20, match(eth_type=0x0800, ipv4_src=(ip4("192.0.2.128"), 0xFFFFFF80),
                                  ip_proto=1, icmpv4_type=3, ct_state=(CT_TRK | CT_EST, 0xFF)),
         (Ct(commit=True, zone=9, set_mark=1, mark_mask=1),)),
    Flow("ingress_acl", 20, match(eth_type=0x0800, ct_mark=(1, 1), ct_state=(CT_TRK, CT_TRK)),
         (Ct(commit=True),)),
    Flow("classify", 400, match(vlan_vid=0x1000 | 7, vlan_pcp=7),
         (PopVlan(), SetField("in_port", 2), Resubmit("classify"))),
    Flow("qos", 100, match(reg7=3), (SetQueue(5),), meter=7, goto="output"),
    Flow("qos", 90, match(in_port=3), meter=8),
    Flow("output", 100, match(reg7=3), (Output(3),), cookie=M64),
    Flow("output", 90, match(reg7=9),
         (PushVlan(), SetField("vlan_vid", 0x1000 | 100), SetField("vlan_pcp", 5),
          SetField("tunnel_id", 77), SetField("tun_ipv4_dst", ip4("192.168.0.2")),
          SetField("metadata", 0x1234), Output(CONTROLLER, 128), Output(NORMAL))),
    Flow("output", 80, match(reg7=10), (PushVlan(0x88A8), Output(4))),
    Flow("output", 0, ()),
]

GROUPS = [
    Group(1, "all", (Bucket((Output(1),)), Bucket((SetField("reg7", 3), Resubmit("output"))))),
    Group(2, "select", (Bucket((Output(1),), weight=5), Bucket((Output(2),), weight=7))),
    Group(3, "ff", (Bucket((Output(1),), watch_port=1), Bucket((Output(2),), watch_port=2,
                                                               watch_group=3))),
    Group(4, "indirect", (Bucket((PushVlan(), SetField("vlan_vid", 0x1005), Output(3))),)),
    Group(5, "all", ()),
]
METERS = [Meter(1, 1000, 100), Meter(2, 10_000_000, 1_000_000), Meter(0xFFFF0000, 1, 1)]


def _tenant() -> list[Flow]:
    return tenant_flows(1300)  # 100 ports


def _all_actions(flows: list[Flow]) -> list[Any]:
    out: list[Any] = []
    for f in flows:
        out.extend(f.actions)
    return out


# ---------------------------------------------------------------- coverage of the list
def test_flows_cover_every_field_and_action() -> None:
    fields = {mf.field for f in FLOWS for mf in f.match}
    # written only (neighbour advertisements built in place), never matched on; os-ken
    # knows neither: test_nd_extension_fields_round_trip covers them
    assert fields == set(FIELD_BITS) - {"nd_reserved", "nd_options_type"}
    kinds = {type(a) for a in _all_actions(FLOWS)}
    assert kinds == {Output, SetField, RegMove, Resubmit, GroupAction, PushVlan, PopVlan,
                     SetQueue, Ct, Conjunction, DecTtl, CtClear}
    assert any(mf.mask is not None for f in FLOWS for mf in f.match)


def test_nd_extension_fields_round_trip() -> None:
    """OVS's ERICOXM class fields (0x1000): encoded as OVS writes them, decoded back equal
    (a restart finds the neighbour-advertisement flows unchanged)."""
    flow = Flow("l2_lookup", 100, match(eth_type=0x86DD, ip_proto=58, icmpv6_type=135),
                (SetField("icmpv6_type", 136), SetField("nd_options_type", 2),
                 SetField("nd_reserved", 0x60000000), RegMove("eth_src", "ipv6_nd_tll", 48),
                 Output(0xFFFFFFF8)))
    mod = ofwire.encode_flow_mod(flow, ofwire.ADD, 1)
    assert struct.pack("!IB", 0x10000401, 2) in mod  # class 0x1000, field 2, 1 byte
    assert struct.pack("!II", 0x10000204, 0x60000000) in mod  # field 1, 4 bytes
    (item,) = ofwire.parse_flow_stats(_entry(flow))
    assert item.flow == flow
    text = ofwire.to_ofctl(flow)
    assert "set_field:2->nd_options_type" in text and "->nd_reserved" in text


# ---------------------------------------------------------------- vs os-ken
@pytest.mark.parametrize("flow", FLOWS + _tenant()[:26], ids=lambda f: f"{f.table}/{f.priority}")
@pytest.mark.parametrize("command", [ofwire.ADD, ofwire.DELETE_STRICT])
def test_flow_mod_bytes_equal_osken(flow: Flow, command: int) -> None:
    xid = 0x12345678
    assert ofwire.encode_flow_mod(flow, command, xid) == \
        osken_serialize(osken_flow_mod(flow, command, xid))


def test_flow_mod_other_commands_equal_osken() -> None:
    f = FLOWS[0]
    for command in (ofwire.OFPFC_MODIFY, ofwire.OFPFC_MODIFY_STRICT, ofwire.OFPFC_DELETE):
        assert ofwire.encode_flow_mod(f, command, 3) == \
            osken_serialize(osken_flow_mod(f, command, 3))


def test_bundle_add_equals_osken() -> None:
    flags = ofwire.ONF_BF_ATOMIC | ofwire.ONF_BF_ORDERED
    for i, f in enumerate(FLOWS):
        inner = ofwire.encode_flow_mod(f, ofwire.ADD, 1000 + i)
        assert ofwire.bundle_add(1000 + i, 42, flags, inner) == \
            osken_bundle_add(f, ofp.OFPFC_ADD, 1000 + i, 42, flags)


def _split(data: bytes) -> list[bytes]:
    out = []
    p = 0
    while p < len(data):
        length = struct.unpack_from("!H", data, p + 2)[0]
        assert length >= 8
        out.append(data[p:p + length])
        p += length
    assert p == len(data)
    return out


def _ctrl(xid: int, bundle_id: int, ctrl: int, flags: int) -> bytes:
    msg = parser.ONFBundleCtrlMsg(DP, bundle_id, ctrl, flags, [])
    msg.set_xid(xid)
    return osken_serialize(msg)


def test_bundle_control_equals_osken() -> None:
    assert ofwire.bundle_open(7, 9, 3) == _ctrl(7, 9, ofp.ONF_BCT_OPEN_REQUEST, 3)
    assert ofwire.bundle_commit(7, 9, 3) == _ctrl(7, 9, ofp.ONF_BCT_COMMIT_REQUEST, 3)
    assert ofwire.bundle_discard(7, 9, 1) == _ctrl(7, 9, ofp.ONF_BCT_DISCARD_REQUEST, 1)


@pytest.mark.parametrize("first_xid", [1, 0xFFFFFFF0])
def test_encode_bundle_is_open_deletes_adds_commit(first_xid: int) -> None:
    adds, deletes = FLOWS[:12], FLOWS[12:20]
    ofwire.clear_cache()
    for _ in range(2):  # cold, then from the cache
        data, next_xid = ofwire.encode_bundle(77, adds, deletes, first_xid)
        msgs = _split(data)
        n = len(adds) + len(deletes)
        assert len(msgs) == n + 2
        assert next_xid == (first_xid + n + 2) & 0xFFFFFFFF
        xids = [(first_xid + i) & 0xFFFFFFFF for i in range(n + 2)]
        assert msgs[0] == _ctrl(xids[0], 77, ofp.ONF_BCT_OPEN_REQUEST, 3)
        assert msgs[-1] == _ctrl(xids[-1], 77, ofp.ONF_BCT_COMMIT_REQUEST, 3)
        for i, f in enumerate(deletes):
            assert msgs[1 + i] == osken_bundle_add(f, ofp.OFPFC_DELETE_STRICT, xids[1 + i], 77, 3)
        for i, f in enumerate(adds):
            j = 1 + len(deletes) + i
            assert msgs[j] == osken_bundle_add(f, ofp.OFPFC_ADD, xids[j], 77, 3)


def test_cache_hits_equal_flows_and_stays_bounded() -> None:
    flows = _tenant()
    twins = _tenant()
    ofwire.clear_cache()
    first, _ = ofwire.encode_bundle(1, flows, (), 10)
    assert ofwire.cache_info()["flows"] == len(flows)
    assert ofwire.encode_bundle(1, twins, (), 10)[0] == first
    try:
        ofwire.set_cache_size(100)
        assert ofwire.encode_bundle(1, flows, (), 10)[0] == first
        assert ofwire.cache_info()["flows"] <= 100
    finally:
        ofwire.set_cache_size(1 << 18)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.type)
def test_group_mod_equals_osken(group: Group) -> None:
    for command in (ofwire.OFPGC_ADD, ofwire.OFPGC_MODIFY, ofwire.OFPGC_DELETE):
        assert ofwire.encode_group_mod(group, command, 5) == osken_group_mod(group, command, 5)


@pytest.mark.parametrize("meter", METERS, ids=lambda m: str(m.meter_id))
def test_meter_mod_equals_osken(meter: Meter) -> None:
    for command in (ofwire.OFPMC_ADD, ofwire.OFPMC_MODIFY, ofwire.OFPMC_DELETE):
        assert ofwire.encode_meter_mod(meter, command, 5) == osken_meter_mod(meter, command, 5)


def test_requests_equal_osken() -> None:
    def ser(msg: Any, xid: int) -> bytes:
        msg.set_xid(xid)
        return osken_serialize(msg)

    assert ofwire.barrier_request(9) == ser(parser.OFPBarrierRequest(DP), 9)
    assert ofwire.flow_stats_request(9) == ser(parser.OFPFlowStatsRequest(
        DP, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()), 9)
    assert ofwire.group_desc_request(9) == ser(parser.OFPGroupDescStatsRequest(DP, 0), 9)
    assert ofwire.meter_config_request(9) == ser(
        parser.OFPMeterConfigStatsRequest(DP, 0, ofp.OFPM_ALL), 9)


# ---------------------------------------------------------------- decode(encode(x)) == x
def test_flow_stats_round_trip() -> None:
    flows = FLOWS + _tenant()
    replies = ofwire.flow_stats_reply(11, flows)
    assert len(replies) > 1  # bigger than one 64 KiB message
    got: list[Flow] = []
    for i, msg in enumerate(replies):
        head, entries = ofwire.parse_multipart_reply(msg)
        assert head.xid == 11 and head.mp_type == c.OFPMP_FLOW
        assert head.more == (i < len(replies) - 1)
        got.extend(e.flow for e in entries)
    assert got == flows
    decode.clear_caches()  # cold caches decode the same
    assert [e.flow for m in replies for e in ofwire.parse_flow_stats_reply(bytearray(m))] == flows


def test_flow_stats_counters() -> None:
    entry = ofwire.flow_stats_entry(FLOWS[0], packet_count=7, byte_count=700, duration=2.5)
    (item,) = ofwire.parse_flow_stats(entry)
    assert item == ofwire.InstalledFlow(FLOWS[0], 7, 700, 2.5)


def test_group_and_meter_round_trip() -> None:
    (msg,) = ofwire.group_desc_reply(3, GROUPS)
    assert ofwire.parse_group_desc_reply(msg) == GROUPS
    (msg,) = ofwire.meter_config_reply(3, METERS)
    assert ofwire.parse_meter_config_reply(msg) == METERS
    assert ofwire.parse_multipart_reply(msg)[1] == METERS


def test_group_and_meter_bodies_parse_like_osken() -> None:
    """Our reply builders are what os-ken (and so OVS) read as the same objects."""
    (msg,) = ofwire.group_desc_reply(3, GROUPS[:2])
    ok = okparser.msg(DP, 4, ofp.OFPT_MULTIPART_REPLY, len(msg), 3, bytearray(msg))
    assert [(g.group_id, g.type, len(g.buckets)) for g in ok.body] == \
        [(g.group_id, c.GROUP_TYPES[g.type], len(g.buckets)) for g in GROUPS[:2]]
    (msg,) = ofwire.meter_config_reply(3, METERS)
    ok = okparser.msg(DP, 4, ofp.OFPT_MULTIPART_REPLY, len(msg), 3, bytearray(msg))
    assert [(m.meter_id, m.bands[0].rate, m.bands[0].burst_size) for m in ok.body] == \
        [(m.meter_id, m.rate_kbps, m.burst_kb) for m in METERS]


# ---------------------------------------------------------------- normalisation
def _entry(flow: Flow, instructions: bytes | None = None, match_bytes: bytes | None = None
           ) -> bytes:
    """A flow-stats entry for `flow` with its instructions or match replaced."""
    fm = ofwire.encode_flow_mod(flow, ofwire.ADD, 0)
    m = match_bytes if match_bytes is not None else encode.encode_match(flow.match)
    i = instructions if instructions is not None else fm[48 + len(m):]
    return struct.pack("!HBxIIHHHH4xQQQ", 48 + len(m) + len(i), 50, 0, 0, flow.priority, 0,
                       0, 0, flow.cookie, 0, 0) + m + i


def _apply(*actions: bytes) -> bytes:
    body = b"".join(actions)
    return struct.pack("!HH4x", c.OFPIT_APPLY_ACTIONS, 8 + len(body)) + body


def _nx(subtype: int, body: bytes) -> bytes:
    raw = struct.pack("!HHIH", 0xFFFF, 0, c.NX_VENDOR_ID, subtype) + body
    raw += bytes(-len(raw) % 8)
    return raw[:2] + struct.pack("!H", len(raw)) + raw[4:]


REG7_NXM = 0x00010E04


def _parsed_actions(instr: bytes) -> tuple[Any, ...]:
    flow = Flow("l2_lookup", 5, match(reg7=1))
    (item,) = ofwire.parse_flow_stats(_entry(flow, instr))
    return item.flow.actions


def test_register_writes_normalise_to_set_field() -> None:
    want = (SetField("reg7", 0xAB),)
    set_field = ofwire.encode_actions(want)
    reg_load = _nx(c.NXAST_REG_LOAD, struct.pack("!HIQ", 31, REG7_NXM, 0xAB))
    reg_load2 = _nx(c.NXAST_REG_LOAD2, struct.pack("!II", REG7_NXM, 0xAB))
    reg_load2_masked = _nx(c.NXAST_REG_LOAD2,
                           struct.pack("!III", (REG7_NXM & ~0xFF) | 0x108, 0xAB, 0xFFFFFFFF))
    for raw in (set_field, reg_load, reg_load2, reg_load2_masked):
        assert _parsed_actions(_apply(raw)) == want
    # a partial write is not a SetField: it stays opaque, so the flow gets replaced
    partial = _nx(c.NXAST_REG_LOAD, struct.pack("!HIQ", 15, REG7_NXM, 0xAB))
    (got,) = _parsed_actions(_apply(partial))
    assert isinstance(got, ofwire.Opaque) and got != SetField("reg7", 0xAB)


def test_ct_mark_loads_fold_into_ct() -> None:
    want = Ct(commit=True, zone=3, set_mark=0x5, mark_mask=0xF0F)
    assert _parsed_actions(_apply(ofwire.encode_actions((want,)))) == (want,)
    # REG_LOAD2 form, and a full-width REG_LOAD giving mark_mask None
    ct_head = struct.pack("!HIHB3xH", 1, 0, 3, 0xFF, 0)
    ct_mark = 0x0001D604
    load2 = _nx(c.NXAST_REG_LOAD2, struct.pack("!III", (ct_mark & ~0xFF) | 0x108, 0x5, 0xF0F))
    assert _parsed_actions(_apply(_nx(c.NXAST_CT, ct_head + load2))) == (want,)
    full = _nx(c.NXAST_REG_LOAD, struct.pack("!HIQ", 31, ct_mark, 9))
    assert _parsed_actions(_apply(_nx(c.NXAST_CT, ct_head + full))) == \
        (Ct(commit=True, zone=3, set_mark=9),)


def test_unknown_actions_and_instructions_are_opaque() -> None:
    learn = _nx(16, bytes(24))  # NXAST_LEARN: not modelled
    output = ofwire.encode_actions((Output(3),))
    acts = _parsed_actions(_apply(output, learn))
    assert acts[0] == Output(3) and isinstance(acts[1], ofwire.Opaque)
    assert acts != (Output(3),)
    # the opaque action re-encodes verbatim
    assert ofwire.encode_actions(acts) == output + learn
    clear = struct.pack("!HH4x", c.OFPIT_CLEAR_ACTIONS, 8)
    acts = _parsed_actions(_apply(output) + clear)
    assert acts == (Output(3), ofwire.Opaque("instruction", clear))
    # ct with an alg, and nat with an IPv6 range, are not Ct
    ct_alg = _nx(c.NXAST_CT, struct.pack("!HIHB3xH", 1, 0, 3, 0xFF, 21))
    nat_range = _nx(c.NXAST_NAT, struct.pack("!2xHH", 1, 4) + V6.to_bytes(16, "big"))
    ct_nat = _nx(c.NXAST_CT, struct.pack("!HIHB3xH", 1, 0, 3, 0xFF, 0) + nat_range)
    for raw in (ct_alg, ct_nat):
        (got,) = _parsed_actions(_apply(raw))
        assert isinstance(got, ofwire.Opaque) and got.kind == "ct"
    # a zero-length action ends the list instead of looping or raising
    (got,) = _parsed_actions(_apply(struct.pack("!HH4x", 0, 0)))
    assert isinstance(got, ofwire.Opaque)


def test_unknown_match_field_survives_for_delete_strict() -> None:
    ip_ecn = struct.pack("!IB", 0x80001201, 2)  # OXM ip_ecn: not in FIELD_BITS
    fields = struct.pack("!IH", 0x80000A02, 0x0800) + ip_ecn
    m = struct.pack("!HH", 1, 4 + len(fields)) + fields
    m += bytes(-len(m) % 8)
    flow = Flow("l2_lookup", 5, match(eth_type=0x0800))
    (item,) = ofwire.parse_flow_stats(_entry(flow, b"", m))
    assert item.flow.match == (MatchField("eth_type", 0x800), MatchField("oxm_80001201", 2))
    assert item.flow != flow
    delete = ofwire.encode_flow_mod(item.flow, ofwire.DELETE_STRICT, 1)
    assert delete[48:48 + len(m)] == m


def test_match_masks_canonical() -> None:
    full = struct.pack("!IQQ", 0x80000510, 5, M64)  # metadata=5/all-ones
    ct_state = struct.pack("!III", 0x0001D308, 0x21, 0xFF)  # OVS's exact ct_state
    ip_src = struct.pack("!III", 0x80001708, 0x0A0000FF, 0xFFFFFF00)  # value outside mask
    fields = struct.pack("!IH", 0x80000A02, 0x0800) + ip_src + full + ct_state
    m = struct.pack("!HH", 1, 4 + len(fields)) + fields
    m += bytes(-len(m) % 8)
    flow = Flow("l2_lookup", 5, ())
    (item,) = ofwire.parse_flow_stats(_entry(flow, b"", m))
    assert item.flow.match == match(metadata=5, ct_state=0x21, eth_type=0x0800,
                                    ipv4_src=(0x0A000000, 0xFFFFFF00))
    assert item.flow.match == (MatchField("ct_state", 0x21), MatchField("eth_type", 0x800),
                               MatchField("ipv4_src", 0x0A000000, 0xFFFFFF00),
                               MatchField("metadata", 5))


def test_foreign_table_and_truncation_are_tolerated() -> None:
    flow = Flow("l2_lookup", 5, match(reg7=1), (Output(1),))
    entry = bytearray(_entry(flow))
    entry[2] = 200  # table 200 is not in the pipeline
    (item,) = ofwire.parse_flow_stats(bytes(entry))
    assert item.flow.table == "200"
    assert ofwire.encode_flow_mod(item.flow, ofwire.DELETE_STRICT, 1)[24] == 200
    two = _entry(flow) + _entry(flow)
    assert len(ofwire.parse_flow_stats(two[:-3])) == 1
    assert ofwire.parse_flow_stats(b"\x00" * 10) == []
    with pytest.raises(ValueError):
        ofwire.parse_flow_stats_reply(ofwire.barrier_request(1))


def test_opaque_meter() -> None:
    remark = struct.pack("!HHI", 24, c.OFPMF_KBPS, 9) + struct.pack("!HHII4x", 2, 16, 10, 1)
    (got,) = ofwire.parse_meter_config(remark)  # a DSCP remark band: not Loom's
    assert isinstance(got, ofwire.OpaqueMeter) and got.meter_id == 9


def test_packets_per_second_meter_round_trips() -> None:
    """The punt meters count packets: decoded back equal to what was sent, so a
    restart finds them in place and sends no meter mod."""
    meter = Meter(65546, 10, 20, pps=True)
    mod = ofwire.encode_meter_mod(meter, c.OFPMC_ADD, 1)
    (got,) = ofwire.parse_meter_config(struct.pack("!HHI", len(mod) - 8, mod[10] << 8 |
                                                   mod[11], 65546) + mod[16:])
    assert got == meter and got.pps
    kbps = Meter(7, 1000, 800)
    mod = ofwire.encode_meter_mod(kbps, c.OFPMC_ADD, 1)
    (got,) = ofwire.parse_meter_config(struct.pack("!HHI", len(mod) - 8, mod[10] << 8 |
                                                   mod[11], 7) + mod[16:])
    assert got == kbps and not got.pps


# ---------------------------------------------------------------- to_ofctl
def test_to_ofctl_literal() -> None:
    assert ofwire.to_ofctl(FLOWS[0]) == (
        "table=0,priority=100,cookie=0x300000000000007,in_port=3,"
        "actions=write_metadata:0x5/0xffffffffffff,goto_table:10")
    assert ofwire.to_ofctl(FLOWS[11]) == (
        "table=30,priority=100,cookie=0x0,ct_state=0x21/0x21,eth_type=0x800,in_port=3,"
        "ip_proto=6,nw_dst=10.1.0.0/255.255.0.0,metadata=0x5/0xffffffffffff,"
        "tcp_dst=8000/0xffc0,"
        "tcp_src=1024,actions=ct(commit,zone=reg6[0..15],table=30)")
    assert ofwire.to_ofctl(FLOWS[15]) == (
        "table=40,priority=100,cookie=0x0,eth_type=0x800,nw_dst=172.16.0.9,metadata=0x5,"
        "actions=ct(commit,zone=reg6[0..15],table=40,nat,exec(set_field:0x2/0x2->ct_mark)),"
        "set_field:fa:16:3e:00:00:09->eth_dst,set_field:10.0.0.9->nw_dst,"
        "set_field:10->ip_dscp,goto_table:50")
    assert ofwire.to_ofctl(FLOWS[-1]) == "table=80,priority=0,cookie=0x0,actions=drop"
    assert ofwire.to_ofctl(FLOWS[-3]).endswith(
        "actions=push_vlan:0x8100,set_field:0x1064->vlan_vid,set_field:5->vlan_pcp,"
        "set_field:0x4d->tun_id,set_field:192.168.0.2->tun_dst,set_field:0x1234->metadata,"
        "CONTROLLER:128,NORMAL")


# ---------------------------------------------------------------- ovs-ofctl agrees
def _ofctl(*args: str) -> str:
    assert OFCTL is not None
    return subprocess.run([OFCTL, *args], check=True, capture_output=True, text=True,
                          timeout=30).stdout


@needs_ofctl
def test_ovs_ofctl_reads_our_bytes_as_to_ofctl(tmp_path: Path) -> None:
    """`ofp-parse` of our flow_mods prints exactly what `parse-flows` prints for the
    to_ofctl text: OVS decodes our bytes to the flow the text describes."""
    flows = FLOWS + _tenant()[:39]
    (tmp_path / "msgs.bin").write_bytes(
        b"".join(ofwire.encode_flow_mod(f, ofwire.ADD, i + 1) for i, f in enumerate(flows)))
    (tmp_path / "flows.txt").write_text("".join(ofwire.to_ofctl(f) + "\n" for f in flows))
    ours = _ofctl("ofp-parse", str(tmp_path / "msgs.bin")).splitlines()
    text = [line for line in _ofctl("-O", "OpenFlow13", "parse-flows",
                                    str(tmp_path / "flows.txt")).splitlines()
            if line.startswith("OFPT_")]
    assert len(ours) == len(flows)
    assert ours == text


@needs_ofctl
def test_ovs_ofctl_decodes_our_bundle(tmp_path: Path) -> None:
    data, _ = ofwire.encode_bundle(5, FLOWS[:3], FLOWS[3:4], 100)
    (tmp_path / "bundle.bin").write_bytes(data)
    out = _ofctl("ofp-parse", str(tmp_path / "bundle.bin"))
    assert "decode error" not in out and "***" not in out
    assert out.count("ONFT_BUNDLE_ADD_MESSAGE (OF1.3)") == 4
    assert "type=OPEN_REQUEST flags=atomic ordered" in out
    assert "type=COMMIT_REQUEST flags=atomic ordered" in out
    assert out.count("OFPT_FLOW_MOD (OF1.3) (xid=0x65): DEL_STRICT priority=90,") == 1


def _fake_switch(sock: socket.socket, seen: list[bytes]) -> None:
    """Answer an OpenFlow 1.3 client (hello, echo, barrier, bundle control) and
    record every message it sends."""
    try:
        conn, _ = sock.accept()
    except OSError:
        return
    conn.settimeout(10)
    conn.sendall(struct.pack("!BBHI", 4, 0, 8, 0))
    buf = b""
    with conn:
        while True:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 8 and len(buf) >= struct.unpack_from("!H", buf, 2)[0]:
                length = struct.unpack_from("!H", buf, 2)[0]
                msg, buf = buf[:length], buf[length:]
                seen.append(msg)
                mtype, xid = msg[1], struct.unpack_from("!I", msg, 4)[0]
                if mtype == 2:  # echo request
                    conn.sendall(struct.pack("!BBHI", 4, 3, length, xid) + msg[8:])
                elif mtype == 20:  # barrier
                    conn.sendall(struct.pack("!BBHI", 4, 21, 8, xid))
                elif mtype == 4 and struct.unpack_from("!I", msg, 12)[0] == 2300:
                    bid, ctrl, flags = struct.unpack_from("!IHH", msg, 16)
                    conn.sendall(msg[:1] + msg[1:20] + struct.pack("!HH", ctrl + 1, flags))


@needs_ofctl
def test_ovs_ofctl_sends_our_bytes(tmp_path: Path) -> None:
    """What `ovs-ofctl add-flows` sends for to_ofctl(flow) is byte for byte our
    encoding: same match order, same action encodings, nothing left to normalise."""
    flows = FLOWS + _tenant()[:39]
    (tmp_path / "flows.txt").write_text("".join(ofwire.to_ofctl(f) + "\n" for f in flows))
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    seen: list[bytes] = []
    server = threading.Thread(target=_fake_switch, args=(sock, seen), daemon=True)
    server.start()
    try:
        _ofctl("--no-names", "-O", "OpenFlow13", "add-flows",
               f"tcp:127.0.0.1:{sock.getsockname()[1]}", str(tmp_path / "flows.txt"))
    finally:
        server.join(10)
        sock.close()
    sent = [m for m in seen if m[1] == c.OFPT_FLOW_MOD]
    assert len(sent) == len(flows)
    for msg, flow in zip(sent, flows, strict=True):
        xid = struct.unpack_from("!I", msg, 4)[0]
        assert msg == ofwire.encode_flow_mod(flow, ofwire.ADD, xid), ofwire.to_ofctl(flow)


# ---------------------------------------------------------------- os-ken fast path
def test_oskenfast_keeps_raw_body() -> None:
    flows = _tenant()[:300]
    (msg,) = ofwire.flow_stats_reply(21, flows)
    desc = struct.pack("!BBHIHH4x", 4, 19, 16 + 1056, 22, ofp.OFPMP_DESC, 0) + bytes(1056)
    oskenfast.install_raw_multipart_parsers()
    oskenfast.install_raw_multipart_parsers()  # idempotent
    try:
        assert oskenfast.installed()
        got = okparser.msg(DP, 4, ofp.OFPT_MULTIPART_REPLY, len(msg), 21, bytearray(msg))
        assert isinstance(got, parser.OFPFlowStatsReply)
        assert got.type == ofp.OFPMP_FLOW and got.flags == 0 and got.xid == 21
        assert repr(got.body) == "LazyBody(unparsed)"
        assert [e.flow for e in ofwire.parse_flow_stats_reply(got.buf)] == flows
        assert len(got.body) == 300 and got.body[0].priority == flows[0].priority
        other = okparser.msg(DP, 4, ofp.OFPT_MULTIPART_REPLY, len(desc), 22, bytearray(desc))
        assert isinstance(other, parser.OFPDescStatsReply)  # untouched types still parse
        from os_ken.controller import ofp_event
        assert type(ofp_event.ofp_msg_to_ev(got)).__name__ == "EventOFPFlowStatsReply"
    finally:
        oskenfast.uninstall_raw_multipart_parsers()
    assert not oskenfast.installed()
    plain = okparser.msg(DP, 4, ofp.OFPT_MULTIPART_REPLY, len(msg), 21, bytearray(msg))
    assert isinstance(plain.body, list) and len(plain.body) == 300


def test_streamed_bundle_chunks_equal_the_one_shot_bundle():
    """The reconciler streams chunks; they must be byte-identical to encode_bundle."""
    from controller import ofwire as w
    from controller import pipeline as pl
    from controller.flows import Output, match

    adds = [pl.OUTPUT.flow("deliver", match(reg7=i), actions=(Output(i),)) for i in range(1, 40)]
    deletes = [pl.OUTPUT.flow("deliver", match(reg7=i)) for i in range(100, 105)]
    whole, next_xid = w.encode_bundle(7, adds, deletes, 1000)
    chunks = list(w.encode_bundle_chunks(7, adds, deletes, 1000, chunk=8))
    assert len(chunks) > 3
    commit = w.bundle_commit(next_xid - 1, 7, w.BUNDLE_FLAGS)
    assert b"".join(chunks) + commit == whole


# ---------------------------------------------------------------- security-group wire forms
def _flow_of(m: tuple[MatchField, ...], *actions: Any, goto: str | None = None) -> Flow:
    return Flow("egress_acl", 100, m, tuple(actions), goto=goto)


def _round_trip(flow: Flow) -> Flow:
    (item,) = ofwire.parse_flow_stats(ofwire.flow_stats_entry(flow))
    return item.flow


def test_conj_id_is_nxm1_field_37() -> None:
    """NXM_NX_CONJ_ID is (0x0001, 37) in ovs-fields(7) and os-ken's nicira_ext, 32 bits,
    written before in_port as OVS's nx_put_raw does (ovs-ofctl sends the same bytes)."""
    m = match(conj_id=0x12345678, in_port=3)
    assert ofwire.encode_match(m) == struct.pack(
        "!HHIIII", 1, 20, 0x00014A04, 0x12345678, 0x80000004, 3) + bytes(4)
    assert ofwire.encode_match(m) == osken_serialize_match(m)
    assert ofwire.decode_match(ofwire.encode_match(m))[0] == m
    assert match_text(_flow_of(m)) == "conj_id=305419896,in_port=3"


def osken_serialize_match(m: tuple[MatchField, ...]) -> bytes:
    buf = bytearray()
    length = osken_flow_mod(_flow_of(m), ofwire.ADD).match.serialize(buf, 0)
    return bytes(buf[:length + (-length % 8)])


def test_conjunction_action_bytes() -> None:
    """NXAST_CONJUNCTION (subtype 34): 0-based clause on the wire, as os-ken serialises
    it and as ovs-ofctl sends conjunction(7,1/2)."""
    a = Conjunction(7, 1, 2)
    raw = ofwire.encode_actions((a,))
    assert raw == struct.pack("!HHIHBBI", 0xFFFF, 16, 0x2320, 34, 0, 2, 7)
    assert raw == bytes.fromhex("ffff0010000023200022000200000007")  # ovs-ofctl's bytes
    ok = parser.NXActionConjunction(clause=0, n_clauses=2, id_=7)
    buf = bytearray()
    ok.serialize(buf, 0)
    assert raw == bytes(buf)
    for act in (a, Conjunction(0xFFFFFFFF, 64, 64), Conjunction(0, 3, 5)):
        assert _parsed_actions(_apply(ofwire.encode_actions((act,)))) == (act,)
    assert ofwire.to_ofctl(Flow("egress_acl", 90, match(reg6=1),
                                (Conjunction(7, 1, 2), Conjunction(9, 2, 3)))) == (
        "table=30,priority=90,cookie=0x0,reg6=0x1,"
        "actions=conjunction(7,1/2),conjunction(9,2/3)")


@pytest.mark.parametrize("args", [(7, 0, 2), (7, 3, 2), (7, 1, 1), (7, 1, 65), (-1, 1, 2),
                                  (1 << 32, 1, 2)])
def test_conjunction_refuses_what_ovs_refuses(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        Conjunction(*args)


def test_foreign_conjunction_stays_opaque() -> None:
    """Wire clause 2 of 2 (k=3/2) is no Conjunction Loom could have sent."""
    raw = struct.pack("!HHIHBBI", 0xFFFF, 16, 0x2320, 34, 2, 2, 7)
    (got,) = _parsed_actions(_apply(raw))
    assert isinstance(got, ofwire.Opaque) and got.raw == raw


def test_ct_state_bits_and_canonical_forms() -> None:
    """ct_state is 8 bits inside OVS, 32 on the wire. Exact is written value/0xff (what
    ovs-ofctl sends and OVS reports), so an exact match, the same with mask 0xff and
    the reported TLV are one MatchField; a partial mask round-trips as is."""
    assert (CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK) == (1, 2, 4, 8, 0x10, 0x20)
    assert FIELD_BITS["ct_state"] == 8
    exact = match(ct_state=0x22)
    assert exact == match(ct_state=(0x22, 0xFF)) == match(ct_state=(0x22, -1)) == \
        (MatchField("ct_state", 0x22),)
    tlv = struct.pack("!III", 0x0001D308, 0x22, 0xFF)
    assert ofwire.encode_match(exact) == struct.pack("!HH", 1, 16) + tlv
    assert ofwire.decode_match(ofwire.encode_match(exact))[0] == exact
    for reported in (tlv, struct.pack("!III", 0x0001D308, 0x22, 0xFFFFFFFF),
                     struct.pack("!II", 0x0001D204, 0x22)):
        m = struct.pack("!HH", 1, 4 + len(reported)) + reported
        assert ofwire.decode_match(m + bytes(-len(m) % 8))[0] == exact
    # +trk-inv-rpl
    sg = match(ct_state=(CT_TRK, CT_TRK | CT_INV | CT_RPL))
    assert sg == (MatchField("ct_state", 0x20, 0x38),)
    assert ofwire.encode_match(sg)[4:16] == struct.pack("!III", 0x0001D308, 0x20, 0x38)
    assert ofwire.decode_match(ofwire.encode_match(sg))[0] == sg
    assert match(ct_state=(0x27, 0x38)) == sg  # the value is masked
    assert match_text(_flow_of(sg)) == "ct_state=0x20/0x38"
    assert match_text(_flow_of(exact)) == "ct_state=0x22"
    for flow in (_flow_of(sg), _flow_of(exact), _flow_of(match(ct_state=0))):
        assert _round_trip(flow) == flow
    with pytest.raises(ValueError):
        match(ct_state=0x100)  # ovs-ofctl: "unknown ct_state flag(s)"


@needs_ofctl
def test_ct_state_flag_syntax_is_our_value_mask(tmp_path: Path) -> None:
    """OVS reads ovs-ofctl's flag syntax and our value/mask text as one flow."""
    cases: list[tuple[str, int | tuple[int, int]]] = [
        ("+trk-inv-rpl", (CT_TRK, CT_TRK | CT_INV | CT_RPL)),
        ("+trk+est", (CT_TRK | CT_EST, CT_TRK | CT_EST)),
        ("-trk", (0, CT_TRK)),
        ("+trk+est-rel-inv", (CT_TRK | CT_EST, CT_TRK | CT_EST | CT_REL | CT_INV)),
        ("0x22/0xff", CT_TRK | CT_EST),
        ("0x22", (CT_TRK | CT_EST, 0xFF))]
    theirs = "".join(f"table=30,ct_state={text},actions=drop\n" for text, _ in cases)
    ours = "".join(ofwire.to_ofctl(Flow("egress_acl", 32768, match(ct_state=spec))) + "\n"
                   for _, spec in cases)
    out = []
    for name, text in (("theirs", theirs), ("ours", ours)):
        (tmp_path / name).write_text(text)
        out.append([line for line in _ofctl("-O", "OpenFlow13", "parse-flows",
                                            str(tmp_path / name)).splitlines()
                    if line.startswith("OFPT_")])
    assert len(out[0]) == len(cases) and out[0] == out[1]


CT_FORMS = [
    (Ct(table="egress_acl", zone=5), "ct(zone=5,table=30)"),
    (Ct(commit=True, zone=5), "ct(commit,zone=5)"),
    (Ct(commit=True), "ct(commit)"),
    (Ct(commit=True, zone=5, set_mark=1), "ct(commit,zone=5,exec(set_field:0x1->ct_mark))"),
    (Ct(commit=True, zone=5, set_mark=1, mark_mask=1),
     "ct(commit,zone=5,exec(set_field:0x1/0x1->ct_mark))"),
    (Ct(commit=True, zone_src="reg6", set_mark=0, mark_mask=1),
     "ct(commit,zone=reg6[0..15],exec(set_field:0x0/0x1->ct_mark))"),
    (Ct(table="egress_acl", zone_src="reg6"), "ct(zone=reg6[0..15],table=30)"),
]


@pytest.mark.parametrize(("ct", "text"), CT_FORMS, ids=lambda x: str(x))
def test_ct_forms_round_trip(ct: Ct, text: str) -> None:
    flow = _flow_of(match(eth_type=0x0800), ct)
    assert ofwire.to_ofctl(flow).endswith(f"actions={text}")
    assert _round_trip(flow) == flow
    assert ofwire.encode_flow_mod(flow, ofwire.ADD, 1) == \
        osken_serialize(osken_flow_mod(flow, ofwire.ADD, 1))


def test_ct_forms_bytes_are_what_ovs_ofctl_sends() -> None:
    """Captured from `ovs-ofctl -O OpenFlow13 add-flow` (3.1) for the same text."""
    nx_ct = "ffff0018000023200023"
    want = {
        CT_FORMS[0][0]: nx_ct + "0000000000000005" + "1e0000000000",
        CT_FORMS[1][0]: nx_ct + "0001000000000005" + "ff0000000000",
        CT_FORMS[3][0]: nx_ct.replace("0018", "0028") + "0001000000000005ff0000000000"
        "001900100001d6040000000100000000",
        CT_FORMS[4][0]: nx_ct.replace("0018", "0030") + "0001000000000005ff0000000000"
        "ffff001800002320000700000001d6040000000000000001",
    }
    for ct, hexed in want.items():
        assert ofwire.encode_actions((ct,)) == bytes.fromhex(hexed)


def test_ct_mark_match_with_mask() -> None:
    m = match(ct_mark=(0x3, 0x1))
    assert m == (MatchField("ct_mark", 0x1, 0x1),)
    assert ofwire.encode_match(m)[4:16] == struct.pack("!III", 0x0001D708, 1, 1)
    assert match_text(_flow_of(m)) == "ct_mark=0x1/0x1"
    assert match(ct_mark=(5, 0xFFFFFFFF)) == (MatchField("ct_mark", 5),)
    assert _round_trip(_flow_of(m)) == _flow_of(m)


MASKED_CASES = [
    # (field, given value, given mask, canonical value, canonical mask, to_ofctl text)
    ("tcp_dst", 0x1F4F, 0xFFF0, 0x1F40, 0xFFF0, "tcp_dst=8000/0xfff0"),
    ("tcp_src", 1024, 0xFC00, 1024, 0xFC00, "tcp_src=1024/0xfc00"),
    ("udp_dst", 0x1000, 0xF000, 0x1000, 0xF000, "udp_dst=4096/0xf000"),
    ("udp_src", 53, 0xFFFF, 53, None, "udp_src=53"),
    ("tcp_dst", 80, 0, None, None, ""),
    ("ipv4_src", ip4("10.1.2.3"), 0xFFFFFF00, ip4("10.1.2.0"), 0xFFFFFF00,
     "nw_src=10.1.2.0/255.255.255.0"),
    ("ipv4_dst", ip4("10.1.2.3"), 0xFFFFFFFF, ip4("10.1.2.3"), None, "nw_dst=10.1.2.3"),
    ("ipv6_src", ip6("fd00:1:2:3::9"), ~((1 << 64) - 1), ip6("fd00:1:2:3::"),
     ((1 << 64) - 1) << 64, "ipv6_src=fd00:1:2:3::/ffff:ffff:ffff:ffff::"),
    ("ipv6_dst", ip6("fd00::1"), (1 << 128) - 1, ip6("fd00::1"), None, "ipv6_dst=fd00::1"),
    ("ipv6_dst", ip6("2001:db8::"), ~((1 << 96) - 1), ip6("2001:db8::"),
     ((1 << 32) - 1) << 96, "ipv6_dst=2001:db8::/ffff:ffff::"),
]


@pytest.mark.parametrize("case", MASKED_CASES, ids=lambda c: f"{c[0]}/{c[2]:#x}")
def test_masked_matches_are_canonical_and_round_trip(case: tuple[Any, ...]) -> None:
    name, value, mask, cvalue, cmask, text = case
    m = match(**{name: (value, mask)})
    assert m == (() if cvalue is None else (MatchField(name, cvalue, cmask),))
    flow = _flow_of(m)
    assert match_text(flow) == text
    assert ofwire.decode_match(ofwire.encode_match(m))[0] == m
    assert _round_trip(flow) == flow
    # what a switch would report with the value not masked, or an all-ones mask
    if cvalue is not None:
        from controller.ofwire.fields import FIELDS
        spec = FIELDS[name]
        n = spec.nbytes
        wire_mask = cmask if cmask is not None else (1 << (8 * n)) - 1
        tlv = spec.masked_header.to_bytes(4, "big") + (value | ~wire_mask & (
            (1 << 8 * n) - 1)).to_bytes(n, "big") + wire_mask.to_bytes(n, "big")
        raw = struct.pack("!HH", 1, 4 + len(tlv)) + tlv
        assert ofwire.decode_match(raw + bytes(-len(raw) % 8))[0] == m


def test_icmp_type_and_code_are_exact_only() -> None:
    for prefix, eth, proto in (("icmpv4", 0x0800, 1), ("icmpv6", 0x86DD, 58)):
        m = match(eth_type=eth, ip_proto=proto, **{f"{prefix}_type": 3, f"{prefix}_code": 4})
        assert _round_trip(_flow_of(m)) == _flow_of(m)
        assert match(**{f"{prefix}_type": (3, 0xFF)}) == (MatchField(f"{prefix}_type", 3),)
        for f in ("type", "code"):
            with pytest.raises(ValueError):
                match(**{f"{prefix}_{f}": (3, 0xF0)})


def test_match_refuses_values_wider_than_the_field() -> None:
    for spec in ({"tcp_dst": 0x10000}, {"reg7": -1}, {"ipv4_src": (1 << 32, 0xFF)}):
        with pytest.raises(ValueError):
            match(**spec)


# Prerequisites ovs-ofctl needs before a field can be matched.
_PREREQ = {
    "vlan_pcp": "vlan_tci=0x1000/0x1000", "ip_dscp": "ip", "nw_ttl": "ip", "ip_proto": "ip",
    "ipv4_src": "ip",
    "ipv4_dst": "ip", "ipv6_src": "ipv6", "ipv6_dst": "ipv6", "tcp_src": "tcp",
    "tcp_dst": "tcp", "udp_src": "udp", "udp_dst": "udp", "icmpv4_type": "icmp",
    "icmpv4_code": "icmp", "icmpv6_type": "icmp6", "icmpv6_code": "icmp6",
    "ipv6_nd_target": "icmp6,icmp_type=135", "ipv6_nd_sll": "icmp6,icmp_type=135",
    "ipv6_nd_tll": "icmp6,icmp_type=136", "arp_op": "arp", "arp_spa": "arp",
    "arp_tpa": "arp", "arp_sha": "arp", "arp_tha": "arp",
}


@needs_ofctl
def test_unmaskable_fields_are_the_ones_ovs_refuses_to_mask() -> None:
    """flows.UNMASKABLE is exactly the set of fields ovs-ofctl refuses a partial mask on."""
    refused = set()
    for name in FIELD_BITS:
        text = match_text(_flow_of((MatchField(name, 0, 1),)))
        prereq = _PREREQ.get(name)
        spec = f"{prereq},{text}" if prereq else text
        assert OFCTL is not None
        r = subprocess.run([OFCTL, "-O", "OpenFlow13", "parse-flow", f"{spec},actions=drop"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            refused.add(name)
    assert refused == UNMASKABLE
    for name in UNMASKABLE:
        with pytest.raises(ValueError):
            match(**{name: (0, 1)})


# ---------------------------------------------------------------- ct(nat(...)) with addresses
SNAT_IP, DNAT_IP = ip4("198.51.100.10"), ip4("10.0.0.5")
# (Ct, to_ofctl text, what `ovs-ofctl -O OpenFlow13 add-flow` 3.1 sends for that text)
NAT_FORMS: list[tuple[Ct, str, str]] = [
    (Ct(commit=True, zone=5, nat_spec=Nat("src", SNAT_IP)),
     "ct(commit,zone=5,nat(src=198.51.100.10))",
     "ffff00300000232000230001000000000005ff0000000000"
     "ffff0018000023200024000000010001c633640a00000000"),
    (Ct(commit=True, zone=7, table="l3", nat_spec=Nat("src", SNAT_IP)),
     "ct(commit,zone=7,table=40,nat(src=198.51.100.10))",
     "ffff00300000232000230001000000000007280000000000"
     "ffff0018000023200024000000010001c633640a00000000"),
    (Ct(commit=True, zone=7, table="l3_resolve", nat_spec=Nat("dst", DNAT_IP, port_min=80)),
     "ct(commit,zone=7,table=45,nat(dst=10.0.0.5:80))",
     "ffff003000002320002300010000000000072d0000000000"
     "ffff00180000232000240000000200110a00000500500000"),
    (Ct(commit=True, zone=5, table="l3",
        nat_spec=Nat("src", ip4("1.2.3.4"), ip4("1.2.3.9"), 1000, 2000, persistent=True,
                     random=True)),
     "ct(commit,zone=5,table=40,nat(src=1.2.3.4-1.2.3.9:1000-2000,persistent,random))",
     "ffff00380000232000230001000000000005280000000000"
     "ffff0020000023200024000000150033010203040102030903e807d000000000"),
    (Ct(commit=True, zone=5, nat_spec=Nat("src", ip4("1.2.3.4"), hash=True)),
     "ct(commit,zone=5,nat(src=1.2.3.4,hash))",
     "ffff00300000232000230001000000000005ff0000000000"
     "ffff00180000232000240000000900010102030400000000"),
    (Ct(commit=True, zone=5, nat_spec=Nat("dst", DNAT_IP, ip4("10.0.0.6"))),
     "ct(commit,zone=5,nat(dst=10.0.0.5-10.0.0.6))",
     "ffff00300000232000230001000000000005ff0000000000"
     "ffff00180000232000240000000200030a0000050a000006"),
    (Ct(commit=True, zone_src="reg6", table="l3", set_mark=1, mark_mask=1,
        nat_spec=Nat("src", SNAT_IP, port_min=1024, port_max=65535)),
     "ct(commit,zone=reg6[0..15],table=40,nat(src=198.51.100.10:1024-65535),"
     "exec(set_field:0x1/0x1->ct_mark))",
     "ffff0048000023200023000100010c04000f280000000000"
     "ffff0018000023200024000000010031c633640a0400ffff"
     "ffff001800002320000700000001d6040000000000000001"),
    # plain ct(nat) is unchanged
    (Ct(zone=7, table="l3_resolve", nat=True), "ct(zone=7,table=45,nat)",
     "ffff002800002320002300000000000000072d0000000000"
     "ffff0010000023200024000000000000"),
]


def _nat_flow(ct: Ct, priority: int = 100) -> Flow:
    # OVS accepts nat only in a flow matching IP (check_NAT: OFPBAC_MATCH_INCONSISTENT)
    return Flow("l3", priority, match(eth_type=0x0800), (ct,))


def _osken_ct_bytes(ct: Ct) -> bytes:
    """os-ken's NXActionCT with its NXActionNAT (oskenref knows only plain nat). os-ken
    writes the right lengths but leaves out the NAT's trailing pad bytes when it is the
    last nested action: they are zeros up to the length the CT header declares."""
    assert ct.nat_spec is not None
    n = ct.nat_spec
    flags = (1 if n.kind == "src" else 2) | 4 * n.persistent | 8 * n.hash | 16 * n.random
    nested: list[Any] = [parser.NXActionNAT(
        flags=flags, range_ipv4_min=str(ipaddress.IPv4Address(n.ip_min)),
        range_ipv4_max="" if n.ip_max is None else str(ipaddress.IPv4Address(n.ip_max)),
        range_proto_min=n.port_min, range_proto_max=n.port_max)]
    if ct.set_mark is not None:
        for ofs, nb, v in encode.load_segments(ct.set_mark, ct.mark_mask or 0xFFFFFFFF):
            nested.append(parser.NXActionRegLoad(ofs_nbits=(ofs << 6) | (nb - 1),
                                                 dst="ct_mark", value=v))
    act = parser.NXActionCT(
        flags=1, zone_src=ct.zone_src or "", zone_ofs_nbits=15 if ct.zone_src else ct.zone,
        recirc_table=0xFF if ct.table is None else encode._table_id(ct.table), alg=0,
        actions=nested)
    buf = bytearray()
    act.serialize(buf, 0)
    declared = struct.unpack_from("!H", buf, 2)[0]
    return bytes(buf) + bytes(declared - len(buf))


@pytest.mark.parametrize(("ct", "text", "hexed"), NAT_FORMS, ids=lambda x: str(x)[:60])
def test_ct_nat_forms(ct: Ct, text: str, hexed: str) -> None:
    """ct(nat(src|dst=IP[-IP][:PORT[-PORT]])): to_ofctl text, bytes ovs-ofctl sends for it,
    os-ken's bytes, and decode(encode(flow)) == flow."""
    flow = _nat_flow(ct)
    assert ofwire.to_ofctl(flow).endswith(f"actions={text}")
    raw = ofwire.encode_actions((ct,))
    assert raw == bytes.fromhex(hexed)
    if ct.nat_spec is not None:
        assert raw == _osken_ct_bytes(ct)
    assert _round_trip(flow) == flow
    assert _parsed_actions(_apply(raw)) == (ct,)
    assert hash(ct) == hash(_round_trip(flow).actions[0])


def test_nat_equal_range_ends_are_canonical() -> None:
    """ovs-ofctl sends (and OVS keeps and dumps back) a max equal to its min for
    `nat(src=1.2.3.4-1.2.3.4:80-80)`, but prints it as `nat(src=1.2.3.4:80)`: Nat drops
    such a max, so what OVS reports decodes to the Nat the compiler builds."""
    sent = bytes.fromhex("ffff00380000232000230001000000000005ff0000000000"
                         "ffff002000002320002400000001003301020304010203040050005000000000")
    want = Ct(commit=True, zone=5, nat_spec=Nat("src", ip4("1.2.3.4"), port_min=80))
    assert _parsed_actions(_apply(sent)) == (want,)
    assert Nat("src", ip4("1.2.3.4"), ip4("1.2.3.4"), 80, 80) == want.nat_spec
    assert ofwire.to_ofctl(_nat_flow(want)).endswith("actions=ct(commit,zone=5,"
                                                     "nat(src=1.2.3.4:80))")


@pytest.mark.parametrize("kw", [
    {"kind": "both", "ip_min": 1}, {"kind": "src", "ip_min": 0},
    {"kind": "src", "ip_min": 1 << 32}, {"kind": "src", "ip_min": 9, "ip_max": 8},
    {"kind": "src", "ip_min": 1, "port_max": 80}, {"kind": "src", "ip_min": 1, "port_min": 0},
    {"kind": "dst", "ip_min": 1, "port_min": 80, "port_max": 79},
    {"kind": "dst", "ip_min": 1, "port_min": 1 << 16},
    {"kind": "src", "ip_min": 1, "hash": True, "random": True},
])
def test_nat_refuses_what_ovs_cannot_carry(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Nat(**kw)


def test_ct_nat_spec_needs_commit_and_excludes_plain_nat() -> None:
    """ovs-vswitchd (3.1) refuses ct(zone=7,nat(dst=...)) without commit
    ("CT action requires commit flag if actions other than NAT without arguments are
    specified", OFPBAC_BAD_ARGUMENT), which would fail the whole bundle."""
    n = Nat("dst", DNAT_IP, port_min=80)
    with pytest.raises(ValueError):
        Ct(zone=7, nat_spec=n)
    with pytest.raises(ValueError):
        Ct(commit=True, nat=True, nat_spec=n)
    assert Ct(commit=True, nat=True).nat_spec is None  # existing constructions unchanged
    assert len({Ct(commit=True, nat_spec=n), Ct(commit=True, nat_spec=n)}) == 1


def test_foreign_nat_forms_stay_opaque() -> None:
    """NAT forms Loom never sends decode as an opaque ct (never equal to a desired flow,
    so the reconciler replaces it), not as a Ct that would encode differently."""
    head = struct.pack("!HIHB3xH", 1, 0, 5, 0xFF, 0)
    ip = struct.pack("!I", SNAT_IP)
    nat_src = _nx(c.NXAST_NAT, struct.pack("!2xHH", 1, 1) + ip)
    mark = ofwire.encode_actions((Ct(commit=True, set_mark=1),))[24:]
    cases = [
        _nx(c.NXAST_NAT, struct.pack("!2xHH", 3, 1) + ip),  # src and dst
        _nx(c.NXAST_NAT, struct.pack("!2xHH", 1, 0)),  # nat(src) without an address
        _nx(c.NXAST_NAT, struct.pack("!2xHH", 0x19, 1) + ip),  # hash and random
        _nx(c.NXAST_NAT, struct.pack("!2xHH", 0x41, 1) + ip),  # unknown flag
        _nx(c.NXAST_NAT, struct.pack("!2xHH", 1, 2) + ip),  # max without min
        mark + nat_src,  # nat after exec(): re-encoding would reorder
        nat_src + nat_src,
    ]
    for body in cases:
        raw = _nx(c.NXAST_CT, head + body)
        (got,) = _parsed_actions(_apply(raw))
        assert isinstance(got, ofwire.Opaque) and got.kind == "ct", body.hex()
        assert got.raw == raw
    # nat with an address but no commit (ovs-vswitchd refuses it anyway)
    raw = _nx(c.NXAST_CT, struct.pack("!HIHB3xH", 0, 0, 5, 0xFF, 0) + nat_src)
    (got,) = _parsed_actions(_apply(raw))
    assert isinstance(got, ofwire.Opaque)
    # truncated range: present says a port follows, the action ends
    short = struct.pack("!HHIH2xHH", 0xFFFF, 16, c.NX_VENDOR_ID, c.NXAST_NAT, 1, 0x11)
    raw = _nx(c.NXAST_CT, head + short)
    (got,) = _parsed_actions(_apply(raw))
    assert isinstance(got, ofwire.Opaque)


@needs_ofctl
def test_ovs_ofctl_sends_our_nat_bytes(tmp_path: Path) -> None:
    """`ovs-ofctl add-flows` of to_ofctl text sends our flow_mods byte for byte, and
    `ofp-parse` of our bytes prints what `parse-flows` prints for the text."""
    flows = [_nat_flow(ct, 100 + i) for i, (ct, _, _) in enumerate(NAT_FORMS)]
    (tmp_path / "flows.txt").write_text("".join(ofwire.to_ofctl(f) + "\n" for f in flows))
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    seen: list[bytes] = []
    server = threading.Thread(target=_fake_switch, args=(sock, seen), daemon=True)
    server.start()
    try:
        _ofctl("--no-names", "-O", "OpenFlow13", "add-flows",
               f"tcp:127.0.0.1:{sock.getsockname()[1]}", str(tmp_path / "flows.txt"))
    finally:
        server.join(10)
        sock.close()
    sent = [m for m in seen if m[1] == c.OFPT_FLOW_MOD]
    assert len(sent) == len(flows)
    for msg, flow in zip(sent, flows, strict=True):
        xid = struct.unpack_from("!I", msg, 4)[0]
        assert msg == ofwire.encode_flow_mod(flow, ofwire.ADD, xid), ofwire.to_ofctl(flow)
    (tmp_path / "msgs.bin").write_bytes(
        b"".join(ofwire.encode_flow_mod(f, ofwire.ADD, i + 1) for i, f in enumerate(flows)))
    ours = _ofctl("ofp-parse", str(tmp_path / "msgs.bin")).splitlines()
    text = [line for line in _ofctl("-O", "OpenFlow13", "parse-flows",
                                    str(tmp_path / "flows.txt")).splitlines()
            if line.startswith("OFPT_")]
    assert len(ours) == len(flows) and ours == text
