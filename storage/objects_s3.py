"""The object store on MinIO/S3 (production), through the ``minio`` client.

S3 already gives the guarantees the protocol asks for: a PUT is atomic, a multipart upload is
invisible until completed (and minio aborts it when the source fails), and a missing object is a
404. What this module adds is the shared behaviour: key validation before any request, metadata
normalised to lower-case names without ``x-amz-meta-``, errors mapped to the storage errors, and
streams of unknown length uploaded in parts of ``part_size``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from storage.errors import NotFound, StorageError
from storage.keys import validate_key, validate_prefix
from storage.objects import (
    DEFAULT_CONTENT_TYPE,
    IterReader,
    ObjectInfo,
    ObjectStream,
    PutSource,
    check_content_type,
    check_expiry,
    check_metadata,
    check_range,
    check_source,
    iter_source,
)

if TYPE_CHECKING:
    from deepwatch.settings import Settings

_META_PREFIX = "x-amz-meta-"
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject"}
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 16 * 1024 * 1024


class S3ObjectStore:
    """An :class:`~storage.objects.ObjectStore` in one S3 bucket.

    ``part_size`` applies to sources of unknown length (file objects that cannot seek, iterables):
    up to ``part_size`` x (1 + minio's 3 parallel uploads) bytes are held in memory at once.
    Sources of known length let minio pick the part size.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        endpoint: str | None = None,
        signer: Minio | None = None,
    ):
        """``signer``: a client for the public endpoint, used only to sign presigned URLs (a
        signature covers the host, so a link for browsers must be signed for the host they use)."""
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.signer = signer or client
        self._endpoint = endpoint  # only for location: minio keeps its own copy private

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        if not settings.s3_endpoint:
            raise StorageError("store_backend 's3' needs s3_endpoint")
        access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        endpoint, secure = parse_endpoint(settings.s3_endpoint, settings.s3_secure)
        client = Minio(endpoint, access_key=access, secret_key=secret, secure=secure, region=settings.s3_region)
        signer = None
        if settings.s3_public_url:
            public, public_secure = parse_endpoint(settings.s3_public_url, settings.s3_secure)
            # The region must be known: without it minio would ask the public endpoint, which this
            # process may not reach.
            region = settings.s3_region or "us-east-1"
            signer = Minio(public, access_key=access, secret_key=secret, secure=public_secure, region=region)
        scheme = "https" if secure else "http"
        return cls(client, settings.s3_bucket, endpoint=f"{scheme}://{endpoint}", signer=signer)

    @property
    def location(self) -> str:
        return f"{self._endpoint}/{self.bucket}" if self._endpoint else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.location!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (two stores starting at once may both try)."""
        with self._errors("bucket"):
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # --- writing ----------------------------------------------------------------------------
    def put(
        self,
        key: str,
        data: PutSource,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        key = validate_key(key)
        content_type = check_content_type(content_type)
        # Prefixed here: minio would send a bare name like "content-type" as a real header.
        headers: dict[str, Any] = {_META_PREFIX + name: value for name, value in check_metadata(metadata).items()}
        check_source(data)
        with self._errors(key):
            if isinstance(data, os.PathLike):
                self.client.fput_object(
                    self.bucket, key, os.fspath(data), content_type=content_type, metadata=headers
                )
            else:
                stream, length = self._stream(data)
                self.client.put_object(
                    self.bucket,
                    key,
                    stream,
                    length,
                    content_type=content_type,
                    metadata=headers,
                    part_size=self.part_size if length < 0 else 0,
                )
        # One HEAD more, for the server's own size, etag and time: put() returns what stat() will.
        return self.stat(key)

    def delete(self, key: str) -> None:
        key = validate_key(key)
        with self._errors(key):
            self.client.remove_object(self.bucket, key)  # S3 answers 204 for a missing key too

    # --- reading ----------------------------------------------------------------------------
    def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectStream:
        key = validate_key(key)
        check_range(start, end)
        if end is not None and end == start:
            self.stat(key)  # no request can ask for zero bytes; still say NotFound when missing
            return _empty(key)
        length = 0 if end is None else end - start
        try:
            with self._errors(key):
                response = self.client.get_object(self.bucket, key, offset=start, length=length)
        except StorageError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code == "InvalidRange":
                return _empty(key)  # start at or past the end: an existing object, zero bytes
            raise
        length_header = response.headers.get("Content-Length")
        if length_header is None:  # pragma: no cover - S3 always sends it for GetObject
            response.close()
            response.release_conn()
            raise StorageError(f"the server sent no Content-Length for {key!r}")
        size = int(length_header)

        def close() -> None:
            response.close()
            response.release_conn()

        return ObjectStream(self._guard_read(key, response.read), close, size, key)

    def stat(self, key: str) -> ObjectInfo:
        key = validate_key(key)
        with self._errors(key):
            result = self.client.stat_object(self.bucket, key)
        metadata = {
            name.lower()[len(_META_PREFIX) :]: value
            for name, value in result.metadata.items()
            if name.lower().startswith(_META_PREFIX)
        }
        modified = result.last_modified
        if modified is None:  # pragma: no cover - every S3 server sends Last-Modified
            raise StorageError(f"the server sent no Last-Modified for {key!r}")
        return ObjectInfo(
            key=key,
            size=result.size or 0,
            content_type=result.content_type or DEFAULT_CONTENT_TYPE,
            etag=(result.etag or "").strip('"'),
            modified=modified.astimezone(UTC),
            metadata=metadata,
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        # Validated here, not in the generator: a bad prefix fails at the call.
        return self._list(validate_prefix(prefix))

    def _list(self, prefix: str) -> Iterator[str]:
        with self._errors(prefix or "<all keys>"):
            for item in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                name = item.object_name
                if item.is_dir or name is None:
                    continue
                try:
                    validate_key(name)
                except ValueError:
                    continue  # written by something else; not addressable through this API
                yield name

    def presigned_get_url(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str:
        """Signed locally, without a request: a missing key shows as 404 when the URL is fetched.

        The URL names the public endpoint (``s3_public_url``) when one is set, else the endpoint
        this store talks to.
        """
        key = validate_key(key)
        expires = check_expiry(expires)
        with self._errors(key):
            return self.signer.presigned_get_object(self.bucket, key, expires=expires)

    # --- internals --------------------------------------------------------------------------
    def _stream(self, data: PutSource) -> tuple[BinaryIO, int]:
        """A read()-able source and its length, or -1 (minio then uploads in parts of part_size)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            return io.BytesIO(raw), len(raw)
        if hasattr(data, "read"):
            handle: Any = data
            try:
                here = handle.tell()
                end = handle.seek(0, os.SEEK_END)
                handle.seek(here)
                return handle, end - here
            except (AttributeError, OSError, ValueError):
                return IterReader(iter_source(handle)), -1  # type: ignore[return-value]
        return IterReader(iter_source(data)), -1  # type: ignore[return-value]

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Map the client's errors to storage errors; anything else (the caller's source) passes."""
        try:
            yield
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise NotFound(key, f"s3://{self.bucket}") from None
            if exc.code == "NoSuchBucket":
                raise StorageError(f"bucket {self.bucket!r} does not exist") from exc
            raise StorageError(f"S3 {exc.code} for {key!r} in bucket {self.bucket!r}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StorageError(f"S3 request for {key!r} in bucket {self.bucket!r} failed: {exc}") from exc

    def _guard_read(self, key: str, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        def guarded(size: int) -> bytes:
            with self._errors(key):
                return read(size)

        return guarded


def parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` as is; a URL's scheme decides TLS (it is more specific than ``s3_secure``)."""
    if "://" not in endpoint:
        return endpoint, secure
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StorageError(f"s3_endpoint {endpoint!r}: expected host:port or http(s)://host:port")
    if parts.username or parts.password:
        raise StorageError("s3_endpoint must not hold credentials: use s3_access_key and s3_secret_key")
    return parts.netloc, parts.scheme == "https"


def _empty(key: str) -> ObjectStream:
    return ObjectStream(lambda size: b"", lambda: None, 0, key)
