"""OpenFlow 1.3 controller roles: how an instance becomes a switch's master, or steps aside.

With several controller instances connected to one switch (issue 14), exactly one
must write. The owner (controller/ownership.py) asks for MASTER with the generation
of its grant from the database; the others ask for SLAVE (no flow_mods accepted, no
packet-ins sent). The switch remembers the highest generation it has seen and
refuses an older one with OFPRRFC_STALE: an instance that was paused or cut off, and
still believes it is master, cannot take the switch back.
"""

from __future__ import annotations

import struct
from typing import Any

from os_ken.ofproto.ofproto_v1_3 import (
    OFP_VERSION,
    OFPBRC_IS_SLAVE,
    OFPCR_ROLE_MASTER,
    OFPCR_ROLE_SLAVE,
    OFPET_BAD_REQUEST,
    OFPET_ROLE_REQUEST_FAILED,
    OFPRRFC_STALE,
    OFPT_ROLE_REQUEST,
)

from controller.southbound.openflow import SwitchError

ROLE_TIMEOUT_S = 5.0
_MAX_GENERATION = (1 << 64) - 1


class RoleRefused(RuntimeError):
    """The switch refused the role: `stale` when a newer master's generation is known."""

    def __init__(self, message: str, stale: bool) -> None:
        super().__init__(message)
        self.stale = stale


def role_request(role: int, generation: int, xid: int) -> bytes:
    """ofp_role_request: header, role, 4 bytes of padding, generation_id."""
    return struct.pack("!BBHIIIQ", OFP_VERSION, OFPT_ROLE_REQUEST, 24, xid, role, 0,
                       generation & _MAX_GENERATION)


def request_role(channel: Any, role: int, generation: int,
                 timeout: float = ROLE_TIMEOUT_S) -> None:
    """Ask the switch behind `channel` for `role`; returns once it agreed."""
    xid = channel.reserve_xids(1)
    try:
        channel.call(role_request(role, generation, xid), xid, timeout)
    except SwitchError as exc:
        stale = any(getattr(e, "type", None) == OFPET_ROLE_REQUEST_FAILED
                    and getattr(e, "code", None) == OFPRRFC_STALE for e in exc.errors)
        name = {OFPCR_ROLE_MASTER: "master", OFPCR_ROLE_SLAVE: "slave"}.get(role, str(role))
        raise RoleRefused(
            f"switch {channel.datapath_id:#x} refused the {name} role at generation "
            f"{generation}" + (" (stale: another master has a newer one)" if stale else ""),
            stale) from exc


def is_slave_error(exc: BaseException) -> bool:
    """A write refused because this connection is no longer master (another instance
    took the switch)."""
    return isinstance(exc, SwitchError) and any(
        getattr(e, "type", None) == OFPET_BAD_REQUEST
        and getattr(e, "code", None) == OFPBRC_IS_SLAVE for e in exc.errors)
