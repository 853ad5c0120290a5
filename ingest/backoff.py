"""How long to wait after failures (pure: randomness comes in as a number).

Two kinds of waiting: between retries of one fetch inside a poll (:func:`retry_delay`, seconds), and
between polls of a source that keeps failing (:func:`source_backoff`, up to an hour by default), so
a broken feed is asked less and less often until it answers again.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepwatch.backoff import backoff_delay


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3  # after the first attempt
    base_s: float = 1.0
    cap_s: float = 30.0
    # A server's Retry-After is honoured up to this; a longer one ends the fetch (the source's own backoff
    # takes over) instead of holding the crawler's thread for an hour.
    retry_after_cap_s: float = 300.0


def retry_delay(retry: int, policy: RetryPolicy, u: float) -> float:
    """The wait before retry number ``retry`` (0 for the first); ``u`` is uniform in [0, 1)."""
    return backoff_delay(retry, policy.base_s, policy.cap_s, u)


def source_backoff(interval_s: float, failures: int, cap_s: float) -> float:
    """Extra seconds added to a source's interval after ``failures`` failed polls in a row.

    The interval doubles per failure until it reaches ``cap_s`` (a source whose own interval is longer
    than the cap is simply polled at its interval); no failures, no backoff.
    """
    if failures <= 0:
        return 0.0
    longest = max(cap_s, interval_s)
    return min(longest, interval_s * 2.0 ** min(failures, 62)) - interval_s


def poll_delay(interval_s: float, jitter: float, backoff_s: float, u: float) -> float:
    """Seconds to the next poll: the interval plus any backoff, stretched or shrunk by up to ``jitter``
    (a fraction); ``u`` is uniform in [-1, 1]."""
    return (interval_s + backoff_s) * (1 + jitter * u)
