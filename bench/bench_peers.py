"""Benchmark: ovserve against its Python peers, MLServer and KServe's Python model server, on the same OpenVINO model.

All three serve KServe's v2 protocol, so one client drives them alike. Each peer runs the model through
bench/peers/ov_async.py: compiled with the plugin properties and nireq ovserve uses, behind an asyncio-awaited
``AsyncInferQueue``, the best a user of that server could write. Only the server around the model differs:

ovserve   ``python -m ovserve`` with a config.json serving the model;
mlserver  ``mlserver start`` with a custom runtime (bench/peers/mlserver_runtime.py); ``parallel_workers: 0``, so
          inference stays in the server's process (its default of 1 worker process adds a pickling hop);
kserve    ``kserve.ModelServer`` with a custom ``kserve.Model`` (bench/peers/kserve_server.py), one worker.

Doors, for each server: ``grpc``, ModelInfer with the image in ``raw_input_contents``; ``rest``, POST
/v2/models/{name}/infer with the image as JSON ``data`` (MLServer has no binary data extension, so JSON is the
REST form all three accept). Batch-1 [1,3,224,224] FP32 requests, C closed-loop clients; each request is serialized
once before measuring and each door's first answer is checked against raw in-process OpenVINO. The peers run from
their own venv (PEERS_PYTHON, built by ``make bench-peers`` from bench/peers/requirements.txt).

As in bench_api, each cell (model, C) is warmed up and measured in --rounds rounds of alternating slices (raw, then
every server and door), so that drift of the machine's speed falls on all sides alike.

Usage (from the repo root): make bench-peers, or
    PEERS_PYTHON=.cache/peers-venv/bin/python .venv/bin/python bench/bench_peers.py [--models tiny,demo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    HOST,
    IMAGE,
    INPUT,
    OUTPUT,
    PLUGIN_CONFIG,
    REPO,
    ModelCase,
    Rounds,
    ServerProcess,
    add_models_argument,
    alternate,
    compile_as_server,
    free_port,
    grpc_channel,
    identity,
    images,
    int_list,
    machine_info,
    memory_mb,
    prepare_models,
    print_table,
    progress,
    server_logs,
    server_process,
    spread,
    stop,
    wait_for,
    write_config,
)
from doors import (
    MODEL_INFER,
    Door,
    GrpcDoor,
    HttpConnection,
    HttpDoor,
    RawDoor,
    check_output,
    http_request,
    kserve_grpc_output,
    kserve_grpc_request,
)

PEERS = REPO / "bench" / "peers"
SERVERS = ("ovserve", "mlserver", "kserve")
STOP_TIMEOUT = 30.0

Array = Any  # numpy arrays; numpy is imported lazily


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=4.0, help="measured duration of each cell and door (default 4)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up of each door before each cell (default 0.5)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of alternating slices per cell (default 2)")
    add_models_argument(p, ["tiny", "demo"])
    p.add_argument("--concurrency", type=int_list, default=[1, 16], help="concurrent clients, default 1,16")
    p.add_argument("--server-logs", type=Path, help="keep the servers' logs in this folder (default: thrown away)")
    return p.parse_args(argv)


# --- the servers ------------------------------------------------------------------------------------------------


@dataclass
class Running(ServerProcess):
    """A server under test: ServerProcess's process, ports and log, and the server's name."""

    name: str


@contextlib.contextmanager
def peer_process(
    command: list[str], cwd: Path, env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A peer server's process, SIGTERM (then SIGKILL) and wait on the way out."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process, STOP_TIMEOUT)


def peer_environment(case: ModelCase) -> dict[str, str]:
    """The peers' environment: PEER_MODEL (the xml, ovserve's plugin properties and nireq) and bench/peers on
    PYTHONPATH."""
    _, nireq, properties = compile_as_server(case)
    model = {"xml": str(case.xml), "properties": {k: str(v) for k, v in properties.items()}, "nireq": nireq}
    return {**os.environ, "PEER_MODEL": json.dumps(model), "PYTHONPATH": str(PEERS)}


@contextlib.contextmanager
def mlserver(case: ModelCase, python: Path, workdir: Path, log: Path) -> Iterator[Running]:
    """`mlserver start` on a folder with settings.json (ports, no worker processes) and the model's settings."""
    folder = workdir / "mlserver"
    grpc_port, rest_port, metrics_port = free_port(), free_port(), free_port()
    settings = {"host": HOST, "http_port": rest_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    settings |= {"parallel_workers": 0, "debug": False}
    model = {"name": case.name, "implementation": "mlserver_runtime.OpenVINORuntime"}
    (folder / case.name).mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / case.name / "model-settings.json").write_text(json.dumps(model))
    command = [str(python.parent / "mlserver"), "start", str(folder)]
    with peer_process(command, folder, peer_environment(case), log) as process:
        yield Running(process, grpc_port, rest_port, log, "mlserver")


@contextlib.contextmanager
def kserve(case: ModelCase, python: Path, workdir: Path, log: Path) -> Iterator[Running]:
    """bench/peers/kserve_server.py: kserve.ModelServer with one uvicorn worker, gRPC on."""
    grpc_port, rest_port = free_port(), free_port()
    command = [str(python), str(PEERS / "kserve_server.py"), "--model_name", case.name]
    command += ["--http_port", str(rest_port), "--grpc_port", str(grpc_port), "--workers", "1"]
    with peer_process(command, workdir, peer_environment(case), log) as process:
        yield Running(process, grpc_port, rest_port, log, "kserve")


@contextlib.contextmanager
def ovserve(case: ModelCase, workdir: Path, log: Path) -> Iterator[Running]:
    """`python -m ovserve` serving just the model, compiled with PLUGIN_CONFIG (as the raw side and the peers are)."""
    config = {"name": case.name, "base_path": str(case.xml.parent.parent), "plugin_config": PLUGIN_CONFIG}
    path = write_config(workdir / f"config-{case.name}", {"model_config_list": [{"config": config}]})
    with server_process(path, log, rest=True) as server:
        yield Running(server.process, server.grpc_port, server.rest_port, log, "ovserve")


async def wait_ready(server: Running, model: str) -> None:
    """GET /v2/models/{model}/ready until it answers 200 (all three servers have the route)."""
    request = http_request("GET", f"/v2/models/{model}/ready", b"")

    async def ready() -> bool | None:
        try:
            connection = await HttpConnection.open(server.rest_port)
        except OSError:
            return None
        try:
            status, _, _ = await asyncio.wait_for(connection.send(request), 5)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, RuntimeError):
            return None
        finally:
            await connection.close()
        return True if status == 200 else None

    await wait_for(server, ready)


# --- the doors --------------------------------------------------------------------------------------------------


def rest_json_request(model: str, image: Array) -> bytes:
    """A KServe v2 REST infer request with the image as JSON data, the output asked for by name."""
    document = {
        "inputs": [{"name": INPUT, "shape": list(image.shape), "datatype": "FP32", "data": image.ravel().tolist()}],
        "outputs": [{"name": OUTPUT}],
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    return http_request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})


def rest_output(headers: dict[str, str], body: bytes) -> Array:
    """The output of a KServe v2 REST answer, whether it came as JSON data or as binary data after the JSON."""
    import numpy as np

    length = int(headers.get("inference-header-content-length", len(body)))
    offset = length
    for output in json.loads(body[:length])["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == OUTPUT:
            if size is not None:
                return np.frombuffer(body[offset : offset + size], np.float32).reshape(output["shape"])
            return np.asarray(output["data"], np.float32).reshape(output["shape"])
        offset += size or 0
    raise RuntimeError(f"no output {OUTPUT} in the answer: {body[:200]!r}")


async def open_doors(case: ModelCase, server: Running, channel: Any, image: Array, reference: Array) -> list[Door]:
    """The server's gRPC and REST doors, each checked once against raw OpenVINO; a failing door is left out."""
    call = channel.unary_unary(MODEL_INFER, request_serializer=identity, response_deserializer=identity)
    candidates: list[Door] = [
        GrpcDoor(f"{server.name} grpc", call, kserve_grpc_request(case.name, image), kserve_grpc_output),
        HttpDoor(f"{server.name} rest", server.rest_port, rest_json_request(case.name, image), rest_output),
    ]
    doors = []
    for door in candidates:
        try:
            check_output(door.name, await door.output(), reference)
        except Exception as e:
            details = f"{e.code().name} {e.details()}" if hasattr(e, "details") and hasattr(e, "code") else str(e)
            print(f"[{case.name}] {door.name}: NOT MEASURED, the first response failed: {details}", flush=True)
            continue
        print(f"[{case.name}] {door.name}: first response checked, request {door.request_bytes} bytes", flush=True)
        doors.append(door)
    return doors


# --- measurement ------------------------------------------------------------------------------------------------


async def bench_model(
    case: ModelCase, args: argparse.Namespace, python: Path, workdir: Path
) -> tuple[list[str], dict[int, Rounds]]:
    """Start the three servers, check every door, then measure every concurrency with all doors in turns."""
    compiled, nireq, _ = compile_as_server(case)
    image = images(1)[0]  # [1, 3, 224, 224]
    raw = RawDoor(compiled, nireq, image)
    reference = await raw.output()
    logs = server_logs(args, workdir)
    results: dict[int, Rounds] = {}
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(ovserve(case, workdir, logs / f"ovserve-{case.name}.log")),
            stack.enter_context(mlserver(case, python, workdir, logs / f"mlserver-{case.name}.log")),
            stack.enter_context(kserve(case, python, workdir, logs / f"kserve-{case.name}.log")),
        ]
        doors: list[Door] = [raw]
        channels = contextlib.AsyncExitStack()
        async with channels:
            for server in servers:
                try:
                    await wait_ready(server, case.name)
                except RuntimeError as e:
                    print(f"[{case.name}] {server.name}: NOT MEASURED, {e}", flush=True)
                    continue
                print(f"[{case.name}] {server.name} pid {server.process.pid} ready, log {server.log}", flush=True)
                channel = await channels.enter_async_context(grpc_channel(server.grpc_port))
                doors += await open_doors(case, server, channel, image, reference)
            for clients in args.concurrency:
                sides = {door.name: functools.partial(door.run, clients) for door in doors}
                pids = [server.process.pid for server in servers]
                results[clients] = await alternate(sides, "raw", 1, args, *pids)
                progress(case.name, clients, results[clients])
        for server in servers:
            rss, peak = memory_mb(server.process.pid)  # the main process (MLServer: no worker processes)
            print(f"[{case.name}] {server.name} memory after the cells: resident {rss:.0f} MB, peak {peak:.0f} MB")
    return [door.name for door in doors], results


# --- report -----------------------------------------------------------------------------------------------------


def table(rows: Sequence[tuple[str, str, int, Rounds]]) -> tuple[str, list[str]]:
    header = (
        f"{'model':12s} {'server door':14s} {'C':>3s} | {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} | "
        f"{'vs raw':>6s} {'rounds':>9s} | {'vs ovserve':>10s} {'others':>6s}"
    )
    lines = []
    for model, door, clients, m in rows:
        r = m.results[door]
        protocol = door.rsplit(" ", 1)[-1]
        ours = m.results.get(f"ovserve {protocol}")
        versus = r.images_per_second / ours.images_per_second if ours and door != "raw" else float("nan")
        rounds = spread(m.rounds[door]) if door != "raw" else ""
        lines.append(
            f"{model:12s} {door:14s} {clients:3d} | {r.images_per_second:8.1f} {r.percentile_ms(50):7.2f} "
            f"{r.percentile_ms(99):7.2f} | {m.ratio(door):6.2f} {rounds:>9s} | "
            + (f"{versus:10.2f}" if versus == versus else f"{'':10s}")
            + f" {100 * m.background:5.0f}%"
        )
    return header, lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        raise SystemExit("--rounds must be at least 1, --seconds positive and --warmup not negative")
    python = Path(os.environ.get("PEERS_PYTHON", REPO / ".cache" / "peers-venv" / "bin" / "python")).absolute()
    if not python.exists():
        raise SystemExit(f"no peers venv at {python}: run `make bench-peers`, or set PEERS_PYTHON")
    versions = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version as v; print(v('mlserver'), v('kserve'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for line in machine_info():
        print(line)
    print(f"peers: mlserver {versions[0]}, kserve {versions[1]} ({python})")
    print(
        f"plugin_config {PLUGIN_CONFIG}; batch-1 requests {list(IMAGE)} FP32; per cell and door {args.seconds:g} s in "
        f"{args.rounds} alternating rounds after {args.warmup:g} s of warm-up"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_peers-") as tmp:
        workdir = Path(tmp)
        for case in prepare_models(args.models, workdir):
            doors, results = asyncio.run(bench_model(case, args, python, workdir))
            rows += [(case.name, door, c, results[c]) for c in args.concurrency if c in results for door in doors]
    return print_table(
        *table(rows),
        "vs raw = req/s over raw OpenVINO's at the same C; rounds = that ratio's range over the rounds;",
        "vs ovserve = req/s over ovserve's on the same protocol and C (below 1: ovserve is faster);",
    )


if __name__ == "__main__":
    sys.exit(main())
