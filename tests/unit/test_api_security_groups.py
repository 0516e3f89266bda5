"""Security groups and rules through the REST API, with Neutron's semantics.

Default group made on first need (and only once, even under concurrency), rule
validation and canonical forms, duplicates, tenant isolation, ports' defaults and
port security, and stock clients (openstacksdk, the `openstack` CLI) against it.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import pytest
from api_harness import ADMIN, ALICE, BOB, Env, openstack_cli

from controller import intent as model
from controller.rest.server import serve
from controller.store.allocations import cleared

GHOST = "00000000-0000-4000-8000-00000000dead"
SG = "/v2.0/security-groups"
RULES = "/v2.0/security-group-rules"


def group(env: Env, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    return env.ok("POST", SG, {"security_group": attrs}, 201, token=token)["security_group"]  # type: ignore[no-any-return]


def rule(env: Env, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    body = {"security_group_rule": attrs}
    return env.ok("POST", RULES, body, 201, token=token)["security_group_rule"]  # type: ignore[no-any-return]


def shape(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["direction"],
        r["ethertype"],
        r["protocol"],
        r["remote_ip_prefix"],
        r["remote_group_id"],
    )


def defaults_of(env: Env, project: str) -> list[model.SecurityGroup]:
    return [
        g
        for g in env.store.latest().security_groups.values()
        if g.project_id == project and g.name == "default"
    ]


# -- the default group ----------------------------------------------------------------
def test_first_list_creates_the_default_group_with_neutrons_rules(env: Env) -> None:
    assert env.store.latest().security_groups == {}
    groups = env.ok("GET", SG)["security_groups"]
    assert len(groups) == 1
    sg = groups[0]
    assert sg["name"] == "default" and sg["description"] == "Default security group"
    assert sg["project_id"] == sg["tenant_id"] == "default"
    assert sg["stateful"] is True and sg["revision_number"] == 1 and sg["shared"] is False
    assert sg["created_at"].endswith("Z") and sg["tags"] == []
    assert sorted(shape(r) for r in sg["security_group_rules"]) == [
        ("egress", "IPv4", None, None, None),
        ("egress", "IPv6", None, None, None),
        ("ingress", "IPv4", None, None, sg["id"]),
        ("ingress", "IPv6", None, None, sg["id"]),
    ]
    assert all(r["belongs_to_default_sg"] for r in sg["security_group_rules"])
    # listing again (groups or rules) makes nothing new
    generation = env.store.latest().generation
    assert env.ok("GET", SG)["security_groups"] == groups
    assert len(env.ok("GET", RULES)["security_group_rules"]) == 4
    assert env.store.latest().generation == generation
    assert len(env.store.latest().security_group_rules) == 4


def test_listing_rules_first_also_creates_the_default_group(env: Env) -> None:
    rules = env.ok("GET", RULES)["security_group_rules"]
    assert len(rules) == 4 and len(defaults_of(env, "default")) == 1


def test_a_rejected_list_creates_nothing(env: Env) -> None:
    env.rejected("GET", f"{SG}?colour=red", status=400, type="InvalidInput")
    env.rejected("GET", f"{RULES}?sort_key=nope", status=400, type="InvalidInput")
    assert env.store.latest().security_groups == {}


def test_creating_a_group_or_a_port_creates_the_default_group(env: Env) -> None:
    web = group(env, name="web")
    assert len(defaults_of(env, "default")) == 1
    # every new group gets Neutron's two egress rules
    assert sorted(shape(r) for r in web["security_group_rules"]) == [
        ("egress", "IPv4", None, None, None),
        ("egress", "IPv6", None, None, None),
    ]
    assert not any(r["belongs_to_default_sg"] for r in web["security_group_rules"])


def test_each_project_gets_its_own_default_and_sees_only_it(tenv: Env) -> None:
    a = tenv.ok("GET", SG, token=ALICE)["security_groups"]
    b = tenv.ok("GET", SG, token=BOB)["security_groups"]
    assert [g["project_id"] for g in a] == ["alice"] and [g["project_id"] for g in b] == ["bob"]
    assert a[0]["id"] != b[0]["id"]
    # admin sees all, and its own project's default appears on its first list
    everyone = tenv.ok("GET", SG, token=ADMIN)["security_groups"]
    assert sorted(g["project_id"] for g in everyone) == ["alice", "bob", "ops"]
    # an admin filtering on a project makes that project's default, as Neutron does
    carol = tenv.ok("GET", f"{SG}?project_id=carol", token=ADMIN)["security_groups"]
    assert [(g["name"], g["project_id"]) for g in carol] == [("default", "carol")]


def test_concurrent_first_requests_make_one_default_group(env: Env) -> None:
    net = env.network(name="n")
    env.subnet(net["id"], "10.0.0.0/24")
    statuses: list[int] = []
    lock = threading.Lock()

    def hit(i: int) -> None:
        if i % 3 == 0:
            resp = env.call("GET", SG)
        elif i % 3 == 1:
            resp = env.call("POST", SG, {"security_group": {"name": f"g{i}"}})
        else:
            resp = env.call("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
        with lock:
            statuses.append(resp.status_int)

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(set(statuses)) == [200, 201]
    defaults = defaults_of(env, "default")
    assert len(defaults) == 1
    ports = env.store.latest().ports.values()
    assert len(ports) == 4 and all(p.security_groups == (defaults[0].id,) for p in ports)


# -- groups -----------------------------------------------------------------------------
def test_group_show_update_delete(env: Env) -> None:
    web = group(env, name="web", description="http")
    assert env.ok("GET", f"{SG}/{web['id']}")["security_group"] == web
    updated = env.ok("PUT", f"{SG}/{web['id']}", {"security_group": {"name": "www"}})
    sg = updated["security_group"]
    assert sg["name"] == "www" and sg["description"] == "http"
    assert sg["revision_number"] == web["revision_number"] + 1
    assert env.store.latest().security_groups[web["id"]].name == "www"
    env.ok("DELETE", f"{SG}/{web['id']}", status=204)
    assert web["id"] not in env.store.latest().security_groups
    assert not any(
        r.security_group_id == web["id"] for r in env.store.latest().security_group_rules.values()
    )
    env.rejected("GET", f"{SG}/{web['id']}", status=404, type="SecurityGroupNotFound")


def test_default_name_is_reserved(env: Env) -> None:
    web = group(env, name="web")
    default = defaults_of(env, "default")[0]
    for name in ("default", "Default"):
        env.rejected(
            "POST",
            SG,
            {"security_group": {"name": name}},
            status=409,
            type="SecurityGroupDefaultAlreadyExists",
        )
        env.rejected(
            "PUT",
            f"{SG}/{web['id']}",
            {"security_group": {"name": name}},
            status=409,
            type="SecurityGroupDefaultAlreadyExists",
        )
    env.rejected(
        "PUT",
        f"{SG}/{default.id}",
        {"security_group": {"name": "x"}},
        status=409,
        type="SecurityGroupCannotUpdateDefault",
    )
    # its description may change
    env.ok("PUT", f"{SG}/{default.id}", {"security_group": {"description": "d"}})


def test_group_attribute_errors(env: Env) -> None:
    web = group(env, name="web")
    env.rejected(
        "POST", SG, {"security_group": {"stateful": False}}, status=400, type="InvalidInput"
    )
    env.rejected("POST", SG, {"security_group": {"id": GHOST}}, status=400, type="InvalidInput")
    env.rejected("POST", SG, {"security_group": {"name": 5}}, status=400, type="InvalidInput")
    env.rejected(
        "PUT",
        f"{SG}/{web['id']}",
        {"security_group": {"project_id": "x"}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "PUT",
        f"{SG}/{web['id']}",
        {"security_group": {"security_group_rules": []}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "PUT",
        f"{SG}/{GHOST}",
        {"security_group": {"name": "x"}},
        status=404,
        type="SecurityGroupNotFound",
    )


def test_group_in_use_by_a_port_cannot_be_deleted(env: Env) -> None:
    net = env.network(name="n")
    web = group(env, name="web")
    port = env.port(net["id"], security_groups=[web["id"]])
    err = env.rejected("DELETE", f"{SG}/{web['id']}", status=409, type="SecurityGroupInUse")
    assert err["message"] == f"Security Group {web['id']} in use."
    env.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"security_groups": []}})
    env.ok("DELETE", f"{SG}/{web['id']}", status=204)


def test_default_group_delete_needs_admin(tenv: Env) -> None:
    default = tenv.ok("GET", SG, token=ALICE)["security_groups"][0]
    tenv.rejected(
        "DELETE",
        f"{SG}/{default['id']}",
        status=409,
        type="SecurityGroupCannotRemoveDefault",
        token=ALICE,
    )
    tenv.ok("DELETE", f"{SG}/{default['id']}", status=204, token=ADMIN)
    # it comes back on next need, as in Neutron
    again = tenv.ok("GET", SG, token=ALICE)["security_groups"]
    assert [g["name"] for g in again] == ["default"]


def test_deleting_a_group_deletes_rules_naming_it_as_remote(env: Env) -> None:
    web = group(env, name="web")
    db = group(env, name="db")
    r = rule(
        env,
        security_group_id=db["id"],
        direction="ingress",
        protocol="tcp",
        port_range_min=5432,
        port_range_max=5432,
        remote_group_id=web["id"],
    )
    before = env.ok("GET", f"{SG}/{db['id']}")["security_group"]["revision_number"]
    env.ok("DELETE", f"{SG}/{web['id']}", status=204)
    assert r["id"] not in env.store.latest().security_group_rules
    assert env.ok("GET", f"{SG}/{db['id']}")["security_group"]["revision_number"] == before + 1


def test_filters_fields_and_sorting(env: Env) -> None:
    group(env, name="web")
    group(env, name="db")
    names = [g["name"] for g in env.ok("GET", f"{SG}?sort_key=name")["security_groups"]]
    assert names == ["db", "default", "web"]
    only = env.ok("GET", f"{SG}?name=default&fields=id&fields=name")["security_groups"]
    assert len(only) == 1 and set(only[0]) == {"id", "name"}
    assert env.ok("GET", f"{SG}?name=web&name=db")["security_groups"].__len__() == 2


# -- rules ------------------------------------------------------------------------------
def test_rule_create_show_list_delete(env: Env) -> None:
    web = group(env, name="web")
    r = rule(
        env,
        security_group_id=web["id"],
        direction="ingress",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="10.0.0.0/8",
        description="ssh",
    )
    assert r["ethertype"] == "IPv4" and r["protocol"] == "tcp" and r["description"] == "ssh"
    assert (r["port_range_min"], r["port_range_max"]) == (22, 22)
    assert r["remote_ip_prefix"] == r["normalized_cidr"] == "10.0.0.0/8"
    assert r["project_id"] == r["tenant_id"] == "default" and r["revision_number"] == 1
    assert r["remote_group_id"] is None and r["belongs_to_default_sg"] is False
    assert env.ok("GET", f"{RULES}/{r['id']}")["security_group_rule"] == r
    stored = cleared(env.store.latest().security_group_rules[r["id"]])  # conj_id aside
    assert stored == model.SecurityGroupRule(
        id=r["id"],
        project_id="default",
        security_group_id=web["id"],
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="10.0.0.0/8",
        description="ssh",
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        revision_number=1,
    )
    sg = env.ok("GET", f"{SG}/{web['id']}")["security_group"]
    assert r in sg["security_group_rules"] and sg["revision_number"] == web["revision_number"] + 1
    mine = env.ok("GET", f"{RULES}?security_group_id={web['id']}&direction=ingress")
    assert [x["id"] for x in mine["security_group_rules"]] == [r["id"]]
    assert [x["id"] for x in env.ok("GET", f"{RULES}?protocol=TCP")["security_group_rules"]] == [
        r["id"]
    ]
    env.ok("DELETE", f"{RULES}/{r['id']}", status=204)
    assert r["id"] not in env.store.latest().security_group_rules
    assert env.ok("GET", f"{SG}/{web['id']}")["security_group"]["revision_number"] == (
        web["revision_number"] + 2
    )
    env.rejected("GET", f"{RULES}/{r['id']}", status=404, type="SecurityGroupRuleNotFound")
    env.rejected("DELETE", f"{RULES}/{r['id']}", status=404, type="SecurityGroupRuleNotFound")


@pytest.mark.parametrize(
    "given,stored",
    [
        (
            {"protocol": "TCP", "port_range_min": "80", "port_range_max": 8080},
            {"protocol": "tcp", "port_range_min": 80, "port_range_max": 8080},
        ),
        ({"protocol": 17, "port_range_min": 53, "port_range_max": 53}, {"protocol": "17"}),
        ({"protocol": "6"}, {"protocol": "6", "port_range_min": None}),
        ({"protocol": "47"}, {"protocol": "47"}),
        ({"protocol": "any"}, {"protocol": None}),
        ({"protocol": 0}, {"protocol": None}),
        ({"protocol": None, "ethertype": "ipv6"}, {"protocol": None, "ethertype": "IPv6"}),
        (
            {"protocol": "icmp", "port_range_min": 8, "port_range_max": 0},
            {"protocol": "icmp", "port_range_min": 8, "port_range_max": 0},
        ),
        ({"protocol": "icmp", "port_range_min": 3}, {"port_range_min": 3, "port_range_max": None}),
        ({"protocol": "icmp", "ethertype": "IPv6"}, {"protocol": "ipv6-icmp"}),
        (
            {"protocol": "icmpv6", "ethertype": "IPv6", "port_range_min": 135},
            {"protocol": "ipv6-icmp", "port_range_min": 135},
        ),
        ({"protocol": "ipv6-icmp", "ethertype": "IPv6"}, {"protocol": "ipv6-icmp"}),
        ({"protocol": "1", "ethertype": "IPv6"}, {"protocol": "58"}),
        ({"remote_ip_prefix": "192.168.1.77/24"}, {"remote_ip_prefix": "192.168.1.0/24"}),
        ({"remote_ip_prefix": "192.168.1.77"}, {"remote_ip_prefix": "192.168.1.77/32"}),
        (
            {"remote_ip_prefix": "2001:DB8::1/32", "ethertype": "IPv6"},
            {"remote_ip_prefix": "2001:db8::/32"},
        ),
    ],
)
def test_rule_canonical_forms(env: Env, given: dict[str, Any], stored: dict[str, Any]) -> None:
    web = group(env, name="web")
    r = rule(env, security_group_id=web["id"], direction="ingress", **given)
    assert {k: r[k] for k in stored} == stored
    obj = env.store.latest().security_group_rules[r["id"]]
    assert {k: getattr(obj, k) for k in stored} == stored


BAD_RULES = [
    # (attributes beyond group and direction, status, Neutron type)
    ({"port_range_min": 22, "port_range_max": 22}, 400, "SecurityGroupProtocolRequiredWithPorts"),
    (
        {"protocol": "47", "port_range_min": 1, "port_range_max": 2},
        400,
        "SecurityGroupInvalidProtocolForPort",
    ),
    (
        {"protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
        400,
        "SecurityGroupInvalidPortRange",
    ),
    ({"protocol": "udp", "port_range_min": 53}, 400, "SecurityGroupInvalidPortRange"),
    (
        {"protocol": "tcp", "port_range_min": 0, "port_range_max": 80},
        400,
        "SecurityGroupInvalidPortValue",
    ),
    ({"protocol": "tcp", "port_range_min": 1, "port_range_max": 65536}, 400, "InvalidInput"),
    ({"protocol": "tcp", "port_range_min": "x", "port_range_max": 2}, 400, "InvalidInput"),
    ({"protocol": "icmp", "port_range_min": 256}, 400, "SecurityGroupInvalidIcmpValue"),
    (
        {"protocol": "icmp", "port_range_min": 8, "port_range_max": 300},
        400,
        "SecurityGroupInvalidIcmpValue",
    ),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType"),
    ({"protocol": "icmpv6"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "58"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "bogus"}, 400, "InvalidInput"),
    ({"protocol": 256}, 400, "InvalidInput"),
    ({"protocol": True}, 400, "InvalidInput"),
    ({"ethertype": "IPv5"}, 400, "InvalidInput"),
    ({"remote_ip_prefix": "10.0.0.0/33"}, 400, "InvalidInput"),
    ({"remote_ip_prefix": "2001:db8::/32"}, 400, "SecurityGroupRuleParameterConflict"),
    (
        {"remote_ip_prefix": "10.0.0.0/8", "ethertype": "IPv6"},
        400,
        "SecurityGroupRuleParameterConflict",
    ),
    (
        {"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "{sg}"},
        400,
        "SecurityGroupRemoteGroupAndRemoteIpPrefix",
    ),
    ({"remote_group_id": GHOST}, 404, "SecurityGroupNotFound"),
    ({"remote_group_id": "nope"}, 400, "InvalidInput"),
    ({"id": GHOST}, 400, "InvalidInput"),
    ({"colour": "red"}, 400, "InvalidInput"),
]


@pytest.mark.parametrize("extra,status,type_", BAD_RULES)
def test_bad_rules_are_rejected_and_write_nothing(
    env: Env, extra: dict[str, Any], status: int, type_: str
) -> None:
    web = group(env, name="web")
    attrs = {"security_group_id": web["id"], "direction": "ingress"}
    attrs.update({k: v.format(sg=web["id"]) if isinstance(v, str) else v for k, v in extra.items()})
    env.rejected("POST", RULES, {"security_group_rule": attrs}, status=status, type=type_)


def test_rule_needs_an_existing_group_and_a_direction(env: Env) -> None:
    web = group(env, name="web")
    env.rejected(
        "POST",
        RULES,
        {"security_group_rule": {"direction": "ingress"}},
        status=400,
        type="HTTPBadRequest",
    )
    env.rejected(
        "POST",
        RULES,
        {"security_group_rule": {"security_group_id": web["id"]}},
        status=400,
        type="HTTPBadRequest",
    )
    env.rejected(
        "POST",
        RULES,
        {"security_group_rule": {"security_group_id": web["id"], "direction": "sideways"}},
        status=400,
        type="InvalidInput",
    )
    err = env.rejected(
        "POST",
        RULES,
        {"security_group_rule": {"security_group_id": GHOST, "direction": "ingress"}},
        status=404,
        type="SecurityGroupNotFound",
    )
    assert err["message"] == f"Security group {GHOST} does not exist"


def test_duplicate_rules_are_409(env: Env) -> None:
    web = group(env, name="web")
    base = {"security_group_id": web["id"], "direction": "ingress"}
    ssh = rule(env, **base, protocol="tcp", port_range_min=22, port_range_max=22)
    same = [
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
        {"protocol": "6", "port_range_min": "22", "port_range_max": 22},
        {
            "protocol": "TCP",
            "port_range_min": 22,
            "port_range_max": 22,
            "remote_ip_prefix": "0.0.0.0/0",
            "description": "other words",
        },
    ]
    for attrs in same:
        err = env.rejected(
            "POST",
            RULES,
            {"security_group_rule": {**base, **attrs}},
            status=409,
            type="SecurityGroupRuleExists",
        )
        assert err["message"] == f"Security group rule already exists. Rule id is {ssh['id']}."
    # the group's own egress-anywhere rules count too
    env.rejected(
        "POST",
        RULES,
        {"security_group_rule": {**base, "direction": "egress"}},
        status=409,
        type="SecurityGroupRuleExists",
    )
    env.rejected(
        "POST",
        RULES,
        {
            "security_group_rule": {
                **base,
                "direction": "egress",
                "ethertype": "IPv6",
                "remote_ip_prefix": "::/0",
            }
        },
        status=409,
        type="SecurityGroupRuleExists",
    )
    # what differs is not a duplicate
    rule(env, **base, protocol="tcp", port_range_min=22, port_range_max=23)
    rule(env, **base, protocol="tcp", port_range_min=22, port_range_max=22, ethertype="IPv6")
    rule(
        env, **base, protocol="tcp", port_range_min=22, port_range_max=22, remote_group_id=web["id"]
    )


def test_rules_are_immutable(env: Env) -> None:
    web = group(env, name="web")
    r = rule(
        env,
        security_group_id=web["id"],
        direction="ingress",
        protocol="udp",
        port_range_min=53,
        port_range_max=53,
    )
    for body in ({"direction": "egress"}, {"description": "x"}, {"port_range_max": 54}, {}):
        env.rejected(
            "PUT",
            f"{RULES}/{r['id']}",
            {"security_group_rule": body},
            status=400,
            type="InvalidInput" if body else "HTTPBadRequest",
        )
    env.rejected(
        "PATCH",
        f"{RULES}/{r['id']}",
        {"security_group_rule": {}},
        status=405,
        type="HTTPMethodNotAllowed",
    )


def test_deleting_the_default_groups_rules_is_allowed(env: Env) -> None:
    sg = env.ok("GET", SG)["security_groups"][0]
    for r in sg["security_group_rules"]:
        env.ok("DELETE", f"{RULES}/{r['id']}", status=204)
    shown = env.ok("GET", f"{SG}/{sg['id']}")["security_group"]
    assert shown["security_group_rules"] == [] and shown["revision_number"] == 5


# -- tenant isolation -------------------------------------------------------------------
def test_members_cannot_see_or_touch_other_projects_groups_and_rules(tenv: Env) -> None:
    bobs = group(tenv, token=BOB, name="bobs")
    bob_rule = rule(
        tenv,
        token=BOB,
        security_group_id=bobs["id"],
        direction="ingress",
        protocol="tcp",
        port_range_min=80,
        port_range_max=80,
    )
    mine = group(tenv, token=ALICE, name="mine")
    assert {g["name"] for g in tenv.ok("GET", SG, token=ALICE)["security_groups"]} == {
        "default",
        "mine",
    }
    alice_rules = tenv.ok("GET", RULES, token=ALICE)["security_group_rules"]
    assert alice_rules and all(r["project_id"] == "alice" for r in alice_rules)
    hidden = [
        ("GET", f"{SG}/{bobs['id']}", None, "SecurityGroupNotFound"),
        ("PUT", f"{SG}/{bobs['id']}", {"security_group": {"name": "x"}}, "SecurityGroupNotFound"),
        ("DELETE", f"{SG}/{bobs['id']}", None, "SecurityGroupNotFound"),
        ("GET", f"{RULES}/{bob_rule['id']}", None, "SecurityGroupRuleNotFound"),
        ("DELETE", f"{RULES}/{bob_rule['id']}", None, "SecurityGroupRuleNotFound"),
        (
            "POST",
            RULES,
            {"security_group_rule": {"security_group_id": bobs["id"], "direction": "ingress"}},
            "SecurityGroupNotFound",
        ),
        (
            "POST",
            RULES,
            {
                "security_group_rule": {
                    "security_group_id": mine["id"],
                    "direction": "ingress",
                    "remote_group_id": bobs["id"],
                }
            },
            "SecurityGroupNotFound",
        ),
    ]
    for method, path, body, type_ in hidden:
        tenv.rejected(method, path, body, status=404, type=type_, token=ALICE)
    tenv.rejected(
        "POST",
        SG,
        {"security_group": {"name": "x", "project_id": "bob"}},
        status=403,
        type="PolicyNotAuthorized",
        token=ALICE,
    )
    tenv.rejected(
        "POST",
        RULES,
        {
            "security_group_rule": {
                "security_group_id": mine["id"],
                "direction": "ingress",
                "tenant_id": "bob",
            }
        },
        status=403,
        type="PolicyNotAuthorized",
        token=ALICE,
    )


def test_admin_creates_for_a_project_and_its_rules_are_visible_to_the_owner(tenv: Env) -> None:
    sg = group(tenv, token=ADMIN, name="ops-made", project_id="alice")
    assert sg["project_id"] == "alice"
    assert len(defaults_of(tenv, "alice")) == 1  # made for alice, not for the admin
    r = rule(tenv, token=ADMIN, security_group_id=sg["id"], direction="ingress", protocol="icmp")
    assert r["project_id"] == "ops"  # Neutron: the rule belongs to whoever made it...
    shown = tenv.ok("GET", f"{RULES}/{r['id']}", token=ALICE)["security_group_rule"]
    assert shown["id"] == r["id"]  # ...and the group's owner sees and may delete it
    tenv.ok("DELETE", f"{RULES}/{r['id']}", status=204, token=ALICE)


# -- ports ------------------------------------------------------------------------------
def test_port_defaults_and_port_security(env: Env) -> None:
    net = env.network(name="n")
    env.subnet(net["id"], "10.0.0.0/24")
    web = group(env, name="web")
    default_id = defaults_of(env, "default")[0].id

    assert env.port(net["id"])["security_groups"] == [default_id]
    assert env.port(net["id"], security_groups=None)["security_groups"] == [default_id]
    assert env.port(net["id"], security_groups=[])["security_groups"] == []
    assert env.port(net["id"], security_groups=[web["id"]])["security_groups"] == [web["id"]]
    off = env.port(net["id"], port_security_enabled=False)
    assert off["security_groups"] == []
    assert (
        env.port(net["id"], port_security_enabled=False, security_groups=[])["security_groups"]
        == []
    )
    router = env.port(net["id"], device_owner="network:router_interface")
    assert router["security_groups"] == []
    env.rejected(
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": net["id"],
                "port_security_enabled": False,
                "security_groups": [web["id"]],
            }
        },
        status=400,
        type="PortSecurityAndIPRequiredForSecurityGroups",
    )
    err = env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "security_groups": [GHOST]}},
        status=404,
        type="SecurityGroupNotFound",
    )
    assert err["message"] == f"Security group {GHOST} does not exist"

    # a port that has groups cannot lose port security unless the same request drops them
    p = env.port(net["id"])
    path = f"/v2.0/ports/{p['id']}"
    env.rejected(
        "PUT",
        path,
        {"port": {"port_security_enabled": False}},
        status=409,
        type="PortSecurityPortHasSecurityGroup",
    )
    env.rejected(
        "PUT",
        path,
        {"port": {"port_security_enabled": False, "security_groups": [web["id"]]}},
        status=400,
        type="PortSecurityAndIPRequiredForSecurityGroups",
    )
    done = env.ok("PUT", path, {"port": {"port_security_enabled": False, "security_groups": []}})
    assert done["port"]["port_security_enabled"] is False and done["port"]["security_groups"] == []
    env.rejected(
        "PUT",
        path,
        {"port": {"security_groups": [web["id"]]}},
        status=400,
        type="PortSecurityAndIPRequiredForSecurityGroups",
    )
    back = env.ok(
        "PUT",
        path,
        {"port": {"port_security_enabled": True, "security_groups": [web["id"], default_id]}},
    )
    assert back["port"]["security_groups"] == sorted([web["id"], default_id])
    assert env.ok("PUT", path, {"port": {"security_groups": None}})["port"]["security_groups"] == []


def test_port_cannot_use_another_projects_group(tenv: Env) -> None:
    net = tenv.network(name="shared", shared=True)
    bobs = group(tenv, token=BOB, name="bobs")
    for token in (ALICE, ADMIN):  # Neutron checks against the port's project, even for admin
        tenv.rejected(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": net["id"], "security_groups": [bobs["id"]]}},
            status=404,
            type="SecurityGroupNotFound",
            token=token,
        )
    port = tenv.port(net["id"], token=ALICE)
    alice_default = defaults_of(tenv, "alice")[0].id
    assert port["project_id"] == "alice" and port["security_groups"] == [alice_default]
    p = tenv.port(net["id"], token=ADMIN, project_id="bob", security_groups=[bobs["id"]])
    assert p["security_groups"] == [bobs["id"]]


# -- stock clients ----------------------------------------------------------------------
def test_openstacksdk_manages_groups_and_rules(env: Env) -> None:
    openstack = pytest.importorskip("openstack")
    serving = serve(env.app, "127.0.0.1", 0)
    url = serving.url
    try:
        conn = openstack.connect(
            auth_type="none", auth={"endpoint": url}, network_endpoint_override=url + "/v2.0/"
        )
        sg = conn.network.create_security_group(name="web", description="http")
        assert sg.name == "web" and len(sg.security_group_rules) == 2
        r = conn.network.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            protocol="tcp",
            port_range_min=80,
            port_range_max=80,
            remote_ip_prefix="0.0.0.0/0",
        )
        assert r.protocol == "tcp" and r.port_range_min == 80 and r.ether_type == "IPv4"
        assert sorted(g.name for g in conn.network.security_groups()) == ["default", "web"]
        assert conn.network.find_security_group("web").id == sg.id
        listed = list(conn.network.security_group_rules(security_group_id=sg.id))
        assert r.id in {x.id for x in listed} and len(listed) == 3
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.network.create_security_group_rule(
                security_group_id=sg.id,
                direction="ingress",
                protocol="tcp",
                port_range_min=80,
                port_range_max=80,
            )
        with pytest.raises(openstack.exceptions.BadRequestException):
            conn.network.create_security_group_rule(
                security_group_id=sg.id,
                direction="ingress",
                protocol="tcp",
                port_range_min=90,
                port_range_max=80,
            )
        conn.network.update_security_group(sg, description="https")
        assert conn.network.get_security_group(sg.id).description == "https"
        conn.network.delete_security_group_rule(r)
        conn.network.delete_security_group(sg)
        assert [g.name for g in conn.network.security_groups()] == ["default"]
        assert env.store.latest().security_groups.keys() == {defaults_of(env, "default")[0].id}
    finally:
        serving.close()


def test_openstack_cli_security_group_and_rule_create(env: Env) -> None:
    with openstack_cli(env) as osc:
        osc("security", "group", "create", "web")
        osc(
            "security",
            "group",
            "rule",
            "create",
            "--ingress",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "web",
        )
        out = osc(
            "security",
            "group",
            "rule",
            "list",
            "web",
            "-f",
            "value",
            "-c",
            "IP Protocol",
            "-c",
            "Port Range",
            "-c",
            "Direction",
        )
        assert "tcp 22:22 ingress" in out.splitlines()
    (web,) = [g for g in env.store.latest().security_groups.values() if g.name == "web"]
    rules = [
        r
        for r in env.store.latest().security_group_rules.values()
        if r.security_group_id == web.id and r.protocol == "tcp"
    ]
    assert [(r.port_range_min, r.port_range_max, r.direction) for r in rules] == [
        (22, 22, "ingress")
    ]
