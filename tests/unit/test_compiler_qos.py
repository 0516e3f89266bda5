"""QoS compilation: egress meters, DSCP on port security, share caps for guarantees."""

from __future__ import annotations

import uuid
from types import MappingProxyType

import pytest

from controller import pipeline as pl
from controller.compiler import compile_all, compile_switch
from controller.compiler.qos import share_caps
from controller.flows import SetField, mac
from controller.intent import FixedIP, Intent, Network, Port, QosPolicy, QosRule, object_key
from controller.topology import Binding, ChassisView, SwitchView, TopologyView, TunnelView

DPID = 0x9


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"qos-{kind}-{n}"))


def world(port_policies: dict[int, str | None], rules: list[QosRule],
          network_policy: str | None = None):
    net = Network(_id("net", 1), "p", "n", "vxlan", 9, qos_policy_id=network_policy)
    ports = [Port(_id("port", i), "p", net.id, f"p{i}", f"fa:16:3e:00:02:{i:02x}",
                  (FixedIP(_id("sub", 1), f"10.0.0.{i}"),), qos_policy_id=pol)
             for i, pol in port_policies.items()]
    policies = {r.policy_id: QosPolicy(r.policy_id, "p", "x") for r in rules}
    intent = Intent(1, networks=MappingProxyType({net.id: net}),
                    ports=MappingProxyType({p.id: p for p in ports}),
                    qos_policies=MappingProxyType(policies),
                    qos_rules=MappingProxyType({r.id: r for r in rules}))
    bindings = {p.id: Binding(p.id, "hv", "br-int", DPID, 20 + i, f"if{i}")
                for i, p in enumerate(ports)}
    topo = TopologyView(1, MappingProxyType({DPID: SwitchView(DPID, "hv", "br-int")}),
                        MappingProxyType(bindings))
    return ports, compile_switch(intent, topo, DPID)


def test_egress_limit_is_a_meter_on_the_ports_classify_flow():
    pol = _id("pol", 1)
    ports, d = world({1: pol, 2: None}, [QosRule(_id("r", 1), pol, "bandwidth_limit",
                                                 max_kbps=20000)])
    (meter,) = d.meters.values()
    assert meter.rate_kbps == 20000 and meter.burst_kb == 16000  # 80% default burst
    classify = {f.match: f for f in d.flows.values() if f.table == "classify" and f.priority}
    metered = [f for f in classify.values() if f.meter == meter.meter_id]
    assert len(metered) == 1 and dict((m.field, m.value) for m in metered[0].match) == {
        "in_port": 20}


def test_network_policy_applies_unless_the_port_has_its_own():
    net_pol, port_pol = _id("pol", 2), _id("pol", 3)
    rules = [QosRule(_id("r", 2), net_pol, "bandwidth_limit", max_kbps=5000),
             QosRule(_id("r", 3), port_pol, "bandwidth_limit", max_kbps=7000)]
    _, d = world({1: None, 2: port_pol}, rules, network_policy=net_pol)
    assert sorted(m.rate_kbps for m in d.meters.values()) == [5000, 7000]
    # each meter is owned by the policy whose rule made it (not by a port's key)
    assert {m.rate_kbps: pl.cookie_owner(m.owner) for m in d.meters.values()} == {
        5000: ("qos_policy", object_key(net_pol)), 7000: ("qos_policy", object_key(port_pol))}


def test_dscp_is_set_on_the_ports_ip_traffic():
    pol = _id("pol", 4)
    _, d = world({1: pol}, [QosRule(_id("r", 4), pol, "dscp_marking", dscp_mark=26)])
    marked = [f for f in d.flows.values() if f.table == "port_security"
              and SetField("ip_dscp", 26) in f.actions]
    assert len(marked) == 2  # IPv4 address and the IPv6 link-local


def test_ingress_limit_shapes_and_guarantees_cap_the_other_senders():
    lim, gold, bronze = _id("pol", 5), _id("pol", 6), _id("pol", 7)
    rules = [QosRule(_id("r", 5), lim, "bandwidth_limit", max_kbps=30000, direction="ingress"),
             QosRule(_id("r", 6), gold, "minimum_bandwidth", min_kbps=20000),
             QosRule(_id("r", 7), bronze, "minimum_bandwidth", min_kbps=6000)]
    _, d = world({1: lim, 2: gold, 3: bronze}, rules)
    assert d.shaping["if0"].max_bps == 30_000_000
    caps = {tuple(sorted((m.field, m.value) for m in f.match)): d.meters[f.meter].rate_kbps
            for f in d.flows.values() if f.table == "qos" and f.priority}
    # spare 4000 shared out in equal parts: gold 20000+2000, bronze 6000+2000, rest 2000
    assert caps[(("in_port", 21), (pl.REG_OUT_PORT, 20))] == 22000  # gold
    assert caps[(("in_port", 22), (pl.REG_OUT_PORT, 20))] == 8000  # bronze
    assert caps[((pl.REG_OUT_PORT, 20),)] == 2000  # everyone else
    # the caps carve up the ingress limit: its policy owns them
    assert {pl.cookie_owner(m.owner) for m in d.meters.values()} == {
        ("qos_policy", object_key(lim))}


def test_no_policy_no_qos_state():
    _, d = world({1: None, 2: None}, [])
    assert not d.meters and not d.shaping
    assert not [f for f in d.flows.values() if f.table == "qos" and f.priority]


# ---------------------------------------------------------------- the share arithmetic
@pytest.mark.parametrize("limit,guarantees", [
    (30000, [20000]), (30000, [20000, 6000]), (30000, [10000, 6000, 4000]),
    (100000, [1, 2, 3, 4, 5, 6, 7]), (30000, [10000, 10000, 10000]), (1000, [999, 1]),
    (50000, [7, 49000, 13]),
])
def test_share_caps_leave_every_sender_its_minimum_whatever_the_others_send(limit, guarantees):
    caps, rest = share_caps(limit, guarantees)
    floor = 1 if rest == 1 else 0  # a meter cannot be 0 kbps: the rest keeps 1 at least
    for i, g in enumerate(guarantees):
        others = sum(caps) - caps[i] + rest  # every other sender (and the rest) greedy
        assert others <= limit - g + floor, (i, caps, rest)
        assert caps[i] >= g
    # the spare is handed out, not kept back: everyone greedy offers L + spare // N
    spare = limit - sum(guarantees)
    assert sum(caps) + rest == limit + spare // len(guarantees) + floor


def test_share_caps_one_sender_may_use_the_whole_port():
    assert share_caps(30000, [20000]) == ([30000], 10000)


def test_share_caps_scale_guarantees_that_exceed_the_limit():
    caps, rest = share_caps(30000, [30000, 15000])  # 45 into 30: two thirds each
    assert caps == [20000, 10000]
    assert rest == 1  # the smallest meter OVS takes; everything else is guaranteed away


# ---------------------------------------------------------------- senders on other chassis
D1, D2, D3 = 0xD1, 0xD2, 0xD3
TUNNEL_OFPORT = {"hv1": 101, "hv2": 102, "hv3": 103}


def multi_host(where: dict[int, tuple[int, str | None]], rules: list[QosRule],
               net_type: str = "vxlan", tunnels: bool = True, other_net: set[int] = frozenset()):
    """Ports i -> (datapath id, policy) on three chassis, one network (ports in
    `other_net` on a second one); full tunnel mesh unless `tunnels` is False."""
    phys = "physnet1" if net_type == "vlan" else None
    net = Network(_id("net", 1), "p", "n", net_type, 9, physical_network=phys)
    net2 = Network(_id("net", 2), "p", "m", net_type, 10, physical_network=phys)
    ports = {i: Port(_id("port", i), "p", (net2 if i in other_net else net).id, f"p{i}",
                     f"fa:16:3e:00:02:{i:02x}", (FixedIP(_id("sub", 1), f"10.0.0.{i}"),),
                     qos_policy_id=pol)
             for i, (_d, pol) in where.items()}
    policies = {r.policy_id: QosPolicy(r.policy_id, "p", "x") for r in rules}
    intent = Intent(1, networks=MappingProxyType({net.id: net, net2.id: net2}),
                    ports=MappingProxyType({p.id: p for p in ports.values()}),
                    qos_policies=MappingProxyType(policies),
                    qos_rules=MappingProxyType({r.id: r for r in rules}))
    bindings = {ports[i].id: Binding(ports[i].id, f"hv{d & 0xF}", "br-int", d, 20 + i, f"if{i}")
                for i, (d, _pol) in where.items()}
    switches = {d: SwitchView(d, f"hv{d & 0xF}", "br-int") for d in (D1, D2, D3)}
    chassis = {f"hv{d & 0xF}": ChassisView(f"hv{d & 0xF}", f"172.31.0.{d & 0xF}", d)
               for d in (D1, D2, D3)}
    tun = {}
    if tunnels:
        tun = {(d, r, net_type): TunnelView(d, r, net_type, ofp)
               for d in (D1, D2, D3) for r, ofp in TUNNEL_OFPORT.items()
               if r != f"hv{d & 0xF}"}
    provider = {(d, "physnet1"): 90 for d in (D1, D2, D3)} if net_type == "vlan" else {}
    topo = TopologyView(1, MappingProxyType(switches), MappingProxyType(bindings),
                        MappingProxyType(chassis), MappingProxyType(tun),
                        MappingProxyType(provider))
    return net, ports, compile_all(intent, topo)


def _qos_flows(d) -> dict[tuple, tuple[int, int]]:
    """qos-table flows as {sorted match: (priority, meter rate)}."""
    return {tuple(sorted((m.field, m.value) for m in f.match)): (f.priority,
                                                                d.meters[f.meter].rate_kbps)
            for f in d.flows.values() if f.table == "qos" and f.priority}


def _rules():
    lim, gold, bronze = _id("pol", 5), _id("pol", 6), _id("pol", 7)
    return lim, gold, bronze, [
        QosRule(_id("r", 5), lim, "bandwidth_limit", max_kbps=30000, direction="ingress"),
        QosRule(_id("r", 6), gold, "minimum_bandwidth", min_kbps=20000),
        QosRule(_id("r", 7), bronze, "minimum_bandwidth", min_kbps=6000)]


def test_remote_senders_are_metered_on_the_receivers_chassis_by_tunnel_network_and_mac():
    """The issue's case: gold and bronze on hv1, the limited receiver on hv2."""
    lim, gold, bronze, rules = _rules()
    net, ports, d = multi_host({1: (D2, lim), 2: (D1, gold), 3: (D1, bronze)}, rules)
    caps = _qos_flows(d[D2])
    out = (pl.REG_OUT_PORT, 21)
    prio = pl.QOS.priorities["guarantee"]
    gold_m = tuple(sorted((("in_port", TUNNEL_OFPORT["hv1"]), ("metadata", net.key),
                           ("eth_src", mac(ports[2].mac_address)), out)))
    bronze_m = tuple(sorted((("in_port", TUNNEL_OFPORT["hv1"]), ("metadata", net.key),
                             ("eth_src", mac(ports[3].mac_address)), out)))
    assert caps == {gold_m: (prio, 22000), bronze_m: (prio, 8000),
                    (out,): (pl.QOS.priorities["shared"], 2000)}
    # the senders' own chassis holds no share meters: the receiver's is the only place
    # all traffic into the port meets
    assert not _qos_flows(d[D1]) and not d[D1].meters and not d[D3].meters
    assert d[D2].shaping["if1"].max_bps == 30_000_000


def test_local_and_remote_senders_share_one_computation():
    lim, gold, bronze, rules = _rules()
    net, ports, d = multi_host({1: (D2, lim), 2: (D2, gold), 3: (D3, bronze)}, rules)
    caps = _qos_flows(d[D2])
    out = (pl.REG_OUT_PORT, 21)
    assert caps[tuple(sorted((("in_port", 22), out)))][1] == 22000  # gold, local
    assert caps[tuple(sorted((("in_port", TUNNEL_OFPORT["hv3"]), ("metadata", net.key),
                              ("eth_src", mac(ports[3].mac_address)), out)))][1] == 8000
    assert caps[(out,)][1] == 2000


def test_three_guaranteed_senders_on_three_chassis():
    lim, gold, bronze, rules = _rules()
    silver = _id("pol", 8)
    rules.append(QosRule(_id("r", 8), silver, "minimum_bandwidth", min_kbps=1000))
    _, _, d = multi_host({1: (D2, lim), 2: (D1, gold), 3: (D3, bronze), 4: (D2, silver)},
                         rules)
    rates = sorted(r for _p, r in _qos_flows(d[D2]).values())
    # spare 3000 in three: each guarantee + 1000, the rest 1000
    assert rates == [1000, 2000, 7000, 21000]


def test_senders_that_cannot_reach_the_receiver_take_no_share():
    lim, gold, bronze, rules = _rules()
    # bronze on another network (no router: it cannot reach the receiver)
    _, _, d = multi_host({1: (D2, lim), 2: (D1, gold), 3: (D1, bronze)}, rules,
                         other_net={3})
    assert sorted(r for _p, r in _qos_flows(d[D2]).values()) == [10000, 30000]
    # no tunnel (yet) from the senders' chassis: nothing arrives, nothing is reserved
    _, _, d = multi_host({1: (D2, lim), 2: (D1, gold), 3: (D1, bronze)}, rules, tunnels=False)
    assert not _qos_flows(d[D2])


def test_remote_sender_on_a_vlan_provider_network_arrives_through_the_patch():
    lim, gold, _bronze, rules = _rules()
    net, ports, d = multi_host({1: (D2, lim), 2: (D1, gold)}, rules, net_type="vlan")
    out = (pl.REG_OUT_PORT, 21)
    assert _qos_flows(d[D2])[tuple(sorted((("in_port", 90), ("metadata", net.key),
                                            ("eth_src", mac(ports[2].mac_address)), out)))][
        1] == 30000


def test_a_moved_sender_keeps_its_meter_id_and_its_share():
    lim, gold, bronze, rules = _rules()
    _, _, before = multi_host({1: (D2, lim), 2: (D2, gold), 3: (D1, bronze)}, rules)
    _, _, after = multi_host({1: (D2, lim), 2: (D3, gold), 3: (D1, bronze)}, rules)
    assert before[D2].meters == after[D2].meters  # same ids, same rates
    assert {f.match for f in before[D2].flows.values() if f.table == "qos"} != \
        {f.match for f in after[D2].flows.values() if f.table == "qos"}


def test_compile_is_deterministic_with_remote_senders():
    lim, gold, bronze, rules = _rules()
    where = {1: (D2, lim), 2: (D1, gold), 3: (D3, bronze), 4: (D1, lim)}
    _, _, a = multi_host(where, rules)
    _, _, b = multi_host(where, rules)
    for dpid in a:
        assert a[dpid].flows == b[dpid].flows and a[dpid].meters == b[dpid].meters
    # two limited receivers on two chassis: each has its own meters for the other's senders
    assert _qos_flows(a[D1]) and _qos_flows(a[D2])
