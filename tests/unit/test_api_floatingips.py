"""Floating IPs through the REST API (issue 12): create, associate, disassociate, delete,
Neutron's errors (status and type, the store untouched), project scoping, and what
floating IPs do to routers, router interfaces and ports."""

from __future__ import annotations

from typing import Any, Optional

from api_harness import ADMIN, ALICE, BOB, Env, external_network, l3_setup

GHOST = "00000000-0000-4000-8000-00000000dead"
F = "/v2.0/floatingips"


def fip(env: Env, network_id: str, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    body = {"floatingip": {"floating_network_id": network_id, **attrs}}
    return env.ok("POST", F, body, 201, token=token)["floatingip"]  # type: ignore[no-any-return]


def test_create_associate_disassociate_delete(env: Env) -> None:
    t = l3_setup(env)
    f = fip(env, t.ext["id"], description="web")
    assert set(f) == {
        "id", "floating_ip_address", "floating_network_id", "router_id", "port_id",
        "fixed_ip_address", "status", "description", "project_id", "tenant_id",
        "qos_policy_id", "port_forwardings", "tags", "created_at", "updated_at",
        "revision_number",
    }
    assert f["floating_ip_address"] == "172.24.4.3"  # .2 is the router's gateway
    assert (f["router_id"], f["port_id"], f["fixed_ip_address"], f["status"]) == (
        None, None, None, "DOWN")
    assert f["project_id"] == f["tenant_id"] == "default" and f["port_forwardings"] == []
    assert f["revision_number"] == 1 and f["description"] == "web"
    snap = env.store.latest()
    stored = snap.floating_ips[f["id"]]
    port = snap.ports[stored.floating_port_id or ""]
    assert (port.device_owner, port.device_id, port.project_id, port.network_id) == (
        "network:floatingip", f["id"], "", t.ext["id"])
    assert [x.ip_address for x in port.fixed_ips] == ["172.24.4.3"]

    path = f"{F}/{f['id']}"
    got = env.ok("PUT", path, {"floatingip": {"port_id": t.vm["id"]}})["floatingip"]
    assert got["port_id"] == t.vm["id"] and got["router_id"] == t.router["id"]
    assert got["fixed_ip_address"] == t.vm["fixed_ips"][0]["ip_address"]
    assert got["status"] == "ACTIVE" and got["revision_number"] == 2
    assert env.store.latest().floating_ips[f["id"]].router_id == t.router["id"]
    assert env.ok("GET", path)["floatingip"] == got
    assert env.ok("GET", f"{F}?port_id={t.vm['id']}&fields=id")["floatingips"] == [
        {"id": f["id"]}]
    assert env.ok("GET", f"{F}?router_id={GHOST}")["floatingips"] == []
    # an update without port_id keeps the association
    got = env.ok("PUT", path, {"floatingip": {"description": "d2"}})["floatingip"]
    assert got["port_id"] == t.vm["id"] and got["description"] == "d2"

    got = env.ok("PUT", path, {"floatingip": {"port_id": None}})["floatingip"]
    assert (got["port_id"], got["router_id"], got["fixed_ip_address"], got["status"]) == (
        None, None, None, "DOWN")
    env.ok("DELETE", path, status=204)
    snap = env.store.latest()
    assert snap.floating_ips == {} and port.id not in snap.ports
    again = fip(env, t.ext["id"], port_id=t.vm["id"])  # the address is free again
    assert again["floating_ip_address"] == "172.24.4.3" and again["router_id"] == t.router["id"]
    env.rejected("GET", f"{F}/{f['id']}", status=404, type="FloatingIPNotFound")


def test_list_sorts_filters_and_pages(env: Env) -> None:
    t = l3_setup(env)
    made = [fip(env, t.ext["id"], description=str(i)) for i in range(3)]
    listed = env.ok("GET", f"{F}?sort_key=floating_ip_address&sort_dir=desc")["floatingips"]
    assert [x["floating_ip_address"] for x in listed] == [
        "172.24.4.5", "172.24.4.4", "172.24.4.3"]
    page = env.ok("GET", f"{F}?limit=2")
    assert len(page["floatingips"]) == 2 and page["floatingips_links"][0]["rel"] == "next"
    assert env.ok("GET", f"{F}?status=DOWN&description=1")["floatingips"] == [made[1]]
    assert env.ok("GET", f"{F}?floating_ip_address=172.24.4.4")["floatingips"] == [made[1]]
    env.rejected("GET", f"{F}?port_forwardings=x", status=400, type="InvalidInput")


def test_association_errors_write_nothing(env: Env) -> None:
    t = l3_setup(env)
    f = fip(env, t.ext["id"])
    path = f"{F}/{f['id']}"
    env.rejected("PUT", path, {"floatingip": {"port_id": GHOST}}, status=404,
                 type="PortNotFound")
    error = env.rejected("PUT", path, {"floatingip": {"port_id": t.vm["id"],
                                                      "fixed_ip_address": "10.0.0.99"}},
                         status=400, type="BadRequest")
    assert error["message"] == (
        f"Bad floatingip request: Port {t.vm['id']} does not have fixed ip 10.0.0.99.")
    error = env.rejected("PUT", path, {"floatingip": {"fixed_ip_address": "10.0.0.99"}},
                         status=400, type="BadRequest")
    assert "fixed_ip_address cannot be specified without a port_id" in error["message"]
    # two IPv4 addresses: the one to use must be given
    second = env.subnet(t.net["id"], "10.0.1.0/24")
    two = env.port(t.net["id"], fixed_ips=[{"subnet_id": t.subnet["id"]},
                                           {"subnet_id": second["id"]}])
    error = env.rejected("PUT", path, {"floatingip": {"port_id": two["id"]}}, status=400,
                         type="BadRequest")
    assert "has multiple fixed IPv4 addresses.  Must provide a specific IPv4 address" in \
        error["message"]
    # an address whose subnet no router joins to the external network
    error = env.rejected("PUT", path, {"floatingip": {
        "port_id": two["id"], "fixed_ip_address": two["fixed_ips"][1]["ip_address"]}},
        status=404, type="ExternalGatewayForFloatingIPNotFound")
    assert error["message"] == (
        f"External network {t.ext['id']} is not reachable from subnet {second['id']}.  "
        f"Therefore, cannot associate Port {two['id']} with a Floating IP.")
    got = env.ok("PUT", path, {"floatingip": {
        "port_id": two["id"], "fixed_ip_address": two["fixed_ips"][0]["ip_address"]}})
    assert got["floatingip"]["router_id"] == t.router["id"]
    # a second floating IP for the same fixed address
    other = fip(env, t.ext["id"])
    error = env.rejected("PUT", f"{F}/{other['id']}", {"floatingip": {
        "port_id": two["id"], "fixed_ip_address": two["fixed_ips"][0]["ip_address"]}},
        status=409, type="FloatingIPPortAlreadyAssociated")
    assert error["message"] == (
        f"Cannot associate floating IP {other['floating_ip_address']} ({other['id']}) with "
        f"port {two['id']} using fixed IP {two['fixed_ips'][0]['ip_address']}, as that fixed "
        f"IP already has a floating IP on external network {t.ext['id']}.")
    env.rejected("POST", F, {"floatingip": {"floating_network_id": t.ext["id"],
                                            "port_id": two["id"],
                                            "fixed_ip_address": "10.0.0.2"}},
                 status=400, type="BadRequest")  # (not that port's address)


def test_create_errors_and_addresses(env: Env) -> None:
    t = l3_setup(env)
    error = env.rejected("POST", F, {"floatingip": {"floating_network_id": t.net["id"]}},
                         status=400, type="BadRequest")
    assert error["message"] == (
        f"Bad floatingip request: Network {t.net['id']} is not a valid external network.")
    env.rejected("POST", F, {"floatingip": {"floating_network_id": GHOST}}, status=404,
                 type="NetworkNotFound")
    env.rejected("POST", F, {"floatingip": {}}, status=400, type="HTTPBadRequest")
    env.rejected("POST", F, {"floatingip": {"floating_network_id": t.ext["id"],
                                            "router_id": GHOST}}, status=400,
                 type="InvalidInput")
    bare = env.network(name="bare", **{"router:external": True})
    error = env.rejected("POST", F, {"floatingip": {"floating_network_id": bare["id"]}},
                         status=400, type="BadRequest")
    assert "does not contain any IPv4 subnet" in error["message"]
    chosen = fip(env, t.ext["id"], floating_ip_address="172.24.4.200")
    assert chosen["floating_ip_address"] == "172.24.4.200"
    env.rejected("POST", F, {"floatingip": {"floating_network_id": t.ext["id"],
                                            "floating_ip_address": "172.24.4.200"}},
                 status=409, type="IpAddressAlreadyAllocated")
    env.rejected("POST", F, {"floatingip": {"floating_network_id": t.ext["id"],
                                            "floating_ip_address": "10.1.1.1"}},
                 status=400, type="InvalidInput")
    # a full external network
    small, small_sub = external_network(env, "192.0.2.0/30")  # one address: .2 (.1 gateway)
    fip(env, small["id"])
    error = env.rejected("POST", F, {"floatingip": {"floating_network_id": small["id"]}},
                         status=400, type="ExternalIpAddressExhausted")
    assert error["message"] == (
        f"Unable to find any IP address on external network {small['id']}.")
    # the floating IP's port is not deleted through /ports
    port_id = env.store.latest().floating_ips[chosen["id"]].floating_port_id
    env.rejected("DELETE", f"/v2.0/ports/{port_id}", status=409, type="ServicePortInUse")
    env.rejected("PUT", f"/v2.0/ports/{port_id}", {"port": {"fixed_ips": [
        {"ip_address": "172.24.4.201"}]}}, status=409, type="PortInUse")
    env.rejected("PUT", f"/v2.0/ports/{port_id}", {"port": {"device_id": "x"}}, status=409,
                 type="PortInUse")
    env.rejected("DELETE", f"{F}/{GHOST}", status=404, type="FloatingIPNotFound")


def test_floating_ips_hold_their_router(env: Env) -> None:
    t = l3_setup(env)
    f = fip(env, t.ext["id"], port_id=t.vm["id"])
    r = f"/v2.0/routers/{t.router['id']}"
    error = env.rejected("PUT", r, {"router": {"external_gateway_info": None}}, status=409,
                         type="RouterExternalGatewayInUseByFloatingIp")
    assert error["message"] == (
        f"Gateway cannot be updated for router {t.router['id']}, since a gateway to external "
        f"network {t.ext['id']} is required by one or more floating IPs.")
    ext2, _ = external_network(env, "198.51.100.0/24")
    env.rejected("PUT", r, {"router": {"external_gateway_info": {"network_id": ext2["id"]}}},
                 status=409, type="RouterExternalGatewayInUseByFloatingIp")
    error = env.rejected("PUT", f"{r}/remove_router_interface", {"subnet_id": t.subnet["id"]},
                         status=409, type="RouterInterfaceInUseByFloatingIP")
    assert error["message"] == (
        f"Router interface for subnet {t.subnet['id']} on router {t.router['id']} cannot be "
        "deleted, as it is required by one or more floating IPs.")
    # deleting the guest's port disassociates the floating IP (as Neutron does)
    env.ok("DELETE", f"/v2.0/ports/{t.vm['id']}", status=204)
    got = env.ok("GET", f"{F}/{f['id']}")["floatingip"]
    assert (got["port_id"], got["router_id"], got["fixed_ip_address"]) == (None, None, None)
    env.ok("PUT", f"{r}/remove_router_interface", {"subnet_id": t.subnet["id"]})
    env.ok("PUT", r, {"router": {"external_gateway_info": None}})


def test_members_see_and_change_only_their_floating_ips(tenv: Env) -> None:
    ext = external_network(tenv)
    alice = l3_setup(tenv, ALICE, ext=ext)
    bob = l3_setup(tenv, BOB, cidr="10.0.0.0/24", ext=ext)  # overlapping: another project
    mine = fip(tenv, ext[0]["id"], ALICE, port_id=alice.vm["id"])
    assert mine["project_id"] == "alice" and mine["router_id"] == alice.router["id"]
    theirs = fip(tenv, ext[0]["id"], BOB, port_id=bob.vm["id"])
    assert theirs["router_id"] == bob.router["id"]
    assert [x["id"] for x in tenv.ok("GET", F, token=ALICE)["floatingips"]] == [mine["id"]]
    assert len(tenv.ok("GET", F, token=ADMIN)["floatingips"]) == 2
    path = f"{F}/{theirs['id']}"
    tenv.rejected("GET", path, token=ALICE, status=404, type="FloatingIPNotFound")
    tenv.rejected("PUT", path, {"floatingip": {"port_id": None}}, token=ALICE, status=404,
                  type="FloatingIPNotFound")
    tenv.rejected("DELETE", path, token=ALICE, status=404, type="FloatingIPNotFound")
    # another project's port is not found
    free = fip(tenv, ext[0]["id"], ALICE)
    tenv.rejected("PUT", f"{F}/{free['id']}", {"floatingip": {"port_id": bob.vm["id"]}},
                  token=ALICE, status=404, type="PortNotFound")
    # a chosen address is admin only (Neutron's create_floatingip:floating_ip_address)
    error = tenv.rejected("POST", F, {"floatingip": {"floating_network_id": ext[0]["id"],
                                                     "floating_ip_address": "172.24.4.99"}},
                          token=ALICE, status=403, type="PolicyNotAuthorized")
    assert error["message"] == "rule:create_floatingip:floating_ip_address is disallowed by policy"
    tenv.rejected("POST", F, {"floatingip": {"floating_network_id": ext[0]["id"],
                                             "project_id": "bob"}}, token=ALICE, status=403,
                  type="PolicyNotAuthorized")
    # an external network that is neither shared nor one's own is not found
    private, _ = external_network(tenv, "198.51.100.0/24", shared=False)
    tenv.rejected("POST", F, {"floatingip": {"floating_network_id": private["id"]}},
                  token=ALICE, status=404, type="NetworkNotFound")
    # the floating IP's port is hidden from members, as in Neutron
    ports = tenv.ok("GET", f"/v2.0/ports?device_id={mine['id']}", token=ALICE)["ports"]
    assert ports == []
    by_admin = tenv.ok("PUT", f"{F}/{free['id']}", {"floatingip": {"description": "x"}},
                       token=ADMIN)["floatingip"]
    assert by_admin["description"] == "x"
    tenv.ok("DELETE", f"{F}/{mine['id']}", status=204, token=ALICE)


def test_openstacksdk_drives_a_floating_ip(env: Env) -> None:
    import pytest

    openstack = pytest.importorskip("openstack")
    from controller.rest.server import serve

    t = l3_setup(env)
    serving = serve(env.app, "127.0.0.1", 0)
    try:
        conn = openstack.connect(auth_type="none", auth={"endpoint": serving.url},
                                 network_endpoint_override=serving.url + "/v2.0/")
        made = conn.network.create_ip(floating_network_id=t.ext["id"])
        assert made.floating_ip_address == "172.24.4.3" and made.status == "DOWN"
        conn.network.update_ip(made, port_id=t.vm["id"])
        got = conn.network.get_ip(made.id)
        assert got.router_id == t.router["id"] and got.port_id == t.vm["id"]
        assert [x.id for x in conn.network.ips(port_id=t.vm["id"])] == [made.id]
        router = conn.network.get_router(t.router["id"])
        assert router.external_gateway_info["network_id"] == t.ext["id"]
        conn.network.update_ip(made, port_id=None)
        conn.network.delete_ip(made)
        assert list(conn.network.ips()) == []
    finally:
        serving.close()
