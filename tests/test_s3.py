"""s3:// model repositories against a real S3 endpoint on loopback (moto in server mode): serving, version
policies, polling for versions uploaded and deleted, and errors that stay with their model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import models
import numpy as np
import pytest
from conftest import Clients, RunningServer, rpc_error, wait_for_states, wait_for_versions
from moto.core import enable_iam_authentication
from moto.server import ThreadedMotoServer

from ovserve import check, cli
from ovserve.config import S3Path, parse_config
from ovserve.errors import LoadError
from ovserve.repository import S3Repository, Storage

REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One moto S3 server for the module (its state is process-wide anyway); every test has its own bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Bucket:
    """A fresh bucket on the test endpoint, and uploads of tiny IR models into it."""

    def __init__(self, client: Any, staging: Path) -> None:
        self.client = client
        self.name = f"models-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.name)
        self.staging = staging

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"

    def upload(
        self, model: Any, prefix: str, version: int, suffixes: tuple[str, ...] = (".xml", ".bin"), acl: str = "private"
    ) -> None:
        """Save `model` as IR and put its files (those with `suffixes`) under prefix/version/."""
        folder = models.save(model, self.staging / uuid.uuid4().hex, "m", version) / str(version)
        for file in sorted(folder.iterdir()):
            if file.suffix in suffixes:
                key = f"{prefix}/{version}/{file.name}"
                self.client.put_object(Bucket=self.name, Key=key, Body=file.read_bytes(), ACL=acl)

    def put(self, key: str, body: bytes = b"") -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def delete(self, prefix: str) -> None:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix).get("Contents", [])
        self.client.delete_objects(Bucket=self.name, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})


@pytest.fixture(scope="module")
def s3_client(endpoint: str) -> Any:
    """The tests' own client (building one takes a while: one for the module)."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def bucket(s3_client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """The environment the server under test reads (credentials, region, S3_ENDPOINT) and a fresh bucket."""
    endpoint = s3_client.meta.endpoint_url
    for name in ("AWS_SESSION_TOKEN", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("S3_ENDPOINT", endpoint)
    # Nothing from this machine's AWS set-up, and no instance-metadata look-up when credentials are missing.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return Bucket(s3_client, tmp_path / "staging")


def images(seed: int = 1, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 3, 4, 4), dtype=np.float32)


def s3_seed_config(base_path: str) -> dict[str, object]:
    document = models.seed_config()
    document["model_config_list"][0]["config"]["base_path"] = base_path
    return document


def test_model_and_pipeline_served_from_s3_then_the_download_is_removed(bucket: Bucket, repository: Path) -> None:
    bucket.upload(models.classifier(), "zoo/resnet", 1)
    server = RunningServer(models.write_config(repository, s3_seed_config(bucket.url("zoo/resnet/"))))
    try:
        assert server.server.config.models[0].base_path == S3Path(bucket.name, "zoo/resnet")  # not resolved
        batch = images()
        expected = models.reference_classifier(batch)
        got = server.predict("resnet", {"0": batch[0]})["1463"]
        np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(server.predict("resnet50DAG", {"0": batch})["1463"], expected, rtol=1e-5, atol=1e-6)
        assert server.metadata("resnet50DAG") == ({"0": ([-1, 1, 3, 4, 4], 1)}, {"1463": ([-1, 1, 10], 1)})
        cache = server.server.manager.storage.root
        assert cache is not None and not cache.is_relative_to(repository)
        assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["model.bin", "model.xml"]
    finally:
        server.stop()
    assert not cache.exists()


def test_ovserve_check_reads_s3_models_only_when_asked(bucket: Bucket, repository: Path) -> None:
    bucket.upload(models.classifier(), "zoo/resnet", 1)
    bucket.put("zoo/resnet/2/readme.txt", b"a version without its model")
    path = models.write_config(repository, s3_seed_config(bucket.url("zoo/resnet")))
    syntax = asyncio.run(check.check(path))
    assert syntax.ok and [str(n) for n in syntax.notes] == [
        f"model resnet: {bucket.url('zoo/resnet')}: only its syntax is checked (--s3 lists and reads it)",
        "pipeline resnet50DAG: not validated: node resnetNode uses model resnet, which was not read (s3://); check "
        "again with --s3",
    ]
    read = asyncio.run(check.check(path, s3=True))
    assert [str(p) for p in read.problems] == [
        "model resnet version 2: File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in "
        f"{bucket.url('zoo/resnet')}/2"
    ]
    assert list(read.models["resnet"]) == [1] and read.valid == ["resnet50DAG"] and not read.notes


def test_single_model_mode_takes_an_s3_model_path_with_anonymous_access(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.upload(models.add_mul(add=1.0, mul=3.0), "public/addmul", 1, acl="public-read")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    endpoint = os.environ["S3_ENDPOINT"]
    monkeypatch.delenv("S3_ENDPOINT")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3's name for it
    flags = ["--model_name", "addmul", "--model_path", bucket.url("public/addmul"), "--port", "9000",
             "--plugin_config", json.dumps(models.F32)]  # fmt: skip
    config, _ = cli.build(cli.parser().parse_args(flags))
    assert config.models[0].base_path == S3Path(bucket.name, "public/addmul")
    server = RunningServer(config)
    try:
        storage = server.server.manager.storage
        assert storage.anonymous and storage.endpoint == endpoint  # no credentials: unsigned requests, as OVMS does
        x = np.random.default_rng(3).random((1, 4), dtype=np.float32)
        np.testing.assert_allclose(server.predict("addmul", {"x": x})["y"], (x + 1) * 3, rtol=1e-6)
    finally:
        server.stop()


def test_version_policies_over_s3(bucket: Bucket, repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT", os.environ["S3_ENDPOINT"].removeprefix("http://"))  # host:port, as OVMS takes
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    for version in (1, 2, 3):
        bucket.upload(models.classifier(seed=version), "zoo/resnet", version)
    bucket.put("zoo/resnet/notes/readme.txt", b"not a version")  # other prefixes are ignored
    bucket.put("zoo/resnet/0/model.xml", b"<not a version either>")
    policies = {
        "latest2": ({"latest": {"num_versions": 2}}, [2, 3]),
        "specific": ({"specific": {"versions": [1, 3, 4]}}, [1, 3]),
        "all": ({"all": {}}, [1, 2, 3]),
        "default": (None, [3]),
    }
    entries = [
        {"name": name, "base_path": bucket.url("zoo/resnet"), "plugin_config": models.F32}
        | ({"model_version_policy": policy} if policy else {})
        for name, (policy, _) in policies.items()
    ]
    server = RunningServer(models.write_config(repository, {"model_config_list": [{"config": e} for e in entries]}))
    try:
        image = images(n=1)
        for name, (_, served) in policies.items():
            rows = server.status(name).model_version_status
            assert [(r.version, r.state) for r in rows] == [(n, 30) for n in served], name  # AVAILABLE
            for number in served:
                got = server.predict(name, {"0": image[0]}, version=number)["1463"]
                np.testing.assert_allclose(got, models.reference_classifier(image, seed=number)[0], rtol=1e-5)
            got = server.predict(name, {"0": image[0]})["1463"]  # the default: the highest served
            np.testing.assert_allclose(got, models.reference_classifier(image, seed=served[-1])[0], rtol=1e-5)
        error = rpc_error(lambda: server.predict("specific", {"0": image[0]}, version=2))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_polling_follows_versions_uploaded_and_deleted_while_requests_keep_succeeding(
    bucket: Bucket, repository: Path
) -> None:
    bucket.upload(models.classifier(seed=1), "zoo/resnet", 1)
    server = RunningServer(models.write_config(repository, s3_seed_config(bucket.url("zoo/resnet"))), poll_seconds=0.1)
    image = images(n=1)
    answers = {seed: models.reference_classifier(image, seed=seed)[0] for seed in (1, 2)}

    def client() -> int:
        out = server.predict("resnet", {"0": image[0]})["1463"]
        matches = [s for s, a in answers.items() if np.allclose(out, a, rtol=1e-5, atol=1e-5)]
        assert len(matches) == 1, out
        return matches[0]

    clients = Clients(resnet=client)
    try:
        wait_for_states(server, {"resnet": ["AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        # A poll catches version 2 half-uploaded (no .bin yet): it fails, version 1 keeps serving ...
        bucket.upload(models.classifier(seed=2), "zoo/resnet", 2, suffixes=(".xml",))
        wait_for_versions(server, "resnet", [(1, 30, "OK"), (2, 20, "UNKNOWN")])  # AVAILABLE; LOADING, failed
        failed = server.server.manager.models["resnet"].versions[2].message
        assert f"no model file (.xml+.bin, .onnx, ...) in {bucket.url('zoo/resnet/2')}" in failed
        # ... and is tried again once its objects change: complete now, it replaces version 1.
        bucket.upload(models.classifier(seed=2), "zoo/resnet", 2, suffixes=(".bin",))
        wait_for_states(server, {"resnet": ["END", "AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        np.testing.assert_allclose(server.predict("resnet", {"0": image[0]})["1463"], answers[2], rtol=1e-5)
        np.testing.assert_allclose(server.predict("resnet50DAG", {"0": image})["1463"][0], answers[2], rtol=1e-5)
        cache = server.server.manager.storage.root
        assert cache is not None and len(list(cache.iterdir())) == 1  # version 1's download went with it

        bucket.delete("zoo/resnet/2/")  # version 2 goes away: version 1 is downloaded and serves again
        wait_for_states(server, {"resnet": ["AVAILABLE", "END"], "resnet50DAG": ["AVAILABLE"]})
        np.testing.assert_allclose(server.predict("resnet", {"0": image[0]})["1463"], answers[1], rtol=1e-5)
        np.testing.assert_allclose(server.predict("resnet50DAG", {"0": image})["1463"][0], answers[1], rtol=1e-5)
    finally:
        clients.stop()
        server.stop()
    assert not clients.failures, clients.failures[0]
    seen = {seed for _, _, seed in clients.answers["resnet"]}
    assert seen == {1, 2} and len(clients.answers["resnet"]) > 10


def test_repository_errors_stay_with_their_model(
    bucket: Bucket, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket.upload(models.classifier(), "zoo/resnet", 1)
    bucket.upload(models.classifier(), "zoo/half", 1, suffixes=(".xml",))
    empty, nowhere = bucket.url("nothing/here"), "s3://no-such-bucket-here/m"
    broken = {  # name: (base_path, why it fails)
        "nobucket": (nowhere, f"{nowhere}: bucket 'no-such-bucket-here' does not exist"),
        "empty": (empty, f"The provided base path is invalid or doesn't exists: {empty} (no objects)"),
        "gcs": ("gs://bucket/m", '"gs://bucket/m": only local paths and s3:// repositories are supported by ovserve'),
    }  # fmt: skip
    paths = {name: path for name, (path, _) in broken.items()}
    paths |= {"half": bucket.url("zoo/half"), "noversions": bucket.url("zoo")}
    document = s3_seed_config(bucket.url("zoo/resnet"))
    document["model_config_list"] += [{"config": {"name": n, "base_path": p}} for n, p in paths.items()]  # type: ignore[operator]
    server = RunningServer(models.write_config(repository, document))
    try:
        batch = images()
        got = server.predict("resnet50DAG", {"0": batch})["1463"]
        np.testing.assert_allclose(got, models.reference_classifier(batch), rtol=1e-5)
        for name, (_, reason) in broken.items():
            (row,) = server.status(name).model_version_status  # version 0: the model failed as a whole
            assert (row.version, row.state, row.status.error_code) == (0, 20, 2), name
            assert row.status.error_message.startswith("UNKNOWN - ") and reason in row.status.error_message
            error = rpc_error(lambda name=name: server.predict(name, {"0": batch[0]}))  # type: ignore[misc]
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert error.details().startswith(f"Model with requested version is not found - model {name}: ")
            assert reason in error.details(), error.details()
            assert f"model {name}: " in caplog.text and reason in caplog.text
        (row,) = server.status("half").model_version_status  # a version without a complete model fails alone
        assert (row.version, row.state, row.status.error_message.partition(" - ")[0]) == (1, 20, "UNKNOWN")
        assert list(server.status("noversions").model_version_status) == []  # objects, but no version prefixes
        assert f"model noversions: no version directories in {bucket.url('zoo')}" in caplog.text
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _hanging_up() -> Iterator[str]:
    """An endpoint on loopback that accepts each connection and closes it without a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join()
        listener.close()


def test_credentials_are_checked_and_an_unreachable_endpoint_is_reported(
    bucket: Bucket, repository: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.upload(models.classifier(), "zoo/resnet", 1)
    iam = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "iam", endpoint_url=endpoint, region_name=REGION
    )
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    model = {"name": "resnet", "base_path": bucket.url("zoo/resnet"), "plugin_config": models.F32}
    config = models.write_config(repository, {"model_config_list": [{"config": model}]})
    image = images(n=1)

    def failure() -> str:
        server = RunningServer(config)
        try:
            assert [r.version for r in server.status("resnet").model_version_status] == [0]  # failed as a whole
            error = rpc_error(lambda: server.predict("resnet", {"0": image[0]}))
            assert error.code() == grpc.StatusCode.NOT_FOUND
            return str(error.details())
        finally:
            server.stop()

    with enable_iam_authentication():  # moto now checks signatures against its IAM users
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        server = RunningServer(config)
        try:
            got = server.predict("resnet", {"0": image[0]})["1463"]
            np.testing.assert_allclose(got, models.reference_classifier(image)[0], rtol=1e-5)
        finally:
            server.stop()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        details = failure()
        assert f"{bucket.url('zoo/resnet')}: access denied (SignatureDoesNotMatch: " in details
        assert "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN" in details

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # boto3's own setting: no retries against a dead endpoint
    with _hanging_up() as rude:  # one endpoint refuses connections, the other accepts and closes them unanswered
        for dead in (f"http://127.0.0.1:{_free_port()}", rude):
            monkeypatch.setenv("S3_ENDPOINT", dead)
            details = failure()
            assert f"{bucket.url('zoo/resnet')}: cannot reach {dead} (check S3_ENDPOINT or AWS_ENDPOINT_URL)" in details


def test_listing_pages_and_downloads_at_the_repository_level(bucket: Bucket, caplog: pytest.LogCaptureFixture) -> None:
    """The listing follows continuation tokens; a fetched version is a local folder until it is released."""
    for version in (1, 2, 3):
        bucket.upload(models.classifier(seed=version), "zoo/resnet", version)
    bucket.put("zoo/resnet/3/variables/extra.txt", b"kept with its folder")
    bucket.put("zoo/evil/1/../../escape.xml", b"<model/>")
    storage = Storage(page_size=2)
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            found = S3Repository(S3Path(bucket.name, "zoo/resnet"), storage).scan()
        listings = [r.getMessage() for r in caplog.records if "list-type=2" in r.getMessage()]
        assert len(listings) == 4 and all("continuation-token" in m for m in listings[1:])  # 7 objects, pages of 2
        assert sorted(found) == [1, 2, 3]
        files = found[3]
        assert files is not None and [f[0] for f in files] == ["model.bin", "model.xml", "variables/extra.txt"]

        s3 = S3Repository(S3Path(bucket.name, "zoo/resnet"), storage)
        model_file = s3.fetch(3, files)
        assert model_file.name == "model.xml" and (model_file.parent / "variables" / "extra.txt").read_bytes()
        assert storage.root is not None and model_file.is_relative_to(storage.root)
        s3.release(3)
        assert not model_file.parent.exists()

        evil = S3Repository(S3Path(bucket.name, "zoo/evil"), storage)
        with pytest.raises(LoadError, match=r"zoo/evil/1: refusing the object key '\.\./\.\./escape\.xml'"):
            evil.fetch(1, evil.scan()[1])
        assert list(storage.root.iterdir()) == []  # a failed fetch leaves nothing behind
    finally:
        storage.close()
    assert storage.root is None


def test_only_plain_positive_integer_prefixes_are_versions(bucket: Bucket) -> None:
    """As for local folders: a prefix of other digits, with a leading zero or beyond int64 is no version (and no
    reason to fail the listing)."""
    bucket.upload(models.classifier(), "zoo/resnet", 2)
    for name in ("²", "01", "0", str(2**63)):
        bucket.put(f"zoo/resnet/{name}/model.onnx", b"not a version")
    storage = Storage()
    try:
        assert sorted(S3Repository(S3Path(bucket.name, "zoo/resnet"), storage).scan()) == [2]
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("base_path", "parsed", "problem"),
    [
        ("s3://bucket/a/b/", S3Path("bucket", "a/b"), ""),
        ("s3://bucket", S3Path("bucket", ""), ""),
        ("s3:///a", S3Path("", "a"), "names no bucket; expected s3://bucket/path"),
        ("s3://bucket/a/../b", S3Path("bucket", "a/../b"), "path must not contain '..'"),
    ],
)
def test_s3_base_paths_are_kept_as_written(tmp_path: Path, base_path: str, parsed: S3Path, problem: str) -> None:
    document = {"model_config_list": [{"config": {"name": "m", "base_path": base_path}}]}
    (model,) = parse_config(document, tmp_path).models
    assert model.base_path == parsed
    assert (problem in model.problems[0]) if problem else model.problems == ()
