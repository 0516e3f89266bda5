"""The northbound store: embedded server lifecycle, transactions, snapshots, schema rules."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import db_dump

from controller import intent as m
from controller.store import (
    SCHEMA_PATH,
    ConstraintViolation,
    EmbeddedDbError,
    EmbeddedOvsdb,
    NorthboundStore,
    ReferentialIntegrity,
    RowNotFound,
    StoreUnavailable,
    TxnHelper,
)
from controller.store.allocations import cleared
from controller.store.codec import BY_TABLE


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"loom-store-{n}"))


NET = m.Network(id=uid(1), project_id="p", name="n", network_type="vxlan", segmentation_id=5)
SUBNET = m.Subnet(
    id=uid(2),
    project_id="p",
    network_id=NET.id,
    name="s",
    ip_version=4,
    cidr="10.0.0.0/24",
    gateway_ip="10.0.0.1",
    allocation_pools=(m.AllocationPool("10.0.0.2", "10.0.0.254"),),
    dns_nameservers=("10.0.0.53", "8.8.8.8"),
    host_routes=(("10.9.0.0/16", "10.0.0.9"),),
)


def port(n: int, ip: str, **kw: object) -> m.Port:
    attrs: dict[str, object] = {"mac_address": f"fa:16:3e:00:00:{n:02x}", **kw}
    return m.Port(
        id=uid(100 + n),
        project_id="p",
        network_id=NET.id,
        name=f"p{n}",
        fixed_ips=(m.FixedIP(SUBNET.id, ip),),
        **attrs,
    )  # type: ignore[arg-type]


@pytest.fixture
def store(db: EmbeddedOvsdb) -> Iterator[NorthboundStore]:
    s = NorthboundStore(db.remote).connect(10)
    yield s
    s.close()


def seed(store: NorthboundStore) -> int:
    def write(h: TxnHelper, intent: m.Intent) -> None:
        h.put(NET)
        h.put(SUBNET)

    return store.transact(write)


# -- embedded server ---------------------------------------------------------------
def test_embedded_server_creates_db_and_serves_socket(db: EmbeddedOvsdb) -> None:
    assert db.db_path.exists() and db.socket_path.exists() and db.remote == f"unix:{db.socket_path}"
    assert set(db_dump(db.socket_path)) >= {
        "Network",
        "Subnet",
        "Port",
        "IP_Allocation",
        "Security_Group",
        "Security_Group_Rule",
        "QoS_Policy",
        "QoS_Rule",
        "Router",
        "Router_Interface",
        "Floating_IP",
        "Chassis",
    }


def test_intent_survives_a_store_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    seed(store)
    store.transact(lambda h, i: h.put(port(1, "10.0.0.2")))
    before = store.latest()
    store.close()
    db.stop()

    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    try:
        after = store.latest()
        assert dict(after.networks) == dict(before.networks)
        assert dict(after.subnets) == dict(before.subnets)
        assert dict(after.ports) == dict(before.ports)
        assert after.ports[uid(101)].fixed_ips == (m.FixedIP(SUBNET.id, "10.0.0.2"),)
    finally:
        store.close()
        db.stop()


def test_second_server_on_same_state_dir_fails_fast(db: EmbeddedOvsdb) -> None:
    started = time.monotonic()
    with pytest.raises(EmbeddedDbError, match="already serves"):
        EmbeddedOvsdb(db.state_dir).start()
    assert time.monotonic() - started < 2


def test_missing_server_binary_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedDbError, match="not found or not executable") as err:
        EmbeddedOvsdb(tmp_path / "s", server="/nonexistent/ovsdb-server").start()
    assert "\n" not in str(err.value)


def test_corrupt_db_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "nb.db").write_text("this is not an ovsdb file\n")
    with pytest.raises(EmbeddedDbError) as err:
        EmbeddedOvsdb(state).start()
    assert "\n" not in str(err.value) and str(err.value)


def test_older_schema_is_converted_keeping_data(tmp_path: Path) -> None:
    old = json.loads(SCHEMA_PATH.read_text())
    old["version"] = "0.9.0"
    del old["tables"]["Network"]["columns"]["router_external"]
    del old["tables"]["Floating_IP"]
    del old["tables"]["Port_Forwarding"]  # (refers to Floating_IP)
    old_path = tmp_path / "old.ovsschema"
    old_path.write_text(json.dumps(old))
    state = tmp_path / "state"
    db = EmbeddedOvsdb(state, schema=old_path).start()
    op = {
        "op": "insert",
        "table": "Chassis",
        "row": {"name": "hv1", "remote": "tcp:192.0.2.1:6640"},
    }
    subprocess.run(
        ["ovsdb-client", "transact", db.remote, json.dumps(["Loom_Northbound", op])],
        check=True,
        capture_output=True,
        timeout=10,
    )
    db.stop()

    db = EmbeddedOvsdb(state).start()
    store = NorthboundStore(db.remote).connect(10)
    try:
        assert list(store.latest().chassis) == ["hv1"]
        assert (state / "nb.db.backup-0.9.0").exists()
        seed(store)
        assert store.latest().networks[NET.id].router_external is False
    finally:
        store.close()
        db.stop()


def test_unreachable_store_fails_with_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        NorthboundStore(f"unix:{tmp_path}/nothing.sock").connect(1)
    assert time.monotonic() - started < 3


class _SlowServer:
    """A unix-socket proxy to a real server that holds the server's first bytes back.

    Stands in for a database too large to serialise and send within the reach
    timeout: the socket connects at once, the first reply comes `hold` s later. With
    `trickle`, the server's bytes come 64 at a time, `trickle` s apart (a slow link).
    """

    def __init__(self, path: Path, target: Path, hold: float, trickle: float = 0.0) -> None:
        self.path, self.target, self.hold, self.trickle = path, target, hold, trickle
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen()
        self.held: list[socket.socket] = []  # open until close(), even when silent
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        self.held.append(client)
        if self.target == Path():  # silent: accept and never answer
            return
        server = socket.socket(socket.AF_UNIX)
        server.connect(str(self.target))
        threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, self.hold, self.trickle),
                         daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, hold: float, trickle: float = 0.0
              ) -> None:
        try:
            while data := src.recv(65536):
                if hold:
                    time.sleep(hold)
                    hold = 0.0
                step = 64 if trickle else len(data)
                for i in range(0, len(data), step):
                    dst.sendall(data[i:i + step])
                    time.sleep(trickle)
        except OSError:
            pass

    def close(self) -> None:
        for sock in (self.listener, *self.held):
            sock.close()


def test_first_load_may_outlast_the_reach_timeout(db: EmbeddedOvsdb, tmp_path: Path) -> None:
    """Issue 11: a large database used to fail the start after a fixed 5 s."""
    slow = _SlowServer(tmp_path / "slow.sock", db.socket_path, hold=2.0)
    store = NorthboundStore(f"unix:{slow.path}")
    try:
        store.connect(0.5)
        assert store.connected
    finally:
        store.close()
        slow.close()


def test_a_first_load_that_keeps_moving_is_waited_for_however_long(
        db: EmbeddedOvsdb, tmp_path: Path) -> None:
    """Issue 11: no fixed bound on the first load, only on nothing moving. The copy
    trickles in for several times the stall window, and the store still connects."""
    slow = _SlowServer(tmp_path / "trickle.sock", db.socket_path, hold=0.0, trickle=0.05)
    store = NorthboundStore(f"unix:{slow.path}")
    try:
        started = time.monotonic()
        store.connect(0.5, stall_timeout=0.5, progress_every=0.5)
        assert store.connected
        assert time.monotonic() - started > 1.0  # longer than any stall window allowed
    finally:
        store.close()
        slow.close()


def test_a_connected_server_that_never_answers_fails_with_reason(tmp_path: Path) -> None:
    silent = _SlowServer(tmp_path / "silent.sock", Path(), hold=0.0)
    try:
        with pytest.raises(StoreUnavailable, match="nothing came from the server for 1s"):
            NorthboundStore(f"unix:{silent.path}").connect(0.5, stall_timeout=1.0)
    finally:
        silent.close()


# -- transactions ------------------------------------------------------------------
def test_transact_returns_generation_containing_the_write(store: NorthboundStore) -> None:
    g0 = store.latest().generation
    g1 = seed(store)
    assert g1 > g0 and store.latest().generation >= g1
    assert cleared(store.latest().networks[NET.id]) == NET  # + zone etc.: test_allocations
    assert store.latest().subnets[SUBNET.id] == SUBNET


def test_row_uuid_is_object_id(store: NorthboundStore, db: EmbeddedOvsdb) -> None:
    seed(store)
    assert NET.id in db_dump(db.socket_path)["Network"][0]


def test_failed_fn_writes_nothing(store: NorthboundStore, db: EmbeddedOvsdb) -> None:
    seed(store)
    before = db_dump(db.socket_path)

    def write(h: TxnHelper, intent: m.Intent) -> None:
        h.put(port(1, "10.0.0.2"))
        raise KeyError("validation failed half way")

    with pytest.raises(KeyError):
        store.transact(write)
    assert db_dump(db.socket_path) == before
    assert store.latest().ports == {}


def test_schema_index_refuses_double_allocation(store: NorthboundStore, db: EmbeddedOvsdb) -> None:
    seed(store)
    store.transact(lambda h, i: h.put(port(1, "10.0.0.2")))
    before = db_dump(db.socket_path)
    with pytest.raises(ConstraintViolation) as err:
        store.transact(lambda h, i: h.put(port(2, "10.0.0.2")))
    assert err.value.table == "IP_Allocation"
    with pytest.raises(ConstraintViolation) as err:
        store.transact(lambda h, i: h.put(port(3, "10.0.0.3", mac_address="fa:16:3e:00:00:01")))
    assert err.value.table == "Port"
    with pytest.raises(ConstraintViolation) as err:
        store.transact(
            lambda h, i: h.put(
                m.Network(
                    id=uid(9), project_id="p", name="dup", network_type="vxlan", segmentation_id=5
                )
            )
        )
    assert err.value.table == "Network"
    assert db_dump(db.socket_path) == before


def test_strong_references_protect_rows(store: NorthboundStore) -> None:
    seed(store)
    store.transact(lambda h, i: h.put(port(1, "10.0.0.2")))
    with pytest.raises(ReferentialIntegrity):
        store.transact(lambda h, i: h.delete(m.Network, NET.id))
    with pytest.raises(ReferentialIntegrity):
        store.transact(lambda h, i: h.delete(m.Subnet, SUBNET.id))  # still has an IP allocation
    with pytest.raises(ReferentialIntegrity):
        store.transact(lambda h, i: h.put(port(2, "10.0.0.3", security_groups=(uid(77),))))
    with pytest.raises(RowNotFound):
        store.transact(lambda h, i: h.delete(m.Port, uid(555)))
    store.transact(lambda h, i: h.delete(m.Port, uid(101)))
    store.transact(lambda h, i: (h.delete(m.Subnet, SUBNET.id), h.delete(m.Network, NET.id)))
    assert store.latest().networks == {}


def test_every_table_round_trips(store: NorthboundStore) -> None:
    seed(store)
    gw_port = port(1, "10.0.0.2", device_owner="network:router_gateway")
    vm_port = port(2, "10.0.0.3", binding_profile={"pci": "0000:01:00.1", "n": [1]}, host_id="hv1")
    sg = m.SecurityGroup(id=uid(10), project_id="p", name="web", description="d")
    rule = m.SecurityGroupRule(
        id=uid(11),
        project_id="p",
        security_group_id=sg.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=80,
        port_range_max=80,
        remote_ip_prefix="0.0.0.0/0",
        remote_group_id=sg.id,
    )
    qos = m.QosPolicy(id=uid(12), project_id="p", name="gold", shared=True)
    qrule = m.QosRule(
        id=uid(13), policy_id=qos.id, type="bandwidth_limit", max_kbps=1000, max_burst_kbps=100
    )
    router = m.Router(
        id=uid(14),
        project_id="p",
        name="r",
        external_network_id=NET.id,
        gateway_port_id=gw_port.id,
        routes=(("10.8.0.0/16", "10.0.0.8"),),
    )
    iface = m.RouterInterface(
        id=uid(15), router_id=router.id, port_id=vm_port.id, subnet_id=SUBNET.id
    )
    fip = m.FloatingIP(
        id=uid(16),
        project_id="p",
        floating_network_id=NET.id,
        floating_ip_address="10.0.0.100",
        port_id=vm_port.id,
        fixed_ip_address="10.0.0.3",
        router_id=router.id,
    )
    pf = m.PortForwarding(
        id=uid(17),
        floatingip_id=fip.id,
        protocol="tcp",
        external_port=2222,
        internal_port=22,
        internal_ip_address="10.0.0.3",
        internal_port_id=vm_port.id,
        description="ssh",
    )
    chassis = m.Chassis(
        name="hv1",
        remote="tcp:192.0.2.1:6640",
        encap_ip="192.0.2.1",
        bridge_mappings=(("physnet1", "br-ex"),),
    )

    def write(h: TxnHelper, intent: m.Intent) -> None:
        for obj in (gw_port, vm_port, sg, rule, qos, qrule, router, iface, fip, pf, chassis):
            h.put(obj)

    store.transact(write)
    snap = store.latest()
    assert cleared(snap.ports[vm_port.id]) == vm_port and cleared(snap.ports[gw_port.id]) == gw_port
    assert snap.security_groups[sg.id] == sg and cleared(snap.security_group_rules[rule.id]) == rule
    assert snap.qos_policies[qos.id] == qos and snap.qos_rules[qrule.id] == qrule
    assert cleared(snap.routers[router.id]) == m.Router(
        **{**router.__dict__, "external_fixed_ips": gw_port.fixed_ips}
    )
    # a router with a gateway gets a NAT zone, from the networks' conntrack zone space
    assert snap.routers[router.id].snat_zone not in (0, snap.networks[NET.id].ct_zone)
    assert snap.router_interfaces[iface.id] == iface and snap.floating_ips[fip.id] == fip
    assert snap.port_forwardings[pf.id] == pf
    assert snap.chassis["hv1"] == chassis
    # the router's external_fixed_ips follow its gateway port's addresses; another
    # port's new address leaves the router as it was (the same object: not decoded again)
    before = store.latest().routers[router.id]
    codec = BY_TABLE["Router"]
    decoded: list[object] = []
    real = codec.decode

    def counting(*args: object, **kw: object) -> object:
        decoded.append(args[0])
        return real(*args, **kw)  # type: ignore[arg-type]

    object.__setattr__(codec, "decode", counting)
    try:
        store.transact(lambda h, i: h.put(port(20, "10.0.0.20")))
        assert store.latest().routers[router.id] is before
        assert decoded == [], "a port's address change decoded every router again"
    finally:
        object.__delattr__(codec, "decode")
    moved = dataclasses.replace(gw_port, fixed_ips=(m.FixedIP(SUBNET.id, "10.0.0.77"),))
    store.transact(lambda h, i: h.put(moved))
    assert store.latest().routers[router.id].external_fixed_ips == moved.fixed_ips
    # a weak reference: deleting the port disassociates the floating IP, as Neutron does
    store.transact(
        lambda h, i: (h.delete(m.PortForwarding, pf.id), h.delete(m.RouterInterface, iface.id),
                      h.delete(m.Port, vm_port.id))
    )
    assert store.latest().floating_ips[fip.id].port_id is None
    # chassis are keyed by name: a second put updates in place
    store.transact(
        lambda h, i: h.put(m.Chassis(name="hv1", remote="tcp:192.0.2.1:6640", encap_ip="192.0.2.9"))
    )
    assert (
        store.latest().chassis["hv1"].encap_ip == "192.0.2.9" and len(store.latest().chassis) == 1
    )


def test_helper_current_sees_its_own_pending_writes(store: NorthboundStore) -> None:
    seen: list[int] = []

    def write(h: TxnHelper, intent: m.Intent) -> None:
        h.put(NET)
        h.put(SUBNET)
        seen.append(len(h.current().networks))
        h.put(port(1, "10.0.0.2"))
        seen.append(len(h.current().ports))
        h.delete(m.Port, uid(101))
        seen.append(len(h.current().ports))
        assert intent.networks == {}  # the base snapshot is immutable

    store.transact(write)
    assert seen == [1, 1, 0] and store.latest().ports == {}


# -- snapshots ---------------------------------------------------------------------
def test_unchanged_tables_are_shared_between_snapshots(store: NorthboundStore) -> None:
    seed(store)
    s1 = store.latest()
    store.transact(lambda h, i: h.put(port(1, "10.0.0.2")))
    s2 = store.latest()
    assert s2.generation > s1.generation
    assert s2.networks is s1.networks and s2.subnets is s1.subnets
    assert s2.ports is not s1.ports


def test_subscribers_get_every_snapshot_in_order(store: NorthboundStore) -> None:
    got: list[int] = []
    done = threading.Event()

    def on_change(intent: m.Intent) -> None:
        got.append(intent.generation)
        if len(intent.ports) == 3:
            done.set()

    unsubscribe = store.subscribe(on_change)
    seed(store)
    for n in range(3):
        store.transact(lambda h, i, n=n: h.put(port(n, f"10.0.0.{n + 2}")))
    assert done.wait(5)
    assert got == sorted(set(got)) and got[-1] == store.latest().generation
    unsubscribe()
    store.transact(lambda h, i: h.put(port(9, "10.0.0.99")))
    time.sleep(0.2)
    assert got[-1] < store.latest().generation


def test_a_second_controller_sees_writes_and_races_are_caught(
    store: NorthboundStore, db: EmbeddedOvsdb
) -> None:
    other = NorthboundStore(db.remote).connect(10)
    try:
        seen = threading.Event()
        other.subscribe(lambda i: seen.set() if NET.id in i.networks else None)
        seed(store)
        assert seen.wait(5)
        stale = other.latest()

        def racer(h: TxnHelper, intent: m.Intent) -> None:
            h.put(port(2, "10.0.0.2"))

        store.transact(lambda h, i: h.put(port(1, "10.0.0.2")))
        assert stale.ports == {}
        with pytest.raises(ConstraintViolation):
            other.transact(racer)
    finally:
        other.close()


def test_a_write_on_a_large_store_stays_cheap(store: NorthboundStore) -> None:
    seed(store)

    def bulk(h: TxnHelper, intent: m.Intent) -> None:
        for n in range(3000):
            h.put(
                m.Port(
                    id=str(uuid.uuid4()),
                    project_id="p",
                    network_id=NET.id,
                    name="",
                    mac_address=f"fa:16:3e:01:{n // 256:02x}:{n % 256:02x}",
                    fixed_ips=(m.FixedIP(SUBNET.id, f"10.1.{n // 256}.{n % 256}"),),
                )
            )

    store.transact(bulk, timeout=120)
    assert len(store.latest().ports) == 3000
    started = time.monotonic()
    for n in range(10):
        store.transact(lambda h, i, n=n: h.put(port(n, f"10.0.0.{n + 2}")))
    per_write = (time.monotonic() - started) / 10
    assert per_write < 0.25, f"{per_write * 1000:.0f} ms per write with 3000 ports"


def test_connection_losses_count_a_session_the_server_dropped(store: NorthboundStore) -> None:
    """The counter hostile-input tests watch must see a drop, even one healed in one run().

    ovsdb-server closes the session on a NUL in a string (the REST edge refuses it;
    this writes straight through the store to prove the counter would notice).
    """
    seed(store)
    assert store.health()["connection_losses"] == 0
    bad = m.Network(id=uid(9), project_id="p", name="a\x00b", network_type="vxlan",
                    segmentation_id=9)

    def write(h: TxnHelper, intent: m.Intent) -> None:
        h.put(bad)

    with pytest.raises(Exception):  # noqa: B017 (the exact failure is python-ovs's)
        store.transact(write, timeout=5)
    deadline = time.monotonic() + 30
    while store.health()["connection_losses"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.health()["connection_losses"] >= 1
    while not store.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert NET.id in store.latest().networks and uid(9) not in store.latest().networks
