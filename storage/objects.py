"""The object store: one protocol, two backends (a local directory and MinIO/S3), same behaviour.

Behaviour every backend shares (tests/test_objectstore.py runs the same suite on both):

- Keys must fit the grammar of :func:`storage.keys.validate_key`; anything else, ``../x`` and
  absolute paths included, raises :class:`InvalidKey` before any I/O.
- ``put`` is atomic and idempotent: readers see the old object or the whole new one, never part
  of one; a source that fails mid-stream leaves the previous object (or none) in place and its
  own exception propagates unchanged. Putting a key twice leaves one object with the latest
  bytes, content type and metadata.
- A missing key raises :class:`NotFound` from ``get`` and ``stat``; ``delete`` of a missing key
  is a no-op, as in S3, so retried deletes are harmless.
- User metadata is ``dict[str, str]`` with lower-case names (``[a-z0-9][a-z0-9_-]*``, given in any
  case) and non-empty printable-ASCII values without surrounding spaces: exactly what survives S3
  headers unchanged (an empty header is dropped), so what comes back is what was put. At most
  2 KiB in all.
- ``etag`` is an opaque version tag: it changes when the bytes change. (It is the MD5 of the
  bytes for the local backend and for single-part S3 uploads; S3 multipart ETags differ.)
- ``list_keys`` yields only keys that fit the grammar, in no promised order: AWS, MinIO and the
  local backend list in byte order, SeaweedFS directory by directory (``a/b`` before ``a-b``).

Where the backends differ, on purpose:

- ``presigned_get_url``: S3 returns a signed URL; the local backend raises :class:`NotSupported`
  (a ``file://`` URL would leak a server path and no browser would fetch it from an HTTP page).
- The local backend refuses a key that is also a "directory" of another key (``a`` next to
  ``a/b``) with :class:`KeyConflict`; S3 allows it. The content-addressed layout never does it.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from storage.errors import StorageError

if TYPE_CHECKING:
    from deepwatch.settings import Settings

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 1024 * 1024
MAX_METADATA_BYTES = 2048  # S3's limit on user metadata (names + values)
MAX_PRESIGN_EXPIRY = timedelta(days=7)  # SigV4's limit

# What put accepts. A str is refused: it could be meant as a path or as content.
PutSource = bytes | bytearray | memoryview | os.PathLike[str] | BinaryIO | Iterable[bytes]

_METADATA_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
_METADATA_VALUE = re.compile(r"[!-~](?:[ -~]*[!-~])?")  # printable ASCII, no outer spaces, not empty
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(?:\s*;[ -~]*)?")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str
    etag: str
    modified: datetime  # time zone aware, UTC
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectStream:
    """The bytes of one object (or one range of it), read front to back, once.

    File-like enough for ``shutil.copyfileobj`` and friends (``read``), iterable in chunks, and a
    context manager: an S3 stream holds an HTTP connection until closed.
    """

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None], length: int, key: str):
        self._read = read
        self._close = close
        self.length = length  # how many bytes this stream yields in all
        self.key = key
        self._remaining = length
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._closed:
            raise ValueError("read from a closed ObjectStream")
        if size is None or size < 0:
            return b"".join(self.iter_chunks())
        want = min(size, self._remaining)
        if want == 0:
            return b""
        data = self._read(want)
        if not data:
            # The backend ran dry before the length it announced: a short object is a broken one.
            raise StorageError(f"object {self.key!r} ended {self._remaining} bytes early")
        self._remaining -= len(data)
        return data

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        while self._remaining > 0:
            yield self.read(chunk_size)

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_chunks()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@runtime_checkable
class ObjectStore(Protocol):
    """What the rest of deepwatch may assume about an object store (see the module docstring)."""

    @property
    def location(self) -> str:
        """Where the objects live, for logs and ``endpoints.json`` (never holds a secret)."""
        ...

    def put(
        self,
        key: str,
        data: PutSource,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` (bytes, a binary file, a path, or an iterable of byte chunks of unknown length)."""
        ...

    def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectStream:
        """The bytes ``[start, end)`` of the object, clamped like a slice: past the end is empty."""
        ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` (a plain string prefix, as in S3), lazily, in no promised order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is a no-op."""
        ...

    def presigned_get_url(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL anyone holding it can GET the object from until ``expires``; may raise NotSupported."""
        ...


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Lower-case the names and refuse what S3 headers would not carry back unchanged."""
    if not metadata:
        return {}
    normal: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"metadata {name!r}: names and values must be strings")
        lower = name.lower()
        if lower.startswith("x-amz-meta-"):
            raise ValueError(f"metadata {name!r}: give the name without the x-amz-meta- prefix")
        if not _METADATA_NAME.fullmatch(lower):
            raise ValueError(f"metadata {name!r}: names are letters, digits, '_' and '-' (at most 128)")
        if lower in normal:
            raise ValueError(f"metadata {name!r}: given twice (names are case-insensitive)")
        if not _METADATA_VALUE.fullmatch(value):
            raise ValueError(f"metadata {name!r}: values are non-empty printable ASCII, no leading/trailing spaces")
        normal[lower] = value
        total += len(lower) + len(value)
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {total} bytes; at most {MAX_METADATA_BYTES} (names + values)")
    return normal


def check_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or len(content_type) > 255 or not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"invalid content type {content_type!r}: expected type/subtype[; parameters]")
    return content_type


def check_range(start: int, end: int | None) -> None:
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"range start must be an int >= 0, not {start!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end < start):
        raise ValueError(f"range end must be an int >= start ({start}), not {end!r}")


def check_expiry(expires: timedelta) -> timedelta:
    if not isinstance(expires, timedelta) or not timedelta(seconds=1) <= expires <= MAX_PRESIGN_EXPIRY:
        raise ValueError(f"expires must be a timedelta from 1 second to 7 days, not {expires!r}")
    return expires


def check_source(data: object) -> None:
    """Refuse a wrong source type before anything is written."""
    if isinstance(data, str):
        raise TypeError("put() takes bytes, a binary file, a Path or an iterable of bytes, not str")
    if isinstance(data, (bytes, bytearray, memoryview, os.PathLike)) or hasattr(data, "read"):
        return
    if not isinstance(data, Iterable):
        raise TypeError(f"put() cannot read from {type(data).__name__}")


def iter_source(data: PutSource, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes | bytearray | memoryview]:
    """The bytes of any put source, chunk by chunk (a Path is opened here and closed when done)."""
    check_source(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield data
    elif isinstance(data, os.PathLike):
        with open(data, "rb") as handle:
            yield from _read_chunks(handle, chunk_size)
    elif hasattr(data, "read"):
        yield from _read_chunks(data, chunk_size)  # type: ignore[arg-type]
    else:
        for chunk in data:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(f"put() source yielded {type(chunk).__name__}, not bytes")
            yield chunk


def _read_chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    while True:
        chunk = handle.read(chunk_size)
        if not chunk:
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"put() source read() returned {type(chunk).__name__}, not bytes (open it in 'rb')")
        yield chunk


class IterReader(io.RawIOBase):
    """A read()-able view of chunks, for clients (minio) that pull a stream of unknown length."""

    def __init__(self, chunks: Iterator[bytes | bytearray | memoryview]):
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        # Fill up to `size` in one call: minio concatenates whatever each read returns, so many
        # small reads would copy each part over and over.
        while not self._done and (size is None or size < 0 or len(self._buffer) < size):
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self._done = True
        if size is None or size < 0:
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_object_store(settings: Settings) -> ObjectStore:
    """The object store ``settings.store_backend`` names; an S3 bucket is created if missing.

    Backends are imported here so that the local default never imports the S3 client.
    """
    if settings.store_backend == "local":
        from storage.objects_local import LocalObjectStore

        return LocalObjectStore(Path(settings.store_path))
    if settings.store_backend == "s3":
        from storage.objects_s3 import S3ObjectStore

        store = S3ObjectStore.from_settings(settings)
        store.ensure_bucket()
        return store
    raise StorageError(f"unknown store_backend {settings.store_backend!r}")
