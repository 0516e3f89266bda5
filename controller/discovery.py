"""LLDP link discovery between fabric switches, built on os-ken's packet library.

os-ken's own `switches` app installs its LLDP flow itself and would fight the
reconciler (the only writer to switches), so Loom keeps just the parts that fit:
os-ken builds the LLDP frames; the punt flow comes from the compiler; the link
table below is pure (time is passed in), so every timeout is unit-testable.

Policies, and why (issue 10: a 74-switch fabric under load lost and re-learned
links every few seconds with a 2 s timeout, and every flap re-routed everything):

- A real cut is seen through OpenFlow port status (the port went down or was
  deleted): the link goes at once, and fast-failover buckets already carried the
  traffic in the data plane. LLDP silence is only the slow path for failures that
  keep carrier (a one-way fault, a port that stopped forwarding), so it may be
  patient, and it must not blame a link for a delay elsewhere. Each probe carries
  the time it was sent; a link is lost when its switches carried probes sent
  `LINK_TIMEOUT` seconds after the last one this link carried: the sending switch
  sent some out of its other ports and they were heard, the receiving switch
  reported some from its other ports. A controller too busy to read packet-ins,
  or a switch too busy to send packet-outs, then delays everything alike and
  removes nothing (under load, a fixed 2 s timeout did just that). Only a link
  whose switches have no other link falls back to a plain timeout,
  `LINK_TIMEOUT_ALONE`, with `MIN_MISSED_PROBES` probes really sent meanwhile.
- A link whose probes go missing while its receiving port keeps counting frames in
  (OpenFlow port statistics, read for suspect links only) is congested, not cut:
  a point-to-point link that delivers frames is up, and routing around a busy link
  only moves the load and makes it flap (issue 10: a 74-switch fabric under an
  all-pairs ping lost LLDP frames on its busiest links for over 10 s). It is kept,
  and logged once. With counters fed in (the controller's case), a silent link is
  lost only once its counter has also been seen standing still since it went
  quiet; a switch that never answers for its counters leaves only the plain
  `LINK_TIMEOUT_ALONE`.
- Probes go out every `PROBE_INTERVAL`, spread over the interval switch by switch
  (no burst of hundreds of packet-outs), one send per switch per round; a port
  that comes up (or a switch that connects) is probed at once, so a restored link
  is heard within milliseconds.
- A link heard for the first time is used at once (a fabric coming up). A link
  that comes back after being lost is held down: it is known, its ports accept
  fabric traffic (standby), but no path uses it until it has stayed up for
  `HOLD_DOWN` seconds, doubled for each recent flap (a penalty that halves every
  `FLAP_HALF_LIFE` seconds), at most `HOLD_DOWN_MAX`; and not before both its
  switches confirm they accept traffic on it (make before break).
- Each link learned, held, restored or lost is logged at INFO with the reason.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from os_ken.lib.packet import ethernet, lldp, packet

LOG = logging.getLogger(__name__)

LLDP_MAC_NEAREST_BRIDGE = "01:80:c2:00:00:0e"
ETH_TYPE_LLDP = 0x88CC
_CHASSIS_PREFIX = b"dpid:"
PROBE_INTERVAL = 1.0  # seconds between two probes out of one fabric port
LINK_TIMEOUT = 10.0  # seconds of probes a link missed while its switches carried others
LINK_TIMEOUT_ALONE = 60.0  # a link nothing else vouches for: plain silence this long
MIN_MISSED_PROBES = 5  # ...and at least this many probes sent out and not heard since
HOLD_DOWN = 2.0  # a link that comes back is used after being up this long
HOLD_DOWN_MAX = 30.0  # the longest hold-down, however often a link flaps
FLAP_HALF_LIFE = 60.0  # seconds for a link's flap penalty to halve
FRESH = 2.5 * PROBE_INTERVAL  # a held link must have been heard this recently to be used
SUSPECT_AFTER = 2.5 * PROBE_INTERVAL  # probes missed before rx counters are read
# A switch that has just connected has learnt links only on the ports whose probes
# were answered: a port is settled when it has a link, or after this many probes
# without one (a host port). See `Discovery.settled`.
SETTLE_PROBES = 2

Endpoint = tuple[int, int]  # (datapath_id, port_no)
DirectedLink = tuple[Endpoint, Endpoint]  # (sender of the probe, receiver)
LinkKey = tuple[Endpoint, Endpoint]  # an undirected link: lower endpoint first


# The probe's send time: an organizationally specific TLV (OUI "LOM", subtype 1) with
# microseconds of the controller's monotonic clock, the last TLV before End, so it
# sits at a fixed distance from the end of the frame (patched in place per send).
_TIME_OUI = b"LOM"
_TIME_SUBTYPE = 1
SENT_AT_FROM_END = 2 + 8  # the 8 timestamp bytes end just before the End TLV


def lldp_frame(datapath_id: int, port_no: int, src_mac: str = "02:00:00:00:00:01",
               sent_at: float = 0.0) -> bytes:
    """The probe sent out of (datapath_id, port_no), stamped with `sent_at`."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=LLDP_MAC_NEAREST_BRIDGE, src=src_mac,
                                       ethertype=ETH_TYPE_LLDP))
    pkt.add_protocol(lldp.lldp(tlvs=(
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                       chassis_id=_CHASSIS_PREFIX + f"{datapath_id:016x}".encode()),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT,
                    port_id=str(port_no).encode()),
        lldp.TTL(ttl=int(LINK_TIMEOUT) + 1),
        lldp.OrganizationallySpecific(oui=_TIME_OUI, subtype=_TIME_SUBTYPE,
                                      info=stamp(sent_at)),
        lldp.End(),
    )))
    pkt.serialize()
    return bytes(pkt.data)


def stamp(sent_at: float) -> bytes:
    """The 8 bytes a probe carries for its send time."""
    return struct.pack("!Q", max(0, int(sent_at * 1e6)))


def restamp(message: bytes, sent_at: float) -> bytes:
    """`message` (a probe, or a packet-out ending with one) stamped with `sent_at`:
    encode a port's packet-out once, restamp it for every send."""
    return message[:-SENT_AT_FROM_END] + stamp(sent_at) + message[-2:]


class Probe(NamedTuple):
    datapath_id: int
    port_no: int
    sent_at: Optional[float]  # None: a probe without our timestamp


# Our probes' layout, for the fast path of `parse_lldp`: Ethernet (14 bytes), then a
# Chassis ID TLV of type 1 holding subtype 7 (locally assigned) + "dpid:" + 16 hex
# digits, then a Port ID TLV of type 2, subtype 2 (port component) + the port number.
_CHASSIS_TLV = struct.pack("!HB", (1 << 9) | (1 + len(_CHASSIS_PREFIX) + 16),
                           lldp.ChassisID.SUB_LOCALLY_ASSIGNED) + _CHASSIS_PREFIX
_PORT_AT = 14 + 2 + 1 + len(_CHASSIS_PREFIX) + 16


def parse_lldp(data: bytes) -> Optional[tuple[int, int]]:
    """(datapath_id, port_no) a probe of ours was sent from, or None for anything else."""
    probe = parse_probe(data)
    return None if probe is None else (probe.datapath_id, probe.port_no)


_TIME_TLV = struct.pack("!H3sB", (127 << 9) | 12, _TIME_OUI, _TIME_SUBTYPE)


def parse_probe(data: bytes) -> Optional[Probe]:
    """The probe of ours `data` is (sender and send time), or None for anything else.

    Every fabric port hears a probe per interval, so the common case (our own frame)
    is read with slicing, without os-ken's generic packet classes; anything else
    falls back to them."""
    if data[12:14] == b"\x88\xcc" and data[14:14 + len(_CHASSIS_TLV)] == _CHASSIS_TLV:
        head = int.from_bytes(data[_PORT_AT:_PORT_AT + 2], "big")
        length = head & 0x1FF
        if head >> 9 == 2 and length >= 2 and data[_PORT_AT + 2] == \
                lldp.PortID.SUB_PORT_COMPONENT:
            try:
                dpid = int(data[14 + len(_CHASSIS_TLV):_PORT_AT], 16)
                port_no = int(data[_PORT_AT + 3:_PORT_AT + 2 + length])
            except ValueError:
                return None
            at = _PORT_AT + 2 + length + 4  # after the TTL TLV
            sent_at = None
            if data[at:at + len(_TIME_TLV)] == _TIME_TLV:
                sent_at = struct.unpack_from("!Q", data, at + len(_TIME_TLV))[0] / 1e6
            return Probe(dpid, port_no, sent_at)
    try:
        pkt = packet.Packet(data)
    except Exception:
        return None
    probe = pkt.get_protocol(lldp.lldp)
    if probe is None or len(probe.tlvs) < 2:
        return None
    chassis, port = probe.tlvs[0], probe.tlvs[1]
    cid = getattr(chassis, "chassis_id", b"")
    if not cid.startswith(_CHASSIS_PREFIX):
        return None
    sent_at = None
    for tlv in probe.tlvs[2:]:
        if getattr(tlv, "oui", None) == _TIME_OUI and len(getattr(tlv, "info", b"")) == 8:
            sent_at = struct.unpack("!Q", tlv.info)[0] / 1e6
    try:
        return Probe(int(cid[len(_CHASSIS_PREFIX):], 16), int(port.port_id), sent_at)
    except (ValueError, AttributeError):
        return None


def link_key(a: Endpoint, b: Endpoint) -> LinkKey:
    return (a, b) if a <= b else (b, a)


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]:#x}:{endpoint[1]}"


def describe(key: LinkKey) -> str:
    return f"{_ep(key[0])} <-> {_ep(key[1])}"


@dataclass(frozen=True)
class LinkEvent:
    """Something that happened to a link, for the log: learned | held | restored | lost."""

    kind: str
    link: LinkKey
    reason: str

    def message(self) -> str:
        return f"fabric link {describe(self.link)} {self.kind}: {self.reason}"


@dataclass
class _State:
    active: bool
    since: float  # both directions heard since
    hold: float = 0.0  # seconds to wait before use (held links)


@dataclass
class LinkTable:
    """Directed LLDP sightings and the undirected links they make, with hold-downs.

    Pure: every method takes the time. A link exists once both of its directions
    have been heard; it is *active* (paths may use it) or *held* (standby: known,
    not used until `promote` finds it has stayed up for its hold-down)."""

    timeout: float = LINK_TIMEOUT
    alone_timeout: float = LINK_TIMEOUT_ALONE
    min_missed: int = MIN_MISSED_PROBES
    hold_down: float = HOLD_DOWN
    hold_down_max: float = HOLD_DOWN_MAX
    half_life: float = FLAP_HALF_LIFE
    fresh: float = FRESH
    suspect_after: float = SUSPECT_AFTER
    seen: dict[DirectedLink, float] = field(default_factory=dict)  # last heard (our clock)
    heard: dict[DirectedLink, float] = field(default_factory=dict)  # ...a probe sent then
    _sent: dict[Endpoint, int] = field(default_factory=dict)
    _sent_at_seen: dict[DirectedLink, int] = field(default_factory=dict)
    _state: dict[LinkKey, _State] = field(default_factory=dict)
    _known: set[LinkKey] = field(default_factory=set)  # links that were once in use
    _rx: dict[Endpoint, tuple[int, float]] = field(default_factory=dict)  # rx_packets, when
    _vouched: set[DirectedLink] = field(default_factory=set)  # kept alive by rx counters
    # With rx counters fed in (`confirm_with_rx`), a silent link is lost only once they
    # have also been seen standing still since it went quiet: per direction, how often.
    confirm_with_rx: bool = False
    _rx_flat: dict[DirectedLink, int] = field(default_factory=dict)
    _penalty: dict[LinkKey, tuple[float, float]] = field(default_factory=dict)

    # ---- inputs
    def sent(self, src: Endpoint, now: float) -> None:
        """A probe went out of `src` (counted, so silence is measured in probes too)."""
        self._sent[src] = self._sent.get(src, 0) + 1

    def observe(self, src: Endpoint, dst: Endpoint, now: float,
                sent_at: Optional[float] = None) -> list[LinkEvent]:
        """A probe from `src` arrived at `dst`; `sent_at`: when it was sent, if it says
        (a time not from this clock counts as `now`)."""
        events: list[LinkEvent] = []
        # A port has one peer: hearing another one means it was re-cabled.
        for old in [k for k in self.seen if k[1] == dst and k[0] != src]:
            events += self._drop([old], f"{_ep(dst)} now hears {_ep(src)}", flap=True)
        key = (src, dst)
        self.seen[key] = now
        self._vouched.discard(key)
        self._rx_flat.pop(key, None)
        if sent_at is None or not now - 600.0 <= sent_at <= now + 1.0:
            sent_at = now
        self.heard[key] = max(sent_at, self.heard.get(key, sent_at))
        self._sent_at_seen[key] = self._sent.get(src, 0)
        link = link_key(src, dst)
        if (dst, src) in self.seen and link not in self._state:
            if link in self._known:
                hold = self.hold_for(link, now)
                self._state[link] = _State(False, now, hold)
                events.append(LinkEvent("held", link,
                                        f"back up; in use after {hold:.1f} s up (hold-down)"))
            else:
                self._state[link] = _State(True, now)
                self._known.add(link)
                events.append(LinkEvent("learned", link, "LLDP heard both ways"))
        return events

    def expire(self, now: float) -> list[LinkEvent]:
        """Drop directions that missed `timeout` seconds of probes their switches carried
        over other links, or were silent `alone_timeout` seconds (`min_missed` probes)."""
        silent = [k for k, last in self.seen.items() if now - last > self.timeout]
        if not silent:
            return []
        # The two latest probes heard per sending switch and per receiving switch, so
        # "the latest over any *other* link" is a lookup.
        out: dict[int, list[tuple[float, DirectedLink]]] = {}
        into: dict[int, list[tuple[float, DirectedLink]]] = {}
        for key, sent in self.heard.items():
            for best, dpid in ((out, key[0][0]), (into, key[1][0])):
                top = best.setdefault(dpid, [])
                top.append((sent, key))
                top.sort(reverse=True)
                del top[2:]

        def latest_other(best: dict[int, list[tuple[float, DirectedLink]]], dpid: int,
                         key: DirectedLink) -> Optional[float]:
            return next((t for t, k in best.get(dpid, ()) if k != key), None)

        events: list[LinkEvent] = []
        for key in silent:
            if key not in self.seen:
                continue
            last, heard = self.seen[key], self.heard.get(key, self.seen[key])
            src, dst = key
            sent_out = latest_other(out, src[0], key)
            got_in = latest_other(into, dst[0], key)
            missed = self._sent.get(src, 0) - self._sent_at_seen.get(key, 0)
            confirmed = not self.confirm_with_rx or self._rx_flat.get(key, 0) > 0
            if sent_out is not None and got_in is not None and confirmed \
                    and min(sent_out, got_in) - heard > self.timeout:
                events += self._drop([key], f"LLDP timeout: nothing from {_ep(src)} at "
                                            f"{_ep(dst)} for {now - last:.1f} s while both "
                                            f"switches carried probes sent "
                                            f"{min(sent_out, got_in) - heard:.1f} s later",
                                     flap=True, now=now)
            elif now - last > self.alone_timeout and missed >= self.min_missed:
                events += self._drop([key], f"LLDP timeout: nothing from {_ep(src)} at "
                                            f"{_ep(dst)} for {now - last:.1f} s, {missed} "
                                            f"probes unanswered", flap=True, now=now)
        return events

    def suspects(self, now: float) -> list[Endpoint]:
        """Receiving ends of links that missed a few probes: read their rx counters."""
        return sorted({k[1] for k, last in self.seen.items()
                       if now - last > self.suspect_after and link_key(*k) in self._state})

    def rx_sample(self, endpoint: Endpoint, rx_packets: int, now: float) -> list[DirectedLink]:
        """The receive counter of a suspect port. Frames received since a sample taken
        after the link fell silent prove the link delivers: it counts as heard now; a
        counter standing still confirms the silence (`confirm_with_rx`). Returns the
        directions newly kept alive this way (for the log)."""
        prev = self._rx.get(endpoint)
        self._rx[endpoint] = (rx_packets, now)
        if prev is None:
            return []
        kept = []
        for key in [k for k in self.seen if k[1] == endpoint]:
            if prev[1] < self.seen[key]:
                continue  # the baseline is older than the last probe heard: proves nothing
            if rx_packets <= prev[0]:
                self._rx_flat[key] = self._rx_flat.get(key, 0) + 1  # nothing came in
                continue
            self._rx_flat.pop(key, None)
            self.seen[key] = now
            self.heard[key] = max(self.heard.get(key, now), now)
            self._sent_at_seen[key] = self._sent.get(key[0], 0)
            if key not in self._vouched:
                self._vouched.add(key)
                kept.append(key)
        return kept

    def promote(self, now: float, ready: Callable[[LinkKey], bool] = lambda _k: True
                ) -> list[LinkEvent]:
        """Put held links that stayed up for their hold-down (and are `ready`) in use."""
        events = []
        for link, st in sorted(self._state.items()):
            if st.active or now - st.since < st.hold:
                continue
            a, b = link
            if any(now - self.seen.get(k, float("-inf")) > self.fresh for k in ((a, b), (b, a))):
                continue  # not heard lately: wait (the timeout decides if it is gone)
            if not ready(link):
                continue
            st.active = True
            self._known.add(link)
            events.append(LinkEvent("restored", link, f"up for {now - st.since:.1f} s"))
        return events

    def port_down(self, endpoint: Endpoint, now: float, reason: str = "port down"
                  ) -> list[LinkEvent]:
        """A port went down or away: its links are gone now, not after the timeout."""
        return self._drop([k for k in self.seen if endpoint in k], reason, flap=True, now=now)

    def switch_gone(self, datapath_id: int, now: float) -> list[LinkEvent]:
        """The switch's OpenFlow connection closed (not a flap of its links)."""
        return self._drop([k for k in self.seen if datapath_id in (k[0][0], k[1][0])],
                          "switch disconnected", flap=False, now=now)

    # ---- outputs
    def settled(self, ends: set[Endpoint], probes: int,
                must_link: frozenset[Endpoint] = frozenset()) -> bool:
        """Each of `ends` has a link (in use or held) or sent `probes` probes; those of
        `must_link` (that had a link before) only by a link."""
        wanted = ends | must_link
        linked = {e for k in self._state for e in k if e in wanted}
        return all(e in linked or (e not in must_link and self._sent.get(e, 0) >= probes)
                   for e in wanted)

    def links(self) -> dict[Endpoint, Endpoint]:
        """Links in use, as a symmetric map."""
        return self._symmetric(k for k, st in self._state.items() if st.active)

    def standby(self) -> dict[Endpoint, Endpoint]:
        """Held links (heard both ways, not in use yet), as a symmetric map."""
        return self._symmetric(k for k, st in self._state.items() if not st.active)

    def held(self) -> list[LinkKey]:
        return sorted(k for k, st in self._state.items() if not st.active)

    def hold_for(self, link: LinkKey, now: float) -> float:
        """The hold-down a link coming back gets: doubled per recent flap, capped."""
        penalty = self._decayed(link, now)
        return min(self.hold_down_max, self.hold_down * 2 ** max(0.0, penalty - 1.0))

    # ---- internals
    @staticmethod
    def _symmetric(keys: Iterable[LinkKey]) -> dict[Endpoint, Endpoint]:
        out: dict[Endpoint, Endpoint] = {}
        for a, b in keys:
            out[a], out[b] = b, a
        return out

    def _decayed(self, link: LinkKey, now: float) -> float:
        value, at = self._penalty.get(link, (0.0, now))
        return value * 0.5 ** (max(0.0, now - at) / self.half_life)

    def _drop(self, keys: list[DirectedLink], reason: str, flap: bool,
              now: Optional[float] = None) -> list[LinkEvent]:
        events = []
        for key in keys:
            last = self.seen.pop(key, None)
            self.heard.pop(key, None)
            self._sent_at_seen.pop(key, None)
            self._vouched.discard(key)
            self._rx_flat.pop(key, None)
            link = link_key(*key)
            st = self._state.pop(link, None)
            if st is None:
                continue
            when = now if now is not None else (last if last is not None else 0.0)
            if flap:
                self._penalty[link] = (self._decayed(link, when) + 1.0, when)
            events.append(LinkEvent("lost", link, reason + ("" if st.active
                                                            else " (was held down)")))
        return events


class Discovery:
    """Keeps the topology's fabric links current: probes out, sightings in, timeouts,
    hold-downs. Sending is the OpenFlow app's (it asks `probe_plan` what to send and
    reports `probe_sent`), so this holds no socket.

    `installed(dpids, version)` answers whether every switch in `dpids` runs a
    compile of topology `version` or later: a held link is used only once both its
    switches accept traffic on it (the standby state was installed)."""

    def __init__(self, topology: Any, on_change: Callable[[], None],
                 installed: Optional[Callable[[Iterable[int], int], bool]] = None,
                 table: Optional[LinkTable] = None) -> None:
        self._topology = topology
        self._on_change = on_change
        self._installed = installed
        self._table = table if table is not None else LinkTable()
        self._lock = threading.Lock()
        self._urgent: set[Endpoint] = set()  # probe these at the next chance
        self._standby_version: dict[LinkKey, int] = {}  # topology version it was shown in

    @property
    def table(self) -> LinkTable:
        return self._table

    def _apply(self, events: list[LinkEvent]) -> None:
        if not events:
            return
        for ev in events:
            LOG.info("%s", ev.message())
        with self._lock:
            links, standby = self._table.links(), self._table.standby()
            held = self._table.held()
        # Links heard for the first time go in use at once (a fabric coming up); any
        # other change of the links in use is rolled out in steps.
        staged = any(ev.kind != "learned" for ev in events)
        changed = self._topology.set_links(links, standby, staged=staged)
        if held:
            version = self._topology.view().version
            with self._lock:
                for link in held:
                    self._standby_version.setdefault(link, version)
                for link in [k for k in self._standby_version if k not in held]:
                    del self._standby_version[link]
        else:
            with self._lock:
                self._standby_version.clear()
        if changed:
            self._on_change()

    # ---- events from the OpenFlow app
    def lldp_in(self, datapath_id: int, in_port: int, data: bytes, now: float) -> bool:
        """A packet-in; True if it was one of our probes."""
        probe = parse_probe(data)
        if probe is None:
            return False
        with self._lock:
            events = self._table.observe((probe.datapath_id, probe.port_no),
                                         (datapath_id, in_port), now, probe.sent_at)
        self._apply(events)
        return True

    def probe_sent(self, datapath_id: int, ports: Iterable[int], now: float) -> None:
        with self._lock:
            for port_no in ports:
                self._table.sent((datapath_id, port_no), now)

    def settled(self, datapath_id: int, ports: Iterable[int],
                linked_before: Iterable[int] = ()) -> bool:
        """Whether discovery has had its say on each of `ports`: a link learnt (in use
        or held), or `SETTLE_PROBES` probes out of it with none. Until then a switch
        that just connected would be given a state without its links: after a
        controller restart that deletes the fabric flows it holds, only to put them
        back a moment later (the engine waits for this, `FABRIC_SETTLE_MAX` at most).

        `linked_before`: ports the switch's own flows still use as links (it held them
        when it connected). Those settle only by a link: unanswered probes there mean
        the neighbour has not reconnected yet, not that it is a host port."""
        with self._lock:
            return self._table.settled(
                {(datapath_id, p) for p in ports}, SETTLE_PROBES,
                frozenset((datapath_id, p) for p in linked_before))

    def port_up(self, datapath_id: int, port_no: int) -> None:
        with self._lock:
            self._urgent.add((datapath_id, port_no))

    def switch_up(self, datapath_id: int, ports: Iterable[int]) -> None:
        with self._lock:
            self._urgent.update((datapath_id, p) for p in ports)

    def take_urgent(self) -> list[Endpoint]:
        """Endpoints to probe now (a port came up, a switch connected)."""
        with self._lock:
            urgent, self._urgent = sorted(self._urgent), set()
        return urgent

    def port_down(self, datapath_id: int, port_no: int, now: float,
                  reason: str = "port down") -> None:
        with self._lock:
            events = self._table.port_down((datapath_id, port_no), now, reason)
        self._apply(events)

    def switch_gone(self, datapath_id: int, now: float) -> None:
        with self._lock:
            events = self._table.switch_gone(datapath_id, now)
        self._apply(events)

    def suspects(self, now: float) -> dict[int, list[int]]:
        """Switch -> ports whose links went quiet: worth a look at their rx counters."""
        with self._lock:
            ends = self._table.suspects(now)
        out: dict[int, list[int]] = {}
        for dpid, port_no in ends:
            out.setdefault(dpid, []).append(port_no)
        return out

    def rx_counters(self, datapath_id: int, rx_packets: dict[int, int], now: float) -> None:
        """Port statistics of a switch with suspect ports (see `suspects`)."""
        LOG.debug("switch %#x rx counters of quiet ports: %s", datapath_id, rx_packets)
        with self._lock:
            last = {k: now - t for k, t in self._table.seen.items() if k[1][0] == datapath_id}
            kept = [k for port_no, rx in sorted(rx_packets.items())
                    for k in self._table.rx_sample((datapath_id, port_no), rx, now)]
        for key in kept:
            LOG.info("fabric link %s kept: no LLDP from %s for %.1f s, but %s keeps "
                     "receiving frames (congested, not cut)", describe(link_key(*key)),
                     _ep(key[0]), last.get(key, 0.0), _ep(key[1]))

    def tick(self, now: float) -> None:
        """Timeouts and hold-downs; the probe loop calls this many times a second."""
        with self._lock:
            events = self._table.expire(now)
            versions = dict(self._standby_version)
        ready = self._ready_check(versions)
        with self._lock:
            events += self._table.promote(now, ready)
        self._apply(events)

    def _ready_check(self, versions: dict[LinkKey, int]) -> Callable[[LinkKey], bool]:
        installed = self._installed

        def ready(link: LinkKey) -> bool:
            if installed is None:
                return True
            version = versions.get(link)
            return version is not None and installed({link[0][0], link[1][0]}, version)

        return ready
