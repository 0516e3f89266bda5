"""/v2.0/subnets: address ranges of a network, their gateway and allocation pools.

IPv6 subnets carry Neutron's `ipv6_ra_mode` and `ipv6_address_mode` (set on create,
read-only after, as in neutron-lib's subnet definition). On an auto-address subnet
(SLAAC or DHCPv6-stateless) each port's address is its EUI-64 address (ports.py):
creating one gives every port of the network (but a router's interfaces) its
address there, and deleting one takes those addresses back, as Neutron does
(`add_auto_addrs_on_network_ports`, `_remove_subnet_ip_allocations_from_ports`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Optional

from controller import intent as model
from controller.rest import ipam
from controller.rest.auth import Principal
from controller.rest.errors import InvalidInput, PolicyNotAuthorized, conflict, not_found
from controller.rest.floatingips import release_port
from controller.rest.index import index_for_write
from controller.rest.policy import network_owner, owner_for_create, owns, subnet_visible
from controller.rest.ports import ROUTER_INTERFACE, ROUTER_INTERFACE_OWNERS, gets_auto_addresses
from controller.rest.resource import Resource, ViewContext, now
from controller.rest.validate import (
    Attr,
    boolean,
    cidr,
    enum,
    integer,
    ip_address,
    keyed,
    list_of,
    optional,
    string,
    uuid_str,
)
from controller.store.txn import TxnHelper

A = Attr


def ip_version(value: Any) -> int:
    version = integer(value)
    if version not in (4, 6):
        raise InvalidInput(f"'{value}' is not in [4, 6]")
    return version


_pool = keyed({"start": ip_address, "end": ip_address}, required=("start", "end"))
_route = keyed({"destination": cidr, "nexthop": ip_address}, required=("destination", "nexthop"))
ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("network_id", uuid_str, put=False, required=True),
        A("name", string(), default=""),
        A("description", string(), default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("ip_version", ip_version, put=False),
        A("cidr", cidr, put=False, required=True),
        A("gateway_ip", optional(ip_address)),
        A("allocation_pools", list_of(_pool), filter=False),
        A("enable_dhcp", boolean),
        A("dns_nameservers", list_of(ip_address), filter=False),
        A("host_routes", list_of(_route), filter=False),
        # neutron-lib api/definitions/subnet.py: allow_post, not allow_put
        A("ipv6_ra_mode", optional(enum(*ipam.IPV6_MODES)), put=False),
        A("ipv6_address_mode", optional(enum(*ipam.IPV6_MODES)), put=False),
        A("subnetpool_id", optional(string()), post=False, put=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
    )
}


def _pools(items: list[dict[str, str]]) -> tuple[model.AllocationPool, ...]:
    return tuple(model.AllocationPool(p["start"], p["end"]) for p in items)


def _routes(items: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((r["destination"], r["nexthop"]) for r in items))


def _check_family(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, addresses: list[str], what: str
) -> None:
    for a in addresses:
        if ipaddress.ip_address(a).version != net.version:
            raise InvalidInput(f"{what} {a} is not an IPv{net.version} address")


def _check_ipv6_modes(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    ra_mode: Optional[str],
    address_mode: Optional[str],
    enable_dhcp: bool,
) -> None:
    """Neutron's create-time checks (db_base_plugin_v2.py `_validate_subnet`,
    `_validate_ipv6_attributes`, `_validate_ipv6_dhcp`, `_validate_ipv6_combination`,
    `_validate_eui64_applicable`), in Neutron's order, with its messages."""
    if net.version == 4:
        if ra_mode is not None:
            raise InvalidInput("ipv6_ra_mode is not valid when ip_version is 4")
        if address_mode is not None:
            raise InvalidInput("ipv6_address_mode is not valid when ip_version is 4")
        return
    if ra_mode is None and address_mode is None:
        return
    if not enable_dhcp:
        raise InvalidInput(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False"
        )
    if ra_mode is not None and address_mode is not None and ra_mode != address_mode:
        raise InvalidInput(
            f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to "
            f"'{address_mode}' is not valid. If both attributes are set, they must be "
            "the same value"
        )
    auto = ra_mode in ipam.AUTO_ADDRESS_MODES or address_mode in ipam.AUTO_ADDRESS_MODES
    if auto and net.prefixlen != 64:
        raise InvalidInput(
            f"Invalid CIDR {net} for IPv6 address mode. OpenStack uses the EUI-64 address "
            "format, which requires the prefix to be /64"
        )


def _add_auto_addresses(helper: TxnHelper, subnet: model.Subnet) -> None:
    """Neutron's add_auto_addrs_on_network_ports: a new auto-address subnet gives each
    port of its network (but a router's) its EUI-64 address there."""
    stamp = now()
    for port in index_for_write(helper).ports_of(subnet.network_id):
        if not gets_auto_addresses(port.device_owner):
            continue
        ip = ipam.eui64_address(subnet.cidr, port.mac_address)
        helper.put(
            dataclasses.replace(
                port,
                fixed_ips=(*port.fixed_ips, model.FixedIP(subnet.id, ip)),
                updated_at=stamp,
                revision_number=port.revision_number + 1,
            )
        )


class Subnets(Resource):
    kind, singular, plural, intent_attr = "Subnet", "subnet", "subnets", "subnets"
    attrs = ATTRS

    def visible(self, principal: Principal, obj: model.Subnet, intent: model.Intent) -> bool:
        return subnet_visible(principal, intent, obj)

    def may_modify(self, principal: Principal, obj: model.Subnet, intent: model.Intent) -> bool:
        return owns(principal, obj) or network_owner(principal, intent, obj.network_id)

    def view(self, s: model.Subnet, ctx: ViewContext) -> dict[str, Any]:
        return {
            "id": s.id,
            "name": s.name,
            "description": s.description,
            "network_id": s.network_id,
            "project_id": s.project_id,
            "tenant_id": s.project_id,
            "ip_version": s.ip_version,
            "cidr": s.cidr,
            "gateway_ip": s.gateway_ip,
            "allocation_pools": [{"start": p.start, "end": p.end} for p in s.allocation_pools],
            "enable_dhcp": s.enable_dhcp,
            "dns_nameservers": list(s.dns_nameservers),
            "host_routes": [{"destination": d, "nexthop": n} for d, n in s.host_routes],
            "ipv6_ra_mode": s.ipv6_ra_mode,
            "ipv6_address_mode": s.ipv6_address_mode,
            "subnetpool_id": None,
            "service_types": [],
            "tags": [],
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "revision_number": s.revision_number,
        }

    def create(self, principal: Principal, item: dict[str, Any], helper: TxnHelper) -> model.Subnet:
        intent = helper.current()
        project = owner_for_create(principal, item, "create_subnet")
        network = intent.networks.get(item["network_id"])
        if network is None or not (owns(principal, network) or network.shared):
            raise not_found("Network", item["network_id"])
        if not owns(principal, network):
            raise PolicyNotAuthorized("create_subnet")
        net = ipaddress.ip_network(item["cidr"])
        version = item.get("ip_version", net.version)  # Neutron requires it; we infer it
        if version != net.version:
            raise InvalidInput(f"ip_version {version} does not match cidr {item['cidr']}")
        ra_mode = item.get("ipv6_ra_mode")
        address_mode = item.get("ipv6_address_mode")
        enable_dhcp = item.get("enable_dhcp", model.ENABLE_DHCP_DEFAULT)
        _check_ipv6_modes(net, ra_mode, address_mode, enable_dhcp)
        for other in index_for_write(helper).subnets_of(network.id):
            if ipaddress.ip_network(other.cidr).overlaps(net):
                raise InvalidInput(
                    f"Requested subnet with cidr: {net} for network: {network.id} "
                    "overlaps with another subnet"
                )
        gateway = ipam.default_gateway(net) if "gateway_ip" not in item else item["gateway_ip"]
        if gateway is not None:
            gateway = ipam.check_gateway(net, gateway)
        if "allocation_pools" in item:
            pools = _pools(item["allocation_pools"])
            ipam.check_pools(net, pools, gateway)
        else:
            pools = ipam.default_pools(net, gateway)
        dns = item.get("dns_nameservers", [])
        routes = item.get("host_routes", [])
        _check_family(net, dns, "DNS nameserver")
        _check_family(net, [r["nexthop"] for r in routes], "Host route nexthop")
        stamp = now()
        subnet = model.Subnet(
            id=helper.new_id(),
            project_id=project,
            network_id=network.id,
            name=item.get("name", ""),
            ip_version=net.version,
            cidr=str(net),
            gateway_ip=gateway,
            allocation_pools=pools,
            enable_dhcp=enable_dhcp,
            dns_nameservers=tuple(dns),
            description=item.get("description", ""),
            host_routes=_routes(routes),
            ipv6_ra_mode=ra_mode,
            ipv6_address_mode=address_mode,
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
        )
        helper.put(subnet)
        if ipam.is_auto_address_subnet(subnet):
            _add_auto_addresses(helper, subnet)
        return subnet

    def update(
        self, principal: Principal, s: model.Subnet, changes: dict[str, Any], helper: TxnHelper
    ) -> model.Subnet:
        net = ipaddress.ip_network(s.cidr)
        if changes.get("enable_dhcp") is False and (s.ipv6_ra_mode or s.ipv6_address_mode):
            # Neutron's _validate_ipv6_update_dhcp
            raise InvalidInput("Cannot disable enable_dhcp with ipv6 attributes set")
        gateway = s.gateway_ip
        if "gateway_ip" in changes and changes["gateway_ip"] != s.gateway_ip:
            gateway = changes["gateway_ip"]
            _check_gateway_not_routed(helper, s)
            if gateway is not None:
                gateway = ipam.check_gateway(net, gateway)
                user = index_for_write(helper).used_ips.get(s.id, {}).get(gateway)
                if user is not None:
                    raise conflict(
                        "GatewayIpInUse",
                        f"Current gateway ip {gateway} already in use by port {user}. "
                        "Unable to update.",
                    )
        pools = (
            _pools(changes["allocation_pools"])
            if "allocation_pools" in changes
            else s.allocation_pools
        )
        if "allocation_pools" in changes or gateway != s.gateway_ip:
            ipam.check_pools(net, pools, gateway)
        dns = changes.get("dns_nameservers", list(s.dns_nameservers))
        _check_family(net, dns, "DNS nameserver")
        routes = _routes(changes["host_routes"]) if "host_routes" in changes else s.host_routes
        _check_family(net, [n for _, n in routes], "Host route nexthop")
        updated = dataclasses.replace(
            s,
            name=changes.get("name", s.name),
            description=changes.get("description", s.description),
            gateway_ip=gateway,
            allocation_pools=pools,
            enable_dhcp=changes.get("enable_dhcp", s.enable_dhcp),
            dns_nameservers=tuple(dns),
            host_routes=routes,
        )
        if updated == s:
            return s
        updated = dataclasses.replace(
            updated, updated_at=now(), revision_number=s.revision_number + 1
        )
        helper.put(updated)
        return updated

    def delete(self, principal: Principal, s: model.Subnet, helper: TxnHelper) -> None:
        holders = set(index_for_write(helper).used_ips.get(s.id, {}).values())
        if holders:
            ports = helper.current().ports
            # Neutron's _remove_subnet_ip_allocations_from_ports: a router's interface
            # always keeps the subnet; other ports only when it is not auto-address
            # (their EUI-64 addresses go with it)
            if not ipam.is_auto_address_subnet(s) or any(
                ports[p].device_owner in ROUTER_INTERFACE_OWNERS for p in holders
            ):
                raise conflict(
                    "SubnetInUse",
                    f"Unable to complete operation on subnet {s.id}: "
                    "One or more ports have an IP allocation from this subnet.",
                )
            _remove_auto_addresses(helper, s, sorted(holders))
        helper.delete(model.Subnet, s.id)


def _remove_auto_addresses(helper: TxnHelper, s: model.Subnet, port_ids: list[str]) -> None:
    """The ports' addresses on the auto-address subnet `s`, taken back (with the
    floating IPs and port forwardings on them, as a port update would)."""
    stamp = now()
    for port_id in port_ids:
        port = helper.current().ports[port_id]
        kept = tuple(f for f in port.fixed_ips if f.subnet_id != s.id)
        release_port(helper, port, kept={f.ip_address for f in kept})
        helper.put(
            dataclasses.replace(
                port, fixed_ips=kept, updated_at=stamp, revision_number=port.revision_number + 1
            )
        )


def _check_gateway_not_routed(helper: TxnHelper, s: model.Subnet) -> None:
    """A router's interface holds the subnet's gateway address: moving the gateway away
    would leave guests routing through an address nothing answers (Neutron:
    GatewayIpInUse)."""
    if s.gateway_ip is None:
        return
    holder = index_for_write(helper).used_ips.get(s.id, {}).get(s.gateway_ip)
    if holder is None:
        return
    port = helper.current().ports.get(holder)
    if port is not None and port.device_owner == ROUTER_INTERFACE:
        raise conflict(
            "GatewayIpInUse",
            f"Current gateway ip {s.gateway_ip} already in use by port {holder}. "
            "Unable to update.",
        )
