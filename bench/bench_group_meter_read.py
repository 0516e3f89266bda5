"""What one periodic group/meter drift read costs (issue 15; engine.GROUP_METER_PERIOD).

Why: OpenFlow has no monitor for groups and meters, so each switch's worker reads
them every few seconds; that read costs what the switch holds in groups and meters.
Loom installs one punt meter per DHCP port, so a chassis with 10,000 such ports holds
10,000 meters. This installs that many (and some flood groups) on a private OVS, then
times, over several rounds, what the worker does per period: the meter config (or
group desc) request, every reply, ofwire's parse and `drift.group_meter_drift` against
the same state as believed; plus ovs-vswitchd's CPU time (utime + stime) per read.

Run (root: a namespace and OVS): .venv/bin/python -m bench.bench_group_meter_read
[--meters 10000] [--groups 1000] [--rounds 50]

It speaks raw OpenFlow 1.3 to the bridge's management socket (no controller).
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller import ofwire
from controller import pipeline as pl
from controller.drift import group_meter_drift
from controller.flows import Bucket, Group, Meter, Output
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 1, 2, 3
OFPMPF_REPLY_MORE = 1


def _recv(s: socket.socket) -> bytes:
    head = b""
    while len(head) < 8:
        head += s.recv(8 - len(head))
    length = struct.unpack("!H", head[2:4])[0]
    body = b""
    while len(body) < length - 8:
        body += s.recv(length - 8 - len(body))
    return head + body


def _call(s: socket.socket, data: bytes, xid: int, multipart: bool) -> list[bytes]:
    """Send `data`; the replies with `xid` (every part of a multipart reply)."""
    s.sendall(data)
    out = []
    while True:
        msg = _recv(s)
        kind, mxid = msg[1], struct.unpack("!I", msg[4:8])[0]
        if kind == OFPT_ECHO_REQUEST:
            s.sendall(bytes([4, OFPT_ECHO_REPLY]) + msg[2:])
            continue
        if kind == OFPT_ERROR:
            raise RuntimeError(f"switch error for xid {mxid}: {msg[8:12].hex()}")
        if mxid != xid:
            continue
        out.append(msg)
        if not multipart or not struct.unpack("!H", msg[10:12])[0] & OFPMPF_REPLY_MORE:
            return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _time_reads(s: socket.socket, pid: int, rounds: int, request: Callable[[int], bytes],
                compare: Callable[[list[bytes]], Any], xid: int) -> dict[str, float]:
    walls, local = [], []
    cpu0 = _cpu_seconds(pid)
    size = 0
    for _ in range(rounds):
        xid += 1
        t0 = time.perf_counter()
        replies = _call(s, request(xid), xid, True)
        t1 = time.perf_counter()
        drift = compare(replies)
        t2 = time.perf_counter()
        assert not drift, drift
        walls.append(t2 - t0)
        local.append(t2 - t1)
        size = sum(len(r) for r in replies)
    cpu = (_cpu_seconds(pid) - cpu0) / rounds
    walls.sort()
    local.sort()
    return {"median_ms": walls[rounds // 2] * 1e3, "p90_ms": walls[int(rounds * 0.9)] * 1e3,
            "parse_compare_ms": local[rounds // 2] * 1e3, "ovs_cpu_ms": cpu * 1e3,
            "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    meters = {pl.PUNT_METER_BASE + i: Meter(pl.PUNT_METER_BASE + i, pl.PUNT_RATE_PPS,
                                            pl.PUNT_BURST_PACKETS, pps=True)
              for i in range(1, args.meters + 1)}
    groups = {i: Group(i, "all", tuple(Bucket((Output(p),)) for p in (1, 2, 3)))
              for i in range(1, args.groups + 1)}
    gc.freeze()  # the believed state left out of collections, as the controller's is
    sandbox = Sandbox()
    ovs = OvsInstance("gm", netns=sandbox.add_netns("gm"),
                      workdir=DEFAULT_BASE / f"{sandbox.prefix}-gm", sandbox=sandbox,
                      system_id="gm")
    try:
        ovs.start()
        ovs.add_bridge("br-gm")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(ovs.mgmt_socket("br-gm")))
        s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))  # OFPT_HELLO, OpenFlow 1.3
        _recv(s)
        xid = 100
        mods = [ofwire.encode_meter_mod(m, ofwire.OFPMC_ADD, xid + i)
                for i, m in enumerate(meters.values())]
        mods += [ofwire.encode_group_mod(g, ofwire.OFPGC_ADD, 0) for g in groups.values()]
        xid += len(mods) + 1
        _call(s, b"".join(mods) + ofwire.barrier_request(xid), xid, False)
        pid = ovs.vswitchd_pid
        assert pid is not None

        def meter_drift(replies: list[bytes]) -> Any:
            held = {m.meter_id: m for r in replies for m in ofwire.parse_meter_config_reply(r)}
            assert len(held) == len(meters)
            return group_meter_drift({}, {}, meters, held)

        def group_drift(replies: list[bytes]) -> Any:
            held = {g.group_id: g for r in replies for g in ofwire.parse_group_desc_reply(r)}
            assert len(held) == len(groups)
            return group_meter_drift(groups, held, {}, {})

        for what, n, request, compare in (
                ("meters", args.meters, ofwire.meter_config_request, meter_drift),
                ("groups", args.groups, ofwire.group_desc_request, group_drift)):
            r = _time_reads(s, pid, args.rounds, request, compare, xid)
            xid += args.rounds
            print(f"{n} {what}: one read {r['median_ms']:.1f} ms median "
                  f"(p90 {r['p90_ms']:.1f}), {r['bytes']} bytes of replies; of which "
                  f"parse + compare {r['parse_compare_ms']:.1f} ms; ovs-vswitchd CPU "
                  f"{r['ovs_cpu_ms']:.1f} ms per read")
        s.close()
    finally:
        ovs.close(remove_workdir=True)
        sandbox.cleanup()


if __name__ == "__main__":
    main()
