"""`GET /v1/switches/<dpid>/flows` names the owner of every flow, whatever its kind.

The engine kept an owner index of its own that knew ports and networks only, so the
flows of a router, a security-group rule or a QoS policy showed `"id": null`; it now
reads the trace's index (one index for every kind a cookie names).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from test_compiler_routing import D1, world

from controller import pipeline as pl
from controller.compiler.incremental import Compiler
from controller.engine import Engine
from controller.intent import object_key
from controller.topology import Topology


def test_every_flow_of_a_routed_switch_names_its_intent_object() -> None:
    intent, topo = world()
    compiler = Compiler()
    compiler.update(intent, topo, None, None)
    desired = compiler.desired(D1)
    assert desired is not None
    worker = SimpleNamespace(datapath_id=D1, channel=SimpleNamespace(closed=threading.Event()),
                             sync=SimpleNamespace(installed=dict(desired.flows)))
    engine = Engine(SimpleNamespace(latest=lambda: intent), Topology())
    engine._workers = {D1: worker}  # type: ignore[dict-item]
    flows = engine.installed_flows(D1)
    assert flows is not None and len(flows) == len(desired.flows)
    kinds = {f["owner"]["kind"] for f in flows}
    assert {"router", "port", "network", "pipeline"} <= kinds, kinds
    for f in flows:
        owner = f["owner"]
        if owner["kind"] == "pipeline":
            assert owner["what"], f
            continue
        assert owner["id"] is not None, f  # every object the flows were compiled from
        kind, key = pl.cookie_owner(int(f["cookie"], 16))
        table = {"router": intent.routers, "port": intent.ports, "network": intent.networks,
                 "security_group_rule": intent.security_group_rules}[kind]
        assert owner["id"] in table and object_key(owner["id"]) == key, f
    routers = {f["owner"]["id"] for f in flows if f["owner"]["kind"] == "router"}
    assert routers <= set(intent.routers) and routers
