"""The Faust app of the stream worker (``deepwatch worker``).

It consumes ``deepwatch.urls``. Every message is validated against the contract first: a poison
message goes to ``deepwatch.dlq`` with its reason and the partition moves on. Valid events go to a
:class:`Pipeline` — the dedup/fetch/score/record stages of issue 6 plug in there.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import faust

from deepwatch.contracts import (
    TOPIC_DLQ,
    TOPIC_URLS,
    ContractError,
    DeadLetter,
    UrlDiscovered,
    parse,
)
from deepwatch.settings import Settings

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    """What happens to a valid ``UrlDiscovered`` event."""

    async def process(self, event: UrlDiscovered) -> None: ...


class AcceptOnly:
    """The pipeline until the dedup/fetch/score stages land (issue 6): counts and logs events.

    Named for what it does so nobody mistakes it for the real pipeline.
    """

    def __init__(self) -> None:
        self.accepted = 0

    async def process(self, event: UrlDiscovered) -> None:
        self.accepted += 1
        log.info("accepted %s (trace %s); scoring stages are not built yet", event.canonical_url, event.trace_id)


def dead_letter(
    payload: bytes | None,
    key: bytes | None,
    *,
    stage: str,
    error: Exception,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    attempts: int = 1,
) -> DeadLetter:
    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw.decode("utf-8", errors="replace")

    return DeadLetter(
        payload=text(payload) or "",
        key=text(key),
        topic=topic,
        partition=partition,
        offset=offset,
        stage=stage,
        error_type=type(error).__name__,
        message=str(error)[:10_000],
        attempts=attempts,
    )


def create_app(settings: Settings, bootstrap: str, pipeline: Pipeline | None = None) -> faust.App:
    app = faust.App(
        "deepwatch-stream",
        broker=[f"kafka://{hp.strip()}" for hp in bootstrap.split(",")],
        store="memory://",
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        web_in_thread=False,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.data_dir / "faust"),
        processing_guarantee="at_least_once",
    )
    chosen: Pipeline = pipeline or AcceptOnly()
    # Raw bytes in and out: we validate ourselves so a bad message becomes a dead letter instead of
    # a deserialisation error inside Faust that would stall the partition.
    urls = app.topic(TOPIC_URLS, key_type=bytes, value_type=bytes, value_serializer="raw")
    dlq = app.topic(TOPIC_DLQ, key_type=bytes, value_type=bytes, value_serializer="raw")

    @app.agent(urls)
    async def handle_urls(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                discovered = parse(UrlDiscovered, event.value or b"")
            except ContractError as exc:
                letter = dead_letter(
                    event.value,
                    event.key,
                    stage="validate",
                    error=exc,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                )
                await dlq.send(key=event.key, value=letter.to_json())
                log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
                continue
            await chosen.process(discovered)

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok", "part": "worker", "pid": os.getpid(), "rebalancing": bool(app.rebalancing)})

    return app


def run_worker(settings: Settings, bootstrap: str) -> None:
    """Run the worker until SIGTERM/SIGINT (blocks)."""
    app = create_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    worker.execute_from_commandline()
