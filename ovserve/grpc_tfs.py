"""gRPC frontend: TF Serving's PredictionService and ModelService as thin handlers over the DataPlane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from . import tfs
from ._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)
from .dataplane import DataPlane
from .errors import ServingError
from .grpc_server import method
from .types import Origin

_PREDICT = Origin("TensorFlowServing", "gRPC", "Predict")
_METADATA = Origin("TensorFlowServing", "gRPC", "GetModelMetadata")
_STATUS = Origin("TensorFlowServing", "gRPC", "GetModelStatus")


class TfServing:
    """tensorflow.serving.PredictionService and ModelService."""

    api = "TensorFlowServing"  # the request log's name of this door

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def Predict(self, request: predict_pb2.PredictRequest, context: Any) -> predict_pb2.PredictResponse:
        result = await self.dataplane.infer(tfs.predict_request(request), _PREDICT)
        return tfs.predict_response(result)

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: Any
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        tfs.check_metadata_request(request)
        spec = request.model_spec
        endpoint = await self.dataplane.endpoint(spec.name, tfs.requested_version(spec), _METADATA)
        return tfs.metadata_response(endpoint)

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: Any
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        return tfs.status_response(self.dataplane.status(spec.name, tfs.requested_version(spec), _STATUS))

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> model_management_pb2.ReloadConfigResponse:
        return model_management_pb2.ReloadConfigResponse()  # OVMS answers OK and does nothing

    async def unimplemented(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise ServingError("NOT_IMPLEMENTED")  # aborting here would be "unexpected" to errors, which aborts again


def handlers(service: TfServing) -> Sequence[grpc.GenericRpcHandler]:
    prediction = {
        "Predict": method(service.Predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "GetModelMetadata": method(
            service.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
        ),
        "Classify": method(
            service.unimplemented, classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse
        ),
        "Regress": method(service.unimplemented, regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
        "MultiInference": method(
            service.unimplemented, inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse
        ),
    }
    model = {
        "GetModelStatus": method(
            service.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest,
            get_model_status_pb2.GetModelStatusResponse,
        ),
        "HandleReloadConfigRequest": method(
            service.HandleReloadConfigRequest,
            model_management_pb2.ReloadConfigRequest,
            model_management_pb2.ReloadConfigResponse,
        ),
    }
    return [
        grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", prediction),
        grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", model),
    ]
