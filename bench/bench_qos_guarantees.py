"""QoS limits and minimum guarantees across hypervisors (issue 16), against line rate.

The multi-host lab of tests/integration/test_qos_overlay.py (its ``SPEC``: three
hypervisors as namespaces, each with its own OVS, userspace datapath, the real
controller, guests on a VXLAN network), iperf3 TCP between guests with that file's
and tests/integration/test_qos.py's helpers (``parallel_iperf``: Mbit/s of payload
received, what the guest sees; ``-O 2``). Each scenario is run ``--repeats`` times
for ``--seconds`` s; the table shows the median per sender (and every run), first
with no policy on any port (the baseline: the same senders, receivers and streams
at line rate), then with the policies, in the same run:

  limits      mover (hv1) egress and ingress limited to 20 Mbit/s: mover -> recv
              (hv2) with 1 and 4 streams (its meter), gold -> mover (both hv1) with
              1 and 4 streams (its linux-htb row)
  2 minimums  recv (hv2) ingress-limited to 30, gold (hv1) 20 and bronze (hv1) 6
              guaranteed: gold alone, greedy (hv3, no minimum) alone with 4 streams,
              gold 1 stream / 4 streams against bronze 4 and greedy 4
  3 minimums  the same and silver (hv3) 2: gold 2 streams, bronze 4, silver 4,
              greedy 4

"configured" is in Mbit/s of Ethernet frames (what meters and linux-htb count, see
docs/QOS.md), so payload lands about 4.5% under it. The lab is always torn down.

    sudo .venv/bin/python -m bench.bench_qos_guarantees [--repeats 3] [--seconds 20] [--quick]
        [--only limits "2 minimums" "3 minimums"]
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from controller.compiler.qos import share_caps
from topologies.lab import Lab

# The lab spec and helpers of the integration tests, imported (not copied). Through
# importlib so that `mypy bench` does not type-check the test files themselves.
_overlay = importlib.import_module("tests.integration.test_qos_overlay")
_single = importlib.import_module("tests.integration.test_qos")
SPEC: dict[str, Any] = _overlay.SPEC
LIMIT: float = _overlay.LIMIT  # Mbit/s into recv
GOLD: float = _overlay.GOLD
BRONZE: float = _overlay.BRONZE
SILVER: float = _overlay.SILVER
_policy: Callable[[Lab, str, list[tuple[str, dict[str, Any]]]], str] = _overlay._policy
_attach: Callable[[Lab, str, Optional[str]], None] = _overlay._attach
_detach_all: Callable[..., None] = _overlay._detach_all
_meters: Callable[[Lab, str], dict[int, str]] = _overlay._meters
_qos_rows: Callable[[Lab, str], set[str]] = _overlay._qos_rows
_wait_for: Callable[..., None] = _single._wait_for
parallel_iperf: Callable[..., list[float]] = _single.parallel_iperf

OMIT = 2  # iperf3 -O: seconds of slow start left out of each run
FIRST_PORT = 5500
EDGE_LIMIT = 20.0  # Mbit/s, mover's egress and ingress limits


@dataclass
class Scenario:
    phase: str
    name: str
    flows: list[tuple[str, str, int]]  # (sender, receiver, streams)
    configured: list[str]  # per flow, Mbit/s of frames
    total: str = ""  # configured total into the receiver, when one is set
    baseline: list[list[float]] = field(default_factory=list)  # runs, a rate per flow
    limited: list[list[float]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


def _mbit(kbps: int) -> str:
    return f"{kbps / 1000:.3g}"


def scenarios() -> list[Scenario]:
    limit = int(LIMIT * 1000)
    (gold2, _bronze2), rest2 = share_caps(limit, [int(GOLD * 1000), int(BRONZE * 1000)])
    _caps3, rest3 = share_caps(limit, [int(GOLD * 1000), int(BRONZE * 1000),
                                       int(SILVER * 1000)])
    lim = f"limit {EDGE_LIMIT:g}"
    total = f"limit {LIMIT:g}"
    g, b, s = (f"min {GOLD:g}", f"min {BRONZE:g}", f"min {SILVER:g}")
    return [
        Scenario("limits", "egress, mover > recv, 1 stream", [("mover", "recv", 1)], [lim]),
        Scenario("limits", "egress, mover > recv, 4 streams", [("mover", "recv", 4)], [lim]),
        Scenario("limits", "ingress, gold > mover, 1 stream", [("gold", "mover", 1)], [lim]),
        Scenario("limits", "ingress, gold > mover, 4 streams", [("gold", "mover", 4)], [lim]),
        Scenario("2 minimums", "gold alone", [("gold", "recv", 1)],
                 [f"cap {_mbit(gold2)}"], total),
        Scenario("2 minimums", "greedy alone, 4 streams", [("greedy", "recv", 4)],
                 [f"rest {_mbit(rest2)}"], total),
        Scenario("2 minimums", "gold 1, bronze 4, greedy 4",
                 [("gold", "recv", 1), ("bronze", "recv", 4), ("greedy", "recv", 4)],
                 [g, b, f"rest {_mbit(rest2)}"], total),
        Scenario("2 minimums", "gold 4, bronze 4, greedy 4",
                 [("gold", "recv", 4), ("bronze", "recv", 4), ("greedy", "recv", 4)],
                 [g, b, f"rest {_mbit(rest2)}"], total),
        Scenario("3 minimums", "gold 2, bronze 4, silver 4, greedy 4",
                 [("gold", "recv", 2), ("bronze", "recv", 4), ("silver", "recv", 4),
                  ("greedy", "recv", 4)],
                 [g, b, s, f"rest {_mbit(rest3)}"], total),
    ]


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _runs(lab: Lab, sc: Scenario, repeats: int, seconds: int) -> list[list[float]]:
    g = lab.guests
    flows = [(g[src], g[dst], FIRST_PORT + i, n) for i, (src, dst, n) in enumerate(sc.flows)]
    runs = []
    for _ in range(repeats):
        sc.load.append(os.getloadavg()[0])
        runs.append(parallel_iperf(flows, seconds=seconds, omit=OMIT))
    sc.load.append(os.getloadavg()[0])
    return runs


def _apply(lab: Lab, phase: str) -> None:
    """Attach `phase`'s policies and wait until the switches hold them."""
    kbps = {name: int(rate * 1000) for name, rate in
            (("gold", GOLD), ("bronze", BRONZE), ("silver", SILVER))}
    if phase == "limits":
        pol = _policy(lab, "mover-20m", [
            ("bandwidth_limit", {"max_kbps": int(EDGE_LIMIT * 1000)}),
            ("bandwidth_limit", {"max_kbps": int(EDGE_LIMIT * 1000), "direction": "ingress"})])
        _attach(lab, "mover", pol)
        _wait_for(lambda: len(_qos_rows(lab, "hv1")) == 1 and len(_meters(lab, "hv1")) == 1)
        return
    senders = ["gold", "bronze"] + (["silver"] if phase == "3 minimums" else [])
    limit = _policy(lab, "recv-30m", [("bandwidth_limit", {"max_kbps": int(LIMIT * 1000),
                                                            "direction": "ingress"})])
    _attach(lab, "recv", limit)
    for name in senders:
        _attach(lab, name, _policy(lab, name, [("minimum_bandwidth",
                                                {"min_kbps": kbps[name]})]))
    # recv's chassis holds a share meter per guaranteed sender and one for the rest
    _wait_for(lambda: len(_qos_rows(lab, "hv2")) == 1
              and len(_meters(lab, "hv2")) == len(senders) + 1)


def _detach(lab: Lab) -> None:
    _detach_all(lab, "mover", "recv", "gold", "bronze", "silver")


def run(lab: Lab, todo: list[Scenario], repeats: int, seconds: int) -> None:
    for phase in dict.fromkeys(sc.phase for sc in todo):
        mine = [sc for sc in todo if sc.phase == phase]
        _detach(lab)
        for sc in mine:
            sc.baseline = _runs(lab, sc, repeats, seconds)
            _say(f"{phase}: {sc.name}: no policy {sc.baseline}")
        _apply(lab, phase)
        for sc in mine:
            sc.limited = _runs(lab, sc, repeats, seconds)
            _say(f"{phase}: {sc.name}: policy {sc.limited}")
    _detach(lab)  # and wait until no meter and no QoS row is left on any hypervisor


# -- report -------------------------------------------------------------------------------

def _median(runs: list[list[float]], i: int) -> float:
    return statistics.median(r[i] for r in runs)


def _each(runs: list[list[float]], i: int) -> str:
    return ", ".join(f"{r[i]:.2f}" for r in runs)


def report(rows: list[Scenario], argv: list[str], args: argparse.Namespace,
           lab_s: float, total_s: float) -> None:
    print(f"command: sudo .venv/bin/python -m bench.bench_qos_guarantees {' '.join(argv)}"
          .rstrip())
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs; lab up in "
          f"{lab_s:.0f} s; median of {args.repeats} run(s) of {args.seconds} s "
          f"(iperf3 -O {OMIT}) per row")
    head = (f"{'phase':10} {'scenario':36} {'sender > receiver':17} {'-P':>2} "
            f"{'configured':>10} {'no policy':>9} {'policy':>7}  policy, each run")
    print(head)
    for sc in rows:
        for i, ((src, dst, n), conf) in enumerate(zip(sc.flows, sc.configured, strict=True)):
            phase, name = (sc.phase, sc.name) if i == 0 else ("", "")
            print(f"{phase:10} {name:36} {src + ' > ' + dst:17} {n:>2} {conf:>10} "
                  f"{_median(sc.baseline, i):>9.2f} {_median(sc.limited, i):>7.2f}  "
                  f"({_each(sc.limited, i)})")
        if sc.total:
            sums_b = [sum(r) for r in sc.baseline]
            sums_l = [sum(r) for r in sc.limited]
            print(f"{'':10} {'':36} {'total > recv':17} {'':>2} {sc.total:>10} "
                  f"{statistics.median(sums_b):>9.2f} {statistics.median(sums_l):>7.2f}  "
                  f"({', '.join(f'{x:.2f}' for x in sums_l)})")
    loads = [x for sc in rows for x in sc.load]
    print(f"1-minute load average during the runs {min(loads):.1f}-{max(loads):.1f} "
          f"(median {statistics.median(loads):.1f}); total {total_s:.0f} s")
    print("Mbit/s of TCP payload received (iperf3 goodput); configured: Mbit/s of Ethernet "
          "frames (limit: meter or linux-htb rate; cap / rest: the share meters on recv's "
          "chassis; min: the guarantee), so payload is at most 95.5% of it on this overlay "
          "(MTU 1450). no policy: the same flows, no QoS policy on any port, same lab, "
          "same run. hv1: mover, gold, bronze; hv2: recv; hv3: silver, greedy")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--seconds", type=int, default=20, help="seconds per iperf3 run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repeat of 5 s (overrides --repeats, --seconds)")
    parser.add_argument("--only", nargs="+", choices=("limits", "2 minimums", "3 minimums"),
                        help="run only these phases")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.quick:
        args.repeats, args.seconds = 1, 5
    if os.geteuid() != 0:
        print("needs root (network namespaces, OVS, the lab)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the lab is torn down
    todo = [sc for sc in scenarios() if not args.only or sc.phase in args.only]
    started = time.monotonic()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="loom-bench-qos-") as tmp:
        spec = Path(tmp) / "qos.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        lab = Lab.up(spec, name=f"bqos-{secrets.token_hex(2)}", progress=_say)
        lab_s = time.monotonic() - started
        try:
            run(lab, todo, args.repeats, args.seconds)
        finally:
            problems = lab.down()
            _say(f"lab down: {problems or 'nothing left behind'}")
    report(todo, raw, args, lab_s, time.monotonic() - started)
    if problems:
        print(f"teardown problems: {problems}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
