"""A connection to the northbound server lost and back between two looks of the store
thread (python-ovs reconnects inside one run(): a killed server restarted by Loom in
milliseconds) is an outage too: health records it, not only counts it. Found by
tests/integration/test_store_recovery.py failing in CI on `last_outage` being null."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import ovs.util

from controller.store.northbound import NorthboundStore


def _idl(connected: bool) -> Any:
    return SimpleNamespace(_session=SimpleNamespace(is_connected=lambda: connected))


def test_a_loss_unseen_between_two_looks_is_recorded_as_an_outage() -> None:
    store = NorthboundStore("unix:/nonexistent/db.sock")
    link = SimpleNamespace(losses=0, events=0, error=None, lost=False, at=None)
    store._link = link  # type: ignore[assignment]
    store._track_link(_idl(True), whole=True)  # first load: connected, nothing lost
    assert store.health()["connected"] and store.health()["last_outage"] is None
    # lost and back before the store thread looked again
    link.losses, link.events, link.error, link.lost, link.at = 1, 1, ovs.util.EOF, True, \
        time.time()
    store._track_link(_idl(True), whole=True)
    health = store.health()
    assert health["connected"] and health["connection_losses"] == 1
    outage = health["last_outage"]
    assert outage is not None and outage["reason"] and outage["from"] and outage["to"]
    assert "closed" in outage["reason"] or "lost" in outage["reason"]
    # and only once
    store._track_link(_idl(True), whole=True)
    assert store.health()["last_outage"] == outage
