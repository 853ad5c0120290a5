"""Media records decoded from their stored JSON, kept beside that JSON.

Decoding a record validates all of it (URLs, fingerprint lists, the record's own rules): on the stream's
hit path, where every repost of a known URL reads its record, merges a sighting and writes it back, that
was two fifths of the index's time. The same text always decodes to the same record, so a record whose
stored JSON is still the text we last read or wrote is taken from here. Comparing the text, rather than
trusting a cache, keeps this right when another process wrote the record in between.

Records are never changed in place (every change is a ``model_copy`` or a new record), so one record
object may be shared by several readers.
"""

from __future__ import annotations

from collections import OrderedDict

from deepwatch.contracts import MediaRecord

# Records: the hot set of a crawl (reposts cluster on few media items). A typical record decodes to
# some kilobytes of objects, so this holds tens of megabytes at most.
DEFAULT_SIZE = 4096


class DecodedRecords:
    """A bounded, least-recently-used map of media id -> (stored JSON, record); not thread-safe (the
    index calls it under its own lock)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[str, MediaRecord]] = OrderedDict()

    def decode(self, media_id: str, doc: str) -> MediaRecord:
        known = self._items.get(media_id)
        if known is not None and known[0] == doc:
            self._items.move_to_end(media_id)
            return known[1]
        record = MediaRecord.model_validate_json(doc)
        self.remember(media_id, doc, record)
        return record

    def remember(self, media_id: str, doc: str, record: MediaRecord) -> None:
        """``record`` is what ``doc`` decodes to (the index just wrote ``doc`` from it)."""
        self._items[media_id] = (doc, record)
        self._items.move_to_end(media_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
