"""Crowds of idle or slow HTTP clients, for the connection tests and the bench.

A crowd is what locks a naive server out: connections that never send a byte
(idle), or that send a request one byte per second and never finish it (slow,
"slowloris"). Each connection can come from its own loopback source address
(all of 127.0.0.0/8 is local on Linux), so one crowd can play one client or a
thousand.

Plain sockets and one thread; no dependency beyond the standard library.
"""

from __future__ import annotations

import errno
import http.client
import json
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

# Sent once when a slow connection opens; then one byte per interval, forever.
_SLOW_HEAD = b"POST /v2.0/networks HTTP/1.1\r\nHost: loom\r\nX-Slow: "
_SLOW_BODY_HEAD = (b"POST /v2.0/networks HTTP/1.1\r\nHost: loom\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")


def loopback_sources(count: int, first: int = 1) -> list[str]:
    """`count` distinct loopback addresses, 127.0.<n>.<1..250>, starting at 127.0.<first>.1."""
    return [f"127.0.{first + i // 250}.{1 + i % 250}" for i in range(count)]


def raise_open_files(needed: int) -> int:
    """Raise this process' RLIMIT_NOFILE soft limit to at least `needed` if the hard limit
    allows (root may raise the hard limit too); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
                return needed
            except (ValueError, OSError):
                needed = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return int(soft)


def _tcp_sockets(port: int) -> Iterator[list[str]]:
    """/proc/net/tcp{,6} rows (split) whose local port is `port` (this network namespace)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(wanted):
                        yield fields
        except OSError:
            continue


def accept_queue(port: int) -> Optional[int]:
    """Connections waiting in the kernel's accept queue of the TCP listener on `port`
    (Linux reports it as rx_queue of a LISTEN socket in /proc/net/tcp); None if no listener."""
    for fields in _tcp_sockets(port):
        if fields[3] == "0A":
            return int(fields[4].split(":")[1], 16)
    return None


def wait_accept_queue_drained(port: int, timeout: float) -> bool:
    """True once the server has taken every queued connection; False if `timeout` passed
    first (a server that stopped accepting never drains it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not accept_queue(port):
            return True
        time.sleep(0.05)
    return False


@dataclass
class Answer:
    status: int
    body: Any
    seconds: float


def request(port: int, method: str, path: str, body: Any = None, *,
            token: Optional[str] = None, source: str = "127.0.0.1",
            timeout: float = 10.0, host: str = "127.0.0.1") -> Answer:
    """One request on a new connection (a client arriving now), from `source`.

    Raises OSError (socket.timeout included) if there is no answer within `timeout`.
    """
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        headers = {"Accept": "application/json", "Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["X-Auth-Token"] = token
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        parsed = json.loads(raw) if raw else None
        return Answer(resp.status, parsed, time.perf_counter() - started)
    finally:
        conn.close()


class Crowd:
    """Connections to host:port held open from `sources` (round robin).

    `slow=False`: they connect and never send anything. `slow=True`: each sends the
    start of a request and then one more byte every `interval` seconds; even-numbered
    ones trickle a header line that never ends, odd-numbered ones complete their
    headers (Content-Length: 100000) and trickle the body. With `replace=True` a
    connection the server closes is opened again at the next round, as a determined
    attacker would.
    """

    def __init__(self, port: int, sources: list[str], *, slow: bool = False,
                 interval: float = 1.0, replace: bool = False, host: str = "127.0.0.1",
                 connect_timeout: float = 10.0) -> None:
        self.host, self.port, self.sources = host, port, sources
        self.slow, self.interval, self.replace = slow, interval, replace
        self.connect_timeout = connect_timeout
        self.socks: dict[int, socket.socket] = {}  # fileno -> socket
        self.closed_by_server = 0
        self.rounds = 0
        self._opened = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def grow(self, n: int) -> None:
        """Open n more connections (each connect completes once the kernel accepts it,
        whether or not the server process has taken it off the accept queue)."""
        for _ in range(n):
            self._open_one()

    def _open_one(self) -> None:
        index = self._opened
        self._opened += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.bind((self.sources[index % len(self.sources)], 0))
            sock.connect((self.host, self.port))
            if self.slow:
                sock.sendall(_SLOW_HEAD if index % 2 == 0 else _SLOW_BODY_HEAD)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.socks[sock.fileno()] = sock

    def start(self) -> Crowd:
        self._thread = threading.Thread(target=self._run, name="crowd", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._reap()
            if self.slow:
                self._trickle()
            self.rounds += 1

    def _reap(self) -> None:
        """Drop the connections the server closed (readable at EOF, or reset)."""
        poller = select.poll()
        for fd in self.socks:
            poller.register(fd, select.POLLIN)
        gone = []
        for fd, _ in poller.poll(0):
            try:
                if self.socks[fd].recv(65536):
                    continue  # an answer (an error page): the server closes next
            except BlockingIOError:
                continue
            except OSError:
                pass
            gone.append(fd)
        self._drop(gone)

    def _trickle(self) -> None:
        gone = []
        for fd, sock in self.socks.items():
            try:
                sock.send(b"a")
            except BlockingIOError:
                continue
            except OSError:
                gone.append(fd)
        self._drop(gone)

    def _drop(self, fds: list[int]) -> None:
        for fd in fds:
            self.socks.pop(fd).close()
        self.closed_by_server += len(fds)
        if self.replace:
            for _ in fds:
                try:
                    self._open_one()
                except OSError as exc:
                    if exc.errno not in (errno.ECONNREFUSED, errno.ETIMEDOUT, None):
                        raise

    def wait_rounds(self, n: int, timeout: float = 60.0) -> None:
        """Block until the crowd has done `n` rounds since it started (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.rounds < n and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def held(self) -> int:
        return len(self.socks)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
