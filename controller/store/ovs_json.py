"""A JSON stream parser for python-ovs' JSON-RPC sessions, with the C `json` module.

python-ovs 3.1 parses every byte an OVSDB server sends with a pure-Python, one
character at a time state machine (`ovs.json.Parser`; the C one, `ovs._json`, is
only there when python-ovs was built against libopenvswitch, which the PyPI wheel
is not). The first copy of a 10,000-port northbound store is 5.8 MB of JSON: that
parser took about 3.5 s of the controller's start (issue 11), and it reads every
chassis' Open_vSwitch database the same way.

`StreamParser` keeps the interface `ovs.jsonrpc.Connection.recv` uses (`feed`
returns how many characters it took, `is_done`, `finish` gives the value or an
error string) but only finds where the message ends, with regular expressions
(C speed): it skips the strings and counts brackets, chunk by chunk, carrying
whether a chunk ended inside a string or just after a backslash in one. Once the
brackets balance, the message is decoded by `json.JSONDecoder.raw_decode`, which
also says exactly where it ended; what follows stays in the connection's input
for the next message, as with python-ovs' parser.

Values are those python-ovs' parser gives: numbers written with a fraction or an
exponent that are whole and within 64 bits become ints (`_ovs_number`), -0.0
becomes 0, NaN and Infinity are refused. Differences, on input no OVSDB server
sends: an integer literal outside 64 bits stays an int (python-ovs: a float), a
"\\u0000" escape is accepted, and malformed input is reported only when the
brackets balance (python-ovs: at the first bad character).

`install()` makes `ovs.json.Parser()` (as `ovs.jsonrpc` calls it, without
arguments) build a `StreamParser`; with `check_trailer` (`ovs.json.from_string`,
`from_file`) it still builds python-ovs' own parser.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Optional

import ovs.json

# (No possessive quantifiers: CPython 3.11.2's get them wrong inside a repeat. These
# are the "unrolled" forms, which cannot backtrack more than linearly.)
# Outside a string: runs of anything but a quote, and whole strings.
_OUTSIDE = re.compile(r'(?:[^"]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.S)
# Inside a string (after its opening quote): up to the closing quote, exclusive, or
# up to a backslash that ends the piece.
_IN_STRING = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r'[^\[\]{}]+')
_DEPTH = {"{": 1, "[": 1, "}": -1, "]": -1}
_SPACE = " \t\n\r"
_MAX_HEIGHT = 1000  # as python-ovs' parser


def _ovs_number(text: str) -> Any:
    """A number with a fraction or an exponent, as python-ovs' parser gives it: an int
    when it is whole and fits in 64 bits (`1.0`, `1e3`), else a float."""
    m = _NUMBER.match(text)
    if m is None:  # (the C scanner only passes JSON numbers)
        raise ValueError(f"syntax error in number {text!r}")
    sign, integer, fraction, exp = m.groups()
    if fraction is not None and not fraction.strip("0"):
        fraction = None
    significand = int(integer + (fraction or ""))
    pow10 = (-len(fraction) if fraction is not None else 0) + (int(exp) if exp else 0)
    if significand == 0:
        return 0
    if significand <= 2 ** 63:
        while pow10 > 0 and significand <= 2 ** 63:
            significand *= 10
            pow10 -= 1
        while pow10 < 0 and significand % 10 == 0:
            significand //= 10
            pow10 += 1
        if pow10 == 0 and (significand < 2 ** 63 or (sign and significand == 2 ** 63)):
            return -significand if sign else significand
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number outside valid range")
    return value or 0  # no negative zero


_NUMBER = re.compile(r"(-)?(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?$")


def _end(match: Optional[re.Match[str]]) -> int:
    assert match is not None  # (the patterns match the empty string)
    return match.end()


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid keyword '{name}'")


_DECODER = json.JSONDecoder(parse_float=_ovs_number, parse_constant=_no_constant)


class StreamParser:
    """One JSON value (an object or an array) out of a stream fed in pieces."""

    def __init__(self, check_trailer: bool = False) -> None:
        self._parts: list[str] = []  # the value's text so far
        self._length = 0  # sum of len(parts)
        self._started = False  # its first character (a bracket) was seen
        self._in_string = False  # the text so far ends inside a string ...
        self._escape = False  # ... just after a backslash
        self._depth = 0
        self._value: Any = None
        self.done = False
        self.error: Optional[str] = None

    def feed(self, s: str) -> int:
        """Take characters of `s` up to the end of the value: how many were taken."""
        if self.done:
            return 0
        skipped = 0
        if not self._started:
            stripped = s.lstrip(_SPACE)
            skipped = len(s) - len(stripped)
            if not stripped:
                return len(s)
            if stripped[0] not in "{[":
                self._fail(f"byte {skipped}: syntax error at beginning of input")
                return skipped
            self._started = True
            s = stripped
        pos, end = 0, len(s)
        while pos < end:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                pos = _end(_IN_STRING.match(s, pos))
                if pos == end:
                    break
                if s[pos] == "\\":  # the piece ends just after a backslash
                    self._escape = True
                    pos = end
                    break
                self._in_string = False  # the closing quote
                pos += 1
                continue
            stop = _end(_OUTSIDE.match(s, pos))
            taken = self._brackets(s, pos, stop)
            if taken is not None:
                return skipped + taken
            pos = stop
            if pos < end:  # a string that goes on past this piece
                self._in_string = True
                pos += 1
        self._parts.append(s)
        self._length += len(s)
        return skipped + len(s)

    def _brackets(self, s: str, start: int, stop: int) -> Optional[int]:
        """Count the brackets of s[start:stop] (no string open in it); when the value
        ends there, decode it: how much of `s` it took (None: it goes on)."""
        brackets = _NOT_BRACKET.sub("", _STRING.sub("", s[start:stop]))
        if not brackets:
            return None
        depths = list(accumulate(map(_DEPTH.__getitem__, brackets), initial=self._depth))
        if min(depths[1:]) > 0:
            self._depth = depths[-1]
            if self._depth > _MAX_HEIGHT:
                self._fail(f"input exceeds maximum nesting depth {_MAX_HEIGHT}")
                return len(s)
            return None
        text = "".join(self._parts) + s if self._parts else s
        self._parts.clear()
        try:
            self._value, end = _DECODER.raw_decode(text)
        except (ValueError, RecursionError) as exc:
            self._fail(str(exc))
            return len(s)
        if not isinstance(self._value, (dict, list)):  # (not after a bracket)
            self._fail("syntax error at beginning of input")
            return len(s)
        self.done = True
        return end - self._length

    def _fail(self, message: str) -> None:
        self.error = message
        self.done = True
        self._parts.clear()

    def is_done(self) -> bool:
        return self.done

    def finish(self) -> Any:
        """The value, or a string saying what was wrong (python-ovs' convention)."""
        if self.error is not None:
            return self.error
        if not self.done:
            return "unexpected end of input" if self._started else "empty input stream"
        return self._value


_ORIGINAL = ovs.json.Parser


class _Parser(_ORIGINAL):  # type: ignore[misc,valid-type]
    """`ovs.json.Parser` as installed: a StreamParser unless a trailer is checked."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            # (not _ORIGINAL(...): its __new__ names the module's Parser, now this class)
            parser = object.__new__(_ORIGINAL)
            parser.__init__(*args, **kwargs)
            return parser
        return StreamParser()


def install() -> None:
    """Make python-ovs' JSON-RPC sessions (all of them, in this process) parse with
    `StreamParser`, unless python-ovs has its own C parser."""
    if ovs.json.PARSER == ovs.json.PARSER_C or ovs.json.Parser is _Parser:
        return
    ovs.json.Parser = _Parser
