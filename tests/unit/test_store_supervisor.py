"""The store when its server dies: the embedded server's supervisor, and outage reporting.

Real ovsdb-servers in tmp dirs, killed with SIGKILL as an OOM killer or an operator
would. Waits are on conditions with generous deadlines; no duration is asserted.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import uuid
import zlib
from pathlib import Path

import ovs.util
import pytest
from api_harness import db_dump

from controller import intent as m
from controller.store import (
    EmbeddedOvsdb,
    NorthboundStore,
    RestartPolicy,
    StoreUnavailable,
    Supervisor,
    TxnHelper,
)
from controller.store.embedded import describe_exit
from controller.store.northbound import describe_attempt, describe_loss
from tests.waiting import wait_for

FAST = RestartPolicy(max_attempts=3, first_delay=0.0, base_delay=0.01, max_delay=0.05)


def network(name: str) -> m.Network:
    oid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-supervisor-{name}"))
    return m.Network(id=oid, project_id="p", name=name, network_type="vxlan",
                     segmentation_id=zlib.crc32(name.encode()) % 10000 + 1)


def put(store: NorthboundStore, name: str) -> m.Network:
    net = network(name)

    def write(h: TxnHelper, intent: m.Intent) -> None:
        h.put(net)

    store.transact(write)
    return net


def kill(server: EmbeddedOvsdb) -> int:
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


# -- policy and wording ------------------------------------------------------------
def test_restart_policy_starts_at_once_then_backs_off_to_a_cap() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert policy.delay(20) == policy.max_delay
    assert policy.max_attempts == 6


def test_failures_are_worded_for_operators() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with status 1"
    assert describe_attempt(errno.ECONNREFUSED, "unix:/x") == "connection refused to unix:/x"
    assert "socket /x does not exist" in describe_attempt(errno.ENOENT, "unix:/x")
    assert "tcp:192.0.2.1:6641" in describe_attempt(errno.EHOSTUNREACH, "tcp:192.0.2.1:6641")
    assert describe_loss(ovs.util.EOF) == "closed by the server"


# -- the supervisor ----------------------------------------------------------------------
def test_killed_server_is_restarted_on_the_same_db(db: EmbeddedOvsdb) -> None:
    store = NorthboundStore(db.remote).connect(10)
    sup = db.watch(FAST)
    try:
        before = put(store, "before")
        old = kill(db)
        wait_for("a restart", lambda: sup.status()["restarts"] == 1)
        status = sup.status()
        assert status["state"] == Supervisor.RUNNING and status["pid"] not in (None, old)
        assert f"pid {old}" in status["last_exit"] and "killed by SIGKILL" in status["last_exit"]
        assert sup.problem() is None
        wait_for("the store to reconnect", lambda: store.connected)
        after = put(store, "after")
        assert set(store.latest().networks) == {before.id, after.id}
    finally:
        store.close()
        sup.stop()
    assert db.process is None and sup.status()["state"] == Supervisor.STOPPED


def test_store_health_names_the_outage_while_restarting(db: EmbeddedOvsdb) -> None:
    """A slow first restart leaves time to look: the reason comes from the supervisor."""
    sup = db.watch(RestartPolicy(first_delay=2.0))
    store = NorthboundStore(db.remote, server=sup).connect(10)
    try:
        put(store, "kept")
        kill(db)
        wait_for("the store to notice", lambda: not store.connected)
        wait_for("the supervisor to notice", lambda: sup.status()["state"] == "restarting")
        health = store.health()
        assert health["connected"] is False and health["stale"] is True and health["since"]
        assert "killed by SIGKILL" in health["last_error"]
        assert "restarting it (attempt 1/6)" in health["last_error"]
        assert health["server"]["state"] == "restarting" and health["server"]["attempt"] == 1
        with pytest.raises(StoreUnavailable, match="killed by SIGKILL.*nothing was written"):
            put(store, "refused")
        assert [n.name for n in store.latest().networks.values()] == ["kept"]  # stale reads

        wait_for("the store to reconnect", lambda: store.connected)
        health = store.health()
        assert health["last_error"] is None and health["stale"] is False
        assert health["since"] is None and health["connection_losses"] == 1
        outage = health["last_outage"]
        assert "lost at" in outage["reason"] and outage["from"] <= outage["to"]
        put(store, "after")
    finally:
        store.close()
        sup.stop()


def test_supervisor_gives_up_and_says_why(db: EmbeddedOvsdb) -> None:
    sup = db.watch(FAST)
    store = NorthboundStore(db.remote, server=sup).connect(10)
    try:
        corrupt = db.db_path.with_name("corrupt")
        corrupt.write_text("this is not an ovsdb file\n")
        corrupt.replace(db.db_path)  # a new inode: the running server keeps the old one
        kill(db)
        wait_for("the supervisor to give up", lambda: sup.status()["state"] == "failed")
        problem = sup.problem()
        assert problem is not None and "gave up after 3 restart attempts" in problem
        assert "ovsdb-server exited at start" in problem  # the server's own last words
        assert sup.status()["restarts"] == 0 and sup.status()["pid"] is None
        wait_for("the store to notice", lambda: not store.connected)
        assert store.health()["last_error"] == problem
        with pytest.raises(StoreUnavailable, match="gave up after 3 restart attempts"):
            put(store, "refused")
    finally:
        store.close()
        sup.stop()


def test_deleted_db_is_not_recreated_empty(db: EmbeddedOvsdb) -> None:
    sup = db.watch(FAST)
    try:
        db.db_path.unlink()
        kill(db)
        wait_for("the supervisor to give up", lambda: sup.status()["state"] == "failed")
        assert "is gone" in (sup.problem() or "") and not db.db_path.exists()
    finally:
        sup.stop()


def test_a_deliberate_stop_is_not_undone(db: EmbeddedOvsdb) -> None:
    sup = db.watch(FAST)
    pid = db.pid
    sup.stop()
    assert db.process is None and sup.status()["state"] == Supervisor.STOPPED
    assert db._running_pid() is None and pid is not None
    with pytest.raises(OSError):
        os.kill(pid, 0)


def test_stopping_the_server_directly_ends_supervision(db: EmbeddedOvsdb) -> None:
    sup = db.watch(FAST)
    db.stop()
    wait_for("the supervisor to stand down", lambda: sup.status()["state"] == "stopped")
    assert db.process is None and sup.status()["restarts"] == 0
    sup.stop()


def test_stale_pidfile_naming_another_process_does_not_block_a_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "nb.pid").write_text(f"{os.getpid()}\n")  # alive, but not an ovsdb-server
    server = EmbeddedOvsdb(state).start()
    try:
        assert server._running_pid() == server.pid
    finally:
        server.stop()


# -- a remote server (no supervisor): the link's own reasons ------------------------------
def test_lost_remote_is_named_refused_writes_say_so_and_reconnect_heals(
    db: EmbeddedOvsdb,
) -> None:
    store = NorthboundStore(db.remote).connect(10)
    try:
        kept = put(store, "kept")
        kill(db)
        db.stop()  # reap: the socket file stays behind, as after a crash
        wait_for("the loss", lambda: not store.connected)
        health = store.health()
        assert "server" not in health
        assert health["stale"] is True and health["since"] and health["connection_losses"] == 1
        assert health["last_error"] and db.remote in health["last_error"]
        with pytest.raises(StoreUnavailable, match="nothing was written") as err:
            put(store, "refused")
        assert db.remote in str(err.value)
        wait_for("a refused reconnect to be named",
                 lambda: "connection refused to" in (store.health()["last_error"] or ""))

        db.start()  # the same db file
        wait_for("the store to reconnect by itself", lambda: store.connected)
        health = store.health()
        assert health["last_error"] is None and health["stale"] is False
        assert db.remote in health["last_outage"]["reason"]
        after = put(store, "after")
        assert set(store.latest().networks) == {kept.id, after.id}
    finally:
        store.close()


class _LossyProxy:
    """A unix-socket proxy that, once armed, drops the server's next answer and the connection.

    That is a server dying between committing a write and replying: the write was
    sent and may be in the database, but the client never learns. Later connections
    are proxied faithfully, so the client can reconnect and look.
    """

    def __init__(self, path: Path, target: Path) -> None:
        self.path, self.target = path, target
        self.armed = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(str(self.target))
            self.open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    for sock in (src, dst):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in (self.listener, *self.open):
            sock.close()


def test_a_write_whose_answer_is_lost_is_found_committed_after_the_reconnect(
    db: EmbeddedOvsdb, tmp_path: Path
) -> None:
    """Not "nothing was written", nor "unknown": the server did commit it, and the write
    counter and the token the write left beside it, read again once reconnected, say so
    (issue 14: a cluster's leader dying with a commit in flight)."""
    proxy = _LossyProxy(tmp_path / "lossy.sock", db.socket_path)
    store = NorthboundStore(f"unix:{proxy.path}").connect(10)
    try:
        put(store, "before")
        proxy.armed.set()
        put(store, "lost-answer")
        assert '"lost-answer"' in "".join(db_dump(db.socket_path)["Network"])  # the truth
        assert store.resolved == 1
        assert "lost-answer" in {n.name for n in store.latest().networks.values()}
        assert [n.name for n in store.latest().networks.values()].count("lost-answer") == 1
    finally:
        store.close()
        proxy.close()
