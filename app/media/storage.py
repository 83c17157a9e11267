"""Media storage: one interface, two backends, clips under opaque random names.

``store_bytes`` writes a clip to the configured backend (``BLINDPAIR_STORAGE``: ``local`` or ``s3``) and says
where (``StoredFile.store``); the clip row keeps that word (``Clip.storage``), and ``read_bytes`` /
``delete_media`` take it back. Nothing else in the app knows what a backend is, so a study can hold clips in
both while ``blindpair storage migrate`` moves them, and a web server reads a clip wherever its worker put it.

Names are ``secrets.token_hex(16) + suffix``: random, encoding no model, prompt or study. The S3 key is the
configured prefix plus that name, nothing more.

Failures come in three kinds, each with a message that says what to do:
``StorageUnavailable`` (the store did not answer: retry later, 503 to a browser), ``StorageConfigError``
(credentials refused, bucket missing: names the setting) and ``ObjectMissing`` (the store answered, the object
is not there).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from app.config import Settings, get_settings

LOCAL = "local"
S3 = "s3"
STORES = (LOCAL, S3)
# The names this module makes (``new_name``) and the temp files of LocalBackend.put. Listing and the orphan
# sweep only ever see these: a media folder or bucket prefix that also holds other files keeps them.
OUR_NAME = re.compile(r"[0-9a-f]{32}\.[A-Za-z0-9]{1,8}")
OUR_TEMP = re.compile(r"\.tmp-[A-Za-z0-9_]{1,32}")


class StorageError(Exception):
    """A store could not do what was asked; the message says what happened and what to do."""


class StorageUnavailable(StorageError):
    """The store did not answer (down, unreachable, timing out): worth another try later."""


class StorageConfigError(StorageError):
    """The store answered but refuses us: wrong credentials, missing bucket, no permission."""


class ObjectMissing(StorageError, FileNotFoundError):
    """The store answered and has no object under that name (a FileNotFoundError, as the local file is)."""


@dataclass(frozen=True)
class StoredFile:
    storage_name: str
    sha256: str
    size_bytes: int
    store: str = LOCAL


@dataclass(frozen=True)
class StoredObject:
    name: str
    size_bytes: int
    modified: datetime


class Backend(Protocol):
    kind: str

    def put(self, name: str, data: bytes) -> None: ...
    def get(self, name: str) -> bytes: ...
    def delete(self, name: str) -> None: ...
    def exists(self, name: str) -> bool: ...
    def list(self) -> Iterator[StoredObject]: ...
    def describe(self) -> str: ...
    def probe(self) -> None: ...


# --------------------------------------------------------------------------------------------------- local


def media_root() -> Path:
    root = get_settings().resolved_media_dir
    root.mkdir(parents=True, exist_ok=True)
    return root


def media_path(storage_name: str) -> Path:
    """Resolve a stored name to its local path; a name that would leave the media folder is refused."""
    root = media_root()
    path = (root / storage_name).resolve()
    if path.parent != root or not storage_name or "/" in storage_name or "\\" in storage_name:
        raise ValueError(f"invalid media name {storage_name!r}")
    return path


class LocalBackend:
    """Files in ``BLINDPAIR_MEDIA_DIR``, written atomically and durably."""

    kind = LOCAL

    def put(self, name: str, data: bytes) -> None:
        """Temp file, fsync, rename, fsync of the folder.

        No reader ever sees a half file (the rename is atomic), and once this returns the file survives a crash
        of the machine: fsync(2) says syncing a file does not sync its directory entry, so without the folder's
        fsync a power cut could lose the rename while the database row that names the file (committed next)
        survives.
        """
        root = media_root()
        target = media_path(name)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-")
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(root)

    def get(self, name: str) -> bytes:
        try:
            return media_path(name).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no file {name} in the media folder {media_root()}") from exc

    def delete(self, name: str) -> None:
        media_path(name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return media_path(name).is_file()

    def list(self) -> Iterator[StoredObject]:
        """Every file of ours, temp files of interrupted writes included (the orphan sweep removes old ones)."""
        for entry in os.scandir(media_root()):
            if (OUR_NAME.fullmatch(entry.name) or OUR_TEMP.fullmatch(entry.name)) and entry.is_file(
                    follow_symlinks=False):
                st = entry.stat()
                yield StoredObject(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def describe(self) -> str:
        return f"the local folder {get_settings().resolved_media_dir}"

    def probe(self) -> None:
        root = get_settings().resolved_media_dir
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageConfigError(f"the media folder {root} cannot be made ({exc.strerror}); set "
                                     "BLINDPAIR_MEDIA_DIR to a writable folder") from exc
        if not os.access(root, os.W_OK):
            raise StorageConfigError(f"the media folder {root} is not writable; fix its permissions or set "
                                     "BLINDPAIR_MEDIA_DIR")


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder to fsync it
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------------ s3

# Error codes by which an S3 server says the request was understood and refused for our credentials.
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden",
                     "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}
_MISSING_BUCKET = {"NoSuchBucket"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}


class S3Backend:
    """An S3-compatible bucket through boto3.

    Why boto3 (over obstore or s3fs): it is the reference client every S3-compatible vendor tests against
    (SeaweedFS, MinIO, R2 and GCS's interoperability mode document it), it reads credentials from the whole
    standard AWS chain (environment, ``AWS_PROFILE``, SSO, instance and container roles) without code here, its
    "standard" retry mode retries throttling and 5xx answers with jittered exponential backoff, and its bodies
    stream and accept byte ranges. obstore is faster per request but its error types say less about *why* a
    request failed (wrong key vs missing bucket), which the operator messages below rely on; s3fs adds an
    fsspec layer and an event loop this code does not need. Clips are a few MB at most, so one ``put_object``
    each (atomic on every S3 server: the object appears whole or not at all) beats multipart uploads.
    """

    kind = S3

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.endpoint = settings.s3_endpoint_url or None
        timeout = settings.storage_timeout_seconds
        # Few, short retries: a worker retries an upload itself with a longer backoff, and a web request
        # must answer 503 quickly rather than hang while the store is down.
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=min(timeout, 3.0),
                        read_timeout=timeout, max_pool_connections=64,
                        # Only where an operation needs one: some S3-compatible servers reject the newer
                        # default CRC32 trailers on PUT.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        s3={"addressing_style": "path" if self.endpoint else "auto"})
        from botocore.exceptions import ProfileNotFound

        try:
            session = boto3.session.Session()
            self.client: Any = session.client("s3", endpoint_url=self.endpoint,
                                              region_name=settings.s3_region or None, config=config)
        except ProfileNotFound as exc:
            raise StorageConfigError(f"AWS_PROFILE names a profile that is not in the AWS config ({exc}); set it "
                                     "to one that is, or unset it") from exc

    def key(self, name: str) -> str:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"invalid media name {name!r}")
        return self.prefix + name

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else " on AWS S3"
        return f"the S3 bucket {self.bucket!r}" + (f" under {self.prefix!r}" if self.prefix else "") + where

    def _call(self, what: str, name: str | None, fn: Any, **kw: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            return fn(**kw)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _MISSING_BUCKET:
                raise StorageConfigError(self._no_bucket()) from exc
            if code in _MISSING_KEY and name is not None:
                raise ObjectMissing(f"no object {self.key(name)!r} in {self.describe()}") from exc
            if code in _MISSING_KEY:  # HEAD of a bucket answers a bare 404 when the bucket is missing
                raise StorageConfigError(self._no_bucket()) from exc
            if code in _CREDENTIAL_CODES:
                raise StorageConfigError(self._credentials_refused(code)) from exc
            if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError"}:
                raise StorageUnavailable(f"{what}: {self.describe()} answered {code or status}; try again "
                                         "later") from exc
            raise StorageError(f"{what}: {self.describe()} refused the request ({code}: "
                               f"{exc.response.get('Error', {}).get('Message', '')})") from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageConfigError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or "
                f"run with an instance role) for {self.describe()}") from exc
        except (EndpointConnectionError, BotoCoreError, OSError) as exc:
            raise StorageUnavailable(f"{what}: {self.describe()} cannot be reached ({type(exc).__name__}); check "
                                     "that it is running and BLINDPAIR_S3_ENDPOINT_URL is right") from exc

    def _no_bucket(self) -> str:
        return (f"the bucket {self.bucket!r} does not exist at "
                f"{self.endpoint or 'AWS S3'}: check BLINDPAIR_S3_BUCKET, or create it with "
                "`blindpair storage check --create-bucket`")

    def _credentials_refused(self, code: str) -> str:
        return (f"{self.describe()} refused our credentials ({code}): check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that they may read, write, list and delete in "
                "BLINDPAIR_S3_BUCKET")

    def put(self, name: str, data: bytes) -> None:
        # ContentMD5 makes the server refuse a body that arrived damaged; the object only exists once whole.
        import base64

        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self._call("storing a clip", None, self.client.put_object, Bucket=self.bucket, Key=self.key(name),
                   Body=data, ContentMD5=md5, ContentType="application/octet-stream")

    def get(self, name: str) -> bytes:
        from botocore.exceptions import BotoCoreError

        response = self._call("reading a clip", name, self.client.get_object, Bucket=self.bucket,
                              Key=self.key(name))
        try:
            return bytes(response["Body"].read())
        except (BotoCoreError, OSError) as exc:  # the connection dropped mid-body
            raise StorageUnavailable(f"reading a clip: {self.describe()} stopped answering mid-object") from exc

    def delete(self, name: str) -> None:
        self._call("deleting a clip", name, self.client.delete_object, Bucket=self.bucket, Key=self.key(name))

    def exists(self, name: str) -> bool:
        try:
            self._call("looking for a clip", name, self.client.head_object, Bucket=self.bucket, Key=self.key(name))
        except ObjectMissing:
            return False
        return True

    def list(self) -> Iterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("listing the bucket", None, lambda: iter(paginator.paginate(Bucket=self.bucket,
                                                                                        Prefix=self.prefix)))
        while True:
            page = self._call("listing the bucket", None, lambda: next(pages, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix):]
                if OUR_NAME.fullmatch(name):  # a "folder" or another program's object under the prefix is not ours
                    yield StoredObject(name, int(item["Size"]), item["LastModified"])

    def probe(self) -> None:
        """Whether the bucket answers to our credentials: raises the kind of failure, with what to do."""
        self._call("checking the bucket", None, self.client.head_bucket, Bucket=self.bucket)
        # HEAD answers a bare 404/403 without a code body; reading a listing tells a missing bucket from a
        # refused key on servers that answer HEAD of a missing bucket with 403.
        self._call("checking the bucket", None, self.client.list_objects_v2, Bucket=self.bucket,
                   Prefix=self.prefix, MaxKeys=1)

    def create_bucket(self) -> None:
        kw: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1" and not self.endpoint:
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._call("creating the bucket", None, self.client.create_bucket, **kw)


# ---------------------------------------------------------------------------------------------- the port

_lock = threading.Lock()
_s3_cache: dict[tuple[str, str, str, str, float], S3Backend] = {}


def backend(store: str | None = None) -> Backend:
    """The backend named ``store`` (``local`` or ``s3``), or the configured one for new clips."""
    settings = get_settings()
    store = store or settings.storage
    if store == LOCAL:
        return LocalBackend()
    if store == S3:
        if not settings.s3_bucket:
            raise StorageConfigError("a clip is stored in S3 but BLINDPAIR_S3_BUCKET is empty: set the S3 settings "
                                     "(BLINDPAIR_S3_BUCKET, BLINDPAIR_S3_ENDPOINT_URL) where this process runs")
        ident = (settings.s3_endpoint_url, settings.s3_bucket, settings.s3_prefix, settings.s3_region,
                 settings.storage_timeout_seconds)
        with _lock:  # boto3 clients are thread-safe once made; making one is not
            if ident not in _s3_cache:
                _s3_cache[ident] = S3Backend(settings)
            return _s3_cache[ident]
    raise ValueError(f"unknown store {store!r}; expected one of {', '.join(STORES)}")


def reset_backends() -> None:
    """Forget the S3 clients made so far (after credentials change in the environment: tests, a reload)."""
    with _lock:
        _s3_cache.clear()


def new_name(suffix: str = ".gif") -> str:
    return secrets.token_hex(16) + suffix


def store_bytes(data: bytes, suffix: str = ".gif", *, store: str | None = None) -> StoredFile:
    """Write ``data`` under a fresh random name in the configured store (or ``store``); once this returns the
    object is whole and durable. Record it in the database only afterwards."""
    target = backend(store)
    name = new_name(suffix)
    target.put(name, data)
    return StoredFile(name, hashlib.sha256(data).hexdigest(), len(data), target.kind)


def object_key(storage_name: str, store: str) -> str:
    """The object's key in its store (the S3 key, with the configured prefix; the file name in the folder),
    for the clips manifest and the operator. Read from the settings, so no store is contacted."""
    return (get_settings().s3_prefix if store == S3 else "") + storage_name


def read_bytes(storage_name: str, store: str) -> bytes:
    return backend(store).get(storage_name)


def delete_media(storage_name: str, store: str) -> None:
    """Remove a stored object; a missing one is fine."""
    try:
        backend(store).delete(storage_name)
    except ObjectMissing:
        pass
