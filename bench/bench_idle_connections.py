"""Idle and slow crowds against the REST server: does a new client still get in, and how fast?

For each server configuration and each crowd, a fresh server process (the real
app with tokens, over its own embedded ovsdb-server; only the HTTP server
differs) and a fresh crowd process:

  server   new: Loom's server (controller/rest/server.py: per-peer cap, making
                room, request deadline, poll loop, raised open-files limit)
           old: waitress.create_server with the settings Loom used before (its
                defaults: connection_limit 100, channel_timeout 120, select loop)
  crowd    none
           idle, N peers:  N connections, each from its own loopback address, never sending
           idle, 1 peer:   N connections from 127.0.0.2, reopened as the server closes them
           slow, N peers:  N connections sending a request one byte per second
           slow, 1 peer:   the same from 127.0.0.2, reopened as the server closes them

Once the crowd is in (the server's accept queue drained, or 5 s passed) and the
slow ones have trickled twice, a client on 127.0.0.1 alternates `GET /v1/health`
(member token) and `POST /v2.0/networks` (admin token), each on a new connection
(a client arriving now), one at a time; wall time per request, client side.
A request without an answer in --timeout s is a failure; after 3 failures in a
row the rest of that crowd's requests are skipped.

    .venv/bin/python -m bench.bench_idle_connections [--crowd 1000] [--requests 200]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

from topologies.client_load import (
    Crowd,
    loopback_sources,
    raise_open_files,
    request,
    wait_accept_queue_drained,
)

ROOT = Path(__file__).resolve().parent.parent
ADMIN, MEMBER = "bench-admin-token", "bench-member-token"
CROWDS = ("none", "idle, N peers", "idle, 1 peer", "slow, N peers", "slow, 1 peer")
MAX_FAILURES_IN_A_ROW = 3


# -- the server process ------------------------------------------------------------


def serve_forever(kind: str, state_dir: Path, port_file: Path) -> None:
    """The real app (tokens on) over an embedded ovsdb-server, behind `kind` of server."""
    from controller.rest import make_app
    from controller.rest.auth import Principal, TokenAuth
    from controller.runtime import Detached
    from controller.store import EmbeddedOvsdb, NorthboundStore

    db = EmbeddedOvsdb(state_dir).start()
    store = NorthboundStore(db.remote).connect(10)
    auth = TokenAuth({ADMIN: Principal("ops", "admin"), MEMBER: Principal("p1", "member")})
    app = make_app(store, Detached(), auth)
    server = _new_server(app) if kind == "new" else _old_server(app)

    def stop(*_: Any) -> None:
        db.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=_report_open, args=(server, port_file.with_name("open")),
                     daemon=True).start()
    port_file.write_text(str(server.effective_port))
    server.run()


def _report_open(server: Any, path: Path) -> None:
    """Every 50 ms, how many connections the server holds (evicted ones not counted),
    for the parent to read: the old server cannot be asked over HTTP once locked out."""
    while True:
        held = len(server.active_channels) - len(getattr(server, "doomed", ()))
        path.with_suffix(".tmp").write_text(str(held))
        path.with_suffix(".tmp").replace(path)
        time.sleep(0.05)


def _new_server(app: Any) -> Any:
    from controller.rest.server import make_server, raise_nofile_limit

    raise_nofile_limit()  # as the launcher does
    return make_server(app, "127.0.0.1", 0)


def _old_server(app: Any) -> Any:
    """controller/rest/server.py's make_server before this change, verbatim settings."""
    from waitress.server import create_server

    return create_server(app, host="127.0.0.1", port=0, threads=8,
                         clear_untrusted_proxy_headers=True, ident="loom")


class ServerProcess:
    def __init__(self, kind: str) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="loom-bench-conn-"))
        port_file = self.state / "port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_idle_connections", "--serve", kind,
             "--state-dir", str(self.state / "db"), "--port-file", str(port_file)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.open_file = port_file.with_name("open")

    def held(self) -> int:
        """Connections the server holds, as it last reported (every 50 ms)."""
        time.sleep(0.1)
        return int(self.open_file.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.state, ignore_errors=True)


# -- the crowd process -------------------------------------------------------------


def crowd_process(port: int, crowd: str, size: int, pipe: Connection) -> None:
    """Own process, so the crowd's sockets and thread do not slow the measuring client."""
    raise_open_files(size + 256)
    slow = crowd.startswith("slow")
    one_peer = crowd.endswith("1 peer")
    sources = ["127.0.0.2"] if one_peer else loopback_sources(size, first=1)
    mob = Crowd(port, sources, slow=slow, replace=one_peer, connect_timeout=5)
    try:
        mob.grow(size)
    except OSError as exc:  # the kernel's queue is full: the server stopped accepting
        pipe.send({"error": f"{mob.held} connected, then {exc}"})
    mob.start()
    drained = wait_accept_queue_drained(port, timeout=5)
    mob.wait_rounds(2)
    pipe.send({"drained": drained})
    pipe.recv()  # stop
    pipe.send({"closed": mob.closed_by_server})
    mob.close()


@dataclass
class Run:
    server: str
    crowd: str
    health: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)
    failed: int = 0
    attempted: int = 0
    held: int = 0
    closed: int = 0
    note: str = ""


def measure(server: str, crowd: str, size: int, n: int, timeout: float) -> Run:
    run = Run(server, crowd)
    srv = ServerProcess(server)
    mob: Optional[mp.Process] = None
    ours: Optional[Connection] = None
    try:
        if crowd != "none":
            ours, theirs = mp.Pipe()
            mob = mp.Process(target=crowd_process, args=(srv.port, crowd, size, theirs))
            mob.start()
            ready = ours.recv()
            if "error" in ready:
                run.note = ready["error"]
                ready = ours.recv()
            run.held = srv.held()
            if not ready["drained"]:
                run.note = (run.note + "; " if run.note else "") + "accept queue never drained"
        _requests(run, srv.port, n, timeout)
        if ours is not None:
            ours.send("stop")
            done = ours.recv()
            run.closed = done["closed"]
        return run
    finally:
        if mob is not None:
            mob.join(10)
            if mob.is_alive():
                mob.kill()
        srv.stop()


def _requests(run: Run, port: int, n: int, timeout: float) -> None:
    in_a_row = 0
    for i in range(2 * n):
        run.attempted += 1
        try:
            if i % 2 == 0:
                answer = request(port, "GET", "/v1/health", token=MEMBER, timeout=timeout)
                ok, into = answer.status == 200, run.health
            else:
                answer = request(port, "POST", "/v2.0/networks",
                                 {"network": {"name": f"n{i}"}}, token=ADMIN, timeout=timeout)
                ok, into = answer.status == 201, run.write
        except OSError:
            ok = False
        if ok:
            into.append(answer.seconds)
            in_a_row = 0
            continue
        run.failed += 1
        in_a_row += 1
        if in_a_row >= MAX_FAILURES_IN_A_ROW:
            return


# -- report ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.1f}" if values else f"{'-':>7}"


def report(runs: list[Run], size: int, timeout: float) -> None:
    print(f"{'server':6} {'crowd (N=' + str(size) + ')':16} {'held':>5} {'closed':>7} "
          f"{'health p50':>10} {'p99':>7} {'write p50':>9} {'p99':>7}  answered")
    for r in runs:
        answered = len(r.health) + len(r.write)
        line = (f"{r.server:6} {r.crowd:16} {r.held:5} {r.closed:7} "
                f"{_ms(r.health, 50):>10} {_ms(r.health, 99)} {_ms(r.write, 50):>9} "
                f"{_ms(r.write, 99)}  {answered}/{r.attempted}")
        if r.failed:
            line += f" ({r.failed} without an answer in {timeout:g} s)"
        if r.note:
            line += f" [{r.note}]"
        print(line, flush=True)
    print("ms: client wall time per request, each on a new connection. held: connections "
          "the server held once the crowd was in (as it reports them); closed: crowd "
          "connections the server closed during the run (1-peer crowds reopen each one)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crowd", type=int, default=1000, help="connections per crowd")
    parser.add_argument("--requests", type=int, default=200,
                        help="health checks and as many writes per crowd")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--servers", nargs="+", default=["new", "old"], choices=["new", "old"])
    parser.add_argument("--serve", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_forever(args.serve, args.state_dir, args.port_file)
        return 0
    raise_open_files(4 * args.crowd + 512)
    started = time.monotonic()
    runs = []
    for server in args.servers:
        for crowd in CROWDS:
            runs.append(measure(server, crowd, args.crowd, args.requests, args.timeout))
    print(f"command: .venv/bin/python -m bench.bench_idle_connections --crowd {args.crowd} "
          f"--requests {args.requests} --timeout {args.timeout:g} "
          f"--servers {' '.join(args.servers)}")
    report(runs, args.crowd, args.timeout)
    print(f"total run {time.monotonic() - started:.0f} s; {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
