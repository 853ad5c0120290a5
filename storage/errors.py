"""Errors of the storage layer, shared by every backend so that callers catch one set of types.

A caller should never have to know whether a missing object came from a directory or from S3:
both raise :class:`NotFound`. Anything else the backend could not do is a :class:`StorageError`
carrying the backend's own exception as ``__cause__``.
"""

from __future__ import annotations


class StorageError(Exception):
    """The store could not do what was asked (I/O failure, server error, misconfiguration)."""


class NotFound(StorageError):
    """No object under this key."""

    def __init__(self, key: str, where: str = ""):
        self.key = key
        super().__init__(f"no object {key!r}" + (f" in {where}" if where else ""))


class InvalidKey(StorageError, ValueError):
    """A key, id, extension or name that must not reach a backend (malformed, or it could escape).

    Also a ``ValueError`` so that code validating input generically still catches it.
    """


class KeyConflict(StorageError):
    """The local backend cannot hold both ``a`` and ``a/b``: a path is a file or a directory.

    S3 has no such limit. The content-addressed layout (``storage.keys``) never produces such a
    pair, so this only shows up with hand-made keys.
    """


class NotSupported(StorageError):
    """The backend has no way to do this (e.g. a presigned URL for a local directory)."""
