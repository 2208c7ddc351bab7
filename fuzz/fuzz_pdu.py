"""libFuzzer target (atheris): the PDU codec and the incremental PDU reader.

The input is a byte stream as a peer would send it. Checked for every input:

* ``decode_pdu`` gives a PDU or raises :class:`PDUDecodeError` (nothing else);
* a decoded PDU re-encodes, decodes to itself and encodes to a fixed point;
* :class:`PDUReader`, fed the stream in pieces (sizes and feeding style derived
  from the input's CRC, so a crash replays exactly), frames the same PDUs and the
  same error as cutting the stream at each header and calling ``decode_pdu``.

Run through fuzz/run.sh; a single input replays with ``python fuzz/fuzz_pdu.py FILE``.
"""

from __future__ import annotations

import struct
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["aionetdicom"]):
    from aionetdicom.errors import PDUDecodeError, PDUTooLarge, UnknownPDUType
    from aionetdicom.pdu import PDU, PDUReader, decode_pdu, encode_pdu
    from aionetdicom.pdu.constants import PDUType

#: Receive limit for both P-DATA-TF and A-ASSOCIATE PDUs: keeps every input cheap.
LIMIT = 1 << 16
_KNOWN = frozenset(int(t) for t in PDUType)
_FIXED4 = frozenset(
    int(t)
    for t in (PDUType.A_ASSOCIATE_RJ, PDUType.A_RELEASE_RQ, PDUType.A_RELEASE_RP, PDUType.A_ABORT)
)


def check_canonical(pdu: PDU) -> None:
    """A decoded PDU must re-encode, decode to itself and encode to a fixed point."""
    encoded = encode_pdu(pdu)
    again = decode_pdu(encoded)
    if again != pdu:
        raise AssertionError(f"decode(encode(x)) != x:\n{pdu!r}\n{again!r}")
    if encode_pdu(again) != encoded:
        raise AssertionError(f"encode is not a fixed point for {pdu!r}")


def frame_one_shot(stream: bytes) -> tuple[list[PDU], type[PDUDecodeError] | None, int]:
    """Reference framing: PDUs, the error type (or None) and the bytes left over."""
    pdus: list[PDU] = []
    pos = 0
    while len(stream) - pos >= 6:
        pdu_type, _, length = struct.unpack_from(">BBL", stream, pos)
        if pdu_type not in _KNOWN:
            return pdus, UnknownPDUType, 0
        if length > (4 if pdu_type in _FIXED4 else LIMIT):
            return pdus, PDUTooLarge, 0
        if len(stream) - pos - 6 < length:
            break
        try:
            pdus.append(decode_pdu(stream[pos : pos + 6 + length]))
        except PDUDecodeError as exc:
            return pdus, type(exc), 0
        pos += 6 + length
    return pdus, None, len(stream) - pos


def frame_incrementally(
    stream: bytes, sizes: list[int], style: int
) -> tuple[list[PDU], type[PDUDecodeError] | None, int]:
    """Feed ``stream`` in reads of ``sizes``: bytes, reused bytearrays, or receive_buffer."""
    reader = PDUReader(max_pdata_length=LIMIT, max_associate_length=LIMIT)
    pdus: list[PDU] = []
    pos = index = 0
    try:
        while pos < len(stream):
            size = sizes[index % len(sizes)]
            index += 1
            view = reader.receive_buffer() if style == 2 else None
            if view is not None:
                n = min(size, len(view), len(stream) - pos)
                view[:n] = stream[pos : pos + n]
                reader.received_into(n)
                pos += n
            elif style == 1:
                buffer = bytearray(stream[pos : pos + size])
                reader.feed(buffer)
                buffer[:] = b"\xee" * len(buffer)
                pos += size
            else:
                reader.feed(stream[pos : pos + size])
                pos += size
            while (pdu := reader.next_pdu()) is not None:
                pdus.append(pdu)
    except PDUDecodeError as exc:
        return pdus, type(exc), 0
    return pdus, None, reader.buffered


def TestOneInput(data: bytes) -> None:
    """One fuzz iteration; anything but our own errors propagates as a crash."""
    try:
        pdu = decode_pdu(data)
    except PDUDecodeError:
        pass
    else:
        check_canonical(pdu)

    crc = zlib.crc32(data)
    sizes = [1 + ((crc >> shift) & 0x7F) for shift in (0, 7, 14, 21)]
    expected = frame_one_shot(data)
    got = frame_incrementally(data, sizes, (crc >> 30) % 3)
    if got != expected:
        raise AssertionError(f"reader {got!r} != one-shot {expected!r} (sizes {sizes})")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
