"""A stateful model version (docs/stateful.md#stateful-models): each sequence's OpenVINO variable states are restored
into an infer request before its request runs and saved after, so sequences interleave freely over the pool of infer
requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import openvino as ov

from . import sequences
from .runtime import ModelVersion, TensorMap
from .sequences import END, START, Sequence, SequenceTable
from .tensors import TensorSpec
from .types import CountRun


class StatefulModelVersion(ModelVersion):
    """A ModelVersion whose requests belong to sequences: they carry sequence_id and sequence_control_input, run one
    at a time per sequence in arrival order, and answer with the sequence id."""

    def __init__(self, *args: Any, max_sequences: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequences = SequenceTable(f"model {self.name} version {self.version}", max_sequences)
        self._accepts = {**self._current.inputs, **sequences.SPECIAL_INPUTS}

    @property
    def accepts(self) -> Mapping[str, TensorSpec]:
        """The model's inputs and the optional special inputs (metadata lists only the model's)."""
        return self._accepts

    async def infer(self, inputs: TensorMap, count: CountRun | None = None) -> dict[str, np.ndarray]:
        outputs, _ = await self.infer_in_sequence(inputs)
        return outputs

    async def infer_in_sequence(self, inputs: TensorMap) -> tuple[dict[str, np.ndarray], int]:
        """Run a request in its sequence; returns the outputs and the sequence id (the one the server picked for a
        start without an id)."""
        model_inputs, sequence_id, control = sequences.split(inputs)
        sequence = self.sequences.join(sequence_id, control)
        try:
            async with sequence.lock:
                outputs = await self._run(
                    self._current,
                    model_inputs,
                    before=lambda request: _restore(request, sequence, control),
                    after=lambda request: _save(request, sequence, control),
                )
        finally:
            self.sequences.leave(sequence)
        return outputs, sequence.id


def _restore(request: ov.InferRequest, sequence: Sequence, control: int) -> None:
    """Put the sequence's state into the infer request: the model's initial state for a new sequence."""
    saved = sequence.state
    for state in request.query_state():
        if control == START or saved is None:
            state.reset()
        else:
            state.state = ov.Tensor(saved[state.name], shared_memory=True)  # OpenVINO copies it in


def _save(request: ov.InferRequest, sequence: Sequence, control: int) -> None:
    """Keep the state the request left (copied: the infer request serves other sequences next); an ending sequence
    needs none."""
    if control != END:
        sequence.state = {state.name: state.state.data.copy() for state in request.query_state()}
