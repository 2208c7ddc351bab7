"""Byte-exact PDU vectors derived by hand from the field layouts of PS3.8 9.3 and PS3.7 D.3.3.

Every vector below is written field by field from the standard's tables (lengths counted
by hand), never produced by the encoder under test. Text fields are written as ASCII
byte literals, numeric fields as hex.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from aionetdicom.pdu import (
    PDU,
    PDV,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsynchronousOperationsWindow,
    PDataTF,
    PDUReader,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    decode_pdu,
    encode_pdata_header,
    encode_pdu,
    encode_pdv_header,
)


def vec(*fields: str | bytes) -> bytes:
    """Concatenate fields: a ``str`` is hex (whitespace ignored), ``bytes`` are raw."""
    return b"".join(bytes.fromhex(f) if isinstance(f, str) else f for f in fields)


VERIFICATION = "1.2.840.10008.1.1"  # 17 chars
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # 25 chars
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"  # 27 chars
IMPLICIT_VR_LE = "1.2.840.10008.1.2"  # 17 chars
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"  # 19 chars
STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"  # 17 chars

# ---------------------------------------------------------------------------------------
# A-ASSOCIATE-RQ (PS3.8 Table 9-11) with every user information sub-item
# ---------------------------------------------------------------------------------------

ASSOCIATE_RQ_VECTOR = vec(
    # PDU header
    "01",  # PDU-type: A-ASSOCIATE-RQ
    "00",  # reserved
    "000001bc",  # PDU-length: 68 fixed + 25 + 73 + 58 + 220 = 444
    "0001",  # protocol-version: bit 0 (version 1)
    "0000",  # reserved
    b"ANY-SCP         ",  # called-AE-title, 16 bytes, space padded
    b"ECHOSCU         ",  # calling-AE-title, 16 bytes, space padded
    "00" * 32,  # reserved (32 bytes)
    # Application context item (Table 9-12): 4 + 21 = 25 bytes
    "10",  # item-type
    "00",  # reserved
    "0015",  # item-length 21
    b"1.2.840.10008.3.1.1.1",  # application-context-name
    # Presentation context item (Table 9-13), ID 1: 4 + 69 = 73 bytes
    "20",  # item-type
    "00",  # reserved
    "0045",  # item-length 69 = 4 + 21 + 21 + 23
    "01",  # presentation-context-ID
    "00",  # reserved
    "00",  # reserved
    "00",  # reserved
    "30 00 0011",  # abstract syntax sub-item (Table 9-14), length 17
    b"1.2.840.10008.1.1",  # Verification SOP Class
    "40 00 0011",  # transfer syntax sub-item (Table 9-15), length 17
    b"1.2.840.10008.1.2",  # Implicit VR Little Endian
    "40 00 0013",  # transfer syntax sub-item, length 19
    b"1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    # Presentation context item, ID 3: 4 + 54 = 58 bytes
    "20 00 0036",  # item-type, reserved, item-length 54 = 4 + 29 + 21
    "03 00 00 00",  # presentation-context-ID 3, three reserved bytes
    "30 00 0019",  # abstract syntax sub-item, length 25
    b"1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "40 00 0011",  # transfer syntax sub-item, length 17
    b"1.2.840.10008.1.2",  # Implicit VR Little Endian
    # User information item (Table 9-16): 4 + 216 = 220 bytes
    "50 00 00d8",  # item-type, reserved, item-length 216
    # Maximum length sub-item (PS3.8 Table D.1-1): 8 bytes
    "51 00 0004",  # item-type, reserved, item-length 4
    "00004000",  # maximum-length-received 16384
    # Implementation class UID sub-item (PS3.7 Table D.3-1): 13 bytes
    "52 00 0009",  # item-type, reserved, item-length 9
    b"1.2.3.4.5",  # implementation-class-uid
    # Implementation version name sub-item (Table D.3-3): 14 bytes
    "55 00 000a",  # item-type, reserved, item-length 10
    b"AIONET_010",  # implementation-version-name
    # Asynchronous operations window sub-item (Table D.3-7): 8 bytes
    "53 00 0004",  # item-type, reserved, item-length 4
    "0005",  # maximum-number-operations-invoked
    "0003",  # maximum-number-operations-performed
    # SCP/SCU role selection sub-item (Table D.3-9): 4 + 29 = 33 bytes
    "54 00 001d",  # item-type, reserved, item-length 29 = 2 + 25 + 2
    "0019",  # UID-length 25
    b"1.2.840.10008.5.1.4.1.1.2",  # SOP-class-uid
    "01",  # SCU-role: supported
    "00",  # SCP-role: not supported
    # Second role selection: 4 + 21 = 25 bytes
    "54 00 0015",  # item-type, reserved, item-length 21 = 2 + 17 + 2
    "0011",  # UID-length 17
    b"1.2.840.10008.1.1",  # SOP-class-uid
    "00",  # SCU-role: not supported
    "01",  # SCP-role: supported
    # SOP class extended negotiation sub-item (Table D.3-11): 4 + 32 = 36 bytes
    "56 00 0020",  # item-type, reserved, item-length 32 = 2 + 27 + 3
    "001b",  # SOP-class-uid-length 27
    b"1.2.840.10008.5.1.4.1.2.1.1",  # SOP-class-uid
    "01 01 00",  # service-class-application-information
    # SOP class common extended negotiation sub-item (Table D.3-12): 4 + 54 = 58 bytes
    "57",  # item-type
    "00",  # sub-item-version 0
    "0036",  # item-length 54 = 2 + 9 + 2 + 17 + 2 + 22
    "0009",  # SOP-class-uid-length 9
    b"1.2.3.4.1",  # SOP-class-uid
    "0011",  # service-class-uid-length 17
    b"1.2.840.10008.4.2",  # service-class-uid (Storage)
    "0016",  # related-general-sop-class-identification-length 22
    "0009",  # related-general-sop-class-uid-length (Table D.3-13)
    b"1.2.3.4.2",  # related-general-sop-class-uid
    "0009",  # related-general-sop-class-uid-length
    b"1.2.3.4.3",  # related-general-sop-class-uid
    # User identity negotiation sub-item RQ (Table D.3-14): 4 + 17 = 21 bytes
    "58 00 0011",  # item-type, reserved, item-length 17
    "02",  # user-identity-type: username and passcode
    "01",  # positive-response-requested
    "0005",  # primary-field-length
    b"alice",  # primary-field (username)
    "0006",  # secondary-field-length
    b"s3cret",  # secondary-field (passcode)
)

ASSOCIATE_RQ = AAssociateRQ(
    called_ae_title="ANY-SCP",
    calling_ae_title="ECHOSCU",
    presentation_contexts=(
        PresentationContextRQ(1, VERIFICATION, (IMPLICIT_VR_LE, EXPLICIT_VR_LE)),
        PresentationContextRQ(3, CT_IMAGE_STORAGE, (IMPLICIT_VR_LE,)),
    ),
    user_information=UserInformation(
        maximum_length=16384,
        implementation_class_uid="1.2.3.4.5",
        implementation_version_name="AIONET_010",
        asynchronous_operations_window=AsynchronousOperationsWindow(5, 3),
        role_selections=(
            RoleSelection(CT_IMAGE_STORAGE, scu_role=True, scp_role=False),
            RoleSelection(VERIFICATION, scu_role=False, scp_role=True),
        ),
        sop_class_extended=(SOPClassExtendedNegotiation(PATIENT_ROOT_FIND, b"\x01\x01\x00"),),
        sop_class_common_extended=(
            SOPClassCommonExtendedNegotiation(
                "1.2.3.4.1", STORAGE_SERVICE_CLASS, ("1.2.3.4.2", "1.2.3.4.3")
            ),
        ),
        user_identity=UserIdentityRQ(2, True, b"alice", b"s3cret"),
    ),
)

# ---------------------------------------------------------------------------------------
# A-ASSOCIATE-AC (PS3.8 Table 9-17) with results 0..4 and a user identity response
# ---------------------------------------------------------------------------------------

ASSOCIATE_AC_VECTOR = vec(
    "02",  # PDU-type: A-ASSOCIATE-AC
    "00",  # reserved
    "000000ed",  # PDU-length: 68 + 25 + 31 + 29 + 3 * 12 + 48 = 237
    "0001",  # protocol-version
    "0000",  # reserved
    b"ANY-SCP         ",  # called-AE-title (returned, not tested)
    b"ECHOSCU         ",  # calling-AE-title (returned, not tested)
    "00" * 32,  # reserved
    # Application context item: 25 bytes
    "10 00 0015",
    b"1.2.840.10008.3.1.1.1",
    # Presentation context item AC (Table 9-18), ID 1 accepted: 4 + 27 = 31 bytes
    "21",  # item-type
    "00",  # reserved
    "001b",  # item-length 27 = 4 + 23
    "01",  # presentation-context-ID
    "00",  # reserved
    "00",  # result/reason: 0 acceptance
    "00",  # reserved
    "40 00 0013",  # transfer syntax sub-item, length 19
    b"1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    # ID 3, user-rejection, transfer syntax present but not significant: 29 bytes
    "21 00 0019",  # item-length 25 = 4 + 21
    "03 00 01 00",  # ID 3, reserved, result 1 user-rejection, reserved
    "40 00 0011",
    b"1.2.840.10008.1.2",
    # ID 5, no-reason (provider rejection), empty transfer syntax sub-item: 12 bytes
    "21 00 0008",  # item-length 8 = 4 + 4
    "05 00 02 00",  # ID 5, result 2
    "40 00 0000",  # empty transfer syntax sub-item
    # ID 7, abstract-syntax-not-supported: 12 bytes
    "21 00 0008",
    "07 00 03 00",  # ID 7, result 3
    "40 00 0000",
    # ID 9, transfer-syntaxes-not-supported: 12 bytes
    "21 00 0008",
    "09 00 04 00",  # ID 9, result 4
    "40 00 0000",
    # User information item: 4 + 44 = 48 bytes
    "50 00 002c",  # item-length 44 = 8 + 13 + 14 + 9
    "51 00 0004",  # maximum length sub-item
    "00008000",  # 32768
    "52 00 0009",  # implementation class UID sub-item
    b"1.2.3.4.5",
    "55 00 000a",  # implementation version name sub-item
    b"AIONET_010",
    # User identity negotiation sub-item AC (Table D.3-15): 4 + 5 = 9 bytes
    "59",  # item-type
    "00",  # reserved
    "0005",  # item-length 5
    "0003",  # server-response-length
    b"tok",  # server-response
)

ASSOCIATE_AC = AAssociateAC(
    called_ae_title="ANY-SCP",
    calling_ae_title="ECHOSCU",
    presentation_contexts=(
        PresentationContextAC(1, 0, EXPLICIT_VR_LE),
        PresentationContextAC(3, 1, IMPLICIT_VR_LE),
        PresentationContextAC(5, 2),
        PresentationContextAC(7, 3),
        PresentationContextAC(9, 4),
    ),
    user_information=UserInformation(
        maximum_length=32768,
        implementation_class_uid="1.2.3.4.5",
        implementation_version_name="AIONET_010",
        user_identity=UserIdentityAC(b"tok"),
    ),
)

# ---------------------------------------------------------------------------------------
# P-DATA-TF (PS3.8 Table 9-22, Annex E.2 message control header)
# ---------------------------------------------------------------------------------------

PDATA_VECTOR = vec(
    "04",  # PDU-type: P-DATA-TF
    "00",  # reserved
    "00000022",  # PDU-length 34 = 10 + 7 + 8 + 9
    # PDV 1: dataset, not last
    "00000006",  # item-length 6 = context ID + control header + 4 data bytes
    "01",  # presentation-context-ID
    "00",  # message control header: data set, not last fragment
    "01020304",  # fragment
    # PDV 2: dataset, last
    "00000003",  # item-length 3
    "01",  # presentation-context-ID
    "02",  # message control header: data set, last fragment
    "05",
    # PDV 3: command, not last
    "00000004",  # item-length 4
    "03",  # presentation-context-ID
    "01",  # message control header: command, not last fragment
    "aabb",
    # PDV 4: command, last
    "00000005",  # item-length 5
    "03",  # presentation-context-ID
    "03",  # message control header: command, last fragment
    "ccddee",
)

PDATA = PDataTF(
    (
        PDV(1, is_command=False, is_last=False, data=b"\x01\x02\x03\x04"),
        PDV(1, is_command=False, is_last=True, data=b"\x05"),
        PDV(3, is_command=True, is_last=False, data=b"\xaa\xbb"),
        PDV(3, is_command=True, is_last=True, data=b"\xcc\xdd\xee"),
    )
)

# ---------------------------------------------------------------------------------------
# Fixed-size PDUs (Tables 9-21, 9-24, 9-25, 9-26)
# ---------------------------------------------------------------------------------------

FIXED_VECTORS: list[tuple[str, bytes, PDU]] = [
    (
        "rj-permanent-user-called-ae",
        vec(
            "03",  # PDU-type: A-ASSOCIATE-RJ
            "00",  # reserved
            "00000004",  # PDU-length
            "00",  # reserved
            "01",  # result: rejected-permanent
            "01",  # source: DICOM UL service-user
            "07",  # reason: called-AE-title-not-recognized
        ),
        AAssociateRJ(1, 1, 7),
    ),
    (
        "rj-transient-presentation-congestion",
        vec("03", "00", "00000004", "00", "02", "03", "01"),  # transient, presentation, 1
        AAssociateRJ(2, 3, 1),
    ),
    (
        "rj-permanent-acse-version",
        vec("03", "00", "00000004", "00", "01", "02", "02"),  # permanent, ACSE, version
        AAssociateRJ(1, 2, 2),
    ),
    (
        "release-rq",
        vec(
            "05",  # PDU-type: A-RELEASE-RQ
            "00",  # reserved
            "00000004",  # PDU-length
            "00000000",  # reserved
        ),
        AReleaseRQ(),
    ),
    (
        "release-rp",
        vec(
            "06",  # PDU-type: A-RELEASE-RP
            "00",  # reserved
            "00000004",  # PDU-length
            "00000000",  # reserved
        ),
        AReleaseRP(),
    ),
    (
        "abort-user",
        vec(
            "07",  # PDU-type: A-ABORT
            "00",  # reserved
            "00000004",  # PDU-length
            "00",  # reserved
            "00",  # reserved
            "00",  # source: DICOM UL service-user
            "00",  # reason/diag: not significant
        ),
        AAbort(0, 0),
    ),
    (
        "abort-provider-unexpected-pdu",
        vec("07", "00", "00000004", "00", "00", "02", "02"),  # provider, unexpected-PDU
        AAbort(2, 2),
    ),
    (
        "abort-provider-invalid-parameter",
        vec("07", "00", "00000004", "00", "00", "02", "06"),  # provider, invalid value
        AAbort(2, 6),
    ),
    (
        "abort-provider-unrecognized-pdu",
        vec("07", "00", "00000004", "00", "00", "02", "01"),  # provider, unrecognized PDU
        AAbort(2, 1),
    ),
]


ALL_VECTORS: list[tuple[str, bytes, PDU]] = [
    ("associate-rq", ASSOCIATE_RQ_VECTOR, ASSOCIATE_RQ),
    ("associate-ac", ASSOCIATE_AC_VECTOR, ASSOCIATE_AC),
    ("p-data-tf", PDATA_VECTOR, PDATA),
    *FIXED_VECTORS,
]
_IDS = [name for name, _, _ in ALL_VECTORS]


def test_vector_lengths_match_their_length_fields() -> None:
    # Guards the hand counting: the PDU-length field equals the bytes that follow.
    for _, vector, _ in ALL_VECTORS:
        assert int.from_bytes(vector[2:6], "big") == len(vector) - 6
    assert len(ASSOCIATE_RQ_VECTOR) == 6 + 444
    assert len(ASSOCIATE_AC_VECTOR) == 6 + 237
    assert len(PDATA_VECTOR) == 6 + 34


@pytest.mark.parametrize(("vector", "pdu"), [(v, p) for _, v, p in ALL_VECTORS], ids=_IDS)
def test_encode_matches_vector(vector: bytes, pdu: PDU) -> None:
    assert encode_pdu(pdu) == vector


@pytest.mark.parametrize(("vector", "pdu"), [(v, p) for _, v, p in ALL_VECTORS], ids=_IDS)
def test_decode_matches_object(vector: bytes, pdu: PDU) -> None:
    decoded = decode_pdu(vector)
    assert type(decoded) is type(pdu)
    assert decoded == pdu


@pytest.mark.parametrize(("vector", "pdu"), [(v, p) for _, v, p in ALL_VECTORS], ids=_IDS)
def test_decode_from_bytearray_and_memoryview(vector: bytes, pdu: PDU) -> None:
    assert decode_pdu(bytearray(vector)) == pdu
    assert decode_pdu(memoryview(vector)) == pdu


@pytest.mark.parametrize(("vector", "pdu"), [(v, p) for _, v, p in ALL_VECTORS], ids=_IDS)
def test_reader_frames_vector_byte_by_byte(vector: bytes, pdu: PDU) -> None:
    reader = PDUReader()
    out: list[PDU] = []
    for i in range(len(vector)):
        reader.feed(vector[i : i + 1])
        got = reader.next_pdu()
        if got is not None:
            out.append(got)
            assert i == len(vector) - 1, "PDU returned before its last byte arrived"
    assert out == [pdu]
    assert reader.buffered == 0
    assert not reader.in_pdu


def test_reader_frames_all_vectors_concatenated() -> None:
    stream = b"".join(v for _, v, _ in ALL_VECTORS)
    reader = PDUReader()
    reader.feed(stream)
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    assert out == [p for _, _, p in ALL_VECTORS]
    assert reader.buffered == 0


def test_decoded_rq_fields() -> None:
    rq = decode_pdu(ASSOCIATE_RQ_VECTOR)
    assert isinstance(rq, AAssociateRQ)
    assert rq.protocol_version == 1
    assert rq.application_context_name == "1.2.840.10008.3.1.1.1"
    assert [pc.context_id for pc in rq.presentation_contexts] == [1, 3]
    assert rq.user_information.maximum_length == 16384
    identity = rq.user_information.user_identity
    assert isinstance(identity, UserIdentityRQ)
    assert identity.identity_type == 2
    assert identity.positive_response_requested is True


def test_decoded_ac_context_results() -> None:
    ac = decode_pdu(ASSOCIATE_AC_VECTOR)
    assert isinstance(ac, AAssociateAC)
    assert [(pc.context_id, pc.result) for pc in ac.presentation_contexts] == [
        (1, 0),
        (3, 1),
        (5, 2),
        (7, 3),
        (9, 4),
    ]
    assert [pc.accepted for pc in ac.presentation_contexts] == [True] + [False] * 4
    assert ac.presentation_contexts[0].transfer_syntax == EXPLICIT_VR_LE


@pytest.mark.parametrize(
    ("control", "is_command", "is_last"),
    [(0x00, False, False), (0x01, True, False), (0x02, False, True), (0x03, True, True)],
)
def test_single_pdv_each_control_header(control: int, is_command: bool, is_last: bool) -> None:
    vector = vec(
        "04 00",  # PDU-type P-DATA-TF, reserved
        "00000008",  # PDU-length 8 = 4 + 4
        "00000004",  # PDV item-length 4
        "05",  # presentation-context-ID
        f"{control:02x}",  # message control header
        "beef",  # fragment
    )
    pdu = PDataTF((PDV(5, is_command=is_command, is_last=is_last, data=b"\xbe\xef"),))
    assert encode_pdu(pdu) == vector
    assert decode_pdu(vector) == pdu


def test_empty_pdv_fragment() -> None:
    # Item-length 2: context ID and control header only, no fragment bytes.
    vector = vec("04 00", "00000006", "00000002", "01", "03")
    pdu = PDataTF((PDV(1, is_command=True, is_last=True, data=b""),))
    assert encode_pdu(pdu) == vector
    assert decode_pdu(vector) == pdu


def test_pdv_and_pdata_header_helpers() -> None:
    assert encode_pdv_header(3, 7, is_command=True, is_last=False) == vec("00000005", "07", "01")
    assert encode_pdv_header(0, 1, is_command=False, is_last=True) == vec("00000002", "01", "02")
    assert encode_pdata_header(0x1234) == vec("04", "00", "00001234")


def test_pdv_data_may_be_memoryview_or_bytearray() -> None:
    pdu = PDataTF(
        (
            PDV(1, is_command=False, is_last=False, data=memoryview(b"\x01\x02\x03\x04")),
            PDV(1, is_command=False, is_last=True, data=bytearray(b"\x05")),
            PDV(3, is_command=True, is_last=False, data=b"\xaa\xbb"),
            PDV(3, is_command=True, is_last=True, data=b"\xcc\xdd\xee"),
        )
    )
    assert encode_pdu(pdu) == PDATA_VECTOR


# A minimal RQ whose user information holds sub-items in a non-canonical order and an
# unknown sub-item type 0x5F. The decoder accepts any order; the encoder writes
# 0x51, 0x52, ..., 0x58, unknown items last.
_MINIMAL_RQ_HEAD = (
    "01 00",  # PDU-type A-ASSOCIATE-RQ, reserved
    "000000ba",  # PDU-length 186 = 68 + 25 + 50 + 43
    "0001 0000",  # protocol-version, reserved
    b"A               ",  # called-AE-title "A"
    b"B               ",  # calling-AE-title "B"
    "00" * 32,  # reserved
    "10 00 0015",  # application context item, length 21
    b"1.2.840.10008.3.1.1.1",
    "20 00 002e",  # presentation context item, length 46 = 4 + 21 + 21
    "01 00 00 00",  # ID 1, three reserved bytes
    "30 00 0011",  # abstract syntax sub-item, length 17
    b"1.2.840.10008.1.1",
    "40 00 0011",  # transfer syntax sub-item, length 17
    b"1.2.840.10008.1.2",
    "50 00 0027",  # user information item, length 39 = 9 + 13 + 9 + 8
)
_UNKNOWN_5F = ("5f 00 0005", b"hello")  # unknown sub-item type 0x5F, length 5
_IDENTITY_58 = (
    "58 00 0009",  # user identity RQ, length 9
    "01",  # user-identity-type: username
    "00",  # positive-response-requested: no
    "0003",  # primary-field-length
    b"bob",
    "0000",  # secondary-field-length 0 (type 1 has no secondary field)
)
_CLASS_UID_52 = ("52 00 0005", b"1.2.3")  # implementation class UID, length 5
_MAX_LENGTH_51 = ("51 00 0004", "00000000")  # maximum length 0: no limit

MINIMAL_RQ_NONCANONICAL = vec(
    *_MINIMAL_RQ_HEAD, *_UNKNOWN_5F, *_IDENTITY_58, *_CLASS_UID_52, *_MAX_LENGTH_51
)
MINIMAL_RQ_CANONICAL = vec(
    *_MINIMAL_RQ_HEAD, *_MAX_LENGTH_51, *_CLASS_UID_52, *_IDENTITY_58, *_UNKNOWN_5F
)
MINIMAL_RQ = AAssociateRQ(
    called_ae_title="A",
    calling_ae_title="B",
    presentation_contexts=(PresentationContextRQ(1, VERIFICATION, (IMPLICIT_VR_LE,)),),
    user_information=UserInformation(
        maximum_length=0,
        implementation_class_uid="1.2.3",
        user_identity=UserIdentityRQ(1, False, b"bob", b""),
        unknown_items=(UnknownSubItem(0x5F, b"hello"),),
    ),
)


def test_user_information_sub_item_order_and_unknown_item() -> None:
    assert len(MINIMAL_RQ_CANONICAL) == 6 + 186
    assert decode_pdu(MINIMAL_RQ_NONCANONICAL) == MINIMAL_RQ
    assert decode_pdu(MINIMAL_RQ_CANONICAL) == MINIMAL_RQ
    assert encode_pdu(MINIMAL_RQ) == MINIMAL_RQ_CANONICAL


def test_rejected_ac_context_without_transfer_syntax_sub_item_decodes() -> None:
    # PS3.8 9.3.3.2: for a non-accepted context the transfer syntax is not significant;
    # some peers omit the sub-item entirely.
    vector = vec(
        "02 00",  # A-ASSOCIATE-AC, reserved
        "00000065",  # PDU-length 101 = 68 + 25 + 8 (no user information item)
        "0001 0000",  # protocol-version, reserved
        b"A               ",  # called-AE-title
        b"B               ",  # calling-AE-title
        "00" * 32,  # reserved
        "10 00 0015",  # application context item, length 21
        b"1.2.840.10008.3.1.1.1",
        "21 00 0004",  # presentation context item AC, length 4, no sub-item
        "03 00 03 00",  # ID 3, result 3 abstract-syntax-not-supported
    )
    pdu = decode_pdu(vector)
    assert pdu == AAssociateAC("A", "B", (PresentationContextAC(3, 3, ""),))


# ---------------------------------------------------------------------------------------
# A real A-ASSOCIATE-RQ as DCMTK echoscu sends it
# ---------------------------------------------------------------------------------------

ECHOSCU = "/usr/bin/echoscu"  # absolute: another "echoscu" may come first on PATH


def _capture_echoscu_associate_rq() -> bytes:
    """Listen on a free port, let echoscu connect, return the first complete PDU it sends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(20)
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            [ECHOSCU, "-aet", "ECHOSCU", "-aec", "ANY-SCP", "-to", "5", "127.0.0.1", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(20)
                data = bytearray()
                while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    assert len(data) < 1 << 20, "echoscu sent an implausibly large PDU"
                # Answer A-ASSOCIATE-RJ (permanent, service-user, no reason) so echoscu
                # stops on its own; it is killed below anyway.
                conn.sendall(bytes.fromhex("03 00 00000004 00 01 01 01"))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    return bytes(data)


@pytest.mark.interop
def test_decode_dcmtk_echoscu_associate_rq() -> None:
    captured = _capture_echoscu_associate_rq()
    assert captured[0] == 0x01, f"expected an A-ASSOCIATE-RQ, got {captured[:16].hex()}"
    assert len(captured) == 6 + int.from_bytes(captured[2:6], "big")

    rq = decode_pdu(captured)
    assert isinstance(rq, AAssociateRQ)
    assert rq.calling_ae_title == "ECHOSCU"
    assert rq.called_ae_title == "ANY-SCP"
    assert rq.protocol_version == 1
    assert rq.application_context_name == "1.2.840.10008.3.1.1.1"
    assert len(rq.presentation_contexts) >= 1
    assert {pc.abstract_syntax for pc in rq.presentation_contexts} == {VERIFICATION}
    for pc in rq.presentation_contexts:
        assert pc.context_id % 2 == 1
        assert IMPLICIT_VR_LE in pc.transfer_syntaxes
    info = rq.user_information
    assert info.implementation_class_uid
    assert info.implementation_class_uid.replace(".", "").isdigit()
    assert info.maximum_length is not None
    assert info.maximum_length > 0

    # Re-encoding gives the same size (DCMTK fills some reserved bytes with 0xFF, so the
    # bytes themselves may differ only in reserved fields).
    assert len(encode_pdu(rq)) == len(captured)

    # The framer yields the same PDU from the raw stream, fed in small pieces.
    reader = PDUReader()
    out = []
    for i in range(0, len(captured), 7):
        reader.feed(captured[i : i + 7])
        if (pdu := reader.next_pdu()) is not None:
            out.append(pdu)
    assert out == [rq]


def test_decoder_tolerates_nul_padded_uids() -> None:
    # Some older peers pad odd-length UIDs with a trailing NUL (PS3.5 padding rule); the
    # padding is not part of the UID.
    vector = vec(
        "01 00",  # A-ASSOCIATE-RQ, reserved
        "00000092",  # PDU-length 146 = 68 + 26 + 52
        "0001 0000",  # protocol-version, reserved
        b"A               ",  # called-AE-title
        b"B               ",  # calling-AE-title
        "00" * 32,  # reserved
        "10 00 0016",  # application context item, length 22
        b"1.2.840.10008.3.1.1.1\x00",  # 21 chars + NUL padding
        "20 00 0030",  # presentation context item, length 48 = 4 + 22 + 22
        "01 00 00 00",  # ID 1, three reserved bytes
        "30 00 0012",  # abstract syntax sub-item, length 18 (17 + NUL)
        b"1.2.840.10008.1.1\x00",
        "40 00 0012",  # transfer syntax sub-item, length 18 (17 + NUL)
        b"1.2.840.10008.1.2\x00",
    )
    pdu = decode_pdu(vector)
    assert isinstance(pdu, AAssociateRQ)
    assert pdu.application_context_name == "1.2.840.10008.3.1.1.1"
    assert pdu.presentation_contexts == (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_VR_LE,)),)
