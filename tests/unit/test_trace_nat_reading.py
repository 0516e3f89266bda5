"""/v1/trace towards the outside: a router's SNAT or a floating IP, then the provider patch.

The captures below are real: tests/integration/test_trace_nat.py (LOOM_TRACE_FIXTURES=DIR)
under a running controller, two private OVS 3.1 instances, hv2 the gateway chassis
with the provider patch at ofport 1 (br-int -> br-ex, physnet1). a1 (10.0.0.11, on
hv1) sends to 198.51.100.1, the outside host: hv1 sends it to the router's MAC over
the tunnel; on hv2 l2_lookup hands it to l3, the snat table SNATs it in the router's
zone (ct(commit, nat(src=...))), and after the recirculation it leaves through the
patch. SNAT_* is tcp to port 7001 through alpha-router's SNAT to 198.51.100.10;
FIP_HV2 is a ping once floating IP 198.51.100.12 is associated with a1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import pytest

from controller import pipeline as pl
from controller.explain import Tracer
from controller.explain.trace import (
    Endpoint,
    Hop,
    HopContext,
    Outside,
    Packet,
    decisions_of,
    judge,
    nat_steps,
    owner_index,
    packet_after,
    parse_nat,
    parse_trace,
    priority_name,
    trace_flow,
)
from controller.explain.tracer import _destination, _outside
from controller.intent import (
    FixedIP,
    FloatingIP,
    Intent,
    Network,
    Port,
    Router,
    RouterInterface,
    SecurityGroupRule,
    Subnet,
)
from controller.topology import BridgeState, ChassisState, InterfaceState, Topology

A1 = "a51f3097-0325-4fc7-85dd-535f707372a7"
A1_MAC = "fa:16:3e:a3:66:c0"
ALPHA_NET = "626ffd1a-3acc-4de0-bf2f-61303fad420e"
ALPHA_SUBNET = "5a1e7c2d-0000-4000-8000-0000000000a1"
PUBLIC = "04e89db7-0d13-4240-9f06-18abea8255d9"
PUBLIC_SUBNET = "5a1e7c2d-0000-4000-8000-0000000000e1"
ROUTER = "f464502e-4f8f-4c8a-90e7-5328d068948b"
ROUTER_PORT = "5a1e7c2d-0000-4000-8000-0000000000a2"  # its interface on alpha's subnet
ROUTER_MAC = "fa:16:3e:06:b0:5a"
GATEWAY_PORT = "5a1e7c2d-0000-4000-8000-0000000000e2"  # on public: 198.51.100.10
FIP = "b7d4a20d-fdad-4a91-baf9-68ae311f5a5f"
FIP_PORT = "5a1e7c2d-0000-4000-8000-0000000000e3"
EGRESS_RULE = "7848f22f-5673-4d07-b7a5-9aa2f3183f17"
SG = "e7d58546-ebde-5d5e-b50f-5a746a79b95d"
HV1, HV2 = 0x0000e6478a655147, 0x00006aa70424254b
OUTSIDE_IP = "198.51.100.1"

SNAT_HV1 = """\
Flow: tcp,in_port=3,vlan_tci=0x0000,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:b0:5a,nw_src\
=10.0.0.11,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=33000,tp_dst=70\
01,tcp_flags=syn

bridge("br-int")
----------------
 0. in_port=3, priority 100, cookie 0x300535f707372a7
    set_field:0xbe57->reg6
    write_metadata:0x61303fad420e
    goto_table:10
10. ip,in_port=3,dl_src=fa:16:3e:a3:66:c0,nw_src=10.0.0.11, priority 100, cookie 0x300535f70\
7372a7
    goto_table:20
20. priority 0, cookie 0x100000000000014
    goto_table:30
30. ct_state=-trk,ip, priority 200, cookie 0x100000000000ac1
    ct(table=30,zone=NXM_NX_REG6[0..15])
    drop
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed \
at table 30.
     -> Sets the packet to an untracked state, and clears all the conntrack fields.

Final flow: tcp,reg6=0xbe57,metadata=0x61303fad420e,in_port=3,vlan_tci=0x0000,dl_src=fa:16:3\
e:a3:66:c0,dl_dst=fa:16:3e:06:b0:5a,nw_src=10.0.0.11,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,n\
w_ttl=64,nw_frag=no,tp_src=33000,tp_dst=7001,tcp_flags=syn
Megaflow: recirc_id=0,ct_state=-trk,eth,ip,in_port=3,dl_src=fa:16:3e:a3:66:c0,nw_src=10.0.0.\
11,nw_frag=no
Datapath actions: ct(zone=48727),recirc(0x1)

===============================================================================
recirc(0x1) - resume conntrack with ct_state=new|trk
===============================================================================

Flow: recirc_id=0x1,ct_state=new|trk,ct_zone=48727,eth,tcp,reg6=0xbe57,metadata=0x61303fad42\
0e,in_port=3,vlan_tci=0x0000,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:b0:5a,nw_src=10.0.0\
.11,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=33000,tp_dst=7001,tcp_\
flags=syn

bridge("br-int")
----------------
    thaw
        Resuming from table 30
30. ct_state=-rpl-inv+trk,ip,in_port=3, priority 100, cookie 0x4009aa2f3183f17
    ct(commit,zone=NXM_NX_REG6[0..15])
    drop
     -> Sets the packet to an untracked state, and clears all the conntrack fields.
    goto_table:40
40. ip,metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a, priority 100, cookie 0x5005328d0689\
48b
    goto_table:50
50. metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a, priority 100, cookie 0x5005328d068948b
    set_field:0x1->tun_id
    output:2
     -> output to native tunnel
     -> tunneling to 172.31.0.12 via br-phy
     -> tunneling from fa:7a:b7:b7:c9:40 172.31.0.11 to 36:6e:ff:1a:f9:44 172.31.0.12

bridge("br-phy")
----------------
 0. priority 0
    NORMAL
     -> forwarding to learned port

Final flow: recirc_id=0x1,eth,tcp,reg6=0xbe57,tun_id=0x1,metadata=0x61303fad420e,in_port=3,v\
lan_tci=0x0000,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:b0:5a,nw_src=10.0.0.11,nw_dst=198\
.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=33000,tp_dst=7001,tcp_flags=syn
Megaflow: recirc_id=0x1,ct_state=-est-rel-rpl-inv+trk,ct_mark=0/0x1,eth,ip,in_port=3,dl_dst=\
fa:16:3e:06:b0:5a,nw_dst=198.51.100.0/29,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no
Datapath actions: ct(commit,zone=48727),tnl_push(tnl_port(6),header(size=50,type=4,eth(dst=3\
6:6e:ff:1a:f9:44,src=fa:7a:b7:b7:c9:40,dl_type=0x0800),ipv4(src=172.31.0.11,dst=172.31.0.12,\
proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x\
1)),out_port(1)),2
"""

SNAT_HV2 = """\
Flow: tcp,tun_id=0x1,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:b\
0:5a,nw_src=10.0.0.11,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=3300\
0,tp_dst=7001,tcp_flags=syn

bridge("br-int")
----------------
 0. tun_id=0x1,in_port=2, priority 100, cookie 0x20061303fad420e
    set_field:0x1->reg5
    set_field:0xbe57->reg6
    write_metadata:0x61303fad420e
    goto_table:50
50. metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a, priority 100, cookie 0x5005328d068948b
    resubmit(,40)
40. ip,metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a,nw_dst=198.51.100.0/24, priority 124\
, cookie 0x5005328d068948b
    dec_ttl
    set_field:fa:16:3e:66:91:29->eth_src
    move:NXM_OF_IP_DST[]->NXM_NX_REG4[]
     -> NXM_NX_REG4[] is now 0xc6336401
    set_field:0->reg5
    ct_clear
    goto_table:42
42. ip,metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a, priority 100, cookie 0x5005328d0689\
48b
    set_field:0x18abea8255d9->metadata
    ct(commit,table=45,zone=11948,nat(src=198.51.100.10))
    nat(src=198.51.100.10)
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed \
at table 45.
     -> Sets the packet to an untracked state, and clears all the conntrack fields.

Final flow: tcp,reg4=0xc6336401,reg6=0xbe57,tun_id=0x1,metadata=0x18abea8255d9,in_port=2,vla\
n_tci=0x0000,dl_src=fa:16:3e:66:91:29,dl_dst=fa:16:3e:06:b0:5a,nw_src=10.0.0.11,nw_dst=198.5\
1.100.1,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_frag=no,tp_src=33000,tp_dst=7001,tcp_flags=syn
Megaflow: recirc_id=0,eth,tcp,in_port=2,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:b0:5a,nw\
_dst=198.51.100.1,nw_ttl=64,nw_frag=no
Datapath actions: set(eth(src=fa:16:3e:66:91:29)),set(ipv4(ttl=63)),ct(commit,zone=11948,nat\
(src=198.51.100.10)),recirc(0x4)

===============================================================================
recirc(0x4) - resume conntrack with ct_state=new|trk
Replacing src/dst IP/ports to simulate NAT:
 Initial flow: nw_src=10.0.0.11,tp_src=33000,nw_dst=198.51.100.1,tp_dst=7001
 Modified flow: nw_src=198.51.100.10,tp_src=33000,nw_dst=198.51.100.1,tp_dst=7001
===============================================================================

Flow: recirc_id=0x4,ct_state=new|trk,ct_zone=11948,eth,tcp,reg4=0xc6336401,reg6=0xbe57,tun_i\
d=0x1,metadata=0x18abea8255d9,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:66:91:29,dl_dst=fa:1\
6:3e:06:b0:5a,nw_src=198.51.100.10,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_frag=n\
o,tp_src=33000,tp_dst=7001,tcp_flags=syn

bridge("br-int")
----------------
    thaw
        Resuming from table 45
45. reg4=0xc6336401,metadata=0x18abea8255d9, priority 100, cookie 0x20018abea8255d9
    set_field:02:00:5e:00:51:01->eth_dst
    goto_table:50
50. metadata=0x18abea8255d9,dl_dst=02:00:5e:00:51:01, priority 100, cookie 0x20018abea8255d9
    output:1

bridge("br-ex")
---------------
 0. priority 0
    NORMAL
     -> forwarding to learned port

Final flow: recirc_id=0x4,ct_state=new|trk,ct_zone=11948,eth,tcp,reg4=0xc6336401,reg6=0xbe57\
,tun_id=0x1,metadata=0x18abea8255d9,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:66:91:29,dl_ds\
t=02:00:5e:00:51:01,nw_src=198.51.100.10,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_\
frag=no,tp_src=33000,tp_dst=7001,tcp_flags=syn
Megaflow: recirc_id=0x4,eth,ip,in_port=2,dl_src=fa:16:3e:66:91:29,dl_dst=fa:16:3e:06:b0:5a,n\
w_frag=no
Datapath actions: set(eth(dst=02:00:5e:00:51:01)),8
"""

FIP_HV2 = """\
Flow: icmp,tun_id=0x1,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:\
b0:5a,nw_src=10.0.0.11,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,icmp_type=\
8,icmp_code=0

bridge("br-int")
----------------
 0. tun_id=0x1,in_port=2, priority 100, cookie 0x20061303fad420e
    set_field:0x1->reg5
    set_field:0xbe57->reg6
    write_metadata:0x61303fad420e
    goto_table:50
50. metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a, priority 100, cookie 0x5005328d068948b
    resubmit(,40)
40. ip,metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a,nw_dst=198.51.100.0/24, priority 124\
, cookie 0x5005328d068948b
    dec_ttl
    set_field:fa:16:3e:66:91:29->eth_src
    move:NXM_OF_IP_DST[]->NXM_NX_REG4[]
     -> NXM_NX_REG4[] is now 0xc6336401
    set_field:0->reg5
    ct_clear
    goto_table:42
42. ip,metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a,nw_src=10.0.0.11, priority 200, cook\
ie 0x60068ae311f5a5f
    set_field:0x18abea8255d9->metadata
    ct(commit,table=45,zone=11948,nat(src=198.51.100.12))
    nat(src=198.51.100.12)
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed \
at table 45.
     -> Sets the packet to an untracked state, and clears all the conntrack fields.

Final flow: icmp,reg4=0xc6336401,reg6=0xbe57,tun_id=0x1,metadata=0x18abea8255d9,in_port=2,vl\
an_tci=0x0000,dl_src=fa:16:3e:66:91:29,dl_dst=fa:16:3e:06:b0:5a,nw_src=10.0.0.11,nw_dst=198.\
51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_frag=no,icmp_type=8,icmp_code=0
Megaflow: recirc_id=0,eth,icmp,in_port=2,dl_src=fa:16:3e:a3:66:c0,dl_dst=fa:16:3e:06:b0:5a,n\
w_src=10.0.0.11,nw_dst=198.51.100.1,nw_ttl=64,nw_frag=no
Datapath actions: set(eth(src=fa:16:3e:66:91:29)),set(ipv4(ttl=63)),ct(commit,zone=11948,nat\
(src=198.51.100.12)),recirc(0x9)

===============================================================================
recirc(0x9) - resume conntrack with ct_state=new|trk
Replacing src/dst IP/ports to simulate NAT:
 Initial flow: nw_src=10.0.0.11,tp_src=8,nw_dst=198.51.100.1,tp_dst=0
 Modified flow: nw_src=198.51.100.12,tp_src=8,nw_dst=198.51.100.1,tp_dst=0
===============================================================================

Flow: recirc_id=0x9,ct_state=new|trk,ct_zone=11948,eth,icmp,reg4=0xc6336401,reg6=0xbe57,tun_\
id=0x1,metadata=0x18abea8255d9,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:66:91:29,dl_dst=fa:\
16:3e:06:b0:5a,nw_src=198.51.100.12,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_frag=\
no,icmp_type=8,icmp_code=0

bridge("br-int")
----------------
    thaw
        Resuming from table 45
45. reg4=0xc6336401,metadata=0x18abea8255d9, priority 100, cookie 0x20018abea8255d9
    set_field:02:00:5e:00:51:01->eth_dst
    goto_table:50
50. metadata=0x18abea8255d9,dl_dst=02:00:5e:00:51:01, priority 100, cookie 0x20018abea8255d9
    output:1

bridge("br-ex")
---------------
 0. priority 0
    NORMAL
     -> forwarding to learned port

Final flow: recirc_id=0x9,ct_state=new|trk,ct_zone=11948,eth,icmp,reg4=0xc6336401,reg6=0xbe5\
7,tun_id=0x1,metadata=0x18abea8255d9,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:66:91:29,dl_d\
st=02:00:5e:00:51:01,nw_src=198.51.100.12,nw_dst=198.51.100.1,nw_tos=0,nw_ecn=0,nw_ttl=63,nw\
_frag=no,icmp_type=8,icmp_code=0
Megaflow: recirc_id=0x9,eth,ip,in_port=2,dl_src=fa:16:3e:66:91:29,dl_dst=fa:16:3e:06:b0:5a,n\
w_frag=no
Datapath actions: set(eth(dst=02:00:5e:00:51:01)),8
"""


def intent(fip: bool = True, gateway: bool = True) -> Intent:
    """The intent the captures were made under (the parts a trace reads)."""
    nets = {ALPHA_NET: Network(ALPHA_NET, "alpha", "alpha-net", "vxlan", 1),
            PUBLIC: Network(PUBLIC, "admin", "public", "flat", None)}
    subnets = {ALPHA_SUBNET: Subnet(ALPHA_SUBNET, "alpha", ALPHA_NET, "", 4, "10.0.0.0/24",
                                    "10.0.0.1"),
               PUBLIC_SUBNET: Subnet(PUBLIC_SUBNET, "admin", PUBLIC, "", 4, "198.51.100.0/24",
                                     OUTSIDE_IP)}
    ports = {
        A1: Port(A1, "alpha", ALPHA_NET, "", A1_MAC, (FixedIP(ALPHA_SUBNET, "10.0.0.11"),)),
        ROUTER_PORT: Port(ROUTER_PORT, "alpha", ALPHA_NET, "", ROUTER_MAC,
                          (FixedIP(ALPHA_SUBNET, "10.0.0.1"),),
                          device_owner="network:router_interface", device_id=ROUTER),
        GATEWAY_PORT: Port(GATEWAY_PORT, "", PUBLIC, "", "fa:16:3e:66:91:29",
                           (FixedIP(PUBLIC_SUBNET, "198.51.100.10"),),
                           device_owner="network:router_gateway", device_id=ROUTER),
        FIP_PORT: Port(FIP_PORT, "alpha", PUBLIC, "", "fa:16:3e:00:00:e3",
                       (FixedIP(PUBLIC_SUBNET, "198.51.100.12"),),
                       device_owner="network:floatingip", device_id=FIP),
    }
    router = Router(ROUTER, "alpha", "alpha-router",
                    external_network_id=PUBLIC if gateway else None,
                    external_fixed_ips=(FixedIP(PUBLIC_SUBNET, "198.51.100.10"),)
                    if gateway else (),
                    gateway_port_id=GATEWAY_PORT if gateway else None,
                    snat_zone=11948 if gateway else 0)
    fips = {FIP: FloatingIP(FIP, "alpha", PUBLIC, "198.51.100.12", A1, "10.0.0.11", ROUTER,
                            floating_port_id=FIP_PORT)} if fip else {}
    rules = {EGRESS_RULE: SecurityGroupRule(EGRESS_RULE, "alpha", SG, "egress", "IPv4",
                                            None, None, None, None, None)}
    return Intent(
        3, networks=MappingProxyType(nets), subnets=MappingProxyType(subnets),
        ports=MappingProxyType(ports), routers=MappingProxyType({ROUTER: router}),
        router_interfaces=MappingProxyType(
            {"ri": RouterInterface("ri", ROUTER, ROUTER_PORT, ALPHA_SUBNET)}),
        floating_ips=MappingProxyType(fips), security_group_rules=MappingProxyType(rules))


HV1_CTX = HopContext("hv1", "br-int", HV1, {3: A1}, {2: ("hv2", "vxlan")}, {1: "physnet1"})
HV2_CTX = HopContext("hv2", "br-int", HV2, {}, {2: ("hv1", "vxlan")}, {1: "physnet1"})
OUT = Outside(OUTSIDE_IP, ROUTER, "alpha-router", PUBLIC)
SRC = Endpoint(A1, ALPHA_NET, "hv1", 3)


def hop(ctx: HopContext, text: str, in_port: int, tun_id: Optional[int] = None) -> Hop:
    owners = owner_index(intent())
    parsed = parse_trace(text)
    return Hop(ctx, "", in_port, tun_id, parsed, decisions_of(parsed, ctx, owners), text,
               nat_steps(parsed, ctx, owners))


# ---------------------------------------------------------------- the ct(nat) action
@pytest.mark.parametrize("action,expected", [
    ("ct(commit,table=45,zone=60877,nat(src=198.51.100.10))",
     ("snat", "198.51.100.10", "60877", True)),
    ("ct(commit,zone=5,nat(dst=10.0.0.12:80),table=43)", ("dnat", "10.0.0.12:80", "5", True)),
    ("ct(commit,table=43,zone=5,nat(dst=10.0.0.11))", ("dnat", "10.0.0.11", "5", True)),
    ("ct(table=43,zone=5,nat)", ("unnat", None, "5", False)),
    ("ct(zone=5,nat,table=45)", ("unnat", None, "5", False)),
    ("ct(commit,nat(src=198.51.100.10-198.51.100.20:1024-65535))",
     ("snat", "198.51.100.10-198.51.100.20:1024-65535", None, True)),
])
def test_parse_nat(action: str, expected: tuple[Any, ...]) -> None:
    assert parse_nat(action) == expected


@pytest.mark.parametrize("action", [
    "ct(commit,zone=NXM_NX_REG6[0..15])",  # the security groups' commit: no NAT
    "ct(table=30,zone=NXM_NX_REG6[0..15])",
    "nat(src=198.51.100.10)",  # OVS prints the nested action again on its own line
    "ct_clear", "output:1", "set_field:0x1->tun_id",
])
def test_parse_nat_ignores_other_actions(action: str) -> None:
    assert parse_nat(action) is None


# ---------------------------------------------------------------- parsing the captures
def test_the_snat_recirculation_and_its_simulated_nat_are_parsed() -> None:
    parsed = parse_trace(SNAT_HV2)
    first, second = parsed.passes
    assert first.recirc_id is None and not first.nat_modified
    assert second.recirc_id == "recirc(0x4)" and second.ct_state == "new|trk"
    assert second.nat_initial["nw_src"] == "10.0.0.11"
    assert second.nat_modified == {"nw_src": "198.51.100.10", "tp_src": "33000",
                                   "nw_dst": OUTSIDE_IP, "tp_dst": "7001"}
    assert second.flow["nw_src"] == "198.51.100.10"  # the pass runs on the NATed packet
    [out] = parsed.outputs  # br-ex's NORMAL is no output action
    assert (out.ofport, out.bridge, out.pass_index) == (1, "br-int", 1)
    assert [e.bridge for e in second.entries] == ["br-int", "br-int", "br-ex"]


def test_table_hits_on_the_gateway_chassis_are_named() -> None:
    h = hop(HV2_CTX, SNAT_HV2, 2, 1)
    names = [(e.table, priority_name(pl_name(e.table), e.priority, e))
             for e in h.parsed.entries if e.bridge == "br-int"]
    assert names == [(0, "tunnel"), (50, "router"), (40, "route/24"), (42, "snat"),
                     (45, "resolve"), (50, "remote_mac")]
    [nat] = h.nats
    assert (nat.kind, nat.address, nat.zone, nat.commit) == ("snat", "198.51.100.10", "11948",
                                                            True)
    assert (nat.chassis, nat.table, nat.priority_name) == ("hv2", "snat", "snat")
    assert nat.owner == {"kind": "router", "id": ROUTER, "name": "alpha-router"}
    # the router's transit flow on hv1 (to its MAC: over the tunnel) is "router" too
    h1 = hop(HV1_CTX, SNAT_HV1, 3)
    assert [priority_name(pl_name(e.table), e.priority, e) for e in h1.parsed.entries
            if e.table == 50] == ["router"]
    assert h1.nats == []  # the security groups' ct() is no NAT


def pl_name(table: int) -> str:
    return pl.TABLE_NAMES[table]


def test_a_provider_patch_is_an_exit_not_a_delivery() -> None:
    h = hop(HV2_CTX, SNAT_HV2, 2, 1)
    assert [o.ofport for o in h.exits()] == [1]
    assert h.deliveries() == [] and h.tunnel_outputs() == []
    view = h.view(owner_index(intent()))
    assert view["outputs"] == [{"ofport": 1, "kind": "provider", "physnet": "physnet1"}]
    assert view["nat"][0]["address"] == "198.51.100.10"
    [ct] = view["conntrack"]
    assert ct["nat"]["to"]["nw_src"] == "198.51.100.10"
    h1 = hop(HV1_CTX, SNAT_HV1, 3)
    assert h1.exits() == [] and [o.ofport for o in h1.tunnel_outputs()] == [2]


# ---------------------------------------------------------------- the verdict
def test_snat_exits_naming_the_router() -> None:
    hops = [hop(HV1_CTX, SNAT_HV1, 3), hop(HV2_CTX, SNAT_HV2, 2, 1)]
    verdict, reason = judge(hops, SRC, None, None, OUT)
    assert verdict == "exited"
    assert reason["kind"] == "snat"
    assert reason["router"] == {"id": ROUTER, "name": "alpha-router"}
    assert reason["owner"]["kind"] == "router"
    assert reason["source_ip"] == "198.51.100.10"
    assert reason["leaves_as"] == {"src_ip": "198.51.100.10", "dst_ip": OUTSIDE_IP,
                                   "src_port": "33000", "dst_port": "7001"}
    assert (reason["chassis"], reason["ofport"], reason["physnet"]) == ("hv2", 1, "physnet1")
    assert reason["external_network"] == PUBLIC
    assert reason["detail"].startswith(
        f"SNAT by router alpha-router ({ROUTER}) to 198.51.100.10; leaves chassis hv2")
    assert reason["egress"]["id"] == EGRESS_RULE and reason["egress"]["chassis"] == "hv1"


def test_a_floating_ip_is_the_nat_owner() -> None:
    verdict, reason = judge([hop(HV2_CTX, FIP_HV2, 2, 1)], SRC, None, None, OUT)
    assert verdict == "exited"
    assert reason["kind"] == "floating_ip"
    assert reason["owner"]["id"] == FIP and reason["owner"]["router_id"] == ROUTER
    assert reason["nat"]["priority_name"] == "fip" and reason["nat"]["table"] == "snat"
    assert reason["source_ip"] == reason["leaves_as"]["src_ip"] == "198.51.100.12"
    assert reason["router"]["id"] == ROUTER
    assert "floating IP 198.51.100.12" in reason["detail"] and FIP in reason["detail"]
    assert "egress" not in reason  # no source hop given


def _without_the_way_out(text: str) -> str:
    """SNAT_HV2 as it would be before the upstream router's MAC is learnt: l3_resolve has
    no flow for the next hop and its miss drops."""
    head, _, _ = text.partition("45. reg4=")
    return head + ("45. priority 0, cookie 0x10000000000002d\n    drop\n\n"
                   "Final flow: unchanged\nMegaflow: recirc_id=0x4\nDatapath actions: drop\n")


def test_no_way_out_is_dropped_with_the_table_that_dropped_it() -> None:
    hops = [hop(HV1_CTX, SNAT_HV1, 3), hop(HV2_CTX, _without_the_way_out(SNAT_HV2), 2, 1)]
    assert hops[1].exits() == []
    verdict, reason = judge(hops, SRC, None, None, OUT)
    assert verdict == "dropped"
    assert (reason["kind"], reason["chassis"], reason["table"]) == ("no_next_hop", "hv2",
                                                                  "l3_resolve")


def test_a_router_without_route_drops_at_its_mac() -> None:
    head, _, _ = SNAT_HV1.partition("40. ip,metadata")
    text = head + ("40. ip,metadata=0x61303fad420e,dl_dst=fa:16:3e:06:b0:5a, priority 10, "
                   "cookie 0x5005328d068948b\n    drop\n\n"
                   "Final flow: unchanged\nMegaflow: recirc_id=0x1\nDatapath actions: drop\n")
    verdict, reason = judge([hop(HV1_CTX, text, 3)], SRC, None, None, OUT)
    assert verdict == "dropped"
    assert reason["kind"] == "not_routed" and reason["table"] == "l3"
    assert reason["port"] == A1 and reason["cookie"] == "0x5005328d068948b"


def test_nothing_out_and_no_drop_says_so() -> None:
    verdict, reason = judge([], SRC, None, None, OUT)
    assert verdict == "dropped" and reason["kind"] == "not_exited"
    assert reason["router"]["id"] == ROUTER and "gateway chassis" in reason["detail"]


# ---------------------------------------------------------------- outside, from intent
def test_outside_is_beyond_the_gateway_of_the_sources_router() -> None:
    world = intent()
    a1 = world.ports[A1]
    ip = _ip(OUTSIDE_IP)
    assert _destination(world, a1, OUTSIDE_IP) is None
    out = _outside(world, a1, "10.0.0.11", ip)
    assert out == Outside(OUTSIDE_IP, ROUTER, "alpha-router", PUBLIC, True)
    # the router's own gateway address and a floating IP are outside too (their ports
    # are no guests), an address on the source's subnet never is
    assert _destination(world, a1, "198.51.100.10") is None
    assert _destination(world, a1, "198.51.100.12") is None
    assert _outside(world, a1, "10.0.0.11", _ip("10.0.0.77")) is None
    assert _outside(world, a1, "10.0.0.11", _ip("2001:db8::1")) is None
    assert _outside(intent(gateway=False), a1, "10.0.0.11", ip) is None


def _ip(text: str) -> Any:
    return ipaddress.ip_address(text)


# ---------------------------------------------------------------- the tracer, end to end
class FakeStore:
    def __init__(self, intent: Intent) -> None:
        self.intent = intent

    def latest(self) -> Intent:
        return self.intent


class FakeRunner:
    def __init__(self, texts: Mapping[str, str]) -> None:
        self.texts = texts
        self.asked: list[tuple[str, str]] = []

    def socket_for(self, remote: str) -> Path:
        return Path(remote[len("unix:"):])

    def trace(self, socket: Path, bridge: str, flow: str, ct_next: Optional[str]) -> str:
        self.asked.append((socket.parent.name, flow))
        return self.texts[socket.parent.name]


def topology() -> Topology:
    topo = Topology()
    patch = InterfaceState("patch-physnet1", 1, None, type="patch", physnet="physnet1")
    for name, dpid, ports in (("hv1", HV1, {3: A1}), ("hv2", HV2, {})):
        other = "hv2" if name == "hv1" else "hv1"
        ifaces = [InterfaceState(f"p{k}", k, v) for k, v in ports.items()]
        ifaces += [InterfaceState(f"t{other}", 2, None, type="vxlan", remote_chassis=other),
                   patch]
        topo.update_chassis(ChassisState(name, f"unix:/run/{name}/db.sock", True, None,
                                         (BridgeState("br-int", dpid, tuple(ifaces)),)))
    return topo


def test_tracer_sends_to_the_routers_mac_and_follows_it_out() -> None:
    runner = FakeRunner({"hv1": SNAT_HV1, "hv2": SNAT_HV2})
    answer = Tracer(FakeStore(intent(fip=False)), topology(), runner).trace_query(  # type: ignore[arg-type]
        {"port": A1, "dst_ip": OUTSIDE_IP, "protocol": "tcp", "dst_port": "7001"})
    assert [chassis for chassis, _ in runner.asked] == ["hv1", "hv2"]
    assert f"dl_dst={ROUTER_MAC}" in runner.asked[0][1]
    assert runner.asked[1][1].startswith("in_port=2,tun_id=0x1,")
    assert answer["verdict"] == "exited" and answer["reason"]["kind"] == "snat"
    assert answer["packet"]["dst_mac"] == ROUTER_MAC
    assert answer["destination"] is None and answer["delivered_to"] == []
    assert answer["external"] == {
        "ip": OUTSIDE_IP, "router": {"id": ROUTER, "name": "alpha-router"},
        "external_network": PUBLIC, "enable_snat": True, "chassis": "hv2", "ofport": 1,
        "physnet": "physnet1"}
    assert [a["direction"] for a in answer["acl"]] == ["egress"]
    assert answer["hops"][1]["outputs"] == [{"ofport": 1, "kind": "provider",
                                             "physnet": "physnet1"}]


def test_tracer_without_a_gateway_still_says_no_route() -> None:
    runner = FakeRunner({})
    answer = Tracer(FakeStore(intent(gateway=False)), topology(), runner).trace(  # type: ignore[arg-type]
        A1, OUTSIDE_IP)
    assert answer["verdict"] == "dropped" and answer["reason"]["kind"] == "no_route"
    assert runner.asked == [] and "external" not in answer


def test_the_next_chassis_gets_the_packet_as_it_left() -> None:
    """A copy tunnelled after a router or NAT rewrote it is traced as rewritten there."""
    sent = Packet("tcp", A1_MAC, ROUTER_MAC, "10.0.0.11", OUTSIDE_IP, 33000, 7001)
    assert packet_after(sent, parse_trace(SNAT_HV1), 1) == sent  # L2 to the gateway: as is
    after = packet_after(sent, parse_trace(SNAT_HV2), 1)
    assert (after.src_mac, after.dst_mac) == ("fa:16:3e:66:91:29", "02:00:5e:00:51:01")
    assert (after.src_ip, after.dst_ip, after.src_port, after.ttl) == (
        "198.51.100.10", OUTSIDE_IP, 33000, 63)
    assert "nw_ttl=63" in trace_flow(after, 2, 1)
    assert packet_after(sent, parse_trace(SNAT_HV2), 7) == sent
