"""Network namespaces, veth pairs and links for test sandboxes and the lab.

Everything here shells out to iproute2 and ethtool; it needs root and uses only the
standard library (so `make clean` can run the stale-object sweep before the venv
exists).

A `Sandbox` owns a short, unique name prefix and records every namespace, link and
process it creates, so `cleanup()` removes exactly those and nothing else. The
record is also written to ``/run/loom-sandbox/<prefix>.json``: if the owning
process dies without cleaning up (SIGKILL, a crashed CI run), `sweep_stale()` (or
``python3 -m topologies.netns sweep``) removes what that dead run made, and only
that.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

IFNAMSIZ = 15  # usable characters in a Linux interface name
STATE_DIR = Path(os.environ.get("LOOM_SANDBOX_STATE", "/run/loom-sandbox"))
MGMT_SUPERNET = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598: never a tenant subnet
_NAME_CHARS = string.ascii_lowercase + string.digits
# Offloads that break checksums on the userspace datapath (see DESIGN.md).
OFFLOAD_FEATURES = ("rx", "tx", "sg", "tso", "gso", "gro")


class CommandError(RuntimeError):
    """A command exited non-zero; carries its argv, exit code and output."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip()
        super().__init__(f"{' '.join(self.argv)} -> exit {returncode}: {detail}")


def ns_argv(argv: Sequence[str], netns: str | None) -> list[str]:
    """`argv` prefixed with `ip netns exec NETNS` when netns is set."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside `netns` if given), capture text output, raise on failure."""
    full = ns_argv(argv, netns)
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            full,
            input=data,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(full, -1, "", f"timed out after {timeout}s") from exc
    result = subprocess.CompletedProcess(
        full,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise CommandError(full, result.returncode, result.stdout, result.stderr)
    return result


def popen(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = subprocess.STDOUT,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a background process (inside `netns` if given) in its own session.

    `ip netns exec` execs the command directly, so the returned pid is the command's.
    """
    return subprocess.Popen(
        ns_argv(argv, netns),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )


def check_ifname(name: str) -> str:
    """Return `name` if it is a valid Linux interface name, else raise ValueError."""
    bad = any(c in name for c in "/: \t\n") or name in (".", "..")
    if not name or len(name) > IFNAMSIZ or bad:
        raise ValueError(f"invalid interface name {name!r}: 1-{IFNAMSIZ} chars, no '/', ':', space")
    return name


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def netns_pids(name: str) -> list[int]:
    """Pids of processes whose network namespace is `name`."""
    proc = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def link_exists(ifname: str, netns: str | None = None) -> bool:
    return run(["ip", "link", "show", "dev", ifname], netns=netns, check=False).returncode == 0


def link_up(ifname: str, netns: str | None = None) -> None:
    run(["ip", "link", "set", "dev", ifname, "up"], netns=netns)


def link_down(ifname: str, netns: str | None = None) -> None:
    run(["ip", "link", "set", "dev", ifname, "down"], netns=netns)


def set_mtu(ifname: str, mtu: int, netns: str | None = None) -> None:
    run(["ip", "link", "set", "dev", ifname, "mtu", str(mtu)], netns=netns)


def set_mac(ifname: str, mac: str, netns: str | None = None) -> None:
    run(["ip", "link", "set", "dev", ifname, "address", mac], netns=netns)


def add_address(ifname: str, cidr: str, netns: str | None = None) -> None:
    """Add an IPv4 or IPv6 address; IPv6 skips duplicate address detection (no 1-2 s wait)."""
    iface = ipaddress.ip_interface(cidr)
    argv = ["ip", f"-{iface.version}", "addr", "add", str(iface), "dev", ifname]
    if iface.version == 6:
        argv.append("nodad")
    run(argv, netns=netns)


def del_address(ifname: str, cidr: str, netns: str | None = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    run(["ip", f"-{iface.version}", "addr", "del", str(iface), "dev", ifname], netns=netns)


def add_route(
    dest: str, via: str | None = None, dev: str | None = None, netns: str | None = None
) -> None:
    """`ip route replace DEST [via VIA] [dev DEV]`; DEST may be 'default'."""
    family = "-6" if ":" in (via or "") or ":" in dest else "-4"
    argv = ["ip", family, "route", "replace", dest]
    if via:
        argv += ["via", via]
    if dev:
        argv += ["dev", dev]
    run(argv, netns=netns)


def sysctl(key: str, value: str | int, netns: str | None = None) -> None:
    run(["sysctl", "-q", "-w", f"{key}={value}"], netns=netns)


def disable_offloads(ifname: str, netns: str | None = None) -> None:
    """Turn checksum/segmentation offloads off: TCP hangs on the userspace datapath otherwise.

    Features a driver cannot change are ignored; tx checksumming must end up off.
    """
    argv = ["ethtool", "-K", ifname]
    for feature in OFFLOAD_FEATURES:
        argv += [feature, "off"]
    run(argv, netns=netns, check=False)
    out = run(["ethtool", "-k", ifname], netns=netns).stdout
    for line in out.splitlines():
        if line.startswith("tx-checksumming:") and line.split(":", 1)[1].split()[0] != "off":
            raise CommandError(argv, 1, out, f"tx checksumming still on for {ifname}")


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_pids(pids: Sequence[int], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace` seconds."""
    live = [p for p in pids if pid_alive(p)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [p for p in live if pid_alive(p)]
        if live:
            time.sleep(0.05)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Sandbox:
    """Creates namespaces, veths and background processes under one unique prefix.

    Names are ``<prefix>-<role>`` (prefix: 'l' + 4 random chars, so ≤ 15 chars
    leaves 9 for the role). Cleanup kills recorded processes and everything still
    running inside recorded namespaces, deletes recorded root-namespace links, then
    the namespaces (which takes their links and veth peers with them).
    """

    def __init__(self, prefix: str | None = None):
        with _state_lock():
            self.prefix = prefix or self._fresh_prefix()
            self._record_path = STATE_DIR / f"{self.prefix}.json"
            self.netns: list[str] = []
            self.links: list[tuple[str, str | None]] = []
            self.processes: list[tuple[int, str]] = []  # (pid, marker in its cmdline)
            self._names: set[str] = set()
            self._closed = False
            self._save()
        atexit.register(self.cleanup)

    @staticmethod
    def _fresh_prefix() -> str:
        existing = set(netns_list()) if Path("/run/netns").exists() else set()
        for _ in range(100):
            prefix = "l" + "".join(secrets.choice(_NAME_CHARS) for _ in range(4))
            if (STATE_DIR / f"{prefix}.json").exists():
                continue
            if any(n.startswith(prefix) for n in existing) or link_exists(f"{prefix}-x"):
                continue
            return prefix
        raise RuntimeError("could not find an unused sandbox prefix")

    # -- naming -----------------------------------------------------------------
    def name(self, role: str) -> str:
        """A name unique within this sandbox, ≤ 15 chars: ``<prefix>-<role>[n]``."""
        clean = "".join(c for c in role if c.isalnum() or c in "-_.") or "x"
        base = f"{self.prefix}-{clean}"[:IFNAMSIZ]
        candidate, n = base, 1
        while candidate in self._names:
            suffix = str(n)
            candidate = base[: IFNAMSIZ - len(suffix)] + suffix
            n += 1
        self._names.add(candidate)
        return check_ifname(candidate)

    # -- creation ---------------------------------------------------------------
    def add_netns(self, role: str) -> str:
        """Create a namespace named ``<prefix>-<role>`` with loopback up; return its name."""
        name = self.name(role)
        run(["ip", "netns", "add", name])
        self.netns.append(name)
        self._save()
        link_up("lo", netns=name)
        return name

    def add_veth(
        self,
        name_a: str,
        name_b: str,
        netns_a: str | None = None,
        netns_b: str | None = None,
        *,
        mtu: int | None = None,
        offloads: bool = False,
        up: bool = True,
    ) -> tuple[str, str]:
        """Create veth `name_a`@`netns_a` <-> `name_b`@`netns_b` (None = root namespace).

        Each end is created directly in its namespace, so the same name (e.g. eth0)
        may exist in other namespaces. Offloads are turned off unless `offloads`.
        """
        check_ifname(name_a)
        check_ifname(name_b)
        argv = ["ip", "link", "add", name_a]
        if netns_a:
            argv += ["netns", netns_a]
        argv += ["type", "veth", "peer", "name", name_b]
        if netns_b:
            argv += ["netns", netns_b]
        run(argv)
        # Record the end in the root namespace if there is one: deleting a namespace
        # already removes the pair, a root-namespace veth must be deleted by name.
        if netns_a is None or netns_b is not None:
            self.links.append((name_a, netns_a))
        else:
            self.links.append((name_b, netns_b))
        self._save()
        for ifname, ns in ((name_a, netns_a), (name_b, netns_b)):
            if mtu:
                set_mtu(ifname, mtu, netns=ns)
            if not offloads:
                disable_offloads(ifname, netns=ns)
            if up:
                link_up(ifname, netns=ns)
        return name_a, name_b

    def record_process(self, pid: int, marker: str) -> None:
        """Record a background process; `marker` must appear in its command line, so a
        stale sweep never kills an unrelated process that reused the pid."""
        self.processes.append((pid, marker))
        self._save()

    def forget_process(self, pid: int) -> None:
        self.processes = [(p, m) for p, m in self.processes if p != pid]
        self._save()

    # -- removal ----------------------------------------------------------------
    def delete_link(self, ifname: str, netns: str | None = None) -> None:
        run(["ip", "link", "del", "dev", ifname], netns=netns, check=False)
        self.links = [(n, ns) for n, ns in self.links if (n, ns) != (ifname, netns)]
        self._save()

    def delete_netns(self, name: str) -> None:
        if name not in self.netns:
            raise ValueError(f"namespace {name} was not made by sandbox {self.prefix}")
        _destroy_netns(name)
        self.netns.remove(name)
        self.links = [(n, ns) for n, ns in self.links if ns != name]
        self._save()

    def cleanup(self) -> list[str]:
        """Remove everything this sandbox made; return a list of problems (empty if none)."""
        if self._closed:
            return []
        problems = _remove_objects(self.processes, self.links, self.netns)
        self.processes, self.links, self.netns = [], [], []
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self._record_path.unlink()
        with contextlib.suppress(Exception):
            atexit.unregister(self.cleanup)
        return problems

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _save(self) -> None:
        data = {
            "owner_pid": os.getpid(),
            "netns": self.netns,
            "links": self.links,
            "processes": self.processes,
        }
        tmp = self._record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self._record_path)

    # -- management links -------------------------------------------------------
    def add_mgmt_link(
        self, netns: str, host_ip: str | None = None, ns_ip: str | None = None, role: str = "m"
    ) -> tuple[str, str, str]:
        """Veth between the root namespace and `netns` on a /30 from 100.64.0.0/10.

        Returns (host_ip, ns_ip, host_ifname). Addresses are picked free (no address or
        route in the root namespace overlaps) unless given; both must then share a /30
        inside 100.64.0.0/10.
        """
        with _state_lock():
            if host_ip is None or ns_ip is None:
                net = _free_mgmt_subnet()
                hosts = list(net.hosts())
                host_ip, ns_ip = str(hosts[0]), str(hosts[1])
            else:
                net = ipaddress.IPv4Interface(f"{host_ip}/30").network
                if ipaddress.ip_address(ns_ip) not in net or not net.subnet_of(MGMT_SUPERNET):
                    raise ValueError(f"{host_ip} and {ns_ip} must share a /30 in {MGMT_SUPERNET}")
            host_if = self.name(role + "h")
            ns_if = self.name(role + "n")
            self.add_veth(host_if, ns_if, None, netns)
            add_address(host_if, f"{host_ip}/30")
            add_address(ns_if, f"{ns_ip}/30", netns=netns)
        return host_ip, ns_ip, host_if


def mgmt_lock() -> contextlib.AbstractContextManager[None]:
    """The lock under which management subnets are picked and their addresses added."""
    return _state_lock()


def free_mgmt_subnet(prefixlen: int = 30) -> ipaddress.IPv4Network:
    """A /`prefixlen` of 100.64.0.0/10 overlapping no address or route of the root
    namespace. Hold `mgmt_lock()` until its address is added, so no other run picks it."""
    return _free_mgmt_subnet(prefixlen)


def _free_mgmt_subnet(prefixlen: int = 30) -> ipaddress.IPv4Network:
    used: list[ipaddress.IPv4Network] = []
    for argv in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for line in run(argv, check=False).stdout.splitlines():
            for word in line.split():
                if not word[:1].isdigit():
                    continue
                with contextlib.suppress(ValueError):
                    net = ipaddress.ip_network(word, strict=False)
                    if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                        used.append(net)
    used = [n for n in used if n.overlaps(MGMT_SUPERNET)]
    # Start at a per-process offset so parallel runs rarely even compete for the lock.
    size = 1 << (32 - prefixlen)
    count = MGMT_SUPERNET.num_addresses // size
    start = os.getpid() % min(4096, count)
    base = int(MGMT_SUPERNET.network_address)
    for i in range(count):
        cand = ipaddress.IPv4Network((base + size * ((start + i) % count), prefixlen))
        if not any(cand.overlaps(u) for u in used):
            return cand
    raise RuntimeError(f"no free /{prefixlen} in {MGMT_SUPERNET}")


def _destroy_netns(name: str) -> None:
    if not netns_exists(name):
        return
    kill_pids(netns_pids(name))
    run(["ip", "netns", "del", name], check=False)


def _remove_objects(
    processes: Sequence[Sequence[Any]],
    links: Sequence[Sequence[Any]],
    namespaces: Sequence[str],
) -> list[str]:
    problems: list[str] = []
    pids = [int(pid) for pid, marker in processes if marker in _cmdline(int(pid))]
    for ns in namespaces:
        if netns_exists(ns):
            pids += netns_pids(ns)
    kill_pids(pids)
    for ifname, ns in links:
        if ns and not netns_exists(ns):
            continue
        if link_exists(ifname, netns=ns):
            proc = run(["ip", "link", "del", "dev", ifname], netns=ns, check=False)
            if proc.returncode != 0 and link_exists(ifname, netns=ns):
                problems.append(f"link {ifname}: {proc.stderr.strip()}")
    for ns in namespaces:
        if netns_exists(ns):
            proc = run(["ip", "netns", "del", ns], check=False)
            if proc.returncode != 0:
                problems.append(f"netns {ns}: {proc.stderr.strip()}")
    return problems


def remove_objects(
    processes: Sequence[Sequence[Any]],
    links: Sequence[Sequence[Any]],
    namespaces: Sequence[str],
) -> list[str]:
    """Remove recorded objects as `Sandbox.cleanup()` does (processes whose cmdline still
    holds their marker, everything running in the namespaces, the links, the namespaces);
    return problems. For records kept elsewhere, e.g. the lab's state file."""
    return _remove_objects(processes, links, namespaces)


def sweep_stale() -> list[str]:
    """Remove what sandboxes of dead processes left behind; return the prefixes swept."""
    swept: list[str] = []
    if not STATE_DIR.exists():
        return swept
    with _state_lock():
        for path in sorted(STATE_DIR.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if pid_alive(int(data.get("owner_pid", 0))):
                continue
            _remove_objects(data.get("processes", []), data.get("links", []), data.get("netns", []))
            path.unlink(missing_ok=True)
            swept.append(path.stem)
    return swept


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["sweep"]:
        if os.geteuid() != 0:
            print("netns sweep: not root, nothing swept")
            return 0
        swept = sweep_stale()
        print(
            f"netns sweep: removed leftovers of {len(swept)} dead sandbox run(s)"
            + (f": {', '.join(swept)}" if swept else "")
        )
        return 0
    if args == ["list"]:
        for path in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.exists() else []:
            print(path.stem, path.read_text())
        return 0
    print("usage: python3 -m topologies.netns sweep|list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

