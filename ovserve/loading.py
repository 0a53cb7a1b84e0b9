"""Loading a model version: read its model file, apply layouts and fixed shapes, compile it, build its ModelVersion."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino import passes

from . import preprocess
from .config import ModelConfig
from .errors import LoadError
from .metrics import ModelMetrics
from .ports import ov_dim
from .reshaping import AutoShape, Reshaper, per_input, shape_settings
from .runtime import ModelVersion, first_line
from .stateful import StatefulModelVersion

log = logging.getLogger(__name__)


def prepare_bindings() -> None:
    """Build OpenVINO's numpy type tables now, on this thread, before any loader thread runs (once per process).

    They are C++ function-local statics whose initialisers let go of the GIL (pybind11's numpy lookup): a second
    thread entering meanwhile blocks on the C++ guard holding the GIL, the first waits for the GIL, and both hang."""
    ov.Type.f32.to_dtype()  # OpenVINO type -> numpy dtype (Type.to_dtype, Tensor.data)
    ov.Tensor(np.zeros((), np.float32))  # numpy dtype -> OpenVINO type (tensors made from arrays, start_async)


def _apply_layouts(model: ov.Model, config: ModelConfig) -> tuple[ov.Model, dict[str, str]]:
    """Apply 'tensor:model' layouts with OpenVINO's pre/post-processor; return the layouts clients see."""
    inputs = [p.get_any_name() for p in model.inputs]
    outputs = {p.get_any_name() for p in model.outputs}
    if isinstance(config.layout, str):
        layouts = per_input(config.layout, inputs, "layout")
    else:
        layouts = dict(config.layout or {})
    if not layouts:
        return model, _stored_layouts(model, {})
    unknown = sorted(name for name in layouts if name not in inputs and name not in outputs)
    if unknown:
        raise LoadError(
            "CONFIG_LAYOUT_IS_NOT_IN_MODEL",
            f"Layout from config not found in model: {unknown[0]}; the model's inputs: {', '.join(inputs)}; "
            f"outputs: {', '.join(sorted(outputs))}",
        )
    ppp = ov.preprocess.PrePostProcessor(model)
    try:
        for name, layout in layouts.items():
            tensor_layout, _, model_layout = layout.partition(":")
            info = ppp.input(name) if name in inputs else ppp.output(name)
            info.model().set_layout(ov.Layout(model_layout or tensor_layout))
            info.tensor().set_layout(ov.Layout(tensor_layout))
        model = ppp.build()
    except Exception as e:  # e.g. NCHW for an input of rank 2: that version fails, the server goes on
        configured = ", ".join(f"{name} {layout}" for name, layout in sorted(layouts.items()))
        raise LoadError(
            "LAYOUT_INCOMPATIBLE_WITH_SHAPE", f"Layout incompatible with given shape: {configured}: {first_line(e)}"
        ) from e
    return model, _stored_layouts(model, {name: layout.partition(":")[0] for name, layout in layouts.items()})


def _stored_layouts(model: ov.Model, configured: dict[str, str]) -> dict[str, str]:
    """`configured` plus, for the other inputs and outputs, the layout stored in the model (its rt_info), which OVMS
    reports and takes the batch position from (docs/configuration.md#model-loading); a tensor with neither has the
    default N...."""
    layouts = dict(configured)
    for port in (*model.inputs, *model.outputs):
        stored = ov.layout_helpers.get_layout(port)
        if port.get_any_name() not in layouts and not stored.empty:
            layouts[port.get_any_name()] = stored.to_string().strip("[]").replace(",", "")
    return layouts


def _batch_index(name: str, layouts: Mapping[str, str]) -> int:
    """Position of N in an input's layout (default N...), -1 if it has none before any '...'."""
    return layouts.get(name, "N...").split("...")[0].find("N")


def _reshape(model: ov.Model, config: ModelConfig, layouts: Mapping[str, str]) -> None:
    """Apply the configured fixed shapes or batch size; "auto" inputs keep the model's own shape until a request
    brings another one."""
    names = [p.get_any_name() for p in model.inputs]
    shapes = shape_settings(config, names)
    wanted = {name: [ov_dim(d) for d in shape] for name, shape in shapes.items() if shape != "auto"}
    if config.batch_size not in (None, "auto") and not shapes:
        batch = ov_dim(config.batch_size)  # type: ignore[arg-type]
        without_n = []
        for port in model.inputs:
            name = port.get_any_name()
            dims = list(port.get_partial_shape())
            index = _batch_index(name, layouts)
            if dims and index >= 0:
                dims[index] = batch
                wanted[name] = dims
            else:
                without_n.append(f"{name} {layouts.get(name, 'N...' if dims else '...')}")
        if not wanted:  # OVMS's ov.set_batch fails the same way: the batch size has nowhere to go
            raise LoadError(
                "MODEL_NOT_LOADED",
                "Error while loading a model: batch_size is set but no input has N in its layout: "
                + ", ".join(without_n),
            )
    if wanted:
        try:
            model.reshape({name: ov.PartialShape(dims) for name, dims in wanted.items()})
        except Exception as e:
            raise LoadError("RESHAPE_ERROR", f"Model could not be reshaped with requested shape: {e}") from e


def plugin_config(config: ModelConfig) -> dict[str, Any]:
    props = {k: (str(v) if k == "NUM_STREAMS" else v) for k, v in config.plugin_config.items()}
    if "NUM_STREAMS" not in props and "PERFORMANCE_HINT" not in props:
        props["PERFORMANCE_HINT"] = "LATENCY"
    return props


def read(core: ov.Core, config: ModelConfig, path: Path) -> tuple[ov.Model, dict[str, str], dict[str, Any]]:
    """Read one version's model file and shape it as its config says, without compiling
    (docs/configuration.md#model-loading steps 1-6): the model, the layouts clients see, its model_info. Blocking;
    raises LoadError."""
    try:
        model = core.read_model(str(path))
    except Exception as e:
        raise LoadError("FILE_INVALID", f"File not found or cannot open: {path}: {e}") from e
    for i, port in enumerate(model.outputs):
        if not port.get_names():
            port.get_tensor().set_names({f"out_{i}"})
    if not model.inputs or not model.outputs:
        raise LoadError("OV_NO_INPUTS", f"Cannot load model with no {'inputs' if not model.inputs else 'outputs'}")
    model_info = _model_info(model)
    model, layouts = _apply_layouts(model, config)  # a layout OpenVINO refuses is LAYOUT_INCOMPATIBLE_WITH_SHAPE
    # CLI --mean, --scale, ... (docs/configuration.md#model-loading)
    model, layouts = preprocess.apply(model, config.preprocess, layouts)
    _reshape(model, config, layouts)
    AutoShape.of(model, config)  # a scalar input with batch_size "auto" fails here
    return model, layouts, model_info


def load(
    core: ov.Core, config: ModelConfig, version: int, path: Path, metrics: ModelMetrics | None = None
) -> ModelVersion:
    """Read, shape and compile one version (blocking: call it in a worker thread)."""
    model, layouts, model_info = read(core, config, path)
    auto = AutoShape.of(model, config)
    if config.low_latency_transformation:
        _low_latency(model)
    props = plugin_config(config)
    if auto is not None and not config.allow_cache:
        # every request shape would leave a compiled blob in the cache (docs/configuration.md#model-cache)
        props["CACHE_DIR"] = ""
    try:
        compiled = core.compile_model(model, config.target_device, props)
    except Exception as e:
        message = f"Cannot compile model into target device: {e}"
        raise LoadError("CANNOT_COMPILE_MODEL_INTO_TARGET_DEVICE", message) from e
    if _from_cache(compiled):
        log.info("model %s version %d: compiled model loaded from the cache", config.name, version)
    nireq = config.nireq or optimal_nireq(compiled)
    reshaper = None if auto is None else Reshaper(auto, core, model, config, props)
    if config.stateful:
        return StatefulModelVersion(
            config.name, version, compiled, nireq, layouts, metrics, None, model_info, config.max_queue_size,
            max_sequences=config.max_sequence_number,
        )  # fmt: skip
    return ModelVersion(
        config.name, version, compiled, nireq, layouts, metrics, reshaper, model_info, config.max_queue_size
    )


def _low_latency(model: ov.Model) -> None:
    """OpenVINO's LowLatency2: the loops of recurrent layers (TensorIterator, Loop) keep their state in variables
    between inferences instead of starting from their initial values (low_latency_transformation)."""
    names = [port.get_names() for port in (*model.inputs, *model.outputs)]
    manager = passes.Manager()
    manager.register_pass(passes.LowLatency2())
    try:
        manager.run_passes(model)
    except Exception as e:
        raise LoadError("MODEL_NOT_LOADED", f"Error while loading a model: low latency transformation: {e}") from e
    # The unrolled loop body keeps its tensor names, which OpenVINO's compiler may merge into the names of the model's
    # inputs and outputs, where they can sort before the names clients know: only inputs and outputs keep names.
    for node in model.get_ordered_ops():
        for output in node.outputs():
            output.get_tensor().set_names(set())
    for port, known in zip((*model.inputs, *model.outputs), names, strict=True):
        port.get_tensor().set_names(known)


def _model_info(model: ov.Model) -> dict[str, Any]:
    """rt_info["model_info"] of the IR (labels, model_type, ...) as KServe metadata reports it: each value as text,
    nested sections as dicts (docs/apis.md#kserve-rest)."""
    if not model.has_rt_info(["model_info"]):
        return {}

    def plain(node: Any) -> Any:
        return {key: plain(value) for key, value in node.items()} if isinstance(node, dict) else node.astype(str)

    info = plain(model.get_rt_info()["model_info"])
    return info if isinstance(info, dict) else {}


def _from_cache(compiled: ov.CompiledModel) -> bool:
    try:
        return bool(compiled.get_property("LOADED_FROM_CACHE"))
    except Exception:  # devices that do not report it
        return False


def optimal_nireq(compiled: ov.CompiledModel) -> int:
    """OpenVINO's optimal number, but at least two per stream: a stream then has its next request queued while
    the event loop collects the previous result (OVMS uses OpenVINO's number alone)."""
    try:
        optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    except Exception:
        optimal = 1
    try:
        streams = int(compiled.get_property("NUM_STREAMS"))
    except Exception:
        streams = 1
    return max(1, optimal, 2 * streams)
