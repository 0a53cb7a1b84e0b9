"""DAG pipelines: the load-time definition (validation, levels, metadata; docs/pipelines.md) and its lifetime."""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .config import ModelConfig, NodeConfig, PipelineConfig, Source, dynamic
from .custom import CustomNode, Library
from .errors import LoadError
from .tensors import Dim, TensorSpec, dim_text, dims_overlap, precision_name, shape_text
from .types import Signature

REQUEST, RESPONSE = "request", "response"  # the graph's entry and exit (node names a pipeline may not use)


def _fail(message: str, details: str) -> LoadError:
    return LoadError("PIPELINE_DEFINITION_INVALID", f"{message} - {details}")


def _intersect(a: TensorSpec, b: TensorSpec, name: str) -> TensorSpec:
    """What two nodes fed by one pipeline input both accept: equal precisions, dimension-wise overlap
    (docs/pipelines.md#pipeline-metadata)."""
    if a.dtype != b.dtype or len(a.shape) != len(b.shape) or not all(map(dims_overlap, a.shape, b.shape)):
        raise _fail(
            "Multiple nodes connected to the same pipeline input require different tensor metadata",
            f"{name}: {precision_name(a.dtype)} {shape_text(a.shape)} and {precision_name(b.dtype)} "
            f"{shape_text(b.shape)}",
        )
    return TensorSpec(a.name, a.dtype, tuple(map(_dim_intersection, a.shape, b.shape)), a.layout or b.layout)


def _dim_intersection(a: Dim, b: Dim) -> Dim:
    if a == -1:
        return b
    if b == -1:
        return a
    lo_a, hi_a = a if isinstance(a, tuple) else (a, a)
    lo_b, hi_b = b if isinstance(b, tuple) else (b, b)
    lo, hi = max(lo_a, lo_b), min(hi_a, hi_b)
    return lo if lo == hi else (lo, hi)


ResolveNode = Callable[[NodeConfig], Signature]  # a node's model version or custom node now; raises LoadError


def model_node(pipeline: str, node: NodeConfig, model: ModelConfig | None, servable: Signature | None) -> Signature:
    """A DL node's model for validation: `servable` is the version it names (or the default one) if that serves,
    `model` the model's config if it is configured."""
    if model is None or servable is None:
        wanted = f"{node.model_name}" + (f" version {node.version}" if node.version else "")
        raise LoadError(
            "PIPELINE_DEFINITION_MISSING_MODEL",
            f"Pipeline definition has reference to missing model - {pipeline}: node {node.name} uses {wanted}",
        )
    if model.stateful:
        raise LoadError(
            "REQUESTED_STATEFUL_PARAMETERS_ON_SUBSCRIBED_MODEL",
            f"Stateful model cannot be subscribed to pipeline - {pipeline}: node {node.name} uses model "
            f"{node.model_name}",
        )
    if dynamic(model):
        raise LoadError(
            "FORBIDDEN_MODEL_DYNAMIC_PARAMETER",
            f"Value of provided parameter is forbidden - {pipeline}: node {node.name} uses model {node.model_name}, "
            f'which has "auto" shape or batch_size; give it a dynamic dimension (-1) instead',
        )
    return servable


def _library(pipeline: str, node: NodeConfig, libraries: Mapping[str, Library | LoadError]) -> Library:
    library = libraries.get(node.library_name)
    if not isinstance(library, LoadError) and library is not None:
        return library
    why = f" ({library})" if library is not None else ""
    raise LoadError(
        "PIPELINE_DEFINITION_INVALID",
        f"Pipeline refers to incorrect library - {pipeline}: node {node.name} uses {node.library_name}{why}",
    )


async def build_definition(
    config: PipelineConfig,
    model_of: ResolveNode,
    libraries: Mapping[str, Library | LoadError],
    kept: Mapping[str, CustomNode] | None = None,
) -> PipelineDefinition:
    """A validated pipeline (docs/pipelines.md#load-time-rules steps 2-6): every custom node's library looked up and
    initialised (in a worker thread: a library's initialize or a Python node's constructor may be slow; nodes of `kept`
    unchanged since are reused), then the definition built on `model_of` (a DL node's model, see model_node). Raises
    LoadError; the custom nodes it made are closed then."""
    kept = kept or {}
    custom: dict[str, CustomNode] = {}
    created: list[CustomNode] = []
    try:
        for node in config.nodes:
            if node.kind == "custom":
                library = _library(config.name, node, libraries)
                previous = kept.get(node.name)
                if previous is not None and previous.same(library, node.params):
                    custom[node.name] = previous
                else:
                    custom[node.name] = await asyncio.to_thread(CustomNode, library, node.name, node.params)
                    created.append(custom[node.name])

        def resolve(node: NodeConfig) -> Signature:
            if node.kind != "custom":
                return model_of(node)
            error = custom[node.name].error
            if error is not None:
                raise error
            return custom[node.name]

        return PipelineDefinition(config, resolve)
    except LoadError:
        for unused in created:
            unused.discard()
        raise


@dataclass(frozen=True)
class Node:
    """A node of a definition: its config, what it runs and the demultiplexers open around it."""

    config: NodeConfig
    model: Signature  # DL: the version seen at load time (metadata and validation only); custom: the node itself
    in_level: tuple[str, ...]  # demultiplexers open for this node's inputs (after its own gather)
    out_level: tuple[str, ...]  # ... and for its outputs (adds itself when it demultiplexes)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def custom(self) -> CustomNode | None:
        return self.model if isinstance(self.model, CustomNode) else None


class PipelineDefinition:
    """A validated pipeline: its nodes in dependency order, their demultiplexing levels and its metadata."""

    def __init__(self, config: PipelineConfig, resolve: ResolveNode) -> None:
        """Validate in the order of docs/pipelines.md#load-time-rules; `resolve` gives each node what it runs. Raises
        LoadError."""
        self.config = config
        self.name = config.name
        # demultiply_count of every demultiplexer, the request's included (key "request")
        self.counts = {n.name: n.demultiply_count for n in config.nodes if n.demultiply_count is not None}
        if config.demultiply_count is not None:
            self.counts[REQUEST] = config.demultiply_count
        self._by_name = {n.name: n for n in config.nodes}
        self._servables: dict[str, Signature] = {}
        self._resolve = resolve
        self._check_nodes()
        self.nodes = self._levels()
        self.inputs = self._input_specs()
        self.outputs = self._output_specs()
        self.custom_nodes = [n.custom for n in self.nodes.values() if n.custom is not None]
        for custom in self.custom_nodes:
            custom.hold()
        self._running = 0  # requests holding the definition
        self._retired = False

    # --- structure (docs/pipelines.md#load-time-rules step 3)
    # --------------------------------------------------------------------------

    def _servable(self, name: str) -> Signature:
        if name not in self._servables:
            self._servables[name] = self._resolve(self._by_name[name])
        return self._servables[name]

    def _check_nodes(self) -> None:
        config = self.config
        if any(c < 0 for c in self.counts.values()) and len(self.counts) > 1:
            raise LoadError(
                "NOT_IMPLEMENTED",
                f"Functionality not implemented - pipeline {config.name} has a dynamic demultiplexer and another one",
            )
        if len(self._by_name) != len(config.nodes) or {REQUEST, RESPONSE} & set(self._by_name):
            names = [n.name for n in config.nodes]
            twice = sorted({n for n in names if names.count(n) > 1 or n in (REQUEST, RESPONSE)})
            raise _fail("Pipeline definition has multiple nodes with the same name", ", ".join(twice))
        for node in config.nodes:
            self._check_node(node)
        for name, source in config.outputs.items():
            self._source_spec(RESPONSE, name, source)

    def _check_node(self, node: NodeConfig) -> None:
        """One node: what it runs, its demultiplexing and gathering, and every connection into it."""
        servable = self._servable(node.name)
        if node.demultiply_count is not None:
            self._check_demultiplexer(node, servable)
        gather = node.gather_from_node
        if gather is not None and gather not in self.counts:
            what = "Gather node refers to not existing node"
            if gather in self._by_name or gather == REQUEST:
                what = "Gather node refers to node that isn't demultiplexer"
            raise _fail(what, f"{node.name} gathers from {gather}")
        if gather == REQUEST:
            raise _fail("Gathering from entry node is not allowed", f"{node.name} gathers from {gather}")
        for input_name in node.repeated_inputs:
            raise _fail(
                "Pipeline definition has multiple connections to the same input of underlying model",
                f"{node.name}: {input_name}",
            )
        for input_name, source in node.inputs.items():
            self._check_source_node(node.name, source)
            if input_name not in servable.inputs:
                raise _fail(
                    "Pipeline definition has connection to non existing model input", f"{node.name}: {input_name}"
                )
            produced = self._source_spec(node.name, input_name, source)
            if produced.dtype is not None:
                self._check_connection(node, input_name, produced, servable.inputs[input_name])
        missing = sorted(set(servable.inputs) - set(node.inputs))
        if missing:
            raise _fail(
                "Pipeline definition does not have connections for all inputs of underlying models",
                f"{node.name} ({node.model_name or node.library_name}): {', '.join(missing)}",
            )

    def _check_demultiplexer(self, node: NodeConfig, servable: Signature) -> None:
        count = node.demultiply_count
        if node.kind == "DL model":
            strings = sorted(n for n, s in servable.inputs.items() if s.dtype == np.dtype(object))
            if strings:
                raise LoadError(
                    "NOT_IMPLEMENTED",
                    f"Demultiplication is not supported for string precision - {node.name}: {', '.join(strings)}",
                )
        for alias, item in node.outputs.items():
            spec = servable.outputs.get(item)
            if spec is None:
                continue  # reported with the connection that uses it
            if len(spec.shape) < 3:
                raise LoadError(
                    "PIPELINE_NOT_ENOUGH_SHAPE_DIMENSIONS_TO_DEMULTIPLY",
                    f"Pipeline has not enough shape dimensions to demultiply - {node.name} output {alias} has shape "
                    f"{shape_text(spec.shape)}; a demultiplexer's outputs need at least 3",
                )
            first = spec.shape[0]
            if count is not None and count > 0 and not dims_overlap(first, count):
                raise LoadError(
                    "PIPELINE_DEMULTIPLY_COUNT_DOES_NOT_MATCH_TENSOR_SHARD_COUNT",
                    f"Demultiplication count does not match tensor first dimension - {node.name} output {alias}: "
                    f"demultiply_count {count}, first dimension {dim_text(first)}",
                )

    def _check_connection(self, node: NodeConfig, input_name: str, produced: TensorSpec, wanted: TensorSpec) -> None:
        """A node-to-node connection: precisions equal, shapes of the same rank with overlapping dimensions."""
        if node.gather_from_node is not None:
            produced = TensorSpec(produced.name, produced.dtype, (self._dim(node.gather_from_node), *produced.shape))
        if produced.dtype == np.dtype(object) or wanted.dtype == np.dtype(object):
            raise LoadError(
                "NOT_IMPLEMENTED",
                f"Functionality not implemented - {node.name} input {input_name}: strings between nodes",
            )
        if wanted.dtype is not None and produced.dtype != wanted.dtype:
            raise LoadError(
                "INVALID_PRECISION",
                f"Invalid input precision - Node: {node.name} input: {input_name} Expected: "
                f"{precision_name(wanted.dtype)}; Actual: {precision_name(produced.dtype)}",
            )
        compatible = len(produced.shape) == len(wanted.shape) and all(
            dims_overlap(a, b) for a, b in zip(produced.shape, wanted.shape, strict=True)
        )
        if not compatible:
            raise LoadError(
                "INVALID_SHAPE",
                f"Invalid input shape - Node: {node.name} input: {input_name} Expected: "
                f"{shape_text(wanted.shape)}; Actual: {shape_text(produced.shape)}",
            )

    def _check_source_node(self, target: str, source: Source) -> None:
        if source.node == RESPONSE:
            raise _fail("Pipeline definition has response node used as dependency node", target)
        if source.node != REQUEST and source.node not in self._by_name:
            raise _fail("Pipeline definition has reference to missing node", f"{target} uses {source.node}")

    def _source_spec(self, target: str, input_name: str, source: Source) -> TensorSpec:
        """What a connection carries (a request input's spec is unknown here: None dtype); checks that the source
        node exists, is not the response, declares the alias and that the alias names a real output."""
        self._check_source_node(target, source)
        if source.node == REQUEST:
            if source.item not in self.config.inputs:
                raise _fail(
                    "Pipeline definition has reference to missing data source",
                    f"{target} input {input_name} takes request.{source.item}, not a pipeline input",
                )
            return TensorSpec(source.item, None, ())
        node = self._by_name[source.node]
        if source.item not in node.outputs:
            raise _fail(
                "Pipeline definition has reference to missing data source",
                f"{target} input {input_name} takes {source.node}.{source.item}; {source.node} declares no such alias",
            )
        item = node.outputs[source.item]
        servable = self._servable(node.name)
        if item not in servable.outputs:
            raise _fail(
                "Pipeline definition has reference to missing model output",
                f"{source.node} ({node.model_name or node.library_name}) has no output {item}",
            )
        spec = servable.outputs[item]
        shape = spec.shape[1:] if node.demultiply_count is not None else spec.shape
        return TensorSpec(source.item, spec.dtype, shape, spec.layout)

    # --- graph and levels (docs/pipelines.md#load-time-rules steps 4-5)
    # --------------------------------------------------------------------

    def _levels(self) -> dict[str, Node]:
        config = self.config
        graph: dict[str, set[str]] = {n.name: {s.node for s in n.inputs.values()} for n in config.nodes}
        graph[RESPONSE] = {s.node for s in config.outputs.values()}
        try:
            order = list(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as e:
            raise _fail("Pipeline definition contains a cycle", " -> ".join(e.args[1])) from e
        unused = sorted(set(self._by_name) - self._reachable(graph))
        if unused:
            raise _fail("Pipeline definition has unconnected nodes", ", ".join(unused))
        nodes: dict[str, Node] = {}
        levels: dict[str, tuple[str, ...]] = {REQUEST: (REQUEST,) if REQUEST in self.counts else ()}
        for name in order:
            if name in (REQUEST, RESPONSE):
                continue
            node = self._by_name[name]
            in_level = self._in_level(node.name, node.inputs.values(), node.gather_from_node, levels)
            levels[name] = in_level + ((name,) if node.demultiply_count is not None else ())
            nodes[name] = Node(node, self._servable(name), in_level, levels[name])
        # The response gathers each output over every demultiplexer still open for it; unlike OVMS, outputs of
        # different levels may be mixed (the labels after a gather beside the per-crop scores it gathered).
        return nodes

    @staticmethod
    def _reachable(graph: Mapping[str, set[str]]) -> set[str]:
        seen, todo = set(), [RESPONSE]
        while todo:
            for source in graph.get(todo.pop(), set()):
                if source not in seen:
                    seen.add(source)
                    todo.append(source)
        return seen

    @staticmethod
    def _in_level(
        name: str, sources: Iterable[Source], gather: str | None, levels: Mapping[str, tuple[str, ...]]
    ) -> tuple[str, ...]:
        """The demultiplexers open at a node's inputs, after it gathers (LIFO: only the innermost can be gathered;
        the response gathers all that are left)."""
        found = {levels[s.node] for s in sources}
        if len(found) > 1:
            shown = " and ".join(sorted("(" + ",".join(level) + ")" for level in found))
            raise _fail(
                "Demultiplexer and gather nodes are not in LIFO order",
                f"{name} takes inputs from different demultiplexing levels {shown}",
            )
        level = found.pop() if found else ()
        if gather is not None:
            if not level or level[-1] != gather:
                innermost = level[-1] if level else "none"
                raise _fail(
                    "Demultiplexer and gather nodes are not in LIFO order",
                    f"{name} gathers from {gather}; the innermost open demultiplexer is {innermost}",
                )
            level = level[:-1]
        return level

    def _dim(self, demultiplexer: str) -> Dim:
        """The dimension a demultiplexer adds when gathered: its count, or for a dynamic custom node the first
        dimension of its first output's metadata (docs/pipelines.md#pipeline-metadata), else -1."""
        count = self.counts[demultiplexer]
        if count > 0:
            return count
        if demultiplexer != REQUEST and self._by_name[demultiplexer].kind == "custom":
            first = next(iter(self._servable(demultiplexer).outputs.values()))
            if first.shape and isinstance(first.shape[0], int) and first.shape[0] > 0:
                return first.shape[0]
        return -1

    # --- metadata (docs/pipelines.md#pipeline-metadata)
    # ---------------------------------------------------------------------------------

    def _input_specs(self) -> dict[str, TensorSpec]:
        specs: dict[str, TensorSpec] = {}
        for node in self.nodes.values():
            for input_name, source in node.config.inputs.items():
                if source.node != REQUEST:
                    continue
                spec = node.model.inputs[input_name]
                if node.config.gather_from_node is not None:
                    spec = TensorSpec(spec.name, spec.dtype, spec.shape[1:], spec.layout)
                known = specs.get(source.item)
                if known is not None:
                    spec = _intersect(known, spec, source.item)
                specs[source.item] = TensorSpec(source.item, spec.dtype, spec.shape, spec.layout)
        # an input only the response takes: unspecified (docs/pipelines.md#pipeline-metadata)
        for source in self.config.outputs.values():
            if source.node == REQUEST and source.item not in specs:
                specs[source.item] = TensorSpec(source.item, None, ())
        if REQUEST in self.counts:
            strings = sorted(n for n, s in specs.items() if s.dtype == np.dtype(object))
            if strings:
                raise LoadError(
                    "NOT_IMPLEMENTED",
                    f"Demultiplication is not supported for string precision - request: {', '.join(strings)}",
                )
            specs = {name: self._with_demux_dim(s) for name, s in specs.items()}
        return dict(sorted(specs.items()))

    def _with_demux_dim(self, spec: TensorSpec) -> TensorSpec:
        layout = spec.layout or ("N..." if spec.shape else "...")
        shape = (self._dim(REQUEST), *spec.shape)
        return TensorSpec(spec.name, spec.dtype, shape, "N" + layout.replace("N", "?"), demultiplexed=True)

    def _output_specs(self) -> dict[str, TensorSpec]:
        specs: dict[str, TensorSpec] = {}
        for name, source in self.config.outputs.items():
            if source.node == REQUEST:
                specs[name] = TensorSpec(name, None, ())
                continue
            node = self.nodes[source.node]
            inner = self._source_spec(RESPONSE, name, source)
            gathered = tuple(self._dim(d) for d in node.out_level)
            specs[name] = TensorSpec(name, inner.dtype, gathered + inner.shape)
        return dict(sorted(specs.items()))

    # --- lifetime ---------------------------------------------------------------------------------------------

    def retire(self) -> None:
        """No new requests will come; custom nodes are let go once the requests holding the definition end."""
        self._retired = True
        self._release_if_idle()

    def hold(self) -> None:
        """A request holds the definition (from its lookup, see Manager.lease): its custom nodes stay open."""
        self._running += 1

    def let_go(self) -> None:
        self._running -= 1
        self._release_if_idle()

    def _release_if_idle(self) -> None:
        if self._retired and self._running == 0:
            nodes, self.custom_nodes = self.custom_nodes, []
            for custom in nodes:
                custom.drop()
