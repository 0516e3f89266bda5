"""/v2.0/networks: tenant networks with provider attributes (flat | vlan | vxlan | gre | geneve)."""

from __future__ import annotations

import dataclasses
from typing import Any

from controller import intent as model
from controller.rest import segments
from controller.rest.auth import Principal
from controller.rest.errors import InvalidInput, NeutronError, conflict
from controller.rest.index import index_for_write
from controller.rest.policy import check_admin_only, network_visible, owner_for_create, owns
from controller.rest.qos import check_qos_change, check_qos_policy, default_policy_id
from controller.rest.resource import Resource, ViewContext, now
from controller.rest.validate import Attr, boolean, enum, integer, optional, string, uuid_str
from controller.store.txn import TxnHelper

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
        A("shared", boolean, admin_only=True, default=False),
        A("router:external", boolean, admin_only=True, default=False),
        A("port_security_enabled", boolean, default=True),
        A("mtu", integer),
        A("qos_policy_id", optional(uuid_str)),
        A("provider:network_type", enum(*segments.NETWORK_TYPES), put=False, admin_only=True),
        A("provider:segmentation_id", integer, put=False, admin_only=True),
        A("provider:physical_network", optional(string()), put=False, admin_only=True),
        A("status", string(), post=False, put=False),
        A("subnets", string(), post=False, put=False, filter=False),
        A("revision_number", integer, post=False, put=False),
        A("created_at", string(), post=False, put=False),
        A("updated_at", string(), post=False, put=False),
        A("tags", string(), post=False, put=False, filter=False),
        A("availability_zone_hints", string(), filter=False, put=False),
    )
}


def segment_in_use(network_type: str, segmentation_id: int, physnet: str | None) -> NeutronError:
    if network_type == "vlan":
        return conflict(
            "VlanIdInUse",
            f"Unable to create the network. The VLAN {segmentation_id} "
            f"on physical network {physnet} is in use.",
        )
    return conflict(
        "TunnelIdInUse", f"Unable to create the network. The tunnel ID {segmentation_id} is in use."
    )


def check_mtu(network_type: str, mtu: int) -> int:
    high = segments.DEFAULT_MTU[network_type]
    if not segments.MIN_MTU <= mtu <= high:
        raise InvalidInput(
            f"Requested MTU {mtu} is out of range {segments.MIN_MTU}-{high} "
            f"for a {network_type} network"
        )
    return mtu


def check_flat(item: dict[str, Any], physnet: str | None) -> None:
    """Neutron's type_flat `validate_provider_segment`: a physical network, and nothing
    else (a flat network is untagged: no segmentation id)."""
    if not physnet:
        raise InvalidInput("physical_network required for flat provider network")
    if item.get("provider:segmentation_id") is not None:
        raise InvalidInput("segmentation_id prohibited for flat provider network")


PROVIDER_ATTRS = (
    "provider:network_type",
    "provider:segmentation_id",
    "provider:physical_network",
)


class Networks(Resource):
    kind, singular, plural, intent_attr = "Network", "network", "networks", "networks"
    attrs = ATTRS

    def visible(self, principal: Principal, obj: model.Network, intent: model.Intent) -> bool:
        return network_visible(principal, obj)

    def may_modify(self, principal: Principal, obj: model.Network, intent: model.Intent) -> bool:
        return owns(principal, obj)

    def view(self, n: model.Network, ctx: ViewContext) -> dict[str, Any]:
        """Neutron's shape; `provider:*` only for admins, as Neutron's policy has it.

        Segmentation ids and physical networks describe the operator's fabric, not
        the tenant's network, and would let one tenant map another's traffic on the
        underlay.
        """
        body = {
            "id": n.id,
            "name": n.name,
            "description": n.description,
            "project_id": n.project_id,
            "tenant_id": n.project_id,
            "admin_state_up": n.admin_state_up,
            "status": "ACTIVE",
            "shared": n.shared,
            "router:external": n.router_external,
            "port_security_enabled": n.port_security_enabled,
            "mtu": n.mtu,
            "qos_policy_id": n.qos_policy_id,
            "provider:network_type": n.network_type,
            # a flat network's stored id is internal (segments.py): Neutron shows None
            "provider:segmentation_id": None if n.network_type == "flat" else n.segmentation_id,
            "provider:physical_network": n.physical_network,
            "subnets": [s.id for s in ctx.index.subnets_of(n.id)],
            "availability_zone_hints": [],
            "availability_zones": [],
            "tags": [],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "is_default": False,
            "created_at": n.created_at,
            "updated_at": n.updated_at,
            "revision_number": n.revision_number,
        }
        if not ctx.principal.is_admin:
            for key in PROVIDER_ATTRS:
                del body[key]
        return body

    def create(
        self, principal: Principal, item: dict[str, Any], helper: TxnHelper
    ) -> model.Network:
        intent = helper.current()
        project = owner_for_create(principal, item, "create_network")
        check_admin_only(principal, item, self.attrs, "create_network")
        if item.get("availability_zone_hints"):
            raise InvalidInput("availability zones are not supported")
        ntype = item.get("provider:network_type") or segments.DEFAULT_TYPE
        physnet = item.get("provider:physical_network")
        if ntype == "vlan":
            physnet = physnet or segments.DEFAULT_PHYSNET
        elif ntype == "flat":
            check_flat(item, physnet)
        elif physnet is not None:
            raise InvalidInput(f"provider:physical_network specified for {ntype.upper()} network")
        used = index_for_write(helper).segments.get(ntype, {})
        seg = item.get("provider:segmentation_id")
        if ntype == "flat":
            # one flat network per physical network, checked on this transaction's view
            # (writes run one at a time on the newest snapshot: see store/allocations.py)
            if any(intent.networks[nid].physical_network == physnet for nid in used.values()
                   if nid in intent.networks):
                raise conflict(
                    "FlatNetworkInUse",
                    f"Unable to create the flat network. Physical network {physnet} is in use.",
                )
            seg = segments.lowest_free(ntype, used)  # internal, never shown (segments.py)
        if seg is None:
            seg = segments.lowest_free(ntype, used)
            if seg is None:
                raise NeutronError(
                    "Unable to create the network. No tenant network is available for allocation.",
                    type="NoNetworkAvailable",
                    status=503,
                )
        elif not segments.in_range(ntype, seg):
            low, high = segments.RANGES[ntype]
            raise InvalidInput(
                f"provider:segmentation_id {seg} out of range ({low} through {high}) for {ntype}"
            )
        elif seg in used:
            raise segment_in_use(ntype, seg, physnet)
        mtu = check_mtu(ntype, item["mtu"]) if "mtu" in item else segments.DEFAULT_MTU[ntype]
        qos_policy_id = item.get("qos_policy_id")
        if qos_policy_id is None:  # Neutron: the project's default QoS policy, if it has one
            qos_policy_id = default_policy_id(intent, project)
        else:
            check_qos_policy(principal, intent, qos_policy_id)
        stamp = now()
        net = model.Network(
            id=helper.new_id(),
            project_id=project,
            name=item.get("name", ""),
            network_type=ntype,
            segmentation_id=seg,
            physical_network=physnet,
            admin_state_up=item.get("admin_state_up", True),
            shared=item.get("shared", False),
            mtu=mtu,
            qos_policy_id=qos_policy_id,
            description=item.get("description", ""),
            created_at=stamp,
            updated_at=stamp,
            revision_number=1,
            router_external=item.get("router:external", False),
            port_security_enabled=item.get("port_security_enabled", True),
        )
        helper.put(net)
        return net

    def update(
        self, principal: Principal, net: model.Network, changes: dict[str, Any], helper: TxnHelper
    ) -> model.Network:
        intent = helper.current()
        check_admin_only(principal, changes, self.attrs, "update_network")
        if "qos_policy_id" in changes:
            check_qos_change(principal, intent, net.qos_policy_id, changes["qos_policy_id"])
        if changes.get("shared") is False and net.shared:
            foreign = [
                p for p in index_for_write(helper).ports_of(net.id)
                if p.project_id != net.project_id
            ]
            if foreign:
                raise conflict(
                    "InvalidSharedSetting",
                    f"Unable to reconfigure sharing settings for network {net.id}. "
                    "Multiple tenants are using it.",
                )
        fields = {
            "name": changes.get("name", net.name),
            "description": changes.get("description", net.description),
            "admin_state_up": changes.get("admin_state_up", net.admin_state_up),
            "shared": changes.get("shared", net.shared),
            "router_external": changes.get("router:external", net.router_external),
            "port_security_enabled": changes.get(
                "port_security_enabled", net.port_security_enabled
            ),
            "mtu": check_mtu(net.network_type, changes["mtu"]) if "mtu" in changes else net.mtu,
            "qos_policy_id": changes.get("qos_policy_id", net.qos_policy_id),
        }
        updated = dataclasses.replace(net, **fields)
        if updated == net:
            return net
        updated = dataclasses.replace(
            updated, updated_at=now(), revision_number=net.revision_number + 1
        )
        helper.put(updated)
        return updated

    def delete(self, principal: Principal, net: model.Network, helper: TxnHelper) -> None:
        idx = index_for_write(helper)
        if idx.ports_of(net.id):
            raise conflict(
                "NetworkInUse",
                f"Unable to complete operation on network {net.id}. "
                "There are one or more ports still in use on the network.",
            )
        for subnet in idx.subnets_of(
            net.id
        ):  # Neutron deletes a port-less network's subnets with it
            helper.delete(model.Subnet, subnet.id)
        helper.delete(model.Network, net.id)
