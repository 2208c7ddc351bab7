"""Decoding never trusts a length: malformed PDUs raise the right error with a clear message.

Malformed inputs are built by hand with the small helpers below (not by the encoder), so
each case differs from a valid PDU in exactly the defect under test.
"""

from __future__ import annotations

import tracemalloc

import pytest

from aionetdicom.errors import PDUDecodeError, PDUTooLarge, ProtocolError, UnknownPDUType
from aionetdicom.pdu import (
    DEFAULT_MAX_ASSOCIATE_LENGTH,
    AAssociateAC,
    AAssociateRQ,
    PDUReader,
    decode_pdu,
)

#: A-ABORT reasons of PS3.8 Table 9-26 (3 is reserved).
VALID_ABORT_REASONS = {0, 1, 2, 4, 5, 6}

VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_VR_LE = b"1.2.840.10008.1.2"


def _pdu(pdu_type: int, body: bytes) -> bytes:
    """PDU header (type, reserved, 32-bit length) + body; the length is always right."""
    return bytes((pdu_type, 0)) + len(body).to_bytes(4, "big") + body


def _item(item_type: int, body: bytes) -> bytes:
    """Item header (type, reserved, 16-bit length) + body; the length is always right."""
    return bytes((item_type, 0)) + len(body).to_bytes(2, "big") + body


def _u16(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


FIXED = (
    b"\x00\x01"  # protocol-version
    b"\x00\x00"  # reserved
    + b"ANY-SCP".ljust(16)  # called-AE-title
    + b"ECHOSCU".ljust(16)  # calling-AE-title
    + bytes(32)  # reserved
)
APP_CONTEXT = _item(0x10, b"1.2.840.10008.3.1.1.1")
PC_RQ_OK = _item(
    0x20, b"\x01\x00\x00\x00" + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_VR_LE)
)
PC_AC_OK = _item(0x21, b"\x01\x00\x00\x00" + _item(0x40, IMPLICIT_VR_LE))


def _rq(*items: bytes, app: bytes = APP_CONTEXT) -> bytes:
    return _pdu(0x01, FIXED + app + b"".join(items))


def _ac(*items: bytes) -> bytes:
    return _pdu(0x02, FIXED + APP_CONTEXT + b"".join(items))


def _user(*sub_items: bytes) -> bytes:
    return _item(0x50, b"".join(sub_items))


def _rq_user(*sub_items: bytes) -> bytes:
    return _rq(PC_RQ_OK, _user(*sub_items))


def _pdata(*pdv_items: bytes) -> bytes:
    return _pdu(0x04, b"".join(pdv_items))


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return (len(data) + 2).to_bytes(4, "big") + bytes((context_id, control)) + data


def test_helpers_build_valid_pdus() -> None:
    # The baseline the malformed cases deviate from decodes cleanly.
    rq = decode_pdu(_rq_user(_item(0x51, b"\x00\x00\x40\x00")))
    assert isinstance(rq, AAssociateRQ)
    assert rq.presentation_contexts[0].abstract_syntax == VERIFICATION.decode()
    assert rq.user_information.maximum_length == 0x4000
    ac = decode_pdu(_ac(PC_AC_OK, _user()))
    assert isinstance(ac, AAssociateAC)
    assert ac.presentation_contexts[0].transfer_syntax == IMPLICIT_VR_LE.decode()
    pdata = decode_pdu(_pdata(_pdv(1, 3, b"xy")))
    assert bytes(pdata.pdvs[0].data) == b"xy"  # type: ignore[union-attr]


# Each case: id, bytes, exact exception class, regex the message must match,
# expected abort_reason.
CASES: list[tuple[str, bytes, type[PDUDecodeError], str, int]] = [
    # ---- an item running past its PDU
    (
        "item-past-pdu",
        _rq(b"\x20\x00\x01\x00" + b"\x01\x00\x00\x00" + b"\x30\x00"),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ: item 0x20 declares 256 bytes but only 6 remain",
        6,
    ),
    (
        "app-context-past-pdu",
        _rq(app=b"\x10\x00\x00\x40" + b"1.2.840.10008.3.1.1.1"),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ: item 0x10 declares 64 bytes but only 21 remain",
        6,
    ),
    (
        "user-info-past-ac",
        _ac(PC_AC_OK, b"\x50\x00\xff\xff" + _item(0x51, b"\x00\x00\x40\x00")),
        PDUDecodeError,
        r"A-ASSOCIATE-AC: item 0x50 declares 65535 bytes but only 8 remain",
        6,
    ),
    (
        "item-header-truncated",
        _rq(PC_RQ_OK, b"\x50\x00\x00"),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ: 3 trailing byte\(s\) too short for an item header",
        6,
    ),
    # ---- a sub-item running past its item
    (
        "abstract-syntax-past-context",
        _rq(_item(0x20, b"\x01\x00\x00\x00" + b"\x30\x00\x00\x40" + VERIFICATION)),
        PDUDecodeError,
        r"presentation context 1: item 0x30 declares 64 bytes but only 17 remain",
        6,
    ),
    (
        "transfer-syntax-past-ac-context",
        _ac(_item(0x21, b"\x07\x00\x00\x00" + b"\x40\x00\x00\x12" + IMPLICIT_VR_LE)),
        PDUDecodeError,
        r"presentation context 7: item 0x40 declares 18 bytes but only 17 remain",
        6,
    ),
    (
        "sub-item-past-user-info",
        _rq_user(b"\x52\x00\x00\x20" + b"1.2.3"),
        PDUDecodeError,
        r"user information: item 0x52 declares 32 bytes but only 5 remain",
        6,
    ),
    (
        "role-uid-past-sub-item",
        _rq_user(_item(0x54, b"\x00\x40" + b"1.2" + b"\x01\x00")),
        PDUDecodeError,
        r"role selection SOP class UID: declares 64 bytes but only 5 remain",
        6,
    ),
    (
        "extended-uid-past-sub-item",
        _rq_user(_item(0x56, b"\x00\x09" + b"1.2")),
        PDUDecodeError,
        r"extended negotiation SOP class UID: declares 9 bytes but only 3 remain",
        6,
    ),
    (
        "identity-primary-past-sub-item",
        _rq_user(_item(0x58, b"\x01\x00" + b"\x00\x10" + b"bob" + b"\x00\x00")),
        PDUDecodeError,
        r"user identity primary field: declares 16 bytes but only 5 remain",
        6,
    ),
    (
        "identity-secondary-past-sub-item",
        _rq_user(_item(0x58, b"\x02\x00" + _u16(b"bob") + b"\x00\x08" + b"pw")),
        PDUDecodeError,
        r"user identity secondary field: declares 8 bytes but only 2 remain",
        6,
    ),
    (
        "identity-response-past-sub-item",
        _ac(PC_AC_OK, _user(_item(0x59, b"\x00\x05" + b"ok"))),
        PDUDecodeError,
        r"user identity server response: declares 5 bytes but only 2 remain",
        6,
    ),
    (
        "common-extended-related-past-block",
        _rq_user(
            _item(
                0x57,
                _u16(b"1.2.3")
                + _u16(b"1.2.840.10008.4.2")
                + _u16(b"\x00\x09" + b"1.2.3.4"),  # related UID declares 9, block has 7
            )
        ),
        PDUDecodeError,
        r"common extended negotiation related general SOP class: declares 9 bytes "
        r"but only 7 remain",
        6,
    ),
    (
        "common-extended-related-block-past-sub-item",
        _rq_user(_item(0x57, _u16(b"1.2.3") + _u16(b"1.2.4") + b"\x00\x30" + _u16(b"1.2"))),
        PDUDecodeError,
        r"common extended negotiation related classes: declares 48 bytes but only 5 remain",
        6,
    ),
    # ---- PDV lengths
    (
        "pdv-past-pdu",
        _pdata(b"\x00\x00\x00\x10" + b"\x01\x03" + b"ab"),
        PDUDecodeError,
        r"PDV item declares 16 bytes but only 4 remain in the PDU",
        6,
    ),
    (
        "second-pdv-past-pdu",
        _pdata(_pdv(1, 0, b"abc"), b"\x00\x00\x01\x00" + b"\x01\x02" + b"z"),
        PDUDecodeError,
        r"PDV item declares 256 bytes but only 3 remain in the PDU",
        6,
    ),
    (
        "pdv-huge-length",
        _pdata(b"\xff\xff\xff\xff" + b"\x01\x03"),
        PDUDecodeError,
        r"PDV item declares 4294967295 bytes but only 2 remain in the PDU",
        6,
    ),
    (
        "pdv-length-0",
        _pdata(b"\x00\x00\x00\x00" + b"\x01\x03"),
        PDUDecodeError,
        r"PDV item length 0 is below the minimum of 2",
        6,
    ),
    (
        "pdv-length-1",
        _pdata(b"\x00\x00\x00\x01" + b"\x01\x03"),
        PDUDecodeError,
        r"PDV item length 1 is below the minimum of 2",
        6,
    ),
    (
        "pdv-header-truncated",
        _pdata(_pdv(1, 2, b"abc"), b"\x00\x00\x00"),
        PDUDecodeError,
        r"P-DATA-TF: 3 trailing byte\(s\) too short for a PDV header",
        6,
    ),
    ("pdata-empty", _pdata(), PDUDecodeError, r"P-DATA-TF holds no PDV item", 6),
    # ---- reserved bits of the message control header (PS3.8 E.2)
    *[
        (
            f"pdv-control-0x{control:02x}",
            _pdata(_pdv(1, control, b"data")),
            PDUDecodeError,
            rf"PDV message control header 0x{control:02X} has reserved bits",
            6,
        )
        for control in (0x04, 0x08, 0x10, 0x80, 0x83, 0xFC, 0xFF)
    ],
    # ---- fixed-length PDUs with length != 4
    *[
        (
            f"{name}-length-{length}",
            _pdu(pdu_type, bytes(length)),
            PDUDecodeError,
            rf"{name} PDU length is {length}, the standard fixes it at 4",
            6,
        )
        for pdu_type, name in (
            (0x03, "A_ASSOCIATE_RJ"),
            (0x05, "A_RELEASE_RQ"),
            (0x06, "A_RELEASE_RP"),
            (0x07, "A_ABORT"),
        )
        for length in (0, 3, 5, 10)
    ],
    # ---- truncated fixed fields
    (
        "pdu-header-truncated",
        b"\x05\x00\x00\x00\x00",
        PDUDecodeError,
        r"5 byte\(s\) are too short for a PDU header",
        6,
    ),
    ("empty-input", b"", PDUDecodeError, r"0 byte\(s\) are too short for a PDU header", 6),
    (
        "associate-rq-fixed-fields-truncated",
        _pdu(0x01, FIXED[:67]),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ of 67 bytes is shorter than its fixed fields",
        6,
    ),
    (
        "associate-ac-fixed-fields-truncated",
        _pdu(0x02, FIXED[:10]),
        PDUDecodeError,
        r"A-ASSOCIATE-AC of 10 bytes is shorter than its fixed fields",
        6,
    ),
    (
        "rq-context-shorter-than-4",
        _rq(_item(0x20, b"\x01\x00\x00")),
        PDUDecodeError,
        r"presentation context item \(RQ\) shorter than 4 bytes",
        6,
    ),
    (
        "ac-context-shorter-than-4",
        _ac(_item(0x21, b"\x01")),
        PDUDecodeError,
        r"presentation context item \(AC\) shorter than 4 bytes",
        6,
    ),
    (
        "identity-rq-shorter-than-2",
        _rq_user(_item(0x58, b"\x01")),
        PDUDecodeError,
        r"user identity item shorter than 2 bytes",
        6,
    ),
    (
        "identity-rq-no-primary-length",
        _rq_user(_item(0x58, b"\x01\x00\x00")),
        PDUDecodeError,
        r"user identity primary field: length field missing",
        6,
    ),
    (
        "identity-rq-trailing-byte",
        _rq_user(_item(0x58, b"\x02\x00" + _u16(b"bob") + _u16(b"pw") + b"\x00")),
        PDUDecodeError,
        r"user identity item has trailing bytes",
        6,
    ),
    (
        "identity-ac-no-length",
        _ac(PC_AC_OK, _user(_item(0x59, b"\x00"))),
        PDUDecodeError,
        r"user identity server response: length field missing",
        6,
    ),
    (
        "identity-ac-trailing-bytes",
        _ac(PC_AC_OK, _user(_item(0x59, _u16(b"ok") + b"xx"))),
        PDUDecodeError,
        r"user identity response has trailing bytes",
        6,
    ),
    (
        "async-window-3-bytes",
        _rq_user(_item(0x53, b"\x00\x01\x00")),
        PDUDecodeError,
        r"asynchronous operations window has 3 bytes, not 4",
        6,
    ),
    (
        "role-selection-one-role-byte",
        _rq_user(_item(0x54, _u16(VERIFICATION) + b"\x01")),
        PDUDecodeError,
        r"role selection sub-item must end with two role bytes",
        6,
    ),
    (
        "role-selection-no-uid-length",
        _rq_user(_item(0x54, b"\x00")),
        PDUDecodeError,
        r"role selection SOP class UID: length field missing",
        6,
    ),
    (
        "common-extended-trailing-bytes",
        _rq_user(_item(0x57, _u16(b"1.2.3") + _u16(b"1.2.4") + _u16(b"") + b"\x00")),
        PDUDecodeError,
        r"common extended negotiation sub-item has trailing bytes",
        6,
    ),
    (
        "common-extended-missing-service-class",
        _rq_user(_item(0x57, _u16(b"1.2.3"))),
        PDUDecodeError,
        r"common extended negotiation service class UID: length field missing",
        6,
    ),
    # ---- maximum length sub-item of the wrong size (PS3.8 D.1)
    *[
        (
            f"maximum-length-{size}-bytes",
            _rq_user(_item(0x51, bytes(size))),
            PDUDecodeError,
            rf"maximum length sub-item has {size} bytes, not 4",
            6,
        )
        for size in (0, 2, 3, 5, 8)
    ],
    # ---- non-ASCII UIDs and names
    (
        "abstract-syntax-not-ascii",
        _rq(_item(0x20, b"\x01\x00\x00\x00" + _item(0x30, b"1.2.\xff") + _item(0x40, b"1.2"))),
        PDUDecodeError,
        r"abstract syntax name is not ASCII",
        6,
    ),
    (
        "transfer-syntax-not-ascii",
        _rq(_item(0x20, b"\x01\x00\x00\x00" + _item(0x30, b"1.2") + _item(0x40, b"1.\xc3\xa9"))),
        PDUDecodeError,
        r"transfer syntax name is not ASCII",
        6,
    ),
    (
        "ac-transfer-syntax-not-ascii",
        _ac(_item(0x21, b"\x01\x00\x00\x00" + _item(0x40, b"\x80"))),
        PDUDecodeError,
        r"transfer syntax name is not ASCII",
        6,
    ),
    (
        "application-context-not-ascii",
        _rq(PC_RQ_OK, app=_item(0x10, b"1.2.840.\x90")),
        PDUDecodeError,
        r"application context name is not ASCII",
        6,
    ),
    (
        "implementation-class-uid-not-ascii",
        _rq_user(_item(0x52, b"1.2.\xfe")),
        PDUDecodeError,
        r"implementation class UID is not ASCII",
        6,
    ),
    (
        "role-selection-uid-not-ascii",
        _rq_user(_item(0x54, _u16(b"1.\xff") + b"\x01\x01")),
        PDUDecodeError,
        r"role selection SOP class UID is not ASCII",
        6,
    ),
    (
        "related-general-uid-not-ascii",
        _rq_user(_item(0x57, _u16(b"1.2") + _u16(b"1.3") + _u16(_u16(b"1.\xff")))),
        PDUDecodeError,
        r"related general SOP class UID is not ASCII",
        6,
    ),
    # ---- missing mandatory items / unexpected items
    (
        "context-without-abstract-syntax",
        _rq(_item(0x20, b"\x05\x00\x00\x00" + _item(0x40, IMPLICIT_VR_LE))),
        PDUDecodeError,
        r"presentation context 5 has no abstract syntax",
        6,
    ),
    (
        "context-with-two-abstract-syntaxes",
        _rq(_item(0x20, b"\x05\x00\x00\x00" + _item(0x30, b"1.2") + _item(0x30, b"1.3"))),
        PDUDecodeError,
        r"presentation context 5 has more than one abstract syntax",
        6,
    ),
    (
        "accepted-ac-context-without-transfer-syntax",
        _ac(_item(0x21, b"\x03\x00\x00\x00")),
        PDUDecodeError,
        r"accepted presentation context 3 has no transfer syntax",
        6,
    ),
    (
        "ac-context-two-transfer-syntaxes",
        _ac(_item(0x21, b"\x03\x00\x00\x00" + _item(0x40, b"1.2") + _item(0x40, b"1.3"))),
        PDUDecodeError,
        r"presentation context 3 \(AC\) has more than one transfer syntax",
        6,
    ),
    (
        "no-application-context",
        _pdu(0x01, FIXED + PC_RQ_OK),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ has no application context item",
        6,
    ),
    (
        "two-application-contexts",
        _rq(APP_CONTEXT, PC_RQ_OK),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ has more than one application context item",
        6,
    ),
    (
        "two-user-information-items",
        _ac(PC_AC_OK, _user(), _user()),
        PDUDecodeError,
        r"A-ASSOCIATE-AC has more than one user information item",
        6,
    ),
    (
        "ac-context-item-in-rq",
        _rq(PC_AC_OK),
        PDUDecodeError,
        r"A-ASSOCIATE-RQ holds unexpected item type 0x21",
        5,
    ),
    (
        "rq-context-item-in-ac",
        _ac(PC_RQ_OK),
        PDUDecodeError,
        r"A-ASSOCIATE-AC holds unexpected item type 0x20",
        5,
    ),
    (
        "unexpected-sub-item-in-rq-context",
        _rq(_item(0x20, b"\x01\x00\x00\x00" + _item(0x30, b"1.2") + _item(0x51, bytes(4)))),
        PDUDecodeError,
        r"presentation context 1 holds unexpected sub-item 0x51",
        5,
    ),
    (
        "unexpected-sub-item-in-ac-context",
        _ac(_item(0x21, b"\x01\x00\x00\x00" + _item(0x30, b"1.2"))),
        PDUDecodeError,
        r"presentation context 1 \(AC\) holds unexpected sub-item 0x30",
        5,
    ),
    # ---- decode_pdu wants exactly one PDU
    (
        "trailing-byte",
        _pdu(0x05, bytes(4)) + b"\x00",
        PDUDecodeError,
        r"PDU declares 4 bytes but 5 follow its header",
        6,
    ),
    (
        "two-pdus",
        _pdu(0x05, bytes(4)) + _pdu(0x06, bytes(4)),
        PDUDecodeError,
        r"PDU declares 4 bytes but 14 follow its header",
        6,
    ),
    (
        "body-shorter-than-length",
        b"\x04\x00\x00\x00\x01\x00" + _pdv(1, 3, b"abc"),
        PDUDecodeError,
        r"PDU declares 256 bytes but 9 follow its header",
        6,
    ),
    # ---- unknown PDU types
    *[
        (
            f"unknown-type-0x{t:02x}",
            _pdu(t, bytes(4)),
            UnknownPDUType,
            rf"unknown PDU type 0x{t:02X}",
            1,
        )
        for t in (0x00, 0x08, 0x10, 0xFF)
    ],
]


@pytest.mark.parametrize(
    ("data", "exc_type", "match", "abort_reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decode_pdu_rejects(
    data: bytes, exc_type: type[PDUDecodeError], match: str, abort_reason: int
) -> None:
    with pytest.raises(PDUDecodeError, match=match) as excinfo:
        decode_pdu(data)
    error = excinfo.value
    assert type(error) is exc_type
    assert isinstance(error, ProtocolError)
    assert error.abort_reason in VALID_ABORT_REASONS
    assert error.abort_reason == abort_reason


def _reader_cases() -> list[tuple[str, bytes, type[PDUDecodeError], str, int]]:
    """The decode cases that are one well-framed PDU (the reader sees the same defect)."""
    out = []
    for case in CASES:
        data = case[1]
        if len(data) < 6 or data[0] not in range(1, 8):
            continue
        if int.from_bytes(data[2:6], "big") != len(data) - 6:
            continue
        if data[0] in (3, 5, 6, 7) and len(data) - 6 > 4:
            continue  # the reader rejects these at the header; see below
        out.append(case)
    return out


READER_CASES = _reader_cases()


@pytest.mark.parametrize(
    ("data", "exc_type", "match", "abort_reason"),
    [case[1:] for case in READER_CASES],
    ids=[case[0] for case in READER_CASES],
)
def test_reader_rejects_the_same_defects(
    data: bytes, exc_type: type[PDUDecodeError], match: str, abort_reason: int
) -> None:
    reader = PDUReader()
    reader.feed(data[:-1])
    assert reader.next_pdu() is None  # the body is not complete yet: no verdict
    reader.feed(data[-1:])
    with pytest.raises(PDUDecodeError, match=match) as excinfo:
        reader.next_pdu()
    assert type(excinfo.value) is exc_type
    assert excinfo.value.abort_reason == abort_reason


def test_reader_cases_cover_every_category() -> None:
    # Guard against the filter above silently dropping most cases.
    assert len(READER_CASES) > 60


# ---------------------------------------------------------------------------------------
# PDUReader limits: decided from the 6 header bytes alone
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 16384, 1 << 20])
def test_pdata_length_above_limit_raises_after_header(limit: int) -> None:
    reader = PDUReader(max_pdata_length=limit)
    reader.feed(b"\x04\x00\xff\xff")
    assert reader.next_pdu() is None
    reader.feed(b"\xff\xff")
    with pytest.raises(PDUTooLarge, match=rf"declares 4294967295 bytes.*limit of {limit}\b") as e:
        reader.next_pdu()
    assert "P_DATA_TF" in str(e.value)
    assert e.value.abort_reason in VALID_ABORT_REASONS
    assert reader.buffered == 6


def test_pdata_length_above_default_limit_no_allocation() -> None:
    reader = PDUReader()
    tracemalloc.start()
    try:
        reader.feed(b"\x04\x00\xff\xff\xff\xff")
        with pytest.raises(PDUTooLarge, match=r"declares 4294967295 bytes"):
            reader.next_pdu()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.buffered == 6
    assert peak < 1 << 20, f"{peak} bytes allocated while rejecting a 4 GiB header"


def test_pdata_length_at_limit_waits_for_body() -> None:
    reader = PDUReader(max_pdata_length=16)
    # PDU-length 16 = PDV item (4-byte length + 12): context ID, control, 10 data bytes.
    reader.feed(b"\x04\x00\x00\x00\x00\x10" + b"\x00\x00\x00\x0c\x01\x03")
    assert reader.next_pdu() is None  # 16 is allowed, the body is just incomplete
    assert reader.in_pdu
    reader.feed(bytes(10))
    pdu = reader.next_pdu()
    assert pdu is not None
    assert bytes(pdu.pdvs[0].data) == bytes(10)  # type: ignore[union-attr]
    assert reader.buffered == 0
    reader.feed(b"\x04\x00\x00\x00\x00\x11")
    with pytest.raises(PDUTooLarge, match=r"declares 17 bytes, above the receive limit of 16"):
        reader.next_pdu()


@pytest.mark.parametrize(("pdu_type", "name"), [(1, "A_ASSOCIATE_RQ"), (2, "A_ASSOCIATE_AC")])
def test_associate_longer_than_limit(pdu_type: int, name: str) -> None:
    reader = PDUReader(max_associate_length=1024)
    reader.feed(bytes((pdu_type, 0)) + (1025).to_bytes(4, "big"))
    with pytest.raises(PDUTooLarge, match=rf"{name} PDU declares 1025 bytes.*limit of 1024"):
        reader.next_pdu()
    assert reader.buffered == 6

    at_limit = PDUReader(max_associate_length=1024)
    at_limit.feed(bytes((pdu_type, 0)) + (1024).to_bytes(4, "big"))
    assert at_limit.next_pdu() is None


def test_associate_limit_is_independent_of_pdata_limit() -> None:
    reader = PDUReader(max_pdata_length=1 << 30)
    reader.feed(b"\x01\x00" + (DEFAULT_MAX_ASSOCIATE_LENGTH + 1).to_bytes(4, "big"))
    with pytest.raises(PDUTooLarge, match=r"A_ASSOCIATE_RQ"):
        reader.next_pdu()
    small_pdata = PDUReader(max_pdata_length=100)
    small_pdata.feed(b"\x01\x00" + (5000).to_bytes(4, "big"))
    assert small_pdata.next_pdu() is None  # the P-DATA limit does not apply to RQ


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("length", [5, 0x100, 0xFFFFFFFF])
def test_fixed_pdu_too_long_rejected_at_header(pdu_type: int, length: int) -> None:
    reader = PDUReader()
    reader.feed(bytes((pdu_type, 0)) + length.to_bytes(4, "big"))
    with pytest.raises(PDUTooLarge, match=rf"declares {length} bytes.*limit of 4\b") as e:
        reader.next_pdu()
    assert isinstance(e.value, PDUDecodeError)
    assert reader.buffered == 6


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
def test_fixed_pdu_too_short_rejected_after_body(pdu_type: int) -> None:
    reader = PDUReader()
    reader.feed(bytes((pdu_type, 0)) + (3).to_bytes(4, "big"))
    assert reader.next_pdu() is None
    reader.feed(bytes(3))
    with pytest.raises(PDUDecodeError, match=r"PDU length is 3, the standard fixes it at 4"):
        reader.next_pdu()


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0x09, 0x7F, 0xFF])
def test_unknown_pdu_type_raised_after_header_only(pdu_type: int) -> None:
    reader = PDUReader()
    header = bytes((pdu_type, 0)) + (0x7FFFFFFF).to_bytes(4, "big")
    reader.feed(header[:5])
    assert reader.next_pdu() is None
    reader.feed(header[5:])
    with pytest.raises(UnknownPDUType, match=rf"unknown PDU type 0x{pdu_type:02X}") as e:
        reader.next_pdu()
    assert e.value.abort_reason == 1
    assert reader.buffered == 6


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0xFF])
def test_decode_pdu_unknown_type_checked_before_length(pdu_type: int) -> None:
    # Header only, with a length that does not match: the type is reported first.
    with pytest.raises(UnknownPDUType, match=rf"unknown PDU type 0x{pdu_type:02X}") as e:
        decode_pdu(bytes((pdu_type, 0)) + (0xFFFFFFFF).to_bytes(4, "big"))
    assert e.value.abort_reason == 1


def test_error_hierarchy() -> None:
    assert issubclass(UnknownPDUType, PDUDecodeError)
    assert issubclass(PDUTooLarge, PDUDecodeError)
    assert issubclass(PDUDecodeError, ProtocolError)
    for cls in (PDUDecodeError, UnknownPDUType, PDUTooLarge):
        assert cls("x").abort_reason in VALID_ABORT_REASONS
    assert PDUDecodeError("x", abort_reason=5).abort_reason == 5
