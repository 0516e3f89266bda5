"""The store's per-snapshot deltas (issue 11, "Incremental engine"): `changes_since`,
snapshots built from the previous one plus the change, and the ports-by-network
index carried over from snapshot to snapshot."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import intent as m
from controller.intent_delta import EMPTY_DELTA, IntentDelta, delta_between, make_delta
from controller.rest.index import IntentIndex, index_for_write, index_of
from controller.rest.snapshot_index import Ordered, grouped, ordered
from controller.store import EmbeddedOvsdb, NorthboundStore, TxnHelper
from controller.store import northbound as nb


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-delta-{n}"))


NETS = [
    m.Network(id=uid(k), project_id="p", name=f"n{k}", network_type="vxlan",
              segmentation_id=10 + k)
    for k in range(3)
]
SUBNETS = [
    m.Subnet(id=uid(10 + k), project_id="p", network_id=NETS[k].id, name=f"s{k}", ip_version=4,
             cidr=f"10.{k}.0.0/16", gateway_ip=None)
    for k in range(3)
]


def port(n: int, net: int = 0, **kw: object) -> m.Port:
    return m.Port(
        id=uid(1000 + n), project_id="p", network_id=NETS[net].id, name=f"p{n}",
        mac_address=f"fa:16:3e:00:{n // 256:02x}:{n % 256:02x}",
        fixed_ips=(m.FixedIP(SUBNETS[net].id, f"10.{net}.{n // 256}.{n % 256 + 2}"),),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(db: EmbeddedOvsdb) -> Iterator[NorthboundStore]:
    s = NorthboundStore(db.remote).connect(10)
    seed(s)
    yield s
    s.close()


def seed(store: NorthboundStore) -> int:
    def write(h: TxnHelper, intent: m.Intent) -> None:
        for net, sub in zip(NETS, SUBNETS, strict=True):
            h.put(net)
            h.put(sub)

    return store.transact(write)


def delta(**ids: set[str]) -> IntentDelta:
    return make_delta(ids)


def as_sets(d: IntentDelta | None) -> dict[str, set[str]]:
    assert d is not None
    return {k: set(v) for k, v in d.touched.items() if v}


# -- changes_since ---------------------------------------------------------------------
def test_create_update_delete_name_exactly_the_port(store: NorthboundStore) -> None:
    g0 = store.latest().generation
    assert store.changes_since(g0) == EMPTY_DELTA
    g1 = store.transact(lambda h, i: h.put(port(1)))
    assert as_sets(store.changes_since(g0)) == {"ports": {uid(1001)}}
    g2 = store.transact(lambda h, i: h.put(dataclasses.replace(port(1), name="renamed")))
    assert as_sets(store.changes_since(g1)) == {"ports": {uid(1001)}}
    store.transact(lambda h, i: h.delete(m.Port, uid(1001)))
    assert as_sets(store.changes_since(g2)) == {"ports": {uid(1001)}}
    assert uid(1001) not in store.latest().ports
    # a new address re-decodes the port (IP_Allocation rows), and only it
    g3 = store.transact(lambda h, i: h.put(port(2)))
    store.transact(lambda h, i: h.put(dataclasses.replace(
        port(2), fixed_ips=(m.FixedIP(SUBNETS[0].id, "10.0.9.9"),))))
    assert as_sets(store.changes_since(g3)) == {"ports": {uid(1002)}}


def test_changes_since_is_the_union_of_every_write_after_it(store: NorthboundStore) -> None:
    g0 = store.latest().generation
    store.transact(lambda h, i: h.put(port(1)))
    store.transact(lambda h, i: h.put(port(2, net=1)))
    store.transact(lambda h, i: h.put(dataclasses.replace(NETS[2], name="x")))
    store.transact(lambda h, i: h.delete(m.Port, uid(1001)))
    assert as_sets(store.changes_since(g0)) == {
        "ports": {uid(1001), uid(1002)}, "networks": {NETS[2].id}}
    latest = store.latest()
    assert store.changes_since(latest.generation) == EMPTY_DELTA
    assert store.changes_since(latest.generation + 1) is None  # not there yet


def test_bulk_write_is_one_delta_and_snapshot_keeps_published_objects(
    store: NorthboundStore,
) -> None:
    store.transact(lambda h, i: h.put(port(1)))
    before = store.latest()

    def bulk(h: TxnHelper, intent: m.Intent) -> None:
        for n in range(2, 40):
            h.put(port(n, net=n % 3))

    store.transact(bulk)
    after = store.latest()
    assert as_sets(store.changes_since(before.generation)) == {
        "ports": {uid(1000 + n) for n in range(2, 40)}}
    assert after.ports[uid(1001)] is before.ports[uid(1001)]  # untouched: the same object
    assert after.networks is before.networks
    assert as_sets(delta_between(before, after)) == as_sets(store.changes_since(before.generation))


def test_too_old_a_generation_is_unknown(
    db: EmbeddedOvsdb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nb, "DELTAS_KEPT", 3)
    store = NorthboundStore(db.remote).connect(10)
    try:
        seed(store)
        g0 = store.latest().generation
        for n in range(3):
            store.transact(lambda h, i, n=n: h.put(port(n)))
        assert as_sets(store.changes_since(g0)) == {"ports": {uid(1000 + n) for n in range(3)}}
        store.transact(lambda h, i: h.put(port(3)))
        assert store.changes_since(g0) is None  # its successor fell out of the ring
        assert as_sets(store.changes_since(g0 + 1)) == {
            "ports": {uid(1001), uid(1002), uid(1003)}}
    finally:
        store.close()


def test_invalidate_makes_everything_before_unknown(store: NorthboundStore) -> None:
    g0 = store.latest().generation
    store.transact(lambda h, i: h.put(port(1)))
    g1 = store.latest().generation

    def invalidate(h: TxnHelper, intent: m.Intent) -> None:
        assert store._idl is not None and store._idl.builder is not None
        store._idl.builder.invalidate()

    store.call(invalidate)
    store.transact(lambda h, i: h.put(port(2)))
    g2 = store.latest().generation
    assert g2 > g1
    assert store.changes_since(g0) is None and store.changes_since(g1) is None
    assert store.changes_since(g2) == EMPTY_DELTA
    store.transact(lambda h, i: h.put(port(3)))
    assert as_sets(store.changes_since(g2)) == {"ports": {uid(1003)}}


def test_a_reconnect_makes_everything_before_unknown(store: NorthboundStore) -> None:
    store.transact(lambda h, i: h.put(port(1)))
    g1 = store.latest().generation

    def drop(h: TxnHelper, intent: m.Intent) -> None:
        assert store._idl is not None
        store._idl.force_reconnect()

    store.call(drop)
    deadline = time.monotonic() + 20
    while store.latest().generation == g1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.latest().generation > g1  # the full rebuild after the reconnect
    assert store.changes_since(g1) is None
    assert set(store.latest().ports) == {uid(1001)}


# -- snapshots built incrementally ---------------------------------------------------------
def _same_as_full_rebuild(store: NorthboundStore, db: EmbeddedOvsdb) -> None:
    incremental = store.latest()
    other = NorthboundStore(db.remote).connect(10)
    try:
        full = other.latest()
        for attr in ("networks", "subnets", "ports", "security_groups", "routers", "chassis"):
            assert dict(getattr(incremental, attr)) == dict(getattr(full, attr)), attr
            assert set(getattr(incremental, attr)) == set(getattr(full, attr))
        assert dict(incremental._ports_by_network) == dict(full._ports_by_network)
    finally:
        other.close()


def test_incremental_snapshots_equal_a_full_rebuild(
    store: NorthboundStore, db: EmbeddedOvsdb
) -> None:
    for n in range(12):
        store.transact(lambda h, i, n=n: h.put(port(n, net=n % 3)))
    store.transact(lambda h, i: h.put(dataclasses.replace(port(4, net=1), name="moved")))
    store.transact(lambda h, i: h.delete(m.Port, uid(1007)))
    store.transact(lambda h, i: h.put(m.SecurityGroup(id=uid(50), project_id="p", name="sg")))
    store.transact(lambda h, i: h.put(m.Chassis(name="hv1", remote="tcp:1.2.3.4:6640")))
    store.transact(lambda h, i: h.put(m.Chassis(name="hv1", remote="tcp:1.2.3.5:6640")))
    _same_as_full_rebuild(store, db)
    latest = store.latest()
    assert "_ports_by_network" in latest.__dict__  # carried over, not built lazily


def _fresh_ports_by_network(intent: m.Intent) -> dict[str, tuple[m.Port, ...]]:
    return dict(m.Intent(ports=dict(intent.ports))._ports_by_network)


OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete"]), st.integers(0, 14), st.integers(0, 2),
              st.integers(0, 3)),
    min_size=1, max_size=6, unique_by=lambda op: op[1],  # one op per port per transaction
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(OPS, min_size=1, max_size=4))
def test_ports_by_network_index_equals_a_fresh_one_after_random_writes(
    store: NorthboundStore, batches: list[list[tuple[str, int, int, int]]]
) -> None:
    for ops in batches:
        before = store.latest()
        _rest_indexes(before)  # built (or carried) for `before`, so `after`'s are carried
        expected_touched: set[str] = set()

        def write(h: TxnHelper, intent: m.Intent, ops: list[tuple[str, int, int, int]] = ops,
                  expected_touched: set[str] = expected_touched) -> None:
            for op, n, net, rev in ops:
                pid = uid(1000 + n)
                if op == "delete":
                    if pid in intent.ports:
                        h.delete(m.Port, pid)
                        expected_touched.add(pid)
                else:
                    h.put(port(n, net=net, revision_number=rev))
                    expected_touched.add(pid)

        store.transact(write)
        after = store.latest()
        got = store.changes_since(before.generation)
        assert got is not None
        really = {pid for pid in set(before.ports) | set(after.ports)
                  if before.ports.get(pid) != after.ports.get(pid)}
        assert set(got.ids("ports")) == really  # exactly the ports that differ
        assert really <= expected_touched
        assert got.attrs() <= {"ports"}
        assert dict(after._ports_by_network) == _fresh_ports_by_network(after)
        for net in NETS:
            ids = [p.id for p in after.ports_on_network(net.id)]
            assert ids == sorted(ids)
        _check_rest_indexes(after)


def _order_key(p: m.Port) -> tuple[str, str]:
    return (p.created_at, p.id)


def _rest_indexes(intent: m.Intent) -> tuple[IntentIndex, Ordered, object, object]:
    return (index_of(intent), ordered(intent, "ports", _order_key),
            grouped(intent, "ports", "network_id", lambda p: p.network_id),
            grouped(intent, "ports", "name", lambda p: p.name))


def _plain(idx: IntentIndex) -> dict[str, object]:
    return {
        "subnets": idx.subnets_by_network, "ports": idx.ports_by_network, "ips": idx.used_ips,
        "macs": idx.macs, "segments": idx.segments,
    }


def _check_rest_indexes(intent: m.Intent) -> None:
    """The REST layer's per-snapshot indexes, carried over, equal ones built afresh."""
    idx, order, by_net, by_name = _rest_indexes(intent)
    assert _plain(idx) == _plain(IntentIndex(intent))
    fresh = Ordered(intent.ports.values(), _order_key)
    assert order.keys == fresh.keys and order.objects == fresh.objects
    for got, value in ((by_net, lambda p: p.network_id), (by_name, lambda p: p.name)):
        expect: dict[object, dict[str, m.Port]] = {}
        for pid, p in intent.ports.items():
            expect.setdefault(value(p), {})[pid] = p
        assert got == expect


def test_rest_indexes_are_carried_over_and_equal_fresh_ones(
    store: NorthboundStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    derived: list[str] = []
    for cls in (IntentIndex, Ordered):
        def spy(self: object, *a: object, _was: object = cls.derive, _n: str = cls.__name__
                ) -> object:
            derived.append(_n)
            return _was(self, *a)  # type: ignore[operator]

        monkeypatch.setattr(cls, "derive", spy)
    first = store.latest()
    _rest_indexes(first)
    for n in range(20):
        store.transact(lambda h, i, n=n: h.put(port(n, net=n % 3, created_at=f"t{n % 4}")))
        _check_rest_indexes(store.latest())
    assert derived.count("IntentIndex") == 20 and derived.count("Ordered") == 20
    store.transact(lambda h, i: h.put(dataclasses.replace(NETS[1], segmentation_id=99)))
    store.transact(lambda h, i: h.put(dataclasses.replace(port(5, net=2), name="moved")))
    store.transact(lambda h, i: h.delete(m.Port, uid(1006)))
    store.transact(lambda h, i: h.put(dataclasses.replace(SUBNETS[0], created_at="z")))
    latest = store.latest()
    _check_rest_indexes(latest)
    assert index_of(latest).segments["vxlan"][99] == NETS[1].id
    # the index of a write's view: derived item by item, equal to a fresh one
    seen: list[bool] = []

    def bulk(h: TxnHelper, intent: m.Intent) -> None:
        for n in range(30, 40):
            h.put(port(n, net=n % 3))
            idx = index_for_write(h)
            assert idx.intent is h.current()
            seen.append(_plain(idx) == _plain(IntentIndex(h.current())))
        h.delete(m.Port, uid(1001))
        seen.append(_plain(index_for_write(h)) == _plain(IntentIndex(h.current())))

    store.transact(bulk)
    assert seen == [True] * 11
