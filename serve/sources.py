"""Where the media of one scoring request comes from, and turning it into a local file to decode.

Three sources, as the scoring contract has them: the request's own bytes (an upload or base64), a key under
``media/`` in the object store (the stream worker put the bytes there), or an http(s) URL fetched through the
media layer's SSRF guard. Every failure is a typed :class:`deepwatch.media.errors.MediaError`, so callers
tell permanent from transient the same way for all three.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepwatch.media.errors import NotFound, TooLarge, Transient, Unsupported
from deepwatch.settings import Settings
from storage.keys import MEDIA_PREFIX, validate_key

if TYPE_CHECKING:
    from storage.objects import ObjectStore


@dataclass(frozen=True)
class MediaSource:
    """Exactly one of ``data``, ``object_key`` and ``url``."""

    data: bytes | None = None
    object_key: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("data", "object_key", "url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"a media source is exactly one of data, object_key, url; got {given or 'none'}")

    @property
    def kind(self) -> str:
        return "bytes" if self.data is not None else "object_key" if self.object_key is not None else "url"


class StoreForSources:
    """The object store, opened at the first ``object_key`` source and kept: an S3 client keeps its
    connection pool, and opening one checks the bucket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: ObjectStore | None = None
        self._lock = threading.Lock()

    def for_source(self, source: MediaSource) -> ObjectStore | None:
        if source.object_key is None:
            return None
        from storage.objects import open_object_store

        with self._lock:
            if self._store is None:
                self._store = open_object_store(self.settings)
            return self._store


def check_media_key(key: str) -> str:
    """An object key the scoring API may read: one under ``media/`` that fits the key grammar."""
    if not key.startswith(MEDIA_PREFIX):
        raise ValueError(f"object_key must start with {MEDIA_PREFIX!r}")
    return validate_key(key)  # InvalidKey is a ValueError naming the bad part


def materialize(source: MediaSource, settings: Settings, workdir: Path, store: ObjectStore | None = None) -> Path:
    """A file under ``workdir`` holding the source's bytes."""
    if source.data is not None:
        path = workdir / "upload"
        path.write_bytes(source.data)
        return path
    if source.url is not None:
        from deepwatch.media.fetch import FetchLimits, fetch
        from deepwatch.media.guard import AddressPolicy

        policy = AddressPolicy.from_networks(settings.fetch_allow_networks)
        return fetch(source.url, workdir, FetchLimits.from_settings(settings), policy).path
    assert source.object_key is not None
    return object_to_file(check_media_key(source.object_key), settings, workdir, store)


def object_to_file(key: str, settings: Settings, workdir: Path, store: ObjectStore | None = None) -> Path:
    """The object at ``key`` copied into a file under ``workdir`` (no larger than a fetch may be); the
    typed media errors (NotFound, TooLarge, Unsupported, Transient) for what goes wrong."""
    from storage.errors import InvalidKey, StorageError
    from storage.errors import NotFound as MissingObject
    from storage.objects import open_object_store

    limit = settings.fetch_max_bytes  # the same bound as a fetched file: the worker stored nothing larger
    path = workdir / ("media." + key.rsplit(".", 1)[-1] if "." in key.rsplit("/", 1)[-1] else "media")
    try:
        store = store or open_object_store(settings)
        size = 0
        with store.get(key) as stream, path.open("wb") as out:
            for chunk in stream.iter_chunks():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"object {key} is larger than {limit} bytes")
                out.write(chunk)
    except MissingObject:
        raise NotFound(f"no object {key} in the object store") from None
    except InvalidKey as exc:
        raise Unsupported(str(exc)) from None
    except StorageError as exc:
        raise Transient(f"the object store failed reading {key}: {exc}") from exc
    return path
