"""Split an incoming byte stream into PDUs, enforcing size limits before buffering.

Bodies are copied at most once: a PDU that lies inside one received ``bytes`` chunk is
decoded from a view of that chunk, and a body that spans reads is copied piece by piece
into one buffer allocated when its header is accepted (or read straight into it, see
:meth:`PDUReader.receive_buffer`). Everything handed out is a read-only view that is
never written again, so consumers may keep it without copying.
"""

from __future__ import annotations

import struct
from collections import deque

from aionetdicom.errors import PDUTooLarge, UnknownPDUType
from aionetdicom.pdu.codec import decode_pdu_body
from aionetdicom.pdu.constants import PDU_HEADER_LENGTH, PDUType
from aionetdicom.pdu.pdus import PDU, Buffer

#: Largest A-ASSOCIATE-RQ/AC accepted by default. 128 presentation contexts with a
#: handful of transfer syntaxes each, plus a large user identity, fit well within it.
DEFAULT_MAX_ASSOCIATE_LENGTH = 256 * 1024

#: Largest P-DATA-TF accepted when the local maximum length is 0 ("unlimited").
DEFAULT_MAX_UNLIMITED_PDATA_LENGTH = 64 * 1024 * 1024

#: Bodies up to this size get their whole buffer as soon as the header is accepted.
#: Larger ones start at this size and double as bytes arrive, so six bytes from a
#: hostile peer cannot make us allocate (and zero) up to the full receive limit.
BODY_PREALLOCATE_LIMIT = 1024 * 1024

_HEADER = struct.Struct(">BBL")
_KNOWN_TYPES = frozenset(int(t) for t in PDUType)
_P_DATA_TF = int(PDUType.P_DATA_TF)
_FIXED_LENGTH_TYPES = frozenset(
    int(t)
    for t in (PDUType.A_ASSOCIATE_RJ, PDUType.A_RELEASE_RQ, PDUType.A_RELEASE_RP, PDUType.A_ABORT)
)
_EMPTY = memoryview(b"")


def _as_bytes_view(data: Buffer) -> tuple[memoryview, bool]:
    """A flat unsigned-byte view of ``data`` and whether it is backed by immutable bytes."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view, isinstance(view.obj, bytes)


class PDUReader:
    """Sans-I/O PDU framer: ``feed`` bytes in, take whole PDUs out with ``next_pdu``.

    The header is checked as soon as its six bytes arrive, so an unknown PDU type or
    a length beyond the limit is reported without waiting for (or storing) the body.
    Instead of ``feed``, the I/O layer may read a body straight into its final buffer:
    see :meth:`receive_buffer` and :meth:`received_into`.
    """

    def __init__(
        self,
        max_pdata_length: int = DEFAULT_MAX_UNLIMITED_PDATA_LENGTH,
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
    ) -> None:
        self.max_pdata_length = max_pdata_length
        self.max_associate_length = max_associate_length
        # Received bytes not yet framed: read-only views of immutable chunks; the
        # first ``_start`` bytes of ``_queue[0]`` are already consumed.
        self._queue: deque[memoryview] = deque()
        self._start = 0
        self._queued = 0
        # The body being assembled once its header is accepted (None otherwise):
        # ``_body[:_filled]`` holds its first bytes; it grows to ``_length`` at most.
        self._body: bytearray | None = None
        self._view = _EMPTY
        self._filled = 0
        self._length = 0
        self._pdu_type = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a PDU."""
        body = PDU_HEADER_LENGTH + self._filled if self._body is not None else 0
        return self._queued + body

    @property
    def in_pdu(self) -> bool:
        """True while part of a PDU has arrived (used to detect a stall mid-PDU)."""
        return self._body is not None or self._queued > 0

    def feed(self, data: Buffer) -> None:
        """Append bytes received from the transport.

        ``bytes`` are kept by reference; other buffers are copied (the caller may reuse
        them), straight into the body in progress when there is one.
        """
        if type(data) is bytes:
            if not data:
                return
            view = memoryview(data)
            immutable = True
        else:
            view, immutable = _as_bytes_view(data)
            if not view:
                return
        if self._body is not None and not self._queue:
            used = self._absorb(view)
            if used == len(view):
                return
            view = view[used:]
        if not immutable:
            view = memoryview(bytes(view))
        self._queue.append(view)
        self._queued += len(view)

    def receive_buffer(self) -> memoryview | None:
        """The writable, still empty tail of the body being assembled, or None.

        Read up to ``len()`` bytes into it, then report them with :meth:`received_into`
        before calling anything else. None means no body is waiting for bytes (no
        header yet, or unframed bytes are pending): read normally and :meth:`feed`.
        Call it after :meth:`next_pdu` returned None. The view never extends past the
        PDU, so such a read never takes bytes of the next one.
        """
        if self._body is None or self._queue or self._filled >= self._length:
            return None
        if self._filled == len(self._body):
            self._grow(self._filled + 1)
        return self._view[self._filled :]

    def received_into(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written at the start of :meth:`receive_buffer`."""
        if nbytes == 0:
            return
        room = len(self._body) - self._filled if self._body is not None else 0
        if self._queue or not 0 < nbytes <= room:
            raise ValueError(f"{nbytes} bytes do not fit the outstanding receive buffer")
        self._filled += nbytes

    def _check_header(self, pdu_type: int, length: int) -> None:
        if pdu_type not in _KNOWN_TYPES:
            raise UnknownPDUType(f"unknown PDU type 0x{pdu_type:02X} (length field {length})")
        if pdu_type == _P_DATA_TF:
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
        if self._body is None:
            if self._queued < PDU_HEADER_LENGTH:
                return None
            first = self._queue[0]
            start = self._start
            if len(first) - start >= PDU_HEADER_LENGTH:
                pdu_type, _, length = _HEADER.unpack_from(first, start)
            else:
                pdu_type, _, length = _HEADER.unpack(self._peek(PDU_HEADER_LENGTH))
            self._check_header(pdu_type, length)
            self._skip(PDU_HEADER_LENGTH)
            if self._queue:
                first = self._queue[0]
                start = self._start
                end = start + length
                if end <= len(first):
                    # The whole body is in one immutable chunk: decode it in place.
                    self._skip(length)
                    return decode_pdu_body(pdu_type, first[start:end])
            elif not length:
                return decode_pdu_body(pdu_type, _EMPTY)
            self._begin_body(pdu_type, length)
        if self._queue:
            self._drain()
        if self._filled < self._length:
            return None
        body = self._view.toreadonly()
        pdu_type = self._pdu_type
        self._body = None
        self._view = _EMPTY
        self._filled = self._length = 0
        return decode_pdu_body(pdu_type, body)

    # ------------------------------------------------------------------ internals

    def _peek(self, size: int) -> bytes:
        """The next ``size`` queued bytes (which span chunks), without consuming them."""
        parts: list[memoryview] = []
        start = self._start
        for chunk in self._queue:
            piece = chunk[start : start + size]
            parts.append(piece)
            size -= len(piece)
            start = 0
            if not size:
                break
        return b"".join(parts)

    def _skip(self, size: int) -> None:
        """Consume ``size`` queued bytes, dropping the chunks they use up."""
        self._queued -= size
        start = self._start + size
        queue = self._queue
        while queue and start >= len(queue[0]):
            start -= len(queue.popleft())
        self._start = start

    def _begin_body(self, pdu_type: int, length: int) -> None:
        capacity = min(length, max(BODY_PREALLOCATE_LIMIT, self._queued))
        self._body = bytearray(capacity)
        self._view = memoryview(self._body)
        self._filled = 0
        self._length = length
        self._pdu_type = pdu_type

    def _grow(self, needed: int) -> None:
        """Reallocate a body that started below its length (see BODY_PREALLOCATE_LIMIT)."""
        capacity = min(self._length, max(needed, 2 * len(self._view)))
        body = bytearray(capacity)
        view = memoryview(body)
        view[: self._filled] = self._view[: self._filled]
        self._body = body
        self._view = view

    def _absorb(self, data: memoryview) -> int:
        """Copy the start of ``data`` into the body in progress; return the bytes used."""
        filled = self._filled
        take = min(len(data), self._length - filled)
        end = filled + take
        if end > len(self._view):
            self._grow(end)
        self._view[filled:end] = data if take == len(data) else data[:take]
        self._filled = end
        return take

    def _drain(self) -> None:
        """Move queued bytes into the body in progress until it is complete."""
        queue = self._queue
        while queue and self._filled < self._length:
            first = queue[0]
            used = self._absorb(first[self._start :] if self._start else first)
            self._skip(used)
