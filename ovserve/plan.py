"""The reconcile plan, pure: a config, what is on disk and what is loaded give the models and versions to load, keep
and retire, and the pipelines to build, keep and retire (TF Serving's source -> policy -> manager split: the
manager carries the plan out; docs/operations.md#reload-rules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import versions
from .config import ModelConfig, PipelineConfig, ServerConfig, VersionPolicy, dynamic
from .repository import Stamp
from .states import State

SERVING = frozenset({State.START, State.LOADING, State.AVAILABLE})  # loaded, or on its way there


@dataclass(frozen=True)
class Row:
    """What the plan needs of a version the manager knows."""

    state: State
    stamp: Stamp = None  # its files when it was picked up


@dataclass(frozen=True)
class VersionPlan:
    load: tuple[int, ...] = ()  # wanted and not serving: new, back after it ended, or failed with other files now
    keep: tuple[int, ...] = ()  # wanted and serving (or on its way)
    retire: tuple[int, ...] = ()  # available, no longer wanted (retired once the loads are done)
    drop: tuple[int, ...] = ()  # failed loads whose files went away or changed: they end, to load afresh if wanted


def plan_versions(policy: VersionPolicy, found: Mapping[int, Stamp], rows: Mapping[int, Row]) -> VersionPlan:
    """The versions of one model: `found` on disk now, `rows` known to the manager. A failed load is not tried again
    while its files stay as they were (an S3 version's objects may change: S3 has no atomic folder move, so a listing
    may catch an upload half-way); the policy skips it (latest: the next older one serves)."""
    drop = tuple(
        sorted(
            n
            for n, r in rows.items()
            if r.state is State.FAILED and (n not in found or r.stamp not in (None, found[n]))
        )
    )
    failed = {n for n, r in rows.items() if r.state is State.FAILED and n not in drop}
    wanted = versions.select(policy, found, failed)
    serving = {n for n, r in rows.items() if r.state in SERVING}
    return VersionPlan(
        load=tuple(n for n in wanted if n not in serving),
        keep=tuple(n for n in wanted if n in serving),
        retire=tuple(sorted(n for n, r in rows.items() if r.state is State.AVAILABLE and n not in wanted)),
        drop=drop,
    )


@dataclass(frozen=True)
class ModelPlan:
    load: tuple[str, ...] = ()  # new or changed: a fresh entry loads beside the old one, which then retires
    keep: tuple[str, ...] = ()  # unchanged (or its change refused): its versions are rescanned
    retire: tuple[str, ...] = ()  # no longer configured
    refused: Mapping[str, str] = field(default_factory=dict)  # changes not applied, and why (OVMS's log text)


def plan_models(config: ServerConfig, served: Mapping[str, ModelConfig]) -> ModelPlan:
    """The models of `config` against those `served` now (by name; not retired)."""
    used = {n.model_name for p in config.pipelines for n in p.nodes if n.kind != "custom"}
    load, keep, refused = [], [], {}
    for model in config.models:
        old = served.get(model.name)
        why = None if old is None or old == model else _refusal(old, model, model.name in used)
        if old is not None and (old == model or why is not None):
            keep.append(model.name)
            if why is not None:
                refused[model.name] = why
        else:
            load.append(model.name)
    names = {m.name for m in config.models}
    retire = tuple(name for name in served if name not in names)
    return ModelPlan(tuple(load), tuple(keep), retire, refused)


def _refusal(old: ModelConfig, new: ModelConfig, in_pipeline: bool) -> str | None:
    """Why a changed model config is not applied (docs/operations.md#reload-rules, #reload-order (5)), if it is not."""
    if old.stateful != new.stateful:
        return f"Model type cannot be changed after it is loaded (stateful: {old.stateful})"
    if in_pipeline and dynamic(new) and not dynamic(old):
        return "Requested dynamic parameters but model is used in pipeline"
    return None


@dataclass(frozen=True)
class PipelinePlan:
    build: Mapping[str, str] = field(default_factory=dict)  # name -> why: new, changed, models changed, code changed
    keep: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()


def plan_pipelines(
    config: ServerConfig, served: Mapping[str, PipelineConfig], models_changed: bool, libraries_changed: bool
) -> PipelinePlan:
    """The pipelines of `config` against those `served` now (built or failed, not retired): a pipeline is validated
    again when it is new or changed, or when the models or custom node libraries it may use changed."""
    build: dict[str, str] = {}
    keep = []
    for pipeline in config.pipelines:
        old = served.get(pipeline.name)
        if old is None:
            build[pipeline.name] = "new"
        elif old != pipeline:
            build[pipeline.name] = "changed"
        elif models_changed:
            build[pipeline.name] = "models changed"
        elif libraries_changed:
            build[pipeline.name] = "code changed"
        else:
            keep.append(pipeline.name)
    names = {p.name for p in config.pipelines}
    return PipelinePlan(build, tuple(keep), tuple(name for name in served if name not in names))
