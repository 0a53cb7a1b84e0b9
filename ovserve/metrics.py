"""Prometheus metrics: OVMS families, labels and buckets (docs/operations.md#metrics) and per-node pipeline metrics; no
globals. Triton's statistics counters (always kept, metrics on or off) hang off the same objects."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from time import perf_counter_ns
from typing import Any

from .stats import Statistics
from .types import Origin

BUCKETS_US: tuple[int, ...] = tuple(math.floor(10 * 1.8**i) for i in range(33))

_FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (type, labels in printing order, HELP text)
    "ovms_requests_success": (
        "counter",
        ("api", "interface", "method", "name", "version"),
        "Number of successful requests to a model or a DAG.",
    ),
    "ovms_requests_fail": (
        "counter",
        ("api", "interface", "method", "name", "version"),
        "Number of failed requests to a model or a DAG.",
    ),
    "ovms_request_time_us": (
        "histogram",
        ("interface", "name", "version"),
        "Processing time of requests to a model or a DAG.",
    ),
    "ovms_inference_time_us": ("histogram", ("name", "version"), "Inference execution time in the OpenVINO backend."),
    "ovms_wait_for_infer_req_time_us": (
        "histogram",
        ("name", "version"),
        "Request waiting time in the scheduling queue.",
    ),
    "ovms_streams": ("gauge", ("name", "version"), "Number of OpenVINO execution streams."),
    "ovms_current_requests": ("gauge", ("name", "version"), "Number of inference requests currently in process."),
    "ovms_infer_req_queue_size": ("gauge", ("name", "version"), "Inference request queue size (nireq)."),
    "ovms_infer_req_active": (
        "gauge",
        ("name", "version"),
        "Number of currently consumed inference request from the processing queue.",
    ),
    # Beyond OVMS, whose pipelines report only totals: what each node of a pipeline did.
    "ovserve_pipeline_node_executions": (
        "counter",
        ("name", "node", "status"),
        "Executions of a pipeline node (one per branch), by outcome.",
    ),
    "ovserve_pipeline_node_time_us": (
        "histogram",
        ("name", "node"),
        "Time from a pipeline node's start (its inputs ready) to its outputs.",
    ),
    "ovserve_pipeline_node_branches": (
        "counter",
        ("name", "node"),
        "Branches spawned by a demultiplexing node (the request node included).",
    ),
    # Beyond OVMS, which only logs them: the reloads that shape/batch_size "auto" makes for a request's shape.
    "ovserve_model_reloads": (
        "counter",
        ("name", "version", "status"),
        "Reloads of a model version for the shape of a request (shape or batch_size auto), by outcome.",
    ),
    "ovserve_requests_refused": (
        "counter",
        ("name", "version"),
        "Requests refused because max_queue_size requests already waited for the version's infer requests.",
    ),
}
DEFAULT_FAMILIES = (
    "ovms_requests_success",
    "ovms_requests_fail",
    "ovms_request_time_us",
    "ovms_streams",
    "ovms_inference_time_us",
    "ovms_wait_for_infer_req_time_us",
    "ovms_current_requests",
    "ovserve_pipeline_node_executions",
    "ovserve_pipeline_node_time_us",
    "ovserve_pipeline_node_branches",
    "ovserve_model_reloads",
    "ovserve_requests_refused",
)
FAMILIES = tuple(_FAMILIES)
_REQUEST_METHODS = {
    "TensorFlowServing": ("Predict", "GetModelMetadata", "GetModelStatus"),
    "KServe": ("ModelInfer", "ModelMetadata", "ModelReady"),
}
_UNVERSIONED = frozenset({"GetModelStatus", "ModelReady"})  # OVMS labels these series without a version


class _Family:
    def __init__(self, name: str) -> None:
        self.name = name
        self.kind, self.labels, self.help = _FAMILIES[name]
        self.series: dict[tuple[str, ...], Any] = {}

    def render(self, lines: list[str]) -> None:
        lines.append(f"# HELP {self.name} {self.help}")
        lines.append(f"# TYPE {self.name} {self.kind}")
        for key in sorted(self.series):
            self._render_series(lines, key, self.series[key])

    def _labels(self, key: tuple[str, ...], extra: str = "") -> str:
        names = self.labels if len(key) == len(self.labels) else [n for n in self.labels if n != "version"]
        parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, key, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}"

    def _render_series(self, lines: list[str], key: tuple[str, ...], value: Any) -> None:
        lines.append(f"{self.name}{self._labels(key)} {_number(value)}")


class _Counter(_Family):
    def inc(self, key: tuple[str, ...], amount: float = 1) -> None:
        self.series[key] = self.series.get(key, 0) + amount

    def zero(self, key: tuple[str, ...]) -> None:
        self.series.setdefault(key, 0)


class _Gauge(_Counter):
    def set(self, key: tuple[str, ...], value: float) -> None:
        self.series[key] = value


class _Histogram(_Family):
    def observe(self, key: tuple[str, ...], value: float) -> None:
        state = self.series.get(key)
        if state is None:
            state = self.series[key] = [[0] * (len(BUCKETS_US) + 1), 0.0]
        state[0][bisect_left(BUCKETS_US, value)] += 1
        state[1] += value

    def zero(self, key: tuple[str, ...]) -> None:
        self.series.setdefault(key, [[0] * (len(BUCKETS_US) + 1), 0.0])

    def _render_series(self, lines: list[str], key: tuple[str, ...], value: Any) -> None:
        counts, total = value
        running = 0
        for bound, count in zip((*BUCKETS_US, "+Inf"), counts, strict=True):
            running += count
            le = f'le="{bound}"'
            lines.append(f"{self.name}_bucket{self._labels(key, le)} {running}")
        lines.append(f"{self.name}_sum{self._labels(key)} {_number(total)}")
        lines.append(f"{self.name}_count{self._labels(key)} {running}")


_KINDS: dict[str, type[_Family]] = {"counter": _Counter, "gauge": _Gauge, "histogram": _Histogram}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """The enabled metric families of one server; every recorder is a no-op for a family that is not enabled."""

    def __init__(self, families: Iterable[str] | None = None) -> None:
        """`families`: None = the defaults; () = metrics disabled; else exactly these (names from FAMILIES)."""
        chosen = DEFAULT_FAMILIES if families is None else tuple(families)
        unknown = [f for f in chosen if f not in _FAMILIES]
        if unknown:
            raise ValueError(f"Invalid name in metrics_list: {', '.join(unknown)}")
        self.families: dict[str, Any] = {n: _KINDS[_FAMILIES[n][0]](n) for n in FAMILIES if n in chosen}
        self.enabled = bool(self.families)
        self.stats = Statistics()  # Triton's statistics: kept whether any family is enabled or not
        self._success: _Counter | None = self.families.get("ovms_requests_success")
        self._fail: _Counter | None = self.families.get("ovms_requests_fail")
        self._request_time: _Histogram | None = self.families.get("ovms_request_time_us")
        self._node_executions: _Counter | None = self.families.get("ovserve_pipeline_node_executions")
        self._node_time: _Histogram | None = self.families.get("ovserve_pipeline_node_time_us")
        self._node_branches: _Counter | None = self.families.get("ovserve_pipeline_node_branches")
        # Which ModelMetrics last reported its version loaded: a version loaded again (a config edit) reports before
        # the one it replaces retires, and that one's going must not zero the series they share.
        self.holders: dict[tuple[str, str], ModelMetrics] = {}

    def render(self) -> str:
        """Prometheus text exposition format."""
        lines: list[str] = []
        for family in self.families.values():
            family.render(lines)
        return "\n".join(lines) + "\n" if lines else ""

    # --- requests (frontends via the data plane) ----------------------------------------------------------

    def servable_loaded(self, name: str, version: int) -> None:
        """Create the series OVMS shows (at 0) as soon as a model version or pipeline is loaded."""
        for api, methods in _REQUEST_METHODS.items():
            for interface in ("gRPC", "REST"):
                for method in methods:
                    key = _request_key(Origin(api, interface, method), name, version)  # type: ignore[arg-type]
                    for counter in (self._success, self._fail):
                        if counter is not None:
                            counter.zero(key)
        if self._request_time is not None:
            for interface in ("gRPC", "REST"):
                self._request_time.zero((interface, name, str(version)))

    def request(self, origin: Origin, name: str, version: int, ok: bool, elapsed_us: float | None = None) -> None:
        counter = self._success if ok else self._fail
        if counter is not None:
            counter.inc(_request_key(origin, name, version))
        if elapsed_us is not None and self._request_time is not None:
            self._request_time.observe((origin.interface, name, str(version)), elapsed_us)

    # --- models and pipeline nodes (runtime and pipeline_run) -----------------------------------------------

    def model(self, name: str, version: int) -> ModelMetrics:
        return ModelMetrics(self, name, version)

    def node(self, pipeline: str, node: str, ok: bool, elapsed_us: float) -> None:
        if self._node_executions is not None:
            self._node_executions.inc((pipeline, node, "success" if ok else "fail"))
        if self._node_time is not None:
            self._node_time.observe((pipeline, node), elapsed_us)

    def branches(self, pipeline: str, node: str, count: int) -> None:
        if self._node_branches is not None:
            self._node_branches.inc((pipeline, node), count)


def _request_key(origin: Origin, name: str, version: int) -> tuple[str, ...]:
    if origin.method in _UNVERSIONED:
        return (origin.api, origin.interface, origin.method, name)
    return (origin.api, origin.interface, origin.method, name, str(version))


class ModelMetrics:
    """The series of one model version, bound once so the infer path records with a few dict updates."""

    __slots__ = (
        "_active", "_current", "_holders", "_inference", "_key", "_queue", "_refused", "_reloads", "_stats", "_streams",
        "_wait",
    )  # fmt: skip

    def __init__(self, metrics: Metrics, name: str, version: int) -> None:
        self._key = (name, str(version))
        self._stats = metrics.stats.of(name, version)
        self._holders = metrics.holders
        get = metrics.families.get
        self._inference: _Histogram | None = get("ovms_inference_time_us")
        self._wait: _Histogram | None = get("ovms_wait_for_infer_req_time_us")
        self._streams: _Gauge | None = get("ovms_streams")
        self._current: _Gauge | None = get("ovms_current_requests")
        self._active: _Gauge | None = get("ovms_infer_req_active")
        self._queue: _Gauge | None = get("ovms_infer_req_queue_size")
        self._reloads: _Counter | None = get("ovserve_model_reloads")
        self._refused: _Counter | None = get("ovserve_requests_refused")
        for family in (self._inference, self._wait, self._current, self._active):
            if family is not None:
                family.zero(self._key)

    def loaded(self, streams: int, nireq: int) -> None:
        self._holders[self._key] = self
        self._set(streams, nireq)

    def unloaded(self) -> None:
        if self._holders.get(self._key, self) is self:
            self._holders.pop(self._key, None)
            self._set(0, 0)

    def _set(self, streams: int, nireq: int) -> None:
        if self._streams is not None:
            self._streams.set(self._key, streams)
        if self._queue is not None:
            self._queue.set(self._key, nireq)

    def reloadable(self) -> None:
        """Show the reload series (at 0) of a version that reloads for request shapes."""
        if self._reloads is not None:
            for status in ("success", "fail"):
                self._reloads.zero((*self._key, status))

    def refused(self) -> None:
        if self._refused is not None:
            self._refused.inc(self._key)

    def reloaded(self, ok: bool) -> None:
        if self._reloads is not None:
            self._reloads.inc((*self._key, "success" if ok else "fail"))

    def acquired(self, waited_us: float) -> None:
        self._stats.waited(waited_us * 1000)
        if self._wait is not None:
            self._wait.observe(self._key, waited_us)
        for gauge in (self._current, self._active):
            if gauge is not None:
                gauge.inc(self._key)

    def released(self, inference_us: float | None) -> None:
        """An infer request returned to its pool: `inference_us` of a successful run, None after a failure."""
        if inference_us is not None:
            self._stats.ran(inference_us * 1000, perf_counter_ns())
            if self._inference is not None:
                self._inference.observe(self._key, inference_us)
        for gauge in (self._current, self._active):
            if gauge is not None:
                gauge.inc(self._key, -1)


def parse_families(names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """A metrics_list (config list or the CLI's comma-separated text) as family names; None = defaults."""
    if names is None:
        return None
    items = names.split(",") if isinstance(names, str) else list(names)
    cleaned = tuple(n.strip() for n in items if n.strip())
    return cleaned or None
