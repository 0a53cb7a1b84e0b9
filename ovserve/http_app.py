"""HTTP frontend: an ASGI app with routes as data and one error handler, served by uvicorn on the server's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import uvicorn

from .errors import ServingError
from .http_protocol import FOREVER, HttpLimits, bounded
from .requestlog import Call, RequestLog
from .tls import Refusals
from .tls import wrapping as tls_wrapping

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS"})
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str  # as sent, still percent-encoded
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)  # the route's named groups, percent-decoded


@dataclass(slots=True)
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


def route(methods: str, pattern: str, handler: Handler) -> Route:
    """A route for space-separated `methods` on a regex fully matching the raw path; named groups become params."""
    return Route(frozenset(methods.split()), re.compile(pattern), handler)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Cors:
    """CORS response headers from the CLI (docs/apis.md#transport)."""

    origins: str = "*"
    methods: str = "*"
    headers: str = "*"
    credentials: bool = False

    def items(self) -> list[tuple[bytes, bytes]]:
        pairs = [
            (b"access-control-allow-origin", self.origins.encode()),
            (b"access-control-allow-methods", self.methods.encode()),
            (b"access-control-allow-headers", self.headers.encode()),
        ]
        if self.credentials:
            pairs.append((b"access-control-allow-credentials", b"true"))
        return pairs


class HttpApp:
    """Dispatches on method and raw path; a ServingError becomes {"error": "<status text>"} with its HTTP status.
    HEAD is answered as GET without the body; once `closing` is set (the server drains), every response asks its
    client to close the connection, so no further request lands on a connection about to close."""

    def __init__(
        self,
        routes: Sequence[Route],
        cors: Cors = Cors(),
        limits: HttpLimits | None = None,
        requests: RequestLog | None = None,
    ) -> None:
        self.routes = list(routes)
        self._cors = cors.items()
        self.limits = limits or HttpLimits()
        self.requests = requests or RequestLog()  # gets every failure; every request when watching
        self.closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket support is needed
        call = _call(scope) if self.requests.watching else None
        response = await self._respond(scope, receive, call)
        headers = [(b"content-type", response.content_type.encode()), *self._cors]
        headers.extend((k.lower().encode(), v.encode()) for k, v in response.headers.items())
        # The whole body is known: a Content-Length (as OVMS sends) instead of uvicorn's default chunked framing,
        # which HTTP/1.0 clients cannot read. 204 and 304 carry neither a body nor a length (RFC 9110).
        body = b"" if response.status in (204, 304) else response.body
        if response.status not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode()))  # uvicorn sends no body to a HEAD
        if self.closing or response.status in (408, 413):  # 408, 413: the rest of the body was never read
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if call is not None:
            self.requests.done(call, response.status, len(body))

    async def _respond(self, scope: dict[str, Any], receive: Any, call: Call | None) -> HttpResponse:
        method: str = scope["method"]
        path = _path(scope)
        params: dict[str, str] = {}
        try:
            if method not in ALLOWED_METHODS:
                raise ServingError("REST_UNSUPPORTED_METHOD", method)
            if method == "OPTIONS":
                return HttpResponse(200)
            if ".." in unquote(path).split("/"):
                raise ServingError("PATH_INVALID", path)
            found, params = self._match(path, "GET" if method == "HEAD" else method)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            body = await _body(receive, headers.get("content-length"), self.limits)
            query = scope.get("query_string", b"").decode("latin-1")
            if call is not None:
                call.target, call.received = params.get("name", ""), len(body)
                self.requests.arrived(call)
            return await found.handler(HttpRequest(method, path, query, headers, body, params))
        except ServingError as e:
            self.requests.failed(_failed(scope, call, params), e, e.http_status)
            return HttpResponse(e.http_status, error_body(str(e)))
        except Exception as e:
            self.requests.failed(_failed(scope, call, params), e, 500)
            return HttpResponse(500, error_body(ServingError("INTERNAL_ERROR").args[0]))

    def _match(self, path: str, method: str) -> tuple[Route, dict[str, str]]:
        wrong_method = False
        for candidate in self.routes:
            m = candidate.pattern.fullmatch(path)
            if m is None:
                continue
            if method in candidate.methods:
                return candidate, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            wrong_method = True
        if wrong_method:
            raise ServingError("REST_UNSUPPORTED_METHOD", f"{method} {path}")
        raise ServingError("REST_INVALID_URL", path)


def _path(scope: dict[str, Any]) -> str:
    """The request's path as sent (still percent-encoded), without the query."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return str(raw.decode("latin-1").split("?", 1)[0])


def _call(scope: dict[str, Any]) -> Call:
    """A REST request as the request log sees it; its API is told by the path (/v1/models: TF Serving, /v2: KServe)."""
    path = _path(scope)
    api = "KServe" if path.startswith("/v2") else "TensorFlowServing" if path.startswith("/v1/models") else ""
    return Call(api, "REST", f"{scope['method']} {path}")


def _failed(scope: dict[str, Any], call: Call | None, params: Mapping[str, str]) -> Call:
    """The Call of a failed request: the one made when it came in, or one made now."""
    if call is None:
        call = _call(scope)
        call.target = params.get("name", "")
    return call


async def _body(receive: Any, length: str | None, limits: HttpLimits) -> bytes:
    """The request body; one announced or grown past `limits.max_body_bytes` is refused before it is buffered, and
    a client that sends nothing for `limits.body_seconds` is answered 408."""
    most = limits.max_body_bytes
    if length is not None and length.strip().isdigit() and int(length) > most:
        raise ServingError("REST_BODY_TOO_LARGE", f"Content-Length {length.strip()}; the limit is {most}")
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        try:
            message = await (_within(limits.body_seconds, receive()) if limits.body_seconds > 0 else receive())
        except TimeoutError:
            raise ServingError("REST_BODY_TIMEOUT", f"nothing received for {limits.body_seconds:g} s") from None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > most:
            raise ServingError("REST_BODY_TOO_LARGE", f"more than {most} bytes")
        chunks.append(chunk)
        more = bool(message.get("more_body"))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _within(seconds: float, awaitable: Awaitable[Any]) -> Any:
    """`awaitable`'s result, or TimeoutError after `seconds`; from Python 3.11 a timer alone, cheap on the hot path
    (wait_for makes a task of it)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:  # not yet the builtin TimeoutError before 3.11
        raise TimeoutError from None


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the ovserve process owns SIGINT/SIGTERM and stops this server itself


class HttpServer:
    """uvicorn serving `app` on host:port (port 0 = any free port) as a task of the running loop."""

    def __init__(self, app: HttpApp, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=2048)
        # Accepted connections inherit this; without it small keep-alive responses wait ~40 ms for delayed ACKs.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port: int = self.socket.getsockname()[1]
        self.refusals = Refusals()  # TLS handshakes refused
        # With TLS, connections are wrapped here rather than by uvicorn, so that refused handshakes are logged.
        connection = bounded(app.limits, app.requests)
        protocol: Any = connection if tls is None else tls_wrapping(connection, tls, self.refusals)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            http=protocol,
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=math.ceil(app.limits.idle_seconds or FOREVER),
        )
        self._server = _Uvicorn(config)
        self._task: Any = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError("the HTTP server stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self, grace: float | None = None) -> None:
        """Close the port and idle connections, let requests in flight finish (up to `grace` seconds, None = no
        limit), then cancel what is left."""
        self._server.config.timeout_graceful_shutdown = None if grace is None else math.ceil(grace)
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self.socket.close()

    def hurry(self) -> None:
        """End a stop now: requests still in flight are abandoned."""
        self._server.force_exit = True
