"""Fixtures shared by the unit tests that need a real northbound database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.store import EmbeddedOvsdb


@pytest.fixture
def db(tmp_path: Path) -> Iterator[EmbeddedOvsdb]:
    """A private ovsdb-server with Loom's schema, in the test's temp dir."""
    server = EmbeddedOvsdb(tmp_path / "state").start()
    yield server
    server.stop()
