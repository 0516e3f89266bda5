"""Loom's IPv6 router advertisements (controller/router_advert.py), read back with
os-ken as a guest would, and the flows that bring router solicitations up."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

from controller import pipeline as pl
from controller import router_advert as ra
from controller.compiler import compile_all
from controller.intent import FixedIP, Intent, Network, Port, Subnet
from tests.unit.test_incremental_compile import DPIDS, World

NET = Network("n1", "p", "n1", "vxlan", 100, mtu=1450)
SLAAC = Subnet("s6", "p", "n1", "s6", 6, "2001:db8:1::/64", "2001:db8:1::1",
               enable_dhcp=True, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
GUEST_MAC = "fa:16:3e:12:34:56"
ROUTER_MAC = "fa:16:3e:00:00:fe"
GUEST = Port("g", "p", "n1", "vm", GUEST_MAC,
             (FixedIP("s6", "2001:db8:1:0:f816:3eff:fe12:3456"),))
ROUTER_PORT = Port("rp", "p", "n1", "", ROUTER_MAC, (FixedIP("s6", "2001:db8:1::1"),),
                   device_owner="network:router_interface", device_id="r")
INTENT = Intent(networks={"n1": NET}, subnets={"s6": SLAAC},
                ports={"g": GUEST, "rp": ROUTER_PORT})


def _router(sid: str) -> Port | None:
    return ROUTER_PORT if sid == "s6" else None


def _solicitation(src: str) -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet("33:33:00:00:00:02", GUEST_MAC, 0x86DD))
    p.add_protocol(ipv6.ipv6(src=src, dst="ff02::2", nxt=58, hop_limit=255))
    p.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_ROUTER_SOLICIT,
                                 data=icmpv6.nd_router_solicit()))
    p.serialize()
    return bytes(p.data)


def _read(frame: bytes) -> tuple[Any, Any, bytes, dict[int, bytes]]:
    """Ethernet, IPv6, the ICMPv6 bytes and the ND options by type, read by hand (os-ken
    cannot parse its own MTU option back)."""
    eth = ethernet.ethernet.parser(frame)[0]
    ip6 = ipv6.ipv6.parser(frame[14:])[0]
    icmp = frame[54:]
    opts, at = {}, 16
    while at < len(icmp):
        kind, length = icmp[at], icmp[at + 1] * 8
        opts[kind] = icmp[at:at + length]
        at += length
    return eth, ip6, icmp, opts


def test_a_solicitation_is_answered_with_the_routers_prefix_mtu_and_link_local() -> None:
    adverts = ra.adverts_for(GUEST, INTENT, _router)
    (frame,) = ra.answer(_solicitation("fe80::f816:3eff:fe12:3456"), adverts)
    eth, ip6, icmp, opts = _read(frame)
    assert (eth.src, eth.dst) == (ROUTER_MAC, GUEST_MAC)
    assert (ip6.src, ip6.dst, ip6.hop_limit) == ("fe80::f816:3eff:fe00:fe",
                                                 "fe80::f816:3eff:fe12:3456", 255)
    assert icmp[0] == icmpv6.ND_ROUTER_ADVERT
    assert int.from_bytes(icmp[6:8], "big") == ra.ROUTER_LIFETIME
    assert icmp[5] == 0  # neither managed nor other configuration: SLAAC
    assert opts[1][2:8] == bytes.fromhex(ROUTER_MAC.replace(":", ""))  # source link-layer
    assert int.from_bytes(opts[5][4:8], "big") == 1450  # MTU
    prefix = opts[3]
    assert (prefix[2], prefix[3]) == (64, 0xC0)  # /64, on-link and autonomous
    assert ipaddress.IPv6Address(prefix[16:32]) == ipaddress.IPv6Address("2001:db8:1::")
    # from the unspecified address: to all nodes
    (frame,) = ra.answer(_solicitation("::"), adverts)
    assert _read(frame)[1].dst == ra.ALL_NODES


def test_modes_set_the_flags_and_no_router_no_advert() -> None:
    for mode, res, autonomous in (("dhcpv6-stateful", 2, False),
                                  ("dhcpv6-stateless", 1, True)):
        sub = dataclasses.replace(SLAAC, ipv6_ra_mode=mode, ipv6_address_mode=mode)
        intent = dataclasses.replace(INTENT, subnets={"s6": sub})
        (advert,) = ra.adverts_for(GUEST, intent, _router)
        _, _, icmp, opts = _read(ra.frame(advert))
        assert icmp[5] == res << 6 and advert.autonomous is autonomous
        assert bool(opts[3][3] & 0x40) is autonomous
    assert ra.adverts_for(GUEST, INTENT, lambda sid: None) == []
    plain = dataclasses.replace(SLAAC, ipv6_ra_mode=None, ipv6_address_mode=None)
    assert ra.adverts_for(GUEST, dataclasses.replace(INTENT, subnets={"s6": plain}),
                          _router) == []


def test_a_port_on_an_advertised_subnet_punts_its_solicitations() -> None:
    world = World()
    sub = world.tables["subnets"]
    net_id = next(iter(world.tables["networks"]))
    sub["v6"] = Subnet("v6", "p", net_id, "v6", 6, "2001:db8:1::/64", "2001:db8:1::1",
                       ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    world.apply(("port", 0, 0, 5, frozenset(), True, True, None, DPIDS[0]))
    pid = next(iter(world.tables["ports"]))
    port = world.tables["ports"][pid]
    world.tables["ports"][pid] = dataclasses.replace(
        port, fixed_ips=(FixedIP("v6", "2001:db8:1::5"),))
    full = compile_all(world.intent(), world.view())[DPIDS[0]]
    rs = [f for f in full.flows.values() if f.table == "port_security"
          and f.priority == pl.PORT_SECURITY.priorities["rs_punt"]]
    assert len(rs) == 1 and rs[0].meter == pl.punt_meter_id(10)
    assert dict((m.field, m.value) for m in rs[0].match)["icmpv6_type"] == 133
    assert pl.punt_meter_id(10) in full.meters


def test_the_router_of_a_subnet_is_found_without_a_scan_of_every_interface() -> None:
    """`Compiler.router_port_on` looks only at the routers that depend on the subnet: a
    guest soliciting on a subnet without a router costs no walk of the fleet's
    interfaces."""
    from types import MappingProxyType

    from controller.compiler.incremental import Compiler
    from controller.intent import Router, RouterInterface

    world = World()
    net_id = next(iter(world.tables["networks"]))
    world.tables["subnets"]["v6"] = Subnet("v6", "p", net_id, "v6", 6, "2001:db8:1::/64",
                                           "2001:db8:1::1", ipv6_ra_mode="slaac",
                                           ipv6_address_mode="slaac")
    world.tables["routers"]["r"] = Router("r", "p", "r")
    world.tables["ports"]["rp"] = dataclasses.replace(ROUTER_PORT, network_id=net_id,
                                                      fixed_ips=(FixedIP("v6", "2001:db8:1::1"),))
    world.tables["router_interfaces"]["ri"] = RouterInterface("ri", "r", "rp", "v6")
    compiler = Compiler()
    compiler.update(world.intent(), world.view(), None, None)
    found = compiler.router_port_on("v6")
    assert found is not None and found.id == "rp"

    class NoScan(dict):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("every router interface walked")

    intent = compiler.intent
    assert intent is not None
    compiler.intent = dataclasses.replace(
        intent, router_interfaces=MappingProxyType(NoScan(intent.router_interfaces)))
    assert compiler.router_port_on("no-router-here") is None
    found = compiler.router_port_on("v6")
    assert found is not None and found.id == "rp"
