"""Helpers for the container tests: real `podman run`s of the ovserve image, on the host's network.

`make test-container` installs podman, builds the image and sets OVSERVE_IMAGE and DEMO_CACHE. Run alone:
    OVSERVE_IMAGE=localhost/ovserve:latest .venv/bin/python -m pytest -q -m container tests/container
(Not a conftest.py: tests/conftest.py is imported as the module `conftest`, and a second one would shadow it.)
"""

from __future__ import annotations

import http.client
import os
import resource
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

IMAGE = os.environ.get("OVSERVE_IMAGE", "localhost/ovserve:latest")
# crun fails on this host ("cgroups in hybrid mode not supported"): runc.
RUNTIME = os.environ.get("OVSERVE_PODMAN_RUNTIME", "runc")
DEMO_CACHE = Path(os.environ.get("DEMO_CACHE", ".cache/demo")).resolve()
IMAGE_UID = 5000  # the Containerfile's USER


def ulimit_flags() -> list[str]:
    """rlimits no higher than the host's hard limits: runc cannot raise them (podman's defaults are higher)."""
    flags = []
    for name, limit, cap in (("nofile", resource.RLIMIT_NOFILE, 1 << 20), ("nproc", resource.RLIMIT_NPROC, 4096)):
        hard = resource.getrlimit(limit)[1]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def run_args(name: str | None, volumes: Sequence[str], user: str | None, extra: Sequence[str]) -> list[str]:
    """`podman run` options before the image: host network, runc, rlimits, volumes, user."""
    args = ["--runtime", RUNTIME, "--network", "host", *ulimit_flags()]
    if name:
        args += ["--name", name]
    for volume in volumes:
        args += ["-v", volume]
    if user:
        args += ["--user", user]
    return [*args, *extra]


def http_get(port: int, path: str, timeout: float = 2) -> int:
    """The status of GET 127.0.0.1:port/path, or 0 when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def readable_dir(path: Path) -> Path:
    """pytest's tmp dirs are 0700 root: open them to the image's non-root user (uid 5000), as a volume must be."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


class Container:
    """A detached `podman run` of the image; removed (killed) by the fixture that made it."""

    def __init__(
        self, args: Sequence[str], volumes: Sequence[str] = (), user: str | None = None, extra: Sequence[str] = ()
    ) -> None:
        """`podman run -d` IMAGE `args`; `extra`: more `podman run` options."""
        self.name = f"ovserve-test-{uuid.uuid4().hex[:10]}"
        self.started = time.monotonic()
        podman("run", "-d", *run_args(self.name, volumes, user, extra), IMAGE, *args)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def wait_ready(self, rest_port: int, seconds: float = 90) -> float:
        """Poll /v2/health/ready until 200; seconds since `podman run` started. Fails if the container exits."""
        deadline = time.monotonic() + seconds
        next_check = 0.0
        while time.monotonic() < deadline:
            if http_get(rest_port, "/v2/health/ready") == 200:
                return time.monotonic() - self.started
            if time.monotonic() > next_check:
                assert self.running(), f"container exited ({self.exit_code()}) before ready:\n{self.logs()}"
                next_check = time.monotonic() + 1
            time.sleep(0.05)
        raise AssertionError(f"not ready within {seconds}s:\n{self.logs()}")

    def stop(self, signal: str = "TERM", seconds: float = 60) -> int:
        """Send `signal` and wait for the exit: the container's exit code."""
        podman("kill", "--signal", signal, self.name)
        code = podman("wait", self.name, timeout=seconds).stdout.strip()
        return int(code)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


def run_foreground(
    args: Sequence[str], volumes: Sequence[str] = (), timeout: float = 90, entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` to the end: its exit code is the container's; stdout and stderr are the log."""
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    name = f"ovserve-test-{uuid.uuid4().hex[:10]}"
    try:
        return podman("run", "--rm", *run_args(name, volumes, None, extra), IMAGE, *args, timeout=timeout, check=False)
    finally:  # after a timeout, the container may still run
        podman("rm", "-f", "-t", "0", "--ignore", name, check=False)
