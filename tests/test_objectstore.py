"""The object store behaves the same on a local directory and on real S3 (SeaweedFS).

Every test taking ``object_store`` runs twice, once per backend, with no mock in between: real
files under tmp_path, and a real bucket on the session's SeaweedFS (``s3_bucket`` removes it with
its contents afterwards). Where the backends differ on purpose (presigned URLs, a key that is also
a prefix of another) the test says so by name and asserts each side.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from minio import Minio

from deepwatch.embedded.s3server import S3Server
from deepwatch.settings import Settings
from storage import (
    InvalidKey,
    KeyConflict,
    NotFound,
    NotSupported,
    ObjectStore,
    StorageError,
    keys,
    open_object_store,
)
from storage.objects_local import LocalObjectStore
from storage.objects_s3 import S3ObjectStore

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, every byte value: an off-by-one range shows
MEDIA_ID = hashlib.sha256(b"a clip").hexdigest()
OTHER_ID = hashlib.sha256(b"another clip").hexdigest()
MIB = 1024 * 1024

TRAVERSALS = [
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "media/../../etc",
    "media/./x",
    "media//x",
    "media/x/",
    "./x",
    ".hidden",
    "media/.x.meta.json",
    "a\\..\\b",
    "a\x00b",
    "ünïcode",
    "with space",
    "",
]


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        root = tmp_path / "objects"
        yield LocalObjectStore(root)
        shutil.rmtree(root, ignore_errors=True)  # the 50 MB test would otherwise linger in tmp
    else:
        client, bucket = request.getfixturevalue("s3_bucket")
        # The smallest part size S3 allows, so that a stream of a few MiB is already multipart.
        yield S3ObjectStore(client, bucket, part_size=5 * MIB)


def _read(store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    with store.get(key, start=start, end=end) as stream:
        return stream.read()


def _backend(store: ObjectStore) -> str:
    return "local" if isinstance(store, LocalObjectStore) else "s3"


def _files_on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- the protocol on both backends ---------------------------------------------------------------


def test_put_get_stat_round_trip_with_metadata(object_store: ObjectStore) -> None:
    key = keys.media_key(MEDIA_ID, "mp4")
    before = datetime.now(UTC) - timedelta(seconds=2)  # S3 times have whole seconds
    info = object_store.put(
        key, PAYLOAD, content_type="video/mp4", metadata={"Source": "tiktok", "canonical_url": "https://x.test/v/1"}
    )

    assert info.key == key
    assert info.size == len(PAYLOAD)
    assert info.content_type == "video/mp4"
    assert info.metadata == {"source": "tiktok", "canonical_url": "https://x.test/v/1"}  # names lower-cased
    assert info.etag == hashlib.md5(PAYLOAD).hexdigest()  # single part: MD5 on both backends
    assert before <= info.modified <= datetime.now(UTC) + timedelta(seconds=2)
    assert info.modified.tzinfo is not None
    assert object_store.stat(key) == info  # put returns exactly what stat will say
    assert object_store.exists(key)
    assert _read(object_store, key) == PAYLOAD
    assert list(object_store.list_keys()) == [key]


def test_put_accepts_bytes_files_paths_and_streams(object_store: ObjectStore, tmp_path: Path) -> None:
    source_file = tmp_path / "source.bin"
    source_file.write_bytes(PAYLOAD)

    class Unseekable(io.RawIOBase):  # a pipe-like source: no length known in advance
        def __init__(self, data: bytes):
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            return self._data.readinto(buffer)

    sources: dict[str, object] = {
        "bytes": PAYLOAD,
        "bytearray": bytearray(PAYLOAD),
        "memoryview": memoryview(PAYLOAD),
        "bytesio": io.BytesIO(PAYLOAD),
        "path": source_file,
        "open-file": source_file.open("rb"),
        "unseekable": Unseekable(PAYLOAD),
        "generator": (PAYLOAD[i : i + 1000] for i in range(0, len(PAYLOAD), 1000)),
        "empty": b"",
    }
    try:
        for name, source in sources.items():
            info = object_store.put(f"sources/{name}", source)  # type: ignore[arg-type]
            expected = b"" if name == "empty" else PAYLOAD
            assert info.size == len(expected), name
            assert info.content_type == "application/octet-stream", name
            assert _read(object_store, f"sources/{name}") == expected, name
    finally:
        sources["open-file"].close()  # type: ignore[attr-defined]

    with pytest.raises(TypeError, match="not str"):
        object_store.put("sources/str", "text is ambiguous: a path or the content?")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="yielded str"):
        object_store.put("sources/bad-chunks", iter(["not bytes"]))  # type: ignore[arg-type]
    assert not object_store.exists("sources/str")
    assert not object_store.exists("sources/bad-chunks")


def test_putting_a_key_twice_leaves_one_object_with_the_latest_bytes(object_store: ObjectStore) -> None:
    key = keys.result_key(MEDIA_ID)
    first = object_store.put(key, b'{"v": 1}', content_type="application/json", metadata={"round": "1"})
    again = object_store.put(key, b'{"v": 1}', content_type="application/json", metadata={"round": "1"})
    assert again.etag == first.etag  # same bytes, same tag: content-addressed writes are idempotent

    latest = object_store.put(key, b'{"v": 2, "longer": true}', content_type="text/plain", metadata={"round": "2"})

    assert latest.etag != first.etag
    assert list(object_store.list_keys()) == [key]
    assert _read(object_store, key) == b'{"v": 2, "longer": true}'
    assert object_store.stat(key) == latest
    assert latest.content_type == "text/plain"
    assert latest.metadata == {"round": "2"}  # replaced, not merged


def test_range_reads(object_store: ObjectStore) -> None:
    object_store.put("blob", PAYLOAD)
    size = len(PAYLOAD)

    assert _read(object_store, "blob", 1000, 1300) == PAYLOAD[1000:1300]
    assert _read(object_store, "blob", 0, 1) == PAYLOAD[:1]
    assert _read(object_store, "blob", size - 7) == PAYLOAD[-7:]
    assert _read(object_store, "blob", 5000) == PAYLOAD[5000:]
    assert _read(object_store, "blob", 10, size + 500) == PAYLOAD[10:]  # clamped like a slice
    assert _read(object_store, "blob", size) == b""  # at the end: empty, not an error
    assert _read(object_store, "blob", size + 10, size + 20) == b""
    assert _read(object_store, "blob", 42, 42) == b""

    with object_store.get("blob", start=100, end=4196) as stream:
        assert stream.length == 4096
        assert stream.read(10) == PAYLOAD[100:110]
        rest = b"".join(stream.iter_chunks(1000))
        assert rest == PAYLOAD[110:4196]
        assert stream.read() == b""
    assert stream.closed

    for start, end in [(-1, None), (10, 5), (1.5, None)]:
        with pytest.raises(ValueError, match="range"):
            object_store.get("blob", start=start, end=end)  # type: ignore[arg-type]


def test_missing_keys_raise_not_found_and_delete_of_missing_is_a_no_op(object_store: ObjectStore) -> None:
    key = keys.thumb_key(MEDIA_ID)
    for call in (lambda: object_store.get(key), lambda: object_store.stat(key), lambda: object_store.get(key, start=3)):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.key == key
        assert key in str(caught.value)
        assert isinstance(caught.value, StorageError)
    with pytest.raises(NotFound):
        object_store.get(key, start=5, end=5)  # an empty range still says whether the key exists
    assert not object_store.exists(key)

    object_store.delete(key)  # documented: a no-op, like S3, so a retried delete is harmless

    object_store.put("media/x/y", b"deep")  # "media" and "media/x" are prefixes, not objects
    for prefix_only in ("media", "media/x"):
        assert not object_store.exists(prefix_only)
        with pytest.raises(NotFound):
            object_store.stat(prefix_only)
        object_store.delete(prefix_only)
    assert object_store.exists("media/x/y")


def test_delete_removes_the_object(object_store: ObjectStore) -> None:
    key = keys.flagged_key(MEDIA_ID, "webm")
    object_store.put(key, PAYLOAD, metadata={"verdict": "fake"})
    object_store.put("flagged/keep.webm", b"other")

    object_store.delete(key)

    assert not object_store.exists(key)
    with pytest.raises(NotFound):
        object_store.get(key)
    assert list(object_store.list_keys("flagged/")) == ["flagged/keep.webm"]
    object_store.put(key, b"back")  # the key is free again
    assert object_store.stat(key).metadata == {}


def test_list_by_prefix(object_store: ObjectStore) -> None:
    written = [
        keys.media_key(MEDIA_ID, "mp4"),
        keys.media_key(OTHER_ID, "jpg"),
        keys.thumb_key(MEDIA_ID),
        keys.result_key(MEDIA_ID),
        keys.result_key(OTHER_ID),
        keys.export_key("fakes-2026", "manifest.jsonl"),
        keys.export_key("fakes-2026", f"media/{MEDIA_ID}.mp4"),
        keys.export_key("fakes-2026.v2", "manifest.jsonl"),
        "a-b",
        "a/b",
        "a.b/c",
        "a0",
    ]
    for key in written:
        object_store.put(key, key.encode(), metadata={"k": "v"})

    def listed(prefix: str = "") -> list[str]:
        found = list(object_store.list_keys(prefix))
        assert len(found) == len(set(found))
        return sorted(found)  # no order is promised: SeaweedFS lists directory by directory

    assert listed() == sorted(written)  # no sidecars, no temp files
    assert listed("results/") == sorted([keys.result_key(MEDIA_ID), keys.result_key(OTHER_ID)])
    assert listed("media/") == sorted(written[:2])
    assert listed(f"media/{MEDIA_ID[:2]}") == [written[0]]  # a partial segment matches, as in S3
    assert listed(keys.export_prefix("fakes-2026")) == sorted(written[5:7])
    assert listed("exports/fakes-2026") == sorted(written[5:8])
    assert listed("a") == ["a-b", "a.b/c", "a/b", "a0"]
    assert listed("nothing/") == []
    assert listed("thumbs/zz") == []
    if _backend(object_store) == "local":
        assert list(object_store.list_keys()) == sorted(written)  # byte order, like AWS S3
    for bad in ("../", "/media", "media//", ".", "media/.x"):
        with pytest.raises(InvalidKey):
            object_store.list_keys(bad)  # refused at the call, before anything is iterated


@pytest.mark.parametrize("key", TRAVERSALS, ids=repr)
def test_unsafe_keys_are_refused_before_any_io(object_store: ObjectStore, key: str, tmp_path: Path) -> None:
    calls = {
        "put": lambda: object_store.put(key, b"evil"),
        "get": lambda: object_store.get(key),
        "stat": lambda: object_store.stat(key),
        "exists": lambda: object_store.exists(key),
        "delete": lambda: object_store.delete(key),
        "presign": lambda: object_store.presigned_get_url(key),
    }
    for name, call in calls.items():
        try:
            call()
        except InvalidKey as exc:
            assert "invalid object key" in str(exc), name
        else:
            pytest.fail(f"{name}({key!r}) was not refused")

    assert list(object_store.list_keys()) == []
    if isinstance(object_store, LocalObjectStore):
        # Nothing was written anywhere, inside the store or next to it.
        assert _files_on_disk(tmp_path) == []


def test_interrupted_write_leaves_no_object_and_no_temp_file(object_store: ObjectStore, tmp_path: Path) -> None:
    class SourceFailed(Exception):
        pass

    def failing(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield PAYLOAD * 100  # ~1 MiB
            sent += len(PAYLOAD) * 100
        raise SourceFailed("connection reset by the platform")

    key = keys.media_key(MEDIA_ID, "mp4")
    # 12 MiB: past the 5 MiB part size, so on S3 a multipart upload was under way.
    with pytest.raises(SourceFailed):
        object_store.put(key, failing(12 * MIB))

    assert not object_store.exists(key)
    assert list(object_store.list_keys()) == []
    if isinstance(object_store, LocalObjectStore):
        assert _files_on_disk(tmp_path) == []  # not even a hidden temp file
    else:
        assert isinstance(object_store, S3ObjectStore)
        uploads = object_store.client._list_multipart_uploads(object_store.bucket).uploads  # no public API
        assert uploads == []  # minio aborted the upload: no parts left billed in the bucket

    # An interrupted overwrite keeps the previous object whole, metadata included.
    old = object_store.put(key, PAYLOAD, content_type="video/mp4", metadata={"version": "1"})
    with pytest.raises(SourceFailed):
        object_store.put(key, failing(6 * MIB), content_type="video/webm", metadata={"version": "2"})
    assert object_store.stat(key) == old
    assert _read(object_store, key) == PAYLOAD


def test_large_multipart_upload(object_store: ObjectStore) -> None:
    """50 MB from a stream of unknown length: multipart on S3, one temp file locally."""
    size = 50 * 1000 * 1000
    block = os.urandom(MIB)
    expected = hashlib.sha256()

    def mib(index: int) -> bytes:
        return (index.to_bytes(8, "big") + block[8:])[: size - index * MIB]  # each MiB differs

    def window(start: int, end: int) -> bytes:
        first, last = start // MIB, (end - 1) // MIB
        joined = b"".join(mib(i) for i in range(first, last + 1))
        return joined[start - first * MIB : end - first * MIB]

    def chunks() -> Iterator[bytes]:
        for index in range(-(-size // MIB)):
            data = mib(index)
            expected.update(data)
            yield data

    key = keys.media_key(MEDIA_ID, "mkv")
    info = object_store.put(key, chunks(), content_type="video/x-matroska", metadata={"kind": "video"})

    assert info.size == size
    assert object_store.stat(key).size == size
    if _backend(object_store) == "s3":
        assert info.etag.endswith("-10")  # 10 parts of 5 MiB: it really went multipart
    got = hashlib.sha256()
    with object_store.get(key) as stream:
        assert stream.length == size
        for chunk in stream:
            got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()

    boundary = 5 * MIB  # the first part boundary on S3
    assert _read(object_store, key, boundary - 100, boundary + 100) == window(boundary - 100, boundary + 100)
    assert _read(object_store, key, size - 10) == window(size - 10, size)
    object_store.delete(key)
    assert not object_store.exists(key)


def test_concurrent_puts_of_one_key_never_mix_bytes_and_metadata(object_store: ObjectStore) -> None:
    key = keys.result_key(MEDIA_ID)
    bodies = {str(n): bytes([n]) * (1000 + n) for n in range(3)}
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for _ in range(8):
                object_store.put(key, bodies[name], metadata={"writer": name})
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(40):
                info = object_store.stat(key)
                assert info.size == len(bodies[info.metadata["writer"]])
        except NotFound:
            pass  # before the first put landed
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in bodies] + [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    info = object_store.stat(key)
    assert _read(object_store, key) == bodies[info.metadata["writer"]]
    assert list(object_store.list_keys()) == [key]


def test_invalid_metadata_and_content_type_are_refused(object_store: ObjectStore) -> None:
    bad_metadata = [
        {"with space": "x"},
        {"x-amz-meta-source": "x"},
        {"Source": "a", "source": "b"},
        {"source": "ünïcode"},
        {"source": " padded"},
        {"source": "line\nbreak"},
        {"big": "x" * 3000},
    ]
    for metadata in bad_metadata:
        with pytest.raises(ValueError, match="metadata"):
            object_store.put("m", b"x", metadata=metadata)
    for content_type in ("video", "", "video/mp4\r\nX-Evil: 1"):
        with pytest.raises(ValueError, match="content type"):
            object_store.put("m", b"x", content_type=content_type)
    assert not object_store.exists("m")
    with pytest.raises(ValueError, match="metadata"):
        object_store.put("m", b"x", metadata={"empty": ""})  # S3 drops an empty header: refused on both
    assert not object_store.exists("m")


def test_key_that_is_also_a_prefix_differs_between_backends(object_store: ObjectStore) -> None:
    """S3 holds ``a`` and ``a/b`` side by side; a directory cannot, so the local backend refuses."""
    object_store.put("a/b", b"child")
    object_store.put("x", b"parent")
    if _backend(object_store) == "local":
        with pytest.raises(KeyConflict):
            object_store.put("a", b"parent")
        with pytest.raises(KeyConflict):
            object_store.put("x/y", b"child")
        assert list(object_store.list_keys()) == ["a/b", "x"]
    else:
        object_store.put("a", b"parent")
        object_store.put("x/y", b"child")
        assert sorted(object_store.list_keys()) == ["a", "a/b", "x", "x/y"]


# --- presigned URLs: S3 only ---------------------------------------------------------------------


def test_presigned_get_url_fetched_with_httpx_s3_only(s3_bucket: tuple[Minio, str]) -> None:
    """Only S3 has presigned URLs; the local backend's refusal is the next test."""
    client, bucket = s3_bucket
    store = S3ObjectStore(client, bucket)
    key = keys.media_key(MEDIA_ID, "mp4")
    store.put(key, PAYLOAD, content_type="video/mp4")
    store.put("private", b"not for you")

    url = store.presigned_get_url(key, expires=timedelta(minutes=5))
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == PAYLOAD
    assert response.headers["content-type"] == "video/mp4"
    ranged = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == PAYLOAD[10:20]

    forged = httpx.get(url.replace(f"/{key}?", "/private?"))
    assert forged.status_code == 403 and b"not for you" not in forged.content
    missing = httpx.get(store.presigned_get_url(keys.media_key(OTHER_ID, "mp4")))
    assert missing.status_code == 404  # signed without a request: a missing key shows on fetch

    for expires in (timedelta(0), timedelta(days=8)):
        with pytest.raises(ValueError, match="expires"):
            store.presigned_get_url(key, expires=expires)


def test_presigned_get_url_is_not_supported_by_the_local_backend(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put("x", b"x")
    with pytest.raises(NotSupported, match="get\\(\\)"):
        store.presigned_get_url("x")


# --- local backend internals: what a crash leaves behind -----------------------------------------

_CRASHING_WRITER = """
import os, sys
from storage.objects_local import LocalObjectStore

def chunks():
    yield b"x" * 100_000
    sys.stdout.write("half\\n"); sys.stdout.flush()
    os._exit(17)  # dies mid-write: no except, no finally, no cleanup

LocalObjectStore(sys.argv[1]).put(sys.argv[2], chunks(), metadata={"v": "2"})
"""


def test_local_crash_mid_write_never_shows_a_half_written_object(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    key = keys.media_key(MEDIA_ID, "mp4")
    old = store.put(key, PAYLOAD, metadata={"v": "1"})

    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(root), key],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 17, done.stderr
    assert done.stdout == "half\n"

    leftovers = [name for name in _files_on_disk(root) if ".tmp-" in name]
    assert len(leftovers) == 1  # the crash did leave its hidden temp file ...
    assert store.stat(key) == old  # ... but the object is the old one, whole
    assert _read(store, key) == PAYLOAD
    assert list(store.list_keys()) == [key]  # and nothing hidden is listed


def test_local_sidecars_are_hidden_and_follow_the_object(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    key = keys.thumb_key(MEDIA_ID)
    store.put(key, b"v1", content_type="image/jpeg", metadata={"v": "1"})
    store.put(key, b"v2", content_type="image/jpeg", metadata={"v": "2"})

    on_disk = _files_on_disk(root)
    assert len(on_disk) == 2  # the object and one sidecar: the first put's sidecar was dropped
    assert f"thumbs/{MEDIA_ID}.jpg" in on_disk
    sidecar = next(name for name in on_disk if name.endswith(".meta.json"))
    assert Path(sidecar).name.startswith(".")
    assert list(store.list_keys()) == [key]

    store.delete(key)
    assert _files_on_disk(root) == []

    # A file dropped in by hand is an object without metadata.
    (root / "manual").write_bytes(b"by hand")
    assert store.stat("manual").etag == hashlib.md5(b"by hand").hexdigest()
    assert store.stat("manual").content_type == "application/octet-stream"


# --- the factory -----------------------------------------------------------------------------------


def test_open_object_store_local(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_object_store(settings)
    assert isinstance(store, LocalObjectStore)
    assert store.root == (tmp_path / "data" / "objects").resolve()
    assert store.root.is_dir()
    assert isinstance(store, ObjectStore)  # runtime-checkable protocol


def test_open_object_store_s3_creates_the_bucket(s3_server: S3Server) -> None:
    bucket = f"test-factory-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        store_backend="s3",
        s3_endpoint=s3_server.url,  # a URL: its scheme decides TLS
        s3_bucket=bucket,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
    )
    client = s3_server.client()
    assert not client.bucket_exists(bucket)
    try:
        store = open_object_store(settings)
        assert isinstance(store, S3ObjectStore)
        assert client.bucket_exists(bucket)
        assert store.location == f"{s3_server.url}/{bucket}"
        store.put("hello", b"world")
        assert _read(store, "hello") == b"world"
        assert isinstance(open_object_store(settings), S3ObjectStore)  # an existing bucket is fine
    finally:
        if client.bucket_exists(bucket):
            client.remove_bucket(bucket)  # weed mini drops the contents too


def test_s3_errors_are_storage_errors(s3_server: S3Server) -> None:
    # (A missing bucket is no test case here: SeaweedFS creates it on the first PUT.)
    wrong_secret = Minio(s3_server.endpoint, "nobody", "wrong-secret", secure=False, region=s3_server.region)
    with pytest.raises(StorageError, match="S3"):
        S3ObjectStore(wrong_secret, "anything").ensure_bucket()


# --- keys --------------------------------------------------------------------------------------------


def test_content_addressed_layout() -> None:
    assert keys.media_key(MEDIA_ID, "mp4") == f"media/{MEDIA_ID[:2]}/{MEDIA_ID}.mp4"
    assert keys.media_key(MEDIA_ID, ".MP4") == keys.media_key(MEDIA_ID, "mp4")  # one spelling per format
    assert keys.thumb_key(MEDIA_ID) == f"thumbs/{MEDIA_ID}.jpg"
    assert keys.result_key(MEDIA_ID) == f"results/{MEDIA_ID}.json"
    assert keys.flagged_key(MEDIA_ID, "webm") == f"flagged/{MEDIA_ID}.webm"
    assert keys.export_prefix("fakes-2026.11") == "exports/fakes-2026.11/"
    assert keys.export_key("fakes", "media/x.mp4") == "exports/fakes/media/x.mp4"
    for key in (keys.media_key(MEDIA_ID, "jpg"), keys.export_key("fakes", "manifest.jsonl")):
        assert keys.validate_key(key) == key


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: keys.media_key(MEDIA_ID.upper(), "mp4"), "media id"),
        (lambda: keys.media_key(MEDIA_ID[:-1], "mp4"), "media id"),
        (lambda: keys.thumb_key("../" + MEDIA_ID[3:]), "media id"),
        (lambda: keys.result_key(MEDIA_ID + "\n"), "media id"),
        (lambda: keys.result_key(None), "media id"),
        (lambda: keys.media_key(MEDIA_ID, "exe"), "extension"),
        (lambda: keys.media_key(MEDIA_ID, "mp4/../x"), "extension"),
        (lambda: keys.flagged_key(MEDIA_ID, ""), "extension"),
        (lambda: keys.export_prefix("../etc"), "export name"),
        (lambda: keys.export_prefix("Fakes"), "export name"),
        (lambda: keys.export_prefix("a/b"), "export name"),
        (lambda: keys.export_key("fakes", "../../media/x"), "inside export"),
        (lambda: keys.export_key("fakes", "/abs"), "inside export"),
    ],
)
def test_key_builders_refuse_bad_parts(build: object, match: str) -> None:
    with pytest.raises(InvalidKey, match=match):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("key", TRAVERSALS, ids=repr)
def test_validate_key_refuses_traversal_and_oddities(key: str) -> None:
    with pytest.raises(InvalidKey):
        keys.validate_key(key)
    with pytest.raises(ValueError):  # InvalidKey is a ValueError too
        keys.validate_key(key)


def test_presigned_urls_name_the_public_endpoint(s3_server: S3Server) -> None:
    """In a cluster the store talks to minio:9000 while browsers use another name: links are signed
    for the public one (here `localhost` against the server's 127.0.0.1) and still work."""
    bucket = f"test-public-{uuid.uuid4().hex[:12]}"
    public = s3_server.url.replace("127.0.0.1", "localhost")
    assert public != s3_server.url
    settings = Settings(
        store_backend="s3",
        s3_endpoint=s3_server.url,
        s3_public_url=public,
        s3_bucket=bucket,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
    )
    store = open_object_store(settings)
    try:
        store.put("clip", PAYLOAD, content_type="video/mp4")
        url = store.presigned_get_url("clip")
        assert url.startswith(f"{public}/{bucket}/clip?")
        response = httpx.get(url)
        assert response.status_code == 200 and response.content == PAYLOAD
        assert store.location == f"{s3_server.url}/{bucket}"  # the store itself still talks to the endpoint
    finally:
        store.delete("clip")
        s3_server.client().remove_bucket(bucket)
