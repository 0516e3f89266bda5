"""DHCPv6 answered by Loom itself, from intent, statelessly (RFC 8415), as `dhcp.py`
does for IPv4.

A guest port with an address on a subnet whose `ipv6_address_mode` is
`dhcpv6-stateful` or `dhcpv6-stateless` punts its DHCPv6 client packets (its own MAC,
UDP 546 -> 547) through its punt meter (compiler/ports.py `dhcp6_punt`); the reply
goes back out of the same port:

- stateful: SOLICIT -> ADVERTISE (or REPLY with rapid commit), REQUEST / RENEW /
  REBIND / CONFIRM -> REPLY, with an IA_NA holding the port's address on the subnet
  (an address the port no longer has is given lifetimes 0, so the client drops it);
- stateless: INFORMATION-REQUEST -> REPLY with the subnet's DNS servers only (the
  address comes from SLAAC);
- RELEASE and DECLINE -> REPLY with success (there is no lease to free).

The server's DUID is a DUID-LL of `SERVER_MAC`; replies come from its link-local
address. Nothing is kept between messages.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Union

from os_ken.lib.packet import dhcp6 as dhcp6_lib
from os_ken.lib.packet import ether_types, ethernet, in_proto, ipv6, packet, udp

from controller.compiler.ports import (
    DHCPV6_CLIENT_PORT,
    DHCPV6_SERVER_PORT,
    link_local_of,
    serves_dhcp6,
)
from controller.dhcp import SERVER_MAC, Ignored, Reply
from controller.intent import Intent, Port

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
INFORMATION_REQUEST = 11
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR = 1, 2, 3, 5
OPT_STATUS_CODE, OPT_RAPID_COMMIT, OPT_DNS_SERVERS = 13, 14, 23
STATUS_SUCCESS, STATUS_NOT_ON_LINK = 0, 4
SERVER_DUID = struct.pack("!HH", 3, 1) + bytes.fromhex(SERVER_MAC.replace(":", ""))
DEFAULT_LIFETIME = 43200
_NAMES = {ADVERTISE: "advertise", REPLY: "reply"}



@dataclass(frozen=True)
class Config:
    """What one port is told over DHCPv6."""

    address: Optional[ipaddress.IPv6Address]  # stateful: its address; stateless: None
    dns: tuple[ipaddress.IPv6Address, ...]
    lifetime: int


def config_for(port: Port, intent: Intent, lifetime: int = DEFAULT_LIFETIME
               ) -> Optional[Config]:
    """The port's first address on a DHCPv6 subnet, with that subnet's DNS servers."""
    for f in port.fixed_ips:
        subnet = intent.subnets.get(f.subnet_id)
        if not serves_dhcp6(subnet):
            continue
        assert subnet is not None
        dns = tuple(a for a in map(ipaddress.ip_address, subnet.dns_nameservers)
                    if isinstance(a, ipaddress.IPv6Address))
        stateful = subnet.ipv6_address_mode == "dhcpv6-stateful"
        return Config(ipaddress.IPv6Address(f.ip_address) if stateful else None, dns,
                      lifetime)
    return None


def answer(frame: bytes, config: Config) -> Union[Reply, Ignored]:
    """The reply to one punted DHCPv6 client message (parsed and built by os-ken's
    dhcp6 classes; only the IA_NA's inside is read and written here)."""
    try:
        pkt = packet.Packet(frame)
    except Exception:  # os-ken raises what the bytes make it raise (a truncated option)
        return Ignored("unparsable")
    eth, ip6 = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6)
    req = pkt.get_protocol(dhcp6_lib.dhcp6)
    if eth is None or ip6 is None or req is None or req.options is None:
        return Ignored("not a DHCPv6 message")
    opts: dict[int, bytes] = {}
    for opt in req.options.option_list:
        opts.setdefault(opt.code, bytes(opt.data))
    client = opts.get(OPT_CLIENTID)
    if client is None:
        return Ignored("no client id")
    server = opts.get(OPT_SERVERID)
    if server is not None and server != SERVER_DUID:
        return Ignored("to another server")
    out = [(OPT_CLIENTID, client), (OPT_SERVERID, SERVER_DUID)]
    kind = req.msg_type
    if kind == INFORMATION_REQUEST:
        reply_kind = REPLY
    elif kind in (SOLICIT, REQUEST, RENEW, REBIND, CONFIRM):
        if config.address is None:
            return Ignored("stateless subnet")
        ia = opts.get(OPT_IA_NA)
        if ia is None or len(ia) < 12:
            return Ignored("no IA_NA")
        out.append((OPT_IA_NA, _ia_na(ia[:4], config, _asked(ia[12:]))))
        if kind == SOLICIT and OPT_RAPID_COMMIT not in opts:
            reply_kind = ADVERTISE
        else:
            reply_kind = REPLY
            if kind == SOLICIT:
                out.append((OPT_RAPID_COMMIT, b""))
    elif kind in (RELEASE, DECLINE):
        reply_kind = REPLY
        out.append((OPT_STATUS_CODE, struct.pack("!H", STATUS_SUCCESS)))
    else:
        return Ignored("not a client message")
    if config.dns:
        out.append((OPT_DNS_SERVERS, b"".join(a.packed for a in config.dns)))
    body = dhcp6_lib.dhcp6(
        reply_kind, dhcp6_lib.options([dhcp6_lib.option(code, data, len(data))
                                       for code, data in out]),
        transaction_id=req.transaction_id)
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(eth.src, SERVER_MAC, ether_types.ETH_TYPE_IPV6))
    reply.add_protocol(ipv6.ipv6(src=link_local_of(SERVER_MAC), dst=ip6.src,
                                 nxt=in_proto.IPPROTO_UDP, hop_limit=255))
    reply.add_protocol(udp.udp(src_port=DHCPV6_SERVER_PORT, dst_port=DHCPV6_CLIENT_PORT))
    reply.add_protocol(body)
    reply.serialize()
    return Reply(_NAMES[reply_kind], bytes(reply.data))


def _asked(ia_options: bytes) -> list[ipaddress.IPv6Address]:
    """The addresses an IA_NA names (a renew's current ones)."""
    opts = ia_options
    out = []
    at = 0
    while at + 4 <= len(opts):
        code, length = struct.unpack_from("!HH", opts, at)
        if code == OPT_IAADDR and length >= 24 and at + 4 + length <= len(opts):
            out.append(ipaddress.IPv6Address(opts[at + 4:at + 20]))
        at += 4 + length
    return out


def _ia_na(iaid: bytes, config: Config, asked: list[ipaddress.IPv6Address]) -> bytes:
    """The port's address, and lifetimes 0 for any other one the client holds."""
    assert config.address is not None
    life = config.lifetime
    addrs = _opt(OPT_IAADDR, config.address.packed + struct.pack("!II", life, life))
    for old in asked:
        if old != config.address:
            addrs += _opt(OPT_IAADDR, old.packed + struct.pack("!II", 0, 0))
    return iaid + struct.pack("!II", life // 2, life * 4 // 5) + addrs


def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data
