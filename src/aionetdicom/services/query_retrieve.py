"""C-FIND, C-GET and C-MOVE as SCU (PS3.4 Annex C)."""

from __future__ import annotations


class QueryRetrieveOperations:
    """Association methods for this service (mixed into :class:`Association`)."""
