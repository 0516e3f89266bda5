"""Drift of groups and meters (issue 15): OpenFlow has no monitor for them, so each
switch's worker reads them every few seconds (engine.GROUP_METER_PERIOD). A meter or
group deleted, modified or added by hand is reported in GET /v1/verify with its kind
(group-missing, meter-modified, ...) and owner, and put back (repair mode) or left as
it is (report mode); normal operation, QoS meters, punt meters and a provider
network's flood group included, reports nothing.

Real controller process, a private OVS in a namespace. Detection times are measured
and printed, never asserted.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller import pipeline as pl
from tests.integration.harness import SingleHost, single_host
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

PHYSNET = "physnet1"
PROVIDER_BRIDGE = "br-ex"
PROJECT = "p1"
DETECT = 30.0  # how long a test waits for a detection before it fails (not a bound)


@dataclass
class World:
    host: SingleHost
    ports: dict[str, dict[str, Any]]
    policy: dict[str, Any]
    flat_network: dict[str, Any]


def _verify(host: SingleHost) -> dict[str, Any]:
    (switch,) = host.api.get("/v1/verify").ok()["switches"]
    return switch  # type: ignore[no-any-return]


def _meters(host: SingleHost) -> dict[int, str]:
    """meter id -> its line(s) in `ovs-ofctl dump-meters`."""
    out = host.hv.ofctl("dump-meters", "br-int")
    return {int(m.group(1)): m.group(0) for m in
            re.finditer(r"meter=(\d+)[^\n]*(?:\n(?!meter=)[^\n]*)*", out)}


def _groups(host: SingleHost) -> dict[int, str]:
    out = host.hv.ofctl("dump-groups", "br-int")
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"group_id=(\d+),\S*", out)}


def _flow_count(host: SingleHost) -> int:
    out = host.hv.ofctl("dump-aggregate", "br-int")
    return int(re.search(r"flow_count=(\d+)", out).group(1))  # type: ignore[union-attr]


def _found_by_kind(host: SingleHost) -> dict[str, float]:
    """loom_drift_found_total per kind label."""
    with urllib.request.urlopen(host.api.base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^loom_drift_found_total\{kind="([^"]+)"\} (\S+)$', text, re.M)}


def _item(host: SingleHost, kind: str, what: str) -> dict[str, Any]:
    """The newest drift item of `kind` whose line contains `what`."""
    items = [d for d in _verify(host)["drift"] if d["kind"] == kind and what in d["what"]]
    assert items, (kind, what, _verify(host))
    return items[-1]


def _timed(what: str, cond: Callable[[], Any], started: float) -> Any:
    value = wait_for(what, cond, timeout=DETECT)
    print(f"{what}: {time.monotonic() - started:.2f} s after the change by hand")
    return value


def _ofport(host: SingleHost, port_id: str) -> int:
    return int(host.hv.vsctl("--bare", "--columns=ofport", "find", "Interface",
                             f"external_ids:iface-id={port_id}"))


def _world(host: SingleHost) -> World:
    """DHCP ports (a punt meter each), a QoS policy's egress limit (a QoS meter) on one,
    and a port on a flat provider network (its flood group)."""
    api = host.api
    host.hv.add_bridge(PROVIDER_BRIDGE, fail_mode="standalone")
    host.hv.vsctl("set", "Open_vSwitch", ".",
                  f"external_ids:loom-bridge-mappings={PHYSNET}:{PROVIDER_BRIDGE}")
    wait_for("the provider patch", lambda: len(host.hv.vsctl(
        "--bare", "--columns=name", "find", "Interface", "type=patch").split()) == 2,
        timeout=30)
    net = api.post("/v2.0/networks", {"network": {"name": "a", "project_id": PROJECT}}
                   ).ok()["network"]
    sub = api.post("/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.71.0.0/24", "ip_version": 4,
        "project_id": PROJECT, "enable_dhcp": True}}).ok()["subnet"]
    flat = api.post("/v2.0/networks", {"network": {
        "name": "ext", "project_id": PROJECT, "provider:network_type": "flat",
        "provider:physical_network": PHYSNET}}).ok()["network"]
    flat_sub = api.post("/v2.0/subnets", {"subnet": {
        "network_id": flat["id"], "cidr": "10.72.0.0/24", "ip_version": 4,
        "project_id": PROJECT, "enable_dhcp": False}}).ok()["subnet"]
    ports = {}
    for name, network, subnet, ip in (("a1", net, sub, "10.71.0.11"),
                                      ("a2", net, sub, "10.71.0.12"),
                                      ("f1", flat, flat_sub, "10.72.0.11")):
        ports[name] = api.post("/v2.0/ports", {"port": {
            "network_id": network["id"], "project_id": PROJECT, "name": name,
            "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": ip}]}}).ok()["port"]
        host.guest_for(name, ports[name])
    policy = api.post("/v2.0/qos/policies", {"policy": {
        "name": "cap", "project_id": PROJECT}}).ok()["policy"]
    api.post(f"/v2.0/qos/policies/{policy['id']}/bandwidth_limit_rules",
             {"bandwidth_limit_rule": {"max_kbps": 20000, "direction": "egress"}}).ok()
    api.put(f"/v2.0/ports/{ports['a2']['id']}?wait=true",
            {"port": {"qos_policy_id": policy["id"]}}).ok()
    wait_for("the switch watched", lambda: _verify(host)["watched"], timeout=20)
    return World(host, ports, policy, flat)


@pytest.fixture
def repair_host(tmp_path: Path) -> Iterator[SingleHost]:
    with single_host(tmp_path / "state") as h:
        yield h


def test_groups_and_meters_changed_by_hand_are_reported_and_put_back(
        repair_host: SingleHost) -> None:
    host = repair_host
    world = _world(host)
    punt_a1 = pl.punt_meter_id(_ofport(host, world.ports["a1"]["id"]))
    meters = _meters(host)
    qos_meters = [i for i in meters if not pl.is_punt_meter(i)]
    assert punt_a1 in meters and len(qos_meters) == 1, meters
    (qos_meter,) = qos_meters
    groups = _groups(host)
    assert len(groups) == 1, groups  # the flat network's flood group (all, to the patch)
    (flood,) = groups
    print(f"{len(meters)} meters, {len(groups)} group(s), {_flow_count(host)} flows")

    _normal_work_is_no_drift(world, periods=0)
    meters_before, groups_before = _meters(host), _groups(host)
    flows_before = _flow_count(host)

    # 1. a port's punt meter deleted by hand (OVS deletes the port's flows that use it)
    started = time.monotonic()
    host.hv.ofctl("del-meter", "br-int", f"meter={punt_a1}")
    _timed("deleted punt meter back", lambda: _meters(host).get(punt_a1)
           == meters_before[punt_a1] and _flow_count(host) == flows_before, started)
    item = _item(host, "meter-missing", f"meter={punt_a1},")
    assert item["repaired"] and item["owner"]["id"] == world.ports["a1"]["id"], item

    # 2. the QoS meter modified by hand: reported with what Loom installed, restored
    started = time.monotonic()
    host.hv.ofctl("mod-meter", "br-int",
                  f"meter={qos_meter},kbps,burst,band=type=drop,rate=1,burst_size=1")
    _timed("modified QoS meter restored",
           lambda: _meters(host).get(qos_meter) == meters_before[qos_meter], started)
    item = _item(host, "meter-modified", f"meter={qos_meter},")
    assert "rate=1," in item["what"] and "rate=20000" in item["expected"], item
    assert item["owner"]["id"] == world.policy["id"] and item["repaired"], item

    # 3. a meter added by hand, by id: removed
    started = time.monotonic()
    host.hv.ofctl("add-meter", "br-int", "meter=4000,kbps,band=type=drop,rate=100")
    _timed("extra meter removed", lambda: 4000 not in _meters(host), started)
    item = _item(host, "meter-extra", "meter=4000,")
    assert item["repaired"] and "owner" not in item, item

    # 4. the flood group deleted by hand (OVS deletes the flood flow that uses it)
    started = time.monotonic()
    host.hv.ofctl("del-groups", "br-int", f"group_id={flood}")
    _timed("deleted group back", lambda: _groups(host) == groups_before
           and _flow_count(host) == flows_before, started)
    item = _item(host, "group-missing", f"group_id={flood},")
    assert item["repaired"] and item["owner"]["id"] == world.flat_network["id"], item

    # 5. the flood group modified by hand: restored
    started = time.monotonic()
    host.hv.ofctl("mod-group", "br-int", f"group_id={flood},type=all,bucket=output:LOCAL")
    _timed("modified group restored", lambda: _groups(host) == groups_before, started)
    item = _item(host, "group-modified", f"group_id={flood},")
    assert item["expected"] != item["what"] and item["repaired"], item

    # 6. a group added by hand: removed
    started = time.monotonic()
    host.hv.ofctl("add-group", "br-int", "group_id=4000,type=all,bucket=output:LOCAL")
    _timed("extra group removed", lambda: 4000 not in _groups(host), started)
    assert _item(host, "group-extra", "group_id=4000,")["repaired"]

    report = _verify(host)
    assert report["in_sync"], report
    assert _meters(host) == meters_before and _groups(host) == groups_before
    assert _flow_count(host) == flows_before
    found = _found_by_kind(host)
    for kind in ("meter-missing", "meter-modified", "meter-extra", "group-missing",
                 "group-modified", "group-extra"):
        assert found.get(kind, 0) >= 1, found
    assert host.api.metric("loom_drift_items") == 0
    _normal_work_is_no_drift(world, periods=2)


def _normal_work_is_no_drift(world: World, periods: int) -> None:
    """Ports (with their punt meters) coming and going, and `periods` more reads of
    groups and meters, find nothing."""
    host = world.host
    found = _verify(host)["drift_found"]
    for _ in range(3):
        p = host.api.post("/v2.0/ports?wait=true", {"port": {
            "network_id": world.ports["a1"]["network_id"], "project_id": PROJECT}}).ok()["port"]
        host.api.delete(f"/v2.0/ports/{p['id']}?wait=true")
    reads = _verify(host).get("group_meter_reads", 0)
    wait_for(f"{periods} more reads",
             lambda: _verify(host).get("group_meter_reads", 0) >= reads + periods,
             timeout=DETECT)
    report = _verify(host)
    assert report["drift_found"] == found and report["in_sync"], report


def test_report_mode_reports_each_once_and_leaves_the_switch_as_it_is(
        tmp_path: Path) -> None:
    with single_host(tmp_path / "state", ("--drift", "report")) as host:
        world = _world(host)
        punt_a1 = pl.punt_meter_id(_ofport(host, world.ports["a1"]["id"]))
        (flood,) = _groups(host)
        assert punt_a1 in _meters(host)

        started = time.monotonic()
        host.hv.ofctl("del-meter", "br-int", f"meter={punt_a1}")
        host.hv.ofctl("add-group", "br-int", "group_id=4000,type=all,bucket=output:LOCAL")
        _timed("both reported", lambda: all(
            any(d["kind"] == k for d in _verify(host)["drift"])
            for k in ("meter-missing", "group-extra")), started)
        assert host.api.get("/v1/verify").ok()["mode"] == "report"
        missing = _item(host, "meter-missing", f"meter={punt_a1},")
        assert not missing["repaired"] and missing["owner"]["id"] == world.ports["a1"]["id"]
        assert not _item(host, "group-extra", "group_id=4000,")["repaired"]
        assert not _verify(host)["in_sync"]

        # left as it is, and reported once, however many reads see it again
        reads = _verify(host)["group_meter_reads"]
        wait_for("two more reads", lambda: _verify(host)["group_meter_reads"] >= reads + 2,
                 timeout=DETECT)
        assert punt_a1 not in _meters(host) and 4000 in _groups(host)
        kinds = [d["kind"] for d in _verify(host)["drift"]]
        assert kinds.count("meter-missing") == 1 and kinds.count("group-extra") == 1, kinds
        assert _found_by_kind(host).get("meter-missing") == 1

        # the extra group undone by hand: no longer counted (the meter still is)
        items = host.api.metric("loom_drift_items")
        host.hv.ofctl("del-groups", "br-int", "group_id=4000")
        wait_for("one item fewer", lambda: host.api.metric("loom_drift_items") == items - 1,
                 timeout=DETECT)
        assert not _verify(host)["in_sync"]
        assert flood in _groups(host)
