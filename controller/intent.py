"""Immutable intent snapshot: what operators asked for, as read from the northbound store.

Every object is a frozen, hashable dataclass so the compiler can memoise pure
functions on them, and so a snapshot can be shared between threads without locks.
Field names follow Neutron's attribute names where Neutron has one; the REST layer
maps between the wire shape and these objects, the store maps between OVSDB rows
and these objects. Nothing here does I/O.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Optional

KEY_BITS = 48
_KEY_MASK = (1 << KEY_BITS) - 1


@lru_cache(maxsize=1 << 18)
def object_key(object_id: str) -> int:
    """A stable 48-bit integer naming an object, derived from its UUID.

    Used wherever a flow must name its owner in few bits (cookies, metadata), so
    that an installed flow maps back to the intent that made it without any
    allocation table that could drift between controller restarts.
    """
    return uuidlib.UUID(object_id).int & _KEY_MASK


@dataclass(frozen=True)
class Network:
    id: str
    project_id: str
    name: str
    network_type: str  # vlan | vxlan | gre | geneve
    segmentation_id: int
    physical_network: Optional[str] = None
    admin_state_up: bool = True
    shared: bool = False
    mtu: int = 1500
    qos_policy_id: Optional[str] = None
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0
    router_external: bool = False  # router:external
    port_security_enabled: bool = True  # default for new ports on this network
    # Data-plane allocations, made once by the store (store/allocations.py) and never
    # shown in the API; 0 = not allocated (an Intent built by hand): the compiler
    # then derives the value from the key (compiler/overlay.py zone_of, ...).
    ct_zone: int = 0  # conntrack zone, unique among networks, 1..pipeline.CT_ZONE_SPAN
    flood_group: int = 0  # flood group id, unique among networks, 1..GROUP_ID_MASK
    fabric_vlan: int = 0  # fabric VLAN of a non-VLAN network, 1..4094 (0: none free)

    @property
    def key(self) -> int:
        return object_key(self.id)


@dataclass(frozen=True)
class AllocationPool:
    start: str
    end: str


# As Neutron: a subnet serves DHCP unless asked not to (Loom answers it, controller/dhcp.py).
# The REST API's default is this one.
ENABLE_DHCP_DEFAULT = True


@dataclass(frozen=True)
class Subnet:
    id: str
    project_id: str
    network_id: str
    name: str
    ip_version: int
    cidr: str
    gateway_ip: Optional[str]
    allocation_pools: tuple[AllocationPool, ...] = ()
    enable_dhcp: bool = ENABLE_DHCP_DEFAULT
    dns_nameservers: tuple[str, ...] = ()
    description: str = ""
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination, nexthop)
    # IPv6 (Neutron's): who advertises the prefix (router advertisements) and how guests
    # get addresses: "slaac", "dhcpv6-stateless", "dhcpv6-stateful" or None
    ipv6_ra_mode: Optional[str] = None
    ipv6_address_mode: Optional[str] = None
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0


@dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True)
class Port:
    id: str
    project_id: str
    network_id: str
    name: str
    mac_address: str  # lower-case, colon separated
    fixed_ips: tuple[FixedIP, ...] = ()
    port_security_enabled: bool = True
    security_groups: tuple[str, ...] = ()
    admin_state_up: bool = True
    host_id: str = ""  # binding:host_id (a chassis system-id), "" when unset
    device_id: str = ""
    device_owner: str = ""
    qos_policy_id: Optional[str] = None
    binding_profile: Mapping[str, object] = field(default_factory=dict, hash=False, compare=True)
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0
    # egress-limit meter id, unique among ports (store/allocations.py; see Network)
    meter_id: int = 0

    @property
    def key(self) -> int:
        return object_key(self.id)

    def __hash__(self) -> int:  # binding_profile is a dict: hash the rest
        return hash((self.id, self.network_id, self.mac_address, self.fixed_ips,
                     self.port_security_enabled, self.security_groups,
                     self.admin_state_up, self.host_id, self.qos_policy_id,
                     self.revision_number))


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    project_id: str
    name: str
    description: str = ""
    stateful: bool = True
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0


@dataclass(frozen=True)
class SecurityGroupRule:
    id: str
    project_id: str
    security_group_id: str
    direction: str  # ingress | egress
    ethertype: str  # IPv4 | IPv6
    protocol: Optional[str] = None
    port_range_min: Optional[int] = None
    port_range_max: Optional[int] = None
    remote_ip_prefix: Optional[str] = None
    remote_group_id: Optional[str] = None
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0
    # conjunction id, unique among rules (store/allocations.py; see Network)
    conj_id: int = 0


@dataclass(frozen=True)
class QosPolicy:
    id: str
    project_id: str
    name: str
    description: str = ""
    shared: bool = False
    is_default: bool = False
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0


@dataclass(frozen=True)
class QosRule:
    id: str
    policy_id: str
    type: str  # bandwidth_limit | minimum_bandwidth | dscp_marking
    max_kbps: Optional[int] = None
    max_burst_kbps: Optional[int] = None
    min_kbps: Optional[int] = None
    dscp_mark: Optional[int] = None
    direction: str = "egress"


@dataclass(frozen=True)
class Router:
    id: str
    project_id: str
    name: str
    admin_state_up: bool = True
    external_network_id: Optional[str] = None
    external_fixed_ips: tuple[FixedIP, ...] = ()
    enable_snat: bool = True
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0
    gateway_port_id: Optional[str] = None  # the port holding external_fixed_ips
    routes: tuple[tuple[str, str], ...] = ()  # extra routes (destination, nexthop)
    # conntrack zone of the router's NAT (SNAT, floating IPs, port forwardings): made
    # by the store when a gateway is first set, from the same space as Network.ct_zone
    # (so it never equals a network's zone), kept while the gateway stays, freed (0)
    # when it is cleared (store/allocations.py; see Network). 0: no gateway.
    snat_zone: int = 0


@dataclass(frozen=True)
class RouterInterface:
    id: str
    router_id: str
    port_id: str
    subnet_id: str


@dataclass(frozen=True)
class FloatingIP:
    id: str
    project_id: str
    floating_network_id: str
    floating_ip_address: str
    port_id: Optional[str] = None
    fixed_ip_address: Optional[str] = None
    router_id: Optional[str] = None
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    revision_number: int = 0
    floating_port_id: Optional[str] = None  # the port that owns the floating address
    # router_id is set whenever the floating IP is associated with a port (port_id,
    # fixed_ip_address) or has port forwardings (then port_id is None): the router with
    # an interface on the internal address's subnet and its gateway on
    # floating_network_id (rest/floatingips.py `router_for`).


@dataclass(frozen=True)
class PortForwarding:
    """Neutron's floating IP port forwarding: `protocol` traffic to the floating IP's
    `external_port` goes to `internal_ip_address`:`internal_port` of `internal_port_id`.
    The floating IP then has `router_id` set and no `port_id`."""

    id: str
    floatingip_id: str
    protocol: str  # "tcp" | "udp"
    external_port: int
    internal_port: int
    internal_ip_address: str
    internal_port_id: str
    description: str = ""


@dataclass(frozen=True)
class Chassis:
    """A host running OVS that Loom manages, reached at its OVSDB remote."""

    name: str  # system-id once known, else the remote
    remote: str
    encap_ip: Optional[str] = None
    bridge_mappings: tuple[tuple[str, str], ...] = ()


def _port_id(port: Port) -> str:
    return port.id


def _frozen(d: Mapping[str, object] | None = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Intent:
    """One consistent view of the northbound store.

    `generation` grows by one with every change the store sees; a write returns the
    generation that first contains it, so `?wait=true` can wait for that
    generation to be installed everywhere.
    """

    generation: int = 0
    networks: Mapping[str, Network] = field(default_factory=_frozen)
    subnets: Mapping[str, Subnet] = field(default_factory=_frozen)
    ports: Mapping[str, Port] = field(default_factory=_frozen)
    security_groups: Mapping[str, SecurityGroup] = field(default_factory=_frozen)
    security_group_rules: Mapping[str, SecurityGroupRule] = field(default_factory=_frozen)
    qos_policies: Mapping[str, QosPolicy] = field(default_factory=_frozen)
    qos_rules: Mapping[str, QosRule] = field(default_factory=_frozen)
    routers: Mapping[str, Router] = field(default_factory=_frozen)
    router_interfaces: Mapping[str, RouterInterface] = field(default_factory=_frozen)
    floating_ips: Mapping[str, FloatingIP] = field(default_factory=_frozen)
    port_forwardings: Mapping[str, PortForwarding] = field(default_factory=_frozen)
    chassis: Mapping[str, Chassis] = field(default_factory=_frozen)

    @cached_property
    def _ports_by_network(self) -> Mapping[str, tuple[Port, ...]]:
        index: dict[str, list[Port]] = {}
        for port in self.ports.values():
            index.setdefault(port.network_id, []).append(port)
        return {k: tuple(sorted(v, key=_port_id)) for k, v in index.items()}

    def ports_on_network(self, network_id: str) -> tuple[Port, ...]:
        """The network's ports in id order (an index built once per snapshot, or carried
        over from the previous snapshot by the store, see `carry_ports_by_network`)."""
        return self._ports_by_network.get(network_id, ())

    def carry_ports_by_network(self, previous: Intent, touched: frozenset[str]) -> None:
        """Seed this snapshot's `ports_on_network` index from `previous`'s, redoing only
        the networks of the `touched` port ids (added, changed or removed between the
        two): O(touched x log) plus C-level copies of the networks touched. Called by the
        store's snapshot builder before the snapshot is published."""
        import bisect

        old = previous._ports_by_network
        if not touched:
            self.__dict__["_ports_by_network"] = old
            return
        changes: dict[str, dict[str, Optional[Port]]] = {}  # network -> port id -> now
        for pid in touched:
            before, after = previous.ports.get(pid), self.ports.get(pid)
            if before is not None:
                changes.setdefault(before.network_id, {}).setdefault(pid, None)
            if after is not None:
                changes.setdefault(after.network_id, {})[pid] = after
        index = dict(old)
        for net, ports in changes.items():
            current = list(index.get(net, ()))
            for pid in sorted(ports):
                port = ports[pid]
                at = bisect.bisect_left(current, pid, key=_port_id)
                present = at < len(current) and current[at].id == pid
                if port is None:
                    if present:
                        del current[at]
                elif present:
                    current[at] = port
                else:
                    current.insert(at, port)
            if current:
                index[net] = tuple(current)
            else:
                index.pop(net, None)
        self.__dict__["_ports_by_network"] = index

    def subnets_of(self, network_id: str) -> list[Subnet]:
        return [s for s in self.subnets.values() if s.network_id == network_id]
