"""gRPC frontend: KServe's inference.GRPCInferenceService (plus Triton's ModelConfig) as thin handlers over the
DataPlane (docs/apis.md#kserve-grpc)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from . import kfs
from ._proto import grpc_predict_v2_pb2 as pb
from .dataplane import DataPlane
from .errors import ServingError
from .grpc_server import Malformed, errors, method, parser
from .types import Origin

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
_INFER = Origin("KServe", "gRPC", "ModelInfer")
_METADATA = Origin("KServe", "gRPC", "ModelMetadata")
_READY = Origin("KServe", "gRPC", "ModelReady")
_CONFIG = Origin("KServe", "gRPC", "ModelConfig")
# Triton's other rpcs (loading and unloading, tracing, logging): a clean UNIMPLEMENTED. Statistics are served, but
# ServerMetadata does not list the "statistics" extension (OVMS lists none), so perf_analyzer does not ask for them.
_TRITON_ONLY = (
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "TraceSetting",
    "LogSettings",
)
_CUDA_SHM = ("CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister")


def model_version(dataplane: DataPlane, name: str, text: str) -> int | None:
    """The version a ModelReady/ModelMetadata request names: parsed for models only (pipelines ignore it, and an
    unknown name fails its lookup as MODEL_NAME_MISSING), as OVMS does."""
    if not dataplane.is_model(name):
        return None
    return kfs.parse_version(text)


class KServe:
    """inference.GRPCInferenceService."""

    api = "KServe"  # the request log's name of this door

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return kfs.server_metadata(kfs.extensions(self.dataplane.regions))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        version = model_version(self.dataplane, request.name, request.version)
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, version, _READY))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        version = model_version(self.dataplane, request.name, request.version)
        return kfs.metadata_response(await self.dataplane.endpoint(request.name, version, _METADATA))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        version = model_version(self.dataplane, request.name, request.version)
        return kfs.model_config(await self.dataplane.endpoint(request.name, version, _CONFIG))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        regions = self.dataplane.regions
        targets = kfs.output_targets(request, regions)
        result = await self.dataplane.infer(kfs.infer_request(request, regions), _INFER, missing="MODEL_NAME_MISSING")
        return kfs.infer_response(result, request.id, targets)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        """Triton's statistics of every version serving now, of one model or pipeline, or of one version."""
        version = model_version(self.dataplane, request.name, request.version)
        return kfs.statistics_response(self.dataplane.statistics(request.name, version))

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        """Triton's repository index: every model version and pipeline with its state (one repository: the name
        asked for is not looked at)."""
        return kfs.index_response(self.dataplane.index(request.ready))

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.dataplane.regions.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.dataplane.regions.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        return kfs.shm_status_response(self.dataplane.regions.status(request.name))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Streaming serves MediaPipe graphs only in OVMS: for models and pipelines the stream ends with NOT_FOUND."""
        async for request in requests:
            if isinstance(request, Malformed):
                error = ServingError("GRPC_MESSAGE_MALFORMED", request.reason)
            else:
                error = ServingError("MEDIAPIPE_DEFINITION_NAME_MISSING", request.model_name)
            await context.abort(grpc.StatusCode[error.grpc_code], str(error))

    async def unimplemented(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise ServingError("NOT_IMPLEMENTED")  # aborting here would be "unexpected" to errors, which aborts again

    async def cuda_shm(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise ServingError("CUDA_SHM_UNSUPPORTED", "use system shared memory")


def handlers(service: KServe) -> Sequence[grpc.GenericRpcHandler]:
    unary = {
        "ServerLive": method(service.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": method(service.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ServerMetadata": method(service.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelReady": method(service.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ModelMetadata": method(service.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": method(service.ModelInfer, pb.ModelInferRequest, pb.ModelInferResponse),
        "ModelConfig": method(service.ModelConfig, pb.ModelConfigRequest, pb.ModelConfigResponse),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            service.ModelStreamInfer,
            request_deserializer=parser(pb.ModelInferRequest),
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        ),
    }
    shm = {
        "SystemSharedMemoryRegister": method(
            service.SystemSharedMemoryRegister,
            pb.SystemSharedMemoryRegisterRequest,
            pb.SystemSharedMemoryRegisterResponse,
        ),
        "SystemSharedMemoryUnregister": method(
            service.SystemSharedMemoryUnregister,
            pb.SystemSharedMemoryUnregisterRequest,
            pb.SystemSharedMemoryUnregisterResponse,
        ),
        "SystemSharedMemoryStatus": method(
            service.SystemSharedMemoryStatus, pb.SystemSharedMemoryStatusRequest, pb.SystemSharedMemoryStatusResponse
        ),
    }
    unary.update(shm)
    unary["ModelStatistics"] = method(service.ModelStatistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse)
    unary["RepositoryIndex"] = method(service.RepositoryIndex, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse)
    for name in _TRITON_ONLY:  # bytes in, nothing out: no message types needed to refuse
        unary[name] = grpc.unary_unary_rpc_method_handler(errors(service.unimplemented))
    for name in _CUDA_SHM:
        unary[name] = grpc.unary_unary_rpc_method_handler(errors(service.cuda_shm))
    return [grpc.method_handlers_generic_handler(SERVICE, unary)]
