"""The lab's state file, its recording sandbox, and teardown from the state file alone.

``/run/loom-lab/<name>.json`` is rewritten atomically after every object the lab
makes (and, for the lab's own objects, *before* making them), so `teardown()` can
remove exactly what a lab made even after the process that made it was killed
half-way. Unlike a test `Sandbox`, a lab outlives the process that brought it up:
its record is not in ``/run/loom-sandbox`` (whose sweep removes runs of dead
processes) and nothing is cleaned up when that process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from topologies import netns as nsutil
from topologies.dhcp_client import remove_netns_etc
from topologies.netns import Sandbox

STATE_DIR = Path(os.environ.get("LOOM_LAB_STATE", "/run/loom-lab"))
WORK_BASE = Path(os.environ.get("LOOM_LAB_DIR", "/tmp/loom-lab"))
FORMAT = 1

Progress = Callable[[str], None]


class LabError(RuntimeError):
    """A lab command cannot go on; the message says why and what to do."""


def state_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def lab_names() -> list[str]:
    return sorted(p.stem for p in STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []


@contextlib.contextmanager
def lab_lock(name: str) -> Iterator[None]:
    """One command at a time per lab (up, down, add/remove-hypervisor)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / f"{name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(f"lab {name!r} is busy: another lab command is running on it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LabState:
    """The JSON record of one lab; `data` is plain JSON, `save()` writes it atomically."""

    def __init__(self, name: str, data: dict[str, Any]):
        self.name = name
        self.data = data

    @property
    def path(self) -> Path:
        return state_path(self.name)

    @classmethod
    def create(cls, name: str, prefix: str, **fields: Any) -> LabState:
        if state_path(name).exists():
            raise LabError(
                f"lab {name!r} is already up (state {state_path(name)}): "
                f"run `python -m topologies.lab down {name}` first")
        data: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "prefix": prefix,
            "phase": "creating",
            "owner_pid": os.getpid(),
            "created_at": time.time(),
            "workdir": str(WORK_BASE / name),
            "sandbox": {"netns": [], "links": [], "processes": []},
            "mgmt": {},
            "underlay": {},
            "hypervisors": {},
            "controller": {},
            "api": {"networks": {}, "subnets": {}, "ports": {}},
            "guests": {},
            "timings": {},
        }
        data.update(fields)
        state = cls(name, data)
        state.save()
        return state

    @classmethod
    def load(cls, name: str) -> LabState:
        try:
            data = json.loads(state_path(name).read_text())
        except FileNotFoundError:
            raise LabError(f"no lab {name!r} (no {state_path(name)})") from None
        except ValueError as exc:
            raise LabError(f"state {state_path(name)} is not JSON: {exc}") from None
        return cls(name, _relink(data))

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def set(self, section: str, key: str, value: Any) -> None:
        """data[section][key] = value, saved at once."""
        self.data.setdefault(section, {})[key] = value
        self.save()

    def drop(self, section: str, key: str) -> None:
        self.data.get(section, {}).pop(key, None)
        self.save()

    def remove_file(self) -> None:
        """Remove the record (and the lock file: callers hold the lock, non-blocking)."""
        for suffix in (".json", ".tmp", ".lock"):
            self.path.with_suffix(suffix).unlink(missing_ok=True)

    @property
    def prefix(self) -> str:
        return str(self.data["prefix"])

    @property
    def workdir(self) -> Path:
        return Path(self.data["workdir"])


class LabSandbox(Sandbox):
    """A Sandbox whose record is the lab's state file and which outlives its process.

    Namespaces, veths and processes made through it (and through OvsInstance and
    Guest, which use it) land in ``state.data['sandbox']`` as they are made.
    """

    def __init__(self, state: LabState):
        self._lab_state = state
        self._restoring = True
        super().__init__(state.prefix)
        atexit.unregister(self.cleanup)  # a lab stays up when its process exits
        rec = state.data["sandbox"]
        self.netns = list(rec["netns"])
        self.links = [(str(n), ns) for n, ns in rec["links"]]
        self.processes = [(int(p), str(m)) for p, m in rec["processes"]]
        self._names.update(self.netns)
        self._names.update(n for n, _ in self.links)
        self._names.update(str(g.get("port_name")) for g in state.data["guests"].values())
        self._restoring = False

    def _save(self) -> None:  # Sandbox writes its record here after every change
        if self._restoring:
            return
        self._lab_state.data["sandbox"] = {
            "netns": self.netns,
            "links": [list(link) for link in self.links],
            "processes": [list(p) for p in self.processes],
        }
        self._lab_state.save()

    def record_link(self, ifname: str, netns: str | None) -> None:
        """Record a link this lab is about to create (recorded first: a crash leaks nothing)."""
        self.links.append((ifname, netns))
        self._save()

    def drop_processes(self, marker: str) -> None:
        """Forget recorded processes whose marker is `marker` (they were just stopped)."""
        self.processes = [(p, m) for p, m in self.processes if m != marker]
        self._save()


def _relink(data: dict[str, Any]) -> dict[str, Any]:
    """An HA lab's first controller is `controller` (older code and tests read it) and
    also an entry of `controllers`: one dict for both in memory, as when it was made
    (JSON holds two equal copies)."""
    first = data.get("controller") or {}
    ctls = data.get("controllers")
    if isinstance(ctls, dict) and first.get("instance_name") in ctls:
        ctls[first["instance_name"]] = first
    return data


def controller_records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every controller the state lists: `controllers` (an HA lab: name -> record,
    the first one also being `controller`), else the one `controller`."""
    out: list[dict[str, Any]] = []
    ctls = data.get("controllers")
    candidates = list(ctls.values()) if isinstance(ctls, dict) else []
    candidates.insert(0, data.get("controller") or {})
    for rec in candidates:
        if isinstance(rec, dict) and rec.get("state_dir") \
                and all(rec["state_dir"] != o["state_dir"] for o in out):
            out.append(rec)
    return out


def nb_member_pid(member: dict[str, Any]) -> int | None:
    """The pid of a lab northbound member's ovsdb-server (its pidfile), if it runs."""
    try:
        pid = int(Path(member["pidfile"]).read_text().split()[0])
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return pid if pid_alive(pid, nb_member_marker(member)) else None


def nb_member_marker(member: dict[str, Any]) -> str:
    """What is in the command line of a member's ovsdb-server (its db file) and in no
    controller's (theirs name the member's socket, not its db)."""
    return f"{member['dir']}/nb.db"


def stop_nb(data: dict[str, Any], progress: Progress | None = None) -> None:
    """Stop the lab's own northbound servers (a shared database or raft cluster), by
    pidfile + marker; their files stay (the workdir goes with the rest)."""
    for member in (data.get("nb") or {}).get("members", []):
        if not isinstance(member, dict) or not member.get("dir"):
            continue
        pid = nb_member_pid(member)
        if pid is not None:
            if progress is not None:
                progress(f"northbound {member.get('name')} pid {pid}: stopping")
            stop_pid(pid, nb_member_marker(member), grace=3.0)


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, if given, `marker` is in its command line."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return marker is None or marker in cmdline


def stop_pid(pid: int | None, marker: str, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` s, a process only if it is still ours (marker)."""
    if not pid_alive(pid, marker):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_controller(ctl: dict[str, Any]) -> None:
    """Stop a lab's controller and its embedded northbound ovsdb-server (by pid + marker)."""
    state_dir = ctl.get("state_dir")
    if not state_dir:
        return
    stop_pid(ctl.get("pid"), state_dir)
    with contextlib.suppress(OSError, ValueError):
        nb_pid = int((Path(state_dir) / "nb.pid").read_text().split()[0])
        stop_pid(nb_pid, state_dir, grace=2.0)


def teardown(state: LabState, progress: Progress, keep_workdir: bool = False) -> list[str]:
    """Remove everything the state lists, in dependency order; return problems (none: ok).

    Objects already gone are skipped. Namespaces and root links carrying this lab's
    unique prefix that the record missed (a crash between creating and recording)
    are removed too, and reported.
    """
    data = state.data
    state.data["phase"] = "tearing-down"
    state.save()
    for ctl in controller_records(data):
        if ctl.get("pid"):
            who = f"controller {ctl['instance_name']}" if ctl.get("instance_name") \
                else "controller"
            progress(f"{who} pid {ctl['pid']}: stopping")
        stop_controller(ctl)
    stop_nb(data, progress)  # after the controllers: they would only reconnect meanwhile
    rec = data.get("sandbox", {})
    procs, links, spaces = rec.get("processes", []), rec.get("links", []), rec.get("netns", [])
    progress(f"{len(procs)} process(es), {len(links)} link(s), {len(spaces)} namespace(s): "
             "removing")
    problems = nsutil.remove_objects(procs, links, spaces)
    workdir = state.workdir
    problems += _remove_strays(state.prefix, workdir, progress)
    _remove_guest_etc(state.prefix, spaces, progress)
    if not keep_workdir and workdir.is_dir() and workdir.parent == WORK_BASE:
        shutil.rmtree(workdir, ignore_errors=True)
        progress(f"workdir {workdir}: removed")
    if problems:
        state.data["phase"] = "teardown-failed"
        state.save()
    else:
        state.remove_file()
    return problems


def _remove_strays(prefix: str, workdir: Path, progress: Progress) -> list[str]:
    """What the record missed but is certainly this lab's: processes running from its
    workdir, namespaces and root links named with its unique prefix."""
    problems = []
    if workdir.parent == WORK_BASE:
        marker = f"{workdir}/"
        for pid in _pids_with(marker):
            progress(f"unrecorded process {pid} of {marker}: stopping")
            stop_pid(pid, marker, grace=2.0)
    strays = [n for n in nsutil.netns_list() if n.startswith(f"{prefix}-")]
    if strays:
        progress(f"unrecorded namespaces with prefix {prefix}: {', '.join(strays)}: removing")
        problems += nsutil.remove_objects([], [], strays)
    out = nsutil.run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    for link in names:
        if link.startswith(f"{prefix}-") or link == mgmt_bridge_name(prefix):
            progress(f"unrecorded link {link}: removing")
            nsutil.run(["ip", "link", "del", "dev", link], check=False)
            if nsutil.link_exists(link):
                problems.append(f"link {link}: still there")
    return problems


def _remove_guest_etc(prefix: str, spaces: list[str], progress: Progress) -> None:
    """The guests' /etc/netns/<netns> (resolv.conf and dhcp hooks of their DHCP clients):
    the recorded namespaces' and any other carrying this lab's unique prefix."""
    names = set(spaces)
    with contextlib.suppress(OSError):
        names |= {p.name for p in Path("/etc/netns").iterdir() if p.name.startswith(f"{prefix}-")}
    removed = [n for n in sorted(names) if remove_netns_etc(n)]
    if removed:
        progress(f"/etc/netns: removed {', '.join(removed)}")


def _pids_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() \
                and pid_alive(int(entry.name), marker):
            pids.append(int(entry.name))
    return pids


def mgmt_bridge_name(prefix: str) -> str:
    return f"lm-{prefix}"
