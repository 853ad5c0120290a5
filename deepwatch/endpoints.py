"""``<data-dir>/endpoints.json``: how other commands find a running ``deepwatch up``.

``up`` writes it once every part is healthy and removes it on shutdown; ``submit``, ``search``,
``export``… read it so that the same data directory is all they need to be told.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import AwareDatetime, Field

from deepwatch.contracts import ContractError, Part, parse, utcnow
from deepwatch.settings import Settings


class Endpoints(Part):
    api_url: str
    api_key_file: str | None = None
    kafka_bootstrap: str
    index: dict[str, str]
    store: dict[str, str]
    health: dict[str, str] = Field(default_factory=dict, description="per-part health URLs")
    pid: int
    started_at: AwareDatetime = Field(default_factory=utcnow)


def write_endpoints(path: Path, endpoints: Endpoints) -> None:
    # write-then-rename: a reader never sees half a file
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(endpoints.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_endpoints(path: Path) -> Endpoints | None:
    """The endpoints of a running stack, or None when there is none (or it has died)."""
    try:
        endpoints = parse(Endpoints, path.read_bytes())
    except FileNotFoundError:
        return None
    except ContractError:
        return None  # a file we cannot read is no running stack we can talk to
    return endpoints if _pid_alive(endpoints.pid) else None


def with_running_stack(settings: Settings) -> Settings:
    """Fill unset connection settings from a running ``up`` in the same data directory."""
    endpoints = read_endpoints(settings.endpoints_file)
    if endpoints is None:
        return settings
    update: dict[str, object] = {}
    if not settings.kafka_bootstrap:
        update["kafka_bootstrap"] = endpoints.kafka_bootstrap
    if not settings.serve_url:
        update["serve_url"] = endpoints.api_url
    if not settings.api_keys and endpoints.api_key_file:
        key_file = Path(endpoints.api_key_file)
        if key_file.is_file():
            update["api_keys"] = [key_file.read_text().strip()]
    return Settings.model_validate(settings.model_dump() | update) if update else settings
