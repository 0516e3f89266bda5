"""An ovsdb-server of Loom's own, run as a child process on a state directory.

The northbound store is an OVSDB database so that referential integrity, uniqueness
and atomic multi-row writes are enforced by a battle-tested server rather than by
our code, and so that a 3-member raft cluster can replace this one process for HA
without changing the client side. Everything (db file, socket, pidfile, log, control
socket) lives in `state_dir`, so it never touches the system's OVS instance.

`Supervisor` (from `EmbeddedOvsdb.watch()`) keeps that server running: when it dies it
is started again on the same files, a bounded number of times, and what happened is
reported through `status()` / `problem()` for /v1/health.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

from controller.store.errors import EmbeddedDbError

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "loom_nb.ovsschema"
OVSDB_SERVER = "/usr/sbin/ovsdb-server"
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_BYTES = 64 * 1024


def iso_time(wall: float) -> str:
    """A wall-clock time as operators read it in logs: UTC, milliseconds, `Z`."""
    stamp = datetime.fromtimestamp(wall, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def describe_exit(returncode: int) -> str:
    """`killed by SIGKILL`, `exited with status 1`: how a child process ended, in words."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _die_with_parent() -> None:
    """Runs in the child before exec: if the controller dies, the server follows.

    Without it a SIGKILLed controller leaves a server holding the db lock, and the
    next start fails with "already running". (Linux ties this to the thread that
    forked: start the server from a long-lived thread, normally the main one; the
    `Supervisor` thread, which forks every restart, lives as long as the process.)
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _run_tool(*args: str) -> str:
    tool = shutil.which("ovsdb-tool") or "/usr/bin/ovsdb-tool"
    try:
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise EmbeddedDbError(f"ovsdb-tool not found ({exc}); install openvswitch-common") from exc
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise EmbeddedDbError(
            f"ovsdb-tool {args[0]} failed: {reason[-1] if reason else done.returncode}"
        )
    return done.stdout.strip()


class EmbeddedOvsdb:
    """Creates (or converts) `state_dir/nb.db` and serves it on `state_dir/nb.sock`.

    `start()` creates/converts the db and starts the server (a child process, not
    detached); `stop()` is idempotent. Usable as a context manager.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        schema: Path = SCHEMA_PATH,
        server: str = OVSDB_SERVER,
        start_timeout: float = 10.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.schema = Path(schema)
        self.db_path = self.state_dir / "nb.db"
        self.socket_path = self.state_dir / "nb.sock"
        self.pidfile = self.state_dir / "nb.pid"
        self.log_path = self.state_dir / "nb.log"
        self.ctl_path = self.state_dir / "nb.ctl"
        self._stderr_path = self.state_dir / "nb.stderr"
        self._server = server
        self._start_timeout = start_timeout
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._started_at: Optional[float] = None  # monotonic, last successful start
        self._log_offset = 0  # size of nb.log when the current server was started

    def start(self) -> EmbeddedOvsdb:
        """Create or convert the db, start the server, return once it accepts connections.

        Raises `EmbeddedDbError` with a one-line reason if any step fails.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._prepare_db()
        self._start(self._start_timeout)
        return self

    @property
    def remote(self) -> str:
        """The OVSDB remote clients connect to, e.g. `unix:/var/lib/loom/nb.sock`."""
        return f"unix:{self.socket_path}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> Optional[subprocess.Popen[bytes]]:
        """The server's process as last started (it may have exited since), or None if stopped."""
        return self._proc

    def uptime(self) -> float:
        """Seconds since the server last started successfully (0 if it never did)."""
        return 0.0 if self._started_at is None else time.monotonic() - self._started_at

    def restart(self) -> None:
        """Start the server again on the existing db after it died; EmbeddedDbError if it can't.

        Unlike `start()` it never creates a database: a missing nb.db after a crash is
        a fault to report, not something to paper over with an empty database. What
        a SIGKILLed server leaves behind is harmless: its pidfile names a dead pid
        (`_running_pid` sees that), the sockets are unlinked before binding, and the
        db lock is an fcntl lock the kernel released with the process.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                return
            self._proc = None  # reaped: its pid can no longer look alive
        if not self.db_path.is_file():
            raise EmbeddedDbError(f"database {self.db_path} is gone; not creating an empty one")
        self._start(self._start_timeout)

    def watch(self, policy: Optional[RestartPolicy] = None) -> Supervisor:
        """Start supervising this (running) server: see `Supervisor`."""
        return Supervisor(self, policy or RestartPolicy()).start()

    def last_words(self) -> str:
        """The line that best says why the current (or last) server stopped or failed."""
        return self._failure_reason()

    def _prepare_db(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedDbError(
                f"cannot create state dir {self.state_dir}: {exc.strerror}"
            ) from exc
        if not self.schema.is_file():
            raise EmbeddedDbError(f"schema file missing: {self.schema}")
        if not self.db_path.exists():
            _run_tool("create", str(self.db_path), str(self.schema))
            return
        if _run_tool("needs-conversion", str(self.db_path), str(self.schema)) == "yes":
            old = _run_tool("db-version", str(self.db_path))
            shutil.copy2(self.db_path, self.db_path.with_name(f"nb.db.backup-{old}"))
            _run_tool("convert", str(self.db_path), str(self.schema))

    def _running_pid(self) -> Optional[int]:
        """The pid of a live ovsdb-server named by the pidfile, None if the pidfile is stale.

        A SIGKILLed server leaves its pidfile behind; by the time we restart, that pid
        may belong to an unrelated process (or be a zombie), so it counts only if
        /proc says it runs our server binary.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid  # cannot tell: assume it is one, refusing is the safe side
        return pid if os.path.basename(self._server).encode() in cmdline else None

    def _start(self, timeout: float) -> None:
        if not os.access(self._server, os.X_OK):
            raise EmbeddedDbError(
                f"{self._server} not found or not executable; install openvswitch-switch"
            )
        other = self._running_pid()
        if other is not None:
            raise EmbeddedDbError(
                f"an ovsdb-server (pid {other}) already serves {self.state_dir}; "
                "stop it or use another state dir"
            )
        self.socket_path.unlink(missing_ok=True)
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0
        cmd = [
            self._server,
            str(self.db_path),
            f"--remote=punix:{self.socket_path}",
            f"--pidfile={self.pidfile}",
            f"--log-file={self.log_path}",
            f"--unixctl={self.ctl_path}",
            "-vconsole:off",
        ]
        with open(self._stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_die_with_parent,
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                reason = self._failure_reason()
                self._proc = None
                raise EmbeddedDbError(f"ovsdb-server exited at start: {reason}")
            if self._accepts():
                self._started_at = time.monotonic()
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedDbError(
            f"ovsdb-server did not open {self.socket_path} within {timeout:g}s: "
            f"{self._failure_reason()}"
        )

    def _accepts(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def _failure_reason(self) -> str:
        """The last error line (else the last line) the current server wrote.

        nb.log is appended to across restarts, so only what this server wrote counts
        (from the offset noted at its start); stderr is truncated at each start.
        """
        lines: list[str] = []
        for path, offset in ((self._stderr_path, 0), (self.log_path, self._log_offset)):
            try:
                with open(path, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(offset, size - _LOG_TAIL_BYTES))
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            lines += [ln for ln in text.splitlines() if ln.strip()]
        bad = [ln for ln in lines if "|ERR|" in ln or "|EMER|" in ln or "ovsdb-server:" in ln]
        return (bad or lines or ["no output"])[-1].strip()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminates the server (SIGTERM, then SIGKILL) and waits for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> EmbeddedOvsdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead embedded server is started again, and when to stop trying.

    The first restart is immediate: a lone crash (OOM kill, stray `kill -9`) should
    cost writes a fraction of a second, and the db is on local disk, so there is
    nothing to wait for. Each further attempt in the same run of trouble waits twice
    as long (0.5 s, 1 s, 2 s, 4 s, 8 s) so a server that dies at once does not spin a
    CPU or flood the log. After `max_attempts` (six: about 15 s of trying) the cause
    is persistent (corrupt or deleted db, full disk, removed binary) and needs an
    operator: the supervisor stops and /v1/health names the server's last log line.
    An attempt counts against the budget until its server has run `stable_after`
    seconds; a server that survives that long starts the next crash with a full budget.
    """

    max_attempts: int = 6
    first_delay: float = 0.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    stable_after: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1-based) of a run of failures."""
        if attempt <= 1:
            return self.first_delay
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 2))


class Supervisor:
    """Keeps one `EmbeddedOvsdb` running: restarts it on the same files when it dies.

    One daemon thread waits for the server to exit and forks every replacement
    itself. It must live as long as the process: PR_SET_PDEATHSIG ties a child to
    the *thread* that forked it, so a replacement forked by a short-lived thread
    would be SIGTERMed when that thread ended, and one forked by a thread that
    outlives the process would survive a SIGKILLed controller. The thread ends only
    in `stop()` or after giving up, and at both points no server it forked runs.
    """

    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"

    def __init__(
        self, server: EmbeddedOvsdb, policy: RestartPolicy, *, poll_interval: float = 0.1
    ) -> None:
        self.server = server
        self.policy = policy
        self._poll = poll_interval
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() never interleave
        self._thread: Optional[threading.Thread] = None
        self._state = self.RUNNING
        self._restarts = 0
        self._attempt = 0
        self._last_exit: Optional[str] = None
        self._last_exit_at: Optional[float] = None
        self._last_error: Optional[str] = None

    def start(self) -> Supervisor:
        if self._thread is not None:
            return self
        proc = self.server.process
        if proc is None or proc.poll() is not None:
            raise EmbeddedDbError("cannot supervise an ovsdb-server that is not running")
        self._thread = threading.Thread(
            target=self._run, name="loom-nb-supervisor", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop supervising, then stop the server (after any restart in progress ends)."""
        self._stopping.set()
        with self._lock:
            self._state = self.STOPPED
            self.server.stop()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- reporting ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What /v1/health shows under store.server."""
        return {
            "state": self._state,
            "pid": self.server.pid if self._state == self.RUNNING else None,
            "restarts": self._restarts,
            "attempt": self._attempt if self._state == self.RESTARTING else None,
            "max_attempts": self.policy.max_attempts,
            "last_exit": self._last_exit,
            "last_exit_at": None if self._last_exit_at is None else iso_time(self._last_exit_at),
            "last_error": self._last_error,
        }

    def problem(self) -> Optional[str]:
        """Why the server is not serving right now, or None while it runs."""
        state = self._state
        if state == self.RESTARTING:
            text = f"embedded {self._last_exit}; restarting it (attempt {self._attempt}/" \
                   f"{self.policy.max_attempts})"
            if self._last_error is not None:
                text += f", previous attempt failed: {self._last_error}"
            return text
        if state == self.FAILED:
            return (
                f"embedded ovsdb-server gave up after {self.policy.max_attempts} restart "
                f"attempts: {self._last_error or self._last_exit}"
            )
        return None

    # -- supervisor thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            self._supervise()
        except Exception as exc:  # never die silently: health would say "running" forever
            log.exception("northbound store: supervisor crashed")
            self._last_error = f"supervisor crashed: {exc}"
            self._set_state(self.FAILED)

    def _supervise(self) -> None:
        failures = 0  # attempts in the current run of trouble
        while True:
            proc = self.server.process
            code = None if proc is None else self._wait_exit(proc)
            if proc is None or code is None:
                return  # stop() is under way: nothing to restart
            if self.server.process is not proc:
                self._set_state(self.STOPPED)  # EmbeddedOvsdb.stop() called directly: meant
                return
            if self.server.uptime() >= self.policy.stable_after:
                failures = 0
            self._last_exit = (
                f"ovsdb-server (pid {proc.pid}) {describe_exit(code)}; "
                f"last log line: {self.server.last_words()}"
            )
            self._last_exit_at = time.time()
            self._last_error = None
            log.error("northbound store: %s", self._last_exit)
            failures = self._restart(failures)
            if failures < 0:
                return

    def _set_state(self, state: str) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._state = state

    def _wait_exit(self, proc: subprocess.Popen[bytes]) -> Optional[int]:
        """The server's exit status once it exits; None as soon as stop() is called."""
        while not self._stopping.is_set():
            try:
                return proc.wait(self._poll)
            except subprocess.TimeoutExpired:
                continue
        return None

    def _restart(self, failures: int) -> int:
        """Attempt restarts until one works (returns the attempts used) or -1 (gave up/stopped)."""
        while True:
            failures += 1
            if failures > self.policy.max_attempts:
                self._set_state(self.FAILED)
                log.error("northbound store: %s; not trying again", self.problem())
                return -1
            self._attempt = failures
            self._set_state(self.RESTARTING)
            delay = self.policy.delay(failures)
            log.warning(
                "northbound store: restarting ovsdb-server on %s, attempt %d/%d in %.2gs",
                self.server.db_path, failures, self.policy.max_attempts, delay,
            )
            if self._stopping.wait(delay):
                return -1
            try:
                with self._lock:
                    if self._stopping.is_set():
                        return -1
                    self.server.restart()
                    self._restarts += 1
                    self._state = self.RUNNING
            except (EmbeddedDbError, OSError) as exc:  # OSError: the fork itself failed
                self._last_error = str(exc)
                log.error(
                    "northbound store: restart attempt %d/%d failed: %s",
                    failures, self.policy.max_attempts, exc,
                )
                continue
            log.warning(
                "northbound store: restart attempt %d/%d succeeded, ovsdb-server pid %s",
                failures, self.policy.max_attempts, self.server.pid,
            )
            return failures
