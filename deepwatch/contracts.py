"""The messages and documents that cross process boundaries.

Every event on a Kafka topic and every record in the index is one of these models. They are
versioned (``schema_version``) and strict: unknown fields and wrong types are rejected with an
error that names the field, because a silently dropped field is a silently lost fact.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

TOPIC_URLS = "deepwatch.urls"
TOPIC_RESULTS = "deepwatch.results"
TOPIC_DLQ = "deepwatch.dlq"
TOPICS = (TOPIC_URLS, TOPIC_RESULTS, TOPIC_DLQ)

MAX_URL_LENGTH = 4096

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256")]
Hash64Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="64-bit hash, hex")]
Hash256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="256-bit hash, hex")]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
HttpUrl = Annotated[str, Field(min_length=8, max_length=MAX_URL_LENGTH)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ContractError(ValueError):
    """Input that does not fit a contract; the message names every offending field."""

    def __init__(self, model: str, problems: list[tuple[str, str]]):
        self.model = model
        self.problems = problems
        detail = "; ".join(f"{field}: {message}" for field, message in problems)
        super().__init__(f"invalid {model}: {detail}")

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]


class Part(BaseModel):
    """A strict piece of a contract: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def copied_with(self, **changes: Any) -> Self:
        """``model_copy(update=changes)``: the same shallow, unvalidated copy, without the generic
        ``copy.copy`` of four attributes that made it cost twice as much. The stream's hit path makes
        three of these per repost of a known URL (its sighting, the merged sighting, the record). Parts
        have no extra fields (``extra="forbid"``) and no private attributes."""
        if getattr(self, "__pydantic_private__", None) is not None:  # none has today; pydantic copies them
            return self.model_copy(update=changes)
        cls = type(self)
        copied = cls.__new__(cls)
        values = self.__dict__.copy()
        values.update(changes)
        _set_attribute(copied, "__dict__", values)
        _set_attribute(copied, "__pydantic_fields_set__", self.__pydantic_fields_set__ | changes.keys())
        _set_attribute(copied, "__pydantic_extra__", None)
        _set_attribute(copied, "__pydantic_private__", None)
        return copied

    @classmethod
    def assembled(cls, **values: Any) -> Self:
        """The part made of ``values`` without validating them: only for values that already passed this
        part's rules, taken from other validated contracts (an event's URL for a sighting's URL), and that
        together keep its own rules (a sighting's ``first_seen <= last_seen``). Fields left out take their
        defaults. pydantic's ``model_construct`` does the same for about twice the cost; validating a sighting
        again cost ~5 us of the ~100 us a repost takes on the stream's hit path, where one is made per event."""
        made = cls.__new__(cls)
        _set_attribute(made, "__dict__", _with_defaults(cls, values))
        _set_attribute(made, "__pydantic_fields_set__", set(values))
        _set_attribute(made, "__pydantic_extra__", None)
        _set_attribute(made, "__pydantic_private__", None)
        return made


_set_attribute = object.__setattr__  # past validate_assignment, as pydantic's own copy does


_REQUIRED = object()


@functools.cache
def _field_defaults(cls: type[BaseModel]) -> tuple[tuple[str, Any, Any], ...]:
    """``(name, default, default factory)`` of each field of ``cls`` in order; _REQUIRED where it has neither."""
    return tuple(
        (name, _REQUIRED if field.is_required() else field.default, field.default_factory)
        for name, field in cls.model_fields.items()
    )


def _with_defaults(cls: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` in field order (the order a dump writes), with the default of each field they leave out."""
    data = {}
    for name, default, factory in _field_defaults(cls):
        if name in values:
            data[name] = values[name]
        elif factory is not None:
            data[name] = factory()
        elif default is _REQUIRED:
            raise TypeError(f"{cls.__name__}.assembled: no value for the required field {name!r}")
        else:
            data[name] = default
    if not values.keys() <= data.keys():
        raise TypeError(f"{cls.__name__}.assembled: no such field: {sorted(values.keys() - data.keys())}")
    return data


class Contract(Part):
    """A top-level message or document, versioned so that readers can tell old from new."""

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


# str.isspace per character was a tenth of a crawler's time per event; \s is the same class.
_WHITESPACE = re.compile(r"\s")


def _check_http_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError("must be an absolute http(s) URL")
    if _WHITESPACE.search(value):
        raise ValueError("must not contain whitespace")
    return value


class Hints(Part):
    """What the crawler saw next to the URL; free text for moderators, never trusted."""

    title: Annotated[str, Field(max_length=1000)] | None = None
    uploader: Annotated[str, Field(max_length=300)] | None = None
    posted_at: AwareDatetime | None = None
    text: Annotated[str, Field(max_length=10_000)] | None = None


class UrlDiscovered(Contract):
    """A media URL found by a crawler or submitted by a person (topic ``deepwatch.urls``)."""

    url: HttpUrl
    canonical_url: HttpUrl
    source: Slug
    platform: Slug
    discovered_at: AwareDatetime = Field(default_factory=utcnow)
    hints: Hints | None = None
    trace_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: uuid.uuid4().hex
    )

    _urls = field_validator("url", "canonical_url")(_check_http_url)

    def key(self) -> bytes:
        """Kafka key: the same canonical URL always lands on the same partition."""
        return self.canonical_url.encode()


class EventPosition(Part):
    """Where an event sat in its Kafka partition: the offset, and the record's timestamp (ms) so that a
    topic recreated from offset 0 (the embedded broker keeps topics in memory) reads as newer, not as a
    replay."""

    offset: Annotated[int, Field(ge=0)]
    timestamp_ms: Annotated[int, Field(ge=0)]

    def covers(self, other: EventPosition) -> bool:
        """``other`` is this event or an earlier one of the same partition: already applied."""
        return other.offset <= self.offset and other.timestamp_ms <= self.timestamp_ms


# "<topic>:<partition>", e.g. "deepwatch.urls:3"
PartitionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}:[0-9]{1,6}$")]


class Sighting(Part):
    """One distinct URL at which a media item was seen."""

    url: HttpUrl
    canonical_url: HttpUrl
    source: Slug
    platform: Slug
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    count: Annotated[int, Field(ge=1)] = 1
    hints: Hints | None = None
    # The last event applied to this sighting, per partition. Events of one canonical URL share a
    # Kafka key, hence a partition, and arrive in offset order: an event at or below the watermark is
    # a redelivery (at-least-once after a crash or rebalance) and must not count again.
    applied: dict[PartitionName, EventPosition] = Field(default_factory=dict)

    _urls = field_validator("url", "canonical_url")(_check_http_url)

    @model_validator(mode="after")
    def _ordered(self) -> Sighting:
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
        return self


# Fingerprint lists computed together: each is empty or parallel to (as long as) its lead list.
FINGERPRINT_PARALLEL: dict[str, str] = {
    "frame_times": "pdq",
    "frame_quality": "pdq",
    "pdq_flip": "pdq",
    "pdq_crop": "pdq",
    "phash": "pdq",
    "phash_flip": "pdq",
    "phash_crop": "pdq",
    "face_times": "pdq_faces",
    "face_boxes": "pdq_faces",
    "pdq_faces_flip": "pdq_faces",
    "phash_faces": "pdq_faces",
    "face_thumbs": "pdq_faces",
    "face_places": "pdq_faces",
    "scene_grid": "scene_times",
    "scene_mask": "scene_times",
}


class Fingerprints(Part):
    """Near-duplicate evidence; ``sha256`` is the exact identity, the rest are perceptual."""

    sha256: Sha256Hex
    videohash: Hash64Hex | None = None
    pdq: list[Hash256Hex] = Field(default_factory=list, description="per sampled frame (1 fps)")
    pdq_faces: list[Hash256Hex] = Field(default_factory=list, description="per face crop")
    # What the matcher needs beyond the indexed hashes (deepwatch.media.matching); each list is empty
    # (not computed, e.g. a record from before these fields) or parallel to `pdq` / `pdq_faces`.
    frame_times: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list, description="seconds, per pdq")
    frame_quality: list[Annotated[int, Field(ge=0, le=100)]] = Field(
        default_factory=list, description="PDQ quality 0-100, per pdq"
    )
    pdq_flip: list[Hash256Hex] = Field(default_factory=list, description="per pdq: of the mirrored frame")
    pdq_crop: list[Hash256Hex] = Field(default_factory=list, description="per pdq: of the centred 90 % of the frame")
    phash: list[Hash64Hex] = Field(default_factory=list, description="per pdq: coarse 64-bit pHash of the frame")
    phash_flip: list[Hash64Hex] = Field(default_factory=list, description="per pdq: pHash of the mirrored frame")
    phash_crop: list[Hash64Hex] = Field(default_factory=list, description="per pdq: pHash of the centred 90 %")
    face_times: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list, description="seconds, per face")
    face_boxes: list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)]] = Field(
        default_factory=list, description="x, y, w, h in source pixels, per face"
    )
    pdq_faces_flip: list[Hash256Hex] = Field(default_factory=list, description="per face: of the mirrored crop")
    phash_faces: list[Hash64Hex] = Field(default_factory=list, description="per face: coarse pHash of the crop")
    face_thumbs: list[Annotated[str, Field(pattern=r"^[0-9a-f]{512}$")]] = Field(
        default_factory=list, description="per face: the inner face as 16x16 grey pixels, hex (variant detection)"
    )
    face_places: list[Annotated[list[float], Field(min_length=4, max_length=4)]] = Field(
        default_factory=list, description="per face: x, y, w, h as shares of the picture inside black borders"
    )
    scene_times: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=list, description="seconds of the frames where faces were found: the scene_grid entries"
    )
    scene_grid: list[Annotated[str, Field(pattern=r"^[0-9a-f]{512}$")]] = Field(
        default_factory=list, description="per scene_times: 16x16 mean luma of the frame, hex (variant detection)"
    )
    scene_mask: list[Hash256Hex] = Field(
        default_factory=list, description="per scene_times: the grid cells the faces cover, 256 bits"
    )

    @model_validator(mode="after")
    def _parallel(self) -> Fingerprints:
        for name, lead in FINGERPRINT_PARALLEL.items():
            values, expected = getattr(self, name), len(getattr(self, lead))
            if values and len(values) != expected:
                raise ValueError(f"{name} has {len(values)} entries, {lead} has {expected}")
        return self


class DetectorScore(Part):
    p_fake: Probability
    model_version: Annotated[str, Field(min_length=1, max_length=200)]
    frames: Annotated[int, Field(ge=0)] = 0


# A record's per-face scores: score_frames_per_video (default 32) x MAX_FACES_PER_FRAME (4) fits with room;
# the scorer keeps the most suspicious faces when a long sampling finds more.
MAX_FACE_SCORES = 1000


class FaceScore(Part):
    """One scored face crop: when and where it was, what each detector said and their ensemble."""

    t: Annotated[float, Field(ge=0, description="seconds from the first frame (0 for an image)")]
    frame: Annotated[int, Field(ge=0, description="position among the sampled frames")]
    box: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)] = Field(
        description="x, y, w, h of the face's square (the box with a margin) in the sampled frame's pixels; the "
        "scored crop itself unless ``aligned`` says otherwise"
    )
    scores: dict[Annotated[str, Field(min_length=1, max_length=200)], Probability] = Field(
        max_length=64, description="per detector that scores single faces: this face's P(fake)"
    )
    score: Probability | None = Field(description="the ensemble of ``scores`` (None when no detector scored it)")
    aligned: Annotated[list[float], Field(min_length=4, max_length=4)] | None = Field(
        None, description="for a face aligned by its landmarks, where the scored crop came from: the centre x, y "
        "and the side of a square in the sampled frame's pixels, and the face's roll in degrees (positive: chin "
        "towards the picture's right); the crop is that square turned upright"
    )


# What the ensemble settings take, here and in deepwatch.settings: a detector's name, its Platt (a, b) and its
# weight, finite (a NaN parameter or an infinite weight would make every ensemble score NaN or fail)
EnsembleName = Annotated[str, Field(min_length=1, max_length=200)]
PlattPair = tuple[FiniteFloat, FiniteFloat]
EnsembleWeight = Annotated[FiniteFloat, Field(ge=0)]


class EnsembleSettings(Part):
    """The ensemble settings that turned a record's detector scores into its score and verdict (as the
    settings ``ensemble_platt``, ``ensemble_weights`` and ``verdict_*_threshold`` were then): what a moderator
    needs to read a verdict, and what ``detectors reverdict`` compares with the settings in force."""

    platt: dict[EnsembleName, PlattPair] = Field(
        default_factory=dict, description="per detector (a, b); a detector left out: (1, 0)"
    )
    weights: dict[EnsembleName, EnsembleWeight] = Field(
        default_factory=dict, description="per detector; a detector left out weighs 1"
    )
    fake_threshold: Probability
    real_threshold: Probability


class Review(Part):
    label: Literal["fake", "real", "unsure"]
    reviewer: Annotated[str, Field(min_length=1, max_length=200)]
    at: AwareDatetime = Field(default_factory=utcnow)
    note: Annotated[str, Field(max_length=10_000)] | None = None


class StoredObjects(Part):
    """Object-store keys; built from ids only, never from user input."""

    media: str | None = None
    thumbnail: str | None = None
    result: str | None = None


class MediaInfo(Part):
    duration: Annotated[float, Field(ge=0)] | None = None
    width: Annotated[int, Field(ge=0)] | None = None
    height: Annotated[int, Field(ge=0)] | None = None
    fps: Annotated[float, Field(ge=0)] | None = None
    bytes: Annotated[int, Field(ge=0)] | None = None
    codec: Annotated[str, Field(max_length=64)] | None = None


Verdict = Literal["fake", "uncertain", "real", "no_face", "error"]
DedupClass = Literal["none", "url", "exact", "near"]


class MediaRecord(Contract):
    """The one document per distinct media item, keyed by the sha256 of its bytes."""

    media_id: Sha256Hex
    kind: Literal["image", "video"]
    fingerprints: Fingerprints
    sightings: list[Sighting] = Field(default_factory=list)
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    dedup: DedupClass = "none"
    duplicate_of: Sha256Hex | None = None
    variant_of: Sha256Hex | None = None
    detectors: dict[str, DetectorScore] = Field(default_factory=dict)
    face_scores: list[FaceScore] = Field(
        default_factory=list, max_length=MAX_FACE_SCORES, description="per scored face, in time order"
    )
    score: Probability | None = None
    verdict: Verdict | None = None
    ensemble: EnsembleSettings | None = Field(None, description="the settings that gave score and verdict")
    error: Annotated[str, Field(max_length=10_000)] | None = None
    review: Review | None = None
    objects: StoredObjects = Field(default_factory=StoredObjects)
    media: MediaInfo = Field(default_factory=MediaInfo)
    timings: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> MediaRecord:
        if self.fingerprints.sha256 != self.media_id:
            raise ValueError("fingerprints.sha256 must equal media_id")
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
        if self.dedup == "near" and self.duplicate_of is None:
            raise ValueError("dedup 'near' needs duplicate_of")
        if self.verdict == "error" and not self.error:
            raise ValueError("verdict 'error' needs an error message")
        urls = [s.canonical_url for s in self.sightings]
        if len(urls) != len(set(urls)):
            raise ValueError("sightings must hold one entry per canonical_url")
        return self


class ScoredMedia(Contract):
    """Published on ``deepwatch.results`` once a record has been written."""

    media_id: Sha256Hex
    trace_id: Annotated[str, Field(min_length=1, max_length=64)]
    canonical_url: HttpUrl
    dedup: DedupClass
    verdict: Verdict | None
    score: Probability | None
    detectors: dict[str, DetectorScore] = Field(default_factory=dict)
    at: AwareDatetime = Field(default_factory=utcnow)

    def key(self) -> bytes:
        """Kafka key: every result about one media item lands on the same partition, in order."""
        return self.media_id.encode()


class _RecordScores(Part):
    """The fields of a :class:`ScoredMedia` that come from its record, typed as there."""

    verdict: Verdict | None
    score: Probability | None
    detectors: dict[str, DetectorScore] = Field(default_factory=dict)


def record_scores_json(verdict: Verdict | None, score: float | None, detectors: dict[str, DetectorScore]) -> str:
    """``"verdict":…,"score":…,"detectors":{…}``: the members of a :class:`ScoredMedia`'s JSON that come from its
    record, as its own dump writes them, for :func:`scored_media_json`."""
    return _RecordScores.assembled(verdict=verdict, score=score, detectors=detectors).model_dump_json()[1:-1]


@functools.lru_cache(maxsize=1)  # the results of a batch share their time
def _json_time(at: datetime) -> str:
    stamp = at.isoformat()
    return stamp[:-6] + "Z" if stamp.endswith("+00:00") else stamp  # pydantic writes UTC as Z


_json_string = json.JSONEncoder(ensure_ascii=False).encode  # escapes as pydantic does: quotes, backslash, controls


def scored_media_json(
    *, media_id: str, trace_id: str, canonical_url: str, dedup: DedupClass, record_scores: str,
    at: datetime | None = None,
) -> bytes:
    """``ScoredMedia(...).to_json()``, written from validated values (a stored record's id and dedup class, an
    event's trace id and URL) and the record's scores as :func:`record_scores_json` wrote them once.

    The stream's URL-hit path publishes one result per event, most of them about records whose scores it read
    as this JSON: decoding those scores into models and dumping them again with every result was a fifth of
    that path's time (bench stream, distinct URLs: 6,612 to 8,475 events/s, stream-2026-12-07-s23-scores-json)."""
    stamp = _json_time(at or utcnow())
    return (
        f'{{"schema_version":{SCHEMA_VERSION},"media_id":"{media_id}","trace_id":{_json_string(trace_id)},'
        f'"canonical_url":{_json_string(canonical_url)},"dedup":"{dedup}",{record_scores},"at":"{stamp}"}}'
    ).encode()


class UrlFailure(Contract):
    """A URL the stream could not score, and why: the answer to "why has this URL no score?".

    Not a :class:`MediaRecord`: a URL whose bytes never arrived has no sha256 and no kind, so it is
    keyed by its canonical URL instead (the worker keeps it in the object store under
    ``failures/<sha256 of canonical_url>.json`` and dead-letters the event with the same reason).
    """

    canonical_url: HttpUrl
    sighting: Sighting
    verdict: Literal["error"] = "error"
    stage: Annotated[str, Field(min_length=1, max_length=64)]
    error_type: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=10_000)]
    attempts: Annotated[int, Field(ge=1)] = 1
    at: AwareDatetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _same_url(self) -> UrlFailure:
        if self.sighting.canonical_url != self.canonical_url:
            raise ValueError("sighting.canonical_url must equal canonical_url")
        return self


class DeadLetter(Contract):
    """A message that could not be processed, with why; published on ``deepwatch.dlq``."""

    payload: str = Field(description="the original message value, decoded as UTF-8 with replacement")
    key: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    stage: Annotated[str, Field(min_length=1, max_length=64)]
    error_type: Annotated[str, Field(min_length=1, max_length=200)]
    message: Annotated[str, Field(max_length=10_000)]
    attempts: Annotated[int, Field(ge=1)] = 1
    at: AwareDatetime = Field(default_factory=utcnow)


C = TypeVar("C", bound=Part)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


# What pydantic says of JSON that is not an object of the model, in the words parse has always used.
_ROOT_PROBLEMS = {"json_invalid": "not valid JSON ({msg})", "model_type": "must be a JSON object"}


def parse(model: type[C], raw: bytes | str | dict[str, Any]) -> C:
    """Validate raw input into ``model``, raising :class:`ContractError` that names each field."""
    if not isinstance(raw, (bytes, str, dict)):
        raise ContractError(model.__name__, [("<root>", "must be a JSON object")])
    try:
        # Text goes to pydantic's own JSON parser: half the cost of json.loads and then validating the
        # dict, on every event the stream reads.
        return model.model_validate(raw) if isinstance(raw, dict) else model.model_validate_json(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"] and err["type"] in _ROOT_PROBLEMS:
                problems.append(("<root>", _ROOT_PROBLEMS[err["type"]].format(msg=err["msg"])))
            else:
                problems.append((_loc(err["loc"]), err["msg"]))
        raise ContractError(model.__name__, problems) from None
