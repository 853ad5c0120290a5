"""The one settings object.

Read from ``DEEPWATCH_*`` environment variables and an optional YAML file (``--config`` or
``DEEPWATCH_CONFIG``); the environment wins over the file, the file over the defaults. Every backend
choice lives here, so a deployment differs from the embedded stack only in its settings.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from deepwatch.contracts import ContractError, EnsembleName, EnsembleWeight, PlattPair

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MASK = "**********"

# The YAML file for the Settings being built right now; a context variable rather than a class
# attribute so that loading two configs (tests do) never mixes them up.
_yaml_file: ContextVar[Path | None] = ContextVar("deepwatch_yaml_file", default=None)


def _split_commas(value: Any) -> Any:
    """``a, b`` in an environment variable is a list; a YAML list stays a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


API_SCOPES = ("read", "submit", "score", "review", "admin")
DetectorResource = Literal["num_cpus", "num_gpus", "min_replicas", "max_replicas"]


# ``name=`` in front of a key: a slug, then a secret that does not start with "=" (so that a base64 key's
# padding, which only ever ends a key, is never taken for a name).
_KEY_NAME = re.compile(r"([a-z0-9][a-z0-9_.-]{0,63})=(?!=)(.+)", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class ApiKeyEntry:
    name: str  # who a review is recorded as; never the secret
    secret: str
    scopes: frozenset[str]


def parse_api_key(entry: str) -> ApiKeyEntry:
    """``[NAME=]KEY[:scope+scope]``: without scopes a key has every scope; without a name it is known by
    ``key-`` and a hash prefix of the secret, stable across restarts and replicas."""
    named = _KEY_NAME.fullmatch(entry)
    name, rest = (named.group(1), named.group(2)) if named else (None, entry)
    secret, sep, scopes = rest.rpartition(":")
    if not sep:
        secret, granted = rest, frozenset(API_SCOPES)
    else:
        granted = frozenset(s.strip() for s in scopes.split("+") if s.strip())
    return ApiKeyEntry(name or derived_key_name(secret), secret, granted)


def derived_key_name(secret: str) -> str:
    # 40 bits of a salted hash: enough to tell keys apart in an audit trail, useless to guess a
    # generated key from
    return "key-" + hashlib.sha256(b"deepwatch api key name\0" + secret.encode()).hexdigest()[:10]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DEEPWATCH_",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    # --- where things live ------------------------------------------------------------------
    data_dir: Path = Field(Path("deepwatch-data"), description="state of the embedded stack")
    models_dir: Path | None = Field(None, description="detector weights; default <data_dir>/models")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- Kafka ------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset means the embedded broker of `deepwatch up`"
    )
    kafka_partitions: int = Field(4, ge=1, le=1024)
    kafka_replication: int = Field(1, ge=1, le=7)
    # Tansu holds the first JoinGroup for about half the session timeout; short values keep
    # group joins fast there and are harmless on a real Kafka.
    kafka_session_timeout_s: float = Field(6.0, gt=0)
    kafka_heartbeat_s: float = Field(2.0, gt=0)
    kafka_publish_timeout_s: float = Field(
        30.0, gt=0, le=600, description="how long `submit`, the crawler and `detectors reverdict --publish` wait for "
        "a broker to answer, or for room to send, before they report it; the API waits 5 s at the most (a request "
        "is waiting)"
    )

    # --- search index -----------------------------------------------------------------------
    index_backend: Literal["sqlite", "elasticsearch"] = "sqlite"
    index_sqlite_path: Path | None = Field(None, description="default <data_dir>/index.sqlite3")
    es_url: str | None = None
    es_username: str | None = None
    es_password: SecretStr | None = None
    es_api_key: SecretStr | None = None
    es_ca_certs: Path | None = None
    es_index_prefix: str = Field("deepwatch", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")

    # --- object store -----------------------------------------------------------------------
    store_backend: Literal["local", "s3"] = "local"
    store_local_dir: Path | None = Field(None, description="default <data_dir>/objects")
    s3_endpoint: str | None = Field(None, description="host:port or URL of the S3/MinIO service")
    s3_bucket: str = Field("deepwatch", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = True
    s3_region: str | None = None
    s3_public_url: str | None = Field(
        None,
        description="URL that moderators' browsers reach the S3 service at; presigned links are signed for it "
        "(default: s3_endpoint, which is often an in-cluster name)",
    )
    store_keep_media: bool = Field(False, description="keep non-flagged media after scoring")

    # --- API and Serve ----------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8765, ge=1, le=65535)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="comma-separated in the environment; each KEY (every scope) or KEY:scope+scope, scopes "
        "from read, submit, score, review, admin; NAME=KEY… names the key (reviews are recorded under it)",
    )
    api_max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="request bodies larger than this get 413 (except uploads to /v1/score)"
    )
    api_max_upload_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="request bodies to /v1/score (media uploads) larger than this get 413"
    )
    api_max_submit_urls: int = Field(100, ge=1, le=10_000, description="URLs one POST /v1/submit may carry")
    serve_url: str | None = Field(None, description="scoring endpoint; default the local API")
    # Ray Serve's deployments (serve/deployments.py); fractional CPUs and GPUs are allowed. Every replica
    # reserves its share: the total must fit the Ray cluster, or `serve run` waits for room forever.
    serve_faces_num_cpus: float = Field(0.25, gt=0, le=64, description="CPUs reserved per faces replica")
    serve_detector_num_cpus: float = Field(0.25, gt=0, le=64, description="CPUs reserved per detector replica")
    serve_detector_num_gpus: float = Field(0, ge=0, le=16, description="GPUs per detector replica (0.25 shares one)")
    serve_detector_resources: dict[str, dict[DetectorResource, float]] = Field(
        default_factory=dict,
        description="per-detector overrides (JSON in the environment), e.g. {\"meso4_df\": {\"num_gpus\": 0.5, "
        "\"max_replicas\": 4}}; keys num_cpus, num_gpus, min_replicas, max_replicas",
    )
    serve_min_replicas: int = Field(1, ge=0, le=1000, description="autoscaling floor of each detector and faces")
    serve_max_replicas: int = Field(1, ge=1, le=1000, description="autoscaling ceiling of each detector and faces")
    serve_target_ongoing_requests: float = Field(
        2.0, gt=0, le=1000, description="autoscaling adds replicas above this many requests in flight per replica"
    )
    serve_batch_max_crops: int = Field(
        32, ge=1, le=4096, description="face crops a detector takes at once (@serve.batch), from concurrent requests"
    )
    serve_cpu_pass_crops: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="crops per forward pass of a detector on the CPU; unset: each detector's own (MesoNet: 4). "
        "The best size depends on the CPU's caches (bench/README.md, bench serve)",
    )
    serve_batch_wait_s: float = Field(
        0.005, ge=0, le=10, description="how long a detector waits for more crops before running a partial batch"
    )
    serve_torch_threads: int = Field(
        0, ge=0, le=256, description="torch threads per detector replica; 0: its CPU share rounded up, at least 1"
    )
    ray_address: str | None = Field(None, description="unset: start a local Ray")
    ray_num_cpus: int | None = Field(None, ge=1)

    # --- stream worker and crawler ----------------------------------------------------------
    worker_web_port: int = Field(6066, ge=1, le=65535)
    worker_store: Literal["memory", "rocksdb"] = Field(
        "memory",
        description="where the worker keeps its tables (handled URLs); both are rebuilt from the Kafka "
        "changelog, rocksdb keeps them on disk under <data_dir>/faust so a restart recovers less",
    )
    worker_fetch_attempts: int = Field(
        4, ge=1, le=100, description="tries of a fetch that fails transiently before the URL is dead-lettered"
    )
    worker_batch_max: int = Field(
        10_000, ge=1, le=100_000, description="events of one fetch from Kafka the worker handles together: the URL "
        "hits among them are one index write, each record written once however many of them repost its URLs; "
        "fewer hold less in memory and publish the first results of a backlog sooner"
    )
    worker_log_events: bool = Field(
        False, description="log a line per event handled (partition and offset, canonical URL, outcome) rather than "
        "a count per outcome for each batch: about 100 bytes an event, 1 MB/s at 10,000 events/s; the results and "
        "dead-letter topics and the index hold the same"
    )
    worker_batch_budget_s: float = Field(
        300.0, gt=0, le=900, description="the worker starts no new event of a batch after this long, stops waiting "
        "for a service that is down (index, object store, scoring API) and reads the rest again with its next "
        "fetches: Kafka puts a consumer that does not fetch for Faust's broker_max_poll_interval (1000 s) out of "
        "its group, and new media take seconds each (an event under way that is not waiting is finished, so leave "
        "it room)"
    )
    worker_retry_base_s: float = Field(0.5, gt=0, description="first retry of a failed stage waits about this long")
    worker_retry_max_s: float = Field(30.0, gt=0, description="longest wait between two retries of one stage")
    score_concurrency: int = Field(4, ge=1, le=256, description="scoring requests one worker has in flight at most")
    score_timeout_s: float = Field(600.0, gt=0, description="one scoring request, end to end")
    score_breaker_failures: int = Field(
        5, ge=1, le=1000, description="consecutive unavailable answers from serve that open the circuit breaker"
    )
    score_breaker_cooldown_s: float = Field(
        10.0, gt=0, description="how long an open breaker holds requests before one probe goes through"
    )
    crawler_port: int = Field(6067, ge=1, le=65535)
    probe_host: str = Field(
        "127.0.0.1",
        description="address the worker's and the crawler's health and metrics servers bind; 0.0.0.0 in a pod, "
        "so that kubelet probes and Prometheus reach them",
    )
    sources_file: Path | None = None
    health_worker_url: str | None = Field(None, description="the API's /healthz asks it")
    health_crawler_url: str | None = Field(None, description="the API's /healthz asks it")
    crawler_host_rate: float = Field(
        1.0, ge=0, description="crawler requests per second to one host name (0: no limit)"
    )
    crawler_host_burst: int = Field(5, ge=1, le=1000, description="requests to one host allowed back to back")
    crawler_retries: int = Field(3, ge=0, le=10, description="retries of a transient fetch failure within a poll")
    crawler_retry_base_s: float = Field(1.0, gt=0, description="first retry waits about this long, then doubling")
    crawler_retry_max_s: float = Field(30.0, gt=0, description="longest wait between two retries of one fetch")
    crawler_backoff_max_s: float = Field(
        3600.0, gt=0, description="a failing source's poll interval doubles per failure up to this (or its interval)"
    )
    crawler_retry_after_max_s: float = Field(
        300.0, ge=0, description="a server's Retry-After up to this is honoured; a longer one fails the poll"
    )
    crawler_robots: bool = Field(True, description="honour robots.txt for page sources")
    crawler_robots_ttl_s: float = Field(3600.0, gt=0, description="how long a host's robots.txt is kept")

    # --- fetching ---------------------------------------------------------------------------
    fetch_max_bytes: int = Field(500 * 1024 * 1024, ge=1)
    fetch_max_duration_s: float = Field(15 * 60, gt=0)
    fetch_timeout_s: float = Field(120, gt=0)
    fetch_max_redirects: int = Field(5, ge=0, le=30, description="per request of a fetch; 0 refuses any redirect")
    fetch_allow_networks: Annotated[list[IpNetwork], NoDecode] = Field(
        default_factory=list,
        description="CIDRs the SSRF guard lets through (comma-separated); empty by default",
    )

    # --- fingerprints -----------------------------------------------------------------------
    fingerprint_interval_s: float = Field(
        1.0, gt=0, le=60, description="seconds between sampled video frames (widened for videos over max_frames)"
    )
    fingerprint_max_frames: int = Field(900, ge=1, le=100_000, description="sampled frames per video at most")
    fingerprint_max_keyframe_gap_s: float = Field(
        2.0,
        ge=0,
        description="decode only keyframes when no two are further apart than this (much cheaper); 0 never does",
    )
    fingerprint_face_frames: int = Field(
        4,
        ge=0,
        le=1000,
        description="sampled frames, spread over the video, that the face detector runs on (about 15 ms of CPU each)",
    )
    fingerprint_face_confidence: float = Field(0.8, gt=0, lt=1, description="face detector confidence threshold")
    fingerprint_face_input_px: int = Field(
        256,
        ge=64,
        le=1024,
        description="long side of the frame the face detector sees (cost grows with its square: 14 ms of CPU "
        "a frame at 256, 23 ms at 300)",
    )

    # --- media normalisation and derivatives -------------------------------------------------
    media_max_pixels: int = Field(
        2**27,
        ge=1,
        description="pixels per image or video frame (width x height); more is TooLarge before any decoding. "
        "The default, about 134 million, admits 108-megapixel phone photos (about 400 MB as RGB)",
    )
    media_decode_timeout_s: float = Field(
        30.0,
        gt=0,
        description="wall-clock limit on one decode check (structure, decode, probe, thumbnail) or preview; "
        "past it the decoding process is killed and the file is Corrupt (DecodeTimeout)",
    )
    thumbnail_max_side: int = Field(320, ge=16, le=4096, description="longer side of the JPEG thumbnail, pixels")
    preview_max_side: int = Field(480, ge=16, le=4096, description="longer side of the MP4 preview, pixels")
    preview_max_s: float = Field(10.0, gt=0, le=600, description="seconds of video in the MP4 preview")

    # --- detectors and scoring (serve/) --------------------------------------------------------
    detectors: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="detector names to run (comma-separated); empty: every registered one"
    )
    detector_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="further detector classes as module:Class (comma-separated)"
    )
    weights_cache_dir: Path | None = Field(
        None, description="weights converted for PyTorch, keyed by the source file's sha256; default <data_dir>/cache"
    )
    models_base_url: str | None = Field(
        None, description="`models pull` fetches <this>/<file name> instead of each file's upstream URL (a mirror)"
    )
    score_frames_per_video: int = Field(32, ge=1, le=1000, description="evenly spaced frames scored per video")
    score_face_confidence: float = Field(0.8, gt=0, lt=1, description="face detector confidence for scoring")
    score_face_margin: float = Field(0.2, ge=0, le=1, description="face crops are this share of the box wider per side")
    score_align_faces: bool = Field(
        True, description="turn each face upright and centre it by its landmarks before scoring, as MesoNet's "
        "authors cropped their faces (needs MTCNN's ONet weights: the facenet-pytorch wheel, or "
        "`deepwatch models pull`; false: the detector's box as it is)",
    )
    score_face_workers: int = Field(
        0, ge=0, le=64,
        description="face detector passes run at once while scoring a video, one OpenCV thread each "
        "(0: one per CPU OpenCV sees, container limits included; 1: one pass at a time on OpenCV's own threads)",
    )
    # the types records keep them under (deepwatch.contracts.EnsembleSettings), so a bad value fails here
    ensemble_weights: dict[EnsembleName, EnsembleWeight] = Field(
        default_factory=dict, description="per-detector weight in the ensemble (JSON in the environment); default 1"
    )
    ensemble_platt: dict[EnsembleName, PlattPair] = Field(
        default_factory=dict, description="per-detector Platt (a, b): sigmoid(a*logit(p)+b); default (1, 0)"
    )
    verdict_fake_threshold: float = Field(0.7, gt=0, lt=1, description="ensemble score at or above: fake")
    verdict_real_threshold: float = Field(0.3, gt=0, lt=1, description="ensemble score at or below: real")

    _commas = field_validator("api_keys", "detectors", "detector_plugins", mode="before")(_split_commas)

    @field_validator("fetch_allow_networks", mode="before")
    @classmethod
    def _strict_networks(cls, value: Any) -> Any:
        # ip_network("10.0.0.1/8") raises: a CIDR with host bits set is almost always a typo.
        items = _split_commas(value)
        if not isinstance(items, list):
            return items
        return [ipaddress.ip_network(v, strict=True) if isinstance(v, str) else v for v in items]

    @field_validator("api_keys", mode="after")
    @classmethod
    def _known_scopes(cls, keys: list[SecretStr]) -> list[SecretStr]:
        names: set[str] = set()
        for number, key in enumerate(keys, 1):
            entry = parse_api_key(key.get_secret_value())
            if not entry.secret:
                raise ValueError(f"key {number} is empty")  # never echo a secret in an error
            unknown = sorted(entry.scopes - set(API_SCOPES))
            if unknown:
                raise ValueError(f"key {number} has unknown scopes {unknown}; known: {', '.join(API_SCOPES)}")
            if entry.name in names:
                raise ValueError(f"key {number} has the name {entry.name!r} of an earlier key")
            names.add(entry.name)
        return keys

    @model_validator(mode="after")
    def _backends_configured(self) -> Settings:
        if self.index_backend == "elasticsearch" and not self.es_url:
            raise ValueError("index_backend 'elasticsearch' needs es_url")
        if self.store_backend == "s3" and not self.s3_endpoint:
            raise ValueError("store_backend 's3' needs s3_endpoint")
        if self.kafka_heartbeat_s >= self.kafka_session_timeout_s:
            raise ValueError("kafka_heartbeat_s must be below kafka_session_timeout_s")
        if self.worker_retry_base_s > self.worker_retry_max_s:
            raise ValueError("worker_retry_base_s must not exceed worker_retry_max_s")
        if self.crawler_retry_base_s > self.crawler_retry_max_s:
            raise ValueError("crawler_retry_base_s must not exceed crawler_retry_max_s")
        if self.verdict_real_threshold >= self.verdict_fake_threshold:
            raise ValueError("verdict_real_threshold must be below verdict_fake_threshold")
        if self.serve_min_replicas > self.serve_max_replicas:
            raise ValueError("serve_min_replicas must not exceed serve_max_replicas")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    # --- derived locations ------------------------------------------------------------------
    @property
    def models_path(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def weights_cache_path(self) -> Path:
        return self.weights_cache_dir or self.data_dir / "cache"

    @property
    def index_path(self) -> Path:
        return self.index_sqlite_path or self.data_dir / "index.sqlite3"

    @property
    def store_path(self) -> Path:
        return self.store_local_dir or self.data_dir / "objects"

    @property
    def endpoints_file(self) -> Path:
        return self.data_dir / "endpoints.json"

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data, with every secret replaced by a mask."""
        data = self.model_dump(mode="json")
        for name in ("es_url", "s3_endpoint", "serve_url", "kafka_bootstrap"):
            if data.get(name):
                data[name] = mask_url_password(data[name])
        return data


def mask_url_password(url: str) -> str:
    """``https://user:secret@host`` → ``https://user:**********@host``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:{MASK}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def default_of(name: str) -> Any:
    """The default ``Settings`` declares for ``name``, without reading the environment or a file: for the
    option objects of library code (``FingerprintOptions``, ``FetchLimits``), whose defaults are these."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


def default_field(name: str) -> Any:
    """A dataclass field whose default is :func:`default_of` ``name``, read when an instance is made."""
    return dataclasses.field(default_factory=functools.partial(default_of, name))


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; raise :class:`ContractError` naming each bad field."""
    path = config or os.environ.get("DEEPWATCH_CONFIG") or None
    yaml_path = Path(path) if path else None
    if yaml_path is not None and not yaml_path.is_file():
        raise ContractError("Settings", [("config", f"no such file: {yaml_path}")])
    token = _yaml_file.set(yaml_path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])) or "<root>", e["msg"]) for e in exc.errors()]
        raise ContractError("Settings", problems) from None
    finally:
        _yaml_file.reset(token)
