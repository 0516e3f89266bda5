"""Run the Loom controller as a child process, as an operator would run it.

Tests and the lab start the real `python -m controller` (never an in-process
object), so what they prove is what `sudo make demo` runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from topologies.api_client import ApiClient

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ControllerProcess:
    def __init__(self, state_dir: Path, chassis: list[str], of_host: str = "127.0.0.1",
                 of_target_host: Optional[str] = None, rest_port: Optional[int] = None,
                 of_port: Optional[int] = None, extra_args: tuple[str, ...] = (),
                 log_path: Optional[Path] = None) -> None:
        self.state_dir = Path(state_dir)
        self.chassis = list(chassis)
        self.of_host = of_host
        self.of_port = of_port or free_port()
        self.rest_port = rest_port or free_port()
        self.of_target = f"tcp:{of_target_host or of_host}:{self.of_port}"
        self.extra_args = extra_args
        self.log_path = log_path or self.state_dir / "controller.log"
        self.proc: Optional[subprocess.Popen] = None
        self.api = ApiClient(f"http://127.0.0.1:{self.rest_port}")

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "controller",
                "--state-dir", str(self.state_dir),
                "--rest-listen", f"127.0.0.1:{self.rest_port}",
                "--of-listen", f"{self.of_host}:{self.of_port}",
                "--of-target", self.of_target, "--log-level", "DEBUG",
                *self.extra_args]
        for remote in self.chassis:
            argv += ["--chassis", remote]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.api.get("/v1/health").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"controller not healthy in {timeout}s: {self.log_tail()}")

    def wait_switches(self, n: int, timeout: float = 30.0) -> list[dict]:
        """Wait until n switches are connected and have taken their desired state."""
        deadline = time.monotonic() + timeout
        switches: list[dict] = []
        while time.monotonic() < deadline:
            resp = self.api.get("/v1/switches")
            if resp.status == 200:
                switches = resp.body.get("switches", resp.body) if isinstance(resp.body, dict) \
                    else resp.body
                ready = [s for s in switches
                         if s.get("connected") and s.get("synced_generation") is not None]
                if len(ready) >= n:
                    return ready
            time.sleep(0.1)
        raise TimeoutError(f"{n} switches not synced in {timeout}s: {switches}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
