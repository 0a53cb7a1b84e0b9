"""The registry of served models and pipelines: loads them from a ServerConfig and answers lookups and status."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np
import openvino as ov

from . import repository, runtime, versions
from .config import Latest, ModelConfig, NodeConfig, PipelineConfig, ServerConfig, VersionPolicy
from .custom import Library, open_library
from .errors import LoadError, ServingError
from .metrics import Metrics, ModelMetrics
from .pipeline import BRANCH_WINDOW, PipelineDefinition, build_definition, dynamic, model_node
from .repository import Repository, Stamp, Storage
from .runtime import ModelVersion, TensorMap
from .stateful import StatefulModelVersion
from .tensors import TensorSpec
from .types import Origin, Signature, VersionStatus

log = logging.getLogger(__name__)

VERSION_WAIT_S = 10.0  # a request for a version still loading waits this long (OVMS)
PIPELINE_WAIT_S = 0.5


@dataclass
class _Version:
    number: int
    stamp: Stamp  # its files as listed when it was picked up
    state: str = "START"
    error_code: str = "OK"
    message: str = ""
    cause: str = ""  # the OVMS status of a failed load
    servable: ModelVersion | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> VersionStatus:
        return VersionStatus(self.number, self.state, self.error_code, self.message)


@dataclass
class ModelEntry:
    config: ModelConfig
    repository: Repository
    versions: dict[int, _Version] = field(default_factory=dict)
    error: str = ""  # a problem of the whole model (bad base path, bad config values)
    error_status: str = ""  # its OVMS status
    retired: bool = False  # removed from the config: listed with its versions in END
    scanned: asyncio.Event = field(default_factory=asyncio.Event)  # its versions are known
    scan_error: str = ""  # the last rescan failed this way (reported once)
    unlisted: bool = False  # `error` is that the repository could not be listed: every rescan tries again
    gated: ModelConfig | None = None  # a config asking "auto" while a pipeline uses the model, not applied (reported)

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
        self.model_info: Mapping[str, Any] = {}  # OVMS reports no rt_info for pipelines
        self._definition = definition
        self._manager = manager

    async def infer(self, inputs: TensorMap, origin: Origin | None = None) -> dict[str, np.ndarray]:
        manager, definition = self._manager, self._definition
        if definition.released:  # replaced since this request looked it up: the definition serving now, if any
            current = manager.pipelines.get(self.name)
            if current is not None and current.definition is not None and current.definition.inputs == self.inputs:
                definition = current.definition
        started = perf_counter_ns()
        outputs = await definition.infer(
            inputs, manager.model_version_now, manager.metrics, origin, manager.branch_window
        )
        ended = perf_counter_ns()
        manager.metrics.stats.of(self.name, 1).ran(ended - started, ended)  # Triton's compute_infer of a pipeline
        return outputs


@dataclass(frozen=True)
class Reconciled:
    changed: bool
    # the first model (re)loaded that failed, in config order (docs/operations.md#reload-order)
    failure: LoadError | None = None


def _failure(entry: ModelEntry) -> LoadError | None:
    """How a model just loaded failed: as a whole, else its first version that did not load."""
    if entry.error:
        return LoadError(entry.error_status, f"model {entry.config.name}: {entry.error}")
    for number, version in sorted(entry.versions.items()):
        if version.state == "LOADING" and version.error_code != "OK":
            return LoadError(version.cause, f"model {entry.config.name} version {number}: {version.message}")
    return None


def _wanted(policy: VersionPolicy, found: Iterable[int], failed: set[int]) -> set[int]:
    """The versions to serve among those found, leaving out the ones that failed to load."""
    if isinstance(policy, Latest):
        return set(sorted(n for n in found if n not in failed)[-policy.num_versions :])
    return set(versions.select(policy, found)) - failed


class Manager:
    """Owns every model version and pipeline; the only place that changes what is served."""

    def __init__(
        self,
        core: ov.Core | None = None,
        metrics: Metrics | None = None,
        storage: Storage | None = None,
        branch_window: int = BRANCH_WINDOW,
    ):
        runtime.prepare_bindings()  # before the loader threads (asyncio.to_thread) race to do it
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
        for pipeline in config.pipelines:
            self.pipelines[pipeline.name] = PipelineEntry(pipeline)

    def _entry(self, model: ModelConfig) -> ModelEntry:
        entry = ModelEntry(model, repository.connect(model.base_path, self.storage))
        if model.problems:
            entry.error, entry.error_status = "; ".join(model.problems), "MODEL_CONFIG_INVALID"
            log.error("model %s: %s", model.name, entry.error)
        return entry

    def close(self) -> None:
        """The server stops: remove downloaded model files (blocking)."""
        self.storage.close()

    async def reconcile(self, config: ServerConfig) -> Reconciled:
        """Serve `config` from now on: new and changed models load while the old ones keep serving, then the old
        ones retire (requests in flight finish on the versions they hold) and every pipeline is rebuilt on the
        models now served. Returns whether anything changed, and the first failure of the models it (re)loaded."""
        async with self._reconciling:
            used = {n.model_name for p in config.pipelines for n in p.nodes if n.kind != "custom"}
            fresh: list[tuple[ModelEntry | None, ModelEntry]] = []
            for model in config.models:
                old = self.models.get(model.name)
                if old is not None and not old.retired:
                    if old.config == model:
                        continue
                    if old.config.stateful != model.stateful:  # docs/operations.md#reload-rules
                        if old.gated != model:
                            log.error("model %s: Model type cannot be changed after it is loaded (stateful: %s); its "
                                      "configuration stays as it is", model.name, old.config.stateful)  # fmt: skip
                            old.gated = model
                        continue
                    # docs/operations.md#reload-order (5)
                    if model.name in used and dynamic(model) and not dynamic(old.config):
                        if old.gated != model:
                            log.error("model %s: Requested dynamic parameters but model is used in pipeline; its "
                                      "configuration stays as it is", model.name)  # fmt: skip
                            old.gated = model
                        continue
                log.debug("model %s: %s", model.name, "new" if old is None or old.retired else "changed, reloading")
                fresh.append((old, self._entry(model)))
            renewed = {entry.config.name for _, entry in fresh}
            kept = [self.models[m.name] for m in config.models if m.name not in renewed]
            loads = [self._load_model(entry) for _, entry in fresh]
            synced = await asyncio.gather(*(self._sync_versions(entry) for entry in kept), *loads)
            versions_changed = any(synced[: len(kept)])
            for old, entry in fresh:
                self.models[entry.config.name] = entry
                if old is not None:
                    self._keep_rows(old, entry)
                    self._retire(old)
                log.info("model %s %s", entry.config.name, "reloaded" if old is not None else "added")
            names = {m.name for m in config.models}
            removed = [e for name, e in self.models.items() if name not in names and not e.retired]
            for entry in removed:
                self._retire(entry)
                log.info("model %s retired", entry.config.name)
            models_changed = bool(fresh or removed or versions_changed)
            libraries_changed = await self._load_libraries(config)
            pipelines_changed = await self._rebuild_pipelines(config, models_changed, libraries_changed)
            taken = {p.name for p in config.pipelines}  # names of removed models a pipeline took: the pipeline's now
            for name in [n for n, e in self.models.items() if e.retired and n in taken]:
                del self.models[name]
            changed = models_changed or libraries_changed or pipelines_changed
            return Reconciled(changed, self.failure([entry.config.name for _, entry in fresh]))

    def failure(self, names: Iterable[str]) -> LoadError | None:
        """The first of these models (in this order) failing now: as a whole, or a version that did not load; else
        changed custom node code that was not taken."""
        failures = (_failure(self.models[name]) for name in names if name in self.models)
        return next((f for f in failures if f is not None), next(iter(self.code_failures.values()), None))

    async def _sync_versions(self, entry: ModelEntry) -> bool:
        """Rescan a served model's repository: versions the policy now selects load, versions it no longer
        selects retire once the new ones are in (docs/operations.md#reload-rules). A version that fails to load is
        skipped, `latest` taking the next older one as the first load does, and is not retried while it stays as it
        is."""
        if (entry.error and not entry.unlisted) or entry.retired:
            return False
        try:
            found = await asyncio.to_thread(entry.repository.scan)
        except LoadError as e:
            if str(e) != entry.scan_error:  # a repository that stays unreachable is reported once
                serving = "" if entry.unlisted else "; the versions loaded keep serving"
                log.error("model %s: %s%s", entry.config.name, e, serving)
            entry.scan_error = str(e)
            if entry.unlisted:
                entry.error, entry.error_status = str(e), e.status
            return False
        entry.scan_error = ""
        listed, entry.unlisted = entry.unlisted, False  # could not be listed before: loads as if new
        if listed:
            entry.error = ""
            for version in entry.versions.values():  # rows kept from the entry before, failed with this one
                version.state, version.error_code = "END", "OK"
            log.info("model %s: %s can be listed now", entry.config.name, entry.repository.where)
        # A failed version ends when it disappears, so that it loads afresh if it comes back; an S3 one also
        # when its objects change: S3 has no atomic folder move, so a poll may catch an upload half-way.
        dropped = [
            v for n, v in entry.versions.items()
            if v.error_code != "OK" and v.state != "END" and (n not in found or v.stamp not in (None, found[n]))
        ]  # fmt: skip
        for version in dropped:
            self._retire_version(entry, version)
        before = {n for n, v in entry.versions.items() if v.error_code != "OK" and v.state != "END"}
        loaded: list[int] = []
        while True:  # a version that fails leaves the policy to choose again (latest: the next older one)
            failed = {n for n, v in entry.versions.items() if v.error_code != "OK" and v.state != "END"}
            wanted = _wanted(entry.config.version_policy, found, failed)
            loading = [n for n in sorted(wanted) if n not in entry.versions or entry.versions[n].state == "END"]
            if not loading:
                break
            log.debug("model %s: versions found %s, failed %s, the policy wants %s: loading %s", entry.config.name,
                      sorted(found), sorted(failed), sorted(wanted), loading)  # fmt: skip
            for number in loading:
                entry.versions[number] = _Version(number, found[number])
            results = await asyncio.gather(*(self._load_version(entry, entry.versions[n]) for n in loading))
            for number, ok in zip(loading, results, strict=True):
                entry.versions[number].settled.set()
                loaded += [number] if ok else []
        retiring = [n for n, v in entry.versions.items() if n not in wanted and v.state == "AVAILABLE"]
        for number in retiring:
            self._retire_version(entry, entry.versions[number])
        if loaded or retiring:
            log.info("model %s: versions %s loaded, %s retired", entry.config.name, loaded, retiring)
        return bool(listed or loaded or retiring or dropped or failed - before)

    @staticmethod
    def _keep_rows(old: ModelEntry, entry: ModelEntry) -> None:
        """The versions of a reloaded model's previous entry that its new one does not list stay in its status:
        END (docs/apis.md#version-states), or, when the new entry does not parse, the versions it unloaded as failed
        loads (docs/operations.md#reload-order)."""
        for number, version in sorted(old.versions.items()):
            if number in entry.versions:
                continue
            if entry.error and version.state != "END":
                version = _Version(number, version.stamp, "LOADING", "UNKNOWN", entry.error)
                version.settled.set()
            entry.versions[number] = version

    def _retire(self, entry: ModelEntry) -> None:
        entry.retired = True
        for version in entry.versions.values():
            self._retire_version(entry, version)

    @staticmethod
    def _retire_version(entry: ModelEntry, version: _Version) -> None:
        """Requests in flight keep the ModelVersion they hold and finish on it (a compiled model needs no
        files); new ones see END."""
        if version.servable is not None:
            version.servable.metrics.unloaded()
            if isinstance(version.servable, StatefulModelVersion):
                ended = version.servable.sequences.clear()
                if ended:
                    log.info("model %s version %d: %d sequences ended", entry.config.name, version.number, ended)
        if version.state != "END":
            log.debug("model %s version %d: %s -> END", entry.config.name, version.number, version.state)
        version.state, version.error_code, version.servable = "END", "OK", None
        version.settled.set()
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
        changed = False
        wanted = {p.name: p for p in config.pipelines}
        for name, entry in list(self.pipelines.items()):
            if name not in wanted and not entry.retired:
                self._retire_pipeline(entry)
                self.code_failures.pop(f"pipeline {name}", None)
                changed = True
                log.info("pipeline %s retired", name)
        for name, pipeline in wanted.items():
            old = self.pipelines.get(name)
            same = old is not None and old.config == pipeline and not old.retired
            if same and not models_changed and not libraries_changed:
                log.debug("pipeline %s: unchanged, kept as it is", name)
                continue
            why = "new" if old is None or old.retired else "changed" if old.config != pipeline else "models changed"
            log.debug("pipeline %s: validating (%s)", name, why)
            entry = PipelineEntry(pipeline)
            await self._build_pipeline(entry, old.definition if old is not None else None)
            self.code_failures.pop(f"pipeline {name}", None)
            if same and not models_changed and entry.error and old is not None and old.definition is not None:
                # Only custom node code changed, and the pipeline fails with it: the code before keeps serving.
                log.error("pipeline %s: the changed code of its custom nodes fails validation; the pipeline keeps "
                          "serving the code loaded before: %s", name, entry.error)  # fmt: skip
                self.code_failures[f"pipeline {name}"] = LoadError(
                    "PIPELINE_DEFINITION_INVALID", f"pipeline {name}: {entry.error}"
                )
                continue
            changed = changed or old is None or old.config != pipeline or old.retired or old.error != entry.error
            self.pipelines[name] = entry
            if old is not None:
                self._retire_pipeline(old)
        return changed

    @staticmethod
    def _retire_pipeline(entry: PipelineEntry) -> None:
        """Requests in flight finish on the definition they hold; its custom nodes close after them."""
        if entry.definition is not None:
            entry.definition.retire()
        entry.retired, entry.definition = True, None

    def stop(self) -> None:
        """Retire every pipeline (custom nodes deinitialise once their last request ends)."""
        for entry in self.pipelines.values():
            self._retire_pipeline(entry)

    async def load(self, config: ServerConfig) -> None:
        """Load every registered model version, then build the pipelines; failures stay per model/pipeline."""
        if not self.models and not self.pipelines:
            self.register(config)
        await asyncio.gather(*(self._load_model(entry) for entry in self.models.values()))
        await self._load_libraries(config)
        for entry in self.pipelines.values():
            await self._build_pipeline(entry, None)
        self.loaded.set()

    async def _load_model(self, entry: ModelEntry) -> None:
        """List the versions (docs/configuration.md#versions), apply the policy, load the chosen ones; failures stay per
        model."""
        config = entry.config
        try:
            if entry.error:
                return
            try:
                found = await asyncio.to_thread(entry.repository.scan)
            except LoadError as e:
                entry.error = entry.scan_error = str(e)
                entry.error_status, entry.unlisted = e.status, True
                log.error("model %s: %s", config.name, e)
                return
            if not found:
                local = config.base_path if isinstance(config.base_path, Path) else None
                log.warning("model %s: %s", config.name, versions.no_versions(entry.repository.where, local))
            selected = versions.select(config.version_policy, found)
            entry.versions = {n: _Version(n, found[n]) for n in selected}
            entry.scanned.set()
            wanted = config.version_policy.num_versions if isinstance(config.version_policy, Latest) else None
            # latest{n}: a broken version is skipped and the next older one tried (OVMS re-applies the policy)
            candidates = sorted(found if wanted is not None else selected, reverse=True)
            served = 0
            for number in candidates:
                if wanted is not None and served >= wanted:
                    break
                version = entry.versions.setdefault(number, _Version(number, found[number]))
                served += await self._load_version(entry, version)
        finally:
            entry.scanned.set()
            for version in entry.versions.values():
                version.settled.set()

    def _open(self, entry: ModelEntry, version: _Version, metrics: ModelMetrics) -> ModelVersion:
        """Fetch and compile one version (blocking: runs in a worker thread)."""
        path = entry.repository.fetch(version.number, version.stamp)
        try:
            return runtime.load(self.core, entry.config, version.number, path, metrics)
        except BaseException:
            entry.repository.release(version.number)
            raise

    async def _load_version(self, entry: ModelEntry, version: _Version) -> bool:
        config = entry.config
        log.debug("model %s version %d: %s -> LOADING", config.name, version.number, version.state)
        version.state = "LOADING"
        try:
            metrics = self.metrics.model(config.name, version.number)
            version.servable = await asyncio.to_thread(self._open, entry, version, metrics)
        except LoadError as e:
            version.error_code, version.message, version.cause = "UNKNOWN", str(e), e.status
            log.error("model %s version %d failed to load: %s", config.name, version.number, e)
            return False
        except Exception as e:  # a failure not foreseen: it stays with this version, as any other load error
            version.error_code, version.message = "UNKNOWN", f"{type(e).__name__}: {e}"
            version.cause = "INTERNAL_ERROR"
            log.exception("model %s version %d failed to load", config.name, version.number)
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
        number = node.version
        version = None if entry is None else (entry.versions.get(number) if number else entry.default())
        servable = None if version is None else version.servable
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

    # --- lookups ----------------------------------------------------------------------------------------------

    async def model_version(self, name: str, number: int | None) -> ModelVersion:
        """An AVAILABLE version (default = highest); waits up to 10 s for one that is loading."""
        entry = self.models.get(name)
        if entry is not None and not entry.scanned.is_set():  # the first listing is still running
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.scanned.wait(), VERSION_WAIT_S)
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
        # A model whose entry failed as a whole has no default version, only the rows its previous entry left.
        version = entry.versions.get(number) if number else None if entry.error else entry.default()
        if version is None:
            details = f"model {name}" + (f" version {number}" if number else "")
            raise ServingError("MODEL_VERSION_MISSING", details + (f": {entry.error}" if entry.error else ""))
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
            entry = self.models[name]
            rows, reason = entry.versions, f": {entry.error}" if entry.error else ""
            if number:
                if number not in rows:
                    raise ServingError("MODEL_VERSION_MISSING", f"model {name} version {number}{reason}")
                return [rows[number].status()]
            if not rows and entry.error and not entry.retired:  # beyond OVMS (an empty list): version 0, and why
                return [VersionStatus(0, "LOADING", "UNKNOWN", entry.error)]
            return [rows[n].status() for n in sorted(rows)]
        if name in self.pipelines:
            return [self.pipelines[name].status()]
        raise ServingError("MODEL_NAME_MISSING", name)
