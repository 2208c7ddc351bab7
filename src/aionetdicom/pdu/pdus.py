"""The seven PDUs of the DICOM Upper Layer (PS3.8 9.3) as immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from aionetdicom.pdu.constants import APPLICATION_CONTEXT_NAME, PROTOCOL_VERSION
from aionetdicom.pdu.items import PresentationContextAC, PresentationContextRQ, UserInformation

Buffer = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True, slots=True)
class AAssociateRQ:
    """A-ASSOCIATE-RQ: the requestor proposes an association."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class AAssociateAC:
    """A-ASSOCIATE-AC: the acceptor accepts, answering every proposed context."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class AAssociateRJ:
    """A-ASSOCIATE-RJ: the association is rejected with result, source and reason."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class PDV:
    """One presentation data value: a fragment of a DIMSE command or dataset."""

    context_id: int
    is_command: bool
    is_last: bool
    data: Buffer


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF: one or more PDVs."""

    pdvs: tuple[PDV, ...]


@dataclass(frozen=True, slots=True)
class AReleaseRQ:
    """A-RELEASE-RQ: ask for an orderly release."""


@dataclass(frozen=True, slots=True)
class AReleaseRP:
    """A-RELEASE-RP: confirm an orderly release."""


@dataclass(frozen=True, slots=True)
class AAbort:
    """A-ABORT: tear the association down at once (source 0 user, 2 provider)."""

    source: int = 0
    reason: int = 0


PDU = Union[AAssociateRQ, AAssociateAC, AAssociateRJ, PDataTF, AReleaseRQ, AReleaseRP, AAbort]
