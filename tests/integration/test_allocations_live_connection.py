"""Allocations the data plane keeps state under survive a colliding network and a restart.

A live TCP connection between two guests runs through conntrack in their network's
zone. A second network is then written whose id was crafted so that its key gives
the same zone and its id sorts first, and a guest is bound to it on the same switch:
when zones were probed per switch in id order at every compile, the newcomer took
the zone and the first network's moved, and its connection, unknown to conntrack
in the new zone, was dropped as invalid. Zones are now allocated once, in the
store: the first network keeps its zone through that and through a controller
restart, and so does the connection.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from controller import intent as m
from controller import pipeline as pl
from controller.store import NorthboundStore, TxnHelper
from tests.integration.harness import SingleHost, single_host
from tests.integration.streams import Stream

pytestmark = pytest.mark.integration

PROJECT = "project-alloc"
_ZONE_RE = re.compile(r"in_port=(\d+).*?(?:set_field:(0x[0-9a-f]+)->reg6|"
                      r"load:(0x[0-9a-f]+)->NXM_NX_REG6\[\])")


def zones_by_ofport(host: SingleHost) -> dict[int, int]:
    """in_port -> the conntrack zone its classify flow loads (reg6)."""
    out = {}
    for line in host.hv.dump_flows("br-int", "table=0", stats=False):
        found = _ZONE_RE.search(line)
        if found:
            out[int(found.group(1))] = int(found.group(2) or found.group(3), 16)
    return out


def ofport(host: SingleHost, name: str) -> int:
    return int(host.hv.vsctl("get", "Interface", host.guests[name].port_name, "ofport"))


def colliding_id(network_id: str) -> str:
    """A network id that sorts before `network_id` and whose key derives the same zone."""
    key = (m.object_key(network_id) + pl.CT_ZONE_SPAN) & ((1 << 48) - 1)
    return f"00000000-0000-4000-8000-{key:012x}"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleHost]:
    with single_host(tmp_path_factory.mktemp("alloc-state")) as h:
        yield h


def test_a_live_connection_keeps_its_zone_through_a_collision_and_a_restart(
        host: SingleHost) -> None:
    api = host.api
    net = api.create("network", name="live", project_id=PROJECT)
    v4 = api.create("subnet", network_id=net["id"], cidr="10.0.0.0/24", project_id=PROJECT)
    sg = api.create("security_group", name="live", project_id=PROJECT)
    api.create("security_group_rule", wait=True, security_group_id=sg["id"],
               project_id=PROJECT, direction="ingress", protocol="tcp",
               port_range_min=5001, port_range_max=5001, remote_group_id=sg["id"])
    for name, ip in (("server", "10.0.0.10"), ("client", "10.0.0.20")):
        p = api.create("port", wait=True, network_id=net["id"], project_id=PROJECT, name=name,
                       fixed_ips=[{"subnet_id": v4["id"], "ip_address": ip}],
                       security_groups=[sg["id"]])
        host.guest_for(name, p)
    stream = Stream(host.guests["server"].netns, host.guests["client"].netns, "10.0.0.10", 5001)
    try:
        assert stream.flowing(5.0), "the connection never carried data"
        zone = zones_by_ofport(host)[ofport(host, "server")]
        assert zones_by_ofport(host)[ofport(host, "client")] == zone

        # a network whose key collides with the live one's zone, sorting before it:
        # written straight into the store (the API picks ids itself)
        other_id = colliding_id(net["id"])
        assert other_id < net["id"]
        assert m.object_key(other_id) % pl.CT_ZONE_SPAN == m.object_key(net["id"]) % \
            pl.CT_ZONE_SPAN
        seg = max(n["provider:segmentation_id"]
                  for n in api.get("/v2.0/networks").ok()["networks"]) + 1
        store = NorthboundStore(f"unix:{host.ctl.state_dir / 'nb.sock'}").connect(10)
        try:
            def write(h: TxnHelper, intent: m.Intent) -> None:
                h.put(m.Network(other_id, PROJECT, "colliding", "vxlan", seg, mtu=1450,
                                revision_number=1))

            store.transact(write)
        finally:
            store.close()
        deadline = time.monotonic() + 10
        while api.get(f"/v2.0/networks/{other_id}").status != 200:
            assert time.monotonic() < deadline, "the colliding network never showed up"
            time.sleep(0.1)
        v4b = api.create("subnet", network_id=other_id, cidr="10.1.0.0/24", project_id=PROJECT)
        p = api.create("port", wait=True, network_id=other_id, project_id=PROJECT,
                       name="newcomer", fixed_ips=[{"subnet_id": v4b["id"]}])
        host.guest_for("newcomer", p)
        zones = zones_by_ofport(host)
        assert zones[ofport(host, "server")] == zone, "the live network's zone moved"
        assert zones[ofport(host, "newcomer")] not in (0, zone)
        assert stream.flowing(3.0), "the connection died when the colliding network came"

        assert host.ctl.stop() == 0
        host.ctl.start()
        host.ctl.wait_switches(1)
        time.sleep(1.0)  # the first push after the restart
        zones_after = zones_by_ofport(host)
        assert zones_after[ofport(host, "server")] == zone
        assert zones_after[ofport(host, "client")] == zone
        assert zones_after[ofport(host, "newcomer")] == zones[ofport(host, "newcomer")]
        assert stream.flowing(3.0), "the connection died across the restart"
    finally:
        stream.close()
