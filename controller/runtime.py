"""What the REST layer may ask of the running controller, beyond the stored intent.

The REST app depends on this protocol, not on the engine, so the API can be served
(and unit-tested) with no switch connected: `Detached` is the runtime of a
controller that has no southbound at all, which is a real state (every port DOWN,
nothing to wait for), not a mock.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from controller.topoview import model as topoview_model


class Runtime(Protocol):
    def port_status(self, port_id: str) -> str:
        """'ACTIVE' once the port is bound and its flows are installed, else 'DOWN'."""

    def port_binding(self, port_id: str) -> Optional[dict[str, Any]]:
        """Where the port is bound: {'chassis', 'bridge', 'ofport', 'datapath_id'} or None."""

    def wait_installed(self, generation: int, timeout: float) -> bool:
        """Block until every affected switch has installed `generation`; False on timeout."""

    def health(self) -> dict[str, Any]:
        """Store, switches and chassis connection state for GET /v1/health."""

    def switches(self) -> list[dict[str, Any]]:
        """Connected switches for GET /v1/switches."""

    def installed_flows(self, datapath_id: int) -> Optional[list[dict[str, Any]]]:
        """Flows the reconciler believes installed on one switch, owners resolved."""

    def chassis(self) -> list[dict[str, Any]]:
        """Known chassis and their state for GET /v1/chassis."""

    def plan(self, after: Any) -> dict[str, Any]:
        """What the switches would get if the intent became `after` (?dry_run=true)."""

    def verify(self) -> dict[str, Any]:
        """GET /v1/verify: per switch and chassis, in sync or the drift found."""

    def topology_document(self) -> dict[str, Any]:
        """Switches, chassis, ports and the links between them for GET /v1/topology.

        The document of `controller.topoview.model.build` (shape in docs/ARCHITECTURE.md).
        """


class Detached:
    """The runtime of a controller with no southbound: nothing bound, nothing to wait for."""

    def port_status(self, port_id: str) -> str:
        return "DOWN"

    def port_binding(self, port_id: str) -> Optional[dict[str, Any]]:
        return None

    def wait_installed(self, generation: int, timeout: float) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        return {"switches": [], "chassis": []}

    def switches(self) -> list[dict[str, Any]]:
        return []

    def installed_flows(self, datapath_id: int) -> Optional[list[dict[str, Any]]]:
        return None

    def chassis(self) -> list[dict[str, Any]]:
        return []

    def plan(self, after: Any) -> dict[str, Any]:
        return {"switches": [], "chassis": [], "compiled_in_full": False}

    def verify(self) -> dict[str, Any]:
        return {"mode": "off", "switches": [], "chassis": []}

    def topology_document(self) -> dict[str, Any]:
        return topoview_model.empty()
