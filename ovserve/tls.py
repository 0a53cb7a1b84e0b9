"""TLS for both doors: the certificate, key and client CA from the command line, checked once at start, as an
ssl.SSLContext for HTTP and as PEM bytes for gRPC's credentials."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError


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
