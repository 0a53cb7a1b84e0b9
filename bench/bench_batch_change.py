"""Benchmark: what a change of batch size costs, served three ways, against raw in-process OpenVINO.

The batch size of the requests follows a sequence (default 8 → 1 → 8 → 3 → 8: the --sizes 1,8,3,8 cycled after a
warm-up at the last one), --rounds times. At every change, for each way of serving, it measures the latency of the
first request at the new size, then the steady images/s at that size with C closed-loop clients:

demux    the seed guide's pipeline (``demultiply_count: -1``) on the batch-1 model: a [N,1,3,224,224] request runs
         N branches; raw: the batch-1 model compiled once, N jobs per request on an ``ov.AsyncInferQueue``;
dynamic  the model with ``batch_size: "-1"``: one [N,3,224,224] inference per request; raw: the model reshaped to
         [-1,3,224,224] and compiled once, one job per request;
auto     the model with ``batch_size: "auto"``: a request of a new N makes the server reload the model for it
         (reshape and compile), then each request is one static inference; raw: ``model.reshape`` and
         ``compile_model`` at each new N (what the reload does), then one job per request.

One ``python -m ovserve`` subprocess serves all three (only one is busy at a time) over TF Serving gRPC Predict.
Raw sides compile as ovserve does (common.compile_as_server: plugin config, PERFORMANCE_HINT, nireq). Each
(change, way) measures raw then gRPC, so drift of the machine's speed falls on both alike. Every first response is
checked (shape, and top-1 class against the raw batch-1 model for each image, on the demo's photos when present).
At the end the server's ``ovserve_model_reloads`` metric and its log confirm one reload per change for ``auto``.

Usage (from the repo root; ``make demo`` prepares the demo model):
    .venv/bin/python bench/bench_batch_change.py [--sizes 1,8,3,8] [--rounds 3] [--seconds 2] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    DEMO_MODEL,
    HOST,
    INPUT,
    PIPELINE,
    PLUGIN_CONFIG,
    PREDICT,
    Background,
    ModelCase,
    RawDriver,
    Result,
    ServerProcess,
    compile_as_server,
    grpc_channel,
    grpc_run,
    identity,
    int_list,
    machine_info,
    predict_bytes,
    predict_output,
    ratio,
    seed_document,
    server_logs,
    server_process,
    wait_available,
    write_config,
)

WAYS = ("demux", "dynamic", "auto")
SERVED = {"demux": PIPELINE, "dynamic": "dynamic", "auto": "auto"}
PHOTOS = DEMO_MODEL.parents[3] / "imgs.npy"  # .cache/demo/imgs.npy, written by `make demo` beside the model
Array = Any  # numpy arrays; numpy is imported lazily


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", type=int_list, default=[1, 8, 3, 8], help="batch sizes, cycled (default 1,8,3,8)")
    p.add_argument("--rounds", type=int, default=3, help="times the sequence is run (default 3)")
    p.add_argument("--seconds", type=float, default=2.0, help="steady measurement per size, way and side (default 2)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up of each way at the last size (default 1)")
    p.add_argument("--concurrency", type=int, default=2, help="closed-loop clients of the steady phase (default 2)")
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help=f"IR model (default {DEMO_MODEL})")
    p.add_argument("--photos", type=Path, default=PHOTOS, help=f"images [n,3,224,224] .npy (default {PHOTOS})")
    p.add_argument("--server-logs", type=Path, help="keep the server's log in this folder (default: thrown away)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1:
        p.error("--rounds and --concurrency must be at least 1, --seconds positive and --warmup not negative")
    if any(a == b for a, b in zip(args.sizes, args.sizes[1:] + args.sizes[:1], strict=True)):
        p.error("--sizes must change at every step (the cycle too: the last size differs from the first)")
    return args


def photos(path: Path, n: int) -> Array:
    """n images [n,3,224,224]: the demo's photos cycled, or noise when `make demo` has not written them."""
    import numpy as np

    if path.is_file():
        pictures = np.load(path).astype(np.float32)
        return np.ascontiguousarray(pictures[np.arange(n) % len(pictures)])
    return np.random.default_rng(0).uniform(0, 255, (n, 3, 224, 224)).astype(np.float32)


def request_shape(way: str, batch: Array) -> Array:
    """The pipeline takes [N,1,3,224,224] (one branch per image); the models take the batch as is."""
    return batch[:, None] if way == "demux" else batch


# --- raw OpenVINO -------------------------------------------------------------------------------------------------


class RawWay:
    """In-process OpenVINO doing what the server does for one way of serving a changing batch."""

    def __init__(self, way: str, case: ModelCase) -> None:
        import openvino as ov

        self.way = way
        self.core = ov.Core()
        compiled, self.nireq, self.props = compile_as_server(case)
        self.model = self.core.read_model(str(case.xml))
        if way == "dynamic":
            self.model.reshape({INPUT: ov.PartialShape([-1, 3, 224, 224])})
        if way != "auto":
            compiled = self.core.compile_model(self.model, "CPU", self.props) if way == "dynamic" else compiled
            self.driver = RawDriver(compiled, self.nireq, [])
        self.size = 0

    def resize(self, batch: Array) -> None:
        """Make the next requests `batch`; for auto at a new size, reshape and compile the model for it."""
        n = len(batch)
        if self.way == "auto" and n != self.size:
            import openvino as ov

            model = self.model.clone()
            model.reshape({INPUT: ov.PartialShape([n, 3, 224, 224])})
            self.driver = RawDriver(self.core.compile_model(model, "CPU", self.props), self.nireq, [])
        # A request is N jobs of one image (demux) or one job of N images; RawDriver runs one job per item.
        self.driver.batch = list(batch[:, None]) if self.way == "demux" else [batch]
        self.size = n

    def first(self, batch: Array) -> float:
        """Seconds from a new size to its first answer (for auto: reshape and compile included)."""
        start = time.perf_counter()
        self.resize(batch)
        self.driver._submit(0, start)  # one request, sent as RawDriver.run sends them
        _, finished = self.driver.done.get()
        return finished - start

    def run(self, clients: int, seconds: float) -> Result:
        result = self.driver.run(clients, seconds)
        result.n = self.size  # RawDriver counts jobs; a job here may hold the whole batch
        return result


def reference_top1(case: ModelCase, batch: Array) -> list[int]:
    """Top-1 class of each image from the batch-1 model, one inference each."""
    import numpy as np

    compiled, _, _ = compile_as_server(case)
    return [int(np.argmax(compiled({INPUT: image[None]})[compiled.output(0)])) for image in batch]


# --- the server ---------------------------------------------------------------------------------------------------


def write_server_config(case: ModelCase, workdir: Path) -> Path:
    """The seed guide's model and pipeline, and the same model twice more with batch_size -1 and auto."""
    base = str(case.xml.parent.parent)
    document = seed_document(case)
    for name, batch_size in (("dynamic", "-1"), ("auto", "auto")):
        settings = {"name": name, "base_path": base, "batch_size": batch_size, "plugin_config": PLUGIN_CONFIG}
        document["model_config_list"].append({"config": settings})
    document["monitoring"] = {"metrics": {"enable": True}}
    return write_config(workdir / "config", document)


def check_response(way: str, data: bytes, expected: list[int]) -> None:
    """[N,1,1000] from the pipeline, [N,1000] from the models, with the batch-1 model's top-1 class per image."""
    import numpy as np

    scores = predict_output(data)
    n = len(expected)
    if scores.shape != ((n, 1, 1000) if way == "demux" else (n, 1000)):
        raise RuntimeError(f"{way}: output shape {scores.shape} for {n} images")
    top1 = [int(i) for i in np.argmax(scores.reshape(n, 1000), axis=1)]
    if top1 != expected:
        raise RuntimeError(f"{way}: top-1 classes {top1}, the batch-1 model says {expected}")


def server_reloads(server: ServerProcess) -> dict[str, int]:
    """ovserve_model_reloads of the auto model, by status, from /metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{server.rest_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'ovserve_model_reloads\{name="auto",version="1",status="(\w+)"\} (\d+)', text)
    return {status: int(count) for status, count in found}


def reload_times_ms(log: Path) -> list[float]:
    """Reload times the server logged ("reloaded for shape ... in X ms")."""
    return [float(m) for m in re.findall(r"reloaded for shape .* in (\d+) ms", log.read_text(errors="replace"))]


# --- measurement --------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One (change of size, way): first-request latencies (s) of every round and the steady results of both sides."""

    raw_first: list[float] = field(default_factory=list)
    rpc_first: list[float] = field(default_factory=list)
    raw: Result = field(default_factory=lambda: Result(0))
    rpc: Result = field(default_factory=lambda: Result(0))


async def run(args: argparse.Namespace, case: ModelCase, workdir: Path) -> tuple[dict[tuple[str, str], Step], str]:
    sizes: list[int] = args.sizes
    largest = photos(args.photos, max(sizes))
    expected = reference_top1(case, largest)
    raws = {way: RawWay(way, case) for way in WAYS}
    print(f"raw OpenVINO: compile config {raws['demux'].props}, nireq {raws['demux'].nireq}", flush=True)
    log_path = server_logs(args, workdir) / "server.log"
    steps: dict[tuple[str, str], Step] = {}
    with server_process(write_server_config(case, workdir), log_path, rest=True) as server:
        print(f"ovserve pid {server.process.pid}: gRPC port {server.grpc_port}, log {server.log}", flush=True)
        for name in (case.name, "dynamic", "auto"):
            await wait_available(server, name)
        background = Background(server.process.pid)
        async with grpc_channel(server.grpc_port) as channel:
            call = channel.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity)
            payloads = {
                (way, n): predict_bytes(SERVED[way], request_shape(way, largest[:n])) for way in WAYS for n in sizes
            }
            for way in WAYS:  # warm-up at the last size, so that the first measured step is a change too
                raws[way].resize(largest[: sizes[-1]])
                raws[way].run(args.concurrency, args.warmup)
                await grpc_run(call, [payloads[(way, sizes[-1])]], sizes[-1], args.concurrency, args.warmup)
            for round_ in range(args.rounds):
                for i, n in enumerate(sizes):
                    change = f"{sizes[i - 1]}->{n}"
                    for way in WAYS:
                        step = steps.setdefault((change, way), Step())
                        step.raw_first.append(await asyncio.to_thread(raws[way].first, largest[:n]))
                        step.raw.add(await asyncio.to_thread(raws[way].run, args.concurrency, args.seconds))
                        sent = time.perf_counter()
                        data = await call(payloads[(way, n)], timeout=120)
                        step.rpc_first.append(time.perf_counter() - sent)
                        check_response(way, data, expected[:n])
                        step.rpc.add(await grpc_run(call, [payloads[(way, n)]], n, args.concurrency, args.seconds))
                        step.raw.n = step.rpc.n = n
                        _progress(round_, change, way, step)
            reloads = server_reloads(server)
        others = background.share()
    times = reload_times_ms(log_path)
    # The auto model starts at the model's own batch, then sees the warm-up's size, then the sequence.
    seen = [raws["auto"].model.input(INPUT).get_partial_shape()[0].get_length(), sizes[-1], *sizes * args.rounds]
    changes = sum(a != b for a, b in itertools.pairwise(seen))
    summary = (
        f"server: auto model reloads {reloads} for {changes} changes of its size (warm-up included); logged times "
        f"median {statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f})"
        if times
        else f"server: auto model reloads {reloads}; no reload logged"
    )
    return steps, summary + f"; other processes used {100 * others:.0f}% of the machine's CPU meanwhile"


# --- report -------------------------------------------------------------------------------------------------------


def _progress(round_: int, change: str, way: str, step: Step) -> None:
    print(
        f"  round {round_ + 1} {change:>6s} {way:8s}: first request raw {1000 * step.raw_first[-1]:7.1f} ms, grpc "
        f"{1000 * step.rpc_first[-1]:7.1f} ms; steady raw {step.raw.images_per_second:6.1f} img/s, grpc "
        f"{step.rpc.images_per_second:6.1f} img/s (so far)",
        flush=True,
    )


def _first(step: Step) -> str:
    raw, rpc = statistics.median(step.raw_first), statistics.median(step.rpc_first)
    return f"{1000 * raw:8.1f} {1000 * rpc:8.1f} {ratio(rpc, raw):8.2f}"


def _steady(step: Step) -> str:
    raw, rpc = step.raw.images_per_second, step.rpc.images_per_second
    return f"{raw:8.1f} {rpc:8.1f} {ratio(rpc, raw):8.2f}"


def tables(steps: dict[tuple[str, str], Step], changes: list[str]) -> list[str]:
    ways = " | ".join(f"{way:^26s}" for way in WAYS)
    sides = " | ".join(f"{'raw':>8s} {'grpc':>8s} {'grpc/raw':>8s}" for _ in WAYS)
    lines = []
    for title, render in (
        ("first request at the new size, ms (median of the rounds)", _first),
        ("steady state at the new size, images/s", _steady),
    ):
        lines += [title + ":", f"{'change':8s} | {ways}", f"{'':8s} | {sides}"]
        lines += [f"{change:8s} | " + " | ".join(render(steps[(change, way)]) for way in WAYS) for change in changes]
        lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"{args.model} is missing: run `make demo` first (or pass --model)")
        return 1
    for line in machine_info():
        print(line)
    print(
        f"plugin_config {PLUGIN_CONFIG}; sizes {args.sizes} x {args.rounds} rounds; at each size and for each way: "
        f"one first request, then {args.seconds:g} s with {args.concurrency} closed-loop clients, raw then grpc; "
        f"images: {args.photos if args.photos.is_file() else 'noise'}"
    )
    case = ModelCase("efficientnet", args.model)
    with tempfile.TemporaryDirectory(prefix="bench_batch_change-") as tmp:
        steps, summary = asyncio.run(run(args, case, Path(tmp)))
    changes = list(dict.fromkeys(change for change, _ in steps))
    print()
    for line in tables(steps, changes):
        print(line)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
