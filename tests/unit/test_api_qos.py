"""QoS policies and rules through the REST API, with Neutron's semantics.

Policies with embedded rules, the three rule sub-collections and their validation,
one rule per type and direction, rule types, attaching policies to ports and
networks (and the project's default policy), in-use protection, tenant isolation,
and stock clients (openstacksdk, the `openstack` CLI) against it.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest
from api_harness import ADMIN, ALICE, BOB, Env, openstack_cli

from controller.rest.server import serve

GHOST = "00000000-0000-4000-8000-00000000dead"
POLICIES = "/v2.0/qos/policies"
VALID_MARKS = [0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56]


def policy(env: Env, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    return env.ok("POST", POLICIES, {"policy": attrs}, 201, token=token)["policy"]  # type: ignore[no-any-return]


def rules_path(policy_id: str, kind: str) -> str:
    return f"{POLICIES}/{policy_id}/{kind}_rules"


def rule(
    env: Env, policy_id: str, kind: str, token: Optional[str] = None, **attrs: Any
) -> dict[str, Any]:
    body = {f"{kind}_rule": attrs}
    return env.ok("POST", rules_path(policy_id, kind), body, 201, token=token)[f"{kind}_rule"]  # type: ignore[no-any-return]


def revision(env: Env, policy_id: str) -> int:
    return env.ok("GET", f"{POLICIES}/{policy_id}")["policy"]["revision_number"]  # type: ignore[no-any-return]


# -- policies -----------------------------------------------------------------------------
def test_policy_create_show_list_update_delete(env: Env) -> None:
    p = policy(env, name="gold", description="fast")
    assert p["name"] == "gold" and p["description"] == "fast"
    assert p["shared"] is False and p["is_default"] is False and p["rules"] == []
    assert p["project_id"] == p["tenant_id"] == "default"
    assert p["revision_number"] == 1 and p["created_at"].endswith("Z") and p["tags"] == []
    assert env.ok("GET", f"{POLICIES}/{p['id']}")["policy"] == p
    assert env.ok("GET", POLICIES)["policies"] == [p]
    assert env.store.latest().qos_policies[p["id"]].name == "gold"

    updated = env.ok("PUT", f"{POLICIES}/{p['id']}", {"policy": {"description": "faster"}})
    assert updated["policy"]["description"] == "faster"
    assert updated["policy"]["revision_number"] == 2
    same = env.ok("PUT", f"{POLICIES}/{p['id']}", {"policy": {"description": "faster"}})
    assert same["policy"]["revision_number"] == 2  # nothing changed: no new revision

    silver = policy(env, name="silver")
    names = [x["name"] for x in env.ok("GET", f"{POLICIES}?name=silver")["policies"]]
    assert names == ["silver"]
    listed = env.ok("GET", f"{POLICIES}?sort_key=name&sort_dir=desc&fields=name")["policies"]
    assert listed == [{"name": "silver"}, {"name": "gold"}]
    env.ok("DELETE", f"{POLICIES}/{p['id']}", status=204)
    env.rejected("GET", f"{POLICIES}/{p['id']}", status=404, type="QosPolicyNotFound")
    assert set(env.store.latest().qos_policies) == {silver["id"]}


@pytest.mark.parametrize(
    "body,type_",
    [
        ({"policy": {"name": "x", "colour": "red"}}, "InvalidInput"),
        ({"policy": {"name": 7}}, "InvalidInput"),
        ({"policy": {"name": "x" * 256}}, "InvalidInput"),
        ({"policy": {"shared": "maybe"}}, "InvalidInput"),
        ({"policy": {"is_default": "perhaps"}}, "InvalidInput"),
        ({"policy": {"rules": []}}, "InvalidInput"),
        ({"policy": {"id": GHOST}}, "InvalidInput"),
        ({"qos_policy": {"name": "x"}}, "HTTPBadRequest"),
    ],
)
def test_bad_policies_are_rejected_and_write_nothing(
    env: Env, body: dict[str, Any], type_: str
) -> None:
    env.rejected("POST", POLICIES, body, status=400, type=type_)


def test_unknown_policy_is_404_everywhere(env: Env) -> None:
    for method, path, body in [
        ("GET", f"{POLICIES}/{GHOST}", None),
        ("PUT", f"{POLICIES}/{GHOST}", {"policy": {"name": "x"}}),
        ("DELETE", f"{POLICIES}/{GHOST}", None),
        ("GET", rules_path(GHOST, "bandwidth_limit"), None),
        ("POST", rules_path(GHOST, "bandwidth_limit"), {"bandwidth_limit_rule": {"max_kbps": 1}}),
        ("GET", f"{rules_path(GHOST, 'dscp_marking')}/{GHOST}", None),
        ("DELETE", f"{rules_path('not-a-uuid', 'minimum_bandwidth')}/{GHOST}", None),
    ]:
        err = env.rejected(method, path, body, status=404, type="QosPolicyNotFound")
        assert "could not be found" in err["message"]
    for path in (f"{POLICIES}/{GHOST}/nope_rules", f"{rules_path(GHOST, 'dscp_marking')}/a/b"):
        env.rejected("GET", path, status=404, type="HTTPNotFound")


def test_default_policy_is_one_per_project_and_applies_to_new_networks(tenv: Env) -> None:
    gold = policy(tenv, token=ALICE, name="gold", is_default=True)
    assert gold["is_default"] is True
    err = tenv.rejected(
        "POST",
        POLICIES,
        {"policy": {"name": "silver", "is_default": True}},
        status=409,
        type="QoSPolicyDefaultAlreadyExists",
        token=ALICE,
    )
    assert err["message"] == "A default QoS policy exists for project alice."
    silver = policy(tenv, token=ALICE, name="silver")
    tenv.rejected(
        "PUT",
        f"{POLICIES}/{silver['id']}",
        {"policy": {"is_default": True}},
        status=409,
        type="QoSPolicyDefaultAlreadyExists",
        token=ALICE,
    )
    assert policy(tenv, token=BOB, name="bobs", is_default=True)["is_default"] is True
    only = tenv.ok("GET", f"{POLICIES}?is_default=true", token=ALICE)["policies"]
    assert [p["id"] for p in only] == [gold["id"]]

    # Neutron: a network created without a policy gets its project's default...
    assert tenv.network(name="a", token=ALICE)["qos_policy_id"] == gold["id"]
    assert tenv.network(name="b", token=ALICE, qos_policy_id=None)["qos_policy_id"] == gold["id"]
    explicit = tenv.network(name="c", token=ALICE, qos_policy_id=silver["id"])
    assert explicit["qos_policy_id"] == silver["id"]
    # ...ports do not (they follow their network's policy in the data plane)
    net = tenv.network(name="d", token=ALICE)
    port = tenv.port(net["id"], token=ALICE)
    assert port["qos_policy_id"] is None and port["qos_network_policy_id"] == gold["id"]
    # an admin creating for alice gives the network alice's default, not the admin's
    made = tenv.network(name="e", token=ADMIN, project_id="alice")
    assert made["qos_policy_id"] == gold["id"]
    assert tenv.network(name="f", token=ADMIN)["qos_policy_id"] is None

    # moving the default: unset, then set another
    tenv.ok("PUT", f"{POLICIES}/{gold['id']}", {"policy": {"is_default": False}}, token=ALICE)
    tenv.ok("PUT", f"{POLICIES}/{silver['id']}", {"policy": {"is_default": True}}, token=ALICE)
    assert tenv.network(name="g", token=ALICE)["qos_policy_id"] == silver["id"]


# -- bandwidth limit rules ----------------------------------------------------------------
def test_bandwidth_limit_rule_lifecycle(env: Env) -> None:
    p = policy(env, name="gold")
    r = rule(env, p["id"], "bandwidth_limit", max_kbps=1000)
    assert r == {"id": r["id"], "max_kbps": 1000, "max_burst_kbps": 0, "direction": "egress"}
    stored = env.store.latest().qos_rules[r["id"]]
    assert (stored.policy_id, stored.type, stored.max_kbps, stored.max_burst_kbps) == (
        p["id"],
        "bandwidth_limit",
        1000,
        0,
    )
    path = f"{rules_path(p['id'], 'bandwidth_limit')}/{r['id']}"
    assert env.ok("GET", path)["bandwidth_limit_rule"] == r
    assert env.ok("GET", rules_path(p["id"], "bandwidth_limit"))["bandwidth_limit_rules"] == [r]
    shown = env.ok("GET", f"{POLICIES}/{p['id']}")["policy"]
    assert shown["rules"] == [{**r, "qos_policy_id": p["id"], "type": "bandwidth_limit"}]
    assert shown["revision_number"] == 2  # adding a rule revises the policy

    ingress = rule(
        env, p["id"], "bandwidth_limit", max_kbps="2000", max_burst_kbps=300, direction="ingress"
    )
    assert (ingress["max_kbps"], ingress["max_burst_kbps"]) == (2000, 300)
    listed = env.ok("GET", f"{rules_path(p['id'], 'bandwidth_limit')}?direction=ingress")
    assert [x["id"] for x in listed["bandwidth_limit_rules"]] == [ingress["id"]]
    listed = env.ok("GET", f"{rules_path(p['id'], 'bandwidth_limit')}?max_kbps=1000")
    assert [x["id"] for x in listed["bandwidth_limit_rules"]] == [r["id"]]

    changed = env.ok("PUT", path, {"bandwidth_limit_rule": {"max_kbps": 5000, "max_burst_kbps": 1}})
    assert changed["bandwidth_limit_rule"]["max_kbps"] == 5000
    assert env.store.latest().qos_rules[r["id"]].max_burst_kbps == 1
    assert revision(env, p["id"]) == 4
    env.ok("DELETE", path, status=204)
    assert revision(env, p["id"]) == 5
    env.rejected("GET", path, status=404, type="QosRuleNotFound")
    assert list(env.store.latest().qos_rules) == [ingress["id"]]


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"max_kbps": 0},
        {"max_kbps": -5},
        {"max_kbps": "fast"},
        {"max_kbps": 1.5},
        {"max_kbps": True},
        {"max_kbps": 2**31},
        {"max_kbps": 100, "max_burst_kbps": -1},
        {"max_kbps": 100, "direction": "sideways"},
        {"max_kbps": 100, "direction": None},
        {"max_kbps": 100, "min_kbps": 10},
        {"max_kbps": 100, "project_id": "default"},
        {"max_kbps": 100, "id": GHOST},
    ],
)
def test_bad_bandwidth_limit_rules_are_400_and_write_nothing(
    env: Env, attrs: dict[str, Any]
) -> None:
    p = policy(env, name="gold")
    path = rules_path(p["id"], "bandwidth_limit")
    expected = "HTTPBadRequest" if not attrs else "InvalidInput"
    env.rejected("POST", path, {"bandwidth_limit_rule": attrs}, status=400, type=expected)


def test_one_bandwidth_limit_per_direction(env: Env) -> None:
    p = policy(env, name="gold")
    egress = rule(env, p["id"], "bandwidth_limit", max_kbps=1000)
    path = rules_path(p["id"], "bandwidth_limit")
    err = env.rejected(
        "POST",
        path,
        {"bandwidth_limit_rule": {"max_kbps": 2000, "direction": "egress"}},
        status=409,
        type="QoSRulesConflict",
    )
    assert err["message"] == (
        f"Rule bandwidth_limit conflicts with rule {egress['id']} which already exists in "
        f"QoS Policy {p['id']}."
    )
    ingress = rule(env, p["id"], "bandwidth_limit", max_kbps=2000, direction="ingress")
    env.rejected(
        "PUT",
        f"{path}/{ingress['id']}",
        {"bandwidth_limit_rule": {"direction": "egress"}},
        status=409,
        type="QoSRulesConflict",
    )
    env.rejected(
        "PUT",
        f"{path}/{ingress['id']}",
        {"bandwidth_limit_rule": {"max_kbps": 0}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "PUT",
        f"{path}/{ingress['id']}",
        {"bandwidth_limit_rule": {"id": GHOST}},
        status=400,
        type="InvalidInput",
    )
    # a second policy may have its own
    other = policy(env, name="silver")
    rule(env, other["id"], "bandwidth_limit", max_kbps=1)


# -- minimum bandwidth rules --------------------------------------------------------------
def test_minimum_bandwidth_rules(env: Env) -> None:
    p = policy(env, name="gold")
    r = rule(env, p["id"], "minimum_bandwidth", min_kbps=500)
    assert r == {"id": r["id"], "min_kbps": 500, "direction": "egress"}
    path = rules_path(p["id"], "minimum_bandwidth")
    for attrs in ({}, {"min_kbps": 0}, {"min_kbps": -1}, {"min_kbps": 5, "direction": "up"}):
        expected = "HTTPBadRequest" if not attrs else "InvalidInput"
        env.rejected("POST", path, {"minimum_bandwidth_rule": attrs}, status=400, type=expected)
    env.rejected(
        "POST",
        path,
        {"minimum_bandwidth_rule": {"min_kbps": 600}},
        status=409,
        type="QoSRulesConflict",
    )
    # Only egress guarantees are enforced, so an ingress minimum is refused (400)
    env.rejected("POST", path, {"minimum_bandwidth_rule": {"min_kbps": 700,
                                                           "direction": "ingress"}},
                 status=400, type="InvalidInput")
    assert [x["type"] for x in env.ok("GET", f"{POLICIES}/{p['id']}")["policy"]["rules"]] == [
        "minimum_bandwidth",
    ]
    changed = env.ok("PUT", f"{path}/{r['id']}", {"minimum_bandwidth_rule": {"min_kbps": 800}})
    assert changed["minimum_bandwidth_rule"]["min_kbps"] == 800


def test_minimum_above_the_limit_of_the_same_direction_conflicts(env: Env) -> None:
    p = policy(env, name="gold")
    limit = rule(env, p["id"], "bandwidth_limit", max_kbps=1000)
    err = env.rejected(
        "POST",
        rules_path(p["id"], "minimum_bandwidth"),
        {"minimum_bandwidth_rule": {"min_kbps": 2000}},
        status=409,
        type="QoSRuleParameterConflict",
    )
    assert err["message"] == (
        f"Unable to add the rule with value 2000 to the policy {p['id']} as the existing rule "
        "of type bandwidth_limit restricts the bandwidth to 1000."
    )
    minimum = rule(env, p["id"], "minimum_bandwidth", min_kbps=1000)  # equal is fine
    env.rejected(
        "PUT",
        f"{rules_path(p['id'], 'bandwidth_limit')}/{limit['id']}",
        {"bandwidth_limit_rule": {"max_kbps": 999}},
        status=409,
        type="QoSRuleParameterConflict",
    )
    env.rejected(
        "PUT",
        f"{rules_path(p['id'], 'minimum_bandwidth')}/{minimum['id']}",
        {"minimum_bandwidth_rule": {"min_kbps": 1001}},
        status=409,
        type="QoSRuleParameterConflict",
    )
    # another direction's limit does not bound an egress minimum
    rule(env, p["id"], "bandwidth_limit", max_kbps=10, direction="ingress")


# -- DSCP marking rules -------------------------------------------------------------------
@pytest.mark.parametrize("mark", VALID_MARKS)
def test_every_valid_dscp_mark_is_accepted(env: Env, mark: int) -> None:
    p = policy(env, name="gold")
    r = rule(env, p["id"], "dscp_marking", dscp_mark=mark)
    assert r == {"id": r["id"], "dscp_mark": mark}
    stored = env.store.latest().qos_rules[r["id"]]
    assert stored.type == "dscp_marking" and stored.dscp_mark == mark


@pytest.mark.parametrize("mark", [1, 7, 9, 42, 44, 50, 52, 54, 58, 63, 64, -8, "af11", None])
def test_invalid_dscp_marks_are_400(env: Env, mark: Any) -> None:
    p = policy(env, name="gold")
    err = env.rejected(
        "POST",
        rules_path(p["id"], "dscp_marking"),
        {"dscp_marking_rule": {"dscp_mark": mark}},
        status=400,
        type="InvalidInput",
    )
    assert "dscp_mark" in err["message"]


def test_one_dscp_rule_per_policy(env: Env) -> None:
    p = policy(env, name="gold")
    r = rule(env, p["id"], "dscp_marking", dscp_mark=46)
    path = rules_path(p["id"], "dscp_marking")
    env.rejected(
        "POST", path, {"dscp_marking_rule": {"dscp_mark": 10}}, status=409, type="QoSRulesConflict"
    )
    env.rejected(
        "POST",
        path,
        {"dscp_marking_rule": {"dscp_mark": 10, "direction": "ingress"}},
        status=400,
        type="InvalidInput",
    )
    env.ok("PUT", f"{path}/{r['id']}", {"dscp_marking_rule": {"dscp_mark": 26}})
    assert env.store.latest().qos_rules[r["id"]].dscp_mark == 26
    env.rejected(
        "PUT",
        f"{path}/{r['id']}",
        {"dscp_marking_rule": {"dscp_mark": 27}},
        status=400,
        type="InvalidInput",
    )


def test_rules_are_scoped_to_their_policy_and_type(env: Env) -> None:
    gold, silver = policy(env, name="gold"), policy(env, name="silver")
    limit = rule(env, gold["id"], "bandwidth_limit", max_kbps=100)
    mark = rule(env, gold["id"], "dscp_marking", dscp_mark=8)
    minimum = rule(env, gold["id"], "minimum_bandwidth", min_kbps=10)
    shown = env.ok("GET", f"{POLICIES}/{gold['id']}")["policy"]["rules"]
    assert [r["type"] for r in shown] == ["bandwidth_limit", "dscp_marking", "minimum_bandwidth"]
    assert [r["id"] for r in shown] == [limit["id"], mark["id"], minimum["id"]]
    for path, kind in (
        (f"{rules_path(silver['id'], 'bandwidth_limit')}/{limit['id']}", "bandwidth_limit"),
        (f"{rules_path(gold['id'], 'dscp_marking')}/{limit['id']}", "dscp_marking"),
    ):  # another policy's rule, another type's rule
        for method, body in (("GET", None), ("PUT", {f"{kind}_rule": {}}), ("DELETE", None)):
            err = env.rejected(method, path, body, status=404, type="QosRuleNotFound")
            assert err["message"].startswith(f"QoS rule {limit['id']} for policy ")
    assert env.ok("GET", rules_path(silver["id"], "bandwidth_limit"))["bandwidth_limit_rules"] == []
    bulk = {"bandwidth_limit_rules": [{"max_kbps": 1}]}
    env.rejected(
        "POST",
        rules_path(silver["id"], "bandwidth_limit"),
        bulk,
        status=400,
        type="HTTPBadRequest",
    )


# -- rule types ---------------------------------------------------------------------------
def test_rule_types(tenv: Env) -> None:
    for token in (ADMIN, ALICE):
        body = tenv.ok("GET", "/v2.0/qos/rule-types", token=token)
        assert body == {
            "rule_types": [
                {"type": "bandwidth_limit"},
                {"type": "dscp_marking"},
                {"type": "minimum_bandwidth"},
            ]
        }
    one = tenv.ok("GET", "/v2.0/qos/rule-types?type=dscp_marking", token=ALICE)["rule_types"]
    assert one == [{"type": "dscp_marking"}]
    details = tenv.ok("GET", "/v2.0/qos/rule-types/bandwidth_limit", token=ADMIN)["rule_type"]
    assert details["type"] == "bandwidth_limit"
    params = {p["parameter_name"]: p for p in details["drivers"][0]["supported_parameters"]}
    assert set(params) == {"max_kbps", "max_burst_kbps", "direction"}
    assert params["direction"]["parameter_values"] == ["egress", "ingress"]
    dscp = tenv.ok("GET", "/v2.0/qos/rule-types/dscp_marking", token=ADMIN)["rule_type"]
    assert dscp["drivers"][0]["supported_parameters"][0]["parameter_values"] == VALID_MARKS
    tenv.rejected(
        "GET",
        "/v2.0/qos/rule-types/bandwidth_limit",
        status=403,
        type="PolicyNotAuthorized",
        token=ALICE,
    )
    tenv.rejected(
        "GET", "/v2.0/qos/rule-types/nope", status=404, type="QosRuleTypeNotFound", token=ADMIN
    )
    tenv.rejected(
        "GET", "/v2.0/qos/rule-types?colour=red", status=400, type="InvalidInput", token=ADMIN
    )
    for method, path in (
        ("POST", "/v2.0/qos/rule-types"),
        ("DELETE", "/v2.0/qos/rule-types/dscp_marking"),
        ("PUT", "/v2.0/qos/rule-types/dscp_marking"),
    ):
        tenv.rejected(
            method, path, {"rule_type": {}}, status=405, type="HTTPMethodNotAllowed", token=ADMIN
        )
    tenv.rejected("GET", "/v2.0/qos", status=404, type="HTTPNotFound", token=ADMIN)


# -- attaching to ports and networks ------------------------------------------------------
def test_policy_on_ports_and_networks_and_in_use(env: Env) -> None:
    gold, silver = policy(env, name="gold"), policy(env, name="silver")
    rule(env, gold["id"], "bandwidth_limit", max_kbps=1000)
    net = env.network(name="n", qos_policy_id=silver["id"])
    assert net["qos_policy_id"] == silver["id"]
    assert env.store.latest().networks[net["id"]].qos_policy_id == silver["id"]
    env.subnet(net["id"], "10.0.0.0/24")
    port = env.port(net["id"], qos_policy_id=gold["id"])
    assert port["qos_policy_id"] == gold["id"] and port["qos_network_policy_id"] == silver["id"]
    assert env.store.latest().ports[port["id"]].qos_policy_id == gold["id"]

    err = env.rejected("DELETE", f"{POLICIES}/{gold['id']}", status=409, type="QosPolicyInUse")
    assert err["message"] == f"QoS Policy {gold['id']} is used by port {port['id']}."
    err = env.rejected("DELETE", f"{POLICIES}/{silver['id']}", status=409, type="QosPolicyInUse")
    assert err["message"] == f"QoS Policy {silver['id']} is used by network {net['id']}."
    for method, path, body in [
        ("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "qos_policy_id": GHOST}}),
        ("PUT", f"/v2.0/ports/{port['id']}", {"port": {"qos_policy_id": GHOST}}),
        ("POST", "/v2.0/networks", {"network": {"name": "x", "qos_policy_id": GHOST}}),
        ("PUT", f"/v2.0/networks/{net['id']}", {"network": {"qos_policy_id": GHOST}}),
    ]:
        err = env.rejected(method, path, body, status=404, type="QosPolicyNotFound")
        assert err["message"] == f"QoS policy {GHOST} could not be found."
    env.rejected(
        "PUT",
        f"/v2.0/ports/{port['id']}",
        {"port": {"qos_policy_id": "gold"}},
        status=400,
        type="InvalidInput",
    )

    # detach (null), then the policies may go, taking their rules with them
    moved = env.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"qos_policy_id": None}})
    assert moved["port"]["qos_policy_id"] is None
    env.ok("DELETE", f"{POLICIES}/{gold['id']}", status=204)
    assert env.store.latest().qos_rules == {}
    back = env.ok("PUT", f"/v2.0/networks/{net['id']}", {"network": {"qos_policy_id": None}})
    assert back["network"]["qos_policy_id"] is None
    assert env.ok("GET", f"/v2.0/ports/{port['id']}")["port"]["qos_network_policy_id"] is None
    env.ok("DELETE", f"{POLICIES}/{silver['id']}", status=204)
    assert env.store.latest().qos_policies == {}


# -- tenant isolation ---------------------------------------------------------------------
def test_members_see_their_own_and_shared_policies_only(tenv: Env) -> None:
    bobs = policy(tenv, token=BOB, name="bobs")
    bob_rule = rule(tenv, bobs["id"], "bandwidth_limit", token=BOB, max_kbps=10)
    shared = policy(tenv, token=ADMIN, name="shared", project_id="bob", shared=True)
    shared_rule = rule(tenv, shared["id"], "dscp_marking", token=BOB, dscp_mark=46)
    mine = policy(tenv, token=ALICE, name="mine")
    seen = {p["name"] for p in tenv.ok("GET", POLICIES, token=ALICE)["policies"]}
    assert seen == {"mine", "shared"}
    assert {p["name"] for p in tenv.ok("GET", POLICIES, token=ADMIN)["policies"]} == {
        "bobs",
        "shared",
        "mine",
    }

    bl = rules_path(bobs["id"], "bandwidth_limit")
    hidden: list[tuple[str, str, Any, str]] = [
        ("GET", f"{POLICIES}/{bobs['id']}", None, "QosPolicyNotFound"),
        ("PUT", f"{POLICIES}/{bobs['id']}", {"policy": {"name": "x"}}, "QosPolicyNotFound"),
        ("DELETE", f"{POLICIES}/{bobs['id']}", None, "QosPolicyNotFound"),
        ("GET", bl, None, "QosPolicyNotFound"),
        ("GET", f"{bl}/{bob_rule['id']}", None, "QosPolicyNotFound"),
        (
            "PUT",
            f"{bl}/{bob_rule['id']}",
            {"bandwidth_limit_rule": {"max_kbps": 1}},
            "QosPolicyNotFound",
        ),
        ("DELETE", f"{bl}/{bob_rule['id']}", None, "QosPolicyNotFound"),
        ("POST", bl, {"bandwidth_limit_rule": {"max_kbps": 1}}, "QosPolicyNotFound"),
    ]
    for method, path, body, type_ in hidden:
        tenv.rejected(method, path, body, status=404, type=type_, token=ALICE)

    # a shared policy: readable, usable, but not alice's to change
    assert tenv.ok("GET", f"{POLICIES}/{shared['id']}", token=ALICE)["policy"]["rules"] == [
        {**shared_rule, "qos_policy_id": shared["id"], "type": "dscp_marking"}
    ]
    dscp = rules_path(shared["id"], "dscp_marking")
    assert tenv.ok("GET", dscp, token=ALICE)["dscp_marking_rules"] == [shared_rule]
    forbidden: list[tuple[str, str, Any]] = [
        ("PUT", f"{POLICIES}/{shared['id']}", {"policy": {"name": "mine-now"}}),
        ("DELETE", f"{POLICIES}/{shared['id']}", None),
        ("POST", dscp, {"dscp_marking_rule": {"dscp_mark": 8}}),
        ("PUT", f"{dscp}/{shared_rule['id']}", {"dscp_marking_rule": {"dscp_mark": 8}}),
        ("DELETE", f"{dscp}/{shared_rule['id']}", None),
        ("POST", POLICIES, {"policy": {"name": "x", "project_id": "bob"}}),
        ("POST", POLICIES, {"policy": {"name": "x", "shared": True}}),  # wildcard RBAC: admin
        ("PUT", f"{POLICIES}/{mine['id']}", {"policy": {"shared": True}}),
    ]
    for method, path, body in forbidden:
        tenv.rejected(method, path, body, status=403, type="PolicyNotAuthorized", token=ALICE)
    assert policy(tenv, token=ALICE, name="y", shared=False)["shared"] is False

    net = tenv.network(name="alices", token=ALICE)
    for policy_id in (bobs["id"], GHOST):
        tenv.rejected(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": net["id"], "qos_policy_id": policy_id}},
            status=404,
            type="QosPolicyNotFound",
            token=ALICE,
        )
        tenv.rejected(
            "PUT",
            f"/v2.0/networks/{net['id']}",
            {"network": {"qos_policy_id": policy_id}},
            status=404,
            type="QosPolicyNotFound",
            token=ALICE,
        )
    port = tenv.port(net["id"], token=ALICE, qos_policy_id=shared["id"])
    assert port["qos_policy_id"] == shared["id"]
    tenv.ok(
        "PUT",
        f"/v2.0/networks/{net['id']}",
        {"network": {"qos_policy_id": mine["id"]}},
        token=ALICE,
    )

    # unsharing while alice depends on it is refused; bob may not delete it either
    tenv.rejected(
        "PUT",
        f"{POLICIES}/{shared['id']}",
        {"policy": {"shared": False}},
        status=409,
        type="RbacPolicyInUse",
        token=ADMIN,
    )
    tenv.rejected(
        "DELETE", f"{POLICIES}/{shared['id']}", status=409, type="QosPolicyInUse", token=BOB
    )
    # an admin may attach bob's private policy to alice's port; alice cannot then detach it
    tenv.ok(
        "PUT", f"/v2.0/ports/{port['id']}", {"port": {"qos_policy_id": bobs["id"]}}, token=ADMIN
    )
    tenv.rejected(
        "PUT",
        f"/v2.0/ports/{port['id']}",
        {"port": {"qos_policy_id": None}},
        status=403,
        type="PolicyRemoveAuthorizationError",
        token=ALICE,
    )
    tenv.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"qos_policy_id": None}}, token=ADMIN)
    tenv.ok("PUT", f"{POLICIES}/{shared['id']}", {"policy": {"shared": False}}, token=ADMIN)
    tenv.rejected(
        "GET", f"{POLICIES}/{shared['id']}", status=404, type="QosPolicyNotFound", token=ALICE
    )


# -- stock clients ------------------------------------------------------------------------
def test_openstacksdk_manages_policies_and_rules(env: Env) -> None:
    openstack = pytest.importorskip("openstack")
    serving = serve(env.app, "127.0.0.1", 0)
    url = serving.url
    try:
        conn = openstack.connect(
            auth_type="none", auth={"endpoint": url}, network_endpoint_override=url + "/v2.0/"
        )
        gold = conn.network.create_qos_policy(name="gold", description="fast")
        assert gold.name == "gold" and gold.rules == [] and gold.is_default is False
        limit = conn.network.create_qos_bandwidth_limit_rule(
            gold, max_kbps=1000, max_burst_kbps=100, direction="ingress"
        )
        assert (limit.max_kbps, limit.max_burst_kbps, limit.direction) == (1000, 100, "ingress")
        minimum = conn.network.create_qos_minimum_bandwidth_rule(gold, min_kbps=10)
        assert minimum.direction == "egress"
        mark = conn.network.create_qos_dscp_marking_rule(gold, dscp_mark=46)
        assert mark.dscp_mark == 46
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.network.create_qos_bandwidth_limit_rule(gold, max_kbps=5, direction="ingress")
        with pytest.raises(openstack.exceptions.BadRequestException):
            conn.network.create_qos_dscp_marking_rule(gold, dscp_mark=13)

        found = conn.network.find_qos_policy("gold", ignore_missing=False)
        assert found.id == gold.id and len(found.rules) == 3
        assert [r.id for r in conn.network.qos_bandwidth_limit_rules(gold)] == [limit.id]
        conn.network.update_qos_bandwidth_limit_rule(limit, gold, max_kbps=2000)
        assert conn.network.get_qos_bandwidth_limit_rule(limit, gold).max_kbps == 2000
        assert {t.type for t in conn.network.qos_rule_types()} == {
            "bandwidth_limit",
            "dscp_marking",
            "minimum_bandwidth",
        }

        net = conn.network.create_network(name="n")
        port = conn.network.create_port(network_id=net.id, qos_policy_id=gold.id)
        assert port.qos_policy_id == gold.id
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.network.delete_qos_policy(gold)
        conn.network.update_port(port, qos_policy_id=None)
        conn.network.update_qos_policy(gold, description="faster")
        assert conn.network.get_qos_policy(gold.id).description == "faster"
        conn.network.delete_qos_dscp_marking_rule(mark, gold)
        assert len(conn.network.get_qos_policy(gold.id).rules) == 2
        conn.network.delete_qos_policy(gold)
        assert list(conn.network.qos_policies()) == []
        assert env.store.latest().qos_rules == {}
    finally:
        serving.close()


def test_openstack_cli_qos_policy_and_rule_create(env: Env) -> None:
    with openstack_cli(env) as osc:
        osc("network", "qos", "policy", "create", "gold")
        created = json.loads(
            osc(
                "network",
                "qos",
                "rule",
                "create",
                "--type",
                "bandwidth-limit",
                "--max-kbps",
                "1000",
                "--max-burst-kbits",
                "100",
                "--egress",
                "gold",
                "-f",
                "json",
            )
        )
        assert created["max_kbps"] == 1000 and created["direction"] == "egress"
        osc(
            "network",
            "qos",
            "rule",
            "create",
            "--type",
            "dscp-marking",
            "--dscp-mark",
            "26",
            "gold",
        )
        listed = json.loads(osc("network", "qos", "rule", "list", "gold", "-f", "json"))
        assert sorted(r["Type"] for r in listed) == ["bandwidth_limit", "dscp_marking"]
        osc("network", "qos", "rule", "set", "--max-kbps", "3000", "gold", created["id"])
        shown = json.loads(osc("network", "qos", "policy", "show", "gold", "-f", "json"))
        assert shown["name"] == "gold" and len(shown["rules"]) == 2
    (gold,) = env.store.latest().qos_policies.values()
    limits = [r for r in env.store.latest().qos_rules.values() if r.type == "bandwidth_limit"]
    assert [(r.policy_id, r.max_kbps, r.max_burst_kbps, r.direction) for r in limits] == [
        (gold.id, 3000, 100, "egress")
    ]
