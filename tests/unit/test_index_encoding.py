"""Response identifiers written directly match pydicom's encoding, byte for byte."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aionetdicom.datasets import decode_dataset, encode_dataset
from aionetdicom.index.database import _dataset
from aionetdicom.index.encoding import encode_identifier

IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"

KEYS = [
    (0x00080005, "CS"),
    (0x00080020, "DA"),
    (0x00080030, "TM"),
    (0x00080050, "SH"),
    (0x00080052, "CS"),
    (0x00080061, "CS"),
    (0x00081030, "LO"),
    (0x00100010, "PN"),
    (0x00100020, "LO"),
    (0x00104000, "LT"),
    (0x0020000D, "UI"),
    (0x00200011, "IS"),
    (0x00201208, "IS"),
    (0x00280010, "US"),
    (0x00400275, "SQ"),
]
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"),
    max_size=20,
)


def _value(vr: str) -> st.SearchStrategy[object]:
    if vr == "US":
        return st.one_of(st.none(), st.integers(0, 0xFFFF))
    if vr == "SQ":
        return st.none()
    if vr == "UI":
        return st.one_of(
            st.none(), st.from_regex(r"[1-9][0-9]{0,5}(\.[1-9][0-9]{0,5}){1,6}", fullmatch=True)
        )
    if vr in ("DA", "TM", "IS"):  # what the index holds for these: digits
        single = st.from_regex(r"[0-9]{1,8}", fullmatch=True)
    elif vr == "CS":
        single = st.from_regex(r"[0-9A-Z_]{1,12}", fullmatch=True)
    else:
        single = _TEXT.map(lambda text: text.strip(" ")).filter(bool)
    return st.one_of(st.none(), single, st.lists(single, min_size=2, max_size=3).map("\\".join))


@st.composite
def responses(draw: st.DrawFn) -> list[tuple[int, str, object]]:
    chosen = draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=1, max_size=len(KEYS)))
    elements = [(tag, vr, draw(_value(vr))) for tag, vr in chosen]
    charset = [e for e in elements if e[0] == 0x00080005]
    if charset:  # the index always declares UTF-8
        elements.remove(charset[0])
    return [(0x00080005, "CS", "ISO_IR 192"), *elements]


@settings(max_examples=150, deadline=None)
@given(responses(), st.booleans())
def test_same_bytes_as_pydicom(elements: list[tuple[int, str, object]], implicit: bool) -> None:
    syntax = IMPLICIT if implicit else EXPLICIT
    ours = encode_identifier(elements, implicit=implicit)  # type: ignore[arg-type]
    assert ours == encode_dataset(_dataset(elements), syntax)  # type: ignore[arg-type]
    decoded = decode_dataset(ours, syntax)
    for tag, _, value in elements:
        if value not in (None, "") and tag != 0x00400275:
            assert decoded[tag].value is not None


def test_a_known_vector() -> None:
    """Explicit VR LE: tag, VR, 2-byte length, value padded to even length."""
    data = encode_identifier(
        [(0x00100010, "PN", "Doe^J"), (0x0020000D, "UI", "1.23"), (0x00280010, "US", 512)],
        implicit=False,
    )
    assert data == (
        b"\x10\x00\x10\x00PN\x06\x00Doe^J "
        b"\x20\x00\x0d\x00UI\x04\x001.23"
        b"\x28\x00\x10\x00US\x02\x00\x00\x02"
    )
    implicit = encode_identifier([(0x0020000D, "UI", "1.2.3")], implicit=True)
    assert implicit == b"\x20\x00\x0d\x00\x06\x00\x00\x001.2.3\x00"
