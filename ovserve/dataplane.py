"""Protocol-neutral operations every frontend calls: infer, metadata, readiness, status; request metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial
from time import perf_counter_ns

from . import graph, images, stats
from .errors import ServingError
from .manager import Manager
from .metrics import Metrics
from .requestlog import RequestLog
from .shm import Regions
from .stateful import StatefulModelVersion
from .tensors import check_inputs
from .types import Endpoint, ImageLimits, InferRequest, InferResult, Origin, VersionStatus


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

    async def infer(
        self, request: InferRequest, origin: Origin, missing: str = "PIPELINE_DEFINITION_NAME_MISSING"
    ) -> InferResult:
        """Lease the servable, decode, check and run a request. `request.inputs` may be a decoder that needs the
        servable's input specs (REST formats whose values take the model's precision, binary inputs decoded to the
        input's shape); `missing` is the status each API reports for an unknown name."""
        async with self.manager.lease(request.target, request.version, missing) as servable:
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
                    outputs, sequence_id = await servable.infer(inputs, partial(self.metrics.request, origin)), None
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
        endpoint = self.manager.metadata(name, version)
        self.metrics.request(origin, endpoint.name, endpoint.version, True)
        return endpoint

    def model_ready(self, name: str, version: int | None, origin: Origin) -> bool:
        """KServe ModelReady: the requested (or default) version is AVAILABLE; a pipeline is available."""
        ready = self.manager.ready(name, version)
        self.metrics.request(origin, name, 1, True)
        return ready

    def serving(self, name: str, version: int | None = None) -> bool:
        """Whether a model's requested (or default) version is AVAILABLE, or a pipeline is; unknown names raise."""
        return self.manager.ready(name, version)

    def status(self, name: str, version: int | None, origin: Origin | None = None) -> list[VersionStatus]:
        rows = self.manager.status(name, version)
        if origin is not None:
            self.metrics.request(origin, name, 1, True)
        return rows

    async def pipeline_graph(self, name: str) -> bytes:
        """A pipeline drawn as SVG (beyond OVMS): its nodes, connections and metadata, or why it fails validation."""
        text = graph.dot(graph.picture(*self.manager.pipeline_picture(name)))
        try:
            return await asyncio.to_thread(graph.svg, text)
        except graph.LayoutError as e:
            raise ServingError("GRAPH_LAYOUT_UNAVAILABLE", str(e)) from e

    def statistics(self, name: str = "", version: int | None = None) -> list[stats.Row]:
        """Triton's statistics of every version serving now, of one model's or pipeline's, or of one version."""
        return stats.rows(self.manager.serving(name, version), self.manager.metrics.stats)

    def index(self, ready_only: bool = False) -> list[stats.IndexRow]:
        """Triton's repository index: every configured model's versions and every pipeline."""
        return stats.index(self.manager.models_view(), self.manager.pipelines_view(), ready_only)

    def is_model(self, name: str) -> bool:
        """Whether a request's name is a model's (a version in it counts), else a pipeline's or unknown."""
        return self.manager.is_model(name)

    def kind(self, name: str) -> str:
        """What a request's name refers to, for the log: "pipeline", else "model" (models are looked up first)."""
        return "pipeline" if self.manager.is_pipeline(name) else "model"

    def names(self) -> list[str]:
        """Every model and pipeline name known to the server, sorted."""
        return self.manager.names()

    @property
    def ready(self) -> bool:
        """Server readiness: the first load is done and the server is not stopping; with `ready_needs_all`, also
        every configured model and pipeline serves (a rollout with a broken model then stops instead of serving)."""
        if self.draining or not self.manager.started:
            return False
        return not self.ready_needs_all or self.manager.all_ready()
