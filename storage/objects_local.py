"""The object store in a local directory: the embedded default (``<data-dir>/objects``).

On disk an object is a plain file at ``<root>/<key>``, so the media can be opened with any tool.
Its content type, metadata and etag live in a hidden sidecar ``.<name>.<inode>.meta.json`` next
to it. Keys never have a segment starting with ``.`` (see ``storage.keys``), so hidden names can
never collide with an object and ``list_keys`` simply skips them.

Why the inode is in the sidecar's name: an object is two files, and no rename makes two files
change at once. A put writes the data to a hidden temp file, writes the sidecar for *that file's
inode*, and only then renames the temp file over the key. ``os.replace`` keeps the inode, so
whatever data file a reader opens, the sidecar named after its inode describes exactly those
bytes: a crash or a concurrent put at any point leaves at worst an orphaned hidden file, never a
visible object with the wrong metadata or half its bytes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat as stat_mode
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.errors import KeyConflict, NotFound, NotSupported, StorageError
from storage.keys import validate_key, validate_prefix
from storage.objects import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
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

_SIDECAR_VERSION = 1
_TMP_MARK = ".tmp-"
# A racing put can swap the data file (and drop the old sidecar) between our stat and our read
# of the sidecar; retrying picks up the new pair. More than a few swaps in a row is not a race.
_STAT_ATTEMPTS = 5
_FILE_MODE = 0o644


class LocalObjectStore:
    """An :class:`~storage.objects.ObjectStore` in a directory (created if missing)."""

    def __init__(self, root: Path | str, *, fsync: bool = True):
        self.root = Path(root).resolve()
        # fsync before the rename is what makes "never half-written" hold across a power loss;
        # turning it off only makes sense for throwaway stores.
        self._fsync = fsync
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the object store directory {self.root}: {exc}") from exc

    @property
    def location(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

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
        metadata = check_metadata(metadata)
        check_source(data)
        path = self._path(key)
        self._make_parent(key, path)
        if path.is_dir():
            raise _prefix_conflict(key)

        tmp = path.parent / f".{path.name}{_TMP_MARK}{secrets.token_hex(6)}"
        sidecar: Path | None = None
        try:
            with self._disk(key):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                digest = hashlib.md5(usedforsecurity=False)
                size = 0
                for chunk in iter_source(data):  # the caller's errors pass through unchanged
                    with self._disk(key):
                        out.write(chunk)
                    digest.update(chunk)
                    size += memoryview(chunk).nbytes
                with self._disk(key):
                    out.flush()
                    if self._fsync:
                        os.fsync(out.fileno())
                    written = os.fstat(out.fileno())  # rename keeps inode and mtime
            sidecar = self._sidecar(path, written.st_ino)
            record = {
                "v": _SIDECAR_VERSION,
                "content_type": content_type,
                "metadata": metadata,
                "etag": digest.hexdigest(),
                "size": size,
            }
            with self._disk(key):
                self._write_small(sidecar, json.dumps(record, sort_keys=True).encode())
                old = self._inode(path)
                try:
                    os.replace(tmp, path)
                except IsADirectoryError as exc:
                    raise _prefix_conflict(key) from exc
        except BaseException:
            # Whatever failed, the caller's stream included, nothing new is visible: drop our
            # hidden files and let the exception through.
            _unlink(tmp)
            if sidecar is not None:
                _unlink(sidecar)
            raise
        if self._fsync:
            _fsync_dir(path.parent)
        if old is not None and old != written.st_ino:
            _unlink(self._sidecar(path, old))
        return ObjectInfo(
            key=key,
            size=size,
            content_type=content_type,
            etag=record["etag"],
            modified=datetime.fromtimestamp(written.st_mtime, UTC),
            metadata=dict(metadata),
        )

    def delete(self, key: str) -> None:
        key = validate_key(key)
        path = self._path(key)
        inode = self._inode(path)
        if inode is None:
            return
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc
        # Only the sidecar of the file we removed: one for another inode may belong to a put
        # that is about to make its data visible.
        _unlink(self._sidecar(path, inode))

    # --- reading ----------------------------------------------------------------------------
    def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectStream:
        key = validate_key(key)
        check_range(start, end)
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key, self.location) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink: never ours, never followed
                raise NotFound(key, self.location) from None
            raise StorageError(f"cannot open {key!r}: {exc}") from exc
        handle = os.fdopen(fd, "rb")
        try:
            info = os.fstat(fd)
            if not stat_mode.S_ISREG(info.st_mode):
                raise NotFound(key, self.location)
            stop = info.st_size if end is None else min(end, info.st_size)
            length = max(0, stop - start)
            if length:
                handle.seek(start)
        except BaseException:
            handle.close()
            raise
        return ObjectStream(handle.read, handle.close, length, key)

    def stat(self, key: str) -> ObjectInfo:
        key = validate_key(key)
        path = self._path(key)
        for _ in range(_STAT_ATTEMPTS):
            try:
                info = os.stat(path, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(key, self.location) from None
            if not stat_mode.S_ISREG(info.st_mode):
                raise NotFound(key, self.location)
            try:
                record = json.loads(self._sidecar(path, info.st_ino).read_bytes())
            except FileNotFoundError:
                if self._inode(path) != info.st_ino:
                    continue  # swapped by a concurrent put or delete: look again
                record = self._adopt(path)
            except (OSError, ValueError) as exc:
                raise StorageError(f"unreadable metadata for {key!r}: {exc}") from exc
            return ObjectInfo(
                key=key,
                size=info.st_size,
                content_type=record["content_type"],
                etag=record["etag"],
                modified=datetime.fromtimestamp(info.st_mtime, UTC),
                metadata=dict(record["metadata"]),
            )
        raise StorageError(f"{key!r} kept changing while its metadata was read")

    def exists(self, key: str) -> bool:
        # The data file alone decides existence; its sidecar only describes it.
        return self._inode(self._path(validate_key(key))) is not None

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        prefix = validate_prefix(prefix)  # here, not in the generator: a bad prefix fails at the call
        base, _, _ = prefix.rpartition("/")
        directory = self.root / base if base else self.root
        return self._walk(directory, f"{base}/" if base else "", prefix)

    def presigned_get_url(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str:
        validate_key(key)
        check_expiry(expires)
        raise NotSupported(
            "the local object store has no URL to hand out: read the object with get() and serve "
            "the bytes (presigned URLs need store_backend 's3')"
        )

    # --- internals --------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        # validate_key already shut out '..', absolute paths and backslashes; this is the second lock.
        path = self.root.joinpath(*key.split("/"))
        if os.path.commonpath([self.root, path]) != str(self.root):
            raise StorageError(f"key {key!r} escapes {self.root}")  # pragma: no cover - unreachable
        return path

    @staticmethod
    def _sidecar(path: Path, inode: int) -> Path:
        return path.parent / f".{path.name}.{inode}.meta.json"

    @staticmethod
    def _inode(path: Path) -> int | None:
        try:
            info = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info.st_ino if stat_mode.S_ISREG(info.st_mode) else None

    def _make_parent(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise KeyConflict(
                f"cannot put {key!r}: a prefix of it is itself an object (local backend)"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot create the directory for {key!r}: {exc}") from exc

    @contextmanager
    def _disk(self, key: str) -> Iterator[None]:
        """OSErrors of the store's own files become StorageError; the caller's source errors do not pass here."""
        try:
            yield
        except StorageError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} under {self.root}: {exc}") from exc

    def _write_small(self, target: Path, data: bytes) -> None:
        """Write a small file atomically (temp file + rename), so no reader sees half of it."""
        tmp = target.parent / f"{target.name}{_TMP_MARK}{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise

    def _adopt(self, path: Path) -> dict[str, object]:
        """Metadata for a file that was put in place by hand, not by put(): none, and its MD5."""
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                digest.update(chunk)
        return {"content_type": DEFAULT_CONTENT_TYPE, "metadata": {}, "etag": digest.hexdigest()}

    def _walk(self, directory: Path, key_prefix: str, want: str) -> Iterator[str]:
        """Keys under ``directory`` that start with ``want``, lazily, in byte order like AWS S3.

        Sorting each directory's entries by ``name`` for files and ``name + "/"`` for directories
        gives the byte order of the full keys without holding more than one directory's listing.
        """
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot list {directory}: {exc}") from exc
        ordered: list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # sidecars, temp files, anything else hidden
            try:
                validate_key(entry.name)
            except ValueError:
                continue  # not addressable through this API
            if entry.is_dir(follow_symlinks=False):
                ordered.append((entry.name + "/", entry, True))
            elif entry.is_file(follow_symlinks=False):
                ordered.append((entry.name, entry, False))
        ordered.sort(key=lambda item: item[0])
        for name, entry, is_dir in ordered:
            key = key_prefix + name
            if is_dir:
                if key.startswith(want) or want.startswith(key):
                    yield from self._walk(Path(entry.path), key, want)
            elif key.startswith(want):
                yield key


def _prefix_conflict(key: str) -> KeyConflict:
    return KeyConflict(f"cannot put {key!r}: other keys start with {key + '/'!r} (local backend)")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; without it a power loss can forget the new name."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is already synced
    finally:
        os.close(fd)
