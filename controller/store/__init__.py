"""Northbound store: Loom's OVSDB database, its embedded server and its IDL client."""

from controller.store.embedded import SCHEMA_PATH, EmbeddedOvsdb
from controller.store.errors import (
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
    "NorthboundStore",
    "TxnHelper",
    "StoreError",
    "StoreUnavailable",
    "StoreTimeout",
    "EmbeddedDbError",
    "TransactionFailed",
    "ConstraintViolation",
    "ReferentialIntegrity",
    "RowNotFound",
]
