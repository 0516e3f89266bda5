"""Flows owned by one bound port: classify, port security, local delivery.

Each function is memoised on its (hashable, frozen) inputs, so recompiling after a
change to one port rebuilds only that port's flows; the rest come from the cache.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from controller import pipeline as pl
from controller.compiler.qos import PortQos
from controller.flows import (
    Action,
    Flow,
    Meter,
    Output,
    SetField,
    SetQueue,
    ip4,
    ip6,
    mac,
    match,
)
from controller.intent import Intent, Network, Port, Subnet

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ICMPV6_NS = 135
ICMPV6_RS = 133
ICMPV6_NA = 136
ICMPV6_RA = 134
IPPROTO_UDP = 17
DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
DHCPV6_CLIENT_PORT = 546
DHCPV6_SERVER_PORT = 547
_ALL_ONES_64 = (1 << 64) - 1
NO_QOS = PortQos()


def link_local_of(mac_address: str) -> str:
    """The EUI-64 IPv6 link-local address a guest derives from its MAC."""
    octets = [int(x, 16) for x in mac_address.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    suffix = int.from_bytes(bytes(eui), "big")
    return str(ipaddress.IPv6Address((0xFE80 << 112) | suffix))


def split_ips(port: Port) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for fip in port.fixed_ips:
        (v6 if ":" in fip.ip_address else v4).append(fip.ip_address)
    return v4, v6


def serves_dhcp(subnet: Optional[Subnet]) -> bool:
    return subnet is not None and subnet.ip_version == 4 and subnet.enable_dhcp


def advertises(subnet: Optional[Subnet]) -> bool:
    """Loom sends router advertisements on the subnet (Neutron's ipv6_ra_mode)."""
    return subnet is not None and subnet.ip_version == 6 and subnet.ipv6_ra_mode is not None


DHCPV6_MODES = ("dhcpv6-stateful", "dhcpv6-stateless")


def serves_dhcp6(subnet: Optional[Subnet]) -> bool:
    """Loom answers DHCPv6 on the subnet (controller/dhcp6.py)."""
    return subnet is not None and subnet.ip_version == 6 and subnet.enable_dhcp \
        and subnet.ipv6_address_mode in DHCPV6_MODES


@dataclass(frozen=True)
class Punts:
    """What a port's guest may send up to the controller (through its punt meter)."""

    dhcp: bool = False  # DHCPv4 requests: it has an IPv4 address on a DHCP subnet
    rs: bool = False  # router solicitations: an IPv6 address on an advertised subnet
    dhcp6: bool = False  # DHCPv6: an IPv6 address on a DHCPv6 (stateful/stateless) one

    def __bool__(self) -> bool:
        return self.dhcp or self.rs or self.dhcp6


NO_PUNTS = Punts()


def subnet_punts(subnet: Optional[Subnet]) -> Punts:
    return Punts(serves_dhcp(subnet), advertises(subnet), serves_dhcp6(subnet))


def port_punts(port: Port, intent: Intent) -> Punts:
    """What Loom answers for the port. O(the port's addresses)."""
    dhcp = rs = dhcp6 = False
    for f in port.fixed_ips:
        subnet = intent.subnets.get(f.subnet_id)
        dhcp = dhcp or serves_dhcp(subnet)
        rs = rs or advertises(subnet)
        dhcp6 = dhcp6 or serves_dhcp6(subnet)
    return Punts(dhcp, rs, dhcp6) if dhcp or rs or dhcp6 else NO_PUNTS



def punt_meter(ofport: int) -> Meter:
    """The meter every packet the port's guest sends to the controller goes through."""
    return Meter(pl.punt_meter_id(ofport), pl.PUNT_RATE_PPS, pl.PUNT_BURST_PACKETS, pps=True)


@lru_cache(maxsize=65536)
def port_flows(port: Port, network: Network, ofport: int, zone: int,
               qos: PortQos = NO_QOS, punts: Punts = NO_PUNTS) -> tuple[Flow, ...]:
    """Everything one local port needs on the switch it is bound to.

    `zone` is the network's conntrack zone on this switch, carried in REG_CT_ZONE;
    `qos` what the port's QoS policy asks of its flows (meter, queue, DSCP); `punts`:
    what Loom answers for it (`port_punts`: DHCPv4, router solicitations), through the
    meter `punt_meter(ofport)`; DHCPv6 too.
    """
    owner = pl.cookie(pl.Owner.PORT, port.key)
    classify_actions: list[Action] = [SetField(pl.REG_CT_ZONE, zone)]
    if qos.queue_id is not None:
        classify_actions.append(SetQueue(qos.queue_id))
    flows = [
        pl.CLASSIFY.flow(
            "port", match(in_port=ofport),
            actions=tuple(classify_actions),
            write_metadata=(network.key, _ALL_ONES_64),
            meter=qos.meter_id,
            goto="port_security", cookie=owner),
        pl.L2_LOOKUP.flow(
            "known_mac", match(metadata=network.key, eth_dst=mac(port.mac_address)),
            actions=(SetField(pl.REG_OUT_PORT, ofport),), goto="ingress_acl", cookie=owner),
        pl.OUTPUT.flow(
            "deliver", match(**{pl.REG_OUT_PORT: ofport}),
            actions=(Output(ofport),), cookie=owner),
    ]
    flows.extend(_port_security(port, ofport, owner, qos.dscp))
    src = mac(port.mac_address)
    for wanted, name, what in (
            (punts.dhcp, "dhcp_punt", {"eth_type": ETH_IPV4, "ip_proto": IPPROTO_UDP,
                                       "udp_src": DHCP_CLIENT_PORT,
                                       "udp_dst": DHCP_SERVER_PORT}),
            (punts.dhcp6, "dhcp6_punt", {"eth_type": ETH_IPV6, "ip_proto": IPPROTO_UDP,
                                         "udp_src": DHCPV6_CLIENT_PORT,
                                         "udp_dst": DHCPV6_SERVER_PORT}),
            (punts.rs, "rs_punt", {"eth_type": ETH_IPV6, "ip_proto": IPPROTO_ICMPV6,
                                   "icmpv6_type": ICMPV6_RS})):
        if wanted:
            flows.append(pl.PORT_SECURITY.flow(
                name, match(in_port=ofport, eth_src=src, **what),
                actions=(Output(pl.OFPP_CONTROLLER, 0xFFFF),),
                meter=pl.punt_meter_id(ofport), cookie=owner))
    return tuple(flows)


def _port_security(port: Port, ofport: int, owner: int, dscp: Optional[int]) -> list[Flow]:
    table = pl.PORT_SECURITY
    nxt = "arp_responder"
    mark: tuple[Action, ...] = () if dscp is None else (SetField("ip_dscp", dscp),)
    if not port.port_security_enabled:
        out = [table.flow("exempt", match(in_port=ofport), goto=nxt, cookie=owner)]
        if mark:  # still mark IP traffic: DSCP is QoS, not security
            out += [table.flow("allow", match(in_port=ofport, eth_type=eth), actions=mark,
                               goto=nxt, cookie=owner) for eth in (ETH_IPV4, ETH_IPV6)]
        return out
    src = mac(port.mac_address)
    v4, v6 = split_ips(port)
    flows = [
        table.flow("drop", match(in_port=ofport), cookie=owner),
        # a guest is never a DHCP server, nor a router, to its neighbours
        table.flow("dhcp_server_drop", match(in_port=ofport, eth_type=ETH_IPV4,
                                             ip_proto=IPPROTO_UDP, udp_src=DHCP_SERVER_PORT,
                                             udp_dst=DHCP_CLIENT_PORT), cookie=owner),
        table.flow("dhcp_server_drop", match(in_port=ofport, eth_type=ETH_IPV6,
                                             ip_proto=IPPROTO_UDP, udp_src=DHCPV6_SERVER_PORT,
                                             udp_dst=DHCPV6_CLIENT_PORT), cookie=owner),
        table.flow("router_advert_drop", match(in_port=ofport, eth_type=ETH_IPV6,
                                               ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_RA),
                   cookie=owner),
        # a neighbour advertisement names the port's own addresses only (below)
        table.flow("nd_advert_drop", match(in_port=ofport, eth_type=ETH_IPV6,
                                           ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NA),
                   cookie=owner),
    ]
    for addr in v4:
        flows.append(table.flow(
            "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_ARP, arp_sha=src,
                           arp_spa=ip4(addr)), goto=nxt, cookie=owner))
        flows.append(table.flow(
            "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV4, ipv4_src=ip4(addr)),
            actions=mark, goto=nxt, cookie=owner))
    # IPv6: the port's own addresses and the link-local one its MAC implies, plus
    # the unspecified source that duplicate address detection must use.
    for addr in [*v6, link_local_of(port.mac_address)]:
        flows.append(table.flow(
            "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV6, ipv6_src=ip6(addr)),
            actions=mark, goto=nxt, cookie=owner))
        for tll in (src, 0):  # its own MAC as target link-layer address, or none given
            flows.append(table.flow(
                "nd_advert", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV6,
                                   ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NA,
                                   ipv6_nd_target=ip6(addr), ipv6_nd_tll=tll),
                goto=nxt, cookie=owner))
    flows.append(table.flow(
        "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV6, ipv6_src=0,
                       ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NS),
        goto=nxt, cookie=owner))
    return flows
