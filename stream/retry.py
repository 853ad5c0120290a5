"""Waiting between retries (the delay is pure; randomness comes in as a number)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from deepwatch.backoff import backoff_delay
from deepwatch.settings import Settings


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    max_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        return cls(settings.worker_retry_base_s, settings.worker_retry_max_s)

    def delay(self, retry: int, u: float) -> float:
        """The wait before retry number ``retry`` (0 for the first); ``u`` is uniform in [0, 1)."""
        return backoff_delay(retry, self.base_s, self.max_s, u)


class GiveWay(Exception):
    """A stage waiting for a service that is down (the index, the store, the scoring API) stops waiting: its
    batch's deadline has passed. The event is left unhandled, to be read again, so that the worker goes back to
    Kafka in time (a consumer that does not poll for ``broker_max_poll_interval`` is put out of its group, and
    another worker would take its partitions and do the same work again)."""

    def __init__(self, stage: str, reason: str):
        self.stage = stage
        super().__init__(f"{stage}: still waiting at the batch's deadline ({reason})")


def past(deadline: float | None, wait_s: float = 0.0) -> bool:
    """Whether a wait of ``wait_s`` from now would end past ``deadline`` (``time.monotonic()``; None: never)."""
    return deadline is not None and time.monotonic() + wait_s > deadline
