"""`python -m controller nb-cluster`: create, join and inspect a clustered northbound.

High availability of the northbound comes from OVSDB's own raft (the distributed
engine ovsdb-server already has): this module only drives the real tools,
`ovsdb-tool create-cluster|join-cluster`, `ovsdb-server` and `ovs-appctl
cluster/...`, and never implements any consensus itself.

One member = one directory (`--dir`) holding everything of that member: its db
(nb.db), client socket (nb.sock), control socket, pidfile and log. Nothing goes
near the system's OVS files. The server runs detached, so a member outlives the
command that started it, like any other daemon; `stop`/`start` act on that
directory only. Controllers reach the cluster through `client_remote()`, e.g.
`--nb-db unix:/a/nb.sock,unix:/b/nb.sock,unix:/c/nb.sock`; python-ovs's IDL then
talks to the leader only and moves on when the leader changes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional

from controller.store.embedded import SCHEMA_PATH

DB_NAME: str = json.loads(SCHEMA_PATH.read_text())["name"]  # "Loom_Northbound"
# Where the OVS tools are looked for; None: $PATH, then /usr/sbin and /usr/bin.
TOOL_PATH: Optional[str] = None
EXIT_FAILURE = 1
EXIT_USAGE = 2
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL
# No ssl:/pssl: (this command passes no keys or certificates to ovsdb-server).
_RAFT_RE = re.compile(r"^(?:tcp:(?:\[[0-9a-fA-F:.]+\]|[^:\[\]]+):\d{1,5}|unix:/.+)$")
_LISTEN_RE = re.compile(r"^(?:ptcp:\d{1,5}(?::\S+)?|punix:/.+)$")
# Statuses of a server that has not become (or is no longer) a cluster member.
_NOT_MEMBER = ("joining cluster", "leaving cluster", "left cluster")


class NbClusterError(Exception):
    """A reason the command failed, printed as one line (never a traceback)."""


# -- one member's files --------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """The files of one cluster member, all inside `dir`."""

    dir: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> Member:
        return cls(Path(path).resolve())

    @property
    def db(self) -> Path:
        return self.dir / "nb.db"

    @property
    def socket(self) -> Path:
        return self.dir / "nb.sock"

    @property
    def ctl(self) -> Path:
        return self.dir / "ovsdb-server.ctl"

    @property
    def pidfile(self) -> Path:
        return self.dir / "ovsdb-server.pid"

    @property
    def log(self) -> Path:
        return self.dir / "ovsdb-server.log"

    @property
    def stderr(self) -> Path:
        return self.dir / "ovsdb-server.stderr"

    @property
    def config(self) -> Path:
        """The client listeners given at create/join, so `start` brings them back."""
        return self.dir / "nb-cluster.json"

    @property
    def remote(self) -> str:
        """This member's client remote: `unix:<dir>/nb.sock`."""
        return f"unix:{self.socket}"

    def pid(self) -> Optional[int]:
        """The pid of the live ovsdb-server named by the pidfile; None if none runs.

        A kill -9 leaves the pidfile behind and the pid may be reused by then, so it
        counts only while /proc says it is an ovsdb-server that is not a zombie.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        state = stat.rpartition(")")[2].split()[:1]
        if state == ["Z"] or b"ovsdb-server" not in cmdline:
            return None
        return pid


def client_remote(members: Iterable[Member | str | os.PathLike[str]]) -> str:
    """The `--nb-db` value for a set of members: their client sockets, comma-separated."""
    out = []
    for m in members:
        out.append((m if isinstance(m, Member) else Member.at(m)).remote)
    return ",".join(out)


# -- cluster/status -------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    """One entry of the Servers list of `cluster/status`."""

    nickname: str  # how the other lines (Leader:, Vote:) name it
    id: str  # short (4 hex digits) server id
    address: str  # its raft address
    is_self: bool = False


@dataclass(frozen=True)
class ClusterStatus:
    """`ovs-appctl cluster/status` of one member, parsed.

    `leader` is what the server says: "self", a nickname, or None when it knows
    none. ovsdb-server names a tcp/ssl member by its short id and a unix one by its
    socket's file name without `.sock`, so `leader_id`/`leader_address` are filled
    only when that nickname names exactly one server in the list.
    """

    name: str
    cluster_id: Optional[str]  # None until a joining member has heard from the cluster
    server_id: str
    address: str
    status: str  # "cluster member", "joining cluster", "disconnected from the cluster (...)"
    role: str  # leader | follower | candidate
    term: int
    leader: Optional[str]
    leader_id: Optional[str]
    leader_address: Optional[str]
    vote: Optional[str]
    servers: list[Server] = field(default_factory=list)
    remotes_for_joining: list[str] = field(default_factory=list)
    disconnections: int = 0

    @property
    def is_member(self) -> bool:
        return self.status not in _NOT_MEMBER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SERVER_RE = re.compile(r"^\s+(\S+) \(([0-9a-f]+) at (\S+?)\)(.*)$")
_FULL_ID_RE = re.compile(r"\(([0-9a-f-]{36})\)")


def parse_status(text: str) -> ClusterStatus:
    """Parse the text of `cluster/status DB`; NbClusterError if it is not one."""
    fields: dict[str, str] = {}
    servers: list[Server] = []
    in_servers = False
    for line in text.splitlines():
        if in_servers:
            found = _SERVER_RE.match(line)
            if found:
                nick, sid, addr, rest = found.groups()
                servers.append(Server(nick, sid, addr, "(self)" in rest))
                continue
            in_servers = False
        if line.strip() == "Servers:":
            in_servers = True
            continue
        key, sep, value = line.partition(": ")
        if sep and not key.startswith(" "):
            fields[key] = value.strip()
    missing = [k for k in ("Name", "Server ID", "Address", "Status", "Role", "Term")
               if k not in fields]
    if missing:
        first = text.strip().splitlines()[:1]
        raise NbClusterError(
            f"unexpected cluster/status output (no {', '.join(missing)}): "
            f"{first[0] if first else 'empty'}"
        )

    def full_id(value: str) -> Optional[str]:
        found = _FULL_ID_RE.search(value)
        return found.group(1) if found else None

    server_id = full_id(fields["Server ID"]) or fields["Server ID"]
    leader = fields.get("Leader")
    leader = None if leader in (None, "unknown") else leader
    vote = fields.get("Vote")
    vote = None if vote in (None, "unknown") else vote
    leader_id = leader_address = None
    if leader == "self":
        leader_id, leader_address = server_id[:4], fields["Address"]
    elif leader is not None:
        named = [s for s in servers if s.nickname == leader]
        if len(named) == 1:
            leader_id, leader_address = named[0].id, named[0].address
    joining = fields.get("Remotes for joining", "")
    try:
        term = int(fields["Term"])
    except ValueError:
        raise NbClusterError(f"unexpected cluster/status Term: {fields['Term']!r}") from None
    return ClusterStatus(
        name=fields["Name"],
        cluster_id=full_id(fields.get("Cluster ID", "")),
        server_id=server_id,
        address=fields["Address"],
        status=fields["Status"],
        role=fields["Role"],
        term=term,
        leader=leader,
        leader_id=leader_id,
        leader_address=leader_address,
        vote=vote,
        servers=servers,
        remotes_for_joining=[r for r in re.split(r"[\s,]+", joining) if r],
        disconnections=int(fields.get("Disconnections", "0") or 0),
    )


def format_status(st: ClusterStatus) -> str:
    """The human view of `status`: who this is, its state, the leader, the members."""
    cluster = st.cluster_id[:4] if st.cluster_id else "not yet known"
    if st.leader is None:
        leader = "unknown"
    elif st.leader == "self":
        leader = "self"
    else:
        leader = f"{st.leader_id or st.leader} at {st.leader_address or '?'}"
    lines = [
        f"{st.name} member {st.server_id[:4]} at {st.address} (cluster {cluster})",
        f"status: {st.status}",
        f"role: {st.role}, term {st.term}, leader: {leader}",
    ]
    if st.remotes_for_joining:
        lines.append(f"joining through: {', '.join(st.remotes_for_joining)}")
    lines.append(f"servers ({len(st.servers)}):")
    for s in st.servers:
        tags = [t for t, on in (("self", s.is_self), ("leader", s.address == st.leader_address))
                if on]
        lines.append(f"  {s.id}  {s.address}" + (f"  ({', '.join(tags)})" if tags else ""))
    return "\n".join(lines)


# -- the OVS tools ----------------------------------------------------------------
def _find_tool(name: str, package: str) -> str:
    path = TOOL_PATH if TOOL_PATH is not None else \
        f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin"
    found = shutil.which(name, path=path)
    if found is None:
        raise NbClusterError(f"{name} not found; install {package}")
    return found


def _run(cmd: list[str], what: str, timeout: float = 30.0) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise NbClusterError(f"{what}: no answer within {timeout:g}s") from None
    if done.returncode != 0:
        # ovs-appctl prints the server's own error first, then a generic last line
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        said = [ln for ln in lines if not ln.endswith("server returned an error")]
        reason = "; ".join(said or lines) or f"exit status {done.returncode}"
        raise NbClusterError(f"{what} failed: {reason}")
    return done.stdout


def _appctl(member: Member, *args: str, timeout: float = 10.0) -> str:
    if member.pid() is None or not member.ctl.exists():
        raise NbClusterError(
            f"no ovsdb-server runs for {member.dir} (start it: nb-cluster start --dir {member.dir})"
        )
    tool = _find_tool("ovs-appctl", "openvswitch-common")
    return _run([tool, "-t", str(member.ctl), f"--timeout={max(1, int(timeout))}", *args],
                f"ovs-appctl {args[0]}", timeout + 2)


def status(member: Member) -> ClusterStatus:
    """The member's view of the cluster, from its own running server."""
    return parse_status(_appctl(member, "cluster/status", DB_NAME))


# -- commands ---------------------------------------------------------------------
def _check_new(member: Member, raft: str, remotes: Sequence[str]) -> None:
    """Refuse to create/join over an existing member (its db would be thrown away) or
    on an address another process holds (the server would run, unreachable)."""
    if member.db.exists():
        raise NbClusterError(
            f"{member.dir} already holds a database ({member.db.name}); "
            f"run it with `nb-cluster start --dir {member.dir}`, or remove it to start over"
        )
    if member.pid() is not None:
        raise NbClusterError(f"an ovsdb-server (pid {member.pid()}) already runs in {member.dir}")
    for address in (raft, *remotes):
        _check_bindable(address)
    try:
        member.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NbClusterError(f"cannot create {member.dir}: {exc.strerror}") from exc
    longest = max([str(member.ctl), str(member.socket)], key=len)
    if len(longest.encode()) > _SUN_PATH_MAX:
        raise NbClusterError(f"path too long for a unix socket ({len(longest)} > "
                             f"{_SUN_PATH_MAX} bytes): {longest}; use a shorter --dir")
    member.config.write_text(json.dumps({"remotes": list(remotes)}) + "\n")


def _check_bindable(address: str) -> None:
    """NbClusterError if the tcp port of a raft address or client listener is taken."""
    kind, _, rest = address.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
    elif kind == "ptcp":
        port, _, host = rest.partition(":")
    else:
        return  # unix: ovsdb-server replaces a stale socket file itself
    host = host.strip("[]") or "0.0.0.0"
    try:
        family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NbClusterError(f"cannot listen on {address}: {reason}") from None


def create(member: Member, raft: str, remotes: Sequence[str] = (), *,
           schema: Path = SCHEMA_PATH, timeout: float = 10.0) -> ClusterStatus:
    """Make a new one-member cluster in `member.dir` and start its server."""
    tool = _find_tool("ovsdb-tool", "openvswitch-common")
    _check_new(member, raft, remotes)
    _run([tool, "create-cluster", str(member.db), str(schema), raft], "ovsdb-tool create-cluster")
    try:
        return start(member, remotes, timeout=timeout)
    except NbClusterError:
        if member.pid() is None:  # no one else can know this cluster yet: retry from scratch
            member.db.unlink(missing_ok=True)
        raise


def join(member: Member, raft: str, peers: Sequence[str], remotes: Sequence[str] = (), *,
         timeout: float = 10.0) -> ClusterStatus:
    """Make `member` join the cluster that `peers` (raft addresses) belong to.

    Its server starts with an empty log and is added once the leader answers; it
    then receives the whole database from the leader.
    """
    tool = _find_tool("ovsdb-tool", "openvswitch-common")
    _check_new(member, raft, remotes)
    _run([tool, "join-cluster", str(member.db), DB_NAME, raft, *peers],
         "ovsdb-tool join-cluster")
    return start(member, remotes, timeout=timeout)


def start(member: Member, remotes: Optional[Sequence[str]] = None, *,
          timeout: float = 10.0) -> ClusterStatus:
    """Start the member's server (detached) and wait until it is a cluster member.

    `remotes`: client listeners besides nb.sock; None: those given at create/join.
    A restarted member reads its log from disk and catches up from the leader.
    """
    if not member.db.is_file():
        raise NbClusterError(f"{member.dir} holds no database; create or join first")
    other = member.pid()
    if other is not None:
        raise NbClusterError(f"an ovsdb-server (pid {other}) already runs in {member.dir}")
    if remotes is None:
        try:
            remotes = list(json.loads(member.config.read_text()).get("remotes", []))
        except (OSError, ValueError):
            remotes = []
    server = _find_tool("ovsdb-server", "openvswitch-switch")
    try:
        log_offset = member.log.stat().st_size
    except OSError:
        log_offset = 0
    cmd = [
        server, str(member.db),
        "--detach", "--no-chdir", f"--pidfile={member.pidfile}",
        f"--log-file={member.log}", f"--unixctl={member.ctl}", "-vconsole:off",
        f"--remote=punix:{member.socket}", *(f"--remote={r}" for r in remotes),
    ]
    with open(member.stderr, "wb") as err:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=60)
    if done.returncode != 0:
        raise NbClusterError(f"ovsdb-server for {member.dir} did not start: "
                             f"{_log_tail(member, log_offset)}")
    deadline = time.monotonic() + timeout
    st: Optional[ClusterStatus] = None
    while True:
        if member.pid() is None:
            raise NbClusterError(f"ovsdb-server for {member.dir} exited at start: "
                                 f"{_log_tail(member, log_offset)}")
        if accepts(member.socket):
            try:
                st = status(member)
            except NbClusterError:
                st = None
            if st is not None:
                busy = _address_in_use(member, log_offset)
                if busy:
                    stop(member)
                    raise NbClusterError(f"ovsdb-server for {member.dir}: {busy}")
                if st.is_member:
                    return st
        if time.monotonic() > deadline:
            state = f"status: {st.status}" if st else f"log: {_log_tail(member, log_offset)}"
            raise NbClusterError(
                f"ovsdb-server for {member.dir} runs but is not a cluster member after "
                f"{timeout:g}s ({state}); it keeps trying, `nb-cluster stop` to give up"
            )
        time.sleep(0.05)


def stop(member: Member, timeout: float = 10.0) -> bool:
    """Stop the member's server, keeping its files; False if none was running.

    `ovs-appctl exit` first (the server cleans up its pidfile and sockets), SIGTERM
    if it does not answer, SIGKILL if it still runs after `timeout` (a hung member:
    raft keeps everything it acknowledged on disk, so this loses nothing).
    """
    pid = member.pid()
    if pid is None:
        return False
    try:
        _appctl(member, "exit", timeout=min(timeout, 5.0))
    except NbClusterError:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while member.pid() == pid:
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)
            if deadline < time.monotonic() - 5.0:
                raise NbClusterError(f"ovsdb-server (pid {pid}) in {member.dir} does not exit")
        time.sleep(0.05)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def leave(member: Member, timeout: float = 30.0) -> None:
    """Remove this member from the cluster for good, then stop its server.

    The remaining members shrink the cluster (fewer votes needed). The member's db
    stays on disk but no longer belongs to any cluster.
    """
    before = status(member)
    if not before.is_member:
        raise NbClusterError(f"{member.dir} is not a cluster member ({before.status})")
    _appctl(member, "cluster/leave", DB_NAME)
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = status(member)
        except NbClusterError as exc:
            if "unknown cluster" in str(exc):
                break  # left: the server dropped the database
            raise
        if st.status == "left cluster":
            break
        if time.monotonic() > deadline:
            raise NbClusterError(f"{member.dir} did not leave within {timeout:g}s "
                                 f"(status: {st.status}); is there a leader?")
        time.sleep(0.1)
    stop(member)


def kick(member: Member, server: str) -> None:
    """Remove another (dead) member, by its server id, through this live one."""
    _appctl(member, "cluster/kick", DB_NAME, server)


def accepts(path: Path) -> bool:
    """Something listens on the unix socket `path` (a server that is up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _new_log(member: Member, offset: int) -> list[str]:
    """Lines this server start wrote (stderr of the detaching parent, then its log)."""
    lines: list[str] = []
    for path, start_at in ((member.stderr, 0), (member.log, offset)):
        try:
            with open(path, "rb") as f:
                f.seek(start_at)
                lines += [ln.strip() for ln in f.read().decode(errors="replace").splitlines()
                          if ln.strip()]
        except OSError:
            continue
    return lines


def _log_tail(member: Member, offset: int, count: int = 3) -> str:
    lines = _new_log(member, offset)
    bad = [ln for ln in lines if "|ERR|" in ln or "|EMER|" in ln or "ovsdb-server:" in ln]
    return " | ".join((bad or lines)[-count:]) or f"no output (see {member.log})"


def _address_in_use(member: Member, offset: int) -> Optional[str]:
    """ovsdb-server keeps running when a listener cannot bind (and retries), which
    would leave a member that no peer or client can reach: report it instead."""
    for line in _new_log(member, offset):
        if "listen failed" in line and "in use" in line:
            where = line.split("|")[-1].split(": listen failed")[0].strip()
            what = "raft address" if "|raft|" in line else "client listener"
            return f"{what} in use: {where} ({member.log})"
    return None


# -- command line ------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"nb-cluster: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _port_ok(text: str, port: str) -> bool:
    return text.startswith(("unix:", "punix:")) or (port.isdigit() and 0 < int(port) < 65536)


def _raft_address(text: str) -> str:
    if not _RAFT_RE.match(text) or not _port_ok(text, text.rpartition(":")[2]):
        raise argparse.ArgumentTypeError(
            f"expected a raft address tcp:IP:PORT or unix:/PATH, got {text!r}")
    return text


def _listener(text: str) -> str:
    if not _LISTEN_RE.match(text) or not _port_ok(text, text.split(":")[1]):
        raise argparse.ArgumentTypeError(
            f"expected a client listener ptcp:PORT[:IP] or punix:/PATH, got {text!r}")
    return text


def _peers(text: str) -> list[str]:
    return [_raft_address(p) for p in text.split(",") if p]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m controller nb-cluster",
                description=f"Run one member of a clustered (raft) {DB_NAME} database.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def member_cmd(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("--dir", required=True, help="the member's directory (all its files)")
        return c

    for name, text in (("create", "create a new cluster with this member as its first"),
                       ("join", "add this new member to an existing cluster")):
        c = member_cmd(name, text)
        c.add_argument("--raft", required=True, type=_raft_address,
                       help="this member's raft address, e.g. tcp:192.0.2.1:6643")
        if name == "join":
            c.add_argument("--join", required=True, action="append", type=_peers,
                           metavar="RAFT[,RAFT...]", help="raft address(es) of existing members")
        c.add_argument("--remote", action="append", default=[], type=_listener,
                       help="extra client listener, e.g. ptcp:6641:192.0.2.1 (repeatable)")
        c.add_argument("--timeout", type=float, default=10.0,
                       help="seconds to wait until it is a cluster member")
    c = member_cmd("start", "start an existing member's server again (it catches up)")
    c.add_argument("--remote", action="append", type=_listener,
                   help="client listeners (default: those given at create/join)")
    c.add_argument("--timeout", type=float, default=10.0)
    member_cmd("stop", "stop the member's server, keeping its files")
    c = member_cmd("status", "show the member's view of the cluster")
    c.add_argument("--json", action="store_true", help="print JSON")
    member_cmd("leave", "remove this member from the cluster for good")
    c = member_cmd("kick", "remove a dead member (by server id) through this live one")
    c.add_argument("server", help="the dead member's server id (see status)")
    c = sub.add_parser("remote", help="print the --nb-db value for members")
    c.add_argument("--dir", required=True, action="append", help="a member's directory")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one nb-cluster command: 0 done, 1 failed (one line on stderr), 2 bad usage."""
    try:
        ns = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _dispatch(ns)
    except NbClusterError as exc:
        sys.stderr.write(f"nb-cluster {ns.command}: {exc}\n")
        return EXIT_FAILURE


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "remote":
        print(client_remote(ns.dir))
        return 0
    member = Member.at(ns.dir)
    st: Optional[ClusterStatus] = None
    if ns.command == "create":
        st = create(member, ns.raft, ns.remote, timeout=ns.timeout)
    elif ns.command == "join":
        peers = [p for group in ns.join for p in group]
        st = join(member, ns.raft, peers, ns.remote, timeout=ns.timeout)
    elif ns.command == "start":
        st = start(member, ns.remote, timeout=ns.timeout)
    elif ns.command == "stop":
        print(f"stopped {member.dir}" if stop(member) else f"no server was running in {member.dir}")
        return 0
    elif ns.command == "leave":
        leave(member)
        print(f"{member.dir} left the cluster and its server stopped; its {member.db.name} "
              "belongs to no cluster now")
        return 0
    elif ns.command == "kick":
        kick(member, ns.server)
        print(f"asked the cluster to remove server {ns.server}")
        return 0
    else:
        st = status(member)
        if ns.json:
            print(json.dumps(st.to_dict(), indent=2))
            return 0
    print(format_status(st))
    if ns.command in ("create", "join", "start"):
        print(f"clients: {member.remote}")
    return 0
