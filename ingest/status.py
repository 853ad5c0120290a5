"""Each source's state for people: the running crawler's health endpoint and ``deepwatch crawl --status``.

:func:`describe` gives one source's entry (the same shape whether it comes from a running scheduler or
from the state files of a stopped one). :func:`crawl_status` asks a running crawler first — the
``up`` stack's endpoints file, then ``health_crawler_url``, then the crawler port on this host (only
if that crawler uses the same data directory) — and otherwise reads ``<data_dir>/crawler/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deepwatch.endpoints import read_endpoints
from deepwatch.settings import Settings
from ingest.state import StateStore


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def describe(fields: Mapping[str, Any], interval_s: float | None = None) -> dict[str, Any]:
    """One source's status from the SourceState fields the scheduler records."""
    return {
        "interval_s": interval_s,
        "last_run_at": _iso(fields.get("last_poll_at")),
        "last_success_at": _iso(fields.get("last_success_at")),
        "last_error": fields.get("last_error"),
        "next_run_at": _iso(fields.get("next_poll_at")),
        "backoff_s": round(fields.get("backoff_s") or 0.0, 3),
        "consecutive_failures": fields.get("consecutive_failures", 0),
        "polls": fields.get("polls", 0),
        "failures": fields.get("failures", 0),
        "discovered": fields.get("discovered", 0),
        "published": fields.get("published", 0),
        "robots_disallowed": fields.get("disallowed", 0),
    }


def data_dir_id(data_dir: Path) -> str:
    """How a crawler names its data directory in /healthz, so ``--status`` can tell it is ours."""
    return str(data_dir.resolve())


def _ask(url: str, timeout_s: float) -> dict[str, Any] | None:
    try:
        resp = httpx.get(url, timeout=timeout_s, trust_env=False)
        document = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(document, dict) and document.get("part") == "crawler" and isinstance(document.get("by_source"), dict):
        return document
    return None


def _candidates(settings: Settings) -> list[tuple[str, bool]]:
    """Health URLs to ask, each with whether the answer must name our data directory."""
    found: list[tuple[str, bool]] = []
    endpoints = read_endpoints(settings.endpoints_file)
    if endpoints is not None and endpoints.health.get("crawler"):
        found.append((endpoints.health["crawler"], False))  # the `up` of this very data directory
    if settings.health_crawler_url:
        found.append((settings.health_crawler_url, False))  # named explicitly (a cluster service)
    found.append((f"http://127.0.0.1:{settings.crawler_port}/healthz", True))  # a guess: check it is ours
    return found


def crawl_status(settings: Settings, timeout_s: float = 2.0) -> dict[str, Any]:
    """``{"running", "from", "sources": {name: describe(...)}, "message"}``."""
    ours = data_dir_id(settings.data_dir)
    for url, must_match in _candidates(settings):
        document = _ask(url, timeout_s)
        if document is not None and (not must_match or document.get("data_dir") == ours):
            return {
                "running": True,
                "from": url,
                "pid": document.get("pid"),
                "sources": document["by_source"],
                "message": f"crawler running (pid {document.get('pid')})",
            }
    store = StateStore.in_data_dir(settings.data_dir)
    names = store.names()
    if not names:
        return {
            "running": False,
            "from": None,
            "sources": {},
            "message": f"no running crawler found and no crawl state in {store.directory}",
        }
    return {
        "running": False,
        "from": str(store.directory),
        "sources": {name: describe(store.load(name).model_dump()) for name in names},
        "message": f"no running crawler found; last saved state from {store.directory}",
    }
