"""Turn a discovered URL into a validated ``UrlDiscovered`` event (pure, no I/O)."""

from __future__ import annotations

from deepwatch.contracts import Hints, UrlDiscovered
from deepwatch.media.urls import canonical_url, platform_of


def discovered(url: str, source: str, hints: Hints | None = None) -> UrlDiscovered:
    """Raises ``Unsupported`` for non-http(s) input and ``ContractError`` for an invalid source name."""
    canonical = canonical_url(url)
    return UrlDiscovered(url=url.strip(), canonical_url=canonical, source=source, platform=platform_of(canonical),
                         hints=hints)
