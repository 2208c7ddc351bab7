"""C-STORE as SCU, and the C-STORE SCP used for C-GET sub-operations."""

from __future__ import annotations


class StorageOperations:
    """Association methods for this service (mixed into :class:`Association`)."""
