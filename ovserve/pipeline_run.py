"""One pipeline request's execution: each (node, branch key) runs once, as soon as its inputs are ready."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from time import perf_counter_ns
from typing import Any, TypeVar

import numpy as np

from . import gathering
from .config import Source
from .custom import CustomNode
from .errors import ServingError
from .metrics import Metrics
from .pipeline import REQUEST, Node, PipelineDefinition
from .runtime import ModelVersion, TensorMap
from .tensors import TensorSpec, check_input, shape_text
from .types import CountRun

MAX_BRANCHES = 10000
BRANCH_WINDOW = 64  # branches of one demultiplexer a request runs at a time, by default
Key = tuple[int, ...]  # branch indices, one per open demultiplexer
T = TypeVar("T")
Resolve = Callable[[str, "int | None"], ModelVersion]  # (model name, version or None) → model version


async def run(
    definition: PipelineDefinition,
    inputs: TensorMap,
    resolve: Resolve,
    metrics: Metrics | None = None,
    count: CountRun | None = None,
    window: int = BRANCH_WINDOW,
) -> dict[str, np.ndarray]:
    """Run the graph for one validated request; `resolve` gives each DL node its model version now; each gather
    runs at most `window` branches at a time, so one request of thousands of branches does not crowd out other
    requests. The definition is held while it runs."""
    models = {name: n.custom or resolve(n.config.model_name, n.config.version) for name, n in definition.nodes.items()}
    execution = _Run(definition, models, inputs, metrics or Metrics(()), count, window)
    definition.hold()
    try:
        return await execution.response()
    finally:
        execution.tasks.clear()  # failed tasks and their tracebacks back to the run form a cycle holding node outputs
        definition.let_go()


def split_count(outputs: Mapping[str, np.ndarray], count: int, where: str) -> int:
    """Number of branches a demultiplexer's outputs give, checked in the order of docs/pipelines.md#runtime: the count
    (dim 0 of the first output), string precision, rank, then dim 0 of every output against the count."""
    first = next(iter(outputs.values()), None)
    if first is not None and first.ndim and first.shape[0] > MAX_BRANCHES:
        raise ServingError(
            "PIPELINE_TOO_LARGE_DIMENSION_SIZE_TO_DEMULTIPLY",
            f"{where}: {first.shape[0]} branches, at most {MAX_BRANCHES}",
        )
    firsts = set()
    for name, array in outputs.items():
        if array.dtype == object:
            raise ServingError("PIPELINE_STRING_DEMULTIPLICATION_UNSUPPORTED", f"{where}: {name}")
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
    if branches == 0:
        raise ServingError("PIPELINE_DEMULTIPLEXER_NO_RESULTS", f"{where} produced 0 branches")
    return branches


class _Run:
    """One request's execution: each (node, branch key) runs once, as soon as its inputs are ready."""

    def __init__(
        self,
        pipeline: PipelineDefinition,
        models: Mapping[str, ModelVersion | CustomNode],
        inputs: TensorMap,
        metrics: Metrics,
        count: CountRun | None,
        window: int,
    ):
        self.pipeline = pipeline
        self.models = models
        self.inputs = inputs
        self.metrics = metrics
        self.count_run = count
        self.window = window
        self.tasks: dict[tuple[str, Key], asyncio.Future[Mapping[str, np.ndarray]]] = {}
        self.gathering: set[asyncio.Future[Any]] = set()  # the tasks of _all not done yet
        self.branches: dict[tuple[str, Key], int] = {}
        self.checked: set[tuple[str, str, np.dtype, tuple[int, ...]]] = set()  # node inputs that passed check_input

    async def response(self) -> dict[str, np.ndarray]:
        try:
            names = list(self.pipeline.config.outputs)
            values = await self._all(self._gathered(self.pipeline.config.outputs[n], ()) for n in names)
            return dict(zip(names, values, strict=True))
        except BaseException:
            # Running inferences end before we answer, and nothing starts after: a gathering task that resumes
            # meanwhile may start more nodes, which the next round cancels before they run.
            while pending := [t for t in (*self.tasks.values(), *self.gathering) if not t.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            raise

    def _all(self, awaitables: Iterable[Awaitable[T]], width: int = sys.maxsize) -> asyncio.Future[list[T]]:
        """Gather `awaitables` (at most `width` running); the tasks made of coroutines are kept (node runs are in
        `tasks` already), so that a failed request can cancel and await them too."""
        return gathering.gather(awaitables, width, self._keep)

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self.gathering.add(task)
        task.add_done_callback(self.gathering.discard)

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

    async def _run_model(self, node: Node, key: Key) -> Mapping[str, np.ndarray]:
        config, model = node.config, self.models[node.name]
        names = list(config.inputs)
        if len(names) == 1:  # the common case needs no extra task per branch
            feeds = {names[0]: await self._gathered(config.inputs[names[0]], key)}
        else:
            values = await self._all(self._gathered(config.inputs[n], key) for n in names)
            feeds = dict(zip(names, values, strict=True))
        started = perf_counter_ns()
        try:
            for input_name, value in feeds.items():
                self._check(node.name, input_name, value, model.inputs[input_name])
            results = await model.infer(feeds)
            if node.custom is not None:
                missing = sorted(item for item in config.outputs.values() if item not in results)
                if missing:
                    given = ", ".join(sorted(results)) or "nothing"
                    raise ServingError(
                        "NODE_LIBRARY_MISSING_OUTPUT",
                        f"node {node.name} did not produce {', '.join(missing)}; it gave {given}",
                    )
        except ServingError as e:
            self._record(node.name, model, False, started)
            e.locate(node.name, _branch(key))  # for the request log
            if not key:
                raise
            raise ServingError(e.status, f"{e.details}; branch {_branch(key)}") from e
        except BaseException:
            self._record(node.name, model, False, started)
            raise
        self._record(node.name, model, True, started)
        return {alias: results[item] for alias, item in config.outputs.items() if item in results}

    def _check(self, node: str, name: str, value: np.ndarray, spec: TensorSpec) -> None:
        """check_input, once per node input, precision and shape in a request (its branches repeat them)."""
        seen = (node, name, value.dtype, value.shape)
        if seen not in self.checked:
            check_input(value, spec, node=node)
            self.checked.add(seen)

    def _record(self, node: str, model: ModelVersion | CustomNode, ok: bool, started: int) -> None:
        self.metrics.node(self.pipeline.name, node, ok, (perf_counter_ns() - started) / 1000)
        if self.count_run is not None and isinstance(model, ModelVersion):  # OVMS counts DL node runs on their model
            self.count_run(model.name, model.version, ok)

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
        if depth == 1 and source.node != demux:  # each shard is an output of the node's run in a branch, as it is
            runs = await self._all((self._outputs(source.node, (*key, i)) for i in range(count)), self.window)
            shards = [outputs[source.item] for outputs in runs]
        else:
            shards = await self._all((self._gathered(source, (*key, i)) for i in range(count)), self.window)
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
