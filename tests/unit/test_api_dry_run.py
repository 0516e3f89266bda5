"""?dry_run=true: a write validated and answered as the real one, nothing committed,
and its plan (issue 15), against a real ovsdb-server and the real incremental compiler
(no switch: the compiler's desired states stand in for the installed ones)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from api_harness import ADMIN, ALICE, Env, start_env

from controller.compiler.incremental import Compiler
from controller.intent import Intent
from controller.intent_delta import delta_between
from controller.plan import owner_resolver, what_if
from controller.runtime import Detached
from controller.topology import Binding, ChassisView, SwitchView, TopologyDelta, TopologyView

DPID = 0xA1


class CompilingRuntime(Detached):
    """A runtime whose compiler follows the store, as the engine's does, with one switch
    holding every port bound to it (`bind`)."""

    def __init__(self) -> None:
        self.compiler = Compiler()
        self.bindings: dict[str, Binding] = {}
        self.version = 1
        self.intent: Intent | None = None

    def view(self) -> TopologyView:
        return TopologyView(
            self.version, MappingProxyType({DPID: SwitchView(DPID, "hv1", "br-int")}),
            MappingProxyType(dict(self.bindings)),
            MappingProxyType({"hv1": ChassisView("hv1", "192.0.2.1", DPID)}),
            MappingProxyType({}))

    def follow(self, intent: Intent, bound: frozenset[str] = frozenset()) -> None:
        delta = None if self.intent is None else delta_between(self.intent, intent)
        tdelta = TopologyDelta(bindings=bound) if delta is not None else None
        self.version += 1
        self.compiler.update(intent, self.view(), delta, tdelta)
        self.intent = intent

    def bind(self, store: Any, port_id: str, ofport: int) -> None:
        self.bindings[port_id] = Binding(port_id, "hv1", "br-int", DPID, ofport, f"tap{ofport}")
        self.follow(store.latest(), frozenset({port_id}))

    def plan(self, after: Any) -> dict[str, Any]:
        out, same = what_if(self.compiler, after, owner_resolver)
        assert same, "the round trip changed the compiler's state"
        return out


@pytest.fixture
def denv(tmp_path: Path) -> Iterator[tuple[Env, CompilingRuntime]]:
    runtime = CompilingRuntime()
    env = start_env(tmp_path / "state", tokens=True, runtime=runtime)
    try:
        yield env, runtime
    finally:
        env.close()


def _setup(env: Env, rt: CompilingRuntime) -> tuple[dict, dict, dict]:
    net = env.network(name="n", token=ALICE)
    sub = env.subnet(net["id"], "10.0.0.0/24", token=ALICE)
    port = env.port(net["id"], token=ALICE, name="web-1")
    rt.follow(env.store.latest())
    rt.bind(env.store, port["id"], 10)
    return net, sub, port


def test_a_dry_run_answers_as_the_write_and_commits_nothing(
        denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    net, sub, _ = _setup(env, rt)
    before, generation = env.dump(), env.store.latest().generation
    resp = env.call("POST", "/v2.0/ports?dry_run=true", {"port": {
        "network_id": net["id"], "name": "db-1",
        "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.0.0.50"}]}}, token=ADMIN)
    assert resp.status_int == 201, resp.text
    assert resp.headers["X-Loom-Dry-Run"] == "true"
    assert "X-Loom-Generation" not in resp.headers
    port = resp.json["port"]
    assert port["name"] == "db-1" and port["fixed_ips"][0]["ip_address"] == "10.0.0.50"
    assert env.dump() == before, "a dry run changed the database"
    assert env.store.latest().generation == generation
    # the plan: the switch answers ARP for the new address (the network is on it)
    (switch,) = resp.json["plan"]["switches"]
    assert switch["datapath_id"] == f"{DPID:016x}"
    added = switch["flows"]["added"]
    assert added and not switch["flows"]["removed"]
    arp = [f for f in added if "arp_tpa=10.0.0.50" in f["flow"]]
    assert arp, added
    assert arp[0]["owner"] == {"kind": "port", "id": port["id"], "name": "db-1"}
    # the id is not taken: the real write may reuse nothing of it
    assert env.call("GET", f"/v2.0/ports/{port['id']}", token=ADMIN).status_int == 404


def test_the_plan_is_what_the_write_then_changes(denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    net, sub, port = _setup(env, rt)
    body = {"port": {"name": "renamed", "fixed_ips": [
        {"subnet_id": sub["id"], "ip_address": "10.0.0.77"}]}}
    planned = env.ok("PUT", f"/v2.0/ports/{port['id']}?dry_run=true", body, token=ADMIN)
    (switch,) = planned["plan"]["switches"]
    old = dict(rt.compiler.desired(DPID).flows)
    env.ok("PUT", f"/v2.0/ports/{port['id']}", body, token=ADMIN)
    rt.follow(env.store.latest())
    new = dict(rt.compiler.desired(DPID).flows)
    from controller import ofwire

    added = {ofwire.to_ofctl(new[k]) for k in new if k not in old}
    removed = {ofwire.to_ofctl(old[k]) for k in old if k not in new}
    modified = {ofwire.to_ofctl(new[k]) for k in new if k in old and new[k] != old[k]}
    assert {f["flow"] for f in switch["flows"]["added"]} == added
    assert {f["flow"] for f in switch["flows"]["removed"]} == removed
    assert {f["flow"] for f in switch["flows"]["modified"]} == modified
    assert added and removed  # the address moved: its flows with it


def test_a_dry_run_is_refused_exactly_where_the_write_is(
        denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    net, sub, port = _setup(env, rt)
    taken = {"port": {"network_id": net["id"], "fixed_ips": [
        {"subnet_id": sub["id"], "ip_address": port["fixed_ips"][0]["ip_address"]}]}}
    dry = env.rejected("POST", "/v2.0/ports?dry_run=true", taken, status=409,
                       type="IpAddressAlreadyAllocated", token=ADMIN)
    real = env.rejected("POST", "/v2.0/ports", taken, status=409,
                        type="IpAddressAlreadyAllocated", token=ADMIN)
    assert dry == real
    env.rejected("DELETE", f"/v2.0/networks/{net['id']}?dry_run=true", status=409,
                 type="NetworkInUse", token=ALICE)


def test_a_dry_run_delete_plans_the_flows_going_and_keeps_the_port(
        denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    _, _, port = _setup(env, rt)
    before = env.dump()
    planned = env.ok("DELETE", f"/v2.0/ports/{port['id']}?dry_run=true", token=ADMIN)
    (switch,) = planned["plan"]["switches"]
    assert switch["flows"]["removed"] and not switch["flows"]["added"]
    assert all(f["owner"]["kind"] in ("port", "pipeline", "network", "security_group_rule")
               for f in switch["flows"]["removed"])
    assert env.dump() == before


def test_a_member_sees_how_much_changes_not_the_flows(
        denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    net, _, _ = _setup(env, rt)
    planned = env.ok("POST", "/v2.0/ports?dry_run=true",
                     {"port": {"network_id": net["id"]}}, 201, token=ALICE)
    (switch,) = planned["plan"]["switches"]
    assert set(switch) == {"flows"} and switch["flows"]["added"] > 0


def test_several_writes_planned_as_one_what_if(denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    net, sub, port = _setup(env, rt)
    before = env.dump()

    def create(ip: str) -> dict[str, Any]:
        return {"method": "POST", "path": "/v2.0/ports", "body": {"port": {
            "network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": ip}]}}}

    planned = env.ok("POST", "/v1/plan", {"writes": [
        create("10.0.0.60"), create("10.0.0.61"),
        {"method": "PUT", "path": f"/v2.0/ports/{port['id']}",
         "body": {"port": {"name": "renamed"}}}]}, token=ADMIN)
    assert planned["writes"] == 3
    (switch,) = planned["plan"]["switches"]
    lines = "\n".join(f["flow"] for f in switch["flows"]["added"])
    assert "arp_tpa=10.0.0.60" in lines and "arp_tpa=10.0.0.61" in lines
    assert env.dump() == before
    # each write is validated after the ones before it: the second takes a taken address
    error = env.rejected("POST", "/v1/plan", {"writes": [create("10.0.0.70"),
                                                        create("10.0.0.70")]},
                         status=409, type="IpAddressAlreadyAllocated", token=ADMIN)
    assert error["message"].startswith("write 1")
    env.rejected("POST", "/v1/plan", {"writes": [{"method": "GET", "path": "/v2.0/ports"}]},
                 status=400, type="HTTPBadRequest", token=ADMIN)
    env.rejected("POST", "/v1/plan", {"writes": [create("10.0.0.80")]}, status=404,
                 type="HTTPNotFound", token=ALICE)
