"""/v2.0/security-groups and /v2.0/security-group-rules, with Neutron's semantics.

- Every project has a `default` group, made on first need (listing groups or rules,
  creating a group or a port) inside the write transaction that needs it, so two
  concurrent first requests cannot make two. Its id is derived from the project id:
  should a second controller on the same database race us, its insert of the same
  row uuid fails instead of making a twin. It holds Neutron's four default rules:
  egress IPv4/IPv6 to anywhere, ingress IPv4/IPv6 from members of the group itself.
- Every other new group gets Neutron's two egress-anywhere rules.
- No other group may be called `default`; the default group cannot be renamed, and
  only an admin may delete it.
- Rules are immutable (PUT is 400); adding or deleting one bumps its group's
  revision_number, as Neutron's revision plugin does. Deleting a group deletes its
  rules and the rules of other groups naming it as remote group (Neutron's cascade).
- Protocols are tcp, udp, icmp, icmpv6 / ipv6-icmp, or a number 0-255. On IPv6 rules
  icmp/icmpv6 become `ipv6-icmp` and 1 becomes 58, as Neutron canonicalises them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid as uuidlib
from typing import Any, Optional

from webob import Request

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import (
    BadRequest,
    InvalidInput,
    NotFound,
    bad_request,
    conflict,
    not_found,
)
from controller.rest.policy import owner_for_create, owns
from controller.rest.resource import Resource, ViewContext, now
from controller.rest.snapshot_index import per_snapshot
from controller.rest.validate import (
    Attr,
    boolean,
    check_item,
    enum,
    in_range,
    integer,
    optional,
    parse_network,
    resource_items,
    string,
    uuid_str,
)
from controller.store.txn import TxnHelper

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"
ETHERTYPES = ("IPv4", "IPv6")
DIRECTIONS = ("ingress", "egress")
# Names the flow compiler knows; any other protocol is given by number.
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58}
PORT_PROTOCOLS = (6, 17)  # protocols whose rules may carry a port range
ICMP_PROTOCOLS = (1, 58)  # port_range_min/max are the ICMP type/code
IPV6_ONLY_PROTOCOLS = (41, 43, 44, 58, 59, 60)  # Neutron refuses these on IPv4 rules
ANY_PREFIXES = ("0.0.0.0/0", "::/0")
_DEFAULT_NS = uuidlib.UUID("6c6f6f6d-7367-4000-8000-64656661756c")  # "loom" "sg" "defaul"


# -- converters -----------------------------------------------------------------------
def protocol(value: Any) -> Optional[str]:
    """Neutron's convert_protocol: a known name (lower-cased) or a number 0-255, as a string.

    null, "any" and 0 all mean any protocol and are stored as null.
    """
    supported = [None, *PROTOCOL_NUMBERS]
    invalid = InvalidInput(
        f"Security group rule protocol {value} not supported. Only protocol values "
        f"{supported} and integer representations [0 to 255] are supported."
    )
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text == "any":
            return None
        if text in PROTOCOL_NUMBERS:
            return text
        if not text.isdigit():
            raise invalid
        number = int(text)
    else:
        raise invalid
    if not 0 <= number <= 255:
        raise invalid
    return None if number == 0 else str(number)


def ethertype(value: Any) -> str:
    """IPv4 | IPv6, any case (Neutron's convert_ethertype_to_case_insensitive)."""
    if isinstance(value, str):
        for known in ETHERTYPES:
            if known.lower() == value.strip().lower():
                return known
    raise InvalidInput(f"'{value}' is not in {list(ETHERTYPES)}")


def ip_prefix(value: Any) -> str:
    """A CIDR or a bare address (a /32 or /128), normalised to its network address."""
    return str(parse_network(value, strict=False, what="IP prefix"))


def protocol_number(name: Optional[str]) -> Optional[int]:
    if name is None:
        return None
    return PROTOCOL_NUMBERS.get(name) or int(name)


def default_group_id(project_id: str) -> str:
    return str(uuidlib.uuid5(_DEFAULT_NS, project_id))


# -- the default group -------------------------------------------------------------------
def find_default(intent: model.Intent, project_id: str) -> Optional[model.SecurityGroup]:
    preferred = intent.security_groups.get(default_group_id(project_id))
    if preferred is not None and preferred.project_id == project_id:
        return preferred
    # the lowest id if several: mappings are not in id order (store/snapshot.py)
    return min((g for g in intent.security_groups.values()
                if g.project_id == project_id and g.name == DEFAULT_NAME),
               key=lambda g: g.id, default=None)


def ensure_default_group(helper: TxnHelper, project_id: str) -> str:
    """The id of the project's default group, which this transaction creates if missing."""
    existing = find_default(helper.current(), project_id)
    if existing is not None:
        return existing.id
    stamp = now()
    group = model.SecurityGroup(
        id=default_group_id(project_id),
        project_id=project_id,
        name=DEFAULT_NAME,
        description=DEFAULT_DESCRIPTION,
        stateful=True,
        created_at=stamp,
        updated_at=stamp,
        revision_number=1,
    )
    helper.put(group)
    _put_initial_rules(helper, group, default=True)
    return group.id


def _put_initial_rules(helper: TxnHelper, group: model.SecurityGroup, *, default: bool) -> None:
    """Neutron's rules for a new group: egress anywhere, plus intra-group ingress for `default`."""
    for eth in ETHERTYPES:
        directions = [("ingress", group.id), ("egress", None)] if default else [("egress", None)]
        for direction, remote_group in directions:
            helper.put(
                model.SecurityGroupRule(
                    id=helper.new_id(),
                    project_id=group.project_id,
                    security_group_id=group.id,
                    direction=direction,
                    ethertype=eth,
                    remote_group_id=remote_group,
                    created_at=group.created_at,
                    updated_at=group.created_at,
                    revision_number=1,
                )
            )


def default_group_needed(
    resource: Resource, request: Request, principal: Principal, intent: model.Intent
) -> Optional[str]:
    """The project whose default group listing `resource` must create first, if any.

    Neutron makes it for the caller's project, or for the project an admin filters on.
    """
    if not isinstance(resource, (SecurityGroups, SecurityGroupRules)):
        return None
    project = principal.project_id
    if principal.is_admin:
        wanted = request.GET.getall("project_id") or request.GET.getall("tenant_id")
        if wanted:
            project = wanted[0]
    if not project or find_default(intent, project) is not None:
        return None
    return project


# -- per-snapshot index: rules by group ------------------------------------------------
@per_snapshot
def rules_by_group(intent: model.Intent) -> dict[str, list[model.SecurityGroupRule]]:
    out: dict[str, list[model.SecurityGroupRule]] = {}
    for rule in intent.security_group_rules.values():
        out.setdefault(rule.security_group_id, []).append(rule)
    for rules in out.values():
        rules.sort(key=lambda r: (r.created_at, r.id))
    return out


def rule_view(r: model.SecurityGroupRule, intent: model.Intent) -> dict[str, Any]:
    group = intent.security_groups.get(r.security_group_id)
    return {
        "id": r.id,
        "project_id": r.project_id,
        "tenant_id": r.project_id,
        "security_group_id": r.security_group_id,
        "direction": r.direction,
        "ethertype": r.ethertype,
        "protocol": r.protocol,
        "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max,
        "remote_ip_prefix": r.remote_ip_prefix,
        "normalized_cidr": r.remote_ip_prefix,
        "remote_group_id": r.remote_group_id,
        "remote_address_group_id": None,
        "belongs_to_default_sg": group is not None and group.name == DEFAULT_NAME,
        "description": r.description,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "revision_number": r.revision_number,
    }


def _bump(helper: TxnHelper, group_id: str, stamp: str) -> None:
    group = helper.get(model.SecurityGroup, group_id)
    if group is not None:
        helper.put(
            dataclasses.replace(group, updated_at=stamp, revision_number=group.revision_number + 1)
        )


# -- /v2.0/security-groups --------------------------------------------------------------
A = Attr
GROUP_ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("name", string(), default=""),
        A("description", string(), default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("stateful", boolean, default=True),
        A("shared", boolean, post=False, put=False),
        A("security_group_rules", string(), post=False, put=False, filter=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
    )
}


def _check_group_item(item: dict[str, Any]) -> dict[str, Any]:
    name = item.get("name")
    if isinstance(name, str) and name.strip().lower() == DEFAULT_NAME:
        raise conflict(
            "SecurityGroupDefaultAlreadyExists", "Default security group already exists."
        )
    if item.get("stateful") is False:
        raise InvalidInput("stateless security groups (stateful=false) are not supported")
    return item


class SecurityGroups(Resource):
    kind, singular, plural, intent_attr = (
        "SecurityGroup",
        "security_group",
        "security_groups",
        "security_groups",
    )
    attrs = GROUP_ATTRS

    def visible(self, principal: Principal, obj: model.SecurityGroup, intent: model.Intent) -> bool:
        return owns(principal, obj)

    def may_modify(
        self, principal: Principal, obj: model.SecurityGroup, intent: model.Intent
    ) -> bool:
        return owns(principal, obj)

    def view(self, g: model.SecurityGroup, ctx: ViewContext) -> dict[str, Any]:
        rules = rules_by_group(ctx.intent).get(g.id, [])
        return {
            "id": g.id,
            "name": g.name,
            "description": g.description,
            "project_id": g.project_id,
            "tenant_id": g.project_id,
            "stateful": g.stateful,
            "shared": False,
            "security_group_rules": [rule_view(r, ctx.intent) for r in rules],
            "tags": [],
            "created_at": g.created_at,
            "updated_at": g.updated_at,
            "revision_number": g.revision_number,
        }

    def parse_create(self, request: Request) -> tuple[list[dict[str, Any]], bool]:
        items, bulk = super().parse_create(request)
        return [_check_group_item(i) for i in items], bulk

    def parse_update(self, request: Request) -> dict[str, Any]:
        return _check_group_item(super().parse_update(request))

    def create(
        self, principal: Principal, item: dict[str, Any], helper: TxnHelper
    ) -> model.SecurityGroup:
        project = owner_for_create(principal, item, "create_security_group")
        ensure_default_group(helper, project)
        stamp = now()
        group = model.SecurityGroup(
            id=helper.new_id(),
            project_id=project,
            name=item.get("name", ""),
            description=item.get("description", ""),
            stateful=True,
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
        )
        helper.put(group)
        _put_initial_rules(helper, group, default=False)
        return group

    def update(
        self,
        principal: Principal,
        group: model.SecurityGroup,
        changes: dict[str, Any],
        helper: TxnHelper,
    ) -> model.SecurityGroup:
        if group.name == DEFAULT_NAME and "name" in changes:
            raise conflict(
                "SecurityGroupCannotUpdateDefault", "Updating default security group not allowed."
            )
        updated = dataclasses.replace(
            group,
            name=changes.get("name", group.name),
            description=changes.get("description", group.description),
        )
        if updated == group:
            return group
        updated = dataclasses.replace(
            updated, updated_at=now(), revision_number=group.revision_number + 1
        )
        helper.put(updated)
        return updated

    def delete(self, principal: Principal, group: model.SecurityGroup, helper: TxnHelper) -> None:
        intent = helper.current()
        if any(group.id in p.security_groups for p in intent.ports.values()):
            raise conflict("SecurityGroupInUse", f"Security Group {group.id} in use.")
        if group.name == DEFAULT_NAME and not principal.is_admin:
            raise conflict(
                "SecurityGroupCannotRemoveDefault",
                "Insufficient rights for removing default security group.",
            )
        stamp = now()
        touched: set[str] = set()
        for rule in intent.security_group_rules.values():
            if rule.security_group_id == group.id:
                helper.delete(model.SecurityGroupRule, rule.id)
            elif rule.remote_group_id == group.id:  # Neutron's ON DELETE CASCADE
                helper.delete(model.SecurityGroupRule, rule.id)
                touched.add(rule.security_group_id)
        helper.delete(model.SecurityGroup, group.id)
        for other in sorted(touched):
            _bump(helper, other, stamp)


# -- /v2.0/security-group-rules ---------------------------------------------------------
_port = optional(in_range(integer, 0, 65535))
RULE_ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("security_group_id", uuid_str, put=False, required=True),
        A("direction", enum(*DIRECTIONS), put=False, required=True),
        A("ethertype", ethertype, put=False, default="IPv4"),
        A("protocol", protocol, put=False),
        A("port_range_min", _port, put=False),
        A("port_range_max", _port, put=False),
        A("remote_ip_prefix", optional(ip_prefix), put=False),
        A("remote_group_id", optional(uuid_str), put=False),
        A("remote_address_group_id", optional(uuid_str), put=False),
        A("normalized_cidr", optional(ip_prefix), post=False, put=False),
        A("belongs_to_default_sg", boolean, post=False, put=False),
        A("description", string(), put=False, default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
    )
}


def canonical_protocol(proto: Optional[str], eth: str) -> Optional[str]:
    """Neutron's _make_canonical_ipv6_icmp_protocol."""
    if eth == "IPv6":
        if proto in ("icmp", "icmpv6"):
            return "ipv6-icmp"
        if proto == "1":
            return "58"
    return proto


def check_ports(proto: Optional[str], low: Optional[int], high: Optional[int]) -> None:
    """Neutron's _validate_port_range."""
    if low is None and high is None:
        return
    if proto is None:
        raise bad_request(
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        )
    number = protocol_number(proto)
    if number in PORT_PROTOCOLS:
        if low == 0 or high == 0:
            raise bad_request("SecurityGroupInvalidPortValue", "Invalid value for port 0")
        if low is None or high is None or low > high:
            raise bad_request(
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            )
    elif number in ICMP_PROTOCOLS:
        icmp = ((low, "type", "port_range_min"), (high, "code", "port_range_max"))
        for value, field, attr in icmp:
            if value is not None and not 0 <= value <= 255:
                raise bad_request(
                    "SecurityGroupInvalidIcmpValue",
                    f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                )
        if low is None:
            raise bad_request(
                "SecurityGroupMissingIcmpType",
                f"ICMP code (port-range-max) {high} is provided but ICMP type "
                "(port-range-min) is missing.",
            )
    else:
        raise bad_request(
            "SecurityGroupInvalidProtocolForPort",
            f"Invalid protocol {proto} for port range, only supported for TCP and UDP.",
        )


def rule_key(r: model.SecurityGroupRule) -> tuple[Any, ...]:
    """What makes two rules the same to Neutron (_rule_to_key): descriptions don't count."""
    prefix = None if r.remote_ip_prefix in ANY_PREFIXES else r.remote_ip_prefix
    return (
        r.security_group_id,
        r.direction,
        r.ethertype,
        protocol_number(r.protocol),
        r.port_range_min,
        r.port_range_max,
        r.remote_group_id,
        prefix,
    )


class SecurityGroupRules(Resource):
    kind, singular, plural, intent_attr = (
        "SecurityGroupRule",
        "security_group_rule",
        "security_group_rules",
        "security_group_rules",
    )
    attrs = RULE_ATTRS

    def visible(
        self, principal: Principal, obj: model.SecurityGroupRule, intent: model.Intent
    ) -> bool:
        if owns(principal, obj):
            return True
        group = intent.security_groups.get(obj.security_group_id)
        return group is not None and owns(principal, group)

    def may_modify(
        self, principal: Principal, obj: model.SecurityGroupRule, intent: model.Intent
    ) -> bool:
        return self.visible(principal, obj, intent)

    def view(self, r: model.SecurityGroupRule, ctx: ViewContext) -> dict[str, Any]:
        return rule_view(r, ctx.intent)

    def lookup(self, principal: Principal, intent: model.Intent, object_id: str) -> Any:
        obj = self.objects(intent).get(object_id)
        if obj is None or not self.visible(principal, obj, intent):
            raise not_found_rule(object_id)
        return obj

    def parse_update(self, request: Request) -> dict[str, Any]:
        items, _ = resource_items(request, self.singular, self.plural, allow_bulk=False)
        return check_item(items[0], self.attrs, create=False)  # every attribute is read-only

    def update(
        self,
        principal: Principal,
        rule: model.SecurityGroupRule,
        changes: dict[str, Any],
        helper: TxnHelper,
    ) -> model.SecurityGroupRule:
        raise BadRequest(
            "Security group rules cannot be updated; delete the rule and create a new one."
        )

    def create(
        self, principal: Principal, item: dict[str, Any], helper: TxnHelper
    ) -> model.SecurityGroupRule:
        project = owner_for_create(principal, item, "create_security_group_rule")
        eth = item.get("ethertype", "IPv4")
        proto = canonical_protocol(item.get("protocol"), eth)
        low, high = item.get("port_range_min"), item.get("port_range_max")
        check_ports(proto, low, high)
        prefix = item.get("remote_ip_prefix")
        if prefix is not None and f"IPv{ipaddress.ip_network(prefix).version}" != eth:
            raise bad_request(
                "SecurityGroupRuleParameterConflict",
                f"Conflicting value ethertype {eth} for CIDR {prefix}",
            )
        if eth == "IPv4" and protocol_number(proto) in IPV6_ONLY_PROTOCOLS:
            raise bad_request(
                "SecurityGroupEthertypeConflictWithProtocol",
                f"Invalid ethertype {eth} for protocol {proto}.",
            )
        remote_group = item.get("remote_group_id")
        if prefix is not None and remote_group is not None:
            raise bad_request(
                "SecurityGroupRemoteGroupAndRemoteIpPrefix",
                "Only remote_ip_prefix or remote_group_id may be provided.",
            )
        if item.get("remote_address_group_id") is not None:
            raise InvalidInput("remote_address_group_id is not supported")
        intent = helper.current()
        if remote_group is not None:
            self._group(principal, intent, remote_group)
        group = self._group(principal, intent, item["security_group_id"])
        stamp = now()
        rule = model.SecurityGroupRule(
            id=helper.new_id(),
            project_id=project,
            security_group_id=group.id,
            direction=item["direction"],
            ethertype=eth,
            protocol=proto,
            port_range_min=low,
            port_range_max=high,
            remote_ip_prefix=prefix,
            remote_group_id=remote_group,
            description=item.get("description", ""),
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
        )
        key = rule_key(rule)
        for existing in rules_by_group(intent).get(group.id, []):
            if rule_key(existing) == key:
                raise conflict(
                    "SecurityGroupRuleExists",
                    f"Security group rule already exists. Rule id is {existing.id}.",
                )
        helper.put(rule)
        _bump(helper, group.id, stamp)
        return rule

    def delete(
        self, principal: Principal, rule: model.SecurityGroupRule, helper: TxnHelper
    ) -> None:
        helper.delete(model.SecurityGroupRule, rule.id)
        _bump(helper, rule.security_group_id, now())

    @staticmethod
    def _group(principal: Principal, intent: model.Intent, group_id: str) -> model.SecurityGroup:
        group = intent.security_groups.get(group_id)
        if group is None or not owns(principal, group):
            raise not_found("SecurityGroup", group_id)
        return group


def not_found_rule(rule_id: str) -> NotFound:
    return NotFound(
        f"Security group rule {rule_id} does not exist", type="SecurityGroupRuleNotFound"
    )
