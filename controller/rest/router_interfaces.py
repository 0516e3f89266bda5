"""PUT /v2.0/routers/{id}/add_router_interface and remove_router_interface.

Neutron's semantics (neutron/db/l3_db.py), in one store transaction each, so a
refused request writes nothing:

- By `subnet_id`: a new port on the subnet's network, owned by the router's project,
  `device_owner: network:router_interface`, `device_id: <router>`, the subnet's
  `gateway_ip` as its only fixed IP, a generated MAC, no port security and no
  security groups (a router port forwards other hosts' packets); plus the
  Router_Interface row. The subnet must have a gateway_ip (400) that no other port
  holds (409 IpAddressAlreadyAllocated); a member may attach only subnets of its own
  project (another project's subnet is 404 when invisible, 400 when seen through a
  shared network, as in Neutron).
- By `port_id`: the caller's port, unowned (no device_id/device_owner) and unbound
  (else 409 PortInUse), with exactly one fixed IP (Neutron: at least one, and one
  IPv4 subnet; Loom's Router_Interface holds one subnet per port). It becomes the
  router's port: device_owner/device_id set, port security off, no groups.
- Either way: "Router already has a port on subnet" and overlapping CIDRs among the
  router's subnets are 400 BadRequest with Neutron's messages.
- Removing an interface (by port, by subnet, or both: the port must be on that
  subnet) deletes its Router_Interface row and its port, whichever way it was added
  (Neutron deletes a port added by port_id too). A subnet that an extra route's
  nexthop needs cannot be removed (409 RouterInterfaceInUseByRoute), nor one a
  floating IP or port forwarding of the router reaches (409
  RouterInterfaceInUseByFloatingIP).
- The answer is Neutron's {id, subnet_id, subnet_ids, port_id, network_id,
  project_id, tenant_id}, `id` being the router's.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Optional

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import (
    BadRequest,
    NeutronError,
    NotFound,
    PolicyNotAuthorized,
    bad_request,
    conflict,
    not_found,
)
from controller.rest.index import IntentIndex, index_for_write
from controller.rest.policy import network_owner, owns, subnet_visible
from controller.rest.ports import ROUTER_INTERFACE, put_device_port, resolve_fixed_ips
from controller.rest.resource import now
from controller.rest.validate import uuid_str
from controller.store.txn import TxnHelper


def router_bad(message: str) -> BadRequest:
    """Neutron's n_exc.BadRequest(resource='router', msg=...)."""
    return bad_request("BadRequest", f"Bad router request: {message}.")


def interfaces_of(idx: IntentIndex, router_id: str) -> list[model.RouterInterface]:
    """The router's interfaces by port id, from the snapshot's index (`idx`, e.g.
    `index_for_write(helper)`): O(the router's interfaces), not a pass over every
    Router_Interface row."""
    return idx.interfaces_of(router_id)


def bump(helper: TxnHelper, router: model.Router, **changes: Any) -> model.Router:
    """The router with `changes`, its revision bumped, written (router ports revise it)."""
    updated = dataclasses.replace(
        router, **changes, updated_at=now(), revision_number=router.revision_number + 1
    )
    helper.put(updated)
    return updated


def port_in_use(port: model.Port) -> NeutronError:
    return conflict(
        "PortInUse",
        f"Unable to complete operation on port {port.id} for network {port.network_id}. "
        f"Port already has an attached device {port.device_id}.",
    )


# -- the body ---------------------------------------------------------------------------
def parse_interface_info(body: Any, *, removal: bool) -> dict[str, str]:
    """Neutron's _validate_interface_info: subnet_id and/or port_id, valid UUIDs."""
    info = body if isinstance(body, dict) else {}
    wanted = {k: info[k] for k in ("port_id", "subnet_id") if k in info}
    if not wanted:
        raise router_bad("Either subnet_id or port_id must be specified")
    out: dict[str, str] = {}
    for key, value in wanted.items():
        if not isinstance(value, str):
            raise router_bad(f"'{value}' is not a valid UUID")
        try:
            out[key] = uuid_str(value)
        except NeutronError:
            raise router_bad(f"'{value}' is not a valid UUID") from None
    if not removal and len(out) == 2:
        raise router_bad("Cannot specify both subnet-id and port-id")
    return out


def info(router: model.Router, port: model.Port, subnet_ids: list[str]) -> dict[str, Any]:
    """Neutron's _make_router_interface_info."""
    return {
        "id": router.id,
        "project_id": port.project_id,
        "tenant_id": port.project_id,
        "port_id": port.id,
        "network_id": port.network_id,
        "subnet_id": subnet_ids[0],
        "subnet_ids": subnet_ids,
    }


# -- add --------------------------------------------------------------------------------
def _subnet(principal: Principal, intent: model.Intent, subnet_id: str) -> model.Subnet:
    subnet = intent.subnets.get(subnet_id)
    if subnet is None or not subnet_visible(principal, intent, subnet):
        raise not_found("Subnet", subnet_id)
    return subnet


def check_router_subnets(
    idx: IntentIndex, router: model.Router, new: list[model.Subnet]
) -> None:
    """Neutron's _check_for_dup_router_subnets: no second port on a subnet, no overlap.
    An IPv6 interface is accepted: Loom advertises its prefix and itself as default
    router there (controller/router_advert.py), but routes only IPv4 so far
    (compiler/routing.py; README, limits)."""
    intent = idx.intent
    new_ids = {s.id for s in new}
    attached: list[str] = []
    for iface in interfaces_of(idx, router.id):
        port = intent.ports.get(iface.port_id)
        for f in port.fixed_ips if port is not None else ():
            if f.subnet_id in new_ids:
                raise router_bad(f"Router already has a port on subnet {f.subnet_id}")
            attached.append(f.subnet_id)
    for sid in attached:
        sub = intent.subnets.get(sid)
        if sub is None:
            continue
        for s in new:
            if ipaddress.ip_network(sub.cidr).overlaps(ipaddress.ip_network(s.cidr)):
                raise router_bad(
                    f"Cidr {s.cidr} of subnet {s.id} overlaps with cidr {sub.cidr} "
                    f"of subnet {sub.id}"
                )


def _add_by_subnet(
    principal: Principal, router: model.Router, subnet_id: str, helper: TxnHelper
) -> tuple[model.Port, model.Subnet]:
    intent = helper.current()
    subnet = _subnet(principal, intent, subnet_id)
    if not subnet.gateway_ip:
        raise router_bad("Subnet for router interface must have a gateway IP")
    if not principal.is_admin and subnet.project_id != principal.project_id:
        raise router_bad(
            f"Cannot add interface to router because subnet {subnet.id} is not owned by "
            "project making the request"
        )
    idx = index_for_write(helper)
    check_router_subnets(idx, router, [subnet])
    network = intent.networks[subnet.network_id]
    port_id = helper.new_id()
    fixed_ips = resolve_fixed_ips(
        network,
        [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
        idx,
        principal,
        port_id=port_id,
        device_owner=ROUTER_INTERFACE,
    )
    port = put_device_port(helper, idx, port_id, router.project_id, network.id, fixed_ips,
                           router.id, ROUTER_INTERFACE)
    return port, subnet


def _check_pools(principal: Principal, port: model.Port, subnet: model.Subnet) -> None:
    """Neutron's _validate_port_in_range_or_admin: a member may not give a router an
    address outside the pools of a subnet it does not own (e.g. another's gateway)."""
    if principal.is_admin or subnet.project_id == principal.project_id:
        return
    ip = int(ipaddress.ip_address(port.fixed_ips[0].ip_address))
    pools = subnet.allocation_pools
    if not any(
        int(ipaddress.ip_address(p.start)) <= ip <= int(ipaddress.ip_address(p.end)) for p in pools
    ):
        raise router_bad(
            f"Cannot add interface to router because specified port {port.id} has an IP "
            f"address out of the allocation pool of subnet {subnet.id}, which is not owned by "
            "the project making the request"
        )


def _add_by_port(
    principal: Principal, router: model.Router, port_id: str, helper: TxnHelper
) -> tuple[model.Port, model.Subnet]:
    intent = helper.current()
    port = intent.ports.get(port_id)
    if port is None or not (
        owns(principal, port) or network_owner(principal, intent, port.network_id)
    ):
        raise not_found("Port", port_id)
    if not owns(principal, port):
        raise PolicyNotAuthorized("add_router_interface:port_id")
    if port.device_id or port.device_owner:
        raise port_in_use(port)
    if port.host_id:
        raise conflict(
            "PortInUse",
            f"Unable to complete operation on port {port.id} for network {port.network_id}. "
            f"Port is bound to host {port.host_id}.",
        )
    if not port.fixed_ips:
        raise router_bad("Router port must have at least one fixed IP")
    subnets = [intent.subnets[f.subnet_id] for f in port.fixed_ips]
    check_router_subnets(index_for_write(helper), router, subnets)
    if len([s for s in subnets if s.ip_version == 4]) > 1:
        raise router_bad("Cannot have multiple IPv4 subnets on router port")
    if len(subnets) > 1:
        raise router_bad(
            "A Loom router port holds exactly one fixed IP; attach each subnet "
            "by its own port"
        )
    _check_pools(principal, port, subnets[0])
    updated = dataclasses.replace(
        port,
        device_id=router.id,
        device_owner=ROUTER_INTERFACE,
        port_security_enabled=False,
        security_groups=(),
        updated_at=now(),
        revision_number=port.revision_number + 1,
    )
    helper.put(updated)
    return updated, subnets[0]


def add_interface(
    principal: Principal, router: model.Router, body: dict[str, str], helper: TxnHelper
) -> dict[str, Any]:
    if "port_id" in body:
        port, subnet = _add_by_port(principal, router, body["port_id"], helper)
    else:
        port, subnet = _add_by_subnet(principal, router, body["subnet_id"], helper)
    helper.put(
        model.RouterInterface(
            id=helper.new_id(), router_id=router.id, port_id=port.id, subnet_id=subnet.id
        )
    )
    bump(helper, router)
    return info(router, port, [subnet.id])


# -- remove -----------------------------------------------------------------------------
def _not_needed_by_routes(router: model.Router, subnet: model.Subnet) -> None:
    """Neutron's extraroute check: no extra route's nexthop may be left unconnected."""
    cidr = ipaddress.ip_network(subnet.cidr)
    for _, nexthop in router.routes:
        if ipaddress.ip_address(nexthop) in cidr:
            raise conflict(
                "RouterInterfaceInUseByRoute",
                f"Router interface for subnet {subnet.id} on router {router.id} cannot be "
                "deleted, as it is required by one or more routes.",
            )


def _not_needed_by_floating_ips(intent: model.Intent, router: model.Router,
                                subnet: model.Subnet) -> None:
    """Neutron's _confirm_router_interface_not_in_use: no floating IP of the router (nor
    port forwarding) may reach an address of the subnet through it."""
    cidr = ipaddress.ip_network(subnet.cidr)
    fips = [f for f in intent.floating_ips.values() if f.router_id == router.id]
    if not fips:
        return
    ids = {f.id for f in fips}
    inside = [f.fixed_ip_address for f in fips if f.fixed_ip_address] + [
        p.internal_ip_address for p in intent.port_forwardings.values()
        if p.floatingip_id in ids]
    if any(ipaddress.ip_address(a) in cidr for a in inside):
        raise conflict(
            "RouterInterfaceInUseByFloatingIP",
            f"Router interface for subnet {subnet.id} on router {router.id} cannot be "
            "deleted, as it is required by one or more floating IPs.",
        )


def _find(
    idx: IntentIndex, router: model.Router, body: dict[str, str]
) -> Optional[model.RouterInterface]:
    """The router's interface on the port (else the subnet) asked for: the rows naming
    that port (or subnet), not the router's other interfaces nor anyone else's."""
    port_id, subnet_id = body.get("port_id"), body.get("subnet_id")
    if port_id is not None:
        candidates = idx.interfaces_on_port(port_id)
    else:
        assert subnet_id is not None
        candidates = idx.interfaces_on_subnet(subnet_id)
    return next((i for i in candidates if i.router_id == router.id), None)


def remove_interface(
    principal: Principal, router: model.Router, body: dict[str, str], helper: TxnHelper
) -> dict[str, Any]:
    intent = helper.current()
    port_id, subnet_id = body.get("port_id"), body.get("subnet_id")
    if port_id is None:
        assert subnet_id is not None
        _subnet(principal, intent, subnet_id)
    iface = _find(index_for_write(helper), router, body)
    port = intent.ports.get(iface.port_id) if iface is not None else None
    if iface is None or port is None:
        if port_id is not None:
            raise NotFound(
                f"Router {router.id} does not have an interface with id {port_id}",
                type="RouterInterfaceNotFound",
            )
        raise NotFound(
            f"Router {router.id} has no interface on subnet {subnet_id}",
            type="RouterInterfaceNotFoundForSubnet",
        )
    subnet_ids = [f.subnet_id for f in port.fixed_ips] or [iface.subnet_id]
    if subnet_id is not None and subnet_id not in subnet_ids:
        raise bad_request(
            "SubnetMismatchForPort",
            f"Subnet on port {port.id} does not match the requested subnet {subnet_id}.",
        )
    for sid in subnet_ids:
        subnet = intent.subnets.get(sid)
        if subnet is not None:
            _not_needed_by_routes(router, subnet)
            _not_needed_by_floating_ips(intent, router, subnet)
    helper.delete(model.RouterInterface, iface.id)
    helper.delete(model.Port, port.id)
    bump(helper, router)
    return info(router, port, subnet_ids)
