"""A graph file (GraphML, or networkx's JSON node-link format) as a Mininet topology.

Researchers bring real networks as graphs, not as Mininet classes: the Internet
Topology Zoo publishes GraphML, and networkx writes ``node_link_data`` JSON. This
module turns either into a `FabricTopo` that `topologies.fabric` runs like its
built-in topologies, and derives the RSTP timers such a graph needs when it runs
standalone.

    from topologies.graphtopo import graph_topo
    topo = graph_topo("topologies/zoo/Uninett2010.graphml", hosts_per_switch=1)

Conversion rules (all deterministic, so a switch keeps its name from run to run):

- switches are ``s1``..``sN`` in natural order of the graph's node ids ("2" before
  "10"), dpids as for `linear` (``s5`` = 0000000000000005); `GraphTopo.node_of`
  maps a switch back to its node id and `labels` to the node's ``label``/``name``;
- `hosts_per_switch` hosts per switch, ``h1``.. in switch order (ports: hosts first);
- one link per pair of adjacent nodes, in order of (lower, higher) switch number:
  parallel edges of a multigraph are merged (a switching fabric gains nothing from a
  second veth between the same two bridges but a loop) and self-loops dropped (a
  veth from a bridge to itself only reflects its own floods); both are counted in
  `GraphTopo.merged` / `self_loops`;
- a directed graph is read as undirected; a disconnected or empty graph is refused.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx

from topologies.mininet_topos import TIER_PLAIN, FabricTopo

GRAPHML_SUFFIXES = (".graphml", ".xml")
JSON_SUFFIXES = (".json",)
# 802.1D-2004 17.14: Max Age 6..40 s; OVS's RSTP keeps Hello Time at 2 s and accepts a
# Max Age only if 2 * (Forward Delay - 1) >= Max Age, Forward Delay being 4..30 s.
RSTP_MIN_MAX_AGE, RSTP_MAX_MAX_AGE = 6, 40
RSTP_MIN_FORWARD_DELAY, RSTP_MAX_FORWARD_DELAY = 4, 30
RSTP_HELLO = 2
RSTP_MARGIN = 1  # hops of slack beyond the deepest bridge (also after one link cut)


class GraphError(ValueError):
    """The file is not a graph this module can run (unreadable, empty, disconnected)."""


def _natural_key(value: Any) -> tuple[tuple[int, int | str], ...]:
    """"s2" < "s10"; numbers before text in each position, so mixed ids still sort."""
    parts = re.split(r"(\d+)", str(value))
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def load_graph(path: str | Path) -> nx.Graph:
    """Read a GraphML or node-link JSON file as networkx reads it (multigraph or not).

    The format follows the suffix (``.graphml``/``.xml``, ``.json``), else the first
    character (``<`` or ``{``). JSON may name its edge list ``links`` (networkx before
    3.6, the default then) or ``edges`` (networkx 3.6, topohub)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GraphError(f"{path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    head = text.lstrip()[:1]
    try:
        if suffix in GRAPHML_SUFFIXES or (suffix not in JSON_SUFFIXES and head == "<"):
            return nx.read_graphml(path)
        if suffix in JSON_SUFFIXES or head == "{":
            data = json.loads(text)
            edges = "edges" if "edges" in data and "links" not in data else "links"
            return nx.node_link_graph(data, edges=edges)
    except (ValueError, KeyError, TypeError, nx.NetworkXError, ElementTree.ParseError) as exc:
        raise GraphError(f"{path}: not a readable graph: {exc}") from None
    raise GraphError(f"{path}: unknown graph format (want .graphml or node-link .json)")


def _label(attrs: dict[str, Any], node: Any) -> str:
    for key in ("label", "name", "Label", "Name"):
        if attrs.get(key) not in (None, ""):
            return str(attrs[key])
    return str(node)


class GraphTopo(FabricTopo):
    """A `FabricTopo` built from a networkx graph (see the module docstring).

    Besides FabricTopo's attributes: `name` (the graph's), `node_of` (switch -> node
    id), `labels` (switch -> node label), `merged` (parallel edges merged), `self_loops`
    (self-loops dropped)."""

    kind = "graph"

    def build(  # type: ignore[override]
        self, graph: nx.Graph, hosts_per_switch: int = 1, name: str = "graph"
    ) -> None:
        per = int(hosts_per_switch)
        if per < 0:
            raise ValueError("graph: hosts_per_switch >= 0")
        simple = nx.Graph(graph.to_undirected() if graph.is_directed() else graph)
        self.name = name
        self.self_loops = nx.number_of_selfloops(simple)
        simple.remove_edges_from(list(nx.selfloop_edges(simple)))
        self.merged = graph.number_of_edges() - nx.number_of_selfloops(graph) \
            - simple.number_of_edges()
        if simple.number_of_nodes() == 0:
            raise GraphError(f"{name}: the graph has no nodes")
        if not nx.is_connected(simple):
            parts = sorted(nx.connected_components(simple), key=len, reverse=True)
            sample = ", ".join(
                f"{len(p)} node(s) with {sorted(p, key=_natural_key)[0]!r}" for p in parts[:4])
            raise GraphError(
                f"{name}: the graph is not connected ({len(parts)} parts: {sample}"
                f"{', ...' if len(parts) > 4 else ''}); hosts in different parts could never "
                "reach each other: fix the file or extract one component")
        order = sorted(simple.nodes, key=_natural_key)
        if len(order) >= 0x10000:
            raise GraphError(f"{name}: {len(order)} nodes is too many (at most 65535)")
        switch = {node: f"s{i}" for i, node in enumerate(order, start=1)}
        self.node_of: dict[str, Any] = {sw: node for node, sw in switch.items()}
        self.labels: dict[str, str] = {switch[n]: _label(simple.nodes[n], n) for n in order}
        for i, node in enumerate(order, start=1):
            self.fabric_switch(switch[node], TIER_PLAIN, 0, i)
        for node in order:
            for _ in range(per):
                self.fabric_host(switch[node])
        index = {node: i for i, node in enumerate(order)}
        pairs = sorted(tuple(sorted((index[u], index[v]))) for u, v in simple.edges)
        for a, b in pairs:
            self.link(switch[order[a]], switch[order[b]])

    def rstp_roots(self) -> list[str]:
        """The graph's centre (lowest eccentricity, then lowest number) as root bridge,
        so the spanning tree is as shallow as the graph allows; the next one as backup."""
        graph = self.switch_graph()
        ecc = nx.eccentricity(graph)
        ranked = sorted(graph.nodes, key=lambda s: (ecc[s], _natural_key(s)))
        return ranked[:2]

    def describe(self) -> str:
        extra = []
        if self.merged:
            extra.append(f"{self.merged} parallel edges merged")
        if self.self_loops:
            extra.append(f"{self.self_loops} self-loops dropped")
        return (f"graph {self.name}: {len(self.tiers)} switches, {len(self.host_links)} hosts, "
                f"{len(self.switch_links())} switch links"
                + (f" ({', '.join(extra)})" if extra else ""))


def graph_topo(path: str | Path, hosts_per_switch: int = 1) -> GraphTopo:
    """Read a GraphML or node-link JSON file and return it as a Mininet topology
    (a `GraphTopo`, i.e. a `mininet.topo.Topo`): switches ``s1``..``sN``,
    `hosts_per_switch` hosts each. Raises `GraphError` for an unreadable, empty or
    disconnected graph."""
    path = Path(path)
    graph = load_graph(path)
    name = str(graph.graph.get("Network") or graph.graph.get("name") or path.stem)
    return GraphTopo(graph=graph, hosts_per_switch=hosts_per_switch, name=name)


# -- RSTP timers derived from the graph ----------------------------------------------------

class RstpTimers(NamedTuple):
    """Bridge timers for OVS's RSTP (seconds), and the depth they were derived from."""

    max_age: int
    forward_delay: int
    hello: int
    depth: int  # hops from the root to the farthest bridge, worst single link cut included

    def describe(self) -> str:
        return (f"max age {self.max_age} s, forward delay {self.forward_delay} s, "
                f"hello {self.hello} s (tree depth up to {self.depth} hops)")


def tree_depth(graph: nx.Graph, root: str) -> int:
    """Hops from `root` to the farthest bridge, in the graph as it is and after any one
    link cut that leaves it connected (the spanning tree then re-forms deeper)."""
    if graph.number_of_nodes() <= 1:
        return 0
    depth = int(nx.eccentricity(graph, v=root))
    for u, v in list(graph.edges):
        graph.remove_edge(u, v)
        try:
            if nx.is_connected(graph):
                depth = max(depth, int(nx.eccentricity(graph, v=root)))
        finally:
            graph.add_edge(u, v)
    return depth


def rstp_timers(graph: nx.Graph, root: str) -> RstpTimers:
    """Max Age and Forward Delay that let RSTP span `graph` from `root`.

    A BPDU's Message Age grows by one per bridge and a bridge discards information
    whose age reaches Max Age, so a fixed Max Age of 6 leaves bridges 7 hops from the
    root without a root port forever: the tree never converges. Max Age = depth +
    margin (at least 6, RSTP's minimum); Forward Delay the least 802.1D and OVS
    accept with it (2 x (Forward Delay - 1) >= Max Age, at least 4). Raises
    `GraphError` when the graph is deeper than RSTP's largest Max Age (40) allows."""
    depth = tree_depth(nx.Graph(graph), root)
    max_age = max(RSTP_MIN_MAX_AGE, depth + RSTP_MARGIN)
    if max_age > RSTP_MAX_MAX_AGE:
        raise GraphError(
            f"RSTP cannot span this network: {depth} hops from the best root bridge "
            f"({root}) need a Max Age of {max_age}, more than RSTP's {RSTP_MAX_MAX_AGE}; "
            "run it under a controller, or without STP on a loop-free graph")
    forward_delay = max(RSTP_MIN_FORWARD_DELAY, math.ceil(max_age / 2) + 1)
    return RstpTimers(max_age, min(forward_delay, RSTP_MAX_FORWARD_DELAY), RSTP_HELLO, depth)
