"""Tests of DIMSE message fragmentation into PDVs and reassembly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aionetdicom.dimse.command_set import (
    Command,
    CommandDecodeError,
    CommandField,
    encode_command,
    make_command,
)
from aionetdicom.dimse.fragments import AssembledMessage, MessageAssembler, fragment
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu.pdus import PDV

ECHO = make_command(CommandField.C_ECHO_RQ, MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1")
STORE = make_command(
    CommandField.C_STORE_RQ,
    has_dataset=True,
    MessageID=2,
    Priority=0,
    AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
    AffectedSOPInstanceUID="1.2.3.4.5",
)


def _pdvs(context_id: int, command: Command, dataset: bytes | None, size: int) -> list[PDV]:
    pdvs = list(fragment(context_id, True, encode_command(command), size))
    if dataset is not None:
        pdvs.extend(fragment(context_id, False, dataset, size))
    return pdvs


def _feed_all(assembler: MessageAssembler, pdvs: list[PDV]) -> list[AssembledMessage]:
    out = []
    for pdv in pdvs:
        message = assembler.feed(pdv)
        if message is not None:
            out.append(message)
    return out


# --------------------------------------------------------------------------- fragment


def test_fragment_sizes_and_flags() -> None:
    data = bytes(range(250))
    pdvs = list(fragment(3, False, data, 100))
    assert [len(p.data) for p in pdvs] == [100, 100, 50]
    assert [p.is_last for p in pdvs] == [False, False, True]
    assert all(p.context_id == 3 and not p.is_command for p in pdvs)
    assert b"".join(bytes(p.data) for p in pdvs) == data


def test_fragment_exact_multiple() -> None:
    pdvs = list(fragment(1, True, b"x" * 200, 100))
    assert [(len(p.data), p.is_last, p.is_command) for p in pdvs] == [
        (100, False, True),
        (100, True, True),
    ]


@pytest.mark.parametrize("limit", [0, -1, 1000])
def test_fragment_single_pdv(limit: int) -> None:
    (pdv,) = fragment(5, True, b"abc", limit)
    assert pdv.is_last
    assert bytes(pdv.data) == b"abc"


def test_fragment_empty_data_gives_one_last_pdv() -> None:
    (pdv,) = fragment(1, False, b"", 16)
    assert pdv.is_last
    assert len(pdv.data) == 0


def test_fragment_is_zero_copy() -> None:
    data = b"y" * 64
    for pdv in fragment(1, False, data, 10):
        assert isinstance(pdv.data, memoryview)
        assert pdv.data.obj is data


def test_fragment_casts_non_byte_memoryviews() -> None:
    view = memoryview(bytes(range(8))).cast("H")
    pdvs = list(fragment(1, False, view, 3))
    assert [len(p.data) for p in pdvs] == [3, 3, 2]
    assert b"".join(bytes(p.data) for p in pdvs) == bytes(range(8))


# --------------------------------------------------------------------------- assembler


def test_command_only_message() -> None:
    assembler = MessageAssembler()
    (message,) = _feed_all(assembler, _pdvs(1, ECHO, None, 16))
    assert message == AssembledMessage(1, ECHO, None)
    assert not assembler.in_progress


def test_command_and_dataset_over_many_fragments() -> None:
    dataset = bytes(range(256)) * 40
    pdvs = _pdvs(7, STORE, dataset, 33)
    assert len(pdvs) > 300
    assembler = MessageAssembler()
    results = [assembler.feed(p) for p in pdvs]
    assert results[:-1] == [None] * (len(pdvs) - 1)
    message = results[-1]
    assert message == AssembledMessage(7, STORE, dataset)
    assert message is not None
    assert type(message.dataset) is bytes


def test_empty_dataset() -> None:
    (message,) = _feed_all(MessageAssembler(), _pdvs(1, STORE, b"", 0))
    assert message.dataset == b""


def test_consecutive_messages_on_different_contexts() -> None:
    pdvs = _pdvs(1, STORE, b"abcd", 8) + _pdvs(3, ECHO, None, 8) + _pdvs(5, STORE, b"ef", 0)
    messages = _feed_all(MessageAssembler(), pdvs)
    assert [(m.context_id, m.dataset) for m in messages] == [(1, b"abcd"), (3, None), (5, b"ef")]


def test_data_before_any_command_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="before any command"):
        MessageAssembler().feed(PDV(1, False, True, b"data"))


def test_data_before_command_complete_is_an_error() -> None:
    assembler = MessageAssembler()
    encoded = encode_command(STORE)
    assembler.feed(PDV(1, True, False, encoded[:10]))
    with pytest.raises(ProtocolError, match="before its command set was complete"):
        assembler.feed(PDV(1, False, True, b"data"))
    assert not assembler.in_progress


def test_command_while_dataset_expected_is_an_error() -> None:
    assembler = MessageAssembler()
    assert assembler.feed(PDV(1, True, True, encode_command(STORE))) is None
    assert assembler.in_progress
    with pytest.raises(ProtocolError, match="data set of the previous command"):
        assembler.feed(PDV(1, True, True, encode_command(ECHO)))


@pytest.mark.parametrize("during", ["command", "dataset"])
def test_other_context_while_in_progress_is_an_error(during: str) -> None:
    assembler = MessageAssembler()
    encoded = encode_command(STORE)
    if during == "command":
        assembler.feed(PDV(1, True, False, encoded[:10]))
        intruder = PDV(3, True, True, encoded[10:])
    else:
        assembler.feed(PDV(1, True, True, encoded))
        assembler.feed(PDV(1, False, False, b"part"))
        intruder = PDV(3, False, True, b"rest")
    with pytest.raises(ProtocolError, match="context 3 arrived while a message on context 1"):
        assembler.feed(intruder)


def test_command_limit_is_enforced_before_buffering() -> None:
    assembler = MessageAssembler(max_command_length=100)
    assembler.feed(PDV(1, True, False, b"\x00" * 60))
    with pytest.raises(ProtocolError, match="command set exceeds the limit of 100 bytes"):
        assembler.feed(PDV(1, True, False, b"\x00" * 41))
    assert not assembler.in_progress


def test_default_command_limit_is_64_kib() -> None:
    assembler = MessageAssembler()
    assembler.feed(PDV(1, True, False, b"\x00" * 65536))
    with pytest.raises(ProtocolError, match="65536"):
        assembler.feed(PDV(1, True, False, b"\x00"))


def test_dataset_limit_is_enforced() -> None:
    assembler = MessageAssembler(max_dataset_length=10)
    assembler.feed(PDV(1, True, True, encode_command(STORE)))
    assembler.feed(PDV(1, False, False, b"12345"))
    with pytest.raises(ProtocolError, match="data set exceeds the limit of 10 bytes"):
        assembler.feed(PDV(1, False, False, b"123456"))
    assert not assembler.in_progress


def test_dataset_exactly_at_limit_is_accepted() -> None:
    assembler = MessageAssembler(max_dataset_length=10, max_command_length=200)
    (message,) = _feed_all(assembler, _pdvs(1, STORE, b"0123456789", 4))
    assert message.dataset == b"0123456789"


def test_command_without_dataset_type_is_an_error() -> None:
    command = Command(CommandField=0x0030, MessageID=1)
    with pytest.raises(ProtocolError, match="CommandDataSetType"):
        MessageAssembler().feed(PDV(1, True, True, encode_command(command)))


def test_bad_command_bytes_raise_decode_error_and_reset() -> None:
    assembler = MessageAssembler()
    with pytest.raises(CommandDecodeError):
        assembler.feed(PDV(1, True, True, b"\x08\x00\x16\x00\x02\x00\x00\x001\x00"))
    assert not assembler.in_progress
    (message,) = _feed_all(assembler, _pdvs(1, ECHO, None, 0))
    assert message.command == ECHO


def test_assembler_recovers_after_error() -> None:
    assembler = MessageAssembler()
    with pytest.raises(ProtocolError):
        assembler.feed(PDV(1, False, True, b"x"))
    (message,) = _feed_all(assembler, _pdvs(1, STORE, b"ok", 1))
    assert message.dataset == b"ok"


def test_writable_buffers_are_copied() -> None:
    assembler = MessageAssembler()
    assembler.feed(PDV(1, True, True, encode_command(STORE)))
    buffer = bytearray(b"before")
    assembler.feed(PDV(1, False, False, buffer))
    buffer[:] = b"AFTER!"
    writable = memoryview(bytearray(b"-tail"))
    message = assembler.feed(PDV(1, False, True, writable))
    writable[:] = b"XXXXX"
    assert message is not None
    assert message.dataset == b"before-tail"


def test_reset_drops_partial_message() -> None:
    assembler = MessageAssembler()
    assembler.feed(PDV(1, True, True, encode_command(STORE)))
    assembler.reset()
    assert not assembler.in_progress
    (message,) = _feed_all(assembler, _pdvs(2, ECHO, None, 0))
    assert message.context_id == 2


# --------------------------------------------------------------------------- properties

_commands = st.builds(
    make_command,
    st.sampled_from(list(CommandField)),
    has_dataset=st.booleans(),
    MessageID=st.integers(0, 0xFFFF),
    AffectedSOPClassUID=st.from_regex(r"\A1\.2(\.[0-9]{1,6}){0,8}\Z"),
)


def _cuts(draw: st.DrawFn, size: int) -> list[int]:
    points = draw(st.lists(st.integers(0, size), max_size=12))
    return sorted(set(points) | {0, size})


def _split(context_id: int, is_command: bool, data: bytes, cuts: list[int]) -> list[PDV]:
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)] or [b""]
    return [
        PDV(context_id, is_command, i == len(pieces) - 1, piece) for i, piece in enumerate(pieces)
    ]


@given(_commands, st.binary(max_size=2000), st.integers(1, 255), st.data())
def test_any_split_reassembles(
    command: Command, dataset: bytes, context_id: int, data: st.DataObject
) -> None:
    encoded = encode_command(command)
    pdvs = _split(context_id, True, encoded, data.draw(st.composite(_cuts)(len(encoded))))
    if command.has_dataset:
        pdvs += _split(context_id, False, dataset, data.draw(st.composite(_cuts)(len(dataset))))
    messages = _feed_all(MessageAssembler(), pdvs)
    expected = dataset if command.has_dataset else None
    assert messages == [AssembledMessage(context_id, command, expected)]


@given(_commands, st.binary(max_size=2000), st.integers(-1, 300))
def test_fragment_then_assemble_roundtrip(command: Command, dataset: bytes, size: int) -> None:
    messages = _feed_all(
        MessageAssembler(), _pdvs(9, command, dataset if command.has_dataset else None, size)
    )
    assert messages == [AssembledMessage(9, command, dataset if command.has_dataset else None)]
