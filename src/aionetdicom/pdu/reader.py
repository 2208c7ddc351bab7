"""Split an incoming byte stream into PDUs, enforcing size limits before buffering."""

from __future__ import annotations

import struct

from aionetdicom.errors import PDUTooLarge, UnknownPDUType
from aionetdicom.pdu.codec import decode_pdu_body
from aionetdicom.pdu.constants import PDU_HEADER_LENGTH, PDUType
from aionetdicom.pdu.pdus import PDU, Buffer

#: Largest A-ASSOCIATE-RQ/AC accepted by default. 128 presentation contexts with a
#: handful of transfer syntaxes each, plus a large user identity, fit well within it.
DEFAULT_MAX_ASSOCIATE_LENGTH = 256 * 1024

#: Largest P-DATA-TF accepted when the local maximum length is 0 ("unlimited").
DEFAULT_MAX_UNLIMITED_PDATA_LENGTH = 64 * 1024 * 1024

_HEADER = struct.Struct(">BBL")
_KNOWN_TYPES = frozenset(int(t) for t in PDUType)
_FIXED_LENGTH_TYPES = frozenset(
    (PDUType.A_ASSOCIATE_RJ, PDUType.A_RELEASE_RQ, PDUType.A_RELEASE_RP, PDUType.A_ABORT)
)


class PDUReader:
    """Sans-I/O PDU framer: ``feed`` bytes in, take whole PDUs out with ``next_pdu``.

    The header is checked as soon as its six bytes arrive, so an unknown PDU type or
    a length beyond the limit is reported without waiting for (or storing) the body.
    """

    def __init__(
        self,
        max_pdata_length: int = DEFAULT_MAX_UNLIMITED_PDATA_LENGTH,
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
    ) -> None:
        self.max_pdata_length = max_pdata_length
        self.max_associate_length = max_associate_length
        self._buffer = bytearray()
        self._header: tuple[int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a PDU."""
        return len(self._buffer)

    @property
    def in_pdu(self) -> bool:
        """True while part of a PDU has arrived (used to detect a stall mid-PDU)."""
        return bool(self._buffer)

    def feed(self, data: Buffer) -> None:
        """Append bytes received from the transport."""
        self._buffer += data

    def _check_header(self, pdu_type: int, length: int) -> None:
        if pdu_type not in _KNOWN_TYPES:
            raise UnknownPDUType(f"unknown PDU type 0x{pdu_type:02X} (length field {length})")
        if pdu_type == PDUType.P_DATA_TF:
            limit = self.max_pdata_length
        elif pdu_type in _FIXED_LENGTH_TYPES:
            limit = 4
        else:
            limit = self.max_associate_length
        if length > limit:
            raise PDUTooLarge(
                f"{PDUType(pdu_type).name} PDU declares {length} bytes, "
                f"above the receive limit of {limit}"
            )

    def next_pdu(self) -> PDU | None:
        """Return the next complete PDU, or None when more bytes are needed."""
        buffer = self._buffer
        if self._header is None:
            if len(buffer) < PDU_HEADER_LENGTH:
                return None
            pdu_type, _, length = _HEADER.unpack_from(buffer)
            self._check_header(pdu_type, length)
            self._header = (pdu_type, length)
        pdu_type, length = self._header
        end = PDU_HEADER_LENGTH + length
        if len(buffer) < end:
            return None
        body = bytes(buffer[PDU_HEADER_LENGTH:end])
        del buffer[:end]
        self._header = None
        return decode_pdu_body(pdu_type, memoryview(body))
