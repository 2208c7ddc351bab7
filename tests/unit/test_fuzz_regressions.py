"""Regression tests: the exact inputs with which fuzzing found decoder bugs (issue 7).

Each test names the property that failed, the symptom before the fix, and checks the
fixed behaviour on the very bytes the fuzzer (hypothesis or atheris) reported.
"""

from __future__ import annotations

import io
import zlib

import pytest

from aionetdicom.datasets import DatasetError, inflate, read_file_meta
from aionetdicom.dimse.command_set import decode_command, encode_command
from aionetdicom.errors import PDUDecodeError
from aionetdicom.pdu import AAssociateAC, AAssociateRQ, decode_pdu, encode_pdu
from aionetdicom.ul.connection import Role, ULConnection

# --------------------------------------------------------------------------- AE titles

#: A-ASSOCIATE-RQ with called AE title 0x80 + 15 spaces (from
#: test_mutated_pdu_decodes_to_error_or_canonical_pdu). It decoded to the title "\x80"
#: (latin-1), which encode_pdu refuses: an SCP echoing it in its A-ASSOCIATE-AC died on
#: a ValueError and aborted as "local user" instead of answering A-ABORT reason 6.
NON_ASCII_CALLED_AE_RQ = (
    b"\x01\x00\x00\x00\x00\x8f\x00\x01\x00\x00\x80               0               "
    + b"\x00" * 32
    + b"\x10\x00\x00\x151.2.840.10008.3.1.1.1 \x00\x00*\x01\x00\x00\x000\x00\x00\x0f"
    b"1.2.840.10008.0@\x00\x00\x0f1.2.840.10008.0P\x00\x00\x00"
)
#: The same request with an all-space called AE title, which decoded to "" (also
#: refused by the encoder; PS3.8 9.3.2 forbids the value).
BLANK_CALLED_AE_RQ = NON_ASCII_CALLED_AE_RQ[:10] + b" " * 16 + NON_ASCII_CALLED_AE_RQ[26:]


def _with_called_title(title: bytes) -> bytes:
    return NON_ASCII_CALLED_AE_RQ[:10] + title.ljust(16) + NON_ASCII_CALLED_AE_RQ[26:]


def test_inputs_are_otherwise_valid() -> None:
    # Only the called AE title is wrong: with a plain one the same bytes decode.
    rq = decode_pdu(_with_called_title(b"A"))
    assert isinstance(rq, AAssociateRQ)
    assert (rq.called_ae_title, rq.calling_ae_title) == ("A", "0")
    assert encode_pdu(rq) == _with_called_title(b"A")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (NON_ASCII_CALLED_AE_RQ, "called AE title is not ASCII"),
        (BLANK_CALLED_AE_RQ, "called AE title is blank"),
        (_with_called_title(b"\x00" * 16), "called AE title is blank"),
    ],
    ids=["non-ascii", "spaces", "nuls"],
)
def test_undecodable_ae_titles_are_pdu_errors(data: bytes, match: str) -> None:
    with pytest.raises(PDUDecodeError, match=match) as caught:
        decode_pdu(data)
    assert caught.value.abort_reason == 6  # invalid PDU parameter value


#: Found by fuzz/fuzz_pdu.py (atheris) against the unfixed decoder, on the requestor's
#: side this time: an A-ASSOCIATE-AC whose called AE title holds bytes 0xBA and 0xDF.
#: It decoded to latin-1 text that encode_pdu refused.
NON_ASCII_AE_AC = bytes.fromhex(
    "0200000000a800010000414e592d5343badfdfdfdfdfdfdf202046555a5a2d5343552020202020202020"
    "0100000000000000000000000000000000000000000000000000000000000000100000153"
    "12e322e3834302e31303030382e332e312e312e31210000190100000040000011312e322e3834302e31"
    "303030382e312e322100000803000300400000005000001e510000040000000052000007312e322e332e"
    "34590000070005746f6b656e"
)


def test_atheris_input_ac_titles_are_echoes_and_not_tested() -> None:
    # PS3.8 9.3.3: in an A-ASSOCIATE-AC these fields echo the request and "shall not
    # be tested when received", so the AC is accepted; stray bytes read as "?".
    ac = decode_pdu(NON_ASCII_AE_AC)
    assert isinstance(ac, AAssociateAC)
    assert (ac.called_ae_title, ac.calling_ae_title) == ("ANY-SC????????", "FUZZ-SCU")
    assert decode_pdu(encode_pdu(ac)) == ac
    blank = NON_ASCII_AE_AC[:10] + b" " * 16 + NON_ASCII_AE_AC[26:]
    ac = decode_pdu(blank)
    assert isinstance(ac, AAssociateAC)
    assert ac.called_ae_title == ""
    assert encode_pdu(ac)[10:26] == b" " * 16  # the 32 reserved bytes after it differ
    assert decode_pdu(encode_pdu(ac)) == ac


def test_calling_ae_title_is_checked_too() -> None:
    data = NON_ASCII_CALLED_AE_RQ[:10] + b"A" + b" " * 15 + b"\xc4" + b" " * 15
    data += NON_ASCII_CALLED_AE_RQ[42:]
    with pytest.raises(PDUDecodeError, match="calling AE title is not ASCII"):
        decode_pdu(data)


def test_acceptor_answers_a_bad_ae_title_with_a_provider_abort() -> None:
    acceptor = ULConnection(Role.ACCEPTOR)
    acceptor.transport_connected()
    assert acceptor.receive_data(NON_ASCII_CALLED_AE_RQ) == []
    sent = b"".join(bytes(chunk) for chunk in acceptor.data_to_send())
    assert sent == bytes.fromhex("07 00 00000004 00 00 02 06")  # A-ABORT provider, reason 6


# --------------------------------------------------------------------------- command set

#: From test_mutated_command_decodes_to_error_or_canonical_command: (0000,0010)
#: CommandRecognitionCode (SH) holds b"\x80 ". It decoded to "\ufffd", so
#: encode_command raised UnicodeEncodeError on the decoded command.
NON_ASCII_SH_COMMAND = (
    b"\x00\x00\x00\x00\x04\x00\x00\x004\x00\x00\x00\x00\x00\x01\x00\x04\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x02\x00\x02\x00\x00\x000\x00\x00\x00\x10\x00\x02\x00\x00\x00\x80 "
    b"\x00\x00\x00\x01\x02\x00\x00\x00\x00\x00\x00\x00 \x01\x02\x00\x00\x00\x00\x00"
)
#: From test_any_text_value_decodes_to_an_encodable_command: ErrorComment (LO) b"\x00\x80".
NON_ASCII_LO_COMMAND = bytes.fromhex("0000 0209 02000000") + b"\x00\x80"


#: Found by fuzz/fuzz_dimse.py (atheris, mode 0 = decode_command) against the unfixed
#: decoder: a C-FIND-RSP whose ErrorComment (LO) starts with byte 0x80.
NON_ASCII_COMMAND_ATHERIS = bytes.fromhex(
    "00000000000400000052000000000000010200000020800000200102000000020000000008020000000101"
    "000000090200000000a9000001090800000010001000080050000000020912000000800000200102682061"
    "747472696275746520"
)


def test_atheris_input_non_ascii_error_comment() -> None:
    cmd = decode_command(NON_ASCII_COMMAND_ATHERIS[1:])  # the first byte picks the mode
    assert cmd.ErrorComment == "?\x00\x00 \x01\x02h attribute"
    assert (cmd.CommandField, cmd.Status, cmd.MessageIDBeingRespondedTo) == (0x8020, 0xA900, 2)
    assert decode_command(encode_command(cmd)) == cmd


def test_non_ascii_text_in_a_command_decodes_as_question_mark() -> None:
    cmd = decode_command(NON_ASCII_SH_COMMAND)
    assert cmd.CommandRecognitionCode == "?"
    assert cmd.AffectedSOPClassUID == "0"
    assert (cmd.CommandField, cmd.MessageIDBeingRespondedTo, cmd.CommandLengthToEnd) == (0, 0, 0)
    encoded = encode_command(cmd)
    assert decode_command(encoded) == cmd
    assert encode_command(decode_command(encoded)) == encoded

    comment = decode_command(NON_ASCII_LO_COMMAND)
    assert comment.ErrorComment == "\x00?"
    assert decode_command(encode_command(comment)) == comment


# --------------------------------------------------------------------------- inflate


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("limit", [None, 0, 1000])
def test_empty_input_is_not_an_empty_deflated_data_set(limit: int | None) -> None:
    # From test_inflate_damaged_and_bounded: inflate(b"") returned b"" although no
    # deflate stream was there; any cut-off stream likewise gave a shorter data set.
    with pytest.raises(DatasetError, match="truncated"):
        inflate(b"", limit)


@pytest.mark.parametrize("limit", [None, 100_000])
def test_cut_off_deflate_stream_is_an_error(limit: int | None) -> None:
    original = bytes(range(256)) * 40
    deflated = _deflate(original)
    assert inflate(deflated, limit) == original
    assert inflate(deflated + b"\x00", limit) == original  # even-length padding is fine
    with pytest.raises(DatasetError, match="truncated"):
        inflate(deflated[: len(deflated) // 2], limit)
    with pytest.raises(DatasetError, match="truncated"):
        inflate(deflated[:-1], limit)


def test_empty_data_set_deflates_and_inflates() -> None:
    assert inflate(_deflate(b"")) == b""
    assert inflate(_deflate(b""), 0) == b""


# --------------------------------------------------------------------------- file meta

#: From test_read_file_meta_damaged_headers: the SOP class UID's first byte is 0x80.
#: read_file_meta returned "\ufffd.2.1.1", a UID nothing can send.
NON_ASCII_UID_FILE = (
    bytes(128)
    + b"DICM\x02\x00\x00\x00UL\x04\x00H\x00\x00\x00\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00"
    b"\x00\x01\x02\x00\x02\x00UI\x08\x00\x80.2.1.1\x00\x02\x00\x03\x00UI\x08\x001.2.1.1\x00"
    b"\x02\x00\x10\x00UI\x12\x001.2.840.10008.1.2\x00"
)


def test_non_ascii_uid_in_file_meta_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match=r"\(0002,0002\) is not an ASCII UID"):
        read_file_meta(io.BytesIO(NON_ASCII_UID_FILE))
    fixed = NON_ASCII_UID_FILE.replace(b"\x80.2.1.1", b"1.2.1.9")
    meta = read_file_meta(io.BytesIO(fixed))
    assert (meta.sop_class_uid, meta.sop_instance_uid) == ("1.2.1.9", "1.2.1.1")
    assert meta.transfer_syntax == "1.2.840.10008.1.2"
    assert meta.dataset_offset == meta.file_size == len(fixed)


def test_missing_file_meta_uid_is_still_reported_by_element() -> None:
    no_instance = NON_ASCII_UID_FILE.replace(b"\x80.2.1.1", b"1.2.1.9").replace(
        b"\x02\x00\x03\x00UI", b"\x02\x00\x04\x00UI"
    )
    with pytest.raises(DatasetError, match=r"lacks \(0002,0003\)"):
        read_file_meta(io.BytesIO(no_instance))
