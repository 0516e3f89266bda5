"""QoS: which policy governs a port, and what it becomes on the switch and the chassis.

- Egress limit (from the VM): an OpenFlow meter with one drop band, applied by the
  port's classify flow, so every frame the guest sends is policed once.
- Ingress limit (to the VM): OVSDB QoS linux-htb on the port's interface, with
  max-rate; ingress_policing_rate does not work on the userspace datapath.
- Minimum egress guarantee: on the userspace datapath `set_queue` never reaches
  the HTB classes (ovs-vswitchd sends through AF_PACKET, which carries no per-packet
  priority: measured, the guaranteed classes saw 0 bytes), so guarantees are kept
  with meters instead, on the chassis of the limited receiver: the only place all
  traffic into the port meets. Senders are recognised wherever they run: a local
  one by its in_port, a remote one by the tunnel (or provider patch) from its
  chassis, its network (the tunnel key, in metadata) and its source MAC, which its
  own chassis' port security vouches for. See `share_caps` for the arithmetic and
  docs/QOS.md for what it guarantees.
- DSCP: set on the port's IP traffic as it passes port security; tunnel ports copy
  it to the outer header (options:tos=inherit, compiler/tunnels.py).
A port's own policy overrides its network's, as in Neutron.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from controller import pipeline as pl
from controller.compiler.overlay import physnet_of
from controller.flows import Flow, Meter, mac, match
from controller.intent import Intent, Network, Port, QosRule, object_key
from controller.topology import TUNNEL_TYPES, Binding, TopologyView

BURST_SHARE_OF_RATE = 0.8  # Neutron's OVS agent default when max_burst_kbps is 0
ANY_LINK = -1  # a remote sender whose traffic may arrive on any port (a fabric)


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
class Sender:
    """A port with a minimum egress guarantee, as one switch recognises its traffic.

    Local (bound on the switch): `in_port` is its own ofport. Remote: `in_port` is the
    tunnel or provider patch its traffic arrives through (ANY_LINK on a fabric), and
    the match adds its network and source MAC.
    """

    port: Port
    network_key: int
    min_kbps: int
    in_port: int
    local: bool


@dataclass(frozen=True)
class ShareCap:
    """A meter on traffic into a limited port: from one sender, or (sender None) the rest."""

    dst_ofport: int
    dst_key: int  # the limited port's key: the owner of the flow
    sender: Optional[Sender]
    meter_id: int


class PolicyIndex:
    def __init__(self, intent: Intent) -> None:
        self.rules: dict[str, list[QosRule]] = {}
        for rule in sorted(intent.qos_rules.values(), key=lambda r: r.id):
            self.rules.setdefault(rule.policy_id, []).append(rule)
        self.guaranteeing = frozenset(
            r.policy_id for r in intent.qos_rules.values()
            if r.type == "minimum_bandwidth" and (r.direction or "egress") == "egress"
            and r.min_kbps)
        # network id -> its guaranteed senders wherever bound, filled on first use
        # (this index lives for one compile, shared by every switch's)
        self._guaranteed: dict[str, tuple[tuple[Port, Binding, int], ...]] = {}

    def rules_for(self, port: Port, network: Network) -> list[QosRule]:
        policy = port.qos_policy_id or network.qos_policy_id
        return self.rules.get(policy, []) if policy else []

    def min_kbps(self, port: Port, network: Network) -> int:
        rule = _find(self.rules_for(port, network), "minimum_bandwidth", "egress")
        return rule.min_kbps if rule is not None and rule.min_kbps else 0

    def guaranteed(self, network: Network,
                   members: Mapping[int, Sequence[tuple[Port, Binding]]]
                   ) -> tuple[tuple[Port, Binding, int], ...]:
        """(port, binding, min kbps) of the network's bound ports that have a guarantee."""
        cached = self._guaranteed.get(network.id)
        if cached is not None:
            return cached
        found: list[tuple[Port, Binding, int]] = []
        if self.guaranteeing:
            for _dpid, bound in sorted(members.items()):
                for port, binding in bound:
                    g = self.min_kbps(port, network)
                    if g:
                        found.append((port, binding, g))
        out = tuple(sorted(found, key=lambda t: t[0].id))
        self._guaranteed[network.id] = out
        return out


def _find(rules: list[QosRule], kind: str, direction: str = "egress") -> Optional[QosRule]:
    for r in rules:
        if r.type == kind and (r.direction or "egress") == direction:
            return r
    return None


def meter_id_of(port: Port) -> int:
    """The port's egress-limit meter id as the store allocated it (0: none allocated).

    Unique among all ports (store/allocations.py), so it is the same on whatever
    switch the port is bound to and never moves when another port appears.
    """
    return port.meter_id


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


def share_caps(limit_kbps: int, guarantees: Sequence[int]) -> tuple[list[int], int]:
    """Meter rates for N guaranteed senders into a port limited to L, and for the rest.

    With G the sum of the guarantees (scaled down in proportion first if G > L) and
    R = L - G the spare, sender i is capped at g_i + R // N and all other traffic at
    what remains of R. Whatever the others send, the traffic competing with sender i
    is then at most sum(caps) - cap_i = L - g_i, so i keeps g_i of the port's L: exact
    for any N. The price: a sender alone gets g_i + R/N, not all of L (policers
    cannot lend unused guarantees; set_queue, which could, does not reach the HTB
    classes on this datapath).
    """
    n = len(guarantees)
    if n == 0:
        return [], limit_kbps
    total = sum(guarantees)
    if total > limit_kbps:
        guarantees = [g * limit_kbps // total for g in guarantees]
        total = sum(guarantees)
    spare = limit_kbps - total
    extra = spare // n
    caps = [max(1, g + extra) for g in guarantees]
    rest = max(1, spare - (n - 1) * extra)
    return caps, rest


def arrival_port(topo: TopologyView, datapath_id: int, network: Network,
                 sender: Binding) -> Optional[int]:
    """The port of `datapath_id` that `sender`'s traffic on `network` comes in through:
    the tunnel from its chassis, the provider patch (VLAN), or ANY_LINK in a fabric.
    None: no way in (yet); the tunnel's appearance brings a recompile."""
    if datapath_id in topo.fabric_switches and sender.datapath_id in topo.fabric_switches:
        return ANY_LINK
    here = topo.switches.get(datapath_id)
    there = topo.switches.get(sender.datapath_id)
    if here is None or there is None:
        return None
    if network.network_type in TUNNEL_TYPES:
        tunnel = topo.tunnels.get((datapath_id, there.chassis, network.network_type))
        return tunnel.ofport if tunnel is not None else None
    physnet = physnet_of(network)  # VLAN and flat networks: the provider patch
    if physnet is not None:
        patch = topo.provider_ports.get((datapath_id, physnet))
        if patch is not None and (sender.datapath_id, physnet) in topo.provider_ports:
            return patch
    return None


def switch_qos(local: list[tuple[Port, Network, str, int]], index: PolicyIndex,
               datapath_id: int = 0,
               members: Optional[Mapping[str, Mapping[int, Sequence[tuple[Port, Binding]]]]]
               = None,
               topo: Optional[TopologyView] = None) -> SwitchQos:
    """`local`: (port, network, interface name, ofport) for each port bound on the switch.

    `members` (network id -> datapath id -> bound ports) and `topo` let guaranteed
    senders bound on other switches count too; without them only local senders do.
    """
    per_port: dict[str, PortQos] = {}
    meters: dict[int, Meter] = {}
    meter_ids: set[int] = set()
    limited: list[tuple[Port, Network, str, int, QosRule]] = []  # (.., ofport, ingress limit)
    local_guaranteed: list[Sender] = []
    ordered = sorted(local, key=lambda t: t[0].id)
    # Stored meter ids first: unique among ports, they never move. A port without
    # one (an Intent built by hand, or all METER_ID_SPAN ids in use) gets the key's
    # derived id probed past them, as every port did before ids were stored; so do
    # the share-cap meters below, which belong to a pair of ports and to no one row.
    meter_ids.update(meter_id_of(t[0]) for t in ordered if meter_id_of(t[0]))
    for port, network, iface, ofport in ordered:
        rules = index.rules_for(port, network)
        if not rules:
            continue
        meter_id = dscp = queue_id = None
        limit = _find(rules, "bandwidth_limit", "egress")
        if limit is not None and limit.max_kbps:
            meter_id = meter_id_of(port) or _stable_id(port.key, pl.METER_ID_SPAN, meter_ids)
            burst = limit.max_burst_kbps or max(1, int(limit.max_kbps * BURST_SHARE_OF_RATE))
            meters[meter_id] = Meter(meter_id, limit.max_kbps, burst,
                                     owner=_policy_owner(limit))
        mark = next((r for r in rules if r.type == "dscp_marking"), None)
        if mark is not None and mark.dscp_mark is not None:
            dscp = mark.dscp_mark
        minimum = _find(rules, "minimum_bandwidth", "egress")
        if minimum is not None and minimum.min_kbps:
            local_guaranteed.append(Sender(port, network.key, minimum.min_kbps, ofport, True))
        ingress = _find(rules, "bandwidth_limit", "ingress")
        if ingress is not None and ingress.max_kbps:
            limited.append((port, network, iface, ofport, ingress))
        per_port[port.id] = PortQos(meter_id, dscp, queue_id)
    shaping = {}
    caps: list[ShareCap] = []
    for port, network, iface, ofport, ingress in limited:
        max_kbps = ingress.max_kbps
        assert max_kbps is not None
        owner = _policy_owner(ingress)  # the ingress limit the share caps carve up
        shaping[iface] = Shaping(port.id, max_kbps * 1000)
        senders = _senders_into(port, network, local_guaranteed, index, datapath_id,
                                members, topo)
        if not senders:
            continue
        rates, rest = share_caps(max_kbps, [s.min_kbps for s in senders])
        for sender, cap in zip(senders, rates, strict=True):
            mid = _stable_id(sender.port.key ^ (port.key << 1), pl.METER_ID_SPAN, meter_ids)
            meters[mid] = Meter(mid, cap, max(1, int(cap * BURST_SHARE_OF_RATE)),
                                owner=owner)
            caps.append(ShareCap(ofport, port.key, sender, mid))
        mid = _stable_id(port.key ^ 0x5EED, pl.METER_ID_SPAN, meter_ids)
        meters[mid] = Meter(mid, rest, max(1, int(rest * BURST_SHARE_OF_RATE)),
                            owner=owner)
        caps.append(ShareCap(ofport, port.key, None, mid))
    return SwitchQos(per_port, meters, shaping, tuple(caps))


def _policy_owner(rule: QosRule) -> int:
    """A meter's owner: the QoS policy whose rule made it (explain names the policy)."""
    return pl.cookie(pl.Owner.QOS_POLICY, object_key(rule.policy_id))


def _senders_into(receiver: Port, network: Network, local_guaranteed: list[Sender],
                  index: PolicyIndex, datapath_id: int,
                  members: Optional[Mapping[str, Mapping[int, Sequence[tuple[Port, Binding]]]]],
                  topo: Optional[TopologyView]) -> list[Sender]:
    """The guaranteed senders that can reach `receiver`, local first, each in id order.

    Only the receiver's own network: without routers nothing else reaches it.
    """
    out = [s for s in local_guaranteed
           if s.network_key == network.key and s.port.id != receiver.id]
    if members is None or topo is None:
        return out
    for sender, binding, g in index.guaranteed(network, members.get(network.id, {})):
        if binding.datapath_id == datapath_id or sender.id == receiver.id:
            continue
        via = arrival_port(topo, datapath_id, network, binding)
        if via is not None:
            out.append(Sender(sender, network.key, g, via, False))
    return out


def share_cap_flows(caps: tuple[ShareCap, ...]) -> list[Flow]:
    """qos-table flows metering traffic into a limited port, per guaranteed sender."""
    out = []
    for cap in caps:
        owner = pl.cookie(pl.Owner.PORT, cap.dst_key)
        to = {pl.REG_OUT_PORT: cap.dst_ofport}
        s = cap.sender
        if s is None:
            out.append(pl.QOS.flow("shared", match(**to), meter=cap.meter_id, goto="output",
                                   cookie=owner))
        elif s.local:
            out.append(pl.QOS.flow("guarantee", match(in_port=s.in_port, **to),
                                   meter=cap.meter_id, goto="output", cookie=owner))
        else:
            src = {"metadata": s.network_key, "eth_src": mac(s.port.mac_address)}
            if s.in_port == ANY_LINK:
                out.append(pl.QOS.flow("guarantee_any_link", match(**src, **to),
                                       meter=cap.meter_id, goto="output", cookie=owner))
            else:
                out.append(pl.QOS.flow("guarantee", match(in_port=s.in_port, **src, **to),
                                       meter=cap.meter_id, goto="output", cookie=owner))
    return out
