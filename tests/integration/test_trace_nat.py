"""GET /v1/trace to an address outside, through a router's external gateway, on real OVS.

The lab of tests/integration/test_nat.py (its helpers, not its fixture): two
hypervisors, the physical network physnet1 through br-ex on each, hv2 the only
gateway chassis, the outside host 198.51.100.1 on it; projects alpha and beta on
10.0.0.0/24 each, each with a router whose gateway is on the flat `public`.

Checked: a trace from a guest on hv1 to the outside host follows the packet over the
tunnel to hv2 and through conntrack, and says it leaves there through the provider
patch after SNAT by its own project's router to that router's gateway address (beta's
guest at alpha's guest's very address names beta's router); from a guest on the
gateway chassis itself it is one hop; with a floating IP associated, the NAT named is
the floating IP's; to a neighbour's floating IP it is a hairpin, delivered inside.
What the switches do agrees: the guests do reach the outside host.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_nat import (
    OUTSIDE_IP,
    World,
    _fip,
    nat_lab,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nat_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with nat_lab(tmp_path_factory, "tnat") as w:
        yield w


def _trace(world: World, guest: str, dst_ip: str, **query: Any) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in {
        "port": world.ports[guest]["id"], "dst_ip": dst_ip, **query, "raw": "true"}.items())
    resp = world.lab.api.get(f"/v1/trace?{params}")
    assert resp.status == 200, resp.body
    answer: dict[str, Any] = resp.body
    target = os.environ.get("LOOM_TRACE_FIXTURES")  # keep the capture, as test_trace.py
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        name = f"nat_{guest}_{query.get('protocol', 'icmp')}_{len(os.listdir(target))}"
        (Path(target) / f"{name}.json").write_text(json.dumps(answer, indent=1) + "\n")
    return answer


def _tables(hop: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["table_name"], t["priority_name"]) for t in hop["tables"]
            if t["bridge"] == hop["bridge"]]


def test_snat_to_the_outside_names_the_router_and_leaves_on_the_gateway(
        nat_world: World) -> None:
    w = nat_world
    alpha = w.routers["alpha"]
    answer = _trace(w, "a1", OUTSIDE_IP, protocol="tcp", dst_port=7001)
    assert answer["verdict"] == "exited", json.dumps(answer["reason"], indent=1)
    reason = answer["reason"]
    assert reason["kind"] == "snat"
    assert reason["router"] == {"id": alpha["id"], "name": "alpha-router"}
    assert reason["source_ip"] == w.gateway_ip("alpha")
    assert reason["owner"]["kind"] == "router" and reason["owner"]["id"] == alpha["id"]
    assert reason["chassis"] == "hv2" and reason["physnet"] == "physnet1"
    assert reason["external_network"] == w.public["id"]
    assert "alpha-router" in reason["detail"] and w.gateway_ip("alpha") in reason["detail"]
    assert reason["egress"]["port"] == w.ports["a1"]["id"]
    # what the outside host sees, as OVS simulates the NAT in the recirculation
    assert reason["leaves_as"] == {"src_ip": w.gateway_ip("alpha"), "dst_ip": OUTSIDE_IP,
                                   "src_port": "33000", "dst_port": "7001"}
    nat = reason["nat"]
    assert nat["type"] == "snat" and nat["commit"] and nat["table"] == "snat"
    assert nat["address"] == w.gateway_ip("alpha") and nat["chassis"] == "hv2"
    assert answer["destination"] is None and answer["delivered_to"] == []
    assert answer["external"]["chassis"] == "hv2"
    assert answer["external"]["router"]["id"] == alpha["id"]
    # the packet goes to the router's MAC, over the tunnel to the gateway chassis
    router_port = next(p for p in w.lab.api.get(
        f"/v2.0/ports?device_id={alpha['id']}").ok()["ports"]
        if p["device_owner"] == "network:router_interface")
    assert answer["packet"]["dst_mac"] == router_port["mac_address"]
    first, second = answer["hops"]
    assert first["chassis"] == "hv1" and second["chassis"] == "hv2"
    assert [o["kind"] for o in first["outputs"]] == ["tunnel"]
    assert second["in_port"]["kind"] == "tunnel"
    names = _tables(second)
    assert ("l2_lookup", "router") in names and ("snat", "snat") in names
    assert names.index(("snat", "snat")) < names.index(("l3_resolve", "resolve"))
    [snat_pass] = [c for c in second["conntrack"] if "nat" in c]
    assert snat_pass["nat"]["to"]["nw_src"] == w.gateway_ip("alpha")
    [out] = [o for o in second["outputs"] if o["kind"] == "provider"]
    assert out["physnet"] == "physnet1" and out["ofport"] == reason["ofport"]
    # the other project's guest, at a1's very address, names its own router
    beta = _trace(w, "b1", OUTSIDE_IP)
    assert beta["verdict"] == "exited", beta["reason"]
    assert beta["reason"]["router"]["id"] == w.routers["beta"]["id"]
    assert beta["reason"]["source_ip"] == w.gateway_ip("beta")
    # ... and the switches agree: both reach the outside host
    for name in ("a1", "b1"):
        assert w.guests[name].ping(OUTSIDE_IP, count=1, timeout=2)[1] == 1, name


def test_from_the_gateway_chassis_it_is_one_hop(nat_world: World) -> None:
    w = nat_world
    answer = _trace(w, "a2", OUTSIDE_IP, protocol="udp", dst_port=53)
    assert answer["verdict"] == "exited", answer["reason"]
    assert answer["reason"]["kind"] == "snat"
    assert answer["reason"]["router"]["id"] == w.routers["alpha"]["id"]
    assert [h["chassis"] for h in answer["hops"]] == ["hv2"]


def test_a_floating_ip_is_named_as_the_nat_rule(nat_world: World) -> None:
    w = nat_world
    fip = _fip(w, "a1")
    try:
        deadline = time.monotonic() + 20
        while True:
            answer = _trace(w, "a1", OUTSIDE_IP)
            if answer["reason"].get("kind") == "floating_ip" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert answer["verdict"] == "exited", answer["reason"]
        reason = answer["reason"]
        assert reason["kind"] == "floating_ip", reason
        assert reason["owner"]["id"] == fip["id"]
        assert reason["owner"]["floating_ip_address"] == fip["floating_ip_address"]
        assert reason["source_ip"] == fip["floating_ip_address"]
        assert reason["router"]["id"] == w.routers["alpha"]["id"]
        assert fip["floating_ip_address"] in reason["detail"] and fip["id"] in reason["detail"]
        assert reason["nat"]["priority_name"] == "fip"
        assert reason["leaves_as"]["src_ip"] == fip["floating_ip_address"]
        assert w.guests["a1"].ping(OUTSIDE_IP, count=1, timeout=2)[1] == 1
    finally:
        w.lab.api.delete(f"/v2.0/floatingips/{fip['id']}?wait=true")  # gone before the next test


def test_a_floating_ip_from_inside_is_a_hairpin_to_its_port(nat_world: World) -> None:
    """a1 (hv1) to a2's floating IP (a2 on hv2, which maps the physnet: the floating IP
    is NATed there, on the gateway chassis too): over the tunnel to hv2, SNAT, DNAT back
    inside, delivered to a2 (the router's hairpin: nothing goes out)."""
    w = nat_world
    fip = _fip(w, "a2")
    try:
        address = fip["floating_ip_address"]
        deadline = time.monotonic() + 20
        while w.guests["a1"].ping(address, count=1, timeout=1)[1] != 1:
            assert time.monotonic() < deadline, "a2's floating IP never answered a1"
        answer = _trace(w, "a1", address)
        assert answer["verdict"] == "allowed", json.dumps(answer["reason"], indent=1)
        reason = answer["reason"]
        assert reason["port"] == w.ports["a2"]["id"] and reason["chassis"] == "hv2"
        assert reason["router"]["id"] == w.routers["alpha"]["id"]
        assert {(n["type"], n["address"]) for n in reason["nat"]} >= {("dnat", "10.0.0.12")}
        assert answer["external"]["chassis"] is None  # it never left
        assert [h["chassis"] for h in answer["hops"]] == ["hv1", "hv2"]
        assert answer["delivered_to"][0]["port"] == w.ports["a2"]["id"]
    finally:
        w.lab.api.delete(f"/v2.0/floatingips/{fip['id']}?wait=true")  # gone before the next test
