"""Benchmark: the demultiplexing pipeline over gRPC against raw in-process OpenVINO on the same model.

For each model and each cell of the grid (N images per request, C concurrent requests) it measures:

(a) raw: the model compiled in this process exactly as ovserve compiles it (plugin config and PERFORMANCE_HINT from
    ovserve.runtime, nireq = OPTIMAL_NUMBER_OF_INFER_REQUESTS) behind an ``ov.AsyncInferQueue``; C closed-loop
    clients each keep one "request" of N images in flight, every image an async job;
(b) grpc: ``python -m ovserve`` in a subprocess serving a seed-guide config (the model and a ``demultiply_count: -1``
    pipeline); C ``grpc.aio`` coroutines on one channel send Predict requests of shape [N,1,3,224,224].

Both run in turns on one idle machine: the server is started once per model, then each cell is warmed up and measured
in --rounds alternating slices (raw, grpc, raw, grpc, ...) of --seconds/--rounds each, so drift of the machine's
speed (a shared 2-core VM varies by 10-20 % within a minute) falls on both sides alike. Images/s counts the requests
completed in a slice over the time from the slice's start to the last of them. It prints images/s and per-request
latency p50/p99 (ms) for both, and the ratio grpc/raw of images/s (with the ratio of each round). The client sends a
request serialized once and does not parse the responses after the first (checked) one, so the benchmark process
spends as little CPU as possible beside the server.

Usage (from the repo root; ``make demo`` prepares the demo model):
    .venv/bin/python bench/bench_demux.py [--seconds 5] [--models demo,light] [--n 1,8] [--concurrency 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / ".cache" / "demo" / "models" / "efficientnet" / "1" / "model.xml"
PLUGIN_CONFIG = {"NUM_STREAMS": "2"}
IMAGE = (1, 3, 224, 224)
INPUT, OUTPUT, PIPELINE = "0", "1463", "resnet50DAG"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
MAX_MESSAGE = 1 << 30
READY_TIMEOUT = 120.0
MODELS = {
    "demo": "EfficientNet-Lite0 of `make demo`",
    "light": "tests.models.classifier at 3x224x224 -> 1000 (one matmul, but a 600 MB weight matrix)",
    "tiny": "global average pool + 3x1000 matmul: almost no compute, shows the per-request overhead",
}


@dataclass(frozen=True)
class ModelCase:
    """A model to benchmark: its name in the server config and the IR file serving it."""

    name: str
    xml: Path


@dataclass(frozen=True)
class Cell:
    """One grid cell: N images per request, C concurrent requests."""

    n: int
    c: int


@dataclass
class Result:
    """Completed requests of one measurement: their latencies (s) and the wall time (s) they took."""

    n: int
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.latencies) * self.n / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.elapsed += other.elapsed


# --- arguments and machine --------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text}") from e
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text}")
    return values


def _model_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"models are among {', '.join(MODELS)}, got {text}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration of each cell (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up of each side before each cell (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/grpc slices per cell (default 3)")
    models = "; ".join(f"{k}: {v}" for k, v in MODELS.items())
    p.add_argument("--models", type=_model_list, default=["demo", "light"], help=f"default demo,light ({models})")
    p.add_argument("--n", type=_int_list, default=[1, 8], help="images per request, e.g. 1,8")
    p.add_argument("--concurrency", type=_int_list, default=[1, 4], help="concurrent requests, e.g. 1,4")
    p.add_argument("--server-logs", type=Path, help="keep the servers' logs in this folder (default: thrown away)")
    return p.parse_args(argv)


def machine_info() -> list[str]:
    import grpc
    import numpy as np
    import openvino as ov

    try:
        cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    except Exception:
        cpu = platform.processor() or "?"
    return [
        f"machine: {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable), CPU {cpu}",
        f"software: python {platform.python_version()}, openvino {ov.get_version()}, grpcio {grpc.__version__}, "
        f"numpy {np.__version__}",
    ]


class Background:
    """CPU used by processes other than this one and the server while a cell runs, from /proc (Linux)."""

    def __init__(self, server_pid: int) -> None:
        self.pids = (os.getpid(), server_pid)
        self.start = self._sample()

    @staticmethod
    def _busy() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def _sample(self) -> tuple[int, int, int] | None:
        try:
            ours = 0
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ours += int(fields[11]) + int(fields[12])  # utime + stime, all threads
            busy, total = self._busy()
            return busy, total, ours
        except (OSError, ValueError, IndexError):
            return None

    def share(self) -> float:
        """Fraction of the machine's CPU time (all cores) that others used since the start; nan if unknown."""
        end = self._sample()
        if self.start is None or end is None or end[1] == self.start[1]:
            return float("nan")
        busy, total, ours = (b - a for a, b in zip(self.start, end, strict=True))
        return max(0.0, (busy - ours) / total)


# --- models -----------------------------------------------------------------------------------------------------


def prepare_models(names: Sequence[str], workdir: Path) -> list[ModelCase]:
    """The IR files to serve; the demo model is skipped (with a message) when `make demo` has not run."""
    cases = []
    for name in names:
        if name == "demo":
            if DEMO_MODEL.is_file():
                cases.append(ModelCase("efficientnet", DEMO_MODEL))
            else:
                print(f"skipping the demo model: {DEMO_MODEL} is missing (run `make demo` first)")
        elif name == "light":
            cases.append(ModelCase("light", _light_model(workdir)))
        else:
            cases.append(ModelCase("tiny", _tiny_model(workdir)))
    return cases


def _light_model(workdir: Path) -> Path:
    """The compute-light classifier of tests/models.py at the demo's shapes, saved as IR."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import models

    base = models.save(models.classifier(image=IMAGE, classes=1000), workdir / "repo", "light")
    return base / "1" / "model.xml"


def _tiny_model(workdir: Path) -> Path:
    """Same input and output as the demo model, next to no compute: mean over H and W, then a 3x1000 matmul."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter(list(IMAGE), np.float32, name=INPUT)
    x.output(0).get_tensor().set_names({INPUT})
    pooled = ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    weights = np.random.default_rng(0).standard_normal((IMAGE[1], 1000)).astype(np.float32)
    y = ops.matmul(pooled, ops.constant(weights), False, False)
    y.output(0).get_tensor().set_names({OUTPUT})
    folder = workdir / "repo" / "tiny" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([y], [x], "tiny"), str(folder / "model.xml"), compress_to_fp16=False)
    return folder / "model.xml"


def images(n: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).uniform(0, 255, (n, *IMAGE)).astype(np.float32)


# --- (a) raw OpenVINO -------------------------------------------------------------------------------------------


def compile_as_server(case: ModelCase) -> tuple[Any, int, dict[str, Any]]:
    """Compile as ovserve.runtime.load does for a config with PLUGIN_CONFIG; the nireq the server would use."""
    import openvino as ov

    from ovserve.config import ModelConfig
    from ovserve.runtime import _optimal_nireq, _plugin_config

    props = _plugin_config(ModelConfig(name=case.name, base_path=case.xml.parent.parent, plugin_config=PLUGIN_CONFIG))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(case.xml)), "CPU", props)
    return compiled, _optimal_nireq(compiled), props


class RawDriver:
    """C closed-loop clients over one AsyncInferQueue; completions are counted in OpenVINO's callback threads."""

    def __init__(self, compiled: Any, nireq: int, batch: Any) -> None:
        import openvino as ov

        self.queue = ov.AsyncInferQueue(compiled, nireq)
        self.queue.set_callback(self._on_done)
        self.batch = batch  # [N, 1, 3, 224, 224]: N jobs of one [1, 3, 224, 224] image
        self.lock = threading.Lock()
        self.done: queue.SimpleQueue[tuple[int, float]] = queue.SimpleQueue()
        self.remaining: dict[int, int] = {}
        self.started: dict[int, float] = {}

    def _on_done(self, request: Any, client: int) -> None:  # an OpenVINO thread
        request.get_output_tensor(0).data.copy()  # the server copies every output out of the request
        with self.lock:  # two streams may finish jobs of one client at the same time
            self.remaining[client] -= 1
            last = self.remaining[client] == 0
        if last:
            self.done.put((client, time.perf_counter()))

    def _submit(self, client: int, sent: float) -> None:
        """Send the client's next request, issued at `sent`: its jobs queue behind those of earlier requests
        (FIFO, as in the server's pool), so its latency counts that wait too."""
        self.remaining[client] = len(self.batch)
        self.started[client] = sent
        for image in self.batch:
            self.queue.start_async({INPUT: image}, client)

    def run(self, clients: int, seconds: float) -> Result:
        """Keep `clients` requests in flight for `seconds`; count the requests that complete in that time."""
        result = Result(len(self.batch))
        start = time.perf_counter()
        deadline = start + seconds
        for client in range(clients):
            self._submit(client, start)
        in_flight = clients
        while in_flight:
            client, finished = self.done.get()
            in_flight -= 1
            if finished < deadline:  # closed loop: the client sends again as soon as its answer is complete
                result.latencies.append(finished - self.started[client])
                result.elapsed = finished - start
                self._submit(client, finished)
                in_flight += 1
        self.queue.wait_all()
        return result


# --- (b) the pipeline over gRPC ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_server_config(case: ModelCase, workdir: Path) -> Path:
    """The seed guide's config: the model and a pipeline demultiplexing the request (demultiply_count -1)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import models

    document = models.seed_config(model=case.name, pipeline=PIPELINE, plugin_config=PLUGIN_CONFIG)
    document["model_config_list"][0]["config"]["base_path"] = str(case.xml.parent.parent)
    folder = workdir / f"config-{case.name}"
    folder.mkdir(parents=True, exist_ok=True)
    return models.write_config(folder, document)


@contextlib.contextmanager
def server_process(config: Path, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m ovserve` on a free port; SIGTERM and wait on the way out."""
    port = free_port()
    command = [sys.executable, "-m", "ovserve", "--config_path", str(config), "--port", str(port)]
    command += ["--grpc_bind_address", "127.0.0.1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _channel(port: int) -> Any:
    import grpc

    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)


def _identity(data: bytes) -> bytes:
    return data


async def wait_ready(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll the pipeline's metadata until it answers; fail with the log's tail if the server dies or never does."""
    import grpc

    from ovserve._proto.tensorflow_serving.apis import get_model_metadata_pb2 as md

    request = md.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = PIPELINE
    deadline = time.monotonic() + READY_TIMEOUT
    async with _channel(port) as channel:
        call = channel.unary_unary(
            METADATA,
            request_serializer=md.GetModelMetadataRequest.SerializeToString,
            response_deserializer=md.GetModelMetadataResponse.FromString,
        )
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}):\n{_tail(log_path)}")
            try:
                await call(request, timeout=2)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
    raise RuntimeError(f"the server was not ready in {READY_TIMEOUT:.0f}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def predict_bytes(batch: Any) -> bytes:
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = PIPELINE
    request.inputs[INPUT].CopyFrom(make_tensor_proto(batch))
    return request.SerializeToString()


def check_response(data: bytes, n: int) -> None:
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_ndarray

    response = predict_pb2.PredictResponse.FromString(data)
    shape = make_ndarray(response.outputs[OUTPUT]).shape
    if shape != (n, 1, 1000):
        raise RuntimeError(f"unexpected output shape {shape} for {n} images")


async def grpc_run(call: Callable[..., Any], payload: bytes, n: int, clients: int, seconds: float) -> Result:
    """`clients` coroutines each sending the request back to back for `seconds`."""
    result = Result(n)
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        while True:
            sent = time.perf_counter()
            await call(payload, timeout=60)
            done = time.perf_counter()
            if done > deadline:
                return
            result.latencies.append(done - sent)
            result.elapsed = max(result.elapsed, done - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    return result


# --- both, in turns ----------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One cell of one model: both sides, with the grpc/raw ratio of each round."""

    raw: Result
    rpc: Result
    rounds: list[float] = field(default_factory=list)
    background: float = float("nan")  # share of the machine's CPU that other processes used meanwhile

    @property
    def ratio(self) -> float:
        raw = self.raw.images_per_second
        return self.rpc.images_per_second / raw if raw else float("nan")


async def measure_cell(
    cell: Cell, driver: RawDriver, call: Callable[..., Any], payload: bytes, args: argparse.Namespace, server: int
) -> Measurement:
    """Warm both sides up, then alternate raw and grpc slices for args.rounds rounds."""
    background = Background(server)
    await asyncio.to_thread(driver.run, cell.c, args.warmup)
    await grpc_run(call, payload, cell.n, cell.c, args.warmup)
    measurement = Measurement(Result(cell.n), Result(cell.n))
    for _ in range(args.rounds):
        raw = await asyncio.to_thread(driver.run, cell.c, args.seconds / args.rounds)
        rpc = await grpc_run(call, payload, cell.n, cell.c, args.seconds / args.rounds)
        measurement.raw.add(raw)
        measurement.rpc.add(rpc)
        measurement.rounds.append(Measurement(raw, rpc).ratio)
    measurement.background = background.share()
    return measurement


async def bench_model(
    case: ModelCase, cells: Sequence[Cell], args: argparse.Namespace, workdir: Path
) -> dict[Cell, Measurement]:
    """Compile the raw side, start the server, then measure every cell."""
    compiled, nireq, props = compile_as_server(case)
    streams = compiled.get_property("NUM_STREAMS")
    print(f"[{case.name}] raw OpenVINO: compile config {props}, NUM_STREAMS {streams}, nireq {nireq}", flush=True)
    logs = args.server_logs or workdir
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"server-{case.name}.log"
    results = {}
    with server_process(write_server_config(case, workdir), log_path) as (process, port):
        print(f"[{case.name}] gRPC: ovserve pid {process.pid} on port {port}, log {log_path}", flush=True)
        await wait_ready(port, process, log_path)
        for line in _tail(log_path).splitlines():
            if "available" in line:
                print(f"[{case.name}] server: {line.split('] ', 2)[-1]}", flush=True)
        async with _channel(port) as channel:
            call = channel.unary_unary(PREDICT, request_serializer=_identity, response_deserializer=_identity)
            for cell in cells:
                payload = predict_bytes(images(cell.n))
                check_response(await call(payload, timeout=60), cell.n)
                driver = RawDriver(compiled, nireq, images(cell.n))
                results[cell] = await measure_cell(cell, driver, call, payload, args, process.pid)
                _progress(case, cell, results[cell])
    return results


# --- report -----------------------------------------------------------------------------------------------------


def _progress(case: ModelCase, cell: Cell, m: Measurement) -> None:
    rounds = " ".join(f"{r:.2f}" for r in m.rounds)
    print(
        f"  {case.name:12s} N={cell.n} C={cell.c}: raw {m.raw.images_per_second:7.1f} img/s "
        f"({len(m.raw.latencies)} requests), grpc {m.rpc.images_per_second:7.1f} img/s "
        f"({len(m.rpc.latencies)} requests), grpc/raw {m.ratio:.2f} (rounds: {rounds}), "
        f"other processes {100 * m.background:.0f}% CPU",
        flush=True,
    )


def table(rows: Sequence[tuple[ModelCase, Cell, Measurement]]) -> list[str]:
    header = (
        f"{'model':12s} {'N':>2s} {'C':>2s} | {'raw img/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} | "
        f"{'grpc img/s':>10s} {'p50 ms':>7s} {'p99 ms':>7s} | {'grpc/raw':>8s} {'rounds min-max':>14s} {'others':>6s}"
    )
    lines = [header, "-" * len(header)]
    for case, cell, m in rows:
        raw, rpc = m.raw, m.rpc
        spread = f"{min(m.rounds):.2f}-{max(m.rounds):.2f}" if m.rounds else ""
        lines.append(
            f"{case.name:12s} {cell.n:2d} {cell.c:2d} | {raw.images_per_second:9.1f} {raw.percentile_ms(50):7.1f} "
            f"{raw.percentile_ms(99):7.1f} | {rpc.images_per_second:10.1f} {rpc.percentile_ms(50):7.1f} "
            f"{rpc.percentile_ms(99):7.1f} | {m.ratio:8.2f} {spread:>14s} {100 * m.background:5.0f}%"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        raise SystemExit("--rounds must be at least 1 and --seconds positive")
    for line in machine_info():
        print(line)
    print(
        f"plugin_config {PLUGIN_CONFIG}; per cell and side {args.seconds:g} s in {args.rounds} alternating rounds "
        f"after {args.warmup:g} s of warm-up; latency = one request of N images"
    )
    cells = [Cell(n, c) for n in args.n for c in args.concurrency]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_demux-") as tmp:
        workdir = Path(tmp)
        for case in prepare_models(args.models, workdir):
            results = asyncio.run(bench_model(case, cells, args, workdir))
            rows += [(case, cell, results[cell]) for cell in cells]
    if not rows:
        print("nothing measured")
        return 1
    print()
    for line in table(rows):
        print(line)
    print("others = share of the machine's CPU used by other processes during the cell (over 5 %: rerun when idle)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
