"""/v1: what Neutron has no word for (health, pipeline, switches, installed flows, topology).

Chassis (stored and live) are served by controller.rest.chassis.

These read the controller's running state through the `Runtime` protocol, so they
answer the same with or without a southbound (Detached: empty lists).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from controller import pipeline as pl
from controller.rest.errors import NotFound
from controller.runtime import Runtime
from controller.topoview import render


class HealthSource(Protocol):
    @property
    def connected(self) -> bool: ...

    def health(self) -> dict[str, Any]: ...


def health(store: HealthSource, runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """For admins: store state merged with the runtime's; 200 while the store is connected."""
    body: dict[str, Any] = {"status": _status(store), "switches": [], "chassis": []}
    body.update(runtime.health())
    body["store"] = {**store.health(), "connected": store.connected}
    return (200 if store.connected else 503), body


def health_summary(store: HealthSource) -> tuple[int, dict[str, Any]]:
    """For members: whether the API can take writes, and nothing about the fleet.

    The full document names every project's bound ports, chassis addresses and
    switch ids; a tenant needs only to know whether to retry.
    """
    body = {"status": _status(store), "store": {"connected": store.connected}}
    return (200 if store.connected else 503), body


def _status(store: HealthSource) -> str:
    return "ok" if store.connected else "unavailable"


def switches(runtime: Runtime) -> dict[str, Any]:
    return {"switches": runtime.switches()}


def pipeline() -> dict[str, Any]:
    """The OpenFlow pipeline as declared in controller.pipeline: one entry per table."""
    return {
        "tables": [
            {
                "name": t.name,
                "table_id": t.table_id,
                "purpose": t.purpose,
                "next_tables": list(t.next_tables),
                "miss": t.miss,
                "priorities": dict(t.priorities),
            }
            for t in pl.describe()
        ]
    }


def parse_dpid(text: str) -> int:
    """`0x1a`, 16 hex digits (`000000000000001a`, as ovs-ofctl prints) or decimal."""
    try:
        if text.lower().startswith("0x"):
            return int(text, 16)
        if len(text) == 16:
            return int(text, 16)
        return int(text, 10)
    except ValueError:
        raise NotFound(f"Switch {text} could not be found.", type="SwitchNotFound") from None


def flows(runtime: Runtime, dpid_text: str) -> dict[str, Any]:
    dpid = parse_dpid(dpid_text)
    installed = runtime.installed_flows(dpid)
    if installed is None:
        raise NotFound(f"Switch {dpid_text} could not be found.", type="SwitchNotFound")
    return {"datapath_id": f"{dpid:016x}", "flows": installed}


def topology(runtime: Runtime) -> dict[str, Any]:
    """GET /v1/topology: nodes, links and the (topology, intent) versions they come from."""
    return runtime.topology_document()


def topology_svg(runtime: Runtime) -> str:
    """GET /v1/topology.svg: the same document, drawn."""
    return render.svg(runtime.topology_document())


DEFAULT_REFRESH_SECONDS = 5


def topology_page(runtime: Runtime, refresh: Optional[str]) -> str:
    """GET /topology: an HTML page around the SVG that refreshes itself (`?refresh=` s, 0: off)."""
    try:
        seconds = int(refresh) if refresh else DEFAULT_REFRESH_SECONDS
    except ValueError:
        seconds = DEFAULT_REFRESH_SECONDS
    return render.html_page(runtime.topology_document(), min(max(seconds, 0), 3600))
