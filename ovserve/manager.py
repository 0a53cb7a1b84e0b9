"""The registry of served models and pipelines: loads them from a ServerConfig and answers lookups and status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openvino as ov

from . import runtime, versions
from .config import Latest, ModelConfig, PipelineConfig, ServerConfig
from .errors import LoadError, ServingError
from .metrics import Metrics
from .pipeline import PipelineDefinition
from .runtime import ModelVersion, TensorMap
from .tensors import TensorSpec
from .types import Origin, VersionStatus

log = logging.getLogger(__name__)

VERSION_WAIT_S = 10.0  # a request for a version still loading waits this long (OVMS)
PIPELINE_WAIT_S = 0.5


@dataclass
class _Version:
    number: int
    path: Path
    state: str = "START"
    error_code: str = "OK"
    message: str = ""
    servable: ModelVersion | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> VersionStatus:
        return VersionStatus(self.number, self.state, self.error_code, self.message)


@dataclass
class ModelEntry:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    error: str = ""  # a problem of the whole model (bad base path, bad config values)
    retired: bool = False  # removed from the config: listed with its versions in END

    def default(self) -> _Version | None:
        """The highest AVAILABLE version, else the highest one still on its way there, else a retired one."""
        ready = [v for v in self.versions.values() if v.state == "AVAILABLE"]
        coming = [v for v in self.versions.values() if v.state in ("START", "LOADING") and v.error_code == "OK"]
        ended = [v for v in self.versions.values() if v.state == "END"]
        return max(ready or coming or ended, key=lambda v: v.number, default=None)


@dataclass
class PipelineEntry:
    config: PipelineConfig
    definition: PipelineDefinition | None = None
    error: str = ""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    retired: bool = False

    def status(self) -> VersionStatus:
        if self.retired:
            return VersionStatus(1, "END")
        if self.definition is not None:
            return VersionStatus(1, "AVAILABLE")
        if self.error:
            return VersionStatus(1, "LOADING", "FAILED_PRECONDITION", self.error)
        return VersionStatus(1, "LOADING")


class BoundPipeline:
    """A pipeline as a Servable: version 1, its computed metadata, models resolved when a request starts."""

    version = 1

    def __init__(self, definition: PipelineDefinition, manager: Manager) -> None:
        self.name = definition.name
        self.inputs: Mapping[str, TensorSpec] = definition.inputs
        self.outputs: Mapping[str, TensorSpec] = definition.outputs
        self.accepts = definition.inputs
        self._definition = definition
        self._manager = manager

    async def infer(self, inputs: TensorMap, origin: Origin | None = None) -> dict[str, np.ndarray]:
        manager = self._manager
        return await self._definition.infer(inputs, manager.model_version_now, manager.metrics, origin)


class Manager:
    """Owns every model version and pipeline; the only place that changes what is served."""

    def __init__(self, core: ov.Core | None = None, metrics: Metrics | None = None) -> None:
        self.core = core or ov.Core()
        self.metrics = metrics or Metrics(())
        self.models: dict[str, ModelEntry] = {}
        self.pipelines: dict[str, PipelineEntry] = {}
        self.loaded = asyncio.Event()  # the initial load has finished (readiness)
        self._reconciling = asyncio.Lock()

    # --- loading ---------------------------------------------------------------------------------------

    def register(self, config: ServerConfig) -> None:
        """Make every configured name known (versions in START) so requests can wait while loading runs."""
        for model in config.models:
            self.models[model.name] = self._entry(model)
        for pipeline in config.pipelines:
            self.pipelines[pipeline.name] = PipelineEntry(pipeline)

    @staticmethod
    def _entry(model: ModelConfig) -> ModelEntry:
        entry = ModelEntry(model)
        try:
            if model.problems:
                raise LoadError("MODEL_CONFIG_INVALID", "; ".join(model.problems))
            found = versions.scan(model.base_path)
            entry.versions = {n: _Version(n, found[n]) for n in versions.select(model.version_policy, found)}
            if not found:
                log.warning("model %s: no version directories in %s", model.name, model.base_path)
        except LoadError as e:
            entry.error = str(e)
            log.error("model %s: %s", model.name, e)
        return entry

    async def reconcile(self, config: ServerConfig) -> bool:
        """Serve `config` from now on: new and changed models load while the old ones keep serving, then the old
        ones retire (requests in flight finish on the versions they hold) and every pipeline is rebuilt on the
        models now served. Returns whether anything changed."""
        async with self._reconciling:
            fresh = [
                (self.models.get(m.name), self._entry(m))
                for m in config.models
                if m.name not in self.models or self.models[m.name].config != m or self.models[m.name].retired
            ]
            renewed = {entry.config.name for _, entry in fresh}
            kept = [self.models[m.name] for m in config.models if m.name not in renewed]
            loads = [self._load_model(entry) for _, entry in fresh]
            synced = await asyncio.gather(*(self._sync_versions(entry) for entry in kept), *loads)
            versions_changed = any(synced[: len(kept)])
            for old, entry in fresh:
                self.models[entry.config.name] = entry
                if old is not None:
                    self._retire(old)
                log.info("model %s %s", entry.config.name, "reloaded" if old is not None else "added")
            names = {m.name for m in config.models}
            removed = [e for name, e in self.models.items() if name not in names and not e.retired]
            for entry in removed:
                self._retire(entry)
                log.info("model %s retired", entry.config.name)
            models_changed = bool(fresh or removed or versions_changed)
            pipelines_changed = self._rebuild_pipelines(config, models_changed)
            return models_changed or pipelines_changed

    async def _sync_versions(self, entry: ModelEntry) -> bool:
        """Rescan a served model's folder: versions the policy now selects load, versions it no longer selects
        retire once the new ones are in (spec §2.5). A version that failed to load is not retried until it
        disappears; `latest` skips it in favour of the next older one, as the first load does."""
        if entry.error or entry.retired:
            return False
        try:
            found = versions.scan(entry.config.base_path)
        except LoadError as e:
            log.error("model %s: %s", entry.config.name, e)
            return False
        failed = {n for n, v in entry.versions.items() if v.error_code != "OK" and v.state != "END"}
        policy = entry.config.version_policy
        if isinstance(policy, Latest):
            wanted = set(sorted(n for n in found if n not in failed)[-policy.num_versions :])
        else:
            wanted = set(versions.select(policy, found)) - failed
        loading = [n for n in sorted(wanted) if n not in entry.versions or entry.versions[n].state == "END"]
        for number in loading:
            entry.versions[number] = _Version(number, found[number])
        loaded = await asyncio.gather(*(self._load_version(entry.config, entry.versions[n]) for n in loading))
        for number in loading:
            entry.versions[number].settled.set()
        retiring = [n for n, v in entry.versions.items() if n not in wanted and v.state == "AVAILABLE"]
        for number in retiring:
            self._retire_version(entry.versions[number])
        if loading or retiring:
            log.info("model %s: versions %s loaded, %s retired", entry.config.name,
                     [n for n, ok in zip(loading, loaded, strict=True) if ok], retiring)  # fmt: skip
        return bool(loading or retiring)

    def _retire(self, entry: ModelEntry) -> None:
        entry.retired = True
        for version in entry.versions.values():
            self._retire_version(version)

    @staticmethod
    def _retire_version(version: _Version) -> None:
        """Requests in flight keep the ModelVersion they hold and finish on it; new ones see END."""
        if version.servable is not None:
            version.servable.metrics.unloaded()
        version.state, version.servable = "END", None
        version.settled.set()

    def _rebuild_pipelines(self, config: ServerConfig, models_changed: bool) -> bool:
        changed = False
        wanted = {p.name: p for p in config.pipelines}
        for name, entry in list(self.pipelines.items()):
            if name not in wanted and not entry.retired:
                entry.retired, entry.definition, changed = True, None, True
                log.info("pipeline %s retired", name)
        for name, pipeline in wanted.items():
            old = self.pipelines.get(name)
            if old is not None and old.config == pipeline and not old.retired and not models_changed:
                continue
            entry = PipelineEntry(pipeline)
            self._build_pipeline(entry)
            changed = changed or old is None or old.config != pipeline or old.retired or old.error != entry.error
            self.pipelines[name] = entry
        return changed

    async def load(self, config: ServerConfig) -> None:
        """Load every registered model version, then build the pipelines; failures stay per model/pipeline."""
        if not self.models and not self.pipelines:
            self.register(config)
        await asyncio.gather(*(self._load_model(entry) for entry in self.models.values()))
        for entry in self.pipelines.values():
            self._build_pipeline(entry)
        self.loaded.set()

    async def _load_model(self, entry: ModelEntry) -> None:
        candidates = sorted(entry.versions, reverse=True)
        wanted = entry.config.version_policy.num_versions if isinstance(entry.config.version_policy, Latest) else None
        if wanted is not None and not entry.error:
            # latest{n}: a broken version is skipped and the next older one tried (OVMS re-applies the policy)
            candidates = sorted(versions.scan(entry.config.base_path), reverse=True)
        served = 0
        for number in candidates:
            if wanted is not None and served >= wanted:
                break
            version = entry.versions.setdefault(number, _Version(number, entry.config.base_path / str(number)))
            served += await self._load_version(entry.config, version)
        for version in entry.versions.values():
            version.settled.set()

    async def _load_version(self, config: ModelConfig, version: _Version) -> bool:
        version.state = "LOADING"
        try:
            path = versions.model_file(version.path)
            metrics = self.metrics.model(config.name, version.number)
            version.servable = await asyncio.to_thread(runtime.load, self.core, config, version.number, path, metrics)
        except LoadError as e:
            version.error_code, version.message = "UNKNOWN", str(e)
            log.error("model %s version %d failed to load: %s", config.name, version.number, e)
            return False
        version.state = "AVAILABLE"
        version.settled.set()
        servable = version.servable
        metrics.loaded(servable.streams, servable.nireq)
        self.metrics.servable_loaded(config.name, version.number)
        log.info(
            "model %s version %d available: nireq %d, inputs %s, outputs %s",
            config.name, version.number, servable.nireq,
            {n: s.metadata_shape() for n, s in servable.inputs.items()},
            {n: s.metadata_shape() for n, s in servable.outputs.items()},
        )  # fmt: skip
        return True

    def _build_pipeline(self, entry: PipelineEntry) -> None:
        try:
            models = {
                node.name: self._node_model(entry.config.name, node.model_name, node.version)
                for node in entry.config.nodes
            }
            entry.definition = PipelineDefinition(entry.config, models)
            self.metrics.servable_loaded(entry.config.name, 1)
            log.info("pipeline %s available: inputs %s, outputs %s", entry.config.name,
                     {n: s.metadata_shape() for n, s in entry.definition.inputs.items()},
                     {n: s.metadata_shape() for n, s in entry.definition.outputs.items()})  # fmt: skip
        except LoadError as e:
            entry.error = str(e)
            log.error("pipeline %s failed validation: %s", entry.config.name, e)
        entry.settled.set()

    def _node_model(self, pipeline: str, model: str, number: int | None) -> ModelVersion:
        entry = self.models.get(model)
        version = None if entry is None else (entry.versions.get(number) if number else entry.default())
        if version is None or version.servable is None:
            wanted = f"{model}" + (f" version {number}" if number else "")
            raise LoadError(
                "PIPELINE_DEFINITION_MISSING_MODEL",
                f"Pipeline definition has reference to missing model - {pipeline}: {wanted}",
            )
        return version.servable

    # --- lookups ----------------------------------------------------------------------------------------------

    async def model_version(self, name: str, number: int | None) -> ModelVersion:
        """An AVAILABLE version (default = highest); waits up to 10 s for one that is loading."""
        version = self._version(name, number)
        if version.state in ("START", "LOADING") and version.error_code == "OK":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(version.settled.wait(), VERSION_WAIT_S)
        return self._available(name, version)

    def model_version_now(self, name: str, number: int | None) -> ModelVersion:
        """Like model_version, without waiting (pipeline nodes, metadata)."""
        return self._available(name, self._version(name, number))

    def _version(self, name: str, number: int | None) -> _Version:
        entry = self.models.get(name)
        if entry is None:
            raise ServingError("MODEL_NAME_MISSING", name)
        version = entry.versions.get(number) if number else entry.default()
        if version is None:
            raise ServingError("MODEL_VERSION_MISSING", f"model {name}" + (f" version {number}" if number else ""))
        return version

    @staticmethod
    def _available(name: str, version: _Version) -> ModelVersion:
        if version.state == "AVAILABLE" and version.servable is not None:
            return version.servable
        if version.state in ("UNLOADING", "END"):
            raise ServingError("MODEL_VERSION_NOT_LOADED_ANYMORE", f"model {name} version {version.number}")
        raise ServingError("MODEL_VERSION_NOT_LOADED_YET", f"model {name} version {version.number}")

    async def pipeline(self, name: str, wait: bool = True) -> BoundPipeline:
        entry = self.pipelines.get(name)
        if entry is None:
            raise ServingError("PIPELINE_DEFINITION_NAME_MISSING", name)
        if wait and entry.definition is None and not entry.settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.settled.wait(), PIPELINE_WAIT_S)
        if entry.retired:
            raise ServingError("PIPELINE_DEFINITION_NOT_LOADED_ANYMORE", f"pipeline {name}")
        if entry.definition is None:
            raise ServingError(
                "PIPELINE_DEFINITION_NOT_LOADED_YET", f"pipeline {name}" + (f": {entry.error}" if entry.error else "")
            )
        return BoundPipeline(entry.definition, self)

    def status(self, name: str, number: int | None) -> list[VersionStatus]:
        """GetModelStatus rows: every known version ascending, or just `number`."""
        if name in self.models:
            rows = self.models[name].versions
            if number:
                if number not in rows:
                    raise ServingError("MODEL_VERSION_MISSING", f"model {name} version {number}")
                return [rows[number].status()]
            return [rows[n].status() for n in sorted(rows)]
        if name in self.pipelines:
            return [self.pipelines[name].status()]
        raise ServingError("MODEL_NAME_MISSING", name)
