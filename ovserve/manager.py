"""The registry of served models and pipelines: loads them from a ServerConfig and answers lookups and status."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np
import openvino as ov

from . import loading, pipeline_run, plan, repository, states, versions
from .config import ModelConfig, NodeConfig, PipelineConfig, ServerConfig
from .custom import Library, open_library
from .entries import ModelEntry, PipelineEntry, Version, available, failure_of
from .errors import LoadError, ServingError
from .metrics import Metrics, ModelMetrics
from .pipeline import PipelineDefinition, build_definition, model_node
from .repository import Stamp, Storage
from .runtime import ModelVersion, TensorMap
from .stateful import StatefulModelVersion
from .states import State
from .tensors import TensorSpec
from .types import CountRun, Endpoint, ModelView, PipelineView, Servable, Signature, VersionStatus

log = logging.getLogger(__name__)

VERSION_WAIT_S = 10.0  # a request for a version still loading waits this long (OVMS)
PIPELINE_WAIT_S = 0.5


class BoundPipeline:
    """A pipeline as a Servable: version 1, its computed metadata; the model versions of its nodes are resolved
    when a request starts and held until it ends."""

    version = 1

    def __init__(self, definition: PipelineDefinition, manager: Manager) -> None:
        self.name = definition.name
        self.inputs: Mapping[str, TensorSpec] = definition.inputs
        self.outputs: Mapping[str, TensorSpec] = definition.outputs
        self.accepts = definition.inputs
        self.model_info: Mapping[str, Any] = {}  # OVMS reports no rt_info for pipelines
        self._definition = definition
        self._manager = manager

    async def infer(self, inputs: TensorMap, count: CountRun | None = None) -> dict[str, np.ndarray]:
        manager = self._manager
        held: list[Version] = []

        def resolve(name: str, number: int | None) -> ModelVersion:
            version = manager.choose(name, number)
            servable = available(name, version).hold()
            held.append(version)
            return servable

        try:
            started = perf_counter_ns()
            outputs = await pipeline_run.run(
                self._definition, inputs, resolve, manager.metrics, count, manager.branch_window
            )
            ended = perf_counter_ns()
        finally:
            for version in held:
                version.let_go()
        manager.metrics.stats.of(self.name, 1).ran(ended - started, ended)  # Triton's compute_infer of a pipeline
        return outputs


@dataclass(frozen=True)
class Reconciled:
    changed: bool
    # the first model (re)loaded that failed, in config order (docs/operations.md#reload-order)
    failure: LoadError | None = None


class Manager:
    """Owns every model version and pipeline; the only place that changes what is served."""

    def __init__(
        self,
        core: ov.Core | None = None,
        metrics: Metrics | None = None,
        storage: Storage | None = None,
        branch_window: int = pipeline_run.BRANCH_WINDOW,
    ):
        loading.prepare_bindings()  # before the loader threads (asyncio.to_thread) race to do it
        self.core = core or ov.Core()
        self.metrics = metrics or Metrics(())
        self.storage = storage or Storage()
        self.branch_window = branch_window  # branches of one demultiplexer a request runs at a time
        self.models: dict[str, ModelEntry] = {}
        self.pipelines: dict[str, PipelineEntry] = {}
        self.libraries: dict[str, Library | LoadError] = {}  # custom node libraries by name
        # Changed custom node code not taken, the previous code serving on: by library (it does not import) or by
        # pipeline (the pipeline fails validation with it); reported by reloads until the code changes again.
        self.code_failures: dict[str, LoadError] = {}
        self.loaded = asyncio.Event()  # the initial load has finished (readiness)
        self._reconciling = asyncio.Lock()

    # --- loading ---------------------------------------------------------------------------------------

    def register(self, config: ServerConfig) -> None:
        """Make every configured name known so requests can wait while loading runs."""
        for model in config.models:
            self.models[model.name] = self._entry(model)
            self.models[model.name].pending = True
        for pipeline in config.pipelines:
            self.pipelines[pipeline.name] = PipelineEntry(pipeline, pending=True)

    def _entry(self, model: ModelConfig) -> ModelEntry:
        entry = ModelEntry(model, repository.connect(model.base_path, self.storage))
        if model.problems:
            entry.error, entry.error_status = "; ".join(model.problems), "MODEL_CONFIG_INVALID"
            log.error("model %s: %s", model.name, entry.error)
        return entry

    def close(self) -> None:
        """The server stops: remove downloaded model files (blocking)."""
        self.storage.close()

    async def load(self, config: ServerConfig) -> None:
        """The first load: every registered model and pipeline, loaded in place (requests may be waiting on them)."""
        if not self.models and not self.pipelines:
            self.register(config)
        await self.reconcile(config)

    async def reconcile(self, config: ServerConfig) -> Reconciled:
        """Serve `config` from now on (the first load and every reload): new and changed models load while the old
        ones keep serving, then the old ones retire (requests holding them finish on them) and the pipelines are
        rebuilt on the models now served. Returns whether anything changed, and the first failure of the models it
        (re)loaded."""
        async with self._reconciling:
            served = {n: e.config for n, e in self.models.items() if not e.retired and not e.pending}
            planned = plan.plan_models(config, served)
            configs = {m.name: m for m in config.models}
            self._refuse(planned.refused, configs)
            fresh = [self._fresh(configs[name]) for name in planned.load]
            kept = [self.models[name] for name in planned.keep]
            synced = await asyncio.gather(*(self._sync(entry) for entry in kept), *(self._sync(e) for _, e in fresh))
            for old, entry in fresh:
                self.models[entry.config.name] = entry
                if old is not None:
                    self._keep_rows(old, entry)
                    self._retire(old)
                    log.info("model %s reloaded", entry.config.name)
                elif self.loaded.is_set():
                    log.info("model %s added", entry.config.name)
            removed = [*planned.retire, *(n for n, e in self.models.items() if e.pending and n not in configs)]
            for name in removed:
                self._retire(self.models[name])
                log.info("model %s retired", name)
            models_changed = bool(fresh or removed or any(synced[: len(kept)]))
            libraries_changed = await self._load_libraries(config)
            pipelines_changed = await self._rebuild_pipelines(config, models_changed, libraries_changed)
            taken = {p.name for p in config.pipelines}  # names of removed models a pipeline took: the pipeline's now
            for name in [n for n, e in self.models.items() if e.retired and n in taken]:
                del self.models[name]
            self.loaded.set()
            changed = models_changed or libraries_changed or pipelines_changed
            return Reconciled(changed, self.failure([entry.config.name for _, entry in fresh]))

    def _refuse(self, refused: Mapping[str, str], configs: Mapping[str, ModelConfig]) -> None:
        """Changed model configs that are not applied: logged once per change."""
        for name, why in refused.items():
            old = self.models[name]
            if old.gated != configs[name]:
                log.error("model %s: %s; its configuration stays as it is", name, why)
                old.gated = configs[name]

    def _fresh(self, model: ModelConfig) -> tuple[ModelEntry | None, ModelEntry]:
        """The entry a new or changed model loads in, and the entry it replaces (None: none, or loaded in place)."""
        old = self.models.get(model.name)
        if old is not None and old.pending:
            old.pending = False
            if old.config == model:
                return None, old
            old.scanned.set()
            old = None
        log.debug("model %s: %s", model.name, "new" if old is None or old.retired else "changed, reloading")
        return old, self._entry(model)

    def failure(self, names: Iterable[str]) -> LoadError | None:
        """The first of these models (in this order) failing now: as a whole, or a version that did not load; else
        changed custom node code that was not taken."""
        failures = (failure_of(self.models[name]) for name in names if name in self.models)
        return next((f for f in failures if f is not None), next(iter(self.code_failures.values()), None))

    async def _sync(self, entry: ModelEntry) -> bool:
        """List a model's versions and serve what its policy selects (docs/configuration.md#versions): versions it
        now selects load, versions it no longer selects retire once the new ones are in
        (docs/operations.md#reload-rules). Returns whether its versions changed."""
        try:
            return await self._sync_versions(entry)
        finally:
            entry.scanned.set()
            for version in entry.versions.values():
                version.settled.set()

    async def _sync_versions(self, entry: ModelEntry) -> bool:
        if (entry.error and not entry.unlisted) or entry.retired:
            return False
        fresh = not entry.scanned.is_set()
        found = await self._scan(entry, fresh)
        if found is None:
            return False
        listed, entry.unlisted = entry.unlisted, False  # could not be listed before: loads as if new
        if listed:
            entry.error = ""
            for version in entry.versions.values():  # rows kept from the entry before, failed with this one
                version.move(State.END)
            log.info("model %s: %s can be listed now", entry.config.name, entry.repository.where)
        if fresh and not found:
            local = entry.config.base_path if isinstance(entry.config.base_path, Path) else None
            log.warning("model %s: %s", entry.config.name, versions.no_versions(entry.repository.where, local))
        return await self._follow_plan(entry, found, fresh) or listed

    @staticmethod
    async def _scan(entry: ModelEntry, fresh: bool) -> dict[int, Stamp] | None:
        """The versions on disk (or in the bucket), or None when they cannot be listed: a model never listed fails as
        a whole, one listed before keeps serving the versions it has; a repository that stays unreachable is
        reported once."""
        try:
            found = await asyncio.to_thread(entry.repository.scan)
        except LoadError as e:
            if str(e) != entry.scan_error:
                keeps = "" if entry.unlisted or fresh else "; the versions loaded keep serving"
                log.error("model %s: %s%s", entry.config.name, e, keeps)
            entry.scan_error = str(e)
            if entry.unlisted or fresh:
                entry.error, entry.error_status, entry.unlisted = str(e), e.status, True
            return None
        entry.scan_error = ""
        return found

    async def _follow_plan(self, entry: ModelEntry, found: Mapping[int, Stamp], fresh: bool) -> bool:
        """Load what the version policy selects among `found` and retire the rest once the new ones are in; a version
        that fails leaves the policy to choose again (latest: the next older one). Returns whether anything moved."""
        name, changed, loaded = entry.config.name, False, []
        while True:
            rows = {n: plan.Row(v.state, v.stamp) for n, v in entry.versions.items()}
            planned = plan.plan_versions(entry.config.version_policy, found, rows)
            for number in planned.drop:
                self._retire_version(entry, entry.versions[number])
            changed = changed or bool(planned.drop)
            if not planned.load:
                break
            log.debug("model %s: versions found %s, the plan: %s", name, sorted(found), planned)
            for number in planned.load:
                entry.versions[number] = Version(name, number, found[number])
            entry.scanned.set()  # the versions are known: requests wait for the ones loading
            results = await asyncio.gather(*(self._load_version(entry, entry.versions[n]) for n in planned.load))
            loaded += [n for n, ok in zip(planned.load, results, strict=True) if ok]
            changed = True
        for number in planned.retire:
            self._retire_version(entry, entry.versions[number])
        if not fresh and (loaded or planned.retire):
            log.info("model %s: versions %s loaded, %s retired", name, loaded, list(planned.retire))
        return changed or bool(planned.retire)

    @staticmethod
    def _keep_rows(old: ModelEntry, entry: ModelEntry) -> None:
        """The versions of a reloaded model's previous entry that its new one does not list stay in its status:
        END (docs/apis.md#version-states), or, when the new entry does not parse, the versions it unloaded as failed
        loads (docs/operations.md#reload-order)."""
        for number, version in sorted(old.versions.items()):
            if number in entry.versions:
                continue
            if entry.error and version.state is not State.END:
                failure = LoadError(entry.error_status, entry.error)
                version = Version(version.model, number, version.stamp, State.FAILED, failure)
                version.settled.set()
            entry.versions[number] = version

    def _retire(self, entry: ModelEntry) -> None:
        entry.retired = True
        entry.scanned.set()
        for version in entry.versions.values():
            self._retire_version(entry, version)

    @staticmethod
    def _retire_version(entry: ModelEntry, version: Version) -> None:
        """New requests see it retired; requests holding it finish on it, it is UNLOADING until they have (a
        compiled model needs no files: downloaded ones go now)."""
        if version.state is State.AVAILABLE and version.servable is not None:
            version.servable.metrics.unloaded()
            if isinstance(version.servable, StatefulModelVersion):
                ended = version.servable.sequences.clear()
                if ended:
                    log.info("model %s version %d: %d sequences ended", entry.config.name, version.number, ended)
        if version.state is State.AVAILABLE and version.leases:
            version.move(State.UNLOADING)
        elif version.state is not State.UNLOADING:
            version.move(State.END)
        entry.repository.release(version.number)

    async def _load_libraries(self, config: ServerConfig) -> bool:
        """Open the configured custom node libraries; one already open at the same location is kept
        (docs/configuration.md#custom-node-libraries), or renewed when its Python file changed."""
        changed = False
        for name in [n for n in self.libraries if n not in config.libraries]:
            del self.libraries[name]  # shared libraries stay mapped: unloading one is not safe while it may run
            self.code_failures.pop(f"library {name}", None)
            changed = True
        for name, location in config.libraries.items():
            known = self.libraries.get(name)
            if not isinstance(known, LoadError) and known is not None and known.location == location:
                changed = await self._renew_library(name, known) or changed
                continue
            self.code_failures.pop(f"library {name}", None)
            opened: Library | LoadError
            try:
                opened = await asyncio.to_thread(open_library, name, location)  # may import
            except LoadError as e:
                opened = e
            except ValueError as e:  # a path no system call takes (a NUL in it): fails to open, as in OVMS
                opened = LoadError("NODE_LIBRARY_LOAD_FAILED_OPEN", f"Custom node library failed to open - {name}: {e}")
            if isinstance(opened, LoadError) and isinstance(known, LoadError) and str(opened) == str(known):
                continue  # tried again, failing as before: nothing changed (and it was reported)
            if isinstance(opened, LoadError):
                log.error("custom node library %s: %s", name, opened)
            self.libraries[name] = opened
            changed = True
        return changed

    async def _renew_library(self, name: str, library: Library) -> bool:
        """Take a library's changed code (a Python node file edited): its pipelines are rebuilt on it. Code that
        cannot be used is logged once and reported by reloads; the library loaded before keeps serving."""
        try:
            renewed = await asyncio.to_thread(library.renewed)  # may import
        except LoadError as e:
            if str(self.code_failures.get(f"library {name}")) != str(e):
                log.error("custom node library %s: its changed code cannot be used; its pipelines keep serving the "
                          "code loaded before: %s", name, e)  # fmt: skip
            self.code_failures[f"library {name}"] = e
            return False
        if self.code_failures.pop(f"library {name}", None) is not None and renewed is None:
            log.info("custom node library %s: back to the code serving", name)
        if renewed is None:
            return False
        self.libraries[name] = renewed
        log.info("custom node library %s: %s changed and was imported again; its pipelines are rebuilt on it",
                 name, library.location)  # fmt: skip
        return True

    async def _rebuild_pipelines(self, config: ServerConfig, models_changed: bool, libraries_changed: bool) -> bool:
        served = {n: e.config for n, e in self.pipelines.items() if not e.retired and not e.pending}
        planned = plan.plan_pipelines(config, served, models_changed, libraries_changed)
        changed = bool(planned.retire)
        for name in planned.retire:
            self._retire_pipeline(self.pipelines[name])
            self.code_failures.pop(f"pipeline {name}", None)
            log.info("pipeline %s retired", name)
        for name in planned.keep:
            log.debug("pipeline %s: unchanged, kept as it is", name)
        configs = {p.name: p for p in config.pipelines}
        for name, why in planned.build.items():
            changed = await self._rebuild_pipeline(configs[name], why) or changed
        return changed

    async def _rebuild_pipeline(self, pipeline: PipelineConfig, why: str) -> bool:
        """Validate a pipeline again; the entry it replaces retires. Returns whether its status changed."""
        name, old = pipeline.name, self.pipelines.get(pipeline.name)
        if old is not None and old.pending:  # the first load: built in place
            old.pending = False
            await self._build_pipeline(old, None)
            return True
        log.debug("pipeline %s: validating (%s)", name, why)
        entry = PipelineEntry(pipeline)
        await self._build_pipeline(entry, old.definition if old is not None else None)
        self.code_failures.pop(f"pipeline {name}", None)
        if why == "code changed" and entry.error and old is not None and old.definition is not None:
            # Only custom node code changed, and the pipeline fails with it: the code before keeps serving.
            log.error("pipeline %s: the changed code of its custom nodes fails validation; the pipeline keeps "
                      "serving the code loaded before: %s", name, entry.error)  # fmt: skip
            self.code_failures[f"pipeline {name}"] = LoadError(
                "PIPELINE_DEFINITION_INVALID", f"pipeline {name}: {entry.error}"
            )
            return False
        self.pipelines[name] = entry
        if old is not None:
            self._retire_pipeline(old)
        return why in ("new", "changed") or old is None or old.error != entry.error

    @staticmethod
    def _retire_pipeline(entry: PipelineEntry) -> None:
        """Requests holding the definition finish on it; its custom nodes close after them."""
        if entry.definition is not None:
            entry.definition.retire()
        entry.retired, entry.definition = True, None
        entry.settled.set()

    def stop(self) -> None:
        """Retire every pipeline (custom nodes deinitialise once their last request ends)."""
        for entry in self.pipelines.values():
            self._retire_pipeline(entry)

    def _open(self, entry: ModelEntry, version: Version, metrics: ModelMetrics) -> ModelVersion:
        """Fetch and compile one version (blocking: runs in a worker thread)."""
        path = entry.repository.fetch(version.number, version.stamp)
        try:
            return loading.load(self.core, entry.config, version.number, path, metrics)
        except BaseException:
            entry.repository.release(version.number)
            raise

    async def _load_version(self, entry: ModelEntry, version: Version) -> bool:
        config = entry.config
        version.move(State.LOADING)
        try:
            metrics = self.metrics.model(config.name, version.number)
            version.servable = await asyncio.to_thread(self._open, entry, version, metrics)
        except LoadError as e:
            version.failure = e
            version.move(State.FAILED)
            log.error("model %s version %d failed to load: %s", config.name, version.number, e)
            return False
        except Exception as e:  # a failure not foreseen: it stays with this version, as any other load error
            version.failure = LoadError("INTERNAL_ERROR", f"{type(e).__name__}: {e}")
            version.move(State.FAILED)
            log.exception("model %s version %d failed to load", config.name, version.number)
            return False
        version.move(State.AVAILABLE)
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

    async def _build_pipeline(self, entry: PipelineEntry, old: PipelineDefinition | None) -> None:
        """Validate a pipeline (docs/pipelines.md#load-time-rules) on the models served now; custom nodes unchanged
        since `old` are kept."""
        config = entry.config
        try:
            kept = {c.name: c for c in old.custom_nodes} if old is not None else {}
            model_of = functools.partial(self._node_model, config.name)
            entry.definition = await build_definition(config, model_of, self.libraries, kept)
            self.metrics.servable_loaded(config.name, 1)
            log.info("pipeline %s available: inputs %s, outputs %s", config.name,
                     {n: s.metadata_shape() for n, s in entry.definition.inputs.items()},
                     {n: s.metadata_shape() for n, s in entry.definition.outputs.items()})  # fmt: skip
        except LoadError as e:
            entry.error = str(e)
            log.error("pipeline %s failed validation: %s", config.name, e)
        entry.settled.set()

    def _node_model(self, pipeline_name: str, node: NodeConfig) -> Signature:
        entry = self.models.get(node.model_name)
        try:
            servable = self.choose(node.model_name, node.version).servable
        except ServingError:
            servable = None
        return model_node(pipeline_name, node, None if entry is None else entry.config, servable)

    def sweep_sequences(self) -> None:
        """The idle sequence cleaner's scan: every stateful model with idle_sequence_cleanup drops the sequences no
        request touched since the previous scan (docs/stateful.md#stateful-models)."""
        for entry in self.models.values():
            if entry.retired or not (entry.config.stateful and entry.config.idle_sequence_cleanup):
                continue
            for version in entry.versions.values():
                if isinstance(version.servable, StatefulModelVersion):
                    dropped = version.servable.sequences.sweep()
                    if dropped:
                        log.info("model %s version %d: idle sequences dropped: %s", entry.config.name,
                                 version.number, ", ".join(map(str, dropped)))  # fmt: skip

    # --- requests ---------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self, name: str, version: int | None, missing: str = "PIPELINE_DEFINITION_NAME_MISSING"
    ) -> AsyncIterator[Servable]:
        """A model's version (`version`, else its default) or else a pipeline (version ignored), held until the
        block ends: retired meanwhile, it serves the request to the end, then lets its resources go (a pipeline's
        custom nodes close). Waits a while for a version still loading or a pipeline still validating; raises the
        error that says why it does not serve, or `missing` (each API's status for an unknown name)."""
        if name in self.models:
            version_held = await self._version_serving(name, version)
            try:
                yield version_held.hold()
            finally:
                version_held.let_go()
        elif name in self.pipelines:
            definition = await self._pipeline_serving(name)
            definition.hold()
            try:
                yield BoundPipeline(definition, self)
            finally:
                definition.let_go()
        else:
            raise ServingError(missing, name)

    async def _version_serving(self, name: str, number: int | None) -> Version:
        """An AVAILABLE version (default = highest); waits up to VERSION_WAIT_S for one that is loading."""
        entry = self.models[name]
        if not entry.scanned.is_set():  # the first listing is still running
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.scanned.wait(), VERSION_WAIT_S)
        version = self.choose(name, number)
        if version.state in (State.START, State.LOADING):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(version.settled.wait(), VERSION_WAIT_S)
        return available(name, version)

    async def _pipeline_serving(self, name: str) -> PipelineDefinition:
        entry = self.pipelines[name]
        if entry.definition is None and not entry.settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.settled.wait(), PIPELINE_WAIT_S)
        return self._definition(name)

    def _definition(self, name: str, explain: bool = True) -> PipelineDefinition:
        """A pipeline's definition serving now, else why it does not serve (with `explain`, why it fails
        validation)."""
        entry = self.pipelines[name]
        if entry.retired:
            raise ServingError("PIPELINE_DEFINITION_NOT_LOADED_ANYMORE", f"pipeline {name}")
        if entry.definition is None:
            reason = f": {entry.error}" if entry.error and explain else ""
            raise ServingError("PIPELINE_DEFINITION_NOT_LOADED_YET", f"pipeline {name}{reason}")
        return entry.definition

    def choose(self, name: str, number: int | None, explain: bool = True) -> Version:
        """A model's version `number`, else (None or 0) its default; raises when there is no such version, saying
        why the model failed as a whole if it did and `explain` (readiness answers as OVMS, without the reason)."""
        entry = self.models.get(name)
        if entry is None:
            raise ServingError("MODEL_NAME_MISSING", name)
        # A model whose entry failed as a whole has no default version, only the rows its previous entry left.
        version = entry.versions.get(number) if number else None if entry.error else entry.default()
        if version is None:
            details = f"model {name}" + (f" version {number}" if number else "")
            reason = f": {entry.error}" if entry.error and explain else ""
            raise ServingError("MODEL_VERSION_MISSING", details + reason)
        return version

    def model_version_now(self, name: str, number: int | None) -> ModelVersion:
        """A model version serving now (no waiting, not held: metadata, tests)."""
        servable = available(name, self.choose(name, number)).servable
        assert servable is not None
        return servable

    # --- queries ------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """The first load has finished."""
        return self.loaded.is_set()

    def is_model(self, name: str) -> bool:
        """Whether `name` is a model's (models are looked up before pipelines)."""
        return name in self.models

    def is_pipeline(self, name: str) -> bool:
        return name in self.pipelines and name not in self.models

    def names(self) -> list[str]:
        """Every model and pipeline name known, retired ones included, sorted."""
        return sorted({*self.models, *self.pipelines})

    def ready(self, name: str, version: int | None = None) -> bool:
        """Whether a model's version (or its default) is AVAILABLE, or a pipeline is; unknown names raise."""
        if name in self.models:
            return self.choose(name, version, explain=False).state is State.AVAILABLE
        if name in self.pipelines:
            return self.pipelines[name].definition is not None
        raise ServingError("MODEL_NAME_MISSING", name)

    def all_ready(self) -> bool:
        """Every configured model and pipeline serves."""
        models = (n for n, e in self.models.items() if not e.retired)
        pipelines = (n for n, e in self.pipelines.items() if not e.retired)
        try:
            return all(self.ready(name) for name in (*models, *pipelines))
        except ServingError:  # a model with no version at all
            return False

    def not_loaded(self) -> list[str]:
        """The models that failed as a whole or have no AVAILABLE version."""
        return [
            n for n, e in self.models.items()
            if e.error or not any(v.state is State.AVAILABLE for v in e.versions.values())
        ]  # fmt: skip

    def metadata(self, name: str, version: int | None) -> Endpoint:
        """What a model's version (or its default) or a pipeline serves now (no waiting)."""
        if name in self.models:
            servable: Servable = self.model_version_now(name, version)
            versions = self.models[name].versions
            available = tuple(sorted(n for n, v in versions.items() if v.state is State.AVAILABLE))
        elif name in self.pipelines:
            entry = self.pipelines[name]
            if entry.retired:
                raise ServingError("PIPELINE_DEFINITION_NOT_LOADED_ANYMORE", f"pipeline {name}")
            if entry.definition is None:
                raise ServingError(
                    "PIPELINE_DEFINITION_NOT_LOADED_YET",
                    f"pipeline {name}" + (f": {entry.error}" if entry.error else ""),
                )
            servable, available = BoundPipeline(entry.definition, self), (1,)
        else:
            raise ServingError("MODEL_NAME_MISSING", name)
        return Endpoint(
            servable.name, servable.version, servable.inputs, servable.outputs, available, servable.model_info
        )

    def serving(self, name: str = "", version: int | None = None) -> list[tuple[str, int]]:
        """(name, version) of every version and pipeline serving now, of one model's or pipeline's, or just one
        version; a name or version that does not serve now raises why, as a request for its metadata would."""
        if not name:
            chosen = [(n, v.number) for n, e in self.models.items() if not e.retired for v in e.versions.values()
                      if v.state is State.AVAILABLE]  # fmt: skip
            return chosen + [(n, 1) for n, e in self.pipelines.items() if e.definition is not None]
        if name in self.models:
            if version is not None:
                self.model_version_now(name, version)  # raises why it does not serve
                return [(name, version)]
            return [(name, n) for n, v in self.models[name].versions.items() if v.state is State.AVAILABLE]
        if name in self.pipelines:
            self._definition(name, explain=False)  # raises why it does not serve
            return [(name, 1)]
        raise ServingError("MODEL_NAME_MISSING", name)

    def pipeline_picture(self, name: str) -> tuple[PipelineConfig, PipelineDefinition | None, str]:
        """A pipeline's config, definition (None: it fails validation) and why it fails (graph.picture's parts)."""
        entry = self.pipelines.get(name)
        if entry is None:
            raise ServingError("PIPELINE_DEFINITION_NAME_MISSING", name)
        if entry.retired:
            raise ServingError("PIPELINE_DEFINITION_NOT_LOADED_ANYMORE", f"pipeline {name}")
        return entry.config, entry.definition, entry.error

    def models_view(self) -> list[ModelView]:
        """Every model known, retired ones included, by name."""
        return [self._view(name, e) for name, e in sorted(self.models.items())]

    def pipelines_view(self) -> list[PipelineView]:
        return [PipelineView(name, e.config, e.status()) for name, e in sorted(self.pipelines.items())]

    @staticmethod
    def _view(name: str, entry: ModelEntry) -> ModelView:
        default = entry.default()
        number = default.number if default is not None and not entry.error else None
        scanning = not entry.scanned.is_set()
        return ModelView(name, entry.retired, entry.error, scanning, entry.repository.where, number, entry.rows())

    def status(self, name: str, number: int | None) -> list[VersionStatus]:
        """GetModelStatus rows: every known version ascending, or just `number`."""
        if name in self.models:
            entry = self.models[name]
            rows, reason = entry.versions, f": {entry.error}" if entry.error else ""
            if number:
                if number not in rows:
                    raise ServingError("MODEL_VERSION_MISSING", f"model {name} version {number}{reason}")
                return [rows[number].status()]
            if not rows and entry.error and not entry.retired:  # beyond OVMS (an empty list): version 0, and why
                return [states.status(0, State.FAILED, entry.error)]
            return entry.rows()
        if name in self.pipelines:
            return [self.pipelines[name].status()]
        raise ServingError("MODEL_NAME_MISSING", name)
