"""Floating IP port forwardings through the REST API (issue 12): CRUD under
/v2.0/floatingips/{id}/port_forwardings, the floating IP's router, Neutron's errors
(status and type, the store untouched) and scoping."""

from __future__ import annotations

from typing import Any, Optional

from api_harness import ADMIN, ALICE, BOB, L3, Env, external_network, l3_setup

GHOST = "00000000-0000-4000-8000-00000000dead"
F = "/v2.0/floatingips"


def fip(env: Env, t: L3, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    body = {"floatingip": {"floating_network_id": t.ext["id"], **attrs}}
    return env.ok("POST", F, body, 201, token=token)["floatingip"]  # type: ignore[no-any-return]


def rule(t: L3, external: int = 2222, internal: int = 22, protocol: str = "tcp",
         **more: Any) -> dict[str, Any]:
    return {"port_forwarding": {
        "protocol": protocol, "external_port": external, "internal_port": internal,
        "internal_ip_address": t.vm["fixed_ips"][0]["ip_address"],
        "internal_port_id": t.vm["id"], **more}}


def test_create_list_show_update_delete(env: Env) -> None:
    t = l3_setup(env)
    f = fip(env, t)
    base = f"{F}/{f['id']}/port_forwardings"
    pf = env.ok("POST", base, rule(t, description="ssh"), 201)["port_forwarding"]
    assert pf == {
        "id": pf["id"], "protocol": "tcp", "external_port": 2222, "internal_port": 22,
        "internal_ip_address": t.vm["fixed_ips"][0]["ip_address"],
        "internal_port_id": t.vm["id"], "description": "ssh",
    }
    stored = env.store.latest().port_forwardings[pf["id"]]
    assert stored.floatingip_id == f["id"] and stored.internal_port_id == t.vm["id"]
    got = env.ok("GET", f"{F}/{f['id']}")["floatingip"]
    assert got["router_id"] == t.router["id"] and got["status"] == "ACTIVE"
    assert got["port_id"] is None
    assert got["port_forwardings"] == [{k: v for k, v in pf.items() if k != "description"}]
    assert env.ok("GET", f"{base}/{pf['id']}")["port_forwarding"] == pf
    web = env.ok("POST", base, rule(t, 8080, 80), 201)["port_forwarding"]
    dns = env.ok("POST", base, rule(t, 53, 53, "udp"), 201)["port_forwarding"]
    listed = env.ok("GET", f"{base}?sort_key=external_port")["port_forwardings"]
    assert [x["external_port"] for x in listed] == [53, 2222, 8080]
    assert env.ok("GET", f"{base}?protocol=udp&fields=id")["port_forwardings"] == [
        {"id": dns["id"]}]
    got = env.ok("PUT", f"{base}/{web['id']}", {"port_forwarding": {"internal_port": 8000}})
    assert got["port_forwarding"]["internal_port"] == 8000
    assert env.store.latest().port_forwardings[web["id"]].internal_port == 8000
    for x in (pf, web, dns):
        env.ok("DELETE", f"{base}/{x['id']}", status=204)
    got = env.ok("GET", f"{F}/{f['id']}")["floatingip"]
    assert got["router_id"] is None and got["status"] == "DOWN" and got["port_forwardings"] == []
    assert env.store.latest().port_forwardings == {}
    env.rejected("GET", f"{base}/{pf['id']}", status=404, type="PortForwardingNotFound")


def test_errors_write_nothing(env: Env) -> None:
    t = l3_setup(env)
    f = fip(env, t)
    base = f"{F}/{f['id']}/port_forwardings"
    env.ok("POST", base, rule(t), 201)
    error = env.rejected("POST", base, rule(t, internal=23), status=400, type="BadRequest")
    assert error["message"] == (
        "Bad port_forwarding request: A duplicate port forwarding entry with same attributes "
        f"already exists, conflicting values are {{'floatingip_id': '{f['id']}', "
        "'external_port': 2222, 'protocol': 'tcp'}.")
    error = env.rejected("POST", base, rule(t, external=2223), status=400, type="BadRequest")
    assert "'internal_port': 22" in error["message"]  # the same inside socket
    assert env.ok("POST", base, rule(t, protocol="udp"), 201)  # another protocol
    for bad in (rule(t, protocol="sctp"), rule(t, external=0), rule(t, internal=65536),
                rule(t, internal_ip_address="10.0.0.300"), rule(t, internal_port_id="x"),
                {"port_forwarding": {"protocol": "tcp"}}, rule(t, colour="red")):
        env.rejected("POST", base, bad, status=400,
                     type="HTTPBadRequest" if bad == {"port_forwarding": {"protocol": "tcp"}}
                     else "InvalidInput")
    error = env.rejected("POST", base, rule(t, 3000, internal_ip_address="10.0.0.99"),
                         status=400, type="BadRequest")
    assert error["message"].startswith(
        "Bad port_forwarding request: Requested internal IP address 10.0.0.99 is not suitable "
        f"for internal neutron port {t.vm['id']}, as its fixed_ips are [")
    env.rejected("POST", base, rule(t, 3000, internal_port_id=GHOST), status=404,
                 type="PortNotFound")
    env.rejected("POST", f"{F}/{GHOST}/port_forwardings", rule(t), status=404,
                 type="FloatingIPNotFound")
    env.rejected("GET", f"{F}/{GHOST}/port_forwardings", status=404, type="FloatingIPNotFound")
    env.rejected("DELETE", f"{base}/{GHOST}", status=404, type="PortForwardingNotFound")
    env.rejected("GET", f"{F}/{f['id']}/port_forwardings/{GHOST}/x", status=404,
                 type="HTTPNotFound")
    # an address no router joins to the floating IP's network
    lonely_net = env.network(name="lonely")
    env.subnet(lonely_net["id"], "10.7.0.0/24")
    lonely = env.port(lonely_net["id"])
    error = env.rejected("POST", base, {"port_forwarding": {
        "protocol": "tcp", "external_port": 4000, "internal_port": 22,
        "internal_ip_address": lonely["fixed_ips"][0]["ip_address"],
        "internal_port_id": lonely["id"]}}, status=400, type="BadRequest")
    assert "is not reachable from subnet" in error["message"]


def test_port_forwardings_and_associations_exclude_each_other(env: Env) -> None:
    t = l3_setup(env)
    forwarded = fip(env, t)
    base = f"{F}/{forwarded['id']}/port_forwardings"
    env.ok("POST", base, rule(t), 201)
    # a floating IP with port forwardings: not associated, not deleted
    other = env.port(t.net["id"], name="other")
    error = env.rejected("PUT", f"{F}/{forwarded['id']}", {"floatingip": {
        "port_id": other["id"]}}, status=409, type="FipInUseByPortForwarding")
    assert error["message"] == (
        f"Floating IP {forwarded['id']} in use by Port Forwarding resources.")
    env.rejected("DELETE", f"{F}/{forwarded['id']}", status=409,
                 type="FipInUseByPortForwarding")
    # a port forwarding's target gets no floating IP of its own
    env.rejected("POST", F, {"floatingip": {"floating_network_id": t.ext["id"],
                                            "port_id": t.vm["id"]}},
                 status=400, type="PortHasPortForwarding")
    # an associated floating IP gets no port forwardings
    bound = fip(env, t, port_id=other["id"])
    error = env.rejected("POST", f"{F}/{bound['id']}/port_forwardings", {"port_forwarding": {
        "protocol": "tcp", "external_port": 22, "internal_port": 2200,
        "internal_ip_address": t.vm["fixed_ips"][0]["ip_address"],
        "internal_port_id": t.vm["id"]}}, status=409, type="FloatingIPPortAlreadyAssociated")
    # and a port with a floating IP is no port forwarding's target
    error = env.rejected("POST", base, {"port_forwarding": {
        "protocol": "tcp", "external_port": 80, "internal_port": 80,
        "internal_ip_address": other["fixed_ips"][0]["ip_address"],
        "internal_port_id": other["id"]}}, status=409, type="PortHasBindingFloatingIP")
    assert error["message"].startswith(
        f"Cannot create port forwarding to floating IP {bound['floating_ip_address']} "
        f"({bound['id']}) with port {other['id']}")
    # the router and its interface stay while port forwardings need them
    r = f"/v2.0/routers/{t.router['id']}"
    env.rejected("PUT", r, {"router": {"external_gateway_info": None}}, status=409,
                 type="RouterExternalGatewayInUseByFloatingIp")
    env.rejected("PUT", f"{r}/remove_router_interface", {"subnet_id": t.subnet["id"]},
                 status=409, type="RouterInterfaceInUseByFloatingIP")
    # deleting the internal port deletes its port forwardings; the floating IP is free
    env.ok("DELETE", f"/v2.0/ports/{t.vm['id']}", status=204)
    assert env.store.latest().port_forwardings == {}
    assert env.ok("GET", f"{F}/{forwarded['id']}")["floatingip"]["router_id"] is None
    env.ok("DELETE", f"{F}/{forwarded['id']}", status=204)


def test_members_forward_only_their_floating_ips(tenv: Env) -> None:
    ext = external_network(tenv)
    alice = l3_setup(tenv, ALICE, ext=ext)
    bob = l3_setup(tenv, BOB, cidr="10.0.0.0/24", ext=ext)
    mine = fip(tenv, alice, ALICE)
    base = f"{F}/{mine['id']}/port_forwardings"
    pf = tenv.ok("POST", base, rule(alice), 201, token=ALICE)["port_forwarding"]
    tenv.rejected("GET", base, token=BOB, status=404, type="FloatingIPNotFound")
    tenv.rejected("GET", f"{base}/{pf['id']}", token=BOB, status=404, type="FloatingIPNotFound")
    tenv.rejected("DELETE", f"{base}/{pf['id']}", token=BOB, status=404,
                  type="FloatingIPNotFound")
    tenv.rejected("POST", base, rule(bob, 80), token=BOB, status=404, type="FloatingIPNotFound")
    # another project's port is not found
    tenv.rejected("POST", base, rule(bob, 80), token=ALICE, status=404, type="PortNotFound")
    assert tenv.ok("GET", base, token=ADMIN)["port_forwardings"] == [pf]
    tenv.ok("DELETE", f"{base}/{pf['id']}", status=204, token=ALICE)
