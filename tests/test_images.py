"""Binary image inputs (docs/apis.md#binary-inputs, docs/pipelines.md) on a real server: PNG and JPEG bytes over TF
Serving gRPC and REST, KServe gRPC and HTTP (tritonclient) and ovmsclient decode to the tensor Pillow gives (BGR), are
resized as cv2.resize does where OVMS resizes, feed a demultiplexing pipeline one image per branch, and every mistake
gets its status and text."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import grpc
import models
import numpy as np
import ovmsclient
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import RunningServer, rpc_error
from PIL import Image
from tritonclient.grpc import service_pb2 as triton_pb2

from ovserve import images as ovimages
from ovserve._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from ovserve._proto.tensorflow_serving.apis import predict_pb2
from ovserve.tensors import TensorSpec
from ovserve.types import ImageLimits

INVALID = grpc.StatusCode.INVALID_ARGUMENT
F32 = models.F32


# --- images and references -----------------------------------------------------------------------------------


def picture(height: int, width: int, channels: int = 3, seed: int = 0, dtype: Any = np.uint8) -> np.ndarray:
    """A test picture: smooth gradients plus noise, so that codecs and interpolation have something to do."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:height, 0:width]
    planes = [(y * (c + 1) * 37 + x * (7 - c) * 23) % (top + 1) for c in range(channels)]
    noise = rng.integers(0, max(top // 8, 2), (height, width, channels))
    return ((np.stack(planes, -1) + noise) % (top + 1)).astype(dtype).squeeze()


def encode(array: np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    """Pillow's encoding of an RGB(A), gray or 16-bit gray array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def bgr(data: bytes) -> np.ndarray:
    """Pillow's decode of an encoded image in OpenCV's channel order (BGR, BGRA), always (H, W, C)."""
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    if decoded.ndim == 2:
        return decoded[:, :, np.newaxis].astype(np.uint16 if decoded.dtype != np.uint8 else np.uint8)
    order = [2, 1, 0, 3] if decoded.shape[2] == 4 else [2, 1, 0]
    return decoded[..., order]


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize, bilinear (OVMS's resize), keeping the channel axis."""
    return cv2.resize(image, (width, height)).reshape(height, width, image.shape[2])


def string_tensor(items: Sequence[bytes], shape: Sequence[int] | None = None) -> Any:
    """A DT_STRING TensorProto holding encoded images in string_val."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    for size in [len(items)] if shape is None else shape:
        proto.tensor_shape.dim.add(size=size)
    proto.string_val.extend(items)
    return proto


def predict_strings(
    server: RunningServer,
    name: str,
    items: Sequence[bytes],
    shape: Sequence[int] | None = None,
    input_name: str = "image",
) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[input_name].CopyFrom(string_tensor(items, shape))
    response = server.predict_raw(request)
    return {k: np.frombuffer(v.tensor_content, np.float32).reshape([d.size for d in v.tensor_shape.dim])
            for k, v in response.outputs.items()}  # fmt: skip


# --- the server ----------------------------------------------------------------------------------------------


def _pipeline(name: str, model: str, count: int) -> dict[str, Any]:
    return {
        "name": name,
        "inputs": ["image"],
        "demultiply_count": count,
        "nodes": [
            {
                "name": "means",
                "model_name": model,
                "type": "DL model",
                "inputs": [{"image": {"node_name": "request", "data_item": "image"}}],
                "outputs": [{"data_item": "means", "alias": "means"}],
            }
        ],
        "outputs": [{"means": {"node_name": "means", "data_item": "means"}}],
    }


MODELS: dict[str, tuple[Any, dict[str, Any]]] = {
    "u8": (models.pixels((-1, -1, -1, 3)), {}),  # any size, any batch: decoded at the images' own size
    "f32": (models.pixels((-1, -1, -1, 3), np.float32), {}),
    "gray16": (models.pixels((1, -1, -1, 1), np.uint16), {}),
    "bgra": (models.pixels((1, -1, -1, 4)), {}),
    "resize_u8": (models.pixels((1, 8, 10, 3)), {"layout": "NHWC"}),
    "resize_f32": (models.pixels((1, 8, 10, 3), np.float32), {"layout": "NHWC"}),
    "resize_i8": (models.pixels((1, 8, 10, 3), np.int8), {"layout": "NHWC"}),
    "range": (models.pixels((1, -1, -1, 3)), {"layout": "NHWC", "shape": "(1,4:6,4:6,3)"}),
    "fixed": (models.pixels((1, 8, 8, 3)), {}),  # default layout N...: no resizing
    "nchw": (models.pixels((1, 3, 8, 8)), {"layout": "NCHW"}),
    "i64": (models.pixels((1, -1, -1, 3), np.int64), {}),
    "flat": (models.pixels((1, 10), np.float32), {}),
    "text": (models.pixels((-1, -1), in_name="text"), {}),
    "text4": (models.pixels((-1, 4), in_name="text"), {}),
    "gray": (models.gray_nchw((1, 3, 12, 16)), {"layout": "NHWC:NCHW"}),
    "means": (models.channel_means((1, 6, 8, 3)), {}),
    "means_nhwc": (models.channel_means((1, 6, 8, 3)), {"layout": "NHWC"}),
    "auto": (models.pixels((1, 8, 8, 3)), {"layout": "NHWC", "batch_size": "auto"}),
    "echo": (models.text_echo("text_string"), {}),
    "echo_plain": (models.text_echo("bytes"), {}),
}
ECHO_PIPELINE = {
    "name": "echo_pipe",
    "inputs": ["text"],
    "nodes": [
        {
            "name": "echo",
            "model_name": "echo_plain",
            "type": "DL model",
            "inputs": [{"text": {"node_name": "request", "data_item": "text"}}],
            "outputs": [{"data_item": "bytes", "alias": "bytes"}],
        }
    ],
    "outputs": [
        {"reply_string": {"node_name": "echo", "data_item": "bytes"}},
        {"reply": {"node_name": "echo", "data_item": "bytes"}},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository: Path = tmp_path_factory.mktemp("images")
    configs = []
    for name, (model, settings) in MODELS.items():
        models.save(model, repository, name)
        configs.append({"config": {"name": name, "base_path": name, "plugin_config": F32, **settings}})
    document = {
        "model_config_list": configs,
        "pipeline_config_list": [
            _pipeline("means_demux", "means", -1),
            _pipeline("means_fixed", "means_nhwc", 3),
            ECHO_PIPELINE,
        ],
    }
    running = RunningServer(models.write_config(repository, document))
    yield running
    running.stop()


# --- decoding over each front door ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["u8", "f32"])
def test_pngs_over_tfs_grpc_decode_as_pillow_in_bgr(server: RunningServer, model: str) -> None:
    pngs = [encode(picture(5, 7, seed=s)) for s in range(2)]
    (result,) = predict_strings(server, model, pngs).values()
    expected = np.stack([bgr(p) for p in pngs]).astype(np.float32)
    assert result.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(result, expected)
    assert not np.array_equal(result, expected[..., ::-1])  # the channel order matters: BGR, as OpenCV decodes


def test_images_to_a_batch_auto_model_reload_it_to_their_count(server: RunningServer) -> None:
    pngs = [encode(picture(8, 8, seed=s)) for s in range(3)]
    (result,) = predict_strings(server, "auto", pngs).values()
    np.testing.assert_array_equal(result, np.stack([bgr(p) for p in pngs]).astype(np.float32))
    assert server.server.manager.models["auto"].versions[1].servable.inputs["image"].shape == (3, 8, 8, 3)


def test_jpeg_decodes_as_opencv_and_pillow(server: RunningServer) -> None:
    jpeg = encode(picture(16, 24), "JPEG", quality=85)
    (result,) = predict_strings(server, "u8", [jpeg]).values()
    opencv = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)  # OVMS's decoder
    np.testing.assert_array_equal(result[0], opencv.astype(np.float32))
    assert np.abs(result[0] - bgr(jpeg)).max() <= 1  # libjpeg builds may round a few pixels differently


def test_16_bit_and_alpha_channels_arrive_as_stored(server: RunningServer) -> None:
    deep = picture(6, 5, channels=1, dtype=np.uint16)
    assert deep.max() > 255
    (result,) = predict_strings(server, "gray16", [encode(deep)]).values()
    np.testing.assert_array_equal(result[0, :, :, 0], deep.astype(np.float32))  # no scaling to 8 bits
    rgba = picture(4, 6, channels=4)
    (result,) = predict_strings(server, "bgra", [encode(rgba)]).values()
    np.testing.assert_array_equal(result[0], rgba[..., [2, 1, 0, 3]].astype(np.float32))


def test_images_resize_to_a_static_nhwc_shape_as_cv2_does(server: RunningServer) -> None:
    fractions = []
    for height, width in [(13, 17), (5, 6), (8, 10)]:  # down, up and already right
        png = encode(picture(height, width, seed=height))
        image = bgr(png)
        (u8,) = predict_strings(server, "resize_u8", [png]).values()
        np.testing.assert_array_equal(u8[0], resized(image, 8, 10).astype(np.float32))
        # A float input is converted first and resized in float, as OVMS does: the result has fractions.
        (f32,) = predict_strings(server, "resize_f32", [png]).values()
        np.testing.assert_allclose(f32[0], resized(image.astype(np.float32), 8, 10), rtol=1e-6)
        fractions.append(not np.array_equal(f32, np.rint(f32)))
    assert fractions == [True, True, False]
    # I8: pixel values saturate at 127 (OpenCV's convertTo) before resizing; OVMS itself cannot resize I8.
    png = encode(picture(13, 17))
    (i8,) = predict_strings(server, "resize_i8", [png]).values()
    reference = np.rint(resized(np.minimum(bgr(png), 127).astype(np.float32), 8, 10))
    np.testing.assert_array_equal(i8[0], reference)


def test_range_dimensions_clamp_the_image_size(server: RunningServer) -> None:
    png = encode(picture(3, 5))  # height below the range 4..6, width inside it
    (result,) = predict_strings(server, "range", [png]).values()
    np.testing.assert_array_equal(result[0], resized(bgr(png), 4, 5).astype(np.float32))
    png = encode(picture(9, 5))
    (result,) = predict_strings(server, "range", [png]).values()
    assert result.shape == (1, 6, 5, 3)


def _rest_predict(server: RunningServer, model: str, body: dict[str, Any]) -> Any:
    status, _, payload = server.http("POST", f"/v1/models/{model}:predict", json.dumps(body))
    assert status == 200, payload
    return json.loads(payload)


def test_tfs_rest_b64_in_row_and_column_formats(server: RunningServer) -> None:
    pngs = [encode(picture(4, 6, seed=s)) for s in range(3)]
    b64 = [{"b64": base64.b64encode(p).decode()} for p in pngs]
    expected = np.stack([bgr(p) for p in pngs]).astype(np.float32)
    bodies = [
        ({"instances": b64}, "predictions"),  # row, no-named
        ({"instances": [{"image": v} for v in b64]}, "predictions"),  # row, named
        ({"inputs": {"image": b64}}, "outputs"),  # column, named
        ({"inputs": b64}, "outputs"),  # column, no-named
    ]
    for body, key in bodies:
        np.testing.assert_array_equal(np.array(_rest_predict(server, "u8", body)[key], np.float32), expected)
    single = _rest_predict(server, "u8", {"inputs": {"image": b64[0]}})["outputs"]
    np.testing.assert_array_equal(np.array(single, np.float32), expected[:1])


def test_kserve_grpc_bytes_raw_and_typed(server: RunningServer) -> None:
    pngs = [encode(picture(4, 6, seed=s)) for s in range(2)]
    expected = np.stack([bgr(p) for p in pngs]).astype(np.float32)
    data = grpcclient.InferInput("image", [2], "BYTES")
    data.set_data_from_numpy(np.array(pngs, dtype=object))  # raw_input_contents, length prefixed
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    np.testing.assert_array_equal(client.infer("u8", [data]).as_numpy("pixels"), expected)
    request = triton_pb2.ModelInferRequest(model_name="u8")
    request.inputs.add(name="image", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(pngs)
    response = _kserve_infer(server, request)
    pixels = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(response.outputs[0].shape)
    np.testing.assert_array_equal(pixels, expected)


def _kserve_infer(server: RunningServer, request: triton_pb2.ModelInferRequest) -> Any:
    call = server.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=triton_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=triton_pb2.ModelInferResponse.FromString,
    )
    return call(request, timeout=60)


def test_kserve_http_binary_data(server: RunningServer) -> None:
    pngs = [encode(picture(13, 17, seed=s)) for s in range(1)]
    data = httpclient.InferInput("image", [1], "BYTES")
    data.set_data_from_numpy(np.array(pngs, dtype=object), binary_data=True)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    result = client.infer("resize_u8", [data]).as_numpy("pixels")
    np.testing.assert_array_equal(result[0], resized(bgr(pngs[0]), 8, 10).astype(np.float32))


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_ovmsclient_sends_image_bytes(server: RunningServer, transport: str) -> None:
    png = encode(picture(5, 5))
    port = server.port if transport == "grpc" else server.rest_port  # REST sends {"b64": ...}
    client = getattr(ovmsclient, f"make_{transport}_client")(f"127.0.0.1:{port}")
    result = client.predict({"image": png}, "u8")
    np.testing.assert_array_equal(np.asarray(result, np.float32)[0], bgr(png).astype(np.float32))


# --- pipelines (docs/pipelines.md) -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 8])
def test_demultiplexing_pipeline_runs_one_branch_per_image(server: RunningServer, n: int) -> None:
    pngs = [encode(picture(6, 8, seed=10 + i)) for i in range(n)]
    expected = np.stack([bgr(p).astype(np.float32).mean((0, 1)) for p in pngs])[:, np.newaxis]  # (N, 1, 3)
    (result,) = predict_strings(server, "means_demux", pngs).values()
    assert result.shape == (n, 1, 3)
    np.testing.assert_allclose(result, expected, rtol=1e-5)
    data = grpcclient.InferInput("image", [n], "BYTES")
    data.set_data_from_numpy(np.array(pngs, dtype=object))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    np.testing.assert_allclose(client.infer("means_demux", [data]).as_numpy("means"), expected, rtol=1e-5)
    inputs, _ = server.metadata("means_demux")
    assert inputs["image"][0] == [-1, 1, 6, 8, 3]


def test_fixed_demultiplexer_resizes_each_image(server: RunningServer) -> None:
    pngs = [encode(picture(h, w, seed=h)) for h, w in [(6, 8), (12, 9), (3, 20)]]
    expected = np.stack([resized(bgr(p).astype(np.float32), 6, 8).mean((0, 1)) for p in pngs])[:, np.newaxis]
    (result,) = predict_strings(server, "means_fixed", pngs).values()
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_an_nchw_model_with_nhwc_layout_accepts_jpegs(server: RunningServer) -> None:
    """The OVMS recipe for classifiers: an NCHW model served with "layout": "NHWC:NCHW" takes JPEG files."""
    inputs, _ = server.metadata("gray")
    assert inputs["data"][0] == [1, 12, 16, 3]
    jpeg = encode(picture(30, 40), "JPEG", quality=90)
    (gray,) = predict_strings(server, "gray", [jpeg], input_name="data").values()
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    image = resized(decoded.astype(np.float32), 12, 16)
    expected = image @ np.array([0.114, 0.587, 0.299], np.float32)
    assert gray.shape == (1, 1, 12, 16)
    np.testing.assert_allclose(gray[0, 0], expected, rtol=1e-5, atol=1e-3)


# --- 2-D strings (docs/apis.md#strings-2d)
# ---------------------------------------------------------------------------------


def test_strings_become_a_zero_padded_u8_array(server: RunningServer) -> None:
    packed = [[97, 98, 0], [99, 0, 0]]
    (result,) = predict_strings(server, "text", [b"ab", b"c"], input_name="text").values()
    assert result.tolist() == packed
    data = grpcclient.InferInput("text", [2], "BYTES")
    data.set_data_from_numpy(np.array([b"ab", b"c"], dtype=object))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.infer("text", [data]).as_numpy("pixels").tolist() == packed
    body = {"inputs": {"text": ["ab", "c"]}}
    assert _rest_predict(server, "text", body)["outputs"] == packed
    error = rpc_error(lambda: predict_strings(server, "text4", [b"ab", b"c"], input_name="text"))
    assert (error.code(), error.details()) == (
        INVALID,
        "Invalid input shape - Expected batch size: -1; got: 2; Expected max null terminated string length: 4; "
        "got: 3; input name: text",
    )


def test_u8_outputs_named_string_come_back_as_strings(server: RunningServer) -> None:
    """Spec docs/apis.md#strings-2d, output side: rows cut at their first zero byte; for pipelines the pipeline output's
    name counts."""
    words = [b"ab", b"c", b"hello"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "echo"
    request.inputs["text"].CopyFrom(string_tensor(words))
    out = server.predict_raw(request).outputs["text_string"]
    assert out.dtype == types_pb2.DT_STRING and [d.size for d in out.tensor_shape.dim] == [3]
    assert list(out.string_val) == words
    request.model_spec.name = "echo_pipe"
    outputs = server.predict_raw(request).outputs
    assert list(outputs["reply_string"].string_val) == words
    assert outputs["reply"].dtype == types_pb2.DT_UINT8  # the same data under a plain name stays a U8 array
    data = grpcclient.InferInput("text", [3], "BYTES")
    data.set_data_from_numpy(np.array(words, dtype=object))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    result = client.infer("echo", [data])
    assert result.as_numpy("text_string").tolist() == words
    assert result.get_output("text_string").datatype == "BYTES"


# --- errors (docs/apis.md#image-decoding, docs/apis.md#status-codes)
# ---------------------------------------------------------------------------------

PNG = encode(picture(8, 8))
GRAY = encode(picture(8, 8, channels=1))
RGBA = encode(picture(8, 8, channels=4))
ERRORS = [
    # model, images, declared shape, gRPC code, message
    ("u8", [PNG, PNG], [1, 2], INVALID,
     "Invalid number of shape dimensions - Expected number of binary input shape dimensions: 1; Actual: 2; "
     "input name: image"),
    ("u8", [PNG, PNG], [3], INVALID,
     "Invalid input batch size - the request shape says 3 but holds 2 values; input name: image"),
    ("fixed", [PNG, PNG], None, INVALID, "Invalid input batch size - Expected: 1; Actual: 2; input name: image"),
    ("u8", [], None, INVALID, "Invalid input batch size - Expected: at least 1 image; Actual: 0; input name: image"),
    ("u8", [PNG, b""], None, INVALID, "String val is empty - image 1 has no bytes; input name: image"),
    ("nchw", [PNG], None, INVALID,
     "Received binary image input but resource not configured to accept NHWC layout - input name: image has layout "
     "NCHW; images need N...HWC"),
    ("u8", [b"not an image"], None, INVALID,
     "Image parsing failed - image 0 is no image OpenCV reads; input name: image"),
    ("u8", [PNG, GRAY], None, INVALID,
     "Invalid number of channels in binary input - Expected: 3; Actual: 1 in image 1; input name: image"),
    ("u8", [RGBA], None, INVALID,
     "Invalid number of channels in binary input - Expected: 3; Actual: 4 in image 0; input name: image"),
    ("u8", [PNG, encode(picture(8, 9))], None, INVALID,
     "Binary input images for this endpoint are required to have the same resolution - image 0 is 8x8, image 1 is "
     "8x9 (height x width); input name: image"),
    ("fixed", [encode(picture(10, 10))], None, INVALID,
     "Invalid input shape - Expected: (1,8,8,3); Actual: image 0 of 10x10 (height x width); images are resized only "
     "for layouts NHWC, N?HWC and ... without -1 dimensions; input name: image"),
    ("i64", [PNG], None, INVALID,
     "Invalid input precision - images convert to FP32, FP64, FP16, I32, I16, I8, U8 or U16, not I64; "
     "input name: image"),
    ("flat", [PNG], None, grpc.StatusCode.UNIMPLEMENTED,
     "Functionality not implemented - binary or string data is accepted by STRING inputs, U8 inputs of rank 2 and "
     "image inputs of rank 4 (5 for a pipeline input demultiplexed at the request); this input is FP32 (1,10); "
     "input name: image"),
    ("means_demux", [PNG], None, INVALID,
     "Invalid input shape - Expected: (-1,1,6,8,3); Actual: image 0 of 8x8 (height x width); images are resized "
     "only for layouts NHWC, N?HWC and ... without -1 dimensions; input name: image"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "items", "shape", "code", "message"), ERRORS)
def test_tfs_grpc_errors(
    server: RunningServer, model: str, items: list[bytes], shape: list[int] | None, code: Any, message: str
) -> None:
    error = rpc_error(lambda: predict_strings(server, model, items, shape))
    assert (error.code(), error.details()) == (code, message)


@pytest.mark.parametrize(("model", "items", "shape", "code", "message"), ERRORS)
def test_rest_errors_carry_http_statuses(
    server: RunningServer, model: str, items: list[bytes], shape: list[int] | None, code: Any, message: str
) -> None:
    """The same mistakes through KServe's REST binary extension: 400 (501 for the unsupported endpoint), and
    KServe's own wording for the rank and for empty images."""
    datatype_shape = shape or [len(items)]
    parts = b"".join(len(i).to_bytes(4, "little") + i for i in items)
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": datatype_shape,
                                   "parameters": {"binary_data_size": len(parts)}}]}).encode()  # fmt: skip
    status, _, body = server.http(
        "POST", f"/v2/models/{model}/infer", head + parts, {"Inference-Header-Content-Length": str(len(head))}
    )
    kserve = message.replace("binary input shape", "input shape").replace("String val", "Bytes contents")
    assert (status, json.loads(body)["error"]) == (501 if code == grpc.StatusCode.UNIMPLEMENTED else 400, kserve)


def test_kserve_grpc_empty_image_and_rank(server: RunningServer) -> None:
    request = triton_pb2.ModelInferRequest(model_name="u8")
    request.inputs.add(name="image", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([PNG, b""])
    error = rpc_error(lambda: _kserve_infer(server, request))
    assert (error.code(), error.details()) == (
        INVALID,
        "Bytes contents is empty - image 1 has no bytes; input name: image",
    )
    request.inputs[0].shape[:] = [1, 2]
    error = rpc_error(lambda: _kserve_infer(server, request))
    assert error.details() == (
        "Invalid number of shape dimensions - Expected number of input shape dimensions: 1; Actual: 2; "
        "input name: image"
    )


def test_tfs_rest_bad_base64_and_empty_image(server: RunningServer) -> None:
    status, _, body = server.http("POST", "/v1/models/u8:predict", json.dumps({"instances": [{"b64": ""}]}))
    assert (status, json.loads(body)["error"]) == (400, "String val is empty - image 0 has no bytes; input name: image")


@pytest.mark.parametrize(
    ("layout", "rank", "accepted"),
    [
        ("NHWC", 4, True), ("", 4, True), ("N...", 4, True), ("...", 4, True), ("N???", 4, True),
        ("N?HWC", 5, True), ("N?...", 5, True), ("NCHW", 4, False), ("NHW", 4, False), ("?C???", 5, False),
        ("N...C", 4, True), ("C...", 4, False), ("NHWC", 5, False),
    ],
)  # fmt: skip
def test_layouts_compatible_with_nhwc(layout: str, rank: int, accepted: bool) -> None:
    """N...HWC expanded to the rank must agree letter by letter, and no letter may land twice
    (docs/apis.md#image-decoding)."""
    assert ovimages.accepts_images(layout, rank) is accepted


# --- decoding off the event loop -----------------------------------------------------------------------------


def test_large_batches_decode_in_a_worker_thread(server: RunningServer) -> None:
    spec = TensorSpec("image", np.dtype(np.uint8), (-1, -1, -1, 3))
    big = [encode(picture(96, 96, seed=s)) for s in range(8)]
    assert sum(map(len, big)) > ovimages.INLINE_DECODE_BYTES
    small = ovimages.finish({"image": ovimages.binary_input(big[:1], [1], spec)})
    assert isinstance(small, ovimages.PendingImages) and small.inline  # a few bytes: decoded on the spot
    pending = ovimages.finish({"image": ovimages.binary_input(big, [8], spec)})
    assert isinstance(pending, ovimages.PendingImages) and not pending.inline
    decoded = asyncio.run(pending.finish(ImageLimits()))["image"]
    np.testing.assert_array_equal(decoded, np.stack([bgr(b) for b in big]))
    (result,) = predict_strings(server, "u8", big).values()  # and through the server
    np.testing.assert_array_equal(result, decoded.astype(np.float32))
