"""Benchmark: the realistic pipeline "detector -> N crops -> classifier per crop -> gather -> arg-max" over gRPC
against the same work done in this process with OpenVINO and numpy alone.

The pipeline (ovserve, one ``python -m ovserve`` subprocess): a detector model scores the four 224x224 tiles of a
(1,3,448,448) image -> boxes (1,4,3); the custom node ``crop`` (tests/nodes/crop.c, built here with gcc, or its
Python twin tests/nodes/python_nodes.py) keeps the boxes above 0.5 and cuts them -> (N,1,3,224,224), a dynamic
demultiplexer; the classifier runs once per crop; ``argmax`` (C or Python) gathers the N score rows -> labels (N,1).
Requests cycle through four images with N = 1, 2, 3, 4 bright tiles (2.5 crops a request on average).

in-process: the same models compiled as ovserve compiles them; each client thread runs the detector with its own infer
request, thresholds and cuts the crops in numpy, starts one infer request per crop (async, all at once), waits and
takes the arg-max in numpy: what a hand-written program with OpenVINO alone does, with no serialisation at all.

Both sides are measured in alternating slices after a warm-up, as bench_demux does, at C closed-loop clients (C = 1
and 8 by default). It prints requests/s, latency p50/p99 (ms) and the ratio ovserve/in-process: the server's overhead
(gRPC, protobuf, scheduling, the custom nodes' ctypes or Python calls) on a real workload.

Usage (from the repo root; ``make demo`` prepares the demo classifier, else the tiny one is used):
    .venv/bin/python bench/bench_pipeline.py [--seconds 6] [--models demo,tiny] [--nodes c,python] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    DEMO_MODEL,
    INPUT,
    OUTPUT,
    PLUGIN_CONFIG,
    PREDICT,
    REPO,
    Result,
    Rounds,
    ServerProcess,
    alternate,
    comparison_table,
    grpc_channel,
    grpc_run,
    identity,
    int_list,
    log_tail,
    machine_info,
    predict_bytes,
    predict_output,
    print_table,
    server_process,
    tiny_model,
    wait_for,
    write_config,
)

NODES = REPO / "tests" / "nodes"
PIPELINE, SIZE, TILE, THRESHOLD = "find_and_classify", 448, 224, 0.5
PATTERNS = ([True, False, False, False], [True, False, False, True], [True, True, False, True], [True] * 4)


@dataclass(frozen=True)
class Case:
    classifier: str  # "efficientnet" or "tiny"
    nodes: str  # "c" or "python"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0, help="measured time per cell and side (default 6)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up per cell and side (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell (default 3)")
    p.add_argument("--models", default="demo,tiny", help="classifiers: demo (EfficientNet-Lite0), tiny")
    p.add_argument("--nodes", default="c,python", help="custom node kinds: c, python")
    p.add_argument("--concurrency", type=int_list, default=[1, 8], help="concurrent clients (default 1,8)")
    return p.parse_args(argv)


# --- models, nodes, config ---------------------------------------------------------------------------------------


def detector(folder: Path) -> Path:
    """Scores each TILE x TILE tile of a (1,3,SIZE,SIZE) image by its mean -> boxes (1,K,3): score, y, x."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 3, SIZE, SIZE], np.float32, name="image")
    x.output(0).get_tensor().set_names({"image"})
    pooled = ops.avg_pool(x, [TILE, TILE], [0, 0], [0, 0], [TILE, TILE], exclude_pad=True)  # (1,3,2,2)
    means = ops.reduce_mean(pooled, ops.constant(np.array([1], np.int64)), keep_dims=False)  # (1,2,2)
    tiles = (SIZE // TILE) ** 2
    scores = ops.reshape(means, ops.constant(np.array([1, tiles, 1], np.int64)), special_zero=False)
    corners = np.array([[y, x] for y in range(0, SIZE, TILE) for x in range(0, SIZE, TILE)], np.float32)
    boxes = ops.concat([scores, ops.constant(corners.reshape(1, tiles, 2))], 2)
    boxes.output(0).get_tensor().set_names({"boxes"})
    (folder / "1").mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([boxes], [x], "detector"), str(folder / "1" / "model.xml"), compress_to_fp16=False)
    return folder / "1" / "model.xml"


def classifier(name: str, workdir: Path) -> Path | None:
    if name == "efficientnet":
        return DEMO_MODEL if DEMO_MODEL.is_file() else None
    return tiny_model(workdir)


def node_locations(kind: str, workdir: Path) -> tuple[str, str]:
    if kind == "python":
        shutil.copy(NODES / "python_nodes.py", workdir / "python_nodes.py")
        return str(workdir / "python_nodes.py") + ":CropNode", str(workdir / "python_nodes.py") + ":ArgMaxNode"
    built = []
    for name in ("crop", "argmax"):
        out = workdir / f"lib{name}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(NODES / f"{name}.c")], check=True)
        built.append(str(out))
    return built[0], built[1]


def write_pipeline_config(case: Case, detector_xml: Path, classifier_xml: Path, workdir: Path) -> Path:
    crop, argmax = node_locations(case.nodes, workdir)

    def source(node: str, item: str) -> dict[str, str]:
        return {"node_name": node, "data_item": item}

    pc = PLUGIN_CONFIG
    document = {
        "model_config_list": [
            {"config": {"name": "detector", "base_path": str(detector_xml.parent.parent), "plugin_config": pc}},
            {"config": {"name": "classifier", "base_path": str(classifier_xml.parent.parent), "plugin_config": pc}},
        ],
        "custom_node_library_config_list": [
            {"name": "crop", "base_path": crop},
            {"name": "argmax", "base_path": argmax},
        ],
        "pipeline_config_list": [{
            "name": PIPELINE,
            "inputs": ["image"],
            "nodes": [
                {"name": "detect", "type": "DL model", "model_name": "detector",
                 "inputs": [{"image": source("request", "image")}],
                 "outputs": [{"data_item": "boxes", "alias": "boxes"}]},
                {"name": "crop", "type": "custom", "library_name": "crop", "demultiply_count": -1,
                 "params": {"threshold": str(THRESHOLD), "crop_height": str(TILE), "crop_width": str(TILE)},
                 "inputs": [{"image": source("request", "image")}, {"boxes": source("detect", "boxes")}],
                 "outputs": [{"data_item": "crops", "alias": "crop"}]},
                {"name": "classify", "type": "DL model", "model_name": "classifier",
                 "inputs": [{INPUT: source("crop", "crop")}], "outputs": [{"data_item": OUTPUT, "alias": "scores"}]},
                {"name": "decide", "type": "custom", "library_name": "argmax", "gather_from_node": "crop",
                 "inputs": [{"scores": source("classify", "scores")}],
                 "outputs": [{"data_item": "labels", "alias": "labels"}]},
            ],
            "outputs": [{"labels": source("decide", "labels")}],
        }],
    }  # fmt: skip
    return write_config(workdir, document)


def images() -> list[Any]:
    """Four images with 1, 2, 3 and 4 bright tiles: as many crops per request."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for pattern in PATTERNS:
        image = rng.uniform(0.0, 0.3, (1, 3, SIZE, SIZE)).astype(np.float32)
        for tile, bright in enumerate(pattern):
            if bright:
                y, x = TILE * (tile // 2), TILE * (tile % 2)
                image[:, :, y : y + TILE, x : x + TILE] += 0.6
        out.append(image)
    return out


# --- in-process: OpenVINO and numpy alone -----------------------------------------------------------------------


class InProcess:
    """The pipeline's work by hand; each client thread has its own detector request and one request per crop."""

    def __init__(self, detector_xml: Path, classifier_xml: Path) -> None:
        import openvino as ov

        from ovserve.config import ModelConfig
        from ovserve.loading import plugin_config

        core = ov.Core()
        props = plugin_config(ModelConfig(name="x", base_path=detector_xml, plugin_config=PLUGIN_CONFIG))
        self.detector = core.compile_model(core.read_model(str(detector_xml)), "CPU", props)
        self.classifier = core.compile_model(core.read_model(str(classifier_xml)), "CPU", props)

    def client(self) -> Callable[[Any], Any]:
        import numpy as np

        detect = self.detector.create_infer_request()
        classify = [self.classifier.create_infer_request() for _ in PATTERNS[-1]]

        def run(image: Any) -> Any:
            boxes = detect.infer({0: image})[0][0]
            kept = boxes[boxes[:, 0] > THRESHOLD]
            for request, (_, y, x) in zip(classify, kept, strict=False):
                crop = image[:, :, int(y) : int(y) + TILE, int(x) : int(x) + TILE]
                request.start_async({0: np.ascontiguousarray(crop)})
            scores = []
            for request in classify[: len(kept)]:
                request.wait()
                scores.append(request.get_output_tensor(0).data.copy())
            return np.stack(scores).argmax(axis=2).astype(np.int32)

        return run

    def run(self, clients: int, seconds: float, inputs: Sequence[Any]) -> Result:
        result = Result(1)
        start = time.perf_counter()
        deadline = start + seconds
        lock = threading.Lock()

        def loop(number: int) -> None:
            run = self.client()
            i = number
            while True:
                sent = time.perf_counter()
                run(inputs[i % len(inputs)])
                done = time.perf_counter()
                if done > deadline:
                    return
                with lock:
                    result.latencies.append(done - sent)
                    result.elapsed = max(result.elapsed, done - start)
                i += 1

        threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return result


# --- ovserve over gRPC ---------------------------------------------------------------------------------------------


def labels(data: bytes) -> Any:
    return predict_output(data, "labels")


async def wait_ready(call: Callable[..., Any], request: bytes, server: ServerProcess) -> bytes:
    """Send the request until the pipeline answers it; fail at once on an error other than not (yet) there."""
    import grpc

    async def answer() -> bytes | None:
        try:
            return bytes(await call(request, timeout=10))
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                raise RuntimeError(f"the pipeline failed: {e.details()}\n{log_tail(server.log)}") from e
            return None

    return await wait_for(server, answer)


async def bench_case(case: Case, args: argparse.Namespace, workdir: Path) -> list[tuple[Case, int, Rounds]]:
    import numpy as np

    classifier_xml = classifier(case.classifier, workdir)
    if classifier_xml is None:
        print(f"skipping {case}: {DEMO_MODEL} is missing (run `make demo` first)")
        return []
    detector_xml = detector(workdir / "detector")
    local = InProcess(detector_xml, classifier_xml)
    inputs = images()
    requests = [predict_bytes(PIPELINE, image, "image") for image in inputs]
    config = write_pipeline_config(case, detector_xml, classifier_xml, workdir)
    log = workdir / f"server-{case.classifier}-{case.nodes}.log"
    rows = []
    with server_process(config, log) as server:
        async with grpc_channel(server.grpc_port) as channel:
            call = channel.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity)
            await wait_ready(call, requests[0], server)
            run = local.client()
            for image, request in zip(inputs, requests, strict=True):  # both sides give the same labels
                np.testing.assert_array_equal(labels(await call(request, timeout=60)), run(image))
            for clients in args.concurrency:
                sides = {
                    "local": lambda seconds, c=clients: asyncio.to_thread(local.run, c, seconds, inputs),
                    "ovserve": lambda seconds, c=clients: grpc_run(call, requests, 1, c, seconds),
                }
                m = await alternate(sides, "local", 1, args, server.process.pid)
                print(
                    f"  {case.classifier} {case.nodes} C={clients}: in-process "
                    f"{m.results['local'].images_per_second:.1f} req/s, ovserve "
                    f"{m.results['ovserve'].images_per_second:.1f} req/s, ratio {m.ratio('ovserve'):.2f}",
                    flush=True,
                )
                rows.append((case, clients, m))
    return rows


def table(rows: Sequence[tuple[Case, int, Rounds]]) -> tuple[str, list[str]]:
    keys = [(f"{case.classifier:12s} {case.nodes:6s} {clients:2d}", m) for case, clients, m in rows]
    titles = ("local req/s", "ovserve req/s", "ratio", f"{'rounds':>9s}")
    return comparison_table(f"{'classifier':12s} {'nodes':6s} {'C':>2s}", keys, "ovserve", titles)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = {"demo": "efficientnet", "tiny": "tiny"}
    cases = [Case(names[m], n) for m in args.models.split(",") for n in args.nodes.split(",")]
    for line in machine_info():
        print(line)
    print(
        f"plugin_config {PLUGIN_CONFIG}; images (1,3,{SIZE},{SIZE}) with 1-4 crops of {TILE}x{TILE} (2.5 on average); "
        f"per cell and side {args.seconds:g} s in {args.rounds} alternating rounds after {args.warmup:g} s of warm-up"
    )
    rows: list[tuple[Case, int, Rounds]] = []
    with tempfile.TemporaryDirectory(prefix="bench_pipeline-") as tmp:
        for case in cases:
            workdir = Path(tmp) / f"{case.classifier}-{case.nodes}"
            workdir.mkdir()
            rows += asyncio.run(bench_case(case, args, workdir))
    note = "ratio = ovserve req/s over in-process req/s at the same C (1.00: no overhead); rounds = its range;"
    return print_table(*table(rows), note)


if __name__ == "__main__":
    sys.exit(main())
