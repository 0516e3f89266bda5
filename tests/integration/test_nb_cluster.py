"""A clustered (raft) northbound on this machine: 3 real ovsdb-server members.

`nb-cluster create` + 2 joins (raft on tcp 127.0.0.1, clients on each member's unix
socket); the controller's own store client, given every member's remote, writes
through the leader and the row reaches every member; the leader is SIGKILLed, a new
one is elected, the client follows it and writes again; the killed member, started
again, catches up. A second test replaces a dead member (kick + join) and lets the
newcomer leave. Every server started is stopped, also on failure. Times are measured
and printed, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller import intent as m
from controller.store import NorthboundStore, TxnHelper
from controller.store import nb_cluster as nbc
from controller.store.errors import CommitOutcomeUnknown, StoreUnavailable
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "project-nbc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    """Members in one short temp dir (unix socket paths stay far below 108 bytes)."""

    base: Path
    members: dict[str, nbc.Member] = field(default_factory=dict)
    rafts: dict[str, str] = field(default_factory=dict)

    def add(self, name: str) -> tuple[nbc.Member, str]:
        member = nbc.Member.at(self.base / name)
        self.members[name] = member
        self.rafts[name] = f"tcp:127.0.0.1:{free_port()}"
        return member, self.rafts[name]

    def three(self) -> list[nbc.Member]:
        a, raft_a = self.add("a")
        b, raft_b = self.add("b")
        c, raft_c = self.add("c")
        nbc.create(a, raft_a)
        nbc.join(b, raft_b, [raft_a])
        nbc.join(c, raft_c, [raft_a, raft_b])
        return [a, b, c]


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab(Path(tempfile.mkdtemp(prefix="nbc", dir="/tmp")))
    try:
        yield lab
    finally:
        for member in lab.members.values():
            try:
                nbc.stop(member, timeout=5.0)
            except Exception:
                pid = member.pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
        failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
        if failed:
            print(f"\nnb-cluster test: member dirs (logs, dbs) kept in {lab.base}")
        else:
            shutil.rmtree(lab.base, ignore_errors=True)


def statuses(members: list[nbc.Member]) -> dict[str, nbc.ClusterStatus]:
    """Every reachable member's status, by directory name."""
    out = {}
    for member in members:
        try:
            out[member.dir.name] = nbc.status(member)
        except nbc.NbClusterError:
            continue
    return out


def agreed_leader(members: list[nbc.Member], min_term: int = 0) -> nbc.ClusterStatus | None:
    """The leader's status once every given member names the same leader (term > min_term)."""
    seen = statuses(members)
    if len(seen) != len(members):
        return None
    leaders = [s for s in seen.values() if s.role == "leader" and s.term > min_term]
    if len(leaders) != 1:
        return None
    leader = leaders[0]
    if any(s.leader_address != leader.address or s.term != leader.term for s in seen.values()):
        return None
    return leader


def member_at(members: list[nbc.Member], status: nbc.ClusterStatus) -> nbc.Member:
    return next(mb for mb in members if nbc.status(mb).server_id == status.server_id)


def network_names(member: nbc.Member) -> str:
    """The Network table as this member holds it (followers answer too)."""
    done = subprocess.run(
        ["ovsdb-client", "dump", member.remote, nbc.DB_NAME, "Network", "name"],
        capture_output=True, text=True, timeout=10,
    )
    return done.stdout if done.returncode == 0 else ""


def holds(member: nbc.Member, *names: str) -> Callable[[], bool]:
    """A condition: `member`'s own copy has a Network row named each of `names`."""
    return lambda: all(n in network_names(member) for n in names)


def put_network(name: str, seg: int) -> Callable[[TxnHelper, m.Intent], None]:
    net = m.Network(str(uuid.uuid4()), PROJECT, name, "vxlan", seg, mtu=1450, revision_number=1)

    def write(helper: TxnHelper, intent: m.Intent) -> None:
        helper.put(net)  # an upsert by id: retrying after an unknown outcome is safe

    return write


def write_until_done(store: NorthboundStore, fn: Callable[[TxnHelper, m.Intent], None],
                     timeout: float = 20.0) -> list[str]:
    """Retry a write while the store reconnects; returns the failures seen before success."""
    failures: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.transact(fn, timeout=5.0)
            return failures
        except (StoreUnavailable, CommitOutcomeUnknown) as exc:
            failures.append(type(exc).__name__)
            assert time.monotonic() < deadline, f"writes kept failing: {exc}"
            time.sleep(0.1)


def test_three_members_survive_the_leader_being_killed(lab: Lab) -> None:
    t0 = time.monotonic()
    members = lab.three()
    leader = wait_for("one leader that all 3 members agree on", lambda: agreed_leader(members),
                      timeout=15)
    print(f"\ncluster of 3 up in {time.monotonic() - t0:.2f}s; leader {leader.address}")
    for st in statuses(members).values():
        assert st.status == "cluster member"
        assert sorted(s.address for s in st.servers) == sorted(lab.rafts.values())
        assert st.cluster_id == leader.cluster_id

    # the CLI, end to end through `python -m controller`
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "controller", "nb-cluster", "status",
         "--dir", str(members[1].dir), "--json"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["leader_address"] == leader.address
    assert len(shown["servers"]) == 3

    store = NorthboundStore(nbc.client_remote(members)).connect(15)
    try:
        store.transact(put_network("nbc-before", 101))
        for member in members:
            wait_for(f"the first network on {member.dir.name}",
                     holds(member, "nbc-before"), timeout=10)

        victim = member_at(members, leader)
        pid = victim.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        survivors = [mb for mb in members if mb is not victim]
        new = wait_for("a new leader among the survivors",
                       lambda: agreed_leader(survivors, min_term=leader.term), timeout=15)
        elected = time.monotonic() - killed
        assert new.address != leader.address
        failures = write_until_done(store, put_network("nbc-after", 102))
        written = time.monotonic() - killed
        print(f"leader {leader.address} killed: new leader {new.address} (term {new.term}) "
              f"seen after {elected:.2f}s; the store's next write succeeded after "
              f"{written:.2f}s, failures before it: {dict(Counter(failures)) or 'none'}")
        for member in survivors:
            wait_for(f"the second network on {member.dir.name}",
                     holds(member, "nbc-after"), timeout=10)

        started = time.monotonic()
        back = nbc.start(victim)
        assert back.is_member
        wait_for("the restarted member to hold both networks",
                 holds(victim, "nbc-before", "nbc-after"), timeout=15)
        caught_up = time.monotonic() - started
        final = wait_for("all 3 members agreeing on a leader again",
                         lambda: agreed_leader(members), timeout=15)
        print(f"killed member restarted and caught up in {caught_up:.2f}s; "
              f"leader {final.address}")
        assert len(final.servers) == 3
        names = sorted(n.name for n in store.latest().networks.values())
        assert names == ["nbc-after", "nbc-before"]
    finally:
        store.close()


def test_a_dead_member_is_replaced_and_a_member_leaves(lab: Lab) -> None:
    members = lab.three()
    leader = wait_for("a leader", lambda: agreed_leader(members), timeout=15)
    store = NorthboundStore(nbc.client_remote(members)).connect(15)
    try:
        store.transact(put_network("nbc-kept", 201))
    finally:
        store.close()

    dead = next(mb for mb in members if mb.dir.name != member_at(members, leader).dir.name)
    dead_id = nbc.status(dead).server_id[:4]
    pid = dead.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    live = [mb for mb in members if mb is not dead]
    nbc.kick(live[0], dead_id)
    wait_for("the dead member gone from the servers list",
             lambda: all(len(s.servers) == 2 for s in statuses(live).values()), timeout=15)

    fresh, raft = lab.add("d")
    st = nbc.join(fresh, raft, [lab.rafts[mb.dir.name] for mb in live])
    assert st.is_member
    now = [*live, fresh]
    agreed = wait_for("3 members again", lambda: agreed_leader(now), timeout=15)
    assert sorted(s.address for s in agreed.servers) == sorted(
        lab.rafts[mb.dir.name] for mb in now)
    wait_for("the newcomer to hold the data", holds(fresh, "nbc-kept"), timeout=10)

    nbc.leave(fresh)
    assert fresh.pid() is None
    wait_for("2 servers after the newcomer left",
             lambda: all(len(s.servers) == 2 for s in statuses(live).values()), timeout=15)
    with pytest.raises(nbc.NbClusterError, match="already holds a database"):
        nbc.join(fresh, raft, [lab.rafts[mb.dir.name] for mb in live])
