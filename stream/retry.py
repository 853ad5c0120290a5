"""Waiting between retries (the delay is pure; randomness comes in as a number)."""

from __future__ import annotations

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
