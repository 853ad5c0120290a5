"""`deepwatch detectors evaluate DIR`: how well each detector, and the ensemble, tells a labelled set's fakes from
its real media (DeepSafe's promise: researchers compare their detectors with the others on the same data).

A labelled set is a folder holding either

- ``metadata.jsonl`` as ``deepwatch export`` writes it (``file_name``, ``label``: fake, real or unsure; unsure
  items are left out), so that an exported dataset of reviewed media can be scored again as it is (or such a
  manifest named itself: an export's ``faces.jsonl``, its face crops, to score with ``--aligned``); or
- one sub-folder per label: ``real/`` for real media, any other (``fake/``, ``df/``, ``f2f/``, ...) for fakes,
  the folder's name kept as the item's subset (the MesoNet test faces are laid out so).

Each item is scored as ``deepwatch score`` scores a file (the same frames, faces, alignment and ensemble), with
every chosen detector. The metrics are pure functions, apart from the scoring.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepwatch.settings import Settings
    from serve.detectors.base import Detector

ENSEMBLE = "ensemble"
MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")


class LabelledSetError(ValueError):
    """The folder is not a labelled set (no metadata.jsonl rows and no label sub-folders with media)."""


@dataclass(frozen=True)
class LabelledItem:
    path: Path
    fake: bool
    subset: str  # the label as the set gives it: "real", "fake", "df", ...


@dataclass
class ItemResult:
    item: LabelledItem
    p_fake: dict[str, float] = field(default_factory=dict)  # per detector, and the ensemble's score
    verdict: str | None = None
    error: str | None = None  # the media error that kept the item from being scored

    def to_json(self, root: Path) -> dict[str, Any]:
        """``root``: the set as it was given, a folder or its manifest."""
        base = root.resolve()
        base = base.parent if base.is_file() else base
        return {"file": self.item.path.relative_to(base).as_posix(), "fake": self.item.fake,
                "subset": self.item.subset, "verdict": self.verdict, "p_fake": self.p_fake, "error": self.error}


@dataclass(frozen=True)
class Summary:
    """One detector's (or the ensemble's) figures over the items it scored."""

    name: str
    scored: int  # items with a score (an item without a face has none)
    fakes: int
    reals: int
    auc: float | None  # ROC AUC, None unless both classes were scored
    accuracy: float | None  # at P(fake) 0.5
    mean_p_fake_of_fakes: float | None
    mean_p_fake_of_reals: float | None

    def to_json(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {"scored": self.scored, "fakes": self.fakes, "reals": self.reals, "auc": r(self.auc),
                "accuracy": r(self.accuracy), "mean_p_fake_of_fakes": r(self.mean_p_fake_of_fakes),
                "mean_p_fake_of_reals": r(self.mean_p_fake_of_reals)}


def labelled_items(folder: Path) -> list[LabelledItem]:
    """The items of a labelled set (see the module's docstring), sorted by path; ``folder`` may also be a
    ``.jsonl`` manifest, whose ``file_name`` are relative to its own folder."""
    folder = Path(folder).resolve()
    if folder.is_file() and folder.suffix == ".jsonl":
        folder, manifest = folder.parent, folder
    elif not folder.is_dir():
        raise LabelledSetError(f"{folder} is neither a folder nor a .jsonl manifest")
    else:
        manifest = folder / "metadata.jsonl"
    items = _from_manifest(folder, manifest) if manifest.is_file() else _from_folders(folder)
    if not items:
        raise LabelledSetError(
            f"{folder} holds no labelled media: give it a metadata.jsonl (file_name, label) as `deepwatch export` "
            "writes, or sub-folders real/ and fake/ (or df/, f2f/, ...)"
        )
    return sorted(items, key=lambda i: i.path)


def _from_manifest(folder: Path, manifest: Path) -> list[LabelledItem]:
    items = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, label = str(row["file_name"]), str(row["label"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LabelledSetError(f"{manifest}:{number}: not a row with file_name and label ({exc})") from None
        path = (folder / name).resolve()
        if not path.is_relative_to(folder):
            raise LabelledSetError(f"{manifest}:{number}: {name!r} is outside the set's folder")
        if label not in ("fake", "real", "unsure"):
            raise LabelledSetError(f"{manifest}:{number}: label {label!r} is none of fake, real, unsure")
        if label != "unsure":
            items.append(LabelledItem(path, label == "fake", label))
    return items


def _from_folders(folder: Path) -> list[LabelledItem]:
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(sub.rglob("*")):
            if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES:
                items.append(LabelledItem(path, sub.name.lower() != "real", sub.name))
    return items


def roc_auc(scores: Sequence[float], fake: Sequence[bool]) -> float | None:
    """ROC AUC of ``scores`` for the fakes: the chance that a fake scores above a real item (ties count half),
    from the ranks (Mann-Whitney U). None unless there is at least one of each."""
    fakes = sum(1 for f in fake if f)
    reals = len(fake) - fakes
    if fakes == 0 or reals == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):  # tied scores share the mean of their ranks
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(r for r, f in zip(ranks, fake, strict=True) if f)
    return (rank_sum - fakes * (fakes + 1) / 2) / (fakes * reals)


def summarize(name: str, scored: Sequence[tuple[float, bool]], threshold: float = 0.5) -> Summary:
    """Figures over ``(P(fake), is fake)`` pairs."""
    scores = [p for p, _ in scored]
    fake = [f for _, f in scored]
    of_fakes = [p for p, f in scored if f]
    of_reals = [p for p, f in scored if not f]
    right = sum(1 for p, f in scored if (p >= threshold) == f)
    return Summary(
        name, len(scored), len(of_fakes), len(of_reals), roc_auc(scores, fake),
        right / len(scored) if scored else None,
        sum(of_fakes) / len(of_fakes) if of_fakes else None,
        sum(of_reals) / len(of_reals) if of_reals else None,
    )


def evaluate(
    items: Sequence[LabelledItem], settings: Settings, detectors: Sequence[Detector], aligned: bool = False
) -> tuple[list[ItemResult], list[Summary], float]:
    """Score every item with ``detectors``; the per-item results, a summary per detector then the ensemble's,
    and the seconds the scoring took."""
    from deepwatch.media.errors import MediaError
    from serve.scoring import score_file

    results = []
    started = time.perf_counter()
    for item in items:
        outcome = ItemResult(item)
        try:
            scored = score_file(item.path, settings, detectors, aligned=aligned)
        except MediaError as exc:  # a broken file is reported with the rest, not the end of the run
            outcome.error = f"{type(exc).__name__}: {exc}"
        else:
            outcome.verdict = scored.verdict
            outcome.p_fake = {name: s.p_fake for name, s in scored.detectors.items()}
            if scored.score is not None:
                outcome.p_fake[ENSEMBLE] = scored.score
        results.append(outcome)
    seconds = time.perf_counter() - started
    names = [d.name for d in detectors] + [ENSEMBLE]
    summaries = [
        summarize(name, [(r.p_fake[name], r.item.fake) for r in results if name in r.p_fake]) for name in names
    ]
    return results, summaries, seconds
