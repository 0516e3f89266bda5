"""The controller process as an operator meets it: clear one-line failures, clean exits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from topologies.controller_process import ROOT, ControllerProcess, free_port

pytestmark = pytest.mark.integration


def _run(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("loom:")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_flag_fails_at_once_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    res = _run("--state-dir", str(tmp_path), "--rest-listen", "nonsense")
    assert res.returncode == 2
    assert "HOST:PORT" in _one_line(res.stderr)
    assert time.monotonic() - started < 10


def test_busy_rest_port_fails_with_reason(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _run("--state-dir", str(tmp_path), "--rest-listen", f"127.0.0.1:{port}",
                   "--of-listen", f"127.0.0.1:{free_port()}")
    assert res.returncode == 1
    assert f"127.0.0.1:{port}" in _one_line(res.stderr)


def test_unreachable_northbound_database_fails_with_reason(tmp_path: Path) -> None:
    res = _run("--state-dir", str(tmp_path), "--nb-db", f"unix:{tmp_path}/nothing.sock",
               "--rest-listen", f"127.0.0.1:{free_port()}",
               "--of-listen", f"127.0.0.1:{free_port()}")
    assert res.returncode == 1
    assert "northbound database" in _one_line(res.stderr)


def test_no_auth_refuses_a_public_listener(tmp_path: Path) -> None:
    res = _run("--state-dir", str(tmp_path), "--rest-listen", f"0.0.0.0:{free_port()}")
    assert res.returncode == 1
    assert "--auth-tokens" in _one_line(res.stderr)


def test_sigterm_exits_cleanly_and_intent_survives(tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path / "state", [])
    ctl.start()
    net = ctl.api.create("network", name="kept", wait=True)
    assert ctl.stop(signal.SIGTERM) == 0
    # the embedded ovsdb-server went with it
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", f"ovsdb-server.*{tmp_path}"],
                              capture_output=True, text=True).stdout
    assert leftover == ""
    ctl.start()
    nets = ctl.api.get("/v2.0/networks?name=kept").ok()["networks"]
    assert [n["id"] for n in nets] == [net["id"]]
    assert ctl.stop(signal.SIGTERM) == 0
