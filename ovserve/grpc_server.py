"""gRPC frontend: TF Serving's PredictionService and ModelService as thin handlers over the DataPlane."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

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
from .requestlog import Call, RequestLog
from .tls import Tls
from .types import Origin

MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB, as OVMS
_TFS_PREDICT = Origin("TensorFlowServing", "gRPC", "Predict")
_TFS_METADATA = Origin("TensorFlowServing", "gRPC", "GetModelMetadata")
_TFS_STATUS = Origin("TensorFlowServing", "gRPC", "GetModelStatus")
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class _Malformed:
    """Request bytes that do not parse as the method's message (see _parser)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parser(message: type[Message]) -> Callable[[bytes], Any]:
    """A request deserializer that hands bytes which do not parse to the handler as _Malformed: a DecodeError raised
    inside grpc is logged with a traceback and answered UNKNOWN."""

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as e:
            return _Malformed(str(e))

    return parse


def _errors(handler: Handler) -> Handler:
    """Turn a ServingError into its gRPC code and OVMS message; anything else is INTERNAL. The request log (of the
    handler's service's data plane) gets every failure, and every call when it is watching (DEBUG, access log)."""
    service = getattr(handler, "__self__", None)
    dataplane = getattr(service, "dataplane", None)
    requests: RequestLog = dataplane.requests if isinstance(dataplane, DataPlane) else RequestLog()
    api, method = getattr(service, "api", ""), handler.__name__

    @functools.wraps(handler)
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _call(api, method, request) if requests.watching else None
        if call is not None:
            requests.arrived(call)
        status, response = "CANCELLED", None
        try:
            if isinstance(request, _Malformed):
                raise ServingError("GRPC_MESSAGE_MALFORMED", request.reason)
            response = await handler(request, context)
            status = "OK"
            return response
        except ServingError as e:
            status = e.grpc_code
            requests.failed(call or _call(api, method, request), e, status)
            await context.abort(grpc.StatusCode[status], str(e))
        except Exception as e:
            status = "INTERNAL"
            requests.failed(call or _call(api, method, request), e, status)
            await context.abort(grpc.StatusCode.INTERNAL, "Internal server error")
        finally:
            if call is not None:
                requests.done(call, status, response.ByteSize() if isinstance(response, Message) else 0)

    return wrapped


def _call(api: str, method: str, request: Any) -> Call:
    """A gRPC request as the request log sees it: the model or pipeline it names and its size."""
    if not isinstance(request, Message):
        return Call(api, "gRPC", method, "", len(request) if isinstance(request, bytes) else 0)
    fields = request.DESCRIPTOR.fields_by_name
    target = ""
    if "model_spec" in fields:  # TF Serving
        target = request.model_spec.name
    elif "model_name" in fields:  # KServe ModelInfer
        target = request.model_name
    elif "name" in fields and request.DESCRIPTOR.name.startswith("Model"):  # KServe ModelReady, ModelMetadata, ...
        target = request.name
    return Call(api, "gRPC", method, target, request.ByteSize())


class TfServing:
    """tensorflow.serving.PredictionService and ModelService."""

    api = "TensorFlowServing"  # the request log's name of this door

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def Predict(self, request: predict_pb2.PredictRequest, context: Any) -> predict_pb2.PredictResponse:
        result = await self.dataplane.infer(tfs.predict_request(request), _TFS_PREDICT)
        return tfs.predict_response(result)

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: Any
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        tfs.check_metadata_request(request)
        spec = request.model_spec
        endpoint = await self.dataplane.endpoint(spec.name, tfs.requested_version(spec), _TFS_METADATA)
        return tfs.metadata_response(endpoint)

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: Any
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        return tfs.status_response(self.dataplane.status(spec.name, tfs.requested_version(spec), _TFS_STATUS))

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> model_management_pb2.ReloadConfigResponse:
        return model_management_pb2.ReloadConfigResponse()  # OVMS answers OK and does nothing

    async def unimplemented(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise ServingError("NOT_IMPLEMENTED")  # aborting here would be "unexpected" to _errors, which aborts again


def _method(handler: Handler, request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        _errors(handler), request_deserializer=_parser(request), response_serializer=response.SerializeToString
    )


def handlers(service: TfServing) -> Sequence[grpc.GenericRpcHandler]:
    prediction = {
        "Predict": _method(service.Predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "GetModelMetadata": _method(
            service.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
        ),
        "Classify": _method(
            service.unimplemented, classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse
        ),
        "Regress": _method(service.unimplemented, regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
        "MultiInference": _method(
            service.unimplemented, inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse
        ),
    }
    model = {
        "GetModelStatus": _method(
            service.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest,
            get_model_status_pb2.GetModelStatusResponse,
        ),
        "HandleReloadConfigRequest": _method(
            service.HandleReloadConfigRequest,
            model_management_pb2.ReloadConfigRequest,
            model_management_pb2.ReloadConfigResponse,
        ),
    }
    return [
        grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", prediction),
        grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", model),
    ]


@dataclass(frozen=True)
class Options:
    """The gRPC server's limits and TLS; times in seconds, 0 = none."""

    max_message: int = MAX_MESSAGE_BYTES
    max_connection_age: float = 0
    max_connection_idle: float = 0
    tls: Tls | None = None

    def channel_args(self) -> list[tuple[str, int]]:
        args = [
            ("grpc.max_send_message_length", self.max_message),
            ("grpc.max_receive_message_length", self.max_message),
            ("grpc.so_reuseport", 0),
        ]
        if self.max_connection_age > 0:
            args.append(("grpc.max_connection_age_ms", max(1, round(self.max_connection_age * 1000))))
        if self.max_connection_idle > 0:
            args.append(("grpc.max_connection_idle_ms", max(1, round(self.max_connection_idle * 1000))))
        return args


def create(
    dataplane: DataPlane,
    addresses: Sequence[str],
    extra: Sequence[grpc.GenericRpcHandler] = (),
    options: Options = Options(),
) -> tuple[grpc.aio.Server, list[int]]:
    """A grpc.aio server bound to each 'host:port' (port 0 = any free port) serving TF Serving, KServe and the
    `extra` handlers; returns it and the bound ports (0 for an address that could not be bound).

    `options.max_connection_age` (seconds, 0 = none): each connection is then sent a GOAWAY at that age (gRPC adds
    +-10 % jitter) and the client reconnects, its calls in flight finishing on the old one. Clients that an L4
    balancer pins to this server (a Kubernetes Service) so move to other servers during a drain: a server's own
    stop sends GOAWAY too, but gRPC's server cancels the calls that cross it on the wire."""
    server = grpc.aio.server(options=options.channel_args())
    server.add_generic_rpc_handlers(handlers(TfServing(dataplane)))
    from . import grpc_kserve  # here, not at the top: grpc_kserve reuses this module's _errors and _method

    server.add_generic_rpc_handlers(grpc_kserve.handlers(grpc_kserve.KServe(dataplane)))
    server.add_generic_rpc_handlers(extra)
    credentials = None
    tls = options.tls
    if tls is not None:  # with a client CA, clients must present a certificate it signed (mutual TLS)
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.mutual
        )
    return server, [_bind(server, address, credentials) for address in addresses]


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is not None:
            return int(server.add_secure_port(address, credentials))
        return int(server.add_insecure_port(address))
    except RuntimeError:  # "Failed to bind to address ...": the caller names the port
        return 0
