"""Keep os-ken's receive loop from building objects for big multipart replies.

Why: os-ken's `Datapath._recv_loop` parses every message with its generic classes
before any handler runs. For an OFPMP_FLOW reply that means an OFPFlowStats, an
OFPMatch, instruction and action objects per flow: measured (bench/bench_encode.py)
far above 20 us per flow, i.e. seconds of a single-threaded event loop for a 200k-flow
switch, during which echo replies are not read and the switch may drop the
connection. Loom parses these replies itself from `msg.buf` with `ofwire`, so the
objects are pure waste.

`install_raw_multipart_parsers()` swaps, in os-ken's OpenFlow 1.3 parser table, the
OFPT_MULTIPART_REPLY parser for one that, for OFPMP_FLOW, OFPMP_GROUP_DESC and
OFPMP_METER_CONFIG, only reads the headers: the message still arrives as the usual
OFPFlowStatsReply / OFPGroupDescStatsReply / OFPMeterConfigStatsReply event with
`type`, `flags` and `buf` set, and its `body` is parsed by os-ken only if some code
actually reads it (so a third-party handler still works, just at the old price).
Every other multipart type goes to os-ken's own parser unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

_RAW_TYPES: dict[int, Any] = {
    ofp.OFPMP_FLOW: parser.OFPFlowStatsReply,
    ofp.OFPMP_GROUP_DESC: parser.OFPGroupDescStatsReply,
    ofp.OFPMP_METER_CONFIG: parser.OFPMeterConfigStatsReply,
}
_MP = struct.Struct("!HH")

_original: Optional[Callable[..., Any]] = None


class LazyBody(Sequence[Any]):
    """os-ken's parsed body entries, built on first access only."""

    def __init__(self, stats_cls: Any, buf: bytes, msg_len: int) -> None:
        self._stats_cls = stats_cls
        self._buf = buf
        self._msg_len = msg_len
        self._items: Optional[list[Any]] = None

    def _load(self) -> list[Any]:
        if self._items is None:
            items = []
            body_cls = self._stats_cls.cls_stats_body_cls
            offset = ofp.OFP_MULTIPART_REPLY_SIZE
            while offset < self._msg_len:
                entry = body_cls.parser(self._buf, offset)
                items.append(entry)
                offset += entry.length if hasattr(entry, "length") else entry.len
            self._items = items
        return self._items

    def __getitem__(self, index: Any) -> Any:
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load())

    def __repr__(self) -> str:
        return "LazyBody(unparsed)" if self._items is None else repr(self._items)


def _raw_multipart_reply_parser(datapath: Any, version: int, msg_type: int, msg_len: int,
                                xid: int, buf: Any) -> Any:
    mp_type, flags = _MP.unpack_from(buf, ofp.OFP_HEADER_SIZE)
    cls = _RAW_TYPES.get(mp_type)
    if cls is None:
        assert _original is not None
        return _original(datapath, version, msg_type, msg_len, xid, buf)
    msg = cls(datapath)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.set_buf(buf)
    msg.type = mp_type
    msg.flags = flags
    msg.body = LazyBody(cls, buf, msg_len)
    return msg


def install_raw_multipart_parsers() -> None:
    """Install the light parser (idempotent). Call once before os-ken apps start."""
    global _original
    table = parser._MSG_PARSERS
    current = table[ofp.OFPT_MULTIPART_REPLY]
    if current is _raw_multipart_reply_parser:
        return
    _original = current
    table[ofp.OFPT_MULTIPART_REPLY] = _raw_multipart_reply_parser


def uninstall_raw_multipart_parsers() -> None:
    """Put os-ken's own parser back (tests and benchmarks)."""
    global _original
    if _original is not None:
        parser._MSG_PARSERS[ofp.OFPT_MULTIPART_REPLY] = _original
        _original = None


def installed() -> bool:
    return parser._MSG_PARSERS[ofp.OFPT_MULTIPART_REPLY] is _raw_multipart_reply_parser
