"""What the decoder returns besides the `flows` dataclasses it rebuilds.

A switch can hold things Loom never emits (a flow added by hand, an action we do not
model). They decode to `Opaque` values that keep their raw bytes: they compare equal
only to the same bytes and never to anything the compiler produces, so the reconciler
replaces such a flow instead of trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from controller.flows import Flow


@dataclass(frozen=True)
class Opaque:
    """An action or instruction ofwire does not model, kept as its raw TLV bytes.

    `kind` is "action", "instruction" or "ct" (an NXAST_CT whose arguments `flows.Ct`
    cannot express). An opaque action re-encodes verbatim; an opaque instruction
    cannot be encoded (no desired flow ever holds one).
    """

    kind: str
    raw: bytes


@dataclass(frozen=True)
class OpaqueMeter:
    """A meter that `flows.Meter` cannot express (pktps, several bands, dscp remark)."""

    meter_id: int
    flags: int
    raw: bytes


class InstalledFlow(NamedTuple):
    """One entry of a flow-stats reply: the flow as Loom models it, and its counters.

    A NamedTuple, not a dataclass, because parsing 200k of them must be cheap.
    """

    flow: Flow
    packet_count: int
    byte_count: int
    duration: float  # seconds since the flow was installed


class MultipartReply(NamedTuple):
    """The headers of one OFPT_MULTIPART_REPLY message and its raw body."""

    xid: int
    mp_type: int
    flags: int
    body: bytes

    @property
    def more(self) -> bool:
        """True when the switch will send more messages for the same request."""
        return bool(self.flags & 1)
