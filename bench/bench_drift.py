"""Drift detection at 100 and 10,000 ports (issue 15): what watching costs, how fast a
flow changed by hand is found and put back.

For each size N (`--sizes`), side by side in one run, the setup of
`bench_port_change` (its helpers, imported): the northbound store filled directly with
N ports over max(1, N/100) networks, the real controller process (`--drift repair`,
the default) on it with one private ovs-vswitchd (netdev datapath, in its own
namespace) as its chassis, and `--bind-share` of the ports bound at once (patch-port
pairs with `iface-id`, 500 per ovs-vsctl call): at 10,000 ports and 0.4, about
100,000 flows. Then, with the switch synced and watched (`GET /v1/verify`):

  idle      `--idle` seconds with nothing happening: CPU time (utime+stime from
            /proc/<pid>/stat) of the controller process and of ovs-vswitchd. Loom has no
            switch to turn the flow monitor off (`--drift` is repair or report), so this
            is the controller's whole idle cost with the monitor on, not the monitor's
            share of it.
  dump      the baseline the issue names, "dump every table every second": for the same
            time, `ovs-ofctl -O OpenFlow13 dump-flows br-int` started once a second
            (right away again if one took longer), its output thrown away. CPU of the
            ovs-ofctl children (rusage from wait4) and of ovs-vswitchd meanwhile; the
            controller's CPU meanwhile too (the dumps change nothing: it should see
            nothing). A controller polling this way would parse the dump itself instead of
            ovs-ofctl printing it; the printing is counted as the parsing's stand-in.
  detect    `--repeat` times each, one after the other:
              add   ovs-ofctl add-flow table=0,priority=65535 (a cookie of its own,
                    a dl_src per repetition), actions=NORMAL
              del   ovs-ofctl --strict del-flows of one of Loom's flows in table 0 (its
                    cookie/-1, priority and match; another port's flow each time)
              mod   ovs-ofctl --strict mod-flows of another of them, actions=drop
            timed from ovs-ofctl's return (its own run time, process start included, is
            not in it): "found" = the DriftItem's found_at (wall clock, ms) as reported
            (stamped when the worker describes what it found: before the repair push at
            da6500a);
            "verify" = GET /v1/verify (one keep-alive connection, polled back to back)
            shows the switch's drift_found grown; "repaired" = ovs-ofctl (filtered by the
            cookie, polled back to back in a second thread) shows the flow gone / back /
            as it was.
  cost      `--repeat` times each again, with no REST polling: controller CPU (and
            ovs-vswitchd's) from before the ovs-ofctl until the switch is repaired
            (ovs-ofctl polled every 50 ms) and the controller idle again (at most one
            clock tick in each of two 100 ms intervals in a row); the idle rate times
            that window is subtracted in a second column.
  soak      (`--soak SECONDS`, optional) churn for that long: ports created (`?wait=true`,
            a security group of the soak's), bound (patch pairs), unbound, deleted,
            rules of that group added and removed (`?wait=true`), and a controller restart
            (SIGTERM, the same state dir and OpenFlow port) at the half; then the switch
            synced, 2 s more, and loom_drift_found_total of both processes, /v1/verify's
            drift_found per switch and chassis, and the items if any. Anything but 0 is
            false drift.

    sudo .venv/bin/python -m bench.bench_drift [--sizes 100 10000] [--bind-share 0.4]
        [--idle 60] [--repeat 5] [--soak SECONDS] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import calendar
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bench.bench_port_change import (
    LOADS,
    RESTART_CHUNK,
    START_TIMEOUT_S,
    aggregate_flows,
    bind_many,
    bind_pair,
    cpu_s,
    free_address,
    metric,
    net_id,
    sample_load,
    subnet_id,
    wait_idle,
    wait_synced,
    wait_until,
)
from bench.bench_rest_latency import KeepAlive
from bench.bench_rest_reads import PER_NETWORK, fill
from controller.store import EmbeddedOvsdb, NorthboundStore
from topologies.controller_process import ControllerProcess
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

KINDS = ("add", "del", "mod")
DETECT_TIMEOUT_S = 30.0
ADD_COOKIE = 0xD1F7_0000_0000_0000  # the hand-added flows' own cookies (+ repetition)
STATS = re.compile(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]*,?\s*")


def ofctl_argv(hv: OvsInstance, *args: str) -> list[str]:
    """ovs-ofctl -O OpenFlow13 ARGS, the bridge (second word) as its mgmt socket, as
    `OvsInstance.ofctl` runs it."""
    opts = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    rest[1] = f"unix:{hv.mgmt_socket(rest[1])}"
    return ["ovs-ofctl", "--timeout=60", "-O", "OpenFlow13", *opts, *rest]


def ofctl(hv: OvsInstance, *args: str) -> str:
    done = subprocess.run(ofctl_argv(hv, *args), env=hv.env, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ovs-ofctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class OfFlow:
    cookie: int
    table: int
    priority: int
    match: str  # as ovs-ofctl prints it, "" for none
    actions: str

    @property
    def spec(self) -> str:
        """cookie/-1, table, priority and match: the flow and only it (with --strict)."""
        parts = [f"cookie={self.cookie:#x}/-1", f"table={self.table}",
                 f"priority={self.priority}"]
        return ",".join(parts + ([self.match] if self.match else []))


def parse_line(line: str) -> Optional[OfFlow]:
    """One line of dump-flows (stats dropped); None for headers."""
    line = STATS.sub("", line.strip())
    if not line or "actions=" not in line or line.startswith(("OFPST", "NXST")):
        return None
    head, _, actions = line.partition(" actions=")
    if not actions:
        head, _, actions = line.partition("actions=")
    fields = [f for f in re.split(r",\s*|\s+", head.strip()) if f]
    cookie, table, priority, match = 0, 0, 32768, []
    for f in fields:
        key, _, value = f.partition("=")
        if key == "cookie":
            cookie = int(value, 16)
        elif key == "table":
            table = int(value)
        elif key == "priority":
            priority = int(value)
        else:
            match.append(f)
    return OfFlow(cookie, table, priority, ",".join(match), actions.strip())


def flows_of(hv: OvsInstance, cookie: int, table: int) -> list[OfFlow]:
    out = ofctl(hv, "dump-flows", "br-int", f"cookie={cookie:#x}/-1,table={table}")
    return [f for f in map(parse_line, out.splitlines()) if f is not None]


def pick_flows(hv: OvsInstance, count: int) -> list[OfFlow]:
    """`count` of Loom's table-0 flows of distinct ports (cookies), each matching an
    in_port and not dropping: a del or a mod of one of them cuts its port off."""
    out = ofctl(hv, "dump-flows", "br-int", "table=0")
    seen: set[int] = set()
    chosen = []
    for f in map(parse_line, out.splitlines()):
        if f is None or not f.cookie or f.cookie in seen or "in_port=" not in f.match \
                or f.actions == "drop":
            continue
        # the flow must be the only one of its key under its cookie (strict del/mod)
        seen.add(f.cookie)
        chosen.append(f)
    random.Random(1).shuffle(chosen)
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} port flows in table 0, {count} wanted")
    return chosen[:count]


@dataclass
class Rig:
    """One size: the filled store, the controller, the chassis."""

    n: int
    sandbox: Sandbox
    hv: OvsInstance
    state: Path
    host_ip: str
    ctl: ControllerProcess
    api: KeepAlive
    ids: list[str]
    bound: list[str]
    log_level: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.ctl.proc is not None
        return self.ctl.proc.pid

    @property
    def vs_pid(self) -> int:
        pid = self.hv.vswitchd_pid
        assert pid is not None
        return pid

    def verify_switch(self) -> dict[str, Any]:
        body = self.api.ok("GET", "/v1/verify")
        (switch,) = body["switches"]
        return switch  # type: ignore[no-any-return]

    def wait_watched(self, timeout: float = 120.0) -> None:
        wait_until(lambda: bool(self.verify_switch()["watched"]), timeout,
                   "the switch watched (flow monitor)", every=0.1)


def setup(n: int, share: float, log_level: str, log_dir: Optional[Path]) -> Rig:
    sandbox = Sandbox()
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-dr"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance("dr", netns=sandbox.add_netns("dr"), workdir=workdir, sandbox=sandbox,
                     system_id="dr")
    state = Path(tempfile.mkdtemp(prefix="loom-bench-drift-"))
    info: dict[str, Any] = {"n": n, "networks": max(1, -(-n // PER_NETWORK))}
    ctl: Optional[ControllerProcess] = None
    try:
        db = EmbeddedOvsdb(state)
        db.start()
        try:
            store = NorthboundStore(db.remote).connect(60)
            try:
                ids = fill(store, n)
            finally:
                store.close()
        finally:
            db.stop()
        hv.start()
        host_ip, _ = hv.add_mgmt_link()
        hv.add_bridge("br-sink")
        ctl = ControllerProcess(state, [hv.db_remote], of_host=host_ip,
                                extra_args=("--log-level", log_level),
                                log_path=None if log_dir is None
                                else log_dir / f"controller-drift-{n}.log")
        started = time.monotonic()
        ctl.start(timeout=START_TIMEOUT_S)
        hv.wait_for_bridge("br-int", timeout=120)
        ctl.wait_switches(1, timeout=START_TIMEOUT_S)
        info["start_synced_s"] = time.monotonic() - started
        api = KeepAlive(ctl.rest_port)
        step = max(1, round(1 / share))
        bound = ids[::step][:max(1, round(n * share))]
        info.update(bind_many(hv, api, bound, 0, chunk=RESTART_CHUNK))
        rig = Rig(n, sandbox, hv, state, host_ip, ctl, api, ids, bound, log_level, info)
        rig.wait_watched()
        return rig
    except BaseException:
        if ctl is not None:
            ctl.stop()
            print(f"controller log tail:\n{ctl.log_tail(60)}", file=sys.stderr)
        hv.close()
        sandbox.cleanup()
        print(f"state dir kept: {state}", file=sys.stderr)
        raise


def teardown(rig: Rig, ok: bool) -> None:
    rig.api.close()
    rig.ctl.stop()
    if not ok:
        print(f"controller log tail ({rig.ctl.log_path}):\n" + rig.ctl.log_tail(80),
              file=sys.stderr)
    rig.hv.close(remove_workdir=ok)
    rig.sandbox.cleanup()
    if ok:
        shutil.rmtree(rig.state, ignore_errors=True)
    else:
        print(f"state dir kept: {rig.state}", file=sys.stderr)


# ---- idle and the dump baseline

def settle(rig: Rig) -> None:
    """The controller idle and ovs-vswitchd past the bind (its revalidators): 5 s more."""
    wait_idle(rig.pid)
    time.sleep(5.0)
    wait_idle(rig.pid)


def idle(rig: Rig, seconds: float) -> dict[str, float]:
    settle(rig)
    found0 = rig.verify_switch()["drift_found"]
    c0, v0, t0 = cpu_s(rig.pid), cpu_s(rig.vs_pid), time.monotonic()
    time.sleep(seconds)
    c1, v1, t1 = cpu_s(rig.pid), cpu_s(rig.vs_pid), time.monotonic()
    sample_load()
    return {"wall": t1 - t0, "ctl": c1 - c0, "vswitchd": v1 - v0,
            "found": rig.verify_switch()["drift_found"] - found0}


def dump_baseline(rig: Rig, seconds: float) -> dict[str, Any]:
    settle(rig)
    argv = ofctl_argv(rig.hv, "dump-flows", "br-int")
    found0 = rig.verify_switch()["drift_found"]
    child = 0.0
    walls: list[float] = []
    c0, v0, t0 = cpu_s(rig.pid), cpu_s(rig.vs_pid), time.monotonic()
    due = t0
    while time.monotonic() - t0 < seconds:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=rig.hv.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
        walls.append(time.perf_counter() - started)
        child += usage.ru_utime + usage.ru_stime
        due += 1.0
        time.sleep(max(0.0, due - time.monotonic()))
    c1, v1, t1 = cpu_s(rig.pid), cpu_s(rig.vs_pid), time.monotonic()
    sample_load()
    return {"wall": t1 - t0, "ctl": c1 - c0, "vswitchd": v1 - v0, "ofctl": child,
            "dumps": len(walls), "dump_wall": statistics.median(walls),
            "dump_wall_max": max(walls),
            "found": rig.verify_switch()["drift_found"] - found0}


# ---- hand changes

@dataclass
class Change:
    kind: str
    args: tuple[str, ...]  # ovs-ofctl's
    repaired: Callable[[], bool]


def make_change(rig: Rig, kind: str, r: int, flow: Optional[OfFlow]) -> Change:
    hv = rig.hv
    if kind == "add":
        cookie = ADD_COOKIE + r
        spec = (f"cookie={cookie:#x},table=0,priority=65535,"
                f"dl_src=02:d1:f7:00:{r >> 8 & 255:02x}:{r & 255:02x},actions=NORMAL")
        return Change(kind, ("add-flow", "br-int", spec),
                      lambda: not flows_of(hv, cookie, 0))
    assert flow is not None
    if kind == "del":
        return Change(kind, ("--strict", "del-flows", "br-int", flow.spec),
                      lambda: flow in flows_of(hv, flow.cookie, flow.table))
    return Change(kind, ("--strict", "mod-flows", "br-int", f"{flow.spec},actions=drop"),
                  lambda: flow in flows_of(hv, flow.cookie, flow.table))


def parse_iso(stamp: str) -> float:
    """found_at ("%Y-%m-%dT%H:%M:%S.mmmZ", UTC) -> seconds since the epoch."""
    whole, _, ms = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(ms or 0) / 1000


def detect_once(rig: Rig, change: Change) -> dict[str, Any]:
    """One hand change; seconds from ovs-ofctl's return to found / in verify / repaired."""
    before = rig.verify_switch()["drift_found"]
    repaired_at: list[float] = []
    stop = threading.Event()
    went_in = threading.Event()

    def watch_switch() -> None:
        went_in.wait()
        while not stop.is_set():
            if change.repaired():
                repaired_at.append(time.monotonic())
                return

    watcher = threading.Thread(target=watch_switch, daemon=True)
    watcher.start()
    started = time.monotonic()
    ofctl(rig.hv, *change.args)
    applied, applied_wall = time.monotonic(), time.time()
    went_in.set()
    report: Optional[dict[str, Any]] = None
    try:
        while time.monotonic() - applied < DETECT_TIMEOUT_S:
            sw = rig.verify_switch()
            if sw["drift_found"] > before:
                report = sw
                break
        seen = time.monotonic()
        if report is None:
            raise TimeoutError(f"{change.kind}: no drift in /v1/verify after "
                               f"{DETECT_TIMEOUT_S:g} s")
        watcher.join(DETECT_TIMEOUT_S)
        if not repaired_at:
            raise TimeoutError(f"{change.kind}: the switch not repaired after "
                               f"{DETECT_TIMEOUT_S:g} s")
    finally:
        stop.set()
        watcher.join(5)
    new = report["drift"][-(report["drift_found"] - before):]
    found_at = min(parse_iso(i["found_at"]) for i in new)
    return {"ofctl": applied - started, "found": found_at - applied_wall,
            "verify": seen - applied, "repaired": repaired_at[0] - applied,
            "items": [(i["kind"], i.get("repaired")) for i in new], "what": new[0]["what"]}


def cost_once(rig: Rig, change: Change, idle_rate: float) -> dict[str, float]:
    """Controller (and ovs-vswitchd) CPU for one hand change, no REST polling."""
    wait_idle(rig.pid)
    c0, v0, t0 = cpu_s(rig.pid), cpu_s(rig.vs_pid), time.monotonic()
    ofctl(rig.hv, *change.args)
    wait_until(change.repaired, DETECT_TIMEOUT_S, f"{change.kind} repaired", every=0.05)
    c1 = wait_idle(rig.pid)
    v1, t1 = cpu_s(rig.vs_pid), time.monotonic()
    return {"ctl": c1 - c0, "ctl_net": c1 - c0 - idle_rate * (t1 - t0),
            "vswitchd": v1 - v0, "window": t1 - t0}


def hand_changes(rig: Rig, repeat: int, idle_rate: float) -> dict[str, Any]:
    flows = pick_flows(rig.hv, 4 * repeat)
    out: dict[str, Any] = {"detect": {k: [] for k in KINDS}, "cost": {k: [] for k in KINDS}}
    used = iter(flows)
    for r in range(repeat):
        for kind in KINDS:
            wait_idle(rig.pid)
            change = make_change(rig, kind, r, None if kind == "add" else next(used))
            out["detect"][kind].append(detect_once(rig, change))
    for r in range(repeat):
        for kind in KINDS:
            change = make_change(rig, kind, repeat + r, None if kind == "add" else next(used))
            out["cost"][kind].append(cost_once(rig, change, idle_rate))
    sample_load()
    sw = rig.verify_switch()
    out["in_sync"] = sw["in_sync"]
    out["flows_after"] = aggregate_flows(rig.hv)
    return out


# ---- soak

def restart(rig: Rig) -> None:
    old = rig.ctl
    old.stop()
    rig.api.close()
    new = ControllerProcess(rig.state, [rig.hv.db_remote], of_host=rig.host_ip,
                            of_port=old.of_port, extra_args=("--log-level", rig.log_level),
                            log_path=old.log_path)
    new.start(timeout=START_TIMEOUT_S)
    rig.ctl = new
    rig.api = KeepAlive(new.rest_port)
    new.wait_switches(1, timeout=START_TIMEOUT_S)
    rig.wait_watched()


def drift_counts(rig: Rig) -> dict[str, Any]:
    body = rig.api.ok("GET", "/v1/verify")
    items = [(s["datapath_id"], d) for s in body["switches"] for d in s["drift"]]
    items += [(c.get("chassis", c.get("name", "?")), d) for c in body["chassis"]
              for d in c["drift"]]
    return {"metric": metric(rig.api, "loom_drift_found_total"),
            "switches": sum(s["drift_found"] for s in body["switches"]),
            "chassis": sum(c.get("drift_found", 0) for c in body["chassis"]),
            "items": items}


def soak(rig: Rig, seconds: float) -> dict[str, Any]:
    rng = random.Random(15)
    api, hv = rig.api, rig.hv
    n_nets = rig.info["networks"]
    sg = api.ok("POST", "/v2.0/security-groups?wait=true",
                {"security_group": {"name": "soak", "project_id": "p0"}}, 201)["security_group"]
    ports: dict[str, Optional[int]] = {}  # id -> patch pair number if bound
    addresses: dict[str, tuple[int, str]] = {}  # id -> (network, address)
    rules: list[str] = []
    ops: dict[str, int] = {}
    counts: list[dict[str, Any]] = []
    at_start = drift_counts(rig)  # the hand changes' drift, before the soak
    serial = 0
    started = time.monotonic()
    restarted = False
    while time.monotonic() - started < seconds:
        if not restarted and time.monotonic() - started >= seconds / 2:
            wait_synced(api, 120, stable_s=0.5)
            counts.append(drift_counts(rig))
            restart(rig)
            api = rig.api
            restarted = True
            ops["restart"] = 1
            continue
        serial += 1
        unbound = [p for p, b in ports.items() if b is None]
        bound = [p for p, b in ports.items() if b is not None]
        choice = rng.choice(
            ["create"] * (3 if len(ports) < 20 else 1)
            + (["bind"] * 2 if unbound else []) + (["unbind"] if bound else [])
            + (["delete"] if ports else []) + ["rule-add"] + (["rule-del"] if rules else []))
        ops[choice] = ops.get(choice, 0) + 1
        if choice == "create":
            k = serial % n_nets
            taken = {a for net, a in addresses.values() if net == k}
            address = next(a for a in (free_address(k, j, 150) for j in range(50))
                           if a not in taken)
            port = api.ok("POST", "/v2.0/ports?wait=true", {"port": {
                "network_id": net_id(k), "project_id": "p0", "name": f"soak{serial}",
                "security_groups": [sg["id"]],
                "fixed_ips": [{"subnet_id": subnet_id(k), "ip_address": address}]}},
                201)["port"]
            ports[port["id"]] = None
            addresses[port["id"]] = (k, address)
        elif choice == "bind":
            pid = rng.choice(unbound)
            hv.vsctl("--no-wait", *bind_pair(hv, 200_000 + serial, pid)[1:])
            ports[pid] = 200_000 + serial
        elif choice == "unbind":
            pid = rng.choice(bound)
            pair = ports[pid]
            hv.vsctl("--no-wait", "del-port", "br-int", f"bp{pair}", "--", "del-port",
                     "br-sink", f"bq{pair}")
            ports[pid] = None
        elif choice == "delete":
            pid = rng.choice(list(ports))
            pair = ports.pop(pid)
            addresses.pop(pid)
            api.ok("DELETE", f"/v2.0/ports/{pid}?wait=true", status=204)
            if pair is not None:
                hv.vsctl("--no-wait", "del-port", "br-int", f"bp{pair}", "--", "del-port",
                         "br-sink", f"bq{pair}")
        elif choice == "rule-add":
            rule = api.ok("POST", "/v2.0/security-group-rules?wait=true", {
                "security_group_rule": {"security_group_id": sg["id"], "project_id": "p0",
                                        "direction": "ingress", "ethertype": "IPv4",
                                        "protocol": "tcp",
                                        "port_range_min": 1000 + serial % 5000,
                                        "port_range_max": 1000 + serial % 5000}},
                201)["security_group_rule"]
            rules.append(rule["id"])
        else:
            rid = rules.pop(rng.randrange(len(rules)))
            api.ok("DELETE", f"/v2.0/security-group-rules/{rid}?wait=true", status=204)
    wait_synced(api, 300, stable_s=0.5)
    time.sleep(2.0)
    counts.append(drift_counts(rig))
    sample_load()
    first = counts[0]
    first["metric"] -= at_start["metric"]
    first["switches"] -= at_start["switches"]
    first["chassis"] -= at_start["chassis"]
    first["items"] = first["items"][len(at_start["items"]):]
    return {"seconds": time.monotonic() - started, "ops": ops, "counts": counts,
            "in_sync": rig.verify_switch()["in_sync"],
            "ports_left": len(ports), "bound_left": sum(b is not None for b in ports.values())}


# ---- the run

def run_size(n: int, share: float, idle_s: float, repeat: int, soak_s: float,
             log_level: str, log_dir: Optional[Path]) -> dict[str, Any]:
    started = time.monotonic()
    rig = setup(n, share, log_level, log_dir)
    ok = False
    try:
        out: dict[str, Any] = dict(rig.info)
        out["setup_s"] = time.monotonic() - started
        print(f"N={n}: {out['flows_switch']} flows, set up in {out['setup_s']:.0f} s",
              file=sys.stderr, flush=True)
        rate = 0.0
        if idle_s > 0:
            out["idle"] = idle(rig, idle_s)
            out["dump"] = dump_baseline(rig, idle_s)
            rate = out["idle"]["ctl"] / out["idle"]["wall"]
        out["hand"] = hand_changes(rig, repeat, rate)
        if soak_s > 0:
            out["soak"] = soak(rig, soak_s)
        ok = True
        return out
    finally:
        teardown(rig, ok)


def mmr(values: list[float], scale: float = 1000.0, fmt: str = ".0f") -> str:
    """median (min-max)"""
    return (f"{statistics.median(values) * scale:{fmt}} "
            f"({min(values) * scale:{fmt}}-{max(values) * scale:{fmt}})")


def report(results: list[dict[str, Any]], repeat: int, command: str, total_s: float) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
          "--drift repair (the default)")
    for r in results:
        print(f"N={r['n']}: {r['networks']} network(s), {r['bound']} bound; switch: "
              f"{r['flows_installed']} flows (controller), {r['flows_switch']} "
              f"(dump-aggregate); set up in {r['setup_s']:.0f} s")
    cols = [f"N={r['n']}" for r in results]
    w = 22
    if all("idle" in r for r in results):
        idle_report(results, cols, w)
    detect_report(results, cols, w, repeat)
    loads = sorted(LOADS)
    print(f"\n1-minute load average during the run {loads[0]:.1f}-{loads[-1]:.1f} "
          f"(median {statistics.median(loads):.1f}); total {total_s:.0f} s")
    print(f"command: {command}")


def idle_report(results: list[dict[str, Any]], cols: list[str], w: int) -> None:
    print("\nidle, CPU seconds per minute (over "
          + ", ".join(f"{r['idle']['wall']:.0f} s" for r in results) + ")")
    print(f"{'':46}" + "".join(f"{c:>{w}}" for c in cols))

    def row(label: str, get: Callable[[dict[str, Any]], float]) -> None:
        print(f"{label:46}" + "".join(f"{get(r):>{w}.3f}" for r in results))

    row("Loom, monitor on: controller process", lambda r: r["idle"]["ctl"] * 60
        / r["idle"]["wall"])
    row("Loom, monitor on: ovs-vswitchd", lambda r: r["idle"]["vswitchd"] * 60
        / r["idle"]["wall"])
    row("Loom, monitor on: total", lambda r: (r["idle"]["ctl"] + r["idle"]["vswitchd"]) * 60
        / r["idle"]["wall"])
    row("dump-flows every 1 s: ovs-ofctl", lambda r: r["dump"]["ofctl"] * 60
        / r["dump"]["wall"])
    row("dump-flows every 1 s: ovs-vswitchd", lambda r: r["dump"]["vswitchd"] * 60
        / r["dump"]["wall"])
    row("dump-flows every 1 s: total (ofctl+vswitchd)",
        lambda r: (r["dump"]["ofctl"] + r["dump"]["vswitchd"]) * 60 / r["dump"]["wall"])
    row("  (controller meanwhile, idle beside it)", lambda r: r["dump"]["ctl"] * 60
        / r["dump"]["wall"])
    print(f"{'  dumps done; median (max) dump wall, ms':46}" + "".join(
        f"{r['dump']['dumps']:>4} {r['dump']['dump_wall'] * 1000:>8.0f} "
        f"({r['dump']['dump_wall_max'] * 1000:>5.0f})".rjust(w) for r in results))
    print(f"{'  drift found meanwhile (idle / dumps)':46}" + "".join(
        f"{r['idle']['found']} / {r['dump']['found']}".rjust(w) for r in results))


def detect_report(results: list[dict[str, Any]], cols: list[str], w: int, repeat: int) -> None:

    print(f"\ndetection, ms from ovs-ofctl's return, median (min-max) of {repeat}")
    print(f"{'':46}" + "".join(f"{c:>{w}}" for c in cols))
    for kind, label in (("add", "add-flow priority 65535"),
                        ("del", "--strict del-flows of a Loom flow"),
                        ("mod", "--strict mod-flows of one, actions=drop")):
        print(label)
        for key, what in (("found", "found (item's found_at, ms clock)"),
                          ("verify", "in GET /v1/verify (polled)"),
                          ("repaired", "repaired on the switch (ovs-ofctl polled)"),
                          ("ofctl", "(ovs-ofctl's own run, not counted)")):
            print(f"  {what:44}" + "".join(
                mmr([d[key] for d in r["hand"]["detect"][kind]]).rjust(w) for r in results))
        print(f"  {'items reported (first rep)':44}" + "".join(
            ",".join(f"{k}{'' if rep else ' (not repaired)'}"
                     for k, rep in r["hand"]["detect"][kind][0]["items"]).rjust(w)
            for r in results))
    print("each repetition, in order: found / verify / repaired, ms")
    for r in results:
        for kind in KINDS:
            print(f"  N={r['n']} {kind}: " + "  ".join(
                f"{d['found'] * 1000:.0f}/{d['verify'] * 1000:.0f}/{d['repaired'] * 1000:.0f}"
                for d in r["hand"]["detect"][kind]))
    print(f"\none hand change, CPU ms from the ovs-ofctl to repaired and idle again, "
          f"median (min-max) of {repeat}")
    print(f"{'':46}" + "".join(f"{c:>{w}}" for c in cols))
    for kind in KINDS:
        for key, what in (("ctl", "controller"), ("ctl_net", "controller minus idle rate"),
                          ("vswitchd", "ovs-vswitchd"), ("window", "(window, ms)")):
            print(f"  {kind + ': ' + what:44}" + "".join(
                mmr([c[key] for c in r["hand"]["cost"][kind]]).rjust(w) for r in results))
    for r in results:
        print(f"N={r['n']} after the hand changes: in_sync {r['hand']['in_sync']}, switch "
              f"{r['hand']['flows_after']} flows (before {r['flows_switch']}); e.g. "
              f"{r['hand']['detect']['mod'][0]['what'][:150]}")
    for r in results:
        s = r.get("soak")
        if s is None:
            continue
        ops = ", ".join(f"{k} {v}" for k, v in sorted(s["ops"].items()))
        halves = "; ".join(
            f"{'before the restart' if i == 0 and len(s['counts']) > 1 else 'at the end'}: "
            f"loom_drift_found_total {c['metric']:.0f}, /v1/verify drift_found switches "
            f"{c['switches']} chassis {c['chassis']}" for i, c in enumerate(s["counts"]))
        print(f"\nsoak at N={r['n']}, {s['seconds']:.0f} s: {ops}; drift found since the soak "
              f"began, {halves}; in_sync "
              f"{s['in_sync']}; {s['ports_left']} soak ports left ({s['bound_left']} bound)")
        for c in s["counts"]:
            for where, item in c["items"]:
                print(f"  FALSE DRIFT? {where}: {item}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--bind-share", type=float, default=0.4,
                        help="share of the N ports bound (0.4 at 10,000: ~100,000 flows)")
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds of the idle and of the dump-baseline measurement each "
                             "(0: neither)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="hand changes of each kind, timed and costed each")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="then churn for this long (a restart at the half) and report "
                             "the drift found (must be 0)")
    parser.add_argument("--log-level", default="INFO", help="the controller's")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep the controller's logs here (controller-drift-<N>.log)")
    args = parser.parse_args(argv)
    if not 0 < args.bind_share <= 1:
        parser.error("--bind-share must be in (0, 1]")
    command = "sudo .venv/bin/python -m bench.bench_drift " + " ".join(
        argv if argv is not None else sys.argv[1:])
    print(f"command: {command}", flush=True)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = []
    for n in sorted(args.sizes):
        results.append(run_size(n, args.bind_share, args.idle, args.repeat, args.soak,
                                args.log_level.upper(), args.log_dir))
        print(f"N={n} done at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    report(results, args.repeat, command, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
