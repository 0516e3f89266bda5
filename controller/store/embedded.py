"""An ovsdb-server of Loom's own, run as a child process on a state directory.

The northbound store is an OVSDB database so that referential integrity, uniqueness
and atomic multi-row writes are enforced by a battle-tested server rather than by
our code, and so that a 3-member raft cluster can replace this one process for HA
without changing the client side. Everything (db file, socket, pidfile, log, control
socket) lives in `state_dir`, so it never touches the system's OVS instance.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from controller.store.errors import EmbeddedDbError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "loom_nb.ovsschema"
OVSDB_SERVER = "/usr/sbin/ovsdb-server"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: if the controller dies, the server follows.

    Without it a SIGKILLed controller leaves a server holding the db lock, and the
    next start fails with "already running". (Linux ties this to the thread that
    forked: start the server from a long-lived thread, normally the main one.)
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
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

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
        lines: list[str] = []
        for path in (self._stderr_path, self.log_path):
            try:
                lines += [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                pass
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
