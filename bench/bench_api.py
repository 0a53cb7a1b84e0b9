"""Benchmark: the four front doors (TF Serving and KServe, gRPC and REST) against raw in-process OpenVINO.

For each model it measures requests/s and per-request latency p50/p99 (ms) of batch-1 requests [1,3,224,224] to the
model itself, with C closed-loop clients (C = 1 and 16 by default), through:

raw          the model compiled in this process exactly as ovserve compiles it (common.compile_as_server),
             an ``ov.AsyncInferQueue`` of the server's nireq, one job per request;
tfs-grpc     TF Serving gRPC ``PredictionService/Predict``, the image in ``tensor_content``;
kserve-grpc  KServe gRPC ``GRPCInferenceService/ModelInfer``, the image in ``raw_input_contents`` (the request is
             built with tritonclient's generated protos, so this client does not depend on ovserve's code);
kserve-rest  KServe REST ``POST /v2/models/{name}/infer`` with the binary data extension both ways (JSON header,
             ``Inference-Header-Content-Length``, ``binary_data_size``; the output asked as ``binary_data``);
tfs-rest     TF Serving REST ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` JSON.

One ``python -m ovserve --config_path ... --port P --rest_port R`` subprocess serves each model on both ports. The gRPC
clients are ``grpc.aio`` coroutines on one channel; the HTTP clients are a minimal asyncio HTTP/1.1 keep-alive client
(one connection per concurrent client), lighter than aiohttp, so that on a small machine the benchmark process takes
as little CPU from the server as possible. Every request is serialized once, before measuring; responses are not
parsed after the first one of each door, which is checked against raw OpenVINO (same top-1 class, close values).

As in bench_demux, each cell (model, C) is warmed up, then measured in --rounds rounds of alternating slices (raw,
tfs-grpc, kserve-grpc, ...) of --seconds/--rounds each, so drift of the machine's speed falls on all sides alike.
Requests/s counts the requests completed in a slice over the time from the slice's start to the last of them.

Usage (from the repo root; ``make demo`` prepares the demo model):
    .venv/bin/python bench/bench_api.py [--seconds 4] [--models tiny,demo] [--concurrency 1,16] [--doors raw,tfs-grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    IMAGE,
    INPUT,
    OUTPUT,
    PLUGIN_CONFIG,
    PREDICT,
    ModelCase,
    Rounds,
    ServerProcess,
    add_models_argument,
    alternate,
    compile_and_report,
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
    wait_available,
    write_config,
)
from doors import (
    MODEL_INFER,
    Door,
    GrpcDoor,
    HttpDoor,
    RawDoor,
    check_output,
    http_request,
    kserve_grpc_output,
    kserve_grpc_request,
)

DOORS = {
    "raw": "in-process OpenVINO, AsyncInferQueue of the server's nireq",
    "tfs-grpc": "TF Serving gRPC Predict, tensor_content",
    "kserve-grpc": "KServe gRPC ModelInfer, raw_input_contents",
    "kserve-rest": "KServe REST infer, binary data extension in and out",
    "tfs-rest": 'TF Serving REST predict, {"instances": ...} JSON',
}

Array = Any  # numpy arrays; numpy is imported lazily


# --- arguments --------------------------------------------------------------------------------------------------


def _door_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(DOORS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"doors are among {', '.join(DOORS)}, got {text}")
    return [name for name in DOORS if name in names]  # always in the table's order


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=4.0, help="measured duration of each cell and door (default 4)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up of each door before each cell (default 0.5)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of alternating slices per cell (default 2)")
    add_models_argument(p, ["tiny", "demo"])
    p.add_argument("--concurrency", type=int_list, default=[1, 16], help="concurrent clients, default 1,16")
    doors = "; ".join(f"{k}: {v}" for k, v in DOORS.items())
    p.add_argument("--doors", type=_door_list, default=list(DOORS), help=f"default all ({doors})")
    p.add_argument("--server-logs", type=Path, help="keep the servers' logs in this folder (default: thrown away)")
    return p.parse_args(argv)


# --- the server -------------------------------------------------------------------------------------------------


def write_server_config(case: ModelCase, workdir: Path) -> Path:
    """A config.json serving just the model, compiled with PLUGIN_CONFIG (as the raw side is)."""
    document = {
        "model_config_list": [
            {"config": {"name": case.name, "base_path": str(case.xml.parent.parent), "plugin_config": PLUGIN_CONFIG}}
        ]
    }
    return write_config(workdir / f"config-{case.name}", document)


# --- requests and responses of each door ------------------------------------------------------------------------


def tfs_grpc_request(model: str, image: Array) -> bytes:
    from ovserve._proto.tensorflow.core.framework import types_pb2
    from ovserve._proto.tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs[INPUT]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=d) for d in image.shape)
    tensor.tensor_content = image.tobytes()
    return request.SerializeToString()


def tfs_grpc_output(data: bytes) -> Array:
    import numpy as np

    from ovserve._proto.tensorflow_serving.apis import predict_pb2

    tensor = predict_pb2.PredictResponse.FromString(data).outputs[OUTPUT]
    return np.frombuffer(tensor.tensor_content, np.float32).reshape([d.size for d in tensor.tensor_shape.dim])


def kserve_rest_request(model: str, image: Array) -> bytes:
    header = {
        "inputs": [
            {
                "name": INPUT,
                "shape": list(image.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": image.nbytes},
            }
        ],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    return http_request("POST", f"/v2/models/{model}/infer", head + image.tobytes(), headers)


def kserve_rest_output(headers: dict[str, str], body: bytes) -> Array:
    import numpy as np

    length = int(headers.get("inference-header-content-length", len(body)))
    response = json.loads(body[:length])
    offset = length
    for output in response["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == OUTPUT:
            if output["datatype"] != "FP32":
                raise RuntimeError(f"output {OUTPUT} is {output['datatype']}, expected FP32")
            if size is None:
                raise RuntimeError(f"output {OUTPUT} came as JSON data, not binary: {str(output)[:200]}")
            return np.frombuffer(body[offset : offset + size], np.float32).reshape(output["shape"])
        offset += size or 0
    raise RuntimeError(f"no output {OUTPUT} in {[o['name'] for o in response['outputs']]}")


def tfs_rest_request(model: str, image: Array) -> bytes:
    body = json.dumps({"instances": image.tolist()}, separators=(",", ":")).encode()
    return http_request("POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"})


def tfs_rest_output(headers: dict[str, str], body: bytes) -> Array:
    import numpy as np

    return np.asarray(json.loads(body)["predictions"], np.float32)


# --- measurement ------------------------------------------------------------------------------------------------


async def measure_cell(clients: int, doors: Sequence[Door], args: argparse.Namespace, server_pid: int) -> Rounds:
    """Warm every door up, then run args.rounds rounds of one slice per door, in turns."""
    sides = {door.name: functools.partial(door.run, clients) for door in doors}
    return await alternate(sides, "raw", 1, args, server_pid)


async def open_doors(
    case: ModelCase, names: Sequence[str], server: ServerProcess, channel: Any, raw: RawDoor, image: Array
) -> list[Door]:
    """The doors asked for, each checked once against raw OpenVINO; a door that fails is reported and left out."""
    candidates: dict[str, Callable[[], Door]] = {
        "raw": lambda: raw,
        "tfs-grpc": lambda: GrpcDoor(
            "tfs-grpc",
            channel.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity),
            tfs_grpc_request(case.name, image),
            tfs_grpc_output,
        ),
        "kserve-grpc": lambda: GrpcDoor(
            "kserve-grpc",
            channel.unary_unary(MODEL_INFER, request_serializer=identity, response_deserializer=identity),
            kserve_grpc_request(case.name, image),
            kserve_grpc_output,
        ),
        "kserve-rest": lambda: HttpDoor(
            "kserve-rest", server.rest_port, kserve_rest_request(case.name, image), kserve_rest_output
        ),
        "tfs-rest": lambda: HttpDoor("tfs-rest", server.rest_port, tfs_rest_request(case.name, image), tfs_rest_output),
    }
    reference = await raw.output()
    doors = []
    for name in names:
        door = candidates[name]()
        try:
            check_output(name, await door.output(), reference)
        except Exception as e:
            details = f"{e.code().name} {e.details()}" if hasattr(e, "details") and hasattr(e, "code") else str(e)
            print(f"[{case.name}] {name}: NOT MEASURED, the first response failed: {details}", flush=True)
            continue
        print(f"[{case.name}] {name}: first response checked, request {door.request_bytes} bytes", flush=True)
        doors.append(door)
    return doors


async def bench_model(case: ModelCase, args: argparse.Namespace, workdir: Path) -> tuple[list[str], dict[int, Rounds]]:
    """Compile the raw side, start the server, check every door, then measure every concurrency."""
    compiled, nireq = compile_and_report(case)
    log_path = server_logs(args, workdir) / f"server-{case.name}.log"
    image = images(1)[0]  # [1, 3, 224, 224]
    results: dict[int, Rounds] = {}
    with server_process(write_server_config(case, workdir), log_path, rest=True) as server:
        print(
            f"[{case.name}] ovserve pid {server.process.pid}: gRPC port {server.grpc_port}, REST port "
            f"{server.rest_port}, log {server.log}",
            flush=True,
        )
        await wait_available(server, case.name)
        async with grpc_channel(server.grpc_port) as channel:
            doors = await open_doors(case, args.doors, server, channel, RawDoor(compiled, nireq, image), image)
            for clients in args.concurrency if doors else []:
                results[clients] = await measure_cell(clients, doors, args, server.process.pid)
                progress(case.name, clients, results[clients])
        rss, peak = memory_mb(server.process.pid)
        print(f"[{case.name}] ovserve memory after the cells: resident {rss:.0f} MB, peak {peak:.0f} MB", flush=True)
    return [door.name for door in doors], results


# --- report -----------------------------------------------------------------------------------------------------


def table(rows: Sequence[tuple[str, str, int, Rounds]]) -> tuple[str, list[str]]:
    header = (
        f"{'model':12s} {'door':11s} {'C':>3s} | {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} | "
        f"{'vs raw':>6s} {'rounds':>9s} {'others':>6s}"
    )
    lines = []
    for model, door, clients, m in rows:
        r = m.results[door]
        ratio = m.ratio(door)
        versus = f"{ratio:6.2f}" if ratio == ratio else f"{'-':>6s}"  # no raw side measured: no ratio
        rounds = spread(m.rounds[door]) if door != "raw" else ""
        lines.append(
            f"{model:12s} {door:11s} {clients:3d} | {r.images_per_second:8.1f} {r.percentile_ms(50):7.2f} "
            f"{r.percentile_ms(99):7.2f} | {versus} {rounds:>9s} {100 * m.background:5.0f}%"
        )
    return header, lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        raise SystemExit("--rounds must be at least 1, --seconds positive and --warmup not negative")
    from importlib.metadata import version

    import grpc

    for line in machine_info():
        print(line)
    print(
        f"clients: grpc.aio {grpc.__version__} on one channel (KServe protos: tritonclient {version('tritonclient')});"
        f" own asyncio HTTP/1.1 keep-alive client, one connection per client; server: uvicorn {version('uvicorn')}"
    )
    print(
        f"plugin_config {PLUGIN_CONFIG}; batch-1 requests {list(IMAGE)} FP32; per cell and door {args.seconds:g} s in "
        f"{args.rounds} alternating rounds after {args.warmup:g} s of warm-up"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_api-") as tmp:
        workdir = Path(tmp)
        for case in prepare_models(args.models, workdir):
            doors, results = asyncio.run(bench_model(case, args, workdir))
            rows += [(case.name, door, c, results[c]) for c in args.concurrency if c in results for door in doors]
    return print_table(
        *table(rows), "vs raw = req/s over raw OpenVINO's at the same C; rounds = that ratio's range over the rounds;"
    )


if __name__ == "__main__":
    sys.exit(main())
