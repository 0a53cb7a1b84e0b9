"""Benchmark: binary image inputs over TF Serving gRPC, and what decoding does to the event loop.

1. Latency of one client's Predict requests to a tiny NHWC FP32 model (1,224,224,3) whose output is its channel means:
   the image as a raw tensor (tensor_content), as a 224x224 JPEG, and as a 640x480 JPEG resized by the server.
2. Event-loop responsiveness: while one client sends batches of 8 noisy 640x480 JPEGs (~2 MB, ~100 ms of decoding),
   another sends GetModelStatus calls, whose latency is the time the loop needs to get to them. Measured with the
   decoding in a worker thread (ovserve's behaviour above images.INLINE_DECODE_BYTES) and, for comparison, forced
   onto the event loop.

The server runs in this process on its own event-loop thread (as the tests run it), so the comparison in 2 can flip
the threshold; the client shares the process, which costs both sides alike.

Usage (from the repo root): .venv/bin/python bench/bench_images.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # ovserve from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # models

import models  # tests/models.py: tiny models built with OpenVINO's opset API
from common import machine_info

from ovserve import images, tfs
from ovserve._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from ovserve._proto.tensorflow_serving.apis import get_model_status_pb2, predict_pb2
from ovserve.config import load_config
from ovserve.server import Server, Settings


class InProcessServer:
    """An ovserve Server on its own event-loop thread; calls through a gRPC channel."""

    def __init__(self, config: Path) -> None:
        import grpc

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = Settings(port=0, rest_port=0, grpc_bind_address="127.0.0.1", rest_bind_address="127.0.0.1")
        self.server = Server(load_config(config), settings)
        self._call(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")

    async def _start(self) -> None:
        await self.server.start()
        await self.server.loaded()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def rpc(self, method: str, response: Any) -> Callable[[Any], Any]:
        return self.channel.unary_unary(method, lambda m: m.SerializeToString(), response.FromString)

    def stop(self) -> None:
        self.channel.close()
        self._call(self.server.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def request(model: str, items: list[bytes] | None = None, array: np.ndarray | None = None) -> Any:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    if items is None:
        assert array is not None
        message.inputs["image"].CopyFrom(tfs.make_tensor_proto(array))
    else:
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        proto.tensor_shape.dim.add(size=len(items))
        proto.string_val.extend(items)
        message.inputs["image"].CopyFrom(proto)
    return message


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per case in part 1")
    args = parser.parse_args()
    print("\n".join(machine_info()))
    repository = Path(tempfile.mkdtemp(prefix="bench_images_"))
    models.save(models.channel_means((1, 224, 224, 3)), repository, "one")
    models.save(models.channel_means((8, 224, 224, 3)), repository, "eight")
    config = {"model_config_list": [
        {"config": {"name": name, "base_path": name, "layout": "NHWC"}} for name in ("one", "eight")
    ]}  # fmt: skip
    server = InProcessServer(models.write_config(repository, config))
    predict = server.rpc("/tensorflow.serving.PredictionService/Predict", predict_pb2.PredictResponse)
    status = server.rpc("/tensorflow.serving.ModelService/GetModelStatus", get_model_status_pb2.GetModelStatusResponse)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:224]
    photo = np.stack([(x + y) % 256, (2 * y) % 256, (3 * x) % 256], -1) + rng.integers(0, 20, (224, 224, 3))
    photo = photo.astype(np.uint8)
    large = np.asarray(Image.fromarray(photo).resize((640, 480)))
    cases = {
        "raw FP32 tensor (1,224,224,3)": request("one", array=photo[np.newaxis].astype(np.float32)),
        f"JPEG 224x224, {len(jpeg(photo))} B": request("one", [jpeg(photo)]),
        f"JPEG 640x480 resized, {len(jpeg(large))} B": request("one", [jpeg(large)]),
    }
    print("\n1. one client, TF Serving gRPC Predict: latency (ms)")
    for name, message in cases.items():
        for _ in range(10):
            predict(message)
        times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            predict(message)
            times.append(time.perf_counter() - started)
        print(f"   {name:38s} p50 {percentile(times, 0.5):6.2f}  p99 {percentile(times, 0.99):6.2f}")

    noisy = [jpeg(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(8)]
    batch = request("eight", noisy)
    probe = get_model_status_pb2.GetModelStatusRequest()
    probe.model_spec.name = "eight"
    print(f"\n2. batches of 8 noisy 640x480 JPEGs ({sum(map(len, noisy)) // 1024} KiB) beside GetModelStatus probes")
    predict(batch)
    modes = (("decoded in a worker thread", images.INLINE_DECODE_BYTES), ("decoded on the loop", 1 << 62))
    for label, threshold in modes:
        images.INLINE_DECODE_BYTES = threshold
        done, probes = threading.Event(), []

        def probing(done: threading.Event = done, probes: list[float] = probes) -> None:
            while not done.is_set():
                started = time.perf_counter()
                status(probe)
                probes.append(time.perf_counter() - started)

        thread = threading.Thread(target=probing)
        thread.start()
        started = time.perf_counter()
        for _ in range(10):
            predict(batch)
        per_batch = (time.perf_counter() - started) / 10 * 1e3
        done.set()
        thread.join()
        print(
            f"   {label:28s} {per_batch:6.1f} ms per batch; probes p50 {percentile(probes, 0.5):6.2f} ms, "
            f"p99 {percentile(probes, 0.99):6.2f} ms"
        )
    server.stop()


if __name__ == "__main__":
    main()
