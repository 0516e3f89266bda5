"""The controller process, started as an operator starts it, shrugs off idle and slow crowds.

The same property as tests/unit/test_rest_connections.py, through `python -m
controller` with --auth-tokens: its raised open-files limit, its flags, its
/metrics, and a waitress-level error in Neutron's shape.
"""

from __future__ import annotations

import http.client
import json
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.rest.limits import NOFILE_TARGET
from topologies.client_load import (
    Crowd,
    loopback_sources,
    raise_open_files,
    request,
    wait_accept_queue_drained,
)
from topologies.controller_process import ControllerProcess

pytestmark = pytest.mark.integration

ADMIN, MEMBER = "conn-admin-token", "conn-member-token"
IDLE, SLOW, ONE_PEER = 1000, 40, 200
PER_PEER = 50


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    needed = raise_open_files(2 * (IDLE + SLOW + ONE_PEER) + 512)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({ADMIN: {"project_id": "ops", "role": "admin"},
                                  MEMBER: {"project_id": "p1", "role": "member"}}))
    ctl = ControllerProcess(tmp_path / "state", [], extra_args=(
        "--auth-tokens", str(tokens), "--rest-max-per-peer", str(PER_PEER)))
    ctl.api.token = ADMIN
    # started with the usual soft limit, so the controller has to raise it itself
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        ctl.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield ctl
    finally:
        assert ctl.stop() == 0, ctl.log_tail()


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def test_crowds_cannot_lock_out_the_controller(controller: ControllerProcess) -> None:
    assert controller.proc is not None
    soft, hard = _open_files_limit(controller.proc.pid)
    assert soft >= min(hard, NOFILE_TARGET)
    port = controller.rest_port
    idle = Crowd(port, loopback_sources(IDLE, first=1))
    one_peer = Crowd(port, ["127.0.0.2"])
    slow = Crowd(port, loopback_sources(SLOW, first=10), slow=True).start()
    try:
        idle.grow(IDLE)
        one_peer.grow(ONE_PEER)
        slow.grow(SLOW)
        wait_accept_queue_drained(port, timeout=20)
        slow.wait_rounds(2)
        for source in ("127.0.0.1", "127.0.0.2"):
            assert request(port, "GET", "/v1/health", token=MEMBER, source=source).status == 200
            created = request(port, "POST", "/v2.0/networks", {"network": {"name": source}},
                              token=ADMIN, source=source)
            assert created.status == 201, created
        # the one-peer crowd made room for itself, and the operator can see it
        evicted = controller.api.metric("loom_rest_connections_closed_total")
        assert evicted >= ONE_PEER - PER_PEER
    finally:
        slow.close()
        one_peer.close()
        idle.close()


def test_a_request_line_too_long_answers_neutrons_414(controller: ControllerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", controller.rest_port), timeout=10)
    try:
        sock.sendall(b"GET /v2.0/networks?name=" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = json.loads(resp.read())
    finally:
        sock.close()
    assert resp.status == 414
    assert body["NeutronError"]["type"] == "HTTPRequestURITooLong"
