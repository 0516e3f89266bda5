"""/v1/trace of DHCP: a guest's request punted to Loom's DHCP server, a guest's DHCP
server reply dropped by port security.

The captures below are real: tests/integration/test_trace_dhcp.py's world (one private
OVS 3.1 under a running controller), g1 (10.0.0.11, ofport 1), g2 (10.0.0.12, ofport 2)
and `open` (10.0.0.13, ofport 3, port security off) on a DHCP subnet 10.0.0.0/24.
DISCOVER is a DHCPDISCOVER from g1 (0.0.0.0 -> 255.255.255.255, UDP 68 -> 67): port
security's `dhcp_punt` flow sends it to the controller through g1's punt meter 65537.
ROGUE_REPLY is a DHCP server reply g1 broadcasts (UDP 67 -> 68): `dhcp_server_drop`.
The *_WITHOUT_* captures are the same packets once those two flows were deleted from the
switch (ovs-ofctl del-flows): what the trace says when the flows are not there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import pytest

from controller import dhcp
from controller import pipeline as pl
from controller.explain import TraceError, Tracer
from controller.explain.trace import (
    ControllerOutput,
    Endpoint,
    Hop,
    HopContext,
    decisions_of,
    judge,
    nat_steps,
    owner_index,
    parse_trace,
    punt_steps,
)
from controller.explain.tracer import dhcp_role
from controller.intent import FixedIP, Intent, Network, Port, SecurityGroupRule, Subnet
from controller.topology import BridgeState, ChassisState, InterfaceState, Topology

G1 = "b4bc297c-9939-4c60-897c-f643e91911f5"
G1_MAC = "fa:16:3e:e4:83:cc"
G2 = "854c01a9-eefa-4a7c-9b98-2de477455ae7"
OPEN = "0964b0fa-a957-4f49-87c9-e9aaba6f3082"
NET = "64ca6a80-8d71-4355-b9c2-7c79609f5b3b"
SUBNET = "301824df-6d12-4829-a431-6a8b3d4df479"
EGRESS_RULE = "5a1e7c2d-0000-4000-8000-86de88e1a2bb"  # cookie 0x40086de88e1a2bb
INGRESS_RULE = "5a1e7c2d-0000-4000-8000-9ae3c2fcf6b3"  # cookie 0x4009ae3c2fcf6b3 (conj)
SG = "5a1e7c2d-0000-4000-8000-000000000050"
DPID = 0x00001accbd788b49
BROADCAST = "255.255.255.255"

DISCOVER = """\
Flow: udp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.\
0,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=68,tp_dst=67

bridge("br-int")
----------------
 0. in_port=1, priority 100, cookie 0x300f643e91911f5
    set_field:0xa95c->reg6
    write_metadata:0x7c79609f5b3b
    goto_table:10
10. udp,in_port=1,dl_src=fa:16:3e:e4:83:cc,tp_src=68,tp_dst=67, priority 300, cookie 0x300f643e9191\
1f5
    meter:65537
    CONTROLLER:65535

Final flow: udp,reg6=0xa95c,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83\
:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_f\
rag=no,tp_src=68,tp_dst=67
Megaflow: recirc_id=0,eth,udp,in_port=1,dl_src=fa:16:3e:e4:83:cc,nw_frag=no,tp_src=68,tp_dst=67
Datapath actions: meter(0),userspace(pid=0,controller(reason=1,dont_send=1,continuation=0,recirc_id\
=1,rule_cookie=0x300f643e91911f5,controller_id=0,max_len=65535))
"""

ROGUE_REPLY = """\
Flow: udp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0\
.11,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68

bridge("br-int")
----------------
 0. in_port=1, priority 100, cookie 0x300f643e91911f5
    set_field:0xa95c->reg6
    write_metadata:0x7c79609f5b3b
    goto_table:10
10. udp,in_port=1,tp_src=67,tp_dst=68, priority 150, cookie 0x300f643e91911f5
    drop

Final flow: udp,reg6=0xa95c,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83\
:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw\
_frag=no,tp_src=67,tp_dst=68
Megaflow: recirc_id=0,eth,udp,in_port=1,dl_src=fa:16:3e:e4:83:cc,nw_frag=no,tp_src=67,tp_dst=68
Datapath actions: drop
"""

DISCOVER_WITHOUT_PUNT = """\
Flow: udp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.\
0,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=68,tp_dst=67

bridge("br-int")
----------------
 0. in_port=1, priority 100, cookie 0x300f643e91911f5
    set_field:0xa95c->reg6
    write_metadata:0x7c79609f5b3b
    goto_table:10
10. in_port=1, priority 10, cookie 0x300f643e91911f5
    drop

Final flow: udp,reg6=0xa95c,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83\
:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_f\
rag=no,tp_src=68,tp_dst=67
Megaflow: recirc_id=0,eth,ip,in_port=1,dl_src=fa:16:3e:e4:83:cc,nw_src=0.0.0.0/5,nw_frag=no
Datapath actions: drop
"""

ROGUE_REPLY_WITHOUT_DROP = """\
Flow: udp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0\
.11,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68

bridge("br-int")
----------------
 0. in_port=1, priority 100, cookie 0x300f643e91911f5
    set_field:0xa95c->reg6
    write_metadata:0x7c79609f5b3b
    goto_table:10
10. ip,in_port=1,dl_src=fa:16:3e:e4:83:cc,nw_src=10.0.0.11, priority 100, cookie 0x300f643e91911f5
    goto_table:20
20. priority 0, cookie 0x100000000000014
    goto_table:30
30. ct_state=-trk,ip, priority 200, cookie 0x100000000000ac1
    ct(table=30,zone=NXM_NX_REG6[0..15])
    drop
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at tabl\
e 30.
     -> Sets the packet to an untracked state, and clears all the conntrack fields.

Final flow: udp,reg6=0xa95c,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83\
:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,nw_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw\
_frag=no,tp_src=67,tp_dst=68
Megaflow: recirc_id=0,ct_state=-trk,eth,ip,in_port=1,dl_src=fa:16:3e:e4:83:cc,nw_src=10.0.0.11,nw_f\
rag=no
Datapath actions: ct(zone=43356),recirc(0x7)

===============================================================================
recirc(0x7) - resume conntrack with ct_state=new|trk
===============================================================================

Flow: recirc_id=0x7,ct_state=new|trk,ct_zone=43356,eth,udp,reg6=0xa95c,metadata=0x7c79609f5b3b,in_p\
ort=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,nw_dst=255\
.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68

bridge("br-int")
----------------
    thaw
        Resuming from table 30
30. ct_state=-rpl-inv+trk,ip,in_port=1, priority 100, cookie 0x40086de88e1a2bb
    ct(commit,zone=NXM_NX_REG6[0..15])
    drop
     -> Sets the packet to an untracked state, and clears all the conntrack fields.
    goto_table:40
40. priority 0, cookie 0x100000000000028
    goto_table:50
50. metadata=0x7c79609f5b3b, priority 10, cookie 0x2007c79609f5b3b
    set_field:0x1->reg7
    resubmit(,60)
    60. ct_state=-trk,ip, priority 200, cookie 0x100000000000ac1
            ct(table=60,zone=NXM_NX_REG6[0..15])
            drop
             -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed\
 at table 60.
             -> Sets the packet to an untracked state, and clears all the conntrack fields.
    set_field:0x2->reg7
    resubmit(,60)
    60. ct_state=-trk,ip, priority 200, cookie 0x100000000000ac1
            ct(table=60,zone=NXM_NX_REG6[0..15])
            drop
             -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed\
 at table 60.
             -> Sets the packet to an untracked state, and clears all the conntrack fields.
    set_field:0x3->reg7
    resubmit(,60)
60. reg7=0x3, priority 300, cookie 0x300e9aaba6f3082
    goto_table:70
70. priority 0, cookie 0x100000000000046
    goto_table:80
80. reg7=0x3, priority 100, cookie 0x300e9aaba6f3082
    output:3

Final flow: recirc_id=0x7,eth,udp,reg6=0xa95c,reg7=0x3,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0\
x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,nw_dst=255.255.255.255,nw_\
tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68
Megaflow: recirc_id=0x7,ct_state=-est-rel-rpl-inv+trk,ct_mark=0/0x1,eth,ip,in_port=1,dl_dst=ff:ff:f\
f:ff:ff:ff,nw_frag=no
Datapath actions: ct(commit,zone=43356),ct(zone=43356),recirc(0x8),ct(zone=43356),recirc(0x9),4

===============================================================================
recirc(0x8) - resume conntrack with ct_state=new|trk
===============================================================================

Flow: recirc_id=0x8,ct_state=new|trk,ct_zone=43356,eth,udp,reg6=0xa95c,reg7=0x1,metadata=0x7c79609f\
5b3b,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,n\
w_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68

bridge("br-int")
----------------
    thaw
        Resuming from table 60
60. conj_id=3271358131,ct_state=-rpl-inv+trk,ip, priority 90, cookie 0x4009ae3c2fcf6b3
    ct(commit,zone=NXM_NX_REG6[0..15])
    drop
     -> Sets the packet to an untracked state, and clears all the conntrack fields.
    goto_table:70
70. priority 0, cookie 0x100000000000046
    goto_table:80
80. reg7=0x1, priority 100, cookie 0x300f643e91911f5
    output:1
     >> skipping output to input port

Final flow: recirc_id=0x8,eth,udp,reg6=0xa95c,reg7=0x1,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0\
x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,nw_dst=255.255.255.255,nw_\
tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68
Megaflow: recirc_id=0x8,ct_state=-est-rel-rpl-inv+trk,ct_mark=0/0x1,eth,ip,in_port=1,nw_src=10.0.0.\
11,nw_frag=no
Datapath actions: ct(commit,zone=43356)

===============================================================================
recirc(0x9) - resume conntrack with ct_state=new|trk
===============================================================================

Flow: recirc_id=0x9,ct_state=new|trk,ct_zone=43356,eth,udp,reg6=0xa95c,reg7=0x2,metadata=0x7c79609f\
5b3b,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,n\
w_dst=255.255.255.255,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68

bridge("br-int")
----------------
    thaw
        Resuming from table 60
60. conj_id=3271358131,ct_state=-rpl-inv+trk,ip, priority 90, cookie 0x4009ae3c2fcf6b3
    ct(commit,zone=NXM_NX_REG6[0..15])
    drop
     -> Sets the packet to an untracked state, and clears all the conntrack fields.
    goto_table:70
70. priority 0, cookie 0x100000000000046
    goto_table:80
80. reg7=0x2, priority 100, cookie 0x3002de477455ae7
    output:2

Final flow: recirc_id=0x9,eth,udp,reg6=0xa95c,reg7=0x2,metadata=0x7c79609f5b3b,in_port=1,vlan_tci=0\
x0000,dl_src=fa:16:3e:e4:83:cc,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.11,nw_dst=255.255.255.255,nw_\
tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=67,tp_dst=68
Megaflow: recirc_id=0x9,ct_state=-est-rel-rpl-inv+trk,ct_mark=0/0x1,eth,ip,in_port=1,nw_src=10.0.0.\
11,nw_frag=no
Datapath actions: ct(commit,zone=43356),3
"""


def intent(enable_dhcp: bool = True, router: bool = True) -> Intent:
    """The intent the captures were made under (the parts a trace reads)."""
    nets = {NET: Network(NET, "p1", "dhcp-net", "vxlan", 1, mtu=1450)}
    subnets = {SUBNET: Subnet(SUBNET, "p1", NET, "", 4, "10.0.0.0/24", "10.0.0.1",
                              enable_dhcp=enable_dhcp, dns_nameservers=("10.0.0.53",),
                              host_routes=(("192.0.2.0/24", "10.0.0.254"),))}
    ports = {
        G1: Port(G1, "p1", NET, "g1", G1_MAC, (FixedIP(SUBNET, "10.0.0.11"),)),
        G2: Port(G2, "p1", NET, "g2", "fa:16:3e:09:88:b6", (FixedIP(SUBNET, "10.0.0.12"),)),
        OPEN: Port(OPEN, "p1", NET, "open", "fa:16:3e:1f:b7:17",
                   (FixedIP(SUBNET, "10.0.0.13"),), port_security_enabled=False),
    }
    if router:  # the gateway, the DHCP server identifier, held by a router interface
        ports["r"] = Port("5a1e7c2d-0000-4000-8000-0000000000a2", "p1", NET, "",
                          "fa:16:3e:06:b0:5a", (FixedIP(SUBNET, "10.0.0.1"),),
                          device_owner="network:router_interface", device_id="R")
        ports = {p.id: p for p in ports.values()}
    rules = {r.id: r for r in (
        SecurityGroupRule(EGRESS_RULE, "p1", SG, "egress", "IPv4"),
        SecurityGroupRule(INGRESS_RULE, "p1", SG, "ingress", "IPv4", remote_group_id=SG))}
    return Intent(7, networks=MappingProxyType(nets), subnets=MappingProxyType(subnets),
                  ports=MappingProxyType(ports), security_group_rules=MappingProxyType(rules))


CTX = HopContext("hv1", "br-int", DPID, {1: G1, 2: G2, 3: OPEN}, {})
SRC = Endpoint(G1, NET, "hv1", 1)


def hop(text: str, world: Optional[Intent] = None) -> Hop:
    owners = owner_index(world or intent())
    parsed = parse_trace(text)
    return Hop(CTX, "", 1, None, parsed, decisions_of(parsed, CTX, owners), text,
               nat_steps(parsed, CTX, owners), punt_steps(parsed, CTX, owners))


# ---------------------------------------------------------------- parsing
def test_the_punt_is_parsed_as_a_controller_output_with_its_meter() -> None:
    parsed = parse_trace(DISCOVER)
    assert [(e.table, e.priority) for e in parsed.entries] == [(0, 100), (10, 300)]
    assert parsed.entries[1].meter == 65537
    assert parsed.controller_outputs == [ControllerOutput(65535, 65537, "br-int", 0)]
    assert parsed.outputs == []  # the controller is no port: never a delivery


@pytest.mark.parametrize("action,max_len", [
    ("CONTROLLER:65535", 65535),
    ("controller(reason=no_match,max_len=128)", 128),
    ("controller(reason=action,id=0,userdata=00.01)", None),
    ("controller", None),
])
def test_every_way_ovs_prints_a_punt(action: str, max_len: Optional[int]) -> None:
    parsed = parse_trace(DISCOVER.replace("    CONTROLLER:65535\n", f"    {action}\n"))
    [c] = parsed.controller_outputs
    assert (c.max_len, c.meter) == (max_len, 65537)


def test_the_punt_step_names_the_flow_its_port_and_the_meter() -> None:
    [step] = hop(DISCOVER).punts
    assert (step.kind, step.port_id, step.chassis) == ("dhcp", G1, "hv1")
    assert (step.table, step.priority, step.priority_name) == ("port_security", 300,
                                                               "dhcp_punt")
    assert step.owner is not None and step.owner["kind"] == "port" and step.owner["id"] == G1
    assert step.meter == pl.punt_meter_id(1) and step.max_len == 65535
    view = hop(DISCOVER).view(owner_index(intent()))
    assert view["punts"][0]["meter"] == {"id": 65537, "rate_pps": pl.PUNT_RATE_PPS,
                                         "burst_packets": pl.PUNT_BURST_PACKETS, "ofport": 1}
    assert view["outputs"] == []
    assert view["tables"][1]["actions"] == ["meter:65537", "CONTROLLER:65535"]
    assert "punts" not in hop(ROGUE_REPLY).view(owner_index(intent()))


# ---------------------------------------------------------------- the verdicts
def test_a_dhcp_request_is_punted() -> None:
    verdict, reason = judge([hop(DISCOVER)], SRC, None, broadcast=True)
    assert verdict == "punted"
    assert reason["kind"] == "dhcp" and reason["port"] == G1
    assert (reason["table"], reason["priority_name"]) == ("port_security", "dhcp_punt")
    assert reason["cookie"] == "0x300f643e91911f5" and reason["owner"]["id"] == G1
    assert reason["meter"]["id"] == 65537 and reason["max_len"] == 65535
    assert "Loom's DHCP server answers it" in reason["detail"]
    assert "punt meter 65537 (10 packets/s, burst 20" in reason["detail"]


def test_a_guests_dhcp_server_reply_is_dropped_by_port_security() -> None:
    verdict, reason = judge([hop(ROGUE_REPLY)], SRC, None, broadcast=True)
    assert verdict == "dropped"
    assert reason == {
        "kind": "dhcp_server", "direction": "egress", "port": G1, "chassis": "hv1",
        "table": "port_security", "priority": 150, "cookie": "0x300f643e91911f5",
        "priority_name": "dhcp_server_drop",
        "detail": reason["detail"]}
    assert reason["detail"].startswith("guests may not act as DHCP servers")
    # to a neighbour (unicast) it is the same decision
    verdict, unicast = judge([hop(ROGUE_REPLY)], SRC, Endpoint(G2, NET, "hv1", 2))
    assert (verdict, unicast) == ("dropped", reason)


def test_without_the_punt_flow_the_request_is_not_punted() -> None:
    """The verdict comes from the flows: with no dhcp_punt flow, a DISCOVER (from
    0.0.0.0, no address of the port's) is port security's drop."""
    h = hop(DISCOVER_WITHOUT_PUNT)
    assert h.punts == []
    verdict, reason = judge([h], SRC, None, broadcast=True)
    assert verdict == "dropped" and reason["kind"] == "port_security"
    assert reason["priority"] == pl.PORT_SECURITY.priorities["drop"]


def test_without_the_server_drop_a_rogue_reply_floods_the_network() -> None:
    verdict, reason = judge([hop(ROGUE_REPLY_WITHOUT_DROP)], SRC, None, broadcast=True)
    assert verdict == "allowed" and reason["kind"] == "flooded"
    assert reason["reached"] == [{"port": OPEN, "chassis": "hv1", "ofport": 3},
                                 {"port": G2, "chassis": "hv1", "ofport": 2}]


def test_a_punt_that_is_also_forwarded_is_no_punt() -> None:
    """`punted` is for what goes to the controller and nowhere else."""
    h = hop(ROGUE_REPLY_WITHOUT_DROP)
    h.punts.extend(hop(DISCOVER).punts)
    verdict, _ = judge([h], SRC, None, broadcast=True)
    assert verdict == "allowed"


# ---------------------------------------------------------------- the tracer, end to end
class FakeStore:
    def __init__(self, intent: Intent) -> None:
        self.intent = intent

    def latest(self) -> Intent:
        return self.intent


class FakeRunner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.asked: list[str] = []

    def socket_for(self, remote: str) -> Path:
        return Path(remote[len("unix:"):])

    def trace(self, socket: Path, bridge: str, flow: str, ct_next: Optional[str]) -> str:
        self.asked.append(flow)
        return self.text


def topology() -> Topology:
    topo = Topology()
    ifaces = tuple(InterfaceState(f"p{k}", k, v) for k, v in ((1, G1), (2, G2), (3, OPEN)))
    topo.update_chassis(ChassisState("hv1", "unix:/run/hv1/db.sock", True, None,
                                     (BridgeState("br-int", DPID, ifaces),)))
    return topo


def trace_params(text: str, params: Mapping[str, str], world: Optional[Intent] = None,
                 lease_seconds: Optional[int] = None) -> tuple[dict[str, Any], FakeRunner]:
    runner = FakeRunner(text)
    tracer = Tracer(FakeStore(world or intent()), topology(), runner,  # type: ignore[arg-type]
                    dhcp_lease_seconds=lease_seconds)
    return tracer.trace_query({"port": G1, **params}), runner


def trace(text: str, world: Optional[Intent] = None, lease_seconds: Optional[int] = None,
          **query: str) -> tuple[dict[str, Any], FakeRunner]:
    return trace_params(text, query, world, lease_seconds)


def test_a_discover_is_traced_as_the_guest_sends_it_and_names_the_lease() -> None:
    answer, runner = trace(DISCOVER, dst_ip=BROADCAST, protocol="udp", dst_port="67")
    assert runner.asked == [
        f"in_port=1,udp,dl_src={G1_MAC},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,"
        "nw_dst=255.255.255.255,nw_ttl=64,udp_src=68,udp_dst=67"]
    assert answer["verdict"] == "punted"
    reason = answer["reason"]
    assert reason["answered"] is True
    assert reason["reply"] == {
        "address": "10.0.0.11", "subnet": SUBNET, "cidr": "10.0.0.0/24",
        "subnet_mask": "255.255.255.0", "broadcast_address": "10.0.0.255",
        "router": "10.0.0.1", "dns_nameservers": ["10.0.0.53"],
        "host_routes": [{"destination": "192.0.2.0/24", "nexthop": "10.0.0.254"}],
        "mtu": 1450, "server_identifier": "10.0.0.1", "server_mac": dhcp.SERVER_MAC,
        "lease_seconds": dhcp.DEFAULT_LEASE_SECONDS,
        "renewal_seconds": dhcp.DEFAULT_LEASE_SECONDS // 2,
        "rebinding_seconds": dhcp.DEFAULT_LEASE_SECONDS * 7 // 8}
    assert reason["detail"].endswith(
        "the reply gives 10.0.0.11/24, router 10.0.0.1, DNS 10.0.0.53, MTU 1450, for 43200 s, "
        "from server 10.0.0.1")
    assert answer["dhcp"] == {"role": "client", "served": True, "subnets": [SUBNET],
                              "lease": reason["reply"]}
    assert answer["destination"] is None and answer["delivered_to"] == []
    assert answer["packet"]["src_port"] == 68 and answer["packet"]["src_ip"] == "0.0.0.0"


def test_the_lease_time_is_the_servers() -> None:
    answer, _ = trace(DISCOVER, lease_seconds=600, dst_ip=BROADCAST, protocol="udp",
                      dst_port="67")
    reply = answer["reason"]["reply"]
    assert (reply["lease_seconds"], reply["renewal_seconds"], reply["rebinding_seconds"]) == (
        600, 300, 525)


def test_a_renew_keeps_the_ports_address_and_goes_to_the_server() -> None:
    answer, runner = trace(DISCOVER, dst_ip="10.0.0.1", protocol="udp", dst_port="67")
    assert "nw_src=10.0.0.11,nw_dst=10.0.0.1," in runner.asked[0]
    assert "dl_dst=fa:16:3e:06:b0:5a" in runner.asked[0]  # the router port's MAC
    assert answer["verdict"] == "punted"
    given, _ = trace(DISCOVER, dst_ip=BROADCAST, protocol="udp", dst_port="67",
                     src_ip="10.0.0.11")
    assert given["packet"]["src_ip"] == "10.0.0.11"


def test_a_server_identifier_no_port_holds_is_never_asked() -> None:
    answer, runner = trace(DISCOVER, intent(router=False), dst_ip="10.0.0.1",
                           protocol="udp", dst_port="67")
    assert runner.asked == []
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "unknown_destination"
    assert "held by no port" in answer["dhcp"]["detail"]


def test_a_rogue_reply_defaults_to_the_servers_port() -> None:
    answer, runner = trace(ROGUE_REPLY, dst_ip=BROADCAST, protocol="udp", dst_port="68")
    assert "nw_src=10.0.0.11,nw_dst=255.255.255.255" in runner.asked[0]
    assert runner.asked[0].endswith("udp_src=67,udp_dst=68")
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "dhcp_server"
    assert answer["reason"]["priority_name"] == "dhcp_server_drop"
    assert answer["dhcp"]["role"] == "server"


def test_a_punt_loom_will_not_answer_says_so() -> None:
    """Flows a compile behind the intent: the subnet's DHCP was just turned off."""
    answer, _ = trace(DISCOVER, intent(enable_dhcp=False), dst_ip=BROADCAST,
                      protocol="udp", dst_port="67")
    assert answer["verdict"] == "punted"
    assert answer["reason"]["answered"] is False and answer["reason"]["reply"] is None
    assert "ignores the request" in answer["reason"]["detail"]
    assert answer["dhcp"]["served"] is False and answer["dhcp"]["lease"] is None


def test_served_but_not_punted_points_at_the_flows() -> None:
    answer, _ = trace(DISCOVER_WITHOUT_PUNT, dst_ip=BROADCAST, protocol="udp",
                      dst_port="67")
    assert answer["verdict"] == "dropped" and answer["reason"]["kind"] == "port_security"
    assert "no dhcp_punt flow" in answer["dhcp"]["detail"]
    off, _ = trace(DISCOVER_WITHOUT_PUNT, intent(enable_dhcp=False), dst_ip=BROADCAST,
                   protocol="udp", dst_port="67")
    assert "none of its IPv4 subnets has enable_dhcp" in off["dhcp"]["detail"]


def test_other_traffic_is_traced_as_before() -> None:
    """Only DHCP goes to 255.255.255.255; other ports keep the ephemeral source port."""
    answer, runner = trace(DISCOVER, dst_ip=BROADCAST, protocol="udp", dst_port="53")
    assert runner.asked == [] and answer["reason"]["kind"] == "no_route"
    assert "dhcp" not in answer and answer["packet"]["src_port"] == 33000
    answer, _ = trace(DISCOVER, dst_ip="10.0.0.12", protocol="tcp", dst_port="67")
    assert answer["packet"]["src_port"] == 33000 and "dhcp" not in answer


@pytest.mark.parametrize("ports,role", [
    ((68, 67), "client"), ((67, 68), "server"), ((33000, 67), None), ((68, 53), None)])
def test_dhcp_role(ports: tuple[int, int], role: Optional[str]) -> None:
    assert dhcp_role("udp", *ports, 4) == role
    assert dhcp_role("tcp", *ports, 4) is None
    assert dhcp_role("udp", *ports, 6) is None  # DHCPv6 is 546/547, not served


@pytest.mark.parametrize("query,message", [
    ({"src_port": "0"}, "src_port must be 1-65535"),
    ({"src_port": "68x"}, "src_port must be 1-65535"),
    ({"src_port": "65536"}, "src_port must be 1-65535"),
    ({"src_ip": "0.0.0.256"}, "src_ip '0.0.0.256' is not an IP address"),
    ({"src_ip": "::"}, "different IP versions"),
    ({"protocol": "icmp", "dst_port": ""}, "icmp has no ports"),
    ({"dst_port": "", "protocol": "udp"}, "dst_port is required for udp"),
    ({"dhcp": "1"}, "unknown query parameter(s) dhcp"),
])
def test_bad_values_are_neutron_400s(query: Mapping[str, str], message: str) -> None:
    params = {"dst_ip": BROADCAST, "protocol": "udp", "dst_port": "67", "src_port": "68",
              **query}
    params = {k: v for k, v in params.items() if v != ""}
    with pytest.raises(TraceError) as err:
        trace_params(DISCOVER, params)
    assert (err.value.status, err.value.type) == (400, "InvalidInput")
    assert message in err.value.message
