"""Tokens and tenant isolation: who can see, create and change what."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import ADMIN, ALICE, BOB, Env, start_env

from controller.rest.auth import AuthConfigError, TokenAuth


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path / "state", tokens=True)
    yield e
    e.close()


@pytest.fixture
def alice_net(env: Env) -> dict[str, Any]:
    net = env.network(name="alice-net", token=ALICE)
    env.subnet(net["id"], "10.0.0.0/24", token=ALICE)
    return net


def test_no_or_unknown_token_is_401(env: Env) -> None:
    env.rejected("GET", "/v2.0/networks", status=401, type="HTTPUnauthorized")
    env.rejected(
        "POST", "/v2.0/networks", {"network": {"name": "x"}}, status=401, type="HTTPUnauthorized"
    )
    env.rejected(
        "GET", "/v2.0/networks", status=401, type="HTTPUnauthorized", token="not-a-known-token"
    )
    resp = env.call("GET", "/v2.0/networks")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    # discovery stays open so clients can find the API before authenticating
    assert env.call("GET", "/").status_int == 200 and env.call("GET", "/v2.0/").status_int == 200


def test_bearer_header_works(env: Env) -> None:
    resp = env.call("GET", "/v2.0/networks", headers={"Authorization": f"Bearer {ALICE}"})
    assert resp.status_int == 200


def test_member_creates_in_own_project(env: Env, alice_net: dict[str, Any]) -> None:
    assert alice_net["project_id"] == "alice"
    assert env.store.latest().networks[alice_net["id"]].project_id == "alice"


def test_member_cannot_see_or_touch_another_projects_objects(
    env: Env, alice_net: dict[str, Any]
) -> None:
    port = env.port(alice_net["id"], token=ALICE)
    net_id, port_id = alice_net["id"], port["id"]
    subnet_id = (
        alice_net["subnets"][0]
        if alice_net["subnets"]
        else env.ok("GET", f"/v2.0/networks/{net_id}", token=ALICE)["network"]["subnets"][0]
    )
    assert env.ok("GET", "/v2.0/networks", token=BOB)["networks"] == []
    assert env.ok("GET", "/v2.0/subnets", token=BOB)["subnets"] == []
    assert env.ok("GET", "/v2.0/ports", token=BOB)["ports"] == []
    assert env.ok("GET", f"/v2.0/ports?network_id={net_id}", token=BOB)["ports"] == []
    env.rejected("GET", f"/v2.0/networks/{net_id}", status=404, type="NetworkNotFound", token=BOB)
    env.rejected("GET", f"/v2.0/subnets/{subnet_id}", status=404, type="SubnetNotFound", token=BOB)
    env.rejected("GET", f"/v2.0/ports/{port_id}", status=404, type="PortNotFound", token=BOB)
    env.rejected(
        "PUT",
        f"/v2.0/networks/{net_id}",
        {"network": {"name": "pwned"}},
        status=404,
        type="NetworkNotFound",
        token=BOB,
    )
    env.rejected(
        "DELETE", f"/v2.0/networks/{net_id}", status=404, type="NetworkNotFound", token=BOB
    )
    env.rejected("DELETE", f"/v2.0/ports/{port_id}", status=404, type="PortNotFound", token=BOB)
    env.rejected(
        "PUT",
        f"/v2.0/ports/{port_id}",
        {"port": {"name": "x"}},
        status=404,
        type="PortNotFound",
        token=BOB,
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net_id}},
        status=404,
        type="NetworkNotFound",
        token=BOB,
    )
    env.rejected(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net_id, "cidr": "10.1.0.0/24"}},
        status=404,
        type="NetworkNotFound",
        token=BOB,
    )
    # 404 for someone else's object is indistinguishable from 404 for nothing at all
    ghost = env.call("GET", "/v2.0/networks/00000000-0000-4000-8000-000000000000", token=BOB).json
    real = env.call("GET", f"/v2.0/networks/{net_id}", token=BOB).json
    assert ghost["NeutronError"]["type"] == real["NeutronError"]["type"]


def test_member_cannot_create_for_another_project(env: Env) -> None:
    env.rejected(
        "POST",
        "/v2.0/networks",
        {"network": {"name": "x", "project_id": "bob"}},
        status=403,
        type="PolicyNotAuthorized",
        token=ALICE,
    )
    env.rejected(
        "POST",
        "/v2.0/networks",
        {"network": {"name": "x", "tenant_id": "bob"}},
        status=403,
        type="PolicyNotAuthorized",
        token=ALICE,
    )
    own = env.network(name="x", project_id="alice", token=ALICE)
    assert own["project_id"] == "alice"


def test_member_cannot_set_admin_only_attributes(env: Env, alice_net: dict[str, Any]) -> None:
    for attrs in (
        {"shared": True},
        {"provider:network_type": "vlan"},
        {"provider:segmentation_id": 77},
        {"router:external": True},
    ):
        env.rejected(
            "POST",
            "/v2.0/networks",
            {"network": attrs},
            status=403,
            type="PolicyNotAuthorized",
            token=ALICE,
        )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": alice_net["id"], "binding:host_id": "hv1"}},
        status=403,
        type="PolicyNotAuthorized",
        token=ALICE,
    )


def test_admin_sees_all_and_creates_for_any_project(env: Env, alice_net: dict[str, Any]) -> None:
    bob_net = env.network(name="for-bob", project_id="bob", token=ADMIN)
    assert bob_net["project_id"] == "bob"
    ids = {n["id"] for n in env.ok("GET", "/v2.0/networks", token=ADMIN)["networks"]}
    assert ids == {alice_net["id"], bob_net["id"]}
    assert [n["id"] for n in env.ok("GET", "/v2.0/networks", token=BOB)["networks"]] == [
        bob_net["id"]
    ]
    env.ok(
        "PUT", f"/v2.0/networks/{alice_net['id']}", {"network": {"name": "by-admin"}}, token=ADMIN
    )


def test_shared_network_visible_read_only_and_usable_for_ports(env: Env) -> None:
    shared = env.network(name="public", shared=True, token=ADMIN)
    env.subnet(shared["id"], "192.0.2.0/24", token=ADMIN)
    assert [n["id"] for n in env.ok("GET", "/v2.0/networks", token=BOB)["networks"]] == [
        shared["id"]
    ]
    assert len(env.ok("GET", "/v2.0/subnets", token=BOB)["subnets"]) == 1
    env.rejected(
        "PUT",
        f"/v2.0/networks/{shared['id']}",
        {"network": {"name": "mine"}},
        status=403,
        type="PolicyNotAuthorized",
        token=BOB,
    )
    port = env.port(shared["id"], token=BOB)
    assert port["project_id"] == "bob"
    assert env.ok("GET", "/v2.0/ports", token=ALICE)["ports"] == []
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": shared["id"], "fixed_ips": [{"ip_address": "192.0.2.9"}]}},
        status=403,
        type="PolicyNotAuthorized",
        token=BOB,
    )


def test_v1_topology_is_admin_only_but_health_is_for_any_token(env: Env) -> None:
    assert env.call("GET", "/v1/health", token=ALICE).status_int == 200
    assert env.call("GET", "/v1/switches", token=ADMIN).json == {"switches": []}
    env.rejected("GET", "/v1/switches", status=404, type="HTTPNotFound", token=ALICE)
    env.rejected("GET", "/v1/health", status=401, type="HTTPUnauthorized")


def test_token_file_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "tokens.yaml"
    y.write_text(
        "s3cret-admin-token: {project_id: ops, role: admin}\ntenant-a-token: {project_id: a}\n"
    )
    auth = TokenAuth.load(y)
    j = tmp_path / "tokens.json"
    j.write_text(json.dumps({"tokens": {"tenant-b-token": {"project_id": "b", "role": "member"}}}))
    assert TokenAuth.load(j)
    assert auth


@pytest.mark.parametrize(
    "content,needle",
    [
        ("just a string", "mapping"),
        ("short: {project_id: a}", "at least 8"),
        ("tenant-a-token: {project_id: a, role: owner}", "role"),
        ("tenant-a-token: {role: admin}", "project_id"),
        ("tenant-a-token: {project_id: a, colour: red}", "unknown key"),
        ("tenant-a-token: [1, 2", "not valid YAML"),
    ],
)
def test_bad_token_file_says_why(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(content)
    with pytest.raises(AuthConfigError) as err:
        TokenAuth.load(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="No such file"):
        TokenAuth.load(tmp_path / "nope.yaml")
