"""Crawler politeness: per-host pacing, retries with backoff inside a poll, backoff of a failing source.

The algorithms are pure and tested on numbers; the fetcher wrapper runs against a real loopback HTTP
server with an injected clock, so no test sleeps for the delays it checks.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2

from deepwatch.backoff import retry_after_seconds
from deepwatch.media.errors import NotFound, Transient
from deepwatch.partition import SAME_LENGTH_BATCH, DefaultPartitioner, murmur2, murmur2_same_length, partition_for
from deepwatch.settings import load_settings
from ingest.backoff import RetryPolicy, poll_delay, retry_delay, source_backoff
from ingest.fetcher import GuardedFetcher
from ingest.polite import PoliteFetcher
from ingest.ratelimit import HostRateLimiter, TokenBucket
from ingest.scheduler import Scheduler
from ingest.sources.feeds import FeedOptions, FeedSource
from ingest.sources.ytdlp_listing import YtdlpListingSource, YtdlpOptions
from ingest.state import StateStore
from tests.ingest_support import LOOPBACK, Published, Site, rss


class FakeClock:
    """A clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- pure: token bucket and backoff ----------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_paces() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, tokens=3, updated=0.0)
    assert [bucket.reserve(0.0) for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]  # queued on credit
    assert bucket.reserve(10.0) == 0.0  # refilled after a quiet spell, never above the burst
    assert bucket.tokens == 2.0


def test_host_limiter_paces_each_host_on_its_own() -> None:
    limiter = HostRateLimiter(rate=1.0, burst=1)
    assert limiter.reserve("a.example", 0.0) == 0.0
    assert limiter.reserve("a.example", 0.0) == 1.0
    assert limiter.reserve("b.example", 0.0) == 0.0  # another host is not held up
    assert limiter.reserve("a.example", 5.0) == 0.0
    assert HostRateLimiter(rate=0).reserve("a.example", 0.0) == 0.0  # 0 turns pacing off


def test_host_limiter_forgets_the_least_recently_used_hosts() -> None:
    limiter = HostRateLimiter(rate=1.0, burst=1, max_hosts=2)
    for host in ("a", "b", "a", "c"):
        limiter.reserve(host, 0.0)
    assert list(limiter._buckets) == ["a", "c"]


@given(rate=st.floats(0.1, 100), burst=st.integers(1, 10), gaps=st.lists(st.floats(0, 5), min_size=1, max_size=40))
def test_bucket_never_admits_more_than_rate_allows(rate: float, burst: int, gaps: list[float]) -> None:
    """Over any run of requests, those sent by time t are at most burst + rate * t."""
    bucket = TokenBucket(rate, burst, burst, 0.0)
    now, sent_at = 0.0, []
    for gap in gaps:
        now += gap
        sent_at.append(now + bucket.reserve(now))
    for i, t in enumerate(sorted(sent_at)):
        assert i + 1 <= burst + rate * t + 1e-6


@pytest.mark.parametrize(
    ("retry", "u", "expected"),
    [(0, 0.0, 0.5), (0, 0.999, 0.9995), (1, 0.0, 1.0), (2, 0.5, 3.0), (3, 0.0, 4.0), (9, 0.0, 15.0), (200, 1.0, 30.0)],
)
def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(retry: int, u: float, expected: float) -> None:
    assert retry_delay(retry, RetryPolicy(retries=3, base_s=1.0, cap_s=30.0), u) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("interval", "failures", "cap", "expected"),
    [
        (60, 0, 3600, 0),
        (60, 1, 3600, 60),
        (60, 2, 3600, 180),
        (60, 5, 3600, 1860),
        (60, 7, 3600, 3540),
        (60, 50, 3600, 3540),
        (7200, 3, 3600, 0),
        (1000, 1, 1500, 500),
    ],
)
def test_source_backoff_doubles_up_to_the_cap(interval: float, failures: int, cap: float, expected: float) -> None:
    assert source_backoff(interval, failures, cap) == expected


def test_poll_delay_applies_jitter_to_interval_and_backoff() -> None:
    assert poll_delay(100, 0.1, 0, -1) == pytest.approx(90)
    assert poll_delay(100, 0.1, 100, 1) == pytest.approx(220)


@given(st.binary(max_size=300))
def test_partition_matches_kafka_pythons_default_partitioner(key: bytes) -> None:
    assert murmur2(key) == kafka_murmur2(key)
    assert partition_for(key, 7) == (kafka_murmur2(key) & 0x7FFFFFFF) % 7


@given(st.one_of(st.none(), st.binary(max_size=80)), st.integers(1, 64))
def test_producer_partitioner_answers_as_aiokafkas(key: bytes | None, partitions: int) -> None:
    """The stream worker's producer partitioner: aiokafka's answer for every key, asked twice (the
    second answer comes from its memory); a keyless message goes to an available partition."""
    ours, theirs = DefaultPartitioner(), AiokafkaPartitioner()
    every = list(range(partitions))
    if key is None:
        assert ours(None, every, [partitions - 1]) == partitions - 1
        return
    assert ours(key, every, every) == ours(key, every, []) == theirs(key, every, every)


@given(st.integers(0, 80).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=150)),
       st.integers(1, 64))
def test_keys_placed_together_go_where_each_alone_goes(keys: list[bytes], partitions: int) -> None:
    """A batch of results is placed at once (keys of one length hashed together with numpy, from
    SAME_LENGTH_BATCH keys on): each key lands where aiokafka's partitioner puts it."""
    every = list(range(partitions))
    assert murmur2_same_length(keys) == [kafka_murmur2(key) for key in keys]
    mixed = [*keys, b"a longer key than any of them" * 3]
    theirs = AiokafkaPartitioner()
    for batch in (keys, keys * SAME_LENGTH_BATCH, mixed):
        assert DefaultPartitioner().place(batch, every) == [theirs(key, every, every) for key in batch]


@pytest.mark.parametrize(
    ("key", "partition"), [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)]
)
def test_partition_of_the_java_clients_test_vectors(key: bytes, partition: int) -> None:
    assert partition_for(key, 1000) == partition


def test_murmur2_of_the_java_clients_test_vectors() -> None:
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert all(0 <= partition_for(os.urandom(20), 4) < 4 for _ in range(100))


# --- the polite fetcher against a real server --------------------------------------------------------


def _polite(clock: FakeClock, retries: int = 3, rate: float = 0) -> PoliteFetcher:
    return PoliteFetcher(
        GuardedFetcher(LOOPBACK),
        HostRateLimiter(rate, 1),
        RetryPolicy(retries, 1.0, 30.0),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
    )


def test_transient_failures_are_retried_with_growing_waits(site: Site) -> None:
    answers = iter([(503, b""), (429, b""), (200, b"finally")])

    class Flaky(dict):  # the site serves the next answer on each request to /flaky
        def get(self, path, default=None):  # type: ignore[override]
            if path == "/flaky":
                status, body = next(answers)
                return (status, "text/plain", body, {})
            return super().get(path, default)

    site.routes = Flaky(site.routes)
    clock = FakeClock()
    fetcher = _polite(clock)
    try:
        assert fetcher.get(f"{site.base}/flaky").body == b"finally"
    finally:
        fetcher.close()
    assert site.hits == ["/flaky"] * 3
    assert fetcher.retries == 2
    assert len(clock.sleeps) == 2 and 0.5 <= clock.sleeps[0] < 1.0 and 1.0 <= clock.sleeps[1] < 2.0


def test_retries_give_up_and_permanent_errors_are_not_retried(site: Site) -> None:
    site.put("/down", "", status=500)
    site.put("/gone", "", status=404)
    clock = FakeClock()
    fetcher = _polite(clock, retries=2)
    try:
        with pytest.raises(Transient, match="500"):
            fetcher.get(f"{site.base}/down")
        assert site.hits.count("/down") == 3
        with pytest.raises(NotFound):
            fetcher.get(f"{site.base}/gone")
        assert site.hits.count("/gone") == 1
    finally:
        fetcher.close()


def test_requests_to_one_host_are_paced(site: Site) -> None:
    site.put("/a", "a")
    clock = FakeClock()
    fetcher = _polite(clock, rate=2.0)  # burst 1: every request after the first waits half a second
    try:
        for _ in range(3):
            fetcher.get(f"{site.base}/a")
        other = site.base.replace("127.0.0.1", "localhost")
        fetcher.get(f"{other}/a")  # another host name is not held up by the first
    finally:
        fetcher.close()
    assert clock.sleeps == [0.5, 0.5]
    assert fetcher.waited_s == pytest.approx(1.0)


def test_polite_fetcher_from_settings() -> None:
    settings = load_settings(crawler_host_rate=0.5, crawler_host_burst=2, crawler_retries=1)
    fetcher = PoliteFetcher.from_settings(settings)
    assert (fetcher.limiter.rate, fetcher.limiter.burst, fetcher.retry.retries) == (0.5, 2, 1)
    fetcher.close()


# --- a failing source is polled later and later, and recovers ----------------------------------------


def test_failing_source_backs_off_and_resets_on_success(site: Site, tmp_path: Path) -> None:
    site.put("/feed.xml", "down", status=503)
    clock = FakeClock()
    wall = FakeClock()
    published = Published()
    with GuardedFetcher(LOOPBACK) as fetcher:
        scheduler = Scheduler(
            StateStore.in_data_dir(tmp_path), fetcher, published, backoff_max_s=500, clock=clock, wall=wall
        )
        scheduler.add(FeedSource("feed", FeedOptions(url=f"{site.base}/feed.xml")), interval_s=60, jitter=0)
        waits = []
        for _ in range(5):
            scheduler.poll_once("feed")
            waits.append(scheduler.entries["feed"].next_at - clock.now)
        assert waits == [120, 240, 480, 500, 500]  # doubling, capped
        status = scheduler.status()["feed"]
        assert status["consecutive_failures"] == 5 and status["backoff_s"] == 440 and "503" in status["last_error"]

        restarted = Scheduler(
            StateStore.in_data_dir(tmp_path), fetcher, published, backoff_max_s=500, clock=clock, wall=wall
        )
        restarted.add(FeedSource("feed", FeedOptions(url=f"{site.base}/feed.xml")), interval_s=60, jitter=0)
        assert restarted.status()["feed"]["consecutive_failures"] == 5  # the backoff survives a restart

        site.put("/feed.xml", rss(("one", "/v/1")), "application/rss+xml")
        restarted.poll_once("feed")
        assert restarted.entries["feed"].next_at - clock.now == 60  # back on its interval
        status = restarted.status()["feed"]
        assert status["consecutive_failures"] == 0 and status["backoff_s"] == 0 and status["last_error"] is None
        assert (status["polls"], status["failures"], status["discovered"], status["published"]) == (6, 5, 2, 2)
        assert status["last_success_at"] is not None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("Wed, 23 Nov 2026 10:02:00 GMT", 120.0),  # an HTTP-date, two minutes after "now"
        ("Wed, 23 Nov 2026 09:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(header, now) == expected


def test_limiter_defers_a_host_and_crawl_delay_only_slows_it() -> None:
    limiter = HostRateLimiter(rate=10.0, burst=5)
    limiter.defer("a", 30.0, now=0.0)
    assert limiter.reserve("a", 0.0) == pytest.approx(30.0)
    assert limiter.reserve("b", 0.0) == 0.0  # other hosts are not held back
    limiter.slow_down("b", 4.0, now=0.0)
    waits = [limiter.reserve("b", 0.0) for _ in range(3)]
    assert waits == pytest.approx([0.0, 4.0, 8.0])  # burst 1 at one request per 4 s (one token was spent)
    limiter.slow_down("b", 0.01, now=0.0)  # a faster Crawl-delay than the setting never speeds up
    assert limiter.reserve("b", 0.0) == pytest.approx(12.0)
    unpaced = HostRateLimiter(rate=0)
    unpaced.slow_down("c", 2.0, now=0.0)
    assert [unpaced.reserve("c", 0.0), unpaced.reserve("c", 0.0)] == pytest.approx([0.0, 2.0])


def test_retry_after_holds_back_the_host_and_a_long_one_ends_the_fetch(site: Site) -> None:
    site.put("/busy", "", status=429, **{"Retry-After": "20"})
    site.put("/closed", "", status=503, **{"Retry-After": "3600"})
    clock = FakeClock()
    fetcher = _polite(clock, retries=1)
    try:
        with pytest.raises(Transient, match="Retry-After 20"):
            fetcher.get(f"{site.base}/busy")
        # the retry waited for the server's 20 s, not the 0.5 to 1 s of our own backoff
        assert sum(clock.sleeps) == pytest.approx(20.0)
        clock.sleeps.clear()
        with pytest.raises(Transient, match="Retry-After 3600"):
            fetcher.get(f"{site.base}/closed")
        assert site.hits.count("/closed") == 1  # over the 300 s cap: no retry inside the poll
        site.put("/ok", "fine")
        assert fetcher.get(f"{site.base}/ok").body == b"fine"
        assert clock.sleeps and clock.sleeps[-1] >= 3599  # and the host waits that long for anything
    finally:
        fetcher.close()


def test_ytdlp_listings_are_paced_and_retried_like_requests(site: Site, tmp_path: Path) -> None:
    answers = iter([(503, "text/plain", b"", {}), (200, "application/rss+xml", rss(("one", "/v/1")).encode(), {})])

    class Flaky(dict):  # the channel answers 503 once, then the listing
        def get(self, path, default=None):  # type: ignore[override]
            return next(answers) if path == "/channel.rss" else super().get(path, default)

    site.routes = Flaky(site.routes)
    clock = FakeClock()
    fetcher = _polite(clock, rate=0.5)
    source = YtdlpListingSource("chan", YtdlpOptions(url=f"{site.base}/channel.rss", timeout_s=60))
    try:
        fetcher.get(f"{site.base}/robots-free")  # any earlier request to the host takes its one token
    except NotFound:
        pass
    try:
        poll = source.poll(StateStore(tmp_path).load("chan"), fetcher)
    finally:
        fetcher.close()
    assert [f.url for f in poll.found] == [f"{site.base}/v/1.mp4"]
    assert fetcher.retries == 1  # yt-dlp's 503 went through our retry, not only yt-dlp's own
    assert clock.sleeps[0] == pytest.approx(2.0)  # the listing waited for the host's turn (0.5 request/s)
