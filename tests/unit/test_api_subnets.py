"""Subnets through the REST API: defaults, CIDR/gateway/pool validation, in-use rules."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import Env


@pytest.fixture
def net(env: Env) -> dict[str, Any]:
    return env.network(name="n")


def test_defaults_follow_neutron(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.0.0/24", name="s", dns_nameservers=["10.0.0.53", "8.8.8.8"])
    assert s["gateway_ip"] == "10.0.0.1"
    assert s["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    # no DHCP server runs: the default says so (true is accepted and stored as asked)
    assert s["ip_version"] == 4 and s["enable_dhcp"] is True and s["network_id"] == net["id"]
    assert s["dns_nameservers"] == ["10.0.0.53", "8.8.8.8"]  # order kept
    stored = env.store.latest().subnets[s["id"]]
    assert stored.cidr == "10.0.0.0/24" and stored.gateway_ip == "10.0.0.1"
    assert env.ok("GET", f"/v2.0/subnets/{s['id']}")["subnet"] == s


def test_gateway_inside_pool_range_splits_default_pool(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.0.0/28", gateway_ip="10.0.0.5")
    assert s["allocation_pools"] == [
        {"start": "10.0.0.1", "end": "10.0.0.4"},
        {"start": "10.0.0.6", "end": "10.0.0.14"},
    ]


def test_null_gateway(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.0.0/29", gateway_ip=None)
    assert s["gateway_ip"] is None
    assert s["allocation_pools"] == [{"start": "10.0.0.1", "end": "10.0.0.6"}]


def test_explicit_pools_and_ipv6(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(
        net["id"], "10.0.0.0/24", allocation_pools=[{"start": "10.0.0.100", "end": "10.0.0.110"}]
    )
    assert s["allocation_pools"] == [{"start": "10.0.0.100", "end": "10.0.0.110"}]
    v6 = env.subnet(net["id"], "fd00:1::/64")  # ip_version inferred from the cidr
    assert v6["gateway_ip"] == "fd00:1::1" and v6["ip_version"] == 6
    assert v6["allocation_pools"] == [{"start": "fd00:1::2", "end": "fd00:1::ffff:ffff:ffff:ffff"}]


@pytest.mark.parametrize(
    "attrs,type_",
    [
        ({"cidr": "10.0.0.1/24"}, "InvalidInput"),  # host bits set
        ({"cidr": "10.0.0.0/33"}, "InvalidInput"),
        ({"cidr": "banana"}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 6}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 5}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.1.1"}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.0"}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "not-an-ip"}, "InvalidInput"),
        (
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.1.2", "end": "10.0.1.9"}]},
            "OutOfBoundsAllocationPool",
        ),
        (
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.9", "end": "10.0.0.2"}]},
            "InvalidAllocationPool",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [
                    {"start": "10.0.0.2", "end": "10.0.0.20"},
                    {"start": "10.0.0.10", "end": "10.0.0.30"},
                ],
            },
            "OverlappingAllocationPools",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.20"}],
            },
            "GatewayConflictWithAllocationPools",
        ),
        ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2"}]}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "dns_nameservers": ["8.8.8.888"]}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "enable_dhcp": "sometimes"}, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "colour": "red"}, "InvalidInput"),
    ],
)
def test_bad_subnets_are_400_and_write_nothing(
    env: Env, net: dict[str, Any], attrs: dict[str, Any], type_: str
) -> None:
    env.rejected(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], **attrs}},
        status=400,
        type=type_,
    )


def test_missing_network_or_cidr(env: Env, net: dict[str, Any]) -> None:
    env.rejected(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"cidr": "10.0.0.0/24"}},
        status=400,
        type="HTTPBadRequest",
    )
    env.rejected(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"]}},
        status=400,
        type="HTTPBadRequest",
    )
    env.rejected(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": "6b3c6d9e-0000-4000-8000-000000000000", "cidr": "10.0.0.0/24"}},
        status=404,
        type="NetworkNotFound",
    )


def test_overlapping_cidr_on_same_network_rejected_but_fine_across_networks(
    env: Env, net: dict[str, Any]
) -> None:
    env.subnet(net["id"], "10.0.0.0/24")
    env.rejected(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.0.0.128/25"}},
        status=400,
        type="InvalidInput",
    )
    other = env.network(name="other")
    env.subnet(other["id"], "10.0.0.0/24")  # overlapping tenants' address spaces are the point


def test_update_pools_gateway_and_read_only_cidr(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.0.0/24")
    upd = env.ok(
        "PUT",
        f"/v2.0/subnets/{s['id']}",
        {
            "subnet": {
                "name": "renamed",
                "gateway_ip": "10.0.0.254",
                "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"}],
            }
        },
    )
    assert upd["subnet"]["gateway_ip"] == "10.0.0.254" and upd["subnet"]["revision_number"] == 2
    env.rejected(
        "PUT",
        f"/v2.0/subnets/{s['id']}",
        {"subnet": {"cidr": "10.1.0.0/24"}},
        status=400,
        type="InvalidInput",
    )
    env.rejected(
        "PUT",
        f"/v2.0/subnets/{s['id']}",
        {"subnet": {"gateway_ip": "10.0.0.15"}},
        status=400,
        type="GatewayConflictWithAllocationPools",
    )


def test_gateway_cannot_move_onto_a_port_address(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.0.0/24")
    port = env.port(net["id"])
    ip = port["fixed_ips"][0]["ip_address"]
    env.rejected(
        "PUT",
        f"/v2.0/subnets/{s['id']}",
        {"subnet": {"gateway_ip": ip, "allocation_pools": []}},
        status=409,
        type="GatewayIpInUse",
    )


def test_subnet_in_use_cannot_be_deleted(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.0.0/24")
    port = env.port(net["id"])
    env.rejected("DELETE", f"/v2.0/subnets/{s['id']}", status=409, type="SubnetInUse")
    env.ok("DELETE", f"/v2.0/ports/{port['id']}", status=204)
    env.ok("DELETE", f"/v2.0/subnets/{s['id']}", status=204)
    assert env.store.latest().subnets == {}


def test_filter_by_network_and_cidr(env: Env, net: dict[str, Any]) -> None:
    other = env.network()
    a = env.subnet(net["id"], "10.0.0.0/24")
    b = env.subnet(other["id"], "10.0.0.0/24")
    got = env.ok("GET", f"/v2.0/subnets?network_id={net['id']}")["subnets"]
    assert [s["id"] for s in got] == [a["id"]]
    got = env.ok("GET", "/v2.0/subnets?cidr=10.0.0.0/24&fields=id")["subnets"]
    assert sorted(s["id"] for s in got) == sorted([a["id"], b["id"]])


def test_enable_dhcp_is_stored_as_asked_and_can_be_turned_off(env: Env,
                                                                net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], "10.0.9.0/24", enable_dhcp=False)
    assert s["enable_dhcp"] is False
    assert env.store.latest().subnets[s["id"]].enable_dhcp is False
    got = env.ok("PUT", f"/v2.0/subnets/{s['id']}", {"subnet": {"enable_dhcp": True}})
    assert got["subnet"]["enable_dhcp"] is True
    assert env.store.latest().subnets[s["id"]].enable_dhcp is True
