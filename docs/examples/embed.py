"""ovserve inside a Python program: start a server on the quickstart's models, query it, reload it, stop it.

Run: python docs/examples/embed.py models   (the folder docs/examples/make_models.py wrote)
"""

import asyncio
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from ovserve.config import load_config, single_model_config
from ovserve.server import Server, Settings


def ask(rest_port: int, name: str, rows: np.ndarray) -> np.ndarray:
    """A KServe REST request with tritonclient (blocking: run it off the event loop)."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{rest_port}")
    x = httpclient.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    return client.infer(name, [x]).as_numpy("y")


async def main(models: Path) -> None:
    # Ports 0: any free port (read back from server.grpc_port / server.rest_port); None: that door stays closed.
    settings = Settings(port=0, rest_port=0, grpc_bind_address="127.0.0.1", rest_bind_address="127.0.0.1")
    server = Server(load_config(models / "config.json"), settings)
    await server.start()  # ports open; models load in the background
    await server.loaded()  # the first load is done (failed models are reported, not raised, in config mode)
    print("gRPC", server.grpc_port, "REST", server.rest_port)
    try:
        rows = np.array([[[1, 2, 3, 4]], [[2, 2, 2, 2]]], np.float32)
        y = await asyncio.to_thread(ask, server.rest_port, "linear_batch", rows)
        print("linear_batch:", y.tolist())  # [[[5.0, 10.0, 6.0]], [[4.0, 8.0, 4.0]]]
        changed = await server.reload()  # as POST /v1/config/reload: re-read config.json, rescan version folders
        print("reload changed anything:", changed)  # False: nothing was edited
    finally:
        await server.stop(grace=5)  # close the ports, let requests in flight finish, unload

    # Single-model mode, as `ovserve --model_name linear --model_path models/linear` builds it:
    config = single_model_config("linear", models / "linear", {"plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}})
    server = Server(config, Settings(rest_port=0, rest_bind_address="127.0.0.1", fatal_load_errors=True))
    await server.start()
    try:
        await server.loaded()  # with fatal_load_errors, raises RuntimeError if the model did not load
        y = await asyncio.to_thread(ask, server.rest_port, "linear", np.array([[1, 2, 3, 4]], np.float32))
        print("linear:", y.tolist())  # [[5.0, 10.0, 6.0]]
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "models")))
