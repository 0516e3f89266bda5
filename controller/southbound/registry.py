"""The set of chassis sessions: from --chassis flags and from the store's Chassis rows.

Kept apart from the session itself so that adding or removing a chassis through
the API is just a row in the northbound store, like every other intent, and a
removed chassis takes its tunnels off every other chassis on the next compile.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Optional

from controller.compiler.qos import Shaping
from controller.compiler.tunnels import TunnelPort
from controller.intent import Intent
from controller.southbound.chassis import BridgeSettings, ChassisSession, ControllerLink
from controller.topology import ChassisState, Topology

LOG = logging.getLogger(__name__)


class ChassisRegistry:
    def __init__(self, static_remotes: list[str], settings: BridgeSettings,
                 topology: Topology, on_change: Callable[[], None]) -> None:
        self._static = list(dict.fromkeys(static_remotes))
        self._settings = settings
        self._topology = topology
        self._on_change = on_change
        self._sessions: dict[str, ChassisSession] = {}
        self._lock = threading.Lock()
        # several instances (controller/ownership.py): whether this instance may write
        # a chassis' OVSDB (its owner only), and every instance's OpenFlow target for
        # the integration bridges; alone, always, and this instance's own target
        self.may_write: Callable[[str], bool] = lambda remote: True
        self.targets: Callable[[], tuple[str, ...]] = lambda: (settings.controller_target,)
        self.drift_mode: Callable[[], Optional[str]] = lambda: "repair"

    def _state_changed(self, remote: str, state: ChassisState) -> None:
        # Under the lock, so a session being removed cannot put its chassis back
        # into the topology with a last update racing the removal.
        with self._lock:
            if remote not in self._sessions:
                return
            changed = self._topology.update_chassis(state)
        if changed:
            self._on_change()

    def sync(self, intent: Intent) -> None:
        """Open sessions for new chassis, close those no longer wanted."""
        wanted = list(self._static) + sorted(
            c.remote for c in intent.chassis.values() if c.remote not in self._static)
        with self._lock:
            for remote in wanted:
                if remote not in self._sessions:
                    LOG.info("chassis %s: opening session", remote)
                    session = ChassisSession(remote, self._settings,
                                             functools.partial(self._state_changed, remote),
                                             may_write=functools.partial(self._may, remote),
                                             targets=self._targets)
                    session.drift_mode = lambda: self.drift_mode()
                    self._sessions[remote] = session
                    session.start()
            gone = [r for r in self._sessions if r not in wanted]
            stopped = [self._sessions.pop(r) for r in gone]
            removed = False
            for session in stopped:
                name = session.state.name if session.state else session.remote
                removed |= self._topology.remove_chassis(name)
        for session in stopped:
            LOG.info("chassis %s: removed", session.remote)
            session.stop()
        if removed:
            self._on_change()

    def _may(self, remote: str) -> bool:
        return self.may_write(remote)

    def _targets(self) -> tuple[str, ...]:
        return self.targets()

    def remotes(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def remote_of(self, chassis_name: str) -> Optional[str]:
        """The remote of the session whose chassis is named `chassis_name`."""
        with self._lock:
            for remote, session in self._sessions.items():
                state = session.state
                if state is not None and state.name == chassis_name:
                    return remote
        return None

    def drift(self) -> list[dict[str, Any]]:
        """Per chassis, what was found changed in its OVSDB behind Loom's back."""
        with self._lock:
            sessions = dict(self._sessions)
        return [{"chassis": s.state.name if s.state is not None else None, "remote": r,
                 **s.drift.view()} for r, s in sorted(sessions.items())]

    def wake(self) -> None:
        """Look at every chassis' configuration again (its owner may have changed)."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.wake()

    def all_reported(self) -> bool:
        """Has every chassis been read at least once since this process started?

        Until then the topology is partial: compiling from it would delete the
        flows and tunnels towards chassis we simply have not read yet, which is
        exactly the restart disruption Loom promises not to cause.
        """
        with self._lock:
            return all(s.state is not None for s in self._sessions.values())

    @property
    def controller_target(self) -> str:
        """The OpenFlow target Loom writes into every integration bridge."""
        return self._settings.controller_target

    def controller_links(self) -> list[ControllerLink]:
        """Every chassis' integration bridge Controller rows, as ovs-vswitchd reports
        them: what the engine needs to tell "this switch cannot reach us" apart from
        "this switch has not been made yet"."""
        with self._lock:
            sessions = list(self._sessions.values())
        return [link for s in sessions for link in s.controller_links()]

    def set_tunnels(self, tunnels: Mapping[str, frozenset[TunnelPort]]) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            if session.state is not None and session.state.name in tunnels:
                session.set_tunnels(tunnels[session.state.name])

    def set_shaping(self, per_chassis: Mapping[str, dict[str, Shaping]]) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            if session.state is not None:
                session.set_shaping(per_chassis.get(session.state.name, {}))

    def stop(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.stop()
