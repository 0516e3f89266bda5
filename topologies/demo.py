"""`sudo make demo`: bring up the demo lab and prove isolation with real traffic.

    python -m topologies.demo [--spec topologies/specs/demo.yaml] [--down]

Brings the lab up (topologies/specs/demo.yaml: three hypervisors, two projects that
both use 10.0.0.0/24, one network per tunnel type), waits for every port to be
ACTIVE, then for every ordered pair of guests sends 3 real pings and a real TCP
connection (nc, with a payload unique to the pair) and prints a matrix of what was
expected (same network: reach, i.e. every ping answered and the payload arrived;
another network or project: no reach, i.e. no answer at all and no payload) against
what was seen, a final PASS/FAIL line, and exits non-zero on any mismatch: a pair
that answers 2 pings of 3 is a failure either way. The lab stays
up (unless --down); the last lines say how to tear it down.

For a pair on different networks, the source gets a permanent neighbour entry (and a
host route) for the target's IP with the target's MAC, and the target one for the
source: frames really leave addressed to the other tenant's guest, so "no reach"
means the switches dropped them, not that ARP went unanswered.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from topologies import netns as nsutil
from topologies.guest import Guest, TcpListener
from topologies.lab import Lab, down_state
from topologies.labspec import SpecError, load_spec
from topologies.labstate import LabError, LabState, lab_lock, state_path

DEFAULT_SPEC = Path(__file__).resolve().parent / "specs" / "demo.yaml"
TCP_BASE_PORT = 20000


@dataclass(frozen=True)
class Endpoint:
    name: str
    project: str
    network: str
    hypervisor: str
    ip: str
    prefix: str  # the guest's subnet, e.g. 10.0.0.0/24
    mac: str

    @property
    def where(self) -> str:
        return f"{self.project}/{self.network}@{self.hypervisor}"


PINGS = 3  # per pair; a pair reaches only if every one is answered


@dataclass
class Cell:
    """One ordered pair. `pings` is (sent, answered): reach means every ping answered
    and isolation none; anything in between is a mismatch either way (a lost first
    packet is a bug to see, not to average away)."""

    src: Endpoint
    dst: Endpoint
    expected: bool
    pings: tuple[int, int] | None = None
    tcp: bool | None = None
    note: str = ""

    @property
    def ping(self) -> bool | None:
        """True: every ping answered; False: none; None: not tested, or some of them."""
        if self.pings is None:
            return None
        sent, answered = self.pings
        if sent > 0 and answered == sent:
            return True
        return False if answered == 0 else None

    @property
    def tested(self) -> bool:
        return self.pings is not None and self.tcp is not None

    @property
    def ok(self) -> bool:
        return not self.tested or (self.ping is self.expected and self.tcp == self.expected)

    def mark(self) -> str:
        if not self.tested:
            return "n/a"
        text = {True: "P", False: ".", None: "p"}[self.ping] + ("T" if self.tcp else ".")
        return text + ("" if self.ok else "!")

    def ping_text(self) -> str:
        if self.pings is None:
            return "ping not sent"
        sent, answered = self.pings
        return f"ping {answered}/{sent} answered"


def endpoints(lab: Lab) -> list[Endpoint]:
    out = []
    for name, g in lab.state.data["guests"].items():
        if not g.get("ip_cidr"):
            continue
        iface = ipaddress.ip_interface(g["ip_cidr"])
        out.append(Endpoint(name, g["project"], g["network"], g["hypervisor"], str(iface.ip),
                            str(iface.network), g["mac"]))
    return out


def plan(eps: Sequence[Endpoint]) -> list[Cell]:
    """Every ordered pair; expected reach iff same project and network. A pair whose
    target IP is also another guest's cannot be told apart by IP: marked n/a."""
    owners: dict[str, int] = {}
    for e in eps:
        owners[e.ip] = owners.get(e.ip, 0) + 1
    cells = []
    for s in eps:
        for d in eps:
            if s is d:
                continue
            same = (s.project, s.network) == (d.project, d.network)
            cell = Cell(s, d, expected=same)
            if owners[d.ip] > 1:
                cell.note = f"{d.ip} is held by more than one guest"
            cells.append(cell)
    return cells


def _pin_commands(src: Endpoint, others: Sequence[Endpoint], delete: bool) -> str:
    lines = []
    for d in others:
        if delete:
            lines.append(f"neigh del {d.ip} dev eth0")
        else:
            lines.append(f"neigh replace {d.ip} lladdr {d.mac} dev eth0 nud permanent")
        if ipaddress.ip_address(d.ip) not in ipaddress.ip_network(src.prefix):
            lines.append(f"route {'del' if delete else 'replace'} {d.ip}/32 dev eth0")
    return "\n".join(lines) + "\n"


def _pin(lab: Lab, cells: Sequence[Cell], delete: bool = False) -> None:
    """Neighbour entries (and host routes) for the other networks' guests, both ways."""
    targets: dict[str, dict[str, Endpoint]] = {}
    for c in cells:
        if not c.expected and not c.note:
            targets.setdefault(c.src.name, {})[c.dst.name] = c.dst
            targets.setdefault(c.dst.name, {})[c.src.name] = c.src
    for name, others in targets.items():
        src = next(c.src for c in cells if c.src.name == name)
        batch = _pin_commands(src, list(others.values()), delete)
        nsutil.run(["ip", "-force", "-batch", "-"], netns=lab.guest(name).netns, input=batch,
                   check=not delete)


def _probe(src: Guest, cell: Cell, listener: TcpListener, nonce: str) -> None:
    cell.pings = src.ping(cell.dst.ip, count=PINGS, interval=0.2, timeout=1)
    payload = f"loom-demo {cell.src.name}->{cell.dst.name} {nonce}\n"
    cell.tcp = src.tcp_connect(cell.dst.ip, listener.port, payload, timeout=2,
                               listener=listener)


def run_matrix(lab: Lab, cells: list[Cell] | None = None, workers: int = 16) -> list[Cell]:
    """Probe every cell (ping, then TCP) concurrently; fills cell.ping and cell.tcp."""
    eps = endpoints(lab)
    cells = plan(eps) if cells is None else cells
    todo = [c for c in cells if not c.note]
    index = {e.name: i for i, e in enumerate(eps)}
    nonce = secrets.token_hex(4)
    listeners = {}
    _pin(lab, todo)
    try:
        for c in todo:
            listeners[(c.src.name, c.dst.name)] = lab.guest(c.dst.name).tcp_listen(
                TCP_BASE_PORT + index[c.src.name])
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_probe, lab.guest(c.src.name), c,
                                   listeners[(c.src.name, c.dst.name)], nonce) for c in todo]
            for f in futures:
                f.result()
    finally:
        for listener in listeners.values():
            listener.close()
        _pin(lab, todo, delete=True)
    return cells


def render(cells: Sequence[Cell]) -> str:
    """The matrix, the mismatches, and the final PASS/FAIL line."""
    names: list[str] = []
    eps: dict[str, Endpoint] = {}
    for c in cells:
        for e in (c.src, c.dst):
            if e.name not in eps:
                eps[e.name] = e
                names.append(e.name)
    grid = {(c.src.name, c.dst.name): c for c in cells}
    label = {n: f"{n} {eps[n].where} {eps[n].ip}" for n in names}
    width = max(len(v) for v in label.values())
    col = max(4, max(len(n) for n in names) + 1)
    out = [
        f"Connectivity matrix (row: from, column: to). Each cell: P = all {PINGS} pings "
        "answered, p = some, T = TCP payload arrived, . = not;",
        "expected: PT within one network, .. across networks and projects; "
        "! marks a cell that differs from expected.",
        "",
        " " * (width + 2) + "".join(n.rjust(col) for n in names),
    ]
    for s in names:
        row = "".join(("--" if s == d else grid[(s, d)].mark()).rjust(col) for d in names)
        out.append(label[s].ljust(width + 2) + row)
    bad = [c for c in cells if not c.ok]
    skipped = [c for c in cells if not c.tested]
    out.append("")
    for c in bad:
        want = "reach" if c.expected else "no reach"
        seen = f"{c.ping_text()}, TCP {'yes' if c.tcp else 'no'}"
        hops = "same hypervisor" if c.src.hypervisor == c.dst.hypervisor else "across hypervisors"
        out.append(f"  MISMATCH {c.src.name} -> {c.dst.name} ({c.src.where} -> {c.dst.where}, "
                   f"{hops}): expected {want}, seen {seen}")
    for c in skipped:
        out.append(f"  n/a {c.src.name} -> {c.dst.name}: {c.note}")
    tested = len(cells) - len(skipped)
    reach = sum(1 for c in cells if c.tested and c.expected)
    summary = (f"{tested} ordered pairs tested ({reach} expected to reach, "
               f"{tested - reach} expected isolated)")
    if bad:
        out.append(f"FAIL: {len(bad)} of {summary} differ from expected")
    else:
        out.append(f"PASS: all {summary} as expected, by ping (every one of {PINGS}) "
                   "and by TCP")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m topologies.demo", description=__doc__.split(
        "\n")[0])
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="lab spec (default: demo.yaml)")
    p.add_argument("--down", action="store_true", help="tear the lab down at the end")
    p.add_argument("--workers", type=int, default=16, help="probes run at once")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces, OVS): run sudo make demo", file=sys.stderr)
        return 2
    try:
        spec = load_spec(args.spec)
        if state_path(spec.name).exists():
            print(f"demo: lab {spec.name} is already up: taking it down first")
            with lab_lock(spec.name):
                down_state(LabState.load(spec.name), print)
        t0 = time.monotonic()
        lab = Lab.up(spec)
        up_s = time.monotonic() - t0
    except (LabError, SpecError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    t1 = time.monotonic()
    cells = run_matrix(lab, workers=args.workers)
    print()
    print(render(cells))
    print(f"(lab up {up_s:.1f}s, matrix {time.monotonic() - t1:.1f}s)")
    spec_arg = os.path.relpath(args.spec)
    if args.down:
        lab.down()
    else:
        first = lab.guest(cells[0].src.name).netns if cells else f"{lab.prefix}-<guest>"
        print(f"The lab stays up. Look around:  python -m topologies.lab status {lab.name}")
        print(f"  e.g. sudo ip netns exec {first} ping {cells[0].dst.ip if cells else ''}")
        print(f"Tear it down:  sudo .venv/bin/python -m topologies.lab down {spec_arg}")
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
