"""controller.flows_ranges: a port range as the fewest (value, mask) prefix matches.

Checked by mask semantics (a port p is matched by (v, m) iff p & m == v), not by
trusting the blocks to be intervals: every port of the field is tested against the
output, for every range of a small field and for a broad sample of 16-bit ranges, and
the count is compared with an independent minimal cover (the binary trie's maximal
nodes inside the range).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from controller.flows import match
from controller.flows_ranges import port_range_masks


def _matched(pairs: list[tuple[int, int]], bits: int) -> bytes:
    """For each port of the field, how many pairs match it (by mask semantics)."""
    full = (1 << bits) - 1
    hits = bytearray(1 << bits)
    for value, mask in pairs:
        assert 0 <= mask <= full and value & ~mask == 0, (value, mask)
        free = full & ~mask
        sub = free
        while True:  # every port p with p & mask == value: value | each submask of free
            hits[value | sub] += 1
            if sub == 0:
                break
            sub = (sub - 1) & free
    return bytes(hits)


def _expected(lo: int, hi: int, bits: int) -> bytes:
    return bytes(lo) + b"\x01" * (hi - lo + 1) + bytes((1 << bits) - 1 - hi)


def _min_cover(lo: int, hi: int, bits: int) -> int:
    """Size of the fewest prefixes matching exactly lo..hi: trie nodes inside the range
    whose parent is not (independent of the greedy split under test)."""
    def walk(start: int, size: int) -> int:
        end = start + size - 1
        if end < lo or start > hi:
            return 0
        if lo <= start and end <= hi:
            return 1
        half = size // 2
        return walk(start, half) + walk(start + half, half)

    return walk(0, 1 << bits)


def _check(lo: int, hi: int, bits: int = 16) -> None:
    pairs = port_range_masks(lo, hi, bits=bits)
    # every port is matched iff lo <= port <= hi, and by exactly one pair (disjoint)
    assert _matched(pairs, bits) == _expected(lo, hi, bits), (lo, hi)
    assert len(pairs) == _min_cover(lo, hi, bits), (lo, hi)
    assert len(pairs) <= max(1, 2 * (bits - 1))
    assert pairs == sorted(pairs)
    for _value, mask in pairs:  # prefix masks only: ones then zeros
        assert ((mask ^ ((1 << bits) - 1)) + 1) & (mask ^ ((1 << bits) - 1)) == 0


def test_every_range_of_an_8_bit_field() -> None:
    """All 32896 ranges of an 8-bit field, each against all 256 values."""
    for lo in range(256):
        for hi in range(lo, 256):
            _check(lo, hi, bits=8)


def _sample_ranges() -> Iterator[tuple[int, int]]:
    top = 0xFFFF
    yield from [(0, top), (0, 0), (top, top), (1, top), (0, top - 1), (1, top - 1),
                (1024, top), (0, 1023), (1, 1023), (80, 80), (22, 23), (8000, 8080),
                (32768, 60999), (49152, top), (1023, 1024), (32767, 32768), (5000, 5999),
                (0x1F40, 0x1F4F), (6000, 6063), (2, 65533)]
    for k in range(1, 16):
        p = 1 << k
        yield from [(lo, hi) for lo, hi in [(p - 1, p), (p, 2 * p - 1), (p + 1, 2 * p - 2),
                                            (0, p - 1), (p, top), (p - 1, top - p + 1)]
                    if lo <= hi]
    rng = random.Random(20240601)
    for _ in range(120):
        a, b = rng.randrange(1 << 16), rng.randrange(1 << 16)
        yield (min(a, b), max(a, b))
    for _ in range(60):  # short ranges, the common case in security groups
        lo = rng.randrange(1 << 16)
        yield (lo, min(0xFFFF, lo + rng.randrange(200)))


def test_sampled_16_bit_ranges_against_every_port() -> None:
    """Each range against all 65536 ports."""
    for lo, hi in _sample_ranges():
        _check(lo, hi)


def test_known_splits() -> None:
    assert port_range_masks(80, 80) == [(80, 0xFFFF)]
    assert port_range_masks(0, 0xFFFF) == [(0, 0)]
    assert port_range_masks(1024, 0xFFFF) == [(0x0400, 0xFC00), (0x0800, 0xF800),
                                              (0x1000, 0xF000), (0x2000, 0xE000),
                                              (0x4000, 0xC000), (0x8000, 0x8000)]
    assert port_range_masks(0x1F40, 0x1F4F) == [(0x1F40, 0xFFF0)]
    assert port_range_masks(22, 23) == [(22, 0xFFFE)]
    assert len(port_range_masks(1, 0xFFFE)) == 30  # the worst case: 2 * (16 - 1)


def test_pairs_feed_match_unchanged() -> None:
    """Each pair is already canonical for flows.match; the full range drops the field."""
    for value, mask in port_range_masks(1000, 2000):
        (mf,) = match(tcp_dst=(value, mask))
        assert (mf.value, mf.mask) == (value, None if mask == 0xFFFF else mask)
    assert match(udp_dst=port_range_masks(0, 0xFFFF)[0]) == ()


@pytest.mark.parametrize("lo, hi", [(5, 4), (-1, 10), (0, 0x10000), (0x10000, 0x10000)])
def test_bad_ranges_raise(lo: int, hi: int) -> None:
    with pytest.raises(ValueError):
        port_range_masks(lo, hi)
