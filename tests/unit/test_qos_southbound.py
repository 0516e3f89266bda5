"""QoS on the chassis' OVSDB, as the session applies it.

- Tunnel ports copy the inner DSCP to the outer header (options:tos=inherit); a tunnel
  made without it is corrected in place, once: not recreated, and not touched again
  while it holds.
- linux-htb rows follow their port: none is made for a port that is not on the
  bridge, and the rows a deleted port leaves behind (QoS and Queue are root tables)
  are removed.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from types import MappingProxyType, SimpleNamespace
from typing import Any

from controller.compiler.qos import Shaping
from controller.compiler.tunnels import TOS_INHERIT, desired_tunnels, tunnel_port_name
from controller.intent import Intent, Network
from controller.southbound.chassis import (
    QOS_OWNER_KEY,
    REMOTE_CHASSIS_KEY,
    BridgeSettings,
    ChassisSession,
    _BridgeConfig,
    _orphan_qos,
    tunnel_options,
)
from controller.topology import ChassisView, SwitchView, TopologyView


def _mesh(net_types: tuple[str, ...]):
    nets = {}
    for i, t in enumerate(net_types):
        n = Network(str(uuid.uuid5(uuid.NAMESPACE_OID, f"tos-{t}")), "p", t, t, 100 + i)
        nets[n.id] = n
    intent = Intent(1, networks=MappingProxyType(nets))
    chassis = {f"hv{i}": ChassisView(f"hv{i}", f"172.31.0.{i}", i) for i in (1, 2)}
    topo = TopologyView(1, MappingProxyType({i: SwitchView(i, f"hv{i}", "br-int")
                                            for i in (1, 2)}),
                        chassis=MappingProxyType(chassis))
    return desired_tunnels(intent, topo)


def test_every_tunnel_type_inherits_the_inner_dscp():
    mesh = _mesh(("vxlan", "gre", "geneve"))
    assert {t.tunnel_type for t in mesh["hv1"]} == {"vxlan", "gre", "geneve"}
    for t in mesh["hv1"]:
        assert t.tos == TOS_INHERIT == "inherit"
        assert tunnel_options(t) == {"remote_ip": "172.31.0.2", "key": "flow", "tos": "inherit"}


class _Api:
    """Records what _ensure_tunnels asks of ovsdbapp."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.transactions = 0

    @contextmanager
    def transaction(self, check_error: bool = False):  # type: ignore[no-untyped-def]
        self.transactions += 1
        yield self

    def add(self, cmd: Any) -> Any:
        return cmd

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        def call(*args: Any, **kwargs: Any) -> tuple[str, tuple[Any, ...]]:
            self.calls.append((name, args))
            return (name, args)
        return call


def _session(wanted) -> tuple[ChassisSession, _Api]:  # type: ignore[no-untyped-def]
    s = ChassisSession("unix:/nonexistent", BridgeSettings(), on_state=lambda _s: None)
    api = _Api()
    s._api = api  # type: ignore[assignment]
    s.set_tunnels(wanted)
    return s, api


def test_a_tunnel_without_tos_is_updated_in_place_once():
    wanted = _mesh(("vxlan",))["hv1"]
    (t,) = wanted
    assert t.name == tunnel_port_name("vxlan", "hv2")
    s, api = _session(wanted)
    before = _BridgeConfig(exists=True, tunnels=frozenset(
        {(t.name, "vxlan", "hv2", "172.31.0.2", "")}))  # made by an older Loom
    s._ensure_tunnels(before)
    assert api.transactions == 1
    assert [c[0] for c in api.calls] == ["db_set"]  # no del_port, no add_port
    (_, (table, name, *cols)) = api.calls[0]
    assert (table, name) == ("Interface", t.name)
    assert dict(cols)["options"] == {"remote_ip": "172.31.0.2", "key": "flow",
                                     "tos": "inherit"}
    assert dict(cols)["external_ids"] == {REMOTE_CHASSIS_KEY: "hv2"}
    # read back with tos set: nothing more to do, not even a transaction
    after = _BridgeConfig(exists=True, tunnels=frozenset(
        {(t.name, "vxlan", "hv2", "172.31.0.2", "inherit")}))
    s._ensure_tunnels(after)
    assert api.transactions == 1 and len(api.calls) == 1


def test_a_new_tunnel_is_created_with_tos():
    wanted = _mesh(("geneve",))["hv1"]
    s, api = _session(wanted)
    s._ensure_tunnels(_BridgeConfig(exists=True))
    assert [c[0] for c in api.calls] == ["add_port", "db_set"]
    assert dict(api.calls[1][1][2:])["options"]["tos"] == "inherit"


# ---------------------------------------------------------------- linux-htb rows
def _shaping_session(wanted: dict[str, Shaping]) -> tuple[ChassisSession, _Api]:
    s = ChassisSession("unix:/nonexistent", BridgeSettings(), on_state=lambda _s: None)
    api = _Api()
    s._api = api  # type: ignore[assignment]
    s.set_shaping(wanted)
    return s, api


def test_no_qos_row_for_a_port_that_is_not_on_the_bridge():
    """The port moved away before the intent caught up: a row made now would be
    referred to by nothing, forever."""
    s, api = _shaping_session({"tmover": Shaping("p1", 20_000_000)})
    s._ensure_shaping(_BridgeConfig(exists=True, ports=frozenset({"tother"})))
    assert api.transactions == 0
    s._ensure_shaping(_BridgeConfig(exists=True, ports=frozenset({"tmover"})))
    assert [c[0] for c in api.calls] == ["db_create", "db_create", "db_set"]


def test_leftover_rows_are_destroyed_and_nothing_else():
    s, api = _shaping_session({})
    s._ensure_shaping(_BridgeConfig(exists=True, orphans=(("QoS", "q1"), ("Queue", "u1"))))
    assert api.calls == [("db_destroy", ("QoS", "q1")), ("db_destroy", ("Queue", "u1"))]
    s._ensure_shaping(_BridgeConfig(exists=True))  # all clean: no transaction
    assert api.transactions == 1


def _row(uuid: str, ours: bool = True, **cols: Any) -> SimpleNamespace:
    return SimpleNamespace(uuid=uuid, external_ids={QOS_OWNER_KEY: "loom"} if ours else {},
                           **cols)


def test_orphans_are_loom_rows_nothing_refers_to():
    q_used, q_orphan, q_foreign = "Q1", "Q2", "Q3"
    u_used, u_orphan, u_of_orphan, u_foreign = "U1", "U2", "U3", "U4"
    queues = {u: _row(u) for u in (u_used, u_orphan, u_of_orphan)}
    queues[u_foreign] = _row(u_foreign, ours=False)
    qos = {
        q_used: _row(q_used, queues={0: queues[u_used]}),
        q_orphan: _row(q_orphan, queues={0: queues[u_of_orphan]}),
        q_foreign: _row(q_foreign, ours=False, queues={0: queues[u_foreign]}),
    }
    ports = {"p1": SimpleNamespace(qos=[qos[q_used]]), "p2": SimpleNamespace(qos=[]),
             "p3": SimpleNamespace(qos=[qos[q_foreign]])}
    idl = SimpleNamespace(tables={
        "QoS": SimpleNamespace(rows=qos), "Queue": SimpleNamespace(rows=queues),
        "Port": SimpleNamespace(rows=ports)})
    assert _orphan_qos(idl) == (("QoS", q_orphan), ("Queue", u_orphan), ("Queue", u_of_orphan))
