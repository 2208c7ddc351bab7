"""Property tests of the PDU codec and framer: round trips, arbitrary framing, fuzzing."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aionetdicom.errors import PDUDecodeError
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
    encode_pdu,
)
from aionetdicom.pdu.constants import ItemType

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ASSOCIATE_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=100)
FUZZ_SETTINGS = settings(max_examples=300, deadline=None)
#: Fuzz tests that first generate a valid PDU (slower to draw).
MUTATION_SETTINGS = settings(max_examples=200, deadline=None)

# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------

# AE titles: printable ASCII without backslash (PS3.5 AE value representation).
_AE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "\\")

ae_titles = st.text(alphabet=_AE_CHARS, min_size=1, max_size=16).filter(
    lambda s: s == s.strip(" ")  # no leading/trailing spaces, hence not all spaces
)

_uid_component = st.one_of(
    st.just("0"),
    st.integers(1, 10**12).map(str),  # no leading zero
)
uids = st.builds(
    lambda root, parts: (root + "." + ".".join(parts))[:64].rstrip("."),
    st.sampled_from(["1.2.840.10008", "1.2.840.10008.5.1.4.1.1", "1.2.826.0.1.3680043", "2.25"]),
    st.lists(_uid_component, min_size=1, max_size=8),
)

# Implementation version name: 1-16 chars; padding is not significant, so none generated.
version_names = st.text(alphabet=_AE_CHARS, min_size=1, max_size=16).filter(
    lambda s: s == s.rstrip(" ")
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
short_bytes = st.binary(max_size=64)
odd_context_ids = st.integers(0, 127).map(lambda i: 2 * i + 1)

role_selections = st.builds(RoleSelection, uids, st.booleans(), st.booleans())
sop_class_extended = st.builds(SOPClassExtendedNegotiation, uids, short_bytes)
sop_class_common_extended = st.builds(
    SOPClassCommonExtendedNegotiation,
    uids,
    uids,
    st.lists(uids, max_size=3).map(tuple),
)
user_identity_rq = st.one_of(
    st.builds(UserIdentityRQ, st.sampled_from([1, 3, 4, 5]), st.booleans(), short_bytes),
    st.builds(UserIdentityRQ, st.just(2), st.booleans(), short_bytes, short_bytes),
)
user_identity_ac = st.builds(UserIdentityAC, short_bytes)
_KNOWN_SUB_ITEMS = {int(t) for t in ItemType if 0x51 <= t <= 0x59}
unknown_sub_items = st.builds(
    UnknownSubItem,
    st.integers(0, 255).filter(lambda t: t not in _KNOWN_SUB_ITEMS),
    short_bytes,
)


def user_informations(
    identity: st.SearchStrategy[UserIdentityRQ | UserIdentityAC],
) -> st.SearchStrategy[UserInformation]:
    return st.builds(
        UserInformation,
        maximum_length=st.none() | u32,
        implementation_class_uid=st.none() | uids,
        implementation_version_name=st.none() | version_names,
        asynchronous_operations_window=st.none()
        | st.builds(AsynchronousOperationsWindow, u16, u16),
        role_selections=st.lists(role_selections, max_size=4).map(tuple),
        sop_class_extended=st.lists(sop_class_extended, max_size=3).map(tuple),
        sop_class_common_extended=st.lists(sop_class_common_extended, max_size=3).map(tuple),
        user_identity=st.none() | identity,
        unknown_items=st.lists(unknown_sub_items, max_size=3).map(tuple),
    )


@st.composite
def rq_contexts(draw: st.DrawFn, max_size: int = 128) -> tuple[PresentationContextRQ, ...]:
    ids = draw(st.lists(odd_context_ids, min_size=1, max_size=max_size, unique=True))
    return tuple(
        PresentationContextRQ(
            context_id, draw(uids), tuple(draw(st.lists(uids, min_size=1, max_size=4)))
        )
        for context_id in ids
    )


@st.composite
def ac_contexts(draw: st.DrawFn, max_size: int = 128) -> tuple[PresentationContextAC, ...]:
    ids = draw(st.lists(odd_context_ids, min_size=1, max_size=max_size, unique=True))
    contexts = []
    for context_id in ids:
        result = draw(st.integers(0, 4))
        # When not accepted the transfer syntax is not significant: absent or echoed.
        transfer = draw(uids) if result == 0 else draw(st.just("") | uids)
        contexts.append(PresentationContextAC(context_id, result, transfer))
    return tuple(contexts)


def associate_rqs(max_contexts: int = 128) -> st.SearchStrategy[AAssociateRQ]:
    return st.builds(
        AAssociateRQ,
        called_ae_title=ae_titles,
        calling_ae_title=ae_titles,
        presentation_contexts=rq_contexts(max_contexts),
        user_information=user_informations(user_identity_rq),
        application_context_name=st.just("1.2.840.10008.3.1.1.1") | uids,
        protocol_version=st.just(1) | u16,
    )


def associate_acs(max_contexts: int = 128) -> st.SearchStrategy[AAssociateAC]:
    return st.builds(
        AAssociateAC,
        called_ae_title=ae_titles,
        calling_ae_title=ae_titles,
        presentation_contexts=ac_contexts(max_contexts),
        user_information=user_informations(user_identity_ac),
        application_context_name=st.just("1.2.840.10008.3.1.1.1") | uids,
        protocol_version=st.just(1) | u16,
    )


associate_rjs = st.sampled_from(
    [
        AAssociateRJ(result, source, reason)
        for result in (1, 2)
        for source, reasons in ((1, (1, 2, 3, 7)), (2, (1, 2)), (3, (1, 2)))
        for reason in reasons
    ]
)
pdvs = st.builds(
    PDV,
    context_id=odd_context_ids,
    is_command=st.booleans(),
    is_last=st.booleans(),
    data=st.binary(max_size=512),
)
pdata_tfs = st.builds(PDataTF, st.lists(pdvs, min_size=1, max_size=8).map(tuple))
aborts = st.one_of(
    st.just(AAbort(0, 0)),
    st.builds(AAbort, st.just(2), st.sampled_from([0, 1, 2, 4, 5, 6])),
)
small_pdus: st.SearchStrategy[PDU] = st.one_of(
    associate_rjs,
    pdata_tfs,
    st.just(AReleaseRQ()),
    st.just(AReleaseRP()),
    aborts,
)
# Mixed strategies keep associations small (<= 8 contexts) for speed; the dedicated
# round-trip tests below cover the full 1-128 range.
all_pdus: st.SearchStrategy[PDU] = st.one_of(associate_rqs(8), associate_acs(8), small_pdus)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _drain(reader: PDUReader) -> list[PDU]:
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(all_pdus)
def test_round_trip(pdu: PDU) -> None:
    encoded = encode_pdu(pdu)
    assert int.from_bytes(encoded[2:6], "big") == len(encoded) - 6
    assert decode_pdu(encoded) == pdu


@ASSOCIATE_SETTINGS
@given(associate_rqs())
def test_round_trip_associate_rq(pdu: AAssociateRQ) -> None:
    assert decode_pdu(encode_pdu(pdu)) == pdu


@ASSOCIATE_SETTINGS
@given(associate_acs())
def test_round_trip_associate_ac(pdu: AAssociateAC) -> None:
    assert decode_pdu(encode_pdu(pdu)) == pdu


@PROPERTY_SETTINGS
@given(all_pdus, st.lists(st.integers(0, 1 << 20), max_size=20))
def test_reader_arbitrary_split(pdu: PDU, cuts: list[int]) -> None:
    encoded = encode_pdu(pdu)
    reader = PDUReader()
    out: list[PDU] = []
    chunks = _split(encoded, cuts)
    for index, chunk in enumerate(chunks):
        reader.feed(chunk)
        got = _drain(reader)
        if index < len(chunks) - 1 and sum(map(len, chunks[index + 1 :])) > 0:
            assert got == [], "a PDU came out before all its bytes arrived"
        out.extend(got)
    assert out == [pdu]
    assert reader.buffered == 0
    assert not reader.in_pdu


@PROPERTY_SETTINGS
@given(
    st.lists(all_pdus, min_size=1, max_size=4),
    st.lists(st.integers(0, 1 << 20), max_size=30),
)
def test_reader_concatenated_pdus_in_order(pdus: list[PDU], cuts: list[int]) -> None:
    stream = b"".join(encode_pdu(p) for p in pdus)
    reader = PDUReader()
    out: list[PDU] = []
    for chunk in _split(stream, cuts):
        reader.feed(chunk)
        out.extend(_drain(reader))
    assert out == pdus
    assert reader.buffered == 0


# ---------------------------------------------------------------------------------------
# fuzzing: only PDUDecodeError (or a PDU) ever comes out
# ---------------------------------------------------------------------------------------


def _check_error(error: PDUDecodeError) -> PDUDecodeError:
    assert error.abort_reason in {0, 1, 2, 4, 5, 6}
    assert str(error)
    return error


def _decode_or_error(data: bytes) -> PDU | PDUDecodeError:
    """decode_pdu's result, or the PDUDecodeError it raised; anything else fails the test."""
    try:
        return decode_pdu(data)
    except PDUDecodeError as exc:
        error = exc
    except BaseException as exc:  # MemoryError, IndexError, struct.error, ...
        raise AssertionError(f"decode_pdu raised {type(exc).__name__}: {exc}") from exc
    return _check_error(error)


def _reader_or_error(data: bytes, cuts: list[int]) -> list[PDU] | PDUDecodeError:
    """The PDUs a reader frames from ``data`` fed in pieces, or the PDUDecodeError raised."""
    reader = PDUReader(max_pdata_length=1 << 16, max_associate_length=1 << 16)
    out: list[PDU] = []
    try:
        for chunk in _split(data, cuts):
            reader.feed(chunk)
            out.extend(_drain(reader))
    except PDUDecodeError as exc:
        error = exc
    except BaseException as exc:
        raise AssertionError(f"PDUReader raised {type(exc).__name__}: {exc}") from exc
    else:
        assert reader.buffered <= len(data)
        return out
    return _check_error(error)


@FUZZ_SETTINGS
@given(st.binary(max_size=2048), st.lists(st.integers(0, 4096), max_size=5))
def test_fuzz_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    _decode_or_error(data)
    _reader_or_error(data, cuts)


@st.composite
def framed_garbage(draw: st.DrawFn) -> bytes:
    """A well-formed PDU header (known type, exact length) around random body bytes."""
    pdu_type = draw(st.integers(1, 7))
    body = draw(st.binary(max_size=1024))
    if pdu_type in (1, 2) and draw(st.booleans()):
        # Get past the fixed fields so the item parser is exercised.
        body = bytes(68) + body
    return bytes((pdu_type, 0)) + len(body).to_bytes(4, "big") + body


@FUZZ_SETTINGS
@given(framed_garbage(), st.lists(st.integers(0, 4096), max_size=5))
def test_fuzz_framed_garbage(data: bytes, cuts: list[int]) -> None:
    decoded = _decode_or_error(data)
    framed = _reader_or_error(data, cuts)
    # decode_pdu and the reader agree on what one well-framed PDU is.
    if isinstance(decoded, PDUDecodeError):
        assert isinstance(framed, PDUDecodeError)
        assert type(framed) is type(decoded) or data[0] in (3, 5, 6, 7)
    else:
        assert framed == [decoded]


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with bytes overwritten, inserted, removed or the tail cut off."""
    data = bytearray(encode_pdu(draw(all_pdus)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "set", "set", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[position : position + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[position:]
    return bytes(data)


@MUTATION_SETTINGS
@given(mutated_encodings(), st.lists(st.integers(0, 1 << 16), max_size=5))
def test_fuzz_mutated_valid_encodings(data: bytes, cuts: list[int]) -> None:
    _decode_or_error(data)
    _reader_or_error(data, cuts)


@st.composite
def length_mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding where one 16- or 32-bit big-endian field is set to a hostile value."""
    data = bytearray(encode_pdu(draw(all_pdus)))
    width = draw(st.sampled_from([2, 4]))
    if len(data) < width:
        return bytes(data)
    position = draw(st.integers(0, len(data) - width))
    value = draw(
        st.sampled_from([0, 1, 2, 3, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])
        | st.integers(0, (1 << (8 * width)) - 1)
    )
    data[position : position + width] = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes(data)


@MUTATION_SETTINGS
@given(length_mutated_encodings(), st.lists(st.integers(0, 1 << 16), max_size=5))
def test_fuzz_hostile_lengths(data: bytes, cuts: list[int]) -> None:
    _decode_or_error(data)
    _reader_or_error(data, cuts)
