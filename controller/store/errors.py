"""Typed store failures, so the REST layer can map each one to the right HTTP status.

Every failure of `NorthboundStore.transact` leaves the database unchanged (OVSDB
transactions are atomic), except `StoreTimeout` (and its `CommitOutcomeUnknown`),
whose outcome is unknown. A `StoreUnavailable` write was never sent: nothing was written.
"""

from __future__ import annotations

import re
from typing import Optional


class StoreError(Exception):
    """Base of every store failure."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (not started, connection lost, server gone)."""


class StoreTimeout(StoreError):
    """The write did not complete in time; it may or may not have been committed."""


class CommitOutcomeUnknown(StoreTimeout):
    """The connection dropped after the write was sent and before the server answered.

    The server may have committed it (and died before replying) or not: the caller
    must read back before retrying. A `StoreTimeout`, so whoever maps "outcome
    unknown" (the REST layer: 503) handles both the same.
    """


class WriteConflict(StoreError):
    """A write's prerequisite failed: another writer changed a row it depended on
    first. Nothing was written (`NorthboundStore.transact_raw`)."""


class EmbeddedDbError(StoreError):
    """The embedded ovsdb-server could not be created or started."""


class TransactionFailed(StoreError):
    """The server rejected the transaction; nothing was written.

    `table` names the table the server blamed, when its message says so, so the
    REST layer can tell "IP already allocated" from "MAC in use".
    """

    def __init__(self, message: str, *, table: Optional[str] = None, details: str = "") -> None:
        super().__init__(message)
        self.table = table
        self.details = details


class ConstraintViolation(TransactionFailed):
    """An index (uniqueness) or column constraint was violated."""


class ReferentialIntegrity(TransactionFailed):
    """A strong reference would dangle, or a referenced row would be deleted."""


class RowNotFound(StoreError):
    """A write named a row that is not in the database."""

    def __init__(self, table: str, row_id: str) -> None:
        super().__init__(f"no {table} row with id {row_id}")
        self.table = table
        self.row_id = row_id


# The table ovsdb-server blames: index conflicts, deleting a referenced row, dangling refs.
_TABLE_RES = (
    re.compile(r'rows in \\?"(\w+)\\?" table'),
    re.compile(r"cannot delete (\w+) row"),
    re.compile(r"Table (\w+) column"),
)


def from_ovsdb_error(text: str) -> TransactionFailed:
    """Turn the JSON error text python-ovs gives for a failed transaction into a typed error."""
    table = None
    for pattern in _TABLE_RES:
        match = pattern.search(text)
        if match:
            table = match.group(1)
            break
    if "constraint violation" in text:
        return ConstraintViolation(f"constraint violation: {text}", table=table, details=text)
    if "referential integrity violation" in text:
        return ReferentialIntegrity(
            f"referential integrity violation: {text}", table=table, details=text
        )
    return TransactionFailed(f"transaction failed: {text}", table=table, details=text)
