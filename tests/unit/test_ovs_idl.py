"""store/ovs_idl.py's row updates leave an IDL as python-ovs' own do."""

from __future__ import annotations

import random
import uuid
from typing import Any

import ovs.db.data
import ovs.db.idl
import pytest

from controller.store.embedded import SCHEMA_PATH
from controller.store.ovs_idl import FastRowUpdate

UPDATE2 = 1  # ovs.db.idl.OVSDB_UPDATE2


class Plain(ovs.db.idl.Idl):
    def __init__(self) -> None:
        helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA_PATH))
        helper.register_all()
        super().__init__("unix:/nonexistent", helper)
        self.notices: list[tuple[str, str, uuid.UUID]] = []

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        self.notices.append((event, row._table.name, row.uuid))


class Fast(FastRowUpdate, Plain):
    pass


def json_value(rng: random.Random, column: Any, refs: list[str]) -> Any:
    """A column value as a server sends it, sometimes out of bounds or of the wrong
    type (python-ovs warns and skips it)."""
    t = column.type
    if rng.random() < 0.08:
        return rng.choice([None, 1.5, "x" * 3, -1, 70000, True, ["set", []], ["map", [["a", 1]]]])

    def atom(base: Any) -> Any:
        kind = base.type.name
        if base.enum is not None:
            values = sorted(a.value for a in base.enum.values)
            return rng.choice(values + ["bogus"] if kind == "string" else values + [5])
        if kind == "string":
            return rng.choice(["", "a", "port-1", "é€", "{\"k\": 1}"])
        if kind == "integer":
            lo = base.min if base.min is not None else -5
            hi = base.max if base.max is not None else 10 ** 6
            return rng.choice([lo, hi, (lo + hi) // 2, 0, 1, hi + 1, lo - 1, True, 2.0])
        if kind == "boolean":
            return rng.choice([True, False])
        if kind == "real":
            return rng.choice([0.5, 2, -1.25])
        return ["uuid", rng.choice(refs)]

    if t.is_map():
        n = rng.randrange(3)
        return ["map", [[atom(t.key), atom(t.value)] for _ in range(n)]]
    if t.n_min == 1 and t.n_max == 1 and rng.random() < 0.8:
        return atom(t.key)
    n = rng.randrange(0, min(t.n_max, 3) + 1)
    elems = [atom(t.key) for _ in range(n)]
    if n == 1 and rng.random() < 0.5:
        return elems[0]
    return ["set", elems]


@pytest.mark.parametrize("seed", range(6))
def test_rows_and_notices_as_python_ovs_makes_them(seed: int) -> None:
    rng = random.Random(seed)
    plain, fast = Plain(), Fast()
    refs = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5)]
    live: dict[str, list[str]] = {name: [] for name in plain.tables}
    for _ in range(8):  # updates: inserts first, then modifies and deletes as well
        update: dict[str, dict[str, Any]] = {}
        for name, table in plain.tables.items():
            rows: dict[str, Any] = {}
            for _ in range(rng.randrange(6)):
                op = rng.random()
                if live[name] and op < 0.3:
                    row_id = rng.choice(live[name])
                    cols = rng.sample(sorted(table.columns), rng.randrange(1, 4))
                    rows[row_id] = {"modify": {c: json_value(rng, table.columns[c], refs)
                                               for c in cols}}
                elif live[name] and op < 0.4:
                    row_id = rng.choice(live[name])
                    live[name].remove(row_id)
                    rows[row_id] = {"delete": None}
                else:
                    row_id = str(uuid.UUID(int=rng.getrandbits(128)))
                    live[name].append(row_id)
                    cols = [c for c in sorted(table.columns) if rng.random() < 0.6]
                    kind = rng.choice(["insert", "initial"])
                    rows[row_id] = {kind: {c: json_value(rng, table.columns[c], refs)
                                           for c in cols}}
            if rows:
                update[name] = rows
        for idl in (plain, fast):
            idl._Idl__parse_update(_copy(update), UPDATE2)
        assert fast.notices == plain.notices
        for name in plain.tables:
            a, b = plain.tables[name].rows, fast.tables[name].rows
            assert set(a) == set(b)
            for row_id in a:
                da, db = dict(a[row_id]._data), dict(b[row_id]._data)
                assert da.keys() == db.keys(), (name, row_id)
                bad = [(c, [(k.value, k.type, v) for k, v in da[c].values.items()],
                        [(k.value, k.type, v) for k, v in db[c].values.items()]) for c in da
                       if not (da[c] == db[c] and da[c].type == db[c].type)]
                assert not bad, (name, row_id, bad)
                assert a[row_id]._data.keys() == b[row_id]._data.keys()
                for c in plain.tables[name].columns:  # what a reader sees, defaults too
                    assert _plain(a[row_id]._data[c].to_python(lambda u, _: u)) == \
                        _plain(b[row_id]._data[c].to_python(lambda u, _: u))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A value with python-ovs' default atoms (an Atom whose value is an Atom) spelt out."""
    if isinstance(value, ovs.db.data.Atom):
        return ("atom", _plain(value.value))
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return (type(value).__name__, value)
