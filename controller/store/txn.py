"""The write side of the store: put and delete intent objects inside one transaction.

The REST layer never sees IDL rows. It hands whole intent objects to `put`, which
inserts the row under the object's Neutron id (persist_uuid) or rewrites only the
columns that differ; Port.fixed_ips become IP_Allocation rows, whose
[subnet, ip_address] index makes a double allocation impossible at commit time.
`current()` is the intent as this transaction would leave it, so bulk requests
validate each item against the ones before it.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Optional, TypeVar

import ovs.db.data
import ovs.db.error
import ovs.db.idl

from controller import intent as model
from controller.frozen import copy_of
from controller.intent_delta import link, make_delta
from controller.store.allocations import Allocator
from controller.store.codec import ALLOCATION_TABLE, BY_CLASS, TableCodec
from controller.store.errors import RowNotFound
from controller.store.layered import ChangedView
from controller.store.snapshot import Allocation, SnapshotBuilder

T = TypeVar("T")


class TxnHelper:
    """Collects writes for one transaction; used only inside `NorthboundStore.transact`."""

    def __init__(self, idl: Any, txn: Any, base: model.Intent, builder: SnapshotBuilder) -> None:
        self._idl = idl
        self._txn = txn
        self.intent = base
        self._builder = builder
        self._overlay: dict[str, dict[str, Any]] = {}
        self._current: Optional[model.Intent] = base
        self._allocs: dict[uuidlib.UUID, dict[uuidlib.UUID, Allocation]] = {}
        # (table, row uuid) -> whether the row exists once this transaction commits
        self.expected: dict[tuple[str, uuidlib.UUID], bool] = {}
        self._allocator = Allocator(self.current, base)

    # -- reading --------------------------------------------------------------
    def current(self) -> model.Intent:
        """The snapshot as it will be once this transaction commits (generation unchanged)."""
        if self._current is None:
            fields: dict[str, Any] = {
                attr: Overlay(getattr(self.intent, attr), changes)
                for attr, changes in self._overlay.items()
            }
            current = dataclasses.replace(self.intent, **fields)
            # what this view changed from its base, so per-snapshot indexes of the
            # base (REST, ports_on_network) are carried over instead of rebuilt
            delta = make_delta({attr: changes.keys() for attr, changes in self._overlay.items()})
            link(current, self.intent, delta)
            if "_ports_by_network" in self.intent.__dict__:
                current.carry_ports_by_network(self.intent, delta.ids("ports"))
            self._current = current
        return self._current

    def get(self, cls: type[T], key: str) -> Optional[T]:
        codec = BY_CLASS[cls]
        return getattr(self.current(), codec.intent_attr).get(key)  # type: ignore[no-any-return]

    # -- writing --------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        """A fresh object id (UUID4), which becomes the row's `_uuid`."""
        return str(uuidlib.uuid4())

    def put(self, obj: Any) -> None:
        """Insert `obj`, or update its row to match it (only differing columns are written).

        Data-plane allocations (a network's conntrack zone, ...: store/allocations.py)
        that `obj` leaves at 0 are kept from the row, or made now for a new row.
        """
        codec = BY_CLASS[type(obj)]
        table = self._idl.tables[codec.table]
        row_uuid = self._row_uuid(codec, obj, table) or uuidlib.uuid4()
        row = table.rows.get(row_uuid)
        obj = self._allocator.fill(obj, None if row is None else _stored(row))
        if row is None:
            row = self._txn.insert(table, new_uuid=row_uuid, persist_uuid=True)
            self.expected[(codec.table, row_uuid)] = True
        for column, value in codec.encode(obj).items():
            self._assign(row, table, column, value)
        if isinstance(obj, model.Port):
            self._sync_allocations(row_uuid, obj.fixed_ips)
        self._remember(codec, obj)

    def delete(self, cls: type, key: str) -> None:
        """Delete the row of `cls` keyed `key`; a Port takes its IP allocations with it."""
        codec = BY_CLASS[cls]
        table = self._idl.tables[codec.table]
        row_uuid = self._row_uuid(codec, None, table, key=key)
        row = table.rows.get(row_uuid) if row_uuid is not None else None
        if row is None or row_uuid is None:
            raise RowNotFound(codec.table, key)
        if cls is model.Port:
            self._sync_allocations(row_uuid, ())
        row.delete()
        self.expected[(codec.table, row_uuid)] = False
        self._overlay.setdefault(codec.intent_attr, {})[key] = None
        self._current = None

    # -- internals ------------------------------------------------------------
    def _row_uuid(
        self, codec: TableCodec, obj: Any, table: Any, key: Optional[str] = None
    ) -> Optional[uuidlib.UUID]:
        key = key if key is not None else codec.key(obj)
        if codec.key_attr == "id":
            return uuidlib.UUID(key)
        for row_uuid, row in table.rows.items():  # Chassis: keyed by name, a handful of rows
            if row._changes is not None and getattr(row, codec.key_attr) == key:
                return row_uuid  # type: ignore[no-any-return]
        return None

    def _remember(self, codec: TableCodec, obj: Any) -> None:
        self._overlay.setdefault(codec.intent_attr, {})[codec.key(obj)] = obj
        self._current = None

    @staticmethod
    def _assign(row: Any, table: Any, column: str, value: Any) -> None:
        col = table.columns[column]
        try:
            datum = ovs.db.data.Datum.from_python(col.type, value, ovs.db.idl._row_to_uuid)
        except ovs.db.error.Error as exc:  # python-ovs would only log and drop the write
            raise ValueError(f"bad value for {table.name}.{column}: {value!r} ({exc})") from exc
        if (
            row._data is not None
            and row._changes.get(column) is None
            and row._data.get(column) == datum
        ):
            return
        setattr(row, column, value)

    def _sync_allocations(
        self, port_uuid: uuidlib.UUID, fixed_ips: tuple[model.FixedIP, ...]
    ) -> None:
        table = self._idl.tables[ALLOCATION_TABLE]
        existing = self._allocs.get(port_uuid)
        if existing is None:
            existing = dict(self._builder.allocations_by_port.get(port_uuid, {}))
        wanted = {(uuidlib.UUID(f.subnet_id), f.ip_address): pos for pos, f in enumerate(fixed_ips)}
        kept: dict[uuidlib.UUID, Allocation] = {}
        for alloc_uuid, alloc in existing.items():
            pos = wanted.pop((alloc.subnet, alloc.ip), None)
            row = table.rows.get(alloc_uuid)
            if pos is None:
                if row is not None:
                    row.delete()
                continue
            if row is not None and pos != alloc.position:
                row.position = pos
            kept[alloc_uuid] = Allocation(port_uuid, alloc.subnet, alloc.ip, pos)
        for (subnet, ip), pos in wanted.items():
            row = self._txn.insert(table)
            row.subnet = subnet
            row.ip_address = ip
            row.port = port_uuid
            row.position = pos
            kept[row.uuid] = Allocation(port_uuid, subnet, ip, pos)
        self._allocs[port_uuid] = kept


class Overlay(ChangedView):
    """A transaction's view of a table it wrote (`TxnHelper.current`): `base` with the
    transaction's `changes` (key -> object, None: removed). Making it costs a copy of
    the changes only, where a merged copy of the table cost a pass over all of it per
    write (issue 11: 10,000 ports); the merged dict is made on the first use that
    needs every entry (iteration, copy)."""

    __slots__ = ("_base", "_changes", "_merged")

    def __init__(self, base: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        self._base = base
        self._changes = dict(changes)
        self._merged: Optional[MappingProxyType[str, Any]] = None

    def _all(self) -> MappingProxyType[str, Any]:
        merged = self._merged
        if merged is None:
            out = copy_of(self._base)
            for key, obj in self._changes.items():
                if obj is None:
                    out.pop(key, None)
                else:
                    out[key] = obj
            merged = self._merged = MappingProxyType(out)
        return merged

    def __len__(self) -> int:
        if self._merged is not None:
            return len(self._merged)
        base = self._base
        size = len(base)
        for key, obj in self._changes.items():  # O(changes): no merged dict made
            if (obj is None) == (key in base):
                size += -1 if obj is None else 1
        return size


def _stored(row: Any) -> Any:
    """Reads an allocation column of an existing row (0 if the row has none yet)."""

    def read(column: str) -> int:
        try:
            return int(getattr(row, column) or 0)
        except (AttributeError, TypeError, ValueError):
            return 0

    return read
