"""Several controller instances writing one northbound database at once (issue 14).

Each instance validates a write against its own replica. Two instances computing
writes from the same data must not both commit: every write bumps the database's
write counter (`NB_Global.nb_cfg`) on the condition that nobody did since it was
read, and a write refused for that is run again on the newer data. These run two
real store clients against one real ovsdb-server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller import intent as m
from controller.intent_delta import DeltaLog, make_delta
from controller.store import EmbeddedOvsdb, NorthboundStore, TxnHelper


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-concurrent-{n}"))


NET = m.Network(id=uid(1), project_id="p", name="n", network_type="vxlan",
                segmentation_id=7, description="")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[EmbeddedOvsdb]:
    server = EmbeddedOvsdb(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def pair(db: EmbeddedOvsdb) -> Iterator[tuple[NorthboundStore, NorthboundStore]]:
    a = NorthboundStore(db.remote).connect(10)
    b = NorthboundStore(db.remote).connect(10)
    yield a, b
    a.close()
    b.close()


def settle(stores: tuple[NorthboundStore, ...], ready: Callable[[m.Intent], bool]) -> None:
    """Wait until every store's replica satisfies `ready`."""
    for store in stores:
        done = threading.Event()
        unsubscribe = store.subscribe(
            lambda i, done=done: done.set() if ready(i) else None)  # type: ignore[misc]
        assert done.wait(10), f"{store.remote}: never got there"
        unsubscribe()


def described(length: int) -> Callable[[m.Intent], bool]:
    def ready(intent: m.Intent) -> bool:
        net = intent.networks.get(NET.id)
        return net is not None and len(net.description) >= length
    return ready


def renames(n: int) -> Callable[[TxnHelper, m.Intent], None]:
    def write(h: TxnHelper, intent: m.Intent) -> None:
        h.put(m.Network(**{**NET.__dict__, "name": f"n{n}"}))
    return write


def test_read_modify_writes_from_two_instances_lose_nothing(
    pair: tuple[NorthboundStore, NorthboundStore],
) -> None:
    """Each write appends a letter to what its instance reads: without the counter's
    prerequisite, two writes computed from the same description both commit and one
    letter is lost."""
    a, b = pair
    a.transact(lambda h, i: h.put(NET))
    settle(pair, described(0))
    rounds = 40
    generations: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def writer(store: NorthboundStore, letter: str) -> None:
        def append(h: TxnHelper, intent: m.Intent) -> None:
            net = h.get(m.Network, NET.id)
            assert net is not None
            h.put(m.Network(**{**net.__dict__, "description": net.description + letter}))

        try:
            for _ in range(rounds):
                generations[letter].append(store.transact(append, timeout=30))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(a, "a")),
               threading.Thread(target=writer, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    every = generations["a"] + generations["b"]
    last = max(every)
    settle(pair, described(2 * rounds))
    for store in pair:
        text = store.latest().networks[NET.id].description
        assert sorted(text) == ["a"] * rounds + ["b"] * rounds, text
    # one generation per write, the same on both instances: no two writes share one
    assert len(set(every)) == 2 * rounds
    assert a.latest().generation == b.latest().generation == last
    print(f"conflicts retried: a {a.conflicts}, b {b.conflicts}")


def test_a_write_has_the_same_generation_on_every_instance(db: EmbeddedOvsdb) -> None:
    """Also on an instance that joined after many writes, seen as one first load."""
    a = NorthboundStore(db.remote).connect(10)
    b: NorthboundStore | None = None
    try:
        for n in range(5):
            written = a.transact(renames(n))
        b = NorthboundStore(db.remote).connect(10)
        assert b.latest().generation == a.latest().generation == written
        # and the next write through the other instance continues from it
        again = b.transact(renames(99))
        assert again == written + 1
        settle((a,), lambda i: i.networks[NET.id].name == "n99")
        assert a.latest().generation == again
    finally:
        a.close()
        if b is not None:
            b.close()


def test_a_write_that_changes_nothing_moves_no_generation(
    pair: tuple[NorthboundStore, NorthboundStore],
) -> None:
    a, _ = pair
    written = a.transact(lambda h, i: h.put(NET))
    assert a.transact(lambda h, i: h.put(NET)) == written
    assert a.latest().generation == written


def test_generations_continue_across_a_restart(db: EmbeddedOvsdb) -> None:
    """The counter is in the database: a restarted controller numbers on from it, so a
    generation it answers never names an older write."""
    store = NorthboundStore(db.remote).connect(10)
    try:
        for n in range(5):
            written = store.transact(renames(n))
    finally:
        store.close()
    again = NorthboundStore(db.remote).connect(10)
    try:
        assert again.latest().generation == written
        assert again.transact(renames(99)) == written + 1
    finally:
        again.close()


def test_the_delta_log_follows_generations_that_jump() -> None:
    """Several instances' writes can reach a replica in one snapshot: its generation
    jumps (3 -> 6). A generation inside the jump gets the whole jump's delta (a
    superset, which an incremental compile may use); one before the log, None."""
    log = DeltaLog(keep=3)
    log.record(2, None)  # the first load
    log.record(3, make_delta({"ports": ["p3"]}))
    log.record(6, make_delta({"ports": ["p4", "p5", "p6"]}))
    assert log.since(2, 6) == make_delta({"ports": ["p3", "p4", "p5", "p6"]})
    assert log.since(4, 6) == make_delta({"ports": ["p4", "p5", "p6"]})
    assert log.since(3, 3) == make_delta({})
    assert log.since(1, 6) is None  # before the first load: unknown
    log.record(7, make_delta({"networks": ["n"]}))
    log.record(9, make_delta({"networks": ["m"]}))  # the ring keeps 3: gen 3 falls out
    assert log.since(2, 9) is None
    assert log.since(3, 9) == make_delta({"ports": ["p4", "p5", "p6"], "networks": ["n", "m"]})
    assert log.since(9, 7) is None
