"""`sudo make demo`: bring up the demo lab and prove isolation with real traffic.

    python -m topologies.demo [--spec topologies/specs/demo.yaml] [--down]

Brings the lab up (topologies/specs/demo.yaml: three hypervisors, two projects that
both use 10.0.0.0/24, one network per tunnel type, an external network with an
"outside" host, a router per project), waits for every port to be
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

Then, if the spec has an `external` network, the way out (`run_external`): every
guest asks the outside host's HTTP server (which answers with the client's address)
who it is: behind its project's router it must be seen as the router's gateway
address (SNAT), with a floating IP as that address, on a network without a router
not at all. The outside host then asks each floating IP's guest (an HTTP server on
port 80 there), which must see the outside's real address; one port forwarding
(10080 -> a guest's 80) must answer the same, and its floating IP's port 80 (not
forwarded) must not. Each project's default security group is opened for TCP 80
and ICMP from anywhere first. These rows end the matrix and count in PASS/FAIL.
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
from typing import Any

from topologies import netns as nsutil
from topologies.guest import Guest, TcpListener
from topologies.lab import Lab, down_state
from topologies.labnet import start_echo_http
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


# -- the way out: SNAT, floating IPs, a port forwarding ---------------------------------
HTTP_PORT = 80          # the guests' echo servers (the outside's is the spec's http_port)
PF_EXTERNAL_PORT = 10080
CURL_TIMEOUT = 4        # s; TCP retransmits a lost SYN after 1 s
WARM_UP_TIMEOUT = 40.0  # s: the gateway chassis resolves the upstream's MAC first


@dataclass
class ExternalCheck:
    """One HTTP GET to an echo server: `expected` is the address the server must
    answer with (the caller as it sees it), None: no answer at all."""

    src: str        # a guest's name, or "outside"
    target: str     # what is asked, e.g. "outside 198.51.100.1:80"
    via: str        # e.g. "SNAT (router alpha/router)"
    url: str
    expected: str | None
    seen: str | None = None
    tested: bool = False

    @property
    def ok(self) -> bool:
        return not self.tested or self.seen == self.expected


def _curl(lab: Lab, src: str, url: str, timeout: int = CURL_TIMEOUT) -> str | None:
    netns = lab.outside.netns if src == "outside" else lab.guest(src).netns
    proc = nsutil.run(["curl", "-s", "-m", str(timeout), url], netns=netns, check=False,
                      timeout=timeout + 5)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _open_default_groups(lab: Lab, projects: Sequence[str]) -> None:
    """TCP 80 and ICMP from anywhere into each project's default security group: what
    a tenant does before the outside may reach its floating IPs."""
    for project in projects:
        sgs = lab.api.get(f"/v2.0/security-groups?project_id={project}&name=default").ok()
        for sg in sgs["security_groups"]:
            for proto in ("tcp", "icmp"):
                rule: dict[str, Any] = {"security_group_id": sg["id"], "direction": "ingress",
                                        "ethertype": "IPv4", "protocol": proto,
                                        "remote_ip_prefix": "0.0.0.0/0"}
                if proto == "tcp":
                    rule.update(port_range_min=HTTP_PORT, port_range_max=HTTP_PORT)
                lab.api.create("security_group_rule", wait=True, **rule)


def _port_forwarding(lab: Lab, guest: str) -> tuple[str, dict[str, Any]]:
    """A floating IP of the guest's project with one port forwarding:
    PF_EXTERNAL_PORT -> guest:HTTP_PORT. Returns (address, port forwarding)."""
    info, ext = lab.guest_info(guest), lab.external
    fip = lab.api.create("floatingip", floating_network_id=ext["network_id"],
                         project_id=info["project"])
    ip = str(ipaddress.ip_interface(info["ip_cidr"]).ip)
    pf = lab.api.post(f"/v2.0/floatingips/{fip['id']}/port_forwardings?wait=true", {
        "port_forwarding": {"protocol": "tcp", "external_port": PF_EXTERNAL_PORT,
                            "internal_port": HTTP_PORT, "internal_ip_address": ip,
                            "internal_port_id": info["port_id"]}}).ok()["port_forwarding"]
    return str(fip["floating_ip_address"]), dict(pf)


def plan_external(lab: Lab, pf_address: str | None = None,
                  pf_guest: str | None = None) -> list[ExternalCheck]:
    """Out from every IPv4 guest, in to every floating IP, and the port forwarding."""
    ext, guests = lab.external, lab.state.data["guests"]
    outside_ip = str(ipaddress.ip_interface(ext["outside"]).ip)
    port = int(ext.get("http_port") or 0)
    routers = {(k.split("/")[0], n): (k, r) for k, r in
               lab.state.data["api"].get("routers", {}).items() for n in r["interfaces"]}
    checks = []
    if port:
        url = f"http://{outside_ip}:{port}/"
        for name, g in guests.items():
            if not g.get("ip_cidr"):
                continue
            key, router = routers.get((g["project"], g["network"]), ("", {}))
            if g.get("floating_ip"):
                via, want = "its floating IP", g["floating_ip"]
            elif router.get("gateway_ip"):
                via, want = f"SNAT (router {key})", router["gateway_ip"]
            else:
                via, want = "no router with a gateway", None
            checks.append(ExternalCheck(name, f"outside {outside_ip}:{port}", via, url, want))
    for name, g in guests.items():
        if g.get("floating_ip"):
            checks.append(ExternalCheck("outside", f"{name} at {g['floating_ip']}:{HTTP_PORT}",
                                        "floating IP (DNAT)",
                                        f"http://{g['floating_ip']}:{HTTP_PORT}/", outside_ip))
    if pf_address and pf_guest:
        checks.append(ExternalCheck(
            "outside", f"{pf_guest}:{HTTP_PORT} at {pf_address}:{PF_EXTERNAL_PORT}",
            "port forwarding", f"http://{pf_address}:{PF_EXTERNAL_PORT}/", outside_ip))
        checks.append(ExternalCheck(
            "outside", f"{pf_address}:{HTTP_PORT}", "not forwarded",
            f"http://{pf_address}:{HTTP_PORT}/", None))
    return checks


def _warm_up(lab: Lab, checks: Sequence[ExternalCheck], timeout: float) -> float:
    """Until one guest behind each router reaches the outside (the gateway chassis
    learns the upstream's MAC first); returns the seconds it took."""
    t0 = time.monotonic()
    firsts: dict[str, ExternalCheck] = {}
    for c in checks:
        if c.src != "outside" and c.expected is not None:
            firsts.setdefault(c.via, c)
    pending = list(firsts.values())
    while pending:
        pending = [c for c in pending if _curl(lab, c.src, c.url, 2) is None]
        if pending and time.monotonic() - t0 > timeout:
            break
    return time.monotonic() - t0


def pick_pf_guest(lab: Lab) -> str | None:
    """The first guest behind a router with a gateway that has no floating IP."""
    routed = {(k.split("/")[0], n) for k, r in lab.state.data["api"].get("routers", {}).items()
              if r.get("gateway_ip") for n in r["interfaces"]}
    return next((n for n, g in lab.state.data["guests"].items()
                 if (g["project"], g["network"]) in routed and not g.get("floating_ip")
                 and g.get("ip_cidr")), None)


def run_external(lab: Lab, workers: int = 16) -> tuple[list[ExternalCheck], str]:
    """Set up (security groups, echo servers in guests, one port forwarding), then run
    every external check; returns the checks and a line on what was set up."""
    guests = lab.state.data["guests"]
    _open_default_groups(lab, sorted({g["project"] for g in guests.values()}))
    pf_guest = pick_pf_guest(lab)
    pf_address = None
    if pf_guest is not None:
        pf_address, _ = _port_forwarding(lab, pf_guest)
    servers = [n for n, g in guests.items() if g.get("floating_ip")] + \
        ([pf_guest] if pf_guest else [])
    for name in servers:
        start_echo_http(lab.sandbox, lab.guest(name).netns, HTTP_PORT,
                        lab.state.workdir / "guests" / f"{name}-http.log")
    checks = plan_external(lab, pf_address, pf_guest)
    took = _warm_up(lab, checks, WARM_UP_TIMEOUT)

    def probe(c: ExternalCheck) -> None:
        c.seen = _curl(lab, c.src, c.url)
        c.tested = True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(probe, c) for c in checks]:
            f.result()
    note = (f"security groups: TCP {HTTP_PORT} + ICMP from 0.0.0.0/0 in each default group; "
            f"echo servers on :{HTTP_PORT} in {', '.join(servers) or 'no guest'}"
            + (f"; port forwarding {pf_address}:{PF_EXTERNAL_PORT} -> {pf_guest}:{HTTP_PORT}"
               if pf_guest else "")
            + f"; first answer from the outside after {took:.1f}s")
    return checks, note


def render_external(checks: Sequence[ExternalCheck], lab_external: dict[str, Any],
                    note: str = "") -> list[str]:
    """The way-out rows: who asked what, through what, expected vs seen address."""
    ext = lab_external
    hvs = ", ".join(f"{n}{' (gateway)' if h.get('gateway') else ''}"
                    for n, h in ext.get("hypervisors", {}).items())
    out = [
        f"The way out: external network {ext.get('network')} {ext.get('cidr')} (flat on "
        f"{ext.get('physical_network')}: br-ex on {hvs});",
        f"the outside host {ext.get('gateway_ip')} (the subnet's gateway_ip) and the guests "
        "run an HTTP server that answers with the caller's address as it sees it.",
    ]
    if note:
        out.append(f"({note})")
    out.append("")
    rows = [("from", "asks", "through", "expected", "seen", "")]
    for c in checks:
        seen = "n/a" if not c.tested else (c.seen or "no answer")
        rows.append((c.src, c.target, c.via, c.expected or "no answer", seen,
                     "" if c.ok else "!"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cols = "  ".join(v.ljust(w) for v, w in zip(r[:5], widths, strict=True))
        out.append(f"  {cols} {r[5]}")
    return [line.rstrip() for line in out]


def render(cells: Sequence[Cell], external: Sequence[ExternalCheck] | None = None,
           lab_external: dict[str, Any] | None = None, note: str = "") -> str:
    """The matrix, the mismatches, (the way out,) and the final PASS/FAIL line."""
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
    ext_text, ext_bad = "", []
    if external is not None:
        out += render_external(external, lab_external or {}, note)
        ext_bad = [c for c in external if not c.ok]
        for x in ext_bad:
            out.append(f"  MISMATCH {x.src} -> {x.target} ({x.via}): expected "
                       f"{x.expected or 'no answer'}, seen {x.seen or 'no answer'}")
        out.append("")
        ext_text = (f"{len(external)} external checks (SNAT, floating IPs, port forwarding)")
    if bad or ext_bad:
        line = f"FAIL: {len(bad)} of {summary} differ from expected"
        if external is not None:
            line += f"; {len(ext_bad)} of {ext_text} differ"
        out.append(line)
    else:
        out.append(f"PASS: all {summary} as expected, by ping (every one of {PINGS}) "
                   "and by TCP" + (f"; all {ext_text} as expected" if ext_text else ""))
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
    matrix_s = time.monotonic() - t1
    external: list[ExternalCheck] | None = None
    note = ""
    if lab.external:
        t2 = time.monotonic()
        try:
            external, note = run_external(lab, workers=args.workers)
        except (RuntimeError, OSError) as exc:  # an API refusal, a server that won't start
            print(render(cells))
            print(f"demo: FAIL: the way out could not be set up: {exc}", file=sys.stderr)
            return 1
        note += f"; {time.monotonic() - t2:.1f}s in all"
    print()
    print(render(cells, external, lab.external, note))
    print(f"(lab up {up_s:.1f}s, matrix {matrix_s:.1f}s)")
    spec_arg = os.path.relpath(args.spec)
    if args.down:
        lab.down()
    else:
        first = lab.guest(cells[0].src.name).netns if cells else f"{lab.prefix}-<guest>"
        print(f"The lab stays up. Look around:  python -m topologies.lab status {lab.name}")
        print(f"  e.g. sudo ip netns exec {first} ping {cells[0].dst.ip if cells else ''}")
        if lab.external.get("outside_netns"):
            ip = lab.external["gateway_ip"]
            fip = next((c.target.split(" at ")[1].split(":")[0] for c in external or []
                        if c.via.startswith("floating IP")), None)
            print(f"       sudo ip netns exec {first} curl http://{ip}/   (who the outside "
                  "sees)")
            if fip:
                print(f"       sudo ip netns exec {lab.external['outside_netns']} curl "
                      f"http://{fip}/   (the outside through a floating IP)")
        print(f"Tear it down:  sudo .venv/bin/python -m topologies.lab down {spec_arg}")
    ok = all(c.ok for c in cells) and all(c.ok for c in external or [])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
