"""Where an export is written: a local directory, or a prefix in an object store (S3 or local).

A sink writes a file only once its bytes are complete and, when the caller knows the sha256 they
must have (media: the id *is* the sha256), checked: a mismatch raises :class:`ChecksumMismatch`
and nothing becomes visible. ``intact`` is what makes a re-run resume instead of copy again.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from deepwatch.digest import sha256_file
from storage.errors import NotFound, StorageError
from storage.export.model import ChecksumMismatch, ExportError, split_s3_url
from storage.keys import export_prefix, validate_key
from storage.objects import ObjectStore

if TYPE_CHECKING:
    from deepwatch.settings import Settings

CHUNK = 1 << 20
SHA256_METADATA = "sha256"


@dataclass(frozen=True, slots=True)
class Written:
    size: int
    sha256: str


class Sink(Protocol):
    @property
    def location(self) -> str: ...

    def intact(self, path: str, size: int, sha256: str) -> bool:
        """True when ``path`` holds exactly ``size`` bytes hashing to ``sha256``."""
        ...

    def exists(self, path: str) -> bool: ...

    def write(self, path: str, chunks: Iterable[bytes], *, expect_sha256: str | None = None,
              media_id: str | None = None) -> Written:
        """Write ``chunks`` to ``path`` atomically; a wrong ``expect_sha256`` raises before anything shows."""
        ...

    def read(self, path: str) -> bytes | None: ...


def _check(path: str) -> str:
    # Paths are made by the exporter from ids and fixed names; the key grammar is the second lock.
    return validate_key(path)


def _verify(digest: str, expect: str | None, media_id: str | None, where: str) -> None:
    if expect is not None and digest != expect:
        raise ChecksumMismatch(media_id or expect, where, digest)


class DirectorySink:
    """Plain files under a directory, so that any tool (and Hugging Face ``datasets``) reads them."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create the export directory {self.root}: {exc}") from exc

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, path: str) -> Path:
        return self.root.joinpath(*_check(path).split("/"))

    def intact(self, path: str, size: int, sha256: str) -> bool:
        target = self._path(path)
        try:
            if not target.is_file() or target.stat().st_size != size:
                return False
            return sha256_file(target) == sha256
        except OSError:
            return False

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def write(self, path: str, chunks: Iterable[bytes], *, expect_sha256: str | None = None,
              media_id: str | None = None) -> Written:
        target = self._path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create {target.parent}: {exc}") from exc
        # A hidden temp name in the same folder: the rename is atomic, and a crash leaves no file
        # that a re-run (or a dataset loader) would take for a finished one.
        tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "xb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            _verify(digest.hexdigest(), expect_sha256, media_id, path)
            os.replace(tmp, target)
        except OSError as exc:
            raise ExportError(f"cannot write {target}: {exc}") from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        return Written(size, digest.hexdigest())

    def read(self, path: str) -> bytes | None:
        try:
            return self._path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None


class StoreSink:
    """Objects under a prefix of an object store. Each carries its sha256 as metadata: S3 puts are
    atomic, so an object that has it holds the very bytes that were checked before the put, and a
    re-run need not download everything to hash it again."""

    def __init__(self, store: ObjectStore, prefix: str):
        self.store = store
        self.prefix = prefix

    @property
    def location(self) -> str:
        return f"{self.store.location}/{self.prefix}".rstrip("/")

    def _key(self, path: str) -> str:
        return validate_key(self.prefix + _check(path))

    def intact(self, path: str, size: int, sha256: str) -> bool:
        try:
            info = self.store.stat(self._key(path))
        except NotFound:
            return False
        return info.size == size and info.metadata.get(SHA256_METADATA) == sha256

    def exists(self, path: str) -> bool:
        return self.store.exists(self._key(path))

    def write(self, path: str, chunks: Iterable[bytes], *, expect_sha256: str | None = None,
              media_id: str | None = None) -> Written:
        key = self._key(path)
        digest, size = hashlib.sha256(), 0
        # Staged on local disk first: the check must pass before the object exists at all.
        with tempfile.TemporaryFile(prefix="deepwatch-export-") as staged:
            for chunk in chunks:
                staged.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            _verify(digest.hexdigest(), expect_sha256, media_id, path)
            staged.seek(0)
            self._put(key, staged, digest.hexdigest())
        return Written(size, digest.hexdigest())

    def _put(self, key: str, handle: BinaryIO, sha256: str) -> None:
        try:
            self.store.put(key, handle, content_type=_content_type(key), metadata={SHA256_METADATA: sha256})
        except StorageError as exc:
            raise ExportError(f"cannot write {key} to {self.store.location}: {exc}") from exc

    def read(self, path: str) -> bytes | None:
        try:
            with self.store.get(self._key(path)) as stream:
                return stream.read()
        except NotFound:
            return None


_TYPES = {
    "json": "application/json", "jsonl": "application/jsonl", "csv": "text/csv", "md": "text/markdown",
    "parquet": "application/vnd.apache.parquet", "tar": "application/x-tar", "mp4": "video/mp4",
    "webm": "video/webm", "mov": "video/quicktime", "mkv": "video/x-matroska", "jpg": "image/jpeg",
    "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
}  # fmt: skip


def _content_type(key: str) -> str:
    return _TYPES.get(key.rpartition(".")[2].lower(), "application/octet-stream")


def open_sink(out: str, settings: Settings, store: ObjectStore | None = None) -> Sink:
    """The sink ``out`` names (already validated by ExportRequest): ``s3://bucket/prefix`` goes
    through the S3 backend with the settings' endpoint and credentials; ``store:NAME`` is
    ``exports/NAME/`` in the configured object store; anything else is a directory."""
    if out.startswith("s3://"):
        bucket, prefix = split_s3_url(out)
        if not settings.s3_endpoint:
            raise ExportError("an s3:// destination needs the S3 endpoint setting (DEEPWATCH_S3_ENDPOINT)")
        from storage.objects_s3 import S3ObjectStore

        try:
            s3 = S3ObjectStore.from_settings(settings.model_copy(update={"s3_bucket": bucket}))
            s3.ensure_bucket()
        except StorageError as exc:
            raise ExportError(f"cannot reach the S3 bucket {bucket!r}: {exc}") from exc
        return StoreSink(s3, prefix)
    if out.startswith("store:"):
        if store is None:
            from storage.objects import open_object_store

            store = open_object_store(settings)
        return StoreSink(store, export_prefix(out[len("store:") :]))
    return DirectorySink(Path(out))
