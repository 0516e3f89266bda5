"""The topology document -> a standalone SVG picture, and an HTML page around it.

Pure and deterministic: no I/O, no clock, no randomness; the same document gives
the same bytes. No external assets: fonts are the browser's sans-serif, styles are
inline, and the page's only script refreshes the picture from this controller.

Layout, top to bottom:
- a title line and a legend (networks by colour, link kinds, states);
- tunnels, drawn as arcs between the chassis they join, above the chassis row;
- chassis, each above the switch it runs (an overlay hypervisor is framed with its
  switch and guests);
- fabric switches in tiers: the tier of a switch is its BFS distance (networkx)
  from the edge switches, those with ports bound to them (or, in a fabric with no
  port bound yet, those of least degree), so spines sit above leaves and a tree's
  core above its aggregation; a chain or ring stays one row;
- the edge row, with each switch's ports hanging below it, coloured by network;
- ports declared but bound to no switch, in a row of their own.
Down links are dashed red; disconnected switches and chassis are greyed with a
dashed red border. Every node is a `<g data-node="<id>">`, every link a
`<path data-link="<src>|<dst>|<kind>">`, each with a `<title>` tooltip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional
from xml.sax.saxutils import escape

import networkx as nx

FONT = "'DejaVu Sans', Verdana, Arial, sans-serif"
MARGIN = 24
SWITCH_MIN_W, SWITCH_H = 150.0, 46.0
CHASSIS_MIN_W, CHASSIS_H = 150.0, 44.0
PILL_W, PILL_H, PILL_GAP = 176.0, 40.0, 8.0
PILLS_PER_COLUMN = 6
COL_GAP = 44.0
TIER_GAP = 120.0
CHASSIS_GAP = 56.0  # chassis row -> the row below it
PORTS_GAP = 46.0  # switch -> its ports
MIN_WIDTH = 960.0
STUB = 24.0  # the horizontal stub from a column's trunk to a port

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#17becf", "#bcbd22")
NO_NETWORK = "#9ca3af"
DOWN = "#dc2626"
INK = "#1f2937"
MUTED = "#64748b"
LINK = "#64748b"
TUNNEL = "#2563eb"

STYLE = """
.lt-title{font-size:18px;font-weight:bold;fill:#111827}
.lt-sub{font-size:12px;fill:#475569}
.lt-legend{font-size:12px;fill:#334155}
.lt-name{font-size:13px;font-weight:bold}
.lt-small{font-size:11px}
.lt-tiny{font-size:10px;fill:#475569;paint-order:stroke;stroke:#fff;stroke-width:3px}
.lt-link{fill:none;stroke-width:1.6}
.lt-down{stroke:#dc2626;stroke-dasharray:7 4;stroke-width:2}
.lt-hosts{stroke:#94a3b8;stroke-dasharray:2 3;stroke-width:1.4}
.lt-tunnel{stroke:#2563eb;stroke-width:2}
.lt-tunnel.lt-down{stroke:#dc2626}
.lt-label{font-size:11px;font-weight:bold;paint-order:stroke;stroke:#fff;stroke-width:4px}
"""


def natural(text: str) -> tuple[Any, ...]:
    """'s2' < 's10': digits compare as numbers."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text or ""))


def text_width(text: str, size: float, bold: bool = False) -> float:
    return len(text) * size * (0.68 if bold else 0.62)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('h') else 's'}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def fmt(v: float) -> str:
    """Coordinates with at most one decimal, and no '-0'."""
    s = f"{round(v, 1):.1f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def attr(value: Any) -> str:
    return escape(str(value), {'"': "&quot;"})


@dataclass
class Box:
    x: float  # centre
    y: float  # top
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class Layout:
    width: float
    height: float
    boxes: dict[str, Box]
    tiers: dict[str, int]
    ports_of: dict[str, list[str]]  # switch id -> port ids hanging below it
    unbound: list[str]
    frames: list[tuple[str, Box]]  # (chassis id, frame) of an overlay hypervisor
    tunnel_top: float  # the y arcs may rise to
    legend_h: float
    colours: dict[Optional[str], str]
    mixed_tunnels: bool  # more than one tunnel type: label each arc


# ---------------------------------------------------------------------------- layout
def _network_colours(ports: Sequence[Mapping[str, Any]]) -> dict[Optional[str], str]:
    nets = sorted({(p.get("project_id") or "", p.get("network_name") or "",
                    p.get("network_id")) for p in ports if p.get("network_id")})
    colours: dict[Optional[str], str] = {None: NO_NETWORK}
    for i, (_, _, net_id) in enumerate(nets):
        colours[net_id] = PALETTE[i % len(PALETTE)]
    return colours


def _switch_label(node: Mapping[str, Any]) -> tuple[str, str]:
    dpid = int(node.get("datapath_id") or "0", 16)
    nports = len(node.get("ports") or ())
    name = clip(str(node.get("name") or f"{dpid:016x}"), 24)
    return name, f"dpid {dpid:#x} \u00b7 {plural(nports, 'port')}"


def _chassis_label(node: Mapping[str, Any]) -> tuple[str, str]:
    second = node.get("encap_ip") or "no encap ip"
    if not node.get("connected"):
        second = f"{second} \u00b7 disconnected"
    return clip(str(node.get("name") or node["id"].split(":", 1)[1]), 24), str(second)


def _port_label(node: Mapping[str, Any]) -> tuple[str, str]:
    name = node.get("name") or node["id"].split(":", 1)[1][:8]
    ips = node.get("ips") or []
    second = ", ".join(ips) if ips else (node.get("mac") or "")
    return clip(str(name), 22), clip(str(second), 30)


def _label_width(lines: tuple[str, str], minimum: float) -> float:
    return max(minimum, text_width(lines[0], 13, True) + 24, text_width(lines[1], 11) + 24)


def _tiers(switches: list[str], fabric: nx.Graph, edge_hint: set[str]) -> dict[str, int]:
    tiers: dict[str, int] = {}
    for comp in sorted((sorted(c) for c in nx.connected_components(fabric)), key=lambda c: c[0]):
        sub = fabric.subgraph(comp)
        if len(comp) == 1 or max(d for _, d in sub.degree()) <= 2:
            tiers.update(dict.fromkeys(comp, 0))  # a single switch, a chain or a ring: one row
            continue
        edge = [s for s in comp if s in edge_hint]
        if not edge:
            least = min(d for _, d in sub.degree())
            edge = [s for s, d in sub.degree() if d == least]
        dist = nx.multi_source_dijkstra_path_length(sub, set(edge))
        tiers.update({s: int(dist.get(s, 0)) for s in comp})
    for s in switches:
        tiers.setdefault(s, 0)
    return tiers


def layout(doc: Mapping[str, Any]) -> Layout:
    nodes = {n["id"]: n for n in doc.get("nodes", [])}
    links = doc.get("links", [])
    switches = [i for i, n in nodes.items() if n["kind"] == "switch"]
    chassis = [i for i, n in nodes.items() if n["kind"] == "chassis"]
    ports = [i for i, n in nodes.items() if n["kind"] == "port"]
    colours = _network_colours([nodes[p] for p in ports])

    ports_of: dict[str, list[str]] = {s: [] for s in switches}
    hosted_by: dict[str, str] = {}
    runs: dict[str, list[str]] = {c: [] for c in chassis}
    fabric = nx.Graph()
    fabric.add_nodes_from(switches)
    for link in links:
        src, dst = link["src"]["node"], link["dst"]["node"]
        if src not in nodes or dst not in nodes:
            continue
        if link["kind"] == "host" and src in ports_of:
            if dst not in ports_of[src]:
                ports_of[src].append(dst)
        elif link["kind"] == "hosts" and src in runs:
            runs[src].append(dst)
            hosted_by.setdefault(dst, src)
        elif link["kind"] == "fabric" and src != dst:
            fabric.add_edge(src, dst)
    bound = {p for ps in ports_of.values() for p in ps}
    def port_key(p: str) -> tuple[Any, ...]:
        return (natural(nodes[p].get("name") or ""), p)

    unbound = sorted((p for p in ports if p not in bound), key=port_key)
    for s in ports_of:
        ports_of[s].sort(key=port_key)

    tiers = _tiers(switches, fabric, {s for s, ps in ports_of.items() if ps})
    top_tier = max(tiers.values(), default=0)

    def sw_key(s: str) -> tuple[Any, ...]:
        ch = hosted_by.get(s)
        return (natural(nodes[ch].get("name", "")) if ch else (), natural(nodes[s]["name"]), s)

    comp_rank: dict[str, int] = {}
    comps = sorted((sorted(c, key=sw_key) for c in nx.connected_components(fabric)),
                   key=lambda c: sw_key(c[0]))
    for i, comp in enumerate(comps):
        comp_rank.update(dict.fromkeys(comp, i))

    sizes = {s: _label_width(_switch_label(nodes[s]), SWITCH_MIN_W) for s in switches}
    ch_sizes = {c: _label_width(_chassis_label(nodes[c]), CHASSIS_MIN_W) for c in chassis}

    # legend height is needed before any y: count its wrapped lines
    legend_h = _legend_height(doc, colours, nodes)
    y = MARGIN + 56 + legend_h

    # ---- x of the edge row, column by column
    boxes: dict[str, Box] = {}
    edge_row = sorted((s for s in switches if tiers[s] == 0),
                      key=lambda s: (comp_rank.get(s, 0), sw_key(s)))
    x = float(MARGIN)
    col_w: dict[str, float] = {}
    for s in edge_row:
        n = len(ports_of[s])
        cols = math.ceil(n / PILLS_PER_COLUMN) if n else 0
        block = cols * PILL_W + max(cols - 1, 0) * (16 + STUB) + (2 * STUB if cols else 0)
        ch = hosted_by.get(s)
        only = ch is not None and len(runs[ch]) == 1
        w = max(sizes[s], block, ch_sizes[ch] if only and ch else 0)
        col_w[s] = w
        boxes[s] = Box(x + w / 2, 0, sizes[s], SWITCH_H)
        x += w + COL_GAP
    orphan_chassis = sorted((c for c in chassis if not runs[c]),
                            key=lambda c: natural(nodes[c].get("name", "")))
    for c in orphan_chassis:
        boxes[c] = Box(x + ch_sizes[c] / 2, 0, ch_sizes[c], CHASSIS_H)
        x += ch_sizes[c] + COL_GAP
    row_right = max(x - COL_GAP, MARGIN)
    span_left, span_right = MARGIN, row_right

    # ---- upper tiers: ordered by the mean x of their neighbours below, spread evenly
    for tier in range(1, top_tier + 1):
        members = [s for s in switches if tiers[s] == tier]

        def bary(s: str, tier: int = tier) -> tuple[Any, ...]:
            below = [boxes[n].cx for n in fabric.neighbors(s)
                     if n in boxes and tiers.get(n, 0) < tier]
            return (sum(below) / len(below) if below else 0.0, sw_key(s))

        members.sort(key=bary)
        widest = max(sizes[s] for s in members)
        step = max((span_right - span_left) / len(members), widest + COL_GAP)
        total = step * len(members)
        start = (span_left + span_right) / 2 - total / 2
        if start < MARGIN:
            start = MARGIN
        for i, s in enumerate(members):
            boxes[s] = Box(start + step * (i + 0.5), 0, sizes[s], SWITCH_H)
        span_right = max(span_right, start + total - COL_GAP)

    # ---- chassis above what they run; pushed apart where they would overlap
    placed = []
    for c in chassis:
        if not runs[c]:
            continue
        xs = [boxes[s].cx for s in runs[c] if s in boxes]
        placed.append((sum(xs) / len(xs) if xs else MARGIN, c))
    placed.sort(key=lambda t: (t[0], natural(nodes[t[1]].get("name", ""))))
    last_right = -math.inf
    for cx, c in placed:
        w = ch_sizes[c]
        cx = max(cx, last_right + COL_GAP / 2 + w / 2)
        boxes[c] = Box(cx, 0, w, CHASSIS_H)
        last_right = cx + w / 2

    # ---- y: tunnel arcs, chassis row, tiers (highest first), ports, unbound ports
    tunnel_h = 0.0
    for link in links:
        if link["kind"] == "tunnel":
            a, b = _tunnel_anchor_nodes(link, nodes, hosted_by)
            if a in boxes and b in boxes:
                # a cubic with both control points hgt above its ends peaks at 3/4 hgt
                tunnel_h = max(tunnel_h, 0.75 * _arc_height(abs(boxes[a].cx - boxes[b].cx)))
    tunnel_top = y
    if tunnel_h:
        y += tunnel_h + 16
    if chassis:
        for c in chassis:
            boxes[c].y = y
        y += CHASSIS_H + CHASSIS_GAP
    for tier in range(top_tier, -1, -1):
        row = [s for s in switches if tiers[s] == tier]
        for s in row:
            boxes[s].y = y
        if row or tier == 0:
            y += SWITCH_H + (TIER_GAP if tier else 0)
    ports_top = y + PORTS_GAP
    deepest = y
    for s in edge_row:
        block_cols = math.ceil(len(ports_of[s]) / PILLS_PER_COLUMN)
        block_w = block_cols * PILL_W + max(block_cols - 1, 0) * (16 + STUB)
        left = boxes[s].cx - block_w / 2 + STUB / 2
        for j, p in enumerate(ports_of[s]):
            col, row_i = divmod(j, PILLS_PER_COLUMN)
            px = left + col * (PILL_W + 16 + STUB) + PILL_W / 2
            py = ports_top + row_i * (PILL_H + PILL_GAP)
            boxes[p] = Box(px, py, PILL_W, PILL_H)
            deepest = max(deepest, py + PILL_H)
    # ports of a switch above the edge row (only when a fabric has no port bound)
    for s in switches:
        if tiers[s] and ports_of[s]:
            for j, p in enumerate(ports_of[s]):
                boxes[p] = Box(boxes[s].cx + (j - (len(ports_of[s]) - 1) / 2) * (PILL_W + 12),
                               boxes[s].bottom + 24, PILL_W, PILL_H)
    width = max(MIN_WIDTH, span_right + MARGIN, row_right + MARGIN,
                max((b.right + MARGIN for b in boxes.values()), default=0))

    frames: list[tuple[str, Box]] = []
    if top_tier == 0:
        for c in chassis:
            if len(runs[c]) == 1 and runs[c][0] in col_w:
                s = runs[c][0]
                bottom = max([boxes[s].bottom] + [boxes[p].bottom for p in ports_of[s]])
                frames.append((c, Box(boxes[s].cx, boxes[c].y - 10, col_w[s] + 24,
                                      bottom - boxes[c].y + 22)))
                deepest = max(deepest, bottom + 12)

    if unbound:
        y = deepest + 56  # a heading, then a grid of pills
        per_row = max(1, int((width - 2 * MARGIN + 16) // (PILL_W + 16)))
        for j, p in enumerate(unbound):
            row_i, col = divmod(j, per_row)
            boxes[p] = Box(MARGIN + col * (PILL_W + 16) + PILL_W / 2,
                           y + row_i * (PILL_H + PILL_GAP), PILL_W, PILL_H)
            deepest = max(deepest, boxes[p].bottom)
    height = deepest + MARGIN + 8
    if not nodes:
        height = y + 120
    mixed = len({link.get("tunnel_type") for link in links if link["kind"] == "tunnel"}) > 1
    return Layout(width, height, boxes, tiers, ports_of, unbound, frames, tunnel_top,
                  legend_h, colours, mixed)


def _arc_height(distance: float) -> float:
    return min(28.0 + 0.22 * distance, 170.0)


def _tunnel_anchor_nodes(link: Mapping[str, Any], nodes: Mapping[str, Any],
                         hosted_by: Mapping[str, str]) -> tuple[str, str]:
    """Tunnels are drawn between chassis (their encap IPs) when the switch has one."""
    ends = []
    for end in (link["src"]["node"], link["dst"]["node"]):
        ends.append(hosted_by.get(end, end))
    return ends[0], ends[1]


# ---------------------------------------------------------------------------- legend
def _legend_items(doc: Mapping[str, Any], colours: Mapping[Optional[str], str],
                  nodes: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(kind, text, width) of each legend entry, in order."""
    items: list[tuple[str, str, float]] = []
    nets: dict[str, tuple[str, str]] = {}
    for n in nodes.values():
        if n["kind"] == "port" and n.get("network_id"):
            nets[n["network_id"]] = (n.get("network_name") or n["network_id"][:8],
                                     n.get("project_id") or "?")
    for net_id, (name, project) in sorted(nets.items(), key=lambda t: (t[1][1], t[1][0], t[0])):
        text = f"{clip(name, 20)} (project {clip(project, 14)})"
        items.append((f"net:{net_id}", text, 22 + text_width(text, 12) + 18))
    kinds = {link["kind"] for link in doc.get("links", [])}
    types = sorted({str(link.get("tunnel_type")) for link in doc.get("links", [])
                    if link["kind"] == "tunnel"})
    for kind, text in (("fabric", "fabric link"), ("tunnel", f"tunnel ({', '.join(types)})"),
                       ("host", "port on switch"), ("hosts", "chassis runs switch")):
        if kind in kinds:
            items.append((f"link:{kind}", text, 34 + text_width(text, 12) + 18))
    if any(link.get("state") == "down" for link in doc.get("links", [])) or any(
            n["kind"] != "port" and not n.get("connected") for n in nodes.values()):
        text = "down link, disconnected switch or chassis"
        items.append(("link:down", text, 34 + text_width(text, 12) + 18))
    return items


def _legend_height(doc: Mapping[str, Any], colours: Mapping[Optional[str], str],
                   nodes: Mapping[str, Any]) -> float:
    return 22.0 * _legend_lines(doc, colours, nodes, MIN_WIDTH)[1]


def _legend_lines(doc: Mapping[str, Any], colours: Mapping[Optional[str], str],
                  nodes: Mapping[str, Any], width: float
                  ) -> tuple[list[tuple[str, str, float, float]], int]:
    """Legend entries placed on lines that fit `width`: ((kind, text, x, line), lines)."""
    out: list[tuple[str, str, float, float]] = []
    x, line = float(MARGIN), 0
    for kind, text, w in _legend_items(doc, colours, nodes):
        if x + w > width - MARGIN and x > MARGIN:
            x, line = float(MARGIN), line + 1
        out.append((kind, text, x, line))
        x += w
    return out, line + 1


# ---------------------------------------------------------------------------- drawing
def svg(doc: Mapping[str, Any]) -> str:
    """The whole picture as one standalone SVG document (UTF-8 text, no XML prolog)."""
    lay = layout(doc)
    nodes = {n["id"]: n for n in doc.get("nodes", [])}
    hosted_by = {link["dst"]["node"]: link["src"]["node"] for link in doc.get("links", [])
                 if link["kind"] == "hosts" and link["src"]["node"] in nodes}
    w, h = lay.width, lay.height
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{fmt(w)}" height="{fmt(h)}" '
        f'viewBox="0 0 {fmt(w)} {fmt(h)}" font-family="{attr(FONT)}" role="img" '
        f'aria-label="Loom topology" class="loom-topology">',
        f"<style>{STYLE}</style>",
        f'<rect x="0" y="0" width="{fmt(w)}" height="{fmt(h)}" fill="#f8fafc"/>',
    ]
    out += _header(doc, nodes, lay)
    for c, frame in lay.frames:
        out.append(f'<rect class="lt-frame" data-frame="{attr(c)}" x="{fmt(frame.left)}" '
                   f'y="{fmt(frame.y)}" width="{fmt(frame.w)}" height="{fmt(frame.h)}" rx="14" '
                   'fill="#eef2f7" stroke="#cbd5e1"/>')
    if not nodes:
        out.append(f'<text class="lt-sub" x="{fmt(w / 2)}" y="{fmt(lay.tunnel_top + 60)}" '
                   'text-anchor="middle" font-size="15">No switches, chassis or ports yet: '
                   'connect a chassis or a switch, or create ports.</text>')
    if lay.unbound:
        first = min(lay.boxes[p].y for p in lay.unbound)
        out.append(f'<text class="lt-sub" x="{MARGIN}" y="{fmt(first - 14)}" '
                   'font-weight="bold">Ports not bound to any switch</text>')

    out.append('<g class="lt-links">')
    anchors = _anchors(doc, lay, nodes, hosted_by)
    for i, link in enumerate(doc.get("links", [])):
        out += _link(link, i, lay, nodes, hosted_by, anchors)
    out.append("</g>")
    out.append('<g class="lt-nodes">')
    for nid in sorted(nodes):
        box = lay.boxes.get(nid)
        if box is not None:
            out += _node(nodes[nid], box, lay)
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _header(doc: Mapping[str, Any], nodes: Mapping[str, Any], lay: Layout) -> list[str]:
    src = doc.get("generated_from", {})
    counts = {k: sum(1 for n in nodes.values() if n["kind"] == k)
              for k in ("switch", "chassis", "port")}
    sub = (f"topology version {src.get('topology_version')} \u00b7 intent generation "
           f"{src.get('intent_generation')} \u00b7 {plural(counts['switch'], 'switch')} "
           f"\u00b7 {counts['chassis']} chassis \u00b7 {plural(counts['port'], 'port')}")
    out = [f'<text class="lt-title" x="{MARGIN}" y="{MARGIN + 12}">Loom topology</text>',
           f'<text class="lt-sub" x="{MARGIN + 172}" y="{MARGIN + 12}">{escape(sub)}</text>']
    entries, _ = _legend_lines(doc, lay.colours, nodes, MIN_WIDTH)
    for kind, text, x, line in entries:
        y = MARGIN + 40 + 22 * line
        what, _, key = kind.partition(":")
        if what == "net":
            out.append(f'<rect x="{fmt(x)}" y="{fmt(y - 11)}" width="16" height="14" rx="3" '
                       f'fill="{lay.colours.get(key, NO_NETWORK)}"/>')
            tx = x + 22
        else:
            cls = {"fabric": "lt-link", "tunnel": "lt-link lt-tunnel", "host": "lt-link",
                   "hosts": "lt-link lt-hosts", "down": "lt-link lt-down"}[key]
            stroke = ' stroke="#475569"' if key in ("fabric", "host") else ""
            out.append(f'<path class="{cls}"{stroke} d="M{fmt(x)} {fmt(y - 4)} h28"/>')
            tx = x + 34
        out.append(f'<text class="lt-legend" x="{fmt(tx)}" y="{fmt(y)}">{escape(text)}</text>')
    return out


def _anchors(doc: Mapping[str, Any], lay: Layout, nodes: Mapping[str, Any],
             hosted_by: Mapping[str, str]) -> dict[tuple[int, str], tuple[float, float]]:
    """Where each link end meets its box: spread along the edge, ordered by the far end's x."""
    wants: dict[tuple[str, str], list[tuple[float, int, str]]] = {}
    for i, link in enumerate(doc.get("links", [])):
        kind = link["kind"]
        if kind not in ("fabric", "tunnel"):
            continue
        a, b = link["src"]["node"], link["dst"]["node"]
        if kind == "tunnel":
            a, b = _tunnel_anchor_nodes(link, nodes, hosted_by)
        if a not in lay.boxes or b not in lay.boxes:
            continue
        for me, other, role in ((a, b, "src"), (b, a, "dst")):
            mb, ob = lay.boxes[me], lay.boxes[other]
            if kind == "tunnel" or abs(mb.y - ob.y) < 1:
                side = "top"
            else:
                side = "bottom" if ob.y > mb.y else "top"
            wants.setdefault((me, side), []).append((ob.cx, i, role))
    out: dict[tuple[int, str], tuple[float, float]] = {}
    for (me, side), ends in wants.items():
        box = lay.boxes[me]
        ends.sort()
        usable = box.w - 24
        for k, (_, i, role) in enumerate(ends):
            x = box.left + 12 + usable * (k + 0.5) / len(ends)
            out[(i, role)] = (x, box.y if side == "top" else box.bottom)
    return out


def _link(link: Mapping[str, Any], i: int, lay: Layout, nodes: Mapping[str, Any],
          hosted_by: Mapping[str, str],
          anchors: Mapping[tuple[int, str], tuple[float, float]]) -> list[str]:
    kind = link["kind"]
    src, dst = link["src"], link["dst"]
    a, b = src["node"], dst["node"]
    if a not in lay.boxes or b not in lay.boxes:
        return []
    down = link.get("state") == "down"
    cls = "lt-link" + (" lt-tunnel" if kind == "tunnel" else "") + \
        (" lt-hosts" if kind == "hosts" else "") + (" lt-down" if down else "")
    ba, bb = lay.boxes[a], lay.boxes[b]
    labels: list[tuple[float, float, str, str]] = []  # x, y, text, anchor
    stroke = ""
    if kind == "host":
        trunk = bb.left - STUB  # shared by the pills of one column
        cy = bb.y + bb.h / 2
        d = (f"M{fmt(ba.cx)} {fmt(ba.bottom)} V{fmt(ba.bottom + PORTS_GAP / 2)} "
             f"H{fmt(trunk)} V{fmt(cy)} H{fmt(bb.left)}")
        stroke = "" if down else f' stroke="{LINK}"'
        if src.get("port_no") is not None:
            labels.append((bb.left - STUB / 2, cy - 4, str(src["port_no"]), "middle"))
    elif kind == "hosts":
        d = f"M{fmt(ba.cx)} {fmt(ba.bottom)} L{fmt(bb.cx)} {fmt(bb.y)}"
    elif kind == "tunnel":
        ea, eb = _tunnel_anchor_nodes(link, nodes, hosted_by)
        x1, y1 = anchors.get((i, "src"), (lay.boxes[ea].cx, lay.boxes[ea].y))
        x2, y2 = anchors.get((i, "dst"), (lay.boxes[eb].cx, lay.boxes[eb].y))
        hgt = _arc_height(abs(x2 - x1))
        top = min(y1, y2) - hgt
        d = (f"M{fmt(x1)} {fmt(y1)} C{fmt(x1)} {fmt(top)} {fmt(x2)} {fmt(top)} "
             f"{fmt(x2)} {fmt(y2)}")
        if down or lay.mixed_tunnels:  # else the legend names the one tunnel type
            mid_y = 0.125 * (y1 + y2) + 0.75 * top
            text = str(link.get("tunnel_type") or "tunnel") + (" (down)" if down else "")
            labels.append(((x1 + x2) / 2, mid_y + 4, text, "middle"))
    else:  # fabric
        x1, y1 = anchors.get((i, "src"), (ba.cx, ba.bottom))
        x2, y2 = anchors.get((i, "dst"), (bb.cx, bb.y))
        if abs(y1 - y2) < 1:  # same row: beside each other, or an arc over the row
            order = sorted(lay.boxes[n].cx for n in (a, b))
            between = [n for n, bx in lay.boxes.items() if nodes.get(n, {}).get("kind") ==
                       "switch" and abs(bx.y - ba.y) < 1 and order[0] < bx.cx < order[1]]
            if not between:
                left, right = (ba, bb) if ba.cx < bb.cx else (bb, ba)
                yy = left.y + left.h / 2
                d = f"M{fmt(left.right)} {fmt(yy)} H{fmt(right.left)}"
                (pa, pb) = (src, dst) if ba.cx < bb.cx else (dst, src)
                labels.append((left.right + 4, yy - 5, str(pa.get("port_no")), "start"))
                labels.append((right.left - 4, yy - 5, str(pb.get("port_no")), "end"))
            else:
                hgt = _arc_height(abs(x2 - x1)) * 0.6
                top = y1 - hgt
                d = (f"M{fmt(x1)} {fmt(y1)} C{fmt(x1)} {fmt(top)} {fmt(x2)} {fmt(top)} "
                     f"{fmt(x2)} {fmt(y2)}")
                labels.append((x1 + 4, y1 - 8, str(src.get("port_no")), "start"))
                labels.append((x2 - 4, y2 - 8, str(dst.get("port_no")), "end"))
        else:
            d = f"M{fmt(x1)} {fmt(y1)} L{fmt(x2)} {fmt(y2)}"
            length = math.hypot(x2 - x1, y2 - y1) or 1.0
            ux, uy = (x2 - x1) / length, (y2 - y1) / length
            # port numbers beside the line, a little way from each box, on the line's left
            perp_x, perp_y = uy, -ux
            if perp_x > 0:
                perp_x, perp_y = -perp_x, -perp_y
            # far enough along a shallow line to clear the box
            along = min(max(20.0, 16.0 / max(abs(uy), 0.05)), length * 0.3)
            for (px, py), sign, end in (((x1, y1), 1, src), ((x2, y2), -1, dst)):
                lx = px + sign * ux * along + perp_x * 7
                ly = py + sign * uy * along + perp_y * 7 + 4
                labels.append((lx, ly, str(end.get("port_no")), "middle"))
        stroke = "" if down else f' stroke="{LINK}"'
    title = (f"{kind} {link.get('state', '')}: {a} port {src.get('port_no')} \u2194 {b} port "
             f"{dst.get('port_no')}" + (f" ({link['tunnel_type']})" if link.get("tunnel_type")
                                         else ""))
    out = [f'<path class="{cls}"{stroke} data-link="{attr(a)}|{attr(b)}|{attr(kind)}" '
           f'data-state="{attr(link.get("state", ""))}" d="{d}"><title>{escape(title)}'
           "</title></path>"]
    for x, y, text, anchor in labels:
        cls_t = "lt-label" if kind == "tunnel" else "lt-tiny"
        fill = (f' fill="{DOWN if down else TUNNEL}"' if kind == "tunnel" else "")
        out.append(f'<text class="{cls_t}"{fill} x="{fmt(x)}" y="{fmt(y)}" '
                   f'text-anchor="{anchor}">{escape(text)}</text>')
    return out


def _node(node: Mapping[str, Any], box: Box, lay: Layout) -> list[str]:
    kind = node["kind"]
    nid = node["id"]
    head = f'<g class="lt-node lt-{kind}" data-node="{attr(nid)}">'
    if kind == "port":
        colour = lay.colours.get(node.get("network_id"), NO_NETWORK)
        first, second = _port_label(node)
        active = node.get("status") == "ACTIVE"
        title = "\n".join([
            f"port {node.get('name') or ''} ({nid.split(':', 1)[1]})",
            f"network {node.get('network_name')} ({node.get('network_id')})",
            f"project {node.get('project_id')}",
            f"mac {node.get('mac')}", f"ips {', '.join(node.get('ips') or [])}",
            f"status {node.get('status')}",
        ])
        return [
            head, f"<title>{escape(title)}</title>",
            f'<rect x="{fmt(box.left)}" y="{fmt(box.y)}" width="{fmt(box.w)}" '
            f'height="{fmt(box.h)}" rx="7" fill="#ffffff" stroke="{colour}" stroke-width="1.6"/>',
            f'<rect x="{fmt(box.left)}" y="{fmt(box.y)}" width="7" height="{fmt(box.h)}" '
            f'rx="3" fill="{colour}"/>',
            f'<circle cx="{fmt(box.right - 11)}" cy="{fmt(box.y + 11)}" r="4.5" '
            f'fill="{"#16a34a" if active else "#9ca3af"}"/>',
            f'<text class="lt-name" x="{fmt(box.left + 14)}" y="{fmt(box.y + 17)}" '
            f'font-size="12" fill="{INK}">{escape(first)}</text>',
            f'<text class="lt-small" x="{fmt(box.left + 14)}" y="{fmt(box.y + 32)}" '
            f'fill="{MUTED}">{escape(second)}</text>',
            "</g>",
        ]
    connected = bool(node.get("connected"))
    if kind == "switch":
        first, second = _switch_label(node)
        fill, ink, sub = ("#e0e7ff", INK, "#475569") if connected else ("#f3f4f6", MUTED, MUTED)
        stroke = ' stroke="#3b4a6b" stroke-width="1.6"' if connected else \
            f' stroke="{DOWN}" stroke-width="1.8" stroke-dasharray="6 4"'
        ports = ", ".join(f"{p['port_no']}:{p['name']}" + ("" if p.get("state") == "up"
                                                           else " (down)")
                          for p in node.get("ports") or [])
        title = (f"switch {node.get('name')} dpid {node.get('datapath_id')}"
                 f"{' on ' + node['chassis'] if node.get('chassis') else ' (fabric)'}"
                 f" \u00b7 {'connected' if connected else 'not connected'}\nports: {ports}")
    else:
        first, second = _chassis_label(node)
        fill, ink, sub = ("#1f2937", "#ffffff", "#cbd5e1") if connected else \
            ("#9ca3af", "#ffffff", "#f3f4f6")
        stroke = "" if connected else f' stroke="{DOWN}" stroke-width="2" stroke-dasharray="6 4"'
        title = (f"chassis {node.get('name')} \u00b7 encap {node.get('encap_ip')} \u00b7 "
                 f"{'connected' if connected else 'disconnected'}")
    return [
        head, f"<title>{escape(title)}</title>",
        f'<rect x="{fmt(box.left)}" y="{fmt(box.y)}" width="{fmt(box.w)}" height="{fmt(box.h)}" '
        f'rx="9" fill="{fill}"{stroke}/>',
        f'<text class="lt-name" x="{fmt(box.cx)}" y="{fmt(box.y + 19)}" text-anchor="middle" '
        f'fill="{ink}">{escape(first)}</text>',
        f'<text class="lt-small" x="{fmt(box.cx)}" y="{fmt(box.y + 35)}" text-anchor="middle" '
        f'fill="{sub}">{escape(second)}</text>',
        "</g>",
    ]


# ---------------------------------------------------------------------------- page
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Loom topology</title>
{noscript}
<style>
html,body{{margin:0;background:#f8fafc;font-family:{font};color:#1f2937}}
#bar{{position:sticky;top:0;padding:6px 24px;font-size:12px;color:#475569;
  background:#f1f5f9;border-bottom:1px solid #e2e8f0;z-index:1}}
#bar .err{{color:#dc2626;font-weight:bold}}
#view{{overflow-x:auto;cursor:zoom-out}}
#view svg{{display:block;margin:0 auto}}
#view.fit{{cursor:zoom-in}}
#view.fit svg{{max-width:100%;height:auto}}
</style>
</head>
<body>
<div id="bar">Loom \u00b7 <span id="status">{status}</span>
 \u00b7 {every} \u00b7 click the picture to fit it to the window</div>
<main id="view">
{svg}</main>
<script>
(function () {{
  var every = {refresh_ms};
  var token = new URLSearchParams(window.location.search).get("token");
  var base = window.location.pathname.replace(/topology\\/?$/, "");
  var view = document.getElementById("view");
  var status = document.getElementById("status");
  var last = null;
  view.addEventListener("click", function () {{ view.classList.toggle("fit"); }});
  function tick() {{
    var headers = {{"Accept": "image/svg+xml"}};
    if (token) {{ headers["X-Auth-Token"] = token; }}
    fetch(base + "v1/topology.svg", {{headers: headers, cache: "no-store"}})
      .then(function (r) {{
        if (!r.ok) {{ throw new Error("HTTP " + r.status); }}
        return r.text();
      }})
      .then(function (text) {{
        if (text !== last) {{ view.innerHTML = text; last = text; }}
        status.className = "";
        status.textContent = "updated " + new Date().toLocaleTimeString();
      }})
      .catch(function (e) {{
        status.className = "err";
        status.textContent = "refresh failed (" + e.message + "): showing the last picture";
      }})
      .then(function () {{ setTimeout(tick, every); }});
  }}
  if (every > 0) {{ setTimeout(tick, every); }}
}})();
</script>
</body>
</html>
"""


def html_page(doc: Mapping[str, Any], refresh_seconds: int = 5) -> str:
    """A page showing the SVG inline, refreshed in place every `refresh_seconds` (0: never).

    The refresh fetches `v1/topology.svg` next to the page with the page's `?token=`
    sent as X-Auth-Token; without JavaScript a meta refresh reloads the whole page.
    """
    src = doc.get("generated_from", {})
    status = (f"topology version {src.get('topology_version')}, intent generation "
              f"{src.get('intent_generation')}")
    refresh = max(int(refresh_seconds), 0)
    return PAGE.format(
        noscript=(f'<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>'
                  if refresh else ""),
        every=f"refreshes every {refresh} s" if refresh else "not refreshing",
        refresh_ms=refresh * 1000,
        font=FONT,
        status=escape(status),
        svg=svg(doc),
    )
