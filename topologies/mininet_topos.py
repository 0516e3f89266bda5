"""Mininet topologies for Loom's fabric: linear, tree, leaf-spine, fat-tree, three-tier.

Usable three ways:

- ``topologies.fabric`` (the runner: private OVS, Loom, REST bindings, cleanup);
- the Mininet Python API: ``Mininet(topo=FatTreeTopo(4), ...)``;
- ``mn --custom topologies/mininet_topos.py --topo fattree,4`` (the module-level
  `topos` dict). Beware: ``mn`` runs ``mn -c`` when anything fails, which deletes
  every OVS bridge and kills every controller on the machine, and it talks to the
  system OVS. Loom's own tooling never runs it; see docs/FABRIC.md.

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

from typing import Any

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
