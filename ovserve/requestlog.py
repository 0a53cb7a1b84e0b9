"""Request logging both doors share: every failure once (a client's mistake at INFO, at most once a second per message;
a server failure at ERROR with its traceback), requests in and out at DEBUG, and the optional access log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from typing import Any

from .errors import ServingError
from .logs import FIELDS, Throttle

log = logging.getLogger("ovserve.requests")
access_log = logging.getLogger("ovserve.access")

QUIET_SECONDS = 1.0  # the same client mistake is logged at most this often
REMEMBERED = 4096  # distinct messages kept for that; beyond, the oldest are forgotten


@dataclass(slots=True)
class Call:
    """One request at a door: TF Serving or KServe (or neither: config, metrics), over gRPC or REST."""

    api: str  # TensorFlowServing, KServe, or "" (the config API, /metrics, pipeline graphs)
    interface: str  # gRPC, REST
    method: str  # the rpc's name, or "GET /v1/models/m" over REST
    target: str = ""  # the model or pipeline named, if any
    received: int = 0  # bytes of the request message or body
    started: float = field(default_factory=perf_counter)

    @property
    def door(self) -> str:
        return f"{self.api} {self.interface}" if self.api else self.interface


def server_fault(error: BaseException) -> bool:
    """Whether a failure is the server's (ERROR, with its traceback) rather than the caller's (INFO): the error
    table's HTTP status is 5xx, but not 501 (asked for what is not implemented) nor 503 (not ready, sequences
    full); any exception that is no ServingError is the server's."""
    if not isinstance(error, ServingError):
        return True
    return error.http_status >= 500 and error.http_status not in (501, 503)


def located(error: BaseException) -> tuple[str | None, str | None]:
    """The pipeline node (and branch) an error came from, as the pipeline marked it on it or on one it wraps."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ServingError) and seen.node is not None:
            return seen.node, seen.branch
        seen = seen.__cause__
    return None, None


class RequestLog:
    """The request log of one server. `kind` tells whether a name is a "model" or a "pipeline"."""

    def __init__(
        self,
        kind: Callable[[str], str] = lambda name: "model",
        access: bool = False,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.kind = kind
        self.access = access
        self.clock = clock  # seconds, for the rate limit of client mistakes
        self._throttle = Throttle(QUIET_SECONDS, REMEMBERED)

    @property
    def watching(self) -> bool:
        """Whether requests that succeed are logged too (DEBUG or the access log): only then are they measured."""
        return self.access or log.isEnabledFor(logging.DEBUG)

    def fields(self, call: Call) -> dict[str, Any]:
        found = {"api": call.api, "interface": call.interface, "method": call.method}
        if call.target:
            found[self.kind(call.target)] = call.target
        return found

    def arrived(self, call: Call) -> None:
        """DEBUG: a request came in."""
        if log.isEnabledFor(logging.DEBUG):
            where = f" {self.kind(call.target)} {call.target}" if call.target else ""
            extra = {FIELDS: {**self.fields(call), "received": call.received}}
            log.debug("in: %s %s%s, %d bytes", call.door, call.method, where, call.received, extra=extra)

    def done(self, call: Call, status: int | str, sent: int) -> None:
        """DEBUG and the access log: a request answered (a failure is also logged by `failed`)."""
        ms = (perf_counter() - call.started) * 1000
        found = {**self.fields(call), "status": status, "duration_ms": round(ms, 3), "received": call.received}
        found["sent"] = sent
        where = f" {self.kind(call.target)}={call.target}" if call.target else ""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("out: %s %s%s: %s in %.3f ms, %d bytes", call.door, call.method, where, status, ms, sent,
                      extra={FIELDS: found})  # fmt: skip
        if self.access:
            access_log.info("%s %s%s status=%s duration_ms=%.3f received=%d sent=%d", call.door, call.method,
                            where, status, ms, call.received, sent, extra={FIELDS: found})  # fmt: skip

    def failed(self, call: Call, error: BaseException, status: int | str) -> None:
        """A request failed with `error`, answered with `status` (a gRPC code name or an HTTP status)."""
        found = self.fields(call)
        node, branch = located(error)
        if node is not None:
            found["node"] = node
            if branch:
                found["branch"] = branch
        found["status"] = status
        if isinstance(error, ServingError):
            found["error"] = error.status
        text = str(error) if isinstance(error, ServingError) else f"{type(error).__name__}: {error}"
        found["detail"] = text
        labels = " ".join(f"{k}={found[k]}" for k in ("model", "pipeline", "node", "branch") if k in found)
        message = f"{call.door} {call.method}{' ' + labels if labels else ''}: {status} {text}"
        if server_fault(error):
            log.error("%s", message, exc_info=(type(error), error, error.__traceback__), extra={FIELDS: found})
            return
        suppressed = self._throttle.admit(message, self.clock())
        if suppressed is None:
            return
        if suppressed:
            found["suppressed"] = suppressed
            message += f" ({suppressed} more like this not logged)"
        log.info("%s", message, extra={FIELDS: found})
