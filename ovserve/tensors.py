"""Tensor metadata (TensorSpec), precision names, shape text, and request-tensor validation (docs/apis.md#tfs-grpc,
docs/apis.md#input-checks)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ServingError

# A dimension: a static size (>= 0), -1 for "any", or an inclusive (min, max) range.
Dim = int | tuple[int, int]
Shape = tuple[Dim, ...]

# OVMS precision names used in messages (docs/apis.md#data-types), keyed by numpy dtype.
_PRECISION = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.object_): "STRING",
}


def precision_name(dtype: np.dtype | None) -> str:
    """OVMS name of a numpy dtype ("FP32", ...); "INVALID" when it has none."""
    return _PRECISION.get(dtype, "INVALID") if dtype is not None else "INVALID"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """What an endpoint input or output accepts: exposed name, numpy dtype, shape, layout."""

    name: str
    dtype: np.dtype | None  # None = unspecified (pass-through pipeline tensors)
    shape: Shape
    layout: str = ""
    demultiplexed: bool = False  # a pipeline input whose leading dimension the request's demultiplexer splits
    optional: bool = False  # a request may leave it out (a stateful model's sequence_id, sequence_control_input)

    @property
    def batch_index(self) -> int | None:
        """Position of the batch dimension: 'N' in the layout before any '...'; default layout is N..."""
        layout = self.layout or ("N..." if self.shape else "...")
        head = layout.split("...")[0]
        return head.index("N") if "N" in head else None

    def metadata_shape(self) -> list[int]:
        """Shape as APIs report it: static sizes, -1 for anything not static."""
        return [d if isinstance(d, int) else -1 for d in self.shape]


def dim_text(dim: Dim) -> str:
    return f"[{dim[0]}~{dim[1]}]" if isinstance(dim, tuple) else str(dim)


def shape_text(shape: tuple[Dim, ...] | tuple[int, ...]) -> str:
    """OVMS shape text: (1,3,224,224), dynamic -1, range [1~8]."""
    return "(" + ",".join(dim_text(d) for d in shape) + ")"


_INT64 = 1 << 63


def element_count(shape: Sequence[int]) -> int:
    """The number of elements of a request shape in int64 arithmetic, as numpy's product counts them (a product
    beyond int64 wraps, so the error messages that show it stay those of np.prod); math.prod costs a fraction of
    np.prod for the few dimensions of a shape."""
    count = math.prod(shape)
    if -_INT64 <= count < _INT64:
        return count
    return (count + _INT64) % (2 * _INT64) - _INT64


def request_count(shape: Sequence[int], name: str) -> int:
    """The element count of a request tensor's declared shape (dimensions >= 0) before its content is read: a count
    beyond int64 is a shape no content can fill (its wrapped count could match an empty buffer)."""
    count = math.prod(shape)
    if count >= _INT64:
        raise ServingError(
            "INVALID_SHAPE", f"Element count of {shape_text(tuple(shape))} exceeds int64; input name: {name}"
        )
    return count


def dim_accepts(dim: Dim, size: int) -> bool:
    if isinstance(dim, tuple):
        return dim[0] <= size <= dim[1]
    return dim == -1 or dim == size


def dims_overlap(a: Dim, b: Dim) -> bool:
    """Whether two dimensions admit a common size (-1 overlaps everything)."""
    lo_a, hi_a = _bounds(a)
    lo_b, hi_b = _bounds(b)
    return max(lo_a, lo_b) <= min(hi_a, hi_b)


def _bounds(d: Dim) -> tuple[int, float]:
    if isinstance(d, tuple):
        return d
    return (0, float("inf")) if d == -1 else (d, d)


def _where(name: str, node: str | None) -> tuple[str, str]:
    """Message prefix and suffix: model requests end with '; input name: x', node inputs start 'Node: n input: x'."""
    if node is None:
        return "", f"; input name: {name}"
    return f"Node: {node} input: {name} ", ""


def check_input(array: np.ndarray, spec: TensorSpec, node: str | None = None) -> None:
    """Raise the OVMS error for the first of precision, rank, batch, shape that `array` violates."""
    check_declared(array.dtype, array.shape, spec, node)


def check_declared(dtype: np.dtype, actual: tuple[int, ...], spec: TensorSpec, node: str | None = None) -> None:
    """check_input for a tensor known by its precision and shape alone, before any of its data is read."""
    prefix, suffix = _where(spec.name, node)
    if spec.dtype is not None and dtype != spec.dtype:
        detail = "Invalid precision - " if node else ""
        raise ServingError(
            "INVALID_PRECISION",
            f"{prefix}{detail}Expected: {precision_name(spec.dtype)}; Actual: {precision_name(dtype)}{suffix}",
        )
    if spec.dtype is None:
        return
    detail = "Invalid shape - " if node else ""
    if len(actual) != len(spec.shape):
        raise ServingError(
            "INVALID_NO_OF_SHAPE_DIMENSIONS",
            f"{prefix}{detail}Expected: {shape_text(spec.shape)}; Actual: {shape_text(actual)}{suffix}",
        )
    batch = spec.batch_index
    if batch is not None and batch < len(actual) and not dim_accepts(spec.shape[batch], actual[batch]):
        detail_b = "Invalid batch size - " if node else ""
        raise ServingError(
            "INVALID_BATCH_SIZE",
            f"{prefix}{detail_b}Expected: {dim_text(spec.shape[batch])}; Actual: {actual[batch]}{suffix}",
        )
    if not all(dim_accepts(d, n) for d, n in zip(spec.shape, actual, strict=True)):
        raise ServingError(
            "INVALID_SHAPE",
            f"{prefix}{detail}Expected: {shape_text(spec.shape)}; Actual: {shape_text(actual)}{suffix}",
        )


def check_names(names: Collection[str], specs: Mapping[str, TensorSpec]) -> None:
    """The first checks of a request, before any input is read: number of inputs (the required ones and the
    optional ones it sends), then presence by sorted name."""
    expected = sum(1 for name, spec in specs.items() if not spec.optional or name in names)
    if not names or len(names) != expected:
        raise ServingError("INVALID_NO_OF_INPUTS", f"Expected: {expected}; Actual: {len(names)}")
    for name in sorted(specs):
        if name not in names and not specs[name].optional:
            raise ServingError("INVALID_MISSING_INPUT", f"Required input: {name}")


def check_inputs(inputs: Mapping[str, np.ndarray], specs: Mapping[str, TensorSpec]) -> None:
    """Validate a request against an endpoint in OVMS's order: count, then each input by sorted name."""
    check_names(inputs.keys(), specs)
    for name in sorted(specs):
        if name in inputs:
            check_input(inputs[name], specs[name])
