"""The manager's records: each model's versions and their states, each pipeline's definition, and when they serve."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from . import states
from .config import ModelConfig, PipelineConfig
from .errors import LoadError, ServingError
from .pipeline import PipelineDefinition
from .repository import Repository, Stamp
from .runtime import ModelVersion
from .states import State
from .types import VersionStatus

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Version:
    """One version of a model: its state, its servable once loaded, and the requests holding it."""

    model: str
    number: int
    stamp: Stamp  # its files as listed when it was picked up
    state: State = State.START
    failure: LoadError | None = None  # why its load failed (state FAILED)
    servable: ModelVersion | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    leases: int = 0  # requests holding it (Manager.lease, pipeline nodes)

    def move(self, state: State) -> None:
        if state is not self.state:
            log.debug("model %s version %d: %s -> %s", self.model, self.number, self.state.name, state.name)
            self.state = states.check(self.state, state, f"model {self.model} version {self.number}")
        if state in (State.AVAILABLE, State.FAILED, State.UNLOADING, State.END):
            self.settled.set()
        if state is State.END:
            self.servable = None

    @property
    def message(self) -> str:
        return str(self.failure) if self.failure is not None else ""

    def status(self) -> VersionStatus:
        return states.status(self.number, self.state, self.message)

    def hold(self) -> ModelVersion:
        """Pin the servable (AVAILABLE) until let_go: retired meanwhile, the version is UNLOADING until then."""
        assert self.servable is not None
        self.leases += 1
        return self.servable

    def let_go(self) -> None:
        self.leases -= 1
        if self.leases == 0 and self.state is State.UNLOADING:
            self.move(State.END)


@dataclass
class ModelEntry:
    """One configured model: its config, where its versions come from, and the versions known."""

    config: ModelConfig
    repository: Repository
    versions: dict[int, Version] = field(default_factory=dict)
    error: str = ""  # a problem of the whole model (bad base path, bad config values)
    error_status: str = ""  # its OVMS status
    retired: bool = False  # removed from the config: listed with its versions in END
    scanned: asyncio.Event = field(default_factory=asyncio.Event)  # its versions are known
    scan_error: str = ""  # the last rescan failed this way (reported once)
    unlisted: bool = False  # `error` is that the repository could not be listed: every rescan tries again
    gated: ModelConfig | None = None  # a config asking "auto" while a pipeline uses the model, not applied (reported)
    pending: bool = False  # registered before the first load, which loads this entry in place

    def default(self) -> Version | None:
        """The highest AVAILABLE version, else the highest one still on its way there, else a retired one."""
        ready = [v for v in self.versions.values() if v.state is State.AVAILABLE]
        coming = [v for v in self.versions.values() if v.state in (State.START, State.LOADING)]
        ended = [v for v in self.versions.values() if v.state in (State.UNLOADING, State.END)]
        return max(ready or coming or ended, key=lambda v: v.number, default=None)

    def rows(self) -> list[VersionStatus]:
        return [self.versions[n].status() for n in sorted(self.versions)]


@dataclass
class PipelineEntry:
    """One configured pipeline: its definition once built, or why it is not."""

    config: PipelineConfig
    definition: PipelineDefinition | None = None
    error: str = ""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    retired: bool = False
    pending: bool = False  # registered before the first load, which builds this entry in place

    @property
    def state(self) -> State:
        if self.retired:
            return State.END
        if self.definition is not None:
            return State.AVAILABLE
        return State.FAILED if self.error else State.LOADING

    def status(self) -> VersionStatus:
        return states.status(1, self.state, self.error, "FAILED_PRECONDITION")


def failure_of(entry: ModelEntry) -> LoadError | None:
    """How a model just loaded failed: as a whole, else its first version that did not load."""
    if entry.error:
        return LoadError(entry.error_status, f"model {entry.config.name}: {entry.error}")
    for number, version in sorted(entry.versions.items()):
        if version.state is State.FAILED and version.failure is not None:
            return LoadError(version.failure.status, f"model {entry.config.name} version {number}: {version.message}")
    return None


def available(name: str, version: Version) -> Version:
    """`version` if it serves, else why not."""
    if version.state is State.AVAILABLE and version.servable is not None:
        return version
    if version.state in (State.UNLOADING, State.END):
        raise ServingError("MODEL_VERSION_NOT_LOADED_ANYMORE", f"model {name} version {version.number}")
    raise ServingError("MODEL_VERSION_NOT_LOADED_YET", f"model {name} version {version.number}")
