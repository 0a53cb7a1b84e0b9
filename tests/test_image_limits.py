"""Encoded images are held to --max_image_pixels and --max_image_bytes: read from the header (PNG, JPEG, BMP, WebP)
before decoding, so a 0.8 MB PNG of 16384x16384 pixels is refused at once instead of taking gigabytes; other
formats are checked once decoded. The header reader agrees with OpenCV and never fails on any bytes."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import models
import numpy as np
import pytest
from conftest import RunningServer, rpc_error
from hypothesis import given, settings
from hypothesis import strategies as st
from test_images import predict_strings, string_tensor

from ovserve import image_header
from ovserve._proto.tensorflow_serving.apis import predict_pb2
from ovserve.types import ImageLimits

LIMITS = ImageLimits(max_pixels=100 * 100, max_bytes=3 * 100 * 100 * 3 * 4)  # three 100x100 BGR images in FP32


def encoded(height: int, width: int, extension: str = ".png", channels: int = 3, dtype: Any = np.uint8) -> bytes:
    image = (np.arange(height * width * channels) % 251).astype(dtype).reshape(height, width, channels)
    ok, data = cv2.imencode(extension, image)
    assert ok
    return data.tobytes()


def black_png(height: int, width: int) -> bytes:
    """A valid 8-bit gray PNG of zeros, written directly (faster than an encoder for huge sizes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    pixels = zlib.compress(bytes((width + 1) * height), 1)  # each row: filter byte 0, then the pixels
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_png_written_here_decodes() -> None:
    decoded = cv2.imdecode(np.frombuffer(black_png(3, 5), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (3, 5) and not decoded.any()


# --- the header reader ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "channels", "dtype"),
    [
        (".png", 3, np.uint8),
        (".png", 1, np.uint8),
        (".png", 4, np.uint8),
        (".png", 1, np.uint16),
        (".png", 3, np.uint16),
        (".jpg", 3, np.uint8),
        (".jpg", 1, np.uint8),
        (".bmp", 3, np.uint8),
        (".bmp", 4, np.uint8),
        (".bmp", 1, np.uint8),
        (".webp", 3, np.uint8),
        (".webp", 4, np.uint8),
    ],
)
@pytest.mark.parametrize(("height", "width"), [(1, 1), (37, 501), (480, 64)])
def test_the_header_tells_the_size_opencv_decodes(
    extension: str, channels: int, dtype: Any, height: int, width: int
) -> None:
    data = encoded(height, width, extension, channels, dtype)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    size = image_header.read(data)
    assert size is not None
    assert (size.height, size.width) == decoded.shape[:2]
    assert size.channels >= (decoded.shape[2] if decoded.ndim == 3 else 1)  # exact, or an upper bound
    assert size.sample_bytes == decoded.dtype.itemsize


def test_formats_without_a_readable_header_are_left_to_opencv() -> None:
    assert image_header.read(encoded(8, 8, ".tiff")) is None
    assert image_header.read(b"") is None
    assert image_header.read(b"\x89PNG\r\n\x1a\n") is None  # cut inside the header
    assert image_header.read(b"\xff\xd8\xff\xda\x00\x02") is None  # scan data before any frame header


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]), st.binary())
def test_the_header_reader_never_fails_on_any_bytes(prefix: bytes, rest: bytes) -> None:
    size = image_header.read(prefix + rest)
    assert size is None or (size.height >= 0 and size.width >= 0 and size.channels >= 0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(0, 2000))
def test_truncated_images_never_fail_the_reader(cut: int) -> None:
    for data in (encoded(20, 30), encoded(20, 30, ".jpg"), encoded(20, 30, ".bmp"), encoded(20, 30, ".webp")):
        image_header.read(data[:cut])


# --- on a server ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository: Path = tmp_path_factory.mktemp("image_limits")
    models.save(models.channel_means((-1, -1, -1, 3)), repository, "means")
    document = {
        "model_config_list": [
            {"config": {"name": "means", "base_path": "means", "layout": "NHWC", "plugin_config": models.F32}}
        ]
    }
    running = RunningServer(models.write_config(repository, document), image_limits=LIMITS)
    yield running
    running.stop()


TOO_MANY_PIXELS = "Image too large - image 0 is 101x100 (height x width), over 10000 pixels; input name: image"


def test_images_within_the_limits_are_served(server: RunningServer) -> None:
    (means,) = predict_strings(server, "means", [encoded(100, 100)] * 3).values()
    assert means.shape == (3, 3)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
def test_an_image_with_too_many_pixels_is_refused(server: RunningServer, extension: str) -> None:
    error = rpc_error(lambda: predict_strings(server, "means", [encoded(101, 100, extension)]))
    assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_PIXELS)


def test_a_request_whose_images_together_are_too_large_is_refused(server: RunningServer) -> None:
    error = rpc_error(lambda: predict_strings(server, "means", [encoded(100, 100)] * 4))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "Image too large - the request's images take over 360000 bytes decoded; input name: image"


def test_a_huge_png_is_refused_before_it_is_decoded(server: RunningServer) -> None:
    """16384 x 16384 pixels in about 0.8 MB: decoding would take 800 MB and many seconds."""
    huge = black_png(16384, 16384)
    assert len(huge) < 2 << 20
    started = time.monotonic()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "means"
    request.inputs["image"].CopyFrom(string_tensor([huge]))
    error = rpc_error(lambda: server.predict_raw(request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "16384x16384" in error.details()
    assert time.monotonic() - started < 2  # decoding alone takes several seconds
    status, _, body = server.http(
        "POST", "/v1/models/means:predict", json.dumps({"instances": [{"image": {"b64": _b64(huge)}}]})
    )
    assert status == 413 and b"16384x16384 (height x width), over 10000 pixels" in body


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
