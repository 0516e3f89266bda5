"""/v2.0/floatingips: Neutron floating IPs (the L3 `router` extension's second resource).

Neutron's semantics (neutron/db/l3_db.py, neutron-lib exceptions/l3.py), one store
transaction per write, so a refused request writes nothing:

- Served: create, show, list (filters, fields, sorting, pagination as every
  collection), update (`port_id`, `fixed_ip_address`, `description`), delete.
- Create on a `router:external` network the caller can see (own or shared; else 404
  NetworkNotFound; not external: 400 "Bad floatingip request: Network <id> is not a
  valid external network."; no IPv4 subnet: 400). The address is taken from the
  first IPv4 subnet with a free one, or from `subnet_id`, or is `floating_ip_address`
  (admin only, Neutron's `create_floatingip:floating_ip_address`). It is held by a
  port on the external network: `device_owner: network:floatingip`, `device_id:
  <floating IP>`, `project_id: ""` (hidden from users, as in Neutron), which cannot
  be deleted through /ports. A full network is 400 ExternalIpAddressExhausted.
- Associate by `port_id` (+ `fixed_ip_address`, needed when the port has several
  IPv4 addresses): the port must be visible to the caller (else 404 PortNotFound),
  of the floating IP's project unless the caller is admin (400), hold the address
  (400) and an IPv4 one; its subnet must have a router interface on a router whose
  gateway is on the floating IP's network (404 ExternalGatewayForFloatingIPNotFound;
  the router whose interface is the subnet's gateway_ip first). That router becomes
  `router_id`. One floating IP per fixed address per external network (409
  FloatingIPPortAlreadyAssociated). A floating IP with port forwardings cannot be
  associated (409 FipInUseByPortForwarding), nor a port that is a port forwarding's
  target (400 PortHasPortForwarding: Loom's routers are distributed).
- `port_id: null` disassociates (router_id, fixed_ip_address back to null); an
  update without `port_id` keeps the association; `fixed_ip_address` without a
  `port_id` is 400.
- Delete frees the address and its port; a floating IP with port forwardings is 409
  FipInUseByPortForwarding (delete those first, as in Neutron).
- Deleting the associated port disassociates the floating IP (ports.py).
- View: Neutron's fields; `status` is ACTIVE when the floating IP has a router
  (associated, or forwarding ports) and DOWN otherwise; `port_forwardings` lists
  summaries (Neutron's expose-port-forwarding-in-fip); `qos_policy_id` is null and
  `tags` empty. Not served: `port_details` (fip-port-details), QoS on floating IPs
  (qos-fip), DNS (dns_name/dns_domain), floating IP pools.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any, Optional

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import (
    BadRequest,
    NeutronError,
    NotFound,
    bad_request,
    conflict,
    not_found,
)
from controller.rest.index import IntentIndex, index_for_write
from controller.rest.policy import check_admin_only, network_visible, owner_for_create, owns
from controller.rest.ports import FLOATINGIP, put_device_port, resolve_fixed_ips
from controller.rest.resource import Resource, ViewContext, now
from controller.rest.router_gateway import allocate_one_ipv4, has_ipv4_subnet
from controller.rest.validate import Attr, integer, ip_address, optional, string, uuid_str
from controller.store.txn import TxnHelper


def fip_not_found(fip_id: str) -> NotFound:
    """Neutron's FloatingIPNotFound (no final period)."""
    return NotFound(f"Floating IP {fip_id} could not be found", type="FloatingIPNotFound")


def fip_bad(message: str) -> BadRequest:
    """Neutron's n_exc.BadRequest(resource='floatingip', msg=...)."""
    return bad_request("BadRequest", f"Bad floatingip request: {message}.")


def fip_in_use_by_pf(fip_id: str) -> NeutronError:
    return conflict("FipInUseByPortForwarding",
                    f"Floating IP {fip_id} in use by Port Forwarding resources.")


def already_associated(fip: model.FloatingIP, port_id: str,
                       fixed_ip: Optional[str]) -> NeutronError:
    return conflict(
        "FloatingIPPortAlreadyAssociated",
        f"Cannot associate floating IP {fip.floating_ip_address} ({fip.id}) with port "
        f"{port_id} using fixed IP {fixed_ip}, as that fixed IP already has a floating IP on "
        f"external network {fip.floating_network_id}.",
    )


def status_of(fip: model.FloatingIP) -> str:
    return "ACTIVE" if fip.router_id else "DOWN"


A = Attr
ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("floating_network_id", uuid_str, put=False, required=True),
        A("floating_ip_address", ip_address, put=False, admin_only=True),
        A("subnet_id", optional(uuid_str), put=False, filter=False),
        A("port_id", optional(uuid_str)),
        A("fixed_ip_address", optional(ip_address)),
        A("router_id", uuid_str, post=False, put=False),
        A("status", string(), post=False, put=False),
        A("description", string(), default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("qos_policy_id", uuid_str, post=False, put=False),
        A("port_forwardings", string(), post=False, put=False, filter=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
    )
}

CHEAP_FIELDS: dict[str, Callable[[model.FloatingIP, model.Intent], Any]] = {
    "id": lambda f, _: f.id,
    "floating_network_id": lambda f, _: f.floating_network_id,
    "floating_ip_address": lambda f, _: f.floating_ip_address,
    "port_id": lambda f, _: f.port_id,
    "fixed_ip_address": lambda f, _: f.fixed_ip_address,
    "router_id": lambda f, _: f.router_id,
    "status": lambda f, _: status_of(f),
    "description": lambda f, _: f.description,
    "project_id": lambda f, _: f.project_id,
    "tenant_id": lambda f, _: f.project_id,
    "qos_policy_id": lambda f, _: None,
    "revision_number": lambda f, _: f.revision_number,
    "created_at": lambda f, _: f.created_at,
    "updated_at": lambda f, _: f.updated_at,
}


def pf_summary(pf: model.PortForwarding) -> dict[str, Any]:
    """What Neutron's expose-port-forwarding-in-fip shows of each port forwarding."""
    return {
        "id": pf.id,
        "protocol": pf.protocol,
        "external_port": pf.external_port,
        "internal_port": pf.internal_port,
        "internal_ip_address": pf.internal_ip_address,
        "internal_port_id": pf.internal_port_id,
    }


# -- finding the router ---------------------------------------------------------------
def router_for(
    idx: IntentIndex, port: model.Port, subnet_id: str, network_id: str
) -> Optional[str]:
    """Neutron's get_router_for_floatingip: among the routers with an interface on the
    internal subnet and their gateway on `network_id`, the one whose interface is the
    subnet's gateway_ip, else the first (by interface id)."""
    intent = idx.intent
    subnet = intent.subnets.get(subnet_id)
    first: Optional[str] = None
    for iface in idx.interfaces_on_subnet(subnet_id):
        router = intent.routers.get(iface.router_id)
        rport = intent.ports.get(iface.port_id)
        if router is None or rport is None or router.external_network_id != network_id:
            continue
        if rport.network_id != port.network_id:
            continue
        if subnet is not None and any(f.ip_address == subnet.gateway_ip for f in rport.fixed_ips):
            return router.id
        first = first or router.id
    return first


def no_gateway(network_id: str, subnet_id: str, port_id: str) -> NotFound:
    return NotFound(
        f"External network {network_id} is not reachable from subnet {subnet_id}.  "
        f"Therefore, cannot associate Port {port_id} with a Floating IP.",
        type="ExternalGatewayForFloatingIPNotFound",
    )


def port_visible(principal: Principal, intent: model.Intent, port: model.Port) -> bool:
    """As /v2.0/ports shows it: own ports, and ports on networks one owns."""
    if owns(principal, port):
        return True
    net = intent.networks.get(port.network_id)
    return net is not None and owns(principal, net)


def _ipv4(address: str) -> bool:
    return ipaddress.ip_address(address).version == 4


def association(
    principal: Principal, fip: model.FloatingIP, port_id: str, fixed_ip: Optional[str],
    helper: TxnHelper,
) -> tuple[str, str, str]:
    """Neutron's _get_assoc_data: (port id, internal address, router id), checked."""
    intent = helper.current()
    idx = index_for_write(helper)
    port = intent.ports.get(port_id)
    if port is None or not port_visible(principal, intent, port):
        raise not_found("Port", port_id)
    if port.project_id != fip.project_id and not principal.is_admin:
        raise fip_bad(f"Cannot process floating IP association with Port {port_id}, since "
                      "that port is owned by a different tenant")
    if fixed_ip is not None:
        if not _ipv4(fixed_ip):
            raise fip_bad(f"Cannot process floating IP association with {fixed_ip}, since "
                          "that is not an IPv4 address")
        subnet_id = next((f.subnet_id for f in port.fixed_ips if f.ip_address == fixed_ip), None)
        if subnet_id is None:
            raise fip_bad(f"Port {port.id} does not have fixed ip {fixed_ip}")
        address = fixed_ip
    else:
        v4 = [f for f in port.fixed_ips if _ipv4(f.ip_address)]
        if not v4:
            raise fip_bad(f"Cannot add floating IP to port {port.id} that has no fixed IPv4 "
                          "addresses")
        if len(v4) > 1:
            raise fip_bad(f"Port {port.id} has multiple fixed IPv4 addresses.  Must provide a "
                          "specific IPv4 address when assigning a floating IP")
        address, subnet_id = v4[0].ip_address, v4[0].subnet_id
    router_id = router_for(idx, port, subnet_id, fip.floating_network_id)
    if router_id is None:
        raise no_gateway(fip.floating_network_id, subnet_id, port.id)
    return port.id, address, router_id


def associate(
    principal: Principal, fip: model.FloatingIP, port_id: Optional[str],
    fixed_ip: Optional[str], helper: TxnHelper,
) -> model.FloatingIP:
    """`fip` associated with `port_id` (None: disassociated); not written."""
    if fixed_ip is not None and port_id is None:
        raise fip_bad("fixed_ip_address cannot be specified without a port_id")
    if port_id is None:
        return dataclasses.replace(fip, port_id=None, fixed_ip_address=None, router_id=None)
    idx = index_for_write(helper)
    if idx.pfs_to_port(port_id):  # Neutron: distributed routers, and Loom's all are
        raise bad_request(
            "PortHasPortForwarding",
            f"Cannot associate floating IP to port {port_id} because it already has a Port "
            "Forwarding binding.",
        )
    if idx.pfs_of_fip(fip.id):
        raise fip_in_use_by_pf(fip.id)
    port, address, router_id = association(principal, fip, port_id, fixed_ip, helper)
    if port != fip.port_id or address != fip.fixed_ip_address:
        intent = helper.current()
        for other_id in idx.fips_on_port(port):
            other = intent.floating_ips.get(other_id)
            if (other is not None and other.id != fip.id
                    and other.floating_network_id == fip.floating_network_id
                    and other.fixed_ip_address == address):
                raise already_associated(fip, port, address)
    return dataclasses.replace(fip, port_id=port, fixed_ip_address=address, router_id=router_id)


# -- the external address -------------------------------------------------------------
def _external_network(principal: Principal, intent: model.Intent, idx: IntentIndex,
                      network_id: str) -> model.Network:
    network = intent.networks.get(network_id)
    if network is None or not network_visible(principal, network):
        raise not_found("Network", network_id)
    if not network.router_external:
        raise fip_bad(f"Network {network_id} is not a valid external network")
    if not has_ipv4_subnet(idx, network_id):
        raise fip_bad(f"Network {network_id} does not contain any IPv4 subnet")
    return network


def _floating_port(
    principal: Principal, network: model.Network, item: dict[str, Any], fip_id: str,
    helper: TxnHelper,
) -> model.Port:
    idx = index_for_write(helper)
    port_id = helper.new_id()
    elevated = Principal(principal.project_id, "admin")  # Neutron: context.elevated()
    exhausted = bad_request(
        "ExternalIpAddressExhausted",
        f"Unable to find any IP address on external network {network.id}.",
    )
    fixed: Optional[tuple[model.FixedIP, ...]]
    if item.get("floating_ip_address") is not None:
        wanted = item["floating_ip_address"]
        if not _ipv4(wanted):
            raise exhausted
        fixed = resolve_fixed_ips(network, [{"ip_address": wanted}], idx, elevated,
                                  port_id=port_id, device_owner=FLOATINGIP)
    elif item.get("subnet_id") is not None:
        subnet = idx.intent.subnets.get(item["subnet_id"])
        if subnet is None or subnet.network_id != network.id:
            raise not_found("Subnet", item["subnet_id"])
        if subnet.ip_version != 4:
            raise exhausted
        try:
            fixed = resolve_fixed_ips(network, [{"subnet_id": subnet.id}], idx, elevated,
                                      port_id=port_id, device_owner=FLOATINGIP)
        except NeutronError as exc:
            if exc.type != "IpAddressGenerationFailure":
                raise
            raise exhausted from None
    else:
        fixed = allocate_one_ipv4(network, idx, elevated, port_id, FLOATINGIP)
        if fixed is None:
            raise exhausted
    # project "": Neutron's "tenant intentionally not set", never shown to users
    port = put_device_port(helper, idx, port_id, "", network.id, fixed, fip_id, FLOATINGIP)
    return port


def bump(helper: TxnHelper, fip: model.FloatingIP, **changes: Any) -> model.FloatingIP:
    """The floating IP with `changes`, its revision bumped, written."""
    updated = dataclasses.replace(fip, **changes, updated_at=now(),
                                  revision_number=fip.revision_number + 1)
    helper.put(updated)
    return updated


def release_port(helper: TxnHelper, port: model.Port, kept: Optional[set[str]] = None) -> None:
    """The port is deleted (`kept` None) or keeps only the addresses `kept`: floating
    IPs on its other addresses are disassociated and port forwardings to them deleted
    (Neutron's disassociate_floatingips and the port forwarding plugin's port hook; a
    floating IP losing its last port forwarding loses its router)."""
    idx = index_for_write(helper)
    intent = helper.current()
    gone = [pf for pf in idx.pfs_to_port(port.id)
            if kept is None or pf.internal_ip_address not in kept]
    fips = [intent.floating_ips[f] for f in idx.fips_on_port(port.id)
            if f in intent.floating_ips]
    fips = [f for f in fips if kept is None or f.fixed_ip_address not in kept]
    for pf in gone:
        helper.delete(model.PortForwarding, pf.id)
    for fip_id in sorted({pf.floatingip_id for pf in gone}):
        fip = helper.current().floating_ips.get(fip_id)
        if fip is not None and not index_for_write(helper).pfs_of_fip(fip_id):
            bump(helper, fip, router_id=None)
    for fip in fips:
        bump(helper, fip, port_id=None, fixed_ip_address=None, router_id=None)


class FloatingIPs(Resource):
    kind, singular, plural, intent_attr = "FloatingIP", "floatingip", "floatingips", "floating_ips"
    attrs = ATTRS
    cheap_fields = CHEAP_FIELDS

    def visible(self, principal: Principal, obj: model.FloatingIP, intent: model.Intent) -> bool:
        return owns(principal, obj)

    def may_modify(self, principal: Principal, obj: model.FloatingIP,
                   intent: model.Intent) -> bool:
        return owns(principal, obj)

    def lookup(self, principal: Principal, intent: model.Intent, object_id: str) -> Any:
        obj = intent.floating_ips.get(object_id)
        if obj is None or not self.visible(principal, obj, intent):
            raise fip_not_found(object_id)
        return obj

    def view(self, f: model.FloatingIP, ctx: ViewContext) -> dict[str, Any]:
        return {
            "id": f.id,
            "floating_ip_address": f.floating_ip_address,
            "floating_network_id": f.floating_network_id,
            "router_id": f.router_id,
            "port_id": f.port_id,
            "fixed_ip_address": f.fixed_ip_address,
            "status": status_of(f),
            "description": f.description,
            "project_id": f.project_id,
            "tenant_id": f.project_id,
            "qos_policy_id": None,
            "port_forwardings": [pf_summary(p) for p in ctx.index.pfs_of_fip(f.id)],
            "tags": [],
            "created_at": f.created_at,
            "updated_at": f.updated_at,
            "revision_number": f.revision_number,
        }

    # -- create / update / delete -------------------------------------------------
    def create(self, principal: Principal, item: dict[str, Any],
               helper: TxnHelper) -> model.FloatingIP:
        project = owner_for_create(principal, item, "create_floatingip")
        check_admin_only(principal, item, self.attrs, "create_floatingip")
        intent = helper.current()
        network = _external_network(principal, intent, index_for_write(helper),
                                    item["floating_network_id"])
        fip_id = helper.new_id()
        port = _floating_port(principal, network, item, fip_id, helper)
        stamp = now()
        fip = model.FloatingIP(
            id=fip_id,
            project_id=project,
            floating_network_id=network.id,
            floating_ip_address=port.fixed_ips[0].ip_address,
            description=item.get("description", ""),
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
            floating_port_id=port.id,
        )
        if item.get("port_id") is not None or item.get("fixed_ip_address") is not None:
            fip = associate(principal, fip, item.get("port_id"), item.get("fixed_ip_address"),
                            helper)
        helper.put(fip)
        return fip

    def update(self, principal: Principal, fip: model.FloatingIP, changes: dict[str, Any],
               helper: TxnHelper) -> model.FloatingIP:
        wanted = fip
        if "port_id" in changes:
            wanted = associate(principal, fip, changes["port_id"],
                               changes.get("fixed_ip_address"), helper)
        elif changes.get("fixed_ip_address") is not None:
            if fip.port_id is None:
                raise fip_bad("fixed_ip_address cannot be specified without a port_id")
            wanted = associate(principal, fip, fip.port_id, changes["fixed_ip_address"], helper)
        if "description" in changes:
            wanted = dataclasses.replace(wanted, description=changes["description"])
        if wanted == fip:
            return fip
        fields = {k: getattr(wanted, k)
                  for k in ("port_id", "fixed_ip_address", "router_id", "description")}
        return bump(helper, fip, **fields)

    def delete(self, principal: Principal, fip: model.FloatingIP, helper: TxnHelper) -> None:
        if index_for_write(helper).pfs_of_fip(fip.id):
            raise fip_in_use_by_pf(fip.id)
        helper.delete(model.FloatingIP, fip.id)
        if fip.floating_port_id and fip.floating_port_id in helper.current().ports:
            helper.delete(model.Port, fip.floating_port_id)
