"""Flows owned by a network on one switch: ARP answers and the flood set."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Optional

from controller import pipeline as pl
from controller.compiler.ports import (
    ETH_ARP,
    ETH_IPV6,
    ICMPV6_NA,
    ICMPV6_NS,
    IPPROTO_ICMPV6,
    link_local_of,
    split_ips,
)
from controller.flows import (
    Action,
    Flow,
    GroupAction,
    Output,
    RegMove,
    Resubmit,
    SetField,
    ip4,
    ip6,
    mac,
    match,
)
from controller.intent import Network, Port

ARP_REQUEST = 1
ARP_REPLY = 2
OFPP_IN_PORT = 0xFFFFFFF8
# A floating IP's port holds its address, but the address is the router's to answer
# for, with the gateway's MAC, where the router's gateway is (compiler/gateway.py).
FLOATINGIP_OWNER = "network:floatingip"
ROUTER_OWNERS = ("network:router_interface", "network:router_gateway")
# neighbour advertisement flags (the first bits of nd_reserved) and the option type
ND_ROUTER, ND_SOLICITED, ND_OVERRIDE = 0x80000000, 0x40000000, 0x20000000
ND_OPT_TARGET_LINKADDR = 2
SOLICITED_NODE_PREFIX = int(ipaddress.IPv6Address("ff02::1:ff00:0"))


@lru_cache(maxsize=65536)
def arp_reply_flows(port: Port, network: Network) -> tuple[Flow, ...]:
    """Answer 'who has <ip>' for one port's IPv4 addresses, wherever the asker is.

    The reply is built in place (swap addresses, fill in the port's MAC) and sent
    back out of the asking port, so known addresses never flood and never cross a
    tunnel.
    """
    if port.device_owner == FLOATINGIP_OWNER:
        return ()  # answered by the router's gateway chassis only (gateway.py)
    owner = pl.cookie(pl.Owner.PORT, port.key)
    hw = mac(port.mac_address)
    v4, _ = split_ips(port)
    return tuple(arp_answer_flow(network.key, ip4(addr), hw, owner) for addr in v4)


def arp_answer_flow(network_key: int, ip: int, hw: int, owner: int) -> Flow:
    """'who has <ip>' on the network -> '<ip> is at <hw>', built in place."""
    return pl.ARP_RESPONDER.flow(
        "reply",
        match(metadata=network_key, eth_type=ETH_ARP, arp_op=ARP_REQUEST, arp_tpa=ip),
        actions=(
            RegMove("eth_src", "eth_dst", 48),
            SetField("eth_src", hw),
            SetField("arp_op", ARP_REPLY),
            RegMove("arp_sha", "arp_tha", 48),
            SetField("arp_sha", hw),
            RegMove("arp_spa", "arp_tpa", 32),
            SetField("arp_spa", ip),
            Output(OFPP_IN_PORT),
        ),
        cookie=owner)


@lru_cache(maxsize=65536)
def nd_reply_flows(port: Port, network: Network) -> tuple[Flow, ...]:
    """Answer IPv6 address resolution (a neighbour solicitation to the solicited-node
    address) for one port's IPv6 addresses and its link-local one, wherever the asker
    is: the advertisement is built in place, as ARP's, and sent back out of the asking
    port (with nd_reply's help), so known neighbours are never flooded to, across
    chassis either. A router's port answers as a router (R flag)."""
    if port.device_owner == FLOATINGIP_OWNER:
        return ()
    owner = pl.cookie(pl.Owner.PORT, port.key)
    hw = mac(port.mac_address)
    _, v6 = split_ips(port)
    flags = ND_ROUTER | ND_SOLICITED | ND_OVERRIDE if port.device_owner in ROUTER_OWNERS \
        else ND_SOLICITED | ND_OVERRIDE
    out = []
    for addr in [*v6, link_local_of(port.mac_address)]:
        target = ip6(addr)
        out.append(pl.ARP_RESPONDER.flow(
            "reply",
            match(metadata=network.key, eth_type=ETH_IPV6, ip_proto=IPPROTO_ICMPV6,
                  icmpv6_type=ICMPV6_NS, ipv6_dst=solicited_node(target),
                  ipv6_nd_target=target),
            actions=(
                RegMove("eth_src", "eth_dst", 48),
                SetField("eth_src", hw),
                RegMove("ipv6_src", "ipv6_dst", 128),
                SetField("ipv6_src", target),
                SetField("icmpv6_type", ICMPV6_NA),
                SetField("nd_options_type", ND_OPT_TARGET_LINKADDR),
                SetField("nd_reserved", flags),
                Resubmit("nd_reply"),
            ),
            cookie=owner))
    return tuple(out)


def neighbour_reply_flows(port: Port, network: Network) -> tuple[Flow, ...]:
    """ARP and IPv6 neighbour discovery answered for one port, on a switch carrying its
    network."""
    return arp_reply_flows(port, network) + nd_reply_flows(port, network)


def solicited_node(address: int) -> int:
    """ff02::1:ffXX:XXXX, where a solicitation for `address` is sent (RFC 4291 2.7.1)."""
    return SOLICITED_NODE_PREFIX | (address & 0xFFFFFF)


def nd_base_flows() -> tuple[Flow, ...]:
    """Once per switch with local ports: duplicate address detection (a solicitation
    from ::) passes on to its owner, never answered here; nd_reply finishes what
    arp_responder began."""
    owner = pl.cookie(pl.Owner.PIPELINE, pl.TABLE_IDS["nd_reply"])
    return (
        pl.ARP_RESPONDER.flow(
            "dad", match(eth_type=ETH_IPV6, ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NS,
                         ipv6_src=0), goto="egress_acl", cookie=owner),
        pl.ND_REPLY.flow(
            "reply", match(eth_type=ETH_IPV6, ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NA),
            actions=(RegMove("eth_src", "ipv6_nd_tll", 48), Output(OFPP_IN_PORT)),
            cookie=owner),
    )


def _local_copies(local_ofports: tuple[int, ...]) -> list[Action]:
    actions: list[Action] = []
    for ofport in local_ofports:
        actions.append(SetField(pl.REG_OUT_PORT, ofport))
        actions.append(Resubmit("ingress_acl"))
    return actions


@lru_cache(maxsize=16384)
def flood_flow(network: Network, local_ofports: tuple[int, ...],
               group_id: Optional[int] = None) -> Flow:
    """Broadcast, multicast and unknown unicast: a copy to each local port of the network,
    then the flood group (other chassis) if there is one.

    Each local copy runs the rest of the pipeline (ingress ACL, QoS, output) for its
    own destination, as OVN expands its multicast groups; OVS drops the copy that
    would go back out of the ingress port.
    """
    actions = _local_copies(local_ofports)
    if group_id is not None:
        actions.append(GroupAction(group_id))
    return pl.L2_LOOKUP.flow(
        "flood", match(metadata=network.key), actions=tuple(actions),
        cookie=pl.cookie(pl.Owner.NETWORK, network.key))


@lru_cache(maxsize=16384)
def flood_from_remote_flow(network: Network, local_ofports: tuple[int, ...]) -> Flow:
    """What came over a tunnel floods to local ports only (split horizon)."""
    return pl.L2_LOOKUP.flow(
        "flood_from_remote",
        match(metadata=network.key, **{pl.REG_FLAGS: (pl.FLAG_FROM_REMOTE, pl.FLAG_FROM_REMOTE)}),
        actions=tuple(_local_copies(local_ofports)),
        cookie=pl.cookie(pl.Owner.NETWORK, network.key))


__all__ = ["arp_reply_flows", "nd_reply_flows", "nd_base_flows", "flood_flow",
           "flood_from_remote_flow", "Output"]
