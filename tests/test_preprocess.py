"""CLI preprocessing of single-model mode (--mean, --scale, --color_format, --precision;
docs/configuration.md#cli-flags) on real servers: what the model receives equals the same steps done in numpy, over TF
Serving gRPC, KServe REST and gRPC, also for JPEG inputs; metadata shows the input as the client sends it; bad values
stop the start with one clear line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import models
import numpy as np
import openvino as ov
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import RunningServer, free_port

from ovserve import cli, loading, runtime
from ovserve.config import ModelConfig
from ovserve.errors import ConfigError, LoadError
from ovserve.preprocess import Preprocess

H, W = 4, 6
MEAN, SCALE = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
MEAN_FLAG, SCALE_FLAG = "[123.675,116.28,103.53]", "(58.395, 57.12, 57.375)"


def _config(path: Path, *flags: str) -> Any:
    """The ServerConfig the `ovserve` command builds from these flags (single-model mode, exact f32 inference)."""
    args = ["--model_name", "m", "--model_path", str(path), "--port", "1", "--plugin_config", json.dumps(models.F32)]
    config, _ = cli.build(cli.parser().parse_args([*args, *flags]))
    return config


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NCHW float32 model that outputs what it receives ('pixels'), and a one-channel one for GRAY."""
    root = tmp_path_factory.mktemp("preprocess")
    models.save(models.pixels((1, 3, H, W), np.float32, "image"), root, "seen")
    models.save(models.pixels((1, 1, H, W), np.float32, "image"), root, "gray")
    return root


@pytest.fixture
def start(repository: Path) -> Iterator[Any]:
    servers: list[RunningServer] = []

    def run(*flags: str, model: str = "seen") -> RunningServer:
        servers.append(RunningServer(_config(repository / model, *flags)))
        return servers[-1]

    yield run
    for server in servers:
        server.stop()


def _bgr(dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    """An NHWC picture in the client's hands (BGR order), values 0-255."""
    return np.random.default_rng(seed).integers(0, 256, (1, H, W, 3)).astype(dtype)


def _seen(server: RunningServer, x: np.ndarray) -> list[np.ndarray]:
    """What the model received for `x`, asked over TF Serving gRPC, KServe REST and KServe gRPC."""
    datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8"}[x.dtype]
    results = [server.predict("m", {"image": x})["pixels"]]
    for module, url in ((httpclient, f"127.0.0.1:{server.rest_port}"), (grpcclient, f"127.0.0.1:{server.port}")):
        client = module.InferenceServerClient(url)
        tensor = module.InferInput("image", list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        results.append(client.infer("m", [tensor]).as_numpy("pixels"))
        client.close()
    return results


def _expect(x: np.ndarray, mean: Any = 0.0, scale: Any = 1.0, reverse: bool = False) -> np.ndarray:
    """The preprocessing in numpy: channels reversed (BGR→RGB), mean subtracted, divided by scale, NHWC→NCHW."""
    y = x.astype(np.float32)
    y = y[..., ::-1] if reverse else y
    y = (y - np.float32(mean)) / np.float32(scale)
    return y.transpose(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--mean", "10"], {"mean": 10.0}),
        (["--scale", "[2,4,8]"], {"scale": [2.0, 4.0, 8.0]}),
        (["--mean", MEAN_FLAG, "--scale", SCALE_FLAG], {"mean": MEAN, "scale": SCALE}),
        (["--color_format", "RGB:BGR"], {"reverse": True}),
        (
            ["--color_format", "rgb:bgr", "--mean", MEAN_FLAG, "--scale", "2"],
            {"reverse": True, "mean": MEAN, "scale": 2},
        ),
    ],
    ids=["mean", "scale", "mean-scale", "color", "color-mean-scale"],
)
def test_served_results_equal_numpy(start: Any, flags: list[str], expect: dict[str, Any]) -> None:
    server = start("--layout", "NHWC:NCHW", *flags)
    x = _bgr()
    for seen in _seen(server, x):
        np.testing.assert_allclose(seen, _expect(x, **expect), rtol=1e-6, atol=1e-5)


def test_precision_with_every_step_and_the_metadata_of_what_clients_send(start: Any) -> None:
    server = start(
        "--layout", "NHWC:NCHW", "--precision", "FP32:UINT8", "--color_format", "RGB:BGR",
        "--mean", MEAN_FLAG, "--scale", SCALE_FLAG,
    )  # fmt: skip
    x = _bgr(np.uint8)
    for seen in _seen(server, x):
        np.testing.assert_allclose(seen, _expect(x, MEAN, SCALE, reverse=True), rtol=1e-6, atol=1e-5)
    inputs, outputs = server.metadata("m")
    assert inputs == {"image": ([1, H, W, 3], 4)} and outputs == {"pixels": ([1, 3, H, W], 1)}  # DT_UINT8, DT_FLOAT
    status, _, body = server.http("GET", "/v2/models/m")
    assert status == 200
    assert json.loads(body)["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [1, H, W, 3]}]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    metadata = client.get_model_metadata("m")
    assert (metadata.inputs[0].datatype, list(metadata.inputs[0].shape)) == ("UINT8", [1, H, W, 3])
    client.close()
    status, _, body = server.http("GET", "/v1/models/m/metadata")
    image = json.loads(body)["metadata"]["signature_def"]["signatureDef"]["serving_default"]["inputs"]["image"]
    assert status == 200 and image["dtype"] == "DT_UINT8"
    assert [int(d["size"]) for d in image["tensorShape"]["dim"]] == [1, H, W, 3]


def test_a_layout_without_transposition_keeps_the_clients_layout(start: Any) -> None:
    server = start("--layout", "NCHW", "--mean", "[1,2,3]")
    x = _bgr().transpose(0, 3, 1, 2).copy()
    for seen in _seen(server, x):
        np.testing.assert_array_equal(seen, x - np.float32([1, 2, 3]).reshape(1, 3, 1, 1))
    assert server.metadata("m")[0] == {"image": ([1, 3, H, W], 1)}


def test_gray_from_bgr_takes_three_channels(start: Any) -> None:
    server = start("--layout", "NHWC:NCHW", "--color_format", "GRAY:BGR", model="gray")
    assert server.metadata("m")[0] == {"image": ([1, H, W, 3], 1)}
    x = _bgr()
    luma = x[..., 2] * 0.299 + x[..., 1] * 0.587 + x[..., 0] * 0.114  # OpenVINO's (and OpenCV's) BGR → gray
    for seen in _seen(server, x):
        np.testing.assert_allclose(seen, luma[:, None], rtol=1e-5, atol=1e-3)


def test_two_plane_nv12_makes_one_input_per_plane(start: Any) -> None:
    server = start("--layout", "NHWC:NCHW", "--color_format", "BGR:NV12_2", "--precision", "FP32:UINT8")
    assert server.metadata("m")[0] == {"image/y": ([1, H, W, 1], 4), "image/uv": ([1, H // 2, W // 2, 2], 4)}
    bgr = _bgr(np.uint8)[0]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    y, u, v = i420[: H * W], i420[H * W : H * W * 5 // 4], i420[H * W * 5 // 4 :]
    planes = {"image/y": y.reshape(1, H, W, 1), "image/uv": np.stack([u, v], -1).reshape(1, H // 2, W // 2, 2)}
    seen = server.predict("m", planes)["pixels"]
    nv12 = np.concatenate([y, np.stack([u, v], -1).reshape(-1)]).reshape(H * 3 // 2, W)
    expected = cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12).astype(np.float32)[None].transpose(0, 3, 1, 2)
    assert np.abs(seen - expected).max() <= 2  # two implementations of the same BT.601 conversion, rounding apart


def test_jpeg_inputs_go_through_the_same_steps(start: Any) -> None:
    server = start(
        "--layout", "NHWC:NCHW", "--precision", "FP32:UINT8", "--color_format", "RGB:BGR",
        "--mean", MEAN_FLAG, "--scale", SCALE_FLAG,
    )  # fmt: skip
    ok, jpeg = cv2.imencode(".jpg", _bgr(np.uint8)[0])
    assert ok
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)[None]  # what the server decodes: BGR, as OVMS
    expected = _expect(decoded, MEAN, SCALE, reverse=True)
    grpc_seen = server.predict("m", {"image": np.array([jpeg.tobytes()], dtype=object)})["pixels"]
    np.testing.assert_allclose(grpc_seen, expected, rtol=1e-6, atol=1e-5)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([jpeg.tobytes()], dtype=object), binary_data=True)
    np.testing.assert_allclose(client.infer("m", [tensor]).as_numpy("pixels"), expected, rtol=1e-6, atol=1e-5)
    client.close()


# --- bad values ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layout", "NHWC", "--mean", "abc"], "--mean expects a number or one per channel as [a,b,c] or (a,b,c)"),
        (["--layout", "NHWC", "--mean", "[1,2"], "--mean expects a number or one per channel"),
        (["--layout", "NHWC", "--scale", "[1,,2]"], "--scale expects a number or one per channel"),
        (["--layout", "NHWC", "--scale", "[1,0,2]"], "--scale divides by its values: they must not be 0"),
        (
            ["--layout", "NHWC", "--mean", "nan"],
            "--mean expects a number or one per channel as [a,b,c] or (a,b,c), got 'nan': values must be finite",
        ),
        (
            ["--layout", "NHWC", "--color_format", "RGB"],
            "--color_format expects <target>:<source>, each one of RGB, "
            "BGR, GRAY, NV12, NV12_2, I420, I420_3, got 'RGB'",
        ),
        (["--layout", "NHWC", "--color_format", "RGB:YUV"], "--color_format expects <target>:<source>"),
        (["--layout", "NHWC", "--color_format", "NV12:BGR"], "--color_format converts to RGB, BGR, GRAY only"),
        (["--layout", "NHWC", "--precision", "FP32"], "--precision expects <target>:<source>"),
        (["--layout", "NHWC", "--precision", "FP32:UINT3"], "--precision expects <target>:<source>"),
        (["--layout", "NHWC", "--precision", "FP32:BF16"], "--precision source BF16 cannot be sent by clients"),
        (["--mean", "1"], "--mean requires --layout"),
        (["--precision", "FP32:UINT8", "--scale", "2"], "--scale requires --layout"),
    ],
)
def test_bad_values_name_the_flag(tmp_path: Path, flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        _config(tmp_path, *flags)


def test_preprocessing_is_cli_only(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_config_list": [{"config": {"name": "m", "mean": 1}}]}))
    with pytest.raises(ConfigError, match="Model parameters in CLI are exclusive with the config file: --mean"):
        cli.build(cli.parser().parse_args(["--config_path", str(tmp_path / "config.json"), "--mean", "1"]))
    with pytest.raises(ConfigError, match='unknown key "mean"'):  # the config.json schema has no such key
        cli.build(cli.parser().parse_args(["--config_path", str(tmp_path / "config.json"), "--port", "1"]))


def _load(path: Path, layout: Any, **pre: Any) -> runtime.ModelVersion:
    config = ModelConfig("m", path, layout=layout, plugin_config=models.F32, preprocess=Preprocess(**pre))
    return loading.load(ov.Core(), config, 1, path / "1" / "model.xml")


def test_values_that_do_not_fit_the_model_fail_its_load(repository: Path, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=re.escape("--mean has 2 values, but input image has 3 channels (C of layout")):
        _load(repository / "seen", "NHWC:NCHW", mean=(1.0, 2.0))
    with pytest.raises(
        LoadError, match=re.escape("--scale has 3 values, one per channel, but the layout N... of input image")
    ):
        _load(repository / "seen", {"pixels": "NCHW"}, scale=(1.0, 2.0, 3.0))
    with pytest.raises(LoadError, match="--color_format RGB:BGR cannot be applied to input image: "):
        _load(repository / "gray", "NHWC:NCHW", color=("RGB", "BGR"))  # one channel is no BGR picture
    with pytest.raises(
        LoadError, match="--mean 1 --precision UINT8:UINT8 cannot be applied to input image: Mean preprocessing can be"
    ):
        _load(repository / "seen", "NHWC:NCHW", mean=(1.0,), precision=("UINT8", "UINT8"))  # integers have no mean
    models.save(models.weighted_sum(), tmp_path, "two")
    with pytest.raises(LoadError, match="--mean 1: preprocessing applies to a model with one input; this one has 2"):
        _load(tmp_path / "two", {"a": "NC"}, mean=(1.0,))


def test_the_command_stops_at_start_with_one_line(repository: Path) -> None:
    base = [sys.executable, "-m", "ovserve", "--model_name", "m", "--port", str(free_port())]
    bad = subprocess.run([*base, "--model_path", "x", "--color_format", "RGB:XYZ", "--layout", "NHWC"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "ovserve: error: --color_format expects <target>:<source>, each one of RGB, BGR, GRAY, NV12, NV12_2, I420, "
        "I420_3, got 'RGB:XYZ'"
    ]
    wrong = subprocess.run([*base, "--model_path", str(repository / "seen"), "--layout", "NHWC:NCHW", "--mean",
                            "[1,2]"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert wrong.returncode == 1, wrong.stderr
    assert "--mean has 2 values, but input image has 3 channels (C of layout NHWC)" in wrong.stderr
    assert "Couldn't start model manager" in wrong.stderr
