"""Networks through the REST API: CRUD, provider attributes, segmentation ids, filters."""

from __future__ import annotations

import pytest
from api_harness import Env


def test_create_show_list_update_delete(env: Env) -> None:
    net = env.network(name="blue", description="tenant A")
    assert net["name"] == "blue" and net["status"] == "ACTIVE" and net["admin_state_up"] is True
    assert net["provider:network_type"] == "vxlan" and net["mtu"] == 1450
    assert net["project_id"] == net["tenant_id"] == "default"
    assert net["subnets"] == [] and net["router:external"] is False and net["shared"] is False
    assert net["revision_number"] == 1 and net["created_at"].endswith("Z")

    shown = env.ok("GET", f"/v2.0/networks/{net['id']}")["network"]
    assert shown == net
    assert env.ok("GET", f"/v2.0/networks/{net['id']}.json")["network"]["id"] == net["id"]
    assert [n["id"] for n in env.ok("GET", "/v2.0/networks")["networks"]] == [net["id"]]

    resp = env.call(
        "PUT",
        f"/v2.0/networks/{net['id']}",
        {"network": {"name": "green", "admin_state_up": False}},
    )
    assert resp.status_int == 200
    updated = resp.json["network"]
    assert updated["name"] == "green" and updated["admin_state_up"] is False
    assert updated["revision_number"] == 2
    assert int(resp.headers["X-Loom-Generation"]) == env.store.latest().generation
    assert env.store.latest().networks[net["id"]].name == "green"

    assert env.call("DELETE", f"/v2.0/networks/{net['id']}").status_int == 204
    assert env.call("GET", f"/v2.0/networks/{net['id']}").status_int == 404
    assert env.store.latest().networks == {}


def test_write_is_in_the_snapshot_of_the_returned_generation(env: Env) -> None:
    resp = env.call("POST", "/v2.0/networks", {"network": {"name": "x"}})
    generation = int(resp.headers["X-Loom-Generation"])
    snap = env.store.latest()
    assert snap.generation >= generation
    assert resp.json["network"]["id"] in snap.networks


def test_segmentation_ids_are_allocated_lowest_free_per_type(env: Env) -> None:
    a = env.network(name="a")
    b = env.network(name="b")
    assert (a["provider:segmentation_id"], b["provider:segmentation_id"]) == (1, 2)
    env.call("DELETE", f"/v2.0/networks/{a['id']}")
    c = env.network(name="c")
    assert c["provider:segmentation_id"] == 1  # the freed id is reused first
    v = env.network(**{"provider:network_type": "vlan"})
    assert v["provider:segmentation_id"] == 1  # ids are per type
    assert v["provider:physical_network"] == "physnet1" and v["mtu"] == 1500
    g = env.network(**{"provider:network_type": "gre", "provider:segmentation_id": 7})
    assert g["provider:segmentation_id"] == 7 and g["mtu"] == 1458
    assert env.network(**{"provider:network_type": "geneve"})["mtu"] == 1442


def test_same_segmentation_id_allowed_on_different_types(env: Env) -> None:
    env.network(**{"provider:network_type": "vxlan", "provider:segmentation_id": 100})
    env.network(**{"provider:network_type": "vlan", "provider:segmentation_id": 100})
    env.network(**{"provider:network_type": "geneve", "provider:segmentation_id": 100})
    assert sorted(n.network_type for n in env.store.latest().networks.values()) == [
        "geneve",
        "vlan",
        "vxlan",
    ]


@pytest.mark.parametrize(
    "ntype,seg",
    [
        ("vlan", 0),
        ("vlan", 4095),
        ("vxlan", 0),
        ("vxlan", 16777216),
        ("geneve", 16777216),
        ("gre", 4294967296),
    ],
)
def test_segmentation_id_out_of_range_is_400(env: Env, ntype: str, seg: int) -> None:
    body = {"network": {"provider:network_type": ntype, "provider:segmentation_id": seg}}
    err = env.rejected("POST", "/v2.0/networks", body, status=400, type="InvalidInput")
    assert str(seg) in err["message"]


@pytest.mark.parametrize("ntype,seg", [("vlan", 4094), ("vxlan", 16777215), ("gre", 4294967295)])
def test_segmentation_id_top_of_range_is_accepted(env: Env, ntype: str, seg: int) -> None:
    net = env.network(**{"provider:network_type": ntype, "provider:segmentation_id": seg})
    assert net["provider:segmentation_id"] == seg


def test_duplicate_segmentation_id_is_409_with_type_specific_error(env: Env) -> None:
    env.network(**{"provider:network_type": "vlan", "provider:segmentation_id": 42})
    env.network(**{"provider:network_type": "vxlan", "provider:segmentation_id": 42})
    env.rejected(
        "POST",
        "/v2.0/networks",
        {"network": {"provider:network_type": "vlan", "provider:segmentation_id": 42}},
        status=409,
        type="VlanIdInUse",
    )
    env.rejected(
        "POST",
        "/v2.0/networks",
        {"network": {"provider:segmentation_id": 42}},
        status=409,
        type="TunnelIdInUse",
    )


def test_bulk_create_is_all_or_nothing(env: Env) -> None:
    resp = env.call("POST", "/v2.0/networks", {"networks": [{"name": "a"}, {"name": "b"}]})
    assert resp.status_int == 201
    assert [n["provider:segmentation_id"] for n in resp.json["networks"]] == [1, 2]
    bad = {
        "networks": [
            {"name": "c", "provider:segmentation_id": 50},
            {"name": "d", "provider:segmentation_id": 50},
        ]
    }
    env.rejected("POST", "/v2.0/networks", bad, status=409, type="TunnelIdInUse")
    assert sorted(n.name for n in env.store.latest().networks.values()) == ["a", "b"]


def test_physical_network_only_for_vlan(env: Env) -> None:
    net = env.network(
        **{"provider:network_type": "vlan", "provider:physical_network": "datacentre"}
    )
    assert net["provider:physical_network"] == "datacentre"
    env.rejected(
        "POST",
        "/v2.0/networks",
        {"network": {"provider:physical_network": "physnet1"}},
        status=400,
        type="InvalidInput",
    )


def test_provider_attributes_cannot_be_updated(env: Env) -> None:
    net = env.network()
    env.rejected(
        "PUT",
        f"/v2.0/networks/{net['id']}",
        {"network": {"provider:segmentation_id": 9}},
        status=400,
        type="InvalidInput",
    )


def test_mtu_bounds(env: Env) -> None:
    assert env.network(mtu=1400)["mtu"] == 1400
    env.rejected(
        "POST", "/v2.0/networks", {"network": {"mtu": 1500}}, status=400, type="InvalidInput"
    )  # vxlan max 1450
    env.rejected(
        "POST", "/v2.0/networks", {"network": {"mtu": 40}}, status=400, type="InvalidInput"
    )


def test_filters_or_within_a_key_and_across_keys(env: Env) -> None:
    a = env.network(name="a")
    b = env.network(name="b", admin_state_up=False)
    env.network(name="c")
    names = lambda q: sorted(n["name"] for n in env.ok("GET", f"/v2.0/networks?{q}")["networks"])  # noqa: E731
    assert names("name=a") == ["a"]
    assert names("name=a&name=b") == ["a", "b"]
    assert names("name=a&name=b&admin_state_up=false") == ["b"]
    assert names(f"id={a['id']}&id={b['id']}") == ["a", "b"]
    assert names("provider:network_type=vlan") == []
    assert names("provider:segmentation_id=3") == ["c"]
    assert names("name=zzz") == []
    err = env.call("GET", "/v2.0/networks?no_such_field=1")
    assert err.status_int == 400 and err.json["NeutronError"]["type"] == "InvalidInput"


def test_fields_selection(env: Env) -> None:
    net = env.network(name="a")
    listed = env.ok("GET", "/v2.0/networks?fields=id&fields=name")["networks"]
    assert listed == [{"id": net["id"], "name": "a"}]
    shown = env.ok("GET", f"/v2.0/networks/{net['id']}?fields=provider:segmentation_id")["network"]
    assert shown == {"provider:segmentation_id": 1}


def test_sort_and_pagination(env: Env) -> None:
    for name in ("c", "a", "b"):
        env.network(name=name)
    names = [
        n["name"] for n in env.ok("GET", "/v2.0/networks?sort_key=name&sort_dir=desc")["networks"]
    ]
    assert names == ["c", "b", "a"]
    page = env.ok("GET", "/v2.0/networks?sort_key=name&limit=2")
    assert [n["name"] for n in page["networks"]] == ["a", "b"]
    nxt = page["networks_links"][0]["href"]
    assert "marker=" in nxt
    rest = env.ok("GET", nxt[nxt.index("/v2.0") :])
    assert [n["name"] for n in rest["networks"]] == ["c"] and "networks_links" not in rest


def test_subnets_listed_on_network_and_deleted_with_it(env: Env) -> None:
    net = env.network()
    s1 = env.subnet(net["id"], "10.0.0.0/24")
    s2 = env.subnet(net["id"], "10.0.1.0/24")
    assert sorted(env.ok("GET", f"/v2.0/networks/{net['id']}")["network"]["subnets"]) == sorted(
        [s1["id"], s2["id"]]
    )
    assert env.call("DELETE", f"/v2.0/networks/{net['id']}").status_int == 204
    assert env.store.latest().subnets == {}
    assert env.dump()["Subnet"] == [] and env.dump()["Network"] == []


def test_network_with_ports_cannot_be_deleted(env: Env) -> None:
    net = env.network()
    env.subnet(net["id"], "10.0.0.0/24")
    port = env.port(net["id"])
    err = env.rejected("DELETE", f"/v2.0/networks/{net['id']}", status=409, type="NetworkInUse")
    assert net["id"] in err["message"]
    env.ok("DELETE", f"/v2.0/ports/{port['id']}", status=204)
    env.ok("DELETE", f"/v2.0/networks/{net['id']}", status=204)


def test_row_uuid_is_the_neutron_id(env: Env) -> None:
    net = env.network()
    rows = env.dump()["Network"]
    assert len(rows) == 1 and net["id"] in rows[0]


def test_if_match_revision_number_guards_updates(env: Env) -> None:
    net = env.network(name="a")
    stale = {"If-Match": "revision_number=1"}
    env.ok("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "b"}}, headers=stale)
    env.rejected(
        "PUT",
        f"/v2.0/networks/{net['id']}",
        {"network": {"name": "c"}},
        headers=stale,
        status=412,
        type="RevisionNumberConstraintFailed",
    )
    env.rejected(
        "DELETE",
        f"/v2.0/networks/{net['id']}",
        headers=stale,
        status=412,
        type="RevisionNumberConstraintFailed",
    )
    env.ok(
        "DELETE",
        f"/v2.0/networks/{net['id']}",
        headers={"If-Match": "revision_number=2"},
        status=204,
    )
