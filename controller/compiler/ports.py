"""Flows owned by one bound port: classify, port security, local delivery.

Each function is memoised on its (hashable, frozen) inputs, so recompiling after a
change to one port rebuilds only that port's flows; the rest come from the cache.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from controller import pipeline as pl
from controller.flows import Flow, Output, SetField, ip4, ip6, mac, match
from controller.intent import Network, Port

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ICMPV6_NS = 135
ICMPV6_RS = 133
ICMPV6_NA = 136
_ALL_ONES_64 = (1 << 64) - 1


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


@lru_cache(maxsize=65536)
def port_flows(port: Port, network: Network, ofport: int, zone: int) -> tuple[Flow, ...]:
    """Everything one local port needs on the switch it is bound to.

    `zone` is the network's conntrack zone on this switch, carried in REG_CT_ZONE.
    """
    owner = pl.cookie(pl.Owner.PORT, port.key)
    flows = [
        pl.CLASSIFY.flow(
            "port", match(in_port=ofport),
            actions=(SetField(pl.REG_CT_ZONE, zone),),
            write_metadata=(network.key, _ALL_ONES_64),
            goto="port_security", cookie=owner),
        pl.L2_LOOKUP.flow(
            "known_mac", match(metadata=network.key, eth_dst=mac(port.mac_address)),
            actions=(SetField(pl.REG_OUT_PORT, ofport),), goto="ingress_acl", cookie=owner),
        pl.OUTPUT.flow(
            "deliver", match(**{pl.REG_OUT_PORT: ofport}),
            actions=(Output(ofport),), cookie=owner),
    ]
    flows.extend(_port_security(port, ofport, owner))
    return tuple(flows)


def _port_security(port: Port, ofport: int, owner: int) -> list[Flow]:
    table = pl.PORT_SECURITY
    nxt = "arp_responder"
    if not port.port_security_enabled:
        return [table.flow("exempt", match(in_port=ofport), goto=nxt, cookie=owner)]
    src = mac(port.mac_address)
    v4, v6 = split_ips(port)
    flows = [table.flow("drop", match(in_port=ofport), cookie=owner)]
    for addr in v4:
        flows.append(table.flow(
            "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_ARP, arp_sha=src,
                           arp_spa=ip4(addr)), goto=nxt, cookie=owner))
        flows.append(table.flow(
            "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV4, ipv4_src=ip4(addr)),
            goto=nxt, cookie=owner))
    # IPv6: the port's own addresses and the link-local one its MAC implies, plus
    # the unspecified source that duplicate address detection must use.
    for addr in [*v6, link_local_of(port.mac_address)]:
        flows.append(table.flow(
            "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV6, ipv6_src=ip6(addr)),
            goto=nxt, cookie=owner))
    flows.append(table.flow(
        "allow", match(in_port=ofport, eth_src=src, eth_type=ETH_IPV6, ipv6_src=0,
                       ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NS),
        goto=nxt, cookie=owner))
    return flows
