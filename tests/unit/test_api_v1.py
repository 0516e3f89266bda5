"""/v1 endpoints, ?wait=true, and the API's behaviour when the store goes away and comes back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from api_harness import Env, start_env

from controller.runtime import Detached
from controller.store import EmbeddedOvsdb


class Recorder(Detached):
    """A runtime that records wait calls and answers as told."""

    def __init__(self, installs: bool = True) -> None:
        self.installs = installs
        self.waits: list[tuple[int, float]] = []

    def wait_installed(self, generation: int, timeout: float) -> bool:
        self.waits.append((generation, timeout))
        return self.installs

    def health(self) -> dict[str, Any]:
        return {"switches": [{"datapath_id": "0000000000000001", "connected": True}], "chassis": []}

    def switches(self) -> list[dict[str, Any]]:
        return [{"datapath_id": "0000000000000001"}]

    def chassis(self) -> list[dict[str, Any]]:
        return [{"name": "hv1", "connected": True}]

    def installed_flows(self, datapath_id: int) -> Optional[list[dict[str, Any]]]:
        return [{"table": "classify", "owner": "network x"}] if datapath_id == 1 else None


@pytest.fixture
def runtime() -> Recorder:
    return Recorder()


@pytest.fixture
def env(tmp_path: Path, runtime: Recorder) -> Iterator[Env]:
    e = start_env(tmp_path / "state", runtime=runtime)
    yield e
    e.close()


def test_health_merges_store_and_runtime(env: Env) -> None:
    body = env.ok("GET", "/v1/health")
    assert body["store"]["connected"] is True and body["store"]["remote"] == env.db.remote
    assert body["switches"] == [{"datapath_id": "0000000000000001", "connected": True}]
    assert body["chassis"] == []


def test_switches_chassis_flows_delegate_to_runtime(env: Env) -> None:
    assert env.ok("GET", "/v1/switches")["switches"] == [{"datapath_id": "0000000000000001"}]
    [hv1] = env.ok("GET", "/v1/chassis")["chassis"]  # merged with stored: test_api_chassis
    assert (hv1["name"], hv1["connected"], hv1["source"]) == ("hv1", True, "command-line")
    for dpid in ("1", "0x1", "0000000000000001"):
        assert env.ok("GET", f"/v1/switches/{dpid}/flows")["flows"][0]["table"] == "classify"
    env.rejected("GET", "/v1/switches/2/flows", status=404, type="SwitchNotFound")


def test_wait_true_waits_for_the_write_generation(env: Env, runtime: Recorder) -> None:
    resp = env.call("POST", "/v2.0/networks?wait=true&wait_timeout=3", {"network": {"name": "w"}})
    assert resp.status_int == 201
    assert runtime.waits == [(int(resp.headers["X-Loom-Generation"]), 3.0)]
    resp = env.call(
        "DELETE", f"/v2.0/networks/{resp.json['network']['id']}", headers={"X-Loom-Wait": "true"}
    )
    assert resp.status_int == 204 and len(runtime.waits) == 2
    env.call("POST", "/v2.0/networks", {"network": {"name": "no-wait"}})
    assert len(runtime.waits) == 2


def test_wait_timeout_is_504_but_the_write_stays(env: Env, runtime: Recorder) -> None:
    runtime.installs = False
    resp = env.call("POST", "/v2.0/networks?wait=true", {"network": {"name": "slow"}})
    assert resp.status_int == 504
    error = resp.json["NeutronError"]
    assert error["type"] == "WaitTimeout" and "committed" in error["message"]
    assert resp.headers["X-Loom-Generation"]
    assert [n.name for n in env.store.latest().networks.values()] == ["slow"]


def test_store_down_then_back(env: Env) -> None:
    env.network(name="before")
    env.db.stop()
    deadline = time.monotonic() + 10
    while env.store.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    resp = env.call("GET", "/v1/health")
    assert resp.status_int == 503 and resp.json["store"]["connected"] is False
    resp = env.call("POST", "/v2.0/networks", {"network": {"name": "during"}})
    assert resp.status_int == 503 and resp.json["NeutronError"]["type"] == "ServiceUnavailable"
    # reads keep serving the last snapshot
    assert [n["name"] for n in env.ok("GET", "/v2.0/networks")["networks"]] == ["before"]
    env.db = EmbeddedOvsdb(env.state_dir).start()
    deadline = time.monotonic() + 15
    while not env.store.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.call("GET", "/v1/health").status_int == 200
    env.network(name="after")
    assert sorted(n.name for n in env.store.latest().networks.values()) == ["after", "before"]
