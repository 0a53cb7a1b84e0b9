"""Benchmark: a stateful model's sequence throughput, 16 sequences interleaved, against raw in-process OpenVINO.

The model is a recurrent cell with its state in OpenVINO variables (ReadValue/Assign): h := tanh(x W + h U),
y = h V, for x of --features values and h of --hidden (one cell per hidden size given). Each of C clients (default
16) runs sequences of --length requests back to back: the first starts the sequence, the last ends it.

raw    in-process OpenVINO the way a program owning the model would run the same sequences: one infer request per
       sequence (its state simply stays in it), started with start_async from a closed loop over all C of them;
grpc   ``python -m ovserve`` serving the model with ``stateful: true`` over TF Serving gRPC Predict (sequence_id in
       uint64_val, sequence_control_input in uint32_val): C clients, each one request in flight. The server runs the
       sequences on its pool of infer requests (nireq, fewer than C), restoring each sequence's state before its
       request and saving it after.

Both compile the same way (plugin_config NUM_STREAMS 2 and f32 inference precision, so the answers are exact) and
alternate in rounds, so that drift of the machine's speed falls on both alike. The table gives requests/s (each a
step of a sequence), sequences/s, p50/p99 latency and the ratio grpc / raw. Before measuring, one sequence is run
both ways and the answers of every step compared (they must be equal).

Usage (from the repo root):
    .venv/bin/python bench/bench_stateful.py [--hidden 256,2048] [--clients 16] [--length 16] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import queue
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    PLUGIN_CONFIG,
    PREDICT,
    REQUEST_TIMEOUT,
    Result,
    Rounds,
    alternate,
    closed_loop,
    comparison_table,
    grpc_channel,
    identity,
    int_list,
    log_tail,
    machine_info,
    print_table,
    server_logs,
    server_process,
    wait_available,
    write_config,
)

PLUGIN = {**PLUGIN_CONFIG, "INFERENCE_PRECISION_HINT": "f32"}
START, NO_CONTROL, END = 1, 0, 2
INPUTS = 64  # distinct input vectors, cycled
Array = Any  # numpy arrays; numpy is imported lazily


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--hidden", type=int_list, default=[256, 2048], help="state sizes, one cell each (256,2048)")
    p.add_argument("--features", type=int, default=64, help="input values per request (default 64)")
    p.add_argument("--clients", type=int, default=16, help="sequences in flight at once (default 16)")
    p.add_argument("--length", type=int, default=16, help="requests per sequence (default 16)")
    p.add_argument("--seconds", type=float, default=6.0, help="measurement per cell and side (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="alternating slices of --seconds per side (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up per cell and side (default 1)")
    p.add_argument("--server-logs", type=Path, help="keep the server's log in this folder (default: thrown away)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.length < 2 or args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        p.error("--clients, --rounds at least 1, --length at least 2, --seconds positive, --warmup not negative")
    return args


def cell_model(features: int, hidden: int) -> Any:
    """h := tanh(x W + h U) kept in a variable; y = h V (hidden -> 16)."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    rng = np.random.default_rng(hidden)
    x = ops.parameter([1, features], np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    info = VariableInfo()
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape([1, hidden]), ov.Type.f32, "h"
    variable = Variable(info)
    h = ops.read_value(ops.constant(np.zeros((1, hidden), np.float32)), variable)

    def weights(rows: int, columns: int) -> Any:
        return ops.constant((rng.standard_normal((rows, columns)) / np.sqrt(rows)).astype(np.float32))

    new_h = ops.tanh(ops.add(ops.matmul(x, weights(features, hidden), False, False),
                             ops.matmul(h, weights(hidden, hidden), False, False)))  # fmt: skip
    y = ops.matmul(new_h, weights(hidden, 16), False, False)
    y.output(0).get_tensor().set_names({"y"})
    return ov.Model(results=[ops.result(y)], sinks=[ops.assign(new_h, variable)], parameters=[x], name="cell")


def control(step: int, length: int) -> int:
    return START if step == 0 else END if step == length - 1 else NO_CONTROL


# --- raw OpenVINO -------------------------------------------------------------------------------------------------


class RawSequences:
    """C sequences on C infer requests of their own; completions come back through OpenVINO's callbacks and the
    next step of that sequence is started from this thread (a request cannot start again inside its callback)."""

    def __init__(self, compiled: Any, clients: int, inputs: Array, length: int) -> None:
        self.requests = [compiled.create_infer_request() for _ in range(clients)]
        self.done: queue.SimpleQueue[tuple[int, float]] = queue.SimpleQueue()
        for i, request in enumerate(self.requests):
            request.set_callback(self._on_done, i)
        self.inputs, self.length = inputs, length
        self.steps = [0] * clients  # each sequence's next step, over all its sequences
        self.sent = [0.0] * clients
        self.compiled = compiled

    def _on_done(self, client: int) -> None:  # an OpenVINO thread
        self.requests[client].get_output_tensor(0).data.copy()  # the server copies every output out
        self.done.put((client, time.perf_counter()))

    def _start(self, client: int, now: float) -> None:
        request, step = self.requests[client], self.steps[client]
        if step % self.length == 0:
            for state in request.query_state():
                state.reset()  # a new sequence
        self.sent[client] = now
        request.start_async({"x": self.inputs[(client + step) % len(self.inputs)]})
        self.steps[client] = step + 1

    def run(self, seconds: float) -> Result:
        result = Result(1)
        start = time.perf_counter()
        deadline = start + seconds
        for client in range(len(self.requests)):
            self._start(client, start)
        in_flight = len(self.requests)
        while in_flight:
            client, finished = self.done.get()
            in_flight -= 1
            if finished < deadline:
                result.latencies.append(finished - self.sent[client])
                result.elapsed = finished - start
                self._start(client, finished)
                in_flight += 1
        return result

    def sequence(self, steps: int) -> list[Array]:
        """One sequence alone on an infer request of its own: its answers."""
        request = self.compiled.create_infer_request()
        return [request.infer({"x": self.inputs[i % len(self.inputs)]})["y"].copy() for i in range(steps)]


# --- gRPC ---------------------------------------------------------------------------------------------------------


def predict(x: Array, sequence_id: int, control_value: int) -> bytes:
    from ovserve._proto.tensorflow.core.framework import types_pb2
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cell"
    request.inputs["x"].CopyFrom(make_tensor_proto(x))
    sid = request.inputs["sequence_id"]
    sid.dtype = types_pb2.DT_UINT64
    sid.tensor_shape.dim.add(size=1)
    sid.uint64_val.append(sequence_id)
    ctl = request.inputs["sequence_control_input"]
    ctl.dtype = types_pb2.DT_UINT32
    ctl.tensor_shape.dim.add(size=1)
    ctl.uint32_val.append(control_value)
    return request.SerializeToString()


def answer(data: bytes) -> Array:
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_ndarray

    return make_ndarray(predict_pb2.PredictResponse.FromString(data).outputs["y"])


class GrpcSequences:
    """C clients, each running its sequences over gRPC one request at a time (client-chosen, unique ids)."""

    def __init__(self, call: Any, clients: int, inputs: Array, length: int) -> None:
        self.call, self.inputs, self.length = call, inputs, length
        self.steps = [0] * clients
        self.ids = itertools.count(1)
        self.current = [0] * clients

    async def send(self, client: int, _: int) -> None:
        step = self.steps[client]
        position = step % self.length
        if position == 0:
            self.current[client] = next(self.ids)
        x = self.inputs[(client + step) % len(self.inputs)]
        await self.call(predict(x, self.current[client], control(position, self.length)), timeout=REQUEST_TIMEOUT)
        self.steps[client] = step + 1

    async def finish(self) -> None:
        """End the sequences left open by the last measurement (the server would keep them until the cleaner)."""
        for client, step in enumerate(self.steps):
            if step % self.length:
                x = self.inputs[0]
                await self.call(predict(x, self.current[client], END), timeout=REQUEST_TIMEOUT)
                self.steps[client] += self.length - step % self.length

    async def sequence(self, steps: int) -> list[Array]:
        sequence_id = next(self.ids)
        return [answer(await self.call(predict(self.inputs[i % len(self.inputs)], sequence_id, control(i, steps)),
                                       timeout=REQUEST_TIMEOUT)) for i in range(steps)]  # fmt: skip


# --- the cells ----------------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, hidden: int, workdir: Path) -> Rounds:
    import numpy as np
    import openvino as ov

    folder = workdir / f"h{hidden}"
    (folder / "cell" / "1").mkdir(parents=True)
    xml = folder / "cell" / "1" / "model.xml"
    ov.save_model(cell_model(args.features, hidden), str(xml), compress_to_fp16=False)
    config = write_config(folder, {"model_config_list": [{"config": {
        "name": "cell", "base_path": "cell", "stateful": True, "plugin_config": PLUGIN,
        "max_sequence_number": 4 * args.clients}}]})  # fmt: skip
    inputs = np.random.default_rng(0).standard_normal((INPUTS, 1, args.features)).astype(np.float32)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", PLUGIN)  # as the server: NUM_STREAMS, no hint
    raw = RawSequences(compiled, args.clients, inputs, args.length)
    log = server_logs(args, workdir) / f"bench_stateful-h{hidden}.log"
    with server_process(config, log) as server:
        await wait_available(server, "cell")
        async with grpc_channel(server.grpc_port) as channel:
            call = channel.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity)
            over_grpc = GrpcSequences(call, args.clients, inputs, args.length)
            served, alone = await over_grpc.sequence(args.length), raw.sequence(args.length)
            for step, (a, b) in enumerate(zip(served, alone, strict=True)):
                if not np.array_equal(a, b):
                    raise RuntimeError(f"hidden {hidden}: step {step} differs from raw OpenVINO:\n{a}\n{b}")

            async def run_raw(seconds: float) -> Result:
                return raw.run(seconds)

            async def run_grpc(seconds: float) -> Result:
                result = await closed_loop(over_grpc.send, args.clients, seconds)
                await over_grpc.finish()
                return result

            m = await alternate({"raw": run_raw, "grpc": run_grpc}, "raw", 1, args, server.process.pid)
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_tail(log)}")
    parts = [f"{name} {r.images_per_second:.0f} req/s" for name, r in m.results.items()]
    print(f"  hidden {hidden}: {', '.join(parts)}; others {100 * m.background:.0f}% CPU", flush=True)
    return m


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for line in machine_info():
        print(line)
    print(f"plugin_config {PLUGIN}; {args.clients} sequences in flight, {args.length} requests each, "
          f"{args.features} inputs; {args.seconds:g} s per side in {args.rounds} alternating rounds")  # fmt: skip
    rows: list[tuple[str, Rounds]] = []
    with tempfile.TemporaryDirectory(prefix="bench_stateful-") as tmp:
        for hidden in args.hidden:
            rows.append((f"{hidden:6d}", asyncio.run(measure(args, hidden, Path(tmp)))))
    header, lines = comparison_table("hidden", rows, "grpc", ("raw req/s", "grpc req/s", "grpc/raw", "rounds"))
    sequences = [f"  hidden {key.strip()}: sequences/s raw {m.results['raw'].images_per_second / args.length:.1f}, "
                 f"grpc {m.results['grpc'].images_per_second / args.length:.1f}" for key, m in rows]  # fmt: skip
    return print_table(header, lines, *sequences)


if __name__ == "__main__":
    sys.exit(main())
