"""Graph files as Mininet topologies (topologies.graphtopo) and the RSTP timers derived
from a graph. No root, no Mininet run: only the Topo objects and the graph maths."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import networkx as nx
import pytest
from mininet.topo import Topo

from topologies.graphtopo import (
    RSTP_MAX_MAX_AGE,
    GraphError,
    GraphTopo,
    graph_topo,
    load_graph,
    rstp_timers,
    tree_depth,
)

ZOO = Path(__file__).resolve().parents[2] / "topologies" / "zoo"


def _graphml(tmp_path: Path, graph: nx.Graph, name: str = "g.graphml") -> Path:
    path = tmp_path / name
    nx.write_graphml(graph, path)
    return path


def _links(topo: GraphTopo) -> set[frozenset[str]]:
    return {frozenset((a, b)) for a, _, b, _ in topo.switch_links()}


def test_signature_is_the_one_other_code_imports() -> None:
    sig = inspect.signature(graph_topo)
    assert list(sig.parameters) == ["path", "hosts_per_switch"]
    assert sig.parameters["hosts_per_switch"].default == 1
    assert isinstance(graph_topo(ZOO / "Abilene.graphml"), Topo)


@pytest.mark.parametrize("name,switches,links", [
    ("Abilene", 11, 14), ("Geant2001", 27, 38), ("Surfnet", 50, 68), ("Uninett2010", 74, 101),
])
def test_shipped_zoo_graphs(name: str, switches: int, links: int) -> None:
    topo = graph_topo(ZOO / f"{name}.graphml", hosts_per_switch=1)
    assert len(topo.tiers) == switches and len(topo.switch_links()) == links
    assert len(topo.host_links) == switches
    assert topo.name == name and topo.merged == 0 and topo.self_loops == 0
    assert sorted(topo.tiers, key=lambda s: int(s[1:])) == [f"s{i}" for i in
                                                             range(1, switches + 1)]
    assert (ZOO / "README.md").read_text().count("CC BY-SA 3.0")


def test_abilene_names_labels_dpids_ports() -> None:
    topo = graph_topo(ZOO / "Abilene.graphml", hosts_per_switch=2)
    assert topo.labels["s1"] == "New York" and topo.node_of["s1"] == "0"
    assert topo.dpid("s5") == "0000000000000005"
    assert topo.host_links["h1"] == [("h1-eth0", "s1")]
    assert topo.host_links["h4"] == [("h4-eth0", "s2")]
    assert topo.host_number("h22") == 22 and len(topo.host_links) == 22
    # hosts take a switch's first ports; links follow in (lower, higher) switch order
    assert topo.declared[:2] == [("h1", 0, "s1", 1), ("h2", 0, "s1", 2)]
    links = [d for d in topo.declared if d[0].startswith("s")]
    assert links[0] == ("s1", 3, "s2", 3)  # New York - Chicago
    assert links == sorted(links, key=lambda d: (int(d[0][1:]), int(d[2][1:])))
    assert "Abilene" in topo.describe() and "11 switches" in topo.describe()


def test_deterministic_natural_order(tmp_path: Path) -> None:
    g = nx.Graph()
    g.add_nodes_from(["10", "2", "1", "b", "a"])
    g.add_edges_from([("1", "2"), ("2", "10"), ("10", "a"), ("a", "b"), ("b", "1")])
    topo = graph_topo(_graphml(tmp_path, g))
    assert topo.node_of == {"s1": "1", "s2": "2", "s3": "10", "s4": "a", "s5": "b"}
    again = graph_topo(_graphml(tmp_path, nx.relabel_nodes(g, lambda n: n), "again.graphml"))
    assert again.declared == topo.declared


@pytest.mark.parametrize("edges_key", ["links", "edges"])
def test_node_link_json_either_edge_key(tmp_path: Path, edges_key: str) -> None:
    g = nx.cycle_graph(5)
    nx.set_node_attributes(g, {n: f"city{n}" for n in g}, "name")
    path = tmp_path / "ring.json"
    path.write_text(json.dumps(nx.node_link_data(g, edges=edges_key)))
    topo = graph_topo(path, hosts_per_switch=0)
    assert len(topo.tiers) == 5 and len(topo.switch_links()) == 5 and not topo.host_links
    assert topo.labels["s3"] == "city2"
    assert topo.has_loops


def test_parallel_edges_merged_and_self_loops_dropped(tmp_path: Path) -> None:
    g = nx.MultiGraph()
    g.add_edges_from([(0, 1), (0, 1), (0, 1), (1, 2), (2, 2), (2, 0)])
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(nx.node_link_data(g, edges="links")))
    topo = graph_topo(path)
    assert _links(topo) == {frozenset(("s1", "s2")), frozenset(("s2", "s3")),
                            frozenset(("s1", "s3"))}
    assert topo.merged == 2 and topo.self_loops == 1
    assert "2 parallel edges merged" in topo.describe()
    assert "1 self-loops dropped" in topo.describe()


def test_directed_graph_read_as_undirected(tmp_path: Path) -> None:
    g = nx.DiGraph([("a", "b"), ("b", "a"), ("b", "c")])
    topo = graph_topo(_graphml(tmp_path, g))
    assert _links(topo) == {frozenset(("s1", "s2")), frozenset(("s2", "s3"))}


def test_disconnected_graph_refused(tmp_path: Path) -> None:
    g = nx.Graph([(1, 2), (2, 3), (10, 11)])
    with pytest.raises(GraphError, match=r"not connected \(2 parts: 3 node\(s\)"):
        graph_topo(_graphml(tmp_path, g))


def test_empty_unreadable_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match="no nodes"):
        graph_topo(_graphml(tmp_path, nx.Graph()))
    with pytest.raises(GraphError, match="No such file"):
        graph_topo(tmp_path / "missing.graphml")
    bad = tmp_path / "bad.graphml"
    bad.write_text("<graphml><graph><node></graph>")
    with pytest.raises(GraphError, match="not a readable graph"):
        load_graph(bad)
    odd = tmp_path / "net.txt"
    odd.write_text("s1 s2\n")
    with pytest.raises(GraphError, match="unknown graph format"):
        load_graph(odd)


def test_format_sniffed_without_suffix(tmp_path: Path) -> None:
    plain = tmp_path / "abilene"
    plain.write_text((ZOO / "Abilene.graphml").read_text())
    assert len(graph_topo(plain).tiers) == 11


def test_rstp_root_is_the_centre() -> None:
    g = nx.path_graph(9)  # 0..8: centre 4 -> s5
    topo = GraphTopo(graph=g, hosts_per_switch=0, name="path")
    assert topo.rstp_roots()[0] == "s5"


def test_rstp_timers_cover_the_depth() -> None:
    path = nx.relabel_nodes(nx.path_graph(16), lambda n: f"s{n + 1}")
    timers = rstp_timers(path, "s8")  # 8 hops to s16
    assert timers.depth == 8 and timers.max_age == 9 > 6
    assert 2 * (timers.forward_delay - 1) >= timers.max_age and timers.forward_delay >= 4
    # small networks keep RSTP's minimum (and the runner's old, fast timers)
    small = rstp_timers(nx.cycle_graph(4), 0)
    assert (small.max_age, small.forward_delay, small.hello) == (6, 4, 2)


def test_tree_depth_counts_one_link_cut() -> None:
    ring = nx.cycle_graph(12)
    assert nx.eccentricity(ring, v=0) == 6
    assert tree_depth(ring, 0) == 11  # cut next to the root: the ring becomes a path
    assert ring.number_of_edges() == 12  # the graph is given back as it was
    timers = rstp_timers(ring, 0)
    assert timers.max_age == 12 and timers.forward_delay == 7


def test_too_deep_for_rstp() -> None:
    long_path = nx.path_graph(2 * RSTP_MAX_MAX_AGE + 2)
    with pytest.raises(GraphError, match="RSTP cannot span"):
        rstp_timers(long_path, RSTP_MAX_MAX_AGE + 1)
