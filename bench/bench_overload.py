"""Benchmark: overload. Bounded queues (max_queue_size) at 256 clients, and fairness beside a 10,000-branch request.

1. Queue limit, on the demo EfficientNet model (plugin config as the other benches, nireq = OpenVINO's optimum).
   A fresh ``python -m ovserve`` per row of the table; ``grpc.aio`` clients in this process, spread over --channels
   connections, send TF Serving Predict requests of one image back to back:
   - unloaded: C = 1 .. nireq clients, no limit, in --rounds alternating slices with raw in-process OpenVINO (the
     model compiled as ovserve compiles it, behind an ``ov.AsyncInferQueue``);
   - overloaded: C = --clients (256) with no limit (every request queues) and with each of --limits as the model's
     ``max_queue_size``. A refused client (RESOURCE_EXHAUSTED) retries after --backoff s (times 0.5-1.5, random),
     as clients of a server that sheds load do. Reported: latency p50/p99 of admitted requests (ratio to raw
     OpenVINO at C = nireq, the unloaded figure, or at C = 256 for the no-limit row), latency p50/p99 of refusals,
     admitted and refused requests per second, the server's resident memory before, during and after the cell,
     and this process's event-loop lag (p99), which every client-side latency includes. A probe also times one
     client's refusals (and, for comparison, GetModelStatus calls) while the model is kept busy and its queue full.
2. Fairness: a pipeline with demultiply_count -1 over a tiny model (y = (x + 1) * 2 on (1,10)); one client sends a
   request of --branches (10,000) branches while --others clients send (1,10) requests to another model (a separate
   entry of the same IR, so its own infer requests). Reported: the others' latency p50/p99/max during the big request
   against unloaded and against raw OpenVINO on that model, for the server's default --max_branches_in_flight (64)
   and for an unbounded window (--branches). The big request is sent --repeat times.

Usage (from the repo root; ``make demo`` prepares the demo model; DEMO_CACHE overrides where it is):
    .venv/bin/python bench/bench_overload.py [--seconds 10] [--clients 256] [--limits 0,4] [--backoff 0.5,2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # bench/ is put on sys.path just above
from common import (
    OTHERS,
    PLUGIN_CONFIG,
    PREDICT,
    REQUEST_TIMEOUT,
    STATUS,
    ModelCase,
    RawDriver,
    Result,
    ServerProcess,
    alternate,
    compile_and_report,
    grpc_channel,
    identity,
    images,
    machine_info,
    memory_mb,
    predict_bytes,
    predict_output,
    ratio,
    server_logs,
    server_process,
    tests_models,
    wait_available,
    write_config,
)

TINY = (1, 10)
T = TypeVar("T", int, float)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration of each overloaded cell (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring each cell (default 2)")
    p.add_argument("--baseline-seconds", type=float, default=6.0, help="per unloaded cell and side (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="alternating raw/server slices per unloaded cell (2)")
    p.add_argument("--clients", type=int, default=256, help="concurrent clients when overloaded (default 256)")
    p.add_argument("--channels", type=int, default=8, help="gRPC connections the clients share (default 8)")
    p.add_argument("--limits", type=_non_negative(int), help="max_queue_size values to measure (default 0 and nireq)")
    p.add_argument(
        "--backoff",
        type=_non_negative(float),
        default=[0.5, 2.0],
        help="seconds a refused client waits to retry, each measured (0.5,2)",
    )
    p.add_argument("--branches", type=int, default=10_000, help="branches of the big request (default 10000)")
    p.add_argument("--others", type=int, default=4, help="clients of the other model meanwhile (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="big requests per window setting (default 3)")
    p.add_argument("--skip", choices=("queue", "fairness"), action="append", default=[], help="leave a part out")
    p.add_argument("--server-logs", type=Path, help="keep the servers' logs in this folder (default: thrown away)")
    args = p.parse_args(argv)
    if min(args.seconds, args.baseline_seconds, args.rounds, args.clients, args.channels, args.branches) <= 0:
        p.error("durations, --rounds, --clients, --channels and --branches must be positive")
    return args


def _non_negative(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argparse type: comma-separated numbers of 0 or more, each made by `convert`."""

    def parse(text: str) -> list[T]:
        try:
            values = [convert(v) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text}") from e
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError(f"expected numbers of 0 or more: {text}")
        return values

    return parse


def demo_model() -> Path:
    """The demo IR: under $DEMO_CACHE if set, else where the other benches look (.cache/demo of this checkout)."""
    cache = os.environ.get("DEMO_CACHE")
    return Path(cache) / "models" / "efficientnet" / "1" / "model.xml" if cache else common.DEMO_MODEL


# --- measuring --------------------------------------------------------------------------------------------------


@dataclass
class Overload:
    """One overloaded cell: admitted requests, refusals (latencies, s), the server's RSS samples (MB), loop lag (s)."""

    admitted: Result = field(default_factory=lambda: Result(1))
    refused: list[float] = field(default_factory=list)
    idle: float = float("nan")  # the server's RSS (MB) before the cell
    rss: list[float] = field(default_factory=list)  # ... sampled during the measured window
    after: float = float("nan")  # ... once the cell's requests have ended
    lag: list[float] = field(default_factory=list)
    others: float = float("nan")
    example: str = ""

    def refused_ms(self, q: float) -> float:
        return Result(1, self.refused).percentile_ms(q)


class Calls:
    """Predict calls (bytes in, bytes out) on several grpc.aio channels, client k on channel k mod count."""

    def __init__(self, port: int, count: int) -> None:
        self.channels = [grpc_channel(port) for _ in range(count)]
        self.calls: list[Callable[..., Any]] = [
            c.unary_unary(PREDICT, request_serializer=identity, response_deserializer=identity) for c in self.channels
        ]

    def __call__(self, client: int) -> Callable[..., Any]:
        return self.calls[client % len(self.calls)]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def sample_while(stop: asyncio.Event, every: float, probe: Callable[[], None]) -> None:
    while not stop.is_set():
        probe()
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def overloaded(
    calls: Calls, payload: bytes, server: ServerProcess, args: argparse.Namespace, backoff: float
) -> Overload:
    """args.clients closed-loop clients, arriving over the first second, for args.warmup + args.seconds; requests
    sent and answered inside the last args.seconds are counted. Refused clients wait `backoff` (x 0.5-1.5) before
    their next request."""
    import grpc

    cell = Overload()
    start = time.perf_counter()
    window = start + args.warmup
    deadline = window + args.seconds
    rng = random.Random(args.clients)
    stop = asyncio.Event()

    async def client(k: int) -> None:
        call = calls(k)
        await asyncio.sleep(k / args.clients * min(1.0, args.warmup / 2))  # the clients arrive over a second
        while True:
            sent = time.perf_counter()
            try:
                await call(payload, timeout=REQUEST_TIMEOUT)
                refused = False
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused = True
                cell.example = cell.example or f"{e.code().name}: {e.details()}"
            done = time.perf_counter()
            if done > deadline:
                return
            if sent >= window:
                (cell.refused if refused else cell.admitted.latencies).append(done - sent)
            if refused:
                await asyncio.sleep(backoff * rng.uniform(0.5, 1.5))

    def rss() -> None:
        if window <= time.perf_counter() <= deadline:
            cell.rss.append(memory_mb(server.process.pid)[0])

    last = [time.perf_counter()]

    def lag() -> None:  # how late this loop wakes a 10 ms sleeper
        now = time.perf_counter()
        cell.lag.append(max(0.0, now - last[0] - 0.01))
        last[0] = now

    cell.idle = memory_mb(server.process.pid)[0]
    background = common.Background(server.process.pid)
    samplers = [asyncio.create_task(sample_while(stop, 0.25, rss)), asyncio.create_task(sample_while(stop, 0.01, lag))]
    await asyncio.gather(*(client(k) for k in range(args.clients)))
    stop.set()
    await asyncio.gather(*samplers)
    cell.after = memory_mb(server.process.pid)[0]
    cell.others = background.share()
    cell.admitted.elapsed = args.seconds
    return cell


@dataclass
class Probe:
    """One client's requests, 10 ms apart, while nireq + max_queue_size others keep the infer requests busy and the
    queue full: latencies (s) of its refused and admitted Predict calls and of GetModelStatus calls (a trivial RPC)
    sent in turn with them."""

    refused: list[float] = field(default_factory=list)
    admitted: list[float] = field(default_factory=list)
    status: list[float] = field(default_factory=list)


async def probe(calls: Calls, payload: bytes, model: str, busy_clients: int, seconds: float) -> Probe:
    import grpc

    from ovserve._proto.tensorflow_serving.apis import get_model_status_pb2 as st

    request = st.GetModelStatusRequest()
    request.model_spec.name = model
    status = calls.channels[-1].unary_unary(STATUS, request_serializer=identity, response_deserializer=identity)
    cell, stop = Probe(), asyncio.Event()

    async def busy(k: int) -> None:
        while not stop.is_set():
            with suppress(grpc.aio.AioRpcError):
                await calls(k)(payload, timeout=REQUEST_TIMEOUT)

    async def timed(call: Callable[..., Any], message: bytes) -> tuple[float, bool]:
        sent = time.perf_counter()
        try:
            await call(message, timeout=REQUEST_TIMEOUT)
            return time.perf_counter() - sent, False
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return time.perf_counter() - sent, True

    keep = [asyncio.create_task(busy(k)) for k in range(busy_clients)]
    await asyncio.sleep(1.0)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        latency, refused = await timed(calls(len(calls.calls) - 1), payload)
        (cell.refused if refused else cell.admitted).append(latency)
        await asyncio.sleep(0.01)
        cell.status.append((await timed(status, request.SerializeToString()))[0])
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*keep)
    return cell


def raw_run(driver: RawDriver, clients: int, seconds: float) -> Result:
    return driver.run(clients, seconds)


# --- part 1: the queue limit ------------------------------------------------------------------------------------


def queue_document(case: ModelCase, limit: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"name": case.name, "base_path": str(case.xml.parent.parent)}
    config["plugin_config"] = PLUGIN_CONFIG
    if limit is not None:
        config["max_queue_size"] = limit
    return {"model_config_list": [{"config": config}]}


@asynccontextmanager
async def started(
    document: dict[str, Any], name: str, model: str, args: argparse.Namespace, workdir: Path, flags: Sequence[str] = ()
) -> AsyncIterator[ServerProcess]:
    log = server_logs(args, workdir) / f"server-{name}.log"
    with server_process(write_config(workdir / f"config-{name}", document), log, extra=flags) as server:
        await wait_available(server, model)
        yield server


@dataclass
class QueueRows:
    """Part 1's measurements: unloaded cells (raw vs server) and overloaded cells with their raw reference."""

    nireq: int = 0
    unloaded: dict[int, common.Rounds] = field(default_factory=dict)
    overloaded: dict[tuple[int | None, float], Overload] = field(default_factory=dict)  # by (limit, backoff)
    probes: dict[int, Probe] = field(default_factory=dict)
    raw: dict[int, Result] = field(default_factory=dict)


async def queue_part(args: argparse.Namespace, workdir: Path) -> QueueRows:
    xml = demo_model()
    rows = QueueRows()
    if not xml.is_file():
        print(f"skipping the queue limit: {xml} is missing (run `make demo`, or set DEMO_CACHE)")
        return rows
    case = ModelCase("efficientnet", xml)
    compiled, rows.nireq = compile_and_report(case)
    payload = predict_bytes(case.name, images(1)[0])
    driver = RawDriver(compiled, rows.nireq, images(1))
    limits = args.limits if args.limits is not None else [0, rows.nireq]
    for limit, backoff in [(None, 0.0)] + [(limit, backoff) for limit in limits for backoff in args.backoff]:
        name = "no limit" if limit is None else f"max_queue_size {limit}, backoff {backoff:g} s"
        document = queue_document(case, limit)
        async with started(document, f"queue-{limit}-{backoff:g}", case.name, args, workdir) as server:
            calls = Calls(server.grpc_port, args.channels)
            try:
                if predict_output(await calls(0)(payload, timeout=REQUEST_TIMEOUT)).shape != (1, 1000):
                    raise RuntimeError("unexpected output shape")
                if limit is None:
                    await unloaded_cells(rows, driver, calls(0), payload, args, server.process.pid)
                elif limit not in rows.probes:
                    busy = rows.nireq + limit
                    rows.probes[limit] = await probe(calls, payload, case.name, busy, args.baseline_seconds)
                rows.overloaded[limit, backoff] = cell = await overloaded(calls, payload, server, args, backoff)
                _progress(name, cell)
            finally:
                await calls.close()
    return rows


def side_by_side(driver: RawDriver, call: Callable[..., Any], payload: bytes, clients: int) -> dict[str, common.Side]:
    """Raw OpenVINO and the server, each with `clients` closed-loop clients of one image."""

    async def raw(seconds: float) -> Result:
        return await asyncio.to_thread(raw_run, driver, clients, seconds)

    async def served(seconds: float) -> Result:
        return await common.grpc_run(call, [payload], 1, clients, seconds)

    return {"raw": raw, "grpc": served}


async def unloaded_cells(
    rows: QueueRows, driver: RawDriver, call: Callable[..., Any], payload: bytes, args: argparse.Namespace, pid: int
) -> None:
    """Raw and server side by side at C = 1 .. nireq, then raw alone at C = args.clients."""
    baseline = argparse.Namespace(warmup=1.0, rounds=args.rounds, seconds=args.baseline_seconds)
    for c in range(1, rows.nireq + 1):
        sides = side_by_side(driver, call, payload, c)
        rows.unloaded[c] = await alternate(sides, "raw", 1, baseline, pid)
        common.progress("unloaded efficientnet", c, rows.unloaded[c])
    rows.raw[args.clients] = await asyncio.to_thread(raw_run, driver, args.clients, args.seconds)


def _progress(name: str, cell: Overload) -> None:
    a = cell.admitted
    print(
        f"  {name}: admitted {len(a.latencies)} (p50 {a.percentile_ms(50):.1f} ms), refused "
        f"{len(cell.refused)} (p50 {cell.refused_ms(50):.2f} ms); RSS idle {cell.idle:.0f}, "
        f"{cell.rss[0]:.0f}->{cell.rss[-1]:.0f} MB; "
        f"others {100 * cell.others:.0f}% CPU" + (f"; refusal: {cell.example}" if cell.example else ""),
        flush=True,
    )


def queue_tables(rows: QueueRows, args: argparse.Namespace) -> list[str]:
    if not rows.nireq:
        return []
    return [*unloaded_table(rows, args), "", *probe_table(rows, args), "", *overload_table(rows, args)]


def unloaded_table(rows: QueueRows, args: argparse.Namespace) -> list[str]:
    header = f"{'unloaded':9s} {'C':>3s} | {'raw p50':>7s} {'p99':>6s} {'req/s':>6s} | {'ovserve p50':>11s} {'p99':>6s}"
    header += f" {'req/s':>6s} | {'p50/raw':>7s} {'req/s/raw':>9s} {'others':>6s}"
    lines = [header, "-" * len(header)]
    for c, m in rows.unloaded.items():
        raw, served = m.results["raw"], m.results["grpc"]
        lines.append(
            f"{'':9s} {c:3d} | {raw.percentile_ms(50):7.1f} {raw.percentile_ms(99):6.1f} {raw.images_per_second:6.1f}"
            f" | {served.percentile_ms(50):11.1f} {served.percentile_ms(99):6.1f} {served.images_per_second:6.1f} | "
            f"{ratio(served.percentile_ms(50), raw.percentile_ms(50)):7.2f} {m.ratio('grpc'):9.2f} "
            f"{100 * m.background:5.0f}%"
        )
    lines.append(
        f"nireq {rows.nireq}; no max_queue_size; C closed-loop clients of one image, {args.rounds} alternating rounds "
        "of raw OpenVINO and ovserve; latencies in ms"
    )
    return lines


def probe_table(rows: QueueRows, args: argparse.Namespace) -> list[str]:
    header = f"{'probe':5s} {'max_queue_size':>14s} | {'refused p50':>11s} {'p99':>6s} {'n':>4s} | "
    header += f"{'admitted p50':>12s} {'n':>4s} | {'GetModelStatus p50':>18s} {'p99':>6s}"
    lines = [header, "-" * len(header)]
    for limit, cell in rows.probes.items():
        refused, admitted, status = (Result(1, v) for v in (cell.refused, cell.admitted, cell.status))
        lines.append(
            f"{'':5s} {limit:14d} | {refused.percentile_ms(50):11.2f} {refused.percentile_ms(99):6.2f} "
            f"{len(cell.refused):4d} | {admitted.percentile_ms(50):12.1f} {len(cell.admitted):4d} | "
            f"{status.percentile_ms(50):18.2f} {status.percentile_ms(99):6.2f}"
        )
    lines.append(
        f"one client sends a Predict, then a GetModelStatus (a trivial RPC), 10 ms apart, for {args.baseline_seconds:g}"
        f" s while nireq + max_queue_size clients keep the infer requests busy and the queue full; latencies in ms"
    )
    return lines


def overload_table(rows: QueueRows, args: argparse.Namespace) -> list[str]:
    c = args.clients
    header = (
        f"{'C=' + str(c):5s} {'max_queue_size':>14s} {'backoff s':>9s} | {'raw C':>5s} {'p50':>6s} | "
        f"{'admitted p50':>12s} {'p99':>7s} {'/s':>6s} | {'p50/raw':>7s} | {'refused p50':>11s} {'p99':>6s} "
        f"{'/s':>6s} | {'RSS idle':>8s} {'start':>5s} {'end':>5s} {'max':>5s} {'after':>5s} | {'lag p99':>7s} "
        f"{'others':>6s}"
    )
    lines = [header, "-" * len(header)]
    for (limit, backoff), cell in rows.overloaded.items():
        reference = c if limit is None else rows.nireq
        raw = rows.raw[c] if limit is None else rows.unloaded[rows.nireq].results["raw"]
        a = cell.admitted
        refused = f"{cell.refused_ms(50):11.2f} {cell.refused_ms(99):6.2f} {len(cell.refused) / args.seconds:6.1f}"
        lag = 1000 * sorted(cell.lag)[int(0.99 * (len(cell.lag) - 1))] if cell.lag else float("nan")
        lines.append(
            f"{'':5s} {'none' if limit is None else str(limit):>14s} {'' if limit is None else f'{backoff:g}':>9s} | "
            f"{reference:5d} {raw.percentile_ms(50):6.1f} | "
            f"{a.percentile_ms(50):12.1f} {a.percentile_ms(99):7.1f} {len(a.latencies) / args.seconds:6.1f} | "
            f"{ratio(a.percentile_ms(50), raw.percentile_ms(50)):7.2f} | {refused} | "
            f"{cell.idle:8.0f} {cell.rss[0]:5.0f} {cell.rss[-1]:5.0f} {max(cell.rss):5.0f} {cell.after:5.0f} | "
            f"{lag:7.1f} {100 * cell.others:5.0f}%"
        )
    lines += [
        f"{c} closed-loop clients on {args.channels} connections, measured over {args.seconds:g} s after "
        f"{args.warmup:g} s (the clients arrive over the first second), a fresh server for each row; a refused client "
        "retries after `backoff` x 0.5-1.5 s; latencies in ms;",
        "p50/raw: admitted p50 over raw OpenVINO's p50 at `raw C` clients (C = nireq: the unloaded figure);",
        "RSS in MB: the server's before the cell (idle), at the start and end of the measured window, its highest "
        "sample there (every 0.25 s) and after the last request; lag p99: this process's event-loop lag, part of "
        "every latency here",
    ]
    example = next((cell.example for cell in rows.overloaded.values() if cell.example), "")
    return [*lines, f"a refusal: {example}"] if example else lines


# --- part 2: fairness beside a big demultiplexed request --------------------------------------------------------


def fairness_document(repository: Path) -> dict[str, Any]:
    models = tests_models()
    base = models.save(models.add_mul(shape=TINY), repository, "tiny")
    node = {
        "name": "node",
        "model_name": "tiny",
        "type": "DL model",
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
        "outputs": [{"data_item": "y", "alias": "y"}],
    }
    pipeline = {
        "name": "demux",
        "inputs": ["x"],
        "demultiply_count": -1,
        "nodes": [node],
        "outputs": [{"y": {"node_name": "node", "data_item": "y"}}],
    }
    models_ = [{"config": {"name": name, "base_path": str(base)}} for name in ("tiny", "other")]
    return {"model_config_list": models_, "pipeline_config_list": [pipeline]}


@dataclass
class Fairness:
    """Others' latencies (s) unloaded and during the big requests, and the big requests' own durations (s)."""

    unloaded: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    big: list[float] = field(default_factory=list)
    others: float = float("nan")


async def fairness_cell(server: ServerProcess, args: argparse.Namespace) -> Fairness:
    import numpy as np

    cell = Fairness()
    calls = Calls(server.grpc_port, 2)
    small = predict_bytes("other", np.ones(TINY, np.float32), "x")
    x = np.arange(args.branches * TINY[1], dtype=np.float32).reshape(args.branches, *TINY) % 7
    big = predict_bytes("demux", x, "x")
    try:
        answer = predict_output(await calls(1)(big, timeout=REQUEST_TIMEOUT), "y")  # warm-up and check
        if not np.array_equal(answer, (x + 1) * 2):
            raise RuntimeError("the big request's answer is wrong")
        result = await common.grpc_run(calls(0), [small], 1, args.others, args.baseline_seconds)
        cell.unloaded = result.latencies
        background = common.Background(server.process.pid)
        for _ in range(args.repeat):
            cell.during += await during_big(calls, small, big, args.others, cell.big)
        cell.others = background.share()
    finally:
        await calls.close()
    return cell


async def during_big(calls: Calls, small: bytes, big: bytes, clients: int, durations: list[float]) -> list[float]:
    """Latencies of `clients` closed-loop clients' small requests that overlapped one big request."""
    latencies: list[float] = []
    spans: list[tuple[float, float]] = []
    finished = asyncio.Event()

    async def client() -> None:
        while not finished.is_set():
            sent = time.perf_counter()
            await calls(0)(small, timeout=REQUEST_TIMEOUT)
            spans.append((sent, time.perf_counter()))

    running = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(0.3)
    start = time.perf_counter()
    await calls(1)(big, timeout=REQUEST_TIMEOUT)
    end = time.perf_counter()
    finished.set()
    await asyncio.gather(*running)
    durations.append(end - start)
    latencies += [done - sent for sent, done in spans if done > start and sent < end]
    return latencies


def raw_tiny(repository: Path, seconds: float) -> Result:
    """Raw OpenVINO on the tiny model: one client, back to back (compiled with the server's default settings)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(repository / "tiny" / "1" / "model.xml")), "CPU")
    request = compiled.create_infer_request()
    x = np.ones(TINY, np.float32)
    result = Result(1)
    deadline = time.perf_counter() + seconds
    while (now := time.perf_counter()) < deadline:
        request.infer({"x": x})
        request.get_output_tensor(0).data.copy()
        result.latencies.append(time.perf_counter() - now)
    return result


async def fairness_part(args: argparse.Namespace, workdir: Path) -> tuple[dict[int, Fairness], Result]:
    repository = workdir / "fairness"
    document = fairness_document(repository)
    raw = raw_tiny(repository, 2.0)
    cells = {}
    for window in (64, args.branches):
        flags = ["--max_branches_in_flight", str(window)]
        async with started(document, f"window-{window}", "other", args, workdir, flags) as server:
            cells[window] = cell = await fairness_cell(server, args)
        during = Result(1, cell.during)
        print(
            f"  window {window}: others p50 {during.percentile_ms(50):.1f} ms, max {max(cell.during) * 1000:.1f} ms; "
            f"big request {min(cell.big):.2f}-{max(cell.big):.2f} s; others {100 * cell.others:.0f}% CPU",
            flush=True,
        )
    return cells, raw


def fairness_table(cells: dict[int, Fairness], raw: Result, args: argparse.Namespace) -> list[str]:
    header = (
        f"{'max_branches_in_flight':>22s} | {'big request s':>13s} | {'unloaded p50':>12s} {'p99':>6s} {'max':>6s} | "
        f"{'during p50':>10s} {'p99':>6s} {'max':>7s} | {'p50/raw':>7s} {'others':>6s}"
    )
    lines = [header, "-" * len(header)]
    base = raw.percentile_ms(50)
    for window, cell in cells.items():
        unloaded, during = Result(1, cell.unloaded), Result(1, cell.during)
        big = f"{min(cell.big):.2f}-{max(cell.big):.2f}"
        lines.append(
            f"{window:22d} | {big:>13s} | {unloaded.percentile_ms(50):12.2f} {unloaded.percentile_ms(99):6.1f} "
            f"{unloaded.percentile_ms(100):6.1f} | {during.percentile_ms(50):10.2f} {during.percentile_ms(99):6.1f} "
            f"{during.percentile_ms(100):7.1f} | {ratio(during.percentile_ms(50), base):7.1f} {100 * cell.others:5.0f}%"
        )
    lines.append(
        f"{args.others} clients send (1,10) requests to `other` while one request of {args.branches} branches runs "
        f"through `demux` (over `tiny`), {args.repeat} times; latencies in ms; raw OpenVINO on the model: p50 "
        f"{base:.3f} ms, p99 {raw.percentile_ms(99):.3f} ms (one client, in process)"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for line in machine_info():
        print(line)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_overload-") as tmp:
        workdir = Path(tmp)
        if "queue" not in args.skip:
            print(f"1. queue limit: {args.clients} clients on {args.channels} connections", flush=True)
            lines += ["", *queue_tables(asyncio.run(queue_part(args, workdir)), args)]
        if "fairness" not in args.skip:
            print(f"2. fairness: a request of {args.branches} branches beside {args.others} clients", flush=True)
            lines += ["", *fairness_table(*asyncio.run(fairness_part(args, workdir)), args)]
    for line in [*lines, OTHERS]:
        print(line)
    return 0 if len(lines) > 1 else 1


if __name__ == "__main__":
    sys.exit(main())
