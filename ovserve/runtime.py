"""OpenVINO adapter: compile a model version, run it through a pool of async infer requests bridged to asyncio, and
reshape it on request for shape/batch_size "auto"."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np
import openvino as ov
from openvino import passes

from . import preprocess
from .config import ModelConfig
from .errors import LoadError, ServingError
from .metrics import Metrics, ModelMetrics
from .tensors import Dim, Shape, TensorSpec, check_inputs, dim_accepts, shape_text
from .types import CountRun

log = logging.getLogger(__name__)

TensorMap = Mapping[str, np.ndarray]
StateHook = Callable[[ov.InferRequest], None]  # sees an infer request before or after its run


# --- metadata from OpenVINO ports ----------------------------------------------------------------------


def prepare_bindings() -> None:
    """Build OpenVINO's numpy type tables now, on this thread, before any loader thread runs (once per process).

    They are C++ function-local statics whose initialisers let go of the GIL (pybind11's numpy lookup): a second
    thread entering meanwhile blocks on the C++ guard holding the GIL, the first waits for the GIL, and both hang."""
    ov.Type.f32.to_dtype()  # OpenVINO type -> numpy dtype (Type.to_dtype, Tensor.data)
    ov.Tensor(np.zeros((), np.float32))  # numpy dtype -> OpenVINO type (tensors made from arrays, start_async)


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


# --- loading -------------------------------------------------------------------------------------------


def _per_input(setting: Any, names: list[str], what: str) -> dict[str, Any]:
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


def _ov_dim(d: Dim) -> ov.Dimension:
    return ov.Dimension(*d) if isinstance(d, tuple) else ov.Dimension(d)


def _apply_layouts(model: ov.Model, config: ModelConfig) -> tuple[ov.Model, dict[str, str]]:
    """Apply 'tensor:model' layouts with OpenVINO's pre/post-processor; return the layouts clients see."""
    inputs = [p.get_any_name() for p in model.inputs]
    outputs = {p.get_any_name() for p in model.outputs}
    if isinstance(config.layout, str):
        layouts = _per_input(config.layout, inputs, "layout")
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
            "LAYOUT_INCOMPATIBLE_WITH_SHAPE", f"Layout incompatible with given shape: {configured}: {_first_line(e)}"
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


def _shape_settings(config: ModelConfig, names: list[str]) -> dict[str, Any]:
    """The `shape` setting by input name; an anonymous "auto" means every input (only a fixed anonymous shape
    needs a single-input model)."""
    if config.shape == "auto":
        return dict.fromkeys(names, "auto")
    return _per_input(config.shape, names, "shape")


def _batch_index(name: str, layouts: Mapping[str, str]) -> int:
    """Position of N in an input's layout (default N...), -1 if it has none before any '...'."""
    return layouts.get(name, "N...").split("...")[0].find("N")


def _reshape(model: ov.Model, config: ModelConfig, layouts: Mapping[str, str]) -> None:
    """Apply the configured fixed shapes or batch size; "auto" inputs keep the model's own shape until a request
    brings another one."""
    names = [p.get_any_name() for p in model.inputs]
    shapes = _shape_settings(config, names)
    wanted = {name: [_ov_dim(d) for d in shape] for name, shape in shapes.items() if shape != "auto"}
    if config.batch_size not in (None, "auto") and not shapes:
        batch = _ov_dim(config.batch_size)  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class AutoShape:
    """Which input dimensions follow the requests (docs/apis.md#input-checks): the batch of every input (`batch_size:
    "auto"`), or every dimension of some inputs (`shape: "auto"`)."""

    batch: bool = False
    inputs: frozenset[str] = frozenset()

    @staticmethod
    def of(model: ov.Model, config: ModelConfig) -> AutoShape | None:
        names = [p.get_any_name() for p in model.inputs]
        shapes = _shape_settings(config, names)
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

    def wanted(self, inputs: TensorMap, specs: Mapping[str, TensorSpec]) -> dict[str, Shape] | None:
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


class _Reshaper:
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
        model.reshape({name: ov.PartialShape([_ov_dim(d) for d in shape]) for name, shape in shapes.items()})
        return self.core.compile_model(model, self.device, self.props)


def _plugin_config(config: ModelConfig) -> dict[str, Any]:
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


def port_specs(ports: Any, layouts: Mapping[str, str]) -> dict[str, TensorSpec]:
    """The TensorSpecs of a model's (or compiled model's) inputs or outputs, by name."""
    return {s.name: s for s in (_spec(p, layouts) for p in ports)}


def load(
    core: ov.Core, config: ModelConfig, version: int, path: Path, metrics: ModelMetrics | None = None
) -> ModelVersion:
    """Read, shape and compile one version (blocking: call it in a worker thread)."""
    model, layouts, model_info = read(core, config, path)
    auto = AutoShape.of(model, config)
    if config.low_latency_transformation:
        _low_latency(model)
    props = _plugin_config(config)
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
    nireq = config.nireq or _optimal_nireq(compiled)
    reshaper = None if auto is None else _Reshaper(auto, core, model, config, props)
    if config.stateful:
        from .stateful import StatefulModelVersion  # here: stateful builds on this module

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


def _optimal_nireq(compiled: ov.CompiledModel) -> int:
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


# --- serving ---------------------------------------------------------------------------------------------


# An infer request of a dynamically shaped model that has moved more bytes than this in one run is replaced by a new
# one, which frees the tensors it grew to (creating one takes well under a millisecond; a run this size takes more).
KEEP_TENSOR_BYTES = 64 << 20


class _Pool:
    """Idle infer requests and the coroutines waiting for one; touched only from the event loop thread."""

    def __init__(self, items: list[Any]) -> None:
        self._idle: deque[Any] = deque(items)
        self._waiters: deque[asyncio.Future[Any]] = deque()

    async def acquire(self) -> Any:
        if self._idle:
            return self._idle.popleft()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as we were cancelled: pass it on
            raise

    def full(self, limit: int) -> bool:
        """Whether a new caller would wait behind `limit` others already waiting."""
        if self._idle or len(self._waiters) < limit:
            return False
        self._waiters = deque(w for w in self._waiters if not w.done())  # callers that gave up leave the count
        return len(self._waiters) >= limit

    def release(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        self._idle.append(item)


class _Slot:
    """One infer request and the future of its current run; OpenVINO's callback resolves it thread-safely."""

    __slots__ = ("__weakref__", "abandoned", "buffers", "future", "held", "loop", "own", "request", "results")

    def __init__(self, request: ov.InferRequest, static_inputs: list[str], static_outputs: list[int]) -> None:
        self.request = request
        self.loop: asyncio.AbstractEventLoop | None = None
        # The current run's future, awaited by its caller; if the caller gives up (the future is cancelled), the run
        # still owns the request until it ends, and then `abandoned` returns the request to its pool.
        self.future: asyncio.Future[None] | None = None
        self.abandoned: Callable[[], None] | None = None
        # The request's own tensor for each statically shaped input, and its memory: a run reads a request's array
        # in place (set_tensor on a tensor sharing its memory) or, when it is not contiguous, from one copy into it,
        # bypassing OpenVINO's per-call Python input dispatch either way.
        self.own: dict[str, ov.Tensor] = {name: request.get_tensor(name) for name in static_inputs}
        self.buffers: dict[str, np.ndarray] = {name: tensor.data for name, tensor in self.own.items()}
        # The arrays the current run reads in place: OpenVINO's tensors do not keep them alive, the slot does until
        # `finish` gives the request its own tensors back.
        self.held: dict[str, np.ndarray] = {}
        # The memory of each statically shaped output by index, which every run fills: read without asking the request
        # for its tensor again.
        self.results: dict[int, np.ndarray] = {i: request.get_output_tensor(i).data for i in static_outputs}
        # OpenVINO keeps the callback and its argument in C++, where Python's collector cannot see a cycle back
        # to this slot: with only a weak reference there, a compiled model no one serves on is freed.
        request.set_callback(_on_done, weakref.ref(self))

    def start(self, inputs: TensorMap) -> None:
        others: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            if value.dtype == object:  # strings: OpenVINO takes numpy bytes arrays for string tensors
                value = value.astype(np.bytes_)
            buffer = self.buffers.get(name)
            if buffer is not None and buffer.shape == value.shape and buffer.dtype == value.dtype:
                if value.flags.c_contiguous and value.flags.aligned:  # bytes at any offset of a body: copied
                    self.request.set_tensor(name, ov.Tensor(_writeable(value), shared_memory=True))
                    self.held[name] = value
                else:
                    np.copyto(buffer, value)
            else:
                self.buffers.pop(name, None)  # OpenVINO may replace that tensor now: stop writing to the old one
                self.own.pop(name, None)
                others[name] = value
        if others:
            self.request.start_async(others, share_inputs=False)
        else:
            self.request.start_async()

    def finish(self) -> None:
        """After a run (or a failed start): the request takes its own tensors back and lets go of the arrays it read
        in place."""
        for name in self.held:
            self.request.set_tensor(name, self.own[name])
        self.held.clear()

    def done(self) -> None:  # runs in an OpenVINO thread
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._resolve, None)

    def _resolve(self, error: BaseException | None) -> None:
        future = self.future
        if future is None:
            return
        if future.cancelled():
            if self.abandoned is not None:
                self.abandoned()
        elif future.done():
            return
        elif error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def watch(self, future: asyncio.Future[None], delay: float) -> None:
        """OpenVINO skips the callback when inference fails; poll the run of `future` now and then to notice, until
        the request is released."""
        if future is not self.future or self.loop is None:
            return
        try:
            self.request.wait_for(0)
        except Exception as e:
            self._resolve(e)
            return
        self.loop.call_later(delay, self.watch, future, min(delay * 2, 1.0))


class _Alias:
    """A read-only array's memory described as writeable (numpy's array interface), keeping the array alive."""

    __slots__ = ("__array_interface__", "array")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        face = array.__array_interface__
        self.__array_interface__ = {**face, "data": (face["data"][0], False)}


def _writeable(array: np.ndarray) -> np.ndarray:
    """`array`, or for a read-only one (a view of a request's bytes) a writeable alias of its memory: OpenVINO shares
    only writeable arrays but never writes into an input (the CPU plugin reads a user's input in place only when no
    node would modify it)."""
    return array if array.flags.writeable else np.asarray(_Alias(array))


def _on_done(slot: weakref.ref[_Slot]) -> None:  # runs in an OpenVINO thread
    live = slot()
    if live is not None:
        live.done()


def _static(spec: TensorSpec) -> bool:
    """A tensor of a numeric precision and a fixed shape: its infer request's memory for it never changes."""
    return spec.dtype not in (None, np.dtype(object)) and all(isinstance(d, int) and d >= 0 for d in spec.shape)


class _Compiled:
    """One compiled model of a version with its pool of infer requests and the tensors it takes; a version
    reshaped on request gets a new one, and requests already running keep the one they started on."""

    def __init__(self, compiled: ov.CompiledModel, nireq: int, layouts: Mapping[str, str], auto: AutoShape | None):
        self.model = compiled
        self.inputs: Mapping[str, TensorSpec] = port_specs(compiled.inputs, layouts)
        self.outputs: Mapping[str, TensorSpec] = port_specs(compiled.outputs, layouts)
        self.accepts = self.inputs if auto is None else auto.open(self.inputs)
        self.output_names = list(self.outputs)
        self._string_outputs = {i for i, s in enumerate(self.outputs.values()) if s.dtype == np.dtype(object)}
        self._static = static = [s.name for s in self.inputs.values() if _static(s)]
        self._static_outputs = [i for i, s in enumerate(self.outputs.values()) if _static(s)]
        # A request keeps the tensors of its last run; with dynamic shapes they grow to the largest one seen.
        self.grows = len(static) < len(self.inputs) or any(
            not all(isinstance(d, int) and d >= 0 for d in s.shape) for s in self.outputs.values()
        )
        self.pool = _Pool([self._slot() for _ in range(nireq)])

    def _slot(self) -> _Slot:
        return _Slot(self.model.create_infer_request(), self._static, self._static_outputs)

    def recycle(self, slot: _Slot, moved: int) -> _Slot:
        """The slot to return to the pool after a run that moved `moved` bytes in and out: a fresh one when the
        run left its request holding large tensors, so memory a big request took is given back after it."""
        if not self.grows or moved <= KEEP_TENSOR_BYTES:
            return slot
        try:
            return self._slot()
        except Exception as e:  # out of memory, say: the old slot serves on rather than the pool losing one
            log.warning("a new infer request could not be made (%s); the old one serves on", e)
            return slot

    def output(self, slot: _Slot, index: int) -> np.ndarray:
        memory = slot.results.get(index)
        if memory is not None:
            copied: np.ndarray = memory.copy()
            return copied
        tensor = slot.request.get_output_tensor(index)
        if index not in self._string_outputs:
            result: np.ndarray = tensor.data.copy()
            return result
        values = np.empty(int(np.prod(tuple(tensor.shape), dtype=np.int64)), dtype=object)
        values[:] = tensor.bytes_data
        return values.reshape(tuple(tensor.shape))


class ModelVersion:
    """A compiled model version serving requests on `nireq` infer requests; satisfies Servable. With shape or
    batch_size "auto" it reshapes itself for a request of another shape (docs/apis.md#input-checks)."""

    def __init__(
        self,
        name: str,
        version: int,
        compiled: ov.CompiledModel,
        nireq: int,
        layouts: Mapping[str, str],
        metrics: ModelMetrics | None = None,
        reshaper: _Reshaper | None = None,
        model_info: Mapping[str, Any] | None = None,
        max_queue: int | None = None,
    ):
        self.name = name
        self.version = version
        self.max_queue = max_queue  # requests that may wait for an infer request; None = no limit
        self.model_info: Mapping[str, Any] = model_info or {}
        self.nireq = nireq
        self.metrics = metrics or Metrics(()).model(name, version)
        self._layouts = layouts
        self._reshaper = reshaper
        self._reshaping = asyncio.Lock()  # one reshape of this version at a time
        self._current = _Compiled(compiled, nireq, layouts, None if reshaper is None else reshaper.auto)
        if reshaper is not None:
            self.metrics.reloadable()

    @property
    def compiled(self) -> ov.CompiledModel:
        return self._current.model

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._current.inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._current.outputs

    @property
    def accepts(self) -> Mapping[str, TensorSpec]:
        return self._current.accepts

    @property
    def _pool(self) -> _Pool:
        """The infer requests of the current compiled model (tests check that every one came back)."""
        return self._current.pool

    @property
    def streams(self) -> int:
        try:
            return int(self.compiled.get_property("NUM_STREAMS"))
        except Exception:
            return 0

    async def infer(self, inputs: TensorMap, count: CountRun | None = None) -> dict[str, np.ndarray]:
        """Run one inference; outputs are copied out of the infer request, which then serves the next caller."""
        current = self._current if self._reshaper is None else await self._shaped_for(inputs)
        return await self._run(current, inputs)

    async def _run(
        self, current: _Compiled, inputs: TensorMap, before: StateHook | None = None, after: StateHook | None = None
    ) -> dict[str, np.ndarray]:
        """Infer on one of `current`'s infer requests; `before` and `after` see that request just before it starts and
        just after it ends (a stateful model's state goes in and out there)."""
        metrics = self.metrics
        if self.max_queue is not None and current.pool.full(self.max_queue):
            metrics.refused()
            waiting = f"{self.max_queue} requests already wait (max_queue_size)"
            raise ServingError("MODEL_QUEUE_FULL", f"model {self.name} version {self.version}: {waiting}")
        asked = perf_counter_ns()
        slot: _Slot = await current.pool.acquire()
        started = perf_counter_ns()
        metrics.acquired((started - asked) / 1000)
        loop = asyncio.get_running_loop()
        slot.loop = loop
        slot.future = future = loop.create_future()
        try:
            if before is not None:
                before(slot.request)
            slot.start(inputs)
        except Exception as e:
            self._release(current, slot, None)
            raise self._failure(e) from e
        slot.abandoned = partial(self._release, current, slot, None)
        watcher = loop.call_later(0.05, slot.watch, future, 0.1)
        try:
            await future
        except asyncio.CancelledError:
            # The caller gave up. If the run had ended, the request goes back now; if not, the future is cancelled
            # and the request goes back when the run ends (the callback or the watcher calls `slot.abandoned`).
            if not future.cancelled():
                watcher.cancel()
                future.exception()  # retrieved: a failed run is no one's error now
                self._release(current, slot, None)
            raise
        except Exception as e:
            watcher.cancel()
            self._release(current, slot, None)
            raise self._failure(e) from e
        watcher.cancel()
        moved = 0
        try:
            if after is not None:
                after(slot.request)
            outputs = {name: current.output(slot, i) for i, name in enumerate(current.output_names)}
            moved = sum(v.nbytes for v in inputs.values()) + sum(v.nbytes for v in outputs.values())
            return outputs
        finally:
            self._release(current, slot, (perf_counter_ns() - started) / 1000, moved)

    async def _shaped_for(self, inputs: TensorMap) -> _Compiled:
        """The compiled model to run `inputs` on: the current one, or one reshaped for them. Reshapes run one at a
        time; a request that finds the model already reshaped for it by another one just runs."""
        assert self._reshaper is not None
        auto = self._reshaper.auto
        current = self._current
        if auto.wanted(inputs, current.inputs) is not None:
            async with self._reshaping:
                current = self._current
                shapes = auto.wanted(inputs, current.inputs)
                if shapes is not None:
                    # Other dimensions must match too: refuse before paying for a reshape that would not serve.
                    check_inputs(
                        inputs, {n: replace(s, shape=shapes.get(n, s.shape)) for n, s in current.inputs.items()}
                    )
                    current = await self._reshape(shapes)
        check_inputs(inputs, current.inputs)  # nothing runs on a compiled model of another shape
        return current

    async def _reshape(self, shapes: Mapping[str, Shape]) -> _Compiled:
        assert self._reshaper is not None
        wanted = ", ".join(f"{name} {shape_text(shape)}" for name, shape in sorted(shapes.items()))
        started = perf_counter_ns()
        try:
            compiled = await asyncio.to_thread(self._reshaper.compile, shapes)
            current = _Compiled(compiled, self.nireq, self._layouts, self._reshaper.auto)
        except Exception as e:
            self.metrics.reloaded(False)
            reason = _first_line(e)
            log.error("model %s version %d could not be reshaped to %s; the previous shape keeps serving: %s",
                      self.name, self.version, wanted, reason)  # fmt: skip
            raise ServingError("RESHAPE_ERROR", f"model {self.name} version {self.version}: {wanted}: {reason}") from e
        self._current = current
        self.metrics.reloaded(True)
        log.info("model %s version %d reloaded for shape %s in %.0f ms", self.name, self.version, wanted,
                 (perf_counter_ns() - started) / 1e6)  # fmt: skip
        return current

    def _release(self, current: _Compiled, slot: _Slot, inference_us: float | None, moved: int = 0) -> None:
        """Return a request whose run has ended (or never started) to the pool."""
        slot.future = slot.abandoned = None
        slot.finish()
        self.metrics.released(inference_us)
        current.pool.release(current.recycle(slot, moved))

    def _failure(self, error: BaseException) -> ServingError:
        log.error("inference failed on model %s version %d: %s", self.name, self.version, error)
        return ServingError(
            "OV_INTERNAL_INFERENCE_ERROR", f"model {self.name} version {self.version}: {_first_line(error)}"
        )


def _first_line(error: BaseException) -> str:
    """The gist of an OpenVINO exception, whose text ends with the message after a C++ trace."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
