"""Conntrack as the pipeline sees it: one table per switch, connections per zone.

Enough of Linux conntrack for Loom's stateful ACLs and NAT: a packet sent through
ct() comes back tracked (+trk) and new, established, or established in the reply
direction, with the connection's mark; ct(commit) records the connection (and a
mark, and a source or destination translation); ct(nat) on a later packet of the
connection applies that translation, or undoes it for the replies. ICMP echo is one
connection with its reply (no identifiers are modelled); invalid and related states
never arise here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from controller.compiler.acl import ETH_IPV4, ETH_IPV6, IPPROTO
from controller.flows import CT_EST, CT_NEW, CT_RPL, CT_TRK, Nat

L4 = {IPPROTO["tcp"]: ("tcp_src", "tcp_dst"), IPPROTO["udp"]: ("udp_src", "udp_dst")}
Tuple = tuple[int, int, int, int, int, int]  # eth_type, src, dst, proto, sport, dport


def _addr_fields(packet: dict[str, int]) -> tuple[str, str]:
    return ("ipv6_src", "ipv6_dst") if packet.get("eth_type") == ETH_IPV6 \
        else ("ipv4_src", "ipv4_dst")


def five_tuple(packet: dict[str, int]) -> Optional[Tuple]:
    if packet.get("eth_type") not in (ETH_IPV4, ETH_IPV6):
        return None
    src, dst = _addr_fields(packet)
    proto = packet.get("ip_proto", 0)
    ports = L4.get(proto)
    sport = packet.get(ports[0], 0) if ports else 0
    dport = packet.get(ports[1], 0) if ports else 0
    return (packet["eth_type"], packet.get(src, 0), packet.get(dst, 0), proto, sport, dport)


def reverse(t: Tuple) -> Tuple:
    return (t[0], t[2], t[1], t[3], t[5], t[4])


@dataclass
class Connection:
    original: Tuple
    reply: Tuple  # as the reply arrives (after the translation)
    mark: int = 0
    nat: Optional[Nat] = None


@dataclass
class Conntrack:
    """One switch's connections: (zone, tuple) -> (connection, is the reply direction)."""

    table: dict[tuple[int, Tuple], tuple[Connection, bool]] = field(default_factory=dict)

    def find(self, zone: int, packet: dict[str, int]) -> tuple[Optional[Connection], bool]:
        t = five_tuple(packet)
        if t is None:
            return None, False
        hit = self.table.get((zone, t))
        return (None, False) if hit is None else hit

    def state(self, zone: int, packet: dict[str, int]) -> tuple[int, int]:
        """(ct_state, ct_mark) a lookup in `zone` gives the packet."""
        conn, reply = self.find(zone, packet)
        if conn is None:
            return CT_TRK | CT_NEW, 0
        return CT_TRK | CT_EST | (CT_RPL if reply else 0), conn.mark

    def commit(self, zone: int, packet: dict[str, int], mark: Optional[int],
               mark_mask: Optional[int], nat: Optional[Nat]) -> None:
        conn, _ = self.find(zone, packet)
        if conn is None:
            t = five_tuple(packet)
            if t is None:
                return
            translated = dict(packet)
            if nat is not None:
                translate(translated, nat)
            after = five_tuple(translated)
            assert after is not None
            conn = Connection(t, reverse(after), nat=nat)
            self.table[(zone, t)] = (conn, False)
            self.table[(zone, conn.reply)] = (conn, True)
        if mark is not None:
            mask = 0xFFFFFFFF if mark_mask is None else mark_mask
            conn.mark = (conn.mark & ~mask) | (mark & mask)

    def apply_nat(self, zone: int, packet: dict[str, int]) -> None:
        """ct(nat): translate a packet of a connection committed with a translation
        (the original direction as committed, the reply direction back)."""
        conn, reply = self.find(zone, packet)
        if conn is None or conn.nat is None:
            return
        src, dst = _addr_fields(packet)
        ports = L4.get(packet.get("ip_proto", 0))
        if not reply:
            translate(packet, conn.nat)
            return
        # the reply: undo it, from the original tuple
        _, osrc, odst, _, osport, odport = conn.original
        if conn.nat.kind == "src":
            packet[dst] = osrc
            if ports:
                packet[ports[1]] = osport
        else:
            packet[src] = odst
            if ports:
                packet[ports[0]] = odport


def translate(packet: dict[str, int], nat: Nat) -> None:
    src, dst = _addr_fields(packet)
    ports = L4.get(packet.get("ip_proto", 0))
    if nat.kind == "src":
        packet[src] = nat.ip_min
        if ports and nat.port_min is not None:
            packet[ports[0]] = nat.port_min
    else:
        packet[dst] = nat.ip_min
        if ports and nat.port_min is not None:
            packet[ports[1]] = nat.port_min
