"""Schema 1.4.0: Subnet.ipv6_ra_mode / ipv6_address_mode stored, and a 1.3.0 database
(without them) converted on start keeping its rows."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from controller import intent as m
from controller.store import SCHEMA_PATH, EmbeddedOvsdb, NorthboundStore, TxnHelper


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-ipv6-modes-{n}"))


NET = m.Network(id=uid(1), project_id="p", name="n", network_type="vxlan", segmentation_id=7)
V4 = m.Subnet(id=uid(2), project_id="p", network_id=NET.id, name="v4", ip_version=4,
              cidr="10.0.0.0/24", gateway_ip="10.0.0.1",
              allocation_pools=(m.AllocationPool("10.0.0.2", "10.0.0.254"),))
V6 = m.Subnet(id=uid(3), project_id="p", network_id=NET.id, name="v6", ip_version=6,
              cidr="2001:db8:1::/64", gateway_ip="2001:db8:1::1",
              ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
PORT = m.Port(id=uid(4), project_id="p", network_id=NET.id, name="p",
              mac_address="fa:16:3e:12:34:56",
              fixed_ips=(m.FixedIP(V4.id, "10.0.0.2"),
                         m.FixedIP(V6.id, "2001:db8:1:0:f816:3eff:fe12:3456")))


def _write(store: NorthboundStore, *objs: object) -> None:
    def fn(h: TxnHelper, intent: m.Intent) -> None:
        for obj in objs:
            h.put(obj)

    store.transact(fn)


def test_schema_has_the_modes() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert tuple(map(int, schema["version"].split("."))) >= (1, 4, 0)
    for column in ("ipv6_ra_mode", "ipv6_address_mode"):
        kind = schema["tables"]["Subnet"]["columns"][column]["type"]
        assert (kind["min"], kind["max"]) == (0, 1)


def test_modes_round_trip(tmp_path: Path) -> None:
    db = EmbeddedOvsdb(tmp_path / "state").start()
    store = NorthboundStore(db.remote).connect(10)
    try:
        _write(store, NET, V4, V6, PORT)
        got = store.latest()
        assert got.subnets[V6.id].ipv6_ra_mode == "slaac"
        assert got.subnets[V6.id].ipv6_address_mode == "slaac"
        assert got.subnets[V4.id].ipv6_ra_mode is None
        assert got.subnets[V4.id].ipv6_address_mode is None
        assert got.ports[PORT.id].fixed_ips == PORT.fixed_ips
    finally:
        store.close()
        db.stop()


def test_1_3_0_database_is_converted_on_start(tmp_path: Path) -> None:
    """A database written by 1.3.0 (the same schema without the two columns) loads: the
    start converts it (store/embedded.py `_prepare_db`), backs it up, and its subnets
    read with both modes unset; the new columns are then writable."""
    old = json.loads(SCHEMA_PATH.read_text())
    old["version"] = "1.3.0"
    for column in ("ipv6_ra_mode", "ipv6_address_mode"):
        del old["tables"]["Subnet"]["columns"][column]
    old_path = tmp_path / "old.ovsschema"
    old_path.write_text(json.dumps(old))
    state = tmp_path / "state"

    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    plain_port = m.Port(id=PORT.id, project_id="p", network_id=NET.id, name="p",
                        mac_address=PORT.mac_address, fixed_ips=(m.FixedIP(V4.id, "10.0.0.2"),))
    _write(store, NET, V4, plain_port)
    store.close()
    db.stop()
    # what a 1.3.0 controller left behind
    subprocess.run(["ovsdb-tool", "convert", str(state / "nb.db"), str(old_path)],
                   check=True, capture_output=True, timeout=30)
    version = subprocess.run(["ovsdb-tool", "db-version", str(state / "nb.db")],
                             check=True, capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == "1.3.0"

    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    try:
        assert (state / "nb.db.backup-1.3.0").exists()
        got = store.latest()
        assert got.subnets[V4.id] == V4  # every other column kept
        assert got.subnets[V4.id].ipv6_ra_mode is None
        assert got.subnets[V4.id].ipv6_address_mode is None
        assert got.ports[PORT.id].fixed_ips == plain_port.fixed_ips
        _write(store, V6)
        assert store.latest().subnets[V6.id].ipv6_address_mode == "slaac"
    finally:
        store.close()
        db.stop()
