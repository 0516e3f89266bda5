"""Builds immutable `Intent` snapshots from the IDL replica, incrementally.

Only rows the IDL reported as changed are decoded again; unchanged tables keep the
same (read-only) mapping object from the previous snapshot. That keeps a write on
a store with thousands of ports cheap, and it lets consumers skip work for tables
whose mapping is the identical object. Runs only in the store thread.

A changed table's new mapping is the previous one with the touched keys updated or
removed, made in proportion to the change (store/layered.py: no copy of the table,
no sort, no Python pass over it), in the order a dict copy would have. So a
mapping is in key order after a full load, then in insertion order (a new object
goes to the end, in key order within one build): nothing may rely on iteration
order. Each incremental build records its `IntentDelta` (`last_delta`);
a full build (first load, after `invalidate`) records None.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import ovs.db.data

from controller import intent as model
from controller.frozen import copy_of
from controller.intent_delta import IntentDelta, make_delta
from controller.store.codec import ALLOCATION_TABLE, BY_TABLE, CODECS, TableCodec
from controller.store.layered import Layered


def _keep_uuid(atom: Any, base: Any) -> Any:
    return atom


def row_values(row: Any, columns: Iterable[str]) -> dict[str, Any]:
    """Committed column values of an IDL row, references left as uuid.UUID.

    Reads `row._data` (the committed datums) rather than attributes: attribute access
    would turn references into Row objects and see uncommitted changes. Values are
    `Datum.to_python`'s; a scalar's is read directly, and a column the row does not
    hold (at its default: python-ovs makes a default datum for every such read) gives
    the column's default value, worked out once per table and column.
    """
    data = row._data
    out: dict[str, Any] = {}
    defaults: Optional[dict[str, Any]] = None
    for c in columns:
        datum = data.get(c)  # (dict.get: no default datum made)
        if datum is None:
            if defaults is None:
                defaults = _defaults(row._table)
            value = defaults.get(c, defaults)
            if value is defaults:
                value = defaults[c] = ovs.db.data.Datum.default(
                    row._table.columns[c].type).to_python(_keep_uuid)
            out[c] = value.copy() if isinstance(value, (list, dict)) else value
            continue
        t = datum.type
        if t.n_min == 1 and t.n_max == 1 and t.value is None:  # Type.is_scalar()
            values = datum.values
            out[c] = next(iter(values)).value if len(values) == 1 else t.key.default()
        else:
            out[c] = datum.to_python(_keep_uuid)
    return out


def _defaults(table: Any) -> dict[str, Any]:
    """Column -> default value, kept on the IDL's table (and gone with it)."""
    attrs = table.__dict__
    found = attrs.get("_loom_defaults")
    if found is None:
        found = attrs["_loom_defaults"] = {}
    return found


class Allocation:
    __slots__ = ("port", "subnet", "ip", "position")

    def __init__(self, port: uuidlib.UUID, subnet: uuidlib.UUID, ip: str, position: int) -> None:
        self.port, self.subnet, self.ip, self.position = port, subnet, ip, position


class SnapshotBuilder:
    """Keeps decoded objects per table and rebuilds only what changed."""

    def __init__(self, idl: Any) -> None:
        self._idl = idl
        self._codecs = [c for c in CODECS if c.table in idl.tables]  # tolerate a cut-down schema
        self._objects: dict[str, dict[uuidlib.UUID, Any]] = {c.table: {} for c in self._codecs}
        self._views: dict[str, Mapping[str, Any]] = {
            c.intent_attr: Layered() for c in CODECS
        }
        self._dirty: dict[str, set[uuidlib.UUID]] = {c.table: set() for c in self._codecs}
        self._dirty[ALLOCATION_TABLE] = set()
        self.allocations: dict[uuidlib.UUID, Allocation] = {}
        self.allocations_by_port: dict[uuidlib.UUID, dict[uuidlib.UUID, Allocation]] = {}
        # gateway port -> the routers naming it (a router's external_fixed_ips are its
        # gateway port's addresses), and each router's gateway port, to keep that current
        self._gateway_routers: dict[uuidlib.UUID, set[uuidlib.UUID]] = {}
        self._router_gateway: dict[uuidlib.UUID, uuidlib.UUID] = {}
        self._full = True
        self.last_delta: Optional[IntentDelta] = None  # of the last snapshot built

    def note(self, table: str, row_uuid: uuidlib.UUID) -> None:
        """Called for every row the IDL created, updated or deleted."""
        dirty = self._dirty.get(table)
        if dirty is not None:
            dirty.add(row_uuid)

    def invalidate(self) -> None:
        """Forget everything: the next build decodes every row (used after a reconnect)."""
        self._full = True

    @property
    def pending(self) -> bool:
        return self._full or any(self._dirty.values())

    def build(self, generation: int, previous: model.Intent) -> Optional[model.Intent]:
        """A new snapshot if anything changed since the last build, else None.

        Sets `last_delta` to the new snapshot's delta to `previous` (None after a
        full build). An incremental build in which no object actually changed (a
        re-decode giving an equal object) publishes nothing."""
        if not self.pending:
            return None
        tables = self._idl.tables
        full = self._full
        if full:
            for name, dirty in self._dirty.items():
                dirty.clear()
                dirty.update(tables[name].rows.keys())
                if name in self._objects:
                    dirty.update(self._objects[name].keys())
            self.allocations.clear()
            self.allocations_by_port.clear()
            self._full = False
        self._apply_allocations(tables[ALLOCATION_TABLE].rows)
        touched: dict[str, frozenset[str]] = {}
        old_ports = self._views["ports"]
        for codec in self._codecs:
            dirty = self._dirty[codec.table]
            if not dirty:
                continue
            if full:
                self._rebuild(codec, dirty, tables[codec.table].rows)
                objs = self._objects[codec.table]
                view = Layered(dict(sorted((codec.key(o), o) for o in objs.values())))
                self._views[codec.intent_attr] = view
                touched[codec.intent_attr] = frozenset(view)
            else:
                keys = self._update(codec, dirty, tables[codec.table].rows)
                if keys:
                    touched[codec.intent_attr] = keys
            dirty.clear()
        if not touched:
            return None
        snap = model.Intent(generation=generation, **self._views)
        if full:
            self.last_delta = None
        else:
            self.last_delta = make_delta(touched)
            if previous.ports is old_ports:  # the snapshot this one is built on
                snap.carry_ports_by_network(previous, touched.get("ports", frozenset()))
        return snap

    def _update(
        self, codec: TableCodec, dirty: set[uuidlib.UUID], rows: Mapping[uuidlib.UUID, Any]
    ) -> frozenset[str]:
        """Decode the dirty rows and apply them to a copy of the table's mapping: the
        keys whose object was added, changed or removed (equal re-decodes do not count)."""
        objs = self._objects[codec.table]
        before = {u: objs.get(u) for u in dirty}
        self._rebuild(codec, dirty, rows)
        removed: set[str] = set()
        put: dict[str, Any] = {}
        for row_uuid, old in before.items():
            new = objs.get(row_uuid)
            if new is not None and old is not None and new == old:
                objs[row_uuid] = old  # keep the published object: consumers compare by identity
                continue
            if old is not None:
                removed.add(codec.key(old))
            if new is not None:
                put[codec.key(new)] = new
        if not removed and not put:
            return frozenset()
        attr = codec.intent_attr
        view = self._views[attr]
        if not isinstance(view, Layered):
            view = Layered(copy_of(view))
        # an existing key keeps its place, a new one is appended (in key order)
        self._views[attr] = view.updated(
            [key for key in removed if key not in put], [(key, put[key]) for key in sorted(put)]
        )
        return frozenset(removed | put.keys())

    def _apply_allocations(self, rows: Mapping[uuidlib.UUID, Any]) -> None:
        dirty = self._dirty[ALLOCATION_TABLE]
        if not dirty:
            return
        touched_ports: set[uuidlib.UUID] = set()
        for alloc_uuid in dirty:
            old = self.allocations.pop(alloc_uuid, None)
            if old is not None:
                touched_ports.add(old.port)
                self.allocations_by_port.get(old.port, {}).pop(alloc_uuid, None)
            row = rows.get(alloc_uuid)
            if row is None:
                continue
            v = row_values(row, ("port", "subnet", "ip_address", "position"))
            new = Allocation(v["port"], v["subnet"], v["ip_address"], v["position"])
            self.allocations[alloc_uuid] = new
            self.allocations_by_port.setdefault(new.port, {})[alloc_uuid] = new
            touched_ports.add(new.port)
        dirty.clear()
        self._dirty.get("Port", set()).update(touched_ports)
        # A router's external_fixed_ips are its gateway port's: the routers of the
        # touched ports are decoded again (not every router, on every port's write).
        routers = self._dirty.get("Router")
        if routers is not None:
            for port_uuid in touched_ports:
                routers.update(self._gateway_routers.get(port_uuid, ()))

    def fixed_ips(self, port_uuid: uuidlib.UUID) -> tuple[model.FixedIP, ...]:
        allocs = sorted(
            self.allocations_by_port.get(port_uuid, {}).values(), key=lambda a: (a.position, a.ip)
        )
        return tuple(model.FixedIP(str(a.subnet), a.ip) for a in allocs)

    def _rebuild(
        self, codec: TableCodec, dirty: set[uuidlib.UUID], rows: Mapping[uuidlib.UUID, Any]
    ) -> None:
        objs = self._objects[codec.table]
        columns = [f.column for f in codec.fields]
        for row_uuid in dirty:
            row = rows.get(row_uuid)
            if row is None or row._data is None:
                objs.pop(row_uuid, None)
                if codec.table == "Router":
                    self._note_gateway(row_uuid, None)
                continue
            extra: Optional[dict[str, Any]] = None
            if codec.table == "Port":
                extra = {"fixed_ips": self.fixed_ips(row_uuid)}
            elif codec.table == "Router":
                gw = row_values(row, ("gateway_port",))["gateway_port"]
                self._note_gateway(row_uuid, gw[0] if gw else None)
                extra = {"external_fixed_ips": self.fixed_ips(gw[0]) if gw else ()}
            objs[row_uuid] = codec.decode(row_uuid, row_values(row, columns), extra)


    def _note_gateway(self, router: uuidlib.UUID, port: Optional[uuidlib.UUID]) -> None:
        """Router `router` now names gateway port `port` (None: none, or gone)."""
        before = self._router_gateway.pop(router, None)
        if before is not None:
            named = self._gateway_routers.get(before)
            if named is not None:
                named.discard(router)
                if not named:
                    del self._gateway_routers[before]
        if port is not None:
            self._router_gateway[router] = port
            self._gateway_routers.setdefault(port, set()).add(router)


__all__ = ["SnapshotBuilder", "Allocation", "row_values", "BY_TABLE"]
