"""A request/reply channel over one os-ken Datapath, carrying pre-encoded bytes.

os-ken owns the socket and the handshake; this class only numbers requests, hands
raw bytes to `Datapath.send` (bypassing os-ken's per-message object building,
which is the hot path's cost), and matches replies to requests by xid. Replies
arrive on os-ken's event thread, requests wait on other threads: nothing here may
block the event thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

LOG = logging.getLogger(__name__)

OFPT_ERROR = 1
OFPMPF_REPLY_MORE = 1
MAX_XID = 0xFFFFFFFF


class ChannelClosed(ConnectionError):
    pass


class SwitchError(RuntimeError):
    """The switch answered a request with an OpenFlow error."""

    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors
        super().__init__("; ".join(_describe_error(e) for e in errors))


def _describe_error(msg: Any) -> str:
    return f"OFPErrorMsg(type={getattr(msg, 'type', '?')}, code={getattr(msg, 'code', '?')})"


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    replies: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)


class OpenFlowChannel:
    def __init__(self, datapath: Any) -> None:
        self.datapath = datapath
        self.datapath_id: int = datapath.id
        self._lock = threading.Lock()
        self._xids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._stray_errors: dict[int, Any] = {}
        # xid -> called with every later message of that xid (a flow monitor's updates)
        self._watchers: dict[int, Any] = {}
        self.closed = threading.Event()

    def reserve_xids(self, n: int) -> int:
        """First of n consecutive xids (wrapping is harmless: old ones are long answered)."""
        with self._lock:
            first = next(self._xids)
            for _ in range(n - 1):
                next(self._xids)
        return first & MAX_XID

    def send(self, data: bytes) -> None:
        if self.closed.is_set() or not self.datapath.send(data):
            raise ChannelClosed(f"switch {self.datapath_id:#x} is gone")

    def call(self, data: bytes, xid: int, timeout: float) -> list[Any]:
        """Send bytes whose last message has `xid`; return that xid's replies."""
        pending = _Pending()
        with self._lock:
            self._pending[xid] = pending
        try:
            self.send(data)
            if not pending.done.wait(timeout):
                raise TimeoutError(f"switch {self.datapath_id:#x}: no reply to xid {xid}")
            if self.closed.is_set() and not pending.replies and not pending.errors:
                raise ChannelClosed(f"switch {self.datapath_id:#x} disconnected")
            if pending.errors:
                raise SwitchError(pending.errors)
            return pending.replies
        finally:
            with self._lock:
                self._pending.pop(xid, None)

    def watch(self, xid: int, callback: Any) -> None:
        """Call `callback(msg)`, on os-ken's event thread (it must not block), with every
        message of `xid` that no `call` waits for: the updates a flow monitor keeps
        sending under its request's xid."""
        with self._lock:
            self._watchers[xid] = callback

    def unwatch(self, xid: int) -> None:
        with self._lock:
            self._watchers.pop(xid, None)

    def take_stray_errors(self, first_xid: int, last_xid: int) -> list[Any]:
        """Errors the switch sent for messages inside a bundle (not the awaited xid)."""
        with self._lock:
            found = [e for x, e in self._stray_errors.items() if first_xid <= x <= last_xid]
            for x in [x for x in self._stray_errors if first_xid <= x <= last_xid]:
                del self._stray_errors[x]
        return found

    # ---- called from os-ken's event thread: never block here
    def deliver(self, msg: Any) -> None:
        with self._lock:
            pending = self._pending.get(msg.xid)
            watcher = self._watchers.get(msg.xid) if pending is None else None
            if watcher is not None:
                pass
            elif pending is None:
                if msg.msg_type == OFPT_ERROR:
                    LOG.warning("switch %#x: error for xid %s: %s", self.datapath_id, msg.xid,
                                _describe_error(msg))
                    self._stray_errors[msg.xid] = msg
                return
        if watcher is not None:
            watcher(msg)
            return
        assert pending is not None
        if msg.msg_type == OFPT_ERROR:
            pending.errors.append(msg)
            pending.done.set()
            return
        pending.replies.append(msg)
        if not (getattr(msg, "flags", 0) & OFPMPF_REPLY_MORE):
            pending.done.set()

    def close(self) -> None:
        self.closed.set()
        with self._lock:
            pendings = list(self._pending.values())
        for p in pendings:
            p.done.set()


def dpid_text(datapath_id: Optional[int]) -> str:
    return "unknown" if datapath_id is None else f"{datapath_id:016x}"
