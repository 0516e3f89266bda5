"""Which tunnel ports each chassis should have: a full mesh per tunnel type in use.

Pure, like the flow compiler: the chassis sessions only apply the difference.
Ports are named from a hash of the remote chassis so the name is stable across
restarts and fits Linux's 15-character limit, and they carry the remote chassis'
name in external_ids so the topology can tell which tunnel leads where.

Every tunnel copies the inner packet's DSCP to the outer IP header (OVS
`options:tos=inherit`), so a QoS policy's mark reaches the underlay. A tunnel made
before Loom set it is updated in place, once, not recreated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from controller.intent import Intent
from controller.topology import TUNNEL_TYPES, TopologyView

_TYPE_LETTER = {"vxlan": "v", "gre": "g", "geneve": "n"}
TOS_INHERIT = "inherit"  # options:tos: outer DSCP = inner DSCP (ECN is OVS's own)


@dataclass(frozen=True, order=True)
class TunnelPort:
    name: str
    tunnel_type: str
    remote_chassis: str
    remote_ip: str
    tos: str = TOS_INHERIT  # options:tos


def tunnel_port_name(tunnel_type: str, remote_chassis: str) -> str:
    digest = hashlib.sha1(remote_chassis.encode()).hexdigest()[:10]
    return f"l{_TYPE_LETTER[tunnel_type]}-{digest}"


def tunnel_types_in_use(intent: Intent) -> tuple[str, ...]:
    used = {n.network_type for n in intent.networks.values()}
    return tuple(t for t in TUNNEL_TYPES if t in used)


def desired_tunnels(intent: Intent, topo: TopologyView) -> dict[str, frozenset[TunnelPort]]:
    """chassis name -> the tunnel ports its integration bridge should hold."""
    types = tunnel_types_in_use(intent)
    endpoints = {name: ch.encap_ip for name, ch in topo.chassis.items() if ch.encap_ip}
    out: dict[str, frozenset[TunnelPort]] = {}
    for name in topo.chassis:
        ports = set()
        if name in endpoints:
            for remote, ip in endpoints.items():
                if remote == name:
                    continue
                for t in types:
                    ports.add(TunnelPort(tunnel_port_name(t, remote), t, remote, ip))
        out[name] = frozenset(ports)
    return out
