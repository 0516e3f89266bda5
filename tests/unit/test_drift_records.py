"""Drift detection's pure parts (controller/drift.py, the flow monitor request)."""

from __future__ import annotations

import struct

from controller import ofwire
from controller import pipeline as pl
from controller.drift import DriftRecord, describe, flow_drift
from controller.flows import Flow, Output, match


def _flow(port: int, out: int, cookie: int = 0x3000000000001) -> Flow:
    """An ARP answer for address `port` sent to `out`: one key per `port`."""
    return pl.ARP_RESPONDER.flow(
        "reply", match(metadata=port, eth_type=0x0806, arp_op=1, arp_tpa=port),
        actions=(Output(out),), cookie=cookie)


def test_missing_extra_and_modified_are_told_apart() -> None:
    a, b, c = _flow(1, 1), _flow(2, 1), _flow(3, 1)
    c2 = _flow(3, 2)
    believed = {f.key: f for f in (a, b, c)}
    actual = {f.key: f for f in (b, c2, _flow(4, 1))}
    missing, extra, modified = flow_drift(believed, actual)
    assert missing == [a] and extra == [_flow(4, 1)] and modified == [(c, c2)]
    items = describe(missing, extra, modified, lambda cookie: {"kind": "port"}, str, True)
    assert [i.kind for i in items] == ["missing", "extra", "modified"]
    assert items[2].expected == str(c) and items[2].what == str(c2)
    assert all(i.repaired for i in items)


def test_a_record_is_in_sync_once_repaired_or_clean() -> None:
    record = DriftRecord("0000000000000001")
    record.checked([], False)
    assert record.view()["in_sync"] and record.view()["drift_found"] == 0
    items = describe([_flow(1, 1)], [], [], lambda c: None, str, False)
    record.checked(items, False)
    assert not record.view()["in_sync"] and record.view()["drift_found"] == 1
    record.checked([], False)
    assert record.view()["in_sync"] and len(record.view()["drift"]) == 1  # history kept


def test_flow_monitor_request_is_what_ovs_answers() -> None:
    """The layout OVS 3.1 accepted (checked against a real ovs-vswitchd): an OF1.3
    experimenter multipart request, ONF, exp_type 1870, one monitor on every table
    for add/delete/modify by others with the flows' instructions, with an empty OXM
    match (match_len 4)."""
    data = ofwire.flow_monitor_request(7)
    version, kind, length, xid, mp_type, flags = struct.unpack("!BBHIHH4x", data[:16])
    assert (version, kind, length, xid, mp_type, flags) == (4, 18, len(data), 7, 0xFFFF, 0)
    assert struct.unpack("!II", data[16:24]) == (0x4F4E4600, 1870)
    mid, mflags, match_len, out_port, table = struct.unpack("!IHHIB3x", data[24:40])
    assert (mflags, match_len, out_port, table) == (0b11110, 4, 0xFFFFFFFF, 0xFF)
    assert data[40:] == struct.pack("!HH4x", 1, 4)


def test_a_flow_monitor_update_decodes_to_the_flow() -> None:
    """The bytes of a real update from OVS 3.1 (ovs-ofctl add-flow table=3,priority=5,
    ip,actions=drop with ONFFMF_ACTIONS: no instruction is 'drop')."""
    raw = bytes.fromhex(
        "0413004000000000ffff0000000000004f4e46000000074e"
        "002800000000000500000000000a030000000000000000000001000a80000a020800000000000000")
    ((event, flow),) = ofwire.parse_flow_monitor_update(raw)
    assert event == 0 and flow.priority == 5 and flow.cookie == 0
    assert [(m.field, m.value) for m in flow.match] == [("eth_type", 0x0800)]
    assert flow.actions == () and flow.goto is None


def test_the_echo_of_our_own_push_is_told_apart_from_a_change() -> None:
    """OVS answers each flow_mod of this connection with an abbreviated update (event 3,
    the xid), although ONFFMF_OWN was not asked for: those must not start a check (each
    cost a 0.1 s wait per push before this was seen: 103 ms per ?wait=true write)."""
    head = bytes.fromhex("0413002000000000ffff0000000000004f4e46000000074e")
    own = head + struct.pack("!HHI", 8, 3, 0x1234)
    assert ofwire.flow_monitor_only_own(own)
    full = bytes.fromhex(
        "0413004000000000ffff0000000000004f4e46000000074e"
        "002800000000000500000000000a030000000000000000000001000a80000a020800000000000000")
    assert not ofwire.flow_monitor_only_own(full)
    assert not ofwire.flow_monitor_only_own(own + full[24:])
