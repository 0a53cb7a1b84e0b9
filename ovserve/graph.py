"""Pipelines as pictures: a pipeline's graph in Graphviz's DOT language, laid out and drawn as SVG by `dot`."""

from __future__ import annotations

import html
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .config import NodeConfig, PipelineConfig
from .pipeline import REQUEST, RESPONSE, PipelineDefinition
from .tensors import TensorSpec, precision_name, shape_text

LAYOUT_TIMEOUT_S = 30.0
_INSTALL = "install Graphviz to draw pipeline graphs (Debian and Ubuntu: apt-get install graphviz)"


class LayoutError(Exception):
    """Graphviz's `dot` is missing or failed."""


@dataclass(frozen=True)
class Picture:
    """What a pipeline's drawing shows: its config, and when it validated its inputs' and outputs' metadata and the
    demultiplexers the response gathers; else why it failed."""

    config: PipelineConfig
    inputs: Mapping[str, TensorSpec] = field(default_factory=dict)
    outputs: Mapping[str, TensorSpec] = field(default_factory=dict)
    response_gathers: tuple[str, ...] = ()
    error: str = ""


def picture(config: PipelineConfig, definition: PipelineDefinition | None, error: str = "") -> Picture:
    if definition is None:
        return Picture(config, error=error)
    request_level = (REQUEST,) if REQUEST in definition.counts else ()
    open_at_response: list[str] = []
    for source in config.outputs.values():
        level = definition.nodes[source.node].out_level if source.node != REQUEST else request_level
        open_at_response += [d for d in level if d not in open_at_response]
    return Picture(config, definition.inputs, definition.outputs, tuple(open_at_response))


# --- DOT text --------------------------------------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A DOT double-quoted string (edge labels); a backslash would start one of DOT's label escapes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _html(lines: Sequence[tuple[str, str]]) -> str:
    """An HTML-like DOT label of (style, text) lines: "title" bold, "mark" coloured, "" plain, "small" smaller."""
    parts = []
    for style, text in lines:
        escaped = html.escape(text, quote=True).replace("\\", "\\\\")  # dot reads \N, \G... here too
        if style == "title":
            parts.append(f"<B>{escaped}</B>")
        elif style == "mark":
            parts.append(f'<FONT COLOR="#b34700">{escaped}</FONT>')
        elif style == "error":
            parts.append(f'<FONT COLOR="#c00000">{escaped}</FONT>')
        else:
            parts.append(f'<FONT POINT-SIZE="10">{escaped}</FONT>')
    return "<" + "<BR/>".join(parts) + ">"


def _tensor_line(name: str, spec: TensorSpec | None) -> tuple[str, str]:
    if spec is None:
        return ("small", name)
    if spec.dtype is None:
        return ("small", f"{name}: any")
    return ("small", f"{name}: {precision_name(spec.dtype)} {shape_text(spec.shape)}")


def _count(count: int) -> str:
    return f"demultiplexer: count {count}" if count > 0 else "demultiplexer: dynamic count"


def _node_label(node: NodeConfig) -> str:
    what = f"model {node.model_name}" + (f" version {node.version}" if node.version else "")
    if node.kind == "custom":
        what = f"library {node.library_name}"
    lines = [("title", node.name), ("small", what)]
    if node.demultiply_count is not None:
        lines.append(("mark", _count(node.demultiply_count)))
    if node.gather_from_node is not None:
        lines.append(("mark", f"gathers from {node.gather_from_node}"))
    return _html(lines)


def _edge_label(item: str, target: str) -> str:
    return item if item == target else f"{item} → {target}"


def _statements(pic: Picture, prefix: str) -> list[str]:
    """Nodes and edges of one pipeline; node ids are `prefix` + a number, names only ever appear in labels."""
    config = pic.config
    ids = {REQUEST: f"{prefix}request", RESPONSE: f"{prefix}response"}
    for i, node in enumerate(config.nodes):
        ids.setdefault(node.name, f"{prefix}n{i}")
    out: list[str] = []
    request = [("title", REQUEST)] + [_tensor_line(n, pic.inputs.get(n)) for n in config.inputs]
    demux = config.demultiply_count is not None
    if demux:
        request.append(("mark", _count(config.demultiply_count or -1)))
    out.append(f'{ids[REQUEST]} [label={_html(request)}, shape=box, style="rounded,filled", fillcolor="#e8f0fe"'
               f'{", peripheries=2" if demux else ""}];')  # fmt: skip
    response = [("title", RESPONSE)]
    response += [_tensor_line(n, pic.outputs.get(n)) for n in config.outputs]
    if pic.response_gathers:
        response.append(("mark", "gathers from " + ", ".join(pic.response_gathers)))
    out.append(f'{ids[RESPONSE]} [label={_html(response)}, shape=box, style="rounded,filled", fillcolor="#e8f0fe"];')
    for node in config.nodes:
        fill = "#fff2cc" if node.kind == "custom" else "#ffffff"
        extra = ", peripheries=2" if node.demultiply_count is not None else ""
        out.append(f'{ids[node.name]} [label={_node_label(node)}, style="rounded,filled", fillcolor="{fill}"{extra}];')
    sources = {s.node for n in config.nodes for s in n.inputs.values()} | {s.node for s in config.outputs.values()}
    for k, name in enumerate(sorted(s for s in sources if s not in ids)):
        ids[name] = f"{prefix}missing{k}"
        label = _html([("title", name), ("error", "no such node")])
        out.append(f'{ids[name]} [label={label}, style="rounded,dashed", color="#c00000"];')
    for node in config.nodes:
        for input_name, source in node.inputs.items():
            out.append(
                f"{ids[source.node]} -> {ids[node.name]} [label={_quoted(_edge_label(source.item, input_name))}];"
            )
        gather = node.gather_from_node
        if gather is not None and gather in ids:
            out.append(f'{ids[gather]} -> {ids[node.name]} [style=dashed, color="#b34700", fontcolor="#b34700", '
                       f'label="gather", constraint=false];')  # fmt: skip
    for output_name, source in config.outputs.items():
        out.append(f"{ids[source.node]} -> {ids[RESPONSE]} [label={_quoted(_edge_label(source.item, output_name))}];")
    return out


def _title(pic: Picture) -> str:
    lines = [("title", f"pipeline {pic.config.name}")]
    if pic.error:
        lines.append(("error", f"fails validation: {pic.error}"))
    return _html(lines)


_HEAD = [
    "rankdir=TB;",
    'fontname="Helvetica"; labelloc=t;',
    'node [shape=box, fontname="Helvetica", fontsize=12];',
    'edge [fontname="Helvetica", fontsize=10];',
]


def dot(pic: Picture) -> str:
    """One pipeline as a DOT graph."""
    body = [*_HEAD, f"label={_title(pic)};", *_statements(pic, "")]
    return "digraph pipeline {\n  " + "\n  ".join(body) + "\n}\n"


def dot_all(pictures: Sequence[Picture]) -> str:
    """Several pipelines in one DOT graph, each a titled cluster."""
    body = list(_HEAD)
    for k, pic in enumerate(pictures):
        inner = [f"label={_title(pic)};", 'color="#999999";', *_statements(pic, f"p{k}_")]
        body.append(f"subgraph cluster_{k} {{\n    " + "\n    ".join(inner) + "\n  }")
    return "digraph pipelines {\n  " + "\n  ".join(body) + "\n}\n"


def svg(dot_text: str) -> bytes:
    """Lay `dot_text` out and draw it as SVG with Graphviz's `dot` (blocking: call it in a worker thread)."""
    program = shutil.which("dot")
    if program is None:
        raise LayoutError(f"Graphviz's dot program was not found: {_INSTALL}")
    try:
        done = subprocess.run(
            [program, "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=LAYOUT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LayoutError(f"Graphviz's dot failed: {e}") from e
    if done.returncode != 0:
        raise LayoutError(f"Graphviz's dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
