"""Protocol-neutral operations every frontend calls: infer, metadata, readiness, status; request metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from time import perf_counter_ns

from . import graph, images
from .errors import ServingError
from .manager import Manager
from .metrics import Metrics
from .requestlog import RequestLog
from .shm import Regions
from .stateful import StatefulModelVersion
from .tensors import check_inputs
from .types import Endpoint, ImageLimits, InferRequest, InferResult, Origin, Servable, VersionStatus


class DataPlane:
    def __init__(
        self,
        manager: Manager,
        metrics: Metrics | None = None,
        ready_needs_all: bool = False,
        image_limits: ImageLimits | None = None,
        regions: Regions | None = None,
        access_log: bool = False,
    ) -> None:
        self.manager = manager
        self.requests = RequestLog(self.kind, access_log)  # what both doors log of each request
        self.image_limits = image_limits or ImageLimits()  # encoded images in requests: how large once decoded
        self.metrics = metrics or manager.metrics
        self.regions = regions or Regions()  # system shared memory clients registered (off unless enabled)
        self.ready_needs_all = ready_needs_all  # readiness also waits for every model and pipeline to serve
        self.draining = False  # the server is stopping: not ready, though requests are still served

    async def servable(
        self, name: str, version: int | None, missing: str = "PIPELINE_DEFINITION_NAME_MISSING"
    ) -> Servable:
        """A model by name (its version or the default), else a pipeline of that name (version ignored); neither
        raises `missing` (the status each API reports for an unknown name)."""
        if name in self.manager.models:
            return await self.manager.model_version(name, version)
        if name not in self.manager.pipelines:
            raise ServingError(missing, name)
        return await self.manager.pipeline(name)

    async def infer(
        self, request: InferRequest, origin: Origin, missing: str = "PIPELINE_DEFINITION_NAME_MISSING"
    ) -> InferResult:
        """Validate and run a request. `request.inputs` may be a decoder that needs the servable's input specs
        (REST formats whose values take the model's precision, binary inputs decoded to the input's shape)."""
        servable = await self.servable(request.target, request.version, missing)
        stats = self.manager.metrics.stats.of(servable.name, servable.version)  # Triton's statistics, always kept
        started = perf_counter_ns()
        try:
            decoded = request.inputs if not callable(request.inputs) else request.inputs(servable.accepts)
            inputs = decoded if isinstance(decoded, Mapping) else await decoded.finish(self.image_limits)
            check_inputs(inputs, servable.accepts)
            checked = perf_counter_ns()
            if isinstance(servable, StatefulModelVersion):
                outputs, sequence_id = await servable.infer_in_sequence(inputs)
            else:
                outputs, sequence_id = await servable.infer(inputs, origin), None
        except BaseException:
            stats.failed(started, perf_counter_ns())
            self.metrics.request(origin, servable.name, servable.version, False)
            raise
        ended = perf_counter_ns()
        stats.succeeded(started, checked, ended)
        self.metrics.request(origin, servable.name, servable.version, True, (ended - started) / 1000)
        return InferResult(servable.name, servable.version, images.strings_out(outputs), sequence_id)

    async def endpoint(self, name: str, version: int | None, origin: Origin) -> Endpoint:
        """Metadata of what is serving now (no waiting for a version that is still loading)."""
        if name in self.manager.models:
            servable: Servable = self.manager.model_version_now(name, version)
            available = tuple(s.version for s in self.status(name, None) if s.state == "AVAILABLE")
        elif name in self.manager.pipelines:
            servable = await self.manager.pipeline(name, wait=False)
            available = (1,)
        else:
            raise ServingError("MODEL_NAME_MISSING", name)
        self.metrics.request(origin, servable.name, servable.version, True)
        return Endpoint(
            servable.name, servable.version, servable.inputs, servable.outputs, available, servable.model_info
        )

    def model_ready(self, name: str, version: int | None, origin: Origin) -> bool:
        """KServe ModelReady: the requested (or default) version is AVAILABLE; a pipeline is available."""
        ready = self.serving(name, version)
        self.metrics.request(origin, name, 1, True)
        return ready

    def serving(self, name: str, version: int | None = None) -> bool:
        """Whether a model's requested (or default) version is AVAILABLE, or a pipeline is; unknown names raise."""
        if name in self.manager.models:
            entry = self.manager.models[name]
            chosen = entry.versions.get(version) if version else entry.default()
            if chosen is None:
                raise ServingError(
                    "MODEL_VERSION_MISSING", f"model {name}" + (f" version {version}" if version else "")
                )
            return chosen.state == "AVAILABLE"
        if name in self.manager.pipelines:
            return self.manager.pipelines[name].definition is not None
        raise ServingError("MODEL_NAME_MISSING", name)

    def status(self, name: str, version: int | None, origin: Origin | None = None) -> list[VersionStatus]:
        rows = self.manager.status(name, version)
        if origin is not None:
            self.metrics.request(origin, name, 1, True)
        return rows

    async def pipeline_graph(self, name: str) -> bytes:
        """A pipeline drawn as SVG (beyond OVMS): its nodes, connections and metadata, or why it fails validation."""
        entry = self.manager.pipelines.get(name)
        if entry is None:
            raise ServingError("PIPELINE_DEFINITION_NAME_MISSING", name)
        if entry.retired:
            raise ServingError("PIPELINE_DEFINITION_NOT_LOADED_ANYMORE", f"pipeline {name}")
        text = graph.dot(graph.picture(entry.config, entry.definition, entry.error))
        try:
            return await asyncio.to_thread(graph.svg, text)
        except graph.LayoutError as e:
            raise ServingError("GRAPH_LAYOUT_UNAVAILABLE", str(e)) from e

    def kind(self, name: str) -> str:
        """What a request's name refers to, for the log: "pipeline", else "model" (models are looked up first)."""
        return "pipeline" if name in self.manager.pipelines and name not in self.manager.models else "model"

    def names(self) -> list[str]:
        """Every model and pipeline name known to the server, sorted."""
        return sorted({*self.manager.models, *self.manager.pipelines})

    @property
    def ready(self) -> bool:
        """Server readiness: the first load is done and the server is not stopping; with `ready_needs_all`, also
        every configured model and pipeline serves (a rollout with a broken model then stops instead of serving)."""
        if self.draining or not self.manager.loaded.is_set():
            return False
        if not self.ready_needs_all:
            return True
        models = (n for n, e in self.manager.models.items() if not e.retired)
        pipelines = (n for n, e in self.manager.pipelines.items() if not e.retired)
        try:
            return all(self.serving(name) for name in (*models, *pipelines))
        except ServingError:  # a model with no version at all
            return False
