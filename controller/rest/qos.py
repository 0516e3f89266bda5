"""/v2.0/qos/...: Neutron's QoS API (policies, their rules, rule types).

- `/qos/policies` holds policies; each embeds its `rules` as Neutron does (with `id`,
  `type` and `qos_policy_id`, which `openstack network qos rule ...` relies on).
- `/qos/policies/{policy_id}/{bandwidth_limit,minimum_bandwidth,dscp_marking}_rules`
  hold the rules. At most one rule per type and direction in a policy (a DSCP rule
  has no direction: one per policy); a second is 409 QoSRulesConflict. A minimum
  bandwidth above the same direction's bandwidth limit is 409 QoSRuleParameterConflict.
  Adding, changing or deleting a rule bumps the policy's revision_number.
- `max_kbps` and `min_kbps` must be > 0 (a zero rate cannot be enforced by a meter or
  a queue); `max_burst_kbps` 0 (the default) means "let the backend choose".
- A policy is visible to its project and, when `shared`, to everyone; only its
  project (or an admin) changes it or its rules. Sharing with everyone is admin-only,
  as Neutron's default RBAC policy forbids a member a wildcard target.
- `is_default`: at most one per project (409 QoSPolicyDefaultAlreadyExists); a network
  created without a `qos_policy_id` gets its project's default policy.
- A policy used by a port or a network cannot be deleted (409 QosPolicyInUse), nor
  unshared while another project uses it (409 RbacPolicyInUse). Deleting a policy
  deletes its rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

from webob import Request

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import (
    InvalidInput,
    MethodNotAllowed,
    NeutronError,
    NotFound,
    PolicyNotAuthorized,
    conflict,
    not_found,
)
from controller.rest.policy import check_admin_only, owner_for_create, owns
from controller.rest.resource import Resource, ViewContext, now, select_fields
from controller.rest.snapshot_index import per_snapshot
from controller.rest.validate import (
    Attr,
    boolean,
    check_item,
    enum,
    in_range,
    integer,
    resource_items,
    string,
    uuid_str,
)
from controller.store.txn import TxnHelper

BANDWIDTH_LIMIT, DSCP_MARKING, MINIMUM_BANDWIDTH = (
    "bandwidth_limit",
    "dscp_marking",
    "minimum_bandwidth",
)
RULE_TYPES = (BANDWIDTH_LIMIT, DSCP_MARKING, MINIMUM_BANDWIDTH)  # Neutron's order
DIRECTIONS = ("egress", "ingress")
# neutron_lib.constants.VALID_DSCP_MARKS: 0, and the even numbers 8-56 except 42, 44 and 50-54.
VALID_DSCP_MARKS = (0, *(m for m in range(8, 57, 2) if m not in (42, 44, 50, 52, 54)))
MAX_INT = 2**31 - 1  # neutron_lib.db.constants.DB_INTEGER_MAX_VALUE
DRIVER = "loom"


# -- converters -------------------------------------------------------------------------
def dscp_mark(value: Any) -> int:
    mark = integer(value)
    if mark not in VALID_DSCP_MARKS:
        raise InvalidInput(f"'{value}' is not in {list(VALID_DSCP_MARKS)}")
    return mark


_rate = in_range(integer, 1, MAX_INT)
_burst = in_range(integer, 0, MAX_INT)


# -- lookups ---------------------------------------------------------------------------
def policy_visible(principal: Principal, policy: model.QosPolicy) -> bool:
    return owns(principal, policy) or policy.shared


def visible_policy(principal: Principal, intent: model.Intent, policy_id: str) -> model.QosPolicy:
    policy = intent.qos_policies.get(policy_id)
    if policy is None or not policy_visible(principal, policy):
        raise not_found("QosPolicy", policy_id)
    return policy


def check_qos_policy(principal: Principal, intent: model.Intent, policy_id: Optional[str]) -> None:
    """A port or network may name a policy its caller sees: its project's, or a shared one."""
    if policy_id is not None:
        visible_policy(principal, intent, policy_id)


def check_qos_change(
    principal: Principal, intent: model.Intent, old: Optional[str], new: Optional[str]
) -> None:
    """Neutron's _check_policy_change_permission: detaching needs access to the old policy."""
    if new == old:
        return
    current = intent.qos_policies.get(old) if old is not None else None
    if current is not None and not policy_visible(principal, current):
        raise NeutronError(
            f"Failed to remove provided policy {old} because you are not authorized.",
            type="PolicyRemoveAuthorizationError",
            status=403,
        )
    check_qos_policy(principal, intent, new)


def default_policy_id(intent: model.Intent, project_id: str) -> Optional[str]:
    for policy in intent.qos_policies.values():
        if policy.project_id == project_id and policy.is_default:
            return policy.id
    return None


@per_snapshot
def rules_by_policy(intent: model.Intent) -> dict[str, list[model.QosRule]]:
    """Rules per policy in Neutron's order (by type), built once per snapshot."""
    out: dict[str, list[model.QosRule]] = {}
    for rule in intent.qos_rules.values():
        out.setdefault(rule.policy_id, []).append(rule)
    for rules in out.values():
        rules.sort(key=lambda r: (RULE_TYPES.index(r.type), r.direction, r.id))
    return out


# -- views ------------------------------------------------------------------------------
def rule_fields(r: model.QosRule) -> dict[str, Any]:
    """The attributes Neutron shows for a rule of r's type (the sub-collection's view)."""
    if r.type == BANDWIDTH_LIMIT:
        return {
            "id": r.id,
            "max_kbps": r.max_kbps,
            "max_burst_kbps": r.max_burst_kbps,
            "direction": r.direction,
        }
    if r.type == MINIMUM_BANDWIDTH:
        return {"id": r.id, "min_kbps": r.min_kbps, "direction": r.direction}
    return {"id": r.id, "dscp_mark": r.dscp_mark}


def embedded_rule(r: model.QosRule) -> dict[str, Any]:
    """A rule as a policy embeds it: with its type and policy (QosRule.to_dict)."""
    return {**rule_fields(r), "qos_policy_id": r.policy_id, "type": r.type}


def _bump(helper: TxnHelper, policy_id: str, stamp: str) -> None:
    policy = helper.get(model.QosPolicy, policy_id)
    if policy is not None:
        helper.put(
            dataclasses.replace(
                policy, updated_at=stamp, revision_number=policy.revision_number + 1
            )
        )


# -- /v2.0/qos/policies -----------------------------------------------------------------
A = Attr
POLICY_ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("name", string(), default=""),
        A("description", string(), default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("shared", boolean, admin_only=True, default=False),
        A("is_default", boolean, default=False),
        A("rules", string(), post=False, put=False, filter=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
    )
}


def _default_exists(project_id: str) -> NeutronError:
    return conflict(
        "QoSPolicyDefaultAlreadyExists", f"A default QoS policy exists for project {project_id}."
    )


class QosPolicies(Resource):
    kind, singular, plural, intent_attr = "QosPolicy", "policy", "policies", "qos_policies"
    attrs = POLICY_ATTRS

    def visible(self, principal: Principal, obj: model.QosPolicy, intent: model.Intent) -> bool:
        return policy_visible(principal, obj)

    def may_modify(self, principal: Principal, obj: model.QosPolicy, intent: model.Intent) -> bool:
        return owns(principal, obj)

    def view(self, p: model.QosPolicy, ctx: ViewContext) -> dict[str, Any]:
        return {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "shared": p.shared,
            "is_default": p.is_default,
            "project_id": p.project_id,
            "tenant_id": p.project_id,
            "rules": [embedded_rule(r) for r in rules_by_policy(ctx.intent).get(p.id, [])],
            "tags": [],
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "revision_number": p.revision_number,
        }

    def create(
        self, principal: Principal, item: dict[str, Any], helper: TxnHelper
    ) -> model.QosPolicy:
        project = owner_for_create(principal, item, "create_policy")
        check_admin_only(principal, item, self.attrs, "create_policy")
        is_default = item.get("is_default", False)
        if is_default and default_policy_id(helper.current(), project) is not None:
            raise _default_exists(project)
        stamp = now()
        policy = model.QosPolicy(
            id=helper.new_id(),
            project_id=project,
            name=item.get("name", ""),
            description=item.get("description", ""),
            shared=item.get("shared", False),
            is_default=is_default,
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
        )
        helper.put(policy)
        return policy

    def update(
        self,
        principal: Principal,
        policy: model.QosPolicy,
        changes: dict[str, Any],
        helper: TxnHelper,
    ) -> model.QosPolicy:
        intent = helper.current()
        check_admin_only(principal, changes, self.attrs, "update_policy")
        becomes_default = changes.get("is_default") and not policy.is_default
        if becomes_default and default_policy_id(intent, policy.project_id) is not None:
            raise _default_exists(policy.project_id)
        if changes.get("shared") is False and policy.shared:
            users: list[model.Port | model.Network] = [
                *intent.ports.values(),
                *intent.networks.values(),
            ]
            foreign = sorted(
                o.id
                for o in users
                if o.qos_policy_id == policy.id and o.project_id != policy.project_id
            )
            if foreign:
                raise conflict(
                    "RbacPolicyInUse",
                    f"RBAC policy on object {policy.id} cannot be removed because other "
                    f"objects depend on it.\nDetails: used by {', '.join(foreign)}",
                )
        updated = dataclasses.replace(
            policy,
            name=changes.get("name", policy.name),
            description=changes.get("description", policy.description),
            shared=changes.get("shared", policy.shared),
            is_default=changes.get("is_default", policy.is_default),
        )
        if updated == policy:
            return policy
        updated = dataclasses.replace(
            updated, updated_at=now(), revision_number=policy.revision_number + 1
        )
        helper.put(updated)
        return updated

    def delete(self, principal: Principal, policy: model.QosPolicy, helper: TxnHelper) -> None:
        intent = helper.current()
        for object_type, objects in (("port", intent.ports), ("network", intent.networks)):
            users = sorted(o.id for o in objects.values() if o.qos_policy_id == policy.id)
            if users:
                raise NeutronError(
                    f"QoS Policy {policy.id} is used by {object_type} {users[0]}.",
                    type="QosPolicyInUse",
                    status=409,
                )
        for rule in rules_by_policy(intent).get(policy.id, []):
            helper.delete(model.QosRule, rule.id)
        helper.delete(model.QosPolicy, policy.id)


# -- /v2.0/qos/policies/{policy_id}/<type>_rules ---------------------------------------
def _rule_attrs(*extra: Attr) -> dict[str, Attr]:
    return {a.name: a for a in (A("id", uuid_str, post=False, put=False), *extra)}


def rule_not_found(policy_id: str, rule_id: str) -> NotFound:
    return NotFound(
        f"QoS rule {rule_id} for policy {policy_id} could not be found.",
        type="QosRuleNotFound",
    )


class QosRules(Resource):
    """One rule type's sub-collection of one policy; an instance per request."""

    kind, intent_attr = "QosRule", "qos_rules"
    rule_type = ""

    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id

    # -- scoping to the policy --------------------------------------------------
    def objects(self, intent: model.Intent) -> Mapping[str, model.QosRule]:
        rules = rules_by_policy(intent).get(self.policy_id, [])
        return {r.id: r for r in rules if r.type == self.rule_type}

    def _policy(self, principal: Principal, intent: model.Intent) -> model.QosPolicy:
        return visible_policy(principal, intent, self.policy_id)

    def visible(self, principal: Principal, obj: model.QosRule, intent: model.Intent) -> bool:
        policy = intent.qos_policies.get(obj.policy_id)
        return policy is not None and policy_visible(principal, policy)

    def may_modify(self, principal: Principal, obj: model.QosRule, intent: model.Intent) -> bool:
        policy = intent.qos_policies.get(obj.policy_id)
        return policy is not None and owns(principal, policy)

    def lookup(self, principal: Principal, intent: model.Intent, object_id: str) -> Any:
        self._policy(principal, intent)
        rule = self.objects(intent).get(object_id)
        if rule is None:
            raise rule_not_found(self.policy_id, object_id)
        return rule

    def lookup_for_write(
        self, principal: Principal, intent: model.Intent, object_id: str, action: str
    ) -> Any:
        rule = self.lookup(principal, intent, object_id)
        if not self.may_modify(principal, rule, intent):
            raise PolicyNotAuthorized(f"{action}_policy_{self.singular}")
        return rule

    def list_view(self, request: Request, ctx: ViewContext) -> dict[str, Any]:
        self._policy(ctx.principal, ctx.intent)
        return super().list_view(request, ctx)

    def view(self, r: model.QosRule, ctx: ViewContext) -> dict[str, Any]:
        return rule_fields(r)

    # -- writes -------------------------------------------------------------------
    def parse_create(self, request: Request) -> tuple[list[dict[str, Any]], bool]:
        items, _ = resource_items(request, self.singular, self.plural, allow_bulk=False)
        return [check_item(items[0], self.attrs, create=True)], False

    def new_rule(self, rule_id: str, item: dict[str, Any]) -> model.QosRule:
        raise NotImplementedError

    def create(self, principal: Principal, item: dict[str, Any], helper: TxnHelper) -> Any:
        intent = helper.current()
        policy = self._policy(principal, intent)
        if not owns(principal, policy):
            raise PolicyNotAuthorized(f"create_policy_{self.singular}")
        rule = self.new_rule(helper.new_id(), item)
        check_conflicts(intent, policy, rule)
        helper.put(rule)
        _bump(helper, policy.id, now())
        return rule

    def update(
        self, principal: Principal, rule: model.QosRule, changes: dict[str, Any], helper: TxnHelper
    ) -> model.QosRule:
        updated = dataclasses.replace(rule, **changes)
        if updated == rule:
            return rule
        intent = helper.current()
        check_conflicts(intent, intent.qos_policies[rule.policy_id], updated)
        helper.put(updated)
        _bump(helper, rule.policy_id, now())
        return updated

    def delete(self, principal: Principal, rule: model.QosRule, helper: TxnHelper) -> None:
        helper.delete(model.QosRule, rule.id)
        _bump(helper, rule.policy_id, now())


def check_conflicts(intent: model.Intent, policy: model.QosPolicy, rule: model.QosRule) -> None:
    """Neutron's check_bandwidth_rule_conflict, then check_rules_conflict.

    Unlike Neutron, a minimum and a limit only conflict in the same direction.
    """
    others = [r for r in rules_by_policy(intent).get(policy.id, []) if r.id != rule.id]
    for other in others:
        if other.direction != rule.direction:
            continue
        if (
            rule.type == BANDWIDTH_LIMIT
            and other.type == MINIMUM_BANDWIDTH
            and (other.min_kbps or 0) > (rule.max_kbps or 0)
        ):
            raise _parameter_conflict(rule.max_kbps, policy.id, other.type, other.min_kbps)
        if (
            rule.type == MINIMUM_BANDWIDTH
            and other.type == BANDWIDTH_LIMIT
            and (other.max_kbps or 0) < (rule.min_kbps or 0)
        ):
            raise _parameter_conflict(rule.min_kbps, policy.id, other.type, other.max_kbps)
    for other in others:
        same_slot = rule.type == DSCP_MARKING or other.direction == rule.direction
        if other.type == rule.type and same_slot:
            raise conflict(
                "QoSRulesConflict",
                f"Rule {rule.type} conflicts with rule {other.id} which already exists in "
                f"QoS Policy {policy.id}.",
            )


def _parameter_conflict(value: Any, policy_id: str, existing: str, limit: Any) -> NeutronError:
    return conflict(
        "QoSRuleParameterConflict",
        f"Unable to add the rule with value {value} to the policy {policy_id} as the "
        f"existing rule of type {existing} restricts the bandwidth to {limit}.",
    )


class BandwidthLimitRules(QosRules):
    singular, plural, rule_type = (
        "bandwidth_limit_rule",
        "bandwidth_limit_rules",
        BANDWIDTH_LIMIT,
    )
    attrs = _rule_attrs(
        A("max_kbps", _rate, required=True),
        A("max_burst_kbps", _burst, default=0),
        A("direction", enum(*DIRECTIONS), default="egress"),
    )

    def new_rule(self, rule_id: str, item: dict[str, Any]) -> model.QosRule:
        return model.QosRule(
            id=rule_id,
            policy_id=self.policy_id,
            type=self.rule_type,
            max_kbps=item["max_kbps"],
            max_burst_kbps=item.get("max_burst_kbps", 0),
            direction=item.get("direction", "egress"),
        )


class MinimumBandwidthRules(QosRules):
    singular, plural, rule_type = (
        "minimum_bandwidth_rule",
        "minimum_bandwidth_rules",
        MINIMUM_BANDWIDTH,
    )
    attrs = _rule_attrs(
        A("min_kbps", _rate, required=True),
        # Only egress guarantees are enforced (queues on shaped ports); an ingress
        # minimum would be accepted and silently ignored, so it is refused.
        A("direction", enum("egress"), default="egress"),
    )

    def new_rule(self, rule_id: str, item: dict[str, Any]) -> model.QosRule:
        return model.QosRule(
            id=rule_id,
            policy_id=self.policy_id,
            type=self.rule_type,
            min_kbps=item["min_kbps"],
            direction=item.get("direction", "egress"),
        )


class DscpMarkingRules(QosRules):
    singular, plural, rule_type = "dscp_marking_rule", "dscp_marking_rules", DSCP_MARKING
    attrs = _rule_attrs(A("dscp_mark", dscp_mark, required=True))

    def new_rule(self, rule_id: str, item: dict[str, Any]) -> model.QosRule:
        # Marks what the VM sends; the store's direction column is always "egress".
        return model.QosRule(
            id=rule_id,
            policy_id=self.policy_id,
            type=self.rule_type,
            dscp_mark=item["dscp_mark"],
            direction="egress",
        )


RULE_COLLECTIONS: dict[str, type[QosRules]] = {
    c.plural: c for c in (BandwidthLimitRules, MinimumBandwidthRules, DscpMarkingRules)
}


# -- /v2.0/qos/rule-types ---------------------------------------------------------------
def _range(name: str, low: int = 0) -> dict[str, Any]:
    return {
        "parameter_name": name,
        "parameter_type": "range",
        "parameter_values": {"start": low, "end": MAX_INT},
    }


def _choices(name: str, values: Any) -> dict[str, Any]:
    return {"parameter_name": name, "parameter_type": "choices", "parameter_values": list(values)}


SUPPORTED_PARAMETERS = {
    BANDWIDTH_LIMIT: [
        _range("max_kbps", 1),
        _choices("direction", DIRECTIONS),
        _range("max_burst_kbps"),
    ],
    DSCP_MARKING: [_choices("dscp_mark", VALID_DSCP_MARKS)],
    MINIMUM_BANDWIDTH: [_range("min_kbps", 1), _choices("direction", ("egress",))],
}
_RULE_TYPE_FILTERS = {"type", "all_supported", "all_rules"}


class QosRuleTypes(Resource):
    """Read-only: the rule types Loom enforces (Neutron lists its drivers' types)."""

    kind, singular, plural = "QosRuleType", "rule_type", "rule_types"
    attrs = {"type": A("type", string(), post=False, put=False)}

    def list_view(self, request: Request, ctx: ViewContext) -> dict[str, Any]:
        params = request.GET
        for key in params:
            if key != "fields" and key not in _RULE_TYPE_FILTERS:
                raise InvalidInput(f"'{key}' is not an allowed filter for rule_types")
        wanted = params.getall("type")
        views = [{"type": t} for t in RULE_TYPES if not wanted or t in wanted]
        return {self.plural: [select_fields(v, params) for v in views]}

    def show_view(self, request: Request, ctx: ViewContext, object_id: str) -> dict[str, Any]:
        if not ctx.principal.is_admin:  # Neutron: get_rule_type is admin-only
            raise PolicyNotAuthorized("get_rule_type")
        if object_id not in RULE_TYPES:
            raise not_found("QosRuleType", object_id)
        view = {
            "type": object_id,
            "drivers": [{"name": DRIVER, "supported_parameters": SUPPORTED_PARAMETERS[object_id]}],
        }
        return {self.singular: select_fields(view, request.GET)}


POLICIES = QosPolicies()
RULE_TYPE_LIST = QosRuleTypes()


def route(method: str, parts: list[str]) -> tuple[Optional[Resource], list[str]]:
    """The resource serving /v2.0/qos/<parts>, and the path as [collection, id?] for it."""
    if parts and parts[0] == "policies":
        if len(parts) <= 2:
            return POLICIES, parts
        if len(parts) <= 4 and parts[2] in RULE_COLLECTIONS:
            return RULE_COLLECTIONS[parts[2]](parts[1]), parts[2:]
    elif parts and parts[0] == "rule-types" and len(parts) <= 2:
        if method != "GET":
            raise MethodNotAllowed(
                f"The method {method} is not allowed for this resource.",
                headers={"Allow": "GET"},
            )
        return RULE_TYPE_LIST, parts
    return None, parts
