"""Drift of groups and meters (issue 15; controller/drift.py): the pure comparison of
what a switch holds with what Loom's last push left, how it is described and recorded,
and how a noted difference makes the next push put it right (controller/reconciler.py).
"""

from __future__ import annotations

import struct
import threading
from types import MappingProxyType
from typing import Any, Optional

from controller import ofwire
from controller import pipeline as pl
from controller.compiler.core import DesiredSwitch
from controller.drift import (
    GROUP_METER,
    DriftRecord,
    describe,
    describe_groups_meters,
    group_meter_drift,
)
from controller.flows import Bucket, Group, Meter, Output, SetField
from controller.ofwire.model import OpaqueMeter
from controller.reconciler import SwitchSync

NET_COOKIE = pl.cookie(pl.Owner.NETWORK, 7)
PORT_COOKIE = pl.cookie(pl.Owner.PORT, 9)
POLICY_COOKIE = pl.cookie(pl.Owner.QOS_POLICY, 3)


def _flood(gid: int, *ports: int, owner: int = NET_COOKIE) -> Group:
    return Group(gid, "all", tuple(Bucket((SetField("tunnel_id", 5), Output(p)))
                                   for p in ports), cookie_owner=owner)


def _punt(ofport: int, rate: int = pl.PUNT_RATE_PPS) -> Meter:
    return Meter(pl.punt_meter_id(ofport), rate, pl.PUNT_BURST_PACKETS, pps=True)


def _qos(mid: int, kbps: int) -> Meter:
    return Meter(mid, kbps, kbps // 10, owner=POLICY_COOKIE)


def _as_read(g: Group) -> Group:
    """A group as a group desc read returns it: no owner on the wire."""
    return Group(g.group_id, g.type, g.buckets)


def _meter_read(m: Meter) -> Meter:
    return Meter(m.meter_id, m.rate_kbps, m.burst_kb, pps=m.pps)


def test_what_the_switch_holds_as_installed_is_no_drift() -> None:
    """Owners are not on the wire: a read equals what was pushed without them."""
    groups = {1: _flood(1, 3, 4), 2: _flood(2, 5)}
    meters = {m.meter_id: m for m in (_punt(3), _punt(4), _qos(17, 1000))}
    drift = group_meter_drift(groups, {i: _as_read(g) for i, g in groups.items()},
                              meters, {i: _meter_read(m) for i, m in meters.items()})
    assert not drift and len(drift) == 0 and drift.signature() == frozenset()


def test_missing_extra_and_modified_are_told_apart_for_groups_and_meters() -> None:
    g1, g2, g3 = _flood(1, 3), _flood(2, 4), _flood(3, 5)
    g2_by_hand = _as_read(_flood(2, 4, 6))
    by_hand_group = Group(99, "all", (Bucket((Output(1),)),))
    m1, m2, m3 = _punt(3), _punt(4), _qos(17, 1000)
    m2_by_hand = _meter_read(_punt(4, rate=1000))
    by_hand_meter = Meter(42, 5, 5)
    opaque = OpaqueMeter(m3.meter_id, 0x9, b"\x00" * 8)  # two bands, say
    drift = group_meter_drift(
        {1: g1, 2: g2, 3: g3}, {2: g2_by_hand, 3: _as_read(g3), 99: by_hand_group},
        {m.meter_id: m for m in (m1, m2, m3)},
        {m2.meter_id: m2_by_hand, m3.meter_id: opaque, 42: by_hand_meter})
    assert drift.groups_missing == (g1,)
    assert drift.groups_extra == (by_hand_group,)
    assert drift.groups_modified == ((g2, g2_by_hand),)
    assert drift.meters_missing == (m1,)
    assert drift.meters_extra == (by_hand_meter,)
    assert drift.meters_modified == ((m3, opaque), (m2, m2_by_hand))  # by id
    assert len(drift) == 7
    assert drift.meter_ids == {m1.meter_id, m2.meter_id, m3.meter_id, 42}


def test_differences_come_in_id_order() -> None:
    believed = {3: _flood(3, 1), 1: _flood(1, 1), 2: _flood(2, 1)}
    drift = group_meter_drift(believed, {}, {}, {9: Meter(9, 1, 1), 4: Meter(4, 1, 1)})
    assert [g.group_id for g in drift.groups_missing] == [1, 2, 3]
    assert [m.meter_id for m in drift.meters_extra] == [4, 9]


def test_the_signature_names_what_is_held_so_a_left_drift_is_reported_once() -> None:
    believed = {1: _flood(1, 3)}
    held = {1: _as_read(_flood(1, 4))}
    first = group_meter_drift(believed, held, {}, {})
    again = group_meter_drift(believed, dict(held), {}, {})
    assert first.signature() == again.signature()  # the same drift, read again
    changed_again = group_meter_drift(believed, {1: _as_read(_flood(1, 5))}, {}, {})
    assert changed_again.signature() != first.signature()


def test_items_say_what_and_whose_in_ofctl_syntax() -> None:
    g1, g2 = _flood(1, 3), _flood(2, 4)
    m_port, m_qos = _punt(3), _qos(17, 1000)
    drift = group_meter_drift(
        {1: g1, 2: g2}, {2: _as_read(_flood(2, 4, 6)), 99: Group(99, "all", ())},
        {m_port.meter_id: m_port, 17: m_qos},
        {17: _meter_read(_qos(17, 2000)), 42: Meter(42, 5, 5)})
    owners = {NET_COOKIE: {"kind": "network", "id": "n"}, PORT_COOKIE: {"kind": "port", "id": "p"},
              POLICY_COOKIE: {"kind": "qos_policy", "id": "q"}}
    users = {("meter", m_port.meter_id): PORT_COOKIE}
    items = describe_groups_meters(drift, owners.get, lambda kind, i: users.get((kind, i)),
                                   True)
    by_kind = {i.kind: i for i in items}
    assert [i.kind for i in items] == ["group-missing", "group-extra", "group-modified",
                                       "meter-missing", "meter-extra", "meter-modified"]
    assert by_kind["group-missing"].what == \
        "group_id=1,type=all,bucket=actions=set_field:0x5->tun_id,output:3"
    assert by_kind["group-missing"].owner == {"kind": "network", "id": "n"}
    assert by_kind["group-extra"].owner is None  # never Loom's
    modified = by_kind["group-modified"]
    assert modified.expected is not None and "output:6" not in modified.expected
    assert "output:6" in modified.what and modified.owner == {"kind": "network", "id": "n"}
    # a punt meter has no owner of its own: its port's flows do
    assert by_kind["meter-missing"].owner == {"kind": "port", "id": "p"}
    assert by_kind["meter-missing"].what == (
        f"meter={m_port.meter_id},pktps,burst,band=type=drop,rate={pl.PUNT_RATE_PPS},"
        f"burst_size={pl.PUNT_BURST_PACKETS}")
    assert by_kind["meter-extra"].owner is None
    assert by_kind["meter-modified"].owner == {"kind": "qos_policy", "id": "q"}
    assert by_kind["meter-modified"].expected == \
        "meter=17,kbps,burst,band=type=drop,rate=1000,burst_size=100"
    assert all(i.repaired for i in items)
    assert "owner" not in by_kind["group-extra"].view()


def test_only_the_new_differences_are_described() -> None:
    drift = group_meter_drift({1: _flood(1, 3), 2: _flood(2, 4)}, {}, {}, {})
    (first,) = [s for s in drift.signature() if s[1] == 2]
    items = describe_groups_meters(drift, lambda c: None, lambda k, i: None, False,
                                   frozenset([first]))
    assert [(i.kind, i.what.split(",")[0]) for i in items] == [("group-missing", "group_id=2")]
    assert not items[0].repaired


def test_an_opaque_meter_is_shown_by_its_bytes() -> None:
    text = ofwire.meter_to_ofctl(OpaqueMeter(5, 0x9, b"\x01\x02"))
    assert text == "meter=5,flags=0x9,opaque(0102)"
    ff = Group(4, "ff", (Bucket((Output(2),), watch_port=2), Bucket((Output(3),), watch_port=3)))
    assert ofwire.group_to_ofctl(ff) == ("group_id=4,type=ff,bucket=watch_port:2,actions="
                                         "output:2,bucket=watch_port:3,actions=output:3")


def test_a_record_stays_out_of_sync_while_either_source_differs() -> None:
    """Flows and groups/meters are checked apart: a clean flow check does not hide a
    meter left deleted (report mode), nor a clean read a flow left changed; the
    periodic reads are not counted as checks (those follow a signal)."""
    record = DriftRecord("0000000000000001")
    missing = describe_groups_meters(group_meter_drift({}, {}, {3: _punt(3)}, {}),
                                     lambda c: None, lambda k, i: None, False)
    record.group_meter_read(missing, 1)
    view = record.view()
    assert not view["in_sync"] and view["drift_found"] == 1 and view["checks"] == 0
    assert view["group_meter_reads"] == 1 and view["last_group_meter_read"]
    assert view["drift"][0]["kind"] == "meter-missing"
    record.checked([], False)  # a flow check, clean
    assert not record.view()["in_sync"]
    record.group_meter_read([], 1)  # read again, still there: not counted again
    assert record.view()["drift_found"] == 1 and not record.view()["in_sync"]
    record.group_meter_read([], 0)  # undone by hand
    assert record.view()["in_sync"]
    record.checked(describe([], [], [], lambda c: None, str, False), False)
    assert record._open == {"flows": 0, GROUP_METER: 0}


# ---------------------------------------------------------------- the repair push
class RecordingChannel:
    """A switch that accepts everything and keeps every message sent to it."""

    def __init__(self) -> None:
        self.datapath_id = 1
        self.closed = threading.Event()
        self._xid = 0
        self.sent: list[bytes] = []

    def reserve_xids(self, n: int) -> int:
        first = self._xid + 1
        self._xid += n
        return first

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def call(self, data: bytes, xid: int, timeout: float) -> list:
        self.sent.append(data)
        return []

    def take_stray_errors(self, first_xid: int, last_xid: int) -> list:
        return []

    def meter_mods(self) -> list[tuple[int, int]]:
        """(command, meter id) of every meter mod sent."""
        out = []
        for data in self.sent:
            p = 0
            while p + 8 <= len(data):
                _v, kind, length = struct.unpack_from("!BBH", data, p)
                if kind == 29:  # OFPT_METER_MOD
                    command, _flags, mid = struct.unpack_from("!HHI", data, p + 8)
                    out.append((command, mid))
                p += length
        return out


def _desired(groups: dict[int, Group], meters: dict[int, Meter]) -> DesiredSwitch:
    shared = {i: m for i, m in meters.items() if not pl.is_port_punt_meter(i)}
    return DesiredSwitch(1, 1, 1, groups=MappingProxyType(groups),
                         meters=MappingProxyType(meters),
                         shared_meters=MappingProxyType(shared))


def _synced(channel: RecordingChannel, desired: DesiredSwitch) -> SwitchSync:
    sync = SwitchSync(channel)  # type: ignore[arg-type]
    sync.installed = {}
    sync.push(desired)
    channel.sent.clear()
    return sync


def test_a_noted_drift_is_put_right_by_the_next_push_even_with_the_same_meters() -> None:
    """The repair pushes the state pushed last (the same meter map: a normal push would
    compare no punt meter at all): the drifted ones are compared all the same."""
    punt3, punt4 = _punt(3), _punt(4)
    desired = _desired({1: _flood(1, 3)}, {punt3.meter_id: punt3, punt4.meter_id: punt4})
    channel = RecordingChannel()
    sync = _synced(channel, desired)
    held: dict[int, Any] = {punt4.meter_id: _meter_read(_punt(4, rate=999)), 42: Meter(42, 1, 1)}
    drift = group_meter_drift(desired.groups, {}, desired.meters, held)
    sync.note_groups_meters({}, held, drift.meter_ids)
    diff = sync.push(desired, ())
    assert diff.group_adds == (desired.groups[1],)
    assert sorted(channel.meter_mods()) == sorted([
        (ofwire.OFPMC_ADD, punt3.meter_id), (ofwire.OFPMC_MODIFY, punt4.meter_id),
        (ofwire.OFPMC_DELETE, 42)])
    assert sync.installed_meters == dict(desired.meters)
    assert sync.installed_groups == dict(desired.groups)
    channel.sent.clear()
    sync.push(desired, ())  # put right: nothing more
    assert channel.meter_mods() == []


def test_report_mode_notes_without_repairing_on_the_next_push() -> None:
    """Report mode notes what the switch holds (so a later push never fails on a stale
    belief) but marks no meter for repair: an unrelated push leaves a punt meter's
    drift where it is."""
    punt3 = _punt(3)
    desired = _desired({}, {punt3.meter_id: punt3})
    channel = RecordingChannel()
    sync = _synced(channel, desired)
    sync.note_groups_meters({}, {})
    sync.push(desired, ())
    assert channel.meter_mods() == []
    assert sync.installed_meters == {}


def test_a_meter_read_keeps_what_loom_cannot_model() -> None:
    """A drift read keeps a meter with two bands as it is (shown by its bytes); what
    the reconciler keeps is a stand-in no desired meter equals (replaced on push)."""
    (msg,) = ofwire.meter_config_reply(1, [Meter(7, 100, 10)])
    band = struct.pack("!HHII4x", 1, 16, 5, 5)
    two_bands = struct.pack("!HHI", 8 + 2 * len(band), 5, 8) + band + band
    msg = msg[:2] + struct.pack("!H", len(msg) + len(two_bands)) + msg[4:] + two_bands
    sync = SwitchSync(_ReplyingChannel([msg]))  # type: ignore[arg-type]
    groups, meters = sync.read_groups_meters(timeout=1.0)
    assert groups == {} and meters[7] == Meter(7, 100, 10)
    assert isinstance(meters[8], OpaqueMeter)
    sync.note_groups_meters(groups, meters)
    assert sync.installed_meters[8] == Meter(8, -1, -1)


class _ReplyingChannel(RecordingChannel):
    """Answers a meter config request with `replies`, anything else with nothing."""

    def __init__(self, replies: list[bytes]) -> None:
        super().__init__()
        self.replies = replies

    def call(self, data: bytes, xid: int, timeout: float) -> list:
        mp_type: Optional[int] = struct.unpack_from("!H", data, 8)[0] \
            if data[1] == 18 else None
        if mp_type == 10:  # OFPMP_METER_CONFIG
            return [_Msg(r) for r in self.replies]
        return []


class _Msg:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
