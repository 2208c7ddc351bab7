"""Exceptions raised by aionetdicom.

Protocol errors caused by the peer derive from :class:`ProtocolError`; mistakes by
the local user of the library derive from :class:`LocalProtocolError`. Everything the
library raises on purpose derives from :class:`DicomNetworkError`.
"""

from __future__ import annotations


class DicomNetworkError(Exception):
    """Base class of every exception aionetdicom raises on purpose."""


class ProtocolError(DicomNetworkError):
    """The peer broke the DICOM Upper Layer protocol."""

    #: A-ABORT reason to send to the peer (PS3.8 9.3.8): 0 not specified,
    #: 1 unrecognized PDU, 2 unexpected PDU, 4 unrecognized PDU parameter,
    #: 5 unexpected PDU parameter, 6 invalid PDU parameter value.
    abort_reason: int = 0

    def __init__(self, message: str, *, abort_reason: int | None = None) -> None:
        super().__init__(message)
        if abort_reason is not None:
            self.abort_reason = abort_reason


class PDUDecodeError(ProtocolError):
    """Bytes received from the peer are not a valid PDU."""

    abort_reason = 6


class UnknownPDUType(PDUDecodeError):
    """The PDU type byte names no PDU of PS3.8."""

    abort_reason = 1


class PDUTooLarge(PDUDecodeError):
    """The PDU length exceeds the configured receive limit."""

    abort_reason = 6


class LocalProtocolError(DicomNetworkError):
    """The local application asked for something the protocol does not allow now."""


class NegotiationError(DicomNetworkError):
    """Association negotiation did not give what the application needs."""


class AssociationError(DicomNetworkError):
    """Base class for association-level failures."""


class AssociationRejected(AssociationError):
    """The peer (or its provider) rejected the association request (A-ASSOCIATE-RJ)."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        from aionetdicom.pdu.constants import describe_rejection

        self.result = result
        self.source = source
        self.reason = reason
        super().__init__(describe_rejection(result, source, reason))


class AssociationAborted(AssociationError):
    """The association was aborted (A-ABORT or A-P-ABORT)."""

    def __init__(self, source: int | None, reason: int | None, detail: str = "") -> None:
        from aionetdicom.pdu.constants import describe_abort

        self.source = source
        self.reason = reason
        self.detail = detail
        text = describe_abort(source, reason)
        super().__init__(f"{text}: {detail}" if detail else text)


class ConnectionClosed(AssociationError):
    """The transport connection closed while the association still needed it."""


class TLSError(ConnectionClosed):
    """The TLS handshake failed (bad or untrusted certificate, no common protocol or
    cipher, a peer speaking plain TCP); the connection is closed."""


class DicomTimeoutError(DicomNetworkError, TimeoutError):
    """Base class of the timeouts; also a builtin :class:`TimeoutError`."""


class ConnectTimeout(DicomTimeoutError):
    """The TCP (or TLS) connection could not be established in time."""


class ACSETimeout(DicomTimeoutError):
    """No answer to an association request or release request in time."""


class DIMSETimeout(DicomTimeoutError):
    """No DIMSE response (or request continuation) arrived in time."""


class NetworkTimeout(DicomTimeoutError):
    """The connection was idle for longer than the network timeout."""
