"""GET /v1/topology: the document (controller.topoview.model), its picture (render), the routes.

Views are built by hand: an overlay (three hypervisors, a tunnel mesh with one side
missing, a disconnected chassis, a port bound nowhere) and a leaf-spine fabric
(fabric switches, LLDP links, port names and states, and baremetal bindings).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from api_harness import ADMIN, ALICE, Env, start_env

from controller.intent import FixedIP, Intent, Network, Port
from controller.runtime import Detached
from controller.topology import Binding, ChassisView, SwitchView, TopologyView, TunnelView
from controller.topoview import build, empty, html_page, render, svg

MP = MappingProxyType
OFPP_LOCAL = 0xFFFFFFFE


def uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.topoview.test"))


def port(name: str, net: Network, i: int) -> Port:
    return Port(uid(name), net.project_id, net.id, name, f"fa:16:3e:00:00:{i:02x}",
                (FixedIP(uid("subnet"), f"10.0.0.{i + 10}"),))


def overlay() -> tuple[TopologyView, Intent]:
    """hv1..hv3, one br-int each; vxlan mesh except hv3 -> hv1; hv3 disconnected."""
    chassis = {f"hv{i}": ChassisView(f"hv{i}", f"172.31.0.1{i}", i) for i in (1, 2, 3)}
    switches = {i: SwitchView(i, f"hv{i}", "br-int") for i in (1, 2, 3)}
    tunnels = {(a, f"hv{b}", "vxlan"): TunnelView(a, f"hv{b}", "vxlan", 100 + b)
               for a in (1, 2, 3) for b in (1, 2, 3) if a != b and (a, b) != (3, 1)}
    red = Network(uid("red"), "alice", "red", "vxlan", 100)
    blue = Network(uid("blue"), "bob", "blue", "vxlan", 101)
    spec = [("vm1", red, 1), ("vm2", red, 2), ("vm3", blue, 1), ("db", blue, 3),
            ("loose", red, None)]
    ports, bindings = {}, {}
    for i, (name, net, hv) in enumerate(spec):
        p = port(name, net, i)
        ports[p.id] = p
        if hv is not None:
            bindings[p.id] = Binding(p.id, f"hv{hv}", "br-int", hv, 10 + i, f"tap-{name}")
    view = TopologyView(7, MP(switches), MP(bindings), MP(chassis), MP(tunnels))
    intent = Intent(generation=42, networks=MP({red.id: red, blue.id: blue}), ports=MP(ports))
    return view, intent


def leaf_spine(leaves: int = 4, spines: int = 2) -> tuple[TopologyView, Intent]:
    """Fabric switches spine1.. (0x1..) and leaf1.. (0x11..) as the view has them from
    OpenFlow and LLDP: leaf L port S <-> spine S port L; leaf1 port 2 down; one
    baremetal host h<L> per leaf, on port 10, bound by local_link_information."""
    links: dict[tuple[int, int], tuple[int, int]] = {}
    names: dict[int, dict[str, int]] = {}
    for s in range(1, spines + 1):
        names[s] = {f"spine{s}": OFPP_LOCAL}
    for leaf in range(1, leaves + 1):
        d = 0x10 + leaf
        names[d] = {f"leaf{leaf}": OFPP_LOCAL, f"leaf{leaf}-eth10": 10}
        for s in range(1, spines + 1):
            links[(s, leaf)] = (d, s)
            links[(d, s)] = (s, leaf)
            names[s][f"spine{s}-eth{leaf}"] = leaf
            names[d][f"leaf{leaf}-eth{s}"] = s
    net = Network(uid("fabric"), "lab", "fabric-net", "vlan", 10)
    ports = {}
    for leaf in range(1, leaves + 1):
        p = port(f"h{leaf}", net, leaf)
        info = {"local_link_information": [
            {"switch_id": f"{0x10 + leaf:016x}", "port_id": f"leaf{leaf}-eth10"}]}
        ports[p.id] = replace(p, binding_profile=info)
    state = {(d, no): True for d, by_name in names.items() for no in by_name.values()}
    state.update({(0x11, 2): False, (0x2, 1): False})
    view = TopologyView(3, fabric_switches=frozenset(names), links=MP(links),
                        switch_ports=MP({k: MP(v) for k, v in names.items()}),
                        port_state=MP(state))
    intent = Intent(generation=9, networks=MP({net.id: net}), ports=MP(ports))
    return view, intent


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in doc["nodes"]}


def link_set(doc: dict[str, Any], kind: str) -> set[tuple[Any, ...]]:
    return {(lk["src"]["node"], lk["src"]["port_no"], lk["dst"]["node"], lk["dst"]["port_no"],
             lk["state"]) for lk in doc["links"] if lk["kind"] == kind}


# ---------------------------------------------------------------------------- model
def test_overlay_document() -> None:
    view, intent = overlay()
    doc = build(view, intent, [1, 2], ["hv1", "hv2"])
    assert set(doc) == {"nodes", "links", "generated_from"}
    assert doc["generated_from"] == {"topology_version": 7, "intent_generation": 42}
    nodes = by_id(doc)
    assert nodes["chassis:hv1"] == {"id": "chassis:hv1", "kind": "chassis", "name": "hv1",
                                    "encap_ip": "172.31.0.11", "connected": True}
    assert nodes["chassis:hv3"]["connected"] is False
    sw1 = nodes["switch:0000000000000001"]
    assert (sw1["datapath_id"], sw1["name"], sw1["chassis"], sw1["connected"]) == \
        ("0000000000000001", "br-int", "hv1", True)
    assert nodes["switch:0000000000000003"]["connected"] is False
    assert sw1["ports"] == [
        {"port_no": 10, "name": "tap-vm1", "state": "up"},
        {"port_no": 12, "name": "tap-vm3", "state": "up"},
        {"port_no": 102, "name": "vxlan:hv2", "state": "up"},
        {"port_no": 103, "name": "vxlan:hv3", "state": "up"},
    ]
    vm1 = nodes[f"port:{uid('vm1')}"]
    assert vm1 == {"id": f"port:{uid('vm1')}", "kind": "port", "name": "vm1",
                   "network_id": uid("red"), "network_name": "red", "project_id": "alice",
                   "mac": "fa:16:3e:00:00:00", "ips": ["10.0.0.10"], "status": "ACTIVE"}
    assert nodes[f"port:{uid('db')}"]["status"] == "DOWN"  # its switch is not connected
    assert nodes[f"port:{uid('loose')}"]["status"] == "DOWN"

    s1, s2, s3 = (f"switch:{d:016x}" for d in (1, 2, 3))
    # both sides exist: one link switch port <-> switch port; hv3 never built its side
    # towards hv1: a down link to the chassis itself
    assert link_set(doc, "tunnel") == {
        (s1, 102, s2, 101, "up"), (s2, 103, s3, 102, "up"), (s1, 103, "chassis:hv3", None, "down"),
    }
    assert all(lk["tunnel_type"] == "vxlan" for lk in doc["links"] if lk["kind"] == "tunnel")
    assert link_set(doc, "hosts") == {
        ("chassis:hv1", None, s1, None, "up"), ("chassis:hv2", None, s2, None, "up"),
        ("chassis:hv3", None, s3, None, "down"),
    }
    assert link_set(doc, "host") == {
        (s1, 10, f"port:{uid('vm1')}", None, "up"), (s2, 11, f"port:{uid('vm2')}", None, "up"),
        (s1, 12, f"port:{uid('vm3')}", None, "up"), (s3, 13, f"port:{uid('db')}", None, "up"),
    }
    assert link_set(doc, "fabric") == set()  # a plain TopologyView has no fabric links


def test_leaf_spine_document() -> None:
    view, intent = leaf_spine()
    doc = build(view, intent, [1, 2, 0x11, 0x12, 0x13])
    nodes = by_id(doc)
    spine1 = nodes["switch:0000000000000001"]
    assert (spine1["name"], spine1["chassis"], spine1["connected"]) == ("spine1", None, True)
    assert nodes["switch:0000000000000014"]["connected"] is False
    assert [p["name"] for p in spine1["ports"]] == [f"spine1-eth{i}" for i in (1, 2, 3, 4)]
    leaf1 = nodes["switch:0000000000000011"]
    assert {p["port_no"]: p["state"] for p in leaf1["ports"]} == {1: "up", 2: "down", 10: "up"}
    fabric = link_set(doc, "fabric")
    assert len(fabric) == 8  # both directions in the view, one link each in the document
    sp = "switch:{:016x}".format
    assert (sp(1), 1, sp(0x11), 1, "up") in fabric
    assert (sp(2), 1, sp(0x11), 2, "down") in fabric  # both ends down here
    assert (sp(2), 2, sp(0x12), 2, "up") in fabric
    # baremetal hosts hang off the leaf port their local_link_information names
    assert (sp(0x11), 10, f"port:{uid('h1')}", None, "up") in link_set(doc, "host")
    assert len(link_set(doc, "host")) == 4 and not link_set(doc, "hosts")
    assert nodes[f"port:{uid('h1')}"]["status"] == "ACTIVE"
    assert nodes[f"port:{uid('h4')}"]["status"] == "DOWN"  # leaf4 is not connected


def test_runtime_rows_and_unknown_switches() -> None:
    """Runtime.switches()/chassis() rows are accepted; a connected fabric switch the view
    does not know yet still gets a node; a binding nobody declared shows as a port."""
    view, _ = overlay()
    rows = [{"datapath_id": "0000000000000001", "connected": True},
            {"datapath_id": "0000000000000002", "connected": False},
            {"datapath_id": "00000000000000aa", "connected": True}]
    doc = build(view, None, rows, [{"name": "hv2", "connected": True}])
    nodes = by_id(doc)
    assert nodes["switch:0000000000000002"]["connected"] is False
    extra = nodes["switch:00000000000000aa"]
    assert (extra["name"], extra["chassis"], extra["ports"]) == ("00000000000000aa", None, [])
    assert nodes["chassis:hv2"]["connected"] and not nodes["chassis:hv1"]["connected"]
    undeclared = nodes[f"port:{uid('vm1')}"]
    assert (undeclared["name"], undeclared["network_id"]) == ("tap-vm1", None)
    assert doc["generated_from"]["intent_generation"] is None
    statuses = build(view, None, [1], port_status=lambda pid: "BUILD")
    assert {n["status"] for n in statuses["nodes"] if n["kind"] == "port"} == {"BUILD"}


def test_document_is_deterministic_and_sorted() -> None:
    view, intent = leaf_spine()
    # the same content inserted in another order gives the same document and picture
    shuffled = TopologyView(
        view.version, fabric_switches=view.fabric_switches,
        links=MP(dict(reversed(list(view.links.items())))),
        switch_ports=MP(dict(reversed(list(view.switch_ports.items())))),
        port_state=MP(dict(reversed(list(view.port_state.items())))))
    a, b = build(view, intent, [1, 2]), build(shuffled, intent, [2, 1])
    assert a == b
    assert [n["id"] for n in a["nodes"]] == sorted(n["id"] for n in a["nodes"])
    assert svg(a) == svg(b) == svg(build(view, intent, [1, 2]))
    assert html_page(a, 5) == html_page(b, 5)


def test_detached_and_empty() -> None:
    assert Detached().topology_document() == empty() == {
        "nodes": [], "links": [], "generated_from": {"topology_version": 0,
                                                     "intent_generation": None}}
    picture = svg(empty())
    ET.fromstring(picture)
    assert "No switches, chassis or ports yet" in picture


# ---------------------------------------------------------------------------- render
SVG_NS = "{http://www.w3.org/2000/svg}"


def drawn(picture: str) -> tuple[set[str], set[tuple[str, str, str]], ET.Element]:
    root = ET.fromstring(picture)
    assert root.tag == f"{SVG_NS}svg"
    nodes = {g.attrib["data-node"] for g in root.iter(f"{SVG_NS}g") if "data-node" in g.attrib}
    links = set()
    for path in root.iter(f"{SVG_NS}path"):
        if "data-link" in path.attrib:
            src, dst, kind = path.attrib["data-link"].split("|")
            links.add((src, dst, kind))
    return nodes, links, root


@pytest.mark.parametrize("make", [overlay, leaf_spine])
def test_svg_parses_and_draws_every_node_and_link(make: Any) -> None:
    view, intent = make()
    doc = build(view, intent, [1, 2, 0x11], ["hv1"])
    nodes, links, root = drawn(svg(doc))
    assert nodes == {n["id"] for n in doc["nodes"]}
    assert links == {(lk["src"]["node"], lk["dst"]["node"], lk["kind"]) for lk in doc["links"]}
    assert len([p for p in root.iter(f"{SVG_NS}path") if "data-link" in p.attrib]) == \
        len(doc["links"])
    texts = {"".join(t.itertext()) for t in root.iter(f"{SVG_NS}text")}
    for n in doc["nodes"]:
        assert n["name"] in texts, n  # every node is labelled by its name
    # no external asset of any kind
    assert not re.search(r"(href|src)\s*=", svg(doc)) and "url(" not in svg(doc)
    assert int(float(root.attrib["width"])) >= 960


def test_down_links_are_dashed_red_and_disconnected_nodes_marked() -> None:
    view, intent = leaf_spine()
    doc = build(view, intent, [1, 2, 0x11, 0x12, 0x13])
    _, _, root = drawn(svg(doc))
    down = {p.attrib["data-link"] for p in root.iter(f"{SVG_NS}path")
            if "data-link" in p.attrib and "lt-down" in p.attrib.get("class", "")}
    assert down == {"switch:0000000000000002|switch:0000000000000011|fabric"}
    assert ".lt-down{stroke:#dc2626;stroke-dasharray" in svg(doc)
    leaf4 = next(g for g in root.iter(f"{SVG_NS}g")
                 if g.attrib.get("data-node") == "switch:0000000000000014")
    assert leaf4.find(f"{SVG_NS}rect").attrib["stroke-dasharray"]  # type: ignore[union-attr]


def test_layout_tiers() -> None:
    """Spines above leaves, ports below their leaf; an overlay is one row with its
    chassis above; a chain stays one row; unbound ports come last."""
    view, intent = leaf_spine()
    lay = render.layout(build(view, intent, [1]))
    spine_y = {lay.boxes[f"switch:{d:016x}"].y for d in (1, 2)}
    leaf_y = {lay.boxes[f"switch:{d:016x}"].y for d in (0x11, 0x12, 0x13, 0x14)}
    assert len(spine_y) == 1 and len(leaf_y) == 1 and max(spine_y) < min(leaf_y)
    assert lay.tiers["switch:0000000000000001"] == 1 and lay.tiers["switch:0000000000000011"] == 0
    leaf_x = [lay.boxes[f"switch:{d:016x}"].cx for d in (0x11, 0x12, 0x13, 0x14)]
    assert leaf_x == sorted(leaf_x)  # natural order left to right
    h1, leaf1 = lay.boxes[f"port:{uid('h1')}"], lay.boxes["switch:0000000000000011"]
    assert h1.y > leaf1.bottom and abs(h1.cx - leaf1.cx) < h1.w

    chain = TopologyView(1, fabric_switches=frozenset((1, 2, 3)),
                         links=MP({(1, 2): (2, 1), (2, 1): (1, 2), (2, 2): (3, 1), (3, 1): (2, 2)}))
    lay = render.layout(build(chain))
    assert len({b.y for b in lay.boxes.values()}) == 1

    ov_view, ov_intent = overlay()
    lay = render.layout(build(ov_view, ov_intent, [1, 2], ["hv1", "hv2"]))
    for i in (1, 2, 3):
        ch, sw = lay.boxes[f"chassis:hv{i}"], lay.boxes[f"switch:{i:016x}"]
        assert ch.bottom < sw.y and abs(ch.cx - sw.cx) < 1
    assert lay.unbound == [f"port:{uid('loose')}"]
    assert lay.boxes[f"port:{uid('loose')}"].y > max(
        b.bottom for k, b in lay.boxes.items() if k != f"port:{uid('loose')}")
    assert len(lay.frames) == 3  # each hypervisor framed with its switch and guests


def test_hostile_names_are_escaped() -> None:
    view, intent = overlay()
    net = next(iter(intent.networks.values()))
    evil = Port(uid("evil"), net.project_id, net.id, '<script>alert("x")</script>&',
                "fa:16:3e:00:00:99")
    intent = Intent(generation=1, networks=intent.networks,
                    ports=MP({**intent.ports, evil.id: evil}))
    doc = build(view, intent)
    for text in (svg(doc), html_page(doc)):
        assert "<script>alert" not in text
    nodes, _, _ = drawn(svg(doc))
    assert f"port:{evil.id}" in nodes


def test_html_page() -> None:
    view, intent = overlay()
    page = html_page(build(view, intent), 7)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg ") == 1 and 'data-node="chassis:hv1"' in page
    assert "var every = 7000;" in page and 'content="7"' in page
    assert not re.search(r"\b(src|href)\s*=", page)  # nothing fetched but the SVG itself
    assert "X-Auth-Token" in page and '"v1/topology.svg"' in page
    off = html_page(build(view, intent), 0)
    assert "var every = 0;" in off and "http-equiv" not in off


# ---------------------------------------------------------------------------- routes
class Fabric(Detached):
    """A runtime answering with the leaf-spine document."""

    def topology_document(self) -> dict[str, Any]:
        view, intent = leaf_spine()
        return build(view, intent, [1, 2])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path / "state", tokens=True, runtime=Fabric())
    yield e
    e.close()


def test_routes(env: Env) -> None:
    expected = Fabric().topology_document()
    assert env.ok("GET", "/v1/topology", token=ADMIN) == expected
    assert env.ok("GET", "/v1/topology.json", token=ADMIN) == expected
    resp = env.call("GET", "/v1/topology.svg", token=ADMIN)
    assert resp.status_int == 200 and resp.content_type == "image/svg+xml"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.text == svg(expected)
    page = env.call("GET", "/topology", token=ADMIN)
    assert page.status_int == 200 and page.content_type == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.text == html_page(expected, 5)
    assert "var every = 30000;" in env.call("GET", "/topology?refresh=30", token=ADMIN).text
    assert "var every = 5000;" in env.call("GET", "/topology?refresh=x", token=ADMIN).text
    env.rejected("POST", "/v1/topology", {}, status=405, type="HTTPMethodNotAllowed",
                 token=ADMIN)


def test_routes_are_admin_only_and_the_page_takes_a_query_token(env: Env) -> None:
    for path in ("/v1/topology", "/v1/topology.svg", "/topology"):
        env.rejected("GET", path, status=401, type="HTTPUnauthorized")
        env.rejected("GET", path, status=404, type="HTTPNotFound", token=ALICE)
    # a browser cannot send a header when it navigates: the page accepts ?token=
    resp = env.call("GET", f"/topology?token={ADMIN}")
    assert resp.status_int == 200 and "<svg " in resp.text
    env.rejected("GET", f"/topology?token={ALICE}", status=404, type="HTTPNotFound")
    env.rejected("GET", "/topology?token=wrong-token-000", status=401, type="HTTPUnauthorized")
    # ... and only the page: the JSON and the SVG want the header
    env.rejected("GET", f"/v1/topology?token={ADMIN}", status=401, type="HTTPUnauthorized")
