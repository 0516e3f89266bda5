"""Northbound store: Loom's OVSDB database, its embedded server and its IDL client."""

from controller.store.embedded import SCHEMA_PATH, EmbeddedOvsdb, RestartPolicy, Supervisor
from controller.store.errors import (
    CommitOutcomeUnknown,
    ConstraintViolation,
    EmbeddedDbError,
    ReferentialIntegrity,
    RowNotFound,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    TransactionFailed,
)
from controller.store.northbound import NorthboundStore
from controller.store.txn import TxnHelper

__all__ = [
    "SCHEMA_PATH",
    "EmbeddedOvsdb",
    "RestartPolicy",
    "Supervisor",
    "NorthboundStore",
    "TxnHelper",
    "StoreError",
    "StoreUnavailable",
    "StoreTimeout",
    "CommitOutcomeUnknown",
    "EmbeddedDbError",
    "TransactionFailed",
    "ConstraintViolation",
    "ReferentialIntegrity",
    "RowNotFound",
]
