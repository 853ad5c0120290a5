"""The worker's scoring client: retries, Retry-After, the circuit breaker and permanent refusals.

The server here is a named fake of the scoring API (``ScriptedScoreApi``): a loopback HTTP server whose
answers the test scripts, because the real API cannot be told to answer 503 or go down on cue. The
real API is what the end-to-end test talks to.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deepwatch.embedded.processes import free_port
from deepwatch.settings import load_settings
from stream.retry import Backoff, GiveWay
from stream.scoring_client import CircuitBreaker, ScoringClient, ScoringRejected

MEDIA_ID = "ab" * 32
OK = {"media_id": MEDIA_ID, "kind": "image", "verdict": "real", "score": 0.1,
      "detectors": {"meso4_df": {"p_fake": 0.1, "model_version": "v1", "frames": 1}},
      "timings": {"total": 0.5}, "frames": 1, "faces": 1}


class ScriptedScoreApi:
    """A fake of ``POST /v1/score``: answers from ``script`` in order (the last one repeats)."""

    def __init__(self, script: list[tuple[int, dict, dict[str, str]]], port: int = 0):
        self.script = script
        self.requests: list[tuple[float, dict, str | None]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append((time.monotonic(), body, self.headers.get("X-API-Key")))
                status, payload, headers = api.script[min(len(api.requests), len(api.script)) - 1]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[ScriptedScoreApi]:
    server = ScriptedScoreApi([(200, OK, {})])
    yield server
    server.close()


def client(url: str, **kw: object) -> ScoringClient:
    return ScoringClient(url, "k1", backoff=Backoff(0.01, 0.05), **kw)  # type: ignore[arg-type]


def test_settings_pick_the_first_key_and_the_local_api() -> None:
    c = ScoringClient.from_settings(load_settings(api_keys="secret-one:score,secret-two", api_port=9999))
    assert c.url == "http://127.0.0.1:9999/v1/score"
    assert c._http.headers["X-API-Key"] == "secret-one"
    asyncio.run(c.aclose())


def test_unavailable_answers_are_retried_until_a_score(api: ScriptedScoreApi) -> None:
    api.script = [(503, {"detail": "busy", "error_type": "Overloaded", "permanent": False}, {"Retry-After": "0"}),
                  (502, {}, {}), (200, OK, {})]

    async def go() -> None:
        c = client(api.url)
        answer = await c.score("media/ab/x.jpg")
        assert answer.verdict == "real" and answer.detectors["meso4_df"].p_fake == 0.1
        assert c.unavailable == 2
        await c.aclose()

    asyncio.run(go())
    assert len(api.requests) == 3
    assert api.requests[0][1] == {"object_key": "media/ab/x.jpg", "detectors": None, "aligned": False}
    assert {r[2] for r in api.requests} == {"k1"}


@pytest.mark.parametrize(
    ("payload", "error_type"),
    [({"detail": "not a video", "error_type": "Corrupt", "permanent": True}, "Corrupt"),
     ({"detail": [{"loc": ["body", "object_key"], "msg": "bad"}]}, "RequestInvalid")],
)
def test_a_permanent_refusal_is_not_retried(api: ScriptedScoreApi, payload: dict, error_type: str) -> None:
    api.script = [(422, payload, {})]

    async def go() -> None:
        c = client(api.url)
        with pytest.raises(ScoringRejected) as caught:
            await c.score("media/ab/x.jpg")
        assert caught.value.error_type == error_type
        await c.aclose()

    asyncio.run(go())
    assert len(api.requests) == 1


def test_a_score_that_breaks_the_contract_is_not_recorded(api: ScriptedScoreApi) -> None:
    api.script = [(200, {**OK, "verdict": "maybe"}, {}), (200, OK, {})]

    async def go() -> None:
        c = client(api.url)
        assert (await c.score("media/ab/x.jpg")).verdict == "real"
        assert c.unavailable == 1
        await c.aclose()

    asyncio.run(go())


def test_the_breaker_holds_requests_while_the_api_is_down_then_lets_them_through() -> None:
    port = free_port()
    cooldown = 0.6

    async def go() -> tuple[list, float]:
        c = client(f"http://127.0.0.1:{port}", breaker=CircuitBreaker(threshold=3, cooldown_s=cooldown))
        tasks = [asyncio.create_task(c.score(f"media/ab/{i}.jpg")) for i in range(5)]
        await asyncio.sleep(1.5)  # nothing listens on the port: every try is refused
        assert c.breaker.is_open and not any(t.done() for t in tasks)
        refused = c.unavailable
        api = ScriptedScoreApi([(200, OK, {})], port=port)
        try:
            started = time.monotonic()
            answers = await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert all(a.verdict == "real" for a in answers) and not c.breaker.is_open
            await c.aclose()
            return api.requests, refused, time.monotonic() - started  # type: ignore[return-value]
        finally:
            api.close()

    requests, refused, took = asyncio.run(go())
    # Open, the breaker let one probe through per cool-down instead of five callers retrying every 50 ms:
    # about threshold + (1.5 s - time to open) / cooldown refusals, far below the ~150 an unguarded loop makes.
    assert 3 <= refused <= 3 + 1.5 / cooldown + 2
    assert len(requests) == 5 and took < cooldown + 2


def test_past_its_deadline_the_client_stops_waiting_for_an_api_that_is_down(api: ScriptedScoreApi) -> None:
    """With ``until``, a retry or a wait for the open breaker that would end past it raises GiveWay instead (the
    worker must go back to Kafka); without it the client waits for as long as the API is down."""
    api.script = [(503, {"detail": "down", "error_type": "Overloaded", "permanent": False}, {})]

    async def go() -> tuple[float, float]:
        c = client(api.url, breaker=CircuitBreaker(threshold=1000, cooldown_s=30))
        started = time.monotonic()
        with pytest.raises(GiveWay, match="HTTP 503"):
            await asyncio.wait_for(c.score("media/ab/x.jpg", until=time.monotonic() + 0.4), 20)
        retried = time.monotonic() - started  # retries every 10-50 ms until the next would end past 0.4 s
        await c.aclose()
        # an open breaker (a 30 s cool-down) holds callers: past ``until``, they give way at once
        c = client(api.url, breaker=CircuitBreaker(threshold=2, cooldown_s=30))
        started = time.monotonic()
        with pytest.raises(GiveWay, match="circuit breaker"):
            await asyncio.wait_for(c.score("media/ab/y.jpg", until=time.monotonic() + 0.2), 20)
        held = time.monotonic() - started
        assert c.breaker.is_open and c.unavailable == 2
        await c.aclose()
        return retried, held

    retried, held = asyncio.run(go())
    assert 0.25 < retried < 5 and held < 2 and len(api.requests) > 5


def test_a_caller_with_a_deadline_gives_way_while_the_probe_is_out() -> None:
    """After the cool-down one probe goes through; the others wait for its answer (a whole scoring request), but
    not past their ``until``. The probe's lock is not lost: its answer lets the next caller through."""

    async def go() -> None:
        breaker = CircuitBreaker(threshold=1, cooldown_s=0.05)
        breaker.failure(probe=False)
        await asyncio.sleep(0.1)  # the cool-down is over
        assert await breaker.acquire() is True  # the probe, in flight
        started = time.monotonic()
        with pytest.raises(GiveWay, match="probe"):
            await asyncio.wait_for(breaker.acquire(until=time.monotonic() + 0.3), 20)
        assert time.monotonic() - started < 1.0
        waiting = asyncio.create_task(breaker.acquire(until=time.monotonic() + 5))
        await asyncio.sleep(0.15)
        breaker.success(probe=True)  # the probe's answer closes the breaker
        assert await asyncio.wait_for(waiting, 2) is False and not breaker.is_open and not breaker.probing

    asyncio.run(go())


def test_a_caller_with_a_deadline_never_queues_behind_one_without() -> None:
    """A caller without a deadline may wait for the probe for good; one with a deadline must not end up waiting
    behind it. The probe fails with no cool-down while both wait, the hurried caller's turn coming first: it
    takes the probe itself or gives way, by its own deadline. (With an ``asyncio.Lock`` it queued behind the
    patient caller, which became the probe, and waited for that probe's whole request.)"""

    async def go() -> None:
        breaker = CircuitBreaker(threshold=1, cooldown_s=0.0)
        breaker.failure(probe=False)
        assert await breaker.acquire() is True  # the probe, in flight
        patient = asyncio.create_task(breaker.acquire())  # no deadline
        await asyncio.sleep(0.15)
        asyncio.get_running_loop().call_soon(breaker.failure, True)  # the probe fails
        started = time.monotonic()
        hurried = asyncio.create_task(breaker.acquire(until=started + 0.3))  # runs right after the failure
        try:
            probe = await asyncio.wait_for(hurried, 2)
        except GiveWay:
            probe = False
        assert time.monotonic() - started < 1.0
        assert probe is True and breaker.probing and not patient.done()  # first come: it probes, the other waits
        breaker.success(probe=True)
        assert await asyncio.wait_for(patient, 2) is False and not breaker.probing

    asyncio.run(go())
