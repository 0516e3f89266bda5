"""Run `ovs-appctl ofproto/trace` against a chassis' ovs-vswitchd.

ofproto/trace is a unixctl command: it needs ovs-vswitchd's control socket, a unix
socket file on the chassis itself. Loom reaches a chassis through its OVSDB remote;
for a `unix:/dir/db.sock` remote the control socket is beside it, as OVS lays out
its run directory: `/dir/ovs-vswitchd.<pid>.ctl`, the pid read from
`/dir/ovs-vswitchd.pid` (or `/dir/ovs-vswitchd.ctl` when the daemon was started
with `--unixctl` naming that). A daemon in another network namespace is fine: unix
sockets are files. A chassis reached over tcp: or ssl: has no control socket the
controller can open, and tracing it is refused (TraceUnsupported).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

DEFAULT_TIMEOUT = 5.0
CT_NEXT_REPEAT = 8  # one --ct-next per conntrack lookup; more than a trace ever makes


class TraceUnsupported(Exception):
    """The chassis cannot be traced from here (not a local unix remote)."""


class TraceUnavailable(Exception):
    """The chassis should be traceable but is not right now (no daemon, timeout, error)."""


def control_socket(remote: str) -> Path:
    """ovs-vswitchd's unixctl socket for a chassis reached at OVSDB `remote`."""
    if not remote.startswith("unix:"):
        raise TraceUnsupported(
            f"chassis OVSDB remote {remote} is not a local unix socket: ofproto/trace needs "
            "ovs-vswitchd's control socket, which the controller can only open on its own "
            "host (see the /v1/trace limits)")
    rundir = Path(remote[len("unix:"):]).parent
    pidfile = rundir / "ovs-vswitchd.pid"
    candidates: list[Path] = []
    try:
        pid = int(pidfile.read_text().strip())
        candidates.append(rundir / f"ovs-vswitchd.{pid}.ctl")
    except (OSError, ValueError):
        pid = None
    candidates.append(rundir / "ovs-vswitchd.ctl")
    for path in candidates:
        if path.exists():
            return path
    raise TraceUnavailable(
        f"no ovs-vswitchd control socket in {rundir} (pidfile {pidfile}: "
        f"{'pid ' + str(pid) if pid is not None else 'unreadable'}): is ovs-vswitchd running?")


def appctl_binary() -> str:
    found = shutil.which("ovs-appctl")
    if found is None:
        raise TraceUnavailable("ovs-appctl is not installed on the controller's host")
    return found


def ofproto_trace_argv(socket: Path, bridge: str, flow: str, ct_next: Optional[str],
                       timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    argv = [appctl_binary(), "-t", str(socket), f"--timeout={max(1, int(timeout))}",
            "ofproto/trace", bridge, flow]
    if ct_next:
        for _ in range(CT_NEXT_REPEAT):
            argv += ["--ct-next", ct_next]
    return argv


def run_trace(socket: Path, bridge: str, flow: str, ct_next: Optional[str] = "trk,new",
              timeout: float = DEFAULT_TIMEOUT) -> str:
    """The text of `ovs-appctl -t SOCKET ofproto/trace BRIDGE FLOW --ct-next ...`."""
    argv = ofproto_trace_argv(socket, bridge, flow, ct_next, timeout)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 2,
                              env={**os.environ, "LC_ALL": "C"}, check=False)
    except subprocess.TimeoutExpired:
        raise TraceUnavailable(f"ofproto/trace on {socket} timed out after {timeout:g}s") \
            from None
    except OSError as exc:
        raise TraceUnavailable(f"cannot run ovs-appctl: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise TraceUnavailable(f"ofproto/trace on {socket} failed: "
                               f"{'; '.join(detail) or 'exit ' + str(proc.returncode)}")
    return proc.stdout


class Runner:
    """The I/O the tracer needs, in one replaceable object (tests give a fake)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    def socket_for(self, remote: str) -> Path:
        return control_socket(remote)

    def trace(self, socket: Path, bridge: str, flow: str, ct_next: Optional[str]) -> str:
        return run_trace(socket, bridge, flow, ct_next, self.timeout)


__all__: Sequence[str] = ("Runner", "TraceUnavailable", "TraceUnsupported", "control_socket",
                          "run_trace")
