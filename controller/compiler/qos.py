"""QoS: which policy governs a port, and what it becomes on the switch and the chassis.

- Egress limit (from the VM): an OpenFlow meter with one drop band, applied by the
  port's classify flow, so every frame the guest sends is policed once.
- Minimum egress guarantee: the port's packets are put in a queue of their own
  (set_queue at classify); every shaped port on the chassis gets that queue with
  the guaranteed min-rate, so senders sharing a limited link each get their share.
- Ingress limit (to the VM): OVSDB QoS linux-htb on the port's interface, with
  max-rate; ingress_policing_rate does not work on the userspace datapath.
- DSCP: set on the port's IP traffic as it passes port security.
A port's own policy overrides its network's, as in Neutron.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from controller import pipeline as pl
from controller.flows import Meter
from controller.intent import Intent, Network, Port, QosRule

BURST_SHARE_OF_RATE = 0.8  # Neutron's OVS agent default when max_burst_kbps is 0
LINK_RATE_BPS = 10_000_000_000  # the ceiling of a shaped port's default queue


@dataclass(frozen=True)
class PortQos:
    """What a policy asks of one port's flows on its switch."""

    meter_id: Optional[int] = None
    dscp: Optional[int] = None
    queue_id: Optional[int] = None


@dataclass(frozen=True)
class Shaping:
    """linux-htb on one interface: its ceiling and the guaranteed queues of senders."""

    port_id: str
    max_bps: int
    queues: tuple[tuple[int, int, int], ...]  # (queue id, min bps, max bps)


class PolicyIndex:
    def __init__(self, intent: Intent) -> None:
        self.rules: dict[str, list[QosRule]] = {}
        for rule in sorted(intent.qos_rules.values(), key=lambda r: r.id):
            self.rules.setdefault(rule.policy_id, []).append(rule)

    def rules_for(self, port: Port, network: Network) -> list[QosRule]:
        policy = port.qos_policy_id or network.qos_policy_id
        return self.rules.get(policy, []) if policy else []


def _find(rules: list[QosRule], kind: str, direction: str = "egress") -> Optional[QosRule]:
    for r in rules:
        if r.type == kind and (r.direction or "egress") == direction:
            return r
    return None


def _stable_id(key: int, span: int, taken: set[int]) -> int:
    value = key % span + 1
    while value in taken:
        value = value % span + 1
    taken.add(value)
    return value


@dataclass(frozen=True)
class SwitchQos:
    per_port: dict[str, PortQos]
    meters: dict[int, Meter]
    shaping: dict[str, Shaping]  # interface name -> shaping


def switch_qos(local: list[tuple[Port, Network, str]], index: PolicyIndex) -> SwitchQos:
    """`local`: (port, network, interface name) for each port bound on the switch."""
    per_port: dict[str, PortQos] = {}
    meters: dict[int, Meter] = {}
    meter_ids: set[int] = set()
    queue_ids: set[int] = set()
    guarantees: list[tuple[int, int]] = []  # (queue id, min bps)
    limited: list[tuple[Port, str, int]] = []
    for port, network, _iface in sorted(local, key=lambda t: t[0].id):
        rules = index.rules_for(port, network)
        if not rules:
            continue
        meter_id = dscp = queue_id = None
        limit = _find(rules, "bandwidth_limit", "egress")
        if limit is not None and limit.max_kbps:
            meter_id = _stable_id(port.key, pl.METER_ID_SPAN, meter_ids)
            burst = limit.max_burst_kbps or max(1, int(limit.max_kbps * BURST_SHARE_OF_RATE))
            meters[meter_id] = Meter(meter_id, limit.max_kbps, burst,
                                     owner=pl.cookie(pl.Owner.QOS_POLICY, port.key))
        mark = next((r for r in rules if r.type == "dscp_marking"), None)
        if mark is not None and mark.dscp_mark is not None:
            dscp = mark.dscp_mark
        minimum = _find(rules, "minimum_bandwidth", "egress")
        if minimum is not None and minimum.min_kbps:
            queue_id = _stable_id(port.key, pl.QUEUE_ID_SPAN, queue_ids)
            guarantees.append((queue_id, minimum.min_kbps * 1000))
        ingress = _find(rules, "bandwidth_limit", "ingress")
        if ingress is not None and ingress.max_kbps:
            limited.append((port, _iface, ingress.max_kbps * 1000))
        per_port[port.id] = PortQos(meter_id, dscp, queue_id)
    shaping = {}
    for port, iface, max_bps in limited:
        queues = tuple(sorted((qid, min(min_bps, max_bps), max_bps)
                              for qid, min_bps in guarantees))
        shaping[iface] = Shaping(port.id, max_bps, queues)
    return SwitchQos(per_port, meters, shaping)
