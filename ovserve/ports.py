"""OpenVINO ports as TensorSpecs: their precisions and dimensions, and dimensions back as OpenVINO's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import openvino as ov

from .tensors import Dim, TensorSpec


def _dtype(element_type: ov.Type) -> np.dtype | None:
    if element_type == ov.Type.string:
        return np.dtype(object)
    try:
        dtype: np.dtype[Any] = np.dtype(element_type.to_dtype())
        return dtype
    except Exception:  # bf16, u4, ... have no numpy dtype: the tensor is reported as INVALID
        return None


def _dim(d: ov.Dimension) -> Dim:
    if d.is_static:
        return int(d.get_length())
    low, high = d.get_min_length(), d.get_max_length()
    return (low, high) if high >= 0 else -1


def _spec(port: Any, layouts: Mapping[str, str]) -> TensorSpec:
    name = port.get_any_name()
    shape = tuple(_dim(d) for d in port.get_partial_shape())
    return TensorSpec(name, _dtype(port.get_element_type()), shape, layouts.get(name, ""))


def port_specs(ports: Any, layouts: Mapping[str, str]) -> dict[str, TensorSpec]:
    """The TensorSpecs of a model's (or compiled model's) inputs or outputs, by name."""
    return {s.name: s for s in (_spec(p, layouts) for p in ports)}


def ov_dim(d: Dim) -> ov.Dimension:
    return ov.Dimension(*d) if isinstance(d, tuple) else ov.Dimension(d)
