"""First-free address allocation resumes where the index knows every address is held
(issue 11: no pass over a subnet's addresses per create), and answers as before."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from api_harness import Env

from controller import intent as model
from controller.rest import ipam


def _subnet(cidr: str, pools: list[tuple[str, str]], gateway: str) -> model.Subnet:
    return model.Subnet(
        id="s", project_id="p", network_id="n", name="", cidr=cidr, ip_version=4,
        gateway_ip=gateway, allocation_pools=tuple(model.AllocationPool(a, b) for a, b in pools),
    )


@pytest.mark.parametrize("seed", range(20))
def test_scan_from_any_valid_start_answers_as_first_free(seed: int) -> None:
    rng = random.Random(seed)
    subnet = _subnet("10.0.0.0/26", [("10.0.0.40", "10.0.0.62"), ("10.0.0.2", "10.0.0.20")],
                     "10.0.0.1")
    pool_ints = [i for a, b in ((2, 20), (40, 62)) for i in range(a, b + 1)]
    base = int(ipaddress.ip_address("10.0.0.0"))
    held = {str(ipaddress.ip_address(base + i)) for i in pool_ints if rng.random() < 0.7}
    if seed % 5 == 0:
        held |= {str(ipaddress.ip_address(base + i)) for i in pool_ints}  # full
    request = {str(ipaddress.ip_address(base + i)) for i in pool_ints if rng.random() < 0.1}
    used = held | request
    first_not_held = next(
        (base + i for i in pool_ints if str(ipaddress.ip_address(base + i)) not in held), None)
    limit = first_not_held if first_not_held is not None else base + 63
    starts = {0, base + 2, base + 21, base + 40, limit, rng.randrange(base, limit + 1)}
    for start in sorted(s for s in starts if s <= limit):  # valid: none past the first free
        got, bound = ipam.scan_pools(subnet, start, lambda ip: ip not in used, held.__contains__)
        assert got == ipam.first_free(subnet, used)
        # every pool address from `start` below `bound` is held: a valid next start
        assert bound >= start
        below = [base + i for i in pool_ints if start <= base + i < bound]
        assert all(str(ipaddress.ip_address(a)) in held for a in below)


def _ip(port: dict[str, Any]) -> str:
    return port["fixed_ips"][0]["ip_address"]  # type: ignore[no-any-return]


def test_freed_addresses_are_found_again_below_where_scans_resumed(env: Env) -> None:
    net = env.network(name="n")
    subnet = env.subnet(net["id"], "10.0.0.0/24")
    ports = [env.port(net["id"]) for _ in range(6)]
    assert [_ip(p) for p in ports] == [f"10.0.0.{i}" for i in range(2, 8)]
    env.ok("DELETE", f"/v2.0/ports/{ports[1]['id']}", status=204)  # frees .3
    env.ok("DELETE", f"/v2.0/ports/{ports[4]['id']}", status=204)  # frees .6
    assert _ip(env.port(net["id"])) == "10.0.0.3"
    assert _ip(env.port(net["id"])) == "10.0.0.6"
    assert _ip(env.port(net["id"])) == "10.0.0.8"
    # an update that moves a port's address gives the old one back
    moved = env.ok("PUT", f"/v2.0/ports/{ports[0]['id']}", {"port": {"fixed_ips": [
        {"subnet_id": subnet["id"], "ip_address": "10.0.0.100"}]}})["port"]
    assert _ip(moved) == "10.0.0.100"
    assert _ip(env.port(net["id"])) == "10.0.0.2"
    assert _ip(env.port(net["id"])) == "10.0.0.9"
    # a port updated by subnet only keeps its address
    kept = env.ok("PUT", f"/v2.0/ports/{ports[2]['id']}", {"port": {"fixed_ips": [
        {"subnet_id": subnet["id"]}]}})["port"]
    assert _ip(kept) == "10.0.0.4"


def test_changed_pools_restart_the_scan(env: Env) -> None:
    net = env.network(name="n")
    subnet = env.subnet(net["id"], "10.0.0.0/24",
                        allocation_pools=[{"start": "10.0.0.50", "end": "10.0.0.60"}])
    assert [_ip(env.port(net["id"])) for _ in range(3)] == ["10.0.0.50", "10.0.0.51", "10.0.0.52"]
    env.ok("PUT", f"/v2.0/subnets/{subnet['id']}", {"subnet": {"allocation_pools": [
        {"start": "10.0.0.10", "end": "10.0.0.60"}]}})
    assert _ip(env.port(net["id"])) == "10.0.0.10"
    assert _ip(env.port(net["id"])) == "10.0.0.11"


def test_several_addresses_in_one_request_and_in_one_bulk(env: Env) -> None:
    net = env.network(name="n")
    subnet = env.subnet(net["id"], "10.0.0.0/24")
    two = env.port(net["id"], fixed_ips=[{"subnet_id": subnet["id"]},
                                         {"subnet_id": subnet["id"], "ip_address": "10.0.0.2"}])
    assert [f["ip_address"] for f in two["fixed_ips"]] == ["10.0.0.3", "10.0.0.2"]
    bulk = env.ok("POST", "/v2.0/ports", {"ports": [{"network_id": net["id"]}] * 3}, 201)["ports"]
    assert [_ip(p) for p in bulk] == ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
    by_value = env.port(net["id"], fixed_ips=[{"ip_address": "10.0.0.7"}])
    assert _ip(by_value) == "10.0.0.7"
    assert _ip(env.port(net["id"])) == "10.0.0.8"
