"""Who may see and change what (Neutron's default policy, reduced to Loom's roles).

- admin: everything, and may create objects for any project.
- member: own project's objects, plus shared networks and their subnets (read
  only), plus ports on networks it owns. Anything else is invisible: 404, exactly
  as if it did not exist, so ids of other tenants' objects leak nothing.
- Changing a visible object one does not own is 403 PolicyNotAuthorized.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import PolicyNotAuthorized
from controller.rest.validate import Attr, project_of


def owner_for_create(principal: Principal, item: Mapping[str, Any], action: str) -> str:
    requested = project_of(item)
    if requested is None or requested == principal.project_id:
        return principal.project_id
    if not principal.is_admin:
        raise PolicyNotAuthorized(f"{action}:project_id")
    return requested


def check_admin_only(
    principal: Principal, item: Mapping[str, Any], attrs: Mapping[str, Attr], action: str
) -> None:
    if principal.is_admin:
        return
    for key, value in item.items():
        attr = attrs[key]
        if attr.admin_only and value != attr.default:
            raise PolicyNotAuthorized(f"{action}:{key}")


def owns(principal: Principal, obj: Any) -> bool:
    return principal.is_admin or getattr(obj, "project_id", None) == principal.project_id


def network_visible(principal: Principal, network: model.Network) -> bool:
    return owns(principal, network) or network.shared


def subnet_visible(principal: Principal, intent: model.Intent, subnet: model.Subnet) -> bool:
    """Own subnets, and the subnets of networks one owns or that are shared."""
    if owns(principal, subnet):
        return True
    net = intent.networks.get(subnet.network_id)
    return net is not None and network_visible(principal, net)


def network_owner(principal: Principal, intent: model.Intent, network_id: str) -> bool:
    net = intent.networks.get(network_id)
    return net is not None and owns(principal, net)
