"""The crawler process (``deepwatch crawl``): runs the configured sources on their schedule.

The sources file is validated here against the kinds registered in :data:`SOURCE_KINDS`
(``ingest.sources.install`` fills it: yt-dlp listings, feeds, Reddit, web pages, files); the
scheduler (``ingest.scheduler``) polls each source and publishes what it finds to Kafka. With no
sources the crawler idles and reports itself healthy with zero sources.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field

from deepwatch.contracts import ContractError, Part, Slug, parse
from deepwatch.health import start_health_server
from deepwatch.settings import Settings

log = logging.getLogger(__name__)

SOURCE_KINDS: dict[str, Any] = {}


class SourceConfig(Part):
    name: Slug
    kind: Slug
    interval_s: Annotated[float, Field(gt=0)] = 300.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1
    options: dict[str, Any] = Field(default_factory=dict)


class SourcesFile(Part):
    sources: list[SourceConfig] = Field(default_factory=list)


def load_sources(path: Path | None) -> SourcesFile:
    if path is None:
        return SourcesFile()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError("SourcesFile", [("<file>", f"{path}: {exc}")]) from None
    config = parse(SourcesFile, raw)
    unknown = [(f"sources.{i}.kind", f"unknown source kind {s.kind!r}; available: {sorted(SOURCE_KINDS) or 'none yet'}")
               for i, s in enumerate(config.sources) if s.kind not in SOURCE_KINDS]
    if unknown:
        raise ContractError("SourcesFile", unknown)
    return config


def run_crawler(settings: Settings, sources_file: Path | None) -> None:
    """Serve health and metrics and run the scheduler until SIGTERM/SIGINT (blocks)."""
    from prometheus_client import REGISTRY

    from deepwatch.publisher import EventPublisher
    from ingest.metrics import CrawlerCollector
    from ingest.scheduler import scheduler_for
    from ingest.sources import install
    from ingest.status import data_dir_id

    install()
    config = load_sources(sources_file or settings.sources_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The producer connects lazily on the first publish: a crawler with no sources needs no broker.
    publisher: EventPublisher | None = None

    def publish(events: list[Any]) -> None:
        nonlocal publisher
        if publisher is None:
            if not settings.kafka_bootstrap:
                # The scheduler records this as the source's error and keeps the items for later.
                raise RuntimeError("no Kafka to publish to: set DEEPWATCH_KAFKA_BOOTSTRAP or start `deepwatch up`")
            publisher = EventPublisher(settings.kafka_bootstrap, max_block_s=settings.kafka_publish_timeout_s)
        publisher.publish(events)

    scheduler = scheduler_for(settings, config, publish, stop)
    collector = CrawlerCollector(scheduler)
    REGISTRY.register(collector)

    def status() -> dict[str, Any]:
        return {"status": "ok", "part": "crawler", "pid": os.getpid(), "sources": len(config.sources),
                "data_dir": data_dir_id(settings.data_dir), "by_source": scheduler.status()}

    server = start_health_server(settings.probe_host, settings.crawler_port, status)
    log.info("crawler running with %d sources; health and metrics on port %d", len(config.sources),
             settings.crawler_port)
    worker = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
    worker.start()
    try:
        stop.wait()
    finally:
        worker.join(timeout=30)
        server.shutdown()
        REGISTRY.unregister(collector)
        scheduler.fetcher.close()  # type: ignore[attr-defined]
        if publisher is not None:
            publisher.close()
