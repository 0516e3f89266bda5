"""The store's table mappings answer exactly as the dict copies they replace (issue 11).

`Layered` (a published snapshot's table, store/layered.py) and `Overlay` (a
transaction's view, store/txn.py) are checked against the dict a copy-and-edit
would have made: same answers, same iteration order, and earlier versions left as
they were.
"""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any, Optional

import pytest

from controller.frozen import copy_of
from controller.store.layered import Layered
from controller.store.txn import Overlay


def _same(got: Any, want: dict[str, Any], probes: list[str]) -> None:
    assert list(got) == list(want)
    assert list(got.keys()) == list(want.keys())
    assert list(got.values()) == list(want.values())
    assert list(got.items()) == list(want.items())
    assert len(got) == len(want)
    assert copy_of(got) == want and list(copy_of(got)) == list(want)
    assert got == want and got == MappingProxyType(dict(want))
    for key in probes:
        assert (key in got) == (key in want)
        assert got.get(key) == want.get(key)
        assert got.get(key, "dflt") == want.get(key, "dflt")
        if key in want:
            assert got[key] is want[key]
        else:
            with pytest.raises(KeyError):
                got[key]


def _edit(want: dict[str, Any], removed: list[str], put: list[tuple[str, Any]]) -> dict[str, Any]:
    """What the snapshot builder did before: a dict copy, pops, then assignments."""
    out = dict(want)
    for key in removed:
        out.pop(key, None)
    for key, obj in put:
        out[key] = obj
    return out


@pytest.mark.parametrize("seed", range(8))
def test_layered_answers_as_the_edited_dict_copy(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"k{i:03d}" for i in range(300)]
    start = {k: object() for k in sorted(rng.sample(keys, 120))}
    versions: list[tuple[Layered, dict[str, Any]]] = [(Layered(dict(start)), dict(start))]
    for _ in range(400):
        layered, want = versions[-1]
        removed = rng.sample(keys, rng.choice((0, 0, 1, 3, 20)))
        put = [(k, object()) for k in sorted(rng.sample(keys, rng.choice((0, 1, 1, 2, 30))))]
        if want and rng.random() < 0.2:  # the same object again: unchanged
            key = rng.choice(list(want))
            put.append((key, want[key]))
        versions.append((layered.updated(removed, put), _edit(want, removed, put)))
    for layered, want in versions[:: 37] + versions[-3:]:  # older versions unchanged too
        _same(layered, want, rng.sample(keys, 40))


def test_layered_keeps_the_place_of_a_replaced_key_and_appends_a_readded_one() -> None:
    a, b, c, d = (object() for _ in range(4))
    v1 = Layered({"a": a, "b": b, "c": c})
    v2 = v1.updated(["a"], [("b", d)])
    assert list(v2.items()) == [("b", d), ("c", c)]
    v3 = v2.updated([], [("a", a), ("e", b)])
    assert list(v3) == ["b", "c", "a", "e"]
    v4 = v3.updated(["e"], [("e", c)])
    assert list(v4.items()) == [("b", d), ("c", c), ("a", a), ("e", c)]
    assert list(v1.items()) == [("a", a), ("b", b), ("c", c)]
    assert list(Layered()) == [] and len(Layered()) == 0


def test_layered_folds_its_changes_and_stays_right() -> None:
    rng = random.Random(1)
    layered, want = Layered(), dict[str, Any]()
    for i in range(2000):  # far past the fold threshold, many times
        key = f"p{i:05d}"
        obj = object()
        removed = [f"p{rng.randrange(i + 1):05d}"] if i % 7 == 0 else []
        layered = layered.updated(removed, [(key, obj)])
        want = _edit(want, removed, [(key, obj)])
    _same(layered, want, [f"p{i:05d}" for i in range(0, 2100, 13)])


def test_layered_refuses_none_as_a_value() -> None:
    with pytest.raises(ValueError):
        Layered().updated([], [("a", None)])


@pytest.mark.parametrize("seed", range(4))
def test_overlay_answers_as_the_merged_copy(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"k{i:02d}" for i in range(60)]
    base_dict = {k: object() for k in sorted(rng.sample(keys, 30))}
    base: Any = Layered(dict(base_dict)) if seed % 2 else MappingProxyType(base_dict)
    changes: dict[str, Optional[object]] = {}
    for key in rng.sample(keys, 20):
        changes[key] = None if rng.random() < 0.4 else object()
    merged = dict(base_dict)  # what TxnHelper.current made before
    for key, obj in changes.items():
        if obj is None:
            merged.pop(key, None)
        else:
            merged[key] = obj
    view = Overlay(base, changes)
    changes.clear()  # the overlay keeps its own copy
    assert len(view) == len(merged)  # before anything merged
    _same(view, merged, keys)
    fresh = Overlay(base, {k: v for k, v in (("k00", None), ("zz", 1))})
    assert ("zz" in fresh) and fresh["zz"] == 1 and "k00" not in fresh
