"""Security-group compilation: conntrack ladder, plain rules, remote groups as conjunctions."""

from __future__ import annotations

import uuid
from types import MappingProxyType

from controller import pipeline as pl
from controller.compiler import compile_switch
from controller.compiler.acl import rule_shape
from controller.flows import CT_TRK, Conjunction, Ct, ip4, match
from controller.intent import FixedIP, Intent, Network, Port, SecurityGroup, SecurityGroupRule
from controller.reconciler import diff_flows
from controller.topology import Binding, SwitchView, TopologyView

DPID = 0x5


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"acl-{kind}-{n}"))


NET = Network(_id("net", 1), "p", "n", "vxlan", 5)
WEB, DB = SecurityGroup(_id("sg", 1), "p", "web"), SecurityGroup(_id("sg", 2), "p", "db")


def rule(n: int, sg: SecurityGroup, direction: str, **kw) -> SecurityGroupRule:
    return SecurityGroupRule(_id("rule", n), "p", sg.id, direction, kw.pop("ethertype", "IPv4"),
                             **kw)


def port(n: int, groups: tuple[str, ...], **kw) -> Port:
    return Port(_id("port", n), "p", NET.id, f"p{n}", f"fa:16:3e:00:01:{n:02x}",
                (FixedIP(_id("sub", 1), f"10.0.0.{n}"),), security_groups=groups, **kw)


def world(ports: list[Port], rules: list[SecurityGroupRule]):
    intent = Intent(1, networks=MappingProxyType({NET.id: NET}),
                    ports=MappingProxyType({p.id: p for p in ports}),
                    security_groups=MappingProxyType({WEB.id: WEB, DB.id: DB}),
                    security_group_rules=MappingProxyType({r.id: r for r in rules}))
    bindings = {p.id: Binding(p.id, "hv", "br-int", DPID, 10 + i, f"t{i}")
                for i, p in enumerate(ports)}
    topo = TopologyView(1, MappingProxyType({DPID: SwitchView(DPID, "hv", "br-int")}),
                        MappingProxyType(bindings))
    return compile_switch(intent, topo, DPID)


def acl(desired, table: str):
    return [f for f in desired.flows.values() if f.table == table and f.priority]


def test_port_without_port_security_is_exempt():
    d = world([port(1, (), port_security_enabled=False)], [])
    (ex,) = [f for f in acl(d, "egress_acl") if f.priority == pl.EGRESS_ACL.priorities["exempt"]]
    assert ex.match == match(in_port=10) and ex.goto == "l3"


def test_port_with_no_rule_is_closed_by_default():
    d = world([port(1, (WEB.id,))], [])
    deny = [f for f in acl(d, "ingress_acl") if f.priority == pl.INGRESS_ACL.priorities[
        "default_deny"]]
    assert [f.match for f in deny] == [match(reg7=10)] and deny[0].goto is None


def test_plain_rule_opens_a_port_range_statefully():
    r = rule(1, WEB, "ingress", protocol="tcp", port_range_min=8080, port_range_max=8081)
    d = world([port(1, (WEB.id,))], [r])
    flows = [f for f in acl(d, "ingress_acl") if f.priority == pl.INGRESS_ACL.priorities["rule"]]
    assert len(flows) == 1  # 8080-8081 is one masked match
    f = flows[0]
    fields = {m.field: (m.value, m.mask) for m in f.match}
    assert fields["tcp_dst"] == (8080, 0xFFFE) and fields["reg7"] == (10, None)
    assert fields["ct_state"][0] == CT_TRK  # +trk, not a reply, not invalid
    assert isinstance(f.actions[0], Ct) and f.actions[0].commit and f.goto == "qos"
    assert pl.cookie_owner(f.cookie)[0] == "security_group_rule"


def test_remote_prefix_matches_the_remote_end():
    ssh = rule(2, WEB, "ingress", protocol="tcp", port_range_min=22, port_range_max=22,
               remote_ip_prefix="192.168.77.0/24")
    shape = rule_shape(ssh)
    fields = {m.field: (m.value, m.mask) for m in shape.fields[0]}
    assert fields["ipv4_src"] == (ip4("192.168.77.0"), 0xFFFFFF00)
    out = rule(3, WEB, "egress", remote_ip_prefix="10.9.0.0/16")
    assert "ipv4_dst" in {m.field for m in rule_shape(out).fields[0]}


def test_remote_group_is_members_plus_rules_not_their_product():
    web = [port(i, (WEB.id,)) for i in range(1, 41)]
    db = [port(i, (DB.id,)) for i in range(41, 61)]
    r = rule(4, DB, "ingress", protocol="tcp", port_range_min=3306, port_range_max=3306,
             remote_group_id=WEB.id)
    d = world(web + db, [r])
    conj = [f for f in acl(d, "ingress_acl")
            if f.priority == pl.INGRESS_ACL.priorities["rule_conj"]]
    clause1 = [f for f in conj if any(isinstance(a, Conjunction) and a.clause == 1
                                      for a in f.actions)]
    clause2 = [f for f in conj if any(isinstance(a, Conjunction) and a.clause == 2
                                      for a in f.actions)]
    assert len(clause1) == 20 and len(clause2) == 40  # db ports, web members
    assert len(conj) == 20 + 40 + 1  # naive product would be 20 * 40


def test_a_member_joining_changes_only_its_own_flows():
    r = rule(5, DB, "ingress", protocol="tcp", port_range_min=3306, port_range_max=3306,
             remote_group_id=WEB.id)
    base = [port(1, (DB.id,)), port(2, (WEB.id,)), port(3, ())]
    before = world(base, [r])
    joined = [base[0], base[1], port(3, (WEB.id,))]
    after = world(joined, [r])
    diff = diff_flows(dict(before.flows), after.flows)
    owner = pl.cookie(pl.Owner.PORT, joined[2].key)
    assert diff.adds and all(f.cookie == owner for f in diff.adds + diff.deletes)


def test_two_rules_naming_one_remote_group_share_member_flows():
    r1 = rule(6, DB, "ingress", protocol="tcp", port_range_min=3306, port_range_max=3306,
              remote_group_id=WEB.id)
    r2 = rule(7, DB, "ingress", protocol="tcp", port_range_min=5432, port_range_max=5432,
              remote_group_id=WEB.id)
    d = world([port(1, (DB.id,)), port(2, (WEB.id,))], [r1, r2])
    member = [f for f in acl(d, "ingress_acl")
              if ("ipv4_src", ip4("10.0.0.2")) in {(m.field, m.value) for m in f.match}]
    assert len(member) == 1 and len(member[0].actions) == 2


def test_conntrack_ladder_is_present_once_per_switch():
    d = world([port(1, (WEB.id,)), port(2, (WEB.id,))], [])
    track = [f for f in acl(d, "egress_acl") if f.priority == pl.EGRESS_ACL.priorities["track"]]
    assert len(track) == 2  # IPv4 and IPv6
    assert all(isinstance(f.actions[0], Ct) and f.actions[0].table == "egress_acl"
               for f in track)


def test_classify_carries_the_networks_zone():
    d = world([port(1, (WEB.id,))], [])
    (cls,) = [f for f in d.flows.values() if f.table == "classify" and f.priority]
    zone = [a for a in cls.actions if getattr(a, "field", None) == pl.REG_CT_ZONE]
    assert zone and 1 <= zone[0].value <= pl.CT_ZONE_SPAN
