"""Provenance graphs drawn as layered DAGs in SVG (pure Python, no graph library).

:func:`lineage_graph` turns the nested dict of :func:`qemlflow.pipeline.lineage.lineage`
into nodes and edges, one node per step key, raw digest, artifact and run: a step the
lineage lists twice (``"repeated": True``) is one node with several consumers.
:func:`layered_layout` places it in rows by depth (the outputs on top, the raw file at the
bottom) and :func:`graph_svg` draws it: boxes ``g.node[data-kind]`` with a short label and
a ``<title>`` holding the full detail, edges ``path.edge`` as curves.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Edge", "Graph", "Layout", "Node", "graph_svg", "layered_layout", "lineage_graph"]

NODE_WIDTH = 156
NODE_HEIGHT = 40
GAP_X = 22
GAP_Y = 34
MARGIN = 12
WAYPOINT_WIDTH = 10  # the slot an edge takes in a row it passes through

# Fill and stroke per node kind: attributes, not CSS, so the SVG reads the same standalone.
_COLOURS = {
    "run": ("#dbeafe", "#1f6feb"),
    "step": ("#f3f5f8", "#8c959f"),
    "artifact": ("#fff8c5", "#9a6700"),
    "raw": ("#dafbe1", "#1a7f37"),
}


@dataclass(frozen=True)
class Node:
    """One box of the graph: ``label`` is shown (two short lines), ``detail`` on hover."""

    id: str
    kind: str
    label: tuple[str, str]
    detail: str


@dataclass(frozen=True)
class Edge:
    """``source`` went into ``target`` (an input and what was made from it)."""

    source: str
    target: str


@dataclass
class Graph:
    """Nodes (each id once) and the edges between them."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        """The node with this id."""
        return next(n for n in self.nodes if n.id == node_id)


@dataclass(frozen=True)
class Layout:
    """Where each node sits: ``layer`` (row, 0 on top), ``x``/``y`` its top-left corner;
    ``routes`` maps each edge ``(source, target)`` to the points its curve passes."""

    layer: dict[str, int]
    x: dict[str, float]
    y: dict[str, float]
    width: float
    height: float
    routes: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)


def _step_detail(node: Mapping[str, Any]) -> str:
    params = node.get("params") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return (
        f"step {node.get('step')} v{node.get('version')}\nkey {node.get('key')}\n"
        f"output {node.get('output')}" + (f"\nparams {shown}" if shown else "")
    )


def lineage_graph(tree: Mapping[str, Any]) -> Graph:
    """Return the graph of a lineage dict (a run, step or artifact at its root).

    Nodes are identified by what they are: a step by its key, the raw file by its
    digest, an artifact by its run and name, a run by its id; so a step reached from
    several consumers is one node with several outgoing edges.

    Examples
    --------
    >>> raw = {"kind": "raw", "digest": "ab" * 32}
    >>> std = {"kind": "step", "step": "standardize", "key": "cd" * 32, "inputs": [raw]}
    >>> again = {"kind": "step", "step": "standardize", "key": "cd" * 32, "repeated": True}
    >>> fit = {"kind": "step", "step": "fit", "key": "ef" * 32, "inputs": [std, again]}
    >>> g = lineage_graph(fit)
    >>> [n.kind for n in g.nodes], len(g.edges)
    (['step', 'step', 'raw'], 2)
    """
    graph = Graph()
    seen: set[str] = set()
    edges: set[tuple[str, str]] = set()

    def add(node: Node) -> str:
        if node.id not in seen:
            seen.add(node.id)
            graph.nodes.append(node)
        return node.id

    def link(source: str, target: str) -> None:
        if (source, target) not in edges:
            edges.add((source, target))
            graph.edges.append(Edge(source, target))

    def visit(item: Mapping[str, Any], run_id: str | None = None) -> str:
        kind = str(item.get("kind", "step"))
        if kind == "raw":
            digest = str(item.get("digest", ""))
            return add(Node(f"raw:{digest}", "raw", ("raw file", f"sha256 {digest[:12]}"), digest))
        if kind == "artifact" and "run" in item:  # lineage of an artifact: its run
            return visit(item["run"])
        if kind == "artifact":
            name, digest = str(item.get("name", "")), str(item.get("digest", ""))
            detail = f"artifact {name}\nsha256 {digest}\nproduced by {item.get('produced_by')}"
            return add(Node(f"artifact:{run_id}:{name}", "artifact", (name, digest[:12]), detail))
        if kind == "run":
            rid = str(item.get("id", ""))
            detail = (
                f"run {rid} {item.get('name', '')}\nstatus {item.get('status')}\n"
                f"started {item.get('started_at')}\nenvironment {item.get('environment')}"
            )
            node_id = add(Node(f"run:{rid}", "run", (str(item.get("name", "")), rid), detail))
            for artifact in item.get("artifacts") or ():
                link(node_id, visit(artifact, rid))
        else:
            key = str(item.get("key", ""))
            node_id = add(
                Node(
                    f"step:{key}", "step", (str(item.get("step", "")), key[:12]), _step_detail(item)
                )
            )
        for source in item.get("inputs") or ():
            link(visit(source, run_id), node_id)
        return node_id

    visit(tree)
    return graph


def _layers(graph: Graph) -> dict[str, int]:
    """Longest distance from the graph's final outputs: every edge points up a row."""
    consumers: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    inputs: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for edge in graph.edges:
        consumers[edge.source].append(edge.target)
        inputs[edge.target].append(edge.source)
    waiting = {n: len(c) for n, c in consumers.items()}
    ready = [n.id for n in graph.nodes if waiting[n.id] == 0]
    layer = dict.fromkeys(ready, 0)
    while ready:
        node = ready.pop()
        for source in inputs[node]:
            layer[source] = max(layer.get(source, 0), layer[node] + 1)
            waiting[source] -= 1
            if waiting[source] == 0:
                ready.append(source)
    # A cycle (never in a lineage) leaves nodes unplaced: put them below the rest.
    bottom = max(layer.values(), default=-1) + 1
    return {n.id: layer.get(n.id, bottom) for n in graph.nodes}


def _chains(graph: Graph, layer: Mapping[str, int]) -> dict[tuple[str, str], list[str]]:
    """Each edge as the ids it passes through: an edge spanning several rows gets a
    waypoint (a dummy node) in every row between, so it is routed around the boxes."""
    chains: dict[tuple[str, str], list[str]] = {}
    for edge in graph.edges:
        top, bottom = layer[edge.target], layer[edge.source]
        waypoints = [f"~{edge.source}~{edge.target}~{row}" for row in range(bottom - 1, top, -1)]
        chains[(edge.source, edge.target)] = [edge.source, *waypoints, edge.target]
    return chains


def _by_barycentre(
    row: Sequence[str], reference: Sequence[str], neighbours: Mapping[str, list[str]]
) -> list[str]:
    """``row`` sorted by the mean place of each node's neighbours in ``reference`` (a node
    without any keeps its place)."""
    where = {n: p for p, n in enumerate(reference)}

    def centre(item: tuple[int, str]) -> float:
        places = [where[m] for m in neighbours[item[1]] if m in where]
        return sum(places) / len(places) if places else float(item[0])

    return [node for _, node in sorted(enumerate(row), key=centre)]


def _order(
    graph: Graph, layer: Mapping[str, int], chains: Mapping[tuple[str, str], list[str]]
) -> list[list[str]]:
    """Rows of ids (nodes and waypoints), each ordered by the mean position of its
    neighbours in the row before (barycentre), sweeping down and up twice, so that edges
    cross less."""
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in graph.nodes:
        rows[layer[node.id]].append(node.id)
    above: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    below: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for chain in chains.values():
        for waypoint in chain[1:-1]:
            row = int(waypoint.rsplit("~", 1)[1])
            rows[row].append(waypoint)
            above[waypoint], below[waypoint] = [], []
        for lower, upper in itertools.pairwise(chain):
            above[lower].append(upper)
            below[upper].append(lower)

    def sweep(indices: Sequence[int], neighbours: Mapping[str, list[str]], step: int) -> None:
        for i in indices:
            rows[i] = _by_barycentre(rows[i], rows[i - step], neighbours)

    for _ in range(2):
        sweep(range(1, len(rows)), above, 1)
        sweep(range(len(rows) - 2, -1, -1), below, -1)
    return rows


def _width(node: str) -> float:
    return WAYPOINT_WIDTH if node.startswith("~") else NODE_WIDTH


def layered_layout(graph: Graph) -> Layout:
    """Return where each node goes: rows by depth, each row centred, boxes never overlap;
    and each edge's route (the points it passes through, bottom to top).

    Examples
    --------
    >>> g = Graph([Node("a", "run", ("a", ""), ""), Node("b", "step", ("b", ""), "")],
    ...           [Edge("b", "a")])
    >>> layout = layered_layout(g)
    >>> layout.layer, layout.y["b"] > layout.y["a"]
    ({'a': 0, 'b': 1}, True)
    """
    layer = _layers(graph)
    chains = _chains(graph, layer)
    rows = _order(graph, layer, chains)
    spans = [sum(_width(n) for n in row) + max(len(row) - 1, 0) * GAP_X for row in rows]
    width = 2 * MARGIN + max(spans, default=0)
    height = 2 * MARGIN + len(rows) * NODE_HEIGHT + max(len(rows) - 1, 0) * GAP_Y
    xs: dict[str, float] = {}
    ys: dict[str, float] = {}
    for i, row in enumerate(rows):
        left = (width - spans[i]) / 2
        for node in row:
            xs[node] = left
            ys[node] = MARGIN + i * (NODE_HEIGHT + GAP_Y)
            left += _width(node) + GAP_X
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (source, target), chain in chains.items():
        points = [(xs[source] + NODE_WIDTH / 2, ys[source])]
        for waypoint in chain[1:-1]:
            centre = xs[waypoint] + WAYPOINT_WIDTH / 2
            points += [(centre, ys[waypoint] + NODE_HEIGHT), (centre, ys[waypoint])]
        points.append((xs[target] + NODE_WIDTH / 2, ys[target] + NODE_HEIGHT))
        routes[(source, target)] = points
    real = {n.id for n in graph.nodes}
    return Layout(
        layer={k: v for k, v in layer.items() if k in real},
        x={k: v for k, v in xs.items() if k in real},
        y={k: v for k, v in ys.items() if k in real},
        width=width,
        height=height,
        routes=routes,
    )


def _curve(points: Sequence[tuple[float, float]]) -> str:
    """A path through ``points`` (going up): vertical runs joined by S-shaped cubics."""
    (x, y), rest = points[0], points[1:]
    path = [f"M{x:.1f},{y:.1f}"]
    for nx, ny in rest:
        if nx == x:
            path.append(f"L{nx:.1f},{ny:.1f}")
        else:
            bend = (y - ny) / 2
            path.append(f"C{x:.1f},{y - bend:.1f} {nx:.1f},{ny + bend:.1f} {nx:.1f},{ny:.1f}")
        x, y = nx, ny
    return " ".join(path)


def _clip(text: str, length: int = 22) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def graph_svg(graph: Graph, *, element_id: str = "lineage-graph") -> str:
    """Return the graph drawn as a standalone SVG (``svg#element_id.graph``).

    Each node is ``g.node[data-kind][data-id]`` holding a ``<title>`` (full detail), a
    box and two lines of text; each edge is ``path.edge[data-source][data-target]``, a
    curve from the top of the input to the bottom of what was made from it.
    """
    layout = layered_layout(graph)
    w, h = layout.width, layout.height
    arrow = html.escape(f"{element_id}-arrow")  # ids are page-wide: one per graph
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{html.escape(element_id)}" class="graph" '
        f'viewBox="0 0 {w:.0f} {h:.0f}" width="{w:.0f}" height="{h:.0f}" role="img" '
        f'aria-label="lineage graph" font-family="sans-serif" font-size="11">',
        f'<defs><marker id="{arrow}" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8c959f"/></marker>'
        "</defs>",
        '<g fill="none" stroke="#8c959f" stroke-width="1.3">',
    ]
    for edge in graph.edges:
        parts.append(
            f'<path class="edge" data-source="{html.escape(edge.source)}" '
            f'data-target="{html.escape(edge.target)}" marker-end="url(#{arrow})" '
            f'd="{_curve(layout.routes[(edge.source, edge.target)])}"/>'
        )
    parts.append("</g>")
    for node in graph.nodes:
        x, y = layout.x[node.id], layout.y[node.id]
        fill, stroke = _COLOURS.get(node.kind, _COLOURS["step"])
        first, second = (html.escape(_clip(t)) for t in node.label)
        parts.append(
            f'<g class="node" data-kind="{html.escape(node.kind)}" '
            f'data-id="{html.escape(node.id)}">'
            f"<title>{html.escape(node.detail)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="5" '
            f'fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 8:.1f}" y="{y + 16:.1f}" font-weight="600">{first}</text>'
            f'<text x="{x + 8:.1f}" y="{y + 31:.1f}" font-family="monospace" font-size="10" '
            f'fill="#5f6b7a">{second}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
