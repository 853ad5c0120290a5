"""Verdicts again, from the scores the records hold, after the ensemble's settings changed.

``detectors calibrate`` fits Platt parameters; setting them (or new weights or thresholds) changes the verdicts
of media scored from then on, while every record scored before keeps the verdict of the old settings, and a
moderator's search for fakes mixes the two. The ensemble is a function of the per-detector P(fake) a record
keeps (:mod:`serve.ensemble`), so the records' scores and verdicts can be worked out again without scoring
anything: :func:`reverdicted` for one record (pure), :func:`reverdict` over the index.

Each record changes in one atomic read-change-write (``SearchIndex.update_many``), so the stream can go on
counting sightings meanwhile. A record turned fake gets its stored bytes copied under ``flagged/``, as the
stream keeps a fake's, and then the result JSON in the object store is rewritten: both before the index record,
so a crash in between leaves that as it was, and the next run finds it again (the copy is keyed by content).
A record that stops being fake keeps its ``flagged/`` copy: bytes are never dropped on a calibration's word.

With ``publish``, each record whose score or verdict moved is also told on ``deepwatch.results`` (a
``ScoredMedia``, as the stream publishes for media it records), all under one trace id per run, so consumers
downstream hear of verdicts that changed without anything being scored. That too happens before the index
write: a record is told at least once, and twice only when a run stopped between the two.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serve.ensemble import EnsembleConfig, decide, face_ensemble

if TYPE_CHECKING:
    from deepwatch.contracts import MediaRecord, ScoredMedia
    from storage.index import SearchIndex
    from storage.objects import ObjectStore
    from storage.query import SearchQuery

log = logging.getLogger(__name__)

JUDGED = ("fake", "uncertain", "real")  # verdicts the ensemble gave; no_face and error have no scores to weigh
BATCH = 200  # records per atomic update: one SQLite transaction


def reverdicted(record: MediaRecord, config: EnsembleConfig) -> MediaRecord | None:
    """``record`` with the score, verdict and face ensembles ``config`` gives its detectors' scores, and
    ``config`` as the settings behind them; None when that is what it holds already (or it has no ensemble
    verdict to redo). A record scored before records kept their settings gets them recorded when the
    settings in force give its very scores."""
    if record.verdict not in JUDGED or not record.detectors:
        return None
    score, verdict = decide({name: s.p_fake for name, s in record.detectors.items()}, config)
    faces = [face.model_copy(update={"score": face_ensemble(face.scores, config)}) for face in record.face_scores]
    ensemble = config.recorded()
    if (score, verdict, faces, ensemble) == (record.score, record.verdict, record.face_scores, record.ensemble):
        return None
    return record.model_copy(update={"score": score, "verdict": verdict, "face_scores": faces, "ensemble": ensemble})


@dataclass
class ReverdictSummary:
    examined: int = 0  # records the filters matched with a verdict of the ensemble's
    changed: int = 0  # of which got another score, face scores or settings recorded, written unless dry_run
    transitions: Counter[str] = field(default_factory=Counter)  # "real -> fake": records whose verdict moved so
    # newly fake without stored bytes (scored when the store kept only fakes): an export counts them missing
    fake_without_media: list[str] = field(default_factory=list)
    copied_to_flagged: int = 0  # newly fake whose kept bytes were copied under flagged/ (or would be)
    published: int = 0  # results told on deepwatch.results (with publish)
    trace_id: str = ""  # of those results
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "changed": self.changed,
            "verdicts_changed": dict(sorted(self.transitions.items())),
            "fake_without_media": self.fake_without_media,
            "copied_to_flagged": self.copied_to_flagged,
            "published": self.published,
            "trace_id": self.trace_id,
            "dry_run": self.dry_run,
        }


def reverdict(
    index: SearchIndex,
    store: ObjectStore,
    query: SearchQuery,
    config: EnsembleConfig,
    *,
    dry_run: bool = False,
    publish: Callable[[list[ScoredMedia]], object] | None = None,
) -> ReverdictSummary:
    """Bring the scores and verdicts of the records ``query`` matches in line with ``config``; with ``publish``,
    hand it the results of each batch's records whose score or verdict moved (an exception it raises stops
    the run before that batch's records are written)."""
    from storage.index import iter_search

    summary = ReverdictSummary(dry_run=dry_run, trace_id=f"reverdict-{uuid.uuid4().hex}")
    # oldest first: a rewrite changes a record's score, never its first sighting, so no record moves between
    # the pages still to come
    records = iter_search(index, query.model_copy(update={"verdict": list(JUDGED), "sort": "oldest"}))
    while batch := list(itertools.islice(records, BATCH)):
        summary.examined += len(batch)
        changes = [(old, new) for old in batch if (new := reverdicted(old, config)) is not None]
        summary.changed += len(changes)
        flagged: dict[str, str] = {}  # media id -> its flagged/ key, for records turned fake that have bytes
        for old, new in changes:
            if new.verdict != old.verdict:
                summary.transitions[f"{old.verdict} -> {new.verdict}"] += 1
                if new.verdict == "fake" and (key := _flagged_copy(store, new, summary, dry_run)):
                    flagged[new.media_id] = key
        if changes and not dry_run:
            for _, new in changes:
                if new.objects.result:
                    store.put(new.objects.result, with_media(new, flagged).to_json(), content_type="application/json")
            # told before the index is written, like the result JSON: a failure or crash before the write leaves
            # the records to the next run, which tells them again (at least once, never lost)
            if publish is not None:
                # a record without a URL (an upload scored through the API) was never told, and has no URL to tell
                told = [scored_media_of(new, summary.trace_id) for old, new in changes
                        if (new.score, new.verdict) != (old.score, old.verdict) and new.sightings]
                if told:
                    publish(told)
                    summary.published += len(told)
            index.update_many([new.media_id for _, new in changes], _change(config, flagged))
        # a whole index takes minutes (each record is read whole): say how far it is
        log.info("%d records examined, %d %s so far", summary.examined, summary.changed,
                 "would change" if dry_run else "changed")
    return summary


def flag(store: ObjectStore, record: MediaRecord, dry_run: bool) -> tuple[str, bool] | None:
    """The ``flagged/`` key of ``record`` (newly fake), its stored bytes copied there unless they are there
    already (or ``dry_run``), and whether they were (or would be) copied; None when no bytes of it are stored."""
    from storage import keys
    from storage.export.select import locate_media

    found = locate_media(store, record)
    if found is None:
        return None
    key, ext, _ = found
    flagged = keys.flagged_key(record.media_id, ext)
    if key == flagged:
        return flagged, False
    if not dry_run:
        content_type = store.stat(key).content_type
        with store.get(key) as stream:
            store.put(flagged, stream.iter_chunks(), content_type=content_type)
    return flagged, True


def _flagged_copy(store: ObjectStore, record: MediaRecord, summary: ReverdictSummary, dry_run: bool) -> str | None:
    """The ``flagged/`` key ``record`` (newly fake) is to point at where it does not yet (:func:`flag`), with
    the copy or the missing bytes counted in ``summary``."""
    found = flag(store, record, dry_run)
    if found is None:
        summary.fake_without_media.append(record.media_id)
        return None
    key, copied = found
    summary.copied_to_flagged += copied
    return key if key != record.objects.media else None


def with_media(record: MediaRecord, flagged: dict[str, str]) -> MediaRecord:
    """``record`` pointing at its ``flagged/`` copy where ``flagged`` has one."""
    if record.media_id not in flagged or record.objects.media == flagged[record.media_id]:
        return record
    objects = record.objects.model_copy(update={"media": flagged[record.media_id]})
    return record.model_copy(update={"objects": objects})


def _change(config: EnsembleConfig, flagged: dict[str, str]) -> Callable[[MediaRecord], MediaRecord | None]:
    """The change ``update_many`` applies to each record as stored at that moment."""

    def change(stored: MediaRecord) -> MediaRecord | None:
        new = reverdicted(stored, config)
        return None if new is None else with_media(new, flagged)

    return change


def scored_media_of(record: MediaRecord, trace_id: str) -> ScoredMedia:
    """What ``deepwatch.results`` hears of a record reverdicted: its new score and verdict, under its first URL."""
    from deepwatch.contracts import ScoredMedia

    return ScoredMedia(
        media_id=record.media_id,
        trace_id=trace_id,
        canonical_url=record.sightings[0].canonical_url,
        dedup=record.dedup,
        verdict=record.verdict,
        score=record.score,
        detectors=record.detectors,
    )
