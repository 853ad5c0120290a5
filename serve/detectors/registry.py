"""Find detector classes: the built-in ones, entry points (group ``deepwatch.detectors``) and ``module:Class``
paths from the ``detector_plugins`` setting; then load the selected ones.

Finding reads class attributes only; nothing loads weights until :func:`load_detectors`.
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from serve.detectors.base import Detector, DetectorError

if TYPE_CHECKING:
    from deepwatch.settings import Settings

ENTRY_POINT_GROUP = "deepwatch.detectors"
BUILTINS = (
    "serve.detectors.mesonet:Meso4DF",
    "serve.detectors.mesonet:Meso4F2F",
    "serve.detectors.mesonet:MesoInception4DF",
    "serve.detectors.mesonet:MesoInception4F2F",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # the contracts' Slug: names become keys of MediaRecord.detectors
_REQUIRED = ("name", "version", "license", "source_url", "modality", "input_size")


class RegistryError(DetectorError):
    """A detector path that does not lead to a usable detector class, or an unknown detector name."""


@dataclass(frozen=True)
class Registered:
    cls: type[Detector]
    origin: str  # "builtin", "entry point <name>" or "setting"
    path: str  # module:Class


def load_class(path: str, origin: str = "setting") -> type[Detector]:
    """The detector class at ``module:Class``; :class:`RegistryError` says which part is wrong."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"detector path {path!r} ({origin}) must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"detector path {path!r} ({origin}): cannot import {module_name!r}: {exc}") from None
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise RegistryError(f"detector path {path!r} ({origin}): {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return check_class(target, f"{path!r} ({origin})")


def check_class(target: object, where: str) -> type[Detector]:
    if not (isinstance(target, type) and issubclass(target, Detector)):
        raise RegistryError(f"detector {where} is not a subclass of serve.detectors.base.Detector")
    if getattr(target, "__abstractmethods__", None):
        missing = ", ".join(sorted(target.__abstractmethods__))
        raise RegistryError(f"detector {where} does not implement {missing}")
    absent = [a for a in _REQUIRED if not hasattr(target, a)]
    if absent:
        raise RegistryError(f"detector {where} does not set {', '.join(absent)}")
    if not isinstance(target.name, str) or not _NAME.match(target.name):
        raise RegistryError(f"detector {where} has name {target.name!r}: use lower-case letters, digits, _ . -")
    if target.modality not in ("image", "video"):
        raise RegistryError(f"detector {where} has modality {target.modality!r}: 'image' or 'video'")
    if not isinstance(target.input_size, int) or not 16 <= target.input_size <= 4096:
        raise RegistryError(f"detector {where} has input_size {target.input_size!r}: an int from 16 to 4096")
    return target


def discover(plugins: list[str] | tuple[str, ...] = ()) -> dict[str, Registered]:
    """Every detector by name, in order: built-ins, entry points, then ``plugins`` (``module:Class``)."""
    found: dict[str, Registered] = {}

    def add(cls: type[Detector], origin: str, path: str) -> None:
        earlier = found.get(cls.name)
        if earlier is not None and earlier.cls is not cls:
            raise RegistryError(
                f"two detectors are named {cls.name!r}: {earlier.path} ({earlier.origin}) and {path} ({origin})"
            )
        found.setdefault(cls.name, Registered(cls, origin, path))

    for path in BUILTINS:
        add(load_class(path, "builtin"), "builtin", path)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        add(load_class(ep.value, f"entry point {ep.name!r}"), f"entry point {ep.name}", ep.value)
    for path in plugins:
        add(load_class(path, "setting detector_plugins"), "setting", path)
    return found


def available(settings: Settings) -> dict[str, Registered]:
    return discover(settings.detector_plugins)


def select(registered: dict[str, Registered], names: list[str] | None) -> list[Registered]:
    """The detectors named (all when ``names`` is empty or None), in the order given."""
    if not names:
        return list(registered.values())
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise RegistryError(f"unknown detector(s) {', '.join(unknown)}; registered: {', '.join(registered)}")
    return [registered[n] for n in dict.fromkeys(names)]


_loaded: dict[tuple[str, str, str, str], Detector] = {}
_lock = threading.Lock()


def load_detector(cls: type[Detector], models_dir: Path, cache_dir: Path | None) -> Detector:
    """A loaded instance, kept for the process: weights are read once, however often a process scores."""
    key = (f"{cls.__module__}:{cls.__qualname__}", cls.model_version(), str(models_dir), str(cache_dir))
    with _lock:
        detector = _loaded.get(key)
        if detector is None:
            detector = cls()
            detector.load(models_dir, cache_dir)
            _loaded[key] = detector
        return detector


def load_detectors(settings: Settings, names: list[str] | None = None) -> list[Detector]:
    """The detectors ``names`` (default: the ``detectors`` setting, else all registered), loaded."""
    chosen = select(available(settings), names or settings.detectors)
    loaded = [load_detector(r.cls, settings.models_path, settings.weights_cache_path) for r in chosen]
    for detector in loaded:  # instances are shared in the process: each call sets what its settings say
        detector.cpu_pass_crops = settings.serve_cpu_pass_crops or type(detector).cpu_pass_crops
    return loaded
