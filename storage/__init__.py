"""Storage: the object store (a local directory or MinIO/S3) and the search index backends."""

from storage.errors import InvalidKey, KeyConflict, NotFound, NotSupported, StorageError
from storage.objects import ObjectInfo, ObjectStore, ObjectStream, open_object_store

__all__ = [
    "InvalidKey",
    "KeyConflict",
    "NotFound",
    "NotSupported",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStream",
    "StorageError",
    "open_object_store",
]
