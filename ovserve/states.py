"""Version states (TF Serving's, plus a failed load carrying its error), the transitions allowed between them, and
how each shows in GetModelStatus as OVMS shows it (docs/apis.md#version-states)."""

from __future__ import annotations

import enum

from .types import VersionStatus


class State(enum.Enum):
    START = "START"  # picked up, not loading yet
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"  # retired, requests holding it still running
    END = "END"
    FAILED = "FAILED"  # its load failed: OVMS shows LOADING with an error code and the reason


_NEXT = {
    State.START: {State.LOADING, State.END},
    State.LOADING: {State.AVAILABLE, State.FAILED, State.END},
    State.AVAILABLE: {State.UNLOADING, State.END},
    State.UNLOADING: {State.END},
    State.FAILED: {State.END},
    State.END: set(),
}


def allowed(before: State, after: State) -> bool:
    """Whether a version may go from `before` to `after` (staying put is not a transition)."""
    return after in _NEXT[before]


def check(before: State, after: State, what: str) -> State:
    """`after`, if the move is allowed; a move that is not is a bug of the manager."""
    if not allowed(before, after):
        raise AssertionError(f"{what}: {before.name} -> {after.name} is not a transition of a version")
    return after


def status(number: int, state: State, reason: str = "", code: str = "UNKNOWN") -> VersionStatus:
    """A GetModelStatus row; a failed load is LOADING with `code` (UNKNOWN for a model version, FAILED_PRECONDITION
    for a pipeline) and the `reason`."""
    if state is State.FAILED:
        return VersionStatus(number, State.LOADING.value, code, reason)
    return VersionStatus(number, state.value)
