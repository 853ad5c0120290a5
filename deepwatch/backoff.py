"""Waiting before a retry: the one backoff step and the server's ``Retry-After``, shared by the crawler and
the stream worker (pure: randomness and the current time come in as arguments)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def backoff_delay(retry: int, base_s: float, cap_s: float, u: float) -> float:
    """The wait before retry number ``retry`` (0 for the first); ``u`` is uniform in [0, 1).

    Exponential and capped, with "equal jitter": half the step is fixed so waits still grow, half is
    random so that many clients hit by the same outage do not come back in step.
    """
    step = min(cap_s, base_s * 2.0 ** min(retry, 62))
    return step / 2 + u * step / 2


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` (RFC 9110: delay-seconds or an HTTP-date) as seconds from ``now``; None when absent
    or unreadable (then our own backoff decides)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
