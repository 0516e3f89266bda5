"""A controller whose OpenFlow target the chassis cannot reach says so.

The newcomer's slip: running the controller by hand against a chassis in another
namespace (or host) without `--of-target`. The chassis' OVSDB is reachable, so
/v1/chassis says `connected`, but br-int dials the default tcp:127.0.0.1:6653, which
inside the chassis is nobody. The controller must warn, once, naming the target and
the fix, and /v1/chassis must show `openflow_connected: false`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from topologies.controller_process import ControllerProcess
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

pytestmark = pytest.mark.integration

WARNING_TEXT = "has made no OpenFlow connection to this controller"


@pytest.fixture
def chassis() -> Iterator[OvsInstance]:
    sandbox = Sandbox()
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-hv1"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance("hv1", netns=sandbox.add_netns("hv1"), workdir=workdir, sandbox=sandbox,
                     system_id="hv1")
    try:
        hv.start()
        yield hv
    finally:
        hv.close(remove_workdir=True)
        sandbox.cleanup()


def _warnings(ctl: ControllerProcess) -> list[str]:
    return [line for line in ctl.log_path.read_text(errors="replace").splitlines()
            if WARNING_TEXT in line]


def test_unreachable_of_target_is_warned_once_and_shown(
        chassis: OvsInstance, tmp_path: Path) -> None:
    host_ip, _ = chassis.add_mgmt_link()
    ctl = ControllerProcess(tmp_path / "state", [chassis.db_remote], of_host=host_ip)
    # What the controller does without --of-target: tcp:127.0.0.1:<its OpenFlow port>.
    # Inside the chassis' namespace nobody listens there.
    target = f"tcp:127.0.0.1:{ctl.of_port}"
    ctl.extra_args = ("--of-target", target)
    try:
        ctl.start()
        chassis.wait_for_bridge("br-int", timeout=20)
        deadline = time.monotonic() + 60
        while not _warnings(ctl):
            assert time.monotonic() < deadline, "no warning:\n" + ctl.log_tail(40)
            time.sleep(0.5)
        (line,) = _warnings(ctl)
        assert " WARNING controller.engine: chassis hv1: bridge br-int " in line, line
        assert target in line and "Connection refused" in line, line
        assert f"--of-target tcp:<an address of this controller that the chassis can " \
               f"reach>:{ctl.of_port}" in line, line

        (view,) = ctl.api.get("/v1/chassis").ok()["chassis"]
        assert view["name"] == "hv1" and view["connected"] is True
        assert view["openflow_connected"] is False
        assert view["controller_target"] == target
        assert view["controller_status"]["is_connected"] is False
        assert ctl.api.get("/v1/switches").ok()["switches"] == []

        time.sleep(3)  # the watch runs every second: still one warning
        assert len(_warnings(ctl)) == 1
    finally:
        ctl.stop()
        print("controller log tail:\n" + ctl.log_tail(30))

    # the fix: the target the chassis can reach; the view says so, nothing is warned
    fixed = ControllerProcess(tmp_path / "state", [chassis.db_remote], of_host=host_ip,
                              log_path=tmp_path / "fixed.log")
    try:
        fixed.start()
        fixed.wait_switches(1)
        deadline = time.monotonic() + 20
        view = {}
        while time.monotonic() < deadline:
            (view,) = fixed.api.get("/v1/chassis").ok()["chassis"]
            if view["openflow_connected"]:
                break
            time.sleep(0.2)
        assert view["openflow_connected"] is True, view
        assert view["controller_target"] == fixed.of_target
        assert _warnings(fixed) == []
    finally:
        fixed.stop()
