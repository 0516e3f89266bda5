"""The northbound store client: one IDL, one thread, immutable snapshots out.

python-ovs's IDL is not thread-safe, so a single store thread owns it: it runs the
IDL, builds a new `Intent` whenever the replica changed, and executes write jobs
one at a time. Other threads only read the current snapshot (an atomic reference)
or submit a job and wait on its future. Because jobs run serially against the
newest snapshot, "validate, then write" in the REST layer is atomic as far as this
controller is concerned; the schema's indexes and strong references catch what a
second controller on the same database could still race in.

When the server goes away, python-ovs keeps reconnecting by itself; this module
records why each connection or attempt failed (python-ovs logs it and forgets), so
/v1/health and the 503 of every write refused meanwhile can name the cause. Reads
keep serving the last snapshot, marked stale, until the replica is whole again.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import ovs.db.idl
import ovs.poller
import ovs.reconnect
import ovs.util

from controller import intent as model
from controller.intent_delta import DeltaLog, IntentDelta, stamp
from controller.store import _ovs_compat, allocations, ovs_json
from controller.store.cluster_view import CLUSTER_TABLES, ClusterView
from controller.store.codec import CODECS
from controller.store.embedded import SCHEMA_PATH, iso_time
from controller.store.errors import (
    CommitOutcomeUnknown,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    WriteConflict,
    from_ovsdb_error,
)
from controller.store.ovs_idl import FastRowUpdate
from controller.store.snapshot import SnapshotBuilder, row_values
from controller.store.txn import TxnHelper

log = logging.getLogger(__name__)
_ovs_compat.install()
ovs_json.install()  # the C json module parses what the server sends

WriteFn = Callable[[TxnHelper, model.Intent], Any]
DELTAS_KEPT = 4096  # snapshots whose delta changes_since can still answer
Subscriber = Callable[[model.Intent], None]


class _Idl(FastRowUpdate, ovs.db.idl.Idl):
    """An IDL that reports every changed row to the snapshot builder (and applies the
    server's rows with less work: store/ovs_idl.py)."""

    builder: Optional[SnapshotBuilder] = None

    cluster_dirty = True  # the controller instances' tables changed (cluster_view)

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        table = row._table.name
        if table in CLUSTER_TABLES:
            self.cluster_dirty = True
        elif self.builder is not None:
            self.builder.note(table, row.uuid)


class ServerStatus(Protocol):
    """A server this store depends on and can report about (the embedded one's Supervisor)."""

    def status(self) -> dict[str, Any]: ...

    def problem(self) -> Optional[str]: ...


class _LinkWatch:
    """Why the session to the server last failed; python-ovs acts on it but keeps no record.

    Every dropped connection and every failed connect attempt goes through the
    reconnect FSM's `disconnected(now, error)` (`connect_failed` calls it too), with
    an errno, `ovs.util.EOF` (closed by the peer) or 0 (probe or connect timeout).
    Wrapping that one method of this session's FSM records the cause without
    changing what python-ovs does. Written by the store thread only.
    """

    def __init__(self, fsm: ovs.reconnect.Reconnect) -> None:
        self.events = 0  # bumps on every recorded failure, so readers see a new one
        # Established sessions that ended, however briefly: python-ovs may drop and
        # re-establish one inside a single run(), unseen by a connected/not check.
        self.losses = 0
        self.error: Optional[int] = None
        self.lost = False  # the last failure ended an established session
        self.at: Optional[float] = None  # wall time of the last failure
        # Loom is resetting the session itself (a commit hung); any other forced
        # reconnect is python-ovs' own: a cluster member that is not (or no longer)
        # the leader
        self.forcing = False
        inner = fsm.disconnected

        def disconnected(now: int, error: int) -> None:
            state = fsm.state
            if state not in (ovs.reconnect.Reconnect.Backoff, ovs.reconnect.Reconnect.Void):
                # RECONNECT: the session was dropped on purpose, by us (a commit timed
                # out) or by python-ovs (the member is not the cluster's leader)
                if state is ovs.reconnect.Reconnect.Reconnect:
                    self.error = _FORCED if self.forcing else _NOT_LEADER
                else:
                    self.error = error
                self.forcing = False
                self.lost = bool(state.is_connected) or self.error in (_FORCED, _NOT_LEADER)
                if state.is_connected:
                    self.losses += 1
                self.at = time.time()
                self.events += 1
            inner(now, error)

        fsm.disconnected = disconnected  # type: ignore[method-assign]


_FORCED = -1000  # not an errno: Loom itself reset a session whose commit hung
_NOT_LEADER = -1001  # nor this: python-ovs left a clustered member that is not the leader


def describe_attempt(error: Optional[int], remote: str) -> str:
    """A failed connect attempt in words: `connection refused to unix:/x`."""
    kind, _, where = remote.partition(":")
    if error == errno.ENOENT and kind == "unix":
        return f"socket {where} does not exist (is ovsdb-server running?)"
    if error == errno.ECONNREFUSED:
        return f"connection refused to {remote}"
    if not error or error == ovs.util.EOF:
        return f"no answer from {remote} (timed out)"
    return f"cannot reach {remote}: {os.strerror(error)}"


def describe_loss(error: Optional[int]) -> str:
    """Why an established session ended, in words: `closed by the server`."""
    if error == ovs.util.EOF:
        return "closed by the server"
    if error == _NOT_LEADER:
        return "the member is not the cluster's leader (a new one is being elected or " \
            "was elected); reconnecting to the leader"
    if error == _FORCED:
        return "reset by Loom after a commit went unanswered"
    if not error:
        return "the server stopped answering"
    return os.strerror(error)


@dataclass
class _Job:
    fn: WriteFn
    future: Future[Any]
    deadline: float
    commit: bool = True
    raw: bool = False  # fn(idl, txn): the instances' own tables, not intent (transact_raw)


@dataclass
class _Subscription:
    callback: Subscriber
    last_generation: int = field(default=-1)


class NorthboundStore:
    """Client of the Loom_Northbound database at `remote` (e.g. `unix:/run/loom/nb.sock`)."""

    def __init__(
        self,
        remote: str,
        *,
        schema: Path = SCHEMA_PATH,
        probe_interval_ms: int = 5000,
        max_backoff_ms: int = 2000,
        server: Optional[ServerStatus] = None,
    ) -> None:
        """`server`: the embedded server's supervisor, so health can say why it is down."""
        self.remote = remote
        # the members of a clustered database: a write waits out an election
        self.clustered = "," in remote
        self._server = server
        self._helper = ovs.db.idl.SchemaHelper(location=str(schema))
        self._helper.register_all()
        self._idl: Optional[_Idl] = None
        self._probe = probe_interval_ms
        self._max_backoff = max_backoff_ms
        self._snapshot = model.Intent()
        self._generation = 0
        self._deltas = DeltaLog(DELTAS_KEPT)  # per published snapshot, see changes_since
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"
        # Guards the pipe's descriptors against a close racing a wake or another close:
        # a number closed twice, or written after its close, may by then belong to
        # another part of the process (a REST server's trigger pipe, a socket).
        self._wake_lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._connected = False
        self._last_change: Optional[float] = None
        self._last_error: Optional[str] = None
        # The current outage (wall time it began; None while connected or before the
        # first load), the last finished one (kept as history once healthy again:
        # `last_error` itself is cleared, so "non-null" always means "a problem now").
        self._down_since: Optional[float] = None
        self._last_outage: Optional[dict[str, Any]] = None
        self._outage_cause: Optional[str] = None  # the reason as worded when it began
        self._losses_seen = 0  # the link's losses accounted for in `_last_outage`
        self._link: Optional[_LinkWatch] = None
        self._link_seen = (-1, False)  # (events, session up) the reason was computed from
        self._session_up_since: Optional[float] = None  # monotonic; None while the socket is down
        self._running_since: Optional[float] = None  # the store thread is in idl.run()
        self._subs: list[_Subscription] = []
        self.conflicts = 0  # writes run again because another one committed first
        self.resolved = 0  # writes whose connection dropped, found (not) committed after
        self._session_seqno = -1
        self._cluster = ClusterView()
        self._cluster_subs: list[Callable[[ClusterView], None]] = []
        self._subs_lock = threading.Lock()
        self._notices: queue.SimpleQueue[
            Optional[tuple[model.Intent | ClusterView, Optional[_Subscription]]]
        ] = queue.SimpleQueue()
        self._notifier: Optional[threading.Thread] = None

    # -- lifecycle --------------------------------------------------------------
    def connect(self, timeout: float = 10.0, *, stall_timeout: float = 60.0,
                progress_every: float = 5.0) -> NorthboundStore:
        """Start the store thread and wait for the first full copy of the database.

        `timeout` bounds reaching the server, so a wrong or dead remote fails fast.
        Once the socket is connected the first copy may take as long as it takes (a
        large database takes far longer to serialise, send and parse than a connect,
        and giving up on it means never starting: issue 11, 10,000 ports did not
        start): the wait ends in failure only when nothing moves for `stall_timeout`,
        neither bytes from the server nor the store thread parsing them. Progress is
        logged every `progress_every` seconds.
        """
        if self._thread is not None:
            return self
        idl = _Idl(self.remote, self._helper, probe_interval=self._probe)
        # python-ovs' default (8 s) is slow to heal; the members of a cluster are tried
        # in turn until the leader answers, each failed try growing the wait: keep it
        # short there, or an election of a second becomes several (docs/HA.md)
        clustered = self.clustered
        idl._session.reconnect.set_backoff(
            100 if clustered else 250, min(self._max_backoff, 500) if clustered
            else self._max_backoff)
        self._link = _LinkWatch(idl._session.reconnect)
        idl.builder = SnapshotBuilder(idl)
        self._idl = idl
        self._thread = threading.Thread(target=self._run, name="loom-store", daemon=True)
        self._notifier = threading.Thread(
            target=self._notify_loop, name="loom-store-notify", daemon=True
        )
        self._thread.start()
        self._notifier.start()
        started = time.monotonic()
        deadline = started + timeout
        moved, seen, said = started, -1, started
        while not (self._ready.wait(0.05) and self._connected):
            thread = self._thread
            if thread is None or not thread.is_alive():
                reason = self._last_error or "store thread stopped"
                self.close()
                raise StoreUnavailable(f"northbound store {self.remote}: {reason}")
            now = time.monotonic()
            up_since = self._session_up_since
            received = self._received_bytes()
            running = self._running_since
            parsing = running is not None and now - running > 0.2  # not an idle loop's pass
            if received != seen or parsing:
                moved, seen = now, received
            if up_since is not None and now - moved > stall_timeout:
                self.close()
                raise StoreUnavailable(
                    f"northbound store {self.remote}: connected, but nothing came from the "
                    f"server for {stall_timeout:g}s ({max(seen, 0)} bytes received)"
                )
            if up_since is not None and now - said >= progress_every:
                said = now
                log.info("northbound store %s: loading the first copy, %.0f s, %.1f MB "
                         "received%s", self.remote, now - started, max(seen, 0) / 1e6,
                         ", parsing" if parsing else "")
            if up_since is None and time.monotonic() > deadline:
                reason = self._unreachable_reason()
                self.close()
                raise StoreUnavailable(
                    f"northbound store {self.remote} unreachable after {timeout:g}s: {reason}"
                )
        # Rows of a database older than the allocation columns get theirs now, before
        # anything compiles or writes (store/allocations.py).
        allocations.backfill_store(self)
        return self

    def close(self) -> None:
        """Stop the store thread and drop the connection; pending writes fail."""
        self._stopping.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._notices.put(None)
        if self._notifier is not None and self._notifier is not threading.current_thread():
            self._notifier.join(5)
        alive = self._thread is not None and self._thread.is_alive()
        self._thread = None
        self._notifier = None
        if not alive:  # the store thread no longer polls the pipe
            with self._wake_lock:
                fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    stop = close

    def _received_bytes(self) -> int:
        """Bytes the current session has received (-1 without one): connect's sign of
        progress, read from the store thread's session without a lock (an int)."""
        idl = self._idl
        rpc = getattr(getattr(idl, "_session", None), "rpc", None)
        return -1 if rpc is None else int(rpc.get_received_bytes())

    def _unreachable_reason(self) -> str:
        members = self.remote.split(",")
        if len(members) > 1:  # a clustered database: why each member would not do
            return "; ".join(f"{m}: {self._member_reason(m)}" for m in members)
        return self._member_reason(self.remote)

    @staticmethod
    def _member_reason(remote: str) -> str:
        kind, _, where = remote.partition(":")
        if kind == "unix":
            if not os.path.exists(where):
                return f"socket {where} does not exist (is ovsdb-server running?)"
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(where)
            except OSError as exc:
                return f"cannot connect to {where}: {exc.strerror}"
            return "connected but the database did not answer (wrong database name or schema?)"
        if kind == "tcp":
            host, _, port = where.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
            except (OSError, ValueError) as exc:
                return f"cannot connect to {where}: {exc}"
            return "connected but the database did not answer (wrong database name or schema?)"
        return "no answer"

    # -- reading ----------------------------------------------------------------
    def latest(self) -> model.Intent:
        """The newest immutable snapshot (never blocks)."""
        return self._snapshot

    def changes_since(self, generation: int) -> Optional[IntentDelta]:
        """The ids touched from snapshot `generation` to `latest()` (the union of the
        deltas of every snapshot after it); an empty delta if it is the latest.

        None when unknown: `generation` is older than the last `DELTAS_KEPT`
        snapshots, or a full rebuild (first load, reconnect) came after it, or it is
        newer than the latest. Safe from any thread."""
        return self._deltas.since(generation, self._snapshot.generation)

    @property
    def connected(self) -> bool:
        return self._connected

    def outage_reason(self) -> Optional[str]:
        """Why the store cannot take writes now, or None while it can.

        The embedded server's supervisor knows more than the socket does ("killed by
        SIGKILL; restarting it", "gave up after 6 attempts: <its last log line>"),
        so its word comes first; otherwise the last connection failure.
        """
        if self._connected:
            return None
        problem = self._server.problem() if self._server is not None else None
        return problem or self._last_error or f"not connected to {self.remote}"

    def health(self) -> dict[str, Any]:
        """The store's part of /v1/health.

        While disconnected: `last_error` names the cause (never null), `stale` says
        reads come from the last snapshot, `since` when the outage began. Once
        connected again `last_error` is null and `last_outage` keeps the story
        ({reason, from, to}) until the next one.
        """
        snap = self._snapshot
        connected = self._connected
        down_since = self._down_since
        out: dict[str, Any] = {
            "connected": connected,
            "remote": self.remote,
            "generation": snap.generation,
            "last_change_age_s": None
            if self._last_change is None
            else round(time.monotonic() - self._last_change, 3),
            "last_error": self._last_error if connected else self.outage_reason(),
            "stale": not connected,
            "since": None if connected or down_since is None else iso_time(down_since),
            "connection_losses": self._link.losses if self._link else 0,
            "last_outage": self._last_outage,
            "counts": {c.intent_attr: len(getattr(snap, c.intent_attr)) for c in CODECS},
        }
        if self._server is not None:
            out["server"] = self._server.status()
        return out

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(intent)` with the current snapshot, then with every newer one, in order.

        Callbacks run on one notifier thread, never on the store thread, so a slow
        subscriber delays other subscribers but never a write. Returns an unsubscribe function.
        """
        sub = _Subscription(callback)
        with self._subs_lock:
            self._subs.append(sub)
        if self._ready.is_set():
            self._notices.put((self._snapshot, sub))

        def unsubscribe() -> None:
            with self._subs_lock:
                if sub in self._subs:
                    self._subs.remove(sub)

        return unsubscribe

    def cluster_view(self) -> ClusterView:
        """The controller instances and who owns which switch, as last read."""
        return self._cluster

    def subscribe_cluster(self, callback: Callable[[ClusterView], None]) -> None:
        """Call `callback(view)` (on the notifier thread) whenever the instances' tables
        change, and once now if the store is loaded."""
        with self._subs_lock:
            self._cluster_subs.append(callback)
        if self._ready.is_set():
            self._notices.put((self._cluster, None))

    def transact_raw(self, fn: Callable[[Any, Any], Any], *, timeout: float = 5.0) -> Any:
        """Run `fn(idl, txn)` in the store thread and commit it, for the controller
        instances' own rows (heartbeats, switch ownership). These are not intent: the
        write counter is not bumped, and a prerequisite that failed is not retried but
        reported as `WriteConflict`, for the caller to decide again on newer data.
        Returns what `fn` returned."""
        if self._thread is None or self._stopping.is_set():
            raise StoreUnavailable(f"northbound store {self.remote} is not connected")
        fut: Future[Any] = Future()
        self._jobs.put(_Job(fn, fut, time.monotonic() + timeout, True, raw=True))
        self._wake()
        try:
            return fut.result(timeout + 1.0)
        except FutureTimeout:
            fut.cancel()
            raise StoreTimeout(f"write did not complete within {timeout:g}s") from None

    def dump(self, timeout: float = 10.0) -> dict[str, dict[str, dict[str, Any]]]:
        """Every row of every table (table -> uuid -> column -> value), for tests and debugging."""

        def read(helper: TxnHelper, intent: model.Intent) -> dict[str, dict[str, dict[str, Any]]]:
            out: dict[str, dict[str, dict[str, Any]]] = {}
            assert self._idl is not None
            for name, table in sorted(self._idl.tables.items()):
                cols = sorted(table.columns)
                out[name] = {
                    str(u): {c: _plain(v) for c, v in row_values(r, cols).items()}
                    for u, r in sorted(table.rows.items())
                    if r._data is not None
                }
            return out

        return self.call(read, timeout=timeout)

    # -- writing ----------------------------------------------------------------
    def transact(self, fn: WriteFn, *, timeout: float = 10.0) -> int:
        """Run `fn(helper, intent)` in the store thread and commit what it wrote.

        Returns the generation of the first snapshot containing the write, after the
        server confirmed the commit. Exceptions from `fn` and every commit failure
        (`TransactionFailed` subclasses, `StoreUnavailable`) propagate unchanged and
        leave the database as it was. `StoreTimeout` means the outcome is unknown.
        """
        return self._submit(fn, timeout, commit=True)

    def call(self, fn: Callable[[TxnHelper, model.Intent], Any], *, timeout: float = 10.0) -> Any:
        """Run `fn` in the store thread without committing anything; returns its result."""
        return self._submit(fn, timeout, commit=False)

    def _submit(self, fn: Callable[..., Any], timeout: float, *, commit: bool) -> Any:
        if self._thread is None or self._stopping.is_set():
            raise StoreUnavailable(f"northbound store {self.remote} is not connected")
        fut: Future[Any] = Future()
        job = _Job(fn, fut, time.monotonic() + timeout, commit)
        self._jobs.put(job)
        self._wake()
        try:
            return fut.result(timeout + 1.0)
        except FutureTimeout:
            if fut.cancel():
                raise StoreTimeout(
                    f"write not started within {timeout:g}s (store busy); nothing was written"
                ) from None
            raise StoreTimeout(
                f"write did not complete within {timeout:g}s; it may or may not be committed"
            ) from None

    # -- store thread -----------------------------------------------------------
    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # the pipe is full: the store thread is awake anyway
                pass

    def _run(self) -> None:
        idl = self._idl
        assert idl is not None
        try:
            while not self._stopping.is_set():
                self._running_since = time.monotonic()  # a big first copy parses for seconds
                idl.run()
                self._running_since = None
                self._note_session()
                whole = idl._session.is_connected() and idl.state == idl.IDL_S_MONITORING
                if whole:  # publish first: once `connected` says so, reads are fresh
                    self._publish()
                    self._publish_cluster()
                self._track_link(idl, whole)
                self._run_jobs()
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
                poller.timer_wait(1000)
                poller.block()
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
        except Exception as exc:  # never die silently: writers would hang until timeout
            log.exception("store thread crashed")
            self._last_error = f"store thread crashed: {exc}"
        finally:
            self._connected = False
            idl.close()
            self._fail_pending(StoreUnavailable(f"northbound store {self.remote} closed"))

    def _note_session(self) -> None:
        """After a (re)connection or a loss rows may have vanished unseen: the next
        snapshot is built from every row."""
        idl = self._idl
        assert idl is not None and idl.builder is not None
        seqno = idl._session.get_seqno()
        if seqno != self._session_seqno:
            self._session_seqno = seqno
            idl.builder.invalidate()

    def _track_link(self, idl: _Idl, whole: bool) -> None:
        """Keep `connected`, the outage record and its reason in step with the session.

        `whole`: the session is up and the replica complete (the IDL is monitoring).
        """
        session_up = idl._session.is_connected()
        if not session_up:
            self._session_up_since = None
        elif self._session_up_since is None:
            self._session_up_since = time.monotonic()
        was_connected = self._connected
        link = self._link
        losses = link.losses if link is not None else 0
        if was_connected and whole and losses > self._losses_seen and link is not None \
                and link.at is not None:
            # lost and back between two looks (a server restarted in milliseconds):
            # too short to be seen as an outage, still recorded as one
            now = time.time()
            self._last_outage = {
                "reason": f"connection to {self.remote} lost at {iso_time(link.at)}: "
                          f"{describe_loss(link.error)}; reconnected "
                          f"{now - link.at:.1f} s later",
                "from": iso_time(link.at),
                "to": iso_time(now),
            }
            log.warning("northbound store %s: connection lost and back %.1f s later",
                        self.remote, now - link.at)
        self._losses_seen = losses
        if was_connected and not whole:
            self._connected = False
            self._down_since = time.time()
        elif whole and not was_connected:
            if self._down_since is not None:
                now = time.time()
                self._last_outage = {
                    "reason": self._outage_cause,
                    "from": iso_time(self._down_since),
                    "to": iso_time(now),
                }
                log.warning(
                    "northbound store %s: connected again after %.1fs",
                    self.remote, now - self._down_since,
                )
            self._down_since = None
            self._last_error = None
            self._link_seen = (-1, False)
            self._connected = True  # last: whoever sees it connected sees no error
        if not self._connected:
            self._note_reason(session_up, lost_now=was_connected)

    def _note_reason(self, session_up: bool, *, lost_now: bool) -> None:
        """Word the current failure into `_last_error` (only when something changed)."""
        link = self._link
        assert link is not None
        seen = (link.events, session_up)
        if seen == self._link_seen and not lost_now:
            return
        self._link_seen = seen
        lost_at = "" if self._down_since is None else f" (lost at {iso_time(self._down_since)})"
        if session_up:
            reason = f"connected to {self.remote}, waiting for the database's contents{lost_at}"
        elif link.at is None:
            reason = f"connecting to {self.remote}"
        elif link.lost:
            cause = f"{describe_loss(link.error)}; reconnecting"
            reason = f"connection to {self.remote} lost at {iso_time(link.at)}: {cause}"
        else:
            reason = describe_attempt(link.error, self.remote) + lost_at
        if lost_now:
            log.warning("northbound store %s: connection lost: %s", self.remote, reason)
        elif reason != self._last_error and link.at is not None:
            log.info("northbound store %s still unavailable: %s", self.remote, reason)
        self._last_error = reason
        if lost_now:
            self._outage_cause = reason

    def _fail_pending(self, exc: StoreError) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(exc)

    def _publish(self) -> None:
        idl = self._idl
        assert idl is not None and idl.builder is not None
        counter = write_counter(idl)
        # numbered after the database's write counter, so that a write has the same
        # generation on every controller instance; a change that did not count itself
        # (an older writer, a hand edit) still gets a new number
        generation = counter if counter > self._generation else self._generation + 1
        snap = idl.builder.build(generation, self._snapshot)
        if snap is None:
            if not self._ready.is_set() and idl.has_ever_connected():
                self._ready.set()
            return
        delta = idl.builder.last_delta
        stamp(snap, self._deltas, delta)
        self._deltas.record(snap.generation, delta)  # before the snapshot is visible
        self._generation = snap.generation
        self._snapshot = snap
        self._last_change = time.monotonic()
        self._ready.set()
        self._notices.put((snap, None))

    def _run_jobs(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                job.future.set_result(self._execute(job))
            except BaseException as exc:  # delivered to the caller, never swallowed
                job.future.set_exception(exc)

    def _execute(self, job: _Job) -> Any:
        """Run one job; a write is retried, from the start, as long as the only reason
        it failed is that another write (another controller's) committed first."""
        idl = self._idl
        assert idl is not None and idl.builder is not None
        if job.raw:
            return self._execute_raw(job)
        while True:
            if not self._connected and not (self.clustered and self._await_session(job.deadline)):
                raise self._unavailable("nothing was written")
            # The write is checked against the snapshot, and conditioned on the write
            # counter the IDL holds: the two must be the same state. The IDL may have
            # moved on since the last snapshot (updates read while an earlier commit
            # waited for its reply): publish what it holds first.
            self._note_session()
            self._publish()
            txn = _ovs_compat.Transaction(idl)
            helper = TxnHelper(idl, txn, self._snapshot, idl.builder)
            try:
                result = job.fn(helper, self._snapshot)
            except BaseException:
                txn.abort()
                raise
            if not job.commit:
                txn.abort()
                return result
            counted = count_write(idl, txn, self._generation)
            status, sent = self._commit(txn, job.deadline)
            if status == txn.UNCHANGED:
                return self._generation
            if counted is not None and txn.replied and (
                    status == txn.TRY_AGAIN or (status == txn.ERROR and counted.inserted)):
                # A prerequisite failed: the write counter moved, another write came
                # first (or, on a new database, made the counter's row first: a second
                # row breaks NB_Global's maxRows). Nothing was written; run the job
                # again on the newer data.
                self.conflicts += 1
                self._catch_up(counted.read, job.deadline)
                self._publish()
                continue
            if status == txn.TRY_AGAIN and sent and not txn.replied and counted is not None:
                # The connection dropped with the commit in flight (a cluster's leader
                # died, say). Reconnected, the counter tells whether it committed.
                committed = self._resolve(counted, helper, job.deadline)
                if committed is False:
                    self.resolved += 1
                    continue  # nothing was written: run it again, on the newer data
                if committed:
                    self.resolved += 1
                    self._note_session()
                    self._publish()
                    return counted.written
            if status != txn.SUCCESS:
                if status == txn.ERROR:
                    raise from_ovsdb_error(txn.get_error())
                if not sent and self.clustered and self._await_session(job.deadline):
                    continue  # the session dropped before the commit went: run it again
                if sent:  # TRY_AGAIN after sending: python-ovs aborts in-flight txns on a drop
                    raise CommitOutcomeUnknown(
                        f"connection to {self.remote} lost before the server confirmed the "
                        "commit; it may or may not be committed"
                    )
                raise self._unavailable("the commit could not be sent, nothing was written")
            self._await_visible(helper, job.deadline)
            self._publish()
            return self._generation if counted is None else counted.written

    def _execute_raw(self, job: _Job) -> Any:
        idl = self._idl
        assert idl is not None
        if not self._connected:
            raise self._unavailable("nothing was written")
        txn = _ovs_compat.Transaction(idl)
        try:
            result = job.fn(idl, txn)
        except BaseException:
            txn.abort()
            raise
        status, sent = self._commit(txn, job.deadline)
        if status in (txn.SUCCESS, txn.UNCHANGED):
            return result
        if status == txn.TRY_AGAIN and txn.replied:
            raise WriteConflict("a row this write depended on changed first")
        if status == txn.ERROR:
            raise from_ovsdb_error(txn.get_error())
        if sent:
            raise CommitOutcomeUnknown("connection lost before the server confirmed the commit")
        raise self._unavailable("the commit could not be sent, nothing was written")

    def _publish_cluster(self) -> None:
        idl = self._idl
        assert idl is not None
        if not idl.cluster_dirty:
            return
        idl.cluster_dirty = False
        view = ClusterView.read(idl)
        if view != self._cluster:
            self._cluster = view
            self._notices.put((view, None))

    def _resolve(self, counted: CountedWrite, helper: TxnHelper,
                 deadline: float) -> Optional[bool]:
        """Whether a write whose reply was lost committed: True, False, or None when
        that cannot be told. Waits (until `deadline`) for a session with a whole
        replica again (another member of a cluster), then reads the write counter and
        the token the write left beside it (`count_write`)."""
        idl = self._idl
        assert idl is not None
        if not self._await_session(deadline):
            return None
        counter, token = write_counter(idl), write_token(idl)
        if counter == counted.read:
            return False  # nobody wrote since, ours neither
        if counter == counted.written and token == counted.token:
            return True
        inserted = [u for (t, u), present in helper.expected.items() if present]
        if inserted:  # rows only this write could have made (their uuids are its own)
            return all(u in idl.tables[t].rows for (t, u), present in helper.expected.items()
                       if present)
        return None

    def _await_session(self, deadline: float) -> bool:
        """Run the IDL until it holds a whole replica from a live session again (with a
        cluster: the new leader, within an election's time), or `deadline` passes.
        Meanwhile this write holds the store thread, and those queued behind it wait:
        a write during an election is answered late rather than refused."""
        idl = self._idl
        assert idl is not None
        while not (idl._session.is_connected() and idl.state == idl.IDL_S_MONITORING):
            if time.monotonic() > deadline or self._stopping.is_set():
                return False
            idl.run()
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait(50)
            poller.block()
        idl.run()
        self._note_session()
        return True

    def _catch_up(self, read: int, deadline: float) -> None:
        """Run the IDL until the replica's write counter moved past `read` (the server
        refused a write because it had): the next attempt then sees what came first."""
        idl = self._idl
        assert idl is not None
        while write_counter(idl) == read and idl._session.is_connected():
            if time.monotonic() > deadline:
                raise StoreTimeout(
                    "another write kept coming first and its change did not arrive in "
                    "time; nothing was written")
            idl.run()
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait(50)
            poller.block()

    def _unavailable(self, outcome: str) -> StoreUnavailable:
        """The error for a write refused because the server is out of reach, naming why."""
        reason = self.outage_reason() or f"connection to {self.remote} lost"
        return StoreUnavailable(f"{reason}; {outcome}")

    def _commit(self, txn: Any, deadline: float) -> tuple[Any, bool]:
        """Commit and wait for the server's answer: (final status, whether it was sent).

        The first `commit()` sends the request (INCOMPLETE) or fails without sending
        (TRY_AGAIN: not connected, or the socket refused it); the difference decides
        whether a failure wrote nothing or has an unknown outcome.
        """
        idl = self._idl
        assert idl is not None
        sent = False
        while True:
            status = txn.commit()
            if status != txn.INCOMPLETE:
                return status, sent
            sent = True
            if time.monotonic() > deadline:
                if self._link is not None:
                    self._link.forcing = True
                idl.force_reconnect()  # aborts the in-flight txn; caller gets StoreTimeout
                raise StoreTimeout("commit not confirmed in time; it may or may not be committed")
            idl.run()
            poller = ovs.poller.Poller()
            idl.wait(poller)
            txn.wait(poller)
            poller.timer_wait(max(1, int((deadline - time.monotonic()) * 1000)))
            poller.block()

    def _await_visible(self, helper: TxnHelper, deadline: float) -> None:
        """ovsdb-server sends the update before the reply; check anyway rather than trust it."""
        idl = self._idl
        assert idl is not None

        def visible() -> bool:
            return all(
                (u in idl.tables[t].rows) == present for (t, u), present in helper.expected.items()
            )

        while not visible():
            if time.monotonic() > deadline:
                raise StoreTimeout(
                    "committed, but the change did not come back from the server in time"
                )
            idl.run()
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait(50)
            poller.block()

    # -- notifier thread ----------------------------------------------------------
    def _notify_loop(self) -> None:
        while True:
            item = self._notices.get()
            if item is None:
                return
            snap, only = item
            if isinstance(snap, ClusterView):
                with self._subs_lock:
                    callbacks = list(self._cluster_subs)
                for callback in callbacks:
                    try:
                        callback(snap)
                    except Exception:
                        log.exception("cluster subscriber %r failed", callback)
                continue
            with self._subs_lock:
                targets = [only] if only is not None else list(self._subs)
            for sub in targets:
                if snap.generation <= sub.last_generation:
                    continue
                sub.last_generation = snap.generation
                try:
                    sub.callback(snap)
                except Exception:
                    log.exception(
                        "store subscriber %r failed on generation %d", sub.callback, snap.generation
                    )


COUNTER_TABLE = "NB_Global"


def write_counter(idl: Any) -> int:
    """The database's write counter (`NB_Global.nb_cfg`, 0 before the first write)."""
    table = idl.tables.get(COUNTER_TABLE)
    row = next(iter(table.rows.values()), None) if table is not None else None
    return int(row.nb_cfg) if row is not None else 0


@dataclass(frozen=True)
class CountedWrite:
    read: int  # the counter this write was computed against (verified at commit)
    written: int  # the counter it sets: its generation, on every instance
    inserted: bool = False  # it makes the counter's row (a new database)
    token: str = ""  # left beside the counter: a reply lost, whether it committed


WRITE_TOKEN = "loom-write"  # NB_Global.external_ids: which write set the counter


def write_token(idl: Any) -> Optional[str]:
    table = idl.tables.get(COUNTER_TABLE)
    row = next(iter(table.rows.values()), None) if table is not None else None
    return None if row is None else dict(row.external_ids).get(WRITE_TOKEN)


def count_write(idl: Any, txn: Any, generation: int) -> Optional[CountedWrite]:
    """Make `txn` bump the write counter, on the condition that nobody else did since
    it was read (OVSDB's `wait` prerequisite, python-ovs' `Row.verify`).

    Every write of every controller instance goes through this one row, so two
    writes computed from the same data never both commit: the second is refused
    (TRY_AGAIN) and run again on the newer data. That keeps every check the REST
    layer makes against its snapshot (free addresses, unique names, quotas,
    If-Match) as sound with several instances as with one. Returns None, adding
    nothing, when the transaction writes nothing.
    """
    if not _writes_anything(txn):
        return None
    table = idl.tables[COUNTER_TABLE]
    row = next(iter(table.rows.values()), None)
    inserted = row is None
    if row is None:  # a new database: the row is made by the first write
        read = 0
        row = txn.insert(table)
    else:
        read = int(row.nb_cfg)
        row.verify("nb_cfg")
    # past this instance's own generation too, so a generation given out for an
    # uncounted change is never given again to a counted one
    written = max(read, generation) + 1
    row.nb_cfg = written
    token = uuid.uuid4().hex
    row.external_ids = {WRITE_TOKEN: token}
    return CountedWrite(read, written, inserted, token)


def _writes_anything(txn: Any) -> bool:
    """Whether committing `txn` changes the database, as python-ovs decides UNCHANGED."""
    for row in txn._txn_rows.values():
        if row._changes is None or row._data is None or row._mutations:
            return True
        data = row._data  # (python-ovs' ColumnDefaultDict: a column not held is its default)
        if any(data[column] != datum for column, datum in row._changes.items()):
            return True
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
