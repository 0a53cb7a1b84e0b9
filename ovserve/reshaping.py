"""Shape/batch_size "auto": which input dimensions follow the requests, and compiling a model for a request's shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import openvino as ov

from .config import ModelConfig
from .errors import LoadError
from .ports import ov_dim
from .tensors import Shape, TensorSpec, dim_accepts


def per_input(setting: Any, names: list[str], what: str) -> dict[str, Any]:
    """Expand a shape/layout setting given once (for a single-input model) or by name."""
    if setting is None:
        return {}
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(names))
        if unknown:
            raise LoadError(
                f"CONFIG_{what.upper()}_IS_NOT_IN_MODEL",
                f"{what.capitalize()} from config not found in model: {unknown[0]}; the model's inputs: "
                f"{', '.join(names)}",
            )
        return dict(setting)
    if len(names) != 1:
        raise LoadError(
            f"ANONYMOUS_FIXED_{what.upper()}_NOT_ALLOWED",
            f"Anonymous fixed {what} is invalid for models with multiple inputs",
        )
    return {names[0]: setting}


def shape_settings(config: ModelConfig, names: list[str]) -> dict[str, Any]:
    """The `shape` setting by input name; an anonymous "auto" means every input (only a fixed anonymous shape
    needs a single-input model)."""
    if config.shape == "auto":
        return dict.fromkeys(names, "auto")
    return per_input(config.shape, names, "shape")


@dataclass(frozen=True)
class AutoShape:
    """Which input dimensions follow the requests (docs/apis.md#input-checks): the batch of every input (`batch_size:
    "auto"`), or every dimension of some inputs (`shape: "auto"`)."""

    batch: bool = False
    inputs: frozenset[str] = frozenset()

    @staticmethod
    def of(model: ov.Model, config: ModelConfig) -> AutoShape | None:
        names = [p.get_any_name() for p in model.inputs]
        shapes = shape_settings(config, names)
        if config.batch_size == "auto" and not shapes:  # a configured shape overrides batch_size (OVMS)
            if any(p.get_partial_shape().rank.is_static and len(p.get_partial_shape()) == 0 for p in model.inputs):
                raise LoadError(
                    "MODEL_WITH_SCALAR_AUTO_UNSUPPORTED", "Batching set to AUTO but model contains scalar tensor"
                )
            return AutoShape(batch=True)
        auto = frozenset(name for name, shape in shapes.items() if shape == "auto")
        return AutoShape(inputs=auto) if auto else None

    def _follows(self, name: str, spec: TensorSpec) -> list[int]:
        """Indexes of the dimensions of input `name` that follow the request."""
        if name in self.inputs:
            return list(range(len(spec.shape)))
        index = spec.batch_index if self.batch else None
        return [index] if index is not None and index < len(spec.shape) else []

    def open(self, specs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        """`specs` with the dimensions that follow the request set to -1: what a request is validated against."""
        opened = {}
        for name, spec in specs.items():
            shape = list(spec.shape)
            for i in self._follows(name, spec):
                shape[i] = -1
            opened[name] = replace(spec, shape=tuple(shape))
        return opened

    def wanted(self, inputs: Mapping[str, np.ndarray], specs: Mapping[str, TensorSpec]) -> dict[str, Shape] | None:
        """The input shapes to reshape the model to for `inputs`; None when `specs` serve them as they are.
        Batch: the request's batch (of the first input by name) for every batched input. Shape: the request's shapes
        for every auto input. `inputs` have passed the check against `open(specs)`."""
        wanted: dict[str, Shape] = {}
        batch: int | None = None
        needed = False
        for name in sorted(specs):
            spec = specs[name]
            follows = self._follows(name, spec)
            if not follows:
                continue
            actual = inputs[name].shape
            if name in self.inputs:
                wanted[name] = tuple(actual)
                needed = needed or not all(dim_accepts(d, n) for d, n in zip(spec.shape, actual, strict=True))
                continue
            index = follows[0]
            batch = actual[index] if batch is None else batch
            wanted[name] = (*spec.shape[:index], batch, *spec.shape[index + 1 :])
            needed = needed or not dim_accepts(spec.shape[index], batch)
        return wanted if needed else None


class Reshaper:
    """What reshaping a version on request needs: which dimensions follow the request, the model as read (layouts
    and fixed shapes applied) and how it was compiled."""

    def __init__(
        self,
        auto: AutoShape,
        core: ov.Core,
        model: ov.Model,
        config: ModelConfig,
        props: dict[str, Any],
    ) -> None:
        self.auto = auto
        self.core = core
        self.model = model
        self.device = config.target_device
        self.props = props

    def compile(self, shapes: Mapping[str, Shape]) -> ov.CompiledModel:
        """Blocking: call it in a worker thread."""
        model = self.model.clone()
        model.reshape({name: ov.PartialShape([ov_dim(d) for d in shape]) for name, shape in shapes.items()})
        return self.core.compile_model(model, self.device, self.props)
