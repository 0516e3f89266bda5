"""`nb-cluster`: parsing of real `cluster/status` outputs, and the command's errors.

The status texts below were printed by ovsdb-server 3.1 (`ovs-appctl -t
<dir>/ovsdb-server.ctl cluster/status Loom_Northbound`) for a 3-member cluster started
by hand on this machine with `python -m controller nb-cluster create|join`.
Everything here runs without root; the one server started (a corrupt db) exits at once.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from controller import launcher
from controller.store import nb_cluster as nbc

# The leader of a 3-member cluster (raft on tcp 127.0.0.1), as ovs-appctl printed it.
LEADER = """\
af60
Name: Loom_Northbound
Cluster ID: aec5 (aec51708-53fb-4d2b-a087-7f21ee91263f)
Server ID: af60 (af600ee5-d3ca-4a91-9260-34886efd8ac6)
Address: tcp:127.0.0.1:16641
Status: cluster member
Role: leader
Term: 1
Leader: self
Vote: self

Last Election started 6604 ms ago, reason: timeout
Last Election won: 6604 ms ago
Election timer: 1000
Log: [2, 5]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: <-5e45 ->5e45 <-cc0e ->cc0e
Disconnections: 0
Servers:
    5e45 (5e45 at tcp:127.0.0.1:16642) next_index=5 match_index=4 last msg 67 ms ago
    af60 (af60 at tcp:127.0.0.1:16641) (self) next_index=2 match_index=4
    cc0e (cc0e at tcp:127.0.0.1:16643) next_index=5 match_index=4 last msg 67 ms ago
"""

# A follower of the same cluster.
FOLLOWER = """\
5e45
Name: Loom_Northbound
Cluster ID: aec5 (aec51708-53fb-4d2b-a087-7f21ee91263f)
Server ID: 5e45 (5e4578e0-bbe7-45eb-aa11-61b1fb1e9a38)
Address: tcp:127.0.0.1:16642
Status: cluster member
Role: follower
Term: 1
Leader: af60
Vote: unknown

Election timer: 1000
Log: [2, 5]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: ->0000 <-af60 <-cc0e ->cc0e
Disconnections: 0
Servers:
    5e45 (5e45 at tcp:127.0.0.1:16642) (self)
    af60 (af60 at tcp:127.0.0.1:16641) last msg 75 ms ago
    cc0e (cc0e at tcp:127.0.0.1:16643)
"""

# The last member alive after the other two were SIGKILLed: no quorum, no leader.
CANDIDATE = """\
cc0e
Name: Loom_Northbound
Cluster ID: aec5 (aec51708-53fb-4d2b-a087-7f21ee91263f)
Server ID: cc0e (cc0e1957-6f08-460c-9a42-4b702f6c1616)
Address: tcp:127.0.0.1:16643
Status: disconnected from the cluster (election timeout)
Role: candidate
Term: 4
Leader: unknown
Vote: self

Last Election started 135 ms ago, reason: timeout
Election timer: 1000
Log: [2, 6]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: (->0000) (->0000)
Disconnections: 2
Servers:
    5e45 (5e45 at tcp:127.0.0.1:16642) last msg 3026 ms ago
    af60 (af60 at tcp:127.0.0.1:16641) last msg 6096 ms ago
    cc0e (cc0e at tcp:127.0.0.1:16643) (self) (voted for cc0e)
"""

# After join-cluster towards a peer that does not answer.
JOINING = """\
ac0a
Name: Loom_Northbound
Cluster ID: not yet known
Server ID: ac0a (ac0a56ef-1902-4024-b101-de2c4aacde5f)
Address: tcp:127.0.0.1:16655
Status: joining cluster
Remotes for joining: tcp:127.0.0.1:16659
Role: follower
Term: 0
Leader: unknown
Vote: unknown

Election timer: 1000
Log: [1, 1]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: (->0000)
Disconnections: 0
Servers:
"""

# Raft on unix sockets all named raft.sock: every member's nickname is "raft".
UNIX_FOLLOWER = """\
raft
Name: Loom_Northbound
Cluster ID: c668 (c6680e7c-6b18-41b6-afa9-5d714b2a2d81)
Server ID: fa16 (fa162832-484c-4f3b-9348-e14d60ec7af7)
Address: unix:/tmp/nbcFXAA/b/raft.sock
Status: cluster member
Role: follower
Term: 1
Leader: raft
Vote: unknown

Election timer: 1000
Log: [2, 5]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: ->raft <-raft <-raft ->raft
Disconnections: 0
Servers:
    raft (f298 at unix:/tmp/nbcFXAA/a/raft.sock) last msg 5 ms ago
    raft (5ebb at unix:/tmp/nbcFXAA/c/raft.sock)
    raft (fa16 at unix:/tmp/nbcFXAA/b/raft.sock) (self)
"""


# -- parsing ---------------------------------------------------------------------
def test_leader() -> None:
    st = nbc.parse_status(LEADER)
    assert st.name == "Loom_Northbound"
    assert st.cluster_id == "aec51708-53fb-4d2b-a087-7f21ee91263f"
    assert st.server_id == "af600ee5-d3ca-4a91-9260-34886efd8ac6"
    assert st.address == "tcp:127.0.0.1:16641"
    assert (st.status, st.role, st.term) == ("cluster member", "leader", 1)
    assert (st.leader, st.leader_id, st.leader_address) == ("self", "af60", "tcp:127.0.0.1:16641")
    assert st.vote == "self"
    assert st.is_member
    assert [(s.id, s.address, s.is_self) for s in st.servers] == [
        ("5e45", "tcp:127.0.0.1:16642", False),
        ("af60", "tcp:127.0.0.1:16641", True),
        ("cc0e", "tcp:127.0.0.1:16643", False),
    ]


def test_follower_names_its_leader_by_nickname_and_gets_its_address() -> None:
    st = nbc.parse_status(FOLLOWER)
    assert (st.role, st.term, st.leader) == ("follower", 1, "af60")
    assert (st.leader_id, st.leader_address) == ("af60", "tcp:127.0.0.1:16641")
    assert st.vote is None
    assert [s.id for s in st.servers if s.is_self] == ["5e45"]
    assert len(st.servers) == 3


def test_candidate_without_quorum_has_no_leader() -> None:
    st = nbc.parse_status(CANDIDATE)
    assert st.role == "candidate"
    assert st.status == "disconnected from the cluster (election timeout)"
    assert st.is_member  # still a member, only cut off
    assert (st.leader, st.leader_id, st.leader_address) == (None, None, None)
    assert (st.term, st.vote, st.disconnections) == (4, "self", 2)


def test_joining_member() -> None:
    st = nbc.parse_status(JOINING)
    assert st.status == "joining cluster"
    assert not st.is_member
    assert st.cluster_id is None
    assert st.remotes_for_joining == ["tcp:127.0.0.1:16659"]
    assert st.servers == []
    assert st.leader is None


def test_unix_raft_nicknames_that_collide_leave_the_leader_unresolved() -> None:
    st = nbc.parse_status(UNIX_FOLLOWER)
    assert st.leader == "raft"
    assert (st.leader_id, st.leader_address) == (None, None)
    assert [s.address for s in st.servers if s.is_self] == ["unix:/tmp/nbcFXAA/b/raft.sock"]


@pytest.mark.parametrize("text", ["", "unknown cluster\n", "raft\nName: x\nRole: leader\n"])
def test_what_is_not_a_status_is_an_error(text: str) -> None:
    with pytest.raises(nbc.NbClusterError, match="unexpected cluster/status output"):
        nbc.parse_status(text)


def test_human_and_json_views() -> None:
    text = nbc.format_status(nbc.parse_status(FOLLOWER))
    assert "role: follower, term 1, leader: af60 at tcp:127.0.0.1:16641" in text
    assert "servers (3):" in text
    assert "af60  tcp:127.0.0.1:16641  (leader)" in text
    assert "5e45  tcp:127.0.0.1:16642  (self)" in text
    shown = json.loads(json.dumps(nbc.parse_status(LEADER).to_dict()))
    assert shown["role"] == "leader" and len(shown["servers"]) == 3
    assert "leader: unknown" in nbc.format_status(nbc.parse_status(CANDIDATE))


def test_client_remote_lists_every_members_socket(tmp_path: Path) -> None:
    remote = nbc.client_remote([tmp_path / "a", nbc.Member.at(tmp_path / "b"), str(tmp_path / "c")])
    assert remote == ",".join(f"unix:{tmp_path / n / 'nb.sock'}" for n in "abc")


# -- the command line -------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    [],
    ["bogus"],
    ["create", "--dir", "/tmp/x"],  # no --raft
    ["create", "--raft", "tcp:127.0.0.1:6641"],  # no --dir
    ["create", "--dir", "/tmp/x", "--raft", "127.0.0.1:6641"],
    ["create", "--dir", "/tmp/x", "--raft", "tcp:127.0.0.1:70000"],
    ["create", "--dir", "/tmp/x", "--raft", "tcp:127.0.0.1:6641", "--remote", "tcp:1.2.3.4:6641"],
    ["create", "--dir", "/tmp/x", "--raft", "ssl:127.0.0.1:6641"],  # no keys are passed
    ["join", "--dir", "/tmp/x", "--raft", "tcp:127.0.0.1:6642"],  # no --join
    ["join", "--dir", "/tmp/x", "--raft", "tcp:127.0.0.1:6642", "--join", "tcp:127.0.0.1"],
    ["status"],
    ["kick", "--dir", "/tmp/x"],  # no server id
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert nbc.main(argv) == nbc.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("nb-cluster: ") and "Traceback" not in err


def test_the_launcher_dispatches_nb_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["nb-cluster", "create", "--dir", "/tmp/x"]) == nbc.EXIT_USAGE
    assert "--raft" in capsys.readouterr().err
    assert launcher.main(["nb-cluster", "--help"]) == 0
    assert "create" in capsys.readouterr().out


def test_good_addresses_parse() -> None:
    ns = nbc.build_parser().parse_args([
        "join", "--dir", "/tmp/x", "--raft", "tcp:[::1]:6643",
        "--join", "tcp:10.0.0.1:6643,tcp:10.0.0.2:6643", "--join", "unix:/tmp/a/raft.sock",
        "--remote", "ptcp:6641:10.0.0.3", "--remote", "punix:/tmp/x/extra.sock",
    ])
    assert [p for group in ns.join for p in group] == [
        "tcp:10.0.0.1:6643", "tcp:10.0.0.2:6643", "unix:/tmp/a/raft.sock"]
    assert ns.remote == ["ptcp:6641:10.0.0.3", "punix:/tmp/x/extra.sock"]


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a command that must fail: exit 1 and one line on stderr, no traceback."""
    assert nbc.main(argv) == nbc.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_create_refuses_a_dir_that_holds_a_db(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nb.db").write_text("{}")
    for cmd in (["create"], ["join", "--join", "tcp:127.0.0.1:1"]):
        err = fails([*cmd, "--dir", str(tmp_path), "--raft", "tcp:127.0.0.1:1"], capsys)
        assert "already holds a database" in err
    assert (tmp_path / "nb.db").read_text() == "{}"


def test_ovsdb_tool_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(nbc, "TOOL_PATH", str(tmp_path / "nothing-here"))
    err = fails(["create", "--dir", str(tmp_path / "m"), "--raft", "tcp:127.0.0.1:1"], capsys)
    assert "ovsdb-tool not found; install openvswitch-common" in err


def test_address_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = fails(["create", "--dir", str(tmp_path / "a"), "--raft", f"tcp:127.0.0.1:{port}"],
                    capsys)
        assert f"cannot listen on tcp:127.0.0.1:{port}: Address already in use" in err
        err = fails(["create", "--dir", str(tmp_path / "b"), "--raft", "tcp:127.0.0.1:1",
                     "--remote", f"ptcp:{port}:127.0.0.1"], capsys)
        assert f"cannot listen on ptcp:{port}:127.0.0.1" in err
    assert not (tmp_path / "a" / "nb.db").exists()


def test_a_listener_that_failed_after_start_is_reported(tmp_path: Path) -> None:
    """ovsdb-server keeps running when it cannot bind: its log is how we find out."""
    member = nbc.Member.at(tmp_path)
    member.log.write_text(
        "2026-12-02T06:02:46.162Z|00004|raft|INFO|local server ID is cb96\n"
        "2026-12-02T06:02:46.168Z|00010|socket_util|ERR|16651:127.0.0.1: bind: "
        "Address already in use\n"
        "2026-12-02T06:02:46.168Z|00011|raft|WARN|ptcp:16651:127.0.0.1: listen failed "
        "(Address already in use)\n"
    )
    assert nbc._address_in_use(member, 0) == (
        f"raft address in use: ptcp:16651:127.0.0.1 ({member.log})")
    assert nbc._address_in_use(member, member.log.stat().st_size) is None


def test_server_that_does_not_start_says_why(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nb.db").write_text("not a database\n")
    err = fails(["start", "--dir", str(tmp_path)], capsys)
    assert "did not start" in err
    assert "unexpected file format" in err  # ovsdb-server's own words


def test_commands_on_a_member_without_server_or_db(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert "holds no database" in fails(["start", "--dir", str(tmp_path)], capsys)
    for cmd in ("status", "leave"):
        assert "no ovsdb-server runs for" in fails([cmd, "--dir", str(tmp_path)], capsys)
    assert nbc.main(["stop", "--dir", str(tmp_path)]) == 0
    assert "no server was running" in capsys.readouterr().out


def test_a_stale_pidfile_names_no_server(tmp_path: Path) -> None:
    member = nbc.Member.at(tmp_path)
    member.pidfile.write_text(f"{os.getpid()}\n")  # alive, but not ovsdb-server
    assert member.pid() is None
    member.pidfile.write_text("999999999\n")
    assert member.pid() is None
