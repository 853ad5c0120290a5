"""Decide whether two fingerprinted media are duplicates, face variants or different. Pure: no I/O.

Frames, in the spirit of Meta's vPDQ: every usable frame (PDQ quality at least ``min_quality``) of one
medium looks for a frame of the other that shows the same picture, in both directions. Each frame was
hashed inside its black borders (letterboxing), and also mirrored (flipped copies) and cropped to its
centred 90 % (cropped copies); a pair counts under whichever of these fits best.

Two kinds of frame evidence:

- *strong*: PDQ within ``frame_threshold`` bits. Anywhere in the other medium, as in vPDQ.
- *aligned*: pHash within ``phash_threshold`` bits, at the one time offset that most frames agree on.
  Two copies are sampled at different instants (other keyframes, a trim that does not fall on the sampling
  grid); on moving pictures PDQ is near random a few tenths of a second apart, while the coarse pHash still
  agrees. A lone pHash match is weak evidence, so it counts only as part of a time-consistent run of at
  least ``min_aligned_frames`` frames.

``matched_fraction`` is the share of one side's usable frames with either, the better of the two sides (a
sub-clip finds all its frames in the longer video, not the other way round); a duplicate needs
``duplicate_fraction``.

Then faces: a face-swapped fake of a real clip matches it frame by frame, so the faces at aligned times are
compared too, by the correlation of their inner-face thumbnails (eyes, nose, mouth: what a swap replaces;
PDQ and pHash of the whole crop where a stored fingerprint has no thumbnails). When most differ, the relation
is ``variant`` (same scene, other faces), and the fake does not inherit the clip's verdict. A swap that
changes so much of the frame that the frames no longer match is looked for in the scene around the faces
(a coarse luma grid without the cells the faces cover, kept for the frames where faces were found).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from deepwatch.media.hashes import GRID_CELLS, grid_similarity, hamming, thumb_similarity

if TYPE_CHECKING:
    from deepwatch.contracts import Fingerprints
    from deepwatch.media.fingerprint import FaceHash, FrameHash, MediaFingerprint

Relation = Literal["duplicate", "variant", "different"]
TRANSFORMS = ("none", "mirror", "crop")
PDQ_BITS = 256


@dataclass(frozen=True)
class Match:
    relation: Relation
    distance: float  # median over the matching side's usable frames of the best PDQ distance (bits of 256)
    matched_fraction: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MatchPolicy:
    """Thresholds of the decision; the defaults were tuned on generated clips (see the tests and the bench)."""

    frame_threshold: int = 40  # PDQ bits (of 256) below which two frames show the same picture
    phash_threshold: int = 14  # pHash bits (of 64) up to which two frames show the same scene
    min_aligned_frames: int = 3  # pHash matches count only in a time-consistent run at least this long
    min_quality: int = 50  # PDQ's own advice: hashes of flatter frames are not evidence
    duplicate_fraction: float = 0.5  # share of one side's usable frames that must be matched
    face_threshold: int = 96  # PDQ bits (of 256) above which two face crops show different faces
    face_phash_threshold: int = 17  # pHash bits (of 64) above which two face crops show different faces
    face_similarity: float = 0.85  # inner-face thumbnails correlating less show different faces
    variant_fraction: float = 0.5  # share of compared faces that must differ for a variant
    face_place_tolerance: float = 0.15  # how far (share of the picture) a face may sit from its counterpart
    offset_step_s: float = 0.25  # resolution of the time-offset vote
    scene_similarity: float = 0.9  # correlation of the luma grids around the faces for the same scene


@dataclass(frozen=True)
class FrameTable:
    """One medium's usable frames as arrays: hashes as 64-bit words, for whole distance matrices at once."""

    t: np.ndarray  # (n,) seconds
    gap_s: float  # typical spacing of its samples
    pdq: dict[str, np.ndarray]  # transform -> (n, 4) uint64; "mirror"/"crop" only when every frame has them
    phash: dict[str, np.ndarray]  # transform -> (n, 1) uint64


@dataclass(frozen=True)
class Alignment:
    """How the shorter medium's frames found frames in the longer one."""

    matched: np.ndarray  # (n,) bool
    partner: np.ndarray  # (n,) index of the chosen frame in the longer, -1 when unmatched
    transform: list[str | None]  # per frame of the shorter
    best_pdq: np.ndarray  # (n,) best PDQ distance to any frame of the longer
    best_phash: np.ndarray  # (n,)
    offset_s: float | None  # time in the longer minus time in the shorter, by vote of the pHash matches
    aligned_support: int  # frames of the shorter that agree with that offset

    @property
    def fraction(self) -> float:
        return round(float(self.matched.mean()), 4) if self.matched.size else 0.0

    @property
    def distance(self) -> float:
        return float(np.median(self.best_pdq)) if self.best_pdq.size else float(PDQ_BITS)


def hex_words(values: list[str], bits: int) -> np.ndarray:
    """Hex hashes as rows of 64-bit words (any fixed word order works for Hamming distances)."""
    digits = bits // 4
    words = digits // 16
    return np.array([[int(v[k * 16 : (k + 1) * 16], 16) for k in range(words)] for v in values], dtype=np.uint64)


def distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of ``a`` (n, w) and of ``b`` (m, w), as (n, m)."""
    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)), dtype=np.int32)
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int32)


def frame_table(frames: list[FrameHash]) -> FrameTable:
    times = np.array([f.t for f in frames], dtype=np.float64)
    gap = float(np.median(np.diff(np.sort(times)))) if len(frames) > 1 else 1.0
    pdq = {"none": hex_words([f.pdq for f in frames], 256)}
    phash: dict[str, np.ndarray] = {}
    for name, attribute in (("mirror", "pdq_flip"), ("crop", "pdq_crop")):
        values = [getattr(f, attribute) for f in frames]
        if frames and all(values):
            pdq[name] = hex_words(values, 256)
    for name, attribute in (("none", "phash"), ("mirror", "phash_flip"), ("crop", "phash_crop")):
        values = [getattr(f, attribute) for f in frames]
        if frames and all(values):
            phash[name] = hex_words(values, 64)
    return FrameTable(times, max(gap, 1e-3), pdq, phash)


def transform_distances(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per transform, the (n, m) distances: plain, one side mirrored, one side cropped to its centre.

    Both directions of each transform are tried (a's mirror against b, a against b's mirror), so that the
    result does not depend on which medium is ``a``.
    """
    if "none" not in a or "none" not in b:
        return {}
    result = {"none": distance_matrix(a["none"], b["none"])}
    for name in ("mirror", "crop"):
        options = []
        if name in a:
            options.append(distance_matrix(a[name], b["none"]))
        if name in b:
            options.append(distance_matrix(a["none"], b[name]))
        if options:
            result[name] = np.minimum.reduce(options) if len(options) > 1 else options[0]
    return result


def vote_offset(
    pairs_i: np.ndarray, pairs_j: np.ndarray, t_short: np.ndarray, t_long: np.ndarray, tolerance: float, step: float
) -> tuple[float | None, int]:
    """The time offset (long minus short) that the most frames of the shorter agree with, within ``tolerance``.

    Every frame of the shorter votes once for each offset bin within ``tolerance`` of any of its matching
    pairs, so a frame that matches many frames (a still scene) still counts once. Returns the offset (the
    middle of the winning run of bins) and its support; ``(None, 0)`` without pairs.
    """
    if pairs_i.size == 0:
        return None, 0
    offsets = t_long[pairs_j] - t_short[pairs_i]
    bins = np.round(offsets / step).astype(np.int64)
    reach = int(np.ceil(tolerance / step))
    low = int(bins.min()) - reach
    counts = np.zeros(int(bins.max()) + reach - low + 1, dtype=np.int64)
    spread = np.arange(-reach, reach + 1)
    for i in np.unique(pairs_i):
        covered = np.unique(bins[pairs_i == i][:, None] + spread[None, :]) - low
        counts[covered] += 1
    support = int(counts.max())
    winners = np.flatnonzero(counts == support)
    # a still scene supports a long run of offsets: take the middle of the first run of winners
    run_end = winners[0]
    while run_end + 1 < counts.size and counts[run_end + 1] == support:
        run_end += 1
    return float((winners[0] + run_end) / 2 + low) * step, support


def align(short: FrameTable, long: FrameTable, policy: MatchPolicy) -> Alignment:
    """Match the frames of ``short`` in ``long``: strong PDQ matches anywhere, pHash matches at the voted offset."""
    n = short.t.size
    pdq = transform_distances(short.pdq, long.pdq)
    phash = transform_distances(short.phash, long.phash)
    names = [name for name in TRANSFORMS if name in pdq]
    pdq_stack = np.stack([pdq[name] for name in names])  # (T, n, m)
    best_pdq = pdq_stack.min(axis=(0, 2))
    strong = pdq_stack < policy.frame_threshold
    if phash:
        ph_names = [name for name in TRANSFORMS if name in phash]
        phash_stack = np.stack([phash[name] for name in ph_names])
        best_phash = phash_stack.min(axis=(0, 2))
        loose = (phash_stack <= policy.phash_threshold).any(axis=0) | strong.any(axis=0)
    else:
        phash_stack, best_phash = None, np.full(n, 64)
        loose = strong.any(axis=0)

    tolerance = 0.5 * max(short.gap_s, long.gap_s) + 0.5
    pairs_i, pairs_j = np.nonzero(loose)
    offset, support = vote_offset(pairs_i, pairs_j, short.t, long.t, tolerance, policy.offset_step_s)
    consistent = np.zeros_like(loose)
    if offset is not None and support >= policy.min_aligned_frames:
        consistent = loose & (np.abs(long.t[None, :] - short.t[:, None] - offset) <= tolerance)
    usable = strong.any(axis=0) | consistent

    matched = usable.any(axis=1)
    # each matched frame's partner: the usable pair with the smallest PDQ distance
    best_pair = np.where(usable, pdq_stack.min(axis=0), np.iinfo(np.int32).max)
    partner = np.where(matched, best_pair.argmin(axis=1), -1)
    transform: list[str | None] = []
    for i in range(n):
        if partner[i] < 0:
            transform.append(None)
            continue
        j = int(partner[i])
        by_pdq = int(pdq_stack[:, i, j].argmin())
        if strong[by_pdq, i, j] or phash_stack is None:
            transform.append(names[by_pdq])
        else:
            transform.append(ph_names[int(phash_stack[:, i, j].argmin())])
    return Alignment(matched, partner, transform, best_pdq, best_phash, offset, support)


def usable_frames(frames: tuple[FrameHash, ...], min_quality: int) -> list[FrameHash]:
    return sorted((f for f in frames if f.quality >= min_quality), key=lambda f: f.t)


def match(
    a: MediaFingerprint | Fingerprints, b: MediaFingerprint | Fingerprints, policy: MatchPolicy | None = None
) -> Match:
    """The relation of two media: ``duplicate``, ``variant`` (same scene, other faces) or ``different``.

    Accepts fingerprints as computed or as stored (:class:`deepwatch.contracts.Fingerprints`; stored ones
    without frame times or the extra hashes are matched on what they have). Symmetric: ``match(a, b)`` and
    ``match(b, a)`` give the same relation, distance and fraction.
    """
    policy = policy or MatchPolicy()
    fa, fb = _as_fingerprint(a), _as_fingerprint(b)
    if fa.sha256 == fb.sha256:
        return Match("duplicate", 0.0, 1.0, {"exact": True, "policy": asdict(policy)})
    frames_a, frames_b = usable_frames(fa.frames, policy.min_quality), usable_frames(fb.frames, policy.min_quality)
    details: dict[str, Any] = {
        "exact": False,
        "usable_frames": [len(frames_a), len(frames_b)],
        "sampled_frames": [len(fa.frames), len(fb.frames)],
        "policy": asdict(policy),
    }
    if not frames_a or not frames_b:
        details["reason"] = "no frame with enough detail to compare"
        return Match("different", float(PDQ_BITS), 0.0, details)

    # Each side looks for its frames in the other and the better share counts: a sub-clip finds nearly all
    # its frames in the longer video, and counting by direction rather than by number of frames keeps a
    # keyframe-sampled copy (fewer frames per second) from being judged as the shorter one. Symmetric.
    table_a, table_b = frame_table(frames_a), frame_table(frames_b)
    candidates = [
        (align(table_a, table_b, policy), frames_a, frames_b, fa.faces, fb.faces, False, fa.sha256),
        (align(table_b, table_a, policy), frames_b, frames_a, fb.faces, fa.faces, True, fb.sha256),
    ]
    # a tie goes to the side with the smaller sha256, which does not depend on argument order either
    alignment, short, long, faces_short, faces_long, swapped, _ = max(
        candidates, key=lambda c: (c[0].fraction, -c[0].distance, [-ord(ch) for ch in c[6]])
    )
    fraction, distance = alignment.fraction, alignment.distance
    kinds = [t for t in alignment.transform if t]
    details.update(
        matched_frames=int(alignment.matched.sum()),
        transform=max(sorted(set(kinds)), key=kinds.count) if kinds else None,
        offset_s=None if alignment.offset_s is None else round(alignment.offset_s * (-1 if swapped else 1), 2),
        aligned_frames=alignment.aligned_support,
        phash_distance=float(np.median(alignment.best_phash)),
        matching_side="b" if swapped else "a",  # whose frames the fraction counts
    )
    if fraction >= policy.duplicate_fraction:
        pairs = [
            (short[i].t, long[int(alignment.partner[i])].t, alignment.transform[i])
            for i in range(len(short))
            if alignment.partner[i] >= 0
        ]
        faces = compare_faces(pairs, faces_short, faces_long, policy)
        details["faces"] = faces
        relation: Relation = "variant" if _faces_differ(faces, policy) else "duplicate"
        return Match(relation, distance, fraction, details)

    # the frames do not match as a whole: perhaps only because the faces in them differ (a large face
    # swapped changes much of the picture), so compare the scenes around the faces
    scene_fraction, scene_pairs = scene_match(fa.frames, fb.frames, policy)
    details["scene"] = {"fraction": scene_fraction, "frames": len(scene_pairs)}
    if scene_pairs and scene_fraction >= policy.duplicate_fraction:
        faces = compare_faces(scene_pairs, fa.faces, fb.faces, policy)
        details["faces"] = faces
        if _faces_differ(faces, policy):
            return Match("variant", distance, fraction, details)
    return Match("different", distance, fraction, details)


def scene_match(
    a: tuple[FrameHash, ...], b: tuple[FrameHash, ...], policy: MatchPolicy
) -> tuple[float, list[tuple[float, float, str | None]]]:
    """Match the frames that carry a scene grid (frames where faces were found) on both sides, leaving out the
    cells either side's faces cover.

    Returns the share of the side with fewer such frames whose grid correlates with one of the other side's
    at ``scene_similarity`` or more, and the matched ``(time in a, time in b, transform)``; the better of
    both directions, for symmetry.
    """
    scenes_a = [_grid(f) for f in a if f.scene_grid and f.scene_mask]
    scenes_b = [_grid(f) for f in b if f.scene_grid and f.scene_mask]
    if not scenes_a or not scenes_b:
        return 0.0, []
    fewest = min(len(scenes_a), len(scenes_b))
    outcomes = []
    for short, long, swapped in ((scenes_a, scenes_b, False), (scenes_b, scenes_a, True)):
        if len(short) > fewest:
            continue
        pairs = []
        for t, grid, mask in short:
            scored = [
                (similarity, -j, name)
                for j, (_, other, other_mask) in enumerate(long)
                for name, g, m in (("none", other, other_mask), ("mirror", other[:, ::-1], other_mask[:, ::-1]))
                if (similarity := grid_similarity(grid, mask, g, m)) is not None
            ]
            if scored:
                similarity, j, name = max(scored)
                if similarity >= policy.scene_similarity:
                    other_t = long[-j][0]
                    pairs.append((other_t, t, name) if swapped else (t, other_t, name))
        outcomes.append((round(len(pairs) / len(short), 4), pairs))
    return max(outcomes, key=lambda o: (o[0], len(o[1])))


def _grid(frame: FrameHash) -> tuple[float, np.ndarray, np.ndarray]:
    assert frame.scene_grid and frame.scene_mask
    grid = np.frombuffer(bytes.fromhex(frame.scene_grid), dtype=np.uint8).reshape(GRID_CELLS, GRID_CELLS)
    bits = int(frame.scene_mask, 16)
    mask = np.array([(bits >> k) & 1 for k in range(GRID_CELLS * GRID_CELLS)], dtype=bool)
    return frame.t, grid, mask.reshape(GRID_CELLS, GRID_CELLS)


def compare_faces(
    pairs: list[tuple[float, float, str | None]],
    faces_a: tuple[FaceHash, ...],
    faces_b: tuple[FaceHash, ...],
    policy: MatchPolicy,
) -> dict[str, Any]:
    """Compare the faces at aligned times. ``pairs`` are ``(time in a, time in b, transform)`` of matched frames.

    Each face of ``a`` found on a matched frame meets the faces of ``b`` found near that frame's partner;
    faces are found only on some sampled frames, so "near" is within a sampling gap. The closest one counts.
    Returns counts and distances, for ``details``.
    """
    if not pairs or not faces_a or not faces_b:
        return {"compared": 0, "unpaired": 0, "differing": 0, "similarity": [], "pdq": [], "phash": [],
                "detected": [len(faces_a), len(faces_b)]}
    times_a = np.array([p[0] for p in pairs])
    times_b = sorted({f.t for f in faces_b})
    gap = float(np.median(np.diff(times_b))) if len(times_b) > 1 else 1.0
    tolerance = max(0.75, 0.6 * min(gap, 2.0))
    compared: list[FaceComparison] = []
    unpaired = 0  # faces with no face at their place in the other: a detector miss, not evidence of a swap
    for face in faces_a:
        k = int(np.argmin(np.abs(times_a - face.t)))
        if abs(times_a[k] - face.t) > 0.05:
            continue  # its frame was not matched
        _, partner_t, transform = pairs[k]
        nearby = [f for f in faces_b if abs(f.t - partner_t) <= tolerance and same_place(face, f, transform, policy)]
        if nearby:
            compared.append(max((compare_face(face, other, transform) for other in nearby), key=_likeness))
        else:
            unpaired += 1
    differing = sum(1 for c in compared if c.differs(policy))
    return {
        "compared": len(compared),
        "unpaired": unpaired,
        "differing": differing,
        "similarity": [round(c.similarity, 3) for c in compared if c.similarity is not None],
        "pdq": [c.pdq for c in compared],
        "phash": [c.phash for c in compared if c.phash is not None],
        "detected": [len(faces_a), len(faces_b)],
    }


def _faces_differ(faces: dict[str, Any], policy: MatchPolicy) -> bool:
    return bool(faces["compared"]) and faces["differing"] / faces["compared"] >= policy.variant_fraction


@dataclass(frozen=True)
class FaceComparison:
    pdq: int  # bits of 256 between the face crops
    phash: int | None  # bits of 64; None in a mirrored copy (no mirrored pHash is kept)
    similarity: float | None  # correlation of the inner-face thumbnails; None where either lacks one

    def differs(self, policy: MatchPolicy) -> bool:
        """The inner-face thumbnails decide where both have one (they separate swaps from copies far better
        than the hashes of the whole crop); otherwise PDQ or pHash of the crops."""
        if self.similarity is not None:
            return self.similarity < policy.face_similarity
        return self.pdq > policy.face_threshold or (self.phash is not None and self.phash > policy.face_phash_threshold)


def same_place(a: FaceHash, b: FaceHash, transform: str | None, policy: MatchPolicy) -> bool:
    """Whether two faces sit at the same place of their pictures (shares of the picture inside black borders),
    allowing for a mirrored copy and for one cropped to its centred 90 %. True when either lacks a place."""
    if a.place is None or b.place is None:
        return True
    ax, ay, aw, ah = a.place
    bx, by, bw, bh = b.place
    if transform == "mirror":
        bx = 1 - bx - bw
    views = [(bx, by, bw, bh)]
    if transform == "crop":  # either may be the cropped one: map each into the other's picture
        views += [
            (0.05 + 0.9 * bx, 0.05 + 0.9 * by, 0.9 * bw, 0.9 * bh),
            ((bx - 0.05) / 0.9, (by - 0.05) / 0.9, bw / 0.9, bh / 0.9),
        ]
    for x, y, w, h in views:
        centre = ((ax + aw / 2) - (x + w / 2)) ** 2 + ((ay + ah / 2) - (y + h / 2)) ** 2
        size = max(aw, ah) / max(w, h, 1e-6)
        if centre <= policy.face_place_tolerance**2 and 1 / 1.5 <= size <= 1.5:
            return True
    return False


def _likeness(comparison: FaceComparison) -> tuple[float, int]:
    return (comparison.similarity if comparison.similarity is not None else -1.0, -comparison.pdq)


def compare_face(a: FaceHash, b: FaceHash, transform: str | None) -> FaceComparison:
    """Compare two faces; in a mirrored copy the face shows mirrored too."""
    mirror = transform == "mirror"
    distance = hamming(a.pdq, b.pdq)
    if mirror:
        mirrored = [hamming(x, y) for x, y in ((a.pdq_flip, b.pdq), (a.pdq, b.pdq_flip)) if x and y]
        distance = min([distance, *mirrored])
    coarse = hamming(a.phash, b.phash) if a.phash and b.phash and not mirror else None
    similarity = None
    if a.thumb and b.thumb:
        thumb_a, thumb_b = _thumb(a.thumb), _thumb(b.thumb)
        similarity = thumb_similarity(thumb_a, thumb_b[:, ::-1] if mirror else thumb_b)
    return FaceComparison(distance, coarse, similarity)


def _thumb(value: str) -> np.ndarray:
    pixels = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
    side = int(np.sqrt(pixels.size))
    return pixels.reshape(side, side)


def _as_fingerprint(value: MediaFingerprint | Fingerprints) -> MediaFingerprint:
    from deepwatch.contracts import Fingerprints
    from deepwatch.media.fingerprint import MediaFingerprint

    if isinstance(value, Fingerprints):
        return MediaFingerprint.from_contract(value)
    return value
