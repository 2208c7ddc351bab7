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
