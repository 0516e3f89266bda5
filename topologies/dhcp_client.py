"""A real DHCPv4 client for a guest namespace: ISC dhclient and Debian's stock dhclient-script.

    client = DhcpClient(netns, "eth0", sandbox=sandbox)
    lease = client.start(timeout=20)       # DISCOVER/OFFER/REQUEST/ACK, then keeps running
    lease.cidr, lease.routers, lease.dns, lease.mtu, lease.routes, lease.lease_time
    client.renew()                         # a DHCPREQUEST for the current lease, answered now
    client.wait_renewal(timeout)           # the client's own RENEW at T1 (unicast to the server)
    client.release()                       # DHCPRELEASE; the address and its routes go away
    client.close()                         # stop it, remove what it made

`Guest.dhcp()` (topologies/guest.py) wraps this for a guest's ``eth0``.

What runs: ``ip netns exec NETNS unshare --uts dhclient -4 -d -1 -v -cf .. -lf .. -pf ..
-sf .. eth0``, in the foreground of its own session (so its log is ours, in
``<state_dir>/dhclient.log``), with its own config, lease file and pid file in a
per-client state directory (never the system's /var/lib/dhcp or /run files). ``-1``:
the first acquisition is tried once, for `timeout` seconds (dhclient exits 2 if no
server answers); once bound, dhclient keeps running and renews at T1 by itself.

The stock /sbin/dhclient-script configures everything: address with the lease as its
lifetime, MTU (option 26; the script ignores values <= 576), default route(s) from
option 3, or only the classless routes (option 121, Debian's rfc3442-classless-routes
hook; RFC 3442 says option 3 is then ignored), and /etc/resolv.conf. `-sf` points at a
small wrapper that runs the stock script unchanged (same environment and arguments,
its exit status passed on) and then records the environment dhclient handed it, one
file per call in ``<state_dir>/events``, which appears only once the script is done:
that record is what `DhcpLease` is read from and what the waits watch (the lease file
is rewritten at most every 15 s, so it lags behind renewals).

The guest's own /etc, kept away from the host's (a guest shares the host's
filesystem, mounts and hostname; only the network namespace is its own):

- ``/etc/netns/<netns>/resolv.conf`` exists before dhclient starts, so ``ip netns
  exec`` bind-mounts it over /etc/resolv.conf in dhclient's (and the script's) mount
  namespace: the script writes the guest's file, never the host's. Checked before
  every start (the file seen as /etc/resolv.conf inside must be that very inode):
  without the bind (e.g. no /etc/resolv.conf on the host) it would write the host's.
- ``/etc/netns/<netns>/dhcp/`` is bound over /etc/dhcp: its hook directories hold only
  a copy of Debian's rfc3442-classless-routes hook. The host's other hooks act on
  host-global state when sourced from a guest: timesyncd rewrites (or, on RELEASE and
  STOP, deletes) /run/systemd/timesyncd.conf.d and restarts the host's timesyncd;
  resolvconf's and Ubuntu's resolved hooks configure the host's resolver.
- ``unshare --uts``: the script runs ``hostname NAME`` when the server sends a host
  name and the current one is empty or "localhost"; in its own UTS namespace that
  renames nobody.
- ``-4`` explicitly: with -6 the stock script's PREINIT6 flushes the interface's global
  IPv6 addresses (a guest's static ones). Guests only turn IPv6 DAD off
  (accept_dad=0), which does not concern DHCPv4.

`close()` (and the lab's teardown, through `remove_netns_etc`) removes
``/etc/netns/<netns>``; ``/etc/netns`` itself, iproute2's directory, stays.

AppArmor: Debian's profile for /sbin/dhclient (when loaded in enforce mode) allows
only its own paths (/var/lib/dhcp, /run/dhclient*, /sbin/dhclient-script);
`start()` then refuses with the way out instead of timing out obscurely.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from topologies import netns as nsutil
from topologies.netns import Sandbox

DHCLIENT = "dhclient"
STOCK_SCRIPT = Path("/sbin/dhclient-script")
HOST_DHCP_ETC = Path("/etc/dhcp")
ETC_NETNS = Path("/etc/netns")
# Per-client state when the caller gives no directory (tmpfs: gone at reboot).
STATE_BASE = Path(os.environ.get("LOOM_DHCP_STATE", "/run/loom-dhcp"))
# The host's hooks a guest gets: only what configures the guest itself.
GUEST_HOOKS: dict[str, tuple[str, ...]] = {
    "dhclient-enter-hooks.d": (),
    "dhclient-exit-hooks.d": ("rfc3442-classless-routes",),
}
# Script reasons after which the client holds a lease the server acknowledged.
# TIMEOUT is not one: dhclient then reuses a recorded lease after no server answered
# (the stock script keeps it if the router answers a ping); waits fail on it. EXPIRE
# (a NAK, or the lease ran out: the address is removed) is followed by a new BOUND.
ACQUIRED = ("BOUND", "REBOOT", "RENEW", "REBIND")
RENEWED = ("RENEW", "REBIND", "BOUND")
REQUESTED_OPTIONS = (
    "subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, "
    "domain-search, interface-mtu, rfc3442-classless-static-routes"
)
PLACEHOLDER = ("# {netns}: the guest's own resolv.conf (topologies/dhcp_client.py); "
               "dhclient-script replaces it when a DHCP answer names DNS servers\n")


class DhcpError(RuntimeError):
    """The DHCP client could not do what was asked; the message says why (log tail)."""


# -- what the server handed out ---------------------------------------------------------
def decode_classless_routes(octets: Sequence[int]) -> list[tuple[str, str]]:
    """RFC 3442 option 121 (width, significant destination octets, gateway) ->
    [(destination/prefix, gateway)]; ValueError if malformed."""
    out: list[tuple[str, str]] = []
    i = 0
    data = list(octets)
    while i < len(data):
        width = data[i]
        if width > 32:
            raise ValueError(f"classless route width {width} > 32")
        size = (width + 7) // 8
        if i + 1 + size + 4 > len(data):
            raise ValueError(f"classless routes truncated at octet {i}: {data}")
        dest = data[i + 1:i + 1 + size] + [0] * (4 - size)
        gateway = data[i + 1 + size:i + 5 + size]
        net = ipaddress.IPv4Network((".".join(map(str, dest)), width), strict=False)
        out.append((str(net), ".".join(map(str, gateway))))
        i += 5 + size
    return out


def _octets(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


@dataclass(frozen=True)
class DhcpLease:
    """One lease as dhclient received it (the script's ``new_*`` variables, or a lease
    file entry). `routes` are the classless static routes (option 121), in order."""

    reason: str                       # BOUND, REBOOT, RENEW, REBIND (or "lease-file")
    address: str
    prefixlen: int
    routers: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    mtu: int | None = None
    routes: tuple[tuple[str, str], ...] = ()
    lease_time: int | None = None
    server_id: str | None = None
    renewal_time: int | None = None   # T1, if the server sent it
    rebinding_time: int | None = None  # T2, if the server sent it
    domain_name: str | None = None
    expiry: float | None = None       # epoch seconds
    at: float = 0.0                   # when the script ran (epoch seconds)
    options: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.cidr)

    @classmethod
    def from_options(cls, reason: str, opts: Mapping[str, str], at: float = 0.0) -> DhcpLease:
        """From dhclient's option names with underscores (``ip_address``,
        ``subnet_mask``, ``domain_name_servers``, ...), as the script gets them without
        their ``new_`` prefix."""
        if "ip_address" not in opts:
            raise ValueError(f"{reason}: no ip_address in {dict(opts)}")
        mask = opts.get("subnet_mask", "255.255.255.255")
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen

        def ints(key: str) -> int | None:
            return int(opts[key]) if opts.get(key, "").strip().isdigit() else None

        routes = opts.get("rfc3442_classless_static_routes", "")
        expiry = opts.get("expiry", "")
        return cls(
            reason=reason, address=opts["ip_address"], prefixlen=prefix,
            routers=tuple(opts.get("routers", "").replace(",", " ").split()),
            dns=tuple(opts.get("domain_name_servers", "").replace(",", " ").split()),
            mtu=ints("interface_mtu"),
            routes=tuple(decode_classless_routes(_octets(routes))) if routes.strip() else (),
            lease_time=ints("dhcp_lease_time"),
            server_id=opts.get("dhcp_server_identifier") or None,
            renewal_time=ints("dhcp_renewal_time"),
            rebinding_time=ints("dhcp_rebinding_time"),
            domain_name=opts.get("domain_name") or None,
            expiry=float(expiry) if expiry.strip().isdigit() else None,
            at=at, options=dict(opts))


@dataclass(frozen=True)
class ScriptEvent:
    """One run of dhclient-script: its reason and environment, recorded once it ended."""

    at: float
    reason: str
    env: Mapping[str, str]
    name: str = ""

    @property
    def status(self) -> int | None:
        """The stock script's exit status (dhclient DECLINEs a lease it fails on)."""
        value = self.env.get("loom_script_status", "")
        return int(value) if value.isdigit() else None

    def lease(self) -> DhcpLease:
        new = {k[4:]: v for k, v in self.env.items() if k.startswith("new_")}
        return DhcpLease.from_options(self.reason, new, self.at)


def parse_event_file(path: Path) -> ScriptEvent:
    """A file the script wrapper wrote once the script ended: ``<epoch ns>.<pid>.<REASON>``,
    ``env -0`` output plus ``loom_script_status``."""
    stamp, _pid, reason = path.name.split(".", 2)
    env: dict[str, str] = {}
    for item in path.read_bytes().split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[key] = value
    return ScriptEvent(int(stamp) / 1e9, reason, env, path.name)


def parse_lease_file(text: str) -> list[DhcpLease]:
    """The ``lease { ... }`` blocks of a dhclient lease file, oldest first (dhclient
    appends; the last one is current). Dates are UTC (``renew 3 2026/12/02 03:01:41;``)
    or ``epoch N;``."""
    leases: list[DhcpLease] = []
    block: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("lease {"):
            block = {}
            continue
        if block is None:
            continue
        if line.startswith("}"):
            if "ip_address" in block:
                leases.append(DhcpLease.from_options("lease-file", block))
            block = None
            continue
        line = line.rstrip(";")
        if line.startswith("option "):
            name, _, value = line[len("option "):].partition(" ")
            block[name.replace("-", "_")] = value.strip().strip('"')
        elif line.startswith("fixed-address "):
            block["ip_address"] = line.split()[1]
        elif line.startswith("expire "):
            expiry = _lease_time(line.split(None, 1)[1])
            if expiry != float("inf"):
                block["expiry"] = str(int(expiry))
    return leases


def _lease_time(text: str) -> float:
    words = text.split()
    if words[0] == "epoch":
        return float(words[1])
    if words[0] == "never":
        return float("inf")
    stamp = datetime.strptime(" ".join(words[1:3]), "%Y/%m/%d %H:%M:%S")
    return stamp.replace(tzinfo=UTC).timestamp()


# -- what the guest has configured (read inside its namespace) ------------------------
def addresses(netns: str, ifname: str, version: int = 4) -> list[str]:
    """Global addresses of `ifname` as address/prefix, in kernel order."""
    out = nsutil.run(["ip", f"-{version}", "-o", "addr", "show", "dev", ifname, "scope",
                      "global"], netns=netns).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        if "inet" in words or "inet6" in words:
            idx = words.index("inet" if "inet" in words else "inet6")
            found.append(words[idx + 1])
    return found


def routes(netns: str, ifname: str | None = None, version: int = 4) -> list[tuple[str, str | None]]:
    """The main table's routes (through `ifname` if given) as (destination/prefix,
    gateway or None for on-link), in kernel order; the default route is 0.0.0.0/0."""
    argv = ["ip", f"-{version}", "route", "show", "table", "main"]
    if ifname:
        argv += ["dev", ifname]
    found: list[tuple[str, str | None]] = []
    for line in nsutil.run(argv, netns=netns).stdout.splitlines():
        words = line.split()
        if words and words[0] in ("unicast", "unreachable", "blackhole", "prohibit", "throw"):
            words = words[1:]
        if not words:
            continue
        dest = words[0]
        if dest == "default":
            dest = "0.0.0.0/0" if version == 4 else "::/0"
        elif "/" not in dest:
            dest += "/32" if version == 4 else "/128"
        via = words[words.index("via") + 1] if "via" in words else None
        found.append((dest, via))
    return found


def resolv_conf(netns: str) -> str:
    """/etc/resolv.conf as processes started with ``ip netns exec`` see it."""
    return nsutil.run(["cat", "/etc/resolv.conf"], netns=netns).stdout


def nameservers(netns: str) -> list[str]:
    return [line.split()[1] for line in resolv_conf(netns).splitlines()
            if line.startswith("nameserver") and len(line.split()) > 1]


def link_mtu(netns: str, ifname: str) -> int:
    out = nsutil.run(["cat", f"/sys/class/net/{ifname}/mtu"], netns=netns).stdout
    return int(out.strip())


# -- the guest's /etc overlay --------------------------------------------------------------
def netns_etc(netns: str) -> Path:
    """``/etc/netns/<netns>``, whose entries ``ip netns exec`` bind-mounts over /etc."""
    if not netns or "/" in netns or netns in (".", ".."):
        raise ValueError(f"invalid namespace name {netns!r}")
    return ETC_NETNS / netns


def remove_netns_etc(netns: str) -> bool:
    """Remove ``/etc/netns/<netns>`` (what `DhcpClient` made there); True if it existed.
    Only for namespaces this run made: the name is the whole key."""
    path = netns_etc(netns)  # never '..' or a path
    if not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def apparmor_confines_dhclient() -> bool:
    """True if an AppArmor profile for dhclient is loaded in enforce mode."""
    try:
        text = Path("/sys/kernel/security/apparmor/profiles").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        name, _, mode = line.rpartition(" (")
        if name.endswith("sbin/dhclient") and mode.startswith("enforce"):
            return True
    return False


_WRAPPER = """#!/bin/sh
# Written by topologies/dhcp_client.py: run the stock script unchanged, then record what
# dhclient handed it and how it ended (one file per call, complete when it appears).
{stock} "$@"
rc=$?
tmp="{events}/.$$"
{{ env -0; printf 'loom_script_status=%s\\0' "$rc"; }} > "$tmp" 2>/dev/null
mv -f "$tmp" "{events}/$(date +%s%N).$$.${{reason:-none}}"
exit $rc
"""

_CONF = """# Written by topologies/dhcp_client.py for {label} (netns {netns}).
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
timeout {timeout};
reboot 10;
initial-interval 1;
backoff-cutoff 4;
request {requested};
"""


class DhcpClient:
    """ISC dhclient for one interface of one namespace; see the module docstring.

    `state_dir` (default ``/run/loom-dhcp/<netns>``, removed by `close()`) holds
    dhclient.conf, dhclient.leases, dhclient.pid, dhclient.log and events/. A given
    `state_dir` is kept by `close()` (its owner removes it: the lab's workdir).
    `sandbox`: the dhclient process is recorded there (marker: the state dir), so a
    sandbox cleanup or a lab teardown stops it even if this object is gone.
    """

    def __init__(self, netns: str, ifname: str = "eth0", *, state_dir: Path | str | None = None,
                 sandbox: Sandbox | None = None, label: str | None = None):
        netns_etc(netns)  # a valid name
        self.netns = netns
        self.ifname = ifname
        self.label = label or netns
        self.sandbox = sandbox
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else STATE_BASE / netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.lease: DhcpLease | None = None
        self._log_mark = 0  # log offset where the current process started
        self._before: set[str] = set()  # script runs seen before the current start()
        self._made_etc = False
        self._closed = False

    @classmethod
    def adopt(cls, netns: str, state_dir: Path | str, ifname: str = "eth0", *,
              sandbox: Sandbox | None = None, label: str | None = None) -> DhcpClient:
        """A handle on a client another process started (e.g. the lab's `up`): nothing
        is created; the running dhclient is found through its pid file."""
        self = cls(netns, ifname, state_dir=state_dir, sandbox=sandbox, label=label)
        self._made_etc = netns_etc(netns).exists()
        acquired = [e for e in self.events() if e.reason in ACQUIRED]
        self.lease = acquired[-1].lease() if acquired else None
        return self

    # -- files ---------------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.state_dir / "dhclient.conf"

    @property
    def lease_path(self) -> Path:
        return self.state_dir / "dhclient.leases"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "dhclient.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "dhclient.log"

    @property
    def script_path(self) -> Path:
        return self.state_dir / "dhclient-script"

    @property
    def events_dir(self) -> Path:
        return self.state_dir / "events"

    @property
    def marker(self) -> str:
        """In the dhclient's command line (its lease file's path): names our process."""
        return str(self.lease_path)

    def log(self, current: bool = False) -> str:
        """dhclient's output (-v): everything, or only the current process's."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._log_mark if current else 0:].decode(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def events(self) -> list[ScriptEvent]:
        """Every run of dhclient-script so far, oldest first."""
        if not self.events_dir.is_dir():
            return []
        files = sorted((p for p in self.events_dir.iterdir() if p.name[:1].isdigit()),
                       key=lambda p: int(p.name.split(".", 1)[0]))
        return [parse_event_file(p) for p in files]

    def lease_file(self) -> list[DhcpLease]:
        """The lease file's entries (written at most every 15 s: may lag renewals)."""
        try:
            return parse_lease_file(self.lease_path.read_text())
        except FileNotFoundError:
            return []

    # -- process ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The running dhclient's pid (ours, or the adopted one's), None if none runs."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive_with(pid, self.marker) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _prepare(self, timeout: float) -> None:
        if shutil.which(DHCLIENT) is None or not STOCK_SCRIPT.exists():
            raise DhcpError("dhclient or /sbin/dhclient-script missing: apt-get install "
                            "isc-dhcp-client (make deps)")
        if apparmor_confines_dhclient():
            raise DhcpError(
                "AppArmor confines dhclient (profile in enforce mode): it may then use only "
                "/var/lib/dhcp, /run/dhclient* and /sbin/dhclient-script, not a per-guest "
                "state dir and script. For a test host: aa-complain /sbin/dhclient "
                "(apparmor-utils) or apparmor_parser -R /etc/apparmor.d/sbin.dhclient")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(exist_ok=True)
        self.conf_path.write_text(_CONF.format(label=self.label, netns=self.netns,
                                               timeout=max(1, int(timeout + 0.999)),
                                               requested=REQUESTED_OPTIONS))
        self.script_path.write_text(_WRAPPER.format(events=self.events_dir, stock=STOCK_SCRIPT))
        self.script_path.chmod(0o755)
        self._make_etc()
        self._check_isolation()

    def _make_etc(self) -> None:
        """/etc/netns/<netns>/{resolv.conf,dhcp/}: bound over /etc by ip netns exec."""
        etc = netns_etc(self.netns)
        if etc.exists() and not self._made_etc:
            extra = {p.name for p in etc.iterdir()} - {"resolv.conf", "dhcp"}
            if extra:
                raise DhcpError(f"{etc} holds {sorted(extra)}: not made by this helper")
        etc.mkdir(parents=True, exist_ok=True)
        self._made_etc = True
        resolv = etc / "resolv.conf"
        if not resolv.exists():
            resolv.write_text(PLACEHOLDER.format(netns=self.netns))
            resolv.chmod(0o644)
        for hookdir, names in GUEST_HOOKS.items():
            target = etc / "dhcp" / hookdir
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                src = HOST_DHCP_ETC / hookdir / name
                if not src.is_file():
                    raise DhcpError(f"{src} missing (isc-dhcp-client's {name} hook)")
                shutil.copy2(src, target / name)

    def _check_isolation(self) -> None:
        """Inside, /etc/resolv.conf and /etc/dhcp must be our files (same inode)."""
        etc = netns_etc(self.netns)
        out = nsutil.run(["stat", "-L", "-c", "%d:%i", "/etc/resolv.conf", "/etc/dhcp"],
                         netns=self.netns, check=False)
        seen = out.stdout.split()
        want = [f"{st.st_dev}:{st.st_ino}" for st in
                (os.stat(etc / "resolv.conf"), os.stat(etc / "dhcp"))]
        if seen != want:
            raise DhcpError(
                f"ip netns exec {self.netns} does not bind {etc}/resolv.conf and {etc}/dhcp "
                f"over /etc (inside: {seen or out.stderr.strip()}, want {want}); dhclient-"
                "script would write the host's /etc/resolv.conf. Does the host have "
                "/etc/resolv.conf and /etc/dhcp?")

    def _argv(self, *mode: str) -> list[str]:
        return ["unshare", "--uts", DHCLIENT, "-4", *mode, "-v", "-cf", str(self.conf_path),
                "-lf", str(self.lease_path), "-pf", str(self.pid_path),
                "-sf", str(self.script_path), self.ifname]

    def _spawn(self) -> None:
        self._log_mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = nsutil.popen(self._argv("-d", "-1"), netns=self.netns, stdout=log,
                                     stderr=subprocess.STDOUT)
        if self.sandbox is not None:
            self.sandbox.record_process(self.proc.pid, self.marker)

    def _event_names(self) -> set[str]:
        return {e.name for e in self.events()}

    def _wait_event(self, before: set[str], reasons: Sequence[str], timeout: float,
                    what: str) -> ScriptEvent:
        """The first script run after `before` whose reason is in `reasons`."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc is not None and self.proc.poll() is not None
            fresh = [e for e in self.events() if e.name not in before]
            for ev in fresh:
                if ev.reason in reasons:
                    return ev
                if ev.reason in ("TIMEOUT", "FAIL"):
                    raise DhcpError(f"{self.label}: {what}: dhclient-script ran with "
                                    f"{ev.reason} (no server answered)\n{self.log_tail()}")
            if exited:  # (checked before reading the events: none is missed)
                assert self.proc is not None
                code = self.proc.returncode
                raise DhcpError(f"{self.label}: {what}: dhclient exited {code}"
                                + (" (no lease on the first try)" if code == 2 else "")
                                + f"\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DhcpError(f"{self.label}: {what}: nothing in {timeout:g}s\n"
                                f"{self.log_tail()}")
            time.sleep(0.02)

    # -- the API ------------------------------------------------------------------------------
    def start(self, timeout: float = 20.0, wait: bool = True) -> DhcpLease | None:
        """Run dhclient; with `wait`, return the lease once the script has configured it
        (BOUND, or REBOOT when the lease file already held one). Raises DhcpError, with
        dhclient's log tail, if no server answered within `timeout` (dhclient is then
        stopped). Without `wait`, returns None at once: call `wait_acquired()`."""
        if self._closed:
            raise DhcpError(f"{self.label}: closed")
        if self.running:
            raise DhcpError(f"{self.label}: dhclient already runs (pid {self.pid})")
        self._prepare(timeout)
        self._before = self._event_names()
        self._spawn()
        return self.wait_acquired(timeout) if wait else None

    def wait_acquired(self, timeout: float = 20.0) -> DhcpLease:
        """After `start(wait=False)`: the lease, as `start()` returns it."""
        try:
            ev = self._wait_event(self._before, ("BOUND", "REBOOT"), timeout, "no lease")
        except DhcpError:
            self.stop()
            raise
        return self._settle(ev)

    def _settle(self, ev: ScriptEvent) -> DhcpLease:
        """The lease of an acquisition. On REBOOT the stock script does ``ip addr add``,
        which fails for an address still there ("Address already assigned": a client
        restarted over its own address keeps the old lifetime, and the kernel would drop
        the address at the old lease's end): reset it as the script does on RENEW."""
        lease = ev.lease()
        if ev.reason == "REBOOT" and lease.lease_time and \
                lease.cidr in addresses(self.netns, self.ifname):
            nsutil.run(["ip", "-4", "addr", "change", lease.cidr, "dev", self.ifname,
                        "valid_lft", str(lease.lease_time),
                        "preferred_lft", str(lease.lease_time)], netns=self.netns)
        self.lease = lease
        return lease

    def renew(self, timeout: float = 15.0) -> DhcpLease:
        """Make dhclient send a DHCPREQUEST for its current lease now, and return the
        answer's lease.

        ISC dhclient has no signal or command for "renew now" (SIGHUP and SIGUSR1 kill
        it; its true RENEW runs only at T1; `-n` means "configure no interface").
        What works is what a rebooted VM does: SIGTERM the running client (it dies at
        once: no DHCPRELEASE, no script run, address and routes stay), start it again
        with the same lease file: it goes INIT-REBOOT and broadcasts a DHCPREQUEST for
        the leased address (option 50, no server id, ciaddr 0). An ACK makes the script
        run with REBOOT (returned: ``reason == "REBOOT"``); a NAK makes it run EXPIRE
        (the address goes) and DISCOVER again (returned lease: ``BOUND``, maybe another
        address). After REBOOT the address's lifetime is reset to the new lease (see
        `_settle`: the stock script cannot, the address being still there).

        Verify with `log(current=True)`: "DHCPREQUEST for A on eth0 to 255.255.255.255",
        "DHCPACK of A from SERVER", no DHCPDISCOVER. For a real RENEW (unicast to the
        server id, ciaddr set) see `wait_renewal()`.
        """
        if not self.lease_file():
            raise DhcpError(f"{self.label}: no lease to renew (start() first)")
        self.stop()
        before = self._event_names()
        self._prepare(timeout)
        self._spawn()
        try:
            ev = self._wait_event(before, ("REBOOT", "BOUND"), timeout, "renew")
        except DhcpError:
            self.stop()
            raise
        return self._settle(ev)

    def wait_renewal(self, timeout: float) -> DhcpLease:
        """Wait for the running client's own RENEW (at T1: a DHCPREQUEST unicast to the
        server id, which the guest must be able to ARP for) or REBIND (at T2,
        broadcast), or its BOUND after a NAK (EXPIRE, then DISCOVER anew), and return
        its lease (`reason` says which). T1 is the server's option 58, else about half
        the lease time (dhclient adds up to a quarter at random)."""
        if not self.running:
            raise DhcpError(f"{self.label}: dhclient does not run")
        ev = self._wait_event(self._event_names(), RENEWED, timeout, "renewal")
        self.lease = ev.lease()
        return self.lease

    def release(self, timeout: float = 10.0) -> None:
        """``dhclient -r``: stops the running client (SIGTERM through the pid file, then
        dhclient sleeps 1 s), sends a DHCPRELEASE (unicast to the server id) and runs the
        script with RELEASE, which removes the address (and with it its routes)."""
        if not self.lease_file():
            raise DhcpError(f"{self.label}: no lease to release")
        before = self._event_names()
        self._prepare(timeout)
        proc = nsutil.run(self._argv("-r"), netns=self.netns, check=False, timeout=timeout)
        with open(self.log_path, "a") as log:
            log.write(proc.stdout + proc.stderr)
        self.stop()
        if proc.returncode != 0:
            raise DhcpError(f"{self.label}: dhclient -r exited {proc.returncode}\n"
                            f"{proc.stdout}{proc.stderr}")
        self._wait_event(before, ("RELEASE",), 2.0, "release")
        self.lease = None

    def stop(self) -> None:
        """SIGTERM the running dhclient: it exits at once, without DHCPRELEASE and
        without running its script (the address stays until its lifetime ends). The
        lease file stays (`renew()` and a later `start()` use it)."""
        pid = self.pid
        recorded = self.proc.pid if self.proc is not None else pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        elif pid is not None:
            deadline = time.monotonic() + 3
            while _alive_with(pid, self.marker) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive_with(pid, self.marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if recorded is not None and self.sandbox is not None:
            self.sandbox.forget_process(recorded)
        self.proc = None

    def close(self) -> None:
        """Stop dhclient, remove /etc/netns/<netns> and (if ours) the state dir."""
        if self._closed:
            return
        self.stop()
        if self._made_etc:
            remove_netns_etc(self.netns)
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._closed = True

    # -- what is configured ------------------------------------------------------------------
    def addresses(self) -> list[str]:
        return addresses(self.netns, self.ifname)

    def routes(self) -> list[tuple[str, str | None]]:
        return routes(self.netns, self.ifname)

    def resolv_conf(self) -> str:
        return resolv_conf(self.netns)

    def mtu(self) -> int:
        return link_mtu(self.netns, self.ifname)

    def __enter__(self) -> DhcpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DhcpClient({self.netns!r}, {self.ifname!r}, pid={self.pid}, lease={self.lease})"


def _alive_with(pid: int, marker: str) -> bool:
    """`pid` runs (not a zombie) and `marker` is in its command line."""
    if not nsutil.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker in fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
