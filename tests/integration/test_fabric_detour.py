"""A cut link is routed round in the data plane, with no controller to ask.

A ring of six switches through Loom (userspace datapath, private OVS): a host on s1
pings a host on s3 (two hops, through s2). On a ring no neighbour of s1 is closer to
s3 except s2, so when the s1-s2 link goes, only a detour saves the traffic: the
failover group pushes an MPLS label and the frames go the long way round to s2, whose
predecessor pops the label. The controller is stopped first (the switches keep their
flows: fail_mode secure), so nothing but the switches can repair the path.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import networkx as nx
import pytest

from topologies.fabric import Fabric
from topologies.graphtopo import graph_topo

pytestmark = pytest.mark.integration

LOCK_WAIT = 900  # one fabric per machine: another test's or bench's may be running


def _ping(fabric: Fabric, src: str, dst: str, count: int) -> tuple[int, int, str]:
    out = subprocess.run(
        ["mnexec", "-a", str(fabric.node(src).pid), "ping", "-n", "-q", "-i", "0.05",
         "-W", "1", "-c", str(count), fabric.host_ip(dst)],
        capture_output=True, text=True, timeout=60, check=False).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), out


def test_a_cut_on_a_ring_is_detoured_without_the_controller(tmp_path: Path) -> None:
    ring = nx.relabel_nodes(nx.cycle_graph(6), {i: f"n{i + 1}" for i in range(6)})
    nx.write_graphml(ring, tmp_path / "ring.graphml")
    with Fabric(graph_topo(tmp_path / "ring.graphml", 1), start_controller=True,
                lock_timeout=LOCK_WAIT) as fabric:
        fabric.bind_hosts()
        res = fabric.wait_pingall(deadline=60, expect=fabric.expected_loss())
        assert res == fabric.expected_loss()
        edge = fabric.edge_ports()
        on = {edge[f"{h}-eth0"][0]: h for h in fabric.hosts}
        src, dst = on["s1"], on["s3"]
        sent, got, out = _ping(fabric, src, dst, 10)
        assert got == sent, out
        assert fabric.ctl is not None
        # A restart finds every detour flow and bucket as it left them: nothing sent.
        fabric.ctl.stop()
        fabric.ctl.start()
        switches = fabric.ctl.wait_switches(6, timeout=60)
        time.sleep(3.0)  # discovery's first rounds: links re-learnt, nothing to change
        switches = fabric.ctl.api.get("/v1/switches").body
        switches = switches.get("switches", switches) if isinstance(switches, dict) else switches
        assert [s["flow_mods_sent"] for s in switches] == [0] * 6, switches
        fabric.ctl.stop()
        fabric.cut_link("s1", "s2")
        try:
            sent, got, out = _ping(fabric, src, dst, 40)
            # Before detours every one of these was lost: s1's group had no live bucket.
            assert got >= sent - 2, out
            back_sent, back_got, back = _ping(fabric, dst, src, 20)
            assert back_got >= back_sent - 2, back
        finally:
            fabric.restore_link("s1", "s2")
