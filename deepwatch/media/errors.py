"""Typed media errors, so that callers choose between retrying and dead-lettering.

``retryable`` is the one fact a caller needs: a transient failure or a timeout may succeed later;
everything else will fail the same way again and belongs in the dead-letter topic.
"""

from __future__ import annotations


class MediaError(Exception):
    retryable = False


class NotFound(MediaError):
    """The URL or file does not exist (HTTP 404/410, removed post)."""


class Forbidden(MediaError):
    """The platform refuses access (login wall, geo-block, HTTP 401/403)."""


class Unsupported(MediaError):
    """Not a URL or file kind we can handle (scheme, content type, no media found)."""


class TooLarge(MediaError):
    """Over the byte or pixel limit from the settings."""


class TooLong(MediaError):
    """Over the duration limit from the settings."""


class Blocked(MediaError):
    """Refused by the fetch guard: the address is private, loopback, link-local, …, or a redirect chain
    is longer than ``fetch_max_redirects`` (the message then says "too many redirects")."""


class Timeout(MediaError):
    retryable = True


class Corrupt(MediaError):
    """The bytes cannot be decoded as the media they claim to be."""


class Transient(MediaError):
    """A failure that may go away: connection reset, HTTP 5xx, rate limiting.

    ``retry_after_s``: how long the server asked us to wait (its ``Retry-After``), when it said.
    """

    retryable = True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
