"""prefix_end: where a data set's leading elements end, found from its first bytes only.

Byte-exact vectors built by hand for Implicit VR Little Endian, Explicit VR Little
Endian and Explicit VR Big Endian (short and long VRs, sequences and items of defined
and undefined length, nested), each checked at every truncation point; the nesting
limit; and property tests on data sets pydicom writes in each encoding.
"""

from __future__ import annotations

import string
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from aionetdicom.dataset_prefix import MAX_NESTING, PIXEL_DATA, prefix_end
from aionetdicom.datasets import DatasetError

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
LONG_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")

# Tags used in the vectors.
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
REFERENCED_SOP_INSTANCE_UID = 0x00081155
REFERENCED_IMAGE_SEQUENCE = 0x00081140
REFERENCED_SERIES_SEQUENCE = 0x00081115
RETRIEVE_URL = 0x00081190
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
ROWS = 0x00280010
ICC_PROFILE = 0x00282000
RED_LUT_DATA = 0x00281201
PRIVATE_UN = 0x00091001
TEXT_VALUE = 0x0040A160
CONTENT_SEQUENCE = 0x0040A730
FLOAT_PIXEL_DATA = 0x7FE00008
TRAILING_PADDING = 0xFFFCFFFC


@dataclass(frozen=True)
class Encoding:
    """One of the three uncompressed encodings, with hand-written element builders."""

    name: str
    implicit: bool
    little: bool

    @property
    def order(self) -> str:
        return "<" if self.little else ">"

    def tag(self, tag: int) -> bytes:
        return struct.pack(self.order + "HH", tag >> 16, tag & 0xFFFF)

    def element(self, tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
        """Tag, (VR,) length and value; ``length`` overrides the value's length."""
        size = len(value) if length is None else length
        if self.implicit:
            return self.tag(tag) + struct.pack(self.order + "L", size) + value
        if vr in LONG_VRS:
            return (
                self.tag(tag) + vr.encode() + b"\0\0" + struct.pack(self.order + "L", size) + value
            )
        return self.tag(tag) + vr.encode() + struct.pack(self.order + "H", size) + value

    def delimiter(self, tag: int, length: int = 0) -> bytes:
        """An item, item delimitation or sequence delimitation header (never a VR)."""
        return self.tag(tag) + struct.pack(self.order + "L", length)

    def item(self, body: bytes, *, defined: bool) -> bytes:
        if defined:
            return self.delimiter(ITEM, len(body)) + body
        return self.delimiter(ITEM, UNDEFINED) + body + self.delimiter(ITEM_END)

    def sequence(self, tag: int, items: list[bytes], *, defined: bool) -> bytes:
        body = b"".join(items)
        if defined:
            return self.element(tag, "SQ", body)
        return self.element(tag, "SQ", body, UNDEFINED) + self.delimiter(SEQUENCE_END)


IMPLICIT_LE = Encoding("implicit-le", implicit=True, little=True)
EXPLICIT_LE = Encoding("explicit-le", implicit=False, little=True)
EXPLICIT_BE = Encoding("explicit-be", implicit=False, little=False)
ENCODINGS = [IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE]


def end_of(
    data: bytes | bytearray | memoryview, enc: Encoding, stop_tag: int = PIXEL_DATA
) -> int | None:
    return prefix_end(data, implicit=enc.implicit, little=enc.little, stop_tag=stop_tag)


def assert_every_truncation(
    data: bytes, enc: Encoding, expected: int, stop_tag: int = PIXEL_DATA
) -> None:
    """None until the stop element's tag is complete, then ``expected``, never an error."""
    for size in range(len(data) + 1):
        want = expected if size >= expected + 4 else None
        assert end_of(data[:size], enc, stop_tag) == want, f"truncated to {size} bytes"


def pixel_data(enc: Encoding, value: bytes = b"\x01\x02\x03\x04") -> bytes:
    return enc.element(PIXEL_DATA, "OW", value)


# ------------------------------------------------------------------ literal vectors


LITERAL_VECTORS = [
    # (0010,0010) PN "AB^C", then (7FE0,0010) OW 2 bytes: Pixel Data at 12.
    pytest.param(
        IMPLICIT_LE,
        bytes.fromhex("10001000 04000000") + b"AB^C" + bytes.fromhex("e07f1000 02000000 0000"),
        12,
        id="implicit-le",
    ),
    pytest.param(
        EXPLICIT_LE,
        bytes.fromhex("10001000")
        + b"PN"
        + bytes.fromhex("0400")
        + b"AB^C"
        + bytes.fromhex("e07f1000")
        + b"OW"
        + bytes.fromhex("0000 02000000 0000"),
        12,
        id="explicit-le",
    ),
    pytest.param(
        EXPLICIT_BE,
        bytes.fromhex("00100010")
        + b"PN"
        + bytes.fromhex("0004")
        + b"AB^C"
        + bytes.fromhex("7fe00010")
        + b"OW"
        + bytes.fromhex("0000 00000002 0000"),
        12,
        id="explicit-be",
    ),
    # (0008,1115) SQ undefined length: one undefined-length item holding (0008,1150)
    # UI "1.2", item delimiter, sequence delimiter; Pixel Data at 48.
    pytest.param(
        EXPLICIT_LE,
        bytes.fromhex("08001511")
        + b"SQ"
        + bytes.fromhex("0000 ffffffff")
        + bytes.fromhex("feff00e0 ffffffff")
        + bytes.fromhex("08005011")
        + b"UI"
        + bytes.fromhex("0400")
        + b"1.2\0"
        + bytes.fromhex("feff0de0 00000000")
        + bytes.fromhex("feffdde0 00000000")
        + bytes.fromhex("e07f1000")
        + b"OB"
        + bytes.fromhex("0000 00000000"),
        48,
        id="explicit-le-undefined-sequence",
    ),
    pytest.param(
        IMPLICIT_LE,
        bytes.fromhex("08001511 ffffffff")
        + bytes.fromhex("feff00e0 ffffffff")
        + bytes.fromhex("08005011 04000000")
        + b"1.2\0"
        + bytes.fromhex("feff0de0 00000000")
        + bytes.fromhex("feffdde0 00000000")
        + bytes.fromhex("e07f1000 00000000"),
        44,
        id="implicit-le-undefined-sequence",
    ),
    pytest.param(
        EXPLICIT_BE,
        bytes.fromhex("00081115")
        + b"SQ"
        + bytes.fromhex("0000 ffffffff")
        + bytes.fromhex("fffee000 0000000c")  # a defined-length item of 12 bytes
        + bytes.fromhex("00081150")
        + b"UI"
        + bytes.fromhex("0004")
        + b"1.2\0"
        + bytes.fromhex("fffee0dd 00000000")
        + bytes.fromhex("7fe00010")
        + b"OW"
        + bytes.fromhex("0000 00000000"),
        40,
        id="explicit-be-defined-item",
    ),
    # A long VR (OB) whose 4-byte length would be misread as a 2-byte one (0) and a
    # short VR (US) whose 2-byte length would be misread as a 4-byte one.
    pytest.param(
        EXPLICIT_LE,
        bytes.fromhex("28001000")
        + b"US"
        + bytes.fromhex("0200 0002")
        + bytes.fromhex("28000020")
        + b"OB"
        + bytes.fromhex("0000 06000000")
        + b"\0" * 6
        + bytes.fromhex("e07f1000")
        + b"OW"
        + bytes.fromhex("0000 00000000"),
        28,
        id="explicit-le-long-and-short",
    ),
]


@pytest.mark.parametrize(("enc", "data", "expected"), LITERAL_VECTORS)
def test_literal_vectors(enc: Encoding, data: bytes, expected: int) -> None:
    assert end_of(data, enc) == expected
    assert end_of(bytearray(data), enc) == expected
    assert end_of(memoryview(data), enc) == expected
    assert_every_truncation(data, enc, expected)


def test_builders_match_the_literal_vectors() -> None:
    """The element builders the other vectors use write exactly the bytes above."""
    assert (
        IMPLICIT_LE.element(PATIENT_NAME, "PN", b"AB^C")
        == bytes.fromhex("10001000 04000000") + b"AB^C"
    )
    assert (
        EXPLICIT_LE.element(PATIENT_NAME, "PN", b"AB^C")
        == bytes.fromhex("10001000 50 4e 0400") + b"AB^C"
    )
    assert EXPLICIT_BE.element(ICC_PROFILE, "OB", b"\1\2") == bytes.fromhex(
        "00282000 4f42 0000 00000002 0102"
    )
    assert EXPLICIT_BE.item(b"", defined=False) == bytes.fromhex(
        "fffee000 ffffffff fffee00d 00000000"
    )
    assert EXPLICIT_LE.sequence(REFERENCED_SERIES_SEQUENCE, [], defined=False) == (
        bytes.fromhex("08001511 5351 0000 ffffffff feffdde0 00000000")
    )


# ------------------------------------------------------------------ built vectors


def simple_elements(enc: Encoding) -> bytes:
    return b"".join(
        [
            enc.element(SOP_CLASS_UID, "UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            enc.element(SOP_INSTANCE_UID, "UI", b"1.2.3.4\0"),
            enc.element(PATIENT_NAME, "PN", b"Doe^John"),
            enc.element(PATIENT_ID, "LO", b""),  # zero length
            enc.element(ROWS, "US", struct.pack(enc.order + "H", 512)),
        ]
    )


def long_vr_elements(enc: Encoding) -> bytes:
    return b"".join(
        [
            enc.element(PRIVATE_UN, "UN", b"\xff" * 10),
            enc.element(RETRIEVE_URL, "UR", b"http://example.org/x "),
            enc.element(RED_LUT_DATA, "OW", b"\x00\x01" * 40),
            enc.element(ICC_PROFILE, "OB", bytes(range(256)) * 2),  # 512 > 255
            enc.element(TEXT_VALUE, "UT", b"free text " * 30),
        ]
    )


def defined_sequences(enc: Encoding) -> bytes:
    inner = enc.element(REFERENCED_SOP_INSTANCE_UID, "UI", b"1.2.3\0")
    nested = enc.sequence(
        REFERENCED_IMAGE_SEQUENCE, [enc.item(inner, defined=True)] * 2, defined=True
    )
    return enc.sequence(
        REFERENCED_SERIES_SEQUENCE,
        [enc.item(inner + nested, defined=True), enc.item(b"", defined=True)],
        defined=True,
    )


def undefined_sequences(enc: Encoding) -> bytes:
    inner = enc.element(REFERENCED_SOP_INSTANCE_UID, "UI", b"1.2.3\0")
    deepest = enc.sequence(
        CONTENT_SEQUENCE,
        [enc.item(enc.element(TEXT_VALUE, "UT", b"deep"), defined=False)],
        defined=False,
    )
    middle = enc.sequence(
        REFERENCED_IMAGE_SEQUENCE,
        [
            enc.item(inner + deepest, defined=False),
            enc.item(inner, defined=True),  # defined items among undefined ones
            enc.item(b"", defined=False),  # an empty item
        ],
        defined=False,
    )
    return b"".join(
        [
            enc.sequence(
                REFERENCED_SERIES_SEQUENCE, [enc.item(middle, defined=False)], defined=False
            ),
            enc.sequence(0x00081199, [], defined=False),  # empty: the delimiter alone
        ]
    )


def mixed_sequences(enc: Encoding) -> bytes:
    """Undefined inside defined inside undefined lengths."""
    undefined_inside = enc.sequence(
        CONTENT_SEQUENCE,
        [enc.item(enc.element(PATIENT_ID, "LO", b"ID"), defined=False)],
        defined=False,
    )
    defined_outside = enc.sequence(
        REFERENCED_IMAGE_SEQUENCE, [enc.item(undefined_inside, defined=True)], defined=True
    )
    return enc.sequence(
        REFERENCED_SERIES_SEQUENCE, [enc.item(defined_outside, defined=False)], defined=False
    )


BUILDERS: dict[str, Callable[[Encoding], bytes]] = {
    "simple": simple_elements,
    "long-vrs": long_vr_elements,
    "defined-sequences": defined_sequences,
    "undefined-sequences": undefined_sequences,
    "mixed-sequences": mixed_sequences,
    "everything": lambda enc: (
        simple_elements(enc)
        + defined_sequences(enc)
        + undefined_sequences(enc)
        + long_vr_elements(enc)
    ),
}


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
@pytest.mark.parametrize("builder", list(BUILDERS), ids=str)
def test_stops_at_pixel_data(enc: Encoding, builder: str) -> None:
    prefix = BUILDERS[builder](enc)
    data = prefix + pixel_data(enc) + enc.element(TRAILING_PADDING, "OB", b"\0\0")
    assert end_of(data, enc) == len(prefix)
    assert_every_truncation(data, enc, len(prefix))


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_without_the_stop_element(enc: Encoding) -> None:
    """A whole data set with no element at or above the stop tag: None (no more to say)."""
    data = simple_elements(enc) + undefined_sequences(enc)
    assert end_of(data, enc) is None
    assert end_of(b"", enc) is None


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_other_stop_tags(enc: Encoding) -> None:
    first = enc.element(SOP_INSTANCE_UID, "UI", b"1.2.3.4\0")
    seq = enc.sequence(
        REFERENCED_SERIES_SEQUENCE,
        # Nested elements at or above the stop tag do not count: only top level.
        [enc.item(enc.element(STUDY_INSTANCE_UID, "UI", b"9.9\0"), defined=False)],
        defined=False,
    )
    name = enc.element(PATIENT_NAME, "PN", b"Doe^Jane")
    study = enc.element(STUDY_INSTANCE_UID, "UI", b"1.2.3\0")
    data = first + seq + name + study + pixel_data(enc)
    # Exactly a tag, between two tags, below the first one.
    assert end_of(data, enc, PATIENT_NAME) == len(first + seq)
    assert end_of(data, enc, STUDY_INSTANCE_UID) == len(first + seq + name)
    assert end_of(data, enc, 0x00100011) == len(first + seq + name)
    assert end_of(data, enc, 0x00080019) == len(first)
    assert end_of(data, enc, 0) == 0
    assert end_of(data, enc, FLOAT_PIXEL_DATA) == len(first + seq + name + study)
    assert end_of(data, enc, 0x7FE00011) is None
    assert_every_truncation(data, enc, len(first + seq), PATIENT_NAME)
    assert_every_truncation(data, enc, len(first + seq + name), STUDY_INSTANCE_UID)


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_encapsulated_pixel_data_is_walked_to_its_delimiter(enc: Encoding) -> None:
    """Undefined-length OB (encapsulated frames: defined items, then the delimiter)."""
    frames = [enc.item(b"", defined=True), enc.item(b"\xff\xd8" * 9, defined=True)]
    encapsulated = enc.element(PIXEL_DATA, "OB", b"".join(frames), UNDEFINED) + enc.delimiter(
        SEQUENCE_END
    )
    prefix = simple_elements(enc) + encapsulated
    data = prefix + enc.element(TRAILING_PADDING, "OB", b"\0" * 4)
    assert end_of(data, enc, TRAILING_PADDING) == len(prefix)
    assert_every_truncation(data, enc, len(prefix), TRAILING_PADDING)


# A private sequence of unknown VR, sent as UN of undefined length: in Explicit VR its
# value is Implicit VR Little Endian whatever the transfer syntax (PS3.5 6.2.2), up to
# and including the Sequence Delimitation Item. (0009,1010) UN, undefined length: one
# undefined-length item holding (0009,1011) of 10 bytes and a nested undefined-length
# sequence (0009,1012) with one empty item; then Pixel Data.
UN_ITEMS = (
    bytes.fromhex("feff00e0 ffffffff")  # item, undefined length
    + bytes.fromhex("09001110 0a000000")
    + b"0123456789"
    + bytes.fromhex("09001210 ffffffff")  # nested sequence, undefined length
    + bytes.fromhex("feff00e0 ffffffff feff0de0 00000000")
    + bytes.fromhex("feffdde0 00000000")
    + bytes.fromhex("feff0de0 00000000")  # end of the item
    + bytes.fromhex("feffdde0 00000000")  # end of the UN value
)
UN_VECTORS = [
    pytest.param(
        EXPLICIT_LE,
        bytes.fromhex("09001000")
        + b"LO"
        + bytes.fromhex("0400")
        + b"PRIV"
        + bytes.fromhex("09001010")
        + b"UN"
        + bytes.fromhex("0000 ffffffff")
        + UN_ITEMS
        + bytes.fromhex("e07f1000")
        + b"OW"
        + bytes.fromhex("0000 02000000 0000"),
        12 + 12 + len(UN_ITEMS),
        id="explicit-le",
    ),
    pytest.param(
        EXPLICIT_BE,
        bytes.fromhex("00090010")
        + b"LO"
        + bytes.fromhex("0004")
        + b"PRIV"
        + bytes.fromhex("00091010")
        + b"UN"
        + bytes.fromhex("0000 ffffffff")
        + UN_ITEMS
        + bytes.fromhex("7fe00010")
        + b"OW"
        + bytes.fromhex("0000 00000002 0000"),
        12 + 12 + len(UN_ITEMS),
        id="explicit-be",
    ),
]


@pytest.mark.parametrize(("enc", "data", "expected"), UN_VECTORS)
def test_undefined_length_un_is_walked_as_implicit_little_endian(
    enc: Encoding, data: bytes, expected: int
) -> None:
    assert data[expected : expected + 4] == enc.tag(PIXEL_DATA)
    assert end_of(data, enc) == expected
    assert_every_truncation(data, enc, expected)
    # Only its value: the elements after it are explicit VR again.
    after = enc.element(PATIENT_NAME, "PN", b"AB^C")
    longer = data[:expected] + after + data[expected:]
    assert end_of(longer, enc, PATIENT_NAME) == expected
    assert end_of(longer, enc) == expected + len(after)


def test_undefined_length_un_is_what_pydicom_reads() -> None:
    """pydicom reads the Explicit VR Little Endian vector the same way."""
    from pydicom.filereader import read_dataset

    data = UN_VECTORS[0].values[1]
    assert isinstance(data, bytes)
    ds = read_dataset(DicomBytesIO(data), is_implicit_VR=False, is_little_endian=True)
    assert [element.tag for element in ds] == [0x00090010, 0x00091010, PIXEL_DATA]
    (item,) = ds[0x00091010].value
    assert item[0x00091011].value == b"0123456789"


def test_undefined_length_un_nesting_counts_towards_the_limit() -> None:
    """Sequences nested inside a UN value count towards MAX_NESTING like any other."""
    body = b""
    for _ in range(MAX_NESTING):  # implicit VR LE sequences, each in an item
        body = (
            bytes.fromhex("09001210 ffffffff feff00e0 ffffffff")
            + body
            + bytes.fromhex("feff0de0 00000000 feffdde0 00000000")
        )
    un = (
        EXPLICIT_LE.element(0x00091010, "UN", b"", UNDEFINED)
        + EXPLICIT_LE.delimiter(ITEM, UNDEFINED)
        + body
        + EXPLICIT_LE.delimiter(ITEM_END)
        + EXPLICIT_LE.delimiter(SEQUENCE_END)
    )
    with pytest.raises(DatasetError, match=f"nested deeper than {MAX_NESTING} levels"):
        end_of(un + pixel_data(EXPLICIT_LE), EXPLICIT_LE)
    shallower = body[16:-16]  # one level less: within the limit
    un = (
        EXPLICIT_LE.element(0x00091010, "UN", b"", UNDEFINED)
        + EXPLICIT_LE.delimiter(ITEM, UNDEFINED)
        + shallower
        + EXPLICIT_LE.delimiter(ITEM_END)
        + EXPLICIT_LE.delimiter(SEQUENCE_END)
    )
    assert end_of(un + pixel_data(EXPLICIT_LE), EXPLICIT_LE) == len(un)


@pytest.mark.parametrize("enc", [EXPLICIT_LE, EXPLICIT_BE], ids=lambda enc: enc.name)
def test_undefined_length_ob_keeps_the_transfer_syntax(enc: Encoding) -> None:
    """Only UN switches to implicit VR LE: encapsulated OB items stay in the syntax's
    byte order (a Big Endian item length misread as little endian would overrun)."""
    frames = [enc.item(b"\x01" * 6, defined=True)]
    value = enc.element(0x00091010, "OB", b"".join(frames), UNDEFINED) + enc.delimiter(SEQUENCE_END)
    data = value + pixel_data(enc)
    assert end_of(data, enc) == len(value)
    assert_every_truncation(data, enc, len(value))


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_huge_declared_length_needs_more(enc: Encoding) -> None:
    """A length beyond the data is not an error: more bytes are needed."""
    data = enc.element(ICC_PROFILE, "OB", b"\0" * 8, 0xFFFFFFF0) + pixel_data(enc)
    assert end_of(data, enc) is None


# ------------------------------------------------------------------ malformed structure


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_a_non_item_in_a_sequence_is_an_error(enc: Encoding) -> None:
    header = enc.element(REFERENCED_SERIES_SEQUENCE, "SQ", b"", UNDEFINED)
    data = header + enc.element(PATIENT_NAME, "PN", b"AB") + enc.delimiter(SEQUENCE_END)
    data += pixel_data(enc)
    with pytest.raises(DatasetError, match=r"expected an item \(FFFE,E000\).*\(0010,0010\)"):
        end_of(data, enc)
    # Before the stray tag is complete, more data is simply needed.
    for size in range(len(header) + 4):
        assert end_of(data[:size], enc) is None


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_a_sequence_delimiter_inside_an_item_is_an_error(enc: Encoding) -> None:
    data = (
        enc.element(REFERENCED_SERIES_SEQUENCE, "SQ", b"", UNDEFINED)
        + enc.delimiter(ITEM, UNDEFINED)
        + enc.delimiter(SEQUENCE_END)
        + pixel_data(enc)
    )
    with pytest.raises(DatasetError, match=r"unexpected \(FFFE,E0DD\) inside an item"):
        end_of(data, enc)


def nested(enc: Encoding, levels: int, *, defined: bool = False) -> bytes:
    """``levels`` sequences, each in an item of the one around it."""
    body = enc.element(PATIENT_ID, "LO", b"ID")
    for _ in range(levels):
        body = enc.sequence(CONTENT_SEQUENCE, [enc.item(body, defined=defined)], defined=defined)
    return body


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_nesting_up_to_the_limit_is_walked(enc: Encoding) -> None:
    prefix = nested(enc, MAX_NESTING)
    assert end_of(prefix + pixel_data(enc), enc) == len(prefix)


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 10_000])
def test_nesting_beyond_the_limit_is_an_error(enc: Encoding, levels: int) -> None:
    data = nested(enc, levels) + pixel_data(enc)
    with pytest.raises(DatasetError, match=f"nested deeper than {MAX_NESTING} levels"):
        end_of(data, enc)


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda enc: enc.name)
def test_nesting_in_defined_lengths_is_skipped_not_walked(enc: Encoding) -> None:
    """Defined lengths are skipped over whole, however deep what they hold."""
    prefix = nested(enc, 500, defined=True)
    assert end_of(prefix + pixel_data(enc), enc) == len(prefix)


# ------------------------------------------------------------------ pydicom property tests

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_TEXT = string.ascii_letters + string.digits + " .-_"


def _tags(vr: str) -> list[int]:
    """Standard tags with ``vr`` and one value, below Pixel Data, outside group 0002."""
    found = [
        tag
        for tag, entry in DicomDictionary.items()
        if entry[0] == vr
        and entry[1] == "1"
        and 0x00080000 <= tag < PIXEL_DATA
        and tag >> 16 != 0x0002
        and "x" not in f"{tag:08x}"
    ]
    return sorted(found)[:40]


_uids = st.lists(st.integers(0, 99999).map(str), min_size=2, max_size=6).map(".".join)
_VALUES: dict[str, st.SearchStrategy[object]] = {
    "AE": st.text(string.ascii_uppercase, max_size=16),
    "AS": st.sampled_from(["045Y", "003M"]),
    "AT": st.integers(0, 0xFFFFFFFF),
    "CS": st.text(string.ascii_uppercase + string.digits + "_ ", max_size=16),
    "DA": st.sampled_from(["20240102", "19700101", ""]),
    "DS": st.integers(-9999, 9999).map(str),
    "DT": st.sampled_from(["20240102101500", ""]),
    "FD": st.floats(allow_nan=False, allow_infinity=False),
    "FL": st.floats(allow_nan=False, allow_infinity=False, width=32),
    "IS": st.integers(-99999, 99999).map(str),
    "LO": st.text(_TEXT, max_size=64),
    "LT": st.text(_TEXT, max_size=300),
    "OB": st.binary(max_size=300),
    "OD": st.binary(max_size=40).map(lambda b: b[: len(b) // 8 * 8]),
    "OF": st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]),
    "OW": st.binary(max_size=300).map(lambda b: b[: len(b) // 2 * 2]),
    "PN": st.text(string.ascii_letters + "^", max_size=40),
    "SH": st.text(_TEXT, max_size=16),
    "SL": st.integers(-(2**31), 2**31 - 1),
    "SS": st.integers(-(2**15), 2**15 - 1),
    "ST": st.text(_TEXT, max_size=300),
    "TM": st.sampled_from(["101500", "235959.123", ""]),
    "UC": st.text(_TEXT, max_size=80),
    "UI": _uids,
    "UL": st.integers(0, 2**32 - 1),
    "UR": st.sampled_from(["http://example.org/a", ""]),
    "US": st.integers(0, 2**16 - 1),
    "UT": st.text(_TEXT, max_size=300),
}
_SIMPLE = [(vr, tag) for vr in sorted(_VALUES) for tag in _tags(vr)]
_SEQUENCE_TAGS = _tags("SQ")


@st.composite
def simple_element(draw: st.DrawFn) -> DataElement:
    vr, tag = draw(st.sampled_from(_SIMPLE))
    return DataElement(tag, vr, draw(_VALUES[vr]))


def datasets(depth: int) -> st.SearchStrategy[Dataset]:
    elements: st.SearchStrategy[DataElement] = simple_element()
    if depth > 0:
        elements = st.one_of(elements, sequence_element(depth))

    def build(items: list[DataElement], undefined_item: bool) -> Dataset:
        ds = Dataset()
        for element in items:
            ds.add(element)
        ds.is_undefined_length_sequence_item = undefined_item
        return ds

    return st.builds(build, st.lists(elements, max_size=6), st.booleans())


@st.composite
def sequence_element(draw: st.DrawFn, depth: int) -> DataElement:
    tag = draw(st.sampled_from(_SEQUENCE_TAGS))
    items = draw(st.lists(datasets(depth - 1), max_size=3))
    element = DataElement(tag, "SQ", Sequence(items))
    element.is_undefined_length = draw(st.booleans())
    return element


def encode(ds: Dataset, enc: Encoding) -> bytes:
    """``ds`` written by pydicom in ``enc``."""
    fp = DicomBytesIO()
    fp.is_little_endian = enc.little
    fp.is_implicit_VR = enc.implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def with_pixel_data(ds: Dataset, pixels: bytes, trailing: bool) -> Dataset:
    full = Dataset()
    full.update(ds)
    full.add(DataElement(PIXEL_DATA, "OW", pixels))
    if trailing:
        full.add(DataElement(TRAILING_PADDING, "OB", b"\0\0"))
    return full


@PROPERTY_SETTINGS
@given(
    ds=datasets(depth=3),
    enc=st.sampled_from(ENCODINGS),
    pixels=st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2]),
    trailing=st.booleans(),
)
def test_pydicom_data_sets_stop_at_pixel_data(
    ds: Dataset, enc: Encoding, pixels: bytes, trailing: bool
) -> None:
    prefix = encode(ds, enc)
    data = encode(with_pixel_data(ds, pixels, trailing), enc)
    assert data.startswith(prefix)
    offset = len(prefix)
    assert data[offset : offset + 4] == enc.tag(PIXEL_DATA)
    assert end_of(data, enc) == offset
    # Every truncation: None, or the same offset once its tag is there; never an error.
    for size in range(len(data)):
        result = end_of(data[:size], enc)
        assert result in (None, offset)
        assert (result is None) == (size < offset + 4)


@PROPERTY_SETTINGS
@given(ds=datasets(depth=2), enc=st.sampled_from(ENCODINGS), stop=st.integers(0, PIXEL_DATA))
def test_pydicom_data_sets_stop_at_any_top_level_tag(ds: Dataset, enc: Encoding, stop: int) -> None:
    """The offset is where the first top-level element at or above ``stop`` starts."""
    data = encode(ds, enc)
    tags = [element.tag for element in ds]
    before = Dataset()
    before.update({tag: ds[tag] for tag in tags if tag < stop})
    expected = len(encode(before, enc))
    found = end_of(data, enc, stop)
    if any(tag >= stop for tag in tags):
        assert found == expected
    else:
        assert found is None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), enc=st.sampled_from(ENCODINGS), stop=st.integers(0, 2**32 - 1))
def test_arbitrary_bytes_give_an_offset_none_or_dataset_error(
    data: bytes, enc: Encoding, stop: int
) -> None:
    try:
        found = end_of(data, enc, stop)
    except DatasetError:
        return
    assert found is None or 0 <= found <= len(data) - 4
