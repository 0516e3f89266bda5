"""Mininet topologies for Loom's fabric: linear, tree, leaf-spine, fat-tree, three-tier.

Usable three ways:

- ``topologies.fabric`` (the runner: private OVS, Loom, REST bindings, cleanup);
- the Mininet Python API: ``Mininet(topo=FatTreeTopo(4), ...)``;
- ``mn --custom topologies/mininet_topos.py --topo fattree,4`` (the module-level
  `topos` dict). Beware: ``mn`` runs ``mn -c`` when anything fails, which deletes
  every OVS bridge and kills every controller on the machine, and it talks to the
  system OVS. Loom's own tooling never runs it; see docs/FABRIC.md.

Other people's topologies come in too: `custom_topo` loads a ``mn --custom`` file's
`topos` and replays a plain Mininet Topo as an `AdoptedTopo` (the runner needs the
switch set, host numbers and declared ports that FabricTopo keeps), and
`topologies.graphtopo` turns GraphML / node-link JSON graphs into a `FabricTopo`.

Naming (stable, so tests can refer to nodes by name):

============  ==========================================  ==============================
topology      switches                                    hosts
============  ==========================================  ==============================
linear        ``s1``..``sN`` (a chain)                    ``h1``..: hosts_per_switch each
tree          ``s1``..``sN``, depth-first like Mininet's  ``h1``..: fanout per leaf switch
leafspine     ``spine1``.., ``leaf1``..                   ``h1``..: hosts_per_leaf each
fattree       ``c1``.. core, ``a<pod>_<i>`` aggregation,  ``h1``..: k/2 per edge switch
              ``e<pod>_<i>`` edge
threetier     ``c1``.. core, ``a<pair>_1``/``a<pair>_2``,  ``h1``..: servers, dual-homed
              ``t<pair>_<i>`` top-of-rack
============  ==========================================  ==============================

Datapath ids are explicit (``dpid=``, 16 hex digits) and derived from the name:
``00000000 TT GG IIII`` with TT the tier (00 linear/tree, 01 core/spine,
02 aggregation, 03 edge/leaf/top-of-rack), GG the pod or aggregation pair (00 if
none) and IIII the index within it: ``c3`` = 0000000001000003, ``a2_1`` =
0000000002020001, ``e1_2`` = 0000000003010002, ``leaf4`` = 0000000003000004,
``s5`` = 0000000000000005.

Hosts are numbered ``h1``, ``h2``, ... in order of their switch; host ``hN``'s first
interface ``hN-eth0`` has MAC ``02:00:00:00:HH:LL`` and IP ``10.0.HH.LL/16``
(HHLL = N as 16 bits). Three-tier servers are dual-homed: ``hN-eth0`` goes to the
first top-of-rack switch of the rack and ``hN-eth1`` to the second. A Linux host
cannot have the same MAC on two active interfaces without bonding (no bonding
module here, and the fabric would see one MAC on two edge ports), so ``hN-eth1`` is
a second, independent address on a second plane: MAC ``02:00:00:01:HH:LL``, IP
``10.1.HH.LL/16``. Traffic to ``10.0/16`` uses eth0, traffic to ``10.1/16`` eth1;
each is its own port for Loom (`topologies.fabric` binds both).
"""

from __future__ import annotations

import re
import runpy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
from mininet.topo import Topo

TIER_PLAIN = 0
TIER_CORE = 1
TIER_AGG = 2
TIER_EDGE = 3

PRIMARY_NET = "10.0.0.0/16"
SECONDARY_NET = "10.1.0.0/16"


def make_dpid(tier: int, group: int, index: int) -> str:
    """``00000000 TT GG IIII`` as 16 hex digits."""
    if not (0 <= tier < 0x100 and 0 <= group < 0x100 and 0 < index < 0x10000):
        raise ValueError(f"dpid fields out of range: tier={tier} group={group} index={index}")
    return f"{(tier << 24) | (group << 16) | index:016x}"


def host_mac(n: int, iface: int = 0) -> str:
    """MAC of host ``h<n>``'s interface ``eth<iface>``: ``02:00:00:<iface>:HH:LL``."""
    if not 0 < n < 0x10000:
        raise ValueError(f"host number {n} out of range")
    return f"02:00:00:{iface:02x}:{n >> 8:02x}:{n & 0xFF:02x}"


def host_ip(n: int, iface: int = 0, prefix: str = "10") -> str:
    """Standalone address of ``h<n>``'s ``eth<iface>``: ``10.<iface>.HH.LL`` (no length)."""
    if not 0 < n < 0xFFFF:
        raise ValueError(f"host number {n} out of range")
    return f"{prefix}.{iface}.{n >> 8}.{n & 0xFF}"


class FabricTopo(Topo):
    """Base class: named switches with explicit dpids, numbered hosts with stable MACs.

    Besides Mininet's graph it keeps `tiers` (switch -> tier), `host_links`
    (host -> [(interface, switch)]) and `declared` (every link as
    ``(node1, port1, node2, port2)``, Mininet port numbers, i.e. ``<node>-eth<port>``).
    """

    kind = "fabric"

    def __init__(self, *args: Any, **params: Any) -> None:
        self.tiers: dict[str, int] = {}
        self.host_links: dict[str, list[tuple[str, str]]] = {}
        self.declared: list[tuple[str, int, str, int]] = []
        self._next_port: dict[str, int] = {}
        self._hosts = 0
        self.host_numbers: dict[str, int] = {}  # host -> N of its MAC/IP (hN -> N)
        self.args = args
        self.kwargs = dict(params)
        super().__init__(*args, **params)

    # -- builders -----------------------------------------------------------------
    def fabric_switch(self, name: str, tier: int, group: int, index: int) -> str:
        dpid = make_dpid(tier, group, index)
        if len(name) + len("-eth99") > 15:
            raise ValueError(f"switch name {name!r} too long for interface names")
        self.tiers[name] = tier
        self._next_port[name] = 1  # switch ports from 1 (port 0 is not an OpenFlow port)
        return str(self.addSwitch(name, dpid=dpid))

    def fabric_host(self, *switches: str) -> str:
        """A host linked to each of `switches` (eth0 to the first, eth1 to the second...)."""
        self._hosts += 1
        n = self._hosts
        name = f"h{n}"
        self.addHost(name, ip=f"{host_ip(n)}/16", mac=host_mac(n))
        self.host_numbers[name] = n
        self._next_port[name] = 0
        self.host_links[name] = []
        for i, sw in enumerate(switches):
            opts: dict[str, Any] = {}
            if i > 0:
                opts = {"addr1": host_mac(n, i), "params1": {"ip": f"{host_ip(n, i)}/16"}}
            self.link(name, sw, **opts)
            self.host_links[name].append((f"{name}-eth{i}", sw))
        return name

    def link(self, a: str, b: str, **opts: Any) -> None:
        pa, pb = self._next_port[a], self._next_port[b]
        self._next_port[a] += 1
        self._next_port[b] += 1
        self.addLink(a, b, port1=pa, port2=pb, **opts)
        self.declared.append((a, pa, b, pb))

    # -- queries ------------------------------------------------------------------
    def dpid(self, switch: str) -> str:
        return str(self.nodeInfo(switch)["dpid"])

    def host_number(self, host: str) -> int:
        """The N in host `host`'s MAC ``02:00:00:00:HH:LL`` and Loom address (hN -> N)."""
        return self.host_numbers[host]

    def switch_graph(self) -> nx.Graph:
        """The switches and the links between them (parallel links as one edge)."""
        graph = nx.Graph()
        graph.add_nodes_from(self.tiers)
        graph.add_edges_from((a, b) for a, _, b, _ in self.switch_links())
        return graph

    def rstp_roots(self) -> list[str]:
        """Switches to prefer as RSTP root bridge, best first: the top tier (cores,
        spines) by dpid, or every switch by dpid where all share one tier."""
        top = min((t for t in self.tiers.values() if t > 0), default=0)
        return sorted((s for s, t in self.tiers.items() if t == top), key=self.dpid)

    def switch_links(self) -> list[tuple[str, str, str, str]]:
        """Inter-switch links as ``(sw1, sw1-ethN, sw2, sw2-ethM)``, as declared."""
        return [
            (a, f"{a}-eth{pa}", b, f"{b}-eth{pb}")
            for a, pa, b, pb in self.declared
            if a in self.tiers and b in self.tiers
        ]

    @property
    def has_loops(self) -> bool:
        """Whether the switch graph has a cycle (needs STP when run standalone)."""
        return len(self.switch_links()) > len(self.tiers) - 1

    def describe(self) -> str:
        params = [*map(str, self.args), *(f"{k}={v}" for k, v in self.kwargs.items())]
        return (
            f"{self.kind}({', '.join(params)}): {len(self.tiers)} switches, "
            f"{len(self.host_links)} hosts, {len(self.declared)} links"
        )


class LinearTopo(FabricTopo):
    """`n` switches in a chain ``s1 - s2 - ... - sn``, `hosts_per_switch` hosts on each."""

    kind = "linear"

    def build(self, n: int = 3, hosts_per_switch: int = 1) -> None:  # type: ignore[override]
        n, k = int(n), int(hosts_per_switch)
        if n < 1 or k < 0:
            raise ValueError("linear: n >= 1, hosts_per_switch >= 0")
        switches = [self.fabric_switch(f"s{i}", TIER_PLAIN, 0, i) for i in range(1, n + 1)]
        for sw in switches:
            for _ in range(k):
                self.fabric_host(sw)
        for a, b in zip(switches, switches[1:], strict=False):
            self.link(a, b)


class TreeTopo(FabricTopo):
    """A tree of switches `depth` levels deep, `fanout` children per switch and `fanout`
    hosts per leaf switch; numbered depth-first like Mininet's TreeTopo."""

    kind = "tree"

    def build(self, depth: int = 2, fanout: int = 2) -> None:  # type: ignore[override]
        depth, fanout = int(depth), int(fanout)
        if depth < 1 or fanout < 1:
            raise ValueError("tree: depth >= 1, fanout >= 1")
        self._switch_no = 0
        self._add_tree(depth, fanout)

    def _add_tree(self, depth: int, fanout: int) -> str:
        self._switch_no += 1
        sw = self.fabric_switch(f"s{self._switch_no}", TIER_PLAIN, 0, self._switch_no)
        if depth == 1:
            for _ in range(fanout):
                self.fabric_host(sw)
        else:
            for _ in range(fanout):
                child = self._add_tree(depth - 1, fanout)
                self.link(sw, child)
        return sw


class LeafSpineTopo(FabricTopo):
    """Every leaf linked to every spine; `hosts_per_leaf` hosts on each leaf."""

    kind = "leafspine"

    def build(  # type: ignore[override]
        self, spines: int = 2, leaves: int = 3, hosts_per_leaf: int = 2
    ) -> None:
        spines, leaves, per = int(spines), int(leaves), int(hosts_per_leaf)
        if spines < 1 or leaves < 1 or per < 0:
            raise ValueError("leafspine: spines >= 1, leaves >= 1, hosts_per_leaf >= 0")
        sp = [self.fabric_switch(f"spine{i}", TIER_CORE, 0, i) for i in range(1, spines + 1)]
        lf = [self.fabric_switch(f"leaf{i}", TIER_EDGE, 0, i) for i in range(1, leaves + 1)]
        for leaf in lf:
            for _ in range(per):
                self.fabric_host(leaf)
        for leaf in lf:
            for spine in sp:
                self.link(leaf, spine)


class FatTreeTopo(FabricTopo):
    """k-ary fat-tree (Al-Fares et al.): k pods of k/2 aggregation and k/2 edge
    switches, (k/2)^2 core switches, k/2 hosts per edge switch.

    Aggregation switch ``a<p>_<i>`` links to cores ``c((i-1)k/2+1)``..``c(ik/2)``;
    every edge switch of a pod links to every aggregation switch of the pod.
    """

    kind = "fattree"

    def build(self, k: int = 4) -> None:  # type: ignore[override]
        k = int(k)
        if k < 2 or k % 2:
            raise ValueError("fattree: k must be even and >= 2")
        half = k // 2
        cores = [self.fabric_switch(f"c{i}", TIER_CORE, 0, i) for i in range(1, half * half + 1)]
        pods = []
        for p in range(1, k + 1):
            aggs = [self.fabric_switch(f"a{p}_{i}", TIER_AGG, p, i) for i in range(1, half + 1)]
            edges = [self.fabric_switch(f"e{p}_{i}", TIER_EDGE, p, i) for i in range(1, half + 1)]
            pods.append((aggs, edges))
        for _aggs, edges in pods:
            for edge in edges:
                for _ in range(half):
                    self.fabric_host(edge)
        for aggs, edges in pods:
            for edge in edges:
                for agg in aggs:
                    self.link(edge, agg)
            for i, agg in enumerate(aggs):
                for core in cores[i * half : (i + 1) * half]:
                    self.link(agg, core)


class ThreeTierTopo(FabricTopo):
    """Classic core / aggregation / access with dual-homed servers.

    `cores` core switches ``c1``..; `agg_pairs` aggregation pairs ``a<p>_1``/``a<p>_2``,
    each aggregation switch linked to every core; under each pair `tors_per_pair`
    top-of-rack switches ``t<p>_<i>`` (an even number: consecutive ToRs form a rack),
    each linked to both switches of its pair; `servers_per_rack` servers per rack,
    each with ``eth0`` on the rack's first ToR and ``eth1`` on its second (see the
    module docstring for their addresses).
    """

    kind = "threetier"

    def build(  # type: ignore[override]
        self, cores: int = 2, agg_pairs: int = 2, tors_per_pair: int = 2, servers_per_rack: int = 2
    ) -> None:
        cores, pairs, tors, servers = (
            int(cores), int(agg_pairs), int(tors_per_pair), int(servers_per_rack)
        )
        if cores < 1 or pairs < 1 or tors < 2 or tors % 2 or servers < 0:
            raise ValueError(
                "threetier: cores >= 1, agg_pairs >= 1, tors_per_pair even and >= 2, "
                "servers_per_rack >= 0"
            )
        core_sw = [self.fabric_switch(f"c{i}", TIER_CORE, 0, i) for i in range(1, cores + 1)]
        layout = []
        for p in range(1, pairs + 1):
            aggs = [self.fabric_switch(f"a{p}_{i}", TIER_AGG, p, i) for i in (1, 2)]
            tor_sw = [self.fabric_switch(f"t{p}_{i}", TIER_EDGE, p, i) for i in range(1, tors + 1)]
            layout.append((aggs, tor_sw))
        for _aggs, tor_sw in layout:
            for r in range(0, len(tor_sw), 2):
                for _ in range(servers):
                    self.fabric_host(tor_sw[r], tor_sw[r + 1])
        for aggs, tor_sw in layout:
            for tor in tor_sw:
                for agg in aggs:
                    self.link(tor, agg)
            for agg in aggs:
                for core in core_sw:
                    self.link(agg, core)


class AdoptedTopo(FabricTopo):
    """Any Mininet `Topo` (e.g. from a ``mn --custom`` file) in FabricTopo's shape.

    The runner needs what FabricTopo keeps (switch set, host numbers, declared ports,
    16-digit dpids); a plain Topo has none of it. Nodes, port numbers and link order
    are replayed as the source declared them. Switches: ``dpid`` as given, else the
    first number in the name as Mininet derives it (``s12`` -> 12), else (no number,
    or taken) the lowest free one. Hosts are numbered 1.. in declaration order and
    keep a given ``ip``/``mac`` (else 10.0.HH.LL/16, 02:00:00:00:HH:LL). Link options
    the runner cannot honour (``cls``, TCLink shaping such as ``bw``/``delay``, custom
    interface names) are dropped and listed in `ignored`.
    """

    kind = "custom"
    LINK_KEEP = ("addr1", "addr2", "params1", "params2")

    def build(self, source: Topo, name: str = "custom") -> None:  # type: ignore[override]
        self.name = name
        self.ignored: list[str] = []
        explicit: dict[str, int] = {}
        for sw in source.nodes(sort=False):
            if source.isSwitch(sw) and source.nodeInfo(sw).get("dpid"):
                explicit[sw] = int(str(source.nodeInfo(sw)["dpid"]).replace(":", ""), 16)
        used = set(explicit.values())
        for sw in source.nodes(sort=False):
            if not source.isSwitch(sw):
                continue
            if len(sw) + len("-eth99") > 15:
                raise ValueError(f"switch name {sw!r} too long for interface names")
            dpid = explicit.get(sw)
            if dpid is None:
                nums = re.findall(r"\d+", sw)
                dpid = int(nums[0]) if nums and int(nums[0]) not in used else None
                while dpid is None or dpid in used or dpid == 0:
                    dpid = (dpid or 0) + 1
                used.add(dpid)
            self.tiers[sw] = TIER_PLAIN
            self.addSwitch(sw, dpid=f"{dpid:016x}")
        for host in source.nodes(sort=False):
            if source.isSwitch(host):
                continue
            self._hosts += 1
            n = self._hosts
            opts = {k: v for k, v in source.nodeInfo(host).items() if k != "cls"}
            opts.setdefault("ip", f"{host_ip(n)}/16")
            opts.setdefault("mac", host_mac(n))
            self.addHost(host, **opts)
            self.host_numbers[host] = n
            self.host_links[host] = []
        for _a, _b, info in source.links(sort=False, withInfo=True):
            a, b = info["node1"], info["node2"]
            pa, pb = int(info["port1"]), int(info["port2"])
            opts = {k: v for k, v in info.items() if k in self.LINK_KEEP}
            dropped = sorted(set(info) - set(self.LINK_KEEP)
                             - {"node1", "node2", "port1", "port2"})
            if dropped:
                self.ignored.append(f"{a}-{b}: {', '.join(dropped)}")
            self.addLink(a, b, port1=pa, port2=pb, **opts)
            self.declared.append((a, pa, b, pb))
            for node, port, peer in ((a, pa, b), (b, pb, a)):
                if node in self.host_links and peer in self.tiers:
                    self.host_links[node].append((f"{node}-eth{port}", peer))
        for node in (*self.tiers, *self.host_links):
            ports = [pa for a, pa, _, _ in self.declared if a == node]
            ports += [pb for _, _, b, pb in self.declared if b == node]
            self._next_port[node] = max(ports, default=0) + 1

    def describe(self) -> str:
        return (f"{self.name} (custom): {len(self.tiers)} switches, {len(self.host_links)} "
                f"hosts, {len(self.declared)} links"
                + (f"; ignored link options: {'; '.join(self.ignored)}" if self.ignored else ""))


TOPOLOGIES: dict[str, type[FabricTopo]] = {
    "linear": LinearTopo,
    "tree": TreeTopo,
    "leafspine": LeafSpineTopo,
    "fattree": FatTreeTopo,
    "threetier": ThreeTierTopo,
}

# `mn --custom topologies/mininet_topos.py --topo NAME,ARG,...`
topos = dict(TOPOLOGIES)


def make_topo(name: str, *args: Any, **kwargs: Any) -> FabricTopo:
    """Build a topology by name, e.g. ``make_topo("fattree", 4)``."""
    try:
        cls = TOPOLOGIES[name]
    except KeyError:
        raise ValueError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}") from None
    return cls(*args, **kwargs)


def load_custom(files: Sequence[str | Path]) -> dict[str, Callable[..., Topo]]:
    """The `topos` dicts of ``mn --custom`` files, merged in order (later files win).

    Each file is run as Python, as ``mn --custom`` does: only give it files you trust.
    This module itself is recognised and not re-run, so its classes stay FabricTopos."""
    found: dict[str, Callable[..., Topo]] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"--custom {path}: no such file")
        if path.resolve() == Path(__file__).resolve():
            found.update(TOPOLOGIES)
            continue
        namespace = runpy.run_path(str(path), run_name="__mininet_custom__")
        topos = namespace.get("topos")
        if not isinstance(topos, dict):
            raise ValueError(f"--custom {path}: defines no `topos` dict (name -> Topo class)")
        found.update(topos)
    return found


def custom_topo(files: Sequence[str | Path], name: str, *args: Any, **kwargs: Any
                ) -> FabricTopo:
    """``mn --custom FILE --topo NAME,ARGS`` for the runner: the topology `name` of the
    files' `topos`, built with `args`, as a FabricTopo (`AdoptedTopo` unless it is one)."""
    topos = load_custom(files)
    if name not in topos:
        raise ValueError(f"topology {name!r} is not in the --custom file(s); they define: "
                         f"{', '.join(sorted(topos)) or 'nothing'}")
    built = topos[name](*args, **kwargs)
    if isinstance(built, FabricTopo):
        return built
    if not isinstance(built, Topo):
        raise ValueError(f"topos[{name!r}] returned {type(built).__name__}, not a Mininet Topo")
    return AdoptedTopo(source=built, name=name)
