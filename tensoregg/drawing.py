"""Pictures of what the optimizer did (``tensoregg explain --graphviz``, ``--egraph``), as Graphviz DOT.

``graph_dot``: the extracted graph, one box per kernel (a fused op's base op, residual Add and
activation drawn inside it, with the kernel's chosen schedule), values as edges labelled with their
type. ``egraph_dot``: the e-classes around one node of the imported graph after saturation: its
class, the classes its e-nodes read and the classes that read it, each e-class a box of its
e-nodes. ``write`` saves DOT as it is (``.dot``/``.gv``) or renders it with Graphviz's ``dot``.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensoregg.errors import InputError
from tensoregg.ir.graph import Graph
from tensoregg.ir.ops.fused import fused_ops

if TYPE_CHECKING:
    from tensoregg.rules import Family
    from tensoregg.targets import Target

HEAD = ['  graph [fontname="Helvetica", fontsize=10, rankdir=TB, compound=true];',
        '  node [fontname="Helvetica", fontsize=10, shape=box, style="rounded,filled", fillcolor="#f5f5f5"];',
        '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']


def quote(text: str) -> str:
    """``text`` as a DOT string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_dot(graph: Graph, title: str = "") -> str:
    """The DOT text of ``graph`` (see the module docstring)."""
    lines = [f"digraph {quote(graph.name or 'graph')} {{", *HEAD]
    if title:
        lines.append(f"  label={quote(title)}; labelloc=t;")
    source: dict[str, str] = {}
    for name in graph.inputs:
        lines.append(f'  {quote("in:" + name)} [label={quote(name)}, shape=ellipse, fillcolor="#dbeafe"];')
        source[name] = "in:" + name
    for k, node in enumerate(graph.nodes):
        ops = fused_ops(node)
        schedule = str(node.schedule) if node.schedule is not None else ""
        if len(ops) > 1:
            lines.append(f"  subgraph cluster_{k} {{")
            title = f"{node.op} {node.label}" + ("\n" + schedule if schedule else "")
            lines.append(f'    label={quote(title)}; style="rounded,filled"; fillcolor="#fff7e6"; '
                         'color="#d48806";')
            ids = [f"n{k}.{j}" for j in range(len(ops))]
            for j, op in enumerate(ops):
                lines.append(f'    {quote(ids[j])} [label={quote(op)}, fillcolor="#ffe7ba"];')
            lines += [f"    {quote(a)} -> {quote(b)};" for a, b in itertools.pairwise(ids)]
            lines.append("  }")
            first, last = ids[0], ids[-1]
        else:
            first = last = f"n{k}"
            label = node.op + ("\n@ " + schedule if schedule else "")
            lines.append(f"  {quote(first)} [label={quote(label)}];")
        for name in node.inputs:
            if name in source:
                edge = quote(str(graph.types[name]))
                lines.append(f"  {quote(source[name])} -> {quote(first)} [label={edge}];")
        for name in node.outputs:
            if name:
                source[name] = last
    for k, name in enumerate(graph.outputs):
        out = f"out:{k}"
        lines.append(f'  {quote(out)} [label={quote(name)}, shape=ellipse, fillcolor="#d9f7be"];')
        if name in source:
            lines.append(f"  {quote(source[name])} -> {quote(out)} [label={quote(str(graph.types[name]))}];")
    return "\n".join([*lines, "}", ""])


def egraph_dot(graph: Graph, target: str | Target | None, node: str,
               rule_families: Sequence[str | Family] | None = None) -> str:
    """The DOT text of the e-classes around ``node`` (a node's name or output value in ``graph``)
    once ``graph`` is saturated with the target's rule families (or ``rule_families``)."""
    from tensoregg.api import resolve_target
    from tensoregg.ir.terms import encode, parse, read_literal, serialize
    from tensoregg.optimize import resolve_families
    from tensoregg.rules import Phase, saturate

    value = next((n.outputs[0] for n in graph.nodes if node in (n.name, *n.outputs) and n.outputs), None)
    if value is None:
        raise InputError(f"no node {node!r} in the graph: name a node or its output, e.g. "
                         f"{[n.outputs[0] for n in graph.nodes][:5]}")
    _, description = resolve_target(target)
    enc = encode(graph)
    families = resolve_families(rule_families if rule_families is not None else description.rule_families)
    saturate(enc.egraph, [Phase(f.name, f.ruleset) for f in families])
    js = serialize(enc.egraph)
    handle = int(re.findall(r"\d+", str(enc.terms[value]))[-1])  # value(k): the node's handle
    home = next(n["eclass"] for n in js["nodes"].values()
                if n["op"] == "value" and read_literal(js, n["children"][0]) == handle)
    classes = parse(js)
    near = {home} | {c for e in classes.get(home, []) for c in e.inputs if c}
    near |= {c for c, nodes in classes.items() if any(home in e.inputs for e in nodes)}
    lines = [f"digraph {quote('e-classes around ' + node)} {{", *HEAD,
             f"  label={quote(f'e-classes around {node} ({value}) after saturation')}; labelloc=t;"]
    anchor = {}
    for c in sorted(near, key=lambda c: (c != home, c)):
        nodes = classes.get(c, [])
        color = "#fff1f0" if c == home else "#f9f0ff"
        lines.append(f"  subgraph {cluster(c)} {{")
        label = quote("e-class " + c.rsplit(".", 1)[-1])
        lines.append(f'    label={label}; style="rounded,filled"; fillcolor="{color}";')
        for e in nodes or []:
            lines.append(f"    {quote(e.id)} [label={quote(enode_label(e))}];")
        if not nodes:
            lines.append(f"    {quote('empty:' + c)} [label=\"...\"];")
        lines.append("  }")
        anchor[c] = nodes[0].id if nodes else "empty:" + c
    for c in near:
        for e in classes.get(c, []):
            for child in e.inputs:
                if child in near:
                    lines.append(f"  {quote(e.id)} -> {quote(anchor[child])} "
                                 f"[lhead={cluster(child)}];")
    return "\n".join([*lines, "}", ""])


def cluster(eclass: str) -> str:
    """The DOT cluster of ``eclass``."""
    return "cluster_" + re.sub(r"\W", "_", eclass)


def enode_label(e: Any) -> str:
    """An e-node's op, with a leaf's name or an op's set attributes (short)."""
    if "name" in e.attrs and len(e.attrs) == 1:
        return e.op + "\n" + str(e.attrs["name"])
    shown = [f"{k}={v}" for k, v in e.attrs.items() if v not in (None, (), "", 0)]
    text = ", ".join(shown)
    return e.op + ("\n" + text[:60] if text else "")


def write(dot: str, path: str | Path) -> Path:
    """Save ``dot`` at ``path``: as DOT for ``.dot``/``.gv``, else rendered by Graphviz's ``dot`` in
    the format the suffix names (``.svg``, ``.png``, ``.pdf``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        path.write_text(dot)
        return path
    binary = shutil.which("dot")
    if binary is None:
        raise InputError(f"rendering {path} needs Graphviz's dot (apt-get install graphviz); "
                         "or write a .dot file")
    done = subprocess.run([binary, f"-T{fmt}", "-o", str(path)], input=dot, capture_output=True, text=True)
    if done.returncode:
        raise InputError(f"dot could not render {path}: {done.stderr.strip()}")
    return path
