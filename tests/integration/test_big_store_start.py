"""A controller with 10,000 ports in its store starts (issue 11).

It did not: the first load of the store took about 7 s and the launcher gave up
after 5 s ("northbound store ... unreachable"), three times out of three, so intent
that could not be loaded was as good as lost. The store is filled directly (one
transaction, as `bench.bench_rest_reads` does), not through 10,000 API calls, to keep
the suite fast; then the real controller process starts on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_rest_reads import fill
from controller.store import EmbeddedOvsdb, NorthboundStore
from topologies.controller_process import ControllerProcess

pytestmark = pytest.mark.integration

N_PORTS = 10_000


def test_the_controller_starts_with_ten_thousand_ports_stored(tmp_path: Path) -> None:
    state = tmp_path / "loom"
    db = EmbeddedOvsdb(state)
    db.start()
    try:
        store = NorthboundStore(db.remote).connect(30)
        try:
            ids = fill(store, N_PORTS)
        finally:
            store.close()
    finally:
        db.stop()
    ctl = ControllerProcess(state, chassis=[])
    try:
        # No bound on the load itself: the launcher waits as long as the first copy
        # takes; this only keeps a hung start from hanging the suite.
        ctl.start(timeout=600)
        health = ctl.api.get("/v1/health")
        assert health.status == 200, health.body
        page = ctl.api.get("/v2.0/ports?limit=3")
        assert page.status == 200 and len(page.body["ports"]) == 3, page.body
        one = ctl.api.get(f"/v2.0/ports/{ids[-1]}")
        assert one.status == 200 and one.body["port"]["name"] == f"port{N_PORTS - 1}"
        count = ctl.api.get("/v2.0/ports?fields=id")
        assert count.status == 200 and len(count.body["ports"]) == N_PORTS
    finally:
        ctl.stop()
