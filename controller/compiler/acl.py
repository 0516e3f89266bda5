"""Stateful security groups: conntrack in both ACL tables, conjunctions for remote groups.

The model is Neutron's OVS firewall, made explicit:
- Every IP packet is sent through conntrack once per table, in its network's zone
  (held in REG_CT_ZONE since classify, so no ACL flow needs to know the network).
- Replies and related traffic of a committed connection pass; invalid packets and
  packets of revoked connections drop.
- Everything else, established or new, is judged by the rules, so removing a rule
  takes effect on live connections too: an established packet that no rule allows
  any more marks its connection CT_MARK_REVOKED and is dropped, and so are its
  replies from then on.
- A rule with a remote group compiles to a conjunctive match: one clause flow per
  local port of the group the rule belongs to, one per address of the remote
  group's members, and one conj_id flow. Flow count grows with members plus rules,
  and a member joining or leaving changes only the flows that carry its addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Union

from controller import pipeline as pl
from controller.flows import (
    CT_EST,
    CT_INV,
    CT_REL,
    CT_RPL,
    CT_TRK,
    Conjunction,
    Ct,
    Flow,
    Match,
    MatchField,
    match,
)
from controller.flows_ranges import port_range_masks
from controller.intent import Intent, Port, SecurityGroupRule

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
IPPROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58}
ND_TYPES = (133, 134, 135, 136)  # router/neighbour solicitation and advertisement

Side = str  # "egress" (the packet leaves the VM: in_port) | "ingress" (reg7 = out port)


def _table(direction: Side) -> pl.Table:
    return pl.EGRESS_ACL if direction == "egress" else pl.INGRESS_ACL


def _next(direction: Side) -> str:
    return _table(direction).next_tables[0]


def _port_field(direction: Side) -> str:
    return "in_port" if direction == "egress" else pl.REG_OUT_PORT


def _zone_ct(**kw: object) -> Ct:
    return Ct(zone_src=pl.REG_CT_ZONE, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- fixed flows
def base_flows() -> tuple[Flow, ...]:
    """The per-table ladder every switch with filtered ports carries (owner: pipeline)."""
    owner = pl.cookie(pl.Owner.PIPELINE, pl.ACL_LADDER_KEY)
    out: list[Flow] = []
    for direction in ("egress", "ingress"):
        t, nxt = _table(direction), _next(direction)
        out.append(t.flow("neighbor", match(eth_type=ETH_ARP), goto=nxt, cookie=owner))
        for nd in ND_TYPES:
            out.append(t.flow("neighbor", match(eth_type=ETH_IPV6, ip_proto=58,
                                                icmpv6_type=nd), goto=nxt, cookie=owner))
        for eth in (ETH_IPV4, ETH_IPV6):
            out.append(t.flow("track", match(eth_type=eth, ct_state=(0, CT_TRK)),
                              actions=(_zone_ct(table=t.name),), cookie=owner))
            out.append(t.flow("invalid", match(eth_type=eth, ct_state=(CT_TRK | CT_INV,
                                                                       CT_TRK | CT_INV)),
                              cookie=owner))
            out.append(t.flow("invalid", match(eth_type=eth, ct_state=(CT_TRK, CT_TRK | CT_INV),
                                               ct_mark=(pl.CT_MARK_REVOKED,
                                                        pl.CT_MARK_REVOKED)),
                              cookie=owner))
            out.append(t.flow("reply", match(eth_type=eth,
                                             ct_state=(CT_TRK | CT_EST | CT_RPL,
                                                       CT_TRK | CT_EST | CT_RPL | CT_INV)),
                              goto=nxt, cookie=owner))
            out.append(t.flow("reply", match(eth_type=eth,
                                             ct_state=(CT_TRK | CT_REL, CT_TRK | CT_REL | CT_INV)),
                              goto=nxt, cookie=owner))
    return tuple(out)


# ---------------------------------------------------------------- per port
@lru_cache(maxsize=65536)
def port_guard_flows(port: Port, ofport: int) -> tuple[Flow, ...]:
    """Exempt a port without port security; else close the port by default."""
    owner = pl.cookie(pl.Owner.PORT, port.key)
    out = []
    for direction in ("egress", "ingress"):
        t, field = _table(direction), _port_field(direction)
        if not port.port_security_enabled:
            out.append(t.flow("exempt", match(**{field: ofport}), goto=_next(direction),
                              cookie=owner))
            continue
        for eth in (ETH_IPV4, ETH_IPV6):
            out.append(t.flow(
                "revoke", match(**{field: ofport}, eth_type=eth,
                                ct_state=(CT_TRK | CT_EST, CT_TRK | CT_EST | CT_RPL)),
                actions=(_zone_ct(commit=True, set_mark=pl.CT_MARK_REVOKED,
                                  mark_mask=pl.CT_MARK_REVOKED),),
                cookie=owner))
        out.append(t.flow("default_deny", match(**{field: ofport}), cookie=owner))
    return tuple(out)


# ---------------------------------------------------------------- rules
@dataclass(frozen=True)
class RuleShape:
    """The L3/L4 part of a rule, independent of which port it guards."""

    eth_type: int
    fields: tuple[tuple[MatchField, ...], ...]  # alternatives (port-range pieces)


def rule_shape(rule: SecurityGroupRule) -> Optional[RuleShape]:
    eth = ETH_IPV6 if rule.ethertype == "IPv6" else ETH_IPV4
    proto = _protocol_number(rule.protocol, eth)
    base: dict[str, Union[int, tuple[int, int]]] = {}
    if proto is not None:
        base["ip_proto"] = proto
    if rule.remote_ip_prefix:
        net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        if (net.version == 6) != (eth == ETH_IPV6):
            return None
        field = _addr_field(rule.direction, eth)
        base[field] = (int(net.network_address), int(net.netmask))
    alternatives: list[dict[str, Union[int, tuple[int, int]]]] = [base]
    if proto in (6, 17) and rule.port_range_min is not None:
        name = "tcp_dst" if proto == 6 else "udp_dst"
        hi = rule.port_range_max if rule.port_range_max is not None else rule.port_range_min
        alternatives = [{**base, name: vm} for vm in port_range_masks(rule.port_range_min, hi)]
    elif proto in (1, 58) and rule.port_range_min is not None:
        prefix = "icmpv4" if proto == 1 else "icmpv6"
        alt = {**base, f"{prefix}_type": rule.port_range_min}
        if rule.port_range_max is not None:
            alt[f"{prefix}_code"] = rule.port_range_max
        alternatives = [alt]
    return RuleShape(eth, tuple(match(eth_type=eth, **a) for a in alternatives))


def _protocol_number(protocol: Optional[str], eth: int) -> Optional[int]:
    if protocol in (None, "", "any"):
        return None
    assert protocol is not None
    if protocol.isdigit():
        number = int(protocol)
    else:
        number = IPPROTO[protocol.lower()]
    if number == 1 and eth == ETH_IPV6:
        return 58  # Neutron accepts icmp on IPv6 rules and means ICMPv6
    return number


def _addr_field(direction: str, eth: int) -> str:
    """The remote end: destination when leaving the VM, source when arriving."""
    fam = "ipv6" if eth == ETH_IPV6 else "ipv4"
    return f"{fam}_dst" if direction == "egress" else f"{fam}_src"


def _with(m: Match, **fields: Union[int, tuple[int, int]]) -> Match:
    extra = match(**fields)
    return tuple(sorted({*m, *extra}))


@lru_cache(maxsize=262144)
def plain_rule_flows(rule: SecurityGroupRule, ofport: int) -> tuple[Flow, ...]:
    """A rule without a remote group, applied to one local port."""
    shape = rule_shape(rule)
    if shape is None:
        return ()
    t = _table(rule.direction)
    owner = pl.cookie(pl.Owner.SECURITY_GROUP_RULE, _rule_key(rule))
    state = (CT_TRK, CT_TRK | CT_INV | CT_RPL)
    return tuple(
        t.flow("rule", _with(alt, ct_state=state, **{_port_field(rule.direction): ofport}),
               actions=(_zone_ct(commit=True),), goto=_next(rule.direction), cookie=owner)
        for alt in shape.fields)


def _rule_key(rule: SecurityGroupRule) -> int:
    from controller.intent import object_key

    return object_key(rule.id)


def conj_rule_flows(rule: SecurityGroupRule, conj_id: int, local_ofports: Iterable[int]
                    ) -> list[Flow]:
    """Clause 1 (the guarded local ports, with the rule's L4 shape) and the conj_id flow."""
    shape = rule_shape(rule)
    if shape is None:
        return []
    t = _table(rule.direction)
    owner = pl.cookie(pl.Owner.SECURITY_GROUP_RULE, _rule_key(rule))
    field = _port_field(rule.direction)
    out = [t.flow("rule_conj", _with(alt, **{field: ofport}),
                  actions=(Conjunction(conj_id, 1, 2),), cookie=owner)
           for ofport in sorted(set(local_ofports)) for alt in shape.fields]
    out.append(t.flow("rule_conj", match(conj_id=conj_id, eth_type=shape.eth_type,
                                         ct_state=(CT_TRK, CT_TRK | CT_INV | CT_RPL)),
                      actions=(_zone_ct(commit=True),), goto=_next(rule.direction),
                      cookie=owner))
    return out


@lru_cache(maxsize=262144)
def member_clause_flows(member: Port, direction: str, eth: int, conj_ids: tuple[int, ...]
                        ) -> tuple[Flow, ...]:
    """Clause 2: one remote-group member's addresses, for every conjunction that names it.

    Owned by the member port: a port joining or leaving a group changes only these.
    """
    t = _table(direction)
    owner = pl.cookie(pl.Owner.PORT, member.key)
    out = []
    for fip in member.fixed_ips:
        addr = ipaddress.ip_address(fip.ip_address)
        if (addr.version == 6) != (eth == ETH_IPV6):
            continue
        out.append(t.flow(
            "rule_conj", match(eth_type=eth, **{_addr_field(direction, eth): int(addr)}),
            actions=tuple(Conjunction(c, 2, 2) for c in conj_ids), cookie=owner))
    return tuple(out)


# ---------------------------------------------------------------- assembly
class GroupIndex:
    """Security groups' rules and members, indexed once per compile."""

    def __init__(self, intent: Intent) -> None:
        self.rules: dict[str, list[SecurityGroupRule]] = {}
        for rule in sorted(intent.security_group_rules.values(), key=lambda r: r.id):
            self.rules.setdefault(rule.security_group_id, []).append(rule)
        self.members: dict[str, list[Port]] = {}
        for port in sorted(intent.ports.values(), key=lambda p: p.id):
            if not port.port_security_enabled or not port.admin_state_up:
                continue
            for sg in port.security_groups:
                self.members.setdefault(sg, []).append(port)


def conj_id_of(rule: SecurityGroupRule) -> int:
    """The rule's conjunction id: allocated by the store, unique among all rules.

    So it is the same on every switch and never moves when another rule appears.
    0 (an Intent built by hand) falls back to the key's low 32 bits, unprobed: two
    hand-built rules colliding there is a test-only situation.
    """
    return rule.conj_id or (_rule_key(rule) & pl.CONJ_ID_MASK) or 1


def conj_id_for(rule: SecurityGroupRule, taken: set[int]) -> int:
    """`conj_id_of(rule)`, noted in `taken` (kept for callers that track ids)."""
    cid = conj_id_of(rule)
    taken.add(cid)
    return cid


def switch_acl_flows(local: Mapping[int, Port], index: GroupIndex) -> list[Flow]:
    """All ACL flows for one switch: `local` maps ofport -> bound port."""
    if not local:
        return []
    out: list[Flow] = list(base_flows())
    ports_by_group: dict[str, list[int]] = {}
    for ofport, port in sorted(local.items()):
        out.extend(port_guard_flows(port, ofport))
        if port.port_security_enabled:
            for sg in port.security_groups:
                ports_by_group.setdefault(sg, []).append(ofport)
    member_conjs: dict[tuple[str, str, int], list[int]] = {}  # (remote sg, dir, eth) -> ids
    for sg in sorted(ports_by_group):
        ofports = ports_by_group[sg]
        for rule in index.rules.get(sg, ()):
            if rule.remote_group_id is None:
                for ofport in ofports:
                    out.extend(plain_rule_flows(rule, ofport))
                continue
            shape = rule_shape(rule)
            if shape is None:
                continue
            cid = conj_id_of(rule)
            out.extend(conj_rule_flows(rule, cid, ofports))
            member_conjs.setdefault((rule.remote_group_id, rule.direction, shape.eth_type),
                                    []).append(cid)
    # A member may be in several remote groups: one clause flow per address, naming
    # every conjunction that wants it (identical matches must be one flow).
    per_member: dict[tuple[str, str, int], set[int]] = {}
    members: dict[str, Port] = {}
    for (remote_sg, direction, eth), cids in member_conjs.items():
        for member in index.members.get(remote_sg, ()):
            members[member.id] = member
            per_member.setdefault((member.id, direction, eth), set()).update(cids)
    for (member_id, direction, eth), wanted in sorted(per_member.items()):
        out.extend(member_clause_flows(members[member_id], direction, eth,
                                       tuple(sorted(wanted))))
    return merge_flows(out)


def merge_flows(flows: Iterable[Flow]) -> list[Flow]:
    """Make flows that share an OpenFlow key into one.

    Two rules of the same shape guarding one port (from two groups, say) give the
    same match: they mean the same, keep the first owner. Conjunctive clauses with
    the same match carry the union of their conjunctions.
    """
    merged: dict[tuple, Flow] = {}
    for f in flows:
        old = merged.get(f.key)
        if old is None or old == f:
            merged[f.key] = f
            continue
        if all(isinstance(a, Conjunction) for a in (*old.actions, *f.actions)):
            acts = tuple(sorted(set(old.actions) | set(f.actions),
                                key=lambda a: (a.conj_id, a.clause)))  # type: ignore[union-attr]
            merged[f.key] = Flow(f.table, f.priority, f.match, acts, f.goto, f.write_metadata,
                                 f.meter, min(old.cookie, f.cookie))
        elif (old.actions, old.goto) == (f.actions, f.goto):
            merged[f.key] = old if old.cookie <= f.cookie else f
        else:
            raise ValueError(f"security group flows disagree on {f.key}")
    return list(merged.values())
