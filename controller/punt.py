"""What the switches send up to the controller, and what Loom sends back.

Every packet-in is one of: a guest's DHCP request (its port's `dhcp_punt` flow, cookie
of the port), the upstream router's ARP on a gateway chassis (l3 `gateway_arp`), an
LLDP probe of the fabric; anything else is a bug, counted. Guest punts go through the
port's punt meter and upstream ARP through the chassis' (pipeline.PUNT_*), so neither
a guest nor a host on the physical network can send the controller more than its
share. The drops of those meters are read from the switches (`PUNT_DROPS`).
"""

from __future__ import annotations

import logging
from typing import Optional

from prometheus_client import Counter, Gauge

from controller import dhcp
from controller.intent import Intent, Port

LOG = logging.getLogger(__name__)

PACKET_INS = Counter("loom_packet_ins_total",
                     "Packets the switches sent to the controller, by kind "
                     "(dhcp, upstream_arp, lldp, unexpected)", ["kind"])
DHCP_REPLIES = Counter("loom_dhcp_replies_total", "DHCP replies sent, by type (offer, ack, nak)",
                       ["type"])
DHCP_IGNORED = Counter("loom_dhcp_ignored_total",
                       "DHCP client packets punted and not answered, by reason", ["reason"])
PUNT_DROPS = Gauge("loom_punt_meter_dropped_packets",
                   "Packets the punt meters of a switch dropped (guests' DHCP beyond their "
                   "rate, upstream ARP floods), since the meters were installed",
                   ["datapath_id"])


class DhcpService:
    """Answers the DHCP requests punted by guest ports (controller/dhcp.py)."""

    def __init__(self, lease_seconds: int = dhcp.DEFAULT_LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds

    def handle(self, port: Optional[Port], intent: Optional[Intent], data: bytes
               ) -> Optional[bytes]:
        """The reply frame to send out of the port, or None."""
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
