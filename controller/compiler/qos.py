"""QoS: which policy governs a port, and what it becomes on the switch and the chassis.

- Egress limit (from the VM): an OpenFlow meter with one drop band, applied by the
  port's classify flow, so every frame the guest sends is policed once.
- Ingress limit (to the VM): OVSDB QoS linux-htb on the port's interface, with
  max-rate; ingress_policing_rate does not work on the userspace datapath.
- Minimum egress guarantee: on the userspace datapath `set_queue` never reaches
  the HTB classes (ovs-vswitchd sends through AF_PACKET, which carries no per-packet
  priority: measured, the guaranteed classes saw 0 bytes), so guarantees are kept
  with meters instead. Where a limited port (ingress limit L) is shared, each
  guaranteed sender S is capped at L minus the other senders' guarantees, and all
  other traffic to the port at L minus all guarantees. With two guaranteed senders
  this guarantees both minimums exactly; with more it is close, and unlike a strict
  split it still lets a lone sender use most of the link.
- DSCP: set on the port's IP traffic as it passes port security.
A port's own policy overrides its network's, as in Neutron.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from controller import pipeline as pl
from controller.flows import Meter, match
from controller.intent import Intent, Network, Port, QosRule

BURST_SHARE_OF_RATE = 0.8  # Neutron's OVS agent default when max_burst_kbps is 0
LINK_RATE_BPS = 10_000_000_000  # the ceiling of a shaped port's default queue


@dataclass(frozen=True)
class PortQos:
    """What a policy asks of one port's flows on its switch."""

    meter_id: Optional[int] = None
    dscp: Optional[int] = None
    queue_id: Optional[int] = None  # kept for kernel datapaths; unused on netdev


@dataclass(frozen=True)
class Shaping:
    """linux-htb on one interface: its ceiling (and queues, none on netdev)."""

    port_id: str
    max_bps: int
    queues: tuple[tuple[int, int, int], ...] = ()  # (queue id, min bps, max bps)


@dataclass(frozen=True)
class ShareCap:
    """A meter on traffic into a limited port: from one sender, or (sender None) the rest."""

    dst_ofport: int
    src_ofport: Optional[int]
    meter_id: int


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
    caps: tuple[ShareCap, ...] = ()


def switch_qos(local: list[tuple[Port, Network, str, int]], index: PolicyIndex) -> SwitchQos:
    """`local`: (port, network, interface name, ofport) for each port bound on the switch."""
    per_port: dict[str, PortQos] = {}
    meters: dict[int, Meter] = {}
    meter_ids: set[int] = set()
    guarantees: list[tuple[Port, int, int]] = []  # (sender, its ofport, min kbps)
    limited: list[tuple[Port, str, int, int]] = []  # (port, iface, ofport, max kbps)
    for port, network, _iface, ofport in sorted(local, key=lambda t: t[0].id):
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
            guarantees.append((port, ofport, minimum.min_kbps))
        ingress = _find(rules, "bandwidth_limit", "ingress")
        if ingress is not None and ingress.max_kbps:
            limited.append((port, _iface, ofport, ingress.max_kbps))
        per_port[port.id] = PortQos(meter_id, dscp, queue_id)
    shaping = {}
    caps: list[ShareCap] = []
    for port, iface, ofport, max_kbps in limited:
        shaping[iface] = Shaping(port.id, max_kbps * 1000)
        senders = [(s, sp, g) for s, sp, g in guarantees if sp != ofport]
        if not senders:
            continue
        total = sum(g for _, _, g in senders)
        for sender, sender_ofport, _g in senders:
            others = total - _g
            cap = max(1, max_kbps - others)
            mid = _stable_id(sender.key ^ (port.key << 1), pl.METER_ID_SPAN, meter_ids)
            meters[mid] = Meter(mid, cap, max(1, int(cap * BURST_SHARE_OF_RATE)),
                                owner=pl.cookie(pl.Owner.QOS_POLICY, sender.key))
            caps.append(ShareCap(ofport, sender_ofport, mid))
        rest = max(1, max_kbps - total)
        mid = _stable_id(port.key ^ 0x5EED, pl.METER_ID_SPAN, meter_ids)
        meters[mid] = Meter(mid, rest, max(1, int(rest * BURST_SHARE_OF_RATE)),
                            owner=pl.cookie(pl.Owner.QOS_POLICY, port.key))
        caps.append(ShareCap(ofport, None, mid))
    return SwitchQos(per_port, meters, shaping, tuple(caps))


def share_cap_flows(caps: tuple[ShareCap, ...], owners: dict[int, int]) -> list:
    """qos-table flows metering traffic into a limited port, per guaranteed sender.

    `owners` maps a destination ofport to its port key (the flows' owner).
    """
    out = []
    for cap in caps:
        owner = pl.cookie(pl.Owner.PORT, owners[cap.dst_ofport])
        if cap.src_ofport is None:
            m = match(**{pl.REG_OUT_PORT: cap.dst_ofport})
            out.append(pl.QOS.flow("shared", m, meter=cap.meter_id, goto="output",
                                   cookie=owner))
        else:
            m = match(in_port=cap.src_ofport, **{pl.REG_OUT_PORT: cap.dst_ofport})
            out.append(pl.QOS.flow("guarantee", m, meter=cap.meter_id, goto="output",
                                   cookie=owner))
    return out
