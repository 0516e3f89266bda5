"""No false drift during normal operation (issue 15): about 20 s of churn through the
API and the chassis -- ports created and deleted (`?wait=true`), a guest unbound and
bound again, a port deleted while bound, security-group rules added and removed, a
router's interface added and removed, and a controller restart in the middle -- and
GET /v1/verify still finds every switch and chassis in sync with nothing found,
`loom_drift_found_total` is 0 for every kind, and two guests still talk. Then, as the
control, one flow added by hand is reported (the check can fail).

Real controller process, a private OVS in a namespace (tests/integration/harness.py).
The churn runs for a fixed time, whatever a round costs on this machine; nothing
measured is asserted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SingleHost, single_host, wait_active
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

PROJECT = "churn"
CHURN_S = 20.0  # of churn, the restart in its middle
MIN_ROUNDS = 4  # ... but at least this many rounds, however slow the machine


def _verify(host: SingleHost) -> dict[str, Any]:
    return host.api.get("/v1/verify").ok()  # type: ignore[no-any-return]


def _drift_samples(host: SingleHost) -> dict[str, float]:
    """Every sample of loom_drift_found_total and loom_drift_items at /metrics."""
    text = str(host.api.get("/metrics").ok())
    out = {}
    for line in text.splitlines():
        if line.startswith(("loom_drift_found_total", "loom_drift_items")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _assert_no_drift(host: SingleHost, when: str) -> None:
    """Every switch and chassis in sync, nothing ever found, every counter at 0."""
    report = _verify(host)
    assert report["switches"], report
    for where in report["switches"] + report["chassis"]:
        assert where["in_sync"] and where["drift"] == [] and where["drift_found"] == 0, \
            f"false drift {when}: {where}"
    samples = _drift_samples(host)
    assert all(v == 0 for v in samples.values()), f"false drift {when}: {samples}"
    print(f"{when}: no drift; flow checks per switch "
          f"{[s['checks'] for s in report['switches']]}")


def _pings(guest: Any, ip: str) -> bool:
    out = guest.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", ip], check=False)
    return " 0% packet loss" in out.stdout


def _port(host: SingleHost, net: dict, sub: dict, sg: dict, ip: str,
          name: str) -> dict[str, Any]:
    return host.api.post("/v2.0/ports?wait=true", {"port": {
        "network_id": net["id"], "project_id": PROJECT, "name": name,
        "security_groups": [sg["id"]],
        "fixed_ips": [{"subnet_id": sub["id"], "ip_address": ip}]}}).ok()["port"]


def _status(host: SingleHost, port_id: str) -> str:
    return str(host.api.get(f"/v2.0/ports/{port_id}").ok()["port"]["status"])


def _restart(host: SingleHost) -> None:
    host.ctl.stop()
    host.ctl.start()
    host.ctl.wait_switches(1, timeout=30)
    wait_for("the switch watched again", lambda: all(
        s["watched"] for s in _verify(host)["switches"]), timeout=30)


def test_churn_is_never_drift_and_a_hand_change_is(tmp_path: Path) -> None:
    with single_host(tmp_path / "state") as host:
        api = host.api
        net = api.create("network", name="churn", project_id=PROJECT)
        sub = api.create("subnet", network_id=net["id"], cidr="10.72.0.0/24",
                         project_id=PROJECT)
        net_r = api.create("network", name="routed", project_id=PROJECT)
        sub_r = api.create("subnet", network_id=net_r["id"], cidr="10.73.0.0/24",
                           project_id=PROJECT)
        sg = api.create("security_group", name="churn", project_id=PROJECT)
        api.create("security_group_rule", wait=True, security_group_id=sg["id"],
                   project_id=PROJECT, direction="ingress", protocol="icmp")
        a1 = host.guest_for("a1", _port(host, net, sub, sg, "10.72.0.11", "a1"))
        a2 = host.guest_for("a2", _port(host, net, sub, sg, "10.72.0.12", "a2"))
        churner = host.guest_for("c1", _port(host, net, sub, sg, "10.72.0.13", "c1"))
        router = api.post("/v2.0/routers", {"router": {
            "name": "r", "project_id": PROJECT}}).ok()["router"]
        api.put(f"/v2.0/routers/{router['id']}/add_router_interface?wait=true",
                {"subnet_id": sub["id"]}).ok()
        assert _pings(a1, "10.72.0.12") and _pings(a2, "10.72.0.11")
        wait_for("the switch watched", lambda: all(
            s["watched"] for s in _verify(host)["switches"]), timeout=30)

        churned = churner.port_id
        started = time.monotonic()
        rounds = 0
        restarted = False
        while time.monotonic() - started < CHURN_S or rounds < MIN_ROUNDS:
            if not restarted and (time.monotonic() - started >= CHURN_S / 2
                                  and rounds >= MIN_ROUNDS // 2):
                _assert_no_drift(host, f"after {rounds} rounds, before the restart")
                _restart(host)
                restarted = True
            rounds += 1
            # a port comes and goes, with a rule of its group meanwhile
            p = _port(host, net, sub, sg, f"10.72.0.{100 + rounds % 100}", f"p{rounds}")
            rule = api.create("security_group_rule", wait=True, security_group_id=sg["id"],
                              project_id=PROJECT, direction="ingress", protocol="tcp",
                              port_range_min=2000 + rounds, port_range_max=2000 + rounds)
            # a guest unbound and bound again
            churner.detach()
            wait_for("the unbound port down", lambda: _status(host, churned) != "ACTIVE",
                     timeout=20)
            assert churner.ovs is None
            churner.attach(host.hv, "br-int")
            wait_active(api, churned)
            # the router's second interface, every other round
            if rounds % 2:
                api.put(f"/v2.0/routers/{router['id']}/add_router_interface?wait=true",
                        {"subnet_id": sub_r["id"]}).ok()
            else:
                api.put(f"/v2.0/routers/{router['id']}/remove_router_interface?wait=true",
                        {"subnet_id": sub_r["id"]}).ok()
            assert api.delete(f"/v2.0/security-group-rules/{rule['id']}?wait=true"
                              ).status == 204
            assert api.delete(f"/v2.0/ports/{p['id']}?wait=true").status == 204
        # a port deleted while its guest is still bound (the guest goes after)
        doomed_port = _port(host, net, sub, sg, "10.72.0.14", "doomed")
        doomed = host.guest_for("doomed", doomed_port)
        assert api.delete(f"/v2.0/ports/{doomed_port['id']}?wait=true").status == 204
        doomed.close()
        del host.guests["doomed"]
        print(f"{rounds} rounds of churn in {time.monotonic() - started:.1f} s "
              f"(restarted: {restarted})")

        host.ctl.wait_switches(1, timeout=30)
        time.sleep(1.0)  # a flow monitor update on its way would be in by now
        _assert_no_drift(host, f"after {rounds} rounds of churn and a restart")
        assert restarted
        assert _pings(a1, "10.72.0.12") and _pings(a2, "10.72.0.11")

        # the control: a real drift by hand is reported (and repaired)
        host.hv.ofctl("add-flow", "br-int", "table=0,priority=65535,actions=NORMAL")
        found = wait_for("the hand-made flow reported", lambda: [
            d for s in _verify(host)["switches"] for d in s["drift"]
            if d["kind"] == "extra" and "priority=65535" in d["what"]], timeout=20)
        assert found[0]["repaired"], found
        assert _drift_samples(host).get('loom_drift_found_total{kind="extra"}') == 1
        wait_for("the hand-made flow gone", lambda: not [
            f for f in host.hv.dump_flows("br-int") if re.search(r"priority=65535\b", f)],
            timeout=20)
        assert _pings(a1, "10.72.0.12")
