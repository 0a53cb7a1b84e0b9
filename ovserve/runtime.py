"""The asyncio <-> OpenVINO bridge: a compiled model version serving requests on a pool of async infer requests."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from time import perf_counter_ns
from typing import Any

import numpy as np
import openvino as ov

from .errors import ServingError
from .metrics import Metrics, ModelMetrics
from .ports import port_specs
from .reshaping import AutoShape, Reshaper
from .tensors import Shape, TensorSpec, check_inputs, shape_text
from .types import CountRun

log = logging.getLogger(__name__)

TensorMap = Mapping[str, np.ndarray]
StateHook = Callable[[ov.InferRequest], None]  # sees an infer request before or after its run


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
        reshaper: Reshaper | None = None,
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
            reason = first_line(e)
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
            "OV_INTERNAL_INFERENCE_ERROR", f"model {self.name} version {self.version}: {first_line(error)}"
        )


def first_line(error: BaseException) -> str:
    """The gist of an OpenVINO exception, whose text ends with the message after a C++ trace."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
