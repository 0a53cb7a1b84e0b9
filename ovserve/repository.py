"""Where a model's version folders live, a local directory or an s3:// prefix: listing, fetching, clean-up."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from . import versions
from .config import S3Path
from .errors import LoadError

# What a version's files looked like when listed: (relative key, size, ETag) per object for S3, None for local
# folders. A version that failed to load is tried again when this changes (plan.plan_versions).
Files = tuple[tuple[str, int, str], ...]
Stamp = Files | None


class Repository(Protocol):
    """The version folders of one model; every method blocks (call them in a worker thread)."""

    where: str  # the base path as the user wrote it, for messages

    def scan(self) -> dict[int, Stamp]:
        """Versions present now (docs/configuration.md#versions); raises LoadError when the base path cannot be
        listed."""
        ...

    def fetch(self, number: int, stamp: Stamp) -> Path:
        """The model file of a version on local disk (downloaded first if remote); raises LoadError."""
        ...

    def release(self, number: int) -> None:
        """The version is no longer served: drop what fetch downloaded for it."""
        ...


def connect(base_path: Path | S3Path, storage: Storage) -> Repository:
    """The repository behind a model's base_path (no I/O until it is used)."""
    if isinstance(base_path, S3Path):
        return S3Repository(base_path, storage)
    return LocalRepository(base_path)


class LocalRepository:
    """Version folders on a local filesystem, read in place."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = base_path
        self.where = str(base_path)

    def scan(self) -> dict[int, Stamp]:
        try:
            return dict.fromkeys(versions.scan(self.base_path))
        except OSError as e:
            raise LoadError("PATH_INVALID", f"{self.where}: cannot list: {e}") from e

    def fetch(self, number: int, stamp: Stamp) -> Path:
        folder = self.base_path / str(number)
        try:
            return versions.model_file(folder)
        except OSError as e:  # gone since it was listed, or not readable
            raise LoadError("PATH_INVALID", f"The provided base path is invalid or doesn't exists: {folder}") from e

    def release(self, number: int) -> None:
        pass  # the user's files stay where they are


class Storage:
    """What the S3 repositories of one server share: one client (thread-safe, built on first use from the
    environment) and one download directory, removed by close()."""

    def __init__(self, environ: Mapping[str, str] | None = None, page_size: int = 1000) -> None:
        self._environ = os.environ if environ is None else environ
        self.page_size = page_size  # keys per listing request (S3's maximum is 1000)
        self._lock = threading.Lock()
        self._client: Any = None
        self._root: Path | None = None
        self._closed = False
        self.anonymous = False  # no credentials were found: requests go unsigned (public buckets)
        self.endpoint = ""

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        import boto3  # imported on first use: servers without S3 repositories never pay for it
        from botocore import UNSIGNED
        from botocore.config import Config

        env = self._environ
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        )
        endpoint = env.get("S3_ENDPOINT", "").strip()  # OVMS's name, then boto3's own ones
        if endpoint and "://" not in endpoint:
            endpoint = ("http://" if env.get("S3_USE_HTTPS", "1").lower() in ("0", "false") else "https://") + endpoint
        endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3", "") or env.get("AWS_ENDPOINT_URL", "")
        options: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 60}
        if endpoint:  # S3-compatible stores (MinIO, Ceph, ...) rarely serve bucket-named host names
            options["s3"] = {"addressing_style": "path"}
        if session.get_credentials() is None:  # as OVMS: anonymous access to public buckets
            options["signature_version"] = UNSIGNED
            self.anonymous = True
        client = session.client("s3", endpoint_url=endpoint or None, config=Config(**options))
        self.endpoint = client.meta.endpoint_url
        return client

    def folder(self, label: str) -> Path:
        """A new empty directory for one download."""
        with self._lock:
            if self._closed:
                raise LoadError("FILE_INVALID", "the server is stopping")
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="ovserve-s3-"))
            return Path(tempfile.mkdtemp(prefix=label, dir=self._root))

    @property
    def root(self) -> Path | None:
        """The download directory, once something was downloaded."""
        return self._root

    def close(self) -> None:
        """Remove every download (the server stops)."""
        with self._lock:
            self._closed = True
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None


class S3Repository:
    """Version "folders" (key prefixes) under s3://bucket/prefix; a version is downloaded to a directory of its
    own before it loads, and that directory is removed when the version retires."""

    def __init__(self, location: S3Path, storage: Storage) -> None:
        self.location = location
        self.where = str(location)
        self._storage = storage
        self._base = f"{location.prefix}/" if location.prefix else ""
        self._label = re.sub(r"[^\w.-]", "_", location.prefix.rsplit("/", 1)[-1] or location.bucket)[:40]
        self._downloads: dict[int, Path] = {}
        self._lock = threading.Lock()

    def scan(self) -> dict[int, Stamp]:
        """One paginated listing of everything under the prefix, grouped by numeric first component."""
        found: dict[int, list[tuple[str, int, str]]] = {}
        listed = False
        try:
            for item in self._objects(self._base):
                listed = True
                name, slash, rest = item["Key"][len(self._base) :].partition("/")
                version = versions.number(name) if slash else None
                if version is not None:
                    found.setdefault(version, []).append((rest, int(item["Size"]), str(item.get("ETag", ""))))
        except Exception as e:
            raise self._failure(e, "cannot list") from e
        if not listed:
            raise LoadError(
                "PATH_INVALID", f"The provided base path is invalid or doesn't exists: {self.where} (no objects)"
            )
        return {number: tuple(sorted(files)) for number, files in found.items()}

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = (
            self._storage.client()
            .get_paginator("list_objects_v2")
            .paginate(
                Bucket=self.location.bucket, Prefix=prefix, PaginationConfig={"PageSize": self._storage.page_size}
            )
        )
        for page in pages:
            yield from page.get("Contents", ())

    def fetch(self, number: int, stamp: Stamp) -> Path:
        """Download the objects listed in `stamp` (what scan saw), then pick the model file as for a local
        folder; a version caught half-uploaded fails here like a half-copied local folder."""
        self.release(number)
        shown, doing = f"{self.where}/{number}", "cannot make a download directory"
        try:
            folder = self._storage.folder(f"{self._label}-{number}-")
            with self._lock:
                self._downloads[number] = folder
            client = self._storage.client()
            for relative, _size, _etag in stamp or ():
                if relative.endswith("/"):
                    continue  # an empty "folder" marker object
                parts = PurePosixPath(relative).parts
                if relative.startswith("/") or ".." in parts:
                    raise LoadError("FILE_INVALID", f"{shown}: refusing the object key {relative!r}")
                doing = f"cannot download {number}/{relative}"
                target = folder.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(self.location.bucket, f"{self._base}{number}/{relative}", str(target))
            return versions.model_file(folder, shown)
        except LoadError:
            self.release(number)
            raise
        except Exception as e:  # botocore's errors, and the local disk's (full, not writable)
            self.release(number)
            raise self._failure(e, doing) from e

    def release(self, number: int) -> None:
        with self._lock:
            folder = self._downloads.pop(number, None)
        if folder is not None:  # a few files, one per model part: removing them is quick
            shutil.rmtree(folder, ignore_errors=True)

    def _failure(self, error: Exception, doing: str) -> LoadError:
        """A clear message from a botocore error: the s3 path, what failed and what to check."""
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as EndpointError

        if isinstance(error, ClientError):
            details = error.response.get("Error", {})
            code, text = str(details.get("Code", "")), str(details.get("Message", "")) or str(error)
            http = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return LoadError("S3_BUCKET_NOT_FOUND", f"{self.where}: bucket {self.location.bucket!r} does not exist")
            if http in (401, 403) or code in _ACCESS_DENIED:
                how = (
                    "no credentials were found, so the request was anonymous"
                    if self._storage.anonymous
                    else "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
                )
                return LoadError("S3_INVALID_ACCESS", f"{self.where}: access denied ({code}: {text}); {how}")
            return LoadError("S3_FAILED", f"{self.where}: {doing} ({code or http}: {text})")
        if isinstance(error, (EndpointError, HTTPClientError)):  # refused, timed out, or closed before an answer
            endpoint = self._storage.endpoint or "the S3 endpoint"
            message = f"{self.where}: cannot reach {endpoint} (check S3_ENDPOINT or AWS_ENDPOINT_URL): {error}"
            return LoadError("S3_FAILED", message)
        return LoadError("S3_FAILED", f"{self.where}: {doing}: {error}")


_ACCESS_DENIED = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AllAccessDisabled",
}  # fmt: skip
