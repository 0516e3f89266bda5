"""The compiler as a pure function: isolation, port security, flooding, minimal diffs."""

from __future__ import annotations

import uuid
from types import MappingProxyType

import pytest

from controller import pipeline as pl
from controller.compiler import compile_switch
from controller.flows import Output, Resubmit, SetField, ip4, mac, match
from controller.intent import FixedIP, Intent, Network, Port
from controller.reconciler import diff_flows
from controller.topology import Binding, SwitchView, TopologyView

DPID = 0xABC


def _id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-test-{n}"))


def net(n: int, project: str = "p1", seg: int = 100) -> Network:
    return Network(id=_id(n), project_id=project, name=f"net{n}", network_type="vxlan",
                   segmentation_id=seg)


def port(n: int, network: Network, ip: str, macaddr: str, **kw) -> Port:
    return Port(id=_id(1000 + n), project_id=network.project_id, network_id=network.id,
                name=f"p{n}", mac_address=macaddr,
                fixed_ips=(FixedIP(_id(500), ip),), **kw)


def make(ports: list[Port], nets: list[Network], ofports: dict[str, int], gen: int = 1):
    intent = Intent(generation=gen,
                    networks=MappingProxyType({n.id: n for n in nets}),
                    ports=MappingProxyType({p.id: p for p in ports}))
    bindings = {pid: Binding(pid, "hv1", "br-int", DPID, ofp, f"tap{ofp}")
                for pid, ofp in ofports.items()}
    topo = TopologyView(1, MappingProxyType({DPID: SwitchView(DPID, "hv1", "br-int")}),
                        MappingProxyType(bindings))
    return intent, topo


@pytest.fixture
def two_tenants():
    a, b = net(1, "pa", 101), net(2, "pb", 102)
    pa1 = port(1, a, "10.0.0.5", "fa:16:3e:00:00:01")
    pa2 = port(2, a, "10.0.0.6", "fa:16:3e:00:00:02")
    pb1 = port(3, b, "10.0.0.5", "fa:16:3e:00:00:03")  # same IP as pa1, other tenant
    pb2 = port(4, b, "10.0.0.6", "fa:16:3e:00:00:04")
    ofports = {pa1.id: 1, pa2.id: 2, pb1.id: 3, pb2.id: 4}
    return (a, b, pa1, pa2, pb1, pb2), make([pa1, pa2, pb1, pb2], [a, b], ofports)


def flows_of(desired, table):
    return [f for f in desired.flows.values() if f.table == table]


def test_same_input_same_output(two_tenants):
    _, (intent, topo) = two_tenants
    assert compile_switch(intent, topo, DPID) == compile_switch(intent, topo, DPID)


def test_each_port_is_classified_into_its_own_network(two_tenants):
    (a, b, pa1, pa2, pb1, pb2), (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    classify = {f.match: f for f in flows_of(desired, "classify")}
    assert classify[match(in_port=1)].write_metadata[0] == a.key
    assert classify[match(in_port=3)].write_metadata[0] == b.key
    assert a.key != b.key


def test_overlapping_ips_never_cross_networks(two_tenants):
    """Every flow after classify is scoped to one network's metadata, and a network's
    lookups only ever deliver to its own ports."""
    (a, b, pa1, pa2, pb1, pb2), (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    ofports_of = {a.key: {1, 2}, b.key: {3, 4}}
    for f in flows_of(desired, "l2_lookup"):
        meta = dict((m.field, m.value) for m in f.match).get("metadata")
        if f.priority == 0:
            continue
        assert meta in ofports_of
        targets = {a.value for a in f.actions if isinstance(a, SetField)}
        assert targets <= ofports_of[meta], f
    for f in flows_of(desired, "arp_responder"):
        if f.priority == 0 or f.goto is not None:  # the miss, and duplicate address
            continue                                # detection passing on
        fields = dict((m.field, m.value) for m in f.match)
        # the reply's source MAC belongs to a port of the network being asked
        hw = next(a.value for a in f.actions if isinstance(a, SetField) and a.field == "eth_src")
        owner = {mac(p.mac_address): p.network_id for p in (pa1, pa2, pb1, pb2)}[hw]
        assert intent.networks[owner].key == fields["metadata"]


def test_port_security_pins_mac_and_ip(two_tenants):
    (a, b, pa1, *_), (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    allowed = [f for f in flows_of(desired, "port_security")
               if f.goto and dict((m.field, m.value) for m in f.match).get("in_port") == 1]
    assert allowed
    for f in allowed:
        fields = dict((m.field, m.value) for m in f.match)
        assert fields["eth_src"] == mac(pa1.mac_address)
    v4 = [f for f in allowed if dict((m.field, m.value) for m in f.match).get("eth_type") == 0x800]
    assert [dict((m.field, m.value) for m in f.match)["ipv4_src"] for f in v4] == [ip4("10.0.0.5")]
    arp = [f for f in allowed if dict((m.field, m.value) for m in f.match).get("eth_type") == 0x806]
    assert dict((m.field, m.value) for m in arp[0].match)["arp_sha"] == mac(pa1.mac_address)


def test_port_security_disabled_is_exempt():
    a = net(1)
    p = port(1, a, "10.0.0.5", "fa:16:3e:00:00:01", port_security_enabled=False)
    intent, topo = make([p], [a], {p.id: 7})
    ps = [f for f in flows_of(compile_switch(intent, topo, DPID), "port_security")
          if f.priority]
    assert len(ps) == 1 and ps[0].match == match(in_port=7) and ps[0].goto == "arp_responder"


def test_flood_reaches_only_the_networks_local_ports(two_tenants):
    (a, b, *_), (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    flood_prio = pl.L2_LOOKUP.priorities["flood"]
    floods = {dict((m.field, m.value) for m in f.match)["metadata"]: f
              for f in flows_of(desired, "l2_lookup") if f.priority == flood_prio}
    for key, expected in ((a.key, [1, 2]), (b.key, [3, 4])):
        acts = floods[key].actions
        assert [x.value for x in acts if isinstance(x, SetField)] == expected
        assert all(x.table == "ingress_acl" for x in acts if isinstance(x, Resubmit))


def test_output_table_delivers_to_the_chosen_port(two_tenants):
    _, (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    outs = {f.match: f.actions for f in flows_of(desired, "output") if f.priority}
    assert outs[match(reg7=3)] == (Output(3),)


def test_unchanged_intent_diffs_to_nothing(two_tenants):
    _, (intent, topo) = two_tenants
    first = compile_switch(intent, topo, DPID)
    again = compile_switch(intent, topo, DPID)
    assert not diff_flows(dict(first.flows), again.flows)


def test_deleting_a_port_removes_exactly_its_flows(two_tenants):
    (a, b, pa1, pa2, pb1, pb2), (intent, topo) = two_tenants
    before = compile_switch(intent, topo, DPID)
    intent2, topo2 = make([pa1, pb1, pb2], [a, b], {pa1.id: 1, pb1.id: 3, pb2.id: 4})
    after = compile_switch(intent2, topo2, DPID)
    diff = diff_flows(dict(before.flows), after.flows)
    gone = pl.cookie(pl.Owner.PORT, pa2.key)
    assert diff.deletes and all(f.cookie == gone for f in diff.deletes)
    assert {f.cookie for f in before.flows.values() if f.cookie == gone} == {gone}
    assert len(diff.deletes) == sum(1 for f in before.flows.values() if f.cookie == gone)
    # the only re-added flow is network a's flood set, which lost a member
    assert [f.cookie for f in diff.adds] == [pl.cookie(pl.Owner.NETWORK, a.key)]


def test_admin_down_port_gets_no_flows():
    a = net(1)
    p = port(1, a, "10.0.0.5", "fa:16:3e:00:00:01", admin_state_up=False)
    intent, topo = make([p], [a], {p.id: 7})
    desired = compile_switch(intent, topo, DPID)
    assert all(f.cookie != pl.cookie(pl.Owner.PORT, p.key) for f in desired.flows.values()
               if f.table != "arp_responder")


def test_pipeline_refuses_undeclared_fields_and_jumps():
    with pytest.raises(pl.PipelineError):
        pl.CLASSIFY.flow("port", match(ipv4_src=1), goto="port_security")
    with pytest.raises(pl.PipelineError):
        pl.PORT_SECURITY.flow("allow", match(in_port=1), goto="output")
    with pytest.raises(pl.PipelineError):
        pl.OUTPUT.flow("deliver", match(reg7=1), actions=(Resubmit("classify"),))
    with pytest.raises(pl.PipelineError):
        pl.OUTPUT.flow("no-such-priority", match(reg7=1))


def test_every_table_has_a_miss_flow(two_tenants):
    _, (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    for table in pl.PIPELINE:
        miss = desired.flows[(table.name, 0, ())]
        assert (miss.goto is None) == table.miss_drops


def test_cookies_name_their_owner(two_tenants):
    (a, b, pa1, *_), (intent, topo) = two_tenants
    desired = compile_switch(intent, topo, DPID)
    classify = desired.flows[("classify", pl.CLASSIFY.priorities["port"], match(in_port=1))]
    assert pl.cookie_owner(classify.cookie) == ("port", pa1.key)
