"""LLDP link discovery between fabric switches, built on os-ken's packet library.

os-ken's own `switches` app installs its LLDP flow itself and would fight the
reconciler (the only writer to switches), so Loom keeps just the parts that fit:
os-ken builds and parses the LLDP frames; the punt flow comes from the compiler;
the link table below is pure (time is passed in), so timeouts are unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from os_ken.lib.packet import ethernet, lldp, packet

LLDP_MAC_NEAREST_BRIDGE = "01:80:c2:00:00:0e"
ETH_TYPE_LLDP = 0x88CC
_CHASSIS_PREFIX = b"dpid:"
PROBE_INTERVAL = 0.5  # seconds between probes on every fabric port
LINK_TIMEOUT = 4 * PROBE_INTERVAL  # a link not seen for this long is gone


def lldp_frame(datapath_id: int, port_no: int, src_mac: str = "02:00:00:00:00:01") -> bytes:
    """The probe sent out of (datapath_id, port_no)."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=LLDP_MAC_NEAREST_BRIDGE, src=src_mac,
                                       ethertype=ETH_TYPE_LLDP))
    pkt.add_protocol(lldp.lldp(tlvs=(
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                       chassis_id=_CHASSIS_PREFIX + f"{datapath_id:016x}".encode()),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT,
                    port_id=str(port_no).encode()),
        lldp.TTL(ttl=int(LINK_TIMEOUT) + 1),
        lldp.End(),
    )))
    pkt.serialize()
    return bytes(pkt.data)


def parse_lldp(data: bytes) -> Optional[tuple[int, int]]:
    """(datapath_id, port_no) a probe of ours was sent from, or None for anything else."""
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
    try:
        return int(cid[len(_CHASSIS_PREFIX):], 16), int(port.port_id)
    except (ValueError, AttributeError):
        return None


Endpoint = tuple[int, int]  # (datapath_id, port_no)


@dataclass
class LinkTable:
    """Directed links seen by LLDP, with the time each was last seen."""

    timeout: float = LINK_TIMEOUT
    seen: dict[tuple[Endpoint, Endpoint], float] = field(default_factory=dict)

    def observe(self, src: Endpoint, dst: Endpoint, now: float) -> bool:
        """A probe from src arrived at dst. True if the link is new."""
        key = (src, dst)
        new = key not in self.seen
        self.seen[key] = now
        return new

    def expire(self, now: float) -> bool:
        """Forget links not seen within the timeout. True if any went."""
        old = [k for k, t in self.seen.items() if now - t > self.timeout]
        for k in old:
            del self.seen[k]
        return bool(old)

    def port_down(self, endpoint: Endpoint) -> bool:
        """A port went down: its links are gone now, not after the timeout."""
        gone = [k for k in self.seen if endpoint in k]
        for k in gone:
            del self.seen[k]
        return bool(gone)

    def switch_gone(self, datapath_id: int) -> bool:
        gone = [k for k in self.seen if k[0][0] == datapath_id or k[1][0] == datapath_id]
        for k in gone:
            del self.seen[k]
        return bool(gone)

    def links(self) -> dict[Endpoint, Endpoint]:
        """Bidirectional links only (both directions seen), as a symmetric map."""
        out: dict[Endpoint, Endpoint] = {}
        for src, dst in self.seen:
            if (dst, src) in self.seen:
                out[src] = dst
        return out


class Discovery:
    """Keeps the topology's fabric links current: probes out, sightings in, timeouts.

    Sending is injected (`send(dpid, port_no, frame)`), so this holds no socket; the
    OpenFlow app calls `probe_all` from its timer thread and `lldp_in` on packet-in.
    """

    def __init__(self, topology: object, on_change: object) -> None:
        import threading

        self._topology = topology
        self._on_change = on_change
        self._table = LinkTable()
        self._lock = threading.Lock()

    def _publish(self) -> None:
        with self._lock:
            links = self._table.links()
        if self._topology.set_links(links):  # type: ignore[attr-defined]
            self._on_change()  # type: ignore[operator]

    def lldp_in(self, datapath_id: int, in_port: int, data: bytes, now: float) -> bool:
        """A packet-in; True if it was one of our probes."""
        src = parse_lldp(data)
        if src is None:
            return False
        with self._lock:
            new = self._table.observe(src, (datapath_id, in_port), now)
        if new:
            self._publish()
        return True

    def port_down(self, datapath_id: int, port_no: int) -> None:
        with self._lock:
            gone = self._table.port_down((datapath_id, port_no))
        if gone:
            self._publish()

    def switch_gone(self, datapath_id: int) -> None:
        with self._lock:
            gone = self._table.switch_gone(datapath_id)
        if gone:
            self._publish()

    def expire(self, now: float) -> None:
        with self._lock:
            gone = self._table.expire(now)
        if gone:
            self._publish()
