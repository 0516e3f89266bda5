"""Cold start to everything installed, Loom against OVN, same logical topology, one run (issue 11).

Topology (both sides, from one fill): N ports over N/100 networks (`bench_rest_reads.fill`:
one /24 subnet and 100 ports per network, no DHCP, no router, no security group; every
port has port security on). B = N x `--bind-share` ports are bound on one chassis, every
1/share-th port (so every network has bound ports and the chassis carries every network).

  Loom: fill() writes the controller's own northbound store (its state dir).
  OVN:  the same networks and ports, read back from that store, are written into a
        private OVN_Northbound database in one JSON-RPC transaction: one
        Logical_Switch per network, one Logical_Switch_Port per port (name = the Loom
        port id, addresses and port_security "MAC IP"). Loom's ports carry no security
        group, and Loom closes such a port to IP (default deny, ARP/ND allowed, port
        security on MAC+IP); the OVN equivalent is what networking-ovn does for it: one
        Port_Group (`pg_drop`) holding every port, with two ACLs at priority 1001,
        `inport == @pg_drop && ip` (from-lport) and `outport == @pg_drop && ip`
        (to-lport), action drop.

Chassis (each side its own): a private OVS (topologies/ovs_instance.OvsInstance,
ovsdb-server + ovs-vswitchd, netdev datapath, in its own network namespace) with br-int
(netdev, fail_mode=secure); each bound port is an OVS internal port on br-int (a tap
device in that namespace) with external_ids:iface-id=<port id>, 100 per ovs-vsctl call,
made before the clock starts: the hypervisor is up and its VIFs exist, no controller has
run, br-int has no flow. (Not the patch pairs of bench_port_change: ovn-controller
23.03.1 dies of SIGSEGV as soon as it claims a patch port carrying an iface-id.)

Cold start, timed from the first spawn (t0) on each side:
  Loom: `python -m controller` on the filled state dir (it starts its embedded
        ovsdb-server and loads the store itself), pointed at the chassis' OVSDB.
  OVN:  ovsdb-server for the filled NB db (restarted: it loads it from disk, as Loom's
        does) and for an empty SB db, then, once their sockets accept, ovn-northd, and
        once northd has written every Port_Binding to the SB, ovn-controller (its OVS
        already configured: system-id, ovn-remote=<SB>, ovn-encap-type=geneve,
        ovn-encap-ip=127.0.0.1). Started together with northd, ovn-controller 23.03.1
        died of SIGSEGV every time; ovn-controller has nothing to do before the SB is
        filled anyway, and the clock runs all along.
"Everything installed" is the first moment from which all of these hold until the end
of a `--stable` s window in which br-int's flow count (`ovs-ofctl dump-aggregate`,
polled every `--poll` s on both sides) does not move:
  Loom: every bound port ACTIVE (GET /v2.0/ports?status=ACTIVE count = B) and the
        switch synced to the store's generation (/v1/switches, /v1/health);
  OVN:  every bound port up in the NB (Logical_Switch_Port up=true count = B; ovn-
        controller sets it once the port's flows are installed) and an
        `ovn-nbctl --wait=hv sync`, started when they are all up, returned;
The time reported is max(the moment those conditions first held for good, the last
change of the flow count) - t0: the stable window itself is not counted.

Memory, read when everything is installed: VmRSS (and VmHWM, the peak) of Loom's
controller process + its embedded ovsdb-server, next to OVN's ovn-northd +
ovn-controller + NB and SB ovsdb-servers together; each side's ovs-vswitchd apart, for
information. CPU: utime+stime of the same processes from t0 to "installed".

OVN is not part of `make deps`: install it for the benchmark only with
    apt-get install ovn-central ovn-host
(and keep its system services stopped: the bench never uses them; every OVN daemon it
runs has its own db, socket, pid and log files under /tmp/loom-sandbox).

    sudo .venv/bin/python -m bench.bench_cold_start [--ports 10000] [--bind-share 0.1]
        [--timeout 600] [--only loom|ovn] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from bench.bench_port_change import (
    CHUNK,
    aggregate_flows,
    count_active,
    cpu_s,
    store_generation,
    the_switch,
)
from bench.bench_rest_latency import KeepAlive
from bench.bench_rest_reads import PER_NETWORK, fill
from controller import intent as m
from controller.store import EmbeddedOvsdb, NorthboundStore
from topologies.controller_process import ControllerProcess
from topologies.netns import Sandbox, pid_alive
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance, _unix_connectable

OVN_SCHEMAS = {"nb": Path("/usr/share/ovn/ovn-nb.ovsschema"),
               "sb": Path("/usr/share/ovn/ovn-sb.ovsschema")}
BINARIES = ("ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl",
            "ovn-northd", "ovn-controller", "ovn-nbctl")
INSTALL_HINT = ("OVN is needed for this benchmark only (not in `make deps`): "
                "apt-get install ovn-central ovn-host "
                "(then stop the system OVN services if the packages started them; the bench "
                "runs its own private daemons and never uses the system's)")
LOADS: list[float] = []


def check_binaries() -> Optional[str]:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    missing += [str(p) for p in OVN_SCHEMAS.values() if not p.exists()]
    if missing:
        return f"missing: {', '.join(missing)}.\n{INSTALL_HINT}"
    return None


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, KiB (0 if gone)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def load() -> float:
    value = os.getloadavg()[0]
    LOADS.append(value)
    return value


# ------------------------------------------------------------------ OVSDB JSON-RPC
class Jsonrpc:
    """A minimal OVSDB JSON-RPC client on a unix socket (a transaction of 10,000 rows is
    too big for `ovsdb-client transact`'s one command-line argument)."""

    def __init__(self, path: Path, timeout: float = 600.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = ""
        self.next_id = 0
        self.decoder = json.JSONDecoder()

    def call(self, method: str, params: list[Any]) -> Any:
        self.next_id += 1
        my_id = self.next_id
        self.sock.sendall(json.dumps({"method": method, "params": params,
                                      "id": my_id}).encode())
        while True:
            msg = self._read()
            if msg.get("method") == "echo":
                self.sock.sendall(json.dumps({"result": msg["params"], "error": None,
                                              "id": msg["id"]}).encode())
                continue
            if msg.get("id") == my_id:
                if msg.get("error"):
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def transact(self, db: str, *ops: dict[str, Any]) -> list[Any]:
        result = self.call("transact", [db, *ops])
        errors = [r for r in result if isinstance(r, dict) and "error" in r]
        if errors:
            raise RuntimeError(f"transaction failed: {errors[:3]}")
        return result

    def _read(self) -> dict[str, Any]:
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    msg, end = self.decoder.raw_decode(text)
                    self.buf = text[end:]
                    return msg
                except json.JSONDecodeError:
                    pass
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("ovsdb-server closed the connection")
            self.buf += chunk.decode()

    def close(self) -> None:
        self.sock.close()


def ovn_nb_ops(intent: m.Intent) -> list[dict[str, Any]]:
    """The OVN_Northbound rows of the same logical topology as `intent` (see the doc)."""
    ops: list[dict[str, Any]] = []
    by_net: dict[str, list[str]] = {}
    all_ports: list[list[str]] = []
    for i, port in enumerate(sorted(intent.ports.values(), key=lambda p: p.name)):
        ips = " ".join(f.ip_address for f in port.fixed_ips)
        address = f"{port.mac_address} {ips}".strip()
        ops.append({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": f"p{i}",
                    "row": {"name": port.id, "addresses": address,
                            "port_security": address if port.port_security_enabled
                            else ["set", []]}})
        by_net.setdefault(port.network_id, []).append(f"p{i}")
        if port.port_security_enabled and not port.security_groups:
            all_ports.append(["named-uuid", f"p{i}"])
    for net in sorted(intent.networks.values(), key=lambda n: n.name):
        ops.append({"op": "insert", "table": "Logical_Switch",
                    "row": {"name": net.name, "external_ids": ["map", [["loom-id", net.id]]],
                            "ports": ["set", [["named-uuid", p]
                                              for p in by_net.get(net.id, [])]]}})
    acls = []
    for j, (direction, field) in enumerate((("from-lport", "inport"),
                                            ("to-lport", "outport"))):
        ops.append({"op": "insert", "table": "ACL", "uuid-name": f"acl{j}",
                    "row": {"priority": 1001, "direction": direction, "action": "drop",
                            "match": f"{field} == @pg_drop && ip"}})
        acls.append(["named-uuid", f"acl{j}"])
    ops.append({"op": "insert", "table": "Port_Group",
                "row": {"name": "pg_drop", "ports": ["set", all_ports],
                        "acls": ["set", acls]}})
    return ops


# ------------------------------------------------------------------ common pieces
def make_chassis(sandbox: Sandbox, tag: str) -> OvsInstance:
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-{tag}"
    shutil.rmtree(workdir, ignore_errors=True)
    return OvsInstance(tag, netns=sandbox.add_netns(tag), workdir=workdir, sandbox=sandbox,
                       system_id=tag)


def bind_all(hv: OvsInstance, ports: list[str]) -> float:
    """Internal ports on br-int with iface-id, CHUNK per ovs-vsctl call; returns once
    ovs-vswitchd has applied them (ofports assigned)."""
    started = time.monotonic()
    for c in range(0, len(ports), CHUNK):
        args: list[str] = ["--no-wait"]
        for i, port_id in enumerate(ports[c:c + CHUNK], start=c):
            args += ["--", "add-port", "br-int", f"vif{i}", "--", "set", "Interface",
                     f"vif{i}", "type=internal", f"external_ids:iface-id={port_id}"]
        hv.vsctl(*args, timeout=300)
    hv.sync(timeout=600)
    return time.monotonic() - started


def watch(t0: float, flows: Callable[[], int], ready: Callable[[], bool],
          alive: Callable[[], Optional[str]], timeout: float, stable_s: float,
          poll_s: float, cpu: Callable[[], float]) -> dict[str, Any]:
    """Poll until `ready()` has held and br-int's flow count has not moved for stable_s.

    Returns the cold start time (max(ready since, last flow count change) - t0), the
    first flow's time, the final flow count; on timeout or a dead daemon, what was seen."""
    count, changed, ready_since, first_flow = -1, t0, None, None
    out: dict[str, Any] = {}
    while True:
        now = time.monotonic()
        c = flows()
        if c != count:
            count, changed = c, now
        if c > 0 and first_flow is None:
            first_flow = now - t0
        if ready():
            if ready_since is None:
                ready_since = time.monotonic()  # the answer's time, not the poll's start
        else:
            ready_since = None
        if ready_since is not None and c > 0 and now - max(changed, ready_since) >= stable_s:
            out.update(cold_s=max(changed, ready_since) - t0, flows=c, first_flow_s=first_flow,
                       ready_s=ready_since - t0, last_flow_change_s=changed - t0,
                       cpu_s=cpu(), ok=True)
            return out
        dead = alive()
        if dead or now - t0 > timeout:
            out.update(cold_s=None, flows=c, first_flow_s=first_flow, cpu_s=cpu(), ok=False,
                       why=dead or f"not installed after {timeout:g} s")
            return out
        time.sleep(poll_s)


# ------------------------------------------------------------------ Loom
def run_loom(state: Path, bound: list[str], n: int, timeout: float, stable_s: float,
             poll_s: float, keep: bool) -> dict[str, Any]:
    sandbox = Sandbox()
    hv = make_chassis(sandbox, "csl")
    ctl: Optional[ControllerProcess] = None
    api: Optional[KeepAlive] = None
    out: dict[str, Any] = {"side": "Loom"}
    ok = False
    try:
        hv.start()
        host_ip, _ = hv.add_mgmt_link()
        hv.add_bridge("br-int")  # as the controller wants it: netdev, secure, OpenFlow13
        out["bind_s"] = bind_all(hv, bound)
        assert aggregate_flows(hv) == 0
        ctl = ControllerProcess(state, [hv.db_remote], of_host=host_ip,
                                extra_args=("--log-level", "INFO"),
                                log_path=state.parent / f"{state.name}-controller.log")
        load()
        t0 = time.monotonic()
        ctl.start(timeout=timeout)
        out["up_s"] = time.monotonic() - t0
        assert ctl.proc is not None
        pid = ctl.proc.pid
        api = KeepAlive(ctl.rest_port)

        def db_pid() -> Optional[int]:
            return read_pid(state / "nb.pid")

        def ready() -> bool:
            assert api is not None
            try:
                sw = the_switch(api)
            except AssertionError:
                return False  # no switch yet
            if not (sw["connected"] and sw["synced_generation"] is not None
                    and sw["synced_generation"] >= store_generation(api)):
                return False
            if count_active(api) < len(bound):
                return False
            out.setdefault("all_up_s", time.monotonic() - t0)
            return True

        def alive() -> Optional[str]:
            assert ctl is not None and ctl.proc is not None
            if ctl.proc.poll() is not None:
                return f"controller exited {ctl.proc.returncode}"
            return None

        def cpu() -> float:
            d = db_pid()
            return cpu_s(pid) + (cpu_s(d) if d and pid_alive(d) else 0.0)

        out.update(watch(t0, lambda: aggregate_flows(hv), ready, alive, timeout, stable_s,
                         poll_s, cpu))
        load()
        d = db_pid()
        out["mem"] = {"controller": proc_status(pid),
                      "embedded ovsdb-server": proc_status(d) if d else {}}
        out["vswitchd"] = proc_status(hv.vswitchd_pid or 0)
        out["installed"] = the_switch(api)["installed_flows"] if out["ok"] else None
        out["log"] = str(ctl.log_path)
        errors = [line for line in ctl.log_path.read_text(errors="replace").splitlines()
                  if " ERROR " in line or "Traceback" in line]
        out["log_errors"] = errors[:20]
        ok = out["ok"]
        return out
    finally:
        if api is not None:
            api.close()
        if ctl is not None:
            ctl.stop()
            if not ok:
                print(f"Loom controller log tail ({ctl.log_path}):\n" + ctl.log_tail(60),
                      file=sys.stderr)
        hv.close(remove_workdir=ok and not keep)
        sandbox.cleanup()


# ------------------------------------------------------------------ OVN
class OvnCentral:
    """Private OVN NB and SB ovsdb-servers, ovn-northd and ovn-controller, all under one
    workdir (run/, db/, log/); never the system's."""

    def __init__(self, workdir: Path, sandbox: Sandbox, hv: OvsInstance) -> None:
        self.workdir, self.sandbox, self.hv = workdir, sandbox, hv
        self.rundir, self.dbdir, self.logdir = (workdir / d for d in ("run", "db", "log"))
        for d in (self.rundir, self.dbdir, self.logdir):
            d.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(hv.env, OVN_RUNDIR=str(self.rundir), OVN_DBDIR=str(self.dbdir),
                        OVN_LOGDIR=str(self.logdir), OVN_SYSCONFDIR=str(self.workdir / "etc"))

    def sock(self, db: str) -> Path:
        return self.rundir / f"ovn{db}_db.sock"

    def create_dbs(self) -> None:
        for db, schema in OVN_SCHEMAS.items():
            subprocess.run(["ovsdb-tool", "create", str(self.dbdir / f"ovn{db}_db.db"),
                            str(schema)], check=True, env=self.env)

    def spawn(self, tag: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{tag}.console", "ab") as console:
            proc = subprocess.Popen(argv, env=self.env, stdout=console,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.sandbox.record_process(proc.pid, str(self.workdir))
        self.procs[tag] = proc
        return proc

    def start_db(self, db: str) -> None:
        tag = f"ovsdb-server-{db}"
        self.spawn(tag, ["ovsdb-server", str(self.dbdir / f"ovn{db}_db.db"),
                         f"--remote=punix:{self.sock(db)}",
                         f"--pidfile={self.rundir / (tag + '.pid')}",
                         f"--log-file={self.logdir / (tag + '.log')}",
                         f"--unixctl={self.rundir / (tag + '.ctl')}", "--no-chdir"])

    def wait_db(self, db: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _unix_connectable(self.sock(db)):
            proc = self.procs[f"ovsdb-server-{db}"]
            if proc.poll() is not None:
                raise RuntimeError(f"ovsdb-server {db} exited {proc.returncode}: "
                                   + self.log_tail())
            if time.monotonic() > deadline:
                raise TimeoutError(f"ovsdb-server {db} not up in {timeout:g} s")
            time.sleep(0.01)

    def start_northd(self) -> None:
        self.spawn("ovn-northd", ["ovn-northd", f"--ovnnb-db=unix:{self.sock('nb')}",
                                  f"--ovnsb-db=unix:{self.sock('sb')}",
                                  f"--pidfile={self.rundir / 'ovn-northd.pid'}",
                                  f"--log-file={self.logdir / 'ovn-northd.log'}",
                                  f"--unixctl={self.rundir / 'ovn-northd.ctl'}", "--no-chdir"])

    def start_controller(self) -> None:
        self.spawn("ovn-controller", ["ovn-controller", self.hv.db_remote,
                                      f"--pidfile={self.rundir / 'ovn-controller.pid'}",
                                      f"--log-file={self.logdir / 'ovn-controller.log'}",
                                      "--no-chdir"])  # its unixctl socket: in OVN_RUNDIR

    def nbctl(self, *args: str, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ovn-nbctl", f"--db=unix:{self.sock('nb')}",
                                 f"--timeout={int(timeout)}", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stop(self, tag: str) -> None:
        proc = self.procs.pop(tag, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.sandbox.forget_process(proc.pid)

    def stop_all(self) -> None:
        for tag in ("ovn-controller", "ovn-northd", "ovsdb-server-sb", "ovsdb-server-nb"):
            self.stop(tag)

    def dead(self) -> Optional[str]:
        for tag, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{tag} exited {proc.returncode}"
        return None

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self.logdir.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {path} <==\n" + "\n".join(text))
        return "\n".join(parts)


def run_ovn(intent: m.Intent, bound: list[str], timeout: float, stable_s: float,
            poll_s: float, keep: bool) -> dict[str, Any]:
    sandbox = Sandbox()
    hv = make_chassis(sandbox, "cso")
    ovn = OvnCentral(DEFAULT_BASE / f"{sandbox.prefix}-ovn", sandbox, hv)
    out: dict[str, Any] = {"side": "OVN"}
    ok = False
    sync: Optional[subprocess.Popen[bytes]] = None
    try:
        # the northbound, filled once, then stopped: the cold start loads it from disk
        ovn.create_dbs()
        ovn.start_db("nb")
        ovn.wait_db("nb", 30)
        started = time.monotonic()
        rpc = Jsonrpc(ovn.sock("nb"))
        rpc.transact("OVN_Northbound", *ovn_nb_ops(intent))
        rpc.close()
        out["fill_s"] = time.monotonic() - started
        ovn.stop("ovsdb-server-nb")

        hv.start()
        hv.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                 f"external_ids:ovn-remote=unix:{ovn.sock('sb')}",
                 "external_ids:ovn-encap-type=geneve", "external_ids:ovn-encap-ip=127.0.0.1",
                 "external_ids:ovn-bridge-datapath-type=netdev")
        # br-int as ovn-controller makes it (no protocols set: it speaks OpenFlow 1.5)
        hv.vsctl("--may-exist", "add-br", "br-int", "--", "set", "Bridge", "br-int",
                 "datapath_type=netdev", "fail_mode=secure",
                 "other_config:disable-in-band=true")
        hv.wait_for_bridge("br-int", 30)
        out["bind_s"] = bind_all(hv, bound)
        assert aggregate_flows(hv) == 0

        load()
        t0 = time.monotonic()
        ovn.start_db("nb")
        ovn.start_db("sb")
        ovn.wait_db("nb", timeout)
        ovn.wait_db("sb", timeout)
        ovn.start_northd()
        out["up_s"] = time.monotonic() - t0
        # ovn-controller 23.03.1 dies of SIGSEGV when it starts before ovn-northd has
        # filled the SB (seen at 100 and 1,000 ports, every time): it is started once
        # the SB holds every port's Port_Binding, the clock running all along.
        sb = Jsonrpc(ovn.sock("sb"))
        try:
            while True:
                rows = sb.transact("OVN_Southbound", {
                    "op": "select", "table": "Port_Binding", "where": [],
                    "columns": ["_uuid"]})[0]["rows"]
                if len(rows) >= len(intent.ports):
                    break
                dead = ovn.dead()
                if dead or time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"SB not filled by ovn-northd: {dead or 'timeout'}; "
                                       f"{len(rows)} Port_Binding rows")
                time.sleep(0.05)
        finally:
            sb.close()
        out["sb_filled_s"] = time.monotonic() - t0
        ovn.start_controller()
        nb = Jsonrpc(ovn.sock("nb"))
        synced: dict[str, float] = {}

        def up_count() -> int:
            rows = nb.transact("OVN_Northbound", {
                "op": "select", "table": "Logical_Switch_Port",
                "where": [["up", "==", True]], "columns": ["_uuid"]})[0]["rows"]
            return len(rows)

        def ready() -> bool:
            nonlocal sync
            if up_count() < len(bound):
                return False
            out.setdefault("all_up_s", time.monotonic() - t0)
            if sync is None:  # every port up: does ovn-controller agree it is caught up?
                sync = ovn.nbctl("--wait=hv", "sync", timeout=timeout)
            if sync.poll() is None:
                return False
            if sync.returncode != 0:
                raise RuntimeError(f"ovn-nbctl --wait=hv sync: {sync.communicate()[1]!r}")
            synced.setdefault("at", time.monotonic() - t0)
            return True

        def pids() -> list[int]:
            return [p.pid for p in ovn.procs.values()]

        out.update(watch(t0, lambda: aggregate_flows(hv), ready, ovn.dead, timeout, stable_s,
                         poll_s, lambda: sum(cpu_s(p) for p in pids() if pid_alive(p))))
        load()
        nb.close()
        out["sync_s"] = synced.get("at")
        out["mem"] = {tag: proc_status(p.pid) for tag, p in ovn.procs.items()}
        out["vswitchd"] = proc_status(hv.vswitchd_pid or 0)
        out["lflows"] = sb_count(ovn, "Logical_Flow")
        out["log"] = str(ovn.logdir)
        errors = []
        for path in sorted(ovn.logdir.glob("*.log")):
            errors += [f"{path.name}: {line}" for line in
                       path.read_text(errors="replace").splitlines() if "|ERR|" in line]
        out["log_errors"] = errors[:20]
        ok = out["ok"]
        return out
    finally:
        if sync is not None and sync.poll() is None:
            sync.kill()
            sync.wait()
        if not ok:
            print("OVN logs:\n" + ovn.log_tail(), file=sys.stderr)
        ovn.stop_all()
        hv.close(remove_workdir=ok and not keep)
        sandbox.cleanup()
        if ok and not keep:
            shutil.rmtree(ovn.workdir, ignore_errors=True)


def sb_count(ovn: OvnCentral, table: str) -> int:
    rpc = Jsonrpc(ovn.sock("sb"))
    try:
        rows = rpc.transact("OVN_Southbound", {"op": "select", "table": table, "where": [],
                                               "columns": ["_uuid"]})[0]["rows"]
        return len(rows)
    finally:
        rpc.close()


# ------------------------------------------------------------------ report
def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def mem_total(res: dict[str, Any], key: str) -> int:
    return sum(v.get(key, 0) for v in res["mem"].values())


def report(n: int, n_bound: int, results: dict[str, dict[str, Any]], stable_s: float,
           poll_s: float, command: str, fill_s: float, total_s: float) -> None:
    nets = max(1, -(-n // PER_NETWORK))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\n# Cold start to everything installed: {n} ports on {nets} networks, {n_bound} "
          f"bound on one chassis (OVS internal ports); {stamp}; {os.cpu_count()} CPUs")
    print(f"# installed = every bound port up + switch synced, then br-int's flow count still "
          f"for {stable_s:g} s (polled every {poll_s:g} s); time to the last of those "
          "events, from the first spawn")
    sides = [s for s in ("Loom", "OVN") if s in results]
    print(f"{'':34}" + "".join(f"{s:>14}" for s in sides))

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for s in sides:
            try:
                cells.append(fn(results[s]))
            except (KeyError, TypeError):
                cells.append("-")
        print(f"{label:34}" + "".join(f"{c:>14}" for c in cells))

    row("cold start, s", lambda r: f"{r['cold_s']:.1f}" if r["ok"] else f"> ({r['why']})")
    row("  daemons up (health / sockets), s", lambda r: f"{r['up_s']:.1f}")
    row("  OVN SB filled by northd, s", lambda r: f"{r['sb_filled_s']:.1f}")
    row("  first flow on br-int, s", lambda r: f"{r['first_flow_s']:.1f}")
    row("  every bound port up, s", lambda r: f"{r['all_up_s']:.1f}")
    row("  all bound up + synced, s", lambda r: f"{r['ready_s']:.1f}")
    row("  last flow count change, s", lambda r: f"{r['last_flow_change_s']:.1f}")
    row("flows on br-int (dump-aggregate)", lambda r: f"{r['flows']}")
    row("CPU s to installed (daemons above)", lambda r: f"{r['cpu_s']:.1f}")
    row("memory RSS MiB, together", lambda r: mib(mem_total(r, "VmRSS")))
    row("memory peak (VmHWM) MiB, together", lambda r: mib(mem_total(r, "VmHWM")))
    for s in sides:
        for tag, st in results[s]["mem"].items():
            print(f"  {s} {tag}: RSS {mib(st.get('VmRSS', 0))} MiB, peak "
                  f"{mib(st.get('VmHWM', 0))} MiB")
    row("ovs-vswitchd RSS MiB (apart)", lambda r: mib(r["vswitchd"]["VmRSS"]))
    row("bind (ovs-vsctl, untimed), s", lambda r: f"{r['bind_s']:.1f}")
    if "OVN" in results:
        o = results["OVN"]
        print(f"OVN: {o.get('lflows')} logical flows in the SB; NB filled in "
              f"{o.get('fill_s', 0):.1f} s (one transaction); `--wait=hv sync` returned at "
              f"{o['sync_s']:.1f} s" if o.get("sync_s") is not None else "OVN: no sync")
    if "Loom" in results:
        print(f"Loom: store filled in {fill_s:.1f} s (one transaction); controller's "
              f"installed_flows {results['Loom'].get('installed')}")
    if len(sides) == 2 and all(results[s]["ok"] for s in sides):
        loom, ovn = results["Loom"]["cold_s"], results["OVN"]["cold_s"]
        o = results["OVN"]
        lax = max(o["all_up_s"], o["last_flow_change_s"])
        print(f"OVN without its `--wait=hv sync` (every port up, flow count final): "
              f"{lax:.1f} s; ratio Loom/OVN on that: {loom / lax:.2f}")
        print(f"ratio Loom/OVN cold start: {loom / ovn:.2f} (goal < 0.5: "
              f"{'met' if loom < 0.5 * ovn else 'NOT met'}); memory Loom/OVN: "
              f"{mem_total(results['Loom'], 'VmRSS') / mem_total(results['OVN'], 'VmRSS'):.2f}")
    for s in sides:
        errs = results[s].get("log_errors") or []
        if errs:
            print(f"{s}: {len(errs)} error line(s) in its logs, first:")
            for line in errs[:5]:
                print(f"  {line[:300]}")
    print(f"1-minute load average: {min(LOADS):.1f}-{max(LOADS):.1f} "
          f"(at each side's start and end: {', '.join(f'{x:.1f}' for x in LOADS)}); "
          f"total {total_s:.0f} s")
    print(f"command: {command}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=10_000)
    parser.add_argument("--bind-share", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up on a side's cold start after this many seconds")
    parser.add_argument("--stable", type=float, default=5.0,
                        help="seconds the flow count must stay put")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--only", choices=["loom", "ovn"], default=None)
    parser.add_argument("--keep", action="store_true", help="keep workdirs and logs")
    args = parser.parse_args(argv)
    if not 0 < args.bind_share <= 1:
        parser.error("--bind-share must be in (0, 1]")
    problem = check_binaries()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("needs root (network namespaces, private OVS)", file=sys.stderr)
        return 2
    command = ".venv/bin/python -m bench.bench_cold_start " + " ".join(
        argv if argv is not None else sys.argv[1:])
    print(f"command: {command}", flush=True)
    begun = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="loom-bench-cs-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        db = EmbeddedOvsdb(state).start()
        try:
            store = NorthboundStore(db.remote).connect(60)
            try:
                started = time.monotonic()
                ids = fill(store, args.ports)
                fill_s = time.monotonic() - started
                deadline = time.monotonic() + 120
                while len(store.latest().ports) < args.ports and time.monotonic() < deadline:
                    time.sleep(0.05)
                intent = store.latest()
            finally:
                store.close()
        finally:
            db.stop()
        step = max(1, round(1 / args.bind_share))
        bound = ids[::step][:max(1, round(args.ports * args.bind_share))]
        print(f"filled {args.ports} ports in {fill_s:.1f} s; binding {len(bound)}",
              file=sys.stderr, flush=True)
        if args.only in (None, "ovn"):
            results["OVN"] = run_ovn(intent, bound, args.timeout, args.stable, args.poll,
                                     args.keep)
            print(f"OVN done at {time.monotonic() - begun:.0f} s: "
                  f"{results['OVN'].get('cold_s')}", file=sys.stderr, flush=True)
        if args.only in (None, "loom"):
            results["Loom"] = run_loom(state, bound, args.ports, args.timeout, args.stable,
                                       args.poll, args.keep)
            print(f"Loom done at {time.monotonic() - begun:.0f} s: "
                  f"{results['Loom'].get('cold_s')}", file=sys.stderr, flush=True)
    finally:
        if not args.keep and all(r.get("ok") for r in results.values()):
            shutil.rmtree(state, ignore_errors=True)
            for log in state.parent.glob(f"{state.name}-controller.log"):
                log.unlink()
        else:
            print(f"state dir and controller log kept: {state}", file=sys.stderr)
    report(args.ports, len(bound), results, args.stable, args.poll, command, fill_s,
           time.monotonic() - begun)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
