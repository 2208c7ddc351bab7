"""Tests of the DIMSE command set codec against hand-computed PS3.7 encodings."""

from __future__ import annotations

import contextlib
import copy
import pickle
import string
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aionetdicom.dimse.command_set import (
    COMMAND_ELEMENTS,
    DATASET_PRESENT,
    NO_DATASET,
    Command,
    CommandDecodeError,
    CommandField,
    Priority,
    decode_command,
    encode_command,
    is_response,
    make_command,
)
from aionetdicom.errors import ProtocolError

# --------------------------------------------------------------------------- vectors
# Each element: tag group (2 bytes LE) | tag element (2 bytes LE) | length (4 bytes LE)
# | value. The group length value counts every byte after its own element.

ECHO_RQ = bytes.fromhex(
    "0000 0000 04000000 38000000"  # CommandGroupLength = 56
    "0000 0200 12000000"  # AffectedSOPClassUID, 18 bytes
    "312e322e3834302e31303030382e312e31 00"  # "1.2.840.10008.1.1" + NUL pad
    "0000 0001 02000000 3000"  # CommandField 0x0030
    "0000 1001 02000000 0100"  # MessageID 1
    "0000 0008 02000000 0101"  # CommandDataSetType 0x0101
)

ECHO_RSP = bytes.fromhex(
    "0000 0000 04000000 42000000"  # CommandGroupLength = 66
    "0000 0200 12000000"
    "312e322e3834302e31303030382e312e31 00"
    "0000 0001 02000000 3080"  # CommandField 0x8030
    "0000 2001 02000000 0100"  # MessageIDBeingRespondedTo 1
    "0000 0008 02000000 0101"
    "0000 0009 02000000 0000"  # Status 0x0000
)

STORE_RQ = bytes.fromhex(
    "0000 0000 04000000 74000000"  # CommandGroupLength = 116
    "0000 0200 1a000000"  # AffectedSOPClassUID, 26 bytes
    "312e322e3834302e31303030382e352e312e342e312e312e32 00"  # CT Image Storage + NUL
    "0000 0001 02000000 0100"  # CommandField 0x0001
    "0000 1001 02000000 0700"  # MessageID 7
    "0000 0007 02000000 0000"  # Priority MEDIUM
    "0000 0008 02000000 0100"  # CommandDataSetType 0x0001
    "0000 0010 08000000 312e322e332e3400"  # AffectedSOPInstanceUID "1.2.3.4" + NUL
    "0000 3010 08000000 4d4f5645534355 20"  # MoveOriginatorAE "MOVESCU" + space
    "0000 3110 02000000 0300"  # MoveOriginatorMessageID 3
)

FIND_RSP = bytes.fromhex(
    "0000 0000 04000000 4c000000"  # CommandGroupLength = 76
    "0000 0200 1c000000"  # AffectedSOPClassUID, 28 bytes
    "312e322e3834302e31303030382e352e312e342e312e322e322e31 00"  # Study Root FIND + NUL
    "0000 0001 02000000 2080"  # CommandField 0x8020
    "0000 2001 02000000 0500"  # MessageIDBeingRespondedTo 5
    "0000 0008 02000000 0100"  # CommandDataSetType 0x0001
    "0000 0009 02000000 00ff"  # Status 0xFF00
)

NGET_RQ = bytes.fromhex(
    "0000 0000 04000000 4c000000"  # CommandGroupLength = 76
    "0000 0300 06000000 312e322e3300"  # RequestedSOPClassUID "1.2.3" + NUL
    "0000 0001 02000000 1001"  # CommandField 0x0110
    "0000 1001 02000000 0200"  # MessageID 2
    "0000 0008 02000000 0101"
    "0000 0110 08000000 312e322e332e3400"  # RequestedSOPInstanceUID "1.2.3.4" + NUL
    "0000 0510 08000000 08007000 10001000"  # AttributeIdentifierList (0008,0070) (0010,0010)
)

ECHO_RQ_CMD = Command(
    AffectedSOPClassUID="1.2.840.10008.1.1",
    CommandField=0x0030,
    MessageID=1,
    CommandDataSetType=0x0101,
)
ECHO_RSP_CMD = Command(
    AffectedSOPClassUID="1.2.840.10008.1.1",
    CommandField=0x8030,
    MessageIDBeingRespondedTo=1,
    CommandDataSetType=0x0101,
    Status=0x0000,
)
STORE_RQ_CMD = Command(
    AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
    CommandField=0x0001,
    MessageID=7,
    Priority=Priority.MEDIUM,
    CommandDataSetType=0x0001,
    AffectedSOPInstanceUID="1.2.3.4",
    MoveOriginatorApplicationEntityTitle="MOVESCU",
    MoveOriginatorMessageID=3,
)
FIND_RSP_CMD = Command(
    AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.1",
    CommandField=0x8020,
    MessageIDBeingRespondedTo=5,
    CommandDataSetType=0x0001,
    Status=0xFF00,
)
NGET_RQ_CMD = Command(
    RequestedSOPClassUID="1.2.3",
    CommandField=0x0110,
    MessageID=2,
    CommandDataSetType=0x0101,
    RequestedSOPInstanceUID="1.2.3.4",
    AttributeIdentifierList=(0x00080070, 0x00100010),
)

VECTORS = [
    pytest.param(ECHO_RQ_CMD, ECHO_RQ, id="C-ECHO-RQ"),
    pytest.param(ECHO_RSP_CMD, ECHO_RSP, id="C-ECHO-RSP"),
    pytest.param(STORE_RQ_CMD, STORE_RQ, id="C-STORE-RQ"),
    pytest.param(FIND_RSP_CMD, FIND_RSP, id="C-FIND-RSP"),
    pytest.param(NGET_RQ_CMD, NGET_RQ, id="N-GET-RQ"),
]


@pytest.mark.parametrize(("cmd", "encoded"), VECTORS)
def test_encode_vectors(cmd: Command, encoded: bytes) -> None:
    assert encode_command(cmd) == encoded


@pytest.mark.parametrize(("cmd", "encoded"), VECTORS)
def test_decode_vectors(cmd: Command, encoded: bytes) -> None:
    decoded = decode_command(encoded)
    assert decoded == cmd
    assert decode_command(memoryview(encoded)) == cmd
    assert decode_command(bytearray(encoded)) == cmd


def test_group_length_counts_the_rest() -> None:
    encoded = encode_command(STORE_RQ_CMD)
    assert encoded[:8] == bytes.fromhex("0000 0000 04000000")
    assert struct.unpack_from("<L", encoded, 8)[0] == len(encoded) - 12


def test_decoded_values_have_python_types() -> None:
    cmd = decode_command(STORE_RQ)
    assert cmd.AffectedSOPInstanceUID == "1.2.3.4"
    assert cmd.MoveOriginatorApplicationEntityTitle == "MOVESCU"
    assert cmd.MessageID == 7
    assert type(cmd.MessageID) is int
    assert decode_command(NGET_RQ).AttributeIdentifierList == (0x00080070, 0x00100010)
    assert "CommandGroupLength" not in cmd


def test_ae_is_padded_to_even_length_only() -> None:
    cmd = Command(MoveDestination="ABC")
    encoded = encode_command(cmd)
    assert encoded.endswith(bytes.fromhex("0000 0006 04000000") + b"ABC ")
    cmd.MoveDestination = "ABCD"
    assert encode_command(cmd).endswith(b"\x04\x00\x00\x00ABCD")


def test_text_padding_is_stripped_on_decode() -> None:
    def element(elem: int, raw: bytes) -> bytes:
        return struct.pack("<HHL", 0, elem, len(raw)) + raw

    data = (
        element(0x0002, b"1.2.3 ")  # UI wrongly padded with a space
        + element(0x0600, b"  DEST    ")  # AE: leading and trailing spaces insignificant
        + element(0x0902, b"bad thing   ")  # LO
    )
    cmd = decode_command(data)
    assert cmd.AffectedSOPClassUID == "1.2.3"
    assert cmd.MoveDestination == "DEST"
    assert cmd.ErrorComment == "bad thing"


def test_decode_accepts_elements_out_of_order_and_without_group_length() -> None:
    data = bytes.fromhex("0000 1001 02000000 01000000 0001 02000000 3000")
    assert decode_command(data) == Command(CommandField=0x0030, MessageID=1)
    assert decode_command(b"") == Command()


def test_unknown_group_0000_tags_are_kept_raw() -> None:
    data = ECHO_RQ + bytes.fromhex("0000 9900 04000000 deadbeef")
    cmd = decode_command(data)
    assert cmd.unknown_elements == {0x0099: bytes.fromhex("deadbeef")}
    assert dict(cmd) == dict(ECHO_RQ_CMD)
    assert cmd != ECHO_RQ_CMD
    assert decode_command(encode_command(cmd)) == cmd


def test_retired_elements_decode() -> None:
    data = bytes.fromhex(
        "0000 1000 04000000 4142 2020"  # CommandRecognitionCode (SH) "AB"
        "0000 5008 02000000 0700"  # NumberOfMatches (US)
        "0000 b051 04000000 0100 0200"  # Overlays (US, 1-n)
    )
    cmd = decode_command(data)
    assert cmd.CommandRecognitionCode == "AB"
    assert cmd.NumberOfMatches == 7
    assert cmd.Overlays == (1, 2)


def test_zero_length_numeric_element_is_absent() -> None:
    cmd = decode_command(bytes.fromhex("0000 3110 000000000000 0009 02000000 0000"))
    assert "MoveOriginatorMessageID" not in cmd
    assert cmd.Status == 0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(ECHO_RQ[:-1], "odd length|remain", id="last-value-truncated"),
        pytest.param(ECHO_RQ + b"\x00\x00\x00", "truncated", id="trailing-partial-header"),
        pytest.param(bytes.fromhex("0000 0001 0200"), "truncated", id="short-header"),
        pytest.param(bytes.fromhex("0000 0001 10000000 3000"), "remain", id="length-past-end"),
        pytest.param(bytes.fromhex("0000 0001 ffffffff 3000"), "remain", id="undefined-length"),
        pytest.param(bytes.fromhex("0000 0000 02000000 3800"), "UL", id="bad-UL-length"),
        pytest.param(bytes.fromhex("0000 0000 00000000"), "UL", id="empty-group-length"),
        pytest.param(bytes.fromhex("0000 0001 04000000 30000000"), "US", id="bad-US-length"),
        pytest.param(bytes.fromhex("0000 0006 03000000 414243"), "odd", id="odd-length"),
        pytest.param(bytes.fromhex("0800 1600 02000000 3100"), "outside", id="group-0008"),
        pytest.param(bytes.fromhex("0000 0200 02000000 31ff"), "non-ASCII", id="non-ascii-UI"),
        pytest.param(bytes.fromhex("0000 0109 02000000 0800"), "multiple of 4", id="bad-AT"),
        pytest.param(
            bytes.fromhex("0000 1001 02000000 01000000 1001 02000000 0200"),
            "twice",
            id="duplicate",
        ),
    ],
)
def test_decode_errors(data: bytes, match: str) -> None:
    with pytest.raises(CommandDecodeError, match=match):
        decode_command(data)


def test_decode_error_is_a_protocol_error() -> None:
    assert issubclass(CommandDecodeError, ProtocolError)


# --------------------------------------------------------------------------- Command API


def test_command_mapping_and_attribute_access() -> None:
    cmd = Command()
    cmd.MessageID = 3
    cmd["MoveDestination"] = "DEST"
    assert cmd["MessageID"] == 3
    assert cmd.MoveDestination == "DEST"
    assert "MoveDestination" in cmd
    assert "Status" not in cmd
    assert cmd.get("Status") is None
    assert cmd.get("Status", 0) == 0
    assert len(cmd) == 2
    del cmd.MoveDestination
    del cmd["MessageID"]
    assert len(cmd) == 0


def test_iteration_is_in_tag_order() -> None:
    cmd = Command(Status=0, CommandField=0x8030, AffectedSOPClassUID="1.2")
    assert list(cmd) == ["AffectedSOPClassUID", "CommandField", "Status"]


def test_absent_element_attribute_raises_attribute_error() -> None:
    cmd = Command()
    with pytest.raises(AttributeError, match="no Status element"):
        _ = cmd.Status
    with pytest.raises(AttributeError):
        _ = cmd.not_a_keyword
    with pytest.raises(KeyError):
        _ = cmd["Status"]
    with pytest.raises(AttributeError):
        del cmd.Status
    assert not hasattr(cmd, "Status")


def test_unknown_keyword_is_rejected_clearly() -> None:
    cmd = Command()
    with pytest.raises(AttributeError, match="not a DIMSE command element"):
        cmd.MesageID = 1
    with pytest.raises(KeyError, match="not a DIMSE command element"):
        cmd["PatientName"] = "X"
    with pytest.raises(KeyError):
        Command(Bogus=1)
    with pytest.raises(AttributeError, match="computed"):
        cmd.CommandGroupLength = 4


@pytest.mark.parametrize(
    ("keyword", "value", "exc"),
    [
        ("MessageID", "1", TypeError),
        ("MessageID", True, TypeError),
        ("MessageID", 0x10000, ValueError),
        ("MessageID", -1, ValueError),
        ("CommandLengthToEnd", 0x1_0000_0000, ValueError),
        ("AffectedSOPClassUID", 1, TypeError),
        ("AffectedSOPClassUID", "1." * 40, ValueError),
        ("MoveDestination", "ÄE", ValueError),
        ("MoveDestination", "X" * 17, ValueError),
        ("AttributeIdentifierList", 0x00100010, TypeError),
        ("AttributeIdentifierList", [0x1_0000_0000], ValueError),
    ],
)
def test_invalid_values_are_rejected(keyword: str, value: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        Command()[keyword] = value  # type: ignore[assignment]


def test_lists_are_stored_as_tuples() -> None:
    cmd = Command(OffendingElement=[0x00100010])
    assert cmd.OffendingElement == (0x00100010,)


def test_equality_and_copies() -> None:
    assert dict(ECHO_RQ_CMD) == ECHO_RQ_CMD
    assert ECHO_RQ_CMD != ECHO_RSP_CMD
    assert ECHO_RQ_CMD != 1
    for clone in (ECHO_RQ_CMD.copy(), copy.copy(ECHO_RQ_CMD), copy.deepcopy(ECHO_RQ_CMD)):
        assert clone == ECHO_RQ_CMD
        assert clone is not ECHO_RQ_CMD
    assert pickle.loads(pickle.dumps(STORE_RQ_CMD)) == STORE_RQ_CMD
    with pytest.raises(TypeError):
        hash(Command())


def test_repr_names_the_command_field() -> None:
    text = repr(ECHO_RQ_CMD)
    assert text.startswith("Command(")
    assert "CommandField=C-ECHO-RQ" in text
    assert "MessageID=1" in text


def test_make_command() -> None:
    cmd = make_command(CommandField.C_ECHO_RQ, MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1")
    assert cmd == ECHO_RQ_CMD
    assert not cmd.has_dataset
    assert encode_command(cmd) == ECHO_RQ
    stored = make_command(CommandField.C_STORE_RQ, has_dataset=True, MessageID=2)
    assert stored.CommandDataSetType == DATASET_PRESENT == 0x0001
    assert stored.has_dataset
    explicit = make_command(CommandField.C_FIND_RQ, CommandDataSetType=0x0102)
    assert explicit.has_dataset


@pytest.mark.parametrize(("value", "present"), [(0x0101, False), (0x0000, True), (0x0102, True)])
def test_has_dataset(value: int, present: bool) -> None:
    assert Command(CommandDataSetType=value).has_dataset is present
    assert NO_DATASET == 0x0101


def test_command_field_values_match_ps3_7() -> None:
    expected = {
        "C_STORE_RQ": 0x0001,
        "C_STORE_RSP": 0x8001,
        "C_GET_RQ": 0x0010,
        "C_GET_RSP": 0x8010,
        "C_FIND_RQ": 0x0020,
        "C_FIND_RSP": 0x8020,
        "C_MOVE_RQ": 0x0021,
        "C_MOVE_RSP": 0x8021,
        "C_ECHO_RQ": 0x0030,
        "C_ECHO_RSP": 0x8030,
        "N_EVENT_REPORT_RQ": 0x0100,
        "N_EVENT_REPORT_RSP": 0x8100,
        "N_GET_RQ": 0x0110,
        "N_GET_RSP": 0x8110,
        "N_SET_RQ": 0x0120,
        "N_SET_RSP": 0x8120,
        "N_ACTION_RQ": 0x0130,
        "N_ACTION_RSP": 0x8130,
        "N_CREATE_RQ": 0x0140,
        "N_CREATE_RSP": 0x8140,
        "N_DELETE_RQ": 0x0150,
        "N_DELETE_RSP": 0x8150,
        "C_CANCEL_RQ": 0x0FFF,
    }
    assert {f.name: f.value for f in CommandField} == expected
    for field in CommandField:
        assert field.is_response is field.name.endswith("RSP")
        assert is_response(field) is field.is_response
    assert CommandField.N_EVENT_REPORT_RQ.label == "N-EVENT-REPORT-RQ"


def test_priority_values() -> None:
    assert (Priority.LOW, Priority.MEDIUM, Priority.HIGH) == (2, 0, 1)


def test_element_table_is_sorted_and_unique() -> None:
    tags = [e.tag for e in COMMAND_ELEMENTS]
    assert tags == sorted(set(tags))
    assert all(tag >> 16 == 0 for tag in tags)
    keywords = {e.keyword: e.vr for e in COMMAND_ELEMENTS if not e.retired}
    assert keywords["OffendingElement"] == "AT"
    assert keywords["ErrorComment"] == "LO"
    assert keywords["MoveOriginatorApplicationEntityTitle"] == "AE"
    assert len(keywords) == 24


def test_table_agrees_with_pydicom_dictionary() -> None:
    from pydicom.datadict import dictionary_keyword, dictionary_VR

    for element in COMMAND_ELEMENTS:
        assert dictionary_keyword(element.tag) == element.keyword
        assert dictionary_VR(element.tag) == element.vr


# --------------------------------------------------------------------------- properties

_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


def _value_strategy(vr: str, multi: bool) -> st.SearchStrategy[object]:
    if vr == "UI":
        return st.lists(st.integers(0, 99999), min_size=1, max_size=8).map(
            lambda parts: ".".join(map(str, parts))
        )
    if vr == "AE":
        return st.text(string.ascii_uppercase + string.digits + " _-", max_size=16).map(
            lambda s: s.strip(" ")
        )
    if vr in ("CS", "SH", "LO", "IS"):
        return st.text(_PRINTABLE, max_size=12).map(lambda s: s.strip(" "))
    if vr == "LT":
        return st.text(_PRINTABLE, max_size=12).map(lambda s: s.rstrip(" "))
    if vr == "AT":
        return st.lists(st.integers(0, 0xFFFF_FFFF), max_size=4).map(tuple)
    if multi:
        return st.lists(st.integers(0, 0xFFFF), max_size=4).map(tuple)
    return st.integers(0, 0xFFFF if vr == "US" else 0xFFFF_FFFF)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    cmd = Command()
    chosen = draw(st.sets(st.sampled_from(COMMAND_ELEMENTS[1:]), max_size=12))
    for element in chosen:
        value = draw(_value_strategy(element.vr, element.multi))
        cmd[element.keyword] = value  # type: ignore[assignment]
    return cmd


@given(commands())
def test_roundtrip(cmd: Command) -> None:
    encoded = encode_command(cmd)
    decoded = decode_command(encoded)
    assert decoded == cmd
    assert encode_command(decoded) == encoded
    assert len(encoded) % 2 == 0


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(CommandDecodeError):
        decode_command(data)


@given(commands(), st.data())
def test_mutated_encodings_raise_only_decode_errors(cmd: Command, data: st.DataObject) -> None:
    encoded = bytearray(encode_command(cmd))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    with contextlib.suppress(CommandDecodeError):
        decode_command(bytes(encoded[:cut]))
