"""The nesting-depth guard run before pydicom decodes a received data set, and the
maximum-length check of association negotiation (sans-I/O, issue 7)."""

from __future__ import annotations

import struct
import time

import pytest

from aionetdicom.acse.acceptor import validate_contexts
from aionetdicom.acse.requestor import interpret_acceptance
from aionetdicom.dataset_prefix import MAX_NESTING, check_nesting
from aionetdicom.datasets import DatasetError, decode_dataset
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu import (
    AAssociateAC,
    AAssociateRQ,
    PresentationContextAC,
    PresentationContextRQ,
    UserInformation,
)

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
UNDEFINED = 0xFFFFFFFF


def _element(tag: int, vr: bytes | None, length: int, order: str = "<") -> bytes:
    """An element header: Explicit VR with ``vr`` (12 bytes for SQ/UN/OB), else 8 bytes."""
    group, element = tag >> 16, tag & 0xFFFF
    if vr is None:
        return struct.pack(f"{order}HHL", group, element, length)
    if vr in (b"SQ", b"UN", b"OB"):
        return struct.pack(f"{order}HH2sHL", group, element, vr, 0, length)
    return struct.pack(f"{order}HH2sH", group, element, vr, length)


def _item(length: int, order: str = "<") -> bytes:
    return _element(0xFFFEE000, None, length, order)


def _end(tag: int, order: str = "<") -> bytes:
    return _element(tag, None, 0, order)


def nested(
    depth: int,
    *,
    implicit: bool = False,
    defined: bool = True,
    order: str = "<",
    vr: bytes = b"SQ",
) -> bytes:
    """Content Sequence (0040,A730) items nested ``depth`` deep around a Patient Name."""
    inner = _element(0x00100010, None if implicit else b"PN", 2, order) + b"AB"
    sequence_vr = None if implicit else vr
    for _ in range(depth):
        if defined:
            item = _item(len(inner), order) + inner
            inner = _element(0x0040A730, sequence_vr, len(item), order) + item
        else:
            item = _item(UNDEFINED, order) + inner + _end(0xFFFEE00D, order)
            inner = (
                _element(0x0040A730, sequence_vr, UNDEFINED, order) + item + _end(0xFFFEE0DD, order)
            )
    return inner


@pytest.mark.parametrize(
    ("implicit", "defined", "order"),
    [
        (False, False, "<"),
        (False, True, "<"),
        (False, False, ">"),
        (False, True, ">"),
        (True, False, "<"),
        (True, True, "<"),
    ],
    ids=[
        "explicit-le-undefined",
        "explicit-le-defined",
        "explicit-be-undefined",
        "explicit-be-defined",
        "implicit-undefined",
        "implicit-defined",
    ],
)
def test_depth_up_to_the_limit_passes_and_one_more_fails(
    implicit: bool, defined: bool, order: str
) -> None:
    little = order == "<"
    deepest = nested(MAX_NESTING, implicit=implicit, defined=defined, order=order)
    check_nesting(deepest, implicit=implicit, little=little)
    too_deep = nested(MAX_NESTING + 1, implicit=implicit, defined=defined, order=order)
    with pytest.raises(DatasetError, match=f"nested deeper than {MAX_NESTING}"):
        check_nesting(too_deep, implicit=implicit, little=little)


@pytest.mark.parametrize("defined", [False, True], ids=["undefined", "defined"])
def test_un_sequences_are_walked_as_implicit_little_endian(defined: bool) -> None:
    """Explicit VR UN holding a sequence: its items are Implicit VR LE (PS3.5 6.2.2)."""
    inner = nested(MAX_NESTING, implicit=True, defined=defined)
    length = len(inner) + 8 if defined else UNDEFINED
    item = _item(len(inner) if defined else UNDEFINED) + inner
    if not defined:
        item += _end(0xFFFEE00D)
    un = _element(0x0040A730, b"UN", length if defined else UNDEFINED) + item
    if not defined:
        un += _end(0xFFFEE0DD)
    with pytest.raises(DatasetError, match="nested deeper"):
        check_nesting(un, implicit=False, little=True)


@pytest.mark.parametrize(("declared", "actual"), [(False, True), (True, False)])
def test_the_vr_pydicom_would_detect_is_followed(declared: bool, actual: bool) -> None:
    """A data set encoded with the other VR explicitness than the transfer syntax says:
    pydicom detects it from the first element, and so does the guard."""
    with pytest.raises(DatasetError, match="nested deeper"):
        check_nesting(nested(MAX_NESTING + 1, implicit=actual), implicit=declared, little=True)


def test_malformed_structure_is_left_to_the_decoder() -> None:
    """Truncated or garbage data is not the guard's business: it returns quietly."""
    check_nesting(nested(10)[:-3], implicit=False, little=True)
    check_nesting(bytes(range(256)) * 4, implicit=False, little=True)
    check_nesting(b"\xfe\xff\x00\xe0" + b"\xff" * 40, implicit=True, little=True)
    check_nesting(b"", implicit=False, little=True)


def test_a_stray_item_delimiter_ends_the_walk_as_it_ends_pydicom_s_read() -> None:
    data = _element(0x00100010, b"PN", 2) + b"AB" + _end(0xFFFEE00D) + nested(MAX_NESTING + 5)
    check_nesting(data, implicit=False, little=True)
    assert list(decode_dataset(data, EXPLICIT).keys()) == [0x00100010]


def test_a_large_flat_data_set_is_walked_in_linear_time() -> None:
    element = _element(0x00100020, b"LO", 8) + b"ID123456"
    flat = element * 200_000  # 3.2 MB of small elements
    started = time.perf_counter()
    check_nesting(flat, implicit=False, little=True)
    assert time.perf_counter() - started < 10  # an upper bound only: no quadratic walk


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_decode_refuses_deep_nesting_before_pydicom(syntax: str) -> None:
    implicit = syntax == IMPLICIT
    assert len(decode_dataset(nested(MAX_NESTING, implicit=implicit), syntax)) == 1
    with pytest.raises(DatasetError, match="nested deeper"):
        decode_dataset(nested(300, implicit=implicit), syntax)


# ---------------------------------------------------------------------- maximum length


def _request(maximum_length: int | None) -> AAssociateRQ:
    return AAssociateRQ(
        called_ae_title="SCP",
        calling_ae_title="SCU",
        presentation_contexts=(PresentationContextRQ(1, "1.2.840.10008.1.1", (EXPLICIT,)),),
        user_information=UserInformation(maximum_length=maximum_length),
    )


@pytest.mark.parametrize("length", [1, 2, 5, 6])
def test_a_maximum_length_without_room_for_a_pdv_is_invalid(length: int) -> None:
    with pytest.raises(ProtocolError, match="too small") as raised:
        validate_contexts(_request(length))
    assert raised.value.abort_reason == 6
    accept = AAssociateAC(
        "SCP", "SCU", (PresentationContextAC(1, 0, EXPLICIT),), UserInformation(length)
    )
    with pytest.raises(ProtocolError, match="too small"):
        interpret_acceptance(_request(16384), accept)


@pytest.mark.parametrize("length", [None, 0, 7, 16, 0xFFFFFFFF])
def test_no_limit_or_room_for_a_byte_of_data_is_valid(length: int | None) -> None:
    validate_contexts(_request(length))
    accept = AAssociateAC(
        "SCP", "SCU", (PresentationContextAC(1, 0, EXPLICIT),), UserInformation(length)
    )
    assert interpret_acceptance(_request(16384), accept)[0].accepted
