"""?dry_run=true on the real controller (issue 15): the plan of a change equals, flow
for flow, what the reconciler then installs for the same change, and the switch is
not touched by the dry run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import SingleHost, single_host

pytestmark = pytest.mark.integration

MAC = "fa:16:3e:00:15:15"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SingleHost]:
    with single_host(tmp_path / "state") as h:
        yield h


def _flows(host: SingleHost, dpid: str) -> set[str]:
    """The flows the controller has installed, without cookies (a dry run's port id,
    and so its cookie, is not the one the real write makes)."""
    flows = host.api.get(f"/v1/switches/{dpid}/flows").ok()["flows"]
    return {re.sub(r"cookie=0x[0-9a-f]+,", "", f["flow"]) for f in flows}


def test_the_plan_is_what_the_reconciler_then_installs(host: SingleHost) -> None:
    api = host.api
    net = api.post("/v2.0/networks", {"network": {"name": "plan"}}).ok()["network"]
    sub = api.post("/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.60.0.0/24", "ip_version": 4}}).ok()["subnet"]
    first = api.post("/v2.0/ports", {"port": {"network_id": net["id"]}}).ok()["port"]
    host.guest_for("g1", first)
    (switch,) = api.get("/v1/switches").ok()["switches"]
    dpid = switch["datapath_id"]
    before = _flows(host, dpid)
    dumped = host.hv.ofctl("dump-aggregate", "br-int")

    body = {"port": {"network_id": net["id"], "mac_address": MAC, "name": "db-1",
                     "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.60.0.50"}]}}
    dry = api.post("/v2.0/ports?dry_run=true", body)
    assert dry.status == 201, dry.body
    assert dry.headers.get("X-Loom-Dry-Run") == "true"
    (planned,) = dry.body["plan"]["switches"]
    assert planned["datapath_id"] == dpid
    assert _flows(host, dpid) == before  # nothing installed
    assert host.hv.ofctl("dump-aggregate", "br-int") == dumped
    assert api.get(f"/v2.0/ports/{dry.body['port']['id']}").status == 404

    api.post("/v2.0/ports?wait=true", body).ok()
    after = _flows(host, dpid)
    strip = lambda fs: {re.sub(r"cookie=0x[0-9a-f]+,", "", f["flow"]) for f in fs}  # noqa: E731
    assert strip(planned["flows"]["added"]) == after - before
    assert strip(planned["flows"]["removed"]) == before - after
    assert not planned["flows"]["modified"]
