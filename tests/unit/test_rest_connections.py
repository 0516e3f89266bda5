"""Idle and slow clients cannot lock anyone out of the REST API (issue 9, item 2).

A real waitress server on 127.0.0.1 serving the real app over a real
ovsdb-server; crowds of idle and slow ("slowloris") connections from loopback
source addresses. Every assertion is about success, never about latency.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from api_harness import ADMIN, ALICE, Env, start_env
from waitress import wasyncore

from controller.rest.server import ConnectionPolicy, Serving, make_server, peer_key, serve
from topologies.client_load import (
    Crowd,
    loopback_sources,
    raise_open_files,
    request,
    wait_accept_queue_drained,
)

IDLE = 1000
SLOW = 40
# Both ends of every connection live in this process, plus the database and slack.
OPEN_FILES_NEEDED = 2 * (IDLE + SLOW) + 512


@pytest.fixture(scope="module", autouse=True)
def _open_files() -> None:
    if raise_open_files(OPEN_FILES_NEEDED) < OPEN_FILES_NEEDED:
        pytest.skip(f"RLIMIT_NOFILE cannot reach {OPEN_FILES_NEEDED} (ulimit -Hn)")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path / "state", tokens=True)
    yield e
    e.close()


@pytest.fixture
def served(env: Env) -> Iterator[Serving]:
    serving = serve(env.app, "127.0.0.1", 0)
    yield serving
    serving.close()


def _new_clients_get_answers(port: int, sources: list[str]) -> None:
    """/v1/health and an authenticated write, each on a new connection, from each source."""
    for i, source in enumerate(sources):
        health = request(port, "GET", "/v1/health", token=ALICE, source=source)
        assert health.status == 200, health
        created = request(port, "POST", "/v2.0/networks",
                          {"network": {"name": f"through-the-crowd-{i}"}},
                          token=ADMIN, source=source)
        assert created.status == 201, created
        assert created.body["network"]["name"] == f"through-the-crowd-{i}"


@pytest.mark.parametrize("spread", ["one-peer", "many-peers"])
def test_idle_and_slow_crowds_cannot_lock_out_new_clients(served: Serving, spread: str) -> None:
    """1000 idle plus 40 slow connections held open; new clients still get answers.

    one-peer: the whole crowd comes from 127.0.0.2 and the slow ones from 127.0.0.3
    (what one host, or everyone behind one NAT, can do); many-peers: every connection
    has its own source address (what a botnet can do). The clients asking come from
    127.0.0.1 and, in the one-peer case, also from the crowd's own address.
    """
    if spread == "one-peer":
        idle_from, slow_from = ["127.0.0.2"], ["127.0.0.3"]
        askers = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    else:
        idle_from, slow_from = loopback_sources(IDLE, first=1), loopback_sources(SLOW, first=10)
        askers = ["127.0.0.1"]
    port = served.port
    idle = Crowd(port, idle_from)
    slow = Crowd(port, slow_from, slow=True, interval=1.0)
    try:
        idle.grow(IDLE)
        slow.grow(SLOW)
        slow.start()
        # Let the server take the crowd off its accept queue (a server that stopped
        # accepting never does: then the requests below queue behind the crowd).
        wait_accept_queue_drained(port, timeout=20)
        slow.wait_rounds(2)  # the slow ones have trickled more than their opening
        _new_clients_get_answers(port, askers)
    finally:
        slow.close()
        idle.close()


# -- the mechanics, with small caps ------------------------------------------------


def _tiny_app(entered: threading.Event, release: threading.Event) -> Callable[..., Any]:
    """200 at once, except /block, which waits for `release`."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/block":
            entered.set()
            release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app


@contextmanager
def _serving(app: Any, **policy: int) -> Iterator[Serving]:
    serving = serve(app, "127.0.0.1", 0, threads=2, policy=ConnectionPolicy(**policy))
    try:
        yield serving
    finally:
        serving.close()


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def _held_by(serving: Serving, peer: str, count: int) -> None:
    """Wait until the server holds `count` connections from `peer` (read from its loop's
    bookkeeping; only a length, so reading it from this thread is safe)."""
    deadline = time.monotonic() + 10
    while len(serving.server.peers.get(peer, ())) != count:
        assert time.monotonic() < deadline, serving.server.peers.get(peer)
        time.sleep(0.01)


def _get(sock: socket.socket, path: str = "/") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"ok"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before answering {path}"
        answer += chunk
    return answer


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_peer_at_its_cap_loses_its_least_recently_active_idle_connection() -> None:
    never = threading.Event()
    with _serving(_tiny_app(threading.Event(), never), max_per_peer=4) as srv:
        first = [_connect(srv.port, "127.0.0.2") for _ in range(4)]
        _held_by(srv, "127.0.0.2", 4)
        _get(first[0])  # answered: now the most recently active; first[1] is the oldest
        newcomer = _connect(srv.port, "127.0.0.2")
        assert _closed_by_server(first[1])
        _held_by(srv, "127.0.0.2", 4)
        assert b"200 OK" in _get(newcomer)
        assert b"200 OK" in _get(first[0])  # the one that had been answered lived on
        other = _connect(srv.port, "127.0.0.3")  # another peer's cap is its own
        assert b"200 OK" in _get(other)
        assert b"200 OK" in _get(first[2])
        for sock in [*first, newcomer, other]:
            sock.close()


def test_a_request_being_served_is_never_evicted() -> None:
    entered, release = threading.Event(), threading.Event()
    with _serving(_tiny_app(entered, release), max_per_peer=2) as srv:
        busy = _connect(srv.port, "127.0.0.2")
        busy.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        assert entered.wait(10)
        crowd = Crowd(srv.port, ["127.0.0.2"])
        crowd.grow(20)  # each one evicts the peer's oldest idle connection, never `busy`
        _held_by(srv, "127.0.0.2", 2)
        assert not _readable(busy)  # neither answered nor closed
        release.set()
        answer = b""
        while not answer.endswith(b"ok"):
            chunk = busy.recv(4096)
            assert chunk, "the request being served was closed"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK")
        crowd.close()
        busy.close()


def test_stop_ends_the_server_even_when_its_wake_up_pipe_is_gone() -> None:
    """CI once failed a test in its teardown: stop() wrote to waitress' trigger pipe,
    whose descriptor was no longer open (EBADF), and raised instead of stopping."""
    serving = serve(_tiny_app(threading.Event(), threading.Event()), "127.0.0.1", 0,
                    threads=2)
    keep_alive = _connect(serving.port, "127.0.0.1")
    assert b"200 OK" in _get(keep_alive)
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    serving.server.trigger.trigger = closed  # its wake-up pipe's write end, now closed
    serving.stop(timeout=10)
    assert not serving.running
    assert keep_alive.recv(1) == b""  # connections closed, not left open
    keep_alive.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_the_server_cap_makes_room_across_peers() -> None:
    with _serving(_tiny_app(threading.Event(), threading.Event()), max_connections=32) as srv:
        crowd = Crowd(srv.port, loopback_sources(200, first=1))
        try:
            crowd.grow(200)
            wait_accept_queue_drained(srv.port, timeout=20)
            # Evicted channels are closed at the server loop's next safe point
            # (LoomServer.doomed): count once that point has passed.
            deadline = time.monotonic() + 10
            while srv.server.doomed and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(srv.server.active_channels) <= 32
            assert b"200 OK" in _get(_connect(srv.port, "127.0.0.1"))
        finally:
            crowd.close()


def test_a_request_trickling_past_its_deadline_is_closed() -> None:
    """Both kinds of trickle: a header line that never ends, a body that never ends."""
    with _serving(_tiny_app(threading.Event(), threading.Event()), request_deadline=1,
                  cleanup_interval=1) as srv:
        slow = Crowd(srv.port, ["127.0.0.2"], slow=True, interval=0.2).start()
        try:
            slow.grow(2)
            deadline = time.monotonic() + 30  # a bound for a failing run, not a latency
            while slow.closed_by_server < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert slow.closed_by_server == 2
        finally:
            slow.close()


def test_blank_lines_do_not_keep_a_connection_alive() -> None:
    """waitress skips blank lines between requests; they are not progress either."""
    with _serving(_tiny_app(threading.Event(), threading.Event()), idle_timeout=1,
                  cleanup_interval=1) as srv:
        sock = _connect(srv.port, "127.0.0.2")
        sock.settimeout(0.2)
        deadline = time.monotonic() + 30  # a bound for a failing run, not a latency
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"\r\n")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        sock.close()
        assert closed


def test_slow_clients_hold_no_worker_thread(env: Env) -> None:
    """One worker thread, 50 slow clients: waitress only hands a worker whole requests."""
    serving = serve(env.app, "127.0.0.1", 0, threads=1)
    slow = Crowd(serving.port, ["127.0.0.2"], slow=True, interval=0.5).start()
    try:
        slow.grow(50)
        slow.wait_rounds(2)
        assert request(serving.port, "GET", "/v1/health", token=ALICE).status == 200
    finally:
        slow.close()
        serving.close()


def test_an_eviction_never_hands_its_events_to_a_new_connection() -> None:
    """The loop is turned by hand so the order is exact: in one turn A (at its peer's cap)
    has data waiting, B from A's peer arrives and evicts A, and C arrives next. Were A
    closed at once, C would get A's descriptor number and, in the same turn, A's event:
    waitress would read nothing from C's socket and close it."""
    server = make_server(_tiny_app(threading.Event(), threading.Event()), "127.0.0.1", 0,
                         policy=ConnectionPolicy(max_per_peer=1))
    port = int(server.effective_port)

    def turn() -> None:
        wasyncore.poll2(0.2, server._map)

    try:
        a = _connect(port, "127.0.0.2")
        turn()
        assert len(server.active_channels) == 1
        a.sendall(b"G")  # A's socket is readable in the next turn
        b = _connect(port, "127.0.0.2")
        c = _connect(port, "127.0.0.1")
        turn()  # accepts B (evicting A) and C, and handles A's read event
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        c.settimeout(0.05)
        answer = b""
        for _ in range(100):
            turn()
            try:
                chunk = c.recv(4096)
            except TimeoutError:
                continue
            assert chunk, "C was closed"
            answer += chunk
            if answer.endswith(b"ok"):
                break
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        assert _closed_by_server(a)
        for sock in (a, b, c):
            sock.close()
    finally:
        server.task_dispatcher.shutdown()
        for dispatcher in list(server._map.values()):
            dispatcher.close()


@pytest.mark.parametrize("addr,peer", [
    (("192.0.2.7", 5000), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 5001, 0, 0), "2001:db8:1:2::/64"),
    (("::ffff:192.0.2.7", 5000, 0, 0), "192.0.2.7"),
    (("fe80::1%eth0", 5000, 0, 2), "fe80::/64"),
])
def test_a_peer_is_an_ipv4_address_or_an_ipv6_64(addr: tuple[Any, ...], peer: str) -> None:
    assert peer_key(addr) == peer
