"""Work around two python-ovs 3.1.2 bugs in `persist_uuid` inserts.

ovsdb-server 3.1 honours an insert's "uuid" member; only the Python client is wrong:
1. `Transaction.commit` puts the row's uuid.UUID object into the "insert" operation
   and json.dumps raises TypeError, so no persist_uuid insert can be sent. We teach
   python-ovs's JSON dumper to write a UUID as its string (any other unknown type
   still raises, so nothing else changes).
2. References to a row inserted in the same transaction are rewritten to a
   ["named-uuid", ...] that the insert never declares (it carries "uuid", not
   "uuid-name"). `Transaction` below keeps such references as the real uuid,
   which the server resolves at commit.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

import ovs.db.idl
import ovs.json
import ovs.ovsuuid


def _default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


def install() -> None:
    if getattr(ovs.json.dumper, "_loom_uuid_fix", False):
        return
    dumper = functools.partial(json.dumps, separators=(",", ":"), default=_default)
    dumper._loom_uuid_fix = True  # type: ignore[attr-defined]
    ovs.json.dumper = dumper


class Transaction(ovs.db.idl.Transaction):
    """python-ovs Transaction whose references to persist_uuid rows stay plain uuids,
    and which says whether the server answered it (`replied`).

    python-ovs ends a transaction TRY_AGAIN both when the server refused it because a
    prerequisite (`Row.verify`) no longer held, which wrote nothing and may simply be
    run again on the newer data, and when the connection dropped with the request in
    flight, whose outcome is unknown. Only the first comes with a reply.
    """

    replied = False

    def _process_reply(self, msg: Any) -> None:
        self.replied = True
        super()._process_reply(msg)

    def _substitute_uuids(self, json_value: Any) -> Any:
        if (
            isinstance(json_value, (list, tuple))
            and len(json_value) == 2
            and json_value[0] == "uuid"
            and ovs.ovsuuid.is_valid_string(json_value[1])
        ):
            row = self._txn_rows.get(ovs.ovsuuid.from_string(json_value[1]))
            if row is not None and row._data is None and row._persist_uuid:
                return json_value
        return super()._substitute_uuids(json_value)
