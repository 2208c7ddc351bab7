"""Tests of :class:`StreamPacker`: a data set fed in chunks, packed into P-DATA-TF PDUs."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aionetdicom.dimse.command_set import CommandField, encode_command, make_command
from aionetdicom.dimse.fragments import AssembledMessage, MessageAssembler
from aionetdicom.dimse.packing import PDV_OVERHEAD, LengthMismatch, StreamPacker
from aionetdicom.pdu.codec import decode_pdu
from aionetdicom.pdu.pdus import PDV, Buffer, PDataTF

STORE = encode_command(
    make_command(
        CommandField.C_STORE_RQ,
        has_dataset=True,
        MessageID=7,
        Priority=0,
        AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.7",
        AffectedSOPInstanceUID="1.2.3.4.5",
    )
)


def _decode(pdus: Iterable[list[Buffer]], max_pdu_body: int) -> list[PDV]:
    """Decode encoded PDUs back to PDVs, checking each against ``max_pdu_body``."""
    pdvs: list[PDV] = []
    for pdu in pdus:
        wire = b"".join(bytes(part) for part in pdu)
        assert len(wire) - 6 <= max_pdu_body
        decoded = decode_pdu(wire)
        assert isinstance(decoded, PDataTF)
        pdvs.extend(decoded.pdvs)
    return pdvs


def _pack(data: bytes, cuts: list[int], max_pdu_body: int, context_id: int = 3) -> list[PDV]:
    packer = StreamPacker(context_id, max_pdu_body, len(data))
    pdus = list(packer.command(STORE))
    start = 0
    for end in [*sorted(cuts), len(data)]:
        pdus.extend(packer.feed(data[start:end]))
        start = end
    pdus.extend(packer.finish())
    return _decode(pdus, max_pdu_body)


def _assemble(pdvs: list[PDV]) -> AssembledMessage:
    assembler = MessageAssembler()
    messages = [message for pdv in pdvs if (message := assembler.feed(pdv)) is not None]
    assert len(messages) == 1
    assert not assembler.in_progress
    return messages[0]


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000),
    max_pdu_body=st.integers(min_value=PDV_OVERHEAD + 1, max_value=600),
    cut_fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=12),
)
def test_random_chunkings_reassemble(
    data: bytes, max_pdu_body: int, cut_fractions: list[float]
) -> None:
    cuts = [int(f * len(data)) for f in cut_fractions]  # empty chunks included
    pdvs = _pack(data, cuts, max_pdu_body)
    limit = max_pdu_body - PDV_OVERHEAD
    assert all(len(pdv.data) <= limit for pdv in pdvs)
    assert all(pdv.context_id == 3 for pdv in pdvs)
    commands = [pdv for pdv in pdvs if pdv.is_command]
    data_pdvs = [pdv for pdv in pdvs if not pdv.is_command]
    assert pdvs[: len(commands)] == commands  # the command set comes first
    assert [pdv.is_last for pdv in commands] == [False] * (len(commands) - 1) + [True]
    assert [pdv.is_last for pdv in data_pdvs] == [False] * (len(data_pdvs) - 1) + [True]
    # Every data PDV but the last is full: the fewest PDUs for the limit.
    assert all(len(pdv.data) == limit for pdv in data_pdvs[:-1])
    assert len(data_pdvs) == max(1, -(-len(data) // limit))
    message = _assemble(pdvs)
    assert message.context_id == 3
    assert message.command["MessageID"] == 7
    assert message.dataset == data


def test_empty_dataset_is_one_empty_last_pdv() -> None:
    pdvs = _pack(b"", [], 100)
    data_pdvs = [pdv for pdv in pdvs if not pdv.is_command]
    assert [(bytes(pdv.data), pdv.is_last) for pdv in data_pdvs] == [(b"", True)]
    assert _assemble(pdvs).dataset == b""


def test_length_a_multiple_of_the_limit_ends_in_feed() -> None:
    packer = StreamPacker(1, 16, 20)  # 10 bytes of data per PDV
    list(packer.command(STORE))
    first = _decode(packer.feed(b"a" * 15), 16)
    second = _decode(packer.feed(b"b" * 5), 16)
    assert [(bytes(p.data), p.is_last) for p in first] == [(b"a" * 10, False)]
    assert [(bytes(p.data), p.is_last) for p in second] == [(b"aaaaabbbbb", True)]
    assert packer.finish() == []


def test_chunks_are_not_copied() -> None:
    chunk = bytes(range(40))
    packer = StreamPacker(1, 16, 40)
    (pdu, *_) = packer.feed(chunk)
    (data,) = pdu[2:]
    assert isinstance(data, memoryview)
    assert data.obj is chunk


def test_too_much_data_raises() -> None:
    packer = StreamPacker(1, 100, 10)
    packer.feed(b"x" * 6)
    with pytest.raises(LengthMismatch, match="longer than the 10 bytes announced"):
        packer.feed(b"x" * 5)


def test_too_little_data_raises_on_finish() -> None:
    packer = StreamPacker(1, 100, 10)
    packer.feed(b"x" * 9)
    with pytest.raises(LengthMismatch, match="ended after 9 of the 10 bytes"):
        packer.finish()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no room"):
        StreamPacker(1, PDV_OVERHEAD, 10)
    with pytest.raises(ValueError, match="negative"):
        StreamPacker(1, 100, -1)
