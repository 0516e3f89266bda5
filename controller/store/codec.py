"""Mapping between intent dataclasses and rows of the Loom_Northbound schema.

Declared as data, one table per intent class, so adding a column is one line and
the snapshot builder and the write helper cannot disagree on how a field is stored.
Row `_uuid` is the object's Neutron id (inserted with persist_uuid), except for
Chassis (keyed by name) and IP_Allocation (internal, surfaced as Port.fixed_ips).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from controller import intent as model

# How an attribute is stored: see _ENCODE/_DECODE below.
PLAIN, OPT, REF, OPTREF, REFSET, JSON, POOLS, ORDERED, PAIRS = (
    "plain",
    "opt",
    "ref",
    "optref",
    "refset",
    "json",
    "pools",
    "ordered",
    "pairs",
)


@dataclass(frozen=True)
class Field:
    attr: str
    column: str
    kind: str = PLAIN


def _pool_key(pool: model.AllocationPool) -> int:
    return int(ipaddress.ip_address(pool.start))


def _decode_pools(value: list[str]) -> tuple[model.AllocationPool, ...]:
    pools = [model.AllocationPool(*item.split("-", 1)) for item in value]
    return tuple(sorted(pools, key=_pool_key))


def _uuid(value: str) -> uuidlib.UUID:
    return uuidlib.UUID(str(value))


_ENCODE: dict[str, Callable[[Any], Any]] = {
    PLAIN: lambda v: v,
    OPT: lambda v: [] if v is None else [v],
    REF: _uuid,
    OPTREF: lambda v: [] if v is None else [_uuid(v)],
    REFSET: lambda v: [_uuid(x) for x in v],
    JSON: lambda v: json.dumps(dict(v), sort_keys=True, separators=(",", ":")),
    POOLS: lambda v: [f"{p.start}-{p.end}" for p in v],
    ORDERED: lambda v: {i: x for i, x in enumerate(v)},
    PAIRS: lambda v: dict(v),
}

_DECODE: dict[str, Callable[[Any], Any]] = {
    PLAIN: lambda v: v,
    OPT: lambda v: v[0] if v else None,
    REF: str,
    OPTREF: lambda v: str(v[0]) if v else None,
    REFSET: lambda v: tuple(sorted(str(x) for x in v)),
    JSON: lambda v: json.loads(v) if v else {},
    POOLS: _decode_pools,
    ORDERED: lambda v: tuple(v[k] for k in sorted(v)),
    PAIRS: lambda v: tuple(sorted(v.items())),
}


@dataclass(frozen=True)
class TableCodec:
    """How one intent class is stored in one table."""

    cls: type
    table: str
    intent_attr: str  # the Intent field holding these objects
    fields: tuple[Field, ...]
    key_attr: str = "id"  # the attribute that keys Intent mappings
    derived: tuple[str, ...] = ()  # attributes computed from other tables, never written

    def key(self, obj: Any) -> str:
        return str(getattr(obj, self.key_attr))

    def encode(self, obj: Any) -> dict[str, Any]:
        """Column name -> python-ovs value for every stored attribute of `obj`."""
        return {f.column: _ENCODE[f.kind](getattr(obj, f.attr)) for f in self.fields}

    def decode(
        self,
        row_uuid: uuidlib.UUID,
        columns: Mapping[str, Any],
        extra: Optional[dict[str, Any]] = None,
    ) -> Any:
        values: dict[str, Any] = {f.attr: _DECODE[f.kind](columns[f.column]) for f in self.fields}
        if self.key_attr == "id":
            values["id"] = str(row_uuid)
        if extra:
            values.update(extra)
        return self.cls(**values)


def _auto(cls: type, skip: tuple[str, ...], **special: Field) -> tuple[Field, ...]:
    """Every dataclass field stored under its own name, unless listed as special or skipped."""
    out: list[Field] = []
    for f in dataclasses.fields(cls):
        if f.name == "id" or f.name in skip:
            continue
        out.append(special.get(f.name, Field(f.name, f.name)))
    return tuple(out)


CODECS: tuple[TableCodec, ...] = (
    TableCodec(
        model.Network,
        "Network",
        "networks",
        _auto(
            model.Network,
            (),
            physical_network=Field("physical_network", "physical_network", OPT),
            qos_policy_id=Field("qos_policy_id", "qos_policy", OPTREF),
        ),
    ),
    TableCodec(
        model.Subnet,
        "Subnet",
        "subnets",
        _auto(
            model.Subnet,
            (),
            network_id=Field("network_id", "network", REF),
            gateway_ip=Field("gateway_ip", "gateway_ip", OPT),
            allocation_pools=Field("allocation_pools", "allocation_pools", POOLS),
            dns_nameservers=Field("dns_nameservers", "dns_nameservers", ORDERED),
            host_routes=Field("host_routes", "host_routes", PAIRS),
            ipv6_ra_mode=Field("ipv6_ra_mode", "ipv6_ra_mode", OPT),
            ipv6_address_mode=Field("ipv6_address_mode", "ipv6_address_mode", OPT),
        ),
    ),
    TableCodec(
        model.Port,
        "Port",
        "ports",
        _auto(
            model.Port,
            ("fixed_ips",),
            network_id=Field("network_id", "network", REF),
            security_groups=Field("security_groups", "security_groups", REFSET),
            qos_policy_id=Field("qos_policy_id", "qos_policy", OPTREF),
            binding_profile=Field("binding_profile", "binding_profile", JSON),
        ),
        derived=("fixed_ips",),
    ),
    TableCodec(
        model.SecurityGroup, "Security_Group", "security_groups", _auto(model.SecurityGroup, ())
    ),
    TableCodec(
        model.SecurityGroupRule,
        "Security_Group_Rule",
        "security_group_rules",
        _auto(
            model.SecurityGroupRule,
            (),
            security_group_id=Field("security_group_id", "security_group", REF),
            protocol=Field("protocol", "protocol", OPT),
            port_range_min=Field("port_range_min", "port_range_min", OPT),
            port_range_max=Field("port_range_max", "port_range_max", OPT),
            remote_ip_prefix=Field("remote_ip_prefix", "remote_ip_prefix", OPT),
            remote_group_id=Field("remote_group_id", "remote_group", OPTREF),
        ),
    ),
    TableCodec(model.QosPolicy, "QoS_Policy", "qos_policies", _auto(model.QosPolicy, ())),
    TableCodec(
        model.QosRule,
        "QoS_Rule",
        "qos_rules",
        _auto(
            model.QosRule,
            (),
            policy_id=Field("policy_id", "policy", REF),
            max_kbps=Field("max_kbps", "max_kbps", OPT),
            max_burst_kbps=Field("max_burst_kbps", "max_burst_kbps", OPT),
            min_kbps=Field("min_kbps", "min_kbps", OPT),
            dscp_mark=Field("dscp_mark", "dscp_mark", OPT),
        ),
    ),
    TableCodec(
        model.Router,
        "Router",
        "routers",
        _auto(
            model.Router,
            ("external_fixed_ips",),
            external_network_id=Field("external_network_id", "external_network", OPTREF),
            gateway_port_id=Field("gateway_port_id", "gateway_port", OPTREF),
            routes=Field("routes", "routes", PAIRS),
        ),
        derived=("external_fixed_ips",),
    ),
    TableCodec(
        model.RouterInterface,
        "Router_Interface",
        "router_interfaces",
        _auto(
            model.RouterInterface,
            (),
            router_id=Field("router_id", "router", REF),
            port_id=Field("port_id", "port", REF),
            subnet_id=Field("subnet_id", "subnet", REF),
        ),
    ),
    TableCodec(
        model.FloatingIP,
        "Floating_IP",
        "floating_ips",
        _auto(
            model.FloatingIP,
            (),
            floating_network_id=Field("floating_network_id", "floating_network", REF),
            port_id=Field("port_id", "port", OPTREF),
            fixed_ip_address=Field("fixed_ip_address", "fixed_ip_address", OPT),
            router_id=Field("router_id", "router", OPTREF),
            floating_port_id=Field("floating_port_id", "floating_port", OPTREF),
        ),
    ),
    TableCodec(
        model.PortForwarding,
        "Port_Forwarding",
        "port_forwardings",
        _auto(
            model.PortForwarding,
            (),
            floatingip_id=Field("floatingip_id", "floating_ip", REF),
            internal_port_id=Field("internal_port_id", "internal_neutron_port", REF),
        ),
    ),
    TableCodec(
        model.Chassis,
        "Chassis",
        "chassis",
        (
            Field("name", "name"),
            Field("remote", "remote"),
            Field("encap_ip", "encap_ip", OPT),
            Field("bridge_mappings", "bridge_mappings", PAIRS),
        ),
        key_attr="name",
    ),
)

BY_CLASS: dict[type, TableCodec] = {c.cls: c for c in CODECS}
BY_TABLE: dict[str, TableCodec] = {c.table: c for c in CODECS}
ALLOCATION_TABLE = "IP_Allocation"
