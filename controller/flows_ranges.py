"""Port ranges as OpenFlow matches: the fewest (value, mask) prefixes covering a range.

OpenFlow has no range match, so a security-group rule on ports lo..hi becomes one flow
per prefix: each (value, mask) matches the ports p with `p & mask == value`, a block of
2**k ports aligned on 2**k. The blocks of the greedy split (from lo, always the largest
aligned block that still ends at or before hi) are the nodes of the binary trie that
lie inside the range with a parent that does not, which is the fewest prefixes that
match exactly the range: at most 2 * (bits - 1) of them (30 for 16-bit ports).

Pure functions, no OpenFlow import: `match(tcp_dst=pair)` takes each pair as it is.
"""

from __future__ import annotations

PORT_BITS = 16


def port_range_masks(lo: int, hi: int, *, bits: int = PORT_BITS) -> list[tuple[int, int]]:
    """The fewest (value, mask) pairs matching exactly the ports lo..hi (inclusive).

    Ascending and disjoint. A mask of all ones (0xffff) is an exact port; the whole
    space 0..0xffff is `[(0, 0)]`, which `flows.match` drops, as it should: any port.
    `bits` is the field width (16 for TCP/UDP/SCTP ports; smaller ones for tests).
    """
    full = (1 << bits) - 1
    if not 0 <= lo <= hi <= full:
        raise ValueError(f"bad port range {lo}..{hi} (0 <= lo <= hi <= {full})")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits  # the largest block aligned at lo ...
        while lo + size - 1 > hi:  # ... that ends inside the range
            size >>= 1
        out.append((lo, full & ~(size - 1)))
        lo += size
    return out
