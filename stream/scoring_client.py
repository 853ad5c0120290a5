"""The worker's client of the scoring API (``POST {serve_url}/v1/score``, the contract both sides code to).

The worker never sends bytes: it names the object it stored (``object_key``) and the API reads it
from the object store. What comes back decides the event's fate:

- 200: the score (validated here; an answer that does not fit is the server's fault, so it is
  treated like an outage rather than blamed on the media);
- 422 with ``permanent: true`` (or FastAPI's validation 422): :class:`ScoringRejected`, the event is
  dead-lettered;
- anything else (503, other 5xx, 401/403/404 from a misconfigured or half-deployed API, timeouts,
  refused connections): the server is unavailable. The request is retried with exponential backoff
  (or after the server's ``Retry-After``), for as long as it takes: the event waits and is not
  committed. After ``score_breaker_failures`` such answers in a row the circuit breaker opens: every
  request waits until the cool-down is over, then one probe goes through, and only its success lets
  the others go. So an API that is down sees one request per cool-down instead of a retry storm.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepwatch.backoff import retry_after_seconds
from deepwatch.contracts import MAX_FACE_SCORES, DetectorScore, EnsembleSettings, FaceScore, Probability, Verdict
from deepwatch.settings import Settings, parse_api_key
from stream.retry import Backoff, GiveWay, past

log = logging.getLogger(__name__)

SCORE_PATH = "/v1/score"
PROBE_POLL_S = 0.1  # how often a caller waiting for the breaker's probe looks whether it has answered


class ScoringRejected(Exception):
    """The API refused the media for good (422): it will fail the same way again."""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        super().__init__(message)


class ScoreAnswer(BaseModel):
    """The fields of ``ScoreResult.to_json()`` the worker records; extra fields (timings detail) are allowed."""

    model_config = ConfigDict(extra="ignore")

    media_id: str
    kind: str
    verdict: Verdict
    score: Probability | None
    detectors: dict[str, DetectorScore]
    timings: dict[str, float] = {}
    frames: int = 0
    faces: int = 0
    # absent from an API older than per-face scores: the record then has none
    face_scores: list[FaceScore] = Field(default_factory=list, max_length=MAX_FACE_SCORES)
    ensemble: EnsembleSettings | None = None  # absent from an API older than it


class CircuitBreaker:
    """Closed → open after ``threshold`` failures in a row → (after ``cooldown_s``) one probe → closed or open."""

    def __init__(self, threshold: int, cooldown_s: float, clock: Any = time.monotonic):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False  # a probe is in flight; its caller reports success, release or failure
        self.opened_count = 0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    async def acquire(self, until: float | None = None) -> bool:
        """Wait until a request may go; True when the caller is the probe of an open breaker (it must
        then report :meth:`success` or :meth:`failure` before the next caller gets through). A wait past
        ``until`` (``time.monotonic()``) raises :class:`GiveWay`."""
        while self.opened_at is not None:
            wait = self.opened_at + self.cooldown_s - self._clock()
            if wait > 0:
                if past(until, min(wait, 1.0)):
                    raise GiveWay("score", f"the circuit breaker is open ({self.failures} failures in a row)")
                await asyncio.sleep(min(wait, 1.0))
                continue
            await self._probe_turn(until)
            if self.opened_at is None:  # another probe closed it while we waited
                self.probing = False
                return False
            if self._clock() < self.opened_at + self.cooldown_s:  # another probe failed: a new cool-down
                self.probing = False
                continue
            return True
        return False

    async def _probe_turn(self, until: float | None) -> None:
        """Take the probe's turn once the probe in flight (a whole scoring request) has answered.

        A flag that every caller polls, with a deadline or without, rather than an ``asyncio.Lock``: a lock serves
        its waiters in order, so a caller that must give way by ``until`` could queue behind one that waits for
        good, and on Python 3.11 a timeout around ``acquire`` that comes as the lock is granted loses it (a lost
        probe lock would hold every request for good). The event loop runs one task at a time, so a check and
        the set that follows it cannot interleave with another caller's."""
        while self.probing:
            if past(until, PROBE_POLL_S):
                raise GiveWay("score", "the circuit breaker's probe has not answered")
            await asyncio.sleep(PROBE_POLL_S)
        self.probing = True

    def success(self, probe: bool) -> None:
        self.failures = 0
        if self.opened_at is not None:
            log.info("scoring API answers again: circuit breaker closed")
        self.opened_at = None
        if probe:
            self.probing = False

    def release(self, probe: bool) -> None:
        if probe:
            self.probing = False

    def failure(self, probe: bool) -> None:
        self.failures += 1
        if probe or (self.opened_at is None and self.failures >= self.threshold):
            if self.opened_at is None:
                self.opened_count += 1
                log.warning("scoring API unavailable %d times in a row: circuit breaker open", self.failures)
            self.opened_at = self._clock()
        if probe:
            self.probing = False


@dataclass
class _Unavailable(Exception):
    reason: str
    retry_after_s: float | None = None


class ScoringClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        concurrency: int = 4,
        timeout_s: float = 600.0,
        breaker: CircuitBreaker | None = None,
        backoff: Backoff | None = None,
    ):
        self.url = base_url.rstrip("/") + SCORE_PATH
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))
        self._slots = asyncio.Semaphore(concurrency)
        self.breaker = breaker or CircuitBreaker(5, 10.0)
        self.backoff = backoff or Backoff()
        self.unavailable = 0  # answers that were retried, for metrics and tests

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoringClient:
        # the first key that may score: the worker's environment may hold the API's whole key list
        entries = [parse_api_key(k.get_secret_value()) for k in settings.api_keys]
        key = next((e.secret for e in entries if e.scopes & {"score", "admin"}), None)
        return cls(
            settings.serve_url or settings.api_url,
            key,
            concurrency=settings.score_concurrency,
            timeout_s=settings.score_timeout_s,
            breaker=CircuitBreaker(settings.score_breaker_failures, settings.score_breaker_cooldown_s),
            backoff=Backoff.from_settings(settings),
        )

    async def score(self, object_key: str, detectors: list[str] | None = None, *,
                    until: float | None = None) -> ScoreAnswer:
        """Score the stored object; waits out any outage, until ``until`` (``time.monotonic()``) when given: a
        wait that would end past it raises :class:`GiveWay` instead. Raises only that and :class:`ScoringRejected`."""
        body = {"object_key": object_key, "detectors": detectors or None, "aligned": False}
        retry = 0
        while True:
            probe = await self.breaker.acquire(until)
            try:
                async with self._slots:
                    answer = await self._once(body)
            except _Unavailable as exc:
                self.breaker.failure(probe)
                self.unavailable += 1
                wait = self.backoff.delay(retry, random.random())
                if exc.retry_after_s is not None:
                    wait = max(wait, min(exc.retry_after_s, self.backoff.max_s))
                if past(until, wait):
                    raise GiveWay("score", exc.reason) from None
                retry += 1
                log.warning("scoring %s: %s; retry %d in %.1f s", object_key, exc.reason, retry, wait)
                await asyncio.sleep(wait)
                continue
            except ScoringRejected:
                self.breaker.success(probe)  # the API answered: it is up, the media is the problem
                raise
            except BaseException:
                self.breaker.release(probe)  # cancelled (the worker stops): the probe proved nothing
                raise
            self.breaker.success(probe)
            return answer

    async def _once(self, body: dict[str, Any]) -> ScoreAnswer:
        try:
            response = await self._http.post(self.url, json=body)
        except httpx.HTTPError as exc:  # refused, reset, timed out
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 200:
            try:
                return ScoreAnswer.model_validate_json(response.content)
            except ValidationError as exc:
                raise _Unavailable(f"the API's answer does not fit the scoring contract: {exc}") from None
        detail = _json(response)
        if response.status_code == 422 and (detail.get("permanent") is True or "error_type" not in detail):
            error_type = str(detail.get("error_type") or "RequestInvalid")
            raise ScoringRejected(error_type, str(detail.get("detail") or response.text)[:2000])
        raise _Unavailable(
            f"HTTP {response.status_code}: {str(detail.get('detail') or response.text)[:500]}",
            retry_after_seconds(response.headers.get("Retry-After")),
        )

    async def aclose(self) -> None:
        await self._http.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
