"""/v2.0/ports: a VM or container interface on a network, its MAC, IPs and binding.

Deleting a port disassociates its floating IPs and deletes the port forwardings to
it; an address removed from a port does the same for that address (as Neutron).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, Optional

from controller import intent as model
from controller.rest import ipam
from controller.rest.auth import Principal
from controller.rest.errors import (
    InvalidInput,
    NeutronError,
    PolicyNotAuthorized,
    conflict,
    not_found,
)
from controller.rest.index import IntentIndex, index_for_write
from controller.rest.policy import (
    check_admin_only,
    network_owner,
    network_visible,
    owner_for_create,
    owns,
    subnet_visible,
)
from controller.rest.qos import check_qos_change, check_qos_policy
from controller.rest.resource import Resource, ViewContext, now
from controller.rest.security_groups import ensure_default_group
from controller.rest.validate import (
    Attr,
    boolean,
    dict_of_json,
    enum,
    integer,
    ip_address,
    keyed,
    list_of,
    mac_address,
    optional,
    parse_ip,
    string,
    uuid_str,
)
from controller.store.txn import TxnHelper

A = Attr
# Neutron's device owners for the ports of routers (router.py, router_interfaces.py).
ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
FLOATINGIP = "network:floatingip"
# neutron_lib.constants.ROUTER_INTERFACE_OWNERS: ports that may hold any address of
# an auto-address (SLAAC, DHCPv6-stateless) subnet, and never get an EUI-64 one.
ROUTER_INTERFACE_OWNERS = (
    ROUTER_INTERFACE,
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
)
# Ports that never get an automatic EUI-64 address: Neutron's
# ROUTER_INTERFACE_OWNERS_SNAT, and the ports Loom makes for router gateways and
# floating IPs, which hold exactly one IPv4 address (router_gateway._one_ipv4).
_NO_AUTO_ADDRESS_OWNERS = frozenset(
    (*ROUTER_INTERFACE_OWNERS, "network:router_centralized_snat", ROUTER_GATEWAY, FLOATINGIP)
)
_fixed_ip = keyed({"subnet_id": uuid_str, "ip_address": ip_address})
ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("network_id", uuid_str, put=False, required=True),
        A("name", string(), default=""),
        A("description", string(), default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("mac_address", mac_address),
        A("fixed_ips", list_of(_fixed_ip)),
        A("admin_state_up", boolean, default=True),
        A("port_security_enabled", boolean),
        A("security_groups", optional(list_of(uuid_str))),
        A("qos_policy_id", optional(uuid_str)),
        A("qos_network_policy_id", optional(uuid_str), post=False, put=False),
        A("device_id", string(), default=""),
        A("device_owner", string(), default=""),
        A("binding:host_id", string(), admin_only=True, default=""),
        A("binding:profile", dict_of_json, admin_only=True, default={}, filter=False),
        A("binding:vnic_type", enum("normal"), default="normal"),
        A("binding:vif_type", string(), post=False, put=False),
        A("binding:vif_details", dict_of_json, post=False, put=False, filter=False),
        A("status", string(), post=False, put=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
    )
}


def ip_in_use(ip: str, subnet_id: str) -> NeutronError:
    return conflict(
        "IpAddressAlreadyAllocated", f"IP address {ip} already allocated in subnet {subnet_id}"
    )


def gets_auto_addresses(device_owner: str) -> bool:
    """Whether a port with this owner gets its EUI-64 address on every auto-address
    subnet of its network (Neutron's `_get_auto_address_ips`)."""
    return device_owner not in _NO_AUTO_ADDRESS_OWNERS


def put_device_port(helper: TxnHelper, idx: IntentIndex, port_id: str, project_id: str,
                    network_id: str, fixed_ips: tuple[model.FixedIP, ...], device_id: str,
                    device_owner: str) -> model.Port:
    """A port Loom makes for a router or a floating IP (an interface, a gateway, a
    floating address): no port security, no groups, a fresh MAC on its network."""
    stamp = now()
    port = model.Port(
        id=port_id, project_id=project_id, network_id=network_id, name="",
        mac_address=ipam.random_mac(idx.macs.get(network_id, {})), fixed_ips=fixed_ips,
        port_security_enabled=False, security_groups=(), device_id=device_id,
        device_owner=device_owner, created_at=stamp, updated_at=stamp, revision_number=1)
    helper.put(port)
    return port


def resolve_fixed_ips(
    network: model.Network,
    requested: Optional[list[dict[str, str]]],
    idx: IntentIndex,
    principal: Principal,
    *,
    port_id: str = "",
    existing: tuple[model.FixedIP, ...] = (),
    device_owner: str = "",
    mac: Optional[str] = None,
) -> tuple[model.FixedIP, ...]:
    """The port's addresses: requested ones checked, the rest allocated first-free from the pools.

    With nothing requested, one IPv4 address from each IPv4 subnet of the network.
    On update, a {subnet_id}-only entry keeps the address the port already has there.
    A subnet the caller cannot see answers 404 exactly as an unknown id does, so the
    answer never tells a tenant that another tenant's subnet exists.

    Auto-address (SLAAC, DHCPv6-stateless) subnets, as Neutron's IPAM
    (ipam_pluggable_backend `_test_fixed_ips_for_port`, `_get_auto_address_ips`):
    only a router's interface may be given an address there; anyone else asking for
    one other than the port's EUI-64 address gets AllocationOnAutoAddressSubnet.
    Given the port's `mac` (ports made through /v2.0/ports), a port that
    `gets_auto_addresses` holds its EUI-64 address on every such subnet of the
    network, asked for or not, after the others; without it (the ports Loom makes
    for routers and floating IPs) such a subnet allocates from its pools as any other.
    """
    intent = idx.intent
    subnets = idx.subnets_of(network.id)
    router_port = device_owner in ROUTER_INTERFACE_OWNERS

    def eui64_of(subnet: model.Subnet) -> Optional[str]:
        """The port's address on `subnet` if it is one of its automatic ones."""
        if mac is None or not gets_auto_addresses(device_owner) or \
                not ipam.is_auto_address_subnet(subnet):
            return None
        return ipam.eui64_address(subnet.cidr, mac)
    entries = (
        requested
        if requested is not None
        else [{"subnet_id": s.id} for s in subnets if s.ip_version == 4]
    )
    resolved: list[Optional[model.FixedIP]] = [None] * len(entries)
    taken: set[tuple[str, str]] = set()

    def subnet_of(entry: Mapping[str, str]) -> Optional[model.Subnet]:
        if "subnet_id" not in entry:
            return None
        subnet = intent.subnets.get(entry["subnet_id"])
        if subnet is None or not subnet_visible(principal, intent, subnet):
            raise not_found("Subnet", entry["subnet_id"])
        if subnet.network_id != network.id:
            raise InvalidInput(
                f"Failed to create port on network {network.id}, because fixed_ips "
                f"included invalid subnet {subnet.id}"
            )
        return subnet

    # Pass 1: addresses asked for by value.
    for i, entry in enumerate(entries):
        if "ip_address" not in entry:
            continue
        subnet = subnet_of(entry)
        addr = parse_ip(entry["ip_address"])
        if subnet is None:
            subnet = next((s for s in subnets if addr in ipaddress.ip_network(s.cidr)), None)
            if subnet is None:
                raise InvalidInput(
                    f"IP address {addr} is not a valid IP for any of the subnets "
                    "on the specified network."
                )
        ipam.check_address_in_subnet(addr, subnet)
        ip = str(addr)
        if ipam.is_auto_address_subnet(subnet) and not router_port and ip != eui64_of(subnet):
            raise NeutronError(  # neutron/ipam/exceptions.py (an InvalidInput)
                f"IPv6 address {ip} cannot be directly assigned to a port on subnet "
                f"{subnet.id} as the subnet is configured for automatic addresses",
                type="AllocationOnAutoAddressSubnet",
                status=400,
            )
        if (subnet.id, ip) in taken:
            if ip == eui64_of(subnet):
                continue  # the same automatic address asked twice: once is enough
            raise InvalidInput(f"Duplicate IP address {ip} in fixed_ips")
        holder = idx.used_ips.get(subnet.id, {}).get(ip)
        if holder is not None and holder != port_id:
            raise ip_in_use(ip, subnet.id)
        if ip == subnet.gateway_ip and not device_owner.startswith("network:router"):
            raise conflict(
                "IpAddressAlreadyAllocated", f"IP address {ip} is the gateway of subnet {subnet.id}"
            )
        taken.add((subnet.id, ip))
        resolved[i] = model.FixedIP(subnet.id, ip)

    # Pass 2: subnet-only entries keep the port's current address there, else first free.
    reusable = [f for f in existing if (f.subnet_id, f.ip_address) not in taken]
    for i, entry in enumerate(entries):
        if resolved[i] is not None or "ip_address" in entry:
            continue
        subnet = subnet_of(entry)
        if subnet is None:
            raise InvalidInput(f"fixed_ips entry {dict(entry)} needs a subnet_id or an ip_address")
        auto = eui64_of(subnet)
        if auto is not None:
            # the port's EUI-64 address (followed from its MAC, never reused from
            # `existing`); asked twice, once
            if (subnet.id, auto) not in taken:
                _check_auto_holder(idx, subnet.id, auto, port_id)
                taken.add((subnet.id, auto))
                resolved[i] = model.FixedIP(subnet.id, auto)
            continue
        keep = next((f for f in reusable if f.subnet_id == subnet.id), None)
        if keep is not None:
            reusable.remove(keep)
            ip = keep.ip_address
        else:
            # First free from where the index knows every address is held (unless
            # the port itself holds one here, which counts as free for it): no pass
            # over the subnet's addresses per port (issue 11).
            holders = idx.used_ips.get(subnet.id, {})
            hint = idx.free_from.get(subnet.id, 0)
            start = 0 if any(f.subnet_id == subnet.id for f in existing) else hint

            def is_free(ip: str, _holders: Mapping[str, str] = holders,
                        _sid: str = subnet.id) -> bool:
                holder = _holders.get(ip)
                return (holder is None or holder == port_id) and (_sid, ip) not in taken

            free, known = ipam.scan_pools(subnet, start, is_free, holders.__contains__)
            if known > hint:
                idx.free_from[subnet.id] = known
            if free is None:
                raise conflict(
                    "IpAddressGenerationFailure",
                    f"No more IP addresses available on network {network.id}.",
                )
            ip = free
        taken.add((subnet.id, ip))
        resolved[i] = model.FixedIP(subnet.id, ip)

    # Pass 3: the EUI-64 address on every auto-address subnet not named above.
    named = {f.subnet_id for f in resolved if f is not None}
    extra: list[model.FixedIP] = []
    for subnet in subnets:
        auto = eui64_of(subnet)
        if auto is None or subnet.id in named:
            continue
        _check_auto_holder(idx, subnet.id, auto, port_id)
        extra.append(model.FixedIP(subnet.id, auto))
    return tuple(f for f in resolved if f is not None) + tuple(extra)


def _check_auto_holder(idx: IntentIndex, subnet_id: str, ip: str, port_id: str) -> None:
    """An EUI-64 address another port holds (a router's interface given it by hand)."""
    holder = idx.used_ips.get(subnet_id, {}).get(ip)
    if holder is not None and holder != port_id:
        raise ip_in_use(ip, subnet_id)


def follow_mac(
    idx: IntentIndex, port: model.Port, mac: str
) -> tuple[model.FixedIP, ...]:
    """The port's addresses after its MAC changes to `mac`: each one on an
    auto-address subnet becomes the new MAC's EUI-64 address, in place (Neutron's
    update_port_with_ips deletes the EUI-64 addresses and allocates them again)."""
    if not gets_auto_addresses(port.device_owner):
        return port.fixed_ips
    out: list[model.FixedIP] = []
    for f in port.fixed_ips:
        subnet = idx.intent.subnets.get(f.subnet_id)
        if subnet is not None and ipam.is_auto_address_subnet(subnet):
            ip = ipam.eui64_address(subnet.cidr, mac)
            _check_auto_holder(idx, subnet.id, ip, port.id)
            f = model.FixedIP(subnet.id, ip)
        out.append(f)
    return tuple(out)


def _old_eui64_asked_again(
    idx: IntentIndex, port: model.Port, requested: list[dict[str, str]]
) -> list[dict[str, str]]:
    """A MAC change with fixed_ips naming an EUI-64 address of the old MAC (a client
    sending the whole port back): that entry asks for the subnet's automatic address,
    now the new MAC's (Neutron's update_port_with_ips marks it for allocation again)."""
    if not gets_auto_addresses(port.device_owner):
        return requested
    old = {
        ipam.eui64_address(s.cidr, port.mac_address): s.id
        for s in idx.subnets_of(port.network_id)
        if ipam.is_auto_address_subnet(s)
    }
    out = []
    for entry in requested:
        ip = entry.get("ip_address")
        subnet_id = old.get(str(parse_ip(ip))) if ip is not None else None
        if subnet_id is not None and entry.get("subnet_id", subnet_id) == subnet_id:
            entry = {"subnet_id": subnet_id}
        out.append(entry)
    return out


def _network_policy(p: model.Port, intent: model.Intent) -> Optional[str]:
    network = intent.networks.get(p.network_id)
    return network.qos_policy_id if network else None


# Every view key that needs no runtime question (status and binding do), exactly as
# `Ports.view` writes it: lists filter, sort and page on these before building views.
CHEAP_FIELDS: dict[str, Callable[[model.Port, model.Intent], Any]] = {
    "id": lambda p, _: p.id,
    "name": lambda p, _: p.name,
    "description": lambda p, _: p.description,
    "network_id": lambda p, _: p.network_id,
    "project_id": lambda p, _: p.project_id,
    "tenant_id": lambda p, _: p.project_id,
    "mac_address": lambda p, _: p.mac_address,
    "admin_state_up": lambda p, _: p.admin_state_up,
    "fixed_ips": lambda p, _: [
        {"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in p.fixed_ips
    ],
    "security_groups": lambda p, _: list(p.security_groups),
    "port_security_enabled": lambda p, _: p.port_security_enabled,
    "device_id": lambda p, _: p.device_id,
    "device_owner": lambda p, _: p.device_owner,
    "qos_policy_id": lambda p, _: p.qos_policy_id,
    "qos_network_policy_id": _network_policy,
    "binding:host_id": lambda p, _: p.host_id,
    "binding:vnic_type": lambda p, _: "normal",
    "created_at": lambda p, _: p.created_at,
    "updated_at": lambda p, _: p.updated_at,
    "revision_number": lambda p, _: p.revision_number,
}


class Ports(Resource):
    kind, singular, plural, intent_attr = "Port", "port", "ports", "ports"
    attrs = ATTRS
    cheap_fields = CHEAP_FIELDS
    special_filters = frozenset({"security_groups", "fixed_ips"})

    def visible(self, principal: Principal, obj: model.Port, intent: model.Intent) -> bool:
        return owns(principal, obj) or network_owner(principal, intent, obj.network_id)

    def may_modify(self, principal: Principal, obj: model.Port, intent: model.Intent) -> bool:
        """The port's own project or an admin; never merely the network's owner.

        A shared network's owner sees the ports others put on it (Neutron's
        network-owner read rule), but changing one (`security_groups: []`,
        `port_security_enabled: false`) would switch off another tenant's
        protection, so writes stay with the port's project.
        """
        return owns(principal, obj)

    def view(self, p: model.Port, ctx: ViewContext) -> dict[str, Any]:
        binding = ctx.runtime.port_binding(p.id)
        network = ctx.intent.networks.get(p.network_id)
        bound = bool(p.host_id) or binding is not None
        details: dict[str, Any] = {}
        if bound:
            details = {"port_filter": True, "connectivity": "l2", "datapath_type": "netdev"}
            if binding and binding.get("bridge"):
                details["bridge_name"] = binding["bridge"]
        return {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "network_id": p.network_id,
            "project_id": p.project_id,
            "tenant_id": p.project_id,
            "mac_address": p.mac_address,
            "admin_state_up": p.admin_state_up,
            "status": ctx.runtime.port_status(p.id),
            "fixed_ips": [
                {"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in p.fixed_ips
            ],
            "security_groups": list(p.security_groups),
            "port_security_enabled": p.port_security_enabled,
            "device_id": p.device_id,
            "device_owner": p.device_owner,
            "qos_policy_id": p.qos_policy_id,
            "qos_network_policy_id": network.qos_policy_id if network else None,
            "binding:host_id": p.host_id,
            "binding:profile": dict(p.binding_profile),
            "binding:vif_type": "ovs" if bound else "unbound",
            "binding:vif_details": details,
            "binding:vnic_type": "normal",
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "tags": [],
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "revision_number": p.revision_number,
        }

    def match_special(self, key: str, values: list[str], view: Mapping[str, Any]) -> Optional[bool]:
        if key == "security_groups":
            return any(v in view["security_groups"] for v in values)
        if key != "fixed_ips":
            return None
        wanted: dict[str, set[str]] = {}
        for value in values:
            name, _, val = value.partition("=")
            if name not in ("ip_address", "subnet_id") or not val:
                raise InvalidInput(
                    f"fixed_ips filter must be ip_address=... or subnet_id=..., got '{value}'"
                )
            wanted.setdefault(name, set()).add(val)
        return any(all(f[k] in vals for k, vals in wanted.items()) for f in view["fixed_ips"])

    @staticmethod
    def _check_security(
        intent: model.Intent, project_id: str, groups: list[str], port_security: bool
    ) -> tuple[str, ...]:
        """Neutron: a port may use only its own project's groups, and only with port security."""
        if groups and not port_security:
            raise NeutronError(
                "Port security must be enabled and port must have an IP address in order to use "
                "security groups.",
                type="PortSecurityAndIPRequiredForSecurityGroups",
                status=400,
            )
        for group_id in groups:
            group = intent.security_groups.get(group_id)
            if group is None or group.project_id != project_id:
                raise not_found("SecurityGroup", group_id)
        return tuple(sorted(set(groups)))

    def _check_mac(self, idx: IntentIndex, network_id: str, mac: str, port_id: str) -> None:
        holder = idx.macs.get(network_id, {}).get(mac)
        if holder is not None and holder != port_id:
            raise conflict(
                "MacAddressInUse",
                f"Unable to complete operation for network {network_id}. "
                f"The mac address {mac} is in use.",
            )

    @staticmethod
    def _asks_for_addresses(fixed_ips: Optional[list[dict[str, str]]]) -> bool:
        return any("ip_address" in f for f in fixed_ips or [])

    def create(self, principal: Principal, item: dict[str, Any], helper: TxnHelper) -> model.Port:
        intent = helper.current()
        idx = index_for_write(helper)
        project = owner_for_create(principal, item, "create_port")
        check_admin_only(principal, item, self.attrs, "create_port")
        network = intent.networks.get(item["network_id"])
        if network is None or not network_visible(principal, network):
            raise not_found("Network", item["network_id"])
        if not owns(principal, network):
            if "mac_address" in item:
                raise PolicyNotAuthorized("create_port:mac_address")
            if self._asks_for_addresses(item.get("fixed_ips")):
                raise PolicyNotAuthorized("create_port:fixed_ips:ip_address")
        port_id = helper.new_id()
        if "mac_address" in item:
            mac = item["mac_address"]
            self._check_mac(idx, network.id, mac, port_id)
        else:
            mac = ipam.random_mac(idx.macs.get(network.id, {}))  # no copy: O(1) per try
        device_owner = item.get("device_owner", "")
        fixed_ips = resolve_fixed_ips(
            network,
            item.get("fixed_ips"),
            idx,
            principal,
            port_id=port_id,
            device_owner=device_owner,
            mac=mac,
        )
        port_security = item.get("port_security_enabled", network.port_security_enabled)
        default_group = ensure_default_group(helper, project)  # Neutron: on every port create
        intent = helper.current()
        requested = item.get("security_groups")  # omitted or null: the default group
        if requested is None:
            # Neutron gives no groups to its own (network:*) ports, nor without port security.
            trusted = device_owner.startswith("network:")
            requested = [default_group] if port_security and not trusted else []
        groups = self._check_security(intent, project, requested, port_security)
        check_qos_policy(principal, intent, item.get("qos_policy_id"))
        stamp = now()
        port = model.Port(
            id=port_id,
            project_id=project,
            network_id=network.id,
            name=item.get("name", ""),
            mac_address=mac,
            fixed_ips=fixed_ips,
            port_security_enabled=port_security,
            security_groups=groups,
            admin_state_up=item.get("admin_state_up", True),
            host_id=item.get("binding:host_id", ""),
            device_id=item.get("device_id", ""),
            device_owner=device_owner,
            qos_policy_id=item.get("qos_policy_id"),
            binding_profile=item.get("binding:profile", {}),
            description=item.get("description", ""),
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
        )
        helper.put(port)
        return port

    def update(
        self, principal: Principal, port: model.Port, changes: dict[str, Any], helper: TxnHelper
    ) -> model.Port:
        intent = helper.current()
        idx = index_for_write(helper)
        check_admin_only(principal, changes, self.attrs, "update_port")
        network = intent.networks[port.network_id]
        if not owns(principal, network):
            if "mac_address" in changes:
                raise PolicyNotAuthorized("update_port:mac_address")
            if self._asks_for_addresses(changes.get("fixed_ips")):
                raise PolicyNotAuthorized("update_port:fixed_ips:ip_address")
        mac = changes.get("mac_address", port.mac_address)
        if mac != port.mac_address:
            if port.host_id:
                raise conflict(
                    "PortBound",
                    f"Unable to complete operation on port {port.id}, port is already bound, "
                    f"port type: ovs, old_mac {port.mac_address}, new_mac {mac}.",
                )
            self._check_mac(idx, network.id, mac, port.id)
        device_owner = changes.get("device_owner", port.device_owner)
        fixed_ips = port.fixed_ips
        if "fixed_ips" in changes:
            requested = changes["fixed_ips"]
            if mac != port.mac_address:
                requested = _old_eui64_asked_again(idx, port, requested)
            fixed_ips = resolve_fixed_ips(
                network,
                requested,
                idx,
                principal,
                port_id=port.id,
                existing=port.fixed_ips,
                device_owner=device_owner,
                mac=mac,
            )
        elif mac != port.mac_address:
            fixed_ips = follow_mac(idx, port, mac)  # its EUI-64 addresses follow the MAC
        port_security = changes.get("port_security_enabled", port.port_security_enabled)
        ensure_default_group(helper, port.project_id)  # Neutron: on every port update
        intent = helper.current()
        if "security_groups" in changes:  # null means none, as in Neutron
            groups = self._check_security(
                intent, port.project_id, changes["security_groups"] or [], port_security
            )
        else:
            groups = port.security_groups
            if groups and not port_security:
                raise conflict(
                    "PortSecurityPortHasSecurityGroup",
                    "Port has security group associated. Cannot disable port security or IP "
                    "address until security group is removed.",
                )
        if "qos_policy_id" in changes:
            check_qos_change(principal, intent, port.qos_policy_id, changes["qos_policy_id"])
        updated = dataclasses.replace(
            port,
            name=changes.get("name", port.name),
            description=changes.get("description", port.description),
            mac_address=mac,
            fixed_ips=fixed_ips,
            port_security_enabled=port_security,
            security_groups=groups,
            admin_state_up=changes.get("admin_state_up", port.admin_state_up),
            host_id=changes.get("binding:host_id", port.host_id),
            binding_profile=changes.get("binding:profile", port.binding_profile),
            device_id=changes.get("device_id", port.device_id),
            device_owner=device_owner,
            qos_policy_id=changes.get("qos_policy_id", port.qos_policy_id),
        )
        if updated == port:
            return port
        if port.device_owner.startswith("network:"):
            check_router_port_update(index_for_write(helper), port, updated)
        updated = dataclasses.replace(
            updated, updated_at=now(), revision_number=port.revision_number + 1
        )
        if updated.fixed_ips != port.fixed_ips:
            from controller.rest.floatingips import release_port  # (imports this module)

            release_port(helper, port, kept={f.ip_address for f in updated.fixed_ips})
        helper.put(updated)
        return updated

    def delete(self, principal: Principal, port: model.Port, helper: TxnHelper) -> None:
        if l3_owner(index_for_write(helper), port) is not None:  # prevent_l3_port_deletion
            raise conflict(
                "ServicePortInUse",
                f"Port {port.id} cannot be deleted directly via the port API: "
                f"has device owner {port.device_owner}.",
            )
        from controller.rest.floatingips import release_port  # (imports this module)

        release_port(helper, port)  # its floating IPs disassociated, port forwardings gone
        helper.delete(model.Port, port.id)


def l3_owner(idx: IntentIndex, port: model.Port) -> Optional[str]:
    """The router (or floating IP) whose interface, gateway or floating IP port `port`
    is, by the rows that name it; only ports with such a device owner are looked up.
    Looked up in the snapshot's index (`idx`, e.g. `index_for_write(helper)`) by port
    id: O(1), not a pass over the routers, interfaces or floating IPs."""
    if port.device_owner == ROUTER_INTERFACE:
        ifaces = idx.interfaces_on_port(port.id)
        return ifaces[0].router_id if ifaces else None
    if port.device_owner == ROUTER_GATEWAY:
        return idx.gateway_router(port.id)
    if port.device_owner == FLOATINGIP:
        return idx.floating_ip_of_port(port.id)
    return None


def check_router_port_update(idx: IntentIndex, port: model.Port, updated: model.Port) -> None:
    """A router's port (interface or gateway) keeps its owner, and its one address on
    its subnet: the router's rows name both (remove the interface, or change the
    router's external_gateway_info, instead). A floating IP's port keeps its owner and
    its address, which is the floating IP's."""
    owner = l3_owner(idx, port)
    if owner is None:
        return
    moved = [f.subnet_id for f in updated.fixed_ips] != [f.subnet_id for f in port.fixed_ips]
    if port.device_owner == FLOATINGIP:
        moved = updated.fixed_ips != port.fixed_ips
    if (updated.device_owner, updated.device_id) != (port.device_owner, port.device_id) or \
            moved:
        raise conflict(
            "PortInUse",
            f"Unable to complete operation on port {port.id} for network {port.network_id}. "
            f"Port already has an attached device {owner}.",
        )
