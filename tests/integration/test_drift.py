"""Drift (issue 15): a switch or chassis changed behind Loom's back is found within a
moment (a flow monitor, not a dump per second), reported in intent terms by
GET /v1/verify, and put right; normal operation reports nothing.

Real controller process, a private OVS in a namespace, guests pinging each other.
Detection times are measured and printed, never asserted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SingleHost, single_host
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SingleHost]:
    with single_host(tmp_path / "state") as h:
        yield h


def _verify(host: SingleHost) -> dict[str, Any]:
    body = host.api.get("/v1/verify").ok()
    (switch,) = body["switches"]
    return switch  # type: ignore[no-any-return]


def _pings(guest: Any, ip: str) -> bool:
    out = guest.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", ip], check=False)
    return " 0% packet loss" in out.stdout


def _flow_count(host: SingleHost) -> int:
    out = host.hv.ofctl("dump-aggregate", "br-int")
    return int(re.search(r"flow_count=(\d+)", out).group(1))  # type: ignore[union-attr]


def _cookie_of(host: SingleHost, dpid: str, port_id: str) -> str:
    flows = host.api.get(f"/v1/switches/{dpid}/flows").ok()["flows"]
    return next(f["cookie"] for f in flows if (f.get("owner") or {}).get("id") == port_id)


def _net(host: SingleHost, name: str, project: str) -> tuple[dict, dict]:
    net = host.api.post("/v2.0/networks", {"network": {
        "name": name, "project_id": project}}).ok()["network"]
    sub = host.api.post("/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.70.0.0/24", "ip_version": 4,
        "project_id": project, "enable_dhcp": False}}).ok()["subnet"]
    return net, sub


def _guest(host: SingleHost, name: str, net: dict, sub: dict, ip: str) -> tuple[Any, dict]:
    port = host.api.post("/v2.0/ports", {"port": {
        "network_id": net["id"], "project_id": net["project_id"], "port_security_enabled": False,
        "fixed_ips": [{"subnet_id": sub["id"], "ip_address": ip}]}}).ok()["port"]
    return host.guest_for(name, port), port


def test_drift_is_found_reported_and_repaired_and_normal_work_is_not_drift(
        host: SingleHost) -> None:
    api = host.api
    net_a, sub_a = _net(host, "a", "p1")
    net_b, sub_b = _net(host, "b", "p2")
    a1, port_a1 = _guest(host, "a1", net_a, sub_a, "10.70.0.11")
    a2, _ = _guest(host, "a2", net_a, sub_a, "10.70.0.12")
    b1, _ = _guest(host, "b1", net_b, sub_b, "10.70.0.13")
    dpid = api.get("/v1/switches").ok()["switches"][0]["datapath_id"]
    assert _pings(a1, "10.70.0.12")
    assert not _pings(a1, "10.70.0.13")  # another project, the same addresses' range

    # normal work is never drift: ports come and go, a controller restart
    for _ in range(5):
        p = api.post("/v2.0/ports?wait=true", {"port": {"network_id": net_a["id"]}}).ok()["port"]
        api.delete(f"/v2.0/ports/{p['id']}?wait=true")
    host.ctl.stop()
    host.ctl.start()
    host.ctl.wait_switches(1)
    wait_for("the switch watched again", lambda: _verify(host)["watched"], timeout=20)
    for _ in range(3):  # Loom's own pushes echo back (abbreviated): never a check
        p = api.post("/v2.0/ports?wait=true", {"port": {"network_id": net_a["id"]}}).ok()["port"]
        api.delete(f"/v2.0/ports/{p['id']}?wait=true")
    time.sleep(1.0)
    assert _verify(host)["drift_found"] == 0, _verify(host)
    assert _verify(host)["checks"] == 0, _verify(host)
    flows_before = _flow_count(host)

    # 1. a flow added by hand, above everything, that would switch between projects
    started = time.monotonic()
    host.hv.ofctl("add-flow", "br-int", "table=0,priority=65535,actions=NORMAL")
    wait_for("the extra flow gone", lambda: "priority=65535" not in "\n".join(
        host.hv.dump_flows("br-int")), timeout=10)
    print(f"extra flow removed {time.monotonic() - started:.2f} s after it was added")
    report = _verify(host)
    extra = [d for d in report["drift"] if d["kind"] == "extra"]
    assert extra and "priority=65535" in extra[0]["what"] and extra[0]["repaired"], report
    assert report["in_sync"]
    assert not _pings(a1, "10.70.0.13")
    assert _flow_count(host) == flows_before

    # 2. a port's flows deleted by hand: reported missing, with their owner, put back
    cookie = _cookie_of(host, dpid, port_a1["id"])
    started = time.monotonic()
    host.hv.ofctl("del-flows", "br-int", f"cookie={cookie}/-1")
    wait_for("the port's flows back", lambda: _flow_count(host) == flows_before, timeout=10)
    print(f"deleted flows back {time.monotonic() - started:.2f} s after the del-flows")
    missing = [d for d in _verify(host)["drift"] if d["kind"] == "missing"]
    assert missing and all(d["owner"]["id"] == port_a1["id"] for d in missing), missing
    assert _pings(a1, "10.70.0.12")

    # 3. a port's flows modified by hand to drop: reported modified, put back
    started = time.monotonic()
    host.hv.ofctl("mod-flows", "br-int", f"cookie={cookie}/-1,actions=drop")
    wait_for("the port's flows as they were", lambda: not [
        f for f in host.hv.dump_flows("br-int") if f"cookie={cookie}" in f
        and re.search(r"actions=drop$", f)], timeout=10)
    print(f"modified flows restored {time.monotonic() - started:.2f} s after the mod-flows")
    modified = [d for d in _verify(host)["drift"] if d["kind"] == "modified"]
    assert modified and all(d["expected"] and d["repaired"] for d in modified), modified
    assert _pings(a1, "10.70.0.12")

    # 4. the bridge's fail mode changed by hand (standalone: it would switch on its own
    # without a controller): reported for the chassis and put back
    host.hv.vsctl("set", "bridge", "br-int", "fail_mode=standalone")
    wait_for("fail_mode secure again", lambda: host.hv.vsctl(
        "get", "bridge", "br-int", "fail_mode").strip() == "secure", timeout=10)
    chassis = api.get("/v1/verify").ok()["chassis"]
    assert any(d["kind"] == "bridge-settings" for c in chassis for d in c["drift"]), chassis
    assert api.metric("loom_drift_found_total") >= 3


def test_report_mode_reports_and_leaves_the_switch_as_it_is(tmp_path: Path) -> None:
    with single_host(tmp_path / "state", ("--drift", "report")) as host:
        net, sub = _net(host, "a", "p1")
        _guest(host, "a1", net, sub, "10.70.0.11")
        wait_for("the switch watched", lambda: _verify(host)["watched"], timeout=20)
        host.hv.ofctl("add-flow", "br-int", "table=0,priority=65535,actions=NORMAL")
        report = wait_for("the drift reported", lambda: (r := _verify(host))["drift"] and r,
                          timeout=10)
        assert host.api.get("/v1/verify").ok()["mode"] == "report"
        assert not report["in_sync"]
        (item,) = report["drift"]
        assert item["kind"] == "extra" and not item["repaired"]
        time.sleep(1.0)
        assert "priority=65535" in "\n".join(host.hv.dump_flows("br-int"))
        assert host.api.metric("loom_drift_items") == 1


def test_report_mode_sees_the_drift_undone_by_hand(tmp_path: Path) -> None:
    with single_host(tmp_path / "state", ("--drift", "report")) as host:
        net, sub = _net(host, "a", "p1")
        _guest(host, "a1", net, sub, "10.70.0.11")
        wait_for("the switch watched", lambda: _verify(host)["watched"], timeout=20)
        host.hv.ofctl("add-flow", "br-int", "table=0,priority=65535,actions=NORMAL")
        wait_for("the drift reported", lambda: not _verify(host)["in_sync"], timeout=10)
        host.hv.ofctl("--strict", "del-flows", "br-int", "table=0,priority=65535")
        wait_for("in sync again", lambda: _verify(host)["in_sync"], timeout=10)
        assert host.api.metric("loom_drift_items") == 0
        assert _verify(host)["drift_found"] == 1
