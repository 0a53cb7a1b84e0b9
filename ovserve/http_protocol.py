"""uvicorn's httptools connection, bounded: request heads (size, header count, time to arrive) and idle time."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import ServingError
from .requestlog import Call, RequestLog

FOREVER = 365 * 24 * 3600  # what a limit of 0 ("never") becomes for uvicorn's keep-alive timer


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a REST client may send and how slowly. OVMS caps bodies at 1 GiB; it has no other such limits, so the
    rest are set where no real client comes near them. Times of 0 mean no limit."""

    max_body_bytes: int = 1 << 30
    body_seconds: float = 30.0  # longest pause while a body arrives
    max_header_bytes: int = 64 << 10  # request line and headers together
    max_headers: int = 100
    header_seconds: float = 30.0  # from a request's first byte to its last header
    idle_seconds: float = 75.0  # a connection with no request under way (above common balancers' 60 s)


class _HeadTooLarge(Exception):
    pass


class LimitedHttpTools(HttpToolsProtocol):
    """One client connection. A head over the limits is answered 431, one that takes too long 408, and the
    connection closed; a connection idle from the start (not only between requests, as uvicorn does) is closed."""

    limits = HttpLimits()  # replaced per server by `bounded`
    requests = RequestLog()  # likewise: the server's request log, told of the requests refused here
    _head_timer: asyncio.TimerHandle | None = None
    _in_head = False  # a request has begun and its headers are not all here
    _head_bytes = 0  # of the request line and the headers parsed so far
    _fed = 0  # bytes received while in a head: the parser keeps an unfinished header to itself, unbounded
    _began = False  # a request began in the read being parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._unset_keepalive_if_required()  # uvicorn cancels it only on a clean close, not after a reset
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self._began = False
            self.parser.feed_data(data)
            # Counted from the read after the one its head began in (that read may end the previous request, and the
            # parser's callbacks count the head so far): an unfinished header is cut within a read of the limit.
            self._fed += len(data) if self._in_head and not self._began else 0
            if self._fed > self.limits.max_header_bytes:
                raise _HeadTooLarge(self._too_large)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades here (no WebSockets): the request is served as plain HTTP
        except _HeadTooLarge as e:
            self._refuse(ServingError("REST_HEADERS_TOO_LARGE", str(e)))
        except httptools.HttpParserError as e:
            if isinstance(e.__context__, _HeadTooLarge):
                self._refuse(ServingError("REST_HEADERS_TOO_LARGE", str(e.__context__)))
            else:
                self._refuse(ServingError("REST_MALFORMED_REQUEST", str(e)))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._fed, self._began = True, 0, 0, True
        if self.limits.header_seconds > 0:
            self._head_timer = self.loop.call_later(self.limits.header_seconds, self._head_late)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if len(self.headers) >= self.limits.max_headers:
            raise _HeadTooLarge(f"more than {self.limits.max_headers} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            raise _HeadTooLarge(self._too_large)

    @property
    def _too_large(self) -> str:
        return f"request line and headers over {self.limits.max_header_bytes} bytes"

    def _head_late(self) -> None:
        self._head_timer = None
        seconds = f"{self.limits.header_seconds:g}"
        self._refuse(ServingError("REST_HEADER_TIMEOUT", f"request line and headers not complete in {seconds} s"))

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, error: ServingError) -> None:
        """Answer `error` and close: the rest of what the client sends is never read."""
        if self.transport.is_closing():
            return
        self.requests.failed(Call("", "REST", "request head"), error, error.http_status)
        body = json.dumps({"error": str(error)}).encode()
        head = f"HTTP/1.1 {error.http_status} {_REASONS[error.http_status]}\r\n"
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()


_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


def bounded(limits: HttpLimits, requests: RequestLog | None = None) -> type[LimitedHttpTools]:
    """The connection class for one server's `limits` and request log (uvicorn builds connections from a class)."""
    namespace: dict[str, Any] = {"limits": limits, "__doc__": LimitedHttpTools.__doc__}
    if requests is not None:
        namespace["requests"] = requests
    return type("BoundedHttpTools", (LimitedHttpTools,), namespace)
