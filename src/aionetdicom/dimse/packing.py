"""Pack a DIMSE message into encoded P-DATA-TF PDUs ready for the wire (sans-I/O)."""

from __future__ import annotations

from collections.abc import Iterator

from aionetdicom.dimse.fragments import fragment
from aionetdicom.pdu.codec import encode_pdata_header, encode_pdv_header
from aionetdicom.pdu.pdus import PDV, Buffer

#: Bytes a PDV item adds to its data inside a P-DATA-TF (length, context, control).
PDV_OVERHEAD = 6


def pack_message(
    context_id: int, command: Buffer, dataset: Buffer | None, max_pdu_body: int
) -> Iterator[list[Buffer]]:
    """Yield each P-DATA-TF of a message as a list of buffers (header, PDV headers, data).

    ``max_pdu_body`` is the largest P-DATA-TF variable field the peer accepts. PDVs are
    cut to fit it and consecutive PDVs share a PDU where they fit, so a small command
    and a small data set go out in one write. PDV data is never copied.
    """
    if max_pdu_body <= PDV_OVERHEAD:
        raise ValueError(f"maximum PDU length {max_pdu_body} leaves no room for PDV data")
    limit = max_pdu_body - PDV_OVERHEAD
    pdvs: list[PDV] = list(fragment(context_id, True, command, limit))
    if dataset is not None:
        pdvs.extend(fragment(context_id, False, dataset, limit))
    pending: list[Buffer] = []
    size = 0
    for pdv in pdvs:
        item = len(pdv.data) + PDV_OVERHEAD
        if pending and size + item > max_pdu_body:
            yield [encode_pdata_header(size), *pending]
            pending = []
            size = 0
        pending.append(
            encode_pdv_header(len(pdv.data), pdv.context_id, pdv.is_command, pdv.is_last)
        )
        pending.append(pdv.data)
        size += item
    yield [encode_pdata_header(size), *pending]


class LengthMismatch(ValueError):
    """A streamed data set was not as long as announced."""


class StreamPacker:
    """Pack a message whose data set arrives in chunks of any size (sans-I/O).

    ``length`` is the exact size of the data set. :meth:`command` gives the PDUs of
    the command set, then :meth:`feed` the PDUs completed by each chunk and
    :meth:`finish` the rest. Each data set PDU carries one PDV of ``max_pdu_body - 6``
    bytes (the last one fewer), built from views of the chunks (no copy), so at most
    one PDV's worth of data is held here between calls. The last-fragment bit is set
    on the PDV that reaches ``length``; an empty data set is one empty last PDV.
    Giving more or fewer than ``length`` bytes raises :class:`LengthMismatch`.
    """

    __slots__ = ("_context_id", "_done", "_fed", "_limit", "_pending", "_pending_size", "length")

    def __init__(self, context_id: int, max_pdu_body: int, length: int) -> None:
        if max_pdu_body <= PDV_OVERHEAD:
            raise ValueError(f"maximum PDU length {max_pdu_body} leaves no room for PDV data")
        if length < 0:
            raise ValueError(f"data set length must not be negative, not {length}")
        self._context_id = context_id
        self._limit = max_pdu_body - PDV_OVERHEAD
        self.length = length
        self._fed = 0
        self._pending: list[Buffer] = []
        self._pending_size = 0
        self._done = False

    @property
    def received(self) -> int:
        """Data set bytes fed so far."""
        return self._fed

    def command(self, command: Buffer) -> Iterator[list[Buffer]]:
        """The PDUs of the encoded command set (last-fragment bit on its final PDV)."""
        return pack_message(self._context_id, command, None, self._limit + PDV_OVERHEAD)

    def _pdu(self, last: bool) -> list[Buffer]:
        size = self._pending_size
        pdu: list[Buffer] = [
            encode_pdata_header(size + PDV_OVERHEAD),
            encode_pdv_header(size, self._context_id, False, last),
            *self._pending,
        ]
        self._pending = []
        self._pending_size = 0
        self._done = last
        return pdu

    def feed(self, chunk: Buffer) -> list[list[Buffer]]:
        """Take the next chunk of the data set; return the PDUs it completes."""
        view = memoryview(chunk)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if self._fed + len(view) > self.length:
            raise LengthMismatch(
                f"the data set is longer than the {self.length} bytes announced "
                f"(at least {self._fed + len(view)})"
            )
        self._fed += len(view)
        pdus: list[list[Buffer]] = []
        while view:
            take = min(len(view), self._limit - self._pending_size)
            self._pending.append(view[:take])
            self._pending_size += take
            view = view[take:]
            if self._pending_size == self._limit:
                sent = self._fed - len(view)
                pdus.append(self._pdu(last=sent == self.length))
        return pdus

    def finish(self) -> list[list[Buffer]]:
        """The remaining PDUs, ending with the last fragment; checks the length."""
        if self._fed != self.length:
            raise LengthMismatch(
                f"the data set ended after {self._fed} of the {self.length} bytes announced"
            )
        if self._done:
            return []
        return [self._pdu(last=True)]
