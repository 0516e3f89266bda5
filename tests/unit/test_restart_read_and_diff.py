"""A restart's first read and diff (issue 11): a switch's read can be adopted by its
worker (`SwitchSync.adopt`), the one-pass diff equals the two-pass one, and a match
field's cached hash is its fields' hash."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from test_startup_early_openflow import FakeChannel

from controller.flows import MatchField
from controller.reconciler import SwitchSync, diff_flows


def test_adopt_takes_an_earlier_read() -> None:
    channel = FakeChannel(7)
    first, second = SwitchSync(channel), SwitchSync(channel)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        second.adopt(first)
    first.installed = {}
    first.stats.reads = 1
    second.adopt(first)
    assert second.installed is first.installed and second.stats.reads == 1


def test_diff_without_the_second_pass_is_the_same() -> None:
    class F:
        def __init__(self, key: Any, v: int) -> None:
            self.key, self.v = key, v

        def __eq__(self, other: object) -> bool:
            return isinstance(other, F) and (self.key, self.v) == (other.key, other.v)

        __hash__ = None  # type: ignore[assignment]

    def ref(installed: dict, desired: dict) -> tuple:
        return (tuple(f for k, f in desired.items() if installed.get(k) != f),
                tuple(f for k, f in installed.items() if k not in desired))

    cases = [
        ({1: F(1, 0), 2: F(2, 0)}, {1: F(1, 0), 2: F(2, 0)}),  # a restart: nothing
        ({1: F(1, 0), 2: F(2, 0)}, {1: F(1, 1), 2: F(2, 0)}),  # changed
        ({1: F(1, 0), 2: F(2, 0)}, {1: F(1, 0), 3: F(3, 0)}),  # one gone, one new
        ({1: F(1, 0)}, {}),
        ({}, {1: F(1, 0)}),
        ({1: F(1, 0), 2: F(2, 0), 3: F(3, 0)}, {1: F(1, 0), 2: F(2, 0)}),
    ]
    for installed, desired in cases:
        d = diff_flows(installed, desired)  # type: ignore[arg-type]
        assert (d.adds, d.deletes) == ref(installed, desired)


def test_match_field_hash_is_the_fields_hash_and_survives_pickling() -> None:
    a, b = MatchField("in_port", 3), MatchField("in_port", 3)
    assert a == b and hash(a) == hash(b) == hash(("in_port", 3, None))
    c = pickle.loads(pickle.dumps(a))
    assert c == a and hash(c) == hash(a)
    assert repr(a) == "MatchField(field='in_port', value=3, mask=None)"
    assert sorted([MatchField("b", 1), a]) == [MatchField("b", 1), a]
