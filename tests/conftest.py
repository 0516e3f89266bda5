"""Shared fixtures: a per-test sandbox, private OVS instances in their own namespaces,
and guests plugged into them. Teardown runs even when a test fails; a failed test
keeps its OVS workdirs (logs, db) under /tmp/loom-sandbox and prints where they are.

Integration tests (everything under tests/integration, marker `integration`) need
root. Without it they are skipped with a reason, except under CI (CI=true), where
they fail loudly: a CI run that silently skips its integration tests proves nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from topologies import netns as nsutil
from topologies.guest import Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_DIR = ROOT / "tests" / "integration"
REQUIRED_TOOLS = (
    "ip",
    "ethtool",
    "ovsdb-server",
    "ovs-vswitchd",
    "ovs-vsctl",
    "ovs-ofctl",
    "ovs-appctl",
    "ovsdb-tool",
    "nc",
    "ping",
    "ss",
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _integration_blocker() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, veths, OVS): run `sudo make test`"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"integration tests need {', '.join(missing)}: run `sudo make deps`"
    if not Path("/usr/share/openvswitch/vswitch.ovsschema").exists():
        return "integration tests need vswitch.ovsschema: run `sudo make deps` (openvswitch-common)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is None:
        return
    reason = _integration_blocker()
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(
        getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture(scope="session", autouse=True)
def _sweep_dead_sandboxes() -> None:
    """Remove leftovers of earlier runs that died before their teardown (only theirs)."""
    if os.geteuid() == 0:
        nsutil.sweep_stale()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A Sandbox (unique name prefix); everything it recorded is removed afterwards."""
    box = Sandbox()
    try:
        yield box
    finally:
        problems = box.cleanup()
        assert not problems, f"sandbox {box.prefix} cleanup: {problems}"


OvsFactory = Callable[..., OvsInstance]
GuestFactory = Callable[..., Guest]


@pytest.fixture
def ovs_factory(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[OvsFactory]:
    """make(name='hv1', netns=True) -> a started OvsInstance in its own namespace."""
    made: list[OvsInstance] = []

    def make(name: str = "hv1", netns: bool = True) -> OvsInstance:
        ns = sandbox.add_netns(name) if netns else None
        workdir = DEFAULT_BASE / f"{sandbox.prefix}-{name}"
        shutil.rmtree(workdir, ignore_errors=True)
        inst = OvsInstance(name, netns=ns, workdir=workdir, sandbox=sandbox)
        made.append(inst)
        inst.start()
        return inst

    try:
        yield make
    finally:
        failed = _failed(request)
        for inst in reversed(made):
            if failed:
                sys.stderr.write(f"\n[loom] {inst!r} logs kept in {inst.logdir}\n")
                sys.stderr.write(inst.log_tail(30) + "\n")
            inst.close(remove_workdir=not failed)


@pytest.fixture
def ovs(ovs_factory: OvsFactory) -> OvsInstance:
    """One private OVS instance ('hv1') in its own namespace."""
    return ovs_factory("hv1")


@pytest.fixture
def guest_factory(sandbox: Sandbox) -> Iterator[GuestFactory]:
    """make(name, mac, ip_cidr, ipv6_cidr=None, ovs=..., bridge=..., **kw) -> Guest."""
    made: list[Guest] = []

    def make(
        name: str, mac: str, ip_cidr: str | None, ipv6_cidr: str | None = None, **kwargs: Any
    ) -> Guest:
        guest = Guest(name, mac, ip_cidr, ipv6_cidr, sandbox=sandbox, **kwargs)
        made.append(guest)
        return guest

    try:
        yield make
    finally:
        for guest in reversed(made):
            guest.close()
