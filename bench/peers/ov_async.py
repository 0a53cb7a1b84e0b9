"""The peers' inference: the model compiled as ovserve compiles it, awaited from asyncio on an AsyncInferQueue."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import numpy as np
import openvino as ov


class AsyncModel:
    """One compiled model and a queue of its infer requests; ``await infer(x)`` returns the first output, copied.

    The settings come from the benchmark (environment ``PEER_MODEL``: xml path, plugin properties and nireq), so
    each peer runs exactly what ovserve runs; only the server around it differs.
    """

    def __init__(self) -> None:
        settings = json.loads(os.environ["PEER_MODEL"])
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(settings["xml"]), "CPU", settings["properties"])
        self.queue = ov.AsyncInferQueue(self.compiled, int(settings["nireq"]))
        self.queue.set_callback(self._done)
        self.free = asyncio.Semaphore(int(settings["nireq"]))  # start_async would block the loop when all are busy
        self.output_name = self.compiled.output(0).get_any_name()

    @staticmethod
    def _done(request: Any, userdata: tuple[asyncio.AbstractEventLoop, asyncio.Future[np.ndarray]]) -> None:
        loop, future = userdata  # an OpenVINO thread: hand the copied output to the event loop
        output = request.get_output_tensor(0).data.copy()
        loop.call_soon_threadsafe(_settle, future, output)

    async def infer(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        async with self.free:
            self.queue.start_async({0: x}, (loop, future))
            return await future


def _settle(future: asyncio.Future[np.ndarray], output: np.ndarray) -> None:
    if not future.done():
        future.set_result(output)
