"""Indications and confirmations the upper layer hands to its user (sans-I/O events)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from aionetdicom.pdu.pdus import AAssociateAC, AAssociateRJ, AAssociateRQ, PDataTF


@dataclass(frozen=True, slots=True)
class AssociationRequested:
    """A-ASSOCIATE indication: the peer asks for an association (acceptor side)."""

    request: AAssociateRQ


@dataclass(frozen=True, slots=True)
class AssociationAccepted:
    """A-ASSOCIATE confirmation (accept): the peer accepted our request."""

    response: AAssociateAC


@dataclass(frozen=True, slots=True)
class AssociationRejected:
    """A-ASSOCIATE confirmation (reject): the peer rejected our request."""

    response: AAssociateRJ


@dataclass(frozen=True, slots=True)
class DataReceived:
    """P-DATA indication: PDVs arrived on the established association."""

    pdata: PDataTF


@dataclass(frozen=True, slots=True)
class ReleaseRequested:
    """A-RELEASE indication: the peer asks for an orderly release.

    ``collision`` is True when both sides asked at once (PS3.8 release collision).
    """

    collision: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseConfirmed:
    """A-RELEASE confirmation: the release we requested completed."""


@dataclass(frozen=True, slots=True)
class Aborted:
    """A-ABORT or A-P-ABORT indication.

    ``source`` and ``reason`` come from the peer's A-ABORT PDU; ``local`` is True when
    this provider aborted (protocol error, timer expiry) and then they describe what
    was sent. ``detail`` explains the cause in words.
    """

    source: int | None
    reason: int | None
    local: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The transport is closed and the connection is back in Sta1 (idle)."""


ULEvent = Union[
    AssociationRequested,
    AssociationAccepted,
    AssociationRejected,
    DataReceived,
    ReleaseRequested,
    ReleaseConfirmed,
    Aborted,
    ConnectionClosed,
]
