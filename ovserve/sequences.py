"""The sequences of a stateful model version (docs/stateful.md#stateful-models): ids, each one's saved state, one
request at a time, idle cleanup. Knows nothing of the wire (frontends decode the special inputs) nor of OpenVINO (the
state is opaque)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ServingError
from .tensors import TensorSpec

SEQUENCE_ID = "sequence_id"
SEQUENCE_CONTROL = "sequence_control_input"
NO_CONTROL, START, END = 0, 1, 2
_UINT64_LIMIT = 1 << 64

# The special inputs every request to a stateful model may carry besides the model's own: one value each, shape [1].
SPECIAL_INPUTS: Mapping[str, TensorSpec] = {
    SEQUENCE_ID: TensorSpec(SEQUENCE_ID, np.dtype(np.uint64), (1,), optional=True),
    SEQUENCE_CONTROL: TensorSpec(SEQUENCE_CONTROL, np.dtype(np.uint32), (1,), optional=True),
}
# The status of a special input that does not hold its one value where the API expects it.
BAD_TYPE = {SEQUENCE_ID: "SEQUENCE_ID_BAD_TYPE", SEQUENCE_CONTROL: "SEQUENCE_CONTROL_INPUT_BAD_TYPE"}


def split(inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int, int]:
    """A request's model inputs, sequence id (0 = none) and control value (docs/stateful.md#stateful-models); the
    special inputs have passed their precision and shape checks."""
    model_inputs = {name: array for name, array in inputs.items() if name not in SPECIAL_INPUTS}
    sequence_id = int(inputs[SEQUENCE_ID][0]) if SEQUENCE_ID in inputs else 0
    control = int(inputs[SEQUENCE_CONTROL][0]) if SEQUENCE_CONTROL in inputs else NO_CONTROL
    if control not in (NO_CONTROL, START, END):
        raise ServingError("INVALID_SEQUENCE_CONTROL_INPUT", f"{control}; expected 0 (none), 1 (start) or 2 (end)")
    if control != START and sequence_id == 0:
        raise ServingError("SEQUENCE_ID_NOT_PROVIDED", "only a request that starts a sequence may leave it out")
    return model_inputs, sequence_id, control


@dataclass(eq=False)
class Sequence:
    id: int
    state: Any = None  # the model's state after the sequence's last request; None = the model's initial state
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # its requests run one at a time, in arrival order
    ending: bool = False  # its last request has arrived: no other may join
    used: bool = True  # a request came since the last idle scan


class SequenceTable:
    """The live sequences of one model version; touched only from the event loop thread."""

    def __init__(self, where: str, limit: int) -> None:
        self.where = where  # "model m version v", for messages
        self.limit = limit  # max_sequence_number
        self._sequences: dict[int, Sequence] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._sequences)

    def __contains__(self, sequence_id: int) -> bool:
        return sequence_id in self._sequences

    def join(self, sequence_id: int, control: int) -> Sequence:
        """The sequence a request belongs to: a new one for START (id 0 = one the server picks), an existing one
        otherwise; END marks it ending, so that later requests are refused while it finishes."""
        if control == START:
            return self._start(sequence_id)
        sequence = self._sequences.get(sequence_id)
        if sequence is None:
            raise ServingError("SEQUENCE_MISSING", f"{self.where}: sequence {sequence_id}")
        if sequence.ending:
            raise ServingError("SEQUENCE_TERMINATED", f"{self.where}: sequence {sequence_id}")
        sequence.ending = control == END
        sequence.used = True
        return sequence

    def _start(self, sequence_id: int) -> Sequence:
        if len(self._sequences) >= self.limit:
            limit = f"{self.where}: {self.limit} sequences (max_sequence_number)"
            raise ServingError("MAX_SEQUENCE_NUMBER_REACHED", limit)
        existing = self._sequences.get(sequence_id)
        if existing is not None:
            status = "SEQUENCE_TERMINATED" if existing.ending else "SEQUENCE_ALREADY_EXISTS"
            raise ServingError(status, f"{self.where}: sequence {sequence_id}")
        if sequence_id == 0:
            sequence_id = self._unused_id()
        sequence = self._sequences[sequence_id] = Sequence(sequence_id)
        return sequence

    def _unused_id(self) -> int:
        """The next id of a counter that skips ids in use (OVMS's rule: ids start at 1 and are not reused soon)."""
        while self._next_id in self._sequences:
            self._next_id = self._next_id % (_UINT64_LIMIT - 1) + 1
        chosen = self._next_id
        self._next_id = chosen % (_UINT64_LIMIT - 1) + 1
        return chosen

    def leave(self, sequence: Sequence) -> None:
        """A request of `sequence` is done; its END request removes it."""
        sequence.used = True
        if sequence.ending and self._sequences.get(sequence.id) is sequence:
            del self._sequences[sequence.id]

    def sweep(self) -> list[int]:
        """Drop the sequences no request touched since the previous sweep and none holds or waits for now; returns
        their ids."""
        idle = [s.id for s in self._sequences.values() if not s.used and not s.ending and not s.lock.locked()]
        for sequence_id in idle:
            del self._sequences[sequence_id]
        for sequence in self._sequences.values():
            sequence.used = False
        return idle

    def clear(self) -> int:
        """End every sequence (the version retires); requests in flight finish on the state they hold."""
        count = len(self._sequences)
        self._sequences.clear()
        return count
