"""Fixtures shared by the unit tests that need a real northbound database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import Env, start_env

from controller.store import EmbeddedOvsdb


@pytest.fixture
def db(tmp_path: Path) -> Iterator[EmbeddedOvsdb]:
    """A private ovsdb-server with Loom's schema, in the test's temp dir."""
    server = EmbeddedOvsdb(tmp_path / "state").start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The API on a private store, no tokens (every caller is admin)."""
    e = start_env(tmp_path / "state")
    yield e
    e.close()


@pytest.fixture
def tenv(tmp_path: Path) -> Iterator[Env]:
    """With tokens: ADMIN (project ops), ALICE and BOB (members)."""
    e = start_env(tmp_path / "state", tokens=True)
    yield e
    e.close()
