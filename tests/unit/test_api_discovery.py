"""Version discovery, routing, and a stock openstacksdk client against a served app."""

from __future__ import annotations

import socket

import pytest
from api_harness import Env

from controller.rest.server import make_server, serve


def test_root_lists_versions_like_neutron(env: Env) -> None:
    body = env.ok("GET", "/")
    assert body == {
        "versions": [
            {
                "id": "v2.0",
                "status": "CURRENT",
                "links": [{"href": "http://localhost/v2.0/", "rel": "self"}],
            }
        ]
    }


def test_v2_lists_resources(env: Env) -> None:
    for path in ("/v2.0", "/v2.0/"):
        body = env.ok("GET", path)
        assert {r["collection"] for r in body["resources"]} == {
            "networks", "subnets", "ports", "security-groups", "security-group-rules",
            "qos/policies", "qos/rule-types", "routers", "floatingips"}
        assert body["resources"][0]["links"][0]["href"].startswith("http://localhost/v2.0/")


def test_extensions(env: Env) -> None:
    aliases = {e["alias"] for e in env.ok("GET", "/v2.0/extensions")["extensions"]}
    assert {"provider", "binding", "port-security", "qos", "qos-default"} <= aliases
    assert env.ok("GET", "/v2.0/extensions/provider")["extension"]["alias"] == "provider"
    env.rejected("GET", "/v2.0/extensions/nope", status=404, type="ExtensionNotFound")


@pytest.mark.parametrize(
    "path", ["/v3", "/v2.0/routers-that-do-not-exist", "/v2.0/networks/a/b", "/v1/nothing"]
)
def test_unknown_paths_are_404_in_neutron_shape(env: Env, path: str) -> None:
    env.rejected("GET", path, status=404, type="HTTPNotFound")


@pytest.mark.parametrize(
    "method,path",
    [
        ("PATCH", "/v2.0/networks"),
        ("DELETE", "/v2.0/networks"),
        ("POST", "/v2.0/networks/00000000-0000-4000-8000-000000000000"),
        ("POST", "/"),
        ("DELETE", "/v1/health"),
    ],
)
def test_wrong_method_is_405(env: Env, method: str, path: str) -> None:
    env.rejected(method, path, {"network": {}}, status=405, type="HTTPMethodNotAllowed")


def test_busy_port_fails_with_clear_oserror(env: Env) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            OSError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"
        ):
            make_server(env.app, "127.0.0.1", port)


def test_openstacksdk_drives_the_api(env: Env) -> None:
    openstack = pytest.importorskip("openstack")
    serving = serve(env.app, "127.0.0.1", 0)
    url = serving.url
    try:
        conn = openstack.connect(
            auth_type="none", auth={"endpoint": url}, network_endpoint_override=url + "/v2.0/"
        )
        net = conn.network.create_network(
            name="sdk-net", provider_network_type="vlan", provider_segmentation_id=123
        )
        assert net.provider_segmentation_id == 123 and net.provider_network_type == "vlan"
        subnet = conn.network.create_subnet(network_id=net.id, cidr="10.20.0.0/24", ip_version=4)
        assert subnet.gateway_ip == "10.20.0.1"
        port = conn.network.create_port(network_id=net.id, name="vm1")
        assert port.fixed_ips[0]["ip_address"] == "10.20.0.2" and port.status == "DOWN"
        assert [n.name for n in conn.network.networks()] == ["sdk-net"]
        assert conn.network.find_network("sdk-net").id == net.id
        conn.network.update_port(port, name="vm1-renamed")
        assert conn.network.get_port(port.id).name == "vm1-renamed"
        assert env.store.latest().ports[port.id].name == "vm1-renamed"
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.network.delete_network(net)
        conn.network.delete_port(port)
        conn.network.delete_network(net)
        assert list(conn.network.networks()) == []
        assert env.store.latest().networks == {}
    finally:
        serving.close()
    assert not serving.running
