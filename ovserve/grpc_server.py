"""gRPC plumbing: the server and its options, request parsing, error mapping and request logging of every gRPC
service (the services themselves: grpc_tfs, grpc_kserve, grpc_health)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from .errors import ServingError
from .requestlog import Call, RequestLog
from .tls import Tls

MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB, as OVMS
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class Malformed:
    """Request bytes that do not parse as the method's message (see parser)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def parser(message: type[Message]) -> Callable[[bytes], Any]:
    """A request deserializer that hands bytes which do not parse to the handler as Malformed: a DecodeError raised
    inside grpc is logged with a traceback and answered UNKNOWN."""

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as e:
            return Malformed(str(e))

    return parse


def errors(handler: Handler) -> Handler:
    """Turn a ServingError into its gRPC code and OVMS message; anything else is INTERNAL. The request log (of the
    handler's service's data plane) gets every failure, and every call when it is watching (DEBUG, access log)."""
    service = getattr(handler, "__self__", None)
    requests = getattr(getattr(service, "dataplane", None), "requests", None)
    if not isinstance(requests, RequestLog):
        requests = RequestLog()
    api, method = getattr(service, "api", ""), handler.__name__

    @functools.wraps(handler)
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _call(api, method, request) if requests.watching else None
        if call is not None:
            requests.arrived(call)
        status, response = "CANCELLED", None
        try:
            if isinstance(request, Malformed):
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


def method(handler: Handler, request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
    """A unary method: requests parsed by `parser`, errors mapped by `errors`."""
    return grpc.unary_unary_rpc_method_handler(
        errors(handler), request_deserializer=parser(request), response_serializer=response.SerializeToString
    )


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
    addresses: Sequence[str], services: Sequence[grpc.GenericRpcHandler], options: Options = Options()
) -> tuple[grpc.aio.Server, list[int]]:
    """A grpc.aio server bound to each 'host:port' (port 0 = any free port) serving the `services` handlers; returns
    it and the bound ports (0 for an address that could not be bound).

    `options.max_connection_age` (seconds, 0 = none): each connection is then sent a GOAWAY at that age (gRPC adds
    +-10 % jitter) and the client reconnects, its calls in flight finishing on the old one. Clients that an L4
    balancer pins to this server (a Kubernetes Service) so move to other servers during a drain: a server's own
    stop sends GOAWAY too, but gRPC's server cancels the calls that cross it on the wire."""
    server = grpc.aio.server(options=options.channel_args())
    server.add_generic_rpc_handlers(services)
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
