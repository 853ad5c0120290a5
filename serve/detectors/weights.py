"""`deepwatch models pull`: download the registered detectors' weight files, and the face landmark network's
when faces are aligned, into the models directory.

A file is kept only when its sha256 is the one its detector declares; anything else is deleted before it
ever takes the weight file's name. Nothing here runs at import or test time against the internet: tests
point ``models_base_url`` at a loopback server.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from deepwatch.digest import sha256_file
from deepwatch.media import landmarks
from serve.detectors.base import Detector, WeightFile

MAX_WEIGHT_BYTES = 2 * 1024**3  # far above any detector we know; stops a misconfigured mirror filling the disk


@dataclass(frozen=True)
class PullOutcome:
    path: str  # relative to the models directory
    status: Literal["present", "downloaded", "failed"]
    url: str | None = None
    sha256: str | None = None  # of what was received, when something was
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# the face landmark network that aligns faces before they are scored (deepwatch.media.landmarks)
FACE_LANDMARKS = WeightFile(landmarks.WEIGHTS_PATH, landmarks.WEIGHTS_SHA256, landmarks.WEIGHTS_URL)


def weight_files(detectors: Iterable[type[Detector]], extra: Iterable[WeightFile] = ()) -> list[WeightFile]:
    """Each weight file once, in the detectors' order, then ``extra``."""
    seen: dict[str, WeightFile] = {}
    for weight in [w for cls in detectors for w in cls.weights] + list(extra):
        seen.setdefault(weight.path, weight)
    return list(seen.values())


def source_url(weight: WeightFile, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{weight.file_name}" if base_url else weight.url


def pull_one(weight: WeightFile, models_dir: Path, base_url: str | None, timeout_s: float = 120.0) -> PullOutcome:
    target = models_dir / weight.path
    if target.is_file() and sha256_file(target) == weight.sha256:
        return PullOutcome(weight.path, "present", sha256=weight.sha256)
    url = source_url(weight, base_url)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        return PullOutcome(weight.path, "failed", url, error=f"cannot write into {target.parent}: {exc}")
    tmp = Path(tmp_name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                return PullOutcome(weight.path, "failed", url, error=f"HTTP {response.status_code} from {url}")
            for chunk in response.iter_bytes(1 << 20):
                size += len(chunk)
                if size > MAX_WEIGHT_BYTES:
                    too_big = f"{url} sent more than {MAX_WEIGHT_BYTES} bytes"
                    return PullOutcome(weight.path, "failed", url, error=too_big)
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != weight.sha256:
            return PullOutcome(
                weight.path, "failed", url, actual,
                f"refused {url}: sha256 {actual} is not the expected {weight.sha256}; nothing was saved",
            )
        os.replace(tmp, target)
        return PullOutcome(weight.path, "downloaded", url, actual)
    except httpx.HTTPError as exc:
        return PullOutcome(weight.path, "failed", url, error=f"{type(exc).__name__} fetching {url}: {exc}")
    finally:
        tmp.unlink(missing_ok=True)


def pull(
    detectors: Iterable[type[Detector]], models_dir: Path, base_url: str | None = None, extra: Iterable[WeightFile] = ()
) -> list[PullOutcome]:
    """Each weight file of the detectors, then ``extra`` (such as :data:`FACE_LANDMARKS`)."""
    return [pull_one(w, Path(models_dir), base_url) for w in weight_files(detectors, extra)]
