"""The upstream router's MAC, learnt by each gateway chassis (OVN's MAC_Binding).

A router's default route leaves its gateway chassis towards the external subnet's
`gateway_ip`, an address on the physical network that no intent names a MAC for. The
gateway chassis asks: the controller sends an ARP request out of the provider patch
(a packet-out, from the router's gateway MAC and address) until the upstream has
answered, then once per REFRESH so that a replaced upstream router is followed. The
answer comes back to the gateway MAC and l3's "gateway_arp" flow copies it to the
controller (compiler/gateway.py); what a known upstream says is put in the topology
(`Topology.learn_mac`), and the compile that follows writes the l3_resolve flow.

Only answers from an upstream some router there is waiting for, heard on that
router's gateway chassis and external network, are learnt: anything else the
physical network sends to the gateway MAC is ignored, so a host on the external
network cannot make the gateway send a router's traffic elsewhere by ARP alone
(it could still answer first for the upstream's address, as on any LAN).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from os_ken.lib.packet import arp, ether_types, ethernet, packet, vlan

from controller.compiler.overlay import OFPVID_PRESENT
from controller.compiler.routing import RouterPlan
from controller.flows import mac, mac_text
from controller.intent import Network
from controller.topology import TopologyView

RETRY = 1.0  # seconds between two requests while the upstream has not answered
REFRESH = 30.0  # seconds between two requests once it has


@dataclass(frozen=True)
class Request:
    """One ARP request to send: out of `ofport` on switch `datapath_id`."""

    datapath_id: int
    ofport: int
    frame: bytes


def request_frame(src_mac: int, src_ip: int, target_ip: int, vlan_id: Optional[int]) -> bytes:
    """who-has target_ip tell src_ip, broadcast, tagged with `vlan_id` if given."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(
        dst="ff:ff:ff:ff:ff:ff", src=mac_text(src_mac),
        ethertype=ether_types.ETH_TYPE_8021Q if vlan_id is not None else ether_types.ETH_TYPE_ARP))
    if vlan_id is not None:
        pkt.add_protocol(vlan.vlan(vid=vlan_id, ethertype=ether_types.ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=mac_text(src_mac),
                             src_ip=str(ipaddress.IPv4Address(src_ip)), dst_mac="00:00:00:00:00:00",
                             dst_ip=str(ipaddress.IPv4Address(target_ip))))
    pkt.serialize()
    return bytes(pkt.data)


def parse_arp(data: bytes) -> Optional[tuple[int, int]]:
    """(sender IPv4, sender MAC) of an ARP packet (tagged or not), else None."""
    try:
        pkt = packet.Packet(data)
    except Exception:  # a truncated or foreign frame is not ours to learn from
        return None
    found = pkt.get_protocol(arp.arp)
    if found is None:
        return None
    return int(ipaddress.IPv4Address(found.src_ip)), mac(found.src_mac)


def _tag_of(network: Network) -> Optional[int]:
    return None if network.network_type == "flat" else \
        network.segmentation_id & ~OFPVID_PRESENT


class UpstreamArp:
    """When to ask whom, and which answers to believe. Not thread-safe by itself: the
    engine calls it from the OpenFlow thread only.

    It also announces each distributed floating IP from its chassis (a gratuitous ARP
    from the floating IP's own MAC, at once and then once per REFRESH): a physical
    switch that has not seen that MAC would flood every frame to it, to every port of
    the physical network, as OVN's nat-addresses announcements avoid too."""

    def __init__(self) -> None:
        self._sent: dict[tuple[int, int], float] = {}
        self._announced: dict[tuple[int, int, int], float] = {}

    def announce(self, fips: list[tuple[int, Network, int, int]], topo: TopologyView,
                 now: float) -> list[Request]:
        """Gratuitous ARPs due for `fips` ((switch, external network, MAC, IPv4))."""
        out = []
        wanted = set()
        for dpid, network, hw, ip in sorted(fips, key=lambda f: (f[0], f[2], f[3])):
            key = (dpid, hw, ip)
            wanted.add(key)
            last = self._announced.get(key)
            if last is not None and now - last < REFRESH:
                continue
            physnet = network.physical_network
            patch = None if physnet is None else topo.provider_ports.get((dpid, physnet))
            if patch is None:
                continue
            out.append(Request(dpid, patch, request_frame(hw, ip, ip, _tag_of(network))))
            self._announced[key] = now
        for key in set(self._announced) - wanted:
            del self._announced[key]
        return out

    def due(self, wanted: Mapping[tuple[int, int], tuple[RouterPlan, int]],
            topo: TopologyView, now: float) -> list[Request]:
        out = []
        for (dpid, net_key), (plan, upstream) in sorted(wanted.items()):
            gw = plan.gateway
            if gw is None:
                continue
            known = (net_key, upstream) in topo.mac_bindings
            last = self._sent.get((dpid, net_key))
            if last is not None and now - last < (REFRESH if known else RETRY):
                continue
            patch = topo.provider_ports.get((dpid, gw.physnet))
            if patch is None:
                continue
            out.append(Request(dpid, patch, request_frame(gw.mac, gw.ip, upstream,
                                                          _tag_of(gw.network))))
            self._sent[(dpid, net_key)] = now
        for key in set(self._sent) - set(wanted):
            del self._sent[key]
        return out

    @staticmethod
    def heard(wanted: Mapping[tuple[int, int], tuple[RouterPlan, int]], datapath_id: int,
              metadata: Optional[int], data: bytes) -> Optional[tuple[int, int, int]]:
        """(external network key, upstream IPv4, its MAC) if `data`, punted by switch
        `datapath_id` with the network key `metadata`, is an answer some router there
        waits for; else None."""
        sender = parse_arp(data)
        if sender is None:
            return None
        ip, hw = sender
        for (dpid, net_key), (_, upstream) in wanted.items():
            if dpid == datapath_id and upstream == ip and metadata in (None, net_key):
                return net_key, ip, hw
        return None
