"""The SSRF guard and the fetcher, against real HTTP servers on loopback and real yt-dlp."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from yt_dlp.networking.exceptions import HTTPError

from deepwatch.media.errors import Blocked, Corrupt, Forbidden, NotFound, TooLarge, TooLong, Transient, Unsupported
from deepwatch.media.fetch import FetchLimits, fetch
from deepwatch.media.guard import AddressPolicy, refusal_reason
from deepwatch.media.probe import probe
from deepwatch.media.proxy import GuardProxy
from deepwatch.media.redirects import LimitedYoutubeDL, RedirectLimit, RequestsRH
from deepwatch.settings import Settings

LOOPBACK_ONLY = AddressPolicy.from_networks(["127.0.0.1/32"])
LIMITS = FetchLimits(max_bytes=10 * 1024 * 1024, max_duration_s=60, timeout_s=30)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
        ("172.16.0.1", "private"), ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("100.64.1.1", "carrier-grade NAT"), ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"), ("2002:7f00:1::", "loopback"), ("fc00::1", "private"),
        ("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None),
    ],
)
def test_refusal_reasons(address: str, reason: str | None) -> None:
    got = refusal_reason(ipaddress.ip_address(address))
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_allowlist_opens_only_its_networks() -> None:
    policy = AddressPolicy.from_networks(["127.0.0.0/8", "fd00::/8"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.9")) is None
    assert policy.refusal(ipaddress.ip_address("fd12::1")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) == "private address"
    with pytest.raises(Blocked, match=r"refused metadata\.internal → 169\.254\.169\.254: cloud metadata"):
        policy.check("metadata.internal", [ipaddress.ip_address("169.254.169.254")])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2 s H.264 clip made with the ffmpeg binary from imageio-ffmpeg."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=duration=2:size=160x120:rate=10", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)],
        check=True, timeout=60,
    )
    return path


class Site:
    """An HTTP server on a loopback address, serving one clip and a few failure modes."""

    def __init__(self, host: str, clip: Path) -> None:
        body = clip.read_bytes()
        site = self
        self.redirect_to = ""

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/clip.mp4"):
                    self._send(200, body, "video/mp4")
                elif self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", site.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path.startswith("/hops/"):
                    self._hop()
                elif self.path.startswith("/status/"):
                    self._send(int(self.path.rsplit("/", 1)[1]), b"nope", "text/plain")
                else:
                    self._send(404, b"missing", "text/plain")

            def _hop(self) -> None:
                """/hops/N/clip.mp4 is a chain of N redirects that ends at the clip."""
                hops = int(self.path.split("/")[2])
                if hops == 0:
                    self._send(200, body, "video/mp4")
                    return
                self.send_response(302)
                self.send_header("Location", f"{site.url}/hops/{hops - 1}/clip.mp4")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                self.do_GET()

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sites(clip: Path) -> Iterator[tuple[Site, Site]]:
    first, second = Site("127.0.0.1", clip), Site("127.0.0.2", clip)  # all of 127/8 is loopback on Linux
    yield first, second
    first.close()
    second.close()


def test_default_policy_refuses_loopback(sites: tuple[Site, Site], tmp_path: Path) -> None:
    with pytest.raises(Blocked, match=r"127\.0\.0\.1: loopback address"):
        fetch(f"{sites[0].url}/clip.mp4", tmp_path, LIMITS, AddressPolicy())
    with pytest.raises(Blocked, match="loopback"):
        fetch(f"http://localhost:{sites[0].server.server_address[1]}/clip.mp4", tmp_path, LIMITS, AddressPolicy())
    assert list(tmp_path.iterdir()) == []


def test_allowlisted_fetch_returns_the_exact_bytes(sites: tuple[Site, Site], clip: Path, tmp_path: Path) -> None:
    fetched = fetch(f"{sites[0].url}/clip.mp4?utm_source=x", tmp_path, LIMITS, LOOPBACK_ONLY)
    assert fetched.path.read_bytes() == clip.read_bytes()
    assert fetched.sha256 == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert fetched.size == clip.stat().st_size


def test_redirect_to_a_refused_address_is_blocked(sites: tuple[Site, Site], tmp_path: Path) -> None:
    first, second = sites
    first.redirect_to = f"{second.url}/clip.mp4"
    with pytest.raises(Blocked, match=r"127\.0\.0\.2: loopback address"):
        fetch(f"{first.url}/redirect", tmp_path, LIMITS, LOOPBACK_ONLY)
    # and the same redirect is followed when the target's network is allowed too
    both = AddressPolicy.from_networks(["127.0.0.1/32", "127.0.0.2/32"])
    assert fetch(f"{first.url}/redirect", tmp_path, LIMITS, both).size > 0


@pytest.mark.parametrize(("status", "error"), [(404, NotFound), (410, NotFound), (403, Forbidden), (503, Transient)])
def test_http_failures_are_typed(sites: tuple[Site, Site], tmp_path: Path, status: int, error: type) -> None:
    with pytest.raises(error):
        fetch(f"{sites[0].url}/status/{status}", tmp_path, LIMITS, LOOPBACK_ONLY)


def test_too_large_is_an_error_and_leaves_no_file(sites: tuple[Site, Site], clip: Path, tmp_path: Path) -> None:
    small = FetchLimits(max_bytes=clip.stat().st_size // 2, max_duration_s=60, timeout_s=30)
    with pytest.raises(TooLarge):
        fetch(f"{sites[0].url}/clip.mp4", tmp_path, small, LOOPBACK_ONLY)
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.mp4", "not a url"])
def test_non_http_urls_are_unsupported(url: str, tmp_path: Path) -> None:
    with pytest.raises(Unsupported):
        fetch(url, tmp_path, LIMITS, LOOPBACK_ONLY)


def test_proxy_refuses_and_explains(sites: tuple[Site, Site]) -> None:
    with GuardProxy(AddressPolicy()) as proxy, httpx.Client(proxy=proxy.url) as client:
        response = client.get(f"{sites[0].url}/clip.mp4")
        assert response.status_code == 403 and "loopback" in response.text
        assert proxy.refusals and "127.0.0.1" in proxy.refusals[0]
    with GuardProxy(LOOPBACK_ONLY) as proxy, httpx.Client(proxy=proxy.url) as client:
        assert client.get(f"{sites[0].url}/clip.mp4").status_code == 200
        assert proxy.refusals == []


def test_duration_is_verified_after_download(sites: tuple[Site, Site], tmp_path: Path) -> None:
    """The generic extractor cannot know a direct file's duration: the fetcher measures it."""
    short = FetchLimits(max_bytes=10 * 1024 * 1024, max_duration_s=1.0, timeout_s=30)
    with pytest.raises(TooLong, match="lasts 2 s"):
        fetch(f"{sites[0].url}/clip.mp4", tmp_path, short, LOOPBACK_ONLY)
    assert list(tmp_path.rglob("*")) == []


def test_probe_reads_the_real_stream(clip: Path, tmp_path: Path) -> None:
    info = probe(clip)
    assert (info.width, info.height, info.codec) == (160, 120, "h264")
    assert info.fps == pytest.approx(10) and info.duration == pytest.approx(2.0, abs=0.15)
    assert info.bytes == clip.stat().st_size
    for name, payload in [("empty.mp4", b""), ("junk.mp4", b"\x00\x01garbage" * 100), ("half.mp4", clip.read_bytes()[:300])]:
        bad = tmp_path / name
        bad.write_bytes(payload)
        with pytest.raises(Corrupt):
            probe(bad)


def _limits(max_redirects: int) -> FetchLimits:
    return FetchLimits(max_bytes=10 * 1024 * 1024, max_duration_s=60, timeout_s=30, max_redirects=max_redirects)


def test_redirect_limit_comes_from_the_settings() -> None:
    assert FetchLimits.from_settings(Settings(fetch_max_redirects=7)).max_redirects == 7
    assert FetchLimits.from_settings(Settings(fetch_max_redirects=0)).max_redirects == 0


def test_a_chain_at_the_limit_is_followed(sites: tuple[Site, Site], clip: Path, tmp_path: Path) -> None:
    fetched = fetch(f"{sites[0].url}/hops/3/clip.mp4", tmp_path, _limits(3), LOOPBACK_ONLY)
    assert fetched.path.read_bytes() == clip.read_bytes()


@pytest.mark.parametrize(("hops", "limit"), [(3, 2), (1, 0), (7, 5)])
def test_a_chain_over_the_limit_is_blocked(sites: tuple[Site, Site], tmp_path: Path, hops: int, limit: int) -> None:
    with pytest.raises(Blocked, match=rf"too many redirects \(the limit is {limit}, fetch_max_redirects\)"):
        fetch(f"{sites[0].url}/hops/{hops}/clip.mp4", tmp_path, _limits(limit), LOOPBACK_ONLY)
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("legacy", [False, True], ids=["requests", "urllib"])
def test_each_http_handler_keeps_the_limit(sites: tuple[Site, Site], clip: Path, legacy: bool) -> None:
    """yt-dlp prefers its requests handler and falls back to urllib: both count the same way."""
    if not legacy and RequestsRH is None:
        pytest.skip("requests is not installed, so yt-dlp has no requests handler")
    redirects = RedirectLimit(2)
    with GuardProxy(LOOPBACK_ONLY) as proxy:
        params = {"proxy": proxy.url, "quiet": True, "compat_opts": ["prefer-legacy-http-handler"] if legacy else []}
        with LimitedYoutubeDL(params, redirects) as ydl:
            response = ydl.urlopen(f"{sites[0].url}/hops/2/clip.mp4")
            assert type(response).__module__.endswith("_urllib" if legacy else "_requests")
            assert response.read() == clip.read_bytes()
            assert redirects.breaches == []
            with pytest.raises(HTTPError) as caught:
                ydl.urlopen(f"{sites[0].url}/hops/3/clip.mp4")
    assert caught.value.redirect_loop
    assert len(redirects.breaches) == 1 and "/hops/3/clip.mp4" in redirects.breaches[0]
