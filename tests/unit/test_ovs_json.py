"""The JSON-RPC stream parser (controller/store/ovs_json.py) against python-ovs' own."""

from __future__ import annotations

import json
import random

import ovs.json
import pytest

from controller.store.ovs_json import _ORIGINAL, StreamParser, install


def ovs_parse(text: str) -> object:
    parser = object.__new__(_ORIGINAL)
    parser.__init__()
    taken = parser.feed(text)
    assert parser.is_done()
    return parser.finish(), taken


def stream(text: str, sizes: list[int]) -> list[object]:
    """Every value of `text` as python-ovs' JSON-RPC loop feeds it, `sizes` at a time."""
    out, parser, pending, i = [], None, "", 0
    while i < len(text) or pending:
        if not pending:
            n = sizes[len(out) % len(sizes)]
            pending, i = text[i:i + n], i + n
            continue
        if parser is None:
            parser = StreamParser()
        pending = pending[parser.feed(pending):]
        if parser.is_done():
            out.append(parser.finish())
            parser = None
    assert parser is None or not parser._started
    return out


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([0, 1, -7, 2 ** 40, 1.5, -0.25, True, False, None])
    if kind in (1, 2, 3, 4):
        return random_string(rng)
    if kind in (5, 6):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_string(rng: random.Random) -> str:
    alphabet = 'ab{}[]"\\/ \n\t:,é€😀x'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))


def top(rng: random.Random) -> object:
    value = random_value(rng, 3)
    return {"id": rng.randrange(100), "result": value, "uuid": ["uuid", "x{[\"]"]}


@pytest.mark.parametrize("seed", range(20))
def test_values_and_boundaries_as_python_ovs_parses_them(seed: int) -> None:
    rng = random.Random(seed)
    docs = [top(rng) for _ in range(6)]
    texts = [json.dumps(d, ensure_ascii=rng.random() < 0.5) for d in docs]
    text = "".join(t + rng.choice(["", " ", "\n", "  \r\n"]) for t in texts)
    expected = [ovs_parse(t)[0] for t in texts]
    assert expected == docs
    for sizes in ([1], [2, 3], [7], [4096], [len(text)], [rng.randrange(1, 40) for _ in range(9)]):
        assert stream(text, sizes) == expected


@pytest.mark.parametrize("text,expected", [
    ('{"a": 1.0}', {"a": 1}), ('{"a": 1e3}', {"a": 1000}), ('{"a": -0.0}', {"a": 0}),
    ('{"a": 2.50}', {"a": 2.5}), ('{"a": 1E-2}', {"a": 0.01}), ('[10.000]', [10]),
    ('[1e20]', [1e20]), ('[-9223372036854775808.0]', [-9223372036854775808]),
])
def test_numbers_as_python_ovs_gives_them(text: str, expected: object) -> None:
    value, _ = ovs_parse(text)
    assert value == expected and [type(v) for v in _leaves(value)] == \
        [type(v) for v in _leaves(expected)]
    got = stream(text, [3])
    assert got == [expected] and [type(v) for v in _leaves(got[0])] == \
        [type(v) for v in _leaves(expected)]


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": tru}', '{"a": 1,}', '{"a" 1}',
                                  '{"a": "\x01"}', '}', 'x', '1', '{"a": Infinity}'])
def test_malformed_input_is_an_error_string(text: str) -> None:
    parser = StreamParser()
    parser.feed(text)
    if not parser.is_done():
        parser.feed(" ")
    assert parser.is_done()
    assert isinstance(parser.finish(), str)


def test_unfinished_input_is_not_done() -> None:
    parser = StreamParser()
    assert parser.feed('  {"a": ["x\\') == len('  {"a": ["x\\')
    assert not parser.is_done() and isinstance(parser.finish(), str)
    assert parser.feed('"y"]}{"b"') == len('"y"]}')
    assert parser.finish() == {"a": ['x"y']}


def test_installed_for_json_rpc_only() -> None:
    install()
    assert isinstance(ovs.json.Parser(), StreamParser)
    assert ovs.json.from_string('{"a": [1, 2.0]}') == {"a": [1, 2]}
    assert isinstance(ovs.json.from_string('{"a": 1} x'), str)  # trailer checked
