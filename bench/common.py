"""What the benchmarks share: models, raw OpenVINO, the ovserve subprocess, closed-loop timing and the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / ".cache" / "demo" / "models" / "efficientnet" / "1" / "model.xml"
PLUGIN_CONFIG = {"NUM_STREAMS": "2"}
IMAGE = (1, 3, 224, 224)
INPUT, OUTPUT = "0", "1463"  # the demo model's input and output
PIPELINE = "resnet50DAG"  # the seed guide's pipeline, demultiplexing the request (demultiply_count -1)
PREDICT = "/tensorflow.serving.PredictionService/Predict"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
HOST = "127.0.0.1"
MAX_MESSAGE = 1 << 30
READY_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0
MODELS = {
    "demo": "EfficientNet-Lite0 of `make demo`",
    "light": "tests.models.classifier at 3x224x224 -> 1000 (one matmul, but a 600 MB weight matrix)",
    "tiny": "global average pool + 3x1000 matmul: almost no compute, shows the per-request overhead",
}
OTHERS = "others = share of the machine's CPU used by other processes during the cell (over 5 %: rerun when idle)"

T = TypeVar("T")


@dataclass(frozen=True)
class ModelCase:
    """A model to benchmark: its name in the server config and the IR file serving it."""

    name: str
    xml: Path


@dataclass
class Result:
    """Completed requests of one measurement: their latencies (s) and the wall time (s) they took."""

    n: int
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Requests completed times the n images of each, over the wall time."""
        return len(self.latencies) * self.n / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile of the latencies in ms; nan without any."""
        import numpy as np

        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def add(self, other: Result) -> None:
        """Count another measurement's requests and time into this one."""
        self.latencies += other.latencies
        self.elapsed += other.elapsed


# --- arguments and machine --------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text}") from e
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text}")
    return values


def model_list(text: str) -> list[str]:
    """An argparse type: comma-separated names among MODELS."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"models are among {', '.join(MODELS)}, got {text}")
    return names


def add_models_argument(parser: argparse.ArgumentParser, default: list[str]) -> None:
    """--models, a model_list, with every model described in its help."""
    models = "; ".join(f"{k}: {v}" for k, v in MODELS.items())
    help_ = f"default {','.join(default)} ({models})"
    parser.add_argument("--models", type=model_list, default=default, help=help_)


def server_logs(args: argparse.Namespace, workdir: Path) -> Path:
    """The folder for the servers' logs: --server-logs, else the work folder; made if needed."""
    logs: Path = args.server_logs or workdir
    logs.mkdir(parents=True, exist_ok=True)
    return logs


def machine_info() -> list[str]:
    """Two lines on the cores, the CPU and the versions of the software measured."""
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
    """CPU used by processes other than this one and the servers while a cell runs, from /proc (Linux)."""

    def __init__(self, *server_pids: int) -> None:
        self.pids = (os.getpid(), *server_pids)
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


# --- models and configs -----------------------------------------------------------------------------------------


def tests_models() -> ModuleType:
    """tests/models.py of this checkout: tiny models and configs built with OpenVINO's opset API."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import models

    return models


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
            cases.append(ModelCase("light", light_model(workdir)))
        else:
            cases.append(ModelCase("tiny", tiny_model(workdir)))
    return cases


def light_model(workdir: Path) -> Path:
    """The compute-light classifier of tests/models.py at the demo's shapes, saved as IR."""
    models = tests_models()
    base = models.save(models.classifier(image=IMAGE, classes=1000), workdir / "repo", "light")
    return Path(base) / "1" / "model.xml"


def tiny_model(workdir: Path) -> Path:
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
    """n random images [n,1,3,224,224] FP32 (seed 0)."""
    import numpy as np

    return np.random.default_rng(0).uniform(0, 255, (n, *IMAGE)).astype(np.float32)


def seed_document(case: ModelCase) -> dict[str, Any]:
    """The seed guide's config: the model, from case.xml, and the pipeline PIPELINE demultiplexing the request."""
    document: dict[str, Any] = tests_models().seed_config(
        model=case.name, pipeline=PIPELINE, plugin_config=PLUGIN_CONFIG
    )
    document["model_config_list"][0]["config"]["base_path"] = str(case.xml.parent.parent)
    return document


def write_config(folder: Path, document: dict[str, Any]) -> Path:
    """The config document as folder/config.json, the folder made if needed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(document, indent=1))
    return path


# --- raw OpenVINO -----------------------------------------------------------------------------------------------


def compile_as_server(case: ModelCase) -> tuple[Any, int, dict[str, Any]]:
    """Compile as ovserve.loading.load does for a config with PLUGIN_CONFIG; the nireq the server would use."""
    import openvino as ov

    from ovserve.config import ModelConfig
    from ovserve.loading import optimal_nireq, plugin_config

    props = plugin_config(ModelConfig(name=case.name, base_path=case.xml.parent.parent, plugin_config=PLUGIN_CONFIG))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(case.xml)), "CPU", props)
    return compiled, optimal_nireq(compiled), props


def compile_and_report(case: ModelCase) -> tuple[Any, int]:
    """compile_as_server, printing the compile config, the streams and the nireq."""
    compiled, nireq, props = compile_as_server(case)
    streams = compiled.get_property("NUM_STREAMS")
    print(f"[{case.name}] raw OpenVINO: compile config {props}, NUM_STREAMS {streams}, nireq {nireq}", flush=True)
    return compiled, nireq


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


# --- the ovserve subprocess -------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free at the time of the call."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running `python -m ovserve`, its ports (rest_port 0: no REST) and its log file."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log: Path


@contextlib.contextmanager
def server_process(
    config: Path, log_path: Path, rest: bool = False, extra: Sequence[str] = ()
) -> Iterator[ServerProcess]:
    """`python -m ovserve` with gRPC (and REST if asked) on free loopback ports, plus the `extra` arguments; SIGTERM
    and wait on the way out."""
    grpc_port, rest_port = free_port(), 0
    command = [sys.executable, "-m", "ovserve", "--config_path", str(config), "--port", str(grpc_port)]
    command += ["--grpc_bind_address", HOST, *extra]
    if rest:
        rest_port = free_port()
        while rest_port == grpc_port:
            rest_port = free_port()
        command += ["--rest_port", str(rest_port), "--rest_bind_address", HOST]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield ServerProcess(process, grpc_port, rest_port, log_path)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a server still running and wait for it; SIGKILL it after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) a process has used so far, all its threads or only `thread` (a thread id; the main
    thread's is the pid); nan when unknown (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def memory_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in MB; nan when unknown (not Linux)."""
    values = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in values:
                    values[key] = int(value.split()[0]) / 1024  # kB
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def grpc_channel(port: int) -> Any:
    """A grpc.aio channel to the loopback port that carries messages up to MAX_MESSAGE."""
    import grpc

    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    return grpc.aio.insecure_channel(f"{HOST}:{port}", options=options)


def identity(data: bytes) -> bytes:
    """The (de)serializer of calls that send and receive bytes as they are."""
    return data


async def wait_for(server: ServerProcess, attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Call `attempt` every 0.2 s until it returns a value; fail with the log's tail if the server exits first or
    READY_TIMEOUT passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited ({server.process.returncode}):\n{log_tail(server.log)}")
        value = await attempt()
        if value is not None:
            return value
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server was not ready in {READY_TIMEOUT:.0f}s:\n{log_tail(server.log)}")


async def wait_answer(
    server: ServerProcess, method: str, request: Any, response: Any, ready: Callable[[Any], bool] | None = None
) -> None:
    """Call the gRPC `method` with the request message until it answers (a `response` message) and ready(answer)."""
    import grpc

    async with grpc_channel(server.grpc_port) as channel:
        call = channel.unary_unary(
            method, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
        )

        async def answered() -> bool | None:
            try:
                answer = await call(request, timeout=2)
            except grpc.aio.AioRpcError:
                return None
            return True if ready is None or ready(answer) else None

        await wait_for(server, answered)


async def wait_available(server: ServerProcess, model: str) -> None:
    """Poll the model's status over gRPC until a version is AVAILABLE."""
    from ovserve._proto.tensorflow_serving.apis import get_model_status_pb2 as st

    request = st.GetModelStatusRequest()
    request.model_spec.name = model

    def available(response: Any) -> bool:
        return any(v.state == st.ModelVersionStatus.AVAILABLE for v in response.model_version_status)

    await wait_answer(server, STATUS, request, st.GetModelStatusResponse, available)


def predict_bytes(name: str, batch: Any, input_name: str = INPUT) -> bytes:
    """A serialized TF Serving PredictRequest to `name` with `batch` as its one input."""
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[input_name].CopyFrom(make_tensor_proto(batch))
    return request.SerializeToString()


def predict_output(data: bytes, name: str = OUTPUT) -> Any:
    """One output of a serialized TF Serving PredictResponse, as an array."""
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_ndarray

    return make_ndarray(predict_pb2.PredictResponse.FromString(data).outputs[name])


# --- closed-loop timing -----------------------------------------------------------------------------------------


async def closed_loop(send: Callable[[int, int], Awaitable[Any]], clients: int, seconds: float, n: int = 1) -> Result:
    """`clients` coroutines, each awaiting send(client, i) for its requests i = 0, 1, ... back to back for
    `seconds`; a request that completes after that is not counted."""
    result = Result(n)
    start = time.perf_counter()
    deadline = start + seconds

    async def client(number: int) -> None:
        i = 0
        while True:
            sent = time.perf_counter()
            await send(number, i)
            done = time.perf_counter()
            if done > deadline:
                return
            result.latencies.append(done - sent)
            result.elapsed = max(result.elapsed, done - start)
            i += 1

    await asyncio.gather(*(client(number) for number in range(clients)))
    return result


async def grpc_run(call: Callable[..., Any], payloads: Sequence[bytes], n: int, clients: int, seconds: float) -> Result:
    """closed_loop of `call` on the payloads in turn, client k starting at the k-th; requests of n images."""

    def send(client: int, i: int) -> Awaitable[Any]:
        return call(payloads[(client + i) % len(payloads)], timeout=REQUEST_TIMEOUT)

    return await closed_loop(send, clients, seconds, n)


Side = Callable[[float], Awaitable[Result]]  # runs its clients for the seconds given


def ratio(value: float, reference: float) -> float:
    """value / reference; nan when the reference is 0."""
    return value / reference if reference else float("nan")


@dataclass
class Rounds:
    """One cell measured on several sides in alternating rounds: each side's requests, each round's ratio of its
    images/s over the reference side's, and the share of the machine's CPU that other processes used meanwhile."""

    reference: str
    results: dict[str, Result]
    rounds: dict[str, list[float]]
    background: float = float("nan")

    def ratio(self, side: str) -> float:
        """The side's images/s over the reference side's, over all rounds; nan without a reference."""
        reference = self.results.get(self.reference)
        return ratio(self.results[side].images_per_second, reference.images_per_second if reference else 0.0)


async def alternate(
    sides: dict[str, Side], reference: str, n: int, args: argparse.Namespace, *server_pids: int
) -> Rounds:
    """Warm every side up for args.warmup s, then run args.rounds rounds of one slice of args.seconds / args.rounds
    per side, in turns, so that drift of the machine's speed falls on all sides alike."""
    background = Background(*server_pids)
    for run in sides.values():
        await run(args.warmup)
    m = Rounds(reference, {name: Result(n) for name in sides}, {name: [] for name in sides})
    for _ in range(args.rounds):
        slices = {name: await run(args.seconds / args.rounds) for name, run in sides.items()}
        base = slices.get(reference)
        for name, result in slices.items():
            m.results[name].add(result)
            m.rounds[name].append(ratio(result.images_per_second, base.images_per_second if base else 0.0))
    m.background = background.share()
    return m


# --- report -----------------------------------------------------------------------------------------------------


def progress(model: str, clients: int, m: Rounds) -> None:
    """One line per measured cell of request doors: each side's requests/s and the others' CPU share."""
    parts = [f"{name} {r.images_per_second:.1f}" for name, r in m.results.items()]
    print(f"  {model} C={clients}: req/s {', '.join(parts)}; others {100 * m.background:.0f}% CPU", flush=True)


def spread(ratios: Sequence[float]) -> str:
    """'min-max' of the ratios (nan left out); '' without any."""
    values = [r for r in ratios if r == r]
    return f"{min(values):.2f}-{max(values):.2f}" if values else ""


def comparison_table(
    key_title: str, rows: Sequence[tuple[str, Rounds]], side: str, titles: tuple[str, str, str, str]
) -> tuple[str, list[str]]:
    """The header and rows of a table of cells (their key columns first) comparing `side` to the reference side:
    each side's images/s, p50 and p99 (ms), then the ratio, its range over the rounds and the others' CPU share.
    `titles` names the reference's rate, the side's rate, the ratio and its range; each is as wide as its title."""
    reference, rate, ratio_, rounds = titles
    latency = f"{'p50 ms':>7s} {'p99 ms':>7s}"
    header = f"{key_title} | {reference} {latency} | {rate} {latency} | {ratio_} {rounds} {'others':>6s}"
    lines = []
    for key, m in rows:
        sides = [
            f"{r.images_per_second:{len(title)}.1f} {r.percentile_ms(50):7.1f} {r.percentile_ms(99):7.1f}"
            for r, title in ((m.results[m.reference], reference), (m.results[side], rate))
        ]
        lines.append(
            f"{key} | {sides[0]} | {sides[1]} | {m.ratio(side):{len(ratio_)}.2f} "
            f"{spread(m.rounds[side]):>{len(rounds)}s} {100 * m.background:5.0f}%"
        )
    return header, lines


def print_table(header: str, rows: Sequence[str], *notes: str) -> int:
    """After a blank line, the header, a rule, the rows, the notes and the note on `others`; 0, or 1 (and a word)
    when there are no rows."""
    if not rows:
        print("nothing measured")
        return 1
    print()
    for line in [header, "-" * len(header), *rows, *notes, OTHERS]:
        print(line)
    return 0
