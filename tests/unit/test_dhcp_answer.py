"""Loom's DHCP answers (controller/dhcp.py), read back with os-ken's packet library as
a client would: the port's own address and its subnet's options, a NAK for anything
else, silence for another server's transaction."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Optional

from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp

from controller.dhcp import DHCP_NAK, Ignored, Reply, answer, lease_for
from controller.intent import FixedIP, Intent, Network, Port, Subnet

NET = Network("n1", "p", "n1", "vxlan", 100, mtu=1450)
OTHER = Network("n2", "q", "n2", "vxlan", 101)
SUB = Subnet("s1", "p", "n1", "s1", 4, "10.0.0.0/24", "10.0.0.1", enable_dhcp=True,
             dns_nameservers=("192.0.2.53", "192.0.2.54"),
             host_routes=(("172.16.0.0/12", "10.0.0.254"), ("fd00::/8", "fe80::1")))
SUB6 = Subnet("s6", "p", "n1", "s6", 6, "fd00::/64", "fd00::1", enable_dhcp=True)
OFF = Subnet("s2", "q", "n2", "s2", 4, "10.0.0.0/24", "10.0.0.1", enable_dhcp=False)
MAC = "fa:16:3e:00:00:05"
PORT = Port("p1", "p", "n1", "vm", MAC, (FixedIP("s6", "fd00::5"), FixedIP("s1", "10.0.0.5")))
INTENT = Intent(networks={"n1": NET, "n2": OTHER}, subnets={"s1": SUB, "s6": SUB6, "s2": OFF},
                ports={"p1": PORT})


def _request(mtype: int, *, requested: Optional[str] = None, server: Optional[str] = None,
             ciaddr: str = "0.0.0.0", flags: int = 0) -> bytes:
    opts = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([mtype]))]
    if requested:
        opts.append(dhcp.option(dhcp.DHCP_REQUESTED_IP_ADDR_OPT,
                                ipaddress.IPv4Address(requested).packed))
    if server:
        opts.append(dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT,
                                ipaddress.IPv4Address(server).packed))
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", MAC, 0x0800))
    p.add_protocol(ipv4.ipv4(src=ciaddr, dst="255.255.255.255", proto=17))
    p.add_protocol(udp.udp(src_port=68, dst_port=67))
    p.add_protocol(dhcp.dhcp(op=dhcp.DHCP_BOOT_REQUEST, chaddr=MAC, xid=0x1234, flags=flags,
                             ciaddr=ciaddr, options=dhcp.options(option_list=opts)))
    p.serialize()
    return bytes(p.data)


def _read(reply: Any) -> tuple[packet.Packet, dict[int, bytes]]:
    assert isinstance(reply, Reply)
    pkt = packet.Packet(reply.frame)
    d = pkt.get_protocol(dhcp.dhcp)
    return pkt, {o.tag: o.value for o in d.options.option_list if isinstance(o, dhcp.option)}


def _lease(intent: Intent = INTENT) -> Any:
    lease = lease_for(intent.ports["p1"], intent, 600)
    assert lease is not None
    return lease


def test_discover_is_offered_the_ports_address_with_its_subnets_options() -> None:
    reply = answer(_request(dhcp.DHCP_DISCOVER), _lease())
    pkt, opts = _read(reply)
    d, ip, eth = (pkt.get_protocol(dhcp.dhcp), pkt.get_protocol(ipv4.ipv4),
                  pkt.get_protocol(ethernet.ethernet))
    assert reply.kind == "offer" and opts[53] == bytes([dhcp.DHCP_OFFER])
    assert d.yiaddr == "10.0.0.5" and d.xid == 0x1234 and d.chaddr == MAC
    assert (eth.dst, ip.dst, ip.src) == (MAC, "10.0.0.5", "10.0.0.1")
    assert opts[1] == ipaddress.IPv4Address("255.255.255.0").packed
    assert opts[3] == ipaddress.IPv4Address("10.0.0.1").packed
    assert opts[6] == b"\xc0\x00\x02\x35\xc0\x00\x02\x36"
    assert opts[26] == (1450).to_bytes(2, "big")
    assert opts[51] == (600).to_bytes(4, "big") and opts[54] == opts[3]
    # option 121: the IPv4 host route, then the default route (RFC 3442: a client
    # that gets 121 ignores option 3); the IPv6 host route is left out
    assert opts[121] == bytes([12, 172, 16, 10, 0, 0, 254, 0, 10, 0, 0, 1])
    assert len(reply.frame) >= 14 + 20 + 8 + 300  # BOOTP minimum


def test_request_for_its_address_is_acked_and_for_another_is_naked() -> None:
    ack = answer(_request(dhcp.DHCP_REQUEST, requested="10.0.0.5", server="10.0.0.1"), _lease())
    assert ack.kind == "ack" and _read(ack)[0].get_protocol(dhcp.dhcp).yiaddr == "10.0.0.5"
    nak = answer(_request(dhcp.DHCP_REQUEST, requested="10.0.0.9"), _lease())
    pkt, opts = _read(nak)
    assert nak.kind == "nak" and opts[53] == bytes([DHCP_NAK]) and 51 not in opts
    assert pkt.get_protocol(ipv4.ipv4).dst == "255.255.255.255"


def test_a_renew_of_an_address_the_port_no_longer_has_is_naked() -> None:
    moved = dataclasses.replace(PORT, fixed_ips=(FixedIP("s1", "10.0.0.7"),))
    intent = dataclasses.replace(INTENT, ports={"p1": moved})
    renew = _request(dhcp.DHCP_REQUEST, ciaddr="10.0.0.5")
    assert answer(renew, _lease(INTENT)).kind == "ack"
    assert answer(renew, _lease(intent)).kind == "nak"
    offer = answer(_request(dhcp.DHCP_DISCOVER), _lease(intent))
    assert _read(offer)[0].get_protocol(dhcp.dhcp).yiaddr == "10.0.0.7"


def test_another_servers_transaction_and_releases_get_no_answer() -> None:
    assert isinstance(answer(_request(dhcp.DHCP_REQUEST, requested="10.0.0.5",
                                      server="10.0.0.2"), _lease()), Ignored)
    assert isinstance(answer(_request(7), _lease()), Ignored)  # RELEASE
    assert isinstance(answer(b"\x00" * 20, _lease()), Ignored)


def test_a_subnet_update_is_in_the_next_answer() -> None:
    sub = dataclasses.replace(SUB, dns_nameservers=("198.51.100.53",), host_routes=())
    intent = dataclasses.replace(INTENT, subnets={**INTENT.subnets, "s1": sub})
    _, opts = _read(answer(_request(dhcp.DHCP_REQUEST, ciaddr="10.0.0.5"), _lease(intent)))
    assert opts[6] == ipaddress.IPv4Address("198.51.100.53").packed and 121 not in opts


def test_no_lease_without_an_ipv4_address_on_a_served_subnet() -> None:
    v6only = dataclasses.replace(PORT, fixed_ips=(FixedIP("s6", "fd00::5"),))
    off = Port("p2", "q", "n2", "vm2", "fa:16:3e:00:00:06", (FixedIP("s2", "10.0.0.5"),))
    assert lease_for(v6only, INTENT) is None
    assert lease_for(off, INTENT) is None
