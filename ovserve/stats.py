"""Triton's statistics and repository index: cumulative counters per model version, kept whether metrics are on or
not, and the rows both answers list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from time import perf_counter_ns, time_ns

from . import versions
from .types import ModelView, PipelineView, VersionStatus


class VersionStats:
    """The counters of one model version or pipeline: plain adds on the event loop thread. Durations in ns;
    `last` is the perf_counter_ns of the last request or run (0: none yet)."""

    __slots__ = (
        "fail_count", "fail_ns", "infer_count", "infer_ns", "input_count", "input_ns", "last", "queue_count",
        "queue_ns", "success_count", "success_ns",
    )  # fmt: skip

    def __init__(self) -> None:
        self.success_count = self.fail_count = self.input_count = self.queue_count = self.infer_count = 0
        self.success_ns = self.fail_ns = self.input_ns = self.queue_ns = self.infer_ns = 0.0
        self.last = 0

    def succeeded(self, started: int, decoded: int, ended: int) -> None:
        """A request answered: from its start, its inputs decoded and checked at `decoded`, its outputs at `ended`."""
        self.success_count += 1
        self.success_ns += ended - started
        self.input_count += 1
        self.input_ns += decoded - started
        self.last = ended

    def failed(self, started: int, ended: int) -> None:
        self.fail_count += 1
        self.fail_ns += ended - started
        self.last = ended

    def waited(self, ns: float) -> None:
        """A run waited this long for an infer request (the queue)."""
        self.queue_count += 1
        self.queue_ns += ns

    def ran(self, ns: float, ended: int) -> None:
        """One successful execution: a model's inference (inputs in, outputs out), or a whole pipeline."""
        self.infer_count += 1
        self.infer_ns += ns
        self.last = ended


class Statistics:
    """Every VersionStats of a server by (name, version), cumulative since the server started: a version loaded
    again (a config edit) keeps counting where it was."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], VersionStats] = {}

    def of(self, name: str, version: int) -> VersionStats:
        key = (name, version)
        stats = self._versions.get(key)
        if stats is None:
            stats = self._versions[key] = VersionStats()
        return stats


@dataclass(frozen=True, slots=True)
class Duration:
    count: int
    ns: int


def _duration(count: int, ns: float) -> Duration:
    return Duration(count, round(ns))


@dataclass(frozen=True, slots=True)
class Row:
    """ModelStatistics of one version, as Triton reports a model without batching (max_batch_size 0): every
    request is one inference and one execution of batch size 1."""

    name: str
    version: int
    last_inference_ms: int
    executions: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


def _row(name: str, version: int, stats: VersionStats, now_ns: int, now_perf: int) -> Row:
    last_ms = (now_ns - (now_perf - stats.last)) // 1_000_000 if stats.last else 0
    return Row(
        name, version, last_ms, stats.infer_count,
        _duration(stats.success_count, stats.success_ns),
        _duration(stats.fail_count, stats.fail_ns),
        _duration(stats.queue_count, stats.queue_ns),
        _duration(stats.input_count, stats.input_ns),
        _duration(stats.infer_count, stats.infer_ns),
        Duration(0, 0),  # outputs are encoded by each front door, after the data plane: not measured
    )  # fmt: skip


def rows(chosen: Iterable[tuple[str, int]], statistics: Statistics) -> list[Row]:
    """Statistics of the `chosen` (name, version) pairs (the manager's versions serving now), sorted by name, then
    version."""
    now_ns, now_perf = time_ns(), perf_counter_ns()
    return [_row(n, v, statistics.of(n, v), now_ns, now_perf) for n, v in sorted(chosen)]


# --- repository index ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One model version (or a model without any) in Triton's states: READY, LOADING, UNLOADING, UNAVAILABLE."""

    name: str
    version: int | None
    state: str
    reason: str = ""


_STATES = {"AVAILABLE": "READY", "START": "LOADING", "LOADING": "LOADING", "UNLOADING": "UNLOADING"}


def index(models: Iterable[ModelView], pipelines: Iterable[PipelineView], ready_only: bool = False) -> list[IndexRow]:
    """Every configured model's versions and every pipeline (retired ones left out), sorted by name, then version;
    a model with no version is one row without one. `ready_only`: just the READY rows."""
    found: list[IndexRow] = []
    for model in models:
        if not model.retired:
            found += _model_rows(model)
    found += [_pipeline_row(p.name, p.status) for p in pipelines if p.status.state != "END"]
    found.sort(key=lambda r: (r.name, r.version or 0))
    return [r for r in found if r.state == "READY"] if ready_only else found


def _model_rows(model: ModelView) -> list[IndexRow]:
    found = []
    for status in model.versions:
        if status.error_code != "OK":
            found.append(IndexRow(model.name, status.version, "UNAVAILABLE", status.message))
        elif status.state == "END":
            found.append(IndexRow(model.name, status.version, "UNAVAILABLE", "unloaded"))
        else:
            found.append(IndexRow(model.name, status.version, _STATES.get(status.state, "UNAVAILABLE")))
    if model.error:  # the model failed as a whole: the rows its previous entry left stay listed above
        found.append(IndexRow(model.name, None, "UNAVAILABLE", model.error))
    elif not found:
        reason = "" if model.scanning else versions.no_versions(model.where)
        found.append(IndexRow(model.name, None, "LOADING" if model.scanning else "UNAVAILABLE", reason))
    return found


def _pipeline_row(name: str, status: VersionStatus) -> IndexRow:
    if status.state == "AVAILABLE":
        return IndexRow(name, 1, "READY")
    if status.message:
        return IndexRow(name, 1, "UNAVAILABLE", status.message)
    return IndexRow(name, 1, "LOADING")
