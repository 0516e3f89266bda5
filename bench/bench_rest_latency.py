"""REST-to-installed latency: how long an operator waits, through the real controller process.

One private ovs-vswitchd (netdev datapath, in its own namespace, reached over a
management veth) is managed by `python -m controller` started as an operator
would. One network (/16) with one bound guest, then:

  (a) 500 ports created one by one with `?wait=true`: each answer comes back only
      once the switch has the port's ARP-responder flow (bundle committed,
      barrier-confirmed). Wall time of each request, client side.
  (b) 100 of those ports bound by adding an OVS patch port (pair) with
      `external_ids:iface-id=<port id>`: time from the `ovs-vsctl --no-wait`
      commit (ovs-vsctl returned: the OVSDB server acknowledged the transaction)
      to `GET /v2.0/ports/<id>` answering `status: ACTIVE` (polled every 5 ms over a
      keep-alive connection). That is: ovs-vswitchd assigns an ofport, the
      controller's chassis IDL sees it, the topology and compiler run, the
      reconciler commits the port's flows.
  For comparison, 2 x 25 more ports are then created alternately with and without
  `?wait`, each once the engine is idle again.
  (c) baseline: one `ovs-ofctl -O OpenFlow13 --bundle add-flows` of one bound port's
      flows (as `GET /v1/switches/<dpid>/flows` prints them) into a like bridge of
      the same ovs-vswitchd, median of 20; process start-up included.

    sudo .venv/bin/python -m bench.bench_rest_latency [--ports 500] [--bind 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from topologies.controller_process import ControllerProcess
from topologies.guest import Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

POLL_S = 0.005
BIND_TIMEOUT_S = 20.0
CIDR = "10.77.0.0/16"


class KeepAlive:
    """A JSON client on one persistent HTTP/1.1 connection (polling must not pay a connect)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()  # the server closed an idle connection: reconnect once
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, parsed = self.call(method, path, body)
        if got != status:
            raise RuntimeError(f"{method} {path}: HTTP {got}: {parsed}")
        return parsed

    def close(self) -> None:
        self.conn.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values),
            "mean": statistics.fmean(values)}


def wait_active(api: KeepAlive, port_id: str, timeout: float) -> float:
    """Poll every POLL_S until the port is ACTIVE; returns perf_counter() at the ACTIVE answer."""
    deadline = time.perf_counter() + timeout
    while True:
        status = api.ok("GET", f"/v2.0/ports/{port_id}?fields=status")["port"]["status"]
        now = time.perf_counter()
        if status == "ACTIVE":
            return now
        if now > deadline:
            raise TimeoutError(f"port {port_id} still {status} after {timeout:g}s")
        time.sleep(POLL_S)


def run(n_ports: int, n_bind: int, ofctl_repeat: int, n_nowait: int = 25) -> dict[str, Any]:
    sandbox = Sandbox()
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-lat"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance("lat", netns=sandbox.add_netns("lat"), workdir=workdir, sandbox=sandbox,
                     system_id="lat")
    state = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    ctl: Optional[ControllerProcess] = None
    guest: Optional[Guest] = None
    api: Optional[KeepAlive] = None
    ok = False
    try:
        hv.start()
        host_ip, _ = hv.add_mgmt_link()
        ctl = ControllerProcess(state, [hv.db_remote], of_host=host_ip,
                                extra_args=("--log-level", "INFO"))
        ctl.start()
        hv.wait_for_bridge("br-int", timeout=20)
        [switch] = ctl.wait_switches(1)
        dpid = switch["datapath_id"]
        hv.add_bridge("br-sink")  # far ends of the patch ports
        hv.add_bridge("br-base")  # the ovs-ofctl baseline's bridge
        api = KeepAlive(ctl.rest_port)

        net = api.ok("POST", "/v2.0/networks", {"network": {"name": "bench"}}, 201)["network"]
        api.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": CIDR,
                                                     "ip_version": 4}}, 201)
        first = api.ok("POST", "/v2.0/ports?wait=true",
                       {"port": {"network_id": net["id"], "name": "guest"}}, 201)["port"]
        ip = first["fixed_ips"][0]["ip_address"]
        guest = Guest("g0", first["mac_address"], f"{ip}/16", sandbox=sandbox, ovs=hv,
                      bridge="br-int", port_id=first["id"])
        wait_active(api, first["id"], BIND_TIMEOUT_S)

        # (a) create with ?wait=true
        created: list[dict[str, Any]] = []
        create_s: list[float] = []
        for i in range(n_ports):
            body = {"port": {"network_id": net["id"], "name": f"lat{i}"}}
            started = time.perf_counter()
            port = api.ok("POST", "/v2.0/ports?wait=true", body, 201)["port"]
            create_s.append(time.perf_counter() - started)
            created.append(port)
            if i in (0, n_ports - 1):  # spot check, untimed: ?wait=true means installed
                tpa = port["fixed_ips"][0]["ip_address"]
                assert hv.dump_flows("br-int", f"table=20,arp,arp_tpa={tpa}", stats=False), \
                    f"no ARP-responder flow for {tpa} when ?wait=true answered"
        arp_flows = len(hv.dump_flows("br-int", "table=20", stats=False))
        assert arp_flows >= n_ports + 1, f"only {arp_flows} ARP-responder flows installed"

        # (b) bind: patch-port pair, iface-id on the br-int end
        bind_s: list[float] = []
        vsctl_s: list[float] = []
        for i, port in enumerate(created[:n_bind]):
            near, far = f"lp{i}", f"lq{i}"
            started = time.perf_counter()
            hv.vsctl("--no-wait",
                     "add-port", "br-int", near, "--", "set", "Interface", near, "type=patch",
                     f"options:peer={far}", f"external_ids:iface-id={port['id']}",
                     "--", "add-port", "br-sink", far, "--", "set", "Interface", far,
                     "type=patch", f"options:peer={near}")
            committed = time.perf_counter()
            vsctl_s.append(committed - started)
            bind_s.append(wait_active(api, port["id"], BIND_TIMEOUT_S) - committed)

        # for the reading: POST with and without ?wait, alternating, each sent on an idle
        # engine (the previous port's flow is on the switch and 20 ms have passed)
        paired: dict[bool, list[float]] = {True: [], False: []}
        for i in range(2 * n_nowait):
            wait = i % 2 == 0
            body = {"port": {"network_id": net["id"], "name": f"cmp{i}"}}
            started = time.perf_counter()
            resp = api.ok("POST", "/v2.0/ports?wait=true" if wait else "/v2.0/ports", body, 201)
            paired[wait].append(time.perf_counter() - started)
            tpa = resp["port"]["fixed_ips"][0]["ip_address"]
            while not hv.dump_flows("br-int", f"table=20,arp,arp_tpa={tpa}", stats=False):
                time.sleep(POLL_S)
            time.sleep(0.02)

        # (c) baseline: one port's flows through ovs-ofctl --bundle
        listing = api.ok("GET", f"/v1/switches/{dpid}/flows")["flows"]
        own = [f["flow"] for f in listing if f["owner"]["id"] == created[0]["id"]]
        assert own, "no flows owned by a bound port"
        flow_file = state / "one-port.flows"
        flow_file.write_text("\n".join(own) + "\n")
        ofctl_s: list[float] = []
        for _ in range(ofctl_repeat):
            hv.ofctl("del-flows", "br-base")
            started = time.perf_counter()
            hv.ofctl("--bundle", "add-flows", "br-base", str(flow_file))
            ofctl_s.append(time.perf_counter() - started)
        compiles = ctl.api.metric("loom_compile_seconds_count")
        compile_mean = ctl.api.metric("loom_compile_seconds_sum") / max(1.0, compiles)
        installed = len(hv.dump_flows("br-base", stats=False))
        assert installed == len(own), f"br-base holds {installed} flows, expected {len(own)}"
        ok = True
        return {
            "create": summary(create_s), "bind": summary(bind_s),
            "idle_wait": summary(paired[True]) if n_nowait else None,
            "idle_nowait": summary(paired[False]) if n_nowait else None,
            "vsctl_median": statistics.median(vsctl_s),
            "ofctl_median": statistics.median(ofctl_s), "ofctl_n": ofctl_repeat,
            "port_flows": len(own), "switch_flows": len(listing),
            "compiles": int(compiles), "compile_mean": compile_mean,
        }
    finally:
        if api is not None:
            api.close()
        if guest is not None:
            guest.close()
        if ctl is not None:
            ctl.stop()
            if not ok:
                print("controller log tail:\n" + ctl.log_tail(60), file=sys.stderr)
        hv.close(remove_workdir=ok)
        sandbox.cleanup()
        shutil.rmtree(state, ignore_errors=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=500, help="ports created with ?wait=true")
    parser.add_argument("--bind", type=int, default=100, help="of those, ports bound")
    parser.add_argument("--ofctl-repeat", type=int, default=20)
    parser.add_argument("--nowait", type=int, default=25,
                        help="after (b), this many ports created with and as many without "
                             "?wait, alternating, on an idle engine (0: none)")
    args = parser.parse_args(argv)
    if not 0 < args.bind <= args.ports:
        parser.error("--bind must be between 1 and --ports")
    started = time.monotonic()
    r = run(args.ports, args.bind, args.ofctl_repeat, args.nowait)
    print(f"command: sudo .venv/bin/python -m bench.bench_rest_latency --ports {args.ports} "
          f"--bind {args.bind} --ofctl-repeat {args.ofctl_repeat} --nowait {args.nowait}")
    print(f"{'':44} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, key in (("(a) POST /v2.0/ports?wait=true", "create"),
                       ("(b) ovs-vsctl commit -> port status ACTIVE", "bind")):
        s = r[key]
        print(f"{label:44} {s['n']:>4} {ms(s['p50'])} {ms(s['p90'])} {ms(s['p99'])} "
              f"{ms(s['max'])}")
    for label, key in (("    after (b), idle engine: POST ?wait=true", "idle_wait"),
                       ("    after (b), idle engine: POST, no wait", "idle_nowait")):
        s = r[key]
        if s is not None:
            print(f"{label:44} {s['n']:>4} {ms(s['p50'])} {ms(s['p90'])} {ms(s['p99'])} "
                  f"{ms(s['max'])}")
    print(f"{'(c) ovs-ofctl --bundle add-flows, 1 port':44} {r['ofctl_n']:>4} "
          f"{ms(r['ofctl_median'])}   (median; {r['port_flows']} flows, process start "
          "included)")
    print(f"ovs-vsctl --no-wait add-port (pair) itself: median {r['vsctl_median'] * 1000:.1f} "
          f"ms, not in (b); switch held {r['switch_flows']} flows at the end; "
          f"total run {time.monotonic() - started:.0f} s")
    print(f"controller compiles: {r['compiles']}, mean {r['compile_mean'] * 1000:.1f} ms "
          "(loom_compile_seconds, whole switch, runs beside the requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
