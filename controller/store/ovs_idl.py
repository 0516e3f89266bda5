"""Applying an OVSDB server's rows to a python-ovs IDL with less work, to the same effect.

python-ovs 3.1.2 `Idl.__row_update` turns every column of every row update into a
datum with `Datum.from_json` (several calls per column, checking type and
constraints), then compares it with the row's current datum; for a column the row
does not hold yet, that is a default datum made anew for every row and column
(`ColumnDefaultDict.__missing__`). At 10,000 ports that was about a second of the
northbound store's first load, and the same again, per 2,000 interfaces, of a
chassis' first read (issue 11).

`FastRowUpdate`, mixed into an `ovs.db.idl.Idl` subclass, replaces that private
method (by its mangled name, `_Idl__row_update`) and `__add_default`, which goes
through every column of the table for every row inserted: a column holding one string,
integer or boolean (no enum) given a value of its type within its bounds gets its
datum directly, anything else goes through `Datum.from_json` as before; the default
compared with is made once per column. The datums stored, the `changed` answer and
the warnings are python-ovs'. Note that python-ovs' default datum of a one-value
column does not equal any value parsed from the server (its atom's value is itself
an atom), so such a column is always stored: this keeps that too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import ovs.db.data
import ovs.db.error
import ovs.db.types

log = logging.getLogger(__name__)

_PYTHON = {ovs.db.types.StringType: str, ovs.db.types.IntegerType: int,
           ovs.db.types.BooleanType: bool}


class _Column:
    """What `__row_update` needs to know about a column, worked out once."""

    __slots__ = ("column", "type", "default", "scalar", "python", "unbounded", "_base")

    def __init__(self, column: Any) -> None:
        self.column = column  # the IdlColumn: `alert` is read from it each time
        self.type = t = column.type
        self.default = ovs.db.data.Datum.default(t)  # compared with, never stored
        base = t.key
        python = _PYTHON.get(base.type)
        plain = (python is not None and not t.is_map() and t.n_min == 1 and t.n_max == 1
                 and base.enum is None)
        self.scalar = base.type if plain else None  # the atom type of a plain scalar
        self.python: Any = python if plain else ()  # (isinstance(x, ()) is False)
        # any value of the type will do: no length or range to check
        self.unbounded = plain and base.min is None and base.max is None and (
            python is not str or (base.min_length == 0 and base.max_length == sys.maxsize))
        self._base = base

    def fits(self, value: Any) -> bool:
        """`value` is what `Atom.from_json` accepts for this column, constraints met
        (python-ovs takes a bool for an integer: so does this)."""
        if self.scalar is None or not isinstance(value, self.python):
            return False
        base = self._base
        if self.python is str:
            return bool(base.min_length <= len(value) <= base.max_length)
        if self.python is int:
            return (base.min is None or value >= base.min) and (
                base.max is None or value <= base.max)
        return True


class FastRowUpdate:
    """Mixin for an `ovs.db.idl.Idl` subclass (listed before it)."""

    def _Idl__add_default(self, table: Any, row_update: dict[str, Any]) -> None:
        """python-ovs' `__add_default` (an "insert" or "initial" row update leaves
        out the columns at their default; it writes them in, for `__row_update`),
        with the columns that applies to listed once per table, not found again by
        going through every column for every row."""
        known: dict[str, list[tuple[str, Any]]] = self.__dict__.setdefault(
            "_loom_defaults", {})
        defaults = known.get(table.name)
        if defaults is None:
            readonly = getattr(self, "readonly", {})
            defaults = known[table.name] = [
                (column.name, self._Idl__column_name(column))  # type: ignore[attr-defined]
                for column in table.columns.values()
                if (table.name not in readonly or column.name not in readonly[table.name])
                and column.type.n_min != 0 and not column.type.is_map()]
        for name, value in defaults:
            if name not in row_update:
                row_update[name] = list(value) if isinstance(value, list) else value

    def _Idl__row_update(self, table: Any, row: Any, row_json: dict[str, Any]) -> bool:
        changed = False
        data = row._data
        known: dict[str, dict[str, _Column]] = self.__dict__.setdefault("_loom_columns", {})
        columns = known.get(table.name)
        if columns is None:
            columns = known[table.name] = {
                name: _Column(column) for name, column in table.columns.items()}
        for column_name, datum_json in row_json.items():
            c = columns.get(column_name)
            if c is None:
                log.warning("unknown column %s updating table %s", column_name, table.name)
                continue
            if (c.unbounded and isinstance(datum_json, c.python)) or c.fits(datum_json):
                datum = ovs.db.data.Datum(c.type, {ovs.db.data.Atom(c.scalar, datum_json): None})
                current = data.get(column_name)
                # (a plain scalar never equals python-ovs' default datum: see above)
                if current is None or datum != current:
                    data[column_name] = datum
                    if c.column.alert:
                        changed = True
                continue
            try:
                datum = ovs.db.data.Datum.from_json(c.type, datum_json)
            except ovs.db.error.Error as e:
                log.warning("error parsing column %s in table %s: %s",
                            column_name, table.name, e)
                continue
            current = data.get(column_name)  # (dict.get: no default datum made)
            if datum != (c.default if current is None else current):
                data[column_name] = datum
                if c.column.alert:
                    changed = True
        return changed
