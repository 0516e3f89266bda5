"""Flat provider networks through the REST API, as Neutron's type_flat has them.

`provider:network_type: flat` needs a `provider:physical_network` and takes no
`provider:segmentation_id` (400 InvalidInput, Neutron's messages); a physical network
carries at most one flat network (409 FlatNetworkInUse), beside any number of VLAN
networks; provider attributes are admin-only; the MTU is the physical network's, 1500.
Every refused request leaves the database as it was (`Env.rejected`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import ADMIN, ALICE, Env, openstack_cli, start_env

FLAT = {"provider:network_type": "flat", "provider:physical_network": "physnet1"}


@pytest.fixture
def auth_env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path / "state", tokens=True)
    yield e
    e.close()


def test_create_show_list_delete(env: Env) -> None:
    net = env.network(name="ext", **FLAT, **{"router:external": True})
    assert net["provider:network_type"] == "flat"
    assert net["provider:physical_network"] == "physnet1"
    assert net["provider:segmentation_id"] is None  # as Neutron shows a flat network
    assert net["mtu"] == 1500 and net["router:external"] is True
    assert env.ok("GET", f"/v2.0/networks/{net['id']}")["network"] == net
    stored = env.store.latest().networks[net["id"]]
    assert (stored.network_type, stored.physical_network) == ("flat", "physnet1")
    listed = env.ok("GET", "/v2.0/networks?provider:network_type=flat")["networks"]
    assert [n["id"] for n in listed] == [net["id"]]
    # its internal id is nobody's segmentation id
    env.network(name="t")  # vxlan 1
    by_seg = env.ok("GET", "/v2.0/networks?provider:segmentation_id=1")["networks"]
    assert [n["name"] for n in by_seg] == ["t"]
    assert env.call("DELETE", f"/v2.0/networks/{net['id']}").status_int == 204
    assert net["id"] not in env.store.latest().networks


def test_a_physical_network_is_required(env: Env) -> None:
    for body in ({"provider:network_type": "flat"},
                 {"provider:network_type": "flat", "provider:physical_network": ""},
                 {"provider:network_type": "flat", "provider:physical_network": None}):
        err = env.rejected("POST", "/v2.0/networks", {"network": body}, status=400,
                           type="InvalidInput")
        assert err["message"] == ("Invalid input for operation: physical_network required "
                                  "for flat provider network")


def test_a_segmentation_id_is_prohibited(env: Env) -> None:
    for seg in (1, 100, 4094):
        err = env.rejected("POST", "/v2.0/networks",
                           {"network": {**FLAT, "provider:segmentation_id": seg}},
                           status=400, type="InvalidInput")
        assert err["message"] == ("Invalid input for operation: segmentation_id prohibited "
                                  "for flat provider network")


def test_one_flat_network_per_physical_network(env: Env) -> None:
    first = env.network(name="a", **FLAT)
    err = env.rejected("POST", "/v2.0/networks", {"network": {"name": "b", **FLAT}},
                       status=409, type="FlatNetworkInUse")
    assert err["message"] == ("Unable to create the flat network. "
                              "Physical network physnet1 is in use.")
    # another physical network is free, and VLANs share physnet1 with the flat one
    other = env.network(name="c", **{**FLAT, "provider:physical_network": "physnet2"})
    vlan = env.network(name="v", **{"provider:network_type": "vlan",
                                    "provider:physical_network": "physnet1",
                                    "provider:segmentation_id": 100})
    assert vlan["provider:segmentation_id"] == 100
    stored = env.store.latest().networks
    # the internal ids are distinct (the store's unique index on type and id)
    assert stored[first["id"]].segmentation_id != stored[other["id"]].segmentation_id
    # the physical network is free again once its flat network is gone
    assert env.call("DELETE", f"/v2.0/networks/{first['id']}").status_int == 204
    again = env.network(name="b", **FLAT)
    assert again["provider:physical_network"] == "physnet1"


def test_a_bulk_create_of_two_flat_networks_on_one_physical_network_is_refused(env: Env
                                                                              ) -> None:
    body = {"networks": [{"name": "a", **FLAT}, {"name": "b", **FLAT}]}
    env.rejected("POST", "/v2.0/networks", body, status=409, type="FlatNetworkInUse")
    assert env.store.latest().networks == {}
    body = {"networks": [{"name": "a", **FLAT},
                         {"name": "b", **FLAT, "provider:physical_network": "physnet2"}]}
    created = env.ok("POST", "/v2.0/networks", body, 201)["networks"]
    assert sorted(n["provider:physical_network"] for n in created) == ["physnet1", "physnet2"]


def test_mtu_is_the_physical_networks(env: Env) -> None:
    assert env.network(name="a", mtu=1400, **FLAT)["mtu"] == 1400
    env.rejected("POST", "/v2.0/networks",
                 {"network": {"mtu": 1501, **FLAT, "provider:physical_network": "p2"}},
                 status=400, type="InvalidInput")


def test_provider_attributes_are_admin_only(auth_env: Env) -> None:
    err = auth_env.rejected("POST", "/v2.0/networks", {"network": {"name": "x", **FLAT}},
                            token=ALICE, status=403, type="PolicyNotAuthorized")
    assert "create_network" in err["message"]
    net = auth_env.network(name="ext", project_id="alice", shared=True, **FLAT)
    seen = auth_env.ok("GET", f"/v2.0/networks/{net['id']}", token=ALICE)["network"]
    assert not any(k.startswith("provider:") for k in seen)
    assert auth_env.ok("GET", f"/v2.0/networks/{net['id']}",
                       token=ADMIN)["network"]["provider:network_type"] == "flat"


def test_openstack_style_body(env: Env) -> None:
    """The body `openstack network create --external --provider-network-type flat
    --provider-physical-network physnet1 ext` sends."""
    body = {"network": {"name": "ext", "admin_state_up": True, "router:external": True,
                        "provider:network_type": "flat",
                        "provider:physical_network": "physnet1"}}
    net = env.ok("POST", "/v2.0/networks", body, 201)["network"]
    assert (net["router:external"], net["provider:segmentation_id"], net["mtu"]) == \
        (True, None, 1500)


def test_openstack_cli(env: Env) -> None:
    with openstack_cli(env) as osc:
        osc("network", "create", "--external", "--provider-network-type", "flat",
            "--provider-physical-network", "physnet1", "ext")
        shown = json.loads(osc("network", "show", "ext", "-f", "json"))
        assert shown["provider:network_type"] == "flat"
        assert shown["provider:physical_network"] == "physnet1"
        assert shown["provider:segmentation_id"] is None
        assert shown["router:external"] is True and shown["mtu"] == 1500
    assert [n.network_type for n in env.store.latest().networks.values()] == ["flat"]
