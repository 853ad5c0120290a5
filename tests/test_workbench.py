"""The web workbench in a real browser: Debian's Chromium driven by Playwright against the API under uvicorn,
on a real SQLite index and local object store seeded with records (two of them real H.264 clips, fingerprinted,
so that the media page plays one and finds the other as its near-duplicate).

Scores in the seeded records are fixture data: these tests check what the workbench shows of a record, not
what a detector says (tests/test_mesonet.py and the stream tests score with the real weights).

Screenshots of every page go to test-artifacts/workbench/ (printed by the run).
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image
from playwright import sync_api  # the test extra; a missing install fails here, never skips

from deepwatch.contracts import (
    DetectorScore,
    EnsembleSettings,
    FaceScore,
    Hints,
    MediaInfo,
    MediaRecord,
    Sighting,
    StoredObjects,
    UrlFailure,
)
from deepwatch.embedded.processes import free_port
from deepwatch.settings import Settings, load_settings
from serve import context as api_context
from serve.api import build_api
from serve.routes_workbench import content_security_policy, store_origin
from storage import keys
from storage.index import open_index
from storage.objects import open_object_store
from tests.fingerprint_support import Clips, clips, face_images, scene, with_face  # noqa: F401
from tests.index_support import T0, media_id, sighting
from tests.media_support import pattern

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "workbench"
MODERATOR, READER = "mod-secret-1", "read-secret-2"
XSS_TITLE = '<img src=x onerror="window.__xss=1">'
XSS_UPLOADER = "<script>window.__xss=2</script>"
XSS_URL = 'https://evil.example/"><svg/onload=window.__xss=3>'
FILLERS = 27
TIMEOUT_MS = 15_000
sync_api.expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Seeded:
    base: str
    fake: MediaRecord  # a scored clip with its media and thumbnail stored
    copy: MediaRecord  # a lower-bitrate copy of it, a near-duplicate
    xss: MediaRecord
    records: list[MediaRecord]
    failures: list[UrlFailure] = field(default_factory=list)  # the worker's stored failures


def thumbnail_jpeg(shift: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pattern(160, 90, shift=shift)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def scored(rec: MediaRecord, score: float, verdict: str, **fields: object) -> MediaRecord:
    detectors = {"mesonet": DetectorScore(p_fake=score, model_version="meso4-df", frames=12),
                 "mesoinception": DetectorScore(p_fake=round(score * 0.9, 3), model_version="mesoinc4-df", frames=12)}
    return rec.model_copy(update={"detectors": detectors, "score": score, "verdict": verdict, **fields})


def fixture_faces(frames: list[tuple[int, float]], boxes: list[list[int]]) -> list[FaceScore]:
    """Per-face scores as fixture data, on the given (position, time) of sampled frames: a spread of values, so
    that the list's order and the dots' heights differ."""
    return [FaceScore(t=t, frame=n, box=box, scores={"mesonet": p, "mesoinception": round(p * 0.9, 3)}, score=p)
            for i, ((n, t), box) in enumerate(zip(frames, boxes, strict=True))
            for p in [round(0.2 + 0.75 * (i * 7 % 5) / 4, 3)]]


def scored_frames(clip: Path, settings: Settings, times: list[float]) -> list[tuple[int, float]]:
    """The frames scoring samples from ``clip`` (position, time) nearest to ``times``: where a record's faces are
    (the media page cuts each face out of its frame, found again by position and time)."""
    from serve.scoring import decode_media

    with tempfile.TemporaryDirectory() as workdir:
        _, frames = decode_media(clip, settings, Path(workdir))
    nearest = [min(frames, key=lambda f: abs(f.t - t)) for t in times]
    return [(f.index, round(f.t, 3)) for f in nearest]


def clip_record(fp, sightings: list[Sighting], objects: StoredObjects) -> MediaRecord:  # type: ignore[no-untyped-def]
    return MediaRecord(media_id=fp.sha256, kind=fp.kind, fingerprints=fp.to_contract(), first_seen=T0, last_seen=T0,
                       sightings=sightings, objects=objects,
                       media=MediaInfo(duration=fp.duration, width=fp.width, height=fp.height))


def seed(settings, clips: Clips) -> tuple[MediaRecord, MediaRecord, MediaRecord, list[MediaRecord]]:  # type: ignore[no-untyped-def]  # noqa: F811
    store = open_object_store(settings)
    face = face_images()[0]
    original = clips.get("workbench-face", lambda: with_face(scene(7), face))
    reposted = clips.get("workbench-face-copy", lambda: with_face(scene(7), face), bit_rate=150_000)
    fp, copy_fp = clips.fingerprint(original), clips.fingerprint(reposted)

    def stored(rec_id: str, media: Path | bytes | None, ext: str, mime: str, shift: int) -> StoredObjects:
        thumb = keys.thumb_key(rec_id)
        store.put(thumb, thumbnail_jpeg(shift), content_type="image/jpeg")
        key = None
        if media is not None:
            key = keys.flagged_key(rec_id, ext)
            store.put(key, media, content_type=mime)
        return StoredObjects(media=key, thumbnail=thumb)

    fake = scored(clip_record(fp, [
        sighting("https://video.example/watch?v=abc", count=3, platform="youtube", source="feed",
                 title="Senator confesses everything", uploader="news-bot"),
        sighting("https://mirror.example/abc.mp4", first=T0 + timedelta(hours=2), platform="web", source="feed"),
    ], stored(fp.sha256, original, "mp4", "video/mp4", 0)), 0.93, "fake", timings={"fetch": 0.8, "score": 1.6},
        ensemble=EnsembleSettings(platt={"mesonet": (1.5, -0.25)}, fake_threshold=0.7, real_threshold=0.3),
        face_scores=fixture_faces(scored_frames(original, settings, fp.to_contract().face_times),
                                  fp.to_contract().face_boxes))
    copy = scored(clip_record(copy_fp, [
        sighting("https://reup.example/v/1", count=2, platform="reddit", source="sub", title="reupload of the senator"),
    ], stored(copy_fp.sha256, None, "", "", 40)), 0.93, "fake", dedup="near", duplicate_of=fp.sha256,
        timings={"fetch": 0.5})
    xss_id = media_id("xss")
    xss = scored(MediaRecord.model_validate({
        "media_id": xss_id, "kind": "image", "fingerprints": {"sha256": xss_id}, "first_seen": T0, "last_seen": T0,
        "sightings": [Sighting(url=XSS_URL, canonical_url=XSS_URL, source="feed", platform="web", first_seen=T0,
                               last_seen=T0, hints=Hints(title=XSS_TITLE, uploader=XSS_UPLOADER,
                                                         text="<b>bold</b>"))],
    }), 0.55, "uncertain", objects=stored(xss_id, None, "", "", 80))
    verdicts = ["real", "uncertain", "no_face", "real", "fake"]
    fillers = []
    for i in range(FILLERS):
        rid = media_id(f"filler-{i}")
        image = i % 3 == 0
        rec = MediaRecord.model_validate({
            "media_id": rid, "kind": "image" if image else "video", "fingerprints": {"sha256": rid},
            "first_seen": T0 + timedelta(days=i % 5), "last_seen": T0 + timedelta(days=i % 5),
            "sightings": [sighting(f"https://site{i}.example/m/{i}", first=T0 + timedelta(days=i % 5),
                                   count=1 + i % 2, platform=["web", "youtube", "reddit"][i % 3],
                                   title=f"filler clip {i}")],
        })
        verdict = verdicts[i % len(verdicts)]
        score = {"real": 0.05 + i / 200, "uncertain": 0.5, "no_face": 0.0, "fake": 0.8 + i / 200}[verdict]
        objects = stored(rid, thumbnail_jpeg(i * 9) if image else None, "jpg", "image/jpeg", i * 9)
        faces = fixture_faces([(0, 0.0)], [[40, 20, 60, 60]]) if i == 0 else []  # an image kept whole: its face is drawn
        fillers.append(scored(rec, round(score, 3), verdict, objects=objects, timings={"fetch": 0.1 + i / 100},
                              face_scores=faces))
    index = open_index(settings)
    try:
        records = [fake, copy, xss, *fillers]
        index.upsert_many(records)
    finally:
        index.close()
    return fake, copy, xss, records


def seed_failures(settings) -> list[UrlFailure]:  # type: ignore[no-untyped-def]
    """Documents as the stream worker stores them under failures/; one reason tries to inject markup."""
    store = open_object_store(settings)
    out = []
    for n, (stage, error_type, reason) in enumerate([
        ("fetch", "HTTPStatusError", "404 Not Found"), ("fetch", "HTTPStatusError", "410 Gone"),
        ("fetch", "TimeoutError", "no answer in 30 s"), ("decode", "MediaError", XSS_TITLE),
    ]):
        url = f"https://gone.example/v/{n}"
        failure = UrlFailure(canonical_url=url, sighting=sighting(url), stage=stage, error_type=error_type,
                             reason=reason, at=T0 + timedelta(minutes=n))
        store.put(keys.failure_key(url), failure.model_dump_json().encode(), content_type="application/json")
        out.append(failure)
    return out


@pytest.fixture(scope="module")
def workbench(tmp_path_factory: pytest.TempPathFactory, clips: Clips) -> Iterator[Seeded]:  # noqa: F811
    data_dir = tmp_path_factory.mktemp("workbench")
    settings = load_settings(data_dir=data_dir, api_keys=f"moderator={MODERATOR}:read+review,reader={READER}:read")
    fake, copy, xss, records = seed(settings, clips)
    failures = seed_failures(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Seeded(f"http://127.0.0.1:{port}", fake, copy, xss, records, failures)
    finally:
        server.should_exit = True
        thread.join(10)
        api_context.configure(settings).close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Console:
    """Page errors and CSP refusals: each one means a broken page or a policy the page violates."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        page.on("console", self._console)

    def _console(self, message) -> None:  # type: ignore[no-untyped-def]
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"csp: {text}")


def open_page(browser, base: str, key: str, **context_options: object):  # type: ignore[no-untyped-def]
    context = browser.new_context(**context_options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page)
    page.goto(f"{base}/")
    sync_api.expect(page.locator(".notice")).to_contain_text("Enter an API key")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    sync_api.expect(page.locator("#key-state")).to_have_text("key set")
    return context, page, console


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api_get(seeded: Seeded, path: str, **params: object) -> dict:
    response = httpx.get(f"{seeded.base}{path}", params=params, headers={"X-API-Key": READER})
    response.raise_for_status()
    return response.json()


def test_workbench_pages_carry_a_strict_csp(workbench: Seeded) -> None:
    for path in ("/", "/ui/", "/ui/js/main.js", "/ui/app.css"):
        response = httpx.get(workbench.base + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert httpx.get(workbench.base + "/ui/js/main.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(workbench.base + "/ui/../api.py").status_code == 404
    assert httpx.get(workbench.base + "/ui/%2e%2e/routes_workbench.py").status_code == 404


@pytest.mark.parametrize(("settings", "origin"), [
    ({}, None),
    ({"store_backend": "s3", "s3_endpoint": "minio:9000", "s3_secure": False}, "http://minio:9000"),
    ({"store_backend": "s3", "s3_endpoint": "minio:9000", "s3_public_url": "https://media.example.org/b"},
     "https://media.example.org"),
])
def test_presigned_media_origin_is_allowed_by_the_policy(settings: dict, origin: str | None) -> None:
    found = store_origin(load_settings(**settings))
    assert found == origin
    policy = content_security_policy(found)
    media = next(d for d in policy.split("; ") if d.startswith("media-src"))
    assert media == "media-src 'self' blob:" + (f" {origin}" if origin else "")


def test_search_review_and_dashboard(workbench: Seeded, browser, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    with capsys.disabled():
        print(f"\nworkbench screenshots: {ARTIFACTS}")
    context, page, console = open_page(browser, workbench.base, MODERATOR, viewport={"width": 1280, "height": 900})
    expect = sync_api.expect
    cards = page.locator("#results .card")
    total = len(workbench.records)

    # every record, 24 a page, then "More"
    expect(page.locator("#summary")).to_have_text(f"24 of {total} records")
    expect(cards).to_have_count(24)
    expect(page.locator("#results .card img").first).to_be_visible()
    shot(page, "search")
    page.click("#more")
    expect(cards).to_have_count(total)
    expect(page.locator("#more")).to_be_hidden()

    # a filter: fake verdicts scoring at least 0.9, as the API itself answers
    page.check("input[name=verdict][value=fake]")
    page.fill("#f-min_score", "0.9")
    page.click("#search-button")
    wanted = api_get(workbench, "/v1/search", verdict="fake", min_score=0.9, limit=100)
    expect(page.locator("#summary")).to_have_text(f"{wanted['total']} of {wanted['total']} records")
    expect(cards).to_have_count(wanted["total"])
    assert {c.get_attribute("data-media-id") for c in cards.all()} == {r["media_id"] for r in wanted["items"]}
    assert workbench.fake.media_id in {r["media_id"] for r in wanted["items"]}
    assert "verdict=fake" in page.url and MODERATOR not in page.url
    fake_card = page.locator(f".card[data-media-id='{workbench.fake.media_id}']")
    expect(fake_card).to_contain_text("Senator confesses everything")
    expect(fake_card).to_contain_text("0.930")
    expect(fake_card).to_contain_text("mesoinception")
    expect(fake_card).to_contain_text("4 sightings")  # 3 at one URL + 1 at another
    shot(page, "search-filtered")

    # the media page: the clip plays from the store, sightings, near-duplicates, no per-frame scores
    fake_card.click()
    expect(page.locator("#media-title")).to_have_text("Senator confesses everything")
    page.wait_for_function("() => { const v = document.querySelector('video#media-view');"
                           " return v && v.src.startsWith('blob:') && v.readyState >= 1; }")
    duration = page.evaluate("document.querySelector('video#media-view').duration")
    assert abs(duration - workbench.fake.media.duration) < 0.5
    expect(page.locator("#sightings")).to_contain_text("https://video.example/watch?v=abc")
    outbound = page.locator("#sightings a.out").first
    assert set(outbound.get_attribute("rel").split()) >= {"noopener", "noreferrer"}
    # the score timeline: a dot per face, a line through each frame's worst face, the faces most suspicious first
    faces = workbench.fake.face_scores
    assert len(faces) >= 2
    expect(page.locator("#timeline svg circle.face-dot")).to_have_count(len(faces))
    expect(page.locator("#timeline svg polyline.frame-max")).to_have_count(1)
    listed = page.locator("#face-scores li")
    expect(listed).to_have_count(len(faces))
    worst = max(faces, key=lambda f: f.score or 0.0)
    expect(listed.first.locator(".face-p")).to_have_text(f"{worst.score:.3f}")
    expect(listed.first).to_contain_text(f"mesoinception {worst.scores['mesoinception']:.3f}")
    shown = [float(v) for v in listed.evaluate_all("items => items.map(li => li.dataset.score)")]
    assert shown == sorted((f.score for f in faces), reverse=True)  # type: ignore[misc]
    # each face of the clip, cut out by the API from the stored media (GET /v1/media/{id}/faces/{n})
    expect(page.locator("#face-scores img.face")).to_have_count(len(faces))
    page.wait_for_function("() => [...document.querySelectorAll('#face-scores img.face')]"
                           ".every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)")
    # counted again once all have loaded: a crop the API refuses is removed, which the first count can precede
    assert page.locator("#face-scores img.face").count() == len(faces)
    similar = page.locator("#similar li")
    expect(similar).to_have_count(1)
    expect(similar).to_contain_text("reupload of the senator")
    expect(similar.locator(".rel-duplicate")).to_have_text("duplicate")
    expect(page.locator("#review-history")).to_contain_text("No reviews yet.")

    # a review, recorded under the key's name
    page.check("input[name=label][value=fake]")
    page.fill("#review-note", "face boundary flickers at 0:02 <b>not bold</b>")
    page.click("#review-submit")
    expect(page.locator("#status")).to_have_text("Recorded: fake by moderator")
    history = page.locator("#review-history li")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("fake (was none) by moderator")
    expect(history.locator("blockquote")).to_have_text("face boundary flickers at 0:02 <b>not bold</b>")
    expect(page.locator("dd[data-fact=review]")).to_contain_text("fake by moderator")
    expect(page.locator("dd[data-fact='ensemble settings']")).to_have_text(
        "fake at 0.7 or above, real at 0.3 or below; Platt: mesonet (1.5, -0.25); weights: all 1")
    shot(page, "media")
    record = api_get(workbench, f"/v1/media/{workbench.fake.media_id}")["record"]
    assert record["review"]["label"] == "fake" and record["review"]["reviewer"] == "moderator"
    assert record["review"]["note"].startswith("face boundary flickers")

    # the dashboard sees the review and counts what dedup saved
    page.click("nav a[data-nav=dashboard]")
    expect(page.locator("#t-reviewed .tile-value")).to_have_text("1")
    expect(page.locator("#d-review-fake")).to_have_text("1")
    expect(page.locator("#t-total .tile-value")).to_have_text(str(total))
    url_repeats = sum(s.count - 1 for r in workbench.records for s in r.sightings)
    same_bytes = sum(len(r.sightings) - 1 for r in workbench.records)
    near = sum(r.dedup == "near" for r in workbench.records)
    assert url_repeats and same_bytes and near  # each figure has something to count
    expect(page.locator("#d-url")).to_have_text(str(url_repeats))
    expect(page.locator("#d-exact")).to_have_text(str(same_bytes))
    expect(page.locator("#d-near")).to_have_text(str(near))
    expect(page.locator("#t-downloads-avoided .tile-value")).to_have_text(str(url_repeats))
    expect(page.locator("#t-scorings-avoided .tile-value")).to_have_text(str(url_repeats + same_bytes + near))
    # dead letters by reason: the worker's stored failures, counted and listed newest first
    for table, counts in (("#f-by-stage", Counter(f.stage for f in workbench.failures)),
                          ("#f-by-type", Counter(f.error_type for f in workbench.failures))):
        rows = page.locator(f"{table} tbody tr")
        expect(rows).to_have_count(len(counts))
        for name, n in counts.items():
            expect(rows.filter(has_text=name).locator("td").nth(1)).to_have_text(str(n))
    newest = sorted(workbench.failures, key=lambda f: f.at, reverse=True)
    expect(page.locator("#f-recent tbody tr")).to_have_count(len(newest))
    expect(page.locator("#f-recent tbody tr").first).to_contain_text(str(newest[0].canonical_url))
    expect(page.locator("#f-recent tbody tr").first).to_contain_text(XSS_TITLE)  # shown as text, not markup
    # the detectors against the reviews: one fake reviewed so far, so counts but no AUC and no fit
    agreement = api_get(workbench, "/v1/detectors/agreement")
    assert agreement["reviewed"] == 1 and set(agreement["summaries"]) == {"mesonet", "mesoinception", "ensemble"}
    for name, summary in agreement["summaries"].items():
        cells = page.locator(f"#agreement tr[data-detector={name}] td")
        expect(cells.nth(1)).to_have_text("\u2013")  # AUC needs a reviewed real too
        expect(cells.nth(3)).to_have_text(str(summary["fakes"]))
        expect(cells.nth(4)).to_have_text("0")
    expect(page.locator("#p-agreement")).to_contain_text("Too few reviews of each label")
    assert agreement["in_force"] == {}  # the workbench's settings set no Platt parameters
    expect(page.locator("#a-in-force")).to_have_text("In force in this deployment: none (each detector's score as it is).")
    aggregations = api_get(workbench, "/v1/aggregations")
    expect(page.locator("#p-histogram svg rect.bar")).to_have_count(sum(1 for n in aggregations["score_histogram"] if n))
    expect(page.locator("#p-verdict-time svg rect.bar").first).to_be_visible()
    expect(page.locator("#p-stages tbody tr")).to_have_count(len(aggregations["stage_seconds"]))
    shot(page, "dashboard")

    # a read-only key may look but not review
    context.close()
    context, page, _ = open_page(browser, workbench.base, READER)
    page.goto(f"{workbench.base}/#/media/{workbench.copy.media_id}")
    expect(page.locator("#timeline-note")).to_contain_text("Per-face scores are not stored")
    expect(page.locator("#timeline svg .m-frame")).to_have_count(len(workbench.copy.fingerprints.frame_times))
    page.check("input[name=label][value=real]")
    page.click("#review-submit")
    expect(page.locator("#status")).to_contain_text("lacks the 'review' scope")
    assert api_get(workbench, f"/v1/media/{workbench.copy.media_id}")["record"]["review"] is None
    # a kept image's face is cut from the picture itself
    image = next(r for r in workbench.records if r.kind == "image" and r.face_scores)
    page.goto(f"{workbench.base}/#/media/{image.media_id}")
    expect(page.locator("#face-scores canvas.face")).to_have_count(1)
    page.wait_for_function("() => { const c = document.querySelector('#face-scores canvas.face');"
                           " return c && c.getContext('2d').getImageData(0, 0, 64, 64).data.some((v, i) => i % 4 < 3 && v > 0); }")
    shot(page, "media-image-faces")
    context.close()
    assert console.problems == []


def test_attacker_strings_render_as_text(workbench: Seeded, browser) -> None:  # type: ignore[no-untyped-def]
    context, page, console = open_page(browser, workbench.base, READER)
    expect = sync_api.expect
    page.goto(f"{workbench.base}/#/search?q=evil")
    card = page.locator(f".card[data-media-id='{workbench.xss.media_id}']")
    expect(card.locator(".title")).to_have_text(XSS_TITLE)
    page.goto(f"{workbench.base}/#/media/{workbench.xss.media_id}")
    expect(page.locator("#media-title")).to_have_text(XSS_TITLE)
    expect(page.locator("#sightings")).to_contain_text(XSS_URL)
    expect(page.locator("#sightings")).to_contain_text(f"by {XSS_UPLOADER}")
    shot(page, "xss-probe")
    # nothing the strings describe became an element, and nothing ran
    assert page.locator("#view img[src=x], #view svg[onload], #view script, #view b").count() == 0
    assert page.evaluate("window.__xss") is None
    context.close()
    assert console.problems == []


def test_phone_width(workbench: Seeded, browser) -> None:  # type: ignore[no-untyped-def]
    context, page, console = open_page(browser, workbench.base, MODERATOR, viewport={"width": 390, "height": 844},
                                       device_scale_factor=2, is_mobile=True, has_touch=True)
    expect = sync_api.expect
    no_sideways_scroll = "document.documentElement.scrollWidth <= window.innerWidth"
    expect(page.locator("#results .card")).to_have_count(24)
    # one column of cards, each as wide as the screen allows
    box = page.locator("#results .card").first.bounding_box()
    assert box is not None and box["width"] > 300
    assert page.evaluate(no_sideways_scroll)
    shot(page, "phone-search")
    page.goto(f"{workbench.base}/#/media/{workbench.fake.media_id}")
    expect(page.locator("#similar li")).to_have_count(1)
    assert page.evaluate(no_sideways_scroll)
    shot(page, "phone-media")
    page.goto(f"{workbench.base}/#/dashboard")
    expect(page.locator("#t-total .tile-value")).to_have_text(str(len(workbench.records)))
    assert page.evaluate(no_sideways_scroll)
    shot(page, "phone-dashboard")
    context.close()
    assert console.problems == []
