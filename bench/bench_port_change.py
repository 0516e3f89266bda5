"""One-port changes at 100 and 10,000 ports, and a restart, through the real controller (issue 11).

For each size N (`--sizes`), side by side in one run:

  The northbound store (the controller's own, in its state dir) is filled directly,
  in one transaction, with N ports over max(1, N/100) networks (`bench_rest_reads.fill`:
  one /24 subnet and 100 ports per network), then `python -m controller` starts on it
  (`tests/integration/test_big_store_start.py` does the same) with one private
  ovs-vswitchd (netdev datapath, in its own namespace) as its one chassis. B = N x
  `--bind-share` of the ports (every 1/share-th port, so every network has bound ports
  and the switch carries all N ports' flows) are bound at once: OVS patch-port pairs
  (br-int <-> br-sink) with `external_ids:iface-id`, 100 pairs per `ovs-vsctl --no-wait`
  call; then the bench waits for all of them ACTIVE and the switch synced.

  Then `--repeat` times, on network r mod networks, each step on an idle controller
  (it used at most one clock tick in each of two 100 ms intervals in a row):
    create       POST /v2.0/ports?wait=true, a fixed IP given (unbound)
    bind         ovs-vsctl --no-wait add-port (a pair, iface-id) returned -> GET
                 /v2.0/ports/<id> answers ACTIVE (polled every 5 ms, keep-alive)
    rename       PUT {name} ?wait=true                      (no flow changes)
    update       PUT {fixed_ips: [a new address]} ?wait=true (the port's flows change)
    delete       DELETE ?wait=true                          (port still bound)
  (the patch pair is removed after the delete, untimed, and the switch left to settle).
  Per step: wall time (client side); then, from before the step until the controller
  is idle again (the engine may go on after the answer), the engine's compile time
  (loom_compile_seconds _sum/_count from /metrics), the controller process's CPU time
  (utime+stime of its pid, all threads) and the flow mods it sent (/v1/switches
  flow_mods_sent).

  Restart: SIGTERM, then `python -m controller` again on the same state dir and
  OpenFlow port, everything still bound. Times from the spawn to /v1/health 200 (up)
  and to the switch connected with synced_generation equal to the store's generation
  (synced); then 3 s more to see the installed flow count stay put. Flow mods the new
  process sent (/v1/switches flow_mods_sent, loom_flow_mods_total) and the switch's
  flow count (`ovs-ofctl -O OpenFlow13 dump-aggregate br-int`). `--restart-bind-share`
  binds more ports first (the first unbound ones, 100 per ovs-vsctl call), for more
  flows. If the flows are not those of before the restart 3 s after "synced", the bench
  waits for them to come back and says when.

    sudo .venv/bin/python -m bench.bench_port_change [--sizes 100 10000] [--repeat 20]
        [--bind-share 0.1] [--restart-bind-share 0.45] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from bench.bench_rest_latency import BIND_TIMEOUT_S, KeepAlive, percentile, wait_active
from bench.bench_rest_reads import PER_NETWORK, fill
from controller.store import EmbeddedOvsdb, NorthboundStore
from topologies.api_client import metric_sum
from topologies.controller_process import ControllerProcess
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

STEPS = ("create", "bind", "rename", "update", "delete")
CHUNK = 100  # patch-port pairs per ovs-vsctl call
# ... when binding more for the restart: each call costs ovs-vsctl a read of the whole
# database (seconds at thousands of ports), so fewer, bigger calls
RESTART_CHUNK = 500
PYSPY = os.environ.get("LOOM_BENCH_PYSPY", "")
IDLE_INTERVAL_S = 0.1
START_TIMEOUT_S = 900.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADS: list[float] = []


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sample_load() -> None:
    LOADS.append(os.getloadavg()[0])


def net_id(k: int) -> str:
    return str(uuid.UUID(int=k + 1))  # as bench_rest_reads.fill names them


def subnet_id(k: int) -> str:
    return str(uuid.UUID(int=0x10000 + k))


def free_address(k: int, r: int, base: int) -> str:
    """An address of network k's /24 that fill() did not hand out (it uses .2 to .101;
    its subnets have no allocation pools, so the bench names the addresses itself)."""
    return f"10.{k // 256}.{k % 256}.{base + r % 50}"


def the_switch(api: KeepAlive) -> dict[str, Any]:
    switches = api.ok("GET", "/v1/switches")["switches"]
    assert len(switches) == 1, switches
    return switches[0]


def store_generation(api: KeepAlive) -> int:
    return int(api.ok("GET", "/v1/health")["store"]["generation"])


def aggregate_flows(hv: OvsInstance) -> int:
    out = hv.ofctl("dump-aggregate", "br-int", timeout=60)
    m = re.search(r"flow_count=(\d+)", out)
    assert m, out
    return int(m.group(1))


def metric(api: KeepAlive, name: str) -> float:
    """Sum of the samples of one metric at /metrics (text exposition)."""
    for attempt in (0, 1):
        try:
            api.conn.request("GET", "/metrics")
            resp = api.conn.getresponse()
            text = resp.read().decode()
            break
        except (http.client.HTTPException, ConnectionError):
            api.conn.close()  # the server closed an idle connection: reconnect once
            api.conn = http.client.HTTPConnection(api.host, api.port, timeout=60)
            if attempt:
                raise
    return metric_sum(text, name)


def bind_pair(hv: OvsInstance, i: int, port_id: str) -> list[str]:
    near, far = f"bp{i}", f"bq{i}"
    return ["--", "add-port", "br-int", near, "--", "set", "Interface", near, "type=patch",
            f"options:peer={far}", f"external_ids:iface-id={port_id}",
            "--", "add-port", "br-sink", far, "--", "set", "Interface", far, "type=patch",
            f"options:peer={near}"]


def count_active(api: KeepAlive) -> int:
    ports = api.ok("GET", "/v2.0/ports?status=ACTIVE&fields=id")["ports"]
    return len(ports)


def wait_until(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(every)
    return time.monotonic() - started


def wait_synced(api: KeepAlive, timeout: float, stable_s: float = 1.0) -> dict[str, Any]:
    """The switch runs the store's latest generation and its installed flow count has
    not moved for `stable_s`."""
    deadline = time.monotonic() + timeout
    last: Optional[tuple[int, int]] = None
    since = time.monotonic()
    while True:
        sw = the_switch(api)
        gen = store_generation(api)
        ok = sw["connected"] and sw["synced_generation"] is not None \
            and sw["synced_generation"] >= gen
        now_ = (sw["installed_flows"], sw["flow_mods_sent"])
        if not ok or now_ != last:
            last, since = now_, time.monotonic()
        elif time.monotonic() - since >= stable_s:
            return sw
        if time.monotonic() > deadline:
            raise TimeoutError(f"switch not synced in {timeout:g} s: {sw} (store {gen})")
        time.sleep(0.1)


def wait_idle(pid: int, timeout: float = 60.0) -> float:
    """Wait until the controller used at most one clock tick in each of two 100 ms
    intervals in a row; returns its CPU time then."""
    deadline = time.monotonic() + timeout
    last, quiet = cpu_s(pid), 0
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(IDLE_INTERVAL_S)
        now = cpu_s(pid)
        quiet = quiet + 1 if now - last <= 1.0 / CLK_TCK else 0
        last = now
    return last


class Step:
    """Counters around one step: wall, compile sum/count, controller CPU, flow mods."""

    def __init__(self, api: KeepAlive, pid: int) -> None:
        self.api, self.pid = api, pid
        self.compile_sum = metric(api, "loom_compile_seconds_sum")
        self.compile_n = metric(api, "loom_compile_seconds_count")
        self.mods = the_switch(api)["flow_mods_sent"]
        self.cpu0 = cpu_s(pid)
        self.t0 = time.perf_counter()
        self.wall = self.cpu = 0.0

    def stop(self, started: Optional[float] = None) -> None:
        """End of the timed part (`started`: a later start of it than the counters')."""
        end = time.perf_counter()
        self.wall = end - (self.t0 if started is None else started)

    def result(self) -> dict[str, float]:
        """Once the controller is idle again (the engine may still work after the answer:
        its compile is counted when it ends): CPU and compile time of the whole step."""
        self.cpu = wait_idle(self.pid) - self.cpu0
        sample_load()
        return {"wall": self.wall, "cpu": self.cpu,
                "compile": metric(self.api, "loom_compile_seconds_sum") - self.compile_sum,
                "compiles": metric(self.api, "loom_compile_seconds_count") - self.compile_n,
                "mods": the_switch(self.api)["flow_mods_sent"] - self.mods}


def bind_many(hv: OvsInstance, api: KeepAlive, ports: list[str], first: int,
              total: Optional[int] = None, chunk: int = CHUNK) -> dict[str, Any]:
    """Bind `ports` (patch pairs numbered from `first`), `chunk` pairs per ovs-vsctl call;
    wait until `total` (default: len(ports)) ports are ACTIVE and the switch is synced."""
    total = len(ports) if total is None else total
    started = time.monotonic()
    for c in range(0, len(ports), chunk):
        args: list[str] = ["--no-wait"]
        for i, port_id in enumerate(ports[c:c + chunk], start=first + c):
            args += bind_pair(hv, i, port_id)
        hv.vsctl(*args, timeout=120)
    out: dict[str, Any] = {"bind_vsctl_s": time.monotonic() - started}
    wait_until(lambda: count_active(api) >= total, 1200, f"{total} bound ports ACTIVE",
               every=0.5)
    out["bind_all_s"] = time.monotonic() - started
    out["bound"] = total
    sw = wait_synced(api, 600)
    out["flows_installed"] = sw["installed_flows"]
    out["flows_switch"] = aggregate_flows(hv)
    sample_load()
    return out


def run_size(n: int, repeat: int, share: float, restart: bool, restart_share: float = 0.0,
             log_level: str = "INFO",
             log_dir: Optional[Path] = None) -> dict[str, Any]:
    n_nets = max(1, -(-n // PER_NETWORK))
    out: dict[str, Any] = {"n": n, "networks": n_nets}
    sandbox = Sandbox()
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-pc"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance("pc", netns=sandbox.add_netns("pc"), workdir=workdir, sandbox=sandbox,
                     system_id="pc")
    state = Path(tempfile.mkdtemp(prefix="loom-bench-pc-"))
    ctl: Optional[ControllerProcess] = None
    api: Optional[KeepAlive] = None
    ok = False
    try:
        db = EmbeddedOvsdb(state)
        db.start()
        try:
            store = NorthboundStore(db.remote).connect(60)
            try:
                started = time.monotonic()
                ids = fill(store, n)
                out["fill_s"] = time.monotonic() - started
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
                                else log_dir / f"controller-{n}.log")
        started = time.monotonic()
        ctl.start(timeout=START_TIMEOUT_S)
        out["start_up_s"] = time.monotonic() - started
        hv.wait_for_bridge("br-int", timeout=120)
        ctl.wait_switches(1, timeout=START_TIMEOUT_S)
        out["start_synced_s"] = time.monotonic() - started
        api = KeepAlive(ctl.rest_port)
        assert ctl.proc is not None
        pid = ctl.proc.pid

        # bind B ports at once, every 1/share-th one (all networks on the switch)
        step = max(1, round(1 / share))
        bound = ids[::step][:max(1, round(n * share))]
        out.update(bind_many(hv, api, bound, 0))

        # one port at a time
        steps: dict[str, list[dict[str, float]]] = {s: [] for s in STEPS}
        for r in range(repeat):
            k = r % n_nets
            s = Step(api, pid)
            port = api.ok("POST", "/v2.0/ports?wait=true",
                          {"port": {"network_id": net_id(k), "name": f"pc{r}",
                                    "fixed_ips": [{"subnet_id": subnet_id(k),
                                                   "ip_address": free_address(k, r, 150)}]}},
                          201)["port"]
            s.stop()
            steps["create"].append(s.result())

            s = Step(api, pid)
            hv.vsctl("--no-wait", *bind_pair(hv, 100_000 + r, port["id"])[1:])
            committed = time.perf_counter()
            wait_active(api, port["id"], BIND_TIMEOUT_S)
            s.stop(committed)
            steps["bind"].append(s.result())

            s = Step(api, pid)
            api.ok("PUT", f"/v2.0/ports/{port['id']}?wait=true",
                   {"port": {"name": f"pc{r}-renamed"}})
            s.stop()
            steps["rename"].append(s.result())

            s = Step(api, pid)
            got = api.ok("PUT", f"/v2.0/ports/{port['id']}?wait=true",
                         {"port": {"fixed_ips": [{"subnet_id": subnet_id(k),
                                                  "ip_address": free_address(k, r, 200)}]}})
            s.stop()
            assert got["port"]["fixed_ips"][0]["ip_address"] == free_address(k, r, 200), got
            steps["update"].append(s.result())

            s = Step(api, pid)
            api.ok("DELETE", f"/v2.0/ports/{port['id']}?wait=true", status=204)
            s.stop()
            steps["delete"].append(s.result())

            near, far = f"bp{100_000 + r}", f"bq{100_000 + r}"
            hv.vsctl("--no-wait", "del-port", "br-int", near, "--", "del-port", "br-sink", far)
            wait_synced(api, 60, stable_s=0.2)
        out["steps"] = steps

        if restart:
            more = max(0, round(n * restart_share) - len(bound))
            if more:  # more flows for the restart
                chosen = set(bound)
                extra = [p for p in ids if p not in chosen][:more]
                out["restart_bind"] = bind_many(hv, api, extra, len(bound),
                                                len(bound) + len(extra), RESTART_CHUNK)
            out["restart"] = do_restart(hv, ctl, state, host_ip, log_level,
                                        profile=None if log_dir is None or not PYSPY
                                        else log_dir / f"restart-{n}.pyspy.txt")
            ctl = out["restart"].pop("ctl")
        ok = True
        return out
    finally:
        if api is not None:
            api.close()
        if ctl is not None:
            ctl.stop()
            if not ok:
                print(f"controller log tail ({ctl.log_path}):\n" + ctl.log_tail(80),
                      file=sys.stderr)
        hv.close(remove_workdir=ok)
        sandbox.cleanup()
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"state dir kept: {state}", file=sys.stderr)


def do_restart(hv: OvsInstance, ctl: ControllerProcess, state: Path,
               host_ip: str, log_level: str, profile: Optional[Path] = None) -> dict[str, Any]:
    """`profile`: sample the new process with py-spy (`LOOM_BENCH_PYSPY`, the py-spy
    binary) from when it is up, 30 s, every thread, idle ones too: collapsed stacks."""
    api = KeepAlive(ctl.rest_port)
    before = the_switch(api)
    gen_before = store_generation(api)
    api.close()
    flows_before = aggregate_flows(hv)
    started = time.monotonic()
    code = ctl.stop()
    stop_s = time.monotonic() - started
    new = ControllerProcess(state, [hv.db_remote], of_host=host_ip, of_port=ctl.of_port,
                            extra_args=("--log-level", log_level), log_path=ctl.log_path)
    res: dict[str, Any] = {"ctl": new, "exit": code, "stop_s": stop_s,
                           "flows_before": flows_before,
                           "installed_before": before["installed_flows"],
                           "generation_before": gen_before}
    started = time.monotonic()
    try:
        new.start(timeout=START_TIMEOUT_S)
        res["up_s"] = time.monotonic() - started
        if profile is not None and new.proc is not None:
            subprocess.Popen([PYSPY, "record", "--pid", str(new.proc.pid), "--duration", "30",
                              "--threads", "--idle", "--rate", "50", "--format", "raw",
                              "--output", str(profile)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = KeepAlive(new.rest_port)
        try:
            while True:
                try:
                    sw = the_switch(api)
                except AssertionError:
                    sw = None  # not connected yet
                gen = store_generation(api)
                if sw is not None and sw["connected"] and sw["synced_generation"] is not None \
                        and sw["synced_generation"] >= gen:
                    break
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise TimeoutError(f"not synced after restart: {sw}")
                time.sleep(0.02)
            res["synced_s"] = time.monotonic() - started
            res["mods_at_synced"] = sw["flow_mods_sent"]
            res["installed_at_synced"] = sw["installed_flows"]
            res["generation_after"] = gen
            time.sleep(3.0)
            sw = the_switch(api)
            res["mods_3s"] = sw["flow_mods_sent"]
            res["bundles_3s"] = sw["bundles"]
            res["installed_3s"] = sw["installed_flows"]
            res["flow_mods_total"] = metric(api, "loom_flow_mods_total")
            res["flows_after"] = aggregate_flows(hv)
            if res["installed_3s"] != before["installed_flows"]:
                # not what was there before the restart: wait for it to come back
                while time.monotonic() - started < START_TIMEOUT_S:
                    sw = the_switch(api)
                    if sw["installed_flows"] == before["installed_flows"]:
                        break
                    time.sleep(0.2)
                res["back_s"] = time.monotonic() - started
                res["mods_back"] = sw["flow_mods_sent"]
                res["installed_back"] = sw["installed_flows"]
        finally:
            api.close()
    except BaseException:
        print(f"restarted controller log tail:\n{new.log_tail(80)}", file=sys.stderr)
        raise
    return res


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def p90(rows: list[dict[str, float]], key: str) -> float:
    return percentile([r[key] for r in rows], 90)


def report(results: list[dict[str, Any]], repeat: int, command: str, total_s: float) -> None:
    small, big = results[0], results[-1]
    two = len(results) > 1
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
          f"median (p90) of {repeat} per step, ms")
    for r in results:
        print(f"N={r['n']}: {r['networks']} network(s), fill {r['fill_s']:.1f} s, controller up "
              f"{r['start_up_s']:.1f} s, switch synced {r['start_synced_s']:.1f} s after the "
              f"spawn; {r['bound']} bound in {r['bind_vsctl_s']:.1f} s of ovs-vsctl, all ACTIVE "
              f"{r['bind_all_s']:.1f} s after the first; switch: {r['flows_installed']} flows "
              f"(controller), {r['flows_switch']} (dump-aggregate)")
    sizes = [r["n"] for r in results]
    cols = [f"N={n}" for n in sizes]
    for title, key, scale in (
            ("wall: the API call (bind: ovs-vsctl returned -> ACTIVE)", "wall", 1000),
            ("engine: loom_compile_seconds sum over the step", "compile", 1000),
            ("controller process CPU (utime+stime), step start to idle", "cpu", 1000)):
        print(f"\n{title}")
        print(f"{'step':8} " + " ".join(f"{c:>20}" for c in cols)
              + (f" {'ratio p50':>10}" if two else ""))
        for s in STEPS:
            cells = [f"{med(r['steps'][s], key) * scale:9.1f} "
                     f"({p90(r['steps'][s], key) * scale:8.1f})" for r in results]
            line = f"{s:8} " + " ".join(f"{c:>20}" for c in cells)
            if two:
                a = med(small["steps"][s], key)
                b = med(big["steps"][s], key)
                line += f" {b / a:9.1f}x" if a > 0 else f" {'-':>10}"
            print(line)
    print("\ncompiles and flow mods per step (median)")
    print(f"{'step':8} " + " ".join(f"{c + ' compiles/mods':>20}" for c in cols))
    for s in STEPS:
        print(f"{s:8} " + " ".join(
            f"{med(r['steps'][s], 'compiles'):>9.0f} / {med(r['steps'][s], 'mods'):<8.0f}"
            .rjust(20) for r in results))
    for r in results:
        rs = r.get("restart")
        if rs is None:
            continue
        rb = r.get("restart_bind")
        if rb is not None:
            print(f"\nbefore the restart at N={r['n']}: {rb['bound'] - r['bound']} more bound in "
                  f"{rb['bind_vsctl_s']:.1f} s of ovs-vsctl, all {rb['bound']} ACTIVE "
                  f"{rb['bind_all_s']:.1f} s after the first; switch: {rb['flows_installed']} "
                  f"flows (controller), {rb['flows_switch']} (dump-aggregate)")
        print(f"\nrestart at N={r['n']} ({(rb or r)['bound']} bound): SIGTERM -> exit "
              f"{rs['exit']} in {rs['stop_s']:.1f} s; spawn -> up {rs['up_s']:.2f} s, -> synced "
              f"{rs['synced_s']:.2f} s; flow_mods sent by then {rs['mods_at_synced']}, 3 s later "
              f"{rs['mods_3s']} ({rs['bundles_3s']} bundles; loom_flow_mods_total "
              f"{rs['flow_mods_total']:.0f}); switch flows before {rs['flows_before']}, after "
              f"{rs['flows_after']} (dump-aggregate); controller's installed "
              f"{rs['installed_before']} -> {rs['installed_3s']}")
        if "back_s" in rs:
            print(f"  NOT the flows of before the restart: {rs['installed_back']} installed "
                  f"{rs['back_s']:.1f} s after the spawn, {rs['mods_back']} flow_mods sent by "
                  "then")
    loads = sorted(LOADS)
    print(f"\n1-minute load average during the run {loads[0]:.1f}-{loads[-1]:.1f} "
          f"(median {statistics.median(loads):.1f}); total {total_s:.0f} s")
    print(f"command: {command}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--bind-share", type=float, default=0.1,
                        help="share of the N ports bound before the steps (0.1: 10%%)")
    parser.add_argument("--restart-bind-share", type=float, default=0.0,
                        help="before the restart, bind more ports, up to this share of N "
                             "(more flows on the switch; default: none more)")
    parser.add_argument("--no-restart", action="store_true", help="skip the restart")
    parser.add_argument("--log-level", default="INFO", help="the controller's")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep the controller's logs here (controller-<N>.log)")
    args = parser.parse_args(argv)
    if not 0 < args.bind_share <= 1:
        parser.error("--bind-share must be in (0, 1]")
    command = "sudo .venv/bin/python -m bench.bench_port_change " + " ".join(
        argv if argv is not None else sys.argv[1:])
    print(f"command: {command}", flush=True)
    started = time.monotonic()
    sizes = sorted(args.sizes)
    results = []
    for n in sizes:
        if args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
        results.append(run_size(n, args.repeat, args.bind_share, not args.no_restart,
                                args.restart_bind_share, args.log_level.upper(), args.log_dir))
        print(f"N={n} done at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    report(results, args.repeat, command, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
