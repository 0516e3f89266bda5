"""The controller instances' own rows in the northbound database, as one frozen view.

Several `python -m controller` processes share one northbound (issue 14). What they
need to know of each other lives in two tables beside the intent, never part of it
(writing them moves no generation): `Controller_Instance` (one row per instance: its
OpenFlow target, its REST URL, a heartbeat counter it bumps every second) and
`Switch_Owner` (one row per switch or chassis: the instance that is its master and
the generation of that grant, which becomes the OpenFlow role request's
`generation_id`, and the intent generation that owner has installed on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

INSTANCE_TABLE = "Controller_Instance"
OWNER_TABLE = "Switch_Owner"
CLUSTER_TABLES = frozenset({INSTANCE_TABLE, OWNER_TABLE})

@dataclass(frozen=True)
class InstanceRow:
    name: str
    of_target: str
    rest_url: str
    heartbeat: int
    started_at: str


@dataclass(frozen=True)
class OwnerRow:
    switch: str  # "chassis:<remote>" or "fabric" (controller/ownership.py)
    owner: str  # an instance name; "" when released
    generation: int  # bumped by every grant: the OpenFlow role generation_id
    installed: int  # the intent generation the owner has installed on it


@dataclass(frozen=True)
class ClusterView:
    instances: Mapping[str, InstanceRow] = field(default_factory=dict)
    owners: Mapping[str, OwnerRow] = field(default_factory=dict)

    @staticmethod
    def read(idl: Any) -> ClusterView:
        """From a python-ovs IDL holding both tables (run on the store thread)."""
        instances = {}
        for row in idl.tables[INSTANCE_TABLE].rows.values():
            instances[row.name] = InstanceRow(row.name, row.of_target, row.rest_url,
                                              int(row.heartbeat), row.started_at)
        owners = {}
        for row in idl.tables[OWNER_TABLE].rows.values():
            owners[row.switch] = OwnerRow(row.switch, row.owner, int(row.generation),
                                          int(row.installed))
        return ClusterView(MappingProxyType(instances), MappingProxyType(owners))


def find_row(idl: Any, table: str, column: str, value: str) -> Any:
    """The row of `table` whose `column` is `value` (these tables hold a few rows)."""
    for row in idl.tables[table].rows.values():
        if getattr(row, column) == value:
            return row
    return None
