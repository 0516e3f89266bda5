"""The upstream router's MAC: asked for by the gateway chassis at a bounded pace,
believed only from the upstream a router there waits for, and taken back from the
switch's own flows after a restart."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from os_ken.lib.packet import arp, ethernet, packet, vlan

from controller.compiler import compile_all
from controller.compiler.gateway import bindings_in, choose_gateways, upstream_wanted
from controller.compiler.routing import RoutingIndex
from controller.flows import ip4
from controller.topology import Topology
from controller.upstream_arp import REFRESH, RETRY, UpstreamArp, parse_arp, request_frame
from tests.unit.test_compiler_gateway import EXT, GW_MAC, PATCH, UPSTREAM_MAC, gateway_world
from tests.unit.test_compiler_routing import D2

UPSTREAM = ip4("198.51.100.1")


def _wanted() -> tuple:
    intent, topo = gateway_world()
    plans = RoutingIndex(intent).plans
    return upstream_wanted(plans, choose_gateways(plans, topo)), topo, intent


def _reply(sender_ip: str, sender_mac: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=GW_MAC, src=sender_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=sender_mac, src_ip=sender_ip,
                             dst_mac=GW_MAC, dst_ip="198.51.100.10"))
    pkt.serialize()
    return bytes(pkt.data)


def test_the_request_asks_for_the_upstream_from_the_gateway_address() -> None:
    frame = request_frame(0xFA163EEE0001, ip4("198.51.100.10"), UPSTREAM, None)
    got = packet.Packet(frame).get_protocol(arp.arp)
    assert (got.opcode, got.src_mac, got.src_ip, got.dst_ip) == (
        arp.ARP_REQUEST, GW_MAC, "198.51.100.10", "198.51.100.1")
    tagged = packet.Packet(request_frame(0xFA163EEE0001, 1, UPSTREAM, 100))
    assert tagged.get_protocol(vlan.vlan).vid == 100


def test_requests_are_paced_until_answered_then_refreshed() -> None:
    wanted, topo, _ = _wanted()
    asker = UpstreamArp()
    first = asker.due(wanted, topo, 100.0)
    assert len(first) == 1 and first[0].ofport == PATCH
    assert asker.due(wanted, topo, 100.0 + RETRY / 2) == []
    assert len(asker.due(wanted, topo, 100.0 + RETRY)) == 1
    known = dataclasses.replace(topo, mac_bindings=MappingProxyType(
        {(EXT.key, UPSTREAM): UPSTREAM_MAC}))
    assert asker.due(wanted, known, 100.0 + 2 * RETRY) == []
    assert len(asker.due(wanted, known, 100.0 + RETRY + REFRESH)) == 1


def test_only_the_awaited_upstream_on_its_gateway_is_believed() -> None:
    wanted, _, _ = _wanted()
    (gw_dpid, net_key), _ = next(iter(wanted.items()))
    answer = _reply("198.51.100.1", "02:aa:bb:cc:dd:ee")
    assert UpstreamArp.heard(wanted, gw_dpid, net_key, answer) == (net_key, UPSTREAM,
                                                                   UPSTREAM_MAC)
    assert UpstreamArp.heard(wanted, gw_dpid + 1, net_key, answer) is None  # another switch
    assert UpstreamArp.heard(wanted, gw_dpid, net_key + 1, answer) is None  # another network
    liar = _reply("198.51.100.7", "02:00:00:00:00:66")  # not an upstream anyone waits for
    assert UpstreamArp.heard(wanted, gw_dpid, net_key, liar) is None
    assert parse_arp(b"\x00" * 10) is None


def test_a_restarted_controller_takes_the_macs_back_from_the_gateways_flows() -> None:
    intent, topo = gateway_world()
    learnt = dataclasses.replace(topo, mac_bindings=MappingProxyType(
        {(EXT.key, UPSTREAM): UPSTREAM_MAC}))
    plans = RoutingIndex(intent).plans
    gw = choose_gateways(plans, topo)[next(iter(plans))]
    installed = compile_all(intent, learnt)[gw].flows
    assert bindings_in(installed.values()) == {(EXT.key, UPSTREAM): UPSTREAM_MAC}
    fresh = Topology()
    version = fresh.learn_macs(bindings_in(installed.values()))
    assert version is not None and fresh.view().mac_bindings == {
        (EXT.key, UPSTREAM): UPSTREAM_MAC}
    assert fresh.learn_macs({(EXT.key, UPSTREAM): UPSTREAM_MAC}) is None  # no news


def test_a_distributed_floating_ip_is_announced_from_its_chassis_then_refreshed() -> None:
    """A gratuitous ARP from the floating IP's own MAC, out of that chassis' provider
    patch: at once, then once per REFRESH, and no more once it is gone."""
    _, topo, _ = _wanted()
    fmac, fip = 0xFA163EEE0002, ip4("198.51.100.20")
    dpid = D2  # it maps the physnet
    items = [(dpid, EXT, fmac, fip)]
    teller = UpstreamArp()
    first = teller.announce(items, topo, 10.0)
    assert [(r.datapath_id, r.ofport) for r in first] == [(dpid, PATCH)]
    garp = packet.Packet(first[0].frame).get_protocol(arp.arp)
    assert (garp.src_mac, garp.src_ip, garp.dst_ip) == (
        "fa:16:3e:ee:00:02", "198.51.100.20", "198.51.100.20")
    assert teller.announce(items, topo, 10.0 + REFRESH / 2) == []
    assert len(teller.announce(items, topo, 10.0 + REFRESH)) == 1
    assert teller.announce([], topo, 10.0 + 3 * REFRESH) == []
    assert len(teller.announce(items, topo, 10.0 + 3 * REFRESH)) == 1  # new again: at once
