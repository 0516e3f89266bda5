"""Serving the WSGI app with waitress: bind first, and keep the door open for every client.

Binding happens at once, so a busy port fails loudly at start.

Connections. waitress' defaults let 100 idle TCP connections lock every new client
out for two minutes: at `connection_limit` it stops accepting (new clients wait in
the kernel's queue) until `channel_timeout` (120 s) closes an idle one, and a
client that trickles one byte a minute is never idle. It has no per-client cap,
and its select() loop breaks past file descriptor 1024. Loom keeps waitress and:

- uses its poll() loop (`asyncore_use_poll`) and raises RLIMIT_NOFILE at start
  (`raise_nofile_limit`), so thousands of sockets are only a number;
- uses waitress' own `connection_limit` (all clients), `channel_timeout` (idle
  keep-alive) and `cleanup_interval` (how often timeouts are checked), with Loom's
  numbers (controller/rest/limits.py);
- adds what waitress lacks, in `LoomServer` and `LoomChannel`:
  * a cap per peer address (`max_per_peer`; an IPv6 peer is its /64);
  * making room instead of refusing: when a connection arrives and its peer, or
    the server, is at its cap, the least recently active connection that is not
    executing a request (an idle keep-alive, or a request still trickling in) is
    closed. A new client is always accepted; a slowloris only ever evicts its own
    kind, and never a request being served;
  * clocks that move with progress, not bytes: idle counts from the last answer
    (waitress counts from the last byte, so blank lines keep a connection forever)
    and a pending request from its first byte, for eviction order and timeouts;
  * a deadline for a whole request to arrive (`request_deadline`), in waitress'
    maintenance pass (run every `cleanup_interval` from the listener's
    `readable()`), which `LoomServer.maintenance` replaces; and a stalled answer
    (the client stopped reading) is closed after `channel_timeout` even while a
    worker waits on it, which frees that worker;
  * accepting in batches, and evicting an idle connection when the process runs
    out of file descriptors, instead of spinning on EMFILE.
- Worker threads are never tied up by slow clients: waitress parses and buffers a
  whole request (headers and body, in memory below `inbuf_overflow`, 512 KiB, which
  is above Loom's body limit) in its event loop and only then hands it to a worker
  (`HTTPChannel.received` calls `add_task` once `request.completed`). Responses go
  into the channel's buffer and the loop sends them: a worker blocks on a slow
  reader only past `outbuf_high_watermark` (16 MiB) of unsent output, which the
  stalled-output rule above bounds by `channel_timeout`.

Errors waitress answers itself (request line or headers too long, body too large,
malformed request or chunked body, unsupported transfer coding, an exception
escaping the app) leave as Neutron's `{"NeutronError": {...}}`, like the app's.
"""

from __future__ import annotations

import errno
import functools
import heapq
import ipaddress
import logging
import resource
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from prometheus_client import Counter
from waitress import utilities as wu
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from controller.rest import limits
from controller.rest.errors import NeutronError

LOG = logging.getLogger(__name__)

CONNECTIONS_CLOSED = Counter(
    "loom_rest_connections_closed_total",
    "REST connections the server closed to protect other clients, by reason",
    ["reason"],
)


@dataclass(frozen=True)
class ConnectionPolicy:
    """How many connections the REST server holds, and for how long (limits.py says why)."""

    max_connections: int = limits.MAX_CONNECTIONS
    max_per_peer: int = limits.MAX_CONNECTIONS_PER_PEER
    idle_timeout: int = limits.IDLE_TIMEOUT_S
    request_deadline: int = limits.REQUEST_DEADLINE_S
    cleanup_interval: int = limits.CLEANUP_INTERVAL_S

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_peer", "idle_timeout", "request_deadline",
                     "cleanup_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


# -- errors waitress answers itself ------------------------------------------------


class RequestURITooLong(wu.BadRequest):
    """waitress counts the request line in the header limit (431); Neutron's eventlet
    server answers 414 past 8 KiB of request line, and so does Loom."""

    code = 414
    reason = "URI Too Long"


_ERROR_TYPES = {
    400: "HTTPBadRequest",
    413: "RequestEntityTooLarge",
    414: "HTTPRequestURITooLong",
    431: "HTTPRequestHeaderFieldsTooLarge",
    500: "HTTPInternalServerError",
    501: "HTTPNotImplemented",
}


def neutron_error(error: wu.Error, request: Optional[HTTPRequestParser] = None) -> NeutronError:
    """The Neutron-shaped error for one of waitress' own (its text names its own limits)."""
    if isinstance(error, wu.RequestEntityTooLarge):
        return body_too_large(request)
    if isinstance(error, RequestURITooLong):
        message = (f"Request line is longer than the limit of "
                   f"{limits.MAX_REQUEST_LINE_BYTES} bytes.")
    elif isinstance(error, wu.RequestHeaderFieldsTooLarge):
        message = (f"Request line and headers are larger than the limit of "
                   f"{limits.MAX_REQUEST_HEADER_BYTES} bytes.")
    elif isinstance(error, wu.InternalServerError):
        message = "Request Failed: internal server error while processing your request."
    elif isinstance(error, wu.ServerNotImplemented):
        message = str(error.body)
    else:
        message = f"Malformed request: {error.body}"
    kind = _ERROR_TYPES.get(error.code, "HTTPBadRequest" if error.code < 500 else
                            "HTTPInternalServerError")
    return NeutronError(message, type=kind, status=error.code)


def body_too_large(request: Optional[HTTPRequestParser]) -> NeutronError:
    """The app's own 413 (rest/validate.py), which waitress answers first: it refuses a
    declared size before reading the body, and a chunked body once past the limit."""
    if request is not None and not request.chunked and request.content_length:
        size = f"{request.content_length} bytes"
    else:
        size = f"more than {limits.MAX_BODY_BYTES} bytes"
    return NeutronError(
        "Request is too large.", type="RequestEntityTooLarge", status=413,
        detail=f"The body is {size}; at most {limits.MAX_BODY_BYTES} bytes are accepted.")


class NeutronErrorTask(ErrorTask):
    """waitress' error answer with Neutron's JSON body instead of its plain text."""

    def execute(self) -> None:
        response = neutron_error(self.request.error, self.request).response()
        body: bytes = response.body
        self.status = response.status
        self.response_headers.append(("Content-Type", response.headers["Content-Type"]))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class LoomRequestParser(HTTPRequestParser):
    """waitress' parser plus a limit on the request line alone (414, as Neutron)."""

    _line_checked = False

    def received(self, data: bytes) -> int:
        if self._in_request_line() and self._request_line_too_long(data):
            self.parse_header(b"GET / HTTP/1.0\r\n")  # what waitress does for its 431
            self.error = RequestURITooLong(f"exceeds {limits.MAX_REQUEST_LINE_BYTES} bytes")
            self.completed = True
            return len(data)
        return int(super().received(data))

    def _in_request_line(self) -> bool:
        completed: bool = self.completed
        return not (self._line_checked or completed) and self.body_rcv is None

    def _request_line_too_long(self, data: bytes) -> bool:
        """Only the start of the header is looked at, and only until the line ends."""
        limit = limits.MAX_REQUEST_LINE_BYTES
        head = (self.header_plus + data).lstrip()  # waitress skips leading blank lines too
        if head.find(b"\n", 0, limit + 2) >= 0:
            self._line_checked = True
            return False
        return len(head) > limit + 1


# -- connections -------------------------------------------------------------------


def peer_key(addr: Any) -> str:
    """The address a per-peer cap counts by: the IPv4 address, or the IPv6 /64 (one
    host is routinely given a whole /64, so single IPv6 addresses are free to it)."""
    return _peer_of(str(addr[0]) if isinstance(addr, tuple) and addr else str(addr))


@functools.lru_cache(maxsize=8192)
def _peer_of(host: str) -> str:
    """Cached: parsing costs about 8 us per accept, and the same peers come back."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoomChannel(HTTPChannel):
    """waitress' channel, knowing its peer, its last answer and its pending request's age.

    waitress' `last_activity` moves with every byte in or out, so a client trickling
    bytes (or blank lines, which waitress skips) never looks idle. Loom's clocks move
    only with progress: `served_at` when an answer has been produced (or the
    connection opened), `request_started` at the first non-blank byte of a request.
    """

    parser_class = LoomRequestParser
    error_task_class = NeutronErrorTask
    server: LoomServer

    def __init__(self, server: LoomServer, sock: socket.socket, addr: Any, adj: Adjustments,
                 map: Optional[dict[int, Any]] = None) -> None:
        self.peer = peer_key(addr)  # before the base class registers the channel
        self.request_started: Optional[float] = None
        self._timed_request: Optional[HTTPRequestParser] = None
        super().__init__(server, sock, addr, adj, map=map)
        self.served_at: float = self.creation_time

    def received(self, data: bytes) -> bool:
        result = bool(super().received(data))
        request = self.request
        if request is not self._timed_request:
            if request is None or _blank(request):
                self._timed_request, self.request_started = None, None
            else:
                self._timed_request, self.request_started = request, self.last_activity
        return result

    def service(self) -> None:
        """Runs on a worker thread; a float store is atomic, the loop reads it later.

        Stamped before the answer too: the client may read it before the stamp after it
        lands, and a connection just answered must not look like the least recently
        active one meanwhile (a peer at its cap then lost it instead of an idle one;
        seen once in CI under load)."""
        self.served_at = time.time()
        super().service()
        self.served_at = time.time()

    def close_now(self) -> None:
        """Close from the listener's readable(). This turn's list of sockets to register
        may still hold this channel (see LoomServer), so it must ask poll() for nothing;
        set on the closed instance only, so live channels keep waitress' own checks,
        which run for every channel on every turn."""
        self.handle_close()
        self.readable = self.writable = _wants_nothing  # type: ignore[method-assign]

    def evictable(self) -> bool:
        """Not executing a request (none queued or running) and not already closing."""
        return not (self.requests or self.will_close or self.close_when_flushed)

    def active_since(self) -> float:
        """Since when this channel has made no progress: a pending request counts from its
        first byte, anything else from the last answer."""
        if self.request_started is not None:
            return self.request_started
        return self.served_at

    def overdue(self, idle_cutoff: float, request_cutoff: float) -> Optional[str]:
        """Why maintenance should close this channel now, if it should (a cutoff is the
        time before which the channel had to have made progress)."""
        if self.requests:  # executing: only a client that stopped reading the answer
            if self.total_outbufs_len and self.last_activity < idle_cutoff:
                return "stalled_output"
            return None
        if self.request_started is not None:
            return "request_deadline" if self.request_started < request_cutoff else None
        return "idle_timeout" if self.served_at < idle_cutoff else None

    def add_channel(self, map: Optional[dict[int, Any]] = None) -> None:
        super().add_channel(map)
        self.server.peers.setdefault(self.peer, set()).add(self)

    def del_channel(self, map: Optional[dict[int, Any]] = None) -> None:
        super().del_channel(map)
        self.server.forget(self)


def _wants_nothing() -> bool:
    return False


def _blank(request: HTTPRequestParser) -> bool:
    """Only blank lines so far (waitress skips them between requests)."""
    return request.body_rcv is None and not request.header_plus.strip()


class LoomServer(TcpWSGIServer):
    """waitress' TCP server that makes room for a new client instead of refusing it.

    All bookkeeping runs on waitress' event-loop thread (accept, read, close,
    maintenance), so the peer index needs no lock.

    When to close matters. In one loop turn waitress registers every socket with
    poll(), waits, then handles the events in registration order: the listener
    (registered before any connection) first. A connection closed while the events
    are handled frees a descriptor that a later event of the same turn still names,
    and a connection accepted meanwhile would get it, and that event. So closing
    happens only where it is safe: in the listener's `readable()`, which runs in the
    registration pass before any connection is registered (`_close_doomed`,
    `maintenance`), or by a channel in its own event (waitress' `will_close`).
    """

    channel_class = LoomChannel
    ACCEPT_BATCH = 64  # connections taken off the accept queue per wake-up
    PAUSE_S = 0.5  # out of descriptors with nothing to evict: stop accepting this long
    next_channel_cleanup: float = 0.0  # waitress' own, typed

    def __init__(self, application: Any, policy: ConnectionPolicy, adj: Adjustments,
                 sockinfo: Any, dispatcher: ThreadedTaskDispatcher,
                 map: dict[int, Any]) -> None:
        self.policy = policy
        self.capacity = connection_capacity(adj.connection_limit)
        self.peers: dict[str, set[LoomChannel]] = {}
        self.doomed: set[LoomChannel] = set()  # evicted, closed at the next safe point
        self.closures: Tally[str] = Tally()
        self._paused_until = 0.0
        self.stop_requested = False  # set by Serving.stop(); acted on by readable()
        super().__init__(application, map=map, dispatcher=dispatcher, adj=adj,
                         sockinfo=sockinfo)

    # waitress calls readable() on every loop turn, before registering any connection;
    # maintenance rides on it, as in waitress.
    def readable(self) -> bool:
        if self.stop_requested:
            self.close_everything()
            return False
        if self.doomed:
            self._close_doomed()
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting) and time.monotonic() >= self._paused_until

    def close_everything(self) -> None:
        """Close every channel (connections, the trigger, this listener): with the map
        empty, waitress' loop ends."""
        for channel in list(self._map.values()):
            channel.close()

    def handle_accept(self) -> None:
        for _ in range(self.ACCEPT_BATCH):
            if not self._accept_one():
                return

    def _accept_one(self) -> bool:
        """Accept one connection, making room for it; False when the queue is empty."""
        try:
            pair = self.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._out_of_descriptors()
            else:
                LOG.warning("REST accept failed: %s", exc)
            return False
        if pair is None:
            return False
        conn, addr = pair
        try:
            self.set_socket_options(conn)
        except OSError:  # the client already left
            conn.close()
            return True
        addr = self.fix_addr(addr)
        if self._make_room(peer_key(addr)):
            self.channel_class(self, conn, addr, self.adj, map=self._map)
        else:
            conn.close()
            self._closed("refused")
        return True

    def _make_room(self, peer: str) -> bool:
        """Evict so that `peer` and the server are both under their caps; False if every
        connection in the way is executing a request."""
        mine = self.peers.get(peer, ())
        if len(mine) >= self.policy.max_per_peer and not self._evict(mine, 1, "peer_cap"):
            return False
        if len(self.active_channels) - len(self.doomed) >= self.capacity:
            # one scan of every channel is paid for by a batch of evictions
            batch = max(1, self.capacity // 64)
            return self._evict(self.active_channels.values(), batch, "server_cap") > 0
        return True

    def _evict(self, channels: Iterable[LoomChannel], count: int, reason: str) -> int:
        """Doom the `count` least recently active evictable channels; how many there were.

        They stop counting against their peer and the server at once and are closed at
        the next safe point (see the class docstring), at the latest next loop turn.
        """
        candidates = (c for c in channels if c.evictable())
        if count == 1:  # the common case, per peer: min() without a heap
            victim = min(candidates, key=LoomChannel.active_since, default=None)
            victims = [] if victim is None else [victim]
        else:
            victims = heapq.nsmallest(count, candidates, key=LoomChannel.active_since)
        for channel in victims:
            channel.will_close = True
            self.doomed.add(channel)
            self._unindex(channel)
            self._closed(reason)
        return len(victims)

    def _close_doomed(self) -> None:
        for channel in list(self.doomed):
            channel.close_now()  # its del_channel() drops it from `doomed`

    def _out_of_descriptors(self) -> None:
        """EMFILE: an idle connection gives its descriptor up next turn; if none can,
        stop accepting for a moment rather than spin on a listener that stays ready."""
        if self.doomed or self._evict(self.active_channels.values(), 1, "fd_exhausted"):
            return
        LOG.warning("REST: out of file descriptors and every connection is busy; "
                    "not accepting for %.1f s", self.PAUSE_S)
        self._paused_until = time.monotonic() + self.PAUSE_S

    def maintenance(self, now: float) -> None:
        """Replaces waitress' pass (which closes a channel idle for `channel_timeout` by its
        last byte): the same timeout by the last answer, the request deadline, and
        stalled output. Closed at once: a socket whose client stopped reading never
        becomes writable, so waitress' `will_close` would never close it."""
        idle_cutoff = now - self.adj.channel_timeout
        request_cutoff = now - self.policy.request_deadline
        for channel in list(self.active_channels.values()):
            reason = channel.overdue(idle_cutoff, request_cutoff)
            if reason is not None:
                channel.close_now()
                self._closed(reason)
        self._log_closures()

    def forget(self, channel: LoomChannel) -> None:
        """A channel closed (its del_channel)."""
        self.doomed.discard(channel)
        self._unindex(channel)

    def _unindex(self, channel: LoomChannel) -> None:
        mine = self.peers.get(channel.peer)
        if mine is not None:
            mine.discard(channel)
            if not mine:
                del self.peers[channel.peer]

    def _closed(self, reason: str) -> None:
        self.closures[reason] += 1
        CONNECTIONS_CLOSED.labels(reason).inc()

    def _log_closures(self) -> None:
        """One line per maintenance pass at most, so an attack cannot flood the log; idle
        keep-alive connections timing out is routine and only counted."""
        self.closures.pop("idle_timeout", None)
        if self.closures:
            LOG.warning("REST: closed connections to protect other clients: %s "
                        "(%d open)", dict(self.closures), len(self.active_channels))
            self.closures.clear()


# -- process limits ----------------------------------------------------------------


def raise_nofile_limit(target: int = limits.NOFILE_TARGET) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards the hard limit (at most `target`): the
    default soft limit, 1024, is less than one busy API server needs. Returns the
    soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            LOG.warning("cannot raise the open-files limit to %d: %s", want, exc)
    return int(soft)


def connection_capacity(requested: int) -> int:
    """`requested`, or fewer if the open-files limit would run out first (the rest of
    the process, switches and databases, keeps limits.FD_RESERVE descriptors)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - limits.FD_RESERVE >= requested:
        return requested
    capacity = max(limits.MIN_CONNECTIONS, soft - limits.FD_RESERVE)
    LOG.warning("REST: open-files limit %d allows %d connections, not %d",
                soft, capacity, requested)
    return capacity


# -- binding and running -----------------------------------------------------------


def adjustments(host: str, port: int, threads: int, policy: ConnectionPolicy) -> Adjustments:
    """waitress' settings: its own limits and timeouts, with Loom's numbers.

    waitress refuses a header or body when it reaches its maximum, so the maxima are
    one more than the largest size Loom accepts.
    """
    return Adjustments(
        host=host,
        port=port,
        threads=threads,
        clear_untrusted_proxy_headers=True,
        ident="loom",
        asyncore_use_poll=True,
        connection_limit=policy.max_connections,
        channel_timeout=policy.idle_timeout,
        cleanup_interval=policy.cleanup_interval,
        max_request_header_size=limits.MAX_REQUEST_HEADER_BYTES + 1,
        max_request_body_size=limits.MAX_BODY_BYTES + 1,
        backlog=limits.LISTEN_BACKLOG,
    )


def make_server(app: Any, host: str, port: int, *, threads: int = 8,
                policy: Optional[ConnectionPolicy] = None) -> LoomServer:
    """Bind `host:port` now (port 0 picks a free one); a clear OSError if it cannot.

    The returned server's `.run()` serves until stopped (see `Serving.stop`), and
    `.effective_port` is the bound port. One listening socket: `host` is one address.
    """
    policy = policy or ConnectionPolicy()
    adj = adjustments(host, port, threads, policy)
    dispatcher = ThreadedTaskDispatcher()
    sockets: dict[int, Any] = {}
    try:
        server = LoomServer(app, policy, adj, adj.listen[0], dispatcher, sockets)
    except OSError as exc:
        for half_made in list(sockets.values()):  # the trigger and the unbound socket
            half_made.close()
        reason = (
            "address already in use"
            if exc.errno == errno.EADDRINUSE
            else (exc.strerror or str(exc))
        )
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    dispatcher.set_thread_count(adj.threads)  # only once the port is ours
    return server


class Serving:
    """A bound server running in a background thread; `stop()` ends it cleanly.

    waitress has no stop call: closing the listening socket leaves keep-alive
    connections (and so its loop) running. `stop()` asks the loop thread itself to
    close every channel, which ends the loop: a flag the loop reads at least once per
    turn (`asyncore_loop_timeout`, 1 s), and waitress' trigger to make that turn now.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.host: str = server.effective_host
        self.port: int = int(server.effective_port)
        self._thread = threading.Thread(target=server.run, name="loom-rest", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        server = self.server
        if not self._thread.is_alive():
            return
        server.task_dispatcher.shutdown(timeout=timeout)
        server.stop_requested = True
        try:
            server.trigger.pull_trigger()
        except OSError as exc:  # the flag still ends the loop within a turn
            LOG.error("REST server: cannot wake the server loop to stop it (%s); "
                      "it stops at its next turn", exc)
        self._thread.join(timeout)
        if self._thread.is_alive():
            LOG.error("REST server: the server loop did not stop within %.0f s", timeout)

    close = stop

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until the server stops (or `timeout` passes)."""
        self._thread.join(timeout)


def serve(app: Any, host: str, port: int, *, threads: int = 8,
          policy: Optional[ConnectionPolicy] = None) -> Serving:
    """Bind now (OSError with a clear message on a busy port), then serve from a daemon thread.

    Returns at once; call `.close()` (or `.stop()`) to stop, `.wait()` to block until stopped.
    """
    return Serving(make_server(app, host, port, threads=threads, policy=policy))
