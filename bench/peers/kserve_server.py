"""KServe's Python model server side of bench_peers: ``python kserve_server.py --model_name NAME --http_port ...``."""

from __future__ import annotations

import argparse
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from ov_async import AsyncModel


class OpenVINOModel(Model):
    """The model of ``PEER_MODEL`` as a kserve.Model, the way KServe's docs write a custom predictor."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: AsyncModel | None = None

    def load(self) -> bool:
        self.model = AsyncModel()
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None, **_: Any) -> InferResponse:
        assert self.model is not None
        y = await self.model.infer(payload.inputs[0].as_numpy())
        output = InferOutput(name=self.model.output_name, shape=list(y.shape), datatype="FP32")
        output.set_data_from_numpy(y, binary_data=True)  # raw_output_contents over gRPC, as the others answer
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    model = OpenVINOModel(args.model_name)
    model.load()
    ModelServer().start([model])
