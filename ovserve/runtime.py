"""OpenVINO adapter: compile a model version and run it through a pool of async infer requests bridged to asyncio."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Protocol

import numpy as np
import openvino as ov

from .config import ModelConfig
from .errors import LoadError, ServingError
from .metrics import Metrics, ModelMetrics
from .tensors import Dim, TensorSpec
from .types import Origin

log = logging.getLogger(__name__)

TensorMap = Mapping[str, np.ndarray]


class Servable(Protocol):
    """Anything requests can be sent to: a model version or a bound pipeline."""

    name: str
    version: int
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    async def infer(self, inputs: TensorMap, origin: Origin | None = None) -> dict[str, np.ndarray]:
        """`origin` names the front door, for servables that record per-part metrics (pipelines)."""
        ...


# --- metadata from OpenVINO ports ----------------------------------------------------------------------


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
            raise LoadError("CONFIG_SHAPE_IS_NOT_IN_MODEL", f"{what} from config not found in model: {unknown[0]}")
        return dict(setting)
    if len(names) != 1:
        raise LoadError(
            "ANONYMOUS_FIXED_SHAPE_NOT_ALLOWED", f"Anonymous fixed {what} is invalid for models with multiple inputs"
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
        return model, {}
    ppp = ov.preprocess.PrePostProcessor(model)
    for name, layout in layouts.items():
        if name not in inputs and name not in outputs:
            raise LoadError("CONFIG_LAYOUT_IS_NOT_IN_MODEL", f"Layout from config not found in model: {name}")
        tensor_layout, _, model_layout = layout.partition(":")
        info = ppp.input(name) if name in inputs else ppp.output(name)
        info.model().set_layout(ov.Layout(model_layout or tensor_layout))
        info.tensor().set_layout(ov.Layout(tensor_layout))
    return ppp.build(), {name: layout.partition(":")[0] for name, layout in layouts.items()}


def _reshape(model: ov.Model, config: ModelConfig, layouts: Mapping[str, str]) -> None:
    names = [p.get_any_name() for p in model.inputs]
    wanted: dict[str, list[ov.Dimension]] = {}
    shapes = _per_input(config.shape, names, "shape")
    for name, shape in shapes.items():
        if shape == "auto":  # OVMS reloads per request shape; ovserve serves any shape without a reload instead
            rank = len(model.input(name).get_partial_shape())
            wanted[name] = [ov.Dimension(-1)] * rank
        else:
            wanted[name] = [_ov_dim(d) for d in shape]
    if config.batch_size is not None and not shapes:
        batch = -1 if config.batch_size == "auto" else config.batch_size
        for port in model.inputs:
            name = port.get_any_name()
            dims = list(port.get_partial_shape())
            layout = layouts.get(name, "N...")
            index = layout.split("...")[0].find("N")
            if dims and index >= 0:
                dims[index] = _ov_dim(batch)  # type: ignore[arg-type]
                wanted[name] = dims
    if wanted:
        try:
            model.reshape({name: ov.PartialShape(dims) for name, dims in wanted.items()})
        except Exception as e:
            raise LoadError("RESHAPE_ERROR", f"Model could not be reshaped with requested shape: {e}") from e


def _plugin_config(config: ModelConfig) -> dict[str, Any]:
    props = {k: (str(v) if k == "NUM_STREAMS" else v) for k, v in config.plugin_config.items()}
    if "NUM_STREAMS" not in props and "PERFORMANCE_HINT" not in props:
        props["PERFORMANCE_HINT"] = "LATENCY"
    return props


def load(
    core: ov.Core, config: ModelConfig, version: int, path: Path, metrics: ModelMetrics | None = None
) -> ModelVersion:
    """Read, shape and compile one version (blocking: call it in a worker thread)."""
    try:
        model = core.read_model(str(path))
    except Exception as e:
        raise LoadError("FILE_INVALID", f"File not found or cannot open: {path}: {e}") from e
    for i, port in enumerate(model.outputs):
        if not port.get_names():
            port.get_tensor().set_names({f"out_{i}"})
    if not model.inputs or not model.outputs:
        raise LoadError("OV_NO_INPUTS", f"Cannot load model with no {'inputs' if not model.inputs else 'outputs'}")
    model, layouts = _apply_layouts(model, config)
    _reshape(model, config, layouts)
    try:
        compiled = core.compile_model(model, config.target_device, _plugin_config(config))
    except Exception as e:
        message = f"Cannot compile model into target device: {e}"
        raise LoadError("CANNOT_COMPILE_MODEL_INTO_TARGET_DEVICE", message) from e
    nireq = config.nireq or _optimal_nireq(compiled)
    return ModelVersion(config.name, version, compiled, nireq, layouts, metrics)


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

    def release(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        self._idle.append(item)


class _Slot:
    """One infer request and the future of its current run; OpenVINO's callback resolves it thread-safely."""

    __slots__ = ("buffers", "future", "loop", "request")

    def __init__(self, request: ov.InferRequest, static_inputs: list[str]) -> None:
        self.request = request
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None
        # The request's own memory for each statically shaped input: a request is fed with one copy into it,
        # bypassing OpenVINO's per-call Python input dispatch.
        self.buffers: dict[str, np.ndarray] = {name: request.get_tensor(name).data for name in static_inputs}
        request.set_callback(self._on_done, None)

    def start(self, inputs: TensorMap) -> None:
        others: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            if value.dtype == object:  # strings: OpenVINO takes numpy bytes arrays for string tensors
                value = value.astype(np.bytes_)
            buffer = self.buffers.get(name)
            if buffer is not None and buffer.shape == value.shape and buffer.dtype == value.dtype:
                np.copyto(buffer, value)
            else:
                self.buffers.pop(name, None)  # OpenVINO may replace that tensor now: stop writing to the old one
                others[name] = value
        if others:
            self.request.start_async(others, share_inputs=False)
        else:
            self.request.start_async()

    def _on_done(self, _userdata: Any) -> None:  # runs in an OpenVINO thread
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._resolve, None)

    def _resolve(self, error: BaseException | None) -> None:
        future = self.future
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def watch(self, future: asyncio.Future[None], delay: float) -> None:
        """OpenVINO skips the callback when inference fails; poll the run of `future` now and then to notice."""
        if future is not self.future or future.done() or self.loop is None:
            return
        try:
            self.request.wait_for(0)
        except Exception as e:
            self._resolve(e)
            return
        self.loop.call_later(delay, self.watch, future, min(delay * 2, 1.0))


class ModelVersion:
    """A compiled model version serving requests on `nireq` infer requests; satisfies Servable."""

    def __init__(
        self,
        name: str,
        version: int,
        compiled: ov.CompiledModel,
        nireq: int,
        layouts: Mapping[str, str],
        metrics: ModelMetrics | None = None,
    ):
        self.name = name
        self.version = version
        self.compiled = compiled
        self.nireq = nireq
        self.metrics = metrics or Metrics(()).model(name, version)
        self.inputs: Mapping[str, TensorSpec] = {s.name: s for s in (_spec(p, layouts) for p in compiled.inputs)}
        self.outputs: Mapping[str, TensorSpec] = {s.name: s for s in (_spec(p, layouts) for p in compiled.outputs)}
        self._output_names = list(self.outputs)
        self._string_outputs = {i for i, s in enumerate(self.outputs.values()) if s.dtype == np.dtype(object)}
        static = [s.name for s in self.inputs.values() if s.dtype not in (None, np.dtype(object))
                  and all(isinstance(d, int) and d >= 0 for d in s.shape)]  # fmt: skip
        self._pool = _Pool([_Slot(compiled.create_infer_request(), static) for _ in range(nireq)])

    @property
    def streams(self) -> int:
        try:
            return int(self.compiled.get_property("NUM_STREAMS"))
        except Exception:
            return 0

    async def infer(self, inputs: TensorMap, origin: Origin | None = None) -> dict[str, np.ndarray]:
        """Run one inference; outputs are copied out of the infer request, which then serves the next caller."""
        metrics = self.metrics
        asked = perf_counter_ns()
        slot: _Slot = await self._pool.acquire()
        started = perf_counter_ns()
        metrics.acquired((started - asked) / 1000)
        loop = asyncio.get_running_loop()
        slot.loop = loop
        slot.future = future = loop.create_future()
        try:
            slot.start(inputs)
        except Exception as e:
            slot.future = None
            self._release(slot, None)
            raise self._failure(e) from e
        watcher = loop.call_later(0.05, slot.watch, future, 0.1)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller gave up but OpenVINO still owns the request (and the watcher keeps polling it): return
            # the request to the pool only when the run ends.
            future.add_done_callback(lambda _: self._release(slot, None))
            raise
        except Exception as e:
            watcher.cancel()
            self._release(slot, None)
            raise self._failure(e) from e
        watcher.cancel()
        try:
            return {name: self._output(slot, i) for i, name in enumerate(self._output_names)}
        finally:
            slot.future = None
            self._release(slot, (perf_counter_ns() - started) / 1000)

    def _output(self, slot: _Slot, index: int) -> np.ndarray:
        tensor = slot.request.get_output_tensor(index)
        if index not in self._string_outputs:
            result: np.ndarray = tensor.data.copy()
            return result
        values = np.empty(int(np.prod(tuple(tensor.shape), dtype=np.int64)), dtype=object)
        values[:] = tensor.bytes_data
        return values.reshape(tuple(tensor.shape))

    def _release(self, slot: _Slot, inference_us: float | None) -> None:
        self.metrics.released(inference_us)
        self._pool.release(slot)

    def _failure(self, error: BaseException) -> ServingError:
        log.error("inference failed on model %s version %d: %s", self.name, self.version, error)
        first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return ServingError("OV_INTERNAL_INFERENCE_ERROR", f"model {self.name} version {self.version}: {first}")
