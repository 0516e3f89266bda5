"""IPv6 router advertisements, sent by Loom for the routers of subnets with
`ipv6_ra_mode` (as Neutron's L3 agent runs radvd, and OVN's ovn-controller sends them).

A guest's router solicitation comes up through its port's `rs_punt` flow and punt meter
(compiler/ports.py) and is answered by a packet-out on that port; every local port of
such a subnet also gets an unsolicited advertisement every `INTERVAL` seconds
(`Engine.ra_due`). The advertisement is the router interface's: its MAC and link-local
address (EUI-64 of the MAC) as source, so the guest's default route points to it; the
subnet's /64 as prefix, autonomous when the subnet's addresses are SLAAC or
DHCPv6-stateless (the guest's address is then its EUI-64 one, which is what Loom's
IPAM gave the port); M set for dhcpv6-stateful, O for dhcpv6-stateless; the network's
MTU. Without a router interface on the subnet nothing is sent (Neutron's radvd runs in
the router too).

Loom does not route IPv6 (compiler/routing.py): the default route the advertisement
gives leads to a router that answers nothing yet. Addresses and on-link reach work.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from os_ken.lib.packet import ether_types, ethernet, icmpv6, in_proto, ipv6, packet

from controller.compiler.ports import advertises, link_local_of
from controller.intent import Intent, Port

INTERVAL = 60.0  # seconds between unsolicited advertisements to a port
ROUTER_LIFETIME = 1800  # seconds (RFC 4861's default: 3 x MaxRtrAdvInterval)
VALID_LIFETIME = 2592000  # 30 days, as radvd's default
PREFERRED_LIFETIME = 604800  # 7 days
HOP_LIMIT = 64
ALL_NODES = "ff02::1"
ALL_NODES_MAC = "33:33:00:00:00:01"
_M_FLAG, _O_FLAG = 2, 1  # os-ken's `res`: M and O, shifted by it
_L_FLAG, _A_FLAG = 4, 2  # os-ken's prefix `res1`: L and A, shifted by it
AUTO_MODES = ("slaac", "dhcpv6-stateless")


@dataclass(frozen=True)
class Advert:
    """One router's advertisement on one subnet."""

    router_mac: str
    prefix: ipaddress.IPv6Network
    autonomous: bool
    managed: bool
    other: bool
    mtu: int

    @property
    def source(self) -> str:
        return link_local_of(self.router_mac)


def adverts_for(port: Port, intent: Intent,
                router_port_on: Callable[[str], Optional[Port]]) -> list[Advert]:
    """What the port's guest is told: one advertisement per advertised subnet the port
    has an address on and a router interface serves. O(the port's addresses)."""
    network = intent.networks.get(port.network_id)
    out = []
    for f in port.fixed_ips:
        subnet = intent.subnets.get(f.subnet_id)
        if subnet is None or not advertises(subnet) or network is None:
            continue
        router = router_port_on(subnet.id)
        if router is None:
            continue
        mode = subnet.ipv6_address_mode or subnet.ipv6_ra_mode
        out.append(Advert(router.mac_address, ipaddress.IPv6Network(subnet.cidr, strict=False),
                          autonomous=mode in AUTO_MODES,
                          managed=subnet.ipv6_ra_mode == "dhcpv6-stateful",
                          other=subnet.ipv6_ra_mode == "dhcpv6-stateless", mtu=network.mtu))
    return out


def frame(advert: Advert, dst_mac: str = ALL_NODES_MAC, dst_ip: str = ALL_NODES) -> bytes:
    """The router advertisement (RFC 4861 4.2), hop limit 255."""
    flags = (_M_FLAG if advert.managed else 0) | (_O_FLAG if advert.other else 0)
    options: list[Any] = [
        icmpv6.nd_option_sla(hw_src=advert.router_mac),
        # (raw: os-ken's nd_option_mtu has no length, the advert's serializer needs one)
        struct.pack("!BBHI", icmpv6.ND_OPTION_MTU, 1, 0, advert.mtu),
        icmpv6.nd_option_pi(pl=advert.prefix.prefixlen,
                            res1=_L_FLAG | (_A_FLAG if advert.autonomous else 0),
                            val_l=VALID_LIFETIME, pre_l=PREFERRED_LIFETIME,
                            prefix=str(advert.prefix.network_address)),
    ]
    body = icmpv6.nd_router_advert(ch_l=HOP_LIMIT, res=flags, rou_l=ROUTER_LIFETIME,
                                   options=options)
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst_mac, advert.router_mac, ether_types.ETH_TYPE_IPV6))
    out.add_protocol(ipv6.ipv6(src=advert.source, dst=dst_ip, nxt=in_proto.IPPROTO_ICMPV6,
                               hop_limit=255))
    out.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_ROUTER_ADVERT, data=body))
    out.serialize()
    return bytes(out.data)


def answer(solicitation: bytes, adverts: list[Advert]) -> list[bytes]:
    """The advertisements answering one router solicitation: to its sender (its MAC;
    its address, or all nodes when it solicited from the unspecified address)."""
    try:
        pkt = packet.Packet(solicitation)
    except Exception:  # os-ken raises what the bytes make it raise
        return []
    eth, ip6, icmp = (pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6),
                      pkt.get_protocol(icmpv6.icmpv6))
    if eth is None or ip6 is None or icmp is None or icmp.type_ != icmpv6.ND_ROUTER_SOLICIT:
        return []
    dst = ALL_NODES if ip6.src == "::" else ip6.src
    return [frame(a, eth.src, dst) for a in adverts]
