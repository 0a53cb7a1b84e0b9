"""Protocol-neutral request, result, metadata and status types shared by the data plane and the frontends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from .config import PipelineConfig
from .sequences import SEQUENCE_ID
from .tensors import TensorSpec


@dataclass(frozen=True, slots=True)
class InferRequest:
    target: str  # model or pipeline name
    version: int | None  # None (or 0 on the wire) = the default version
    inputs: Mapping[str, np.ndarray] | Decoder  # arrays, or a decoder given the servable's input specs


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """How large a request's encoded images may be once decoded: pixels of one image (read from its header before
    decoding where the format allows), and bytes of all of them decoded or converted to their input's precision."""

    max_pixels: int = 1 << 26  # 8192 x 8192
    max_bytes: int = 1 << 30  # 1 GiB, as the largest body OVMS takes


class Deferred(Protocol):
    """A request's arrays with work left to do (images to decode), done under the server's limits."""

    async def finish(self, limits: ImageLimits) -> dict[str, np.ndarray]: ...


# A decoder returns the arrays, or a Deferred when part of the work (image decoding) is left.
Decoder = Callable[[Mapping[str, TensorSpec]], Mapping[str, np.ndarray] | Deferred]


@dataclass(frozen=True, slots=True)
class Origin:
    """Which front door a request came through; the labels of its request metrics (docs/operations.md#metrics)."""

    api: Literal["TensorFlowServing", "KServe"]
    interface: Literal["gRPC", "REST"]
    method: str  # Predict, GetModelMetadata, GetModelStatus, ModelInfer, ModelMetadata, ModelReady


# Counts one run of a model version (name, version, succeeded) as a request on it, as OVMS counts a pipeline's DL node
# runs. The data plane binds it to the request's front door, so what runs the request never learns which door that was.
CountRun = Callable[[str, int, bool], None]


class Signature(Protocol):
    """Anything with named, typed inputs and outputs: what a pipeline node runs (a model version or a custom node)."""

    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, TensorSpec]: ...
    @property
    def outputs(self) -> Mapping[str, TensorSpec]: ...


class Servable(Signature, Protocol):
    """Anything requests can be sent to: a model version or a bound pipeline."""

    @property
    def version(self) -> int: ...
    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        """The inputs as metadata reports them (for a model reshaped on request: its current shapes)."""
        ...

    @property
    def model_info(self) -> Mapping[str, Any]:
        """The model's rt_info under "model_info" as plain text values and nested dicts (empty when none)."""
        ...

    @property
    def accepts(self) -> Mapping[str, TensorSpec]:
        """What a request is validated against before `infer`: `inputs`, with the dimensions that `infer` may
        reshape the model for (shape/batch_size "auto") left open."""
        ...

    async def infer(self, inputs: Mapping[str, np.ndarray], count: CountRun | None = None) -> dict[str, np.ndarray]:
        """`count`, when given, is told of every model run the request makes inside (a pipeline's DL nodes)."""
        ...


@dataclass(frozen=True, slots=True)
class InferResult:
    target: str
    version: int
    outputs: Mapping[str, np.ndarray]
    # a stateful model's answer names the request's sequence (docs/stateful.md#stateful-models)
    sequence_id: int | None = None

    def all_outputs(self) -> Mapping[str, np.ndarray]:
        """The outputs and, for a stateful model, the output sequence_id: uint64, shape [1]."""
        if self.sequence_id is None:
            return self.outputs
        return {**self.outputs, SEQUENCE_ID: np.array([self.sequence_id], np.uint64)}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Metadata of a servable as APIs report it."""

    name: str
    version: int
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    available: tuple[int, ...] = ()  # every version AVAILABLE now, ascending (pipelines: 1)
    model_info: Mapping[str, Any] | None = None  # the model's rt_info "model_info": text values, nested dicts


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One row of GetModelStatus: state is a TF Serving state name, error_code a status code name."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"  # OK, UNKNOWN, FAILED_PRECONDITION
    message: str = ""  # why a load failed: TF Serving's error_message "<error_code> - <message>" (beyond OVMS)


@dataclass(frozen=True)
class ModelView:
    """What is known of one model, for status pages and indexes."""

    name: str
    retired: bool
    error: str  # a problem of the whole model
    scanning: bool  # its versions are not listed yet
    where: str  # its base path as written
    default: int | None  # the version a request without one gets
    versions: list[VersionStatus]


@dataclass(frozen=True)
class PipelineView:
    """What is known of one pipeline, for status pages and indexes."""

    name: str
    config: PipelineConfig
    status: VersionStatus
