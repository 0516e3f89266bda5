"""/v2.0/routers: Neutron L3 routers: routing between subnets, external gateways.

- A router belongs to a project; members create routers in their own project and
  see only those (another project's router is 404, as if it did not exist); admins
  see and change all.
- `status` is always ACTIVE and `distributed` always true: routing between subnets
  happens in the pipeline of the chassis where the sending guest lives. `ha` is
  false. A request for a centralized (`distributed: false`) or HA router is 400.
- `external_gateway_info` ({network_id, enable_snat, external_fixed_ips}) on POST
  and PUT: a gateway port on a `router:external` network, SNAT when `enable_snat`
  (Neutron's ext-gw-mode), one conntrack zone for the router's NAT; null or {}
  clears it. See router_gateway.py for the rules and errors. One gateway per router
  (no external-gateway-multihoming), one IPv4 address on it.
- Floating IPs and their port forwardings: floatingips.py, port_forwardings.py.
- `routes` (extra routes, Neutron's extraroute extension) are set by PUT only (not
  on POST, as in Neutron) or changed atomically by `add_extraroutes` /
  `remove_extraroutes`. Each nexthop must be on a subnet attached to the router and
  must not be one of the router's own addresses (Neutron's InvalidRoutes). The
  store keeps one nexthop per destination, so ECMP routes (one destination via
  several nexthops, which Neutron accepts) are 400.
- `add_router_interface` / `remove_router_interface`: see router_interfaces.py.
- Adding or removing an interface bumps the router's revision_number, as Neutron's
  revision plugin does (router ports revise their router).
- A router with interfaces cannot be deleted (409 RouterInUse); deleting one with a
  gateway deletes the gateway port too, unless floating IPs need it (409
  RouterExternalGatewayInUseByFloatingIp).
- Not served: l3-ha, dvr (the attribute is always true), l3-flavors, availability
  zones, external-gateway-multihoming, conntrack helpers, NDP proxy.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any

from webob import Request

from controller import intent as model
from controller.rest import router_gateway as gateway
from controller.rest import router_interfaces as ifaces
from controller.rest.auth import Principal
from controller.rest.errors import BadRequest, InvalidInput, NotFound, bad_request, conflict
from controller.rest.index import IntentIndex, index_for_write
from controller.rest.policy import check_admin_only, owner_for_create, owns
from controller.rest.resource import Resource, ViewContext, now
from controller.rest.validate import (
    Attr,
    boolean,
    check_item,
    integer,
    ip_address,
    json_body,
    keyed,
    parse_network,
    resource_items,
    string,
    uuid_str,
)
from controller.store.txn import TxnHelper

ADD_INTERFACE, REMOVE_INTERFACE = "add_router_interface", "remove_router_interface"
ADD_ROUTES, REMOVE_ROUTES = "add_extraroutes", "remove_extraroutes"
ACTIONS = (ADD_INTERFACE, REMOVE_INTERFACE, ADD_ROUTES, REMOVE_ROUTES)


def router_not_found(router_id: str) -> NotFound:
    """Neutron's RouterNotFound (its message has no final period)."""
    return NotFound(f"Router {router_id} could not be found", type="RouterNotFound")


def invalid_routes(routes: list[dict[str, str]], reason: str) -> BadRequest:
    """Neutron's InvalidRoutes: the whole requested list, then why."""
    return bad_request("InvalidRoutes", f"Invalid format for routes: {routes}, {reason}")


# -- converters -----------------------------------------------------------------------
def route_cidr(value: Any) -> str:
    """Neutron's validate_route_cidr: a CIDR with no host bits, not loopback; canonical."""
    invalid = InvalidInput(f"'{value}' is not a valid CIDR")
    if not isinstance(value, str) or "/" not in value or value != value.strip():
        raise invalid
    try:
        net = parse_network(value, strict=True)
    except InvalidInput:
        raise invalid from None
    if net.is_loopback:
        raise InvalidInput(f"'{value}' is not a routable CIDR")
    return str(net)


_route = keyed({"destination": route_cidr, "nexthop": ip_address},
               required=("destination", "nexthop"))


def route_list(value: Any) -> list[dict[str, str]]:
    """Neutron's type:hostroutes (null is the empty list): unique {destination, nexthop}."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"Invalid data format for hostroute: '{value}'")
    out: list[dict[str, str]] = []
    for item in value:
        route = _route(item)
        if route in out:
            raise InvalidInput(f"Duplicate hostroute '{route}'")
        out.append(route)
    return out


A = Attr
ATTRS = {
    a.name: a
    for a in (
        A("id", uuid_str, post=False, put=False),
        A("name", string(), default=""),
        A("description", string(), default=""),
        A("project_id", string(), put=False),
        A("tenant_id", string(), put=False),
        A("admin_state_up", boolean, default=True),
        A("status", string(), post=False, put=False),
        A("external_gateway_info", gateway.gateway_info, filter=False),
        A("routes", route_list, post=False, filter=False),
        A("distributed", boolean, admin_only=True, default=True),
        A("ha", boolean, admin_only=True, default=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
    )
}

CHEAP_FIELDS: dict[str, Callable[[model.Router, model.Intent], Any]] = {
    "id": lambda r, _: r.id,
    "name": lambda r, _: r.name,
    "description": lambda r, _: r.description,
    "project_id": lambda r, _: r.project_id,
    "tenant_id": lambda r, _: r.project_id,
    "admin_state_up": lambda r, _: r.admin_state_up,
    "status": lambda r, _: "ACTIVE",
    "distributed": lambda r, _: True,
    "ha": lambda r, _: False,
    "revision_number": lambda r, _: r.revision_number,
    "created_at": lambda r, _: r.created_at,
    "updated_at": lambda r, _: r.updated_at,
}


def _check_supported(item: dict[str, Any]) -> None:
    """What is not served: 400 (after the policy's 403), before any write."""
    if item.get("distributed") is False:
        raise bad_request(
            "BadRequest",
            "Bad router request: centralized routers (distributed: false) are not supported; "
            "Loom routes on every chassis.",
        )
    if item.get("ha") is True:
        raise bad_request(
            "BadRequest",
            "Bad router request: HA routers (ha: true) are not supported; distributed "
            "routing needs no standby.",
        )


_GATEWAY_FIELDS = ("external_network_id", "gateway_port_id", "external_fixed_ips",
                   "enable_snat", "snat_zone")


def routes_view(routes: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"destination": d, "nexthop": n} for d, n in routes]


def check_routes(
    idx: IntentIndex, router: model.Router, routes: list[dict[str, str]]
) -> tuple[tuple[str, str], ...]:
    """Neutron's _validate_routes: every nexthop on a subnet of the router and not one of
    the router's own addresses; then what the store can hold (one nexthop per
    destination). Returns the routes as the Router object keeps them."""
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    own: set[str] = set()
    intent = idx.intent
    for iface in ifaces.interfaces_of(idx, router.id):
        port = intent.ports.get(iface.port_id)
        for f in port.fixed_ips if port is not None else ():
            subnet = intent.subnets.get(f.subnet_id)
            if subnet is not None:
                cidrs.append(ipaddress.ip_network(subnet.cidr))
            own.add(f.ip_address)
    by_destination: dict[str, str] = {}
    for route in routes:
        nexthop = ipaddress.ip_address(route["nexthop"])
        destination = ipaddress.ip_network(route["destination"])
        if not any(nexthop in cidr for cidr in cidrs):
            raise invalid_routes(routes, "the nexthop is not connected with router")
        if str(nexthop) in own:
            raise invalid_routes(routes, "the nexthop is used by router")
        if destination.version != nexthop.version:
            raise invalid_routes(
                routes, f"the nexthop {nexthop} is not an IPv{destination.version} address"
            )
        if destination.version != 4:  # IPv6 interfaces advertise, and route nothing yet
            raise invalid_routes(routes, "Loom routes IPv4 only")
        known = by_destination.setdefault(route["destination"], route["nexthop"])
        if known != route["nexthop"]:
            raise invalid_routes(
                routes,
                f"destination {route['destination']} has more than one nexthop ({known}, "
                f"{route['nexthop']}); Loom keeps one nexthop per destination (no ECMP)",
            )
    return tuple(sorted(by_destination.items()))


def _merge_routes(old: tuple[tuple[str, str], ...], add: list[dict[str, str]],
                  remove: list[dict[str, str]]) -> list[dict[str, str]]:
    """Neutron's _add_extra_routes / _remove_extra_routes: exact duplicates merge, a
    route to remove that is not there is no error."""
    out = routes_view(old)
    for route in add:
        if route not in out:
            out.append(route)
    return [r for r in out if r not in remove]


class Routers(Resource):
    kind, singular, plural, intent_attr = "Router", "router", "routers", "routers"
    attrs = ATTRS
    cheap_fields = CHEAP_FIELDS
    actions = ACTIONS  # PUT /v2.0/routers/{id}/{action}

    def visible(self, principal: Principal, obj: model.Router, intent: model.Intent) -> bool:
        return owns(principal, obj)

    def may_modify(self, principal: Principal, obj: model.Router, intent: model.Intent) -> bool:
        return owns(principal, obj)

    def lookup(self, principal: Principal, intent: model.Intent, object_id: str) -> Any:
        obj = intent.routers.get(object_id)
        if obj is None or not self.visible(principal, obj, intent):
            raise router_not_found(object_id)
        return obj

    def view(self, r: model.Router, ctx: ViewContext) -> dict[str, Any]:
        return {
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "project_id": r.project_id,
            "tenant_id": r.project_id,
            "admin_state_up": r.admin_state_up,
            "status": "ACTIVE",
            "external_gateway_info": gateway.view(r),
            "routes": routes_view(r.routes),
            "distributed": True,
            "ha": False,
            "tags": [],
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "revision_number": r.revision_number,
        }

    # -- create / update / delete -------------------------------------------------
    def create(self, principal: Principal, item: dict[str, Any], helper: TxnHelper) -> model.Router:
        project = owner_for_create(principal, item, "create_router")
        check_admin_only(principal, item, self.attrs, "create_router")
        gateway.check_policy(principal, item.get("external_gateway_info"), "create_router")
        _check_supported(item)
        stamp = now()
        router = model.Router(
            id=helper.new_id(),
            project_id=project,
            name=item.get("name", ""),
            description=item.get("description", ""),
            admin_state_up=item.get("admin_state_up", True),
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
        )
        if item.get("external_gateway_info") is not None:
            router = gateway.apply(principal, router, item["external_gateway_info"], helper)
        helper.put(router)
        return helper.get(model.Router, router.id) or router  # (with its NAT zone)

    def update(
        self, principal: Principal, router: model.Router, changes: dict[str, Any],
        helper: TxnHelper,
    ) -> model.Router:
        check_admin_only(principal, changes, self.attrs, "update_router")
        gateway.check_policy(principal, changes.get("external_gateway_info"), "update_router")
        _check_supported(changes)
        routes = router.routes
        if "routes" in changes:
            routes = check_routes(index_for_write(helper), router, changes["routes"])
        wanted = router
        if "external_gateway_info" in changes:
            wanted = gateway.apply(principal, router, changes["external_gateway_info"], helper)
        fields = {
            "name": changes.get("name", router.name),
            "description": changes.get("description", router.description),
            "admin_state_up": changes.get("admin_state_up", router.admin_state_up),
            "routes": routes,
            **{k: getattr(wanted, k) for k in _GATEWAY_FIELDS},
        }
        if dataclasses.replace(router, **fields) == router:
            return router
        ifaces.bump(helper, router, **fields)
        return helper.get(model.Router, router.id) or router  # (with its NAT zone)

    def delete(self, principal: Principal, router: model.Router, helper: TxnHelper) -> None:
        attached = [i.port_id for i in ifaces.interfaces_of(index_for_write(helper), router.id)]
        if attached:
            raise conflict(
                "RouterInUse", f"Router {router.id} has ports still attached: {', '.join(attached)}"
            )
        gateway.clear(router, helper)  # its gateway port, unless floating IPs need it
        helper.delete(model.Router, router.id)

    # -- member actions: PUT /v2.0/routers/{id}/{action} --------------------------------
    def parse_action(self, action: str, request: Request) -> dict[str, Any]:
        """The action's body, type-checked before any store access."""
        if action in (ADD_INTERFACE, REMOVE_INTERFACE):
            removal = action == REMOVE_INTERFACE
            return ifaces.parse_interface_info(json_body(request), removal=removal)
        items, _ = resource_items(request, self.singular, self.plural, allow_bulk=False)
        if set(items[0]) != {"routes"}:
            raise BadRequest("Unable to find 'routes' in the 'router' of the request body")
        return check_item({"routes": items[0]["routes"]}, {"routes": ATTRS["routes"]},
                          create=False)

    def act(self, principal: Principal, router: model.Router, action: str,
            body: dict[str, Any], helper: TxnHelper) -> Any:
        """Run `action` inside the write transaction; what `action_view` answers with."""
        if action == ADD_INTERFACE:
            return ifaces.add_interface(principal, router, body, helper)
        if action == REMOVE_INTERFACE:
            return ifaces.remove_interface(principal, router, body, helper)
        add, remove = (body["routes"], []) if action == ADD_ROUTES else ([], body["routes"])
        wanted = _merge_routes(router.routes, add, remove)
        return self.update(principal, router, {"routes": wanted}, helper)

    def action_view(self, action: str, result: Any, ctx: ViewContext) -> dict[str, Any]:
        if isinstance(result, model.Router):
            return {self.singular: self.view(result, ctx)}
        return result  # type: ignore[no-any-return]
