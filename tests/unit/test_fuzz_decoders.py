"""Mutation fuzzing of the PDU, DIMSE and dataset decoders (issue 7, part 4).

test_pdu_properties.py already round-trips valid PDUs and throws random bytes at
``decode_pdu``. This file adds what it lacks: mutations aimed at every length field
of a valid encoding, bit flips, the rule that whatever decodes re-encodes to a fixed
point, a differential test of the incremental reader against one-shot decoding on
damaged streams, and the DIMSE side (command sets, PDV reassembly, the wire path,
inflate, datasets and file meta). Each decoder may only raise its documented error.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from aionetdicom.datasets import (
    DatasetError,
    FileMeta,
    decode_dataset,
    encode_dataset,
    inflate,
    read_file_meta,
)
from aionetdicom.dimse.command_set import (
    DATASET_PRESENT,
    NO_DATASET,
    Command,
    CommandDecodeError,
    decode_command,
    encode_command,
)
from aionetdicom.dimse.fragments import AssembledMessage, DatasetFragment, MessageAssembler
from aionetdicom.dimse.packing import pack_message
from aionetdicom.errors import PDUDecodeError, PDUTooLarge, ProtocolError, UnknownPDUType
from aionetdicom.pdu import PDU, PDV, PDataTF, PDUReader, decode_pdu, encode_pdu
from aionetdicom.pdu import reader as reader_module
from aionetdicom.pdu.constants import PDUType
from tests.unit.test_command_set import commands
from tests.unit.test_pdu_properties import all_pdus, associate_acs, associate_rqs
from tests.unit.test_pdu_vectors import ASSOCIATE_RQ_VECTOR

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
QUICK = settings(FUZZ, max_examples=60)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED_LE)

# ---------------------------------------------------------------------------------------
# layout walkers: where the length fields and the values of a valid encoding are
# ---------------------------------------------------------------------------------------

#: (offset, width in bytes) of one length field.
Field = tuple[int, int]


@dataclass
class Layout:
    """The length fields and the value byte spans (start, stop) of a valid encoding."""

    lengths: list[Field] = field(default_factory=list)
    values: list[tuple[int, int]] = field(default_factory=list)

    def value(self, start: int, stop: int) -> None:
        if stop > start:
            self.values.append((start, stop))


_TEXT_ITEMS = {0x10, 0x30, 0x40, 0x52, 0x55}  # context names, syntaxes, class UID, version
_U16_PREFIXED_SUB_ITEMS = {0x54, 0x56, 0x59}  # role selection, SOP ext., identity AC


def _u16_prefixed_run(data: bytes, start: int, end: int, layout: Layout) -> int:
    """Record one u16-prefixed value at ``start``; return where it ends."""
    if end - start < 2:
        return end
    layout.lengths.append((start, 2))
    stop = min(end, start + 2 + int.from_bytes(data[start : start + 2], "big"))
    layout.value(start + 2, stop)
    return stop


def _items(data: bytes, start: int, end: int, layout: Layout) -> None:
    """Record the items in ``data[start:end]``, recursively."""
    pos = start
    while end - pos >= 4:
        item_type = data[pos]
        layout.lengths.append((pos + 2, 2))
        body = pos + 4
        stop = min(end, body + int.from_bytes(data[pos + 2 : pos + 4], "big"))
        if item_type in (0x20, 0x21):  # presentation contexts: 4 fixed bytes, sub-items
            _items(data, body + 4, stop, layout)
        elif item_type == 0x50:  # user information: sub-items
            _items(data, body, stop, layout)
        elif item_type in _TEXT_ITEMS:
            layout.value(body, stop)
        elif item_type in _U16_PREFIXED_SUB_ITEMS:
            _u16_prefixed_run(data, body, stop, layout)
        elif item_type == 0x57:  # common extended: SOP, service, related block of UIDs
            at = _u16_prefixed_run(data, body, stop, layout)
            at = _u16_prefixed_run(data, at, stop, layout)
            block_end = _u16_prefixed_run(data, at, stop, layout)
            at += 2
            while at < block_end:
                at = _u16_prefixed_run(data, at, block_end, layout)
        elif item_type == 0x58:  # user identity RQ: type, flag, primary, secondary
            at = _u16_prefixed_run(data, body + 2, stop, layout)
            _u16_prefixed_run(data, at, stop, layout)
        pos = stop


def pdu_layout(data: bytes) -> Layout:
    """Every length field (PDU, item, sub-item, u16 prefix, PDV) and text value of a PDU."""
    layout = Layout([(2, 4)])
    if data[0] == PDUType.P_DATA_TF:
        pos = 6
        while len(data) - pos >= 4:
            layout.lengths.append((pos, 4))
            pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
    elif data[0] in (PDUType.A_ASSOCIATE_RQ, PDUType.A_ASSOCIATE_AC):
        layout.value(10, 26)  # called AE title
        layout.value(26, 42)  # calling AE title
        _items(data, 6 + 68, len(data), layout)
    return layout


def command_layout(data: bytes) -> Layout:
    """The 32-bit little-endian length and the value of every element of a command set."""
    layout = Layout()
    pos = 0
    while len(data) - pos >= 8:
        layout.lengths.append((pos + 4, 4))
        stop = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
        layout.value(pos + 8, stop)
        pos = stop
    return layout


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}


def file_meta_layout(data: bytes) -> Layout:
    """Length and value of every explicit-VR LE element after the 132-byte preamble."""
    layout = Layout()
    pos = 132
    while len(data) - pos >= 12 and data[pos : pos + 2] == b"\x02\x00":
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            layout.lengths.append((pos + 8, 4))
            start = pos + 12
            stop = start + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            layout.lengths.append((pos + 6, 2))
            start = pos + 8
            stop = start + int.from_bytes(data[pos + 6 : pos + 8], "little")
        layout.value(start, stop)
        pos = stop
    return layout


NO_LAYOUT = Layout()

# ---------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------


def _hostile_values(current: int, width: int) -> list[int]:
    top = (1 << (8 * width)) - 1
    values = {0, 1, 2, current - 2, current - 1, current + 1, current + 2, 2 * current}
    values |= {top, top - 1, top >> 1, (top >> 1) + 1}
    return sorted(v for v in values if 0 <= v <= top and v != current)


#: Bytes that text decoders trip over: NUL, space, backslash, DEL, high bit set.
_ODD_BYTES = st.sampled_from([0x00, 0x20, 0x5C, 0x7F, 0x80, 0xC4, 0xFF]) | st.integers(0, 255)


@st.composite
def mutate(
    draw: st.DrawFn,
    data: bytes,
    layout: Layout = NO_LAYOUT,
    byteorder: Literal["big", "little"] = "big",
    max_steps: int = 4,
) -> bytes:
    """``data`` damaged: a length field made hostile, values given odd bytes or blanked,
    then bytes flipped, set, inserted, deleted, duplicated or cut off. The layout is
    used first, while its offsets still hold."""
    out = bytearray(data)
    if layout.lengths and draw(st.booleans()):
        offset, width = draw(st.sampled_from(layout.lengths))
        current = int.from_bytes(out[offset : offset + width], byteorder)
        value = draw(st.sampled_from(_hostile_values(current, width)))
        out[offset : offset + width] = value.to_bytes(width, byteorder)
    if layout.values and draw(st.booleans()):
        start, stop = draw(st.sampled_from(layout.values))
        if draw(st.booleans()):
            out[start:stop] = draw(st.sampled_from([b" ", b"\x00"])) * (stop - start)
        else:
            out[draw(st.integers(start, stop - 1))] = draw(_ODD_BYTES)
    # Mostly one or two steps: a single flaw is what gets past the outer checks.
    steps = draw(st.sampled_from([1, 1, 1, 2, 2, max_steps])) - (out != data)
    for _ in range(steps):
        kind = draw(st.sampled_from(["flip", "flip", "set", "insert", "delete", "dup", "cut"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif kind == "dup":
            out[at:at] = out[draw(st.integers(0, len(out))) :][: draw(st.integers(1, 16))]
        elif kind == "cut":
            del out[at:]
    return bytes(out)


@st.composite
def mutated_pdus(draw: st.DrawFn) -> bytes:
    """One valid PDU encoding, mutated."""
    # Associations weigh more: most of the structure (and all text) is in them.
    pdu = draw(st.one_of(associate_rqs(4), associate_acs(4), all_pdus))
    encoded = encode_pdu(pdu)
    return draw(mutate(encoded, pdu_layout(encoded)))


@st.composite
def mutated_pdu_streams(draw: st.DrawFn) -> bytes:
    """A few valid PDU encodings back to back, mutated as a whole or one by one."""
    parts = [encode_pdu(pdu) for pdu in draw(st.lists(all_pdus, min_size=1, max_size=4))]
    if draw(st.booleans()):
        parts = [
            draw(mutate(part, pdu_layout(part), max_steps=2)) if draw(st.booleans()) else part
            for part in parts
        ]
        return b"".join(parts)
    stream = b"".join(parts)
    return draw(mutate(stream, pdu_layout(parts[0]), max_steps=3))


# ---------------------------------------------------------------------------------------
# PDU codec
# ---------------------------------------------------------------------------------------


def decode_or_error(data: bytes) -> PDU | PDUDecodeError:
    """decode_pdu's result or its PDUDecodeError; any other exception fails the test."""
    try:
        return decode_pdu(data)
    except PDUDecodeError as exc:
        error = exc
    assert error.abort_reason in {0, 1, 2, 4, 5, 6}
    assert str(error)
    return error


def assert_pdu_canonical(pdu: PDU) -> bytes:
    """What decoded must re-encode, decode to itself, and encode to a fixed point."""
    encoded = encode_pdu(pdu)
    again = decode_pdu(encoded)
    assert again == pdu
    assert encode_pdu(again) == encoded
    return encoded


@FUZZ
@given(mutated_pdus())
def test_mutated_pdu_decodes_to_error_or_canonical_pdu(data: bytes) -> None:
    result = decode_or_error(data)
    if not isinstance(result, PDUDecodeError):
        canonical = assert_pdu_canonical(result)
        # Re-encoding never grows a PDU beyond the parts the encoder always writes: a
        # user information item, a secondary identity field, a context's transfer syntax.
        assert len(canonical) <= len(data) + 4 * (
            1 + len(getattr(result, "presentation_contexts", ()))
        )


@FUZZ
@given(st.data())
def test_every_length_field_of_a_valid_pdu_is_checked(data: st.DataObject) -> None:
    encoded = encode_pdu(data.draw(all_pdus))
    fields = pdu_layout(encoded).lengths
    offset, width = data.draw(st.sampled_from(fields))
    current = int.from_bytes(encoded[offset : offset + width], "big")
    value = data.draw(st.sampled_from(_hostile_values(current, width)))
    broken = encoded[:offset] + value.to_bytes(width, "big") + encoded[offset + width :]
    result = decode_or_error(broken)
    if offset == 2:
        # The PDU length must match the bytes that follow, exactly.
        assert isinstance(result, PDUDecodeError)
    elif not isinstance(result, PDUDecodeError):
        assert_pdu_canonical(result)


def test_layout_walker_finds_every_nested_length_and_text() -> None:
    # PDU 1, application context 1, two contexts with 3 + 2 sub-items 7, user
    # information 1 with 9 sub-items, u16 prefixes: 2 roles, extended 1, common 5,
    # identity 2: 29 in all.
    layout = pdu_layout(ASSOCIATE_RQ_VECTOR)
    fields = layout.lengths
    assert len(fields) == len(set(fields)) == 29
    assert fields[:3] == [(2, 4), (6 + 68 + 2, 2), (6 + 68 + 25 + 2, 2)]
    assert all(offset + width <= len(ASSOCIATE_RQ_VECTOR) for offset, width in fields)
    pdata = pdu_layout(encode_pdu(PDataTF((PDV(1, True, False, b"ab"), PDV(1, True, True, b"")))))
    assert pdata.lengths == [(2, 4), (6, 4), (6 + 4 + 4, 4)]
    texts = {ASSOCIATE_RQ_VECTOR[a:b] for a, b in layout.values}
    assert {b"ANY-SCP         ", b"1.2.840.10008.3.1.1.1", b"AIONET_010", b"alice"} <= texts


# ---------------------------------------------------------------------------------------
# incremental reader against one-shot decoding
# ---------------------------------------------------------------------------------------

_KNOWN_TYPES = {int(t) for t in PDUType}
_FIXED4 = {int(PDUType.A_ASSOCIATE_RJ), int(PDUType.A_RELEASE_RQ)}
_FIXED4 |= {int(PDUType.A_RELEASE_RP), int(PDUType.A_ABORT)}


@dataclass
class Framed:
    """What a byte stream frames to: PDUs, then an error or the bytes left over."""

    pdus: list[PDU] = field(default_factory=list)
    error: PDUDecodeError | None = None
    left: int = 0


def frame_one_shot(stream: bytes, max_pdata: int, max_associate: int) -> Framed:
    """The reference framing: cut the stream at each header and call decode_pdu."""
    framed = Framed()
    pos = 0
    while len(stream) - pos >= 6:
        pdu_type, _, length = struct.unpack_from(">BBL", stream, pos)
        if pdu_type not in _KNOWN_TYPES:
            framed.error = UnknownPDUType("unknown")
            return framed
        if pdu_type == PDUType.P_DATA_TF:
            limit = max_pdata
        elif pdu_type in _FIXED4:
            limit = 4
        else:
            limit = max_associate
        if length > limit:
            framed.error = PDUTooLarge("too large")
            return framed
        if len(stream) - pos - 6 < length:
            break
        result = decode_or_error(stream[pos : pos + 6 + length])
        if isinstance(result, PDUDecodeError):
            framed.error = result
            return framed
        framed.pdus.append(result)
        pos += 6 + length
    framed.left = len(stream) - pos
    return framed


def _pieces(stream: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = index = 0
    while pos < len(stream):
        size = sizes[index % len(sizes)]
        yield stream[pos : pos + size]
        pos += size
        index += 1


def frame_incrementally(reader: PDUReader, stream: bytes, sizes: list[int], mode: str) -> Framed:
    """Feed ``stream`` to ``reader`` in reads of ``sizes``: as bytes, as reused writable
    buffers, or straight into :meth:`PDUReader.receive_buffer`."""
    framed = Framed()
    try:
        if mode == "into":
            pos = index = 0
            while pos < len(stream):
                size = sizes[index % len(sizes)]
                index += 1
                view = reader.receive_buffer()
                if view is None:
                    reader.feed(stream[pos : pos + size])
                    pos += size
                else:
                    n = min(size, len(view), len(stream) - pos)
                    view[:n] = stream[pos : pos + n]
                    reader.received_into(n)
                    pos += n
                while (pdu := reader.next_pdu()) is not None:
                    framed.pdus.append(pdu)
        else:
            for piece in _pieces(stream, sizes):
                if mode == "writable":
                    buffer = bytearray(piece)
                    reader.feed(buffer)
                    buffer[:] = b"\xee" * len(buffer)  # the caller reuses its buffer
                else:
                    reader.feed(piece)
                while (pdu := reader.next_pdu()) is not None:
                    framed.pdus.append(pdu)
    except PDUDecodeError as exc:
        framed.error = exc
    framed.left = reader.buffered
    return framed


@FUZZ
@given(
    mutated_pdu_streams(),
    st.lists(st.integers(1, 300), min_size=1, max_size=8),
    st.sampled_from(["bytes", "writable", "into"]),
    st.sampled_from([256, 1 << 16, 1 << 16]),
    st.sampled_from([1, 7, reader_module.BODY_PREALLOCATE_LIMIT]),
)
def test_reader_frames_damaged_streams_like_one_shot_decoding(
    stream: bytes, sizes: list[int], mode: str, limit: int, prealloc: int
) -> None:
    expected = frame_one_shot(stream, limit, limit)
    reader = PDUReader(max_pdata_length=limit, max_associate_length=limit)
    with mock.patch.object(reader_module, "BODY_PREALLOCATE_LIMIT", prealloc):
        got = frame_incrementally(reader, stream, sizes, mode)
    assert got.pdus == expected.pdus
    assert type(got.error) is type(expected.error)
    if expected.error is None:
        assert got.left == expected.left
        assert reader.in_pdu is (expected.left > 0)
    else:
        assert got.error is not None
        assert got.error.abort_reason == expected.error.abort_reason


# ---------------------------------------------------------------------------------------
# DIMSE command set
# ---------------------------------------------------------------------------------------


def decode_command_or_error(data: bytes) -> Command | CommandDecodeError:
    """decode_command's result or its CommandDecodeError; anything else fails the test."""
    try:
        return decode_command(data)
    except CommandDecodeError as exc:
        error = exc
    assert str(error)
    return error


def assert_command_canonical(cmd: Command) -> bytes:
    """A decoded command re-encodes, decodes to itself, and encodes to a fixed point."""
    encoded = encode_command(cmd)
    again = decode_command(encoded)
    assert again == cmd
    assert encode_command(again) == encoded
    assert len(encoded) % 2 == 0
    return encoded


def _elements(encoded: bytes) -> list[bytes]:
    """The raw elements of a valid command encoding."""
    out = []
    pos = 0
    while pos < len(encoded):
        length = int.from_bytes(encoded[pos + 4 : pos + 8], "little")
        out.append(encoded[pos : pos + 8 + length])
        pos += 8 + length
    return out


@st.composite
def mutated_commands(draw: st.DrawFn) -> bytes:
    encoded = encode_command(draw(commands()))
    return draw(mutate(encoded, command_layout(encoded), byteorder="little"))


@FUZZ
@given(mutated_commands())
def test_mutated_command_decodes_to_error_or_canonical_command(data: bytes) -> None:
    result = decode_command_or_error(data)
    if not isinstance(result, CommandDecodeError):
        assert len(assert_command_canonical(result)) <= len(data) + 12 + 2 * len(result)


@FUZZ
@given(commands(), st.data())
def test_command_element_order_does_not_matter(cmd: Command, data: st.DataObject) -> None:
    elements = _elements(encode_command(cmd))
    shuffled = data.draw(st.permutations(elements))
    assert decode_command(b"".join(shuffled)) == cmd
    without_group_length = [e for e in shuffled if e[2:4] != b"\x00\x00"]
    assert decode_command(b"".join(without_group_length)) == cmd
    if elements:
        twice = data.draw(st.sampled_from(elements))
        result = decode_command_or_error(b"".join(shuffled) + twice)
        assert isinstance(result, CommandDecodeError)


@QUICK
@given(st.binary(max_size=40).filter(lambda b: len(b) % 2 == 0), st.sampled_from([0x0902, 0x0600]))
def test_any_text_value_decodes_to_an_encodable_command(value: bytes, element: int) -> None:
    # ErrorComment (LO) and MoveDestination (AE) take the bytes a peer sends; a
    # decoded command must still encode (to answer, log or forward it).
    data = struct.pack("<HHL", 0, element, len(value)) + value
    cmd = decode_command(data)
    assert_command_canonical(cmd)
    for text in cmd.values():
        assert isinstance(text, str)
        assert text.isascii()


# ---------------------------------------------------------------------------------------
# PDV reassembly
# ---------------------------------------------------------------------------------------


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[int, Command, bytes | None]:
    """(context ID, command with CommandDataSetType, data set or None)."""
    cmd = draw(commands())
    has_dataset = draw(st.booleans())
    cmd["CommandDataSetType"] = (
        draw(st.sampled_from([DATASET_PRESENT, 0x0000, 0x0102])) if has_dataset else NO_DATASET
    )
    dataset = draw(st.binary(max_size=300)) if has_dataset else None
    return draw(st.sampled_from([1, 3, 5])), cmd, dataset


def _cut(draw: st.DrawFn, context_id: int, is_command: bool, data: bytes) -> list[PDV]:
    points = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=4))))
    edges = [0, *(p for p in points if 0 < p < len(data)), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(edges)] or [b""]
    return [PDV(context_id, is_command, i == len(pieces) - 1, p) for i, p in enumerate(pieces)]


@st.composite
def message_pdvs(draw: st.DrawFn) -> list[PDV]:
    """The PDVs of one message, valid or with one thing broken."""
    context_id, cmd, dataset = draw(valid_messages())
    pdvs = _cut(draw, context_id, True, encode_command(cmd))
    if dataset is not None:
        pdvs += _cut(draw, context_id, False, dataset)
    damage = draw(st.sampled_from(["none", "none", "flags", "context", "drop", "dup", "bytes"]))
    at = draw(st.integers(0, len(pdvs) - 1))
    pdv = pdvs[at]
    if damage == "flags":
        control = draw(st.integers(0, 3))
        pdvs[at] = PDV(pdv.context_id, bool(control & 1), bool(control & 2), pdv.data)
    elif damage == "context":
        pdvs[at] = PDV(pdv.context_id + 2, pdv.is_command, pdv.is_last, pdv.data)
    elif damage == "drop":
        del pdvs[at]
    elif damage == "dup":
        pdvs.insert(at, pdv)
    elif damage == "bytes":
        raw = bytes(pdv.data)
        pdvs[at] = PDV(pdv.context_id, pdv.is_command, pdv.is_last, draw(mutate(raw)))
    return pdvs


@dataclass
class Tracker:
    """The test's own account of which PDV bytes make up the message in progress."""

    command: list[bytes] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    streaming: bool = False
    streamed: int = 0

    def clear(self) -> None:
        self.command, self.data, self.streaming, self.streamed = [], [], False, 0


def _check_feed(
    assembler: MessageAssembler, tracker: Tracker, pdv: PDV, limits: tuple[int, int, int]
) -> AssembledMessage | DatasetFragment | None:
    """Feed one PDV and check the outcome against the tracker; return the outcome."""
    max_command, max_dataset, max_streamed = limits
    (tracker.command if pdv.is_command else tracker.data).append(bytes(pdv.data))
    try:
        out = assembler.feed(pdv)
    except ProtocolError:
        assert not assembler.in_progress  # the partial message is dropped
        tracker.clear()
        return None
    if isinstance(out, DatasetFragment):
        assert tracker.streaming
        assert bytes(out.data) == bytes(pdv.data)
        tracker.streamed += len(out.data)
        assert tracker.streamed <= max_streamed
        if out.is_last:
            tracker.clear()
        return out
    if out is None:
        assert assembler.in_progress
        return None
    raw_command = b"".join(tracker.command)
    assert len(raw_command) <= max_command
    assert out.command == decode_command(raw_command)
    assert out.context_id == pdv.context_id
    if out.streamed:
        assert out.dataset is None
        assert out.command.has_dataset
        assert not tracker.data
        tracker.clear()
        tracker.streaming = True
        return out
    if out.dataset is None:
        assert not out.command.has_dataset
        assert not tracker.data
    else:
        assert out.command.has_dataset
        assert out.dataset == b"".join(tracker.data)
        assert len(out.dataset) <= max_dataset
    assert not assembler.in_progress
    tracker.clear()
    return out


@FUZZ
@given(
    st.lists(message_pdvs(), min_size=1, max_size=5),
    valid_messages(),
    st.sampled_from([(200, 300, 400), (1 << 16, 1 << 16, 1 << 16)]),
    st.sampled_from(["never", "always", "odd-ids"]),
)
def test_reassembly_of_damaged_pdv_sequences(
    sequences: list[list[PDV]],
    final: tuple[int, Command, bytes | None],
    limits: tuple[int, int, int],
    stream: str,
) -> None:
    decide: Callable[[Command], bool] | None = {
        "never": None,
        "always": lambda cmd: True,
        "odd-ids": lambda cmd: bool(cmd.get("MessageID", 0) & 1),
    }[stream]
    max_command, max_dataset, max_streamed = limits
    assembler = MessageAssembler(
        max_command_length=max_command,
        max_dataset_length=max_dataset,
        max_streamed_dataset_length=max_streamed,
        stream_dataset=decide,
    )
    tracker = Tracker()
    for pdv in (p for sequence in sequences for p in sequence):
        _check_feed(assembler, tracker, pdv, limits)
    # Whatever came before, a reset assembler with room takes the next valid message.
    assembler.reset()
    tracker.clear()
    assembler.max_command_length = assembler.max_dataset_length = 1 << 20
    assembler.max_streamed_dataset_length = 1 << 20
    context_id, cmd, dataset = final
    first = assembler.feed(PDV(context_id, True, True, encode_command(cmd)))
    if dataset is None:
        assert first == AssembledMessage(context_id, cmd, None)
    elif decide is not None and decide(cmd):
        assert first == AssembledMessage(context_id, cmd, None, streamed=True)
        assert assembler.feed(PDV(context_id, False, True, dataset)) == DatasetFragment(
            dataset, True
        )
    else:
        assert first is None
        last = assembler.feed(PDV(context_id, False, True, dataset))
        assert last == AssembledMessage(context_id, cmd, dataset)
    assert not assembler.in_progress


# ---------------------------------------------------------------------------------------
# the wire path: pack_message -> bytes -> PDUReader -> MessageAssembler
# ---------------------------------------------------------------------------------------


@FUZZ
@given(valid_messages(), st.integers(7, 200), st.data())
def test_packed_messages_survive_or_fail_cleanly_on_the_wire(
    message: tuple[int, Command, bytes | None], max_pdu_body: int, data: st.DataObject
) -> None:
    context_id, cmd, dataset = message
    pdus = [
        b"".join(bytes(b) for b in pdu)
        for pdu in pack_message(context_id, encode_command(cmd), dataset, max_pdu_body)
    ]
    for pdu in pdus:
        assert len(pdu) - 6 <= max_pdu_body
    wire = b"".join(pdus)
    damaged = data.draw(st.booleans())
    if damaged:
        wire = data.draw(mutate(wire, pdu_layout(pdus[0])))
    reader = PDUReader(max_pdata_length=max_pdu_body + 64)
    assembler = MessageAssembler()
    messages: list[AssembledMessage] = []
    sizes = data.draw(st.lists(st.integers(1, 100), min_size=1, max_size=4))
    try:
        for piece in _pieces(wire, sizes):
            reader.feed(piece)
            while (pdu := reader.next_pdu()) is not None:
                if not isinstance(pdu, PDataTF):
                    continue
                for pdv in pdu.pdvs:
                    out = assembler.feed(pdv)
                    assert not isinstance(out, DatasetFragment)
                    if out is not None:
                        messages.append(out)
    except ProtocolError:  # PDUDecodeError, CommandDecodeError, reassembly errors
        failed = True
    else:
        failed = False
    assert damaged or not failed
    if not damaged:
        assert messages == [AssembledMessage(context_id, cmd, dataset)]
        assert reader.buffered == 0


# ---------------------------------------------------------------------------------------
# datasets: inflate, decode_dataset, read_file_meta
# ---------------------------------------------------------------------------------------


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def inflate_or_error(data: bytes, limit: int | None) -> bytes | DatasetError:
    try:
        out = inflate(data, limit)
    except DatasetError as exc:
        return exc
    assert limit is None or len(out) <= limit
    return out


@FUZZ
@given(st.binary(max_size=2000), st.none() | st.integers(0, 3000), st.data())
def test_inflate_damaged_and_bounded(
    original: bytes, limit: int | None, data: st.DataObject
) -> None:
    deflated = _deflate(original)
    result = inflate_or_error(deflated, limit)
    if limit is None or len(original) <= limit:
        assert result == original
    else:
        assert isinstance(result, DatasetError)
    # A deflate stream cut short is corrupt, never a shorter data set.
    cut = data.draw(st.integers(0, len(deflated) - 1))
    assert isinstance(inflate_or_error(deflated[:cut], limit), DatasetError)
    damaged = data.draw(mutate(deflated))
    result = inflate_or_error(damaged, limit)
    if not isinstance(result, DatasetError):
        assert inflate(_deflate(result)) == result


_NAMES = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ^ ", min_size=1, max_size=20).map(str.strip)
_UIDS = st.lists(st.integers(1, 99999), min_size=2, max_size=6).map(
    lambda parts: "1.2." + ".".join(map(str, parts))
)


@st.composite
def small_datasets(draw: st.DrawFn) -> Dataset:
    ds = Dataset()
    ds.PatientName = draw(_NAMES)
    ds.PatientID = draw(_NAMES)
    ds.StudyInstanceUID = draw(_UIDS)
    ds.Rows = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        item = Dataset()
        item.CodeValue = draw(_NAMES) or "X"
        ds.ProcedureCodeSequence = [item]
    return ds


@QUICK
@given(small_datasets(), st.sampled_from(NATIVE_SYNTAXES), st.data())
def test_dataset_round_trip_and_damaged_encodings(
    ds: Dataset, syntax: str, data: st.DataObject
) -> None:
    encoded = encode_dataset(ds, syntax)
    decoded = decode_dataset(encoded, syntax)
    assert encode_dataset(decoded, syntax) == encoded
    assert decoded.StudyInstanceUID == ds.StudyInstanceUID
    assert decoded.Rows == ds.Rows
    damaged = data.draw(mutate(encoded))
    with contextlib.suppress(DatasetError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the damage it reads past
        decode_dataset(damaged, syntax, inflate_limit=1 << 16)


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def _uid(text: str) -> bytes:
    raw = text.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


@st.composite
def part10_files(draw: st.DrawFn) -> tuple[bytes, FileMeta]:
    """A DICOM file header (three UIDs) followed by some data set bytes."""
    syntax = draw(st.sampled_from(NATIVE_SYNTAXES))
    sop_class, sop_instance = draw(_UIDS), draw(_UIDS)
    elements = (
        _element(0x0001, b"OB", b"\x00\x01")
        + _element(0x0002, b"UI", _uid(sop_class))
        + _element(0x0003, b"UI", _uid(sop_instance))
        + _element(0x0010, b"UI", _uid(syntax))
    )
    meta = _element(0x0000, b"UL", struct.pack("<L", len(elements))) + elements
    body = draw(st.binary(max_size=40))
    data = bytes(128) + b"DICM" + meta + body
    return data, FileMeta(syntax, sop_class, sop_instance, 132 + len(meta), len(data))


@FUZZ
@given(part10_files(), st.data())
def test_read_file_meta_damaged_headers(valid: tuple[bytes, FileMeta], data: st.DataObject) -> None:
    raw, expected = valid
    assert read_file_meta(io.BytesIO(raw)) == expected
    damaged = data.draw(mutate(raw, file_meta_layout(raw), byteorder="little"))
    try:
        meta = read_file_meta(io.BytesIO(damaged))
    except DatasetError:
        return
    assert 132 <= meta.dataset_offset <= meta.file_size == len(damaged)
    # The UIDs go into presentation contexts and commands: they must be sendable.
    for uid in (meta.transfer_syntax, meta.sop_class_uid, meta.sop_instance_uid):
        assert uid.isascii()
