"""Assemble each switch's desired state from the per-port and per-network pieces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from controller import pipeline as pl
from controller.compiler.network import arp_reply_flows, flood_flow
from controller.compiler.ports import port_flows
from controller.flows import Flow, Group, Match, Meter
from controller.intent import Intent
from controller.topology import TopologyView

FlowKey = tuple[str, int, Match]


@dataclass(frozen=True)
class DesiredSwitch:
    """Everything one switch should hold, and the inputs' versions it was built from."""

    datapath_id: int
    generation: int
    topology_version: int
    flows: Mapping[FlowKey, Flow] = field(default_factory=lambda: MappingProxyType({}))
    groups: Mapping[int, Group] = field(default_factory=lambda: MappingProxyType({}))
    meters: Mapping[int, Meter] = field(default_factory=lambda: MappingProxyType({}))
    port_keys: frozenset[int] = frozenset()  # intent ports whose flows are in `flows`


class CompileError(RuntimeError):
    """Two flows with one OpenFlow key but different contents: a compiler bug."""


def compile_switch(intent: Intent, topo: TopologyView, datapath_id: int) -> DesiredSwitch:
    flows: dict[FlowKey, Flow] = {}

    def add(flow: Flow) -> None:
        old = flows.setdefault(flow.key, flow)
        if old is not flow and old != flow:
            raise CompileError(f"conflicting flows for {flow.key}: {old} vs {flow}")

    for f in pl.miss_flows():
        add(f)

    local_by_net: dict[str, list[int]] = {}
    port_keys = set()
    for binding in topo.bindings_on(datapath_id):
        port = intent.ports.get(binding.port_id)
        if port is None or not port.admin_state_up:
            continue
        network = intent.networks.get(port.network_id)
        if network is None or not network.admin_state_up:
            continue
        for f in port_flows(port, network, binding.ofport):
            add(f)
        local_by_net.setdefault(network.id, []).append(binding.ofport)
        port_keys.add(port.key)

    for net_id, ofports in sorted(local_by_net.items()):
        network = intent.networks[net_id]
        add(flood_flow(network, tuple(sorted(ofports))))
        for port in intent.ports_on_network(net_id):
            for f in arp_reply_flows(port, network):
                add(f)

    return DesiredSwitch(
        datapath_id=datapath_id,
        generation=intent.generation,
        topology_version=topo.version,
        flows=MappingProxyType(flows),
        port_keys=frozenset(port_keys),
    )


def compile_all(intent: Intent, topo: TopologyView) -> dict[int, DesiredSwitch]:
    return {dpid: compile_switch(intent, topo, dpid) for dpid in sorted(topo.switches)}
