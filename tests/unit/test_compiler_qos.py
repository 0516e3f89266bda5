"""QoS compilation: egress meters, DSCP on port security, share caps for guarantees."""

from __future__ import annotations

import uuid
from types import MappingProxyType

from controller import pipeline as pl
from controller.compiler import compile_switch
from controller.flows import SetField
from controller.intent import FixedIP, Intent, Network, Port, QosPolicy, QosRule
from controller.topology import Binding, SwitchView, TopologyView

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
    assert caps[(("in_port", 21), (pl.REG_OUT_PORT, 20))] == 30000 - 6000  # gold
    assert caps[(("in_port", 22), (pl.REG_OUT_PORT, 20))] == 30000 - 20000  # bronze
    assert caps[((pl.REG_OUT_PORT, 20),)] == 30000 - 26000  # everyone else


def test_no_policy_no_qos_state():
    _, d = world({1: None, 2: None}, [])
    assert not d.meters and not d.shaping
    assert not [f for f in d.flows.values() if f.table == "qos" and f.priority]
