"""Soak: mixed traffic against one ovserve subprocess for --minutes (make soak: SOAK_MINUTES, default 30), watching
the server for leaks.

Each kind of traffic runs in its own thread with its own real client, requests back to back (--pause between them),
and every answer is checked against the expected values:

  tfs-grpc, tfs-rest        ovmsclient Predict to `tiny` (y = (x + 1) * 2 on a (1,10) input)
  kserve-grpc, kserve-rest  tritonclient infer to `tiny` (REST alternating JSON and binary tensors)
  demux-grpc, demux-rest    the pipeline `demux` (demultiply_count -1 over `tiny`), N drawn from 1..--max-n
  png-rest, jpeg-grpc       one encoded image to `image` (NHWC 32x32 -> channel means): tritonclient HTTP binary
                            BYTES, ovmsclient gRPC string_val
  images-grpc               N PNG and JPEG images to the pipeline `images` (one branch per image), tritonclient gRPC
  metrics                   GET /metrics every 2 s
  reload                    every --reload-seconds config.json is edited (the model `spare` removed or put back,
                            `image`'s nireq changed or restored), then POST /v1/config/reload: the answer (200/201)
                            and spare's readiness are checked

Every --sample-seconds it prints the server's resident memory, open file descriptors (/proc/<pid>/fd), threads, and
the requests and failures so far. Goals, checked at the end against the first sample at or after minute 1: resident
memory grew less than 5 %, open fds grew by at most --fd-slack, no request failed. Exit status 1 if one is missed.

Usage (from the repo root): .venv/bin/python bench/soak.py [--minutes 30] [--pause 0.005]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is put on sys.path just above
    HOST,
    Background,
    ServerProcess,
    log_tail,
    machine_info,
    memory_mb,
    server_process,
    tests_models,
    write_config,
)

Action = Callable[[random.Random], None]  # one request, checked; raises on any failure
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
TINY = (1, 10)
SIDE = 32  # the image model takes (1, SIDE, SIDE, 3)
TIMEOUT = 30.0
MEMORY_GOAL = 0.05


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    minutes = float(os.environ.get("SOAK_MINUTES", "30"))
    p.add_argument("--minutes", type=float, default=minutes, help="duration (default $SOAK_MINUTES or 30)")
    p.add_argument("--pause", type=float, default=0.005, help="seconds each client waits between requests")
    p.add_argument("--max-n", type=int, default=64, help="largest N of the demultiplexed requests (default 64)")
    p.add_argument("--reload-seconds", type=float, default=60.0, help="seconds between config reloads (default 60)")
    p.add_argument("--sample-seconds", type=float, default=60.0, help="seconds between samples (default 60)")
    p.add_argument("--fd-slack", type=int, default=10, help="open fds allowed beyond the minute-1 count")
    p.add_argument("--server-logs", type=Path, help="keep the server's log in this folder")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.reload_seconds <= 0 or args.max_n < 1:
        p.error("--minutes, --sample-seconds, --reload-seconds and --max-n must be positive")
    return args


# --- the server's models and config -----------------------------------------------------------------------------


def pipeline(name: str, model: str, inp: str, out: str) -> dict[str, Any]:
    """A pipeline demultiplexing its one input at the request (demultiply_count -1) over one model node."""
    return {
        "name": name,
        "inputs": [inp],
        "demultiply_count": -1,
        "nodes": [
            {
                "name": "node",
                "model_name": model,
                "type": "DL model",
                "inputs": [{inp: {"node_name": "request", "data_item": inp}}],
                "outputs": [{"data_item": out, "alias": out}],
            }
        ],
        "outputs": [{out: {"node_name": "node", "data_item": out}}],
    }


def document(repository: Path, spare: bool, image_nireq: int) -> dict[str, Any]:
    """The config: tiny, image and (if `spare`) spare, the pipelines demux and images."""

    def model(name: str, **settings: Any) -> dict[str, Any]:
        return {"config": {"name": name, "base_path": str(repository / name), "plugin_config": F32, **settings}}

    models = [model("tiny"), model("image", nireq=image_nireq)] + ([model("spare")] if spare else [])
    pipelines = [pipeline("demux", "tiny", "x", "y"), pipeline("images", "image", "image", "means")]
    return {"model_config_list": models, "pipeline_config_list": pipelines}


def save_models(repository: Path) -> None:
    models = tests_models()
    models.save(models.add_mul(shape=TINY), repository, "tiny")
    models.save(models.add_mul(shape=TINY), repository, "spare")
    models.save(models.channel_means(shape=(1, SIDE, SIDE, 3)), repository, "image")


# --- inputs and checks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """An encoded image and the channel means (BGR) the image model should answer for it."""

    data: bytes
    means: Any
    tolerance: float


def pictures() -> list[Picture]:
    """Four PNG and four JPEG pictures of SIDE x SIDE (smooth gradients plus noise), with their expected means."""
    import numpy as np
    from PIL import Image

    result = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        planes = [(y * (c + 1) * 7 + x * (3 - c) * 5 + seed * 11) % 256 for c in range(3)]
        array = ((np.stack(planes, -1) + rng.integers(0, 32, (SIDE, SIDE, 3))) % 256).astype(np.uint8)
        fmt = "PNG" if seed % 2 == 0 else "JPEG"
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, fmt)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))[..., ::-1].astype(np.float32)  # BGR
        tolerance = 1e-3 if fmt == "PNG" else 1.5  # JPEG decoders may differ by a little per pixel
        result.append(Picture(buffer.getvalue(), decoded.mean((0, 1)), tolerance))
    return result


def numbers(rng: random.Random, n: int | None = None) -> Any:
    """Small integers as float32, (1,10) or (n,1,10): (x + 1) * 2 is exact at any precision."""
    import numpy as np

    shape = TINY if n is None else (n, *TINY)
    return np.random.default_rng(rng.getrandbits(32)).integers(0, 16, shape).astype(np.float32)


def check(name: str, got: Any, expected: Any, tolerance: float = 0.0) -> None:
    import numpy as np

    got = np.asarray(got)
    if got.shape != expected.shape:
        raise AssertionError(f"{name}: shape {got.shape}, expected {expected.shape}")
    if not np.allclose(got, expected, rtol=0, atol=tolerance):
        raise AssertionError(f"{name}: largest difference {float(np.abs(got - expected).max()):.3g}")


# --- the kinds of traffic (each factory runs in its worker thread and makes that thread's client) -----------------


def tfs_tiny(server: ServerProcess, transport: str) -> Action:
    import ovmsclient

    port = server.grpc_port if transport == "grpc" else server.rest_port
    client = getattr(ovmsclient, f"make_{transport}_client")(f"{HOST}:{port}")

    def send(rng: random.Random) -> None:
        x = numbers(rng)
        check("tiny", client.predict({"x": x}, "tiny", timeout=TIMEOUT), (x + 1) * 2)

    return send


def tfs_demux(server: ServerProcess, max_n: int) -> Action:
    import ovmsclient

    client = ovmsclient.make_grpc_client(f"{HOST}:{server.grpc_port}")

    def send(rng: random.Random) -> None:
        x = numbers(rng, rng.randint(1, max_n))
        check("demux", client.predict({"x": x}, "demux", timeout=TIMEOUT), (x + 1) * 2)

    return send


def kserve_grpc_tiny(server: ServerProcess) -> Action:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{HOST}:{server.grpc_port}")

    def send(rng: random.Random) -> None:
        x = numbers(rng)
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        check("tiny", client.infer("tiny", [tensor], client_timeout=TIMEOUT).as_numpy("y"), (x + 1) * 2)

    return send


def kserve_rest(server: ServerProcess, model: str, max_n: int | None) -> Action:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"{HOST}:{server.rest_port}", network_timeout=TIMEOUT)
    count = 0

    def send(rng: random.Random) -> None:
        nonlocal count
        count += 1
        x = numbers(rng, None if max_n is None else rng.randint(1, max_n))
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=count % 2 == 0)  # JSON and binary in turns
        check(model, client.infer(model, [tensor]).as_numpy("y"), (x + 1) * 2)

    return send


def png_rest(server: ServerProcess, images: list[Picture]) -> Action:
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"{HOST}:{server.rest_port}", network_timeout=TIMEOUT)

    def send(rng: random.Random) -> None:
        picture = rng.choice(images)
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([picture.data], dtype=object), binary_data=True)
        got = client.infer("image", [tensor]).as_numpy("means")
        check("image", got, picture.means[None], picture.tolerance)

    return send


def jpeg_grpc(server: ServerProcess, images: list[Picture]) -> Action:
    import ovmsclient

    client = ovmsclient.make_grpc_client(f"{HOST}:{server.grpc_port}")

    def send(rng: random.Random) -> None:
        picture = rng.choice(images)
        got = client.predict({"image": picture.data}, "image", timeout=TIMEOUT)
        check("image", got, picture.means[None], picture.tolerance)

    return send


def images_grpc(server: ServerProcess, images: list[Picture], max_n: int) -> Action:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{HOST}:{server.grpc_port}")

    def send(rng: random.Random) -> None:
        chosen = [rng.choice(images) for _ in range(rng.randint(1, max_n))]
        tensor = grpcclient.InferInput("image", [len(chosen)], "BYTES")
        tensor.set_data_from_numpy(np.array([p.data for p in chosen], dtype=object))
        got = client.infer("images", [tensor], client_timeout=TIMEOUT).as_numpy("means")
        expected = np.stack([p.means for p in chosen])[:, None]
        check("images", got, expected, max(p.tolerance for p in chosen))

    return send


def metrics(server: ServerProcess) -> Action:
    import requests

    session = requests.Session()

    def send(_: random.Random) -> None:
        answer = session.get(f"http://{HOST}:{server.rest_port}/metrics", timeout=TIMEOUT)
        if answer.status_code != 200 or "ovms_requests_success" not in answer.text:
            raise AssertionError(f"/metrics: HTTP {answer.status_code}: {answer.text[:200]}")

    return send


def reload(server: ServerProcess, config: Path, repository: Path) -> Action:
    import requests

    session = requests.Session()
    state = {"spare": True}

    def send(_: random.Random) -> None:
        spare = state["spare"] = not state["spare"]
        write_config(config.parent, document(repository, spare, image_nireq=2 if spare else 3))
        url = f"http://{HOST}:{server.rest_port}"
        answer = session.post(f"{url}/v1/config/reload", timeout=TIMEOUT)
        if answer.status_code not in (200, 201):
            raise AssertionError(f"reload: HTTP {answer.status_code}: {answer.text[:200]}")
        ready = session.get(f"{url}/v2/models/spare/ready", timeout=TIMEOUT).status_code == 200
        if ready != spare:
            raise AssertionError(f"after the reload spare is {'' if ready else 'not '}ready")

    return send


# --- workers, samples and the report ----------------------------------------------------------------------------


@dataclass
class Tally:
    """Requests of one kind: sent, failed and the first few failures."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class Worker(threading.Thread):
    """Calls its action back to back until stopped, `pause` s apart (and first after `pause` if `late`)."""

    def __init__(self, kind: str, make: Callable[[], Action], pause: float, stop: threading.Event, late: bool) -> None:
        super().__init__(name=f"soak-{kind}", daemon=True)
        self.kind, self.make, self.pause, self.stop, self.late = kind, make, pause, stop, late
        self.tally = Tally()

    def run(self) -> None:
        rng = random.Random(self.kind)
        try:
            action = self.make()
        except Exception as e:
            self._failed(e)
            return
        if self.late:
            self.stop.wait(self.pause)
        while not self.stop.is_set():
            try:
                action(rng)
            except Exception as e:
                self._failed(e)
            self.tally.sent += 1
            self.stop.wait(self.pause)

    def _failed(self, e: Exception) -> None:
        self.tally.failed += 1
        if len(self.tally.errors) < 5:
            self.tally.errors.append(f"{type(e).__name__}: {e}"[:400])


def workers(
    server: ServerProcess, config: Path, repository: Path, args: argparse.Namespace, stop: threading.Event
) -> list[Worker]:
    images = pictures()
    n = args.max_n
    kinds: dict[str, tuple[Callable[[], Action], float]] = {
        "tfs-grpc": (lambda: tfs_tiny(server, "grpc"), args.pause),
        "tfs-rest": (lambda: tfs_tiny(server, "http"), args.pause),
        "kserve-grpc": (lambda: kserve_grpc_tiny(server), args.pause),
        "kserve-rest": (lambda: kserve_rest(server, "tiny", None), args.pause),
        "demux-grpc": (lambda: tfs_demux(server, n), args.pause),
        "demux-rest": (lambda: kserve_rest(server, "demux", n), args.pause),
        "png-rest": (lambda: png_rest(server, images), args.pause),
        "jpeg-grpc": (lambda: jpeg_grpc(server, images), args.pause),
        "images-grpc": (lambda: images_grpc(server, images, min(n, 16)), args.pause),
        "metrics": (lambda: metrics(server), 2.0),
        "reload": (lambda: reload(server, config, repository), args.reload_seconds),
    }
    return [Worker(kind, make, pause, stop, late=kind == "reload") for kind, (make, pause) in kinds.items()]


@dataclass(frozen=True)
class Sample:
    """The server at one moment: seconds since the traffic started, RSS (MB), open fds, threads, requests sent."""

    seconds: float
    rss: float
    fds: int
    threads: int
    sent: int
    failed: int


def sample(pid: int, seconds: float, running: Sequence[Worker]) -> Sample:
    threads = -1
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    return Sample(
        seconds,
        memory_mb(pid)[0],
        len(os.listdir(f"/proc/{pid}/fd")),
        threads,
        sum(w.tally.sent for w in running),
        sum(w.tally.failed for w in running),
    )


def watch(server: ServerProcess, running: Sequence[Worker], args: argparse.Namespace) -> list[Sample]:
    """Sample the server every --sample-seconds until --minutes pass (and once at the end); stop early if it dies."""
    start = time.monotonic()
    end = start + 60 * args.minutes
    samples: list[Sample] = []
    while True:
        now = time.monotonic()
        time.sleep(max(0.0, min(end, start + (len(samples) + 1) * args.sample_seconds) - now))
        if server.process.poll() is not None:
            print(f"the server exited ({server.process.returncode}):\n{log_tail(server.log)}", flush=True)
            return samples
        s = sample(server.process.pid, time.monotonic() - start, running)
        samples.append(s)
        print(
            f"  {s.seconds / 60:5.1f} min: RSS {s.rss:7.1f} MB, fds {s.fds:4d}, threads {s.threads:3d}, "
            f"requests {s.sent:8d}, failed {s.failed}",
            flush=True,
        )
        if time.monotonic() >= end - 0.5:
            return samples


def report(samples: Sequence[Sample], running: Sequence[Worker], args: argparse.Namespace, others: float) -> int:
    """The per-kind table, the memory/fd/thread comparison and the goals; 0 if all are met, else 1."""
    seconds = samples[-1].seconds if samples else 0.0
    print()
    header = f"{'kind':12s} {'sent':>9s} {'failed':>7s} {'req/s':>8s}"
    print(header + "\n" + "-" * len(header))
    for w in running:
        rate = w.tally.sent / seconds if seconds else float("nan")
        print(f"{w.kind:12s} {w.tally.sent:9d} {w.tally.failed:7d} {rate:8.1f}")
        for error in w.tally.errors:
            print(f"    {error}")
    sent, failed = sum(w.tally.sent for w in running), sum(w.tally.failed for w in running)
    print(f"{'all':12s} {sent:9d} {failed:7d} {sent / seconds if seconds else float('nan'):8.1f}")
    if len(samples) < 2:
        print("\nfewer than two samples: nothing to compare (the server died, or --minutes is too short)")
        return 1
    first = next((s for s in samples if s.seconds >= 59.5), samples[0])
    last = samples[-1]
    growth = (last.rss - first.rss) / first.rss
    print(f"\nserver at {first.seconds / 60:.1f} min -> end ({last.seconds / 60:.1f} min):")
    print(f"  resident memory {first.rss:.1f} -> {last.rss:.1f} MB ({100 * growth:+.2f} %)")
    print(f"  open fds        {first.fds} -> {last.fds}")
    print(f"  threads         {first.threads} -> {last.threads}")
    print(f"  others = share of the machine's CPU used by other processes during the run: {100 * others:.0f} %")
    goals = {
        f"resident memory grew less than {100 * MEMORY_GOAL:.0f} %": growth < MEMORY_GOAL,
        f"open fds grew by at most {args.fd_slack}": last.fds - first.fds <= args.fd_slack,
        "no request failed": failed == 0,
        "the server ran to the end": last.seconds >= 60 * args.minutes - 1,
    }
    for goal, met in goals.items():
        print(f"  {'met   ' if met else 'MISSED'} {goal}")
    return 0 if all(goals.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for line in machine_info():
        print(line)
    print(
        f"soak: {args.minutes:g} min, pause {args.pause:g} s per client, N up to {args.max_n}, reload every "
        f"{args.reload_seconds:g} s, samples every {args.sample_seconds:g} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        repository = Path(tmp) / "repo"
        save_models(repository)
        config = write_config(Path(tmp) / "config", document(repository, spare=True, image_nireq=2))
        logs = args.server_logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        flags = ["--metrics_enable", "--file_system_poll_wait_seconds", "0"]
        with server_process(config, logs / "server-soak.log", rest=True, extra=flags) as server:
            wait_ready(server)
            print(f"ovserve pid {server.process.pid}, gRPC {server.grpc_port}, REST {server.rest_port}", flush=True)
            stop = threading.Event()
            running = workers(server, config, repository, args, stop)
            background = Background(server.process.pid)
            for w in running:
                w.start()
            try:
                samples = watch(server, running, args)
            finally:
                stop.set()
                for w in running:
                    w.join(TIMEOUT + 5)
            return report(samples, running, args, background.share())


def wait_ready(server: ServerProcess) -> None:
    """Poll until the pipelines answer ready over REST; fail with the log's tail if the server exits or is slow."""
    import requests

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"the server exited ({server.process.returncode}):\n{log_tail(server.log)}")
        try:
            url = f"http://{HOST}:{server.rest_port}/v2/models"
            if all(requests.get(f"{url}/{name}/ready", timeout=2).status_code == 200 for name in ("demux", "images")):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready in 120 s:\n{log_tail(server.log)}")


if __name__ == "__main__":
    sys.exit(main())
