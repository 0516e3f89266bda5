"""Failover and write throughput with several controllers and a clustered northbound (issue 14).

Real processes only, all on this machine, in one run:

1. Controller failover. One shared northbound (a private standalone ovsdb-server,
   `EmbeddedOvsdb`), two `python -m controller --nb-db <it> --instance-name c1|c2`
   (`--log-level INFO`), one hypervisor (a private OVS in its own namespace,
   userspace datapath) whose br-int lists both, one vxlan network with two ports bound
   to guests. The instance that owns the chassis (`GET /v1/health`:
   `instances.owners`) is SIGKILLed twice per repeat:
   - quiet: nothing else happens. Timed from the kill until the survivor's
     `/v1/switches` says it is master of the switch with a `synced_generation`
     (polled every --poll s on a keep-alive connection). Also the flow_mods the
     survivor sent by then (its `loom_flow_mods_total` in /metrics, after minus
     before the kill) and br-int's flow count before and after.
   - write: right after the kill, `POST /v2.0/ports?wait=true` through the survivor
     (a port on the network, address allocated, bound nowhere: its neighbour answers
     change the chassis' flows, so the answer waits for the chassis' next install).
     Timed from the kill until the 201, beside the same master+synced time.
   After each kill the killed instance is started again (same name, state dir and
   ports) and the next kill waits until each instance sees both alive, the switch
   has a synced master and a slave, then --settle s.
   Baseline: OVN's ovn-northd active/standby (Debian's ovn-central). Private
   ovsdb-servers for OVN_Northbound and OVN_Southbound on unix sockets in a temp dir,
   two ovn-northd on them, each with its own --unixctl, pid and log file (never the
   system's OVN services). The active one (unixctl `status`) is SIGKILLed; timed until
   the other says active (polled every 2 ms), then the killed one is started
   again. `--skip-ovn` skips it; without OVN installed it is skipped and said so.

2. Northbound leader failover. A 3-member raft cluster (`nb_cluster.create` + 2
   `join`: raft on tcp 127.0.0.1, clients on unix sockets) and one controller
   (`--nb-db <the 3 members> --instance-name l1`, no chassis). One client creates ports
   in a loop (`POST /v2.0/ports`, one at a time, keep-alive, 20 ms pause after a
   refusal). After --lead-in s of that the leader member is SIGKILLed; timed from the
   kill: the first create sent after it that is acknowledged (201), the longest gap
   between two acknowledgements (counting from the last one before the kill), how the
   create in flight at the kill was answered, and the new leader
   as the survivors' cluster/status shows it (polled every --poll s). The killed
   member is started again (`nb_cluster.start`) before the next repeat.
   Baseline, interleaved with it: the same raft election without Loom. Three
   ovsdb-servers started here straight from `ovsdb-tool create-cluster` /
   `join-cluster` (Loom's schema, raft on tcp 127.0.0.1), no client at all; the
   leader SIGKILLed, timed until a survivor's cluster/status says leader.
   Every status poll sends the unixctl JSON-RPC request that `ovs-appctl -t <ctl>
   cluster/status Loom_Northbound` (and `ovn-appctl -t <ctl> status`) sends, straight
   to the control socket: no process start per poll.

3. Write throughput. --ports creates (`POST /v2.0/ports`, no wait, address allocated
   from a /16) through the REST API, by one client (serial) and by --clients clients
   at once (one thread and keep-alive connection each), on
   (a) one controller on its embedded northbound (no --nb-db),
   (b) one controller on a 3-member cluster (no --instance-name),
   (c) two controllers (--instance-name) on another 3-member cluster, the serial
       client alternating between them request by request, the concurrent clients
       spread over both.
   The three run side by side, each repeat in a rotated order; each client makes one
   untimed create first (its connection open). creates/s = acknowledged creates /
   time from the start to the last answer.

Medians over --repeat; every value is printed. Nothing is asserted about the times.

    sudo .venv/bin/python -m bench.bench_ha [--repeat 5] [--ports 300] [--clients 8]
        [--poll 0.02] [--settle 2] [--lead-in 2] [--skip-ovn]
        [--only failover leader throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional

from bench.bench_rest_latency import KeepAlive
from controller.ownership import DEAD_AFTER_S, HEARTBEAT_S
from controller.store import EmbeddedOvsdb
from controller.store import nb_cluster as nbc
from controller.store.embedded import SCHEMA_PATH
from controller.store.nb_cluster import accepts as unix_accepts
from topologies.controller_process import ControllerProcess, free_port
from topologies.guest import Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

ROOT = Path(__file__).resolve().parent.parent
OVN_SCHEMAS = {"nb": Path("/usr/share/ovn/ovn-nb.ovsschema"),
               "sb": Path("/usr/share/ovn/ovn-sb.ovsschema")}
PHASES = ("failover", "leader", "throughput")
LOADS: dict[str, list[float]] = {}
LOG_LEVEL = ("--log-level", "INFO")


# ------------------------------------------------------------------ small helpers
def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load(phase: str) -> float:
    value = os.getloadavg()[0]
    LOADS.setdefault(phase, []).append(value)
    return value


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def clock(wall: float) -> str:
    """HH:MM:SS,mmm local time, as the controllers' logs write it."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f",{int(wall % 1 * 1000):03d}"


def revision() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "controller", "apps"],
                               capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "no git"
    if not head:
        return f"? ({ROOT} is not a git checkout)"
    changed = [ln for ln in dirty.splitlines() if ln.strip()]
    return f"{head}" + (f" ({len(changed)} file(s) of controller/ and apps/ modified)"
                               if changed else "")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0,
             every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, RuntimeError, KeyError, ValueError, TypeError,
                nbc.NbClusterError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout:g} s (last: {last!r})")


def unixctl(path: Path, method: str, *params: str, timeout: float = 2.0) -> str:
    """One unixctl JSON-RPC request, as ovs-appctl/ovn-appctl send it; its result text."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"method": method, "params": list(params), "id": 0}).encode())
        buf = b""
        decoder = json.JSONDecoder()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{path}: closed before answering {method}")
            buf += chunk
            try:
                msg, _ = decoder.raw_decode(buf.decode())
            except ValueError:
                continue
            if msg.get("error"):
                raise RuntimeError(f"{path} {method}: {msg['error']}")
            return str(msg.get("result") or "")


def raft_status(ctl: Path) -> nbc.ClusterStatus:
    return nbc.parse_status(unixctl(ctl, "cluster/status", nbc.DB_NAME))


def poll_new_leader(ctls: Sequence[Path], term: int, t0: float, poll: float,
                    timeout: float = 60.0) -> float:
    """Seconds from t0 until one of `ctls` says it is leader in a term after `term`."""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        for ctl in ctls:
            try:
                st = raft_status(ctl)
            except (OSError, RuntimeError, nbc.NbClusterError):
                continue
            if st.role == "leader" and st.term > term:
                return time.monotonic() - t0
        time.sleep(poll)
    raise TimeoutError(f"no new leader among {len(ctls)} members after {timeout:g} s")


def agreed_leader(ctls: Sequence[Path]) -> Optional[int]:
    """The index of the leader if every member is a cluster member and names the same
    leader (and lists every member), else None."""
    statuses = [raft_status(c) for c in ctls]
    leaders = [i for i, st in enumerate(statuses) if st.role == "leader"]
    if len(leaders) != 1 or any(not st.is_member or st.leader is None
                                or len(st.servers) != len(ctls) for st in statuses):
        return None
    return leaders[0]


def wait_leader(ctls: Sequence[Path], what: str, timeout: float = 60.0) -> int:
    """The leader's index once every member agrees on it (see `agreed_leader`)."""
    found: tuple[int] = wait_for(what, lambda: (lambda x: None if x is None else (x,))(
        agreed_leader(ctls)), timeout)
    return found[0]


def kill9(pid: Optional[int]) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def switches(api: KeepAlive) -> list[dict[str, Any]]:
    body = api.ok("GET", "/v1/switches")
    found = body.get("switches", body) if isinstance(body, dict) else body
    return list(found)


def port_active(api: Any, port_id: str) -> bool:
    return bool(api.get(f"/v2.0/ports/{port_id}").ok()["port"]["status"] == "ACTIVE")


def has_network(api: KeepAlive, net_id: str) -> bool:
    return api.call("GET", f"/v2.0/networks/{net_id}")[0] == 200


def error_lines(path: Path, limit: int = 8) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in text if (" ERROR " in ln or "Traceback" in ln
            or " WARNING " in ln or " CRITICAL " in ln) and "no --auth-tokens" not in ln][:limit]


# ------------------------------------------------------------------ private processes
class Daemons:
    """Processes this bench starts itself (not detached): killed on close."""

    def __init__(self, sandbox: Sandbox, env: Optional[dict[str, str]] = None) -> None:
        self.sandbox = sandbox
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}

    def spawn(self, tag: str, argv: list[str], console: Path) -> subprocess.Popen[bytes]:
        self.argv[tag] = argv
        with open(console, "ab") as out:
            proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.sandbox.record_process(proc.pid, argv[1] if len(argv) > 1 else argv[0])
        self.procs[tag] = proc
        return proc

    def restart(self, tag: str, console: Path) -> None:
        self.spawn(tag, self.argv[tag], console)

    def kill(self, tag: str) -> None:
        proc = self.procs[tag]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.sandbox.forget_process(proc.pid)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.sandbox.forget_process(proc.pid)


class RawCluster:
    """Three ovsdb-servers forming a raft cluster, made with ovsdb-tool directly."""

    def __init__(self, base: Path, sandbox: Sandbox) -> None:
        self.base = base
        self.names = ("a", "b", "c")
        self.dirs = [base / n for n in self.names]
        self.rafts = [f"tcp:127.0.0.1:{free_port()}" for _ in self.names]
        self.daemons = Daemons(sandbox)

    def ctl(self, i: int) -> Path:
        return self.dirs[i] / "ctl"

    def _argv(self, i: int) -> list[str]:
        d = self.dirs[i]
        return ["ovsdb-server", str(d / "db"), f"--remote=punix:{d / 'db.sock'}",
                f"--unixctl={d / 'ctl'}", f"--pidfile={d / 'pid'}",
                f"--log-file={d / 'log'}", "--no-chdir", "-vconsole:off"]

    def start(self, i: int) -> None:
        self.daemons.spawn(self.names[i], self._argv(i), self.dirs[i] / "console")

    def create(self) -> None:
        for d in self.dirs:
            d.mkdir(parents=True)
        subprocess.run(["ovsdb-tool", "create-cluster", str(self.dirs[0] / "db"),
                        str(SCHEMA_PATH), self.rafts[0]], check=True)
        for i in (1, 2):
            subprocess.run(["ovsdb-tool", "join-cluster", str(self.dirs[i] / "db"), nbc.DB_NAME,
                            self.rafts[i], *self.rafts[:i]], check=True)
        self.start(0)
        wait_for("raw cluster: first member leader",
                 lambda: raft_status(self.ctl(0)).role == "leader", 30)
        for i in (1, 2):
            self.start(i)
            wait_for(f"raw cluster: member {self.names[i]} joined",
                     partial(self.is_member, i), 30)
        self.wait_agreed()

    def is_member(self, i: int) -> bool:
        return raft_status(self.ctl(i)).status == "cluster member"

    def wait_agreed(self) -> int:
        return wait_leader([self.ctl(i) for i in range(3)],
                           "raw cluster: 3 members agreeing on a leader")

    def close(self) -> None:
        self.daemons.close()


class PrivateOvn:
    """OVN NB and SB ovsdb-servers and two ovn-northd, all under `base`."""

    def __init__(self, base: Path, sandbox: Sandbox) -> None:
        self.base = base
        base.mkdir(parents=True)
        env = dict(os.environ)
        for prefix in ("OVN", "OVS"):
            env.update({f"{prefix}_RUNDIR": str(base), f"{prefix}_LOGDIR": str(base),
                        f"{prefix}_DBDIR": str(base), f"{prefix}_SYSCONFDIR": str(base)})
        self.daemons = Daemons(sandbox, env)
        self.northds = ("northd-a", "northd-b")

    def sock(self, db: str) -> Path:
        return self.base / f"{db}.sock"

    def ctl(self, tag: str) -> Path:
        return self.base / f"{tag}.ctl"

    def start(self) -> None:
        for db, schema in OVN_SCHEMAS.items():
            subprocess.run(["ovsdb-tool", "create", str(self.base / f"{db}.db"), str(schema)],
                           check=True, env=self.daemons.env)
            self.daemons.spawn(db, [
                "ovsdb-server", str(self.base / f"{db}.db"), f"--remote=punix:{self.sock(db)}",
                f"--unixctl={self.ctl(db)}", f"--pidfile={self.base / (db + '.pid')}",
                f"--log-file={self.base / (db + '.log')}", "--no-chdir", "-vconsole:off"],
                self.base / f"{db}.console")
        for db in OVN_SCHEMAS:
            wait_for(f"OVN {db} ovsdb-server", partial(unix_accepts, self.sock(db)), 30)
        for tag in self.northds:
            self.daemons.spawn(tag, [
                "ovn-northd", f"--ovnnb-db=unix:{self.sock('nb')}",
                f"--ovnsb-db=unix:{self.sock('sb')}", f"--unixctl={self.ctl(tag)}",
                f"--pidfile={self.base / (tag + '.pid')}",
                f"--log-file={self.base / (tag + '.log')}", "--no-chdir", "-vconsole:off"],
                self.base / f"{tag}.console")
            # the first one takes the lock before the second starts
            want = "active" if tag == self.northds[0] else "standby"
            wait_for(f"{tag} {want}", partial(self.is_status, tag, want), 30)

    def is_status(self, tag: str, want: str) -> bool:
        return self.status(tag) == want

    def status(self, tag: str) -> str:
        text = unixctl(self.ctl(tag), "status")
        return text.partition("Status:")[2].strip().split()[0] if "Status:" in text else text

    def close(self) -> None:
        self.daemons.close()



def ovn_missing() -> Optional[str]:
    missing = [b for b in ("ovn-northd", "ovsdb-server", "ovsdb-tool") if not shutil.which(b)]
    missing += [str(p) for p in OVN_SCHEMAS.values() if not p.exists()]
    return f"missing {', '.join(missing)} (apt-get install ovn-central)" if missing else None


OVN_POLL_S = 0.002  # the lock moves within milliseconds: --poll would be the resolution


def ovn_failover_once(ovn: PrivateOvn, poll: float = OVN_POLL_S,
                      timeout: float = 60.0) -> float:
    """SIGKILL the active ovn-northd; seconds until the other says active; restart it."""
    active = [t for t in ovn.northds if ovn.status(t) == "active"]
    assert len(active) == 1, [(t, ovn.status(t)) for t in ovn.northds]
    dead = active[0]
    other = next(t for t in ovn.northds if t != dead)
    t0 = time.monotonic()
    ovn.daemons.procs[dead].send_signal(signal.SIGKILL)
    took = None
    while time.monotonic() - t0 < timeout:
        try:
            if ovn.status(other) == "active":
                took = time.monotonic() - t0
                break
        except (OSError, RuntimeError):
            pass
        time.sleep(poll)
    ovn.daemons.procs[dead].wait(10)
    ovn.daemons.sandbox.forget_process(ovn.daemons.procs[dead].pid)
    if took is None:
        raise TimeoutError(f"{other} not active {timeout:g} s after {dead} was killed")
    ovn.daemons.restart(dead, ovn.base / f"{dead}.console")
    wait_for(f"{dead} back, standby", lambda: ovn.status(dead) == "standby", 30)
    return took


def raft_failover_once(cluster: RawCluster, poll: float, settle: float) -> float:
    leader = cluster.wait_agreed()
    term = raft_status(cluster.ctl(leader)).term
    survivors = [cluster.ctl(i) for i in range(3) if i != leader]
    t0 = time.monotonic()
    cluster.daemons.procs[cluster.names[leader]].send_signal(signal.SIGKILL)
    took = poll_new_leader(survivors, term, t0, poll)
    cluster.daemons.procs[cluster.names[leader]].wait(10)
    cluster.start(leader)
    cluster.wait_agreed()
    time.sleep(settle)
    return took


# ------------------------------------------------------------------ 1. controller failover
@dataclass
class Kill:
    kind: str  # quiet | write
    killed: str
    adopt_s: float
    answer_s: Optional[float] = None
    answer_status: Optional[int] = None
    flow_mods: Optional[float] = None
    flows_before: int = 0
    flows_after: int = 0
    flows_at_answer: Optional[int] = None  # br-int's flow count read right after the 201
    installed_s: Optional[float] = None  # kill -> br-int's flow count first seen above before
    killed_at: float = 0.0  # wall clock, to find the kill in the logs
    load: float = 0.0


@dataclass
class FailoverResult:
    kills: list[Kill] = field(default_factory=list)
    ovn: list[float] = field(default_factory=list)
    ovn_skipped: Optional[str] = None
    notes: list[str] = field(default_factory=list)


class FailoverLab:
    NAMES = ("c1", "c2")

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sandbox = Sandbox()
        workdir = DEFAULT_BASE / f"{self.sandbox.prefix}-hv1"
        shutil.rmtree(workdir, ignore_errors=True)
        self.hv = OvsInstance("hv1", netns=self.sandbox.add_netns("hv1"), workdir=workdir,
                              sandbox=self.sandbox, system_id="hv1")
        self.nb = EmbeddedOvsdb(base / "nb")
        self.ctls: dict[str, ControllerProcess] = {}
        self.apis: dict[str, KeepAlive] = {}
        self.guests: list[Guest] = []
        self.net_id = ""

    def start(self) -> None:
        self.hv.start()
        host_ip, _ = self.hv.add_mgmt_link()
        self.nb.start()
        for name in self.NAMES:
            self.ctls[name] = ControllerProcess(
                self.base / name, [self.hv.db_remote], of_host=host_ip,
                extra_args=("--nb-db", self.nb.remote, "--instance-name", name, *LOG_LEVEL))
            self.ctls[name].start(timeout=60)
        self.hv.wait_for_bridge("br-int", timeout=30)
        self.settle(0.0)
        api = self.ctls[self.NAMES[0]].api
        net = api.post("/v2.0/networks", {"network": {
            "name": "ha", "provider:network_type": "vxlan"}}).ok()["network"]
        sub = api.post("/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "cidr": "10.40.0.0/16", "ip_version": 4,
            "enable_dhcp": False}}).ok()["subnet"]
        self.net_id = net["id"]
        for i in (1, 2):
            ip = f"10.40.0.{10 + i}"
            port = api.post("/v2.0/ports?wait=true", {"port": {
                "network_id": net["id"], "port_security_enabled": False,
                "fixed_ips": [{"subnet_id": sub["id"], "ip_address": ip}]}}).ok()["port"]
            self.guests.append(Guest(f"g{i}", port["mac_address"], f"{ip}/16",
                                     sandbox=self.sandbox, ovs=self.hv, bridge="br-int",
                                     port_id=port["id"]))
            wait_for(f"port g{i} ACTIVE", partial(port_active, api, port["id"]), 60)
        out = self.guests[0].run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.40.0.12"],
                                 check=False)
        if " 0% packet loss" not in out.stdout:
            raise RuntimeError(f"the guests do not reach each other: {out.stdout}")

    def api(self, name: str) -> KeepAlive:
        if name not in self.apis:
            self.apis[name] = KeepAlive(self.ctls[name].rest_port)
        return self.apis[name]

    def drop_api(self, name: str) -> None:
        api = self.apis.pop(name, None)
        if api is not None:
            api.close()

    def owner(self) -> str:
        owners = self.api(self.NAMES[0]).ok("GET", "/v1/health")["instances"]["owners"]
        found = {o["owner"] for o in owners.values()}
        assert len(found) == 1, owners
        return str(found.pop())

    def flows(self) -> int:
        out = self.hv.ofctl("dump-aggregate", "br-int")
        return int(out.split("flow_count=")[1].split()[0])

    def settle(self, extra: float) -> None:
        def ready() -> bool:
            for name in self.NAMES:
                health = self.api(name).ok("GET", "/v1/health")
                alive = sorted(i["name"] for i in health["instances"]["instances"] if i["alive"])
                if alive != sorted(self.NAMES):
                    return False
            roles = {n: switches(self.api(n)) for n in self.NAMES}
            if any(len(s) != 1 for s in roles.values()):
                return False
            if sorted(s[0].get("role", "") for s in roles.values()) != ["master", "slave"]:
                return False
            master = next(s[0] for s in roles.values() if s[0].get("role") == "master")
            return master.get("synced_generation") is not None and bool(master["connected"])

        wait_for("both instances alive, a synced master and a slave", ready, 90, 0.2)
        time.sleep(extra)

    def kill_once(self, kind: str, poll: float, settle: float) -> Kill:
        killed = self.owner()
        survivor = next(n for n in self.NAMES if n != killed)
        surv = self.ctls[survivor]
        mods_before = surv.api.metric("loom_flow_mods_total")
        flows_before = self.flows()
        writer = self.api(survivor)  # already connected: the POST pays no connect
        poller = KeepAlive(surv.rest_port)
        poller.ok("GET", "/v1/health")
        adopted: dict[str, float] = {}
        t0 = 0.0
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                try:
                    sw = switches(poller)
                except (OSError, RuntimeError) as exc:
                    _say(f"polling {survivor}: {exc}")
                    sw = []
                if sw and sw[0].get("role") == "master" \
                        and sw[0].get("synced_generation") is not None:
                    adopted["at"] = time.monotonic()
                    return
                time.sleep(poll)

        proc = self.ctls[killed].proc
        assert proc is not None
        self.drop_api(killed)
        lo = load("failover")
        wall = time.time()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        answer_s = None
        status = None
        flows_at_answer = None
        installed_s = None
        if kind == "write":
            status, body = writer.call("POST", "/v2.0/ports?wait=true&wait_timeout=120",
                                       {"port": {"network_id": self.net_id}})
            answer_s = time.monotonic() - t0
            flows_at_answer = self.flows()
            if status != 201:
                _say(f"port create through {survivor} after the kill: HTTP {status}: {body}")
            # the new port's flows (its neighbour answers) on br-int: polled from the answer
            while time.monotonic() - t0 < 120:
                count = self.flows()
                if count > flows_before:
                    installed_s = time.monotonic() - t0
                    break
                time.sleep(poll)
        thread.join(120)
        done.set()
        poller.close()
        proc.wait(10)
        if "at" not in adopted:
            raise TimeoutError(f"{survivor} not master+synced 120 s after {killed} was killed")
        kill = Kill(kind, killed, adopted["at"] - t0, answer_s, status, load=lo,
                    flows_before=flows_before, flows_at_answer=flows_at_answer,
                    installed_s=installed_s, killed_at=wall)
        kill.flow_mods = surv.api.metric("loom_flow_mods_total") - mods_before
        kill.flows_after = self.flows()
        self.ctls[killed].start(timeout=60)
        self.settle(settle)
        return kill

    def close(self) -> None:
        for api in list(self.apis):
            self.drop_api(api)
        for g in self.guests:
            try:
                g.close()
            except Exception as exc:  # cleanup goes on
                _say(f"guest {g.name}: {exc}")
        for ctl in self.ctls.values():
            ctl.stop()
        self.nb.stop()
        self.hv.close(remove_workdir=True)
        self.sandbox.cleanup()


def run_failover(args: argparse.Namespace, base: Path) -> FailoverResult:
    res = FailoverResult()
    lab = FailoverLab(base / "fo")
    ovn: Optional[PrivateOvn] = None
    ovn_sandbox: Optional[Sandbox] = None
    ok = False
    try:
        load("failover")
        if args.skip_ovn:
            res.ovn_skipped = "--skip-ovn"
        else:
            res.ovn_skipped = ovn_missing()
        if res.ovn_skipped is None:
            ovn_sandbox = Sandbox()
            ovn = PrivateOvn(base / "ovn", ovn_sandbox)
            ovn.start()
        lab.start()
        _say("failover: lab up")
        for r in range(args.repeat):
            if ovn is not None:
                res.ovn.append(ovn_failover_once(ovn))
                time.sleep(args.settle)
                _say(f"failover {r + 1}: OVN northd {res.ovn[-1]:.3f} s")
            for kind in ("quiet", "write"):
                k = lab.kill_once(kind, args.poll, args.settle)
                res.kills.append(k)
                _say(f"failover {r + 1} {kind}: killed {k.killed} at {clock(k.killed_at)}, "
                     f"adopted {k.adopt_s:.2f} s, "
                     f"answer {fmt([k.answer_s], 3)} s, on br-int {fmt([k.installed_s], 3)} s, "
                     f"flow_mods {k.flow_mods}, "
                     f"flows {k.flows_before}->{k.flows_at_answer}->{k.flows_after}")
        load("failover")
        for name, ctl in lab.ctls.items():
            for line in error_lines(ctl.log_path):
                res.notes.append(f"{name}: {line}")
        ok = True
        return res
    finally:
        if not ok:
            for name, ctl in lab.ctls.items():
                _say(f"controller {name} log tail:\n{ctl.log_tail(40)}")
        lab.close()
        if ovn is not None:
            ovn.close()
        if ovn_sandbox is not None:
            ovn_sandbox.cleanup()


# ------------------------------------------------------------------ 2. northbound leader
@dataclass
class LeaderKill:
    election_s: float
    first_ack_s: float
    gap_s: float
    acked_after: int
    refused: Counter[str]
    load: float
    in_flight: Optional[tuple[float, int]]  # the create in flight at the kill: (answered, status)


@dataclass
class LeaderResult:
    kills: list[LeaderKill] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@contextmanager
def nb_cluster3(base: Path, sandbox: Sandbox) -> Iterator[list[nbc.Member]]:
    members = [nbc.Member.at(base / n) for n in "abc"]
    rafts = [f"tcp:127.0.0.1:{free_port()}" for _ in members]
    try:
        nbc.create(members[0], rafts[0])
        nbc.join(members[1], rafts[1], rafts[:1])
        nbc.join(members[2], rafts[2], rafts[:2])
        for m in members:
            pid = m.pid()
            if pid is not None:
                sandbox.record_process(pid, str(m.dir))
        yield members
    finally:
        for m in members:
            try:
                nbc.stop(m, timeout=5.0)
            except Exception:
                kill9(m.pid())


def leader_once(members: list[nbc.Member], api: KeepAlive, net_id: str,
                args: argparse.Namespace, sandbox: Sandbox) -> LeaderKill:
    ctls = [m.ctl for m in members]
    leader = wait_leader(ctls, "the cluster agreeing on a leader")
    term = raft_status(ctls[leader]).term
    dead = members[leader]
    log: list[tuple[float, float, int]] = []  # (sent, answered, status)
    refused: Counter[str] = Counter()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status, body = api.call("POST", "/v2.0/ports", {"port": {"network_id": net_id}})
            except (OSError, RuntimeError) as exc:
                status, body = 0, str(exc)
            log.append((sent, time.monotonic(), status))
            if status != 201:
                refused[f"{status} {str(body)[:400]}"] += 1
                time.sleep(0.02)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(args.lead_in)
        pid = dead.pid()
        assert pid is not None
        lo = load("leader")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        survivors = [c for i, c in enumerate(ctls) if i != leader]
        election = poll_new_leader(survivors, term, t0, args.poll)
        wait_for("an acknowledged write sent after the kill", lambda: any(
            sent >= t0 and s == 201 for sent, _, s in list(log)), 120, 0.05)
        time.sleep(args.lead_in)  # writes after the recovery
    finally:
        stop.set()
        thread.join(120)
    acks = [a for _, a, s in log if s == 201]
    before = [a for a in acks if a < t0]
    after = [a for a in acks if a >= t0]
    points = before[-1:] + after
    gap = max(b - a for a, b in zip(points, points[1:], strict=False))
    first_new = min(a for sent, a, s in log if s == 201 and sent >= t0) - t0
    in_flight = [(a - t0, s) for sent, a, s in log if sent < t0 <= a]
    nbc.start(dead)
    pid = dead.pid()
    if pid is not None:
        sandbox.record_process(pid, str(dead.dir))
    wait_leader(ctls, "the killed member back, 3 agreeing on a leader")
    time.sleep(args.settle)
    return LeaderKill(election, first_new, gap, len(after), refused, lo,
                      in_flight[0] if in_flight else None)


def run_leader(args: argparse.Namespace, base: Path) -> LeaderResult:
    res = LeaderResult()
    sandbox = Sandbox()
    raw = RawCluster(base / "raw", sandbox)
    ctl: Optional[ControllerProcess] = None
    api: Optional[KeepAlive] = None
    ok = False
    try:
        load("leader")
        raw.create()
        with nb_cluster3(base / "ld", sandbox) as members:
            ctl = ControllerProcess(base / "l1", [], extra_args=(
                "--nb-db", nbc.client_remote(members), "--instance-name", "l1", *LOG_LEVEL))
            ctl.start(timeout=60)
            api = KeepAlive(ctl.rest_port)
            net = api.ok("POST", "/v2.0/networks", {"network": {"name": "w"}},
                         201)["network"]
            api.ok("POST", "/v2.0/subnets", {"subnet": {
                "network_id": net["id"], "cidr": "10.77.0.0/16", "ip_version": 4}}, 201)
            _say("leader: cluster and controller up")
            for r in range(args.repeat):
                res.raw.append(raft_failover_once(raw, args.poll, args.settle))
                _say(f"leader {r + 1}: raw raft election {res.raw[-1]:.3f} s")
                k = leader_once(members, api, net["id"], args, sandbox)
                res.kills.append(k)
                _say(f"leader {r + 1}: election {k.election_s:.3f} s, first create sent after "
                     f"the kill acknowledged {k.first_ack_s:.3f} s, gap {k.gap_s:.3f} s, in "
                     f"flight at the kill {k.in_flight}, refused {dict(k.refused)}")
            load("leader")
            api.close()
            api = None
            ctl.stop()
            for line in error_lines(ctl.log_path):
                res.notes.append(f"l1: {line}")
            ok = True
        return res
    finally:
        if api is not None:
            api.close()
        if ctl is not None:
            ctl.stop()
            if not ok:
                _say(f"controller l1 log tail:\n{ctl.log_tail(40)}")
        raw.close()
        sandbox.cleanup()


# ------------------------------------------------------------------ 3. throughput
SETUPS = ("embedded", "clustered", "clustered, 2 instances")


@dataclass
class Setup:
    name: str
    ports: list[int]  # REST ports of its instance(s)
    net_id: str = ""


@dataclass
class Rate:
    setup: str
    mode: str  # serial | concurrent
    rate: float
    seconds: float
    acked: int
    errors: Counter[str]
    load: float


def create_run(setup: Setup, n: int, clients: int) -> tuple[float, int, Counter[str]]:
    """`n` creates by `clients` clients (1: serial, alternating over the instances);
    (seconds, acknowledged, errors)."""
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    acked = [0]
    taken = [0]
    body = {"port": {"network_id": setup.net_id}}
    serial_rr = clients == 1 and len(setup.ports) > 1
    conns = ([KeepAlive(p) for p in setup.ports] if serial_rr
             else [KeepAlive(setup.ports[i % len(setup.ports)]) for i in range(clients)])
    for c in conns:  # one untimed create each: the connection is open
        c.ok("POST", "/v2.0/ports", body, 201)
    barrier = threading.Barrier(clients + 1)
    last = [0.0]

    def client(i: int) -> None:
        barrier.wait()
        k = 0
        while True:
            with lock:
                if taken[0] >= n:
                    return
                taken[0] += 1
            conn = conns[k % len(conns)] if serial_rr else conns[i]
            k += 1
            try:
                status, got = conn.call("POST", "/v2.0/ports", body)
            except (OSError, RuntimeError) as exc:
                status, got = 0, str(exc)
            now = time.monotonic()
            with lock:
                last[0] = max(last[0], now)
                if status == 201:
                    acked[0] += 1
                else:
                    errors[f"{status} {str(got)[:100]}"] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(600)
    for c in conns:
        c.close()
    return last[0] - t0, acked[0], errors


def run_throughput(args: argparse.Namespace, base: Path) -> list[Rate]:
    rates: list[Rate] = []
    sandbox = Sandbox()
    ctls: list[ControllerProcess] = []
    ok = False
    try:
        load("throughput")
        with nb_cluster3(base / "tb", sandbox) as mb, nb_cluster3(base / "tc", sandbox) as mc:
            e = ControllerProcess(base / "e", [], extra_args=LOG_LEVEL)
            b = ControllerProcess(base / "b", [], extra_args=(
                "--nb-db", nbc.client_remote(mb), *LOG_LEVEL))
            c1, c2 = (ControllerProcess(base / n, [], extra_args=(
                "--nb-db", nbc.client_remote(mc), "--instance-name", n, *LOG_LEVEL))
                for n in ("t1", "t2"))
            setups = [Setup(SETUPS[0], [e.rest_port]), Setup(SETUPS[1], [b.rest_port]),
                      Setup(SETUPS[2], [c1.rest_port, c2.rest_port])]
            for ctl in (e, b, c1, c2):
                ctls.append(ctl)
                ctl.start(timeout=60)
            for i, s in enumerate(setups):
                api = KeepAlive(s.ports[0])
                net = api.ok("POST", "/v2.0/networks", {"network": {"name": f"t{i}"}},
                             201)["network"]
                api.ok("POST", "/v2.0/subnets", {"subnet": {
                    "network_id": net["id"], "cidr": f"10.{80 + i}.0.0/16",
                    "ip_version": 4}}, 201)
                api.close()
                s.net_id = net["id"]
            # the second instance sees the network before it is written to through it
            for port in setups[2].ports:
                api = KeepAlive(port)
                wait_for("the network on every instance", partial(
                    has_network, api, setups[2].net_id), 30)
                api.close()
            _say("throughput: 3 setups up")
            for r in range(args.repeat):
                order = setups[r % 3:] + setups[:r % 3]
                for s in order:
                    for mode, clients in (("serial", 1), ("concurrent", args.clients)):
                        lo = load("throughput")
                        secs, acked, errors = create_run(s, args.ports, clients)
                        rates.append(Rate(s.name, mode, acked / secs, secs, acked, errors, lo))
                        _say(f"throughput {r + 1}: {s.name} {mode}: {acked} in {secs:.2f} s "
                             f"= {acked / secs:.0f}/s; errors {dict(errors)}")
            load("throughput")
            for ctl in ctls:
                ctl.stop()
            ok = True
        return rates
    finally:
        for ctl in ctls:
            ctl.stop()
            if not ok:
                _say(f"controller {ctl.state_dir.name} log tail:\n{ctl.log_tail(30)}")
        sandbox.cleanup()


# ------------------------------------------------------------------ report
def fmt(values: Sequence[Optional[float]], digits: int = 2) -> str:
    return " ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def row(label: str, values: Sequence[float], digits: int = 2) -> None:
    if not values:
        print(f"{label:52} {'-':>7}")
        return
    print(f"{label:52} {median(values):>7.{digits}f} {min(values):>7.{digits}f} "
          f"{max(values):>7.{digits}f}   {fmt(values, digits)}")


def loads(phase: str) -> str:
    got = LOADS.get(phase, [])
    return f"{min(got):.2f}-{max(got):.2f}" if got else "-"


def report(args: argparse.Namespace, fo: Optional[FailoverResult], ld: Optional[LeaderResult],
           tp: Optional[list[Rate]], total: float) -> None:
    if fo is not None or ld is not None:
        print(f"{'':52} {'median':>7} {'min':>7} {'max':>7}   each")
    if fo is not None:
        print(f"1. controller failover: 2 instances on a shared (standalone) northbound, 1 "
              f"chassis, 2 bound guests; the chassis' owner SIGKILLed; load {loads('failover')}")
        quiet = [k for k in fo.kills if k.kind == "quiet"]
        write = [k for k in fo.kills if k.kind == "write"]
        row("  kill -> survivor master + synced, s (quiet)", [k.adopt_s for k in quiet])
        row("  kill -> survivor master + synced, s (write)", [k.adopt_s for k in write])
        row("  kill -> POST port ?wait=true answered, s",
            [k.answer_s for k in write if k.answer_s is not None])
        row("  kill -> that port's flows on br-int, s",
            [k.installed_s for k in write if k.installed_s is not None])
        early = [k for k in write if k.flows_at_answer is not None
                 and k.flows_at_answer <= k.flows_before]
        print(f"    answers: {dict(Counter(k.answer_status for k in write))}; answered before "
              f"br-int held the port's flows (flow count read right after the answer "
              f"unchanged): {len(early)} of {len(write)}")
        row("  survivor's flow_mods at adoption (quiet)",
            [k.flow_mods for k in quiet if k.flow_mods is not None], 0)
        seen = [f"{k.flows_before}->{k.flows_at_answer}->{k.flows_after}" for k in write]
        print(f"    br-int flows before -> after, quiet: "
              f"{', '.join(f'{k.flows_before}->{k.flows_after}' for k in quiet)}; write "
              f"(before -> at the answer -> after): {', '.join(seen)}")
        print(f"    controller.ownership: heartbeat every {HEARTBEAT_S:g} s, an instance dead "
              f"after {DEAD_AFTER_S:g} s without one")
        print(f"    killed in turn: {' '.join(k.killed for k in fo.kills)}")
        if fo.ovn_skipped:
            print(f"  baseline OVN ovn-northd standby -> active: skipped ({fo.ovn_skipped})")
        else:
            row("  baseline: OVN ovn-northd standby -> active, s", fo.ovn, 3)
    if ld is not None:
        print(f"2. northbound leader failover: 3-member raft, 1 instance, 1 client creating "
              f"ports serially; the leader member SIGKILLed; load {loads('leader')}")
        row("  kill -> new leader (survivors' cluster/status), s",
            [k.election_s for k in ld.kills], 3)
        row("  kill -> first create sent after it acknowledged, s",
            [k.first_ack_s for k in ld.kills], 3)
        row("  longest gap between acknowledgements, s", [k.gap_s for k in ld.kills], 3)
        refused: Counter[str] = Counter()
        for k in ld.kills:
            refused.update(k.refused)
        print(f"    refused creates over all kills: {dict(refused) or 'none'}")
        flight = ", ".join("-" if k.in_flight is None else f"{k.in_flight[1]} at "
                           f"{k.in_flight[0]:.3f} s" for k in ld.kills)
        print(f"    the create in flight at each kill, answered: {flight}")
        row("  baseline: raft election alone (no Loom), s", ld.raw, 3)
    if tp is not None:
        print(f"3. port creates/s, {args.ports} per run, serial and {args.clients} clients; "
              f"load {loads('throughput')}")
        print(f"{'':34} {'serial':>8} {f'{args.clients} clients':>10}   each (serial | "
              f"{args.clients} clients)")
        med: dict[tuple[str, str], float] = {}
        for s in SETUPS:
            cells = []
            each = []
            for mode in ("serial", "concurrent"):
                vals = [r.rate for r in tp if r.setup == s and r.mode == mode]
                med[(s, mode)] = median(vals)
                cells.append(med[(s, mode)])
                each.append(fmt(vals, 0))
            print(f"  {s:32} {cells[0]:>8.0f} {cells[1]:>10.0f}   {' | '.join(each)}")
        for s in SETUPS[1:]:
            label = f"ratio {s.replace('clustered', 'cl.')} / embedded"
            print(f"  {label:32} {med[(s, 'serial')] / med[(SETUPS[0], 'serial')]:>8.2f} "
                  f"{med[(s, 'concurrent')] / med[(SETUPS[0], 'concurrent')]:>10.2f}")
        errs: Counter[str] = Counter()
        for r in tp:
            errs.update(r.errors)
        print(f"    non-201 answers over all runs: {dict(errs) or 'none'}")
    notes = (fo.notes if fo else []) + (ld.notes if ld else [])
    if notes:
        print("controller log lines at WARNING or above (first of each instance):")
        for line in notes:
            print(f"  {line[:300]}")
    print(f"medians of {args.repeat}; total {total:.0f} s")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ports", type=int, default=300, help="creates per throughput run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--poll", type=float, default=0.02, help="status poll interval, s")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="pause after a restart before the next kill, s")
    parser.add_argument("--lead-in", type=float, default=2.0,
                        help="seconds of writes before the leader is killed, and after")
    parser.add_argument("--skip-ovn", action="store_true", help="no OVN northd baseline")
    parser.add_argument("--only", nargs="+", choices=PHASES, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work dir and logs")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.repeat < 1 or args.ports < 1 or args.clients < 1:
        parser.error("--repeat, --ports and --clients must be positive")
    if os.geteuid() != 0:
        print("needs root (network namespaces, private OVS)", file=sys.stderr)
        return 2
    for tool in ("ovsdb-server", "ovsdb-tool", "ovs-vswitchd"):
        if shutil.which(tool) is None:
            print(f"{tool} not found", file=sys.stderr)
            return 2
    phases = args.only or list(PHASES)
    command = f"sudo .venv/bin/python -m bench.bench_ha {' '.join(raw)}".rstrip()

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; commit {revision()}; {os.cpu_count()} CPUs; "
          f"1-minute load at start {os.getloadavg()[0]:.2f}", flush=True)
    print(f"command: {command}", flush=True)
    begun = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="lha", dir="/tmp"))
    fo = ld = None
    tp = None
    ok = False
    try:
        if "failover" in phases:
            fo = run_failover(args, base)
        if "leader" in phases:
            ld = run_leader(args, base)
        if "throughput" in phases:
            tp = run_throughput(args, base)
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            _say(f"work dir kept: {base}")
    report(args, fo, ld, tp, time.monotonic() - begun)
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
