"""The embedded index of stored instances behind ``qrscp`` (SQLite or PostgreSQL)."""

from aionetdicom.index.attributes import Level
from aionetdicom.index.database import Added, DicomIndex, StoredFile, async_url
from aionetdicom.index.matching import MatchingError

__all__ = ["Added", "DicomIndex", "Level", "MatchingError", "StoredFile", "async_url"]
