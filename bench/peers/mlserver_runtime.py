"""MLServer's side of bench_peers: a custom runtime (``implementation: mlserver_runtime.OpenVINORuntime``)."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from ov_async import AsyncModel


class OpenVINORuntime(MLModel):
    """The model of ``PEER_MODEL`` behind MLServer's V2 dataplane, the way its docs write a custom runtime."""

    async def load(self) -> bool:
        self.model = AsyncModel()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = await self.model.infer(x)
        output = NumpyCodec.encode_output(self.model.output_name, y)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[output])
