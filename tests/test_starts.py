"""Many real starts of the `ovserve` command with three models: every one becomes ready, and SIGTERM ends it at any
point of the start (right away, while models load, once ready; --drain_seconds 0, so a stop once ready is at once).

Models load in worker threads, several at once; a race between them hung a few starts in a hundred for good
(OpenVINO's numpy type tables, see loading.prepare_bindings). OVSERVE_STARTS (default 100) sets how many starts must
become ready; a fifth of that more are stopped while loading and a tenth right away. OVSERVE_STARTS_PARALLEL (default
3) runs that many at once: about a minute in all on two cores."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import models
import pytest
from conftest import free_port

STARTS = int(os.environ.get("OVSERVE_STARTS", "100"))
PARALLEL = int(os.environ.get("OVSERVE_STARTS_PARALLEL", "3"))
READY_S = 30.0  # a start of three tiny models takes about a second (several on a busy machine)
EXIT_S = 20.0
OVSERVE = str(Path(sys.executable).parent / "ovserve")

# Where SIGTERM is sent: once /v2/health/ready answers 200, as soon as the REST port is open (the models load in the
# background from then on), or right after the process is spawned.
KINDS = ["ready"] * STARTS + ["loading"] * (STARTS // 5) + ["immediately"] * (STARTS // 10)


@dataclass
class Start:
    kind: str
    ready: float | None = None  # seconds to ready
    code: int | None = None  # exit code; None: still running EXIT_S after SIGTERM (then killed)
    log: str = ""

    def problem(self) -> str | None:
        if self.kind == "ready" and self.ready is None:
            return f"not ready within {READY_S:.0f} s"
        if self.code is None:
            return f"SIGTERM ({self.kind}) ignored for {EXIT_S:.0f} s"
        if self.kind == "ready" and (self.code != 0 or "server stopped" not in self.log):
            return f"exit code {self.code} after SIGTERM once ready"
        if self.code not in (0, -signal.SIGTERM):
            return f"exit code {self.code} after SIGTERM ({self.kind})"
        return None


def is_ready(rest_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v2/health/ready", timeout=2) as response:
            return int(response.status) == 200
    except OSError:  # not listening yet, or not ready (HTTP errors are OSErrors too)
        return False


def start(config: Path, kind: str, log_path: Path) -> Start:
    """One start, SIGTERM at the point `kind` names; a process that ignores it has its threads dumped by
    faulthandler (SIGABRT) into the log, then is killed."""
    rest_port = free_port()
    command = [OVSERVE, "--config_path", str(config), "--port", str(free_port()), "--grpc_bind_address",
               "127.0.0.1", "--rest_port", str(rest_port), "--rest_bind_address", "127.0.0.1",
               "--file_system_poll_wait_seconds", "0", "--drain_seconds", "0"]  # fmt: skip
    result = Start(kind)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONFAULTHANDLER": "1"}
        )
    try:
        began = time.monotonic()
        while kind != "immediately" and process.poll() is None and time.monotonic() - began < READY_S:
            if kind == "loading" and "REST server listening" in log_path.read_text():
                break
            if kind == "ready" and is_ready(rest_port):
                result.ready = time.monotonic() - began
                break
            time.sleep(0.01 if kind == "loading" else 0.05)
        process.send_signal(signal.SIGTERM)
        try:
            result.code = process.wait(EXIT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)  # faulthandler writes every thread's stack to the log, then the process aborts
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result.log = log_path.read_text()
    return result


def start_retrying(config: Path, kind: str, log_path: Path) -> Start:
    """`start`, again on other ports when a port picked turned out taken by another process meanwhile."""
    for _ in range(3):
        result = start(config, kind, log_path)
        if result.code != 1 or "cannot bind" not in result.log:
            break
    return result


@pytest.mark.timeout(600 + 2 * len(KINDS))
def test_every_start_becomes_ready_and_sigterm_ends_it_at_any_point(tmp_path: Path) -> None:
    models.save(models.classifier(), tmp_path, "classifier")
    models.save(models.add_mul(), tmp_path, "add_mul")
    models.save(models.weighted_sum(), tmp_path, "weighted_sum")
    config = models.write_config(
        tmp_path,
        {
            "model_config_list": [
                {"config": {"name": n, "base_path": n}} for n in ("classifier", "add_mul", "weighted_sum")
            ]
        },
    )
    kinds = list(KINDS)
    random.Random(0).shuffle(kinds)
    began = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(
            pool.map(lambda i: start_retrying(config, kinds[i], tmp_path / f"log{i}.txt"), range(len(kinds)))
        )
    took = time.monotonic() - began
    failures = [(i, r) for i, r in enumerate(results) if r.problem() is not None]
    ready = sorted(r.ready for r in results if r.ready is not None)
    summary = (
        f"{len(results)} starts in {took:.0f} s ({PARALLEL} at a time): {len(failures)} failed; "
        f"ready in {ready[len(ready) // 2]:.2f} s (median), {ready[-1]:.2f} s (slowest)"
        if ready
        else "none ready"
    )
    print(summary)
    details = "\n\n".join(f"start {i} ({r.kind}): {r.problem()}\n{r.log[-6000:]}" for i, r in failures[:2])
    assert not failures, f"{summary}\n" + "\n".join(f"start {i}: {r.problem()}" for i, r in failures) + "\n\n" + details


# Three threads convert OpenVINO types to numpy at the same moment, as three loaders do at the end of their loads,
# with the GIL passed between threads every microsecond: without the tables Manager() builds first, about nine
# processes in ten hang (a few starts in a hundred of the real server did).
RACE = """
import sys
import threading
import openvino as ov
from ovserve.manager import Manager
Manager()
sys.setswitchinterval(1e-6)
barrier = threading.Barrier(3)
def convert():
    barrier.wait()
    ov.Type.f32.to_dtype()
    ov.Tensor(ov.Type.f32, [1]).data
threads = [threading.Thread(target=convert) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_loader_threads_convert_types_at_once_without_hanging(tmp_path: Path) -> None:
    def run(_: int) -> bool:
        try:
            subprocess.run([sys.executable, "-c", RACE], cwd=tmp_path, timeout=15, check=True)
        except subprocess.TimeoutExpired:
            return False
        return True

    with ThreadPoolExecutor(PARALLEL) as pool:
        finished = list(pool.map(run, range(6)))
    assert all(finished), f"{finished.count(False)} of {len(finished)} processes hung"


# The `ovserve` command with the loads of models "stuck..." never ending, as a compile_model that never returns:
# blocked in C++ without the GIL, in a worker thread nothing can cancel.
STUCK_LOAD = """
import sys, threading
from ovserve import cli, loading
load = loading.load
def stuck(core, config, *args, **kwargs):
    if config.name.startswith("stuck"):
        print("load held:", config.name, file=sys.stderr, flush=True)
        threading.Event().wait()
    return load(core, config, *args, **kwargs)
loading.load = stuck
sys.exit(cli.main())
"""
EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor, which runs the loads


@pytest.mark.parametrize("stuck", [1, EXECUTOR_THREADS + 1])  # one load, or every worker thread, held for good
def test_sigterm_ends_a_start_whose_model_loads_never_end(tmp_path: Path, stuck: int) -> None:
    names = ["add_mul", *(f"stuck{i}" for i in range(stuck))]
    for name in names:
        models.save(models.add_mul(), tmp_path, name)
    config = models.write_config(
        tmp_path, {"model_config_list": [{"config": {"name": n, "base_path": n}} for n in names]}
    )
    log_path = tmp_path / "log.txt"
    command = [sys.executable, "-c", STUCK_LOAD, "--config_path", str(config), "--port", str(free_port()),
               "--grpc_bind_address", "127.0.0.1", "--rest_port", str(free_port()), "--rest_bind_address",
               "127.0.0.1", "--file_system_poll_wait_seconds", "0"]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + READY_S
        while "REST server listening" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        time.sleep(1)  # the loads begin, and get stuck
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(10)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert "load held: stuck0" in text, f"the patched loading.load was not the one the manager called\n{text}"
    assert code == 0, f"exit code {code} (None: still running 10 s after SIGTERM)\n{text}"
