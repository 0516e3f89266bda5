"""PUT /v2.0/routers/{id}/add_router_interface and remove_router_interface (issue 12).

By subnet and by port, Neutron's answer body, every refusal with Neutron's status,
type and message and the store unchanged, scoping between projects, and the
protection of a router's ports from the ports API.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from api_harness import ADMIN, ALICE, BOB, Env

GHOST = "00000000-0000-4000-8000-00000000dead"
R = "/v2.0/routers"
ANSWER_KEYS = {"id", "subnet_id", "subnet_ids", "port_id", "network_id", "project_id",
               "tenant_id"}


def router(env: Env, token: Optional[str] = None, **attrs: Any) -> dict[str, Any]:
    return env.ok("POST", R, {"router": attrs}, 201, token=token)["router"]  # type: ignore[no-any-return]


def add(env: Env, router_id: str, token: Optional[str] = None, **body: str) -> dict[str, Any]:
    return env.ok("PUT", f"{R}/{router_id}/add_router_interface", body, token=token)  # type: ignore[no-any-return]


def remove(env: Env, router_id: str, token: Optional[str] = None, **body: str) -> dict[str, Any]:
    return env.ok("PUT", f"{R}/{router_id}/remove_router_interface", body, token=token)  # type: ignore[no-any-return]


def net_and_subnet(env: Env, cidr: str, **kw: Any) -> dict[str, Any]:
    token = kw.pop("token", None)
    extra = {} if token is None else {"token": token}
    net = env.network(name=cidr, **extra, **{k: v for k, v in kw.items() if k == "shared"})
    return env.subnet(net["id"], cidr, **extra,
                      **{k: v for k, v in kw.items() if k != "shared"})


# -- by subnet --------------------------------------------------------------------------
def test_add_by_subnet_makes_the_gateway_port_and_answers_neutrons_body(env: Env) -> None:
    r = router(env, name="r")
    s = net_and_subnet(env, "10.0.1.0/24")
    answer = add(env, r["id"], subnet_id=s["id"])
    assert set(answer) == ANSWER_KEYS
    assert answer["id"] == r["id"] and answer["subnet_id"] == s["id"]
    assert answer["subnet_ids"] == [s["id"]] and answer["network_id"] == s["network_id"]
    assert answer["project_id"] == answer["tenant_id"] == r["project_id"]
    port = env.ok("GET", f"/v2.0/ports/{answer['port_id']}")["port"]
    assert port["device_owner"] == "network:router_interface" and port["device_id"] == r["id"]
    assert port["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "10.0.1.1"}]
    assert port["port_security_enabled"] is False and port["security_groups"] == []
    assert port["mac_address"].startswith("fa:16:3e:") and port["network_id"] == s["network_id"]
    assert port["binding:host_id"] == ""
    intent = env.store.latest()
    [iface] = intent.router_interfaces.values()
    assert (iface.router_id, iface.port_id, iface.subnet_id) == (r["id"], port["id"], s["id"])
    assert env.ok("GET", f"{R}/{r['id']}")["router"]["revision_number"] == 2
    listed = env.ok("GET", f"/v2.0/ports?device_id={r['id']}")["ports"]
    assert [p["id"] for p in listed] == [port["id"]]

    gone = remove(env, r["id"], subnet_id=s["id"])
    assert gone == answer
    intent = env.store.latest()
    assert intent.router_interfaces == {} and port["id"] not in intent.ports
    assert env.ok("GET", f"{R}/{r['id']}")["router"]["revision_number"] == 3
    env.ok("DELETE", f"{R}/{r['id']}", status=204)


def test_subnets_of_one_network_and_of_several_networks(env: Env) -> None:
    r = router(env, name="r")
    net = env.network(name="n")
    s1 = env.subnet(net["id"], "10.0.1.0/24")
    s2 = env.subnet(net["id"], "10.0.2.0/24")
    other = net_and_subnet(env, "10.0.3.0/24", gateway_ip="10.0.3.254")
    answers = [add(env, r["id"], subnet_id=s["id"]) for s in (s1, s2, other)]
    assert len({a["port_id"] for a in answers}) == 3
    ips = sorted(f.ip_address for p in env.store.latest().ports.values() for f in p.fixed_ips)
    assert ips == ["10.0.1.1", "10.0.2.1", "10.0.3.254"]
    assert len(env.store.latest().router_interfaces) == 3


def test_add_by_subnet_refusals_write_nothing(env: Env) -> None:
    r = router(env, name="r")
    path = f"{R}/{r['id']}/add_router_interface"
    s = net_and_subnet(env, "10.0.1.0/24")
    bare = net_and_subnet(env, "10.0.9.0/24", gateway_ip=None)
    error = env.rejected("PUT", path, {"subnet_id": bare["id"]}, status=400, type="BadRequest")
    assert error["message"] == (
        "Bad router request: Subnet for router interface must have a gateway IP.")
    error = env.rejected("PUT", path, {"subnet_id": GHOST}, status=404, type="SubnetNotFound")
    assert error["message"] == f"Subnet {GHOST} could not be found."
    for body, message in [
        ({}, "Either subnet_id or port_id must be specified"),
        (None, "Either subnet_id or port_id must be specified"),
        ({"subnet": s["id"]}, "Either subnet_id or port_id must be specified"),
        ({"subnet_id": "nope"}, "'nope' is not a valid UUID"),
        ({"subnet_id": 7}, "'7' is not a valid UUID"),
        ({"subnet_id": s["id"], "port_id": GHOST}, "Cannot specify both subnet-id and port-id"),
    ]:
        error = env.rejected("PUT", path, body, status=400, type="BadRequest")
        assert error["message"] == f"Bad router request: {message}.", error

    add(env, r["id"], subnet_id=s["id"])
    error = env.rejected("PUT", path, {"subnet_id": s["id"]}, status=400, type="BadRequest")
    assert error["message"] == f"Bad router request: Router already has a port on subnet {s['id']}."
    wide = net_and_subnet(env, "10.0.0.0/16")
    error = env.rejected("PUT", path, {"subnet_id": wide["id"]}, status=400, type="BadRequest")
    assert error["message"] == (
        f"Bad router request: Cidr 10.0.0.0/16 of subnet {wide['id']} overlaps with cidr "
        f"10.0.1.0/24 of subnet {s['id']}.")

    taken = net_and_subnet(env, "10.0.5.0/24")
    env.port(taken["network_id"], device_owner="network:router_interface",
             fixed_ips=[{"subnet_id": taken["id"], "ip_address": "10.0.5.1"}])
    error = env.rejected("PUT", path, {"subnet_id": taken["id"]}, status=409,
                         type="IpAddressAlreadyAllocated")
    assert "10.0.5.1" in error["message"]


def test_a_second_router_on_the_same_subnet_needs_another_address(env: Env) -> None:
    s = net_and_subnet(env, "10.0.1.0/24")
    r1, r2 = router(env, name="r1"), router(env, name="r2")
    add(env, r1["id"], subnet_id=s["id"])
    env.rejected("PUT", f"{R}/{r2['id']}/add_router_interface", {"subnet_id": s["id"]},
                 status=409, type="IpAddressAlreadyAllocated")
    p = env.port(s["network_id"], fixed_ips=[{"subnet_id": s["id"], "ip_address": "10.0.1.2"}])
    answer = add(env, r2["id"], port_id=p["id"])
    assert answer["port_id"] == p["id"] and answer["subnet_id"] == s["id"]


# -- by port ----------------------------------------------------------------------------
def test_add_by_port_takes_the_port_and_remove_deletes_it(env: Env) -> None:
    r = router(env, name="r")
    s = net_and_subnet(env, "10.0.1.0/24")
    p = env.port(s["network_id"], name="mine", fixed_ips=[{"subnet_id": s["id"]}])
    assert p["port_security_enabled"] is True and p["security_groups"]
    answer = add(env, r["id"], port_id=p["id"])
    assert answer == {
        "id": r["id"], "subnet_id": s["id"], "subnet_ids": [s["id"]], "port_id": p["id"],
        "network_id": s["network_id"], "project_id": p["project_id"],
        "tenant_id": p["project_id"],
    }
    port = env.ok("GET", f"/v2.0/ports/{p['id']}")["port"]
    assert port["device_owner"] == "network:router_interface" and port["device_id"] == r["id"]
    assert port["fixed_ips"] == p["fixed_ips"] and port["name"] == "mine"
    assert port["port_security_enabled"] is False and port["security_groups"] == []
    assert port["revision_number"] == p["revision_number"] + 1

    # removing by port, with its subnet named too, deletes the port (as Neutron does)
    assert remove(env, r["id"], port_id=p["id"], subnet_id=s["id"]) == answer
    assert p["id"] not in env.store.latest().ports
    assert env.store.latest().router_interfaces == {}


def test_add_by_port_refusals_write_nothing(env: Env) -> None:
    r = router(env, name="r")
    other = router(env, name="other")
    path = f"{R}/{r['id']}/add_router_interface"
    s = net_and_subnet(env, "10.0.1.0/24")
    s2 = env.subnet(s["network_id"], "10.0.2.0/24")
    error = env.rejected("PUT", path, {"port_id": GHOST}, status=404, type="PortNotFound")
    assert error["message"] == f"Port {GHOST} could not be found."
    vm = env.port(s["network_id"], device_id="vm-1", device_owner="compute:nova")
    error = env.rejected("PUT", path, {"port_id": vm["id"]}, status=409, type="PortInUse")
    assert error["message"] == (
        f"Unable to complete operation on port {vm['id']} for network {s['network_id']}. "
        "Port already has an attached device vm-1.")
    owned = env.port(s["network_id"], device_owner="compute:nova")
    env.rejected("PUT", path, {"port_id": owned["id"]}, status=409, type="PortInUse")
    bound = env.port(s["network_id"], **{"binding:host_id": "hv1"})
    env.rejected("PUT", path, {"port_id": bound["id"]}, status=409, type="PortInUse")
    empty = env.port(s["network_id"], fixed_ips=[])
    error = env.rejected("PUT", path, {"port_id": empty["id"]}, status=400, type="BadRequest")
    assert error["message"] == "Bad router request: Router port must have at least one fixed IP."
    both = env.port(s["network_id"], fixed_ips=[{"subnet_id": s["id"]}, {"subnet_id": s2["id"]}])
    error = env.rejected("PUT", path, {"port_id": both["id"]}, status=400, type="BadRequest")
    assert error["message"] == (
        "Bad router request: Cannot have multiple IPv4 subnets on router port.")

    taken = add(env, other["id"], subnet_id=s["id"])["port_id"]
    env.rejected("PUT", path, {"port_id": taken}, status=409, type="PortInUse")
    add(env, r["id"], subnet_id=s2["id"])
    again = env.port(s["network_id"], fixed_ips=[{"subnet_id": s2["id"]}])
    error = env.rejected("PUT", path, {"port_id": again["id"]}, status=400, type="BadRequest")
    assert error["message"] == (
        f"Bad router request: Router already has a port on subnet {s2['id']}.")


# -- remove -----------------------------------------------------------------------------
def test_remove_refusals_write_nothing(env: Env) -> None:
    r = router(env, name="r")
    path = f"{R}/{r['id']}/remove_router_interface"
    s = net_and_subnet(env, "10.0.1.0/24")
    s2 = net_and_subnet(env, "10.0.2.0/24")
    error = env.rejected("PUT", path, {"subnet_id": s["id"]}, status=404,
                         type="RouterInterfaceNotFoundForSubnet")
    assert error["message"] == f"Router {r['id']} has no interface on subnet {s['id']}"
    answer = add(env, r["id"], subnet_id=s["id"])
    plain = env.port(s2["network_id"])
    for port_id in (plain["id"], GHOST):
        error = env.rejected("PUT", path, {"port_id": port_id}, status=404,
                             type="RouterInterfaceNotFound")
        assert error["message"] == (
            f"Router {r['id']} does not have an interface with id {port_id}")
    other = router(env, name="other")
    env.rejected("PUT", f"{R}/{other['id']}/remove_router_interface",
                 {"port_id": answer["port_id"]}, status=404, type="RouterInterfaceNotFound")
    error = env.rejected("PUT", path, {"port_id": answer["port_id"], "subnet_id": s2["id"]},
                         status=400, type="SubnetMismatchForPort")
    assert error["message"] == (
        f"Subnet on port {answer['port_id']} does not match the requested subnet {s2['id']}.")
    env.rejected("PUT", path, {"subnet_id": GHOST}, status=404, type="SubnetNotFound")
    env.rejected("PUT", path, {}, status=400, type="BadRequest")
    env.rejected("PUT", path, {"port_id": "x"}, status=400, type="BadRequest")


def test_router_in_use_and_router_ports_protected_from_the_ports_api(env: Env) -> None:
    r = router(env, name="r")
    s = net_and_subnet(env, "10.0.1.0/24")
    a = add(env, r["id"], subnet_id=s["id"])
    error = env.rejected("DELETE", f"{R}/{r['id']}", status=409, type="RouterInUse")
    assert error["message"] == f"Router {r['id']} has ports still attached: {a['port_id']}"
    error = env.rejected("DELETE", f"/v2.0/ports/{a['port_id']}", status=409,
                         type="ServicePortInUse")
    assert error["message"] == (
        f"Port {a['port_id']} cannot be deleted directly via the port API: "
        "has device owner network:router_interface.")
    port = f"/v2.0/ports/{a['port_id']}"
    for change in ({"device_owner": ""}, {"device_id": "x"},
                   {"fixed_ips": []}):
        env.rejected("PUT", port, {"port": change}, status=409, type="PortInUse")
    assert env.ok("PUT", port, {"port": {"name": "gw"}})["port"]["name"] == "gw"
    env.rejected("DELETE", f"/v2.0/subnets/{s['id']}", status=409, type="SubnetInUse")
    env.rejected("DELETE", f"/v2.0/networks/{s['network_id']}", status=409, type="NetworkInUse")

    # a port that merely says it is a router's is no router port: it can go
    fake = env.port(s["network_id"], device_owner="network:router_interface", device_id=r["id"])
    env.ok("DELETE", f"/v2.0/ports/{fake['id']}", status=204)

    remove(env, r["id"], port_id=a["port_id"])
    env.ok("DELETE", f"{R}/{r['id']}", status=204)
    env.ok("DELETE", f"/v2.0/networks/{s['network_id']}", status=204)


# -- projects ---------------------------------------------------------------------------
def test_members_attach_only_what_they_may(tenv: Env) -> None:
    mine = router(tenv, ALICE, name="alice-r")
    path = f"{R}/{mine['id']}/add_router_interface"
    own = net_and_subnet(tenv, "10.0.1.0/24", token=ALICE)
    bobs = net_and_subnet(tenv, "10.0.2.0/24", token=BOB)
    shared = net_and_subnet(tenv, "10.0.3.0/24", token=ADMIN, shared=True)
    tenv.rejected("PUT", path, {"subnet_id": bobs["id"]}, token=ALICE, status=404,
                  type="SubnetNotFound")
    error = tenv.rejected("PUT", path, {"subnet_id": shared["id"]}, token=ALICE, status=400,
                          type="BadRequest")
    assert error["message"] == (
        f"Bad router request: Cannot add interface to router because subnet {shared['id']} "
        "is not owned by project making the request.")
    bob_port = tenv.port(bobs["network_id"], token=BOB)
    tenv.rejected("PUT", path, {"port_id": bob_port["id"]}, token=ALICE, status=404,
                  type="PortNotFound")
    # a port Bob put on Alice's shared-by-admin network: seen by the network owner only
    theirs = router(tenv, BOB, name="bob-r")
    tenv.rejected("PUT", f"{R}/{theirs['id']}/add_router_interface", {"subnet_id": own["id"]},
                  token=ALICE, status=404, type="RouterNotFound")
    tenv.rejected("PUT", f"{R}/{theirs['id']}/add_router_interface", {"subnet_id": own["id"]},
                  token=BOB, status=404, type="SubnetNotFound")

    answer = add(tenv, mine["id"], ALICE, subnet_id=own["id"])
    assert answer["project_id"] == "alice"
    port = tenv.ok("GET", f"/v2.0/ports/{answer['port_id']}", token=ALICE)["port"]
    assert port["project_id"] == "alice"
    tenv.rejected("PUT", f"{R}/{mine['id']}/remove_router_interface", {"subnet_id": own["id"]},
                  token=BOB, status=404, type="RouterNotFound")
    tenv.rejected("DELETE", f"/v2.0/ports/{answer['port_id']}", token=ALICE, status=409,
                  type="ServicePortInUse")

    # an admin may attach a shared subnet to Alice's router; the port is Alice's
    via_admin = add(tenv, mine["id"], ADMIN, subnet_id=shared["id"])
    assert via_admin["project_id"] == "alice"
    remove(tenv, mine["id"], ALICE, subnet_id=shared["id"])
    remove(tenv, mine["id"], ALICE, port_id=answer["port_id"])
    tenv.ok("DELETE", f"{R}/{mine['id']}", status=204, token=ALICE)


def test_member_may_not_give_its_router_an_address_outside_anothers_pools(tenv: Env) -> None:
    shared = net_and_subnet(tenv, "10.0.3.0/24", token=ADMIN, shared=True,
                            allocation_pools=[{"start": "10.0.3.10", "end": "10.0.3.20"}])
    mine = router(tenv, ALICE, name="alice-r")
    inside = tenv.port(shared["network_id"], token=ALICE)
    assert inside["fixed_ips"][0]["ip_address"] == "10.0.3.10"
    outside = tenv.port(shared["network_id"], token=ADMIN, project_id="alice",
                        fixed_ips=[{"subnet_id": shared["id"], "ip_address": "10.0.3.200"}])
    error = tenv.rejected("PUT", f"{R}/{mine['id']}/add_router_interface",
                          {"port_id": outside["id"]}, token=ALICE, status=400, type="BadRequest")
    assert "out of the allocation pool" in error["message"]
    assert add(tenv, mine["id"], ALICE, port_id=inside["id"])["subnet_id"] == shared["id"]


def test_an_ipv6_subnet_is_attached_and_its_extra_routes_stay_ipv4(env: Env) -> None:
    """An IPv6 interface is accepted (its prefix is advertised, controller/router_advert):
    the router port takes the subnet's gateway address; extra routes stay IPv4."""
    r = router(env, name="r")
    net = env.network(name="dual")
    v4 = env.subnet(net["id"], "10.0.1.0/24")
    v6 = env.subnet(net["id"], "2001:db8:1::/64", ip_version=6, ipv6_ra_mode="slaac",
                    ipv6_address_mode="slaac")
    add(env, r["id"], subnet_id=v4["id"])
    got = add(env, r["id"], subnet_id=v6["id"])
    port = env.ok("GET", f"/v2.0/ports/{got['port_id']}")["port"]
    assert port["fixed_ips"] == [{"subnet_id": v6["id"], "ip_address": "2001:db8:1::1"}]
    env.rejected("PUT", f"{R}/{r['id']}/add_extraroutes", {"router": {"routes": [
        {"destination": "2001:db8:9::/48", "nexthop": "2001:db8:1::5"}]}},
        status=400, type="InvalidRoutes")


def test_network_owner_may_not_take_anothers_port_for_its_router(tenv: Env) -> None:
    net = tenv.network(name="alice-shared", token=ADMIN, project_id="alice", shared=True)
    subnet = tenv.subnet(net["id"], "10.0.4.0/24", token=ADMIN, project_id="alice")
    bobs = tenv.port(net["id"], token=BOB)
    mine = router(tenv, ALICE, name="alice-r")
    assert tenv.ok("GET", f"/v2.0/ports/{bobs['id']}", token=ALICE)["port"]["id"] == bobs["id"]
    tenv.rejected("PUT", f"{R}/{mine['id']}/add_router_interface", {"port_id": bobs["id"]},
                  token=ALICE, status=403, type="PolicyNotAuthorized")
    assert add(tenv, mine["id"], ALICE, subnet_id=subnet["id"])["project_id"] == "alice"


def test_concurrent_attachments_of_one_subnet_make_one_interface(env: Env) -> None:
    r = router(env, name="r")
    s = net_and_subnet(env, "10.0.1.0/24")
    wide = net_and_subnet(env, "10.0.0.0/16")
    statuses: list[int] = []
    lock = threading.Lock()

    def hit(i: int) -> None:
        body = {"subnet_id": (s if i % 2 else wide)["id"]}
        resp = env.call("PUT", f"{R}/{r['id']}/add_router_interface", body)
        with lock:
            statuses.append(resp.status_int)

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses.count(200) == 1 and sorted(set(statuses)) == [200, 400], statuses
    [iface] = env.store.latest().router_interfaces.values()
    routers_ports = [p for p in env.store.latest().ports.values() if p.device_id == r["id"]]
    assert [p.id for p in routers_ports] == [iface.port_id]


def test_a_routed_subnet_keeps_its_gateway(env: Env) -> None:
    """The router's port holds the gateway address guests route through: moving the
    gateway (or dropping it) is refused while the interface exists, as in Neutron."""
    r = router(env, name="r")
    s = net_and_subnet(env, "10.0.9.0/24")
    answer = add(env, r["id"], subnet_id=s["id"])
    for gateway in ("10.0.9.254", None):
        error = env.rejected("PUT", f"/v2.0/subnets/{s['id']}",
                             {"subnet": {"gateway_ip": gateway}}, status=409,
                             type="GatewayIpInUse")
        assert answer["port_id"] in error["message"]
    assert env.store.latest().subnets[s["id"]].gateway_ip == "10.0.9.1"
    remove(env, r["id"], subnet_id=s["id"])
    env.ok("PUT", f"/v2.0/subnets/{s['id']}", {"subnet": {"gateway_ip": None}})
