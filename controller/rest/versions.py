"""Version and extension discovery, in Neutron's shapes, so stock clients find the API."""

from __future__ import annotations

from typing import Any

from webob import Request

from controller.rest.errors import NotFound

COLLECTIONS = (
    ("network", "networks"),
    ("subnet", "subnets"),
    ("port", "ports"),
    ("security_group", "security-groups"),
    ("security_group_rule", "security-group-rules"),
    ("policy", "qos/policies"),
    ("rule_type", "qos/rule-types"),
    ("router", "routers"),
    ("floatingip", "floatingips"),
)

EXTENSIONS = (
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("port-security", "Port Security", "Provides port security"),
    ("security-group", "security-group", "The security groups extension."),
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources.",
    ),
    ("qos", "Quality of Service", "The Quality of Service extension."),
    (
        "qos-bw-limit-direction",
        "Direction for QoS bandwidth limit rule",
        "Allow to configure QoS bandwidth limit rule with specific direction: ingress or egress",
    ),
    ("qos-default", "QoS default policy", "Expose the QoS default policy per project"),
    (
        "qos-rule-type-details",
        "QoS rule type details",
        "Expose details about QoS rule types supported by loaded backend drivers",
    ),
    (
        "qos-port-network-policy",
        "QoS port network policy ID",
        "Adds a the QoS network ID to the port definition",
    ),
    # Neutron's "router" extension: routers (one external gateway each) and floating
    # IPs. No l3-ha, dvr, external-gateway-multihoming, fip-port-details, qos-fip,
    # floating IP pools, port forwarding port ranges.
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access "
        "to external networks via a NAT gateway.",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on "
        "the external gateway",
    ),
    (
        "floating-ip-port-forwarding",
        "Floating IP Port Forwarding",
        "Allow port forwarding from floating IP port to an internal port",
    ),
    (
        "expose-port-forwarding-in-fip",
        "Expose port forwarding in floating IP",
        "Expose port forwarding details in floating IP resources",
    ),
    (
        "floating-ip-port-forwarding-description",
        "Floating IP Port Forwarding new attribute description",
        "Add a description field to Port Forwarding rules",
    ),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    (
        "extraroute-atomic",
        "Atomically add/remove extra routes",
        "Edit extra routes of a router on server side by atomically adding/removing extra "
        "routes",
    ),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
)


def _base(request: Request) -> str:
    return request.host_url + request.script_name


def versions(request: Request) -> dict[str, Any]:
    return {
        "versions": [
            {
                "id": "v2.0",
                "status": "CURRENT",
                "links": [{"href": f"{_base(request)}/v2.0/", "rel": "self"}],
            }
        ]
    }


def resources(request: Request) -> dict[str, Any]:
    """Neutron's resource list, plus the "version" member keystoneauth looks for.

    keystoneauth (openstacksdk) runs version discovery on the endpoint it is given;
    with `network_endpoint_override=.../v2.0/` that is this document, and it fails
    unless the document names its version.
    """
    base = _base(request)
    return {
        "resources": [
            {"name": s, "collection": p, "links": [{"href": f"{base}/v2.0/{p}", "rel": "self"}]}
            for s, p in COLLECTIONS
        ],
        "version": {
            "id": "v2.0",
            "status": "CURRENT",
            "links": [{"href": f"{base}/v2.0/", "rel": "self"}],
        },
    }


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "links": [],
        "updated": "2024-01-01T00:00:00-00:00",
    }


def extensions() -> dict[str, Any]:
    return {"extensions": [_extension(*e) for e in EXTENSIONS]}


def extension(alias: str) -> dict[str, Any]:
    for e in EXTENSIONS:
        if e[0] == alias:
            return {"extension": _extension(*e)}
    raise NotFound(f"Extension with alias {alias} does not exist", type="ExtensionNotFound")
