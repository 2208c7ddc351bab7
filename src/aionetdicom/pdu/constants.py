"""Numeric codes of the Upper Layer protocol (PS3.8 section 9.3) and their meanings."""

from __future__ import annotations

import enum

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
PROTOCOL_VERSION = 0x0001

#: Length of the PDU header: type, reserved, 32-bit length.
PDU_HEADER_LENGTH = 6


class PDUType(enum.IntEnum):
    """PDU type byte (PS3.8 Table 9-11 and following)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class ItemType(enum.IntEnum):
    """Item and sub-item type byte (PS3.8 9.3.2 and Annex D)."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


class PresentationContextResult(enum.IntEnum):
    """Result/Reason of a presentation context in an A-ASSOCIATE-AC (PS3.8 9.3.3.2)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class RejectResult(enum.IntEnum):
    """A-ASSOCIATE-RJ result field."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """A-ASSOCIATE-RJ source field."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class UserRejectReason(enum.IntEnum):
    """A-ASSOCIATE-RJ reason when the source is the DICOM UL service-user."""

    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


class ACSERejectReason(enum.IntEnum):
    """A-ASSOCIATE-RJ reason when the source is the provider's ACSE function."""

    NO_REASON = 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2


class PresentationRejectReason(enum.IntEnum):
    """A-ASSOCIATE-RJ reason when the source is the provider's presentation function."""

    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


class AbortSource(enum.IntEnum):
    """A-ABORT source field."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(enum.IntEnum):
    """A-ABORT reason/diagnostic field, meaningful when the source is the provider."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class UserIdentityType(enum.IntEnum):
    """User-Identity-Type of the user identity negotiation sub-item (PS3.7 D.3.3.7)."""

    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


_REJECT_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_REJECT_SOURCES = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (Presentation related function)",
}
_REJECT_REASONS = {
    1: {
        1: "no-reason-given",
        2: "application-context-name-not-supported",
        3: "calling-AE-title-not-recognized",
        7: "called-AE-title-not-recognized",
    },
    2: {1: "no-reason-given", 2: "protocol-version-not-supported"},
    3: {0: "reserved", 1: "temporary-congestion", 2: "local-limit-exceeded"},
}
_ABORT_SOURCES = {
    0: "DICOM UL service-user",
    1: "reserved",
    2: "DICOM UL service-provider",
}
_ABORT_REASONS = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    3: "reserved",
    4: "unrecognized-PDU-parameter",
    5: "unexpected-PDU-parameter",
    6: "invalid-PDU-parameter-value",
}


def describe_rejection(result: int, source: int, reason: int) -> str:
    """Human readable text of an A-ASSOCIATE-RJ result/source/reason triple."""
    result_text = _REJECT_RESULTS.get(result, f"unknown result {result}")
    source_text = _REJECT_SOURCES.get(source, f"unknown source {source}")
    reason_text = _REJECT_REASONS.get(source, {}).get(reason, f"unknown reason {reason}")
    return (
        f"association {result_text} by {source_text}: {reason_text} "
        f"(result={result}, source={source}, reason={reason})"
    )


def describe_abort(source: int | None, reason: int | None) -> str:
    """Human readable text of an A-ABORT source/reason pair (None: local provider)."""
    if source is None:
        return "association aborted locally"
    source_text = _ABORT_SOURCES.get(source, f"unknown source {source}")
    if source == AbortSource.SERVICE_PROVIDER and reason is not None:
        reason_text = _ABORT_REASONS.get(reason, f"unknown reason {reason}")
        return f"association aborted by {source_text}: {reason_text} (reason={reason})"
    return f"association aborted by {source_text}"
