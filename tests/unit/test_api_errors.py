"""Every rejected request: right status, Neutron's error body, and not one byte written.

One seeded database (a vxlan network with a /29 subnet and a port, a vlan network)
and a table of bad requests; `Env.rejected` compares a full `ovsdb-client dump`
before and after each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import Env, start_env

GHOST = "00000000-0000-4000-8000-00000000dead"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, dict[str, Any]]]:
    env = start_env(tmp_path_factory.mktemp("errors") / "state")
    net = env.network(name="seed", **{"provider:segmentation_id": 10})
    vlan = env.network(
        name="vlan", **{"provider:network_type": "vlan", "provider:segmentation_id": 100}
    )
    subnet = env.subnet(net["id"], "10.0.0.0/29")
    port = env.port(net["id"], mac_address="fa:16:3e:00:00:01")
    ids = {
        "net": net["id"],
        "vlan": vlan["id"],
        "subnet": subnet["id"],
        "port": port["id"],
        "ip": port["fixed_ips"][0]["ip_address"],
    }
    yield env, ids
    env.close()


def fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


CASES = [
    # 400 - malformed or mistyped input
    ("POST", "/v2.0/networks", b"{not json", 400, "InvalidInput"),
    ("POST", "/v2.0/networks", [1, 2], 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"net": {}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": {"colour": "red"}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"id": GHOST}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"name": 5}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"admin_state_up": "maybe"}}, 400, "InvalidInput"),
    (
        "POST",
        "/v2.0/networks",
        {"network": {"provider:segmentation_id": "ten"}},
        400,
        "InvalidInput",
    ),
    ("POST", "/v2.0/networks", {"network": {"provider:network_type": "flat"}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"provider:segmentation_id": 0}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"name": "x" * 256}}, 400, "InvalidInput"),
    (
        "POST",
        "/v2.0/networks",
        {"network": {"project_id": "a", "tenant_id": "b"}},
        400,
        "InvalidInput",
    ),
    ("PUT", "/v2.0/networks/{net}", {"network": {"status": "DOWN"}}, 400, "InvalidInput"),
    (
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": "{net}", "cidr": "10.1.0.1/24"}},
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": "not-a-uuid", "cidr": "10.1.0.0/24"}},
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "mac_address": "fa:16:3e:zz:00:01"}},
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "fixed_ips": [{"ip_address": "10.0.0.999"}]}},
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": "{net}",
                "fixed_ips": [{"subnet_id": "{subnet}", "ip_address": "10.0.1.3"}],
            }
        },
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "fixed_ips": [{"ip": "10.0.0.3"}]}},
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "fixed_ips": "10.0.0.3"}},
        400,
        "InvalidInput",
    ),
    (
        "POST",
        "/v2.0/ports",
        {
            "port": {
                "network_id": "{net}",
                "fixed_ips": [{"ip_address": "10.0.0.3"}, {"ip_address": "10.0.0.3"}],
            }
        },
        400,
        "InvalidInput",
    ),
    ("POST", "/v2.0/ports", {"port": {"name": "no-network"}}, 400, "HTTPBadRequest"),
    ("GET", "/v2.0/ports?limit=-1", None, 400, "InvalidInput"),
    # 404
    ("GET", f"/v2.0/networks/{GHOST}", None, 404, "NetworkNotFound"),
    ("PUT", f"/v2.0/networks/{GHOST}", {"network": {"name": "x"}}, 404, "NetworkNotFound"),
    ("DELETE", f"/v2.0/networks/{GHOST}", None, 404, "NetworkNotFound"),
    ("GET", f"/v2.0/subnets/{GHOST}", None, 404, "SubnetNotFound"),
    ("DELETE", f"/v2.0/subnets/{GHOST}", None, 404, "SubnetNotFound"),
    ("GET", f"/v2.0/ports/{GHOST}", None, 404, "PortNotFound"),
    ("DELETE", f"/v2.0/ports/{GHOST}", None, 404, "PortNotFound"),
    ("GET", "/v2.0/networks/not-even-a-uuid", None, 404, "NetworkNotFound"),
    ("POST", "/v2.0/ports", {"port": {"network_id": GHOST}}, 404, "NetworkNotFound"),
    ("GET", f"/v2.0/floatingips/{GHOST}", None, 404, "FloatingIPNotFound"),
    ("GET", f"/v2.0/floatingips/{GHOST}/port_forwardings", None, 404, "FloatingIPNotFound"),
    ("GET", "/v2.0/floatingips/x/port_forwardings/y/z", None, 404, "HTTPNotFound"),
    ("GET", "/nowhere", None, 404, "HTTPNotFound"),
    # 405
    ("PUT", "/v2.0/networks", {"network": {}}, 405, "HTTPMethodNotAllowed"),
    ("POST", "/v2.0/ports/{port}", {"port": {}}, 405, "HTTPMethodNotAllowed"),
    # 409
    (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "fixed_ips": [{"ip_address": "{ip}"}]}},
        409,
        "IpAddressAlreadyAllocated",
    ),
    (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "mac_address": "fa:16:3e:00:00:01"}},
        409,
        "MacAddressInUse",
    ),
    (
        "POST",
        "/v2.0/networks",
        {"network": {"provider:network_type": "vlan", "provider:segmentation_id": 100}},
        409,
        "VlanIdInUse",
    ),
    ("POST", "/v2.0/networks", {"network": {"provider:segmentation_id": 10}}, 409, "TunnelIdInUse"),
    ("DELETE", "/v2.0/networks/{net}", None, 409, "NetworkInUse"),
    ("DELETE", "/v2.0/subnets/{subnet}", None, 409, "SubnetInUse"),
]


@pytest.mark.parametrize(
    "method,path,body,status,type_", CASES, ids=[f"{c[3]}-{c[4]}-{i}" for i, c in enumerate(CASES)]
)
def test_rejected_requests_write_nothing(
    seeded: tuple[Env, dict[str, Any]], method: str, path: str, body: Any, status: int, type_: str
) -> None:
    env, ids = seeded
    kwargs: dict[str, Any] = {"raw": body} if isinstance(body, bytes) else {}
    env.rejected(
        method,
        fill(path, ids),
        None if isinstance(body, bytes) else fill(body, ids),
        status=status,
        type=type_,
        **kwargs,
    )


def test_seed_is_intact_after_all_rejections(seeded: tuple[Env, dict[str, Any]]) -> None:
    env, ids = seeded
    snap = env.store.latest()
    assert set(snap.networks) == {ids["net"], ids["vlan"]}
    assert set(snap.ports) == {ids["port"]} and set(snap.subnets) == {ids["subnet"]}
