"""Data-plane allocations (store/allocations.py): made at create, unique, never moved.

A network's conntrack zone, its flood group id and fabric VLAN, a rule's conjunction
id and a port's meter id are columns of the owning row, picked inside the write that
creates it, kept across restarts, and filled in once for rows of an older database.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from api_harness import Env

from controller import intent as m
from controller import pipeline as pl
from controller.compiler import compile_switch
from controller.compiler.acl import conj_id_of
from controller.compiler.fabric import fabric_vlans
from controller.compiler.overlay import flood_group_id, zone_of, zones_for
from controller.compiler.qos import meter_id_of
from controller.store import SCHEMA_PATH, EmbeddedOvsdb, NorthboundStore, TxnHelper
from controller.store import allocations as al
from controller.topology import Binding, SwitchView, TopologyView

KEY_MASK = (1 << 48) - 1


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-alloc-{n}"))


def crafted(key: int) -> str:
    """An id that sorts before any uuid5/uuid4 above and whose object key is `key`."""
    return f"00000000-0000-4000-8000-{key & KEY_MASK:012x}"


def net(object_id: str, seg: int = 5, ntype: str = "vxlan", **kw: object) -> m.Network:
    return m.Network(object_id, "p", "n", ntype, seg, **kw)  # type: ignore[arg-type]


def colliding(network: m.Network) -> str:
    """A network id whose derived zone is `network`'s and that sorts before it."""
    return crafted(network.key + pl.CT_ZONE_SPAN)


A = net(uid(1), 5)
SG = m.SecurityGroup(uid(2), "p", "sg")


def rule(n: int) -> m.SecurityGroupRule:
    return m.SecurityGroupRule(uid(100 + n), "p", SG.id, "ingress", "IPv4", remote_group_id=SG.id)


def port(n: int, network: m.Network) -> m.Port:
    return m.Port(uid(200 + n), "p", network.id, f"p{n}", f"fa:16:3e:00:00:{n:02x}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NorthboundStore]:
    db = EmbeddedOvsdb(tmp_path / "state").start()
    s = NorthboundStore(db.remote).connect(10)
    yield s
    s.close()
    db.stop()


def put(store: NorthboundStore, *objs: object) -> None:
    def write(h: TxnHelper, intent: m.Intent) -> None:
        for obj in objs:
            h.put(obj)

    store.transact(write)


# -- pure: what gets picked -----------------------------------------------------------
def test_preferred_values_are_what_the_compiler_derived() -> None:
    vlan = net(uid(3), 100, "vlan", physical_network="physnet")
    p = port(1, A)
    intent = m.Intent(networks=MappingProxyType({A.id: A, vlan.id: vlan}),
                      ports=MappingProxyType({p.id: p}),
                      security_group_rules=MappingProxyType({rule(1).id: rule(1)}))
    filled = {o.id: o for o in al.plan_backfill(intent)}
    a = filled[A.id]
    assert a.ct_zone == A.key % pl.CT_ZONE_SPAN + 1 == zone_of(A)
    assert a.flood_group == A.key & pl.GROUP_ID_MASK == flood_group_id(A)
    assert a.fabric_vlan == A.key % 4094 + 1 == fabric_vlans(intent, {A.id})[A.id]
    assert filled[vlan.id].fabric_vlan == 0  # rides on its own segmentation id
    assert filled[rule(1).id].conj_id == conj_id_of(rule(1))
    assert filled[p.id].meter_id == p.key % pl.METER_ID_SPAN + 1


def test_backfill_probes_collisions_in_id_order_like_zones_for() -> None:
    b = net(colliding(A), 6)
    intent = m.Intent(networks=MappingProxyType({A.id: A, b.id: b}))
    filled = {o.id: o for o in al.plan_backfill(intent)}
    # what a switch holding both got from the old per-switch probe: b first (lower id)
    assert {i: o.ct_zone for i, o in filled.items()} == zones_for_old([A, b])


def zones_for_old(networks: list[m.Network]) -> dict[str, int]:
    """The per-switch probe the compiler used before zones were stored."""
    taken: set[int] = set()
    out = {}
    for n in sorted(networks, key=lambda n: n.id):
        zone = n.key % pl.CT_ZONE_SPAN + 1
        while zone in taken:
            zone = zone % pl.CT_ZONE_SPAN + 1
        taken.add(zone)
        out[n.id] = zone
    return out


def test_a_full_space_refuses_or_leaves_zero() -> None:
    spec = dataclasses.replace(al.SPECS[0], hi=3)
    assert spec.pick(A, {1, 2, 3}) == 0
    assert spec.pick(A, {1, 3}) == 2
    alloc = al.Allocator(lambda: m.Intent())
    full = al.Allocator(lambda: m.Intent(networks=MappingProxyType(
        {f"x{i}": net(crafted(i), ct_zone=i) for i in range(1, pl.CT_ZONE_SPAN + 1)})))
    assert alloc.fill(A).ct_zone == zone_of(A)
    with pytest.raises(al.AllocationExhausted):
        full.fill(A)


def test_compiler_uses_the_stored_values() -> None:
    stored = dataclasses.replace(A, ct_zone=7, flood_group=9, fabric_vlan=11)
    assert (zone_of(stored), flood_group_id(stored)) == (7, 9)
    assert zones_for([stored]) == {A.id: 7}
    assert fabric_vlans(m.Intent(networks=MappingProxyType({A.id: stored})), {A.id}) == {A.id: 11}
    assert conj_id_of(dataclasses.replace(rule(1), conj_id=42)) == 42
    assert meter_id_of(dataclasses.replace(port(1, A), meter_id=5)) == 5


def test_a_vlan_network_claiming_a_stored_fabric_vlan_wins_it() -> None:
    stored = dataclasses.replace(A, fabric_vlan=100)
    vlan = net(uid(3), 100, "vlan", physical_network="physnet")
    nets = MappingProxyType({A.id: stored, vlan.id: vlan})
    out = fabric_vlans(m.Intent(networks=nets), {A.id, vlan.id})
    assert out[vlan.id] == 100 and out[A.id] not in (0, 100)


# -- the store: allocation at create ------------------------------------------------
def test_create_allocates_unique_values(store: NorthboundStore) -> None:
    nets = [net(uid(10 + i), 10 + i) for i in range(5)]
    put(store, *nets, SG, *(rule(i) for i in range(5)), *(port(i, nets[0]) for i in range(5)))
    intent = store.latest()
    stored = [intent.networks[n.id] for n in nets]
    for attr in ("ct_zone", "flood_group", "fabric_vlan"):
        values = [getattr(n, attr) for n in stored]
        assert all(values) and len(set(values)) == len(values), attr
        derived = {o.id: getattr(o, attr) for o in al.plan_backfill(
            m.Intent(networks=MappingProxyType({n.id: n for n in nets})))}
        assert values == [derived[n.id] for n in nets], attr
    conj = [intent.security_group_rules[rule(i).id].conj_id for i in range(5)]
    meters = [intent.ports[port(i, nets[0]).id].meter_id for i in range(5)]
    assert all(conj) and len(set(conj)) == 5 and all(meters) and len(set(meters)) == 5


def test_a_colliding_network_gets_another_zone_and_the_first_stays(
        store: NorthboundStore) -> None:
    put(store, A)
    zone = store.latest().networks[A.id].ct_zone
    assert zone == A.key % pl.CT_ZONE_SPAN + 1
    b = net(colliding(A), 6)
    assert b.id < A.id and b.key % pl.CT_ZONE_SPAN + 1 == zone
    put(store, b)
    intent = store.latest()
    assert intent.networks[A.id].ct_zone == zone
    assert intent.networks[b.id].ct_zone not in (0, zone)
    # both on one switch: the compiled classify flows keep A's zone (the old per-switch
    # probe gave it to b, the lower id, and moved A's)
    pa, pb = port(1, A), port(2, b)
    put(store, pa, pb)
    flows = compile_switch(store.latest(), topo_with(pa, pb), 1).flows.values()
    zones = {dict((mf.field, mf.value) for mf in f.match)["in_port"]: a.value
             for f in flows if f.table == "classify"
             for a in f.actions if getattr(a, "field", None) == pl.REG_CT_ZONE}
    assert zones == {10: zone, 11: intent.networks[b.id].ct_zone}
    assert zones_for_old([A, b])[A.id] != zone  # what the old code would have done


def topo_with(*ports: m.Port) -> TopologyView:
    bindings = {p.id: Binding(p.id, "hv", "br-int", 1, 10 + i, f"t{i}")
                for i, p in enumerate(ports)}
    return TopologyView(1, MappingProxyType({1: SwitchView(1, "hv", "br-int")}),
                        MappingProxyType(bindings))


def test_updates_keep_allocations(store: NorthboundStore) -> None:
    put(store, A, SG, rule(1), port(1, A))
    before = store.latest()
    fresh = dataclasses.replace(A, name="renamed")  # built without the stored values
    assert fresh.ct_zone == 0
    put(store, fresh, dataclasses.replace(port(1, A), name="x"),
        dataclasses.replace(rule(1), description="d"))
    after = store.latest()
    assert after.networks[A.id].name == "renamed"
    for attr in ("ct_zone", "flood_group", "fabric_vlan"):
        assert getattr(after.networks[A.id], attr) == getattr(before.networks[A.id], attr)
    assert after.ports[port(1, A).id].meter_id == before.ports[port(1, A).id].meter_id
    assert after.security_group_rules[rule(1).id].conj_id == \
        before.security_group_rules[rule(1).id].conj_id
    assert al.backfill(_NoWrites(), after) == 0


class _NoWrites:
    def put(self, obj: object) -> None:
        raise AssertionError(f"backfill rewrote {obj}")


def test_values_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    b = net(colliding(A), 6)
    put(store, A, b, SG, rule(1), port(1, A))
    before = store.latest()
    store.close()
    db.stop()
    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    try:
        after = store.latest()
        for n in (A, b):
            x, y = before.networks[n.id], after.networks[n.id]
            assert (x.ct_zone, x.flood_group, x.fabric_vlan) == \
                (y.ct_zone, y.flood_group, y.fabric_vlan) and y.ct_zone
        assert after.ports[port(1, A).id].meter_id == before.ports[port(1, A).id].meter_id
        assert after.security_group_rules[rule(1).id].conj_id == \
            before.security_group_rules[rule(1).id].conj_id
    finally:
        store.close()
        db.stop()


# -- an older database: conversion, then backfill -----------------------------------
_NEW_COLUMNS = {"Network": ("ct_zone", "flood_group", "fabric_vlan"), "Port": ("meter_id",),
                "Security_Group_Rule": ("conj_id",), "Router": ("snat_zone",)}


def old_schema(path: Path) -> Path:
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["version"] = "1.0.0"
    for table, columns in _NEW_COLUMNS.items():
        for column in columns:
            del schema["tables"][table]["columns"][column]
    path.write_text(json.dumps(schema))
    return path


def ovsdb_tool(*args: str) -> str:
    return subprocess.run(["ovsdb-tool", *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_an_older_database_is_converted_and_backfilled(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db_path = state / "nb.db"
    ovsdb_tool("create", str(db_path), str(old_schema(tmp_path / "old.ovsschema")))
    b = net(colliding(A), 6)
    stamp = {"created_at": "", "updated_at": "", "revision_number": 1, "description": "",
             "project_id": "p"}
    ops: list[dict[str, object]] = ["Loom_Northbound"]  # type: ignore[list-item]
    for n in (A, b):
        ops.append({"op": "insert", "table": "Network", "uuid": n.id, "row": {
            **stamp, "name": "n", "network_type": n.network_type,
            "segmentation_id": n.segmentation_id, "admin_state_up": True, "shared": False,
            "router_external": False, "port_security_enabled": True, "mtu": 1450}})
    ops.append({"op": "insert", "table": "Security_Group", "uuid": SG.id, "row": {
        **stamp, "name": "sg", "stateful": True}})
    ops.append({"op": "insert", "table": "Security_Group_Rule", "uuid": rule(1).id, "row": {
        **stamp, "security_group": ["uuid", SG.id], "direction": "ingress",
        "ethertype": "IPv4"}})
    ops.append({"op": "insert", "table": "Port", "uuid": port(1, A).id, "row": {
        **stamp, "network": ["uuid", A.id], "name": "p1", "mac_address": "fa:16:3e:00:00:01",
        "admin_state_up": True, "port_security_enabled": True, "host_id": "",
        "binding_profile": "", "device_id": "", "device_owner": ""}})
    out = json.loads(ovsdb_tool("transact", str(db_path), json.dumps(ops)))
    assert not any("error" in r for r in out), out

    db = EmbeddedOvsdb(state).start()  # converts 1.0.0 -> current, new columns at 0
    store = NorthboundStore(db.remote).connect(10)
    try:
        assert ovsdb_tool("db-version", str(db_path)).strip() == \
            ovsdb_tool("schema-version", str(SCHEMA_PATH)).strip()
        intent = store.latest()  # connect() backfilled before anything could read it
        old = zones_for_old([A, b])  # what switches held before the upgrade
        assert {n.id: intent.networks[n.id].ct_zone for n in (A, b)} == old
        assert intent.networks[A.id].flood_group == A.key & pl.GROUP_ID_MASK
        assert intent.security_group_rules[rule(1).id].conj_id == conj_id_of(rule(1))
        assert intent.ports[port(1, A).id].meter_id == port(1, A).key % pl.METER_ID_SPAN + 1
        generation = intent.generation
        al.backfill_store(store)  # nothing left: no write
        assert store.latest().generation == generation
    finally:
        store.close()
        db.stop()


# -- the API never shows them ---------------------------------------------------------
def test_api_bodies_do_not_show_allocations(env: Env) -> None:
    n = env.network(name="a")
    sg = env.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "s"}},
                201)["security_group"]
    r = env.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "remote_group_id": sg["id"]}},
        201)["security_group_rule"]
    p = env.port(n["id"])
    intent = env.store.latest()
    assert intent.networks[n["id"]].ct_zone and intent.ports[p["id"]].meter_id
    assert intent.security_group_rules[r["id"]].conj_id
    bodies = [env.ok("GET", f"/v2.0/networks/{n['id']}"), env.ok("GET", f"/v2.0/ports/{p['id']}"),
              env.ok("GET", f"/v2.0/security-group-rules/{r['id']}"), n, p, r]
    text = json.dumps(bodies)
    for column in ("ct_zone", "flood_group", "fabric_vlan", "meter_id", "conj_id"):
        assert column not in text


# -- a router's NAT zone: the networks' zone space, only while it has a gateway --------
def router_on(object_id: str, gateway: bool, **kw: object) -> m.Router:
    return m.Router(object_id, "p", "r", external_network_id=A.id if gateway else None,
                    **kw)  # type: ignore[arg-type]


def test_a_routers_nat_zone_shares_the_networks_zone_space(store: NorthboundStore) -> None:
    put(store, A)
    zone_a = store.latest().networks[A.id].ct_zone
    # a router whose derived zone is the network's gets the next free one
    clash = router_on(crafted(A.key + pl.CT_ZONE_SPAN), gateway=True)
    plain = router_on(uid(301), gateway=False)
    put(store, clash, plain)
    snap = store.latest()
    assert snap.routers[clash.id].snat_zone not in (0, zone_a)
    assert snap.routers[plain.id].snat_zone == 0  # no gateway, no NAT zone
    # a network made after it probes past the router's zone too
    later = net(crafted(model_key(clash.id) + 2 * pl.CT_ZONE_SPAN), 9)
    put(store, later)
    snap = store.latest()
    taken = snap.routers[clash.id].snat_zone
    assert snap.networks[later.id].ct_zone not in (zone_a, taken)
    # kept across updates (a router rewritten with 0 keeps its row's zone) ...
    put(store, dataclasses.replace(snap.routers[clash.id], name="renamed", snat_zone=0))
    assert store.latest().routers[clash.id].snat_zone == taken
    # ... and freed when the gateway goes; a new gateway takes a free value again
    put(store, dataclasses.replace(store.latest().routers[clash.id], external_network_id=None))
    assert store.latest().routers[clash.id].snat_zone == 0
    put(store, dataclasses.replace(store.latest().routers[clash.id], external_network_id=A.id))
    again = store.latest().routers[clash.id].snat_zone
    assert again and again not in {n.ct_zone for n in store.latest().networks.values()}


def model_key(object_id: str) -> int:
    return m.object_key(object_id)


def test_backfill_gives_gateway_routers_a_zone_past_the_networks() -> None:
    clash = router_on(crafted(A.key + pl.CT_ZONE_SPAN), gateway=True)
    held = dataclasses.replace(A, ct_zone=zone_of(A))
    intent = m.Intent(networks=MappingProxyType({A.id: held}),
                      routers=MappingProxyType({clash.id: clash, uid(302): router_on(
                          uid(302), gateway=False)}))
    filled = [o for o in al.plan_backfill(intent) if isinstance(o, m.Router)]
    assert [o.id for o in filled] == [clash.id]  # (not the router without a gateway)
    assert filled[0].snat_zone not in (0, zone_of(A))
