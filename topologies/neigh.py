"""The kernel's neighbour (ARP/NDP) table limits, raised for a run and given back.

Every network namespace on the machine shares one neighbour table per protocol, with
one limit: ``net.ipv4.neigh.default.gc_thresh3`` (1024 by default; IPv6 has its own).
Mininet hosts are namespaces, so 54 hosts that each resolve the 53 others need 2862
entries: past the limit the kernel refuses new entries ("neighbor table overflow",
counted as ``table_fulls`` in /proc/net/stat/arp_cache) and drops the packets that
waited for them -- every lab and test on the machine loses first packets, not just the
big fabric. Mininet raises the limits in ``Mininet.init()``, with other machine-wide
sysctls, and never lowers them; the runner skips that and does this instead:

- `NeighLimits` raises gc_thresh1/2/3 (IPv4 and IPv6) to what the run needs (never
  lowering a value someone set higher) and restores them when the last run holding
  them ends. Runs overlap (a fabric, a lab, a benchmark), so holders are counted in a
  state file under /run/loom-neigh, under a lock; a holder that died is dropped from
  the count by the next one, so a SIGKILLed run's raise is undone by the next run
  (or ``python -m topologies.neigh sweep``). A value that someone else changed while
  it was raised is theirs: it is left as it is.
- `overflows()` reads the ``table_fulls`` counters, so a run can report how many
  neighbour entries the kernel refused during it, next to its all-pairs figures.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

STATE_DIR = Path(os.environ.get("LOOM_NEIGH_STATE", "/run/loom-neigh"))
PROC_SYS = Path("/proc/sys")
PROC_NET_STAT = Path("/proc/net/stat")
FAMILIES = ("ipv4", "ipv6")
THRESHOLDS = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
STAT_FILES = {"ipv4": "arp_cache", "ipv6": "ndisc_cache"}
# What Mininet.init() sets for IPv4; the floor whatever the run's size.
MIN_THRESH3 = 16384


def sysctl_key(family: str, thresh: str) -> str:
    return f"net.{family}.neigh.default.{thresh}"


def wanted_limits(hosts: int, interfaces_per_host: int = 1) -> dict[str, int]:
    """Limits for a run of `hosts` hosts that may all resolve each other: gc_thresh3 at
    least twice the worst case (hosts x (hosts - 1) x interfaces, leaving room for
    everything else on the machine) and at least Mininet's 16384; gc_thresh2 half of it
    (the kernel starts pruning above it), gc_thresh1 a quarter (no pruning below)."""
    need = hosts * max(hosts - 1, 0) * max(interfaces_per_host, 1)
    thresh3 = max(MIN_THRESH3, 2 * need)
    values = {"gc_thresh1": thresh3 // 4, "gc_thresh2": thresh3 // 2, "gc_thresh3": thresh3}
    return {sysctl_key(f, t): values[t] for f in FAMILIES for t in THRESHOLDS}


def _sysctl_path(key: str, proc_sys: Path) -> Path:
    return proc_sys / key.replace(".", "/")


def read_sysctls(keys: Sequence[str], proc_sys: Path = PROC_SYS) -> dict[str, int]:
    """Current values; a key the kernel lacks (IPv6 off) is left out."""
    out = {}
    for key in keys:
        with contextlib.suppress(OSError, ValueError):
            out[key] = int(_sysctl_path(key, proc_sys).read_text().split()[0])
    return out


def _write_sysctl(key: str, value: int, proc_sys: Path) -> None:
    _sysctl_path(key, proc_sys).write_text(f"{value}\n")


# -- overflow counters -------------------------------------------------------------------

def parse_neigh_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/{arp,ndisc}_cache: a header, then one line of hex counters per
    CPU (``entries`` is table-wide, repeated on each line). Sums every column over the
    CPUs, except ``entries``, which is taken once."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        return {}
    header, rows = lines[0], lines[1:]
    totals: dict[str, int] = dict.fromkeys(header, 0)
    for row in rows:
        for name, value in zip(header, row, strict=False):
            totals[name] += int(value, 16)
    if rows and "entries" in header:
        totals["entries"] = int(rows[0][header.index("entries")], 16)
    return totals


class Overflows(NamedTuple):
    """Neighbour entries the kernel refused (``table_fulls``), per protocol."""

    ipv4: int
    ipv6: int

    @property
    def total(self) -> int:
        return self.ipv4 + self.ipv6

    def __sub__(self, other: object) -> Overflows:
        assert isinstance(other, Overflows)
        return Overflows(self.ipv4 - other.ipv4, self.ipv6 - other.ipv6)

    def describe(self) -> str:
        return f"{self.total} neighbour-table overflows (IPv4 {self.ipv4}, IPv6 {self.ipv6})"


def overflows(proc_net_stat: Path = PROC_NET_STAT) -> Overflows:
    """Machine-wide count of refused neighbour entries since boot (all namespaces
    share the tables): subtract a reading taken before the run."""
    counts = []
    for family in FAMILIES:
        try:
            text = (proc_net_stat / STAT_FILES[family]).read_text()
        except OSError:
            counts.append(0)
            continue
        counts.append(parse_neigh_stat(text).get("table_fulls", 0))
    return Overflows(*counts)


# -- raising and restoring, counted across runs -------------------------------------------

def _proc_start(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat): a pid plus its start time
    names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if fields[0] not in ("Z", "X") else None


class NeighLimits:
    """Raise the neighbour table limits while held; restore them after the last holder.

    State file ``STATE_DIR/state.json``: ``holders`` (token -> pid, start time),
    ``saved`` (values before the first holder raised them), ``raised`` (what was
    written). `acquire()` and `release()` take ``STATE_DIR/lock``. Use as a context
    manager, or acquire()/release(); release() is idempotent.
    """

    def __init__(self, want: Mapping[str, int], *, state_dir: Path | None = None,
                 proc_sys: Path = PROC_SYS) -> None:
        self.want = dict(want)
        self.state_dir = state_dir or STATE_DIR
        self.proc_sys = proc_sys
        self.token = uuid.uuid4().hex
        self.held = False
        self.before: dict[str, int] = {}  # values found at acquire()
        self.during: dict[str, int] = {}  # values after acquire()
        self.restored: dict[str, int] = {}  # what release() wrote back (last holder only)

    def __enter__(self) -> NeighLimits:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                state = _load(self.state_dir)
                yield state
                _store(self.state_dir, state)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def acquire(self) -> NeighLimits:
        with self._locked() as state:
            _drop_dead(state)
            current = read_sysctls(list(self.want), self.proc_sys)
            self.before = dict(current)
            saved, raised = state.setdefault("saved", {}), state.setdefault("raised", {})
            for key, value in current.items():
                # Not raised by a holder (or changed since by someone else): current value
                # is the one to give back.
                if raised.get(key) != value:
                    saved[key] = value
                    raised.pop(key, None)
            for key, value in self.want.items():
                if key in current and current[key] < value:
                    _write_sysctl(key, value, self.proc_sys)
                    raised[key] = value
            state.setdefault("holders", {})[self.token] = {
                "pid": os.getpid(), "start": _proc_start(os.getpid())}
            self.held = True
        self.during = read_sysctls(list(self.want), self.proc_sys)
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with self._locked() as state:
            state.get("holders", {}).pop(self.token, None)
            _drop_dead(state)
            if not state.get("holders"):
                self.restored = _restore(state, self.proc_sys)

    def describe(self) -> str:
        """``gc_thresh3 1024 -> 16384 (IPv4), ...``: what this run found and ran with."""
        parts = []
        for family in FAMILIES:
            key = sysctl_key(family, "gc_thresh3")
            if key in self.before:
                b, d = self.before[key], self.during.get(key, self.before[key])
                parts.append(f"{family} gc_thresh3 {b}" + (f" -> {d}" if d != b else " (kept)"))
        return "neighbour table limits: " + ", ".join(parts)


def _load(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / "state.json"
    if not state.get("holders") and not state.get("raised"):
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)


def _drop_dead(state: dict[str, Any]) -> None:
    holders = state.get("holders", {})
    for token, who in list(holders.items()):
        if _proc_start(int(who.get("pid", 0))) != who.get("start"):
            del holders[token]


def _restore(state: dict[str, Any], proc_sys: Path) -> dict[str, int]:
    """Write back the saved values that are still as a holder raised them; forget the
    rest (someone else changed those). Empties `state`."""
    saved, raised = state.get("saved", {}), state.get("raised", {})
    current = read_sysctls(list(raised), proc_sys)
    restored = {}
    # gc_thresh3 first when lowering, so the kernel never sees thresh2 > thresh3 transiently
    for key in sorted(raised, key=lambda k: k.rsplit("thresh", 1)[-1], reverse=True):
        if current.get(key) == raised[key] and key in saved:
            _write_sysctl(key, int(saved[key]), proc_sys)
            restored[key] = int(saved[key])
    state.clear()
    return restored


def sweep(state_dir: Path | None = None, proc_sys: Path = PROC_SYS) -> dict[str, int]:
    """Restore the limits if every holder is dead (a SIGKILLed run); return what was
    written back."""
    probe = NeighLimits({}, state_dir=state_dir, proc_sys=proc_sys)
    if not probe.state_dir.exists():
        return {}
    with probe._locked() as state:  # noqa: SLF001 (same module)
        _drop_dead(state)
        if state and not state.get("holders"):
            return _restore(state, proc_sys)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    keys = [sysctl_key(f, t) for f in FAMILIES for t in THRESHOLDS]
    if args == ["status"]:
        for key, value in read_sysctls(keys).items():
            print(f"{key} = {value}")
        print(overflows().describe(), "since boot")
        print("holders:", json.dumps(_load(STATE_DIR).get("holders", {})))
        return 0
    if args == ["sweep"]:
        if os.geteuid() != 0:
            print("neigh sweep: not root, nothing done")
            return 0
        restored = sweep()
        print("neigh sweep: " + (f"restored {restored}" if restored else "nothing to restore"))
        return 0
    print("usage: python -m topologies.neigh status|sweep", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
