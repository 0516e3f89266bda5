"""A router's external gateway: `external_gateway_info` on POST/PUT /v2.0/routers.

Neutron's semantics (neutron/db/l3_db.py `_update_router_gw_info`, l3_gwmode_db),
inside the router's write transaction, so a refused request writes nothing:

- `{network_id, enable_snat?, external_fixed_ips?: [{subnet_id?, ip_address?}]}`.
  The network must exist and be visible to the caller (own or shared; else 404
  NetworkNotFound) and be `router:external` (else 400 "Bad router request: Network
  <id> is not an external network."). An external IP equal to a subnet's gateway_ip
  is 400 ("External IP <ip> is the same as the gateway IP").
- Neutron's policy defaults: any member may set `network_id`; `enable_snat` and
  `external_fixed_ips` are admin only (403 PolicyNotAuthorized
  `create_router:external_gateway_info:enable_snat` ..., whatever their value, as
  Neutron checks a sub-attribute by its presence).
- `enable_snat` defaults to true whenever the gateway info is written without it
  (Neutron's `enable_snat_by_default`).
- Setting a gateway creates the gateway port: `device_owner: network:router_gateway`,
  `device_id: <router>`, `project_id: ""` (Neutron leaves the gateway port without a
  project: only admins see it), no port security, one IPv4 address, from the first
  IPv4 subnet of the network with a free one, or the requested `external_fixed_ips`.
  Loom needs that IPv4 address for SNAT: an external network without an IPv4 subnet
  is 400 (Neutron would make a gateway port without addresses).
- The external subnets must not overlap the router's interface subnets (Neutron's
  `_check_for_dup_router_subnets`, 400).
- Same network again: the port stays (its addresses change if other
  `external_fixed_ips` are asked for); another network: the port is replaced.
- Clearing (null or {}) or replacing it deletes the gateway port, unless a floating
  IP of this router needs the gateway (409 RouterExternalGatewayInUseByFloatingIp).
- The router's NAT conntrack zone (`Router.snat_zone`) is allocated by the store
  when the gateway is first set (store/allocations.py), kept while a gateway stays
  (also across a change of network) and freed when it is cleared.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Optional

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import NeutronError, PolicyNotAuthorized, conflict, not_found
from controller.rest.index import IntentIndex, index_for_write
from controller.rest.policy import network_visible
from controller.rest.ports import ROUTER_GATEWAY, put_device_port, resolve_fixed_ips
from controller.rest.resource import now
from controller.rest.router_interfaces import interfaces_of, router_bad
from controller.rest.validate import boolean, ip_address, keyed, list_of, uuid_str
from controller.store.txn import TxnHelper

_fixed_ip = keyed({"subnet_id": uuid_str, "ip_address": ip_address})
_info = keyed(
    {"network_id": uuid_str, "enable_snat": boolean, "external_fixed_ips": list_of(_fixed_ip)},
    required=("network_id",),
)
ADMIN_ONLY = ("enable_snat", "external_fixed_ips")


def gateway_info(value: Any) -> Optional[dict[str, Any]]:
    """Neutron's type:dict_or_nodata for external_gateway_info: null or {} (no gateway),
    else {network_id, enable_snat?, external_fixed_ips?}, each converted."""
    if value is None or value == {}:
        return None
    return _info(value)  # type: ignore[no-any-return]


def check_policy(principal: Principal, info: Optional[dict[str, Any]], action: str) -> None:
    """enable_snat and external_fixed_ips are admin only (Neutron's policy defaults)."""
    if principal.is_admin or info is None:
        return
    for key in ADMIN_ONLY:
        if key in info:
            raise PolicyNotAuthorized(f"{action}:external_gateway_info:{key}")


def view(router: model.Router) -> Optional[dict[str, Any]]:
    if router.external_network_id is None:
        return None
    return {
        "network_id": router.external_network_id,
        "enable_snat": router.enable_snat,
        "external_fixed_ips": [
            {"subnet_id": f.subnet_id, "ip_address": f.ip_address}
            for f in router.external_fixed_ips
        ],
    }


def routers_fips(intent: model.Intent, router_id: str) -> list[model.FloatingIP]:
    """The floating IPs served by the router (associated, or with port forwardings)."""
    return sorted((f for f in intent.floating_ips.values() if f.router_id == router_id),
                  key=lambda f: f.id)


def check_no_floating_ips(intent: model.Intent, router: model.Router) -> None:
    if router.external_network_id is not None and routers_fips(intent, router.id):
        raise conflict(
            "RouterExternalGatewayInUseByFloatingIp",
            f"Gateway cannot be updated for router {router.id}, since a gateway to external "
            f"network {router.external_network_id} is required by one or more floating IPs.",
        )


def allocate_one_ipv4(
    network: model.Network, idx: IntentIndex, principal: Principal, port_id: str,
    device_owner: str,
) -> Optional[tuple[model.FixedIP, ...]]:
    """One IPv4 address from the first IPv4 subnet of `network` with a free one (as
    Neutron's IPAM gives a port without fixed_ips); None if every one is full or there
    is none."""
    for subnet in idx.subnets_of(network.id):
        if subnet.ip_version != 4:
            continue
        try:
            return resolve_fixed_ips(network, [{"subnet_id": subnet.id}], idx, principal,
                                     port_id=port_id, device_owner=device_owner)
        except NeutronError as exc:
            if exc.type != "IpAddressGenerationFailure":
                raise
    return None


def has_ipv4_subnet(idx: IntentIndex, network_id: str) -> bool:
    return any(s.ip_version == 4 for s in idx.subnets_of(network_id))


def _elevated(router: model.Router) -> Principal:
    """Neutron makes the gateway port with an elevated context."""
    return Principal(router.project_id, "admin")


def _check_external_ips(idx: IntentIndex, network: model.Network,
                        ext_ips: list[dict[str, str]]) -> None:
    """Neutron's _validate_gw_info: no external IP may be a subnet's gateway_ip."""
    for s in idx.subnets_of(network.id):
        for ext in ext_ips:
            if s.gateway_ip and ext.get("ip_address") == s.gateway_ip:
                raise router_bad(f"External IP {ext['ip_address']} is the same as the gateway IP")


def _check_overlaps(idx: IntentIndex, router: model.Router, network: model.Network) -> None:
    """Neutron's _check_for_dup_router_subnets(include_gateway=True), against the
    router's interface subnets: an external subnet overlapping one is 400."""
    intent = idx.intent
    new = idx.subnets_of(network.id)
    for iface in interfaces_of(idx, router.id):
        sub = intent.subnets.get(iface.subnet_id)
        if sub is None:
            continue
        if sub.network_id == network.id:
            raise router_bad(f"Router already has a port on subnet {sub.id}")
        for s in new:
            if ipaddress.ip_network(sub.cidr).overlaps(ipaddress.ip_network(s.cidr)):
                raise router_bad(
                    f"Cidr {s.cidr} of subnet {s.id} overlaps with cidr {sub.cidr} "
                    f"of subnet {sub.id}"
                )


def _gateway_port(
    router: model.Router, network: model.Network, ext_ips: Optional[list[dict[str, str]]],
    helper: TxnHelper,
) -> model.Port:
    idx = index_for_write(helper)
    port_id = helper.new_id()
    principal = _elevated(router)
    if ext_ips:
        fixed = resolve_fixed_ips(
            network, ext_ips, idx, principal, port_id=port_id, device_owner=ROUTER_GATEWAY)
        _one_ipv4(fixed)
    else:
        found = allocate_one_ipv4(network, idx, principal, port_id, ROUTER_GATEWAY)
        if found is None:
            raise conflict("IpAddressGenerationFailure",
                           f"No more IP addresses available on network {network.id}.")
        fixed = found
    # project "": Neutron's "intentionally not set", the port is hidden from users
    port = put_device_port(helper, idx, port_id, "", network.id, fixed, router.id,
                           ROUTER_GATEWAY)
    return port


def _one_ipv4(fixed: tuple[model.FixedIP, ...]) -> None:
    """What Loom's data plane serves: a gateway holds one IPv4 address (Neutron accepts
    several, IPv6 included)."""
    if len(fixed) != 1 or ipaddress.ip_address(fixed[0].ip_address).version != 4:
        raise router_bad("A Loom router gateway holds exactly one IPv4 address: give one "
                         "IPv4 external_fixed_ips entry")


def _ips_change(port: model.Port, ext_ips: Optional[list[dict[str, str]]]) -> bool:
    """Neutron's _check_for_external_ip_change."""
    if not ext_ips:
        return False
    subnets = {f.subnet_id for f in port.fixed_ips}
    wanted_subnets = {e["subnet_id"] for e in ext_ips if e.get("subnet_id")}
    if wanted_subnets != subnets:
        return True
    addresses = {f.ip_address for f in port.fixed_ips}
    return {e["ip_address"] for e in ext_ips if e.get("ip_address")} != addresses


def clear(router: model.Router, helper: TxnHelper) -> model.Router:
    """The router without its gateway (its port deleted), not yet written."""
    if router.external_network_id is None and router.gateway_port_id is None:
        return router
    check_no_floating_ips(helper.current(), router)
    if router.gateway_port_id and router.gateway_port_id in helper.current().ports:
        helper.delete(model.Port, router.gateway_port_id)
    return dataclasses.replace(router, external_network_id=None, gateway_port_id=None,
                               external_fixed_ips=(), enable_snat=True, snat_zone=0)


def apply(
    principal: Principal, router: model.Router, info: Optional[dict[str, Any]],
    helper: TxnHelper,
) -> model.Router:
    """`router` with the gateway `info` asks for (ports made or deleted as needed);
    the router itself is not written (the caller puts it, once)."""
    if info is None:
        return clear(router, helper)
    intent = helper.current()
    idx = index_for_write(helper)
    network = intent.networks.get(info["network_id"])
    if network is None or not network_visible(principal, network):
        raise not_found("Network", info["network_id"])
    if not network.router_external:
        raise router_bad(f"Network {network.id} is not an external network")
    ext_ips: Optional[list[dict[str, str]]] = info.get("external_fixed_ips") or None
    if ext_ips:
        _check_external_ips(idx, network, ext_ips)
    enable_snat = info.get("enable_snat", True)
    current = intent.ports.get(router.gateway_port_id) if router.gateway_port_id else None
    if current is not None and current.network_id == network.id:
        if _ips_change(current, ext_ips):
            fixed = resolve_fixed_ips(network, ext_ips, idx, _elevated(router),
                                      port_id=current.id, existing=current.fixed_ips,
                                      device_owner=ROUTER_GATEWAY)
            _one_ipv4(fixed)
            if fixed != current.fixed_ips:
                current = dataclasses.replace(current, fixed_ips=fixed, updated_at=now(),
                                              revision_number=current.revision_number + 1)
                helper.put(current)
        return dataclasses.replace(router, external_network_id=network.id,
                                   gateway_port_id=current.id,
                                   external_fixed_ips=current.fixed_ips, enable_snat=enable_snat)
    cleared = clear(router, helper)  # another network (or none yet): a new port
    _check_overlaps(index_for_write(helper), router, network)
    if ext_ips is None and not has_ipv4_subnet(idx, network.id):
        raise router_bad(f"External network {network.id} has no IPv4 subnet: a Loom router "
                         "gateway needs an IPv4 address")
    port = _gateway_port(router, network, ext_ips, helper)
    return dataclasses.replace(cleared, external_network_id=network.id, gateway_port_id=port.id,
                               external_fixed_ips=port.fixed_ips, enable_snat=enable_snat,
                               snat_zone=router.snat_zone)
