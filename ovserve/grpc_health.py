"""gRPC frontend: the standard health service grpc.health.v1.Health, for Kubernetes' `grpc:` probes and
grpc_health_probe. The empty service name (or one of the server's gRPC service names) asks for server readiness;
a model or pipeline name asks whether it serves. Everything is NOT_SERVING while the server drains."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import grpc

from ._proto import health_pb2 as pb
from .dataplane import DataPlane
from .errors import ServingError
from .grpc_server import method

SERVICE = "grpc.health.v1.Health"
SERVER_NAMES = frozenset(
    {"", SERVICE, "inference.GRPCInferenceService", "tensorflow.serving.PredictionService",
     "tensorflow.serving.ModelService"}
)  # fmt: skip
WATCH_POLL_S = 0.5  # how often Watch looks for a change of status
SERVING, NOT_SERVING, SERVICE_UNKNOWN = (
    pb.HealthCheckResponse.SERVING,
    pb.HealthCheckResponse.NOT_SERVING,
    pb.HealthCheckResponse.SERVICE_UNKNOWN,
)


class Health:
    """grpc.health.v1.Health over the data plane; `close()` ends every Watch stream (the server stops)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.closed = asyncio.Event()

    def status(self, service: str) -> pb.HealthCheckResponse.ServingStatus:
        """SERVING or NOT_SERVING for the server or a model/pipeline name; SERVICE_UNKNOWN for any other name."""
        if service in SERVER_NAMES:
            return SERVING if self.dataplane.ready else NOT_SERVING
        if service not in self.dataplane.names():
            return SERVICE_UNKNOWN
        try:
            serving = self.dataplane.serving(service) and not self.dataplane.draining
        except ServingError:  # a model with no version yet
            serving = False
        return SERVING if serving else NOT_SERVING

    async def Check(self, request: pb.HealthCheckRequest, context: Any) -> pb.HealthCheckResponse:
        status = self.status(request.service)
        if status == SERVICE_UNKNOWN:  # NOT_FOUND: the protocol's answer for a name the server does not know
            expected = "the empty name for the server, or a model or pipeline name"
            raise ServingError("HEALTH_SERVICE_UNKNOWN", f"service: {request.service!r}; expected {expected}")
        return pb.HealthCheckResponse(status=status)

    async def Watch(self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """The status now, then each change, until the client leaves or the server stops."""
        sent: pb.HealthCheckResponse.ServingStatus | None = None
        while not self.closed.is_set():
            status = self.status(request.service)
            if status != sent:
                await context.write(pb.HealthCheckResponse(status=status))
                sent = status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), WATCH_POLL_S)

    def close(self) -> None:
        self.closed.set()


def handlers(service: Health) -> Sequence[grpc.GenericRpcHandler]:
    methods = {
        "Check": method(service.Check, pb.HealthCheckRequest, pb.HealthCheckResponse),
        "Watch": grpc.unary_stream_rpc_method_handler(
            service.Watch,
            request_deserializer=pb.HealthCheckRequest.FromString,
            response_serializer=pb.HealthCheckResponse.SerializeToString,
        ),
    }
    return [grpc.method_handlers_generic_handler(SERVICE, methods)]
