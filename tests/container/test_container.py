"""The ovserve image (Containerfile) run for real with podman: the guide's demultiplexer scenario on the demo's real
classifier, OVMS's single-model command line, a non-root user and read-only volumes, mistakes at start, and what a
container costs against a bare process. `make test-container` builds the image and runs these."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port
from container_helpers import (
    DEMO_CACHE,
    IMAGE,
    IMAGE_UID,
    RUNTIME,
    Container,
    http_get,
    podman,
    readable_dir,
    run_foreground,
    ulimit_flags,
)

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # ovserve, ovserve-predict and ovserve-metadata of .venv
Start = Callable[..., Container]


@pytest.fixture(scope="session", autouse=True)
def image() -> str:
    """The image under test must exist: `make test-container` builds it."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: run `make test-container`")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} not found: build it with `make test-container` (or set OVSERVE_IMAGE)")
    return IMAGE


@pytest.fixture
def start() -> Iterator[Start]:
    """Start containers: start(args, volumes=(), user=None, extra=()). Each is removed afterwards (its log is
    printed, which pytest shows when the test failed)."""
    started: list[Container] = []

    def run(
        args: Sequence[str], volumes: Sequence[str] = (), user: str | None = None, extra: Sequence[str] = ()
    ) -> Container:
        container = Container(args, volumes, user, extra)
        started.append(container)
        return container

    yield run
    for container in started:
        print(f"== log of {container.name}:\n{container.logs()}")
        container.remove()


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The demo's real classifier (`make .cache/demo/.ready`): models/efficientnet/1/model.{xml,bin}."""
    models = DEMO_CACHE / "models"
    if not (models / "efficientnet" / "1" / "model.xml").is_file():
        pytest.fail(f"no demo model in {DEMO_CACHE}: run `make {DEMO_CACHE}/.ready`")
    return models


def demo_config(base_path: str) -> dict[str, Any]:
    """demo/run_demo.sh's config.json (the guide's): efficientnet behind the demultiplexing pipeline resnet50DAG."""
    node = {
        "name": "resnetNode",
        "model_name": "efficientnet",
        "type": "DL model",
        "inputs": [{"0": {"node_name": "request", "data_item": "0"}}],
        "outputs": [{"data_item": "1463", "alias": "1463"}],
    }
    return {
        "model_config_list": [
            {"config": {"name": "efficientnet", "base_path": base_path, "plugin_config": {"NUM_STREAMS": "1"}}}
        ],
        "pipeline_config_list": [
            {
                "name": "resnet50DAG",
                "inputs": ["0"],
                "demultiply_count": -1,
                "nodes": [node],
                "outputs": [{"1463": {"node_name": "resnetNode", "data_item": "1463"}}],
            }
        ],
    }


def write_config(directory: Path, document: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document, indent=2))
    readable_dir(directory)
    return directory


def predict(port: int, batch: int, model: str = "resnet50DAG", dag: bool = True) -> subprocess.Popen[str]:
    """The guide's client command line (ovserve-predict is OVMS's grpc_predict_resnet.py), started."""
    args = [
        str(VENV_BIN / "ovserve-predict"),
        *("--grpc_port", str(port), "--images_numpy_path", str(DEMO_CACHE / "imgs.npy")),
        *("--labels_numpy_path", str(DEMO_CACHE / "lbs.npy"), "--input_name", "0", "--output_name", "1463"),
        *("--model_name", model, "--transpose_input", "False", "--batchsize", str(batch)),
    ]
    if dag:
        args.append("--dag-batch-size-auto")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_all_correct(client: subprocess.Popen[str], what: str) -> None:
    """As run_demo.sh: exit 0, 100.00% accuracy and no incorrect match."""
    out, _ = client.communicate(timeout=120)
    assert client.returncode == 0, f"{what}: exit {client.returncode}\n{out}"
    assert "Classification accuracy: 100.00" in out and "Incorrect match" not in out, f"{what}:\n{out}"


def test_demo_pipeline_batch_1_and_8_at_once(start: Start, demo_model: Path, tmp_path: Path) -> None:
    """The seed guide in a container: model folder and config.json on read-only volumes, batch 1 and batch 8
    clients at the same time through the demultiplexing pipeline, every image right; SIGTERM stops it with 0."""
    config = write_config(tmp_path / "config", demo_config("/models/efficientnet"))
    port, rest_port = free_port(), free_port()
    container = start(
        ["--config_path", "/config/config.json", "--port", str(port), "--rest_port", str(rest_port)],
        volumes=[f"{demo_model}:/models:ro", f"{config}:/config:ro"],
    )
    container.wait_ready(rest_port)
    assert http_get(rest_port, "/v2/models/resnet50DAG/ready") == 200

    metadata = subprocess.run(
        [str(VENV_BIN / "ovserve-metadata"), "--grpc_port", str(port), "--model_name", "resnet50DAG"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert metadata.returncode == 0, metadata.stdout + metadata.stderr
    assert "Input name: 0; shape: [-1, 1, 3, 224, 224]" in metadata.stdout, metadata.stdout

    b1, b8 = predict(port, 1), predict(port, 8)
    assert_all_correct(b1, "batch 1")
    assert_all_correct(b8, "batch 8")

    assert container.stop("TERM") == 0, container.logs()
    assert "server stopped" in container.logs()


def test_single_model_ovms_flags(start: Start, demo_model: Path) -> None:
    """`IMAGE --model_name m --model_path /models/m --port P --rest_port R`, OVMS's own command line."""
    port, rest_port = free_port(), free_port()
    container = start(
        ["--model_name", "m", "--model_path", "/models/m", "--port", str(port), "--rest_port", str(rest_port)],
        volumes=[f"{demo_model / 'efficientnet'}:/models/m:ro"],
    )
    container.wait_ready(rest_port)
    assert http_get(rest_port, "/v2/models/m/ready") == 200
    assert http_get(rest_port, "/v1/models/m") == 200
    assert_all_correct(predict(port, 1, model="m", dag=False), "model m, batch 1")


def test_runs_as_non_root_user() -> None:
    """The image's user is uid 5000 (as openvino/model_server's) in group 0, with a writable home."""
    result = run_foreground(
        ["-c", 'id -u; id -g; touch "$HOME/probe" && echo home-writable; echo "$PWD"'], entrypoint="sh"
    )
    assert result.returncode == 0, result.stderr
    uid, gid, writable, workdir = result.stdout.split()
    assert (int(uid), int(gid), writable) == (IMAGE_UID, 0, "home-writable")
    assert workdir == "/home/ovserve"
    config = podman("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}}", IMAGE).stdout
    assert config.strip() == f'{IMAGE_UID}:0 ["ovserve"]'


def test_read_only_rootfs_and_volume_arbitrary_uid(start: Start, demo_model: Path) -> None:
    """Root-owned model files on a read-only volume serve, with a read-only root filesystem (Kubernetes'
    readOnlyRootFilesystem) and an arbitrary uid in group 0 (OpenShift's restricted policy); nothing tries to
    write: OpenVINO's telemetry is opted out in the image, so it neither writes a client id nor warns."""
    port, rest_port = free_port(), free_port()
    container = start(
        ["--model_name", "m", "--model_path", "/models/m", "--port", str(port), "--rest_port", str(rest_port)],
        volumes=[f"{demo_model / 'efficientnet'}:/models/m:ro"],
        user="1000770000:0",
        extra=["--read-only"],
    )
    container.wait_ready(rest_port)
    assert http_get(rest_port, "/v2/models/m/ready") == 200
    probe = podman("exec", container.name, "sh", "-c", "id -u; touch /models/m/probe", check=False)
    assert probe.stdout.strip() == "1000770000"
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe.stderr
    home = podman("exec", container.name, "sh", "-c", 'ls -A "$HOME/intel"').stdout.split()
    assert home == ["openvino_telemetry"]
    log = container.logs()
    assert "telemetry" not in log and "client ID" not in log, log


def test_missing_model_path_single_model_exits_naming_it() -> None:
    """No volume at --model_path: the log names the path and the container exits non-zero."""
    result = run_foreground(["--model_name", "m", "--model_path", "/models/m", "--port", str(free_port())])
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    assert "/models/m" in log and "invalid" in log, log


def test_missing_config_file_exits_naming_it() -> None:
    result = run_foreground(["--config_path", "/config/config.json", "--port", str(free_port())])
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    assert "/config/config.json" in log, log


def test_missing_base_path_config_mode_stays_up(start: Start, tmp_path: Path) -> None:
    """Config mode with a base_path that is not there: the server stays up (as OVMS: the other models would serve),
    the model is not ready, and the log names the path."""
    document = {"model_config_list": [{"config": {"name": "m", "base_path": "/models/m"}}]}
    config = write_config(tmp_path / "config", document)
    rest_port = free_port()
    container = start(
        ["--config_path", "/config/config.json", "--port", str(free_port()), "--rest_port", str(rest_port)],
        volumes=[f"{config}:/config:ro"],
    )
    container.wait_ready(rest_port)  # server readiness: up, with m reported as failed
    assert http_get(rest_port, "/v2/health/live") == 200
    assert http_get(rest_port, "/v2/models/m/ready") != 200
    deadline = time.monotonic() + 10
    while "/models/m" not in container.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "/models/m" in container.logs()
    assert container.running()


@pytest.mark.parametrize("busy", ["--port", "--rest_port"])
def test_port_in_use_exits_with_one_clear_line(busy: str, demo_model: Path) -> None:
    """A port already taken (host network): a line naming the address, and a non-zero exit."""
    ports = {"--port": free_port(), "--rest_port": free_port()}
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", ports[busy]))
        holder.listen()
        result = run_foreground(
            ["--model_name", "m", "--model_path", "/models/m", *(str(x) for kv in ports.items() for x in kv)],
            volumes=[f"{demo_model / 'efficientnet'}:/models/m:ro"],
        )
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    address = f"0.0.0.0:{ports[busy]}"
    lines = [line for line in log.splitlines() if address in line and "bind" in line.lower() and "ovserve" in line]
    assert lines, log
    print(f"{busy} busy -> exit {result.returncode}: {lines[0]}")


def test_measure_image_size_and_time_to_ready(
    start: Start, demo_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints (no timed assertions): the image size, and the time from `podman run` to /v2/health/ready answering
    200 on the demo config, beside the same for a bare `ovserve` process of .venv."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    config = write_config(tmp_path / "config", demo_config("/models/efficientnet"))
    bare_config = write_config(tmp_path / "bare", demo_config(str(demo_model / "efficientnet")))
    runs = 5
    container_s, bare_s = [], []
    for _ in range(runs):
        rest_port = free_port()
        container = start(
            ["--config_path", "/config/config.json", "--port", str(free_port()), "--rest_port", str(rest_port)],
            volumes=[f"{demo_model}:/models:ro", f"{config}:/config:ro"],
        )
        container_s.append(container.wait_ready(rest_port))
        container.remove()

        rest_port = free_port()
        started = time.monotonic()
        command = [str(VENV_BIN / "ovserve"), "--config_path", str(bare_config / "config.json")]
        process = subprocess.Popen(
            [*command, "--port", str(free_port()), "--rest_port", str(rest_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while http_get(rest_port, "/v2/health/ready") != 200:
                assert process.poll() is None, "bare ovserve exited before ready"
                assert time.monotonic() - started < 90, "bare ovserve not ready within 90 s"
                time.sleep(0.05)
            bare_s.append(time.monotonic() - started)
        finally:
            process.kill()
            process.wait(30)

    def show(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (runs: {', '.join(f'{v:.2f}' for v in values)})"

    with capsys.disabled():
        print(
            f"\n== image {IMAGE}: {size / 1e6:.0f} MB"
            f"\n== run to /v2/health/ready = 200, demo config (efficientnet + resnet50DAG):"
            f"\n   podman run (runc, host network): {show(container_s)}"
            f"\n   bare .venv/bin/ovserve:          {show(bare_s)}"
        )


def kube_play_manifests(directory: Path, models: Path, port: int, rest_port: int) -> Path:
    """deploy/base rendered by `kubectl kustomize`, its ConfigMap and Deployment kept, changed only where this host
    differs from a cluster: the image is the local build; config.json serves the demo's model from a hostPath
    volume instead of S3; the pod uses the host's network (podman here has no CNI plugins), which takes no
    container ports, so the ports are free ones and the probes name them by number."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy" / "base")], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o and o["kind"] in ("ConfigMap", "Deployment")]
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    config_map["data"]["config.json"] = json.dumps(demo_config("/models/efficientnet"))
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    container = pod["containers"][0]
    container["image"] = IMAGE
    numbers = {"grpc": port, "http": rest_port}
    named = {p["name"]: p["containerPort"] for p in container.pop("ports")}
    flags = {f"--port={named['grpc']}": f"--port={port}", f"--rest_port={named['http']}": f"--rest_port={rest_port}"}
    assert set(flags) <= set(container["args"]), container["args"]
    container["args"] = [flags.get(a, a) for a in container["args"]]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        container[probe]["httpGet"]["port"] = numbers[container[probe]["httpGet"]["port"]]
    container["volumeMounts"].append({"name": "models", "mountPath": "/models", "readOnly": True})
    pod["volumes"].append({"name": "models", "hostPath": {"path": str(models), "type": "Directory"}})
    path = directory / "play.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return path


def test_kube_play_deploy_manifests(demo_model: Path, tmp_path: Path) -> None:
    """The rendered Deployment's pod with its ConfigMap, run by `podman kube play`: as non-root with a read-only
    root filesystem and the manifests' drain flags, it serves the guide's scenario (batch 1 and 8 at once), and
    stopping the pod (SIGTERM, then the drain) ends the server with exit code 0.

    What podman 4.3 cannot do here, and so is not tested: the probes (podman runs them as systemd timers, and
    there is no systemd), the Service, HPA and PodDisruptionBudget (podman has no such objects), rlimits from the
    manifest (containers.conf sets them, as runc needs them no higher than the host's)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed")
    port, rest_port = free_port(), free_port()
    play = kube_play_manifests(tmp_path, demo_model.resolve(), port, rest_port)
    conf = tmp_path / "containers.conf"
    ulimits = ", ".join(f'"{v}"' for v in ulimit_flags()[1::2])
    conf.write_text(f'[containers]\ndefault_ulimits = [{ulimits}]\n[engine]\nruntime = "{RUNTIME}"\n')
    environ = {**os.environ, "CONTAINERS_CONF": str(conf)}
    try:
        played = subprocess.run(
            ["podman", "kube", "play", str(play)], capture_output=True, text=True, timeout=120, env=environ
        )
        assert played.returncode == 0, played.stderr
        container = "ovserve-pod-0-ovserve"
        deadline = time.monotonic() + 90
        while http_get(rest_port, "/v2/health/ready") != 200:
            assert time.monotonic() < deadline, podman("logs", container, check=False)
            time.sleep(0.1)
        identity = podman("exec", container, "sh", "-c", "id -u; touch /probe || echo read-only", check=False)
        assert identity.stdout.split()[0] == "5000" and "read-only" in identity.stdout, identity
        b1, b8 = predict(port, 1), predict(port, 8)
        assert_all_correct(b1, "batch 1")
        assert_all_correct(b8, "batch 8")
        podman("pod", "stop", "-t", "60", "ovserve-pod-0", timeout=90)
        result = podman("logs", container, check=False)
        logs = result.stdout + result.stderr
        assert podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip() == "0", logs
        assert "SIGTERM: not ready now; serving on for 10 s" in logs and "server stopped" in logs, logs
    finally:
        subprocess.run(["podman", "kube", "down", str(play)], capture_output=True, timeout=120, env=environ)
