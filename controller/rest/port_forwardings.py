"""/v2.0/floatingips/{floatingip_id}/port_forwardings[/{id}]: floating IP port forwarding.

Neutron's floating-ip-port-forwarding extension (neutron/services/portforwarding/
pf_plugin.py, common/exceptions.py), one store transaction per write:

- Attributes: `protocol` (tcp | udp: what Loom's NAT forwards; Neutron also takes
  other IP protocols), `external_port` and `internal_port` (1..65535),
  `internal_ip_address`, `internal_port_id`, `description` (Neutron's
  floating-ip-port-forwarding-description). No port ranges
  (floating-ip-port-forwarding-port-ranges is not served).
- The floating IP must be visible (else 404 FloatingIPNotFound); members change the
  port forwardings of their own floating IPs only.
- Create/update checks, in Neutron's order and words:
  * (floating IP, protocol, external port) and (internal port, internal address,
    internal port number, protocol) are unique: 400 "Bad port_forwarding request: A
    duplicate port forwarding entry with same attributes already exists, conflicting
    values are {...}." (Neutron answers 400 BadRequest here, not 409);
  * the internal port already has a floating IP: 409 PortHasBindingFloatingIP;
  * the floating IP is associated with a port: 409 FloatingIPPortAlreadyAssociated;
  * the internal port must be visible (404 PortNotFound), have an IPv4 address (400)
    and hold `internal_ip_address` (400 "Requested internal IP address ... is not
    suitable for internal neutron port ...");
  * a router must join the address's subnet to the floating IP's network (400 "External
    network ... is not reachable from subnet ...", Neutron's wording for port
    forwardings), the same router as the floating IP's other port forwardings (400).
- The floating IP's `router_id` is set by its first port forwarding and cleared with
  its last; a floating IP with port forwardings cannot be associated with a port nor
  deleted (409 FipInUseByPortForwarding, floatingips.py).
- Deleting the internal port, or removing the address from it, deletes its port
  forwardings (floatingips.release_port).
- List: filters, fields, sorting and pagination as every collection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Optional

from webob import Request

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import (
    BadRequest,
    NotFound,
    PolicyNotAuthorized,
    bad_request,
    conflict,
    not_found,
)
from controller.rest.floatingips import (
    already_associated,
    bump,
    fip_not_found,
    port_visible,
    router_for,
)
from controller.rest.index import index_for_write, index_of
from controller.rest.policy import owns
from controller.rest.resource import Resource, ViewContext
from controller.rest.validate import (
    Attr,
    check_item,
    enum,
    in_range,
    integer,
    ip_address,
    resource_items,
    string,
    uuid_str,
)
from controller.store.txn import TxnHelper

PROTOCOLS = ("tcp", "udp")


def pf_not_found(pf_id: str) -> NotFound:
    return NotFound(f"Port Forwarding {pf_id} could not be found.",
                    type="PortForwardingNotFound")


def pf_bad(message: str) -> BadRequest:
    """Neutron's n_exc.BadRequest(resource='port_forwarding', msg=...)."""
    return bad_request("BadRequest", f"Bad port_forwarding request: {message}.")


_port_number = in_range(integer, 1, 65535)

A = Attr
ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("protocol", enum(*PROTOCOLS), required=True),
        A("external_port", _port_number, required=True),
        A("internal_port", _port_number, required=True),
        A("internal_ip_address", ip_address, required=True),
        A("internal_port_id", uuid_str, required=True),
        A("description", string(), default=""),
    )
}

CHEAP_FIELDS: dict[str, Callable[[model.PortForwarding, model.Intent], Any]] = {
    "id": lambda p, _: p.id,
    "protocol": lambda p, _: p.protocol,
    "external_port": lambda p, _: p.external_port,
    "internal_port": lambda p, _: p.internal_port,
    "internal_ip_address": lambda p, _: p.internal_ip_address,
    "internal_port_id": lambda p, _: p.internal_port_id,
    "description": lambda p, _: p.description,
}


def _duplicate(values: dict[str, Any]) -> BadRequest:
    return pf_bad("A duplicate port forwarding entry with same attributes already exists, "
                  f"conflicting values are {values}")


def check(principal: Principal, fip: model.FloatingIP, pf: model.PortForwarding,
          helper: TxnHelper, *, port_changed: bool) -> Optional[str]:
    """Neutron's create/update checks for `pf` (as it would be written); the router
    that serves it. Nothing is written."""
    intent = helper.current()
    idx = index_for_write(helper)
    for other in idx.pfs_of_fip(fip.id):
        if (other.id != pf.id and other.protocol == pf.protocol
                and other.external_port == pf.external_port):
            raise _duplicate({"floatingip_id": fip.id, "external_port": pf.external_port,
                              "protocol": pf.protocol})
    for other in idx.pfs_to_port(pf.internal_port_id):
        if (other.id != pf.id and other.protocol == pf.protocol
                and other.internal_ip_address == pf.internal_ip_address
                and other.internal_port == pf.internal_port):
            raise _duplicate({"internal_port_id": pf.internal_port_id,
                              "internal_ip_address": pf.internal_ip_address,
                              "internal_port": pf.internal_port, "protocol": pf.protocol})
    bound = idx.fips_on_port(pf.internal_port_id)
    if bound and port_changed:
        other_fip = intent.floating_ips[bound[0]]
        raise conflict(
            "PortHasBindingFloatingIP",
            f"Cannot create port forwarding to floating IP {other_fip.floating_ip_address} "
            f"({other_fip.id}) with port {pf.internal_port_id} using fixed IP "
            f"{pf.internal_ip_address}, as that port already has a binding floating IP.",
        )
    if fip.port_id:
        raise already_associated(fip, pf.internal_port_id, pf.internal_ip_address)
    port = intent.ports.get(pf.internal_port_id)
    if port is None or not port_visible(principal, intent, port):
        raise not_found("Port", pf.internal_port_id)
    v4 = [f for f in port.fixed_ips if ":" not in f.ip_address]
    if not v4:
        raise pf_bad(f"Requested internal port {port.id} must allocate an IPv4 address at "
                     "least")
    subnet_id = next((f.subnet_id for f in v4 if f.ip_address == pf.internal_ip_address), None)
    if subnet_id is None:
        shown = [{"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in v4]
        raise pf_bad(f"Requested internal IP address {pf.internal_ip_address} is not suitable "
                     f"for internal neutron port {port.id}, as its fixed_ips are {shown}")
    router_id = router_for(idx, port, subnet_id, fip.floating_network_id)
    if router_id is None:
        raise pf_bad(f"External network {fip.floating_network_id} is not reachable from subnet "
                     f"{subnet_id}. Cannot set Port forwarding for port {port.id} with "
                     f"Floating IP {fip.id}")
    if fip.router_id and fip.router_id != router_id:
        raise pf_bad(f"The Floating IP {fip.id} had been set on router {fip.router_id}, the "
                     f"internal Neutron port {port.id} can not reach it")
    return router_id


class PortForwardings(Resource):
    """One floating IP's port forwardings; an instance per request."""

    kind, singular, plural, intent_attr = (
        "PortForwarding", "port_forwarding", "port_forwardings", "port_forwardings")
    attrs = ATTRS
    cheap_fields = CHEAP_FIELDS

    def __init__(self, floatingip_id: str) -> None:
        self.floatingip_id = floatingip_id

    # -- scoping to the floating IP ------------------------------------------------
    def objects(self, intent: model.Intent) -> Mapping[str, model.PortForwarding]:
        return {p.id: p for p in index_of(intent).pfs_of_fip(self.floatingip_id)}

    def _fip(self, principal: Principal, intent: model.Intent) -> model.FloatingIP:
        fip = intent.floating_ips.get(self.floatingip_id)
        if fip is None or not owns(principal, fip):
            raise fip_not_found(self.floatingip_id)
        return fip

    def visible(self, principal: Principal, obj: model.PortForwarding,
                intent: model.Intent) -> bool:
        fip = intent.floating_ips.get(obj.floatingip_id)
        return fip is not None and owns(principal, fip)

    def may_modify(self, principal: Principal, obj: model.PortForwarding,
                   intent: model.Intent) -> bool:
        return self.visible(principal, obj, intent)

    def lookup(self, principal: Principal, intent: model.Intent, object_id: str) -> Any:
        self._fip(principal, intent)
        pf = intent.port_forwardings.get(object_id)
        if pf is None or pf.floatingip_id != self.floatingip_id:
            raise pf_not_found(object_id)
        return pf

    def lookup_for_write(self, principal: Principal, intent: model.Intent, object_id: str,
                         action: str) -> Any:
        pf = self.lookup(principal, intent, object_id)
        if not self.may_modify(principal, pf, intent):
            raise PolicyNotAuthorized(f"{action}_floatingip_port_forwarding")
        return pf

    def list_view(self, request: Request, ctx: ViewContext) -> dict[str, Any]:
        self._fip(ctx.principal, ctx.intent)
        return super().list_view(request, ctx)

    def view(self, p: model.PortForwarding, ctx: ViewContext) -> dict[str, Any]:
        return {
            "id": p.id,
            "protocol": p.protocol,
            "external_port": p.external_port,
            "internal_port": p.internal_port,
            "internal_ip_address": p.internal_ip_address,
            "internal_port_id": p.internal_port_id,
            "description": p.description,
        }

    # -- writes -------------------------------------------------------------------
    def parse_create(self, request: Request) -> tuple[list[dict[str, Any]], bool]:
        items, _ = resource_items(request, self.singular, self.plural, allow_bulk=False)
        return [check_item(items[0], self.attrs, create=True)], False

    def create(self, principal: Principal, item: dict[str, Any],
               helper: TxnHelper) -> model.PortForwarding:
        fip = self._fip(principal, helper.current())
        pf = model.PortForwarding(
            id=helper.new_id(),
            floatingip_id=fip.id,
            protocol=item["protocol"],
            external_port=item["external_port"],
            internal_port=item["internal_port"],
            internal_ip_address=item["internal_ip_address"],
            internal_port_id=item["internal_port_id"],
            description=item.get("description", ""),
        )
        router_id = check(principal, fip, pf, helper, port_changed=True)
        helper.put(pf)
        if fip.router_id != router_id:
            bump(helper, fip, router_id=router_id)
        return pf

    def update(self, principal: Principal, pf: model.PortForwarding, changes: dict[str, Any],
               helper: TxnHelper) -> model.PortForwarding:
        updated = dataclasses.replace(pf, **changes)
        if updated == pf:
            return pf
        fip = helper.current().floating_ips[pf.floatingip_id]
        if updated.internal_port_id != pf.internal_port_id:
            # the floating IP's router may change with its only port forwarding
            others = [o for o in index_for_write(helper).pfs_of_fip(fip.id) if o.id != pf.id]
            if not others:
                fip = dataclasses.replace(fip, router_id=None)
        router_id = check(principal, fip, updated, helper,
                          port_changed=updated.internal_port_id != pf.internal_port_id)
        helper.put(updated)
        current = helper.current().floating_ips[fip.id]
        if current.router_id != router_id:
            bump(helper, current, router_id=router_id)
        return updated

    def delete(self, principal: Principal, pf: model.PortForwarding, helper: TxnHelper) -> None:
        helper.delete(model.PortForwarding, pf.id)
        if not index_for_write(helper).pfs_of_fip(pf.floatingip_id):
            fip = helper.current().floating_ips.get(pf.floatingip_id)
            if fip is not None and fip.router_id is not None:
                bump(helper, fip, router_id=None)  # Neutron: with its last port forwarding
