"""The fabric through Loom, on Mininet (userspace datapath, private OVS, real controller).

Leaf-spine and fat-tree k=4: hosts on two networks of two projects, bound by
Neutron's baremetal convention. Within a network nothing is lost, across networks
everything is; the topology API shows exactly Mininet's links; a loop in the
cabling does not storm; a link cut during a 100 pps ping loses only a handful.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from topologies import mininet_topos as mt
from topologies.fabric import Fabric

pytestmark = pytest.mark.integration


def _ready(fabric: Fabric) -> None:
    fabric.bind_hosts(split=True)
    res = fabric.wait_pingall(deadline=60, expect=fabric.expected_loss())
    assert res == fabric.expected_loss(), {k: v for k, v in res.items()
                                           if v != fabric.expected_loss()[k]}


TOPOS = {
    "leafspine": lambda: mt.LeafSpineTopo(spines=2, leaves=3, hosts_per_leaf=2),
    "fattree": lambda: mt.FatTreeTopo(k=4),
}


@pytest.fixture(scope="module", params=sorted(TOPOS))
def fabric(request: pytest.FixtureRequest) -> Iterator[Fabric]:
    """One fabric at a time (its interface names are machine-wide): pytest groups the
    tests by topology, tearing one down before the next comes up."""
    with Fabric(TOPOS[request.param](), start_controller=True) as fab:
        _ready(fab)
        yield fab


def _assert_pingall(fabric: Fabric) -> None:
    expected = fabric.expected_loss()
    res = fabric.pingall(timeout=1.0, count=2)
    wrong = {pair: loss for pair, loss in res.items() if loss != expected[pair]}
    assert not wrong, wrong
    within = [p for p, loss in expected.items() if loss == 0.0]
    across = [p for p, loss in expected.items() if loss == 1.0]
    assert within and across


def test_pingall_within_networks_only(fabric: Fabric) -> None:
    _assert_pingall(fabric)


def _api_links(fabric: Fabric) -> set[tuple[str, int, str, int]]:
    assert fabric.api is not None
    doc = fabric.api.get("/v1/topology").ok()
    out = set()
    for link in doc["links"]:
        if link["kind"] != "fabric" or link["state"] != "up":
            continue
        a = (int(link["src"]["node"].split(":")[1], 16), link["src"]["port_no"])
        b = (int(link["dst"]["node"].split(":")[1], 16), link["dst"]["port_no"])
        a, b = sorted((a, b))
        out.add((f"{a[0]:016x}", a[1], f"{b[0]:016x}", b[1]))
    return out


def _mininet_links(fabric: Fabric) -> set[tuple[str, int, str, int]]:
    out = set()
    for link in fabric.links():
        a = (fabric.dpid(link.switch), link.ofport)
        b = (fabric.dpid(link.peer), link.peer_ofport)
        a, b = sorted((a, b))
        out.add((a[0], a[1], b[0], b[1]))
    return out


def test_topology_api_matches_mininet(fabric: Fabric) -> None:
    mininet = _mininet_links(fabric)
    assert len(mininet) == len(fabric.declared_links())
    assert _api_links(fabric) == mininet


def _fabric_tx_packets(fabric: Fabric) -> int:
    """Packets sent out of every inter-switch port, summed over the fabric."""
    assert fabric.ovs is not None
    link_ports = {(link.switch, link.port) for link in fabric.links()} | {
        (link.peer, link.peer_port) for link in fabric.links()}
    total = 0
    for switch in fabric.topo.tiers:
        out = fabric.ovs.ofctl("dump-ports", switch)
        for m in re.finditer(r'port\s+"?([\w-]+)"?:.*?tx pkts=(\d+)', out, re.S):
            if (switch, m.group(1)) in link_ports:
                total += int(m.group(2))
    return total


def test_a_loop_causes_no_storm(fabric: Fabric) -> None:
    """Both topologies are full of loops; 50 broadcasts cost a bounded number of frames."""
    leafspine = fabric
    links = len(leafspine.links())
    before = _fabric_tx_packets(leafspine)
    host = leafspine.node(leafspine.hosts[0])
    host.cmd("arping -c 50 -w 3 -i 0.02 -b -I h1-eth0 10.10.0.254 >/dev/null 2>&1 || "
             "ping -b -c 50 -i 0.02 -W 1 10.10.255.255 >/dev/null 2>&1")
    time.sleep(1.0)
    after = _fabric_tx_packets(leafspine)
    # every broadcast crosses each tree edge at most once (plus LLDP probes meanwhile)
    probes = 2 * links * 10
    assert after - before <= 50 * links + probes, (before, after, links)
    time.sleep(2.0)
    settled = _fabric_tx_packets(leafspine)
    assert settled - after <= probes, "traffic kept circulating after the broadcasts"


def test_link_cut_during_fast_ping_loses_a_handful(fabric: Fabric) -> None:
    """Ping at 100/s between edge switches, cut an uplink of the source's edge switch."""
    src = fabric.hosts[0]
    src_edge = fabric.edge_ports()[f"{src}-eth0"][0]
    dst = [h for h in fabric.hosts if fabric.host_network[h] == fabric.host_network[src]
           and fabric.edge_ports()[f"{h}-eth0"][0] != src_edge][-1]
    uplink = sorted({link.peer if link.switch == src_edge else link.switch
                     for link in fabric.links() if src_edge in (link.switch, link.peer)})[0]
    ping = subprocess.Popen(
        ["mnexec", "-a", str(fabric.node(src).pid), "ping", "-n", "-q", "-i", "0.01", "-c",
         "400", fabric.host_ip(dst)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        time.sleep(1.5)
        fabric.cut_link(src_edge, uplink)
        out, _ = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
        fabric.restore_link(src_edge, uplink)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    lost = int(m.group(1)) - int(m.group(2))
    assert lost <= 10, out
    # and the fabric heals: with the link back, everything within networks works again
    time.sleep(2.0)
    _assert_pingall(fabric)
