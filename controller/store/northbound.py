"""The northbound store client: one IDL, one thread, immutable snapshots out.

python-ovs's IDL is not thread-safe, so a single store thread owns it: it runs the
IDL, builds a new `Intent` whenever the replica changed, and executes write jobs
one at a time. Other threads only read the current snapshot (an atomic reference)
or submit a job and wait on its future. Because jobs run serially against the
newest snapshot, "validate, then write" in the REST layer is atomic as far as this
controller is concerned; the schema's indexes and strong references catch what a
second controller on the same database could still race in.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import ovs.db.idl
import ovs.poller

from controller import intent as model
from controller.store import _ovs_compat
from controller.store.codec import CODECS
from controller.store.embedded import SCHEMA_PATH
from controller.store.errors import StoreError, StoreTimeout, StoreUnavailable, from_ovsdb_error
from controller.store.snapshot import SnapshotBuilder, row_values
from controller.store.txn import TxnHelper

log = logging.getLogger(__name__)
_ovs_compat.install()

WriteFn = Callable[[TxnHelper, model.Intent], Any]
Subscriber = Callable[[model.Intent], None]


class _Idl(ovs.db.idl.Idl):
    """An IDL that reports every changed row to the snapshot builder."""

    builder: Optional[SnapshotBuilder] = None

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if self.builder is not None:
            self.builder.note(row._table.name, row.uuid)


@dataclass
class _Job:
    fn: WriteFn
    future: Future[Any]
    deadline: float
    commit: bool = True


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
    ) -> None:
        self.remote = remote
        self._helper = ovs.db.idl.SchemaHelper(location=str(schema))
        self._helper.register_all()
        self._idl: Optional[_Idl] = None
        self._probe = probe_interval_ms
        self._max_backoff = max_backoff_ms
        self._snapshot = model.Intent()
        self._generation = 0
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._connected = False
        self._last_change: Optional[float] = None
        self._last_error: Optional[str] = None
        self._subs: list[_Subscription] = []
        self._subs_lock = threading.Lock()
        self._notices: queue.SimpleQueue[Optional[tuple[model.Intent, Optional[_Subscription]]]] = (
            queue.SimpleQueue()
        )
        self._notifier: Optional[threading.Thread] = None

    # -- lifecycle --------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> NorthboundStore:
        """Start the store thread and wait for the first full copy of the database."""
        if self._thread is not None:
            return self
        idl = _Idl(self.remote, self._helper, probe_interval=self._probe)
        idl._session.reconnect.set_backoff(250, self._max_backoff)  # default 8 s is slow to heal
        idl.builder = SnapshotBuilder(idl)
        self._idl = idl
        self._thread = threading.Thread(target=self._run, name="loom-store", daemon=True)
        self._notifier = threading.Thread(
            target=self._notify_loop, name="loom-store-notify", daemon=True
        )
        self._thread.start()
        self._notifier.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            thread = self._thread
            if thread is None or not thread.is_alive():
                reason = self._last_error or "store thread stopped"
                self.close()
                raise StoreUnavailable(f"northbound store {self.remote}: {reason}")
            if time.monotonic() > deadline:
                reason = self._unreachable_reason()
                self.close()
                raise StoreUnavailable(
                    f"northbound store {self.remote} unreachable after {timeout:g}s: {reason}"
                )
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
        if not alive and self._wake_w >= 0:  # the store thread no longer polls the pipe
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    stop = close

    def _unreachable_reason(self) -> str:
        kind, _, where = self.remote.partition(":")
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

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> dict[str, Any]:
        snap = self._snapshot
        return {
            "connected": self._connected,
            "remote": self.remote,
            "generation": snap.generation,
            "last_change_age_s": None
            if self._last_change is None
            else round(time.monotonic() - self._last_change, 3),
            "last_error": self._last_error,
            "counts": {c.intent_attr: len(getattr(snap, c.intent_attr)) for c in CODECS},
        }

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
        try:
            os.write(self._wake_w, b"x")
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        idl = self._idl
        assert idl is not None
        session_seqno = -1
        try:
            while not self._stopping.is_set():
                idl.run()
                seqno = idl._session.get_seqno()
                if seqno != session_seqno:  # (re)connected or lost: rows may have vanished unseen
                    session_seqno = seqno
                    assert idl.builder is not None
                    idl.builder.invalidate()
                self._connected = idl._session.is_connected() and idl.state == idl.IDL_S_MONITORING
                if self._connected:
                    self._publish()
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
        snap = idl.builder.build(self._generation + 1, self._snapshot)
        if snap is None:
            if not self._ready.is_set() and idl.has_ever_connected():
                self._ready.set()
            return
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
        idl = self._idl
        assert idl is not None and idl.builder is not None
        if not self._connected:
            raise StoreUnavailable(f"northbound store {self.remote} is not connected")
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
        status = self._commit(txn, job.deadline)
        if status == txn.UNCHANGED:
            return self._generation
        if status != txn.SUCCESS:
            if status == txn.ERROR:
                raise from_ovsdb_error(txn.get_error())
            raise StoreUnavailable(
                f"commit failed ({txn.get_error()}); connection to {self.remote} lost, "
                "outcome unknown"
            )
        self._await_visible(helper, job.deadline)
        self._publish()
        return self._generation

    def _commit(self, txn: Any, deadline: float) -> Any:
        idl = self._idl
        assert idl is not None
        while True:
            status = txn.commit()
            if status != txn.INCOMPLETE:
                return status
            if time.monotonic() > deadline:
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


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
