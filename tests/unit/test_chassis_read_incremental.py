"""The chassis' state kept from the rows that changed equals a full read, always.

`ChassisReader` (controller/southbound/chassis.py) reads, after each change the IDL
sees, only the rows that change touched; `read_state` reads every row. A private
ovsdb-server with the Open_vSwitch schema is changed at random with ovs-vsctl (ports
plugged and unplugged, moved between bridges, bonds, tunnels, provider patches,
QoS rows of Loom's and of others, bridges made and deleted, the chassis' settings)
while an IDL follows it; after every update both reads are compared. A restart of
the server (the IDL drops every row and reads them again) is a full read, and
equal too.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ovs.poller
import pytest

from controller.southbound.chassis import (
    BRIDGE_MAPPINGS_KEY,
    PHYSNET_KEY,
    QOS_OWNER_KEY,
    REMOTE_CHASSIS_KEY,
    ChassisReader,
    _WatchedIdl,
    read_state,
    schema_helper,
)
from controller.store import EmbeddedOvsdb

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
SEQ_KEY = "loom-test-seq"

pytestmark = pytest.mark.skipif(not VSWITCH_SCHEMA.is_file(), reason="no vswitch schema")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedOvsdb]:
    s = EmbeddedOvsdb(tmp_path / "ovs", schema=VSWITCH_SCHEMA).start()
    yield s
    s.stop()


class Follower:
    """An IDL on the server, driven from the test's thread; after every change it
    sees, the incremental read is compared with a full one."""

    def __init__(self, remote: str) -> None:
        self.remote = remote
        self.idl = _WatchedIdl(remote, schema_helper(remote))
        self.reader = ChassisReader(remote, "br-int")
        self.idl.reader = self.reader
        self.idl.on_change = self._changed
        self.compared = 0
        self.last: Any = None
        self.seen: set[str] = set()  # the _BridgeConfig fields seen not empty

    def _changed(self, idl: Any) -> None:
        got = self.reader.read(idl)
        want = read_state(idl, self.remote, "br-int")
        assert got[0] == want[0]
        assert got[1] == want[1]
        self.compared += 1
        self.last = got
        config = got[1]
        self.seen.update(k for k in ("shaping", "foreign_qos", "orphans", "tunnels",
                                     "physnet_ports", "controller_links")
                         if getattr(config, k))

    def sync(self, seq: int, timeout: float = 10.0) -> None:
        """Run the IDL until it has seen the write that set the marker to `seq`."""
        deadline = time.monotonic() + timeout
        while True:
            self.idl.run()
            rows = list(self.idl.tables["Open_vSwitch"].rows.values())
            if rows and dict(rows[0].external_ids).get(SEQ_KEY) == str(seq):
                return
            assert time.monotonic() < deadline, "the IDL never caught up"
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(50)
            poller.block()


class Chassis:
    def __init__(self, server: EmbeddedOvsdb) -> None:
        self.server = server
        self.seq = 0
        self.vsctl("init")
        self.vsctl("set", "Open_vSwitch", ".", "external_ids:system-id=hv-test")

    def vsctl(self, *args: str, check: bool = True) -> bool:
        r = subprocess.run(["ovs-vsctl", f"--db={self.server.remote}", "--no-wait",
                            "--timeout=10", *args], capture_output=True, text=True, check=False)
        assert r.returncode == 0 or not check, r.stderr
        return r.returncode == 0

    def ports(self, bridge: str) -> list[str]:
        return subprocess.run(["ovs-vsctl", f"--db={self.server.remote}", "list-ports", bridge],
                              capture_output=True, text=True, check=False).stdout.split()

    def uuids(self, table: str) -> list[str]:
        r = subprocess.run(["ovs-vsctl", f"--db={self.server.remote}", "--bare",
                            "--columns=_uuid", "find", table],
                           capture_output=True, text=True, check=False)
        return r.stdout.split()

    def mark(self) -> int:
        self.seq += 1
        self.vsctl("set", "Open_vSwitch", ".", f"external_ids:{SEQ_KEY}={self.seq}")
        return self.seq


BRIDGES = ("br-int", "br-sink", "br-phys")


def _random_step(rng: random.Random, ch: Chassis, k: int) -> None:
    """One random change (some fail, e.g. deleting a port that is not there: fine)."""
    op = rng.choice(("add", "add", "add", "addmany", "del", "delmany", "iface_id", "ofport",
                     "move", "bond", "bond_iface", "tunnel", "physnet", "qos", "qos", "qos_foreign",
                     "qos_clear", "qos_destroy", "queue_rate", "bridge", "del_bridge",
                     "settings", "dpid", "controller", "noise"))
    port = f"p{rng.randrange(40)}"
    bridge = rng.choice(BRIDGES)
    vs = ch.vsctl
    if op == "add":
        vs("--may-exist", "add-port", bridge, port, "--", "set", "Interface", port,
           f"external_ids:iface-id=port-{rng.randrange(30)}", f"ofport={rng.randrange(1, 90)}",
           check=False)
    elif op == "addmany":
        args: list[str] = []
        for j in range(rng.randrange(2, 40)):
            name = f"m{k}x{j}"
            args += ["--", "add-port", bridge, name, "--", "set", "Interface", name,
                     f"external_ids:iface-id=many-{k}-{j}", f"ofport={100 + j}"]
        vs(*args, check=False)
    elif op == "del":
        vs("--if-exists", "del-port", port)
    elif op == "delmany":
        out = ch.ports(bridge)
        rng.shuffle(out)
        args = []
        for name in rng.sample(out, min(len(out), rng.randrange(1, 30))):
            args += ["--", "--if-exists", "del-port", name]
        if args:
            vs(*args, check=False)
    elif op == "iface_id":
        value = rng.choice((f"port-{rng.randrange(30)}", ""))
        if value:
            vs("set", "Interface", port, f"external_ids:iface-id={value}", check=False)
        else:
            vs("remove", "Interface", port, "external_ids", "iface-id", check=False)
    elif op == "ofport":
        vs("set", "Interface", port, f"ofport={rng.choice(('-1', '0', '7', '[]', '33'))}",
           check=False)
    elif op == "move":
        dst = rng.choice(BRIDGES)
        vs("--", "--id=@p", "get", "Port", port, "--", "remove", "Bridge", bridge, "ports", "@p",
           "--", "add", "Bridge", dst, "ports", "@p", check=False)
    elif op == "bond":
        vs("--may-exist", "add-bond", bridge, f"bond{k % 5}", f"b{k}a", f"b{k}b", check=False)
    elif op == "bond_iface":
        bond = f"bond{rng.randrange(5)}"
        if rng.random() < 0.5:
            vs("add-bond-iface", bond, f"bi{k}", check=False)
        else:
            ifaces = subprocess.run(
                ["ovs-vsctl", f"--db={ch.server.remote}", "get", "Port", bond, "interfaces"],
                capture_output=True, text=True, check=False).stdout.strip("[]\n ").split(", ")
            if len(ifaces) > 2:
                vs("remove", "Port", bond, "interfaces", ifaces[0], check=False)
    elif op == "tunnel":
        name = f"t{rng.randrange(6)}"
        vs("--may-exist", "add-port", "br-int", name, "--", "set", "Interface", name,
           rng.choice(("type=vxlan", "type=geneve", "type=gre")),
           f"options:remote_ip=172.31.0.{rng.randrange(9)}",
           f"options:tos={rng.choice(('inherit', '0'))}",
           f"external_ids:{REMOTE_CHASSIS_KEY}=hv{rng.randrange(4)}",
           f"ofport={rng.randrange(1, 50)}", check=False)
    elif op == "physnet":
        net = f"physnet{rng.randrange(3)}"
        name = f"lp-{net}-{rng.randrange(2)}"
        vs("--may-exist", "add-port", bridge, name, "--", "set", "Interface", name,
           "type=patch", f"options:peer=x{name}", f"external_ids:{PHYSNET_KEY}={net}",
           f"ofport={rng.randrange(1, 50)}", check=False)
    elif op in ("qos", "qos_foreign"):
        owner = "loom" if op == "qos" else "someone"
        port = rng.choice(ch.ports(rng.choice(("br-int", "br-int", bridge))) or [port])
        vs("set", "Port", port, "qos=@q", "--", "--id=@q", "create", "QoS", "type=linux-htb",
           f"other_config:max-rate={rng.randrange(1, 9) * 1000000}",
           f"external_ids:{QOS_OWNER_KEY}={owner}", "queues:0=@u0", "queues:1=@u1",
           "--", "--id=@u0", "create", "Queue", "other_config:max-rate=5000000",
           f"external_ids:{QOS_OWNER_KEY}={owner}",
           "--", "--id=@u1", "create", "Queue", "other_config:min-rate=1000",
           "other_config:max-rate=2000", f"external_ids:{QOS_OWNER_KEY}={owner}", check=False)
    elif op == "qos_clear":
        shaped = subprocess.run(["ovs-vsctl", f"--db={ch.server.remote}", "--bare",
                                 "--columns=name", "find", "Port", "qos!=[]"],
                                capture_output=True, text=True, check=False).stdout.split()
        port = rng.choice(shaped or [port])
        vs("clear", "Port", port, "qos", check=False)  # leaves the rows behind: orphans
    elif op == "qos_destroy":  # fails while a port refers to it: fine
        qos = ch.uuids("QoS")
        if qos:
            vs("destroy", "QoS", rng.choice(qos), check=False)
    elif op == "queue_rate":
        queues = ch.uuids("Queue")
        if queues:
            vs("set", "Queue", rng.choice(queues),
               f"other_config:min-rate={rng.randrange(1, 99)}", check=False)
    elif op == "bridge":
        vs("--may-exist", "add-br", bridge, check=False)
    elif op == "del_bridge":
        if rng.random() < 0.3:
            vs("--if-exists", "del-br", bridge, check=False)
    elif op == "settings":
        key, value = rng.choice((
            ("loom-encap-ip", f"10.0.0.{rng.randrange(4)}"),
            (BRIDGE_MAPPINGS_KEY, rng.choice(("physnet0:br-phys", "physnet1:br-sink,x:y", ""))),
            ("system-id", rng.choice(("hv-test", "hv-other")))))
        vs("set", "Open_vSwitch", ".", f"external_ids:{key}={value}", check=False)
    elif op == "dpid":
        vs("set", "Bridge", bridge, f"datapath_id={rng.randrange(1, 5):016x}", check=False)
    elif op == "controller":
        if rng.random() < 0.5:
            vs("set-controller", "br-int", f"tcp:127.0.0.1:{6653 + rng.randrange(2)}",
               check=False)
        else:
            vs("set", "Bridge", "br-int", f"fail_mode={rng.choice(('secure', 'standalone'))}",
               "protocols=OpenFlow13", "other_config:disable-in-band=true", check=False)
    else:  # a column the state does not read: nothing to derive again
        vs("set", "Interface", port, f"external_ids:noise={rng.randrange(99)}",
           f"mtu_request={rng.randrange(1000, 1500)}", check=False)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_read_equals_full_read(server: EmbeddedOvsdb, seed: int) -> None:
    rng = random.Random(seed)
    ch = Chassis(server)
    for bridge in BRIDGES:
        ch.vsctl("add-br", bridge)
    follower = Follower(server.remote)
    follower.sync(ch.mark())
    first = follower.reader.full_reads  # (the IDL's first rows arrive as a replacement)
    for k in range(100):
        _random_step(rng, ch, k)
        follower.sync(ch.mark())
    assert follower.compared > 100
    assert follower.seen == {"shaping", "foreign_qos", "orphans", "tunnels", "physnet_ports",
                             "controller_links"}  # the run went through all of it
    assert follower.reader.full_reads == first  # every read since was incremental
    state, config = follower.last
    assert any(b.interfaces for b in state.bridges)  # the run did put ports on bridges


def test_one_port_plugged_in_is_read_alone(server: EmbeddedOvsdb) -> None:
    """Plugging a guest in re-derives that interface only: the others' states are the
    same objects as before, and so are the bridges it is not on."""
    ch = Chassis(server)
    ch.vsctl("add-br", "br-int")
    ch.vsctl("add-br", "br-sink")
    args: list[str] = []
    for i in range(200):
        args += ["--", "add-port", "br-int" if i % 2 else "br-sink", f"v{i}", "--", "set",
                 "Interface", f"v{i}", f"external_ids:iface-id=port-{i}", f"ofport={i + 1}"]
    ch.vsctl(*args)
    follower = Follower(server.remote)
    follower.sync(ch.mark())
    first = follower.reader.full_reads
    before = {b.name: b for b in follower.last[0].bridges}
    ch.vsctl("add-port", "br-int", "new", "--", "set", "Interface", "new",
             "external_ids:iface-id=port-new", "ofport=999")
    follower.sync(ch.mark())
    after = {b.name: b for b in follower.last[0].bridges}
    assert after["br-sink"] is before["br-sink"]
    old = {i.name: i for i in before["br-int"].interfaces}
    new = {i.name: i for i in after["br-int"].interfaces}
    assert set(new) - set(old) == {"new"}
    assert all(new[n] is old[n] for n in old)
    assert follower.reader.full_reads == first


def test_a_server_restart_is_read_in_full_and_still_equal(server: EmbeddedOvsdb) -> None:
    ch = Chassis(server)
    ch.vsctl("add-br", "br-int")
    ch.vsctl("add-port", "br-int", "a", "--", "set", "Interface", "a",
             "external_ids:iface-id=port-a", "ofport=1")
    follower = Follower(server.remote)
    follower.sync(ch.mark())
    first = follower.reader.full_reads
    server.stop()
    server.restart()
    ch.vsctl("add-port", "br-int", "b", "--", "set", "Interface", "b",
             "external_ids:iface-id=port-b", "ofport=2")
    ch.vsctl("del-port", "a")
    follower.sync(ch.mark(), timeout=30)
    assert follower.reader.full_reads > first
    (br,) = follower.last[0].bridges
    assert [i.name for i in br.interfaces] == ["b", "br-int"]  # (and the local port)


def test_a_shaped_port_moved_off_the_integration_bridge(server: EmbeddedOvsdb) -> None:
    """The QoS part is read again when a port with a QoS row changes bridge (nothing
    else about the port, its interface or its QoS row changed)."""
    ch = Chassis(server)
    ch.vsctl("add-br", "br-int")
    ch.vsctl("add-br", "br-sink")
    ch.vsctl("add-port", "br-int", "vm1", "--", "set", "Port", "vm1", "qos=@q",
             "--", "--id=@q", "create", "QoS", "type=linux-htb", "other_config:max-rate=1000",
             f"external_ids:{QOS_OWNER_KEY}=loom")
    follower = Follower(server.remote)
    follower.sync(ch.mark())
    first = follower.reader.full_reads
    assert [name for name, _ in follower.last[1].shaping] == ["vm1"]
    ch.vsctl("--", "--id=@p", "get", "Port", "vm1", "--", "remove", "Bridge", "br-int",
             "ports", "@p", "--", "add", "Bridge", "br-sink", "ports", "@p")
    follower.sync(ch.mark())
    assert follower.last[1].shaping == ()
    ch.vsctl("--", "--id=@p", "get", "Port", "vm1", "--", "remove", "Bridge", "br-sink",
             "ports", "@p", "--", "add", "Bridge", "br-int", "ports", "@p")
    follower.sync(ch.mark())
    assert [name for name, _ in follower.last[1].shaping] == ["vm1"]
    assert follower.reader.full_reads == first
