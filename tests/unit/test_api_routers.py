"""Routers through the REST API (issue 12): CRUD, scoping, extra routes, external
gateways (port, address, NAT zone, policy, errors), extensions and network MTUs.

Interfaces (add/remove_router_interface) are in test_api_router_interfaces.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from api_harness import ADMIN, ALICE, BOB, Env, external_network, openstack_cli, start_env

from controller.rest.server import serve
from controller.runtime import Detached

GHOST = "00000000-0000-4000-8000-00000000dead"
R = "/v2.0/routers"


class Recorder(Detached):
    """Records `?wait=true` waits; every change is installed at once."""

    def __init__(self) -> None:
        self.waits: list[tuple[int, float]] = []

    def wait_installed(self, generation: int, timeout: float) -> bool:
        self.waits.append((generation, timeout))
        return True


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path / "state", runtime=Recorder())
    yield e
    e.close()


def router(env: Env, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    return env.ok("POST", R, {"router": attrs}, 201, token=token)["router"]  # type: ignore[no-any-return]


def attach(env: Env, router_id: str, token: Optional[str] = None, **body: str) -> dict[str, Any]:
    return env.ok("PUT", f"{R}/{router_id}/add_router_interface", body, token=token)  # type: ignore[no-any-return]


def routes(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"destination": d, "nexthop": n} for d, n in pairs]


def two_subnets(env: Env, token: Optional[str] = None) -> tuple[dict[str, Any], dict[str, Any]]:
    kw = {} if token is None else {"token": token}
    a = env.subnet(env.network(name="a", **kw)["id"], "10.0.1.0/24", **kw)
    b = env.subnet(env.network(name="b", **kw)["id"], "10.0.2.0/24", **kw)
    return a, b


# -- CRUD -------------------------------------------------------------------------------
def test_create_show_list_update_delete_in_neutrons_shape(env: Env) -> None:
    r = router(env, name="r1", description="east-west")
    assert set(r) == {
        "id", "name", "description", "project_id", "tenant_id", "admin_state_up", "status",
        "external_gateway_info", "routes", "distributed", "ha", "tags", "created_at",
        "updated_at", "revision_number",
    }
    assert (r["name"], r["description"], r["status"], r["admin_state_up"]) == (
        "r1", "east-west", "ACTIVE", True)
    assert r["project_id"] == r["tenant_id"] == "default"
    assert r["external_gateway_info"] is None and r["routes"] == [] and r["tags"] == []
    assert r["distributed"] is True and r["ha"] is False
    assert r["revision_number"] == 1 and r["created_at"].endswith("Z")
    stored = env.store.latest().routers[r["id"]]
    assert stored.name == "r1" and stored.external_network_id is None
    assert env.ok("GET", f"{R}/{r['id']}")["router"] == r
    assert env.ok("GET", R)["routers"] == [r]

    updated = env.ok("PUT", f"{R}/{r['id']}", {"router": {"name": "r2", "admin_state_up": False}})
    assert updated["router"]["name"] == "r2" and updated["router"]["admin_state_up"] is False
    assert updated["router"]["revision_number"] == 2
    same = env.ok("PUT", f"{R}/{r['id']}", {"router": {"name": "r2"}})["router"]
    assert same["revision_number"] == 2  # no change, no new revision

    env.ok("DELETE", f"{R}/{r['id']}", status=204)
    assert env.store.latest().routers == {}
    error = env.rejected("GET", f"{R}/{r['id']}", status=404, type="RouterNotFound")
    assert error["message"] == f"Router {r['id']} could not be found"
    env.rejected("DELETE", f"{R}/{GHOST}", status=404, type="RouterNotFound")
    env.rejected("PUT", f"{R}/{GHOST}", {"router": {"name": "x"}}, status=404,
                 type="RouterNotFound")


def test_bulk_create_fields_filters_sorting_and_pages(env: Env) -> None:
    made = env.ok("POST", R, {"routers": [{"name": n} for n in ("a", "b", "c")]}, 201)["routers"]
    assert [r["name"] for r in made] == ["a", "b", "c"]
    assert env.ok("GET", f"{R}?name=b")["routers"][0]["id"] == made[1]["id"]
    assert env.ok("GET", f"{R}?name=a&name=c&fields=name&sort_key=name")["routers"] == [
        {"name": "a"}, {"name": "c"}]
    assert env.ok("GET", f"{R}/{made[0]['id']}?fields=id&fields=status")["router"] == {
        "id": made[0]["id"], "status": "ACTIVE"}
    desc = env.ok("GET", f"{R}?sort_key=name&sort_dir=desc")["routers"]
    assert [r["name"] for r in desc] == ["c", "b", "a"]
    in_order = [r["id"] for r in env.ok("GET", R)["routers"]]  # (created_at, id)
    assert sorted(in_order) == sorted(r["id"] for r in made)
    page = env.ok("GET", f"{R}?limit=2")
    assert [r["id"] for r in page["routers"]] == in_order[:2]
    assert page["routers_links"][0]["rel"] == "next"
    rest = env.ok("GET", f"{R}?limit=2&marker={in_order[1]}")
    assert [r["id"] for r in rest["routers"]] == in_order[2:] and "routers_links" not in rest
    env.rejected("GET", f"{R}?routes=x", status=400, type="InvalidInput")


def test_refused_attributes_write_nothing(env: Env) -> None:
    r = router(env, name="r")
    env.rejected("POST", R, {"router": {"routes": []}}, status=400, type="InvalidInput")
    env.rejected("POST", R, {"router": {"flavor_id": GHOST}}, status=400, type="InvalidInput")
    env.rejected("POST", R, {"router": {"status": "DOWN"}}, status=400, type="InvalidInput")
    env.rejected("POST", R, {"router": {"admin_state_up": "maybe"}}, status=400,
                 type="InvalidInput")
    env.rejected("PUT", f"{R}/{r['id']}", {"router": {"project_id": "x"}}, status=400,
                 type="InvalidInput")
    env.rejected("POST", R, {"router": {"distributed": False}}, status=400, type="BadRequest")
    env.rejected("POST", R, {"router": {"ha": True}}, status=400, type="BadRequest")
    env.rejected("PUT", f"{R}/{r['id']}", {"router": {"distributed": False}}, status=400,
                 type="BadRequest")
    assert router(env, distributed=True, ha=False)["distributed"] is True


def gw(network_id: str, **more: Any) -> dict[str, Any]:
    return {"network_id": network_id, **more}


def zones_in_use(env: Env, but: str = "") -> set[int]:
    """The conntrack zones networks and other routers hold."""
    snap = env.store.latest()
    return {n.ct_zone for n in snap.networks.values()} | {
        r.snat_zone for r in snap.routers.values() if r.id != but and r.snat_zone}


def test_external_gateway_set_replace_clear(env: Env) -> None:
    ext, ext_sub = external_network(env)
    r = router(env, name="r", external_gateway_info=gw(ext["id"]))
    info = r["external_gateway_info"]
    assert info == {"network_id": ext["id"], "enable_snat": True, "external_fixed_ips": [
        {"subnet_id": ext_sub["id"], "ip_address": "172.24.4.2"}]}
    snap = env.store.latest()
    stored = snap.routers[r["id"]]
    port = snap.ports[stored.gateway_port_id]
    assert (port.device_owner, port.device_id, port.project_id, port.network_id) == (
        "network:router_gateway", r["id"], "", ext["id"])
    assert port.port_security_enabled is False and port.security_groups == ()
    assert stored.external_network_id == ext["id"] and stored.enable_snat is True
    zone = stored.snat_zone
    assert zone and zone not in zones_in_use(env, but=r["id"])
    assert env.ok("GET", f"{R}/{r['id']}")["router"]["external_gateway_info"] == info

    # unrelated objects and updates do not move the zone
    env.subnet(env.network(name="other")["id"], "10.9.0.0/24")
    env.ok("PUT", f"{R}/{r['id']}", {"router": {"name": "renamed"}})
    assert env.store.latest().routers[r["id"]].snat_zone == zone
    other = router(env, name="r2", external_gateway_info=gw(ext["id"]))
    other_zone = env.store.latest().routers[other["id"]].snat_zone
    assert other_zone not in (0, zone) and other_zone not in zones_in_use(env, but=other["id"])

    # the same network: the port stays; SNAT off; another address
    path = f"{R}/{r['id']}"
    got = env.ok("PUT", path, {"router": {"external_gateway_info": gw(
        ext["id"], enable_snat=False)}})["router"]
    assert got["external_gateway_info"]["enable_snat"] is False
    assert env.store.latest().routers[r["id"]].gateway_port_id == port.id
    got = env.ok("PUT", path, {"router": {"external_gateway_info": gw(
        ext["id"], external_fixed_ips=[{"ip_address": "172.24.4.50"}])}})["router"]
    assert got["external_gateway_info"]["external_fixed_ips"] == [
        {"subnet_id": ext_sub["id"], "ip_address": "172.24.4.50"}]
    assert got["external_gateway_info"]["enable_snat"] is True  # Neutron: default again
    assert env.store.latest().routers[r["id"]].gateway_port_id == port.id

    # another network: the port is replaced, the zone kept
    ext2, ext2_sub = external_network(env, "198.51.100.0/24")
    rev = env.ok("GET", path)["router"]["revision_number"]
    got = env.ok("PUT", path, {"router": {"external_gateway_info": gw(ext2["id"])}})["router"]
    assert got["external_gateway_info"]["external_fixed_ips"] == [
        {"subnet_id": ext2_sub["id"], "ip_address": "198.51.100.2"}]
    assert got["revision_number"] == rev + 1
    snap = env.store.latest()
    assert port.id not in snap.ports and snap.routers[r["id"]].snat_zone == zone
    new_port = snap.routers[r["id"]].gateway_port_id
    assert new_port is not None and snap.ports[new_port].network_id == ext2["id"]

    # cleared: the port goes and the zone is freed; set again: a zone again
    got = env.ok("PUT", path, {"router": {"external_gateway_info": None}})["router"]
    assert got["external_gateway_info"] is None
    snap = env.store.latest()
    assert new_port not in snap.ports and snap.routers[r["id"]].snat_zone == 0
    assert snap.routers[r["id"]].gateway_port_id is None
    assert not [p for p in snap.ports.values() if p.device_owner == "network:router_gateway"
                and p.device_id == r["id"]]
    got = env.ok("PUT", path, {"router": {"external_gateway_info": gw(ext["id"])}})["router"]
    zone = env.store.latest().routers[r["id"]].snat_zone
    assert zone and zone not in zones_in_use(env, but=r["id"])
    assert env.ok("PUT", path, {"router": {"external_gateway_info": {}}})["router"][
        "external_gateway_info"] is None

    # deleting a router deletes its gateway port
    gw_port = env.store.latest().routers[other["id"]].gateway_port_id
    env.ok("DELETE", f"{R}/{other['id']}", status=204)
    assert gw_port not in env.store.latest().ports
    # the gateway port is the router's: not deleted through /ports
    gw_port = env.ok("PUT", path, {"router": {"external_gateway_info": gw(ext["id"])}}) and \
        env.store.latest().routers[r["id"]].gateway_port_id
    env.rejected("DELETE", f"/v2.0/ports/{gw_port}", status=409, type="ServicePortInUse")


def test_external_gateway_errors_write_nothing(env: Env) -> None:
    ext, ext_sub = external_network(env)
    plain = env.network(name="plain")
    env.subnet(plain["id"], "10.5.0.0/24")
    r = router(env, name="r")
    path = f"{R}/{r['id']}"
    error = env.rejected("POST", R, {"router": {"external_gateway_info": gw(plain["id"])}},
                         status=400, type="BadRequest")
    assert error["message"] == f"Bad router request: Network {plain['id']} is not an external " \
        "network."
    env.rejected("PUT", path, {"router": {"name": "x", "external_gateway_info": gw(
        plain["id"])}}, status=400, type="BadRequest")
    env.rejected("PUT", path, {"router": {"external_gateway_info": gw(GHOST)}}, status=404,
                 type="NetworkNotFound")
    error = env.rejected("PUT", path, {"router": {"external_gateway_info": gw(
        ext["id"], external_fixed_ips=[{"ip_address": "172.24.4.1"}])}}, status=400,
        type="BadRequest")
    assert error["message"] == "Bad router request: External IP 172.24.4.1 is the same as " \
        "the gateway IP."
    env.rejected("PUT", path, {"router": {"external_gateway_info": gw(
        ext["id"], external_fixed_ips=[{"ip_address": "10.1.1.1"}])}}, status=400,
        type="InvalidInput")
    for bad in ("net", {"enable_snat": True}, {"network_id": "x"},
                {"network_id": ext["id"], "colour": "red"},
                {"network_id": ext["id"], "enable_snat": "maybe"}):
        env.rejected("PUT", path, {"router": {"external_gateway_info": bad}}, status=400,
                     type="InvalidInput")
    bare = env.network(name="bare", **{"router:external": True})
    env.rejected("PUT", path, {"router": {"external_gateway_info": gw(bare["id"])}},
                 status=400, type="BadRequest")
    # an external subnet overlapping one of the router's subnets
    inner = env.subnet(env.network(name="in")["id"], "172.24.4.0/25")
    attach(env, r["id"], subnet_id=inner["id"])
    error = env.rejected("PUT", path, {"router": {"external_gateway_info": gw(ext["id"])}},
                         status=400, type="BadRequest")
    assert "overlaps with cidr" in error["message"]
    assert env.store.latest().routers[r["id"]].snat_zone == 0


def test_members_set_gateways_but_not_snat_or_addresses(tenv: Env) -> None:
    ext, _ = external_network(tenv)
    private, _ = external_network(tenv, "198.51.100.0/24", shared=False)
    r = router(tenv, ALICE, name="mine", external_gateway_info=gw(ext["id"]))
    assert r["external_gateway_info"]["network_id"] == ext["id"]
    for key, value in (("enable_snat", False), ("enable_snat", True),
                       ("external_fixed_ips", [{"ip_address": "172.24.4.9"}])):
        error = tenv.rejected("POST", R, {"router": {"external_gateway_info": gw(
            ext["id"], **{key: value})}}, token=ALICE, status=403, type="PolicyNotAuthorized")
        assert error["message"] == \
            f"rule:create_router:external_gateway_info:{key} is disallowed by policy"
        tenv.rejected("PUT", f"{R}/{r['id']}", {"router": {"external_gateway_info": gw(
            ext["id"], **{key: value})}}, token=ALICE, status=403, type="PolicyNotAuthorized")
    tenv.rejected("PUT", f"{R}/{r['id']}", {"router": {"external_gateway_info": gw(
        private["id"])}}, token=ALICE, status=404, type="NetworkNotFound")
    # the gateway port has no project, as in Neutron: only admins see it
    ports = tenv.ok("GET", f"/v2.0/ports?device_id={r['id']}", token=ALICE)["ports"]
    assert ports == []
    ports = tenv.ok("GET", f"/v2.0/ports?device_id={r['id']}", token=ADMIN)["ports"]
    assert [p["device_owner"] for p in ports] == ["network:router_gateway"]
    assert ports[0]["project_id"] == ""
    tenv.rejected("GET", f"{R}/{r['id']}", token=BOB, status=404, type="RouterNotFound")
    by_admin = router(tenv, ADMIN, external_gateway_info=gw(
        private["id"], enable_snat=False, external_fixed_ips=[{"ip_address": "198.51.100.9"}]))
    assert by_admin["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == \
        "198.51.100.9"
    tenv.ok("PUT", f"{R}/{r['id']}", {"router": {"external_gateway_info": None}}, token=ALICE)


def test_if_match_and_wait(env: Env) -> None:
    r = router(env, name="r")
    runtime: Recorder = env.runtime
    env.rejected("PUT", f"{R}/{r['id']}", {"router": {"name": "x"}}, status=412,
                 type="RevisionNumberConstraintFailed",
                 headers={"If-Match": "revision_number=7"})
    resp = env.call("PUT", f"{R}/{r['id']}?wait=true", {"router": {"name": "x"}},
                    headers={"If-Match": "revision_number=1"})
    assert resp.status_int == 200 and resp.json["router"]["revision_number"] == 2
    assert runtime.waits == [(int(resp.headers["X-Loom-Generation"]), 30.0)]
    a, _ = two_subnets(env)
    env.rejected("PUT", f"{R}/{r['id']}/add_router_interface", {"subnet_id": a["id"]},
                 status=412, type="RevisionNumberConstraintFailed",
                 headers={"If-Match": "revision_number=1"})
    resp = env.call("PUT", f"{R}/{r['id']}/add_router_interface?wait=true",
                    {"subnet_id": a["id"]}, headers={"If-Match": "revision_number=2"})
    assert resp.status_int == 200 and len(runtime.waits) == 2
    assert env.ok("GET", f"{R}/{r['id']}")["router"]["revision_number"] == 3
    resp = env.call("DELETE", f"{R}/{r['id']}?wait=true")
    assert resp.status_int == 409 and len(runtime.waits) == 2  # refused: nothing to wait for


def test_member_actions_routing(env: Env) -> None:
    r = router(env, name="r")
    resp = env.call("GET", f"{R}/{r['id']}/add_router_interface")
    assert resp.status_int == 405 and resp.headers["Allow"] == "PUT"
    env.rejected("PUT", f"{R}/{r['id']}/frobnicate", {}, status=404, type="HTTPNotFound")
    env.rejected("PUT", f"/v2.0/networks/{GHOST}/add_router_interface", {}, status=404,
                 type="HTTPNotFound")
    env.rejected("PUT", f"{R}/{GHOST}/add_router_interface", {"subnet_id": GHOST},
                 status=404, type="RouterNotFound")


# -- scoping ----------------------------------------------------------------------------
def test_members_see_and_change_only_their_routers(tenv: Env) -> None:
    mine = router(tenv, ALICE, name="alice-r")
    assert mine["project_id"] == "alice"
    theirs = router(tenv, BOB, name="bob-r")
    ops = router(tenv, ADMIN, name="bob-by-admin", project_id="bob")
    assert ops["project_id"] == "bob"
    assert [r["name"] for r in tenv.ok("GET", R, token=ALICE)["routers"]] == ["alice-r"]
    assert sorted(r["name"] for r in tenv.ok("GET", R, token=BOB)["routers"]) == [
        "bob-by-admin", "bob-r"]
    assert len(tenv.ok("GET", R, token=ADMIN)["routers"]) == 3
    path = f"{R}/{theirs['id']}"
    tenv.rejected("GET", path, token=ALICE, status=404, type="RouterNotFound")
    tenv.rejected("PUT", path, {"router": {"name": "x"}}, token=ALICE, status=404,
                  type="RouterNotFound")
    tenv.rejected("DELETE", path, token=ALICE, status=404, type="RouterNotFound")
    tenv.rejected("PUT", f"{path}/add_extraroutes", {"router": {"routes": []}}, token=ALICE,
                  status=404, type="RouterNotFound")
    tenv.rejected("POST", R, {"router": {"project_id": "bob"}}, token=ALICE, status=403,
                  type="PolicyNotAuthorized")
    tenv.rejected("POST", R, {"router": {"distributed": False}}, token=ALICE, status=403,
                  type="PolicyNotAuthorized")
    assert tenv.ok("PUT", path, {"router": {"name": "admin-renamed"}}, token=ADMIN)
    tenv.ok("DELETE", f"{R}/{mine['id']}", status=204, token=ALICE)


# -- extra routes -----------------------------------------------------------------------
def test_extra_routes_need_a_nexthop_on_the_routers_subnets(env: Env) -> None:
    r = router(env, name="r")
    a, b = two_subnets(env)
    path = f"{R}/{r['id']}"
    wanted = routes(("192.168.0.0/16", "10.0.1.5"))
    error = env.rejected("PUT", path, {"router": {"routes": wanted}}, status=400,
                         type="InvalidRoutes")
    assert error["message"] == (
        "Invalid format for routes: [{'destination': '192.168.0.0/16', 'nexthop': '10.0.1.5'}], "
        "the nexthop is not connected with router"
    )
    attach(env, r["id"], subnet_id=a["id"])
    attach(env, r["id"], subnet_id=b["id"])
    rev = env.ok("GET", path)["router"]["revision_number"]
    got = env.ok("PUT", path, {"router": {"routes": wanted}})["router"]
    assert got["routes"] == wanted and got["revision_number"] == rev + 1
    assert env.store.latest().routers[r["id"]].routes == (("192.168.0.0/16", "10.0.1.5"),)

    used = env.rejected("PUT", path, {"router": {"routes": routes(("0.0.0.0/0", "10.0.2.1"))}},
                        status=400, type="InvalidRoutes")
    assert used["message"].endswith("the nexthop is used by router")
    for bad, why in [
        (routes(("10.9.0.1/16", "10.0.1.5")), "is not a valid CIDR"),
        (routes(("10.9.0.0", "10.0.1.5")), "is not a valid CIDR"),
        (routes(("127.0.0.0/8", "10.0.1.5")), "is not a routable CIDR"),
        (routes(("10.9.0.0/16", "10.0.1")), "is not a valid IP address"),
        (routes(("10.9.0.0/16", "10.0.1.5"), ("10.9.0.0/16", "10.0.1.5")), "Duplicate hostroute"),
        ([{"destination": "10.9.0.0/16"}], "missing required key"),
        ([{"destination": "10.9.0.0/16", "nexthop": "10.0.1.5", "x": 1}], "Unrecognized key"),
        ("10.9.0.0/16", "Invalid data format for hostroute"),
    ]:
        error = env.rejected("PUT", path, {"router": {"routes": bad}}, status=400,
                             type="InvalidInput")
        assert why in error["message"], error
    ecmp = routes(("10.9.0.0/16", "10.0.1.5"), ("10.9.0.0/16", "10.0.2.5"))
    error = env.rejected("PUT", path, {"router": {"routes": ecmp}}, status=400,
                         type="InvalidRoutes")
    assert "one nexthop per destination" in error["message"]
    env.rejected("PUT", path, {"router": {"routes": routes(("2001:db8::/64", "10.0.1.5"))}},
                 status=400, type="InvalidRoutes")
    assert env.ok("PUT", path, {"router": {"routes": None}})["router"]["routes"] == []


def test_add_and_remove_extraroutes_atomically(env: Env) -> None:
    r = router(env, name="r")
    a, b = two_subnets(env)
    attach(env, r["id"], subnet_id=a["id"])
    attach(env, r["id"], subnet_id=b["id"])
    path = f"{R}/{r['id']}"
    one = routes(("192.168.1.0/24", "10.0.1.5"))
    two = routes(("192.168.2.0/24", "10.0.2.5"))
    got = env.ok("PUT", f"{path}/add_extraroutes", {"router": {"routes": one}})["router"]
    assert got["routes"] == one and got["id"] == r["id"] and got["status"] == "ACTIVE"
    got = env.ok("PUT", f"{path}/add_extraroutes", {"router": {"routes": one + two}})["router"]
    assert sorted(got["routes"], key=str) == sorted(one + two, key=str)
    got = env.ok("PUT", f"{path}/remove_extraroutes",
                 {"router": {"routes": one + routes(("172.16.0.0/12", "10.0.1.9"))}})["router"]
    assert got["routes"] == two  # removing a route that is not there is no error
    env.rejected("PUT", f"{path}/add_extraroutes",
                 {"router": {"routes": routes(("192.168.9.0/24", "10.7.0.1"))}},
                 status=400, type="InvalidRoutes")
    env.rejected("PUT", f"{path}/add_extraroutes",
                 {"router": {"routes": routes(("192.168.2.0/24", "10.0.1.5"))}},
                 status=400, type="InvalidRoutes")  # a second nexthop for one destination
    env.rejected("PUT", f"{path}/add_extraroutes", {"router": {"name": "x"}}, status=400,
                 type="HTTPBadRequest")
    env.rejected("PUT", f"{path}/add_extraroutes", {"routes": two}, status=400,
                 type="HTTPBadRequest")
    env.rejected("PUT", f"{path}/remove_extraroutes",
                 {"router": {"routes": [{"destination": "x", "nexthop": "10.0.1.5"}]}},
                 status=400, type="InvalidInput")
    # the interface an extra route's nexthop needs stays
    error = env.rejected("PUT", f"{path}/remove_router_interface", {"subnet_id": b["id"]},
                         status=409, type="RouterInterfaceInUseByRoute")
    assert error["message"] == (
        f"Router interface for subnet {b['id']} on router {r['id']} cannot be deleted, "
        "as it is required by one or more routes."
    )
    env.ok("PUT", f"{path}/remove_router_interface", {"subnet_id": a["id"]})


# -- discovery --------------------------------------------------------------------------
def test_extensions_list_exactly_what_is_served(env: Env) -> None:
    aliases = {e["alias"] for e in env.ok("GET", "/v2.0/extensions")["extensions"]}
    assert {"router", "extraroute", "extraroute-atomic"} <= aliases
    assert {"external-net", "ext-gw-mode", "floating-ip-port-forwarding",
            "expose-port-forwarding-in-fip", "floating-ip-port-forwarding-description"} <= aliases
    for absent in ("external-gateway-multihoming", "l3-ha", "dvr", "l3-flavors",
                   "router_availability_zone", "fip-port-details", "qos-fip",
                   "floating-ip-port-forwarding-port-ranges", "l3_agent_scheduler"):
        assert absent not in aliases
        env.rejected("GET", f"/v2.0/extensions/{absent}", status=404, type="ExtensionNotFound")
    ext = env.ok("GET", "/v2.0/extensions/router")["extension"]
    assert ext["name"] == "Neutron L3 Router"
    collections = {r["collection"] for r in env.ok("GET", "/v2.0/")["resources"]}
    assert {"routers", "floatingips"} <= collections


# -- network MTU ------------------------------------------------------------------------
def test_overlay_networks_leave_room_for_their_encapsulation(env: Env) -> None:
    mtus = {t: env.network(**{"provider:network_type": t})["mtu"]
            for t in ("vxlan", "gre", "geneve", "vlan")}
    assert mtus == {"vxlan": 1450, "gre": 1458, "geneve": 1442, "vlan": 1500}
    assert env.network()["mtu"] == 1450  # vxlan by default
    env.rejected("POST", "/v2.0/networks", {"network": {"mtu": 1500}}, status=400,
                 type="InvalidInput")
    env.rejected("POST", "/v2.0/networks",
                 {"network": {"mtu": 1459, "provider:network_type": "gre"}}, status=400,
                 type="InvalidInput")
    assert env.network(mtu=1400)["mtu"] == 1400


# -- stock clients ----------------------------------------------------------------------
def test_openstacksdk_drives_a_router(env: Env) -> None:
    openstack = pytest.importorskip("openstack")
    a, b = two_subnets(env)
    serving = serve(env.app, "127.0.0.1", 0)
    url = serving.url
    try:
        conn = openstack.connect(
            auth_type="none", auth={"endpoint": url}, network_endpoint_override=url + "/v2.0/"
        )
        r = conn.network.create_router(name="edge")
        assert r.name == "edge" and r.status == "ACTIVE" and r.external_gateway_info is None
        added = conn.network.add_interface_to_router(r, subnet_id=a["id"])
        assert added["subnet_id"] == a["id"] and added["subnet_ids"] == [a["id"]]
        assert added["id"] == r.id and added["network_id"] == a["network_id"]
        conn.network.add_interface_to_router(r, subnet_id=b["id"])
        assert [x.name for x in conn.network.routers()] == ["edge"]
        assert conn.network.find_router("edge").id == r.id
        ports = list(conn.network.ports(device_id=r.id))
        assert sorted(p.fixed_ips[0]["ip_address"] for p in ports) == ["10.0.1.1", "10.0.2.1"]
        assert {p.device_owner for p in ports} == {"network:router_interface"}
        routed = conn.network.add_extra_routes_to_router(
            r, body={"router": {"routes": routes(("192.168.0.0/16", "10.0.2.7"))}})
        assert routed.routes == routes(("192.168.0.0/16", "10.0.2.7"))
        conn.network.remove_extra_routes_from_router(
            r, body={"router": {"routes": routes(("192.168.0.0/16", "10.0.2.7"))}})
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.network.delete_router(r)
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.network.delete_port(ports[0])
        removed = conn.network.remove_interface_from_router(r, subnet_id=a["id"])
        assert removed["subnet_id"] == a["id"]
        conn.network.remove_interface_from_router(r, port_id=added_port(env, r.id))
        conn.network.delete_router(r)
        assert list(conn.network.routers()) == []
        assert env.store.latest().router_interfaces == {}
        assert not [p for p in env.store.latest().ports.values() if p.device_id == r.id]
    finally:
        serving.close()


def added_port(env: Env, router_id: str) -> str:
    [port] = [p for p in env.store.latest().ports.values() if p.device_id == router_id]
    return port.id


def test_openstack_cli_router_story(env: Env) -> None:
    a, _ = two_subnets(env)
    with openstack_cli(env) as osc:
        osc("router", "create", "edge")
        osc("router", "add", "subnet", "edge", a["id"])
        shown = osc("router", "show", "edge", "-f", "value", "-c", "status", "-c", "distributed")
        assert sorted(shown.split()) == ["ACTIVE", "True"]
        listed = osc("router", "list", "-f", "value", "-c", "Name")
        assert listed.split() == ["edge"]
        osc("router", "remove", "subnet", "edge", a["id"])
        osc("router", "delete", "edge")
    assert env.store.latest().routers == {} and env.store.latest().router_interfaces == {}
