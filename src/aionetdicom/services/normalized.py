"""The DIMSE-N operations as SCU, and N-EVENT-REPORT received by an SCU."""

from __future__ import annotations


class NormalizedOperations:
    """Association methods for this service (mixed into :class:`Association`)."""
