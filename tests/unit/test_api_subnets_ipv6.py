"""IPv6 subnets through the REST API: ipv6_ra_mode / ipv6_address_mode (Neutron's
validation, read-only after create, stored, filterable) and EUI-64 addresses of ports
on auto-address (SLAAC, DHCPv6-stateless) subnets."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from api_harness import Env, openstack_cli

V6 = "2001:db8:1::/64"
MAC = "fa:16:3e:12:34:56"
# By hand: fa = 1111 1010, the universal/local bit (0x02) flipped: 1111 1000 = f8;
# ff:fe between the MAC's halves: f8:16:3e:ff:fe:12:34:56 -> f816:3eff:fe12:3456.
MAC_EUI64 = "2001:db8:1:0:f816:3eff:fe12:3456"


@pytest.fixture
def net(env: Env) -> dict[str, Any]:
    return env.network(name="n")


def _post_subnet(net_id: str, **attrs: Any) -> dict[str, Any]:
    return {"subnet": {"network_id": net_id, **attrs}}


def _subnet_path(subnet: dict[str, Any]) -> str:
    return f"/v2.0/subnets/{subnet['id']}"


def _ips(port: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["subnet_id"], f["ip_address"]) for f in port["fixed_ips"]]


# -- the attributes -------------------------------------------------------------------
def test_modes_are_created_read_and_stored(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], V6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    assert s["ipv6_ra_mode"] == "slaac" and s["ipv6_address_mode"] == "slaac"
    assert s["ip_version"] == 6
    assert env.ok("GET", _subnet_path(s))["subnet"] == s
    stored = env.store.latest().subnets[s["id"]]
    assert stored.ipv6_ra_mode == "slaac" and stored.ipv6_address_mode == "slaac"
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    assert v4["ipv6_ra_mode"] is None and v4["ipv6_address_mode"] is None
    (row,) = [r for r in env.dump()["Subnet"] if s["id"] in r]
    assert row.count('"slaac"') == 2  # both columns, as the server holds them


@pytest.mark.parametrize(
    "ra,address",
    [
        ("slaac", None),  # Neutron: either set alone is valid
        (None, "dhcpv6-stateless"),
        ("dhcpv6-stateful", "dhcpv6-stateful"),
        ("dhcpv6-stateless", "dhcpv6-stateless"),
        (None, None),  # explicit nulls: unset
    ],
)
def test_valid_combinations(env: Env, net: dict[str, Any], ra: Any, address: Any) -> None:
    s = env.subnet(net["id"], V6, ipv6_ra_mode=ra, ipv6_address_mode=address)
    assert (s["ipv6_ra_mode"], s["ipv6_address_mode"]) == (ra, address)


def test_stateful_needs_no_64(env: Env, net: dict[str, Any]) -> None:
    """Only auto-address modes need the EUI-64 /64 (Neutron's _validate_eui64_applicable)."""
    s = env.subnet(net["id"], "2001:db8:2::/80", ipv6_ra_mode="dhcpv6-stateful",
                   ipv6_address_mode="dhcpv6-stateful")
    assert s["ipv6_address_mode"] == "dhcpv6-stateful"


def test_list_and_filter(env: Env, net: dict[str, Any]) -> None:
    a = env.subnet(net["id"], V6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    b = env.subnet(net["id"], "2001:db8:2::/64", ipv6_address_mode="dhcpv6-stateless")
    c = env.subnet(net["id"], "10.0.0.0/24")

    def ids(query: str) -> set[str]:
        return {s["id"] for s in env.ok("GET", f"/v2.0/subnets{query}")["subnets"]}

    assert ids("") == {a["id"], b["id"], c["id"]}
    assert ids("?ipv6_address_mode=slaac") == {a["id"]}
    assert ids("?ipv6_address_mode=dhcpv6-stateless") == {b["id"]}
    assert ids("?ipv6_ra_mode=slaac") == {a["id"]}
    assert ids("?ipv6_address_mode=slaac&ipv6_address_mode=dhcpv6-stateless") == {
        a["id"], b["id"]}
    assert ids("?ipv6_ra_mode=dhcpv6-stateful") == set()
    assert ids("?ipv6_ra_mode=banana") == set()
    listed = env.ok("GET", "/v2.0/subnets?fields=id&fields=ipv6_ra_mode")["subnets"]
    assert {s["id"]: s["ipv6_ra_mode"] for s in listed} == {
        a["id"]: "slaac", b["id"]: None, c["id"]: None}


@pytest.mark.parametrize(
    "cidr,attrs,message",
    [
        (V6, {"ipv6_ra_mode": "banana"}, "ipv6_ra_mode"),
        (V6, {"ipv6_address_mode": "SLAAC"}, "ipv6_address_mode"),
        (V6, {"ipv6_address_mode": 6}, "ipv6_address_mode"),
        ("10.0.0.0/24", {"ipv6_ra_mode": "slaac"},
         "ipv6_ra_mode is not valid when ip_version is 4"),
        ("10.0.0.0/24", {"ipv6_address_mode": "dhcpv6-stateful"},
         "ipv6_address_mode is not valid when ip_version is 4"),
        ("10.0.0.0/24", {"ip_version": 4, "ipv6_ra_mode": "slaac",
                         "ipv6_address_mode": "slaac"},
         "ipv6_ra_mode is not valid when ip_version is 4"),
        (V6, {"ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateless"},
         "ipv6_ra_mode set to 'slaac' with ipv6_address_mode set to 'dhcpv6-stateless' is "
         "not valid. If both attributes are set, they must be the same value"),
        (V6, {"ipv6_ra_mode": "dhcpv6-stateful", "ipv6_address_mode": "slaac"},
         "ipv6_ra_mode set to 'dhcpv6-stateful' with ipv6_address_mode set to 'slaac'"),
        ("2001:db8:1::/80", {"ipv6_address_mode": "slaac"},
         "Invalid CIDR 2001:db8:1::/80 for IPv6 address mode. OpenStack uses the EUI-64 "
         "address format, which requires the prefix to be /64"),
        ("2001:db8::/56", {"ipv6_ra_mode": "slaac"}, "Invalid CIDR 2001:db8::/56"),
        ("2001:db8::/63", {"ipv6_ra_mode": "dhcpv6-stateless",
                           "ipv6_address_mode": "dhcpv6-stateless"}, "requires the prefix"),
        (V6, {"ipv6_ra_mode": "slaac", "enable_dhcp": False},
         "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False"),
        (V6, {"ipv6_address_mode": "dhcpv6-stateful", "enable_dhcp": False},
         "cannot be set when enable_dhcp is set to False"),
    ],
)
def test_invalid_modes_are_400_and_write_nothing(
    env: Env, net: dict[str, Any], cidr: str, attrs: dict[str, Any], message: str
) -> None:
    error = env.rejected("POST", "/v2.0/subnets", _post_subnet(net["id"], cidr=cidr, **attrs),
                         status=400, type="InvalidInput")
    assert error["message"].startswith("Invalid input for operation: ")
    assert message in error["message"]
    assert env.store.latest().subnets == {}


def test_bulk_create_with_a_bad_mode_writes_nothing(env: Env, net: dict[str, Any]) -> None:
    body = {"subnets": [
        {"network_id": net["id"], "cidr": V6, "ipv6_address_mode": "slaac"},
        {"network_id": net["id"], "cidr": "10.0.0.0/24", "ipv6_address_mode": "slaac"},
    ]}
    env.rejected("POST", "/v2.0/subnets", body, status=400, type="InvalidInput")


@pytest.mark.parametrize(
    "change",
    [
        {"ipv6_ra_mode": "slaac"},  # even unchanged: not allowed in PUT (neutron-lib)
        {"ipv6_address_mode": "dhcpv6-stateless"},
        {"ipv6_address_mode": None},
    ],
)
def test_modes_are_read_only(env: Env, net: dict[str, Any], change: dict[str, Any]) -> None:
    s = env.subnet(net["id"], V6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    error = env.rejected("PUT", _subnet_path(s), {"subnet": change}, status=400,
                         type="InvalidInput")
    assert "Cannot update read-only attribute ipv6_" in error["message"]


def test_dhcp_cannot_be_disabled_with_modes(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], V6, ipv6_address_mode="dhcpv6-stateful")
    error = env.rejected("PUT", _subnet_path(s), {"subnet": {"enable_dhcp": False}},
                         status=400, type="InvalidInput")
    assert error["message"].endswith("Cannot disable enable_dhcp with ipv6 attributes set")
    plain = env.subnet(net["id"], "2001:db8:9::/64")  # no modes: as before
    env.ok("PUT", _subnet_path(plain), {"subnet": {"enable_dhcp": False}})
    upd = env.ok("PUT", _subnet_path(s), {"subnet": {"name": "renamed"}})["subnet"]
    assert upd["ipv6_address_mode"] == "dhcpv6-stateful" and upd["name"] == "renamed"


# -- EUI-64 addresses -----------------------------------------------------------------
@pytest.mark.parametrize("mode", [{"ipv6_address_mode": "slaac"},
                                  {"ipv6_ra_mode": "slaac"},
                                  {"ipv6_ra_mode": "dhcpv6-stateless",
                                   "ipv6_address_mode": "dhcpv6-stateless"}])
def test_port_gets_its_eui64_address(env: Env, net: dict[str, Any], mode: dict[str, Any]
                                     ) -> None:
    s = env.subnet(net["id"], V6, **mode)
    p = env.port(net["id"], mac_address=MAC)
    assert _ips(p) == [(s["id"], MAC_EUI64)]
    # a locally administered MAC: the bit flips the other way (02 -> 00)
    q = env.port(net["id"], mac_address="02:00:00:00:00:01")
    assert _ips(q) == [(s["id"], "2001:db8:1::ff:fe00:1")]
    stored = env.store.latest().ports[p["id"]]
    assert [(f.subnet_id, f.ip_address) for f in stored.fixed_ips] == [(s["id"], MAC_EUI64)]
    found = env.ok("GET", f"/v2.0/ports?fixed_ips=ip_address%3D{MAC_EUI64}")["ports"]
    assert [x["id"] for x in found] == [p["id"]]


def test_random_mac_port_gets_the_address_of_its_mac(env: Env, net: dict[str, Any]) -> None:
    s = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    p = env.port(net["id"])
    octets = [int(x, 16) for x in p["mac_address"].split(":")]
    iid = [octets[0] ^ 2, octets[1], octets[2], 0xFF, 0xFE, octets[3], octets[4], octets[5]]
    groups = [f"{iid[i] << 8 | iid[i + 1]:x}" for i in range(0, 8, 2)]
    assert _ips(p) == [(s["id"], "2001:db8:1:0:" + ":".join(groups))]


def test_dual_stack_port(env: Env, net: dict[str, Any]) -> None:
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    v6 = env.subnet(net["id"], V6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    stateful = env.subnet(net["id"], "2001:db8:5::/64", ipv6_address_mode="dhcpv6-stateful")
    # nothing asked: IPv4 as today (first free; no address on the stateful subnet, as
    # before) and the EUI-64 address
    p = env.port(net["id"], mac_address=MAC)
    assert _ips(p) == [(v4["id"], "10.0.0.2"), (v6["id"], MAC_EUI64)]
    # a fixed IPv4 address: the EUI-64 address comes anyway (Neutron: implicit)
    q = env.port(net["id"], mac_address="fa:16:3e:00:00:01",
                 fixed_ips=[{"ip_address": "10.0.0.50"}])
    assert _ips(q) == [(v4["id"], "10.0.0.50"), (v6["id"], "2001:db8:1:0:f816:3eff:fe00:1")]
    # only the auto subnet named: only its address (no IPv4 asked for)
    r = env.port(net["id"], mac_address="fa:16:3e:00:00:02", fixed_ips=[{"subnet_id": v6["id"]}])
    assert _ips(r) == [(v6["id"], "2001:db8:1:0:f816:3eff:fe00:2")]
    # its own EUI-64 address asked by value is accepted (Neutron compares with the MAC)
    t = env.port(net["id"], mac_address="fa:16:3e:00:00:03",
                 fixed_ips=[{"subnet_id": v4["id"]},
                            {"subnet_id": v6["id"], "ip_address": "2001:db8:1::f816:3eff:fe00:3"},
                            {"subnet_id": v6["id"]}])
    assert _ips(t) == [(v4["id"], "10.0.0.3"), (v6["id"], "2001:db8:1:0:f816:3eff:fe00:3")]
    # a stateful subnet still allocates from its pool when asked
    u = env.port(net["id"], mac_address="fa:16:3e:00:00:04",
                 fixed_ips=[{"subnet_id": stateful["id"]}])
    assert _ips(u) == [(stateful["id"], "2001:db8:5::2"),
                       (v6["id"], "2001:db8:1:0:f816:3eff:fe00:4")]


@pytest.mark.parametrize("fixed", [
    [{"ip_address": "2001:db8:1::10"}],
    [{"subnet_id": "SUBNET", "ip_address": "2001:db8:1::10"}],
    [{"ip_address": "10.0.0.9"}, {"ip_address": "2001:db8:1::10"}],
    # another MAC's EUI-64 address
    [{"ip_address": "2001:db8:1::f816:3eff:fe00:99"}],
])
def test_fixed_address_on_auto_subnet_is_refused(
    env: Env, net: dict[str, Any], fixed: list[dict[str, str]]
) -> None:
    env.subnet(net["id"], "10.0.0.0/24")
    v6 = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    fixed = [{k: (v6["id"] if v == "SUBNET" else v) for k, v in f.items()} for f in fixed]
    error = env.rejected("POST", "/v2.0/ports",
                         {"port": {"network_id": net["id"], "mac_address": MAC,
                                   "fixed_ips": fixed}},
                         status=400, type="AllocationOnAutoAddressSubnet")
    asked = ipaddress.ip_address(fixed[-1]["ip_address"])
    assert error["message"] == (
        f"IPv6 address {asked} cannot be directly assigned to a port on "
        f"subnet {v6['id']} as the subnet is configured for automatic addresses")
    assert env.store.latest().ports == {}


def test_update_keeps_eui64_and_refuses_another(env: Env, net: dict[str, Any]) -> None:
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    v6 = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    p = env.port(net["id"], mac_address=MAC)
    path = f"/v2.0/ports/{p['id']}"
    env.rejected("PUT", path, {"port": {"fixed_ips": [{"ip_address": "2001:db8:1::10"}]}},
                 status=400, type="AllocationOnAutoAddressSubnet")
    # only IPv4 asked: the automatic address stays (Neutron keeps it unless deleted)
    upd = env.ok("PUT", path, {"port": {"fixed_ips": [{"ip_address": "10.0.0.77"}]}})["port"]
    assert _ips(upd) == [(v4["id"], "10.0.0.77"), (v6["id"], MAC_EUI64)]
    # the whole list sent back: unchanged
    same = env.ok("PUT", path, {"port": {"fixed_ips": upd["fixed_ips"]}})["port"]
    assert same["revision_number"] == upd["revision_number"]


def test_eui64_follows_mac_change(env: Env, net: dict[str, Any]) -> None:
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    v6 = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    p = env.port(net["id"], mac_address=MAC)
    path = f"/v2.0/ports/{p['id']}"
    upd = env.ok("PUT", path, {"port": {"mac_address": "fa:16:3e:ab:cd:ef"}})["port"]
    assert _ips(upd) == [(v4["id"], "10.0.0.2"), (v6["id"], "2001:db8:1:0:f816:3eff:feab:cdef")]
    stored = env.store.latest().ports[p["id"]]
    assert stored.fixed_ips[1].ip_address == "2001:db8:1:0:f816:3eff:feab:cdef"
    # a MAC change with the old list sent back (as a client sending the whole port)
    again = env.ok("PUT", path, {"port": {"mac_address": MAC,
                                          "fixed_ips": upd["fixed_ips"]}})["port"]
    assert _ips(again) == [(v4["id"], "10.0.0.2"), (v6["id"], MAC_EUI64)]


def test_new_auto_subnet_gives_existing_ports_their_address(env: Env, net: dict[str, Any]
                                                            ) -> None:
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    p = env.port(net["id"], mac_address=MAC)
    # a port Loom would never give an EUI-64 address (a router's interface)
    rif = env.port(net["id"], mac_address="fa:16:3e:00:00:01",
                   device_owner="network:router_interface", fixed_ips=[{"subnet_id": v4["id"]}])
    v6 = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    got = env.ok("GET", f"/v2.0/ports/{p['id']}")["port"]
    assert _ips(got) == [(v4["id"], "10.0.0.2"), (v6["id"], MAC_EUI64)]
    assert got["revision_number"] == p["revision_number"] + 1
    assert env.ok("GET", f"/v2.0/ports/{rif['id']}")["port"]["fixed_ips"] == rif["fixed_ips"]
    # a stateful subnet changes nothing on existing ports
    env.subnet(net["id"], "2001:db8:5::/64", ipv6_address_mode="dhcpv6-stateful")
    assert env.ok("GET", f"/v2.0/ports/{p['id']}")["port"]["fixed_ips"] == got["fixed_ips"]


def test_deleting_auto_subnet_takes_back_its_addresses(env: Env, net: dict[str, Any]) -> None:
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    v6 = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    p = env.port(net["id"], mac_address=MAC)
    env.ok("DELETE", _subnet_path(v6), status=204)
    got = env.ok("GET", f"/v2.0/ports/{p['id']}")["port"]
    assert _ips(got) == [(v4["id"], "10.0.0.2")]
    assert v6["id"] not in env.store.latest().subnets
    # a non-auto subnet with addresses still cannot go (as before)
    env.rejected("DELETE", _subnet_path(v4), status=409, type="SubnetInUse")


def test_router_interface_may_take_any_address_and_keeps_the_subnet(
    env: Env, net: dict[str, Any]
) -> None:
    """Neutron's ROUTER_INTERFACE_OWNERS: given an address by hand, no EUI-64 one; the
    subnet cannot be deleted under it (_subnet_check_ip_allocations_internal_router_ports)."""
    v6 = env.subnet(net["id"], V6, ipv6_address_mode="slaac")
    rif = env.port(net["id"], mac_address=MAC, device_owner="network:router_interface",
                   fixed_ips=[{"ip_address": "2001:db8:1::1"}])
    assert _ips(rif) == [(v6["id"], "2001:db8:1::1")]
    env.rejected("DELETE", _subnet_path(v6), status=409, type="SubnetInUse")


def test_openstack_cli_creates_a_slaac_subnet(env: Env, net: dict[str, Any]) -> None:
    """The stock client sends both modes and reads them back."""
    with openstack_cli(env) as osc:
        out = osc("subnet", "create", "--network", net["id"], "--ip-version", "6",
                  "--subnet-range", V6, "--ipv6-ra-mode", "slaac", "--ipv6-address-mode",
                  "slaac", "v6", "-f", "json")
        created = json.loads(out)
        assert created["ipv6_ra_mode"] == "slaac" and created["ipv6_address_mode"] == "slaac"
        port = json.loads(osc("port", "create", "--network", net["id"], "--mac-address", MAC,
                              "p", "-f", "json"))
    assert [f["ip_address"] for f in port["fixed_ips"]] == [MAC_EUI64]
