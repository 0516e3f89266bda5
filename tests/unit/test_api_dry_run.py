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

    gateway = False  # the chassis may carry routers' external gateways
    provider_ports: dict[tuple[int, str], int] = {}

    def __init__(self) -> None:
        self.compiler = Compiler()
        self.bindings: dict[str, Binding] = {}
        self.version = 1
        self.intent: Intent | None = None
        self.upstream: dict[tuple[int, int], int] = {}  # learnt upstream routers' MACs

    def view(self) -> TopologyView:
        return TopologyView(
            self.version, MappingProxyType({DPID: SwitchView(DPID, "hv1", "br-int")}),
            MappingProxyType(dict(self.bindings)),
            MappingProxyType({"hv1": ChassisView("hv1", "192.0.2.1", DPID,
                                                 gateway=self.gateway)}),
            MappingProxyType({}), MappingProxyType(dict(self.provider_ports)),
            mac_bindings=MappingProxyType(dict(self.upstream)))

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


def _web_and_db(env: Env, rt: CompilingRuntime) -> tuple[dict, dict, dict, dict]:
    """web-1 and db-1 on one network, db's group open to web's on tcp/3306 only."""
    net = env.network(name="n", token=ALICE)
    sub = env.subnet(net["id"], "10.0.0.0/24", token=ALICE)
    web_sg = env.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "web"}},
                    201, token=ALICE)["security_group"]
    db_sg = env.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "db"}},
                   201, token=ALICE)["security_group"]
    mysql = env.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": db_sg["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 3306, "port_range_max": 3306, "remote_group_id": web_sg["id"]}},
        201, token=ALICE)["security_group_rule"]
    web = env.port(net["id"], token=ALICE, name="web-1", security_groups=[web_sg["id"]])
    db = env.port(net["id"], token=ALICE, name="db-1", security_groups=[db_sg["id"]])
    rt.follow(env.store.latest())
    rt.bind(env.store, web["id"], 10)
    rt.bind(env.store, db["id"], 11)
    assert sub
    return web, db, mysql, db_sg


def test_removing_a_rule_plans_the_pairs_that_lose_reachability(
        denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    web, db, mysql, _ = _web_and_db(env, rt)
    planned = env.ok("DELETE", f"/v2.0/security-group-rules/{mysql['id']}?dry_run=true",
                     token=ADMIN)
    reach = planned["plan"]["reachability"]
    texts = [c["text"] for c in reach["changes"]]
    assert texts == ["web-1 → db-1 tcp/3306: allowed → denied"], reach
    (change,) = reach["changes"]
    assert change["from"]["port"] == web["id"] and change["to"]["port"] == db["id"]
    assert change["port_range"] == [3306, 3306] and change["ethertype"] == "IPv4"
    assert change["stopped_by"] == "ingress_acl default_deny"
    # the member who owns both ports sees the same change (not the flows)
    mine = env.ok("DELETE", f"/v2.0/security-group-rules/{mysql['id']}?dry_run=true",
                  token=ALICE)["plan"]["reachability"]["changes"]
    assert [c["text"] for c in mine] == texts


def test_a_wider_rule_plans_the_ranges_it_opens(denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    web, db, _, db_sg = _web_and_db(env, rt)
    planned = env.ok("POST", "/v2.0/security-group-rules?dry_run=true", {
        "security_group_rule": {"security_group_id": db_sg["id"], "direction": "ingress",
                                "protocol": "tcp", "port_range_min": 3000,
                                "port_range_max": 3999}}, 201, token=ADMIN)
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    # from anywhere now: web-1 gains 3000-3305 and 3307-3999 (3306 it had already)
    assert texts == ["web-1 → db-1 tcp/3000-3305: denied → allowed",
                     "web-1 → db-1 tcp/3307-3999: denied → allowed"], texts


def test_a_port_leaving_the_group_plans_its_own_loss(denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    web, db, _, _ = _web_and_db(env, rt)
    planned = env.ok("PUT", f"/v2.0/ports/{web['id']}?dry_run=true",
                     {"port": {"security_groups": []}}, token=ADMIN)
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    # web-1 without a group: nothing leaves it any more (no egress rule), and db-1 no
    # longer lets it in on 3306
    assert "web-1 → db-1 tcp/3306: allowed → denied" in texts, texts
    assert not any(c.startswith("db-1") and "denied → allowed" in c for c in texts), texts


def test_detaching_a_subnet_from_its_router_plans_the_routed_pairs_lost(
        denv: tuple[Env, CompilingRuntime]) -> None:
    env, rt = denv
    router = env.ok("POST", "/v2.0/routers", {"router": {"name": "r"}}, 201,
                    token=ALICE)["router"]
    ports = []
    for n in (1, 2):
        net = env.network(name=f"n{n}", token=ALICE)
        sub = env.subnet(net["id"], f"10.0.{n}.0/24", token=ALICE)
        env.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
               {"subnet_id": sub["id"]}, token=ALICE)
        ports.append((env.port(net["id"], token=ALICE, name=f"vm-{n}"), sub))
    rt.follow(env.store.latest())
    for ofport, (port, _) in enumerate(ports, start=10):
        rt.bind(env.store, port["id"], ofport)
    planned = env.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface?dry_run=true",
                     {"subnet_id": ports[1][1]["id"]}, token=ADMIN)
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    # both in the project's default group (ingress from its members, egress anywhere):
    # everything passed between them through the router, and nothing will
    assert texts == [f"vm-{a} → vm-{b} {what}: allowed → denied"
                     for a, b in ((1, 2), (2, 1))
                     for what in ("icmp", "tcp/1-65535", "udp/1-65535")], texts


class GatewayRuntime(CompilingRuntime):
    """The one switch is also a gateway chassis with a patch to the physical network
    `public`, and knows the upstream router's MAC (as the engine learns it)."""

    UPSTREAM = "02:00:00:00:00:fe"
    gateway = True
    provider_ports = {(DPID, "public"): 50}


@pytest.fixture
def genv(tmp_path: Path) -> Iterator[tuple[Env, GatewayRuntime]]:
    runtime = GatewayRuntime()
    env = start_env(tmp_path / "state", tokens=True, runtime=runtime)
    try:
        yield env, runtime
    finally:
        env.close()


def test_the_plan_says_what_the_outside_gains_and_loses(
        genv: tuple[Env, GatewayRuntime]) -> None:
    from api_harness import external_network, l3_setup

    from controller.flows import ip4, mac
    from controller.intent import object_key

    env, rt = genv
    ext = external_network(env, **{"provider:network_type": "flat",
                                   "provider:physical_network": "public"})
    rt.upstream[(object_key(ext[0]["id"]), ip4("172.24.4.1"))] = mac(rt.UPSTREAM)
    l3 = l3_setup(env, token=ALICE, ext=ext)
    (sg,) = [g for g in env.ok("GET", "/v2.0/security-groups", token=ALICE)["security_groups"]
             if g["name"] == "default"]
    ssh = env.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}}, 201, token=ALICE)["security_group_rule"]
    rt.follow(env.store.latest())
    rt.bind(env.store, l3.vm["id"], 10)

    # without its gateway, the router takes the guest nowhere outside
    planned = env.ok("PUT", f"/v2.0/routers/{l3.router['id']}?dry_run=true",
                     {"router": {"external_gateway_info": {}}}, token=ALICE)
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    assert texts == [f"vm → 203.0.113.10 {what}: allowed → denied"
                     for what in ("icmp", "tcp/1-65535", "udp/1-65535")], texts

    # a floating IP lets the outside in, on what the port's groups allow
    planned = env.ok("POST", "/v2.0/floatingips?dry_run=true", {"floatingip": {
        "floating_network_id": ext[0]["id"], "port_id": l3.vm["id"]}}, 201, token=ALICE)
    fip = planned["floatingip"]["floating_ip_address"]
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    assert texts == [f"203.0.113.10 via {fip} → vm tcp/22: denied → allowed"], texts
    (change,) = planned["plan"]["reachability"]["changes"]
    assert change["from"] == {"outside": "203.0.113.10", "via": fip}
    fip = env.ok("POST", "/v2.0/floatingips", {"floatingip": {
        "floating_network_id": ext[0]["id"], "port_id": l3.vm["id"]}}, 201,
        token=ALICE)["floatingip"]["floating_ip_address"]
    rt.follow(env.store.latest())
    planned = env.ok("DELETE", f"/v2.0/security-group-rules/{ssh['id']}?dry_run=true",
                     token=ALICE)
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    assert texts == [f"203.0.113.10 via {fip} → vm tcp/22: allowed → denied"], texts


def test_a_port_forwarding_planned_opens_its_one_port(genv: tuple[Env, GatewayRuntime]) -> None:
    from api_harness import external_network, l3_setup

    from controller.flows import ip4, mac
    from controller.intent import object_key

    env, rt = genv
    ext = external_network(env, **{"provider:network_type": "flat",
                                   "provider:physical_network": "public"})
    rt.upstream[(object_key(ext[0]["id"]), ip4("172.24.4.1"))] = mac(rt.UPSTREAM)
    l3 = l3_setup(env, token=ALICE, ext=ext)
    (sg,) = [g for g in env.ok("GET", "/v2.0/security-groups", token=ALICE)["security_groups"]
             if g["name"] == "default"]
    env.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}}, 201, token=ALICE)
    fip = env.ok("POST", "/v2.0/floatingips", {"floatingip": {
        "floating_network_id": ext[0]["id"]}}, 201, token=ALICE)["floatingip"]
    rt.follow(env.store.latest())
    rt.bind(env.store, l3.vm["id"], 10)
    planned = env.ok("POST", f"/v2.0/floatingips/{fip['id']}/port_forwardings?dry_run=true",
                     {"port_forwarding": {
                         "protocol": "tcp", "external_port": 2222, "internal_port": 22,
                         "internal_ip_address": l3.vm["fixed_ips"][0]["ip_address"],
                         "internal_port_id": l3.vm["id"]}}, 201, token=ALICE)
    texts = sorted(c["text"] for c in planned["plan"]["reachability"]["changes"])
    address = fip["floating_ip_address"]
    assert texts == [f"203.0.113.10 via {address}:2222 → vm tcp/2222: denied → allowed"], texts


def test_a_failing_simulation_costs_the_plan_its_reachability_only(
        denv: tuple[Env, CompilingRuntime], monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.plan as planning

    env, rt = denv
    web, db, mysql, _ = _web_and_db(env, rt)

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(planning, "touched_ports", broken)
    planned = env.ok("DELETE", f"/v2.0/security-group-rules/{mysql['id']}?dry_run=true",
                     token=ADMIN)
    assert planned["plan"]["reachability"] == {"error": "the simulation failed: boom"}
    (switch,) = planned["plan"]["switches"]
    assert switch["flows"]["removed"]  # the rest of the plan is whole


def test_a_member_sees_no_reachability_change_naming_another_projects_port() -> None:
    from controller.rest.app import _own_ends

    def change(src: dict[str, Any], dst: dict[str, Any]) -> dict[str, Any]:
        return {"from": src, "to": dst}

    mine, theirs = {"port": "a", "project_id": "alice"}, {"port": "b", "project_id": "bob"}
    outside = {"outside": "203.0.113.10", "via": "172.24.4.5"}
    assert _own_ends(change(mine, mine), "alice")
    assert _own_ends(change(outside, mine), "alice") and _own_ends(change(mine, outside), "alice")
    assert not _own_ends(change(mine, theirs), "alice")
    assert not _own_ends(change(theirs, mine), "alice")
    assert not _own_ends(change(outside, theirs), "alice")  # bob's floating IP
