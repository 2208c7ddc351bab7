"""libFuzzer target (atheris): the DIMSE decoders and the data set helpers.

The first input byte picks the decoder, the rest is its input:

0. ``decode_command``: a Command or CommandDecodeError; a decoded command
   re-encodes, decodes to itself and encodes to a fixed point.
1. ``MessageAssembler`` fed PDVs written as records ``control, length, data``
   (control: bit 0 command, bit 1 last, bits 2-3 context 1/3/5/7, bit 4 streams
   the data set of the current message): only ProtocolError, limits hold, a failed
   assembler holds nothing, and every message matches the PDV bytes it came from.
2. The wire path: a byte stream through ``PDUReader`` and ``MessageAssembler``:
   only ProtocolError (PDUDecodeError, CommandDecodeError, reassembly errors).
3. ``inflate`` with a limit: bytes no longer than the limit, or DatasetError.
4. ``decode_dataset`` (second byte picks the transfer syntax): a Dataset or
   DatasetError.
5. ``read_file_meta``: a FileMeta with ASCII UIDs and sane offsets, or DatasetError.

Run through fuzz/run.sh; a single input replays with ``python fuzz/fuzz_dimse.py FILE``.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import atheris

with atheris.instrument_imports(include=["aionetdicom"]):
    from aionetdicom.datasets import (
        DatasetError,
        decode_dataset,
        inflate,
        read_file_meta,
    )
    from aionetdicom.dimse.command_set import CommandDecodeError, decode_command, encode_command
    from aionetdicom.dimse.fragments import (
        AssembledMessage,
        DatasetFragment,
        MessageAssembler,
    )
    from aionetdicom.errors import ProtocolError
    from aionetdicom.pdu import PDV, PDataTF, PDUReader

MAX_COMMAND = 1024
MAX_DATASET = 4096
MAX_STREAMED = 8192
INFLATE_LIMIT = 1 << 16
SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
)


def check_command(data: bytes) -> None:
    try:
        cmd = decode_command(data)
    except CommandDecodeError:
        return
    encoded = encode_command(cmd)
    again = decode_command(encoded)
    if again != cmd or encode_command(again) != encoded:
        raise AssertionError(f"command does not re-encode canonically: {cmd!r} / {again!r}")


def _records(data: bytes) -> list[tuple[PDV, bool]]:
    """PDVs (and their 'stream this data set' bit) written as control, length, data."""
    out = []
    pos = 0
    while len(data) - pos >= 2:
        control, length = data[pos], data[pos + 1]
        chunk = data[pos + 2 : pos + 2 + length]
        pos += 2 + length
        context_id = 1 + 2 * ((control >> 2) & 3)
        pdv = PDV(context_id, bool(control & 1), bool(control & 2), chunk)
        out.append((pdv, bool(control & 16)))
    return out


def check_assembler(data: bytes) -> None:
    wants_stream = [False]
    assembler = MessageAssembler(
        max_command_length=MAX_COMMAND,
        max_dataset_length=MAX_DATASET,
        max_streamed_dataset_length=MAX_STREAMED,
        stream_dataset=lambda command: wants_stream[0],
    )
    command: list[bytes] = []
    dataset: list[bytes] = []
    streamed = 0
    for pdv, stream in _records(data):
        wants_stream[0] = stream
        (command if pdv.is_command else dataset).append(bytes(pdv.data))
        try:
            out = assembler.feed(pdv)
        except ProtocolError:
            if assembler.in_progress:
                raise AssertionError("a failed assembler still holds a message") from None
            command, dataset, streamed = [], [], 0
            continue
        if isinstance(out, DatasetFragment):
            streamed += len(out.data)
            if streamed > MAX_STREAMED or bytes(out.data) != bytes(pdv.data):
                raise AssertionError("streamed fragment over the limit or altered")
            if out.is_last:
                command, dataset, streamed = [], [], 0
        elif isinstance(out, AssembledMessage):
            raw = b"".join(command)
            if len(raw) > MAX_COMMAND or out.command != decode_command(raw):
                raise AssertionError("assembled command differs from its PDVs")
            if out.streamed:
                command, dataset = [], []
                continue
            if (out.dataset or b"") != b"".join(dataset) or len(out.dataset or b"") > MAX_DATASET:
                raise AssertionError("assembled data set differs from its PDVs")
            command, dataset = [], []


def check_wire(data: bytes) -> None:
    reader = PDUReader(max_pdata_length=1 << 16, max_associate_length=1 << 16)
    assembler = MessageAssembler(max_command_length=MAX_COMMAND, max_dataset_length=MAX_DATASET)
    try:
        reader.feed(data)
        while (pdu := reader.next_pdu()) is not None:
            if isinstance(pdu, PDataTF):
                for pdv in pdu.pdvs:
                    assembler.feed(pdv)
    except ProtocolError:
        pass


def check_inflate(data: bytes) -> None:
    try:
        out = inflate(data, INFLATE_LIMIT)
    except DatasetError:
        return
    if len(out) > INFLATE_LIMIT:
        raise AssertionError(f"inflate gave {len(out)} bytes, above its limit")


def check_dataset(data: bytes) -> None:
    if not data:
        return
    syntax = SYNTAXES[data[0] % len(SYNTAXES)]
    with contextlib.suppress(DatasetError):
        decode_dataset(data[1:], syntax, inflate_limit=INFLATE_LIMIT)


def check_file_meta(data: bytes) -> None:
    try:
        meta = read_file_meta(io.BytesIO(data))
    except DatasetError:
        return
    if not 132 <= meta.dataset_offset <= meta.file_size == len(data):
        raise AssertionError(f"bad offsets in {meta!r}")
    for uid in (meta.transfer_syntax, meta.sop_class_uid, meta.sop_instance_uid):
        if not uid.isascii():
            raise AssertionError(f"non-ASCII UID in {meta!r}")


CHECKS = (check_command, check_assembler, check_wire, check_inflate, check_dataset, check_file_meta)


def TestOneInput(data: bytes) -> None:
    """One fuzz iteration; anything but our own errors propagates as a crash."""
    if data:
        CHECKS[data[0] % len(CHECKS)](data[1:])


def main() -> None:
    warnings.simplefilter("ignore")  # pydicom warns about odd data sets; not a finding
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
