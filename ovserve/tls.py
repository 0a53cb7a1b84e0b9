"""TLS for both doors: the certificate, key and client CA from the command line, checked once at start, as an
ssl.SSLContext for HTTP and as PEM bytes for gRPC's credentials."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .logs import Throttle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tls:
    """A server certificate chain and its key, and with `client_ca` mutual TLS: clients must present a
    certificate that CA signed."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext  # for the HTTP server

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


def _read(flag: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read it: {e.strerror}") from e
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
    return data


def _not_expired(flag: str, path: Path) -> None:
    decode: Any = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:  # not in this Python: the handshake will tell
        return
    try:
        not_after = decode(str(path))["notAfter"]
    except (ssl.SSLError, KeyError, ValueError) as e:
        raise ConfigError(f"{flag} {path}: not a certificate: {e}") from e
    if ssl.cert_time_to_seconds(not_after) < time.time():
        raise ConfigError(f"{flag} {path}: the certificate expired on {not_after}")


def load(cert: Path, key: Path, client_ca: Path | None = None) -> Tls:
    """Read and check the files (readable, PEM, key matching the certificate, certificate not expired); raises
    ConfigError naming the flag and file."""
    cert_pem, key_pem = _read("--tls_cert", cert), _read("--tls_key", key)
    ca_pem = _read("--tls_client_ca", client_ca) if client_ca is not None else None
    _not_expired("--tls_cert", cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        problem = "does not match the certificate" if "KEY_VALUES_MISMATCH" in str(e) else f"cannot be used: {e}"
        raise ConfigError(f"--tls_key {key}: {problem} {cert}") from e
    if client_ca is not None:
        try:
            context.load_verify_locations(client_ca)
        except ssl.SSLError as e:
            raise ConfigError(f"--tls_client_ca {client_ca}: not a CA certificate: {e}") from e
        context.verify_mode = ssl.CERT_REQUIRED
    return Tls(cert_pem, key_pem, ca_pem, context)


# Why OpenSSL refused a client, in words an operator can act on (OpenSSL's reason codes).
_REASONS = {
    "HTTP_REQUEST": "plaintext HTTP sent to a TLS port",
    "WRONG_VERSION_NUMBER": "not TLS, or a TLS version below 1.2",
    "UNSUPPORTED_PROTOCOL": "a TLS version below 1.2",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate (mutual TLS requires one)",
    "CERTIFICATE_VERIFY_FAILED": "a client certificate --tls_client_ca did not sign",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this server's certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected this server's certificate",
}


class Refusals:
    """Refused TLS handshakes, logged one line at most every `interval` seconds; the line says how many were left
    out since the last one, so a scanner or a misconfigured fleet cannot flood the log."""

    def __init__(self, interval: float = 1.0) -> None:
        self.count = 0  # every refusal since the start
        self._throttle = Throttle(interval, 1)

    def refused(self, peer: Any, error: BaseException) -> None:
        self.count += 1
        unlogged = self._throttle.admit("refused", time.monotonic())
        if unlogged is None:
            return
        reason = getattr(error, "reason", None)
        why = _REASONS.get(reason, reason) if isinstance(reason, str) else str(error) or type(error).__name__
        more = f" ({unlogged} more since the last such line)" if unlogged else ""
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "a client"
        log.info("TLS handshake refused from %s: %s%s", where, why, more)


class _ServerSide(sslproto.SSLProtocol):
    """asyncio's TLS for one accepted connection, telling `refusals` when the handshake fails (asyncio itself says
    nothing unless the loop runs in debug mode)."""

    def __init__(self, app: asyncio.Protocol, context: ssl.SSLContext, refusals: Refusals) -> None:
        super().__init__(asyncio.get_running_loop(), app, context, None, server_side=True)  # type: ignore[arg-type]
        self._refusals = refusals

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            peer = self._transport.get_extra_info("peername") if self._transport is not None else None
            self._refusals.refused(peer, handshake_exc)
        super()._on_handshake_complete(handshake_exc)


def wrapping(
    make: Callable[..., asyncio.Protocol], context: ssl.SSLContext, refusals: Refusals
) -> Callable[..., asyncio.BaseProtocol]:
    """A protocol factory serving `make`'s connections over TLS with `context`, refused handshakes logged."""

    def tls(**kwargs: Any) -> asyncio.BaseProtocol:
        return _ServerSide(make(**kwargs), context, refusals)

    return tls
