"""The thinnest Python gRPC server of bench_demux --bare: TF Serving Predict of N images run as N batch-1 jobs.

``python bare_demux.py --xml MODEL --port PORT``: grpc.aio on loopback with one generic handler taking and giving
bytes; the request's tensor_content is found by scanning the wire bytes (no protobuf parse, no copy) and read by
OpenVINO in place; the model is compiled as the raw side of the benchmark compiles it (common.compile_as_server).
Jobs start in OpenVINO's callback threads (a finished infer request takes the next queued job itself), and the event
loop wakes once per request. No validation, metrics or logging: a request it cannot read is simply failed.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for common

from common import MAX_MESSAGE, ModelCase, compile_as_server

from ovserve._proto.tensorflow_serving.apis import predict_pb2


def varint(data: memoryview, i: int) -> tuple[int, int]:
    """The varint at data[i] and the offset after it."""
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def field(data: memoryview, number: int, start: int, end: int) -> tuple[int, int]:
    """The span (start, end) of the first length-delimited field `number` in data[start:end]."""
    i = start
    while i < end:
        key, i = varint(data, i)
        kind = key & 7
        if kind == 2:
            size, i = varint(data, i)
            if key >> 3 == number:
                return i, i + size
            i += size
        elif kind == 0:
            _, i = varint(data, i)
        else:
            i += 8 if kind == 1 else 4
    raise ValueError(f"no field {number}")


def tensor_content(data: bytes) -> tuple[int, int]:
    """The span of the first input's tensor_content in a serialized PredictRequest (inputs = 2, value = 2,
    tensor_content = 4)."""
    view = memoryview(data)
    entry = field(view, 2, 0, len(view))
    tensor = field(view, 2, *entry)
    return field(view, 4, *tensor)


class Call:
    """One Predict request in flight: its output, the jobs left and the future the handler awaits."""

    __slots__ = ("future", "left", "loop", "out", "request")

    def __init__(self, request: bytes, n: int, classes: int) -> None:
        self.request = request  # the bytes the jobs read in place stay alive until the answer
        self.out = np.empty((n, 1, classes), np.float32)
        self.left = n
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()


class Runner:
    """nireq infer requests and one FIFO of jobs (call, index, input tensor); a request that finishes a job starts
    the next one from its callback."""

    def __init__(self, xml: Path) -> None:
        compiled, nireq, _ = compile_as_server(ModelCase("bare", xml))
        self.input = compiled.input(0)
        self.image = tuple(self.input.shape)
        self.output = compiled.output(0)
        self.classes = int(self.output.shape[-1])
        self.requests = [compiled.create_infer_request() for _ in range(nireq)]
        self.results = [r.get_output_tensor(0).data for r in self.requests]
        self.running: list[tuple[Call, int, ov.Tensor] | None] = [None] * nireq
        self.idle = list(range(nireq))
        self.pending: deque[tuple[Call, int, ov.Tensor]] = deque()
        self.lock = threading.Lock()
        for k, request in enumerate(self.requests):
            request.set_callback(self._done, k)

    def submit(self, call: Call, images: np.ndarray) -> None:
        starts = []
        jobs = [(call, i, ov.Tensor(image, shared_memory=True)) for i, image in enumerate(images)]
        with self.lock:
            for job in jobs:
                if self.idle:
                    k = self.idle.pop()
                    self.running[k] = job
                    starts.append(k)
                else:
                    self.pending.append(job)
        for k in starts:
            self._start(k)

    def _start(self, k: int) -> None:
        job = self.running[k]
        assert job is not None
        self.requests[k].set_tensor(self.input, job[2])
        self.requests[k].start_async()

    def _done(self, k: int) -> None:  # an OpenVINO thread
        job = self.running[k]
        assert job is not None
        call, i, _ = job
        call.out[i] = self.results[k]
        with self.lock:
            call.left -= 1
            last = call.left == 0
            self.running[k] = following = self.pending.popleft() if self.pending else None
            if following is None:
                self.idle.append(k)  # from here on the loop may start this request again
        if following is not None:
            self._start(k)
        if last:
            call.loop.call_soon_threadsafe(call.future.set_result, None)


def images(runner: Runner, data: bytes) -> np.ndarray:
    """The request's images [N, *image] as a float32 array over its own bytes, which OpenVINO reads in place even at
    an offset that is not a multiple of 4 (it shares only writeable memory, and never writes into an input)."""
    start, end = tensor_content(data)
    address = np.frombuffer(data, np.uint8).ctypes.data + start
    buffer = (ctypes.c_char * (end - start)).from_address(address)
    return np.frombuffer(memoryview(buffer), np.float32).reshape(-1, *runner.image)


async def serve(runner: Runner, port: int) -> None:
    name = runner.output.get_any_name()

    async def predict(data: bytes, context: Any) -> bytes:
        batch = images(runner, data)
        call = Call(data, len(batch), runner.classes)
        runner.submit(call, batch)
        await call.future
        response = predict_pb2.PredictResponse()
        tensor = response.outputs[name]
        tensor.dtype = 1  # DT_FLOAT
        for size in call.out.shape:
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = call.out.tobytes()
        answer: bytes = response.SerializeToString()
        return answer

    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    server = grpc.aio.server(options=[*options, ("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(predict)  # no (de)serializer: bytes in, bytes out
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--xml", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    runner = Runner(args.xml)
    asyncio.run(serve(runner, args.port))


if __name__ == "__main__":
    main()
