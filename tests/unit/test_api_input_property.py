"""Property: no text a client sends can hurt the store or another project (issue 9).

Random Unicode (every category, surrogates and NUL included) goes through every
writable string attribute of every resource, on create and on update, and as an
attribute name. Whatever the text, the answer is 2xx or 4xx (never 5xx), text
the store cannot carry is 400, accepted text reads back as sent, the controller's
store session is never dropped, and a bystander project writing from another thread
all along sees every one of its writes succeed.

String attributes are found from each Resource's `attrs` (a converter that takes
text and gives it back unchanged), so an attribute added later is covered without
editing this file. Real ovsdb-server (api_harness); bounded and derandomized.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
from api_harness import ADMIN, BOB, Env, l3_setup, start_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webob import Response

from controller.rest import qos
from controller.rest.errors import InvalidInput
from controller.rest.floatingips import FloatingIPs
from controller.rest.networks import Networks
from controller.rest.port_forwardings import PortForwardings
from controller.rest.ports import Ports
from controller.rest.resource import Resource
from controller.rest.routers import Routers
from controller.rest.security_groups import SecurityGroupRules, SecurityGroups
from controller.rest.subnets import Subnets
from controller.rest.validate import Attr

# Explicit cases first, then anything at all: st.characters() with no filter draws
# from every category, surrogates (Cs) and controls included.
EXPLICIT = ["\x00", "a\ud800b", "\udfff", "\uffff", "\ud800", "a\x00", "\u2028", "\ufffe"]
TEXT = st.one_of(st.sampled_from(EXPLICIT), st.text(st.characters(), max_size=40))
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROBE = "loom-probe"


def is_text(attr: Attr) -> bool:
    """A free-text attribute: its converter gives text back unchanged and refuses a number."""
    try:
        if attr.convert(PROBE) != PROBE:
            return False
    except InvalidInput:
        return False
    try:
        attr.convert(7)
    except InvalidInput:
        return True
    return False


def string_attrs(resource: Resource, *, create: bool) -> list[str]:
    return sorted(
        a.name for a in resource.attrs.values() if (a.post if create else a.put) and is_text(a)
    )


# Every collection with writable attributes; test_every_collection_is_exercised checks
# this against what the app serves, so a new collection cannot be silently left out.
RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Networks(),
        Subnets(),
        Ports(),
        SecurityGroups(),
        SecurityGroupRules(),
        Routers(),
        FloatingIPs(),
        PortForwardings("any"),
        qos.POLICIES,
        *(cls("any") for cls in qos.RULE_COLLECTIONS.values()),
    )
}
CREATE_CASES = [p for p, r in RESOURCES.items() if string_attrs(r, create=True)]
UPDATE_CASES = [p for p, r in RESOURCES.items() if string_attrs(r, create=False)]


# -- what to create, where, and what to update, per collection ------------------------
@dataclass
class Target:
    """How to reach one collection: its URL, a minimal create body, an object to update."""

    collection: str
    base: Callable[[int], dict[str, Any]]
    update_id: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    update_collection: Optional[str] = None  # where update_id lives, if not `collection`

    def item(self, attr: Optional[str], n: int) -> dict[str, Any]:
        return {**self.base(n), **self.overrides.get(attr or "", {})}


@dataclass
class World:
    env: Env
    targets: dict[str, Target]  # by Resource.plural


@dataclass
class Bystander:
    """Another project writing all along: it must never notice the hostile client."""

    env: Env
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    rounds: int = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            self._round(n)
            self.rounds += 1
            self.stop.wait(0.005)

    def _round(self, n: int) -> None:
        resp = self._call("POST", "/v2.0/security-groups", {"security_group": {"name": f"b{n}"}})
        if resp.status_int != 201:
            return
        path = f"/v2.0/security-groups/{resp.json['security_group']['id']}"
        self._call("PUT", path, {"security_group": {"name": f"b{n}-renamed"}})
        self._call("DELETE", path)

    def _call(self, method: str, path: str, body: Any = None) -> Response:
        resp = self.env.call(method, path, body, token=BOB)
        if resp.status_int >= 300:
            self.failures.append(f"{method} {path}: {resp.status} {resp.text[:200]}")
        return resp


def session(env: Env) -> tuple[int, int]:
    """(connection losses, python-ovs session seqno): both move if the store session drops."""
    return env.store.health()["connection_losses"], env.store._idl._session.get_seqno()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = start_env(tmp_path_factory.mktemp("property") / "state", tokens=True)
    net = env.network(name="n")
    subnet_net = env.network(name="for-subnets")
    subnet = env.subnet(net["id"], "10.0.0.0/24")
    port = env.port(net["id"])
    sg = env.ok(
        "POST", "/v2.0/security-groups", {"security_group": {"name": "sg"}}, 201, token=ADMIN
    )["security_group"]
    rule = env.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": sg["id"],
                "direction": "ingress",
                "protocol": "tcp",
            }
        },
        201,
        token=ADMIN,
    )["security_group_rule"]
    policy = env.ok("POST", "/v2.0/qos/policies", {"policy": {"name": "q"}}, 201, token=ADMIN)[
        "policy"
    ]
    rules_policy = env.ok(
        "POST", "/v2.0/qos/policies", {"policy": {"name": "rules"}}, 201, token=ADMIN
    )["policy"]
    rule_bodies = {
        "bandwidth_limit_rules": {"max_kbps": 1000},
        "minimum_bandwidth_rules": {"min_kbps": 100},
        "dscp_marking_rules": {"dscp_mark": 8},
    }
    router = env.ok("POST", "/v2.0/routers", {"router": {"name": "r"}}, 201,
                    token=ADMIN)["router"]
    l3 = l3_setup(env, cidr="10.66.0.0/24")  # an external network, a routed guest port
    fip = env.ok("POST", "/v2.0/floatingips", {"floatingip": {
        "floating_network_id": l3.ext["id"]}}, 201, token=ADMIN)["floatingip"]
    pf_fip = env.ok("POST", "/v2.0/floatingips", {"floatingip": {
        "floating_network_id": l3.ext["id"]}}, 201, token=ADMIN)["floatingip"]
    pfs = f"/v2.0/floatingips/{pf_fip['id']}/port_forwardings"

    def forwarding(n: int, external: int = 2222) -> dict[str, Any]:
        return {"protocol": "tcp", "external_port": external, "internal_port": external,
                "internal_ip_address": l3.vm["fixed_ips"][0]["ip_address"],
                "internal_port_id": l3.vm["id"]}

    pf = env.ok("POST", pfs, {"port_forwarding": forwarding(0, 80)}, 201,
                token=ADMIN)["port_forwarding"]
    targets = {
        "routers": Target("/v2.0/routers", lambda n: {}, router["id"]),
        "floatingips": Target("/v2.0/floatingips",
                              lambda n: {"floating_network_id": l3.ext["id"]}, fip["id"]),
        "port_forwardings": Target(pfs, forwarding, pf["id"]),
        "networks": Target(
            "/v2.0/networks",
            lambda n: {},
            net["id"],
            {"provider:physical_network": {"provider:network_type": "vlan"}},
        ),
        "subnets": Target(
            "/v2.0/subnets",
            lambda n: {"network_id": subnet_net["id"], "cidr": "10.77.0.0/24"},
            subnet["id"],
        ),
        "ports": Target("/v2.0/ports", lambda n: {"network_id": net["id"]}, port["id"]),
        "security_groups": Target("/v2.0/security-groups", lambda n: {}, sg["id"]),
        "security_group_rules": Target(
            "/v2.0/security-group-rules",
            lambda n: {"security_group_id": sg["id"], "direction": "egress", "protocol": "udp"},
            rule["id"],
        ),
        "policies": Target("/v2.0/qos/policies", lambda n: {}, policy["id"]),
    }
    for plural, body in rule_bodies.items():
        made = env.ok(
            "POST",
            f"/v2.0/qos/policies/{policy['id']}/{plural}",
            {plural[:-1]: body},
            201,
            token=ADMIN,
        )[plural[:-1]]
        targets[plural] = Target(  # created in a policy of their own: one rule per type
            f"/v2.0/qos/policies/{rules_policy['id']}/{plural}",
            lambda n, body=body: dict(body),
            made["id"],
            update_collection=f"/v2.0/qos/policies/{policy['id']}/{plural}",
        )
    missing = sorted(set(RESOURCES) - set(targets))
    assert not missing, f"add a Target for the new collection(s) {missing}"
    yield World(env, targets)
    env.close()


@pytest.fixture(scope="module")
def bystander(world: World) -> Iterator[Bystander]:
    b = Bystander(world.env)
    thread = threading.Thread(target=b.run, name="bystander", daemon=True)
    thread.start()
    yield b
    b.stop.set()
    thread.join(10)
    assert b.failures == [], b.failures[:5]


# -- the checks made on every answer ------------------------------------------------------
def check_answer(
    world: World, bystander: Bystander, before: tuple[int, int], resp: Response, text: str
) -> None:
    status = resp.status_int
    assert 200 <= status < 500, f"{resp.status}: {resp.text[:300]}"
    if status >= 400:
        error = resp.json["NeutronError"]
        assert set(error) == {"type", "message", "detail"}, error
    if UNSTORABLE.search(text):
        assert status == 400, f"unstorable {ascii(text)} answered {resp.status}"
    assert session(world.env) == before, "the store connection was dropped"
    assert bystander.failures == [], bystander.failures[:3]


def create(world: World, plural: str, item: dict[str, Any]) -> Response:
    target = world.targets[plural]
    singular = RESOURCES[plural].singular
    return world.env.call("POST", target.collection, {singular: item}, token=ADMIN)


def cleanup(world: World, plural: str, resp: Response) -> None:
    """Delete what a successful create made, so the next example starts from the same store."""
    if resp.status_int != 201:
        return
    singular = RESOURCES[plural].singular
    obj_id = resp.json[singular]["id"]
    done = world.env.call("DELETE", f"{world.targets[plural].collection}/{obj_id}", token=ADMIN)
    assert done.status_int == 204, done.text


def update_path(world: World, plural: str) -> str:
    target = world.targets[plural]
    return f"{target.update_collection or target.collection}/{target.update_id}"


def test_every_collection_is_exercised(world: World) -> None:
    """RESOURCES holds every collection the app serves, and the probe finds the text attrs."""
    served = {r.plural for r in world.env.app.resources.values()} | {qos.POLICIES.plural}
    served |= {cls.plural for cls in qos.RULE_COLLECTIONS.values()}
    served |= {PortForwardings.plural}  # (under /v2.0/floatingips/<id>/)
    assert set(RESOURCES) == served
    assert {"name", "description", "project_id"} <= set(string_attrs(Networks(), create=True))
    assert "device_owner" in string_attrs(Ports(), create=True)
    assert "name" in string_attrs(qos.POLICIES, create=False)
    assert "admin_state_up" not in string_attrs(Ports(), create=True)  # a boolean


class Outcomes:
    """Statuses seen by one property: it is vacuous unless some text was stored."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    def check(self) -> None:
        assert any(s < 300 for s in self.statuses), "no example was ever accepted"
        assert 400 in self.statuses, "no example was ever refused"


# -- the properties ------------------------------------------------------------------
@pytest.mark.parametrize("plural", CREATE_CASES)
def test_any_text_in_any_string_attribute_on_create(
    world: World, bystander: Bystander, plural: str
) -> None:
    attrs = string_attrs(RESOURCES[plural], create=True)
    seen = Outcomes()

    @SETTINGS
    @given(attr=st.sampled_from(attrs), text=TEXT)
    def prop(attr: str, text: str) -> None:
        before = session(world.env)
        item = {**world.targets[plural].item(attr, 0), attr: text}
        resp = create(world, plural, item)
        seen.statuses.append(resp.status_int)
        check_answer(world, bystander, before, resp, text)
        if resp.status_int == 201:
            view = resp.json[RESOURCES[plural].singular]
            if text and isinstance(view.get(attr), str):  # "" may mean "the default"
                assert view[attr] == text, "accepted text must read back as sent"
        cleanup(world, plural, resp)

    prop()


@pytest.mark.parametrize("plural", UPDATE_CASES)
def test_any_text_in_any_string_attribute_on_update(
    world: World, bystander: Bystander, plural: str
) -> None:
    resource = RESOURCES[plural]
    attrs = string_attrs(resource, create=False)
    seen = Outcomes()

    @SETTINGS
    @given(attr=st.sampled_from(attrs), text=TEXT)
    def prop(attr: str, text: str) -> None:
        before = session(world.env)
        resp = world.env.call(
            "PUT", update_path(world, plural), {resource.singular: {attr: text}}, token=ADMIN
        )
        seen.statuses.append(resp.status_int)
        check_answer(world, bystander, before, resp, text)
        if resp.status_int == 200:
            assert resp.json[resource.singular][attr] == text

    prop()
    seen.check()


@pytest.mark.parametrize("plural", sorted(RESOURCES))
def test_any_text_as_an_attribute_name(world: World, bystander: Bystander, plural: str) -> None:
    """Keys are strings too: every collection, rules included, refuses them without harm."""

    @SETTINGS
    @given(text=TEXT)
    def prop(text: str) -> None:
        before = session(world.env)
        resp = create(world, plural, {**world.targets[plural].item(None, 0), text: "x"})
        check_answer(world, bystander, before, resp, text)
        cleanup(world, plural, resp)

    prop()


@pytest.mark.parametrize("plural", CREATE_CASES)
def test_explicit_hostile_text_in_every_string_attribute(
    world: World, bystander: Bystander, plural: str
) -> None:
    """Every EXPLICIT value in every string attribute, create and update: no sampling."""
    resource = RESOURCES[plural]
    for attr in string_attrs(resource, create=True):
        for text in EXPLICIT:
            before = session(world.env)
            resp = create(world, plural, {**world.targets[plural].item(attr, 0), attr: text})
            check_answer(world, bystander, before, resp, text)
            cleanup(world, plural, resp)
    for attr in string_attrs(resource, create=False):
        for text in EXPLICIT:
            before = session(world.env)
            resp = world.env.call(
                "PUT", update_path(world, plural), {resource.singular: {attr: text}}, token=ADMIN
            )
            check_answer(world, bystander, before, resp, text)


def test_the_bystander_kept_writing(world: World, bystander: Bystander) -> None:
    """Runs last: the bystander really wrote concurrently, and every write succeeded."""
    assert bystander.rounds > 10, bystander.rounds
    assert bystander.failures == []
