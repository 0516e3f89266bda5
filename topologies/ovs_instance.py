"""A private Open vSwitch instance: its own ovsdb-server and ovs-vswitchd.

Each instance keeps its database, sockets, pidfiles and logs under its own workdir
(``OVS_RUNDIR``/``OVS_DBDIR``/``OVS_LOGDIR``/``OVS_SYSCONFDIR`` all point there) and,
when `netns` is set, runs both daemons inside that network namespace: a netdev
bridge creates a tap device named after the bridge, so two instances with a
``br-int`` each must live in different namespaces. The system's default OVS
instance (/var/run/openvswitch) is never used: every command here names this
instance's own sockets explicitly.

Layout of a workdir::

    run/   db.sock, ovsdb-server.ctl, ovs-vswitchd.ctl, <bridge>.mgmt, pidfiles
    db/    conf.db
    log/   ovsdb-server.log, ovs-vswitchd.log, *.console (stdout/stderr of daemons)
    etc/
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from topologies import netns as nsutil
from topologies.netns import CommandError, Sandbox

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
DEFAULT_BASE = Path(os.environ.get("LOOM_SANDBOX_DIR", "/tmp/loom-sandbox"))
_UNIX_PATH_MAX = 107


class OvsInstance:
    """One private OVS (ovsdb-server + ovs-vswitchd, userspace datapath).

    `netns`: name of an existing namespace to run the daemons in (None: root namespace).
    `workdir`: where db, sockets and logs go (default: a fresh dir under
    /tmp/loom-sandbox). `sandbox`: records the daemons and the management link for
    cleanup; one is made if not given.
    """

    def __init__(
        self,
        name: str,
        netns: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        *,
        sandbox: Sandbox | None = None,
        system_id: str | None = None,
    ):
        self.name = name
        self.netns = netns
        self._own_sandbox = sandbox is None
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self._own_workdir = workdir is None
        if workdir is None:
            DEFAULT_BASE.mkdir(parents=True, exist_ok=True)
            workdir = tempfile.mkdtemp(prefix=f"{self.sandbox.prefix}-{name}-", dir=DEFAULT_BASE)
        self.workdir = Path(workdir).absolute()
        self.rundir = self.workdir / "run"
        self.dbdir = self.workdir / "db"
        self.logdir = self.workdir / "log"
        self.sysconfdir = self.workdir / "etc"
        self.db_path = self.dbdir / "conf.db"
        self.db_sock = self.rundir / "db.sock"
        self.ovsdb_ctl = self.rundir / "ovsdb-server.ctl"
        self.vswitchd_ctl = self.rundir / "ovs-vswitchd.ctl"
        self.ovsdb_log = self.logdir / "ovsdb-server.log"
        self.vswitchd_log = self.logdir / "ovs-vswitchd.log"
        self.system_id = system_id or name
        self._ovsdb: subprocess.Popen[bytes] | None = None
        self._vswitchd: subprocess.Popen[bytes] | None = None
        self.mgmt: tuple[str, str, str] | None = None  # (host_ip, ns_ip, host ifname)
        longest = self.rundir / ("x" * 15 + ".mgmt")
        if len(str(longest)) > _UNIX_PATH_MAX:
            raise ValueError(f"workdir {self.workdir} too long for unix socket paths")

    # -- environment & paths ------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            OVS_RUNDIR=str(self.rundir),
            OVS_DBDIR=str(self.dbdir),
            OVS_LOGDIR=str(self.logdir),
            OVS_SYSCONFDIR=str(self.sysconfdir),
        )
        return env

    @property
    def db_remote(self) -> str:
        """OVSDB remote of this instance, e.g. ``unix:/tmp/loom-sandbox/hv1-x/run/db.sock``."""
        return f"unix:{self.db_sock}"

    def mgmt_socket(self, bridge: str) -> Path:
        return self.rundir / f"{bridge}.mgmt"

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> OvsInstance:
        """Create the db if needed, start ovsdb-server and ovs-vswitchd, wait until ready."""
        for d in (self.rundir, self.dbdir, self.logdir, self.sysconfdir):
            d.mkdir(parents=True, exist_ok=True)
        if not self.db_path.exists():
            nsutil.run(["ovsdb-tool", "create", str(self.db_path), str(SCHEMA)], env=self.env)
        self.start_ovsdb(timeout)
        self.vsctl("--no-wait", "init")
        self.vsctl(
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            f"external_ids:system-id={self.system_id}",
            f"external_ids:hostname={self.system_id}",
        )
        self.start_vswitchd(timeout)
        return self

    def start_ovsdb(self, timeout: float = 15.0) -> None:
        if self.ovsdb_running:
            return
        argv = [
            "ovsdb-server",
            str(self.db_path),
            f"--remote=punix:{self.db_sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--pidfile={self.rundir / 'ovsdb-server.pid'}",
            f"--log-file={self.ovsdb_log}",
            f"--unixctl={self.ovsdb_ctl}",
            "--no-chdir",
        ]
        self._ovsdb = self._spawn(argv, "ovsdb-server")
        self._wait(lambda: _unix_connectable(self.db_sock), timeout, self._ovsdb, "ovsdb-server")

    def start_vswitchd(self, timeout: float = 15.0) -> None:
        """Start ovs-vswitchd (again, after `kill_vswitchd`) and wait until it has
        applied the database (bridges and their ports are back)."""
        if self.vswitchd_running:
            return
        argv = [
            "ovs-vswitchd",
            self.db_remote,
            f"--pidfile={self.rundir / 'ovs-vswitchd.pid'}",
            f"--log-file={self.vswitchd_log}",
            f"--unixctl={self.vswitchd_ctl}",
            "--no-chdir",
            "--disable-system",  # userspace (netdev) datapath only
        ]
        self._vswitchd = self._spawn(argv, "ovs-vswitchd")
        proc = self._vswitchd

        def ready() -> bool:
            return self.appctl_ok("version")

        self._wait(ready, timeout, proc, "ovs-vswitchd")
        self.sync(timeout)

    def sync(self, timeout: float = 10.0) -> None:
        """Return once ovs-vswitchd has applied the database as it is now.

        Bumps `next_cfg` (what ovs-vsctl does on every write) and waits for
        ovs-vswitchd to report it back in `cur_cfg`.
        """
        target = int(self.vsctl("get", "Open_vSwitch", ".", "next_cfg")) + 1
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".", f"next_cfg={target}")
        self.vsctl("wait-until", "Open_vSwitch", ".", f"cur_cfg>={target}", timeout=timeout)

    def kill_vswitchd(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Kill ovs-vswitchd (SIGKILL by default, like a crash); the db stays up."""
        self._kill(self._vswitchd, sig, timeout)
        self._vswitchd = None

    def stop_ovsdb(self, timeout: float = 5.0) -> None:
        self._kill(self._ovsdb, signal.SIGTERM, timeout)
        self._ovsdb = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both daemons. The db file stays: start() again works.

        ovs-vswitchd leaves with ``exit --cleanup``, which deletes the datapath's tap
        devices (``ovs-netdev`` and one per bridge): they are persistent and would
        otherwise outlive the process, which matters in the root namespace. Falls back
        to SIGTERM, then SIGKILL.
        """
        if self.vswitchd_running:
            try:
                self.appctl("exit", "--cleanup", timeout=timeout)
                if self._vswitchd is not None:
                    self._vswitchd.wait(timeout)
            except (CommandError, subprocess.TimeoutExpired):
                pass
        self._kill(self._vswitchd, signal.SIGTERM, timeout)
        self._vswitchd = None
        self.stop_ovsdb(timeout)

    def close(self, remove_workdir: bool = False) -> None:
        """Stop, remove the management link, and (if asked) the workdir."""
        self.stop()
        if self.mgmt is not None:
            self.sandbox.delete_link(self.mgmt[2])
            self.mgmt = None
        if self._own_sandbox:
            self.sandbox.cleanup()
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OvsInstance:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # Keep an auto-made workdir (logs, db) only when leaving on an exception.
        self.close(remove_workdir=self._own_workdir and exc_type is None)

    @property
    def vswitchd_pid(self) -> int | None:
        return self._vswitchd.pid if self.vswitchd_running and self._vswitchd else None

    @property
    def vswitchd_running(self) -> bool:
        return self._vswitchd is not None and self._vswitchd.poll() is None

    @property
    def ovsdb_running(self) -> bool:
        return self._ovsdb is not None and self._ovsdb.poll() is None

    # -- commands -----------------------------------------------------------------
    def vsctl(self, *args: str, timeout: float = 10.0) -> str:
        """`ovs-vsctl --db=unix:<sock> ARGS`; adds --no-wait while ovs-vswitchd is down."""
        argv = ["ovs-vsctl", f"--db={self.db_remote}", f"--timeout={max(1, int(timeout))}"]
        if not self.vswitchd_running and "--no-wait" not in args:
            argv.append("--no-wait")
        argv += args
        return nsutil.run(argv, env=self.env, timeout=timeout + 5).stdout.strip()

    def ofctl(self, *args: str, timeout: float = 10.0) -> str:
        """`ovs-ofctl -O OpenFlow13 [OPTIONS] COMMAND BRIDGE [ARGS]` over the bridge's
        mgmt socket. Leading args starting with '-' are options; a BRIDGE without ':'
        is turned into ``unix:<rundir>/<bridge>.mgmt``."""
        opts: list[str] = []
        rest = list(args)
        while rest and rest[0].startswith("-"):
            opts.append(rest.pop(0))
        if not any(o.startswith(("-O", "--protocols")) for o in opts):
            opts = ["-O", "OpenFlow13", *opts]
        if len(rest) >= 2 and ":" not in rest[1]:
            rest[1] = f"unix:{self.mgmt_socket(rest[1])}"
        argv = ["ovs-ofctl", f"--timeout={max(1, int(timeout))}", *opts, *rest]
        return nsutil.run(argv, env=self.env, timeout=timeout + 5).stdout

    def appctl(self, *args: str, timeout: float = 10.0) -> str:
        """`ovs-appctl -t <this ovs-vswitchd's ctl socket> ARGS`."""
        argv = ["ovs-appctl", "-t", str(self.vswitchd_ctl), f"--timeout={max(1, int(timeout))}"]
        return nsutil.run([*argv, *args], env=self.env, timeout=timeout + 5).stdout

    def ovsdb_appctl(self, *args: str, timeout: float = 10.0) -> str:
        """`ovs-appctl -t <this ovsdb-server's ctl socket> ARGS`."""
        argv = ["ovs-appctl", "-t", str(self.ovsdb_ctl), f"--timeout={max(1, int(timeout))}"]
        return nsutil.run([*argv, *args], env=self.env, timeout=timeout + 5).stdout

    def appctl_ok(self, *args: str) -> bool:
        try:
            self.appctl(*args, timeout=2)
        except CommandError:
            return False
        return True

    def dump_flows(self, bridge: str, *match: str, stats: bool = True) -> list[str]:
        """Flow lines of `ovs-ofctl dump-flows` (OpenFlow 1.3), header removed."""
        opts = [] if stats else ["--no-stats"]
        out = self.ofctl(*opts, "dump-flows", bridge, *match)
        return [
            line.strip()
            for line in out.splitlines()
            if line.strip() and not line.lstrip().startswith(("OFPST_", "NXST_", "OFPIT_"))
        ]

    # -- bridges ------------------------------------------------------------------
    def add_bridge(
        self,
        bridge: str,
        *,
        fail_mode: str = "secure",
        datapath_id: int | None = None,
        protocols: Sequence[str] = ("OpenFlow13",),
        timeout: float = 10.0,
    ) -> int:
        """Create a netdev bridge (idempotent) and return its datapath id."""
        nsutil.check_ifname(bridge)
        args = [
            "--may-exist",
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            "datapath_type=netdev",
            f"fail_mode={fail_mode}",
            f"protocols={','.join(protocols)}",
        ]
        if datapath_id is not None:
            args.append(f"other_config:datapath-id={datapath_id:016x}")
        self.vsctl(*args, timeout=timeout)
        dpid = self.wait_for_bridge(bridge, timeout)
        # The bridge's internal port is a tap in our namespace: same offload problem.
        if nsutil.link_exists(bridge, netns=self.netns):
            nsutil.disable_offloads(bridge, netns=self.netns)
        return dpid

    def wait_for_bridge(self, bridge: str, timeout: float = 10.0) -> int:
        """Wait until ovs-vswitchd serves `bridge` over OpenFlow; return its datapath id."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self.vswitchd_running and self.mgmt_socket(bridge).exists():
                try:
                    out = self.ofctl("show", bridge, timeout=2)
                    m = re.search(r"dpid:([0-9a-fA-F]+)", out)
                    if m:
                        return int(m.group(1), 16)
                except CommandError as exc:
                    last = str(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: bridge {bridge} not up after {timeout}s "
                    f"({last or 'no mgmt socket'}); see {self.vswitchd_log}"
                )
            time.sleep(0.05)

    def set_controller(
        self,
        bridge: str,
        *targets: str,
        max_backoff_ms: int = 1000,
        inactivity_probe_ms: int | None = None,
        connection_mode: str = "out-of-band",
    ) -> None:
        """Point `bridge` at OpenFlow controllers (tcp:IP:PORT) with a short reconnect backoff."""
        self.vsctl("set-controller", bridge, *targets)
        if not targets:
            return
        settings = [f"max_backoff={max_backoff_ms}", f"connection_mode={connection_mode}"]
        if inactivity_probe_ms is not None:
            settings.append(f"inactivity_probe={inactivity_probe_ms}")
        for uuid in self.vsctl("--columns=_uuid", "--bare", "list", "Controller").split():
            self.vsctl("set", "Controller", uuid, *settings)

    # -- management link ----------------------------------------------------------
    def add_mgmt_link(
        self, host_ip: str | None = None, ns_ip: str | None = None
    ) -> tuple[str, str]:
        """Veth root namespace <-> this instance's namespace on a /30 from 100.64.0.0/10.

        A controller listening on ``host_ip`` in the root namespace is then reachable
        from ovs-vswitchd as ``tcp:<host_ip>:<port>``. Returns (host_ip, ns_ip).
        """
        if self.netns is None:
            raise ValueError(f"{self.name} runs in the root namespace: no management link needed")
        if self.mgmt is not None:
            return self.mgmt[0], self.mgmt[1]
        self.mgmt = self.sandbox.add_mgmt_link(self.netns, host_ip, ns_ip, role=f"m{self.name}"[:7])
        return self.mgmt[0], self.mgmt[1]

    def listen_db_tcp(self, port: int = 6640, address: str | None = None) -> str:
        """Also serve OVSDB on ``ptcp:PORT:ADDRESS`` (default: the namespace end of the
        management link) and return the client remote ``tcp:ADDRESS:PORT``."""
        if address is None:
            if self.mgmt is None:
                raise ValueError("no address given and no management link")
            address = self.mgmt[1]
        self.ovsdb_appctl("ovsdb-server/add-remote", f"ptcp:{port}:{address}")
        return f"tcp:{address}:{port}"

    # -- diagnostics --------------------------------------------------------------
    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.logdir.glob("*")):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"==> {path} <==\n" + "\n".join(text))
        return "\n".join(parts)

    # -- internals ----------------------------------------------------------------
    def _spawn(self, argv: list[str], tag: str) -> subprocess.Popen[bytes]:
        console = open(self.logdir / f"{tag}.console", "ab")  # noqa: SIM115 (owned by child)
        try:
            proc = nsutil.popen(
                argv, netns=self.netns, env=self.env, stdout=console, stderr=subprocess.STDOUT
            )
        finally:
            console.close()
        self.sandbox.record_process(proc.pid, str(self.workdir))
        return proc

    def _wait(
        self, ready: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], tag: str
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: {tag} exited with {proc.returncode}\n" + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {tag} not ready after {timeout}s\n" + self.log_tail()
                )
            time.sleep(0.02)

    def _kill(self, proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.sandbox.forget_process(proc.pid)

    def __repr__(self) -> str:
        return f"OvsInstance({self.name!r}, netns={self.netns!r}, workdir={str(self.workdir)!r})"


def _unix_connectable(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
