"""/v1/chassis (stored in the northbound Chassis table, merged with live state) and /v1/pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import ADMIN, ALICE, Env, start_env

from controller import pipeline as pl
from controller.runtime import Detached

SOCK = "unix:/var/run/hv2/db.sock"


class LiveChassis(Detached):
    """A runtime with sessions to some chassis: what `Engine.chassis()` reports."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def chassis(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entries]


def live(name: str, remote: str, connected: bool = True, **extra: Any) -> dict[str, Any]:
    return {"name": name, "remote": remote, "connected": connected, "encap_ip": None,
            "bridges": ["br-int"], "ports_bound": [], **extra}


@pytest.fixture
def runtime() -> LiveChassis:
    return LiveChassis()


@pytest.fixture
def env(tmp_path: Path, runtime: LiveChassis) -> Iterator[Env]:
    e = start_env(tmp_path / "state", tokens=True, runtime=runtime)
    yield e
    e.close()


def add(env: Env, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    return env.ok("POST", "/v1/chassis", {"chassis": body}, status, token=ADMIN)[  # type: ignore[no-any-return]
        "chassis"]


def test_create_defaults_name_to_the_remote_and_stores_the_row(env: Env) -> None:
    resp = env.call("POST", "/v1/chassis", {"chassis": {"remote": "tcp:192.0.2.7:6640"}},
                    token=ADMIN)
    assert resp.status_int == 201, resp.text
    assert int(resp.headers["X-Loom-Generation"]) == env.store.latest().generation
    view = resp.json["chassis"]
    assert view == {
        "name": "tcp:192.0.2.7:6640", "remote": "tcp:192.0.2.7:6640", "bridge_mappings": {},
        "source": "api", "connected": False, "system_id": None, "encap_ip": None,
        "bridges": [], "ports_bound": [],
        "openflow_connected": False, "controller_target": None, "controller_status": None,
    }
    stored = env.store.latest().chassis["tcp:192.0.2.7:6640"]
    assert stored.remote == "tcp:192.0.2.7:6640" and stored.bridge_mappings == ()
    rows = env.dump()["Chassis"]
    assert len(rows) == 1 and '"tcp:192.0.2.7:6640"' in rows[0]


def test_create_with_name_and_bridge_mappings(env: Env) -> None:
    view = add(env, {"remote": SOCK, "name": "hv2",
                     "bridge_mappings": {"physnet1": "br-phys", "physnet2": "br-ex"}})
    assert view["name"] == "hv2" and view["remote"] == SOCK
    assert view["bridge_mappings"] == {"physnet1": "br-phys", "physnet2": "br-ex"}
    assert env.store.latest().chassis["hv2"].bridge_mappings == (
        ("physnet1", "br-phys"), ("physnet2", "br-ex"))


def test_remote_is_stored_in_canonical_form(env: Env) -> None:
    assert add(env, {"remote": "tcp:[0:0::1]:06640"})["remote"] == "tcp:[::1]:6640"
    env.rejected("POST", "/v1/chassis", {"chassis": {"remote": "tcp:[::1]:6640", "name": "x"}},
                 status=409, type="ChassisRemoteInUse", token=ADMIN)


def test_duplicate_name_or_remote_is_409_and_changes_nothing(env: Env) -> None:
    add(env, {"remote": "tcp:192.0.2.7:6640", "name": "hv1"})
    env.rejected("POST", "/v1/chassis", {"chassis": {"remote": "tcp:192.0.2.8:6640",
                                                     "name": "hv1"}},
                 status=409, type="ChassisNameInUse", token=ADMIN)
    error = env.rejected("POST", "/v1/chassis", {"chassis": {"remote": "tcp:192.0.2.7:6640",
                                                             "name": "other"}},
                         status=409, type="ChassisRemoteInUse", token=ADMIN)
    assert "hv1" in error["message"]
    # the default name (the remote) collides with the remote already stored too
    env.rejected("POST", "/v1/chassis", {"chassis": {"remote": "tcp:192.0.2.7:6640"}},
                 status=409, type="ChassisRemoteInUse", token=ADMIN)


@pytest.mark.parametrize("remote", [
    "192.0.2.7:6640", "tcp:192.0.2.7", "tcp:192.0.2.7:0", "tcp:192.0.2.7:70000",
    "tcp:host.example:6640", "tcp:::1:6640", "tcp:[::1]", "unix:relative.sock", "unix:",
    "ssl:192.0.2.7:6640", "ptcp:6640", "", 6640, None, ["tcp:192.0.2.7:6640"],
    "unix:/" + "x" * 200,
])
def test_bad_remote_is_400_and_changes_nothing(env: Env, remote: Any) -> None:
    error = env.rejected("POST", "/v1/chassis", {"chassis": {"remote": remote}}, status=400,
                         type="InvalidInput", token=ADMIN)
    assert "remote" in error["message"]


@pytest.mark.parametrize("body", [
    {"chassis": {"name": "no-remote"}},
    {"chassis": {"remote": SOCK, "encap_ip": "192.0.2.1"}},
    {"chassis": {"remote": SOCK, "name": ""}},
    {"chassis": {"remote": SOCK, "name": " padded "}},
    {"chassis": {"remote": SOCK, "name": 7}},
    {"chassis": {"remote": SOCK, "bridge_mappings": ["physnet1:br-phys"]}},
    {"chassis": {"remote": SOCK, "bridge_mappings": {"physnet1": "a-bridge-name-too-long"}}},
    {"chassis": {"remote": SOCK, "bridge_mappings": {"phys net": "br-phys"}}},
    {"chassis": {"remote": SOCK, "bridge_mappings": {"p1": "br-x", "p2": "br-x"}}},
    {"chassis": {"remote": SOCK, "bridge_mappings": {"physnet1": 5}}},
    {"chassis": "tcp:192.0.2.7:6640"},
])
def test_bad_attributes_are_400_and_change_nothing(env: Env, body: dict[str, Any]) -> None:
    env.rejected("POST", "/v1/chassis", body, status=400, type="InvalidInput", token=ADMIN)


def test_malformed_bodies_are_400(env: Env) -> None:
    env.rejected("POST", "/v1/chassis", {"network": {}}, status=400, type="HTTPBadRequest",
                 token=ADMIN)
    env.rejected("POST", "/v1/chassis", None, status=400, type="HTTPBadRequest", token=ADMIN)
    resp = env.call("POST", "/v1/chassis", raw=b"{not json", token=ADMIN)
    assert resp.status_int == 400 and resp.json["NeutronError"]["type"] == "InvalidInput"


def test_list_merges_stored_rows_with_live_sessions(env: Env, runtime: LiveChassis) -> None:
    add(env, {"remote": SOCK, "name": "hv2", "bridge_mappings": {"physnet1": "br-phys"}})
    add(env, {"remote": "tcp:192.0.2.9:6640", "name": "hv9"})
    runtime.entries = [
        live("hv2-system-id", SOCK, encap_ip="192.0.2.2", ports_bound=["p1"]),
        live("hv1", "unix:/run/hv1/db.sock", connected=False),
    ]
    body = env.ok("GET", "/v1/chassis", token=ADMIN)
    by_name = {c["name"]: c for c in body["chassis"]}
    assert [c["name"] for c in body["chassis"]] == ["hv1", "hv2", "hv9"]
    assert by_name["hv2"] == {
        "name": "hv2", "remote": SOCK, "bridge_mappings": {"physnet1": "br-phys"},
        "source": "api", "connected": True, "system_id": "hv2-system-id",
        "encap_ip": "192.0.2.2", "bridges": ["br-int"], "ports_bound": ["p1"],
        "openflow_connected": False, "controller_target": None, "controller_status": None,
    }
    assert by_name["hv9"]["source"] == "api" and by_name["hv9"]["connected"] is False
    assert by_name["hv1"] == {
        "name": "hv1", "remote": "unix:/run/hv1/db.sock", "bridge_mappings": {},
        "source": "command-line", "connected": False, "system_id": "hv1", "encap_ip": None,
        "bridges": ["br-int"], "ports_bound": [],
        "openflow_connected": False, "controller_target": None, "controller_status": None,
    }


def test_stored_chassis_matches_its_session_by_learned_name(
    env: Env, runtime: LiveChassis
) -> None:
    add(env, {"remote": "tcp:192.0.2.7:6640", "name": "hv7"})
    runtime.entries = [live("hv7", "tcp:192.0.2.70:6640")]
    [view] = env.ok("GET", "/v1/chassis", token=ADMIN)["chassis"]
    assert view["source"] == "api" and view["connected"] is True


def test_show_by_name_or_remote_and_404(env: Env, runtime: LiveChassis) -> None:
    add(env, {"remote": SOCK, "name": "hv2"})
    add(env, {"remote": "unix:/run/hv3/db.sock"})
    runtime.entries = [live("hv1", "tcp:192.0.2.1:6640")]
    assert env.ok("GET", "/v1/chassis/hv2", token=ADMIN)["chassis"]["remote"] == SOCK
    assert env.ok("GET", f"/v1/chassis/{SOCK}", token=ADMIN)["chassis"]["name"] == "hv2"
    shown = env.ok("GET", "/v1/chassis/unix:%2Frun%2Fhv3%2Fdb.sock", token=ADMIN)["chassis"]
    assert shown["name"] == "unix:/run/hv3/db.sock"
    shown = env.ok("GET", "/v1/chassis/hv1", token=ADMIN)["chassis"]
    assert shown["source"] == "command-line" and shown["connected"] is True
    error = env.rejected("GET", "/v1/chassis/nope", status=404, type="ChassisNotFound",
                         token=ADMIN)
    assert error["message"] == "Chassis nope could not be found."


def test_delete(env: Env, runtime: LiveChassis) -> None:
    add(env, {"remote": SOCK, "name": "hv2"})
    add(env, {"remote": "unix:/run/hv3/db.sock"})
    resp = env.call("DELETE", "/v1/chassis/hv2", token=ADMIN)
    assert resp.status_int == 204 and not resp.body
    assert int(resp.headers["X-Loom-Generation"]) == env.store.latest().generation
    assert "hv2" not in env.store.latest().chassis
    assert env.ok("DELETE", "/v1/chassis/unix:/run/hv3/db.sock", status=204,
                  token=ADMIN) is None
    assert env.store.latest().chassis == {} and env.dump()["Chassis"] == []
    env.rejected("DELETE", "/v1/chassis/hv2", status=404, type="ChassisNotFound", token=ADMIN)
    # a name freed by DELETE can be used again
    add(env, {"remote": SOCK, "name": "hv2"})


def test_command_line_chassis_cannot_be_added_or_deleted_through_the_api(
    env: Env, runtime: LiveChassis
) -> None:
    runtime.entries = [live("hv1", "tcp:192.0.2.1:6640")]
    env.rejected("POST", "/v1/chassis", {"chassis": {"remote": "tcp:192.0.2.1:6640"}},
                 status=409, type="ChassisRemoteInUse", token=ADMIN)
    env.rejected("DELETE", "/v1/chassis/hv1", status=409, type="ChassisFromCommandLine",
                 token=ADMIN)


def test_admin_only(env: Env) -> None:
    add(env, {"remote": SOCK, "name": "hv2"})
    for method, path, body in (
        ("GET", "/v1/chassis", None),
        ("POST", "/v1/chassis", {"chassis": {"remote": "tcp:192.0.2.7:6640"}}),
        ("GET", "/v1/chassis/hv2", None),
        ("DELETE", "/v1/chassis/hv2", None),
    ):
        env.rejected(method, path, body, status=404, type="HTTPNotFound", token=ALICE)
        env.rejected(method, path, body, status=401, type="HTTPUnauthorized")


def test_methods(env: Env) -> None:
    resp = env.call("PUT", "/v1/chassis", {"chassis": {}}, token=ADMIN)
    assert resp.status_int == 405 and resp.headers["Allow"] == "GET, POST"
    resp = env.call("POST", "/v1/chassis/hv2", {"chassis": {}}, token=ADMIN)
    assert resp.status_int == 405 and resp.headers["Allow"] == "GET, DELETE"


def test_pipeline_needs_only_a_valid_token(env: Env) -> None:
    body = env.ok("GET", "/v1/pipeline", token=ALICE)
    tables = body["tables"]
    assert [t["name"] for t in tables] == [t.name for t in pl.PIPELINE]
    first = tables[0]
    assert first == {
        "name": pl.PIPELINE[0].name, "table_id": pl.PIPELINE[0].table_id,
        "purpose": pl.PIPELINE[0].purpose, "next_tables": list(pl.PIPELINE[0].next_tables),
        "miss": "drop" if pl.PIPELINE[0].miss_drops else f"goto {pl.PIPELINE[0].next_tables[0]}",
        "priorities": dict(pl.PIPELINE[0].priorities),
    }
    for t in tables:
        assert t["miss"] == "drop" or t["miss"].removeprefix("goto ") in t["next_tables"]
    env.rejected("GET", "/v1/pipeline", status=401, type="HTTPUnauthorized")
    assert env.call("POST", "/v1/pipeline", {}, token=ALICE).status_int == 405


def test_view_says_whether_the_bridge_reached_this_controller_over_openflow(
    env: Env, runtime: LiveChassis
) -> None:
    """OVSDB connected is not enough: the view also shows the OpenFlow side."""
    status = {"is_connected": False, "state": "BACKOFF", "last_error": "Connection refused"}
    runtime.entries = [live("hv1", SOCK, openflow_connected=False,
                            controller_target="tcp:127.0.0.1:6653", controller_status=status)]
    view = env.ok("GET", "/v1/chassis/hv1", token=ADMIN)["chassis"]
    assert view["connected"] is True and view["openflow_connected"] is False
    assert view["controller_target"] == "tcp:127.0.0.1:6653"
    assert view["controller_status"] == status
