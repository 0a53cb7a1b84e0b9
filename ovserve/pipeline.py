"""DAG pipelines: load-time definition (levels, validation, metadata; spec §5.2-5.3) and event-driven execution."""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from time import perf_counter_ns

import numpy as np

from .config import NodeConfig, PipelineConfig, Source
from .errors import LoadError, ServingError
from .metrics import Metrics
from .runtime import ModelVersion, TensorMap
from .tensors import Dim, TensorSpec, check_input, dims_overlap, precision_name, shape_text
from .types import Origin

REQUEST, RESPONSE = "request", "response"
MAX_BRANCHES = 10000
Key = tuple[int, ...]  # branch indices, one per open demultiplexer
Resolve = Callable[[str, "int | None"], ModelVersion]  # (model name, version or None) → model version


def _fail(message: str, details: str) -> LoadError:
    return LoadError("PIPELINE_DEFINITION_INVALID", f"{message} - {details}")


@dataclass(frozen=True)
class _Node:
    config: NodeConfig
    model: ModelVersion  # the version seen at load time: metadata and validation only
    in_level: tuple[str, ...]  # demultiplexers open for this node's inputs (after its own gather)
    out_level: tuple[str, ...]  # ... and for its outputs (adds itself when it demultiplexes)

    @property
    def name(self) -> str:
        return self.config.name


def split_count(outputs: Mapping[str, np.ndarray], count: int, where: str) -> int:
    """Number of branches a demultiplexer's outputs give, checked as spec §5.4 says."""
    firsts = set()
    for name, array in outputs.items():
        if array.dtype == object:
            raise ServingError(
                "NOT_IMPLEMENTED", f"Demultiplication is not supported for string precision: {where} {name}"
            )
        if array.ndim < 3:
            raise ServingError(
                "PIPELINE_WRONG_NUMBER_OF_DIMENSIONS_TO_DEMULTIPLY",
                f"{where}: {name} has shape {shape_text(array.shape)}; demultiplexing needs at least 3 dimensions",
            )
        firsts.add(array.shape[0])
        if count > 0 and array.shape[0] != count:
            raise ServingError(
                "PIPELINE_WRONG_DIMENSION_SIZE_TO_DEMULTIPLY",
                f"{where}: {name} has first dimension {array.shape[0]}, demultiply_count is {count}",
            )
    if len(firsts) > 1:
        sizes = ", ".join(f"{n}: {a.shape[0]}" for n, a in outputs.items())
        raise ServingError("PIPELINE_WRONG_DIMENSION_SIZE_TO_DEMULTIPLY", f"{where}: first dimensions differ ({sizes})")
    branches = firsts.pop() if firsts else 0
    if branches > MAX_BRANCHES:
        raise ServingError(
            "PIPELINE_TOO_LARGE_DIMENSION_SIZE_TO_DEMULTIPLY", f"{where}: {branches} branches, at most {MAX_BRANCHES}"
        )
    if branches == 0:
        raise ServingError("PIPELINE_DEMULTIPLEXER_NO_RESULTS", f"{where} produced 0 branches")
    return branches


class PipelineDefinition:
    """A validated pipeline: its nodes in dependency order, their demultiplexing levels and its metadata."""

    def __init__(self, config: PipelineConfig, models: Mapping[str, ModelVersion]) -> None:
        """`models` maps each node name to the model version the node uses now; raises LoadError."""
        self.config = config
        self.name = config.name
        # demultiply_count of every demultiplexer, the request's included (key "request")
        self.counts = {n.name: n.demultiply_count for n in config.nodes if n.demultiply_count is not None}
        if config.demultiply_count is not None:
            self.counts[REQUEST] = config.demultiply_count
        self.nodes = self._order(config, models)
        self.inputs = self._input_specs()
        self.outputs = self._output_specs()

    # --- structure ---------------------------------------------------------------------------------------

    def _order(self, config: PipelineConfig, models: Mapping[str, ModelVersion]) -> dict[str, _Node]:
        by_name = {n.name: n for n in config.nodes}
        if len(by_name) != len(config.nodes) or {REQUEST, RESPONSE} & set(by_name):
            raise _fail("Pipeline definition has multiple nodes with the same name", config.name)
        if any(c < 0 for c in self.counts.values()) and len(self.counts) > 1:
            raise LoadError(
                "NOT_IMPLEMENTED",
                f"Functionality not implemented - pipeline {config.name} has a dynamic demultiplexer and another one",
            )
        graph: dict[str, set[str]] = {n.name: {s.node for s in n.inputs.values()} for n in config.nodes}
        graph[RESPONSE] = {s.node for s in config.outputs.values()}
        for node_name, sources in graph.items():
            for source in sources - {REQUEST}:
                if source == RESPONSE:
                    raise _fail("Pipeline definition has response node used as dependency node", node_name)
                if source not in by_name:
                    raise _fail("Pipeline definition has reference to missing node", f"{node_name} uses {source}")
        try:
            order = list(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as e:
            raise _fail("Pipeline definition contains a cycle", " -> ".join(e.args[1])) from e
        needed = self._reachable(graph)
        unused = sorted(set(by_name) - needed)
        if unused:
            raise _fail("Pipeline definition has unconnected nodes", ", ".join(unused))
        nodes: dict[str, _Node] = {}
        levels: dict[str, tuple[str, ...]] = {REQUEST: (REQUEST,) if REQUEST in self.counts else ()}
        for name in order:
            if name in (REQUEST, RESPONSE):
                continue
            node = by_name[name]
            in_level = self._in_level(node.name, node.inputs.values(), node.gather_from_node, levels)
            levels[name] = in_level + ((name,) if node.demultiply_count is not None else ())
            nodes[name] = _Node(node, models[name], in_level, levels[name])
            self._check_node(nodes[name], nodes)
        self._in_level(RESPONSE, config.outputs.values(), None, levels, response=True)
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

    def _in_level(
        self,
        name: str,
        sources: Iterable[Source],
        gather: str | None,
        levels: Mapping[str, tuple[str, ...]],
        response: bool = False,
    ) -> tuple[str, ...]:
        found = {levels[s.node] for s in sources}
        if len(found) > 1:
            raise _fail(
                "Demultiplexer and gather nodes are not in LIFO order", f"{name} takes inputs from different levels"
            )
        level = found.pop() if found else ()
        if gather is not None:
            if gather not in self.counts or gather == REQUEST:
                what = (
                    "Gather node refers to not existing node"
                    if gather not in levels
                    else "Gather node refers to node that isn't demultiplexer"
                )
                raise _fail(what, f"{name} gathers from {gather}")
            if not level or level[-1] != gather:
                raise _fail("Demultiplexer and gather nodes are not in LIFO order", f"{name} gathers from {gather}")
            level = level[:-1]
        return () if response else level

    def _check_node(self, node: _Node, nodes: Mapping[str, _Node]) -> None:
        """Connections of a DL node: known inputs and sources, all inputs fed, shapes and precisions agree."""
        model, config = node.model, node.config
        for input_name, source in config.inputs.items():
            if input_name not in model.inputs:
                raise _fail(
                    "Pipeline definition has connection to non existing model input", f"{node.name}: {input_name}"
                )
            produced = self._source_spec(source, nodes)
            expected = model.inputs[input_name]
            if config.gather_from_node is not None:
                produced = TensorSpec(
                    produced.name, produced.dtype, (self._dim(config.gather_from_node), *produced.shape)
                )
            if produced.dtype is not None and expected.dtype is not None and produced.dtype != expected.dtype:
                raise LoadError(
                    "INVALID_PRECISION",
                    f"Invalid input precision - Node: {node.name} input: {input_name} Expected: "
                    f"{precision_name(expected.dtype)}; Actual: {precision_name(produced.dtype)}",
                )
            compatible = len(produced.shape) == len(expected.shape) and all(
                dims_overlap(a, b) for a, b in zip(produced.shape, expected.shape, strict=True)
            )
            if produced.dtype is not None and not compatible:
                raise LoadError(
                    "INVALID_SHAPE",
                    f"Invalid input shape - Node: {node.name} input: {input_name} Expected: "
                    f"{shape_text(expected.shape)}; Actual: {shape_text(produced.shape)}",
                )
        missing = sorted(set(model.inputs) - set(config.inputs))
        if missing:
            raise _fail(
                "Pipeline definition does not have connections for all inputs of underlying models",
                f"{node.name} ({config.model_name}): {', '.join(missing)}",
            )
        if config.demultiply_count is not None:
            for alias, item in config.outputs.items():
                shape = model.outputs[item].shape if item in model.outputs else ()
                if len(shape) < 3:
                    raise LoadError(
                        "PIPELINE_NOT_ENOUGH_SHAPE_DIMENSIONS_TO_DEMULTIPLY",
                        f"Pipeline has not enough shape dimensions to demultiply - {node.name} output {alias}",
                    )

    def _dim(self, demultiplexer: str) -> Dim:
        count = self.counts[demultiplexer]
        return count if count > 0 else -1

    def _source_spec(self, source: Source, nodes: Mapping[str, _Node]) -> TensorSpec:
        """What a connection carries: a request input's spec is unknown here (None dtype)."""
        if source.node == REQUEST:
            if source.item not in self.config.inputs:
                raise _fail("Pipeline definition has reference to missing data source", f"request: {source.item}")
            return TensorSpec(source.item, None, ())
        node = nodes[source.node]
        if source.item not in node.config.outputs:
            raise _fail("Pipeline definition has reference to missing data source", f"{source.node}: {source.item}")
        item = node.config.outputs[source.item]
        if item not in node.model.outputs:
            raise _fail("Pipeline definition has reference to missing model output", f"{source.node}: {item}")
        spec = node.model.outputs[item]
        shape = spec.shape[1:] if node.config.demultiply_count is not None else spec.shape
        return TensorSpec(source.item, spec.dtype, shape, spec.layout)

    # --- metadata (spec §5.2) ---------------------------------------------------------------------------------

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
                if known is not None and (known.dtype != spec.dtype or known.shape != spec.shape):
                    raise _fail(
                        "Multiple nodes connected to the same pipeline input require different tensor metadata",
                        source.item,
                    )
                specs[source.item] = TensorSpec(source.item, spec.dtype, spec.shape, spec.layout)
        if REQUEST in self.counts:
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
            inner = self._source_spec(source, self.nodes)
            gathered = tuple(self._dim(d) for d in node.out_level)
            specs[name] = TensorSpec(name, inner.dtype, gathered + inner.shape)
        return dict(sorted(specs.items()))

    # --- execution ----------------------------------------------------------------------------------------

    async def infer(
        self, inputs: TensorMap, resolve: Resolve, metrics: Metrics | None = None, origin: Origin | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph for one validated request; `resolve` gives each DL node its model version now."""
        models = {name: resolve(n.config.model_name, n.config.version) for name, n in self.nodes.items()}
        return await _Run(self, models, inputs, metrics or Metrics(()), origin).response()


class _Run:
    """One request's execution: each (node, branch key) runs once, as soon as its inputs are ready."""

    def __init__(
        self,
        pipeline: PipelineDefinition,
        models: Mapping[str, ModelVersion],
        inputs: TensorMap,
        metrics: Metrics,
        origin: Origin | None,
    ):
        self.pipeline = pipeline
        self.models = models
        self.inputs = inputs
        self.metrics = metrics
        self.origin = origin
        self.tasks: dict[tuple[str, Key], asyncio.Future[Mapping[str, np.ndarray]]] = {}
        self.branches: dict[tuple[str, Key], int] = {}

    async def response(self) -> dict[str, np.ndarray]:
        try:
            names = list(self.pipeline.config.outputs)
            values = await asyncio.gather(*(self._gathered(self.pipeline.config.outputs[n], ()) for n in names))
            return dict(zip(names, values, strict=True))
        except BaseException:
            pending = [t for t in self.tasks.values() if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)  # running inferences end before we answer
            raise

    def _outputs(self, node: str, key: Key) -> asyncio.Future[Mapping[str, np.ndarray]]:
        task = self.tasks.get((node, key))
        if task is None:
            task = self.tasks[(node, key)] = asyncio.ensure_future(self._execute(node, key))
        return task

    async def _execute(self, name: str, key: Key) -> Mapping[str, np.ndarray]:
        if name == REQUEST:
            outputs = self.inputs
        else:
            outputs = await self._run_model(self.pipeline.nodes[name], key)
        count = self.pipeline.counts.get(name)
        if count is not None:
            where = "pipeline input demultiplexer" if name == REQUEST else f"node {name}"
            where += f" in branch {_branch(key)}" if key else ""
            self.branches[(name, key)] = branches = split_count(outputs, count, where)
            self.metrics.branches(self.pipeline.name, name, branches)
        return outputs

    async def _run_model(self, node: _Node, key: Key) -> Mapping[str, np.ndarray]:
        config, model = node.config, self.models[node.name]
        names = list(config.inputs)
        if len(names) == 1:  # the common case needs no extra task per branch
            feeds = {names[0]: await self._gathered(config.inputs[names[0]], key)}
        else:
            values = await asyncio.gather(*(self._gathered(config.inputs[n], key) for n in names))
            feeds = dict(zip(names, values, strict=True))
        started = perf_counter_ns()
        try:
            for input_name, value in feeds.items():
                check_input(value, model.inputs[input_name], node=node.name)
            results = await model.infer(feeds)
        except ServingError as e:
            self._record(node.name, model, False, started)
            if not key:
                raise
            raise ServingError(e.status, f"{e.details}; branch {_branch(key)}") from e
        except BaseException:
            self._record(node.name, model, False, started)
            raise
        self._record(node.name, model, True, started)
        return {alias: results[item] for alias, item in config.outputs.items() if item in results}

    def _record(self, node: str, model: ModelVersion, ok: bool, started: int) -> None:
        self.metrics.node(self.pipeline.name, node, ok, (perf_counter_ns() - started) / 1000)
        if self.origin is not None:  # OVMS also counts each DL node execution on that node's model
            self.metrics.request(self.origin, model.name, model.version, ok)

    async def _gathered(self, source: Source, key: Key) -> np.ndarray:
        """A source's value for a consumer at `key`, stacked over the branches of every demultiplexer the source
        has open beyond the consumer's level (the one a node gathers from; all of them at the response)."""
        out_level = self.pipeline.nodes[source.node].out_level if source.node != REQUEST else self._request_level()
        depth = len(out_level) - len(key)
        if depth == 0:
            return await self._value(source, key)
        demux = out_level[len(key)]
        await self._outputs(demux, key)  # demultiplexer number len(key) ran at the key of the levels before it
        count = self.branches[(demux, key)]
        shards = await asyncio.gather(*(self._gathered(source, (*key, i)) for i in range(count)))
        first = shards[0]
        if any(s.shape != first.shape or s.dtype != first.dtype for s in shards):
            sizes = sorted({shape_text(s.shape) for s in shards})
            raise ServingError("PIPELINE_INCONSISTENT_SHARD_DIMENSIONS", f"gathering {demux}: shards of shapes {sizes}")
        gathered = np.empty((count, *first.shape), first.dtype)  # one allocation; each shard copied once
        for i, shard in enumerate(shards):
            gathered[i] = shard
        return gathered

    def _request_level(self) -> tuple[str, ...]:
        return (REQUEST,) if REQUEST in self.pipeline.counts else ()

    async def _value(self, source: Source, key: Key) -> np.ndarray:
        """A source's value in branch `key` (whose length equals the source's output level)."""
        is_demux = source.node in self.pipeline.counts
        produced_at = key[:-1] if is_demux else key
        outputs = await self._outputs(source.node, produced_at)
        value = outputs[source.item]
        return value[key[-1]] if is_demux else value


def _branch(key: Key) -> str:
    return "/".join(str(i) for i in key)
