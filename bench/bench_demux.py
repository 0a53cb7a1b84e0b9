"""Benchmark: the demultiplexing pipeline over gRPC against raw in-process OpenVINO on the same model.

For each model and each cell of the grid (N images per request, C concurrent requests) it measures:

(a) raw: the model compiled in this process exactly as ovserve compiles it (plugin config and PERFORMANCE_HINT from
    ovserve.loading, nireq = OPTIMAL_NUMBER_OF_INFER_REQUESTS) behind an ``ov.AsyncInferQueue``; C closed-loop
    clients each keep one "request" of N images in flight, every image an async job;
(b) grpc: ``python -m ovserve`` in a subprocess serving a seed-guide config (the model and a ``demultiply_count: -1``
    pipeline); C ``grpc.aio`` coroutines on one channel send Predict requests of shape [N,1,3,224,224];
(c) with --shm, shm: the same server (started with --allow_client_shm) and pipeline over KServe gRPC ModelInfer with
    the images and the output in system shared memory, one region per client written once (as perf_analyzer does);
(d) with --bare, bare: bench/peers/bare_demux.py in a subprocess, the thinnest Python gRPC server doing the same work
    (the model compiled as raw compiles it, each request's N images as N jobs), driven as the grpc side is: the
    ceiling of a Python gRPC server on the machine.

All sides run in turns on one idle machine: the servers are started once per model, then each cell is warmed up and
measured in --rounds alternating slices (raw, grpc, raw, grpc, ...) of --seconds/--rounds each, so drift of the
machine's speed (a shared 2-core VM varies by 10-20 % within a minute) falls on all sides alike. Images/s counts the
requests completed in a slice over the time from the slice's start to the last of them. It prints images/s and
per-request latency p50/p99 (ms) for each side, and the ratio side/raw of images/s (with the ratio of each round); on
the served sides also the server's CPU time per request (user + system, all threads, and the event-loop thread's
part) and the benchmark process's own (the load generator's, which competes with the server for the same cores). The
client sends a request serialized once and does not parse the responses after the first (checked) one, so the
benchmark process spends as little CPU as possible beside the server.

Usage (from the repo root; ``make demo`` prepares the demo model):
    .venv/bin/python bench/bench_demux.py [--seconds 5] [--models demo,light] [--n 1,8] [--concurrency 1,4] [--shm]
        [--bare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    PIPELINE,
    PLUGIN_CONFIG,
    PREDICT,
    REPO,
    ModelCase,
    RawDriver,
    Rounds,
    ServerProcess,
    add_models_argument,
    alternate,
    comparison_table,
    compile_and_report,
    cpu_seconds,
    free_port,
    grpc_channel,
    grpc_run,
    identity,
    images,
    int_list,
    log_tail,
    machine_info,
    predict_bytes,
    predict_output,
    prepare_models,
    print_table,
    seed_document,
    server_logs,
    server_process,
    stop,
    wait_answer,
    wait_for,
    write_config,
)
from doors import ShmGrpcDoor

METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"


@dataclass(frozen=True)
class Cell:
    """One grid cell: N images per request, C concurrent requests."""

    n: int
    c: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration of each cell (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up of each side before each cell (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/grpc slices per cell (default 3)")
    add_models_argument(p, ["demo", "light"])
    p.add_argument("--n", type=int_list, default=[1, 8], help="images per request, e.g. 1,8")
    p.add_argument("--concurrency", type=int_list, default=[1, 4], help="concurrent requests, e.g. 1,4")
    p.add_argument("--shm", action="store_true", help="also measure KServe gRPC with images in system shared memory")
    p.add_argument("--bare", action="store_true", help="also measure the thinnest Python gRPC server (the ceiling)")
    p.add_argument("--server-logs", type=Path, help="keep the servers' logs in this folder (default: thrown away)")
    return p.parse_args(argv)


# --- the pipeline over gRPC -------------------------------------------------------------------------------------


async def wait_ready(server: ServerProcess) -> None:
    """Poll the pipeline's metadata until it answers; fail with the log's tail if the server dies or never does."""
    from ovserve._proto.tensorflow_serving.apis import get_model_metadata_pb2 as md

    request = md.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = PIPELINE
    await wait_answer(server, METADATA, request, md.GetModelMetadataResponse)


def check_response(data: bytes, n: int) -> Any:
    output = predict_output(data)
    if output.shape != (n, 1, 1000):
        raise RuntimeError(f"unexpected output shape {output.shape} for {n} images")
    return output


@dataclass
class Cpu:
    """CPU time over the requests of one side: the server's (all threads, and its event loop's: the main thread's)
    and this process's (the clients')."""

    seconds: float = 0.0
    loop_seconds: float = 0.0
    client_seconds: float = 0.0
    requests: int = 0

    def per_request_ms(self) -> float:
        return 1000 * self.seconds / self.requests if self.requests else float("nan")

    def loop_per_request_ms(self) -> float:
        return 1000 * self.loop_seconds / self.requests if self.requests else float("nan")

    def client_per_request_ms(self) -> float:
        return 1000 * self.client_seconds / self.requests if self.requests else float("nan")


def counting(run: Callable[[float], Any], pid: int, cpu: Cpu) -> Callable[[float], Any]:
    """`run`, adding the server's and this process's CPU time and the requests of each slice to `cpu`."""

    async def counted(seconds: float) -> Any:
        before, loop_before, client_before = cpu_seconds(pid), cpu_seconds(pid, pid), cpu_seconds(os.getpid())
        result = await run(seconds)
        cpu.seconds += cpu_seconds(pid) - before
        cpu.loop_seconds += cpu_seconds(pid, pid) - loop_before
        cpu.client_seconds += cpu_seconds(os.getpid()) - client_before
        cpu.requests += len(result.latencies)
        return result

    return counted


# --- both, in turns ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bare:
    """The bare side: Predict on bench/peers/bare_demux.py's channel, and that server's pid."""

    call: Callable[..., Any]
    pid: int


async def measure_cell(
    cell: Cell,
    driver: RawDriver,
    call: Callable[..., Any],
    payload: bytes,
    args: argparse.Namespace,
    server: int,
    shm: ShmGrpcDoor | None = None,
    bare: Bare | None = None,
) -> tuple[Rounds, dict[str, Cpu]]:
    """Warm all sides up, then alternate raw, grpc (bare and shm) slices for args.rounds rounds; the CPU per
    request of each side (warm-up included)."""
    cpu = {"raw": Cpu(), "grpc": Cpu()}  # raw: this process's CPU, inference and driver
    sides = {
        "raw": counting(lambda seconds: asyncio.to_thread(driver.run, cell.c, seconds), os.getpid(), cpu["raw"]),
        "grpc": counting(lambda seconds: grpc_run(call, [payload], cell.n, cell.c, seconds), server, cpu["grpc"]),
    }
    pids = [server]
    if bare is not None:
        cpu["bare"] = Cpu()
        sides["bare"] = counting(
            lambda seconds: grpc_run(bare.call, [payload], cell.n, cell.c, seconds), bare.pid, cpu["bare"]
        )
        pids.append(bare.pid)
    if shm is not None:
        cpu["shm"] = Cpu()
        sides["shm"] = counting(lambda seconds: shm.run(cell.c, seconds), server, cpu["shm"])
    return await alternate(sides, "raw", cell.n, args, *pids), cpu


async def bench_model(
    case: ModelCase, cells: Sequence[Cell], args: argparse.Namespace, workdir: Path
) -> dict[Cell, tuple[Rounds, dict[str, Cpu]]]:
    """Compile the raw side, start the server, then measure every cell."""
    compiled, nireq = compile_and_report(case)
    log_path = server_logs(args, workdir) / f"server-{case.name}.log"
    results = {}
    config = write_config(workdir / f"config-{case.name}", seed_document(case))
    extra = ["--allow_client_shm"] if args.shm else []
    with server_process(config, log_path, extra=extra) as server:
        print(
            f"[{case.name}] gRPC: ovserve pid {server.process.pid} on port {server.grpc_port}, log {log_path}",
            flush=True,
        )
        await wait_ready(server)
        for line in log_tail(log_path).splitlines():
            if "available" in line:
                print(f"[{case.name}] server: {line.split('] ', 2)[-1]}", flush=True)
        async with contextlib.AsyncExitStack() as stack:
            channel = await stack.enter_async_context(grpc_channel(server.grpc_port))
            call = channel.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity)
            bare = await stack.enter_async_context(_bare(case, args, workdir)) if args.bare else None
            for cell in cells:
                payload = predict_bytes(PIPELINE, images(cell.n))
                expected = check_response(await call(payload, timeout=60), cell.n)
                driver = RawDriver(compiled, nireq, images(cell.n))
                if bare is not None:
                    _same("bare", check_response(await bare.call(payload, timeout=60), cell.n), expected)
                shm = await _shm_door(channel, cell, expected) if args.shm else None
                try:
                    results[cell] = await measure_cell(cell, driver, call, payload, args, server.process.pid, shm, bare)
                finally:
                    if shm is not None:
                        await shm.close()
                _progress(case, cell, *results[cell])
    return results


def _same(side: str, output: Any, expected: Any) -> None:
    """Fail unless the side answers as the grpc side does."""
    import numpy as np

    if output.shape != expected.shape or not np.allclose(output, expected, rtol=1e-5, atol=1e-5):
        raise RuntimeError(f"the {side} side answers {output.shape}, not the grpc side's {expected.shape} output")


@contextlib.contextmanager
def bare_process(case: ModelCase, log_path: Path) -> Iterator[ServerProcess]:
    """bench/peers/bare_demux.py serving the model on a free loopback port; SIGTERM and wait on the way out."""
    port = free_port()
    command = [sys.executable, str(REPO / "bench" / "peers" / "bare_demux.py"), "--xml", str(case.xml)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env |= {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}  # as ovserve sets them
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield ServerProcess(process, port, 0, log_path)
    finally:
        stop(process)


@contextlib.asynccontextmanager
async def _bare(case: ModelCase, args: argparse.Namespace, workdir: Path) -> Any:
    """The bare server started and answering one image; its Predict call."""
    import grpc

    log_path = server_logs(args, workdir) / f"bare-{case.name}.log"
    with bare_process(case, log_path) as server:
        print(f"[{case.name}] bare: pid {server.process.pid} on port {server.grpc_port}, log {log_path}", flush=True)
        async with grpc_channel(server.grpc_port) as channel:
            call = channel.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity)
            payload = predict_bytes(PIPELINE, images(1))

            async def answered() -> bool | None:
                try:
                    return check_response(await call(payload, timeout=10), 1) is not None
                except grpc.aio.AioRpcError:
                    return None

            await wait_for(server, answered)
            yield Bare(call, server.process.pid)


async def _shm_door(channel: Any, cell: Cell, expected: Any) -> ShmGrpcDoor:
    """The shm side's regions for the cell's clients, checked to answer as the grpc side does."""
    import numpy as np

    door = ShmGrpcDoor(channel, PIPELINE, images(cell.n), expected.nbytes)
    await door.open(cell.c)
    output = await door.output()
    if output.shape != expected.shape or not np.allclose(output, expected, rtol=1e-5, atol=1e-5):
        raise RuntimeError(f"the shm side answers {output.shape}, not the grpc side's {expected.shape} output")
    return door


# --- report -----------------------------------------------------------------------------------------------------


def _progress(case: ModelCase, cell: Cell, m: Rounds, cpu: dict[str, Cpu]) -> None:
    raw = m.results["raw"]
    sides = []
    for side in list(cpu)[1:]:
        result = m.results[side]
        rounds = " ".join(f"{r:.2f}" for r in m.rounds[side])
        sides.append(
            f"{side} {result.images_per_second:7.1f} img/s ({len(result.latencies)} requests), {side}/raw "
            f"{m.ratio(side):.2f} (rounds: {rounds}), server CPU {cpu[side].per_request_ms():.1f} ms/request "
            f"(event loop {cpu[side].loop_per_request_ms():.1f}), client CPU {cpu[side].client_per_request_ms():.1f}"
        )
    print(
        f"  {case.name:12s} N={cell.n} C={cell.c}: raw {raw.images_per_second:7.1f} img/s "
        f"({len(raw.latencies)} requests, CPU {cpu['raw'].per_request_ms():.1f} ms/request), {', '.join(sides)}, "
        f"other processes {100 * m.background:.0f}% CPU",
        flush=True,
    )


def table(rows: Sequence[tuple[ModelCase, Cell, Rounds, dict[str, Cpu]]], side: str) -> tuple[str, list[str]]:
    """The comparison of `side` (grpc, bare or shm) to raw, with the CPU per request on that side."""
    keys = [(f"{case.name:12s} {cell.n:2d} {cell.c:2d}", m) for case, cell, m, _ in rows]
    titles = ("raw img/s", f"{side} img/s".rjust(10), f"{side}/raw".rjust(8), "rounds min-max")
    header, lines = comparison_table(f"{'model':12s} {'N':>2s} {'C':>2s}", keys, side, titles)
    cpu = [
        f" {c['raw'].per_request_ms():11.2f} {c[side].per_request_ms():14.2f} {c[side].loop_per_request_ms():8.2f} "
        f"{c[side].client_per_request_ms():14.2f}"
        for *_, c in rows
    ]
    header += " raw ms/req server ms/req  loop ms client ms/req"
    return header, [line + extra for line, extra in zip(lines, cpu, strict=True)]


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
            rows += [(case, cell, *results[cell]) for cell in cells]
    code = print_table(
        *table(rows, "grpc"),
        "raw ms/req = this process's CPU time per request on the raw side (inference and driver); server ms/req = the "
        "server's (all threads); loop ms = its event-loop thread's part; client ms/req = this process's (the load "
        "generator's)",
    )
    for side, wanted in (("bare", args.bare), ("shm", args.shm)):
        if wanted and not code:
            code = print_table(*table(rows, side))
    return code


if __name__ == "__main__":
    sys.exit(main())
