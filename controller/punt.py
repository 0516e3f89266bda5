"""What the switches send up to the controller, and what Loom sends back.

Every packet-in is one of: a guest's DHCP request or IPv6 router solicitation (its
port's `dhcp_punt` or `rs_punt` flow, cookie of the port), the upstream router's ARP
on a gateway chassis (l3 `gateway_arp`), an LLDP probe of the fabric; anything else
is a bug, counted. Guest punts go through the port's punt meter and upstream ARP
through the chassis' (pipeline.PUNT_*), so neither a guest nor a host on the physical
network can send the controller more than its share. The drops of those meters are
read from the switches (`PUNT_DROPS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Optional

from prometheus_client import Counter, Gauge

from controller import dhcp, dhcp6, router_advert
from controller.intent import Intent, Port

LOG = logging.getLogger(__name__)

PACKET_INS = Counter("loom_packet_ins_total",
                     "Packets the switches sent to the controller, by kind "
                     "(dhcp, dhcp6, router_solicitation, over_project_rate, "
                     "upstream_arp, lldp, unexpected)", ["kind"])
DHCP_REPLIES = Counter("loom_dhcp_replies_total",
                       "DHCP replies sent, by type (offer, ack, nak; DHCPv6: advertise, "
                       "reply)", ["type"])
DHCP_IGNORED = Counter("loom_dhcp_ignored_total",
                       "DHCP client packets punted and not answered, by reason", ["reason"])
ROUTER_ADVERTS = Counter("loom_router_adverts_total",
                         "IPv6 router advertisements sent, solicited or periodic", ["kind"])
PUNT_DROPS = Gauge("loom_punt_meter_dropped_packets",
                   "Packets the punt meters of a switch dropped (guests' DHCP beyond their "
                   "rate, upstream ARP floods), since the meters were installed",
                   ["datapath_id"])


# What one project's guests may have answered per second, all of them together, on
# one controller: each guest's own meter is 10/s, and a project with a thousand guests
# asking at once must not take the controller's CPU from every other project.
PROJECT_RATE = 200.0
PROJECT_BURST = 400.0


class ProjectBuckets:
    """A token bucket per project, refilled at PROJECT_RATE. One thread uses it (the
    OpenFlow event thread): no lock."""

    def __init__(self, rate: float = PROJECT_RATE, burst: float = PROJECT_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # project -> (tokens, at)

    def take(self, project: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.get(project, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[project] = (tokens, now)
            return False
        self._buckets[project] = (tokens - 1.0, now)
        return True


class PuntService:
    """Answers what guest ports punt: DHCPv4 requests (controller/dhcp.py), DHCPv6
    (controller/dhcp6.py) and IPv6 router solicitations (controller/router_advert.py),
    each project within its own budget (`ProjectBuckets`)."""

    def __init__(self, lease_seconds: int = dhcp.DEFAULT_LEASE_SECONDS,
                 buckets: Optional[ProjectBuckets] = None) -> None:
        self.lease_seconds = lease_seconds
        self.buckets = buckets or ProjectBuckets()

    def handle(self, port: Optional[Port], intent: Optional[Intent], data: bytes,
               router_port_on: Callable[[str], Optional[Port]]) -> list[bytes]:
        """The frames to send out of the port (none, one, or one per router)."""
        if port is not None and not self.buckets.take(port.project_id):
            PACKET_INS.labels("over_project_rate").inc()
            return []
        if _is_router_solicitation(data):
            PACKET_INS.labels("router_solicitation").inc()
            if port is None or intent is None:
                return []
            frames = router_advert.answer(
                data, router_advert.adverts_for(port, intent, router_port_on))
            ROUTER_ADVERTS.labels("solicited").inc(len(frames))
            return frames
        if _is_dhcp6(data):
            PACKET_INS.labels("dhcp6").inc()
            config = dhcp6.config_for(port, intent, self.lease_seconds) \
                if port is not None and intent is not None else None
            if config is None:
                DHCP_IGNORED.labels("no DHCPv6 address").inc()
                return []
            out = dhcp6.answer(data, config)
            if isinstance(out, dhcp.Ignored):
                DHCP_IGNORED.labels(out.reason).inc()
                return []
            DHCP_REPLIES.labels(out.kind).inc()
            return [out.frame]
        reply = self.dhcp(port, intent, data)
        return [] if reply is None else [reply]

    def dhcp(self, port: Optional[Port], intent: Optional[Intent], data: bytes
             ) -> Optional[bytes]:
        """The reply frame to a DHCP request, or None."""
        PACKET_INS.labels("dhcp").inc()
        if port is None or intent is None:
            DHCP_IGNORED.labels("unknown port").inc()
            return None
        lease = dhcp.lease_for(port, intent, self.lease_seconds)
        if lease is None:
            DHCP_IGNORED.labels("no DHCP address").inc()
            return None
        out = dhcp.answer(data, lease)
        if isinstance(out, dhcp.Ignored):
            DHCP_IGNORED.labels(out.reason).inc()
            return None
        DHCP_REPLIES.labels(out.kind).inc()
        LOG.debug("DHCP %s to port %s: %s", out.kind, port.id, lease.address)
        return out.frame


def _is_dhcp6(data: bytes) -> bool:
    """An untagged IPv6 frame carrying UDP to port 547 (what `dhcp6_punt` sends)."""
    return len(data) > 58 and data[12:14] == b"\x86\xdd" and data[20] == 17 \
        and data[56:58] == b"\x02\x23"


def _is_router_solicitation(data: bytes) -> bool:
    """An untagged IPv6 frame carrying ICMPv6 type 133 right after the fixed header
    (what the `rs_punt` flow sends; a DHCPv4 request is IPv4)."""
    return len(data) > 54 and data[12:14] == b"\x86\xdd" and data[20] == 58 and data[54] == 133
