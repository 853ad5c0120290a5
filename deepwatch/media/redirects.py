"""The redirect limit of one fetch, enforced inside yt-dlp's own HTTP handlers.

The guarding proxy cannot count redirects: for https it sees only CONNECT, and with keep-alive one
tunnel may carry a whole chain. yt-dlp follows redirects in its request handler, so the limit lives
there: :class:`LimitedYoutubeDL` swaps its HTTP handlers for subclasses bound to this fetch's
:class:`RedirectLimit`. Nothing global changes, so concurrent fetches may use different limits.
yt-dlp prefers its requests handler when ``requests`` is importable and falls back to urllib, so
both are limited; an HTTP handler that cannot be limited here (curl_cffi) is left out.
"""

from __future__ import annotations

import functools
import threading
import urllib.error
from dataclasses import dataclass, field
from typing import Any

import yt_dlp
from yt_dlp.networking._urllib import RedirectHandler, UrllibRH
from yt_dlp.networking.exceptions import HTTPError

from deepwatch.media.errors import Blocked

try:
    from yt_dlp.networking._requests import RequestsRH
except ImportError:  # yt-dlp registers it only when requests and urllib3 are installed
    RequestsRH = None


@dataclass
class RedirectLimit:
    """One fetch's limit, and the requests that went over it: any of them fails the fetch."""

    max_redirects: int
    breaches: list[str] = field(default_factory=list)

    def error(self, detail: str | None = None) -> Blocked:
        detail = detail or (self.breaches[0] if self.breaches else "a redirect loop")
        return Blocked(f"too many redirects (the limit is {self.max_redirects}, fetch_max_redirects): {detail}")


class _RecordsBreaches:
    """Notes every redirect-limit failure, because yt-dlp may swallow one on a path it can retry."""

    _redirects: RedirectLimit

    def _send(self, request: Any) -> Any:
        try:
            return super()._send(request)  # type: ignore[misc]
        except HTTPError as exc:
            if exc.redirect_loop:
                self._redirects.breaches.append(f"{request.url} ({exc})")
            raise


class _CountingRedirectHandler(RedirectHandler):
    """yt-dlp's urllib redirect handler, refusing the hop past the limit.

    urllib follows a chain by nested calls in one thread, so a thread-local count that
    :class:`LimitedUrllibRH` resets per request counts each chain exactly — an attribute on the
    ``Request`` would not, since yt-dlp rebuilds a hop's ``Request`` when it normalises the URL.
    """

    # answers every 30x before the stock handler that yt-dlp's opener also holds
    handler_order = RedirectHandler.handler_order - 1

    def __init__(self, max_redirects: int, hops: threading.local) -> None:
        self.max_redirects = max_redirects
        # urllib's own cap counts distinct URLs (default 10): it must not cut in before ours
        self.max_redirections = max_redirects + 1
        self._hops = hops

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        self._hops.count = getattr(self._hops, "count", 0) + 1
        if self._hops.count > self.max_redirects:
            # yt-dlp turns a urllib HTTPError saying "redirect error" into HTTPError(redirect_loop=True)
            text = f"redirect error: more than {self.max_redirects} redirects"
            raise urllib.error.HTTPError(req.full_url, code, text, headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class LimitedUrllibRH(_RecordsBreaches, UrllibRH):
    RH_KEY = UrllibRH.RH_KEY  # yt-dlp looks some handlers up by key: stay "Urllib"

    def __init__(self, *, redirects: RedirectLimit, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._redirects = redirects
        self._hops = threading.local()

    def _create_instance(self, **kwargs: Any) -> Any:
        opener = super()._create_instance(**kwargs)
        opener.add_handler(_CountingRedirectHandler(self._redirects.max_redirects, self._hops))
        return opener

    def _send(self, request: Any) -> Any:
        self._hops.count = 0  # one chain per request
        return super()._send(request)


if RequestsRH is not None:

    class LimitedRequestsRH(_RecordsBreaches, RequestsRH):
        RH_KEY = RequestsRH.RH_KEY

        def __init__(self, *, redirects: RedirectLimit, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._redirects = redirects

        def _create_instance(self, **kwargs: Any) -> Any:
            # a Session's own limit: exactly max_redirects hops pass, and 0 refuses the first one
            session = super()._create_instance(**kwargs)
            session.max_redirects = self._redirects.max_redirects
            return session

    _LIMITED: dict[type, type] = {UrllibRH: LimitedUrllibRH, RequestsRH: LimitedRequestsRH}
else:
    _LIMITED = {UrllibRH: LimitedUrllibRH}


def _speaks_http(handler: type) -> bool:
    schemes = getattr(handler, "_SUPPORTED_URL_SCHEMES", None)
    return schemes is None or bool({"http", "https"} & set(schemes))


class LimitedYoutubeDL(yt_dlp.YoutubeDL):
    """A ``YoutubeDL`` whose every HTTP request follows at most ``redirects.max_redirects`` redirects."""

    def __init__(self, params: dict[str, Any], redirects: RedirectLimit) -> None:
        self.redirects = redirects  # before super(): its __init__ may already build the handlers
        super().__init__(params)

    def build_request_director(self, handlers: Any, preferences: Any = None) -> Any:
        chosen = []
        for handler in handlers:
            if handler in _LIMITED:
                chosen.append(functools.partial(_LIMITED[handler], redirects=self.redirects))
            elif not _speaks_http(handler):
                chosen.append(handler)  # websockets: no redirects to follow
        return super().build_request_director(chosen, preferences)
