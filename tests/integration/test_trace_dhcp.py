"""GET /v1/trace of DHCP on real OVS: a guest's request is punted to Loom's DHCP server,
a guest's DHCP server reply is dropped by port security.

One hypervisor (tests/integration/harness.py `single_host`), one network with a DHCP
subnet (a router interface holds its gateway, the DHCP server identifier) and one
without, a guest on each. Checked through the REST API, against the flows installed
on the real bridge: a DISCOVER (0.0.0.0 -> 255.255.255.255, UDP 68 -> 67) and a
renew unicast to the server are `punted` by port security's `dhcp_punt` flow of the
port through its punt meter, and the answer names the lease the reply carries; a
DHCP server's reply (UDP 67 -> 68) from a guest, broadcast or to a neighbour, is
`dropped` by `dhcp_server_drop`; on the subnet without DHCP nothing is punted. What
the switch does agrees: a real dhclient in the guest gets the traced address.

With LOOM_TRACE_FIXTURES=DIR every answer is written to DIR as JSON (that is how the
captures of tests/unit/test_trace_dhcp_reading.py were made).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller import pipeline as pl
from tests.integration.harness import SingleHost, single_host

pytestmark = pytest.mark.integration

BROADCAST = "255.255.255.255"


@dataclass
class World:
    host: SingleHost
    net: dict[str, Any]
    subnet: dict[str, Any]
    router: dict[str, Any]
    ports: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with single_host(tmp_path_factory.mktemp("loom-trace-dhcp")) as h:
        api = h.api
        net = api.create("network", name="dhcp-net", project_id="p1")
        sub = api.create("subnet", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4,
                         project_id="p1", enable_dhcp=True, gateway_ip="10.0.0.1",
                         dns_nameservers=["10.0.0.53"])
        router = api.create("router", name="r1", project_id="p1")
        resp = api.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                       {"subnet_id": sub["id"]})
        assert resp.status == 200, resp.body
        static = api.create("network", name="static-net", project_id="p1")
        static_sub = api.create("subnet", network_id=static["id"], cidr="10.1.0.0/24",
                                ip_version=4, project_id="p1", enable_dhcp=False)
        ports = {
            name: api.create("port", wait=True, network_id=network, project_id="p1",
                             fixed_ips=[{"subnet_id": subnet, "ip_address": ip}])
            for name, network, subnet, ip in (
                ("g1", net["id"], sub["id"], "10.0.0.11"),
                ("g2", net["id"], sub["id"], "10.0.0.12"),
                ("s1", static["id"], static_sub["id"], "10.1.0.11"))}
        for name, port in ports.items():
            h.guest_for(name, port)
        yield World(h, net, sub, router, ports)


def _trace(w: World, guest: str, dst_ip: str, **query: Any) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in {
        "port": w.ports[guest]["id"], "dst_ip": dst_ip, **query, "raw": "true"}.items())
    resp = w.host.api.get(f"/v1/trace?{params}")
    assert resp.status == 200, resp.body
    answer: dict[str, Any] = resp.body
    target = os.environ.get("LOOM_TRACE_FIXTURES")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        name = f"dhcp_{guest}_{query.get('dst_port')}_{len(os.listdir(target))}"
        (Path(target) / f"{name}.json").write_text(json.dumps(answer, indent=1) + "\n")
    return answer


def test_a_discover_is_punted_to_looms_dhcp_with_the_lease(world: World) -> None:
    w = world
    g1 = w.ports["g1"]
    answer = _trace(w, "g1", BROADCAST, protocol="udp", dst_port=67)
    assert answer["verdict"] == "punted", json.dumps(answer["reason"], indent=1)
    assert answer["packet"]["src_ip"] == "0.0.0.0" and answer["packet"]["src_port"] == 68
    assert answer["packet"]["dst_mac"] == "ff:ff:ff:ff:ff:ff"
    reason = answer["reason"]
    [hop] = answer["hops"]
    ofport = hop["in_port"]["ofport"]
    assert reason["kind"] == "dhcp" and reason["port"] == g1["id"]
    assert (reason["table"], reason["priority_name"]) == ("port_security", "dhcp_punt")
    assert reason["owner"]["kind"] == "port" and reason["owner"]["id"] == g1["id"]
    assert reason["meter"] == {"id": pl.punt_meter_id(ofport), "rate_pps": pl.PUNT_RATE_PPS,
                               "burst_packets": pl.PUNT_BURST_PACKETS, "ofport": ofport}
    assert reason["answered"] is True and "DHCP server" in reason["detail"]
    reply = reason["reply"]
    assert reply["address"] == "10.0.0.11" and reply["subnet"] == w.subnet["id"]
    assert reply["subnet_mask"] == "255.255.255.0" and reply["router"] == "10.0.0.1"
    assert reply["dns_nameservers"] == ["10.0.0.53"]
    assert reply["mtu"] == w.net["mtu"] and reply["server_identifier"] == "10.0.0.1"
    assert "10.0.0.11/24" in reason["detail"]
    assert answer["dhcp"]["served"] is True and answer["dhcp"]["lease"] == reply
    assert answer["delivered_to"] == [] and answer["destination"] is None
    # nowhere but the controller: the punt flow is the last table hit
    assert [(t["table_name"], t["priority_name"]) for t in hop["tables"]] == [
        ("classify", "port"), ("port_security", "dhcp_punt")]
    assert hop["punts"][0]["meter"]["id"] == pl.punt_meter_id(ofport)


def test_a_real_client_gets_the_lease_the_trace_names(world: World, tmp_path: Path) -> None:
    """The switch agrees with the trace: dhclient in the guest is answered by Loom with
    the traced lease. `-sf /bin/true`: dhclient's script never runs (it would configure
    the address and, through the host's hooks, host state); the lease file says it all."""
    assert shutil.which("dhclient") is not None, "isc-dhcp-client is in make deps"
    lease = _trace(world, "g1", BROADCAST, protocol="udp", dst_port=67)["reason"]["reply"]
    guest = world.host.guests["g1"]
    files = ["-lf", str(tmp_path / "leases"), "-pf", str(tmp_path / "pid"), "-sf", "/bin/true"]
    try:
        guest.run(["dhclient", "-1", "-4", *files, guest.ifname], timeout=15)
        leases = (tmp_path / "leases").read_text()
    finally:
        guest.run(["dhclient", "-x", *files, guest.ifname], check=False, timeout=10)
    assert f"fixed-address {lease['address']};" in leases, leases
    assert f"option routers {lease['router']};" in leases, leases
    assert f"option domain-name-servers {lease['dns_nameservers'][0]};" in leases, leases
    assert f"option dhcp-server-identifier {lease['server_identifier']};" in leases, leases


def test_a_renew_to_the_server_is_punted_too(world: World) -> None:
    answer = _trace(world, "g1", "10.0.0.1", protocol="udp", src_port=68, dst_port=67)
    assert answer["verdict"] == "punted", answer["reason"]
    assert answer["packet"]["src_ip"] == "10.0.0.11"
    assert answer["reason"]["priority_name"] == "dhcp_punt"
    assert answer["reason"]["reply"]["address"] == "10.0.0.11"


def test_a_guests_dhcp_server_reply_is_dropped(world: World) -> None:
    w = world
    g1 = w.ports["g1"]
    for dst_ip in (BROADCAST, "10.0.0.12"):
        answer = _trace(w, "g1", dst_ip, protocol="udp", src_port=67, dst_port=68)
        assert answer["verdict"] == "dropped", json.dumps(answer["reason"], indent=1)
        reason = answer["reason"]
        assert reason["kind"] == "dhcp_server" and reason["port"] == g1["id"]
        assert (reason["table"], reason["priority_name"]) == ("port_security",
                                                              "dhcp_server_drop")
        assert reason["priority"] == pl.PORT_SECURITY.priorities["dhcp_server_drop"]
        assert "guests may not act as DHCP servers" in reason["detail"]
        assert answer["delivered_to"] == [] and answer["dhcp"]["role"] == "server"
        assert answer["hops"][0]["datapath_actions"] == ["drop"]


def test_without_dhcp_on_the_subnet_nothing_is_punted(world: World) -> None:
    answer = _trace(world, "s1", BROADCAST, protocol="udp", dst_port=67)
    assert answer["verdict"] == "dropped", answer["reason"]
    # from 0.0.0.0, no address of the port's own: port security
    assert answer["reason"]["kind"] == "port_security"
    assert answer["dhcp"]["served"] is False and answer["dhcp"]["lease"] is None
    assert "enable_dhcp" in answer["dhcp"]["detail"]
    assert not any("punts" in h for h in answer["hops"])


def test_bad_ports_are_neutron_400s(world: World) -> None:
    port = world.ports["g1"]["id"]
    for query in ("protocol=udp&dst_port=67&src_port=0", "protocol=udp&dst_port=67&src_port=x",
                  "protocol=icmp&src_port=68", "protocol=udp&src_port=68"):
        resp = world.host.api.get(f"/v1/trace?port={port}&dst_ip={BROADCAST}&{query}")
        assert resp.status == 400, (query, resp.body)
        assert resp.body["NeutronError"]["type"] == "InvalidInput", resp.body
