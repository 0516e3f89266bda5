"""Every endpoint, walked with three tokens: an admin, the owning member, another member.

Each refusal must carry Neutron's error body and leave the store byte-identical
(`Env.rejected` compares ovsdb-client dumps), and must not reveal that the object
exists: a member of another project gets 404 for what it cannot see, exactly as
for an id that was never created.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_harness import ADMIN, ALICE, BOB, Env, start_env

UNKNOWN = "9c2a3e2f-1f0b-4a4e-9a53-2c1d9c0e7d11"
PROVIDER = ("provider:network_type", "provider:segmentation_id", "provider:physical_network")


@dataclass
class World:
    """Alice's objects, plus a shared network Alice owns with a port of Bob's on it."""

    network: dict[str, Any]
    subnet: dict[str, Any]
    port: dict[str, Any]
    group: dict[str, Any]
    rule: dict[str, Any]
    policy: dict[str, Any]
    bw_rule: dict[str, Any]
    shared: dict[str, Any]
    bobs_port_on_shared: dict[str, Any]
    bobs_network: dict[str, Any]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path / "state", tokens=True)
    yield e
    e.close()


@pytest.fixture
def world(env: Env) -> World:
    net = env.network(name="alice-net", token=ALICE)
    subnet = env.subnet(net["id"], "10.0.0.0/24", token=ALICE)
    group = env.ok(
        "POST", "/v2.0/security-groups", {"security_group": {"name": "web"}}, 201, token=ALICE
    )["security_group"]
    rule = env.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": group["id"],
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 80,
                "port_range_max": 80,
            }
        },
        201,
        token=ALICE,
    )["security_group_rule"]
    policy = env.ok(
        "POST", "/v2.0/qos/policies", {"policy": {"name": "bw"}}, 201, token=ALICE
    )["policy"]
    bw_rule = env.ok(
        "POST",
        f"/v2.0/qos/policies/{policy['id']}/bandwidth_limit_rules",
        {"bandwidth_limit_rule": {"max_kbps": 10000}},
        201,
        token=ALICE,
    )["bandwidth_limit_rule"]
    port = env.port(net["id"], name="alice-vm", token=ALICE)
    shared = env.network(name="shared", project_id="alice", shared=True)
    env.subnet(shared["id"], "10.9.0.0/24", project_id="alice")
    bobs_port = env.port(shared["id"], name="bob-vm", token=BOB)
    bobs_net = env.network(name="bob-net", token=BOB)
    env.subnet(bobs_net["id"], "10.0.0.0/24", token=BOB)  # the same range as Alice's
    return World(net, subnet, port, group, rule, policy, bw_rule, shared, bobs_port, bobs_net)


def _objects(w: World) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, update body) for each of Alice's objects; rules have no update."""
    qos_rule = f"/v2.0/qos/policies/{w.policy['id']}/bandwidth_limit_rules/{w.bw_rule['id']}"
    return [
        (f"/v2.0/networks/{w.network['id']}", "NetworkNotFound", {"network": {"name": "x"}}),
        (f"/v2.0/subnets/{w.subnet['id']}", "SubnetNotFound", {"subnet": {"name": "x"}}),
        (f"/v2.0/ports/{w.port['id']}", "PortNotFound", {"port": {"name": "x"}}),
        (
            f"/v2.0/security-groups/{w.group['id']}",
            "SecurityGroupNotFound",
            {"security_group": {"name": "x"}},
        ),
        (f"/v2.0/security-group-rules/{w.rule['id']}", "SecurityGroupRuleNotFound", {}),
        (f"/v2.0/qos/policies/{w.policy['id']}", "QosPolicyNotFound", {"policy": {"name": "x"}}),
        (qos_rule, "", {"bandwidth_limit_rule": {"max_kbps": 20000}}),
    ]


def test_another_member_gets_404_for_every_object_and_changes_nothing(
    env: Env, world: World
) -> None:
    for path, not_found_type, update in _objects(world):
        for method, body in (("GET", None), ("PUT", update or None), ("DELETE", None)):
            if method == "PUT" and not update:
                continue
            resp = env.call(method, path, body, token=BOB)
            assert resp.status_int == 404, f"{method} {path} as another member: {resp.status}"
            error = resp.json["NeutronError"]
            if not_found_type:
                assert error["type"] == not_found_type, (method, path, error)
            env.rejected(method, path, body, status=404, type=error["type"], token=BOB)
            # ...and the answer is the one an unknown id gets: nothing is revealed
            unknown_path = path.replace(path.rsplit("/", 1)[1], UNKNOWN)
            unknown = env.call(method, unknown_path, body, token=BOB)
            assert unknown.status_int == 404
            assert unknown.json["NeutronError"]["type"] == error["type"]


def test_another_member_lists_none_of_them(env: Env, world: World) -> None:
    w = world
    private = {o["id"] for o in (w.network, w.subnet, w.port, w.group, w.rule, w.policy)}
    for collection, key in (
        ("networks", "networks"),
        ("subnets", "subnets"),
        ("ports", "ports"),
        ("security-groups", "security_groups"),
        ("security-group-rules", "security_group_rules"),
        ("qos/policies", "policies"),
    ):
        listed = {o["id"] for o in env.ok("GET", f"/v2.0/{collection}", token=BOB)[key]}
        assert not listed & private, collection
    # what Alice shares stays visible: the shared network and its subnet
    seen = env.ok("GET", "/v2.0/networks", token=BOB)["networks"]
    assert w.shared["id"] in {n["id"] for n in seen}


def test_referring_to_another_projects_objects_is_404_like_an_unknown_id(
    env: Env, world: World
) -> None:
    w = world
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v2.0/ports", {"port": {"network_id": w.network["id"]}}, "NetworkNotFound"),
        (
            "/v2.0/subnets",
            {"subnet": {"network_id": w.network["id"], "cidr": "10.5.0.0/24"}},
            "NetworkNotFound",
        ),
        (
            "/v2.0/security-group-rules",
            {"security_group_rule": {"security_group_id": w.group["id"], "direction": "ingress"}},
            "SecurityGroupNotFound",
        ),
        (
            "/v2.0/ports",
            {"port": {"network_id": w.bobs_network["id"], "security_groups": [w.group["id"]]}},
            "SecurityGroupNotFound",
        ),
        (
            "/v2.0/ports",
            {"port": {"network_id": w.bobs_network["id"], "qos_policy_id": w.policy["id"]}},
            "QosPolicyNotFound",
        ),
        (
            # Alice's subnet in Bob's fixed_ips: 400 would tell Bob the subnet exists
            "/v2.0/ports",
            {
                "port": {
                    "network_id": w.bobs_network["id"],
                    "fixed_ips": [{"subnet_id": w.subnet["id"]}],
                }
            },
            "SubnetNotFound",
        ),
        (
            f"/v2.0/qos/policies/{w.policy['id']}/bandwidth_limit_rules",
            {"bandwidth_limit_rule": {"max_kbps": 1000}},
            "QosPolicyNotFound",
        ),
    ]
    for path, body, type_ in cases:
        env.rejected("POST", path, body, status=404, type=type_, token=BOB)


def test_unknown_subnet_and_invisible_subnet_in_fixed_ips_answer_alike(
    env: Env, world: World
) -> None:
    def answer(subnet_id: str) -> tuple[int, str]:
        body = {
            "port": {
                "network_id": world.bobs_network["id"],
                "fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.0.0.50"}],
            }
        }
        resp = env.call("POST", "/v2.0/ports", body, token=BOB)
        error = resp.json["NeutronError"]
        return resp.status_int, error["message"].replace(subnet_id, "<id>")

    assert answer(world.subnet["id"]) == answer(UNKNOWN)


def test_a_shared_networks_owner_sees_but_cannot_change_other_projects_ports(
    env: Env, world: World
) -> None:
    port_path = f"/v2.0/ports/{world.bobs_port_on_shared['id']}"
    assert env.ok("GET", port_path, token=ALICE)["port"]["project_id"] == "bob"
    hijacks: tuple[dict[str, Any], ...] = (
        {"port": {"security_groups": []}},
        {"port": {"port_security_enabled": False, "security_groups": []}},
        {"port": {"name": "hijacked"}},
    )
    for body in hijacks:
        env.rejected("PUT", port_path, body, status=403, type="PolicyNotAuthorized", token=ALICE)
    env.rejected("DELETE", port_path, status=403, type="PolicyNotAuthorized", token=ALICE)
    # the port's own project and an admin still may
    assert env.ok("PUT", port_path, {"port": {"name": "b2"}}, token=BOB)["port"]["name"] == "b2"
    assert env.ok("PUT", port_path, {"port": {"name": "b3"}}, token=ADMIN)["port"]["name"] == "b3"
    env.ok("DELETE", port_path, status=204, token=BOB)


def test_owner_and_admin_may_read_change_and_delete(env: Env, world: World) -> None:
    for token in (ALICE, ADMIN):
        for path, _, update in _objects(world):
            assert env.call("GET", path, token=token).status_int == 200, (token, path)
            if update:
                resp = env.call("PUT", path, update, token=token)
                assert resp.status_int == 200, (token, path, resp.text)
    # delete in dependency order, alternating owner and admin
    w = world
    deletions = [
        (f"/v2.0/ports/{w.port['id']}", ALICE),
        (f"/v2.0/security-group-rules/{w.rule['id']}", ADMIN),
        (f"/v2.0/security-groups/{w.group['id']}", ALICE),
        (f"/v2.0/qos/policies/{w.policy['id']}/bandwidth_limit_rules/{w.bw_rule['id']}", ADMIN),
        (f"/v2.0/qos/policies/{w.policy['id']}", ALICE),
        (f"/v2.0/subnets/{w.subnet['id']}", ADMIN),
        (f"/v2.0/networks/{w.network['id']}", ALICE),
    ]
    for path, token in deletions:
        resp = env.call("DELETE", path, token=token)
        assert resp.status_int == 204, (path, resp.text)
        assert env.call("GET", path, token=ADMIN).status_int == 404


def test_provider_attributes_are_shown_to_admins_only(env: Env, world: World) -> None:
    path = f"/v2.0/networks/{world.network['id']}"
    assert all(k in env.ok("GET", path, token=ADMIN)["network"] for k in PROVIDER)
    member_view = env.ok("GET", path, token=ALICE)["network"]
    assert not any(k in member_view for k in PROVIDER), member_view
    for net in env.ok("GET", "/v2.0/networks", token=ALICE)["networks"]:
        assert not any(k in net for k in PROVIDER)
    asked = env.ok("GET", f"{path}?fields=provider:segmentation_id&fields=id", token=ALICE)
    assert asked["network"] == {"id": world.network["id"]}
    # a member cannot find networks by segment either
    seg = env.ok("GET", path, token=ADMIN)["network"]["provider:segmentation_id"]
    found = env.ok("GET", f"/v2.0/networks?provider:segmentation_id={seg}", token=ALICE)
    assert found["networks"] == []


def test_health_gives_members_a_bare_status_and_admins_everything(
    env: Env, world: World
) -> None:
    member = env.ok("GET", "/v1/health", token=BOB)
    assert member == {"status": "ok", "store": {"connected": True}}
    admin = env.ok("GET", "/v1/health", token=ADMIN)
    assert admin["status"] == "ok"
    assert {"switches", "chassis", "store"} <= set(admin)
    assert admin["store"]["counts"]["ports"] == 2


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/switches"),
        ("GET", "/v1/switches/0000000000000001/flows"),
        ("GET", "/v1/topology"),
        ("GET", "/v1/topology.svg"),
        ("GET", "/v1/trace?port=x&dst_ip=10.0.0.1"),
        ("GET", "/v1/chassis"),
        ("GET", "/v1/chassis/hv1"),
        ("POST", "/v1/chassis"),
        ("DELETE", "/v1/chassis/hv1"),
        ("GET", "/topology"),
    ],
)
def test_admin_endpoints_are_invisible_to_members(
    env: Env, world: World, method: str, path: str
) -> None:
    body = {"chassis": {"remote": "tcp:127.0.0.1:6640"}} if method == "POST" else None
    for token in (ALICE, BOB):
        env.rejected(method, path, body, status=404, type="HTTPNotFound", token=token)
    env.rejected(method, path, body, status=401, type="HTTPUnauthorized")


def test_every_member_endpoint_needs_a_token(env: Env, world: World) -> None:
    for path, _, update in _objects(world):
        env.rejected("GET", path, status=401, type="HTTPUnauthorized")
        env.rejected("DELETE", path, status=401, type="HTTPUnauthorized")
        if update:
            env.rejected("PUT", path, update, status=401, type="HTTPUnauthorized")
    for path in ("/v1/health", "/v1/pipeline", "/v2.0/networks", "/v2.0/extensions"):
        env.rejected("GET", path, status=401, type="HTTPUnauthorized")
