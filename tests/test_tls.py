"""TLS and mutual TLS on both doors, with certificates made here (a CA, a server, clients) and real clients:
tritonclient gRPC, Python's ssl over HTTP. Plaintext, unknown CAs and missing client certificates are refused,
connection by connection, while the server serves on; bad files stop the start with one line naming the file."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from conftest import RunningServer, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ovserve import tls

X = np.arange(4, dtype=np.float32).reshape(1, 4)
GOOD = {"model_config_list": [{"config": {"name": "m", "base_path": "m"}}]}


class Pki:
    """A CA and certificates it signs, written as PEM files into a folder."""

    def __init__(self, folder: Path, name: str = "test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(subject, self.key.public_key(), days=(-1, 30))
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca = self._write("ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(
        subject: x509.Name, public: ec.EllipticCurvePublicKey, days: tuple[int, int]
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def issue(self, name: str, days: tuple[int, int] = (-1, 30)) -> tuple[Path, Path]:
        """A certificate for `name` (also valid for localhost and 127.0.0.1) and its key: (cert.pem, key.pem)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), days)
            .issuer_name(self.cert.subject)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)), self._write(
            f"{name}.key", key_pem
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def start(repository: Path, pki: Pki, mutual: bool) -> RunningServer:
    models.save(models.add_mul(), repository, "m")
    cert, key = pki.issue("server")
    settings = tls.load(cert, key, pki.ca if mutual else None)
    return RunningServer(models.write_config(repository, GOOD), tls=settings)


@pytest.fixture
def tls_server(repository: Path, pki: Pki) -> Iterator[RunningServer]:
    server = start(repository, pki, mutual=False)
    yield server
    server.stop()


@pytest.fixture
def mtls_server(repository: Path, pki: Pki) -> Iterator[RunningServer]:
    server = start(repository, pki, mutual=True)
    yield server
    server.stop()


def grpc_infer(port: int, ca: Path | None, client: tuple[Path, Path] | None = None) -> np.ndarray:
    """tritonclient's gRPC infer over TLS (ca given) or plaintext."""
    options = {}
    if ca is not None:
        options = {"ssl": True, "root_certificates": str(ca)}
        if client is not None:
            options |= {"certificate_chain": str(client[0]), "private_key": str(client[1])}
    triton = triton_grpc.InferenceServerClient(f"localhost:{port}", **options)  # type: ignore[arg-type]
    tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(X)
    try:
        result: np.ndarray = triton.infer("m", [tensor], client_timeout=10).as_numpy("y")
    finally:
        triton.close()
    return result


def rest_infer(port: int, context: ssl.SSLContext | None) -> tuple[int, dict[str, object]]:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X.ravel().tolist()}]})
    connection = (
        http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        if context is not None
        else http.client.HTTPConnection("localhost", port, timeout=10)
    )
    try:
        connection.request("POST", "/v2/models/m/infer", body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def client_context(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(*client)
    return context


def test_tls_on_both_doors_and_plaintext_refused(tls_server: RunningServer, pki: Pki) -> None:
    np.testing.assert_array_equal(grpc_infer(tls_server.port, pki.ca), (X + 1) * 2)
    status, answer = rest_infer(tls_server.rest_port, client_context(pki.ca))
    assert status == 200 and answer["outputs"][0]["data"] == [2, 4, 6, 8]  # type: ignore[index]

    with pytest.raises(Exception, match="UNAVAILABLE"):  # plaintext gRPC to the TLS port
        grpc_infer(tls_server.port, None)
    with pytest.raises((ConnectionError, http.client.HTTPException)):  # plaintext HTTP to the TLS port
        rest_infer(tls_server.rest_port, None)
    stranger = Pki(pki.folder / "stranger", "another CA")  # the client does not trust the server's CA
    with pytest.raises(ssl.SSLCertVerificationError):
        rest_infer(tls_server.rest_port, client_context(stranger.ca))
    status, _ = rest_infer(tls_server.rest_port, client_context(pki.ca))  # the server serves on
    assert status == 200


def test_mutual_tls_requires_a_client_certificate_from_the_ca(mtls_server: RunningServer, pki: Pki) -> None:
    client = pki.issue("client")
    np.testing.assert_array_equal(grpc_infer(mtls_server.port, pki.ca, client), (X + 1) * 2)
    assert rest_infer(mtls_server.rest_port, client_context(pki.ca, client))[0] == 200

    with pytest.raises(Exception, match="UNAVAILABLE"):  # no client certificate
        grpc_infer(mtls_server.port, pki.ca)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        rest_infer(mtls_server.rest_port, client_context(pki.ca))
    stranger = Pki(pki.folder / "stranger-mtls", "another CA").issue("intruder")  # signed by a CA not trusted
    with pytest.raises(Exception, match="UNAVAILABLE"):
        grpc_infer(mtls_server.port, pki.ca, stranger)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        rest_infer(mtls_server.rest_port, client_context(pki.ca, stranger))
    assert rest_infer(mtls_server.rest_port, client_context(pki.ca, client))[0] == 200  # serves on


def test_bad_tls_files_stop_the_start_with_one_line_naming_the_file(tmp_path: Path, pki: Pki) -> None:
    models.save(models.add_mul(), tmp_path, "m")
    cert, key = pki.issue("server")
    _, other_key = pki.issue("other")
    expired, expired_key = pki.issue("expired", days=(-60, -1))
    (tmp_path / "junk.pem").write_text("not a certificate")
    cases = [
        (["--tls_cert", str(tmp_path / "missing.pem"), "--tls_key", str(key)], f"--tls_cert {tmp_path}/missing.pem"),
        (["--tls_cert", str(cert), "--tls_key", str(other_key)], "does not match the certificate"),
        (["--tls_cert", str(expired), "--tls_key", str(expired_key)], "the certificate expired on"),
        (["--tls_cert", str(tmp_path / "junk.pem"), "--tls_key", str(key)], "not a PEM file"),
        (["--tls_cert", str(cert)], "--tls_cert and --tls_key go together"),
        (["--tls_client_ca", str(pki.ca)], "--tls_client_ca needs --tls_cert and --tls_key"),
    ]
    for flags, expected in cases:
        result = subprocess.run(
            [sys.executable, "-m", "ovserve", "--model_name", "m", "--model_path", str(tmp_path / "m"), "--port",
             str(free_port()), *flags],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (flags, result.stderr)


def test_refused_handshakes_are_logged_at_most_once_a_second(tmp_path: Path, pki: Pki, caplog: Any) -> None:
    """A burst of plaintext clients on both doors: the server's log gets one line naming the peer and the reason
    (gRPC's own per-handshake lines are off by default), and the next line after a quiet second counts the rest."""
    models.save(models.add_mul(), tmp_path, "m")
    cert, key = pki.issue("server")
    grpc_port, rest_port = free_port(), free_port()
    command = ["--model_name", "m", "--model_path", str(tmp_path / "m"), "--port", str(grpc_port),
               "--rest_port", str(rest_port), "--tls_cert", str(cert), "--tls_key", str(key)]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    server = subprocess.Popen([sys.executable, "-m", "ovserve", *command], stderr=subprocess.PIPE, text=True,
                              env=environment)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while rest_infer_or_none(rest_port, client_context(pki.ca)) != 200:
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.1)
        for _ in range(2):
            for port in (rest_port, grpc_port) * 10:
                with socket.create_connection(("127.0.0.1", port)) as connection:
                    connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    with contextlib.suppress(OSError):
                        connection.recv(100)
            time.sleep(1.2)
        rest_infer_or_none(rest_port, client_context(pki.ca, None), plaintext=True)  # one more: a line with the count
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[1]
    lines = [line for line in log.splitlines() if "TLS handshake refused" in line]
    assert 2 <= len(lines) <= 4, log
    assert all("from 127.0.0.1:" in line and "plaintext HTTP sent to a TLS port" in line for line in lines), lines
    assert "more since the last such line)" in lines[-1] or "more since the last such line)" in lines[-2], lines
    assert "Handshake failed" not in log  # gRPC's core, one line per connection, is quiet unless asked


def rest_infer_or_none(port: int, context: ssl.SSLContext, plaintext: bool = False) -> int | None:
    try:
        return rest_infer(port, None if plaintext else context)[0]
    except (OSError, http.client.HTTPException):
        return None


def test_the_refusal_log_counts_what_it_left_out(caplog: Any) -> None:
    refusals = tls.Refusals(interval=0.2)
    error = ssl.SSLError(1, "[SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE] peer did not return a certificate")
    error.reason = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    with caplog.at_level(logging.INFO, logger="ovserve.tls"):
        for port in range(5):
            refusals.refused(("10.0.0.7", 40000 + port), error)
        time.sleep(0.25)
        refusals.refused(("10.0.0.8", 50000), OSError("reset"))
    assert [r.getMessage() for r in caplog.records] == [
        "TLS handshake refused from 10.0.0.7:40000: no client certificate (mutual TLS requires one)",
        "TLS handshake refused from 10.0.0.8:50000: reset (4 more since the last such line)",
    ]
    assert refusals.count == 6
