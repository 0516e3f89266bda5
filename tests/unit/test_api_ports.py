"""Ports through the REST API: MAC and IP allocation, fixed_ips forms, conflicts, binding."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from api_harness import Env, start_env

from controller import intent as model


@pytest.fixture
def net(env: Env) -> dict[str, Any]:
    return env.network(name="n")


@pytest.fixture
def subnet(env: Env, net: dict[str, Any]) -> dict[str, Any]:
    return env.subnet(net["id"], "10.0.0.0/24")


def test_create_allocates_mac_and_first_free_ip(
    env: Env, net: dict[str, Any], subnet: dict[str, Any]
) -> None:
    p1 = env.port(net["id"], name="vm1")
    p2 = env.port(net["id"], name="vm2")
    assert re.fullmatch(r"fa:16:3e(:[0-9a-f]{2}){3}", p1["mac_address"])
    assert p1["mac_address"] != p2["mac_address"]
    assert p1["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.0.0.2"}]
    assert p2["fixed_ips"][0]["ip_address"] == "10.0.0.3"
    assert p1["status"] == "DOWN" and p1["binding:vif_type"] == "unbound"
    assert p1["port_security_enabled"] is True
    default_sg = [g.id for g in env.store.latest().security_groups.values() if g.name == "default"]
    assert p1["security_groups"] == default_sg and len(default_sg) == 1  # Neutron's default group
    stored = env.store.latest().ports[p1["id"]]
    assert stored.fixed_ips == (model.FixedIP(subnet["id"], "10.0.0.2"),)
    assert stored.mac_address == p1["mac_address"]


def test_freed_address_is_reused(env: Env, net: dict[str, Any], subnet: dict[str, Any]) -> None:
    p1 = env.port(net["id"])
    env.port(net["id"])
    env.ok("DELETE", f"/v2.0/ports/{p1['id']}", status=204)
    assert env.port(net["id"])["fixed_ips"][0]["ip_address"] == "10.0.0.2"


def test_one_address_per_ipv4_subnet_and_none_without_subnets(
    env: Env, net: dict[str, Any]
) -> None:
    bare = env.network(name="bare")
    assert env.port(bare["id"])["fixed_ips"] == []
    a = env.subnet(net["id"], "10.0.0.0/24")
    b = env.subnet(net["id"], "10.0.1.0/24")
    env.subnet(net["id"], "fd00::/64", ip_version=6)
    ips = env.port(net["id"])["fixed_ips"]
    assert sorted((f["subnet_id"], f["ip_address"]) for f in ips) == sorted(
        [(a["id"], "10.0.0.2"), (b["id"], "10.0.1.2")]
    )


def test_fixed_ips_forms(env: Env, net: dict[str, Any], subnet: dict[str, Any]) -> None:
    by_subnet = env.port(net["id"], fixed_ips=[{"subnet_id": subnet["id"]}])
    assert by_subnet["fixed_ips"][0]["ip_address"] == "10.0.0.2"
    by_ip = env.port(net["id"], fixed_ips=[{"ip_address": "10.0.0.50"}])
    assert by_ip["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.0.0.50"}]
    both = env.port(net["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.0.0.200"}])
    assert both["fixed_ips"][0]["ip_address"] == "10.0.0.200"
    # an address outside the pool but inside the cidr is allowed when asked for by value
    env.ok(
        "PUT",
        f"/v2.0/subnets/{subnet['id']}",
        {"subnet": {"allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"}]}},
    )
    assert (
        env.port(net["id"], fixed_ips=[{"ip_address": "10.0.0.99"}])["fixed_ips"][0]["ip_address"]
        == "10.0.0.99"
    )


def test_ip_conflicts_and_range_errors(
    env: Env, net: dict[str, Any], subnet: dict[str, Any]
) -> None:
    p = env.port(net["id"], fixed_ips=[{"ip_address": "10.0.0.7"}])
    assert p
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.7"}]}},
        status=409,
        type="IpAddressAlreadyAllocated",
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": net["id"],
                "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "10.0.1.7"}],
            }
        },
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "192.168.9.9"}]}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.255"}]}},
        status=400,
        type="InvalidInput",
    )  # broadcast
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.300"}]}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.1"}]}},
        status=409,
        type="IpAddressAlreadyAllocated",
    )  # the gateway


def test_subnet_of_another_network_or_unknown(
    env: Env, net: dict[str, Any], subnet: dict[str, Any]
) -> None:
    other = env.network()
    other_subnet = env.subnet(other["id"], "10.9.0.0/24")
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"subnet_id": other_subnet["id"]}]}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": net["id"],
                "fixed_ips": [{"subnet_id": "0d1f1a5e-0000-4000-8000-000000000000"}],
            }
        },
        status=404,
        type="SubnetNotFound",
    )


def test_pool_exhaustion_is_409(env: Env, net: dict[str, Any]) -> None:
    env.subnet(net["id"], "10.0.0.0/30")  # one usable address after the gateway
    env.port(net["id"])
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"]}},
        status=409,
        type="IpAddressGenerationFailure",
    )


def test_mac_rules(env: Env, net: dict[str, Any], subnet: dict[str, Any]) -> None:
    p = env.port(net["id"], mac_address="FA:16:3E:AA:BB:CC")
    assert p["mac_address"] == "fa:16:3e:aa:bb:cc"
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:aa:bb:cc"}},
        status=409,
        type="MacAddressInUse",
    )
    for bad in (
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "fa:16:3e:aa:bb",
        "zz:16:3e:aa:bb:cc",
        "00:00:00:00:00:00",
    ):
        env.rejected(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": net["id"], "mac_address": bad}},
            status=400,
            type="InvalidInput",
        )
    other = env.network()
    env.port(other["id"], mac_address="fa:16:3e:aa:bb:cc")  # unique per network only


def test_update_fixed_ips_and_mac_revalidate(
    env: Env, net: dict[str, Any], subnet: dict[str, Any]
) -> None:
    a = env.port(net["id"])
    b = env.port(net["id"])
    b_ip = b["fixed_ips"][0]["ip_address"]
    env.rejected(
        "PUT",
        f"/v2.0/ports/{a['id']}",
        {"port": {"fixed_ips": [{"ip_address": b_ip}]}},
        status=409,
        type="IpAddressAlreadyAllocated",
    )
    env.rejected(
        "PUT",
        f"/v2.0/ports/{a['id']}",
        {"port": {"mac_address": b["mac_address"]}},
        status=409,
        type="MacAddressInUse",
    )
    env.rejected(
        "PUT",
        f"/v2.0/ports/{a['id']}",
        {"port": {"fixed_ips": [{"ip_address": "10.1.0.5"}]}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "PUT",
        f"/v2.0/ports/{a['id']}",
        {"port": {"network_id": net["id"]}},
        status=400,
        type="InvalidInput",
    )
    upd = env.ok(
        "PUT",
        f"/v2.0/ports/{a['id']}",
        {"port": {"fixed_ips": [{"ip_address": "10.0.0.77"}], "mac_address": "fa:16:3e:00:00:77"}},
    )["port"]
    assert (
        upd["fixed_ips"][0]["ip_address"] == "10.0.0.77"
        and upd["mac_address"] == "fa:16:3e:00:00:77"
    )
    # the old address is free again, and keeping an address by subnet_id keeps it
    assert env.port(net["id"])["fixed_ips"][0]["ip_address"] == a["fixed_ips"][0]["ip_address"]
    kept = env.ok(
        "PUT", f"/v2.0/ports/{a['id']}", {"port": {"fixed_ips": [{"subnet_id": subnet["id"]}]}}
    )["port"]
    assert kept["fixed_ips"][0]["ip_address"] == "10.0.0.77"
    assert len(env.dump()["IP_Allocation"]) == 3


def test_binding_and_vif_type(env: Env, net: dict[str, Any], subnet: dict[str, Any]) -> None:
    p = env.port(
        net["id"],
        **{
            "binding:host_id": "hv1",
            "binding:profile": {"k": [1, 2]},
            "device_owner": "compute:nova",
        },
    )
    assert p["binding:host_id"] == "hv1" and p["binding:vif_type"] == "ovs"
    assert p["binding:profile"] == {"k": [1, 2]}
    assert env.store.latest().ports[p["id"]].host_id == "hv1"
    env.rejected(
        "PUT",
        f"/v2.0/ports/{p['id']}",
        {"port": {"mac_address": "fa:16:3e:12:34:56"}},
        status=409,
        type="PortBound",
    )
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "binding:profile": "x"}},
        status=400,
        type="InvalidInput",
    )


def test_security_groups_and_port_security(
    env: Env, net: dict[str, Any], subnet: dict[str, Any]
) -> None:
    unknown = "5a0b7f4e-0000-4000-8000-000000000001"
    env.rejected(
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "security_groups": [unknown]}},
        status=404,
        type="SecurityGroupNotFound",
    )
    p = env.port(net["id"], port_security_enabled=False)
    assert p["port_security_enabled"] is False
    sg = model.SecurityGroup(
        id="5a0b7f4e-0000-4000-8000-0000000000aa", project_id="default", name="web"
    )
    env.store.transact(lambda h, i: h.put(sg))
    p2 = env.port(net["id"], security_groups=[sg.id])
    assert p2["security_groups"] == [sg.id]
    assert env.store.latest().ports[p2["id"]].security_groups == (sg.id,)
    env.rejected(
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": net["id"],
                "security_groups": [sg.id],
                "port_security_enabled": False,
            }
        },
        status=400,
        type="PortSecurityAndIPRequiredForSecurityGroups",
    )


def test_port_status_comes_from_runtime(tmp_path: Path) -> None:
    class Bound:
        def port_status(self, port_id: str) -> str:
            return "ACTIVE"

        def port_binding(self, port_id: str) -> dict[str, Any]:
            return {"chassis": "hv1", "bridge": "br-int", "ofport": 3, "datapath_id": 1}

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    env = start_env(tmp_path / "state", runtime=Bound())
    try:
        net = env.network()
        p = env.port(net["id"])
        assert p["status"] == "ACTIVE" and p["binding:vif_type"] == "ovs"
        assert p["binding:vif_details"]["bridge_name"] == "br-int"
    finally:
        env.close()


def test_list_filters(env: Env, net: dict[str, Any], subnet: dict[str, Any]) -> None:
    a = env.port(net["id"], device_id="vm-a")
    b = env.port(net["id"], device_id="vm-b")
    ids = lambda q: sorted(p["id"] for p in env.ok("GET", f"/v2.0/ports?{q}")["ports"])  # noqa: E731
    assert ids("device_id=vm-a") == [a["id"]]
    assert ids("device_id=vm-a&device_id=vm-b") == sorted([a["id"], b["id"]])
    assert ids(f"fixed_ips=ip_address%3D{b['fixed_ips'][0]['ip_address']}") == [b["id"]]
    assert ids(f"network_id={net['id']}&mac_address={a['mac_address']}") == [a["id"]]
    assert ids("status=ACTIVE") == []


def test_concurrent_writers_never_share_an_address(env: Env, net: dict[str, Any]) -> None:
    env.subnet(net["id"], "10.0.0.0/27")  # 29 allocatable addresses
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            resp = env.call("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
            with lock:
                ip = (
                    resp.json["port"]["fixed_ips"][0]["ip_address"]
                    if resp.status_int == 201
                    else ""
                )
                results.append((resp.status_int, ip if ip else resp.json["NeutronError"]["type"]))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    created = [ip for status, ip in results if status == 201]
    refused = [kind for status, kind in results if status != 201]
    assert len(created) == 29 and len(set(created)) == 29
    assert refused == ["IpAddressGenerationFailure"] * 11
    stored = [f.ip_address for p in env.store.latest().ports.values() for f in p.fixed_ips]
    assert sorted(stored) == sorted(created)
