"""storescp's command line: defaults, flags, the AE it builds, and usage errors."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from aionetdicom.acse.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
)
from aionetdicom.apps import __main__ as dispatcher
from aionetdicom.apps import common, storescp
from aionetdicom.sop_classes import STORAGE_SOP_CLASSES

UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() reconfigures the package logger; put it back for other tests."""
    names = ["aionetdicom", "aionetdicom.apps.storescp"]
    saved = [
        (logging.getLogger(n), logging.getLogger(n).level, logging.getLogger(n).propagate)
        for n in names
    ]
    handlers = list(logging.getLogger("aionetdicom").handlers)
    yield
    for logger, level, propagate in saved:
        logger.setLevel(level)
        logger.propagate = propagate
    logging.getLogger("aionetdicom").handlers[:] = handlers


def parse(*argv: str) -> argparse.Namespace:
    """storescp's parsed arguments for ``argv`` after a port."""
    return storescp.build_parser().parse_args(["11112", *argv])


def test_registered_in_the_dispatcher() -> None:
    assert dispatcher.APPS["storescp"][0] == "aionetdicom.apps.storescp"
    assert dispatcher.load_app("storescp") is storescp.main


def test_defaults() -> None:
    args = parse()
    assert args.port == 11112
    assert args.ae_title == "STORESCP"
    assert args.output_directory == Path(".")
    assert args.bind is None
    assert args.transfer_syntaxes == UNCOMPRESSED
    assert args.accept_any_sop_class is False
    assert args.ignore is False
    assert args.sort_by_study is False
    assert args.require_called_aet is False
    assert args.allowed_calling_aet is None
    assert args.max_associations == 1000
    assert args.max_runtime is None
    assert (args.acse_timeout, args.dimse_timeout, args.network_timeout) == (30.0, 30.0, 60.0)
    assert args.log_level == common.NOTICE


def test_flags() -> None:
    args = parse(
        "-aet", "PACS", "-od", "/data/in", "--bind", "127.0.0.1", "--bind", "::1",
        "+xa", "--accept-any-sop-class", "--ignore", "--sort-by-study",
        "--require-called-aet", "--allowed-calling-aet", "CT1", "--allowed-calling-aet", "MR1",
        "--max-associations", "4", "-ta", "5", "-td", "0", "-ts", "9", "--max-pdu", "65536",
        "--max-runtime", "2.5", "-v",
    )  # fmt: skip
    assert args.ae_title == "PACS"
    assert args.output_directory == Path("/data/in")
    assert args.bind == ["127.0.0.1", "::1"]
    assert set(args.transfer_syntaxes) == set(common.ALL_TRANSFER_SYNTAXES)
    assert args.accept_any_sop_class is True
    assert args.ignore is True
    assert args.sort_by_study is True
    assert args.require_called_aet is True
    assert args.allowed_calling_aet == ["CT1", "MR1"]
    assert args.max_associations == 4
    assert (args.acse_timeout, args.dimse_timeout, args.network_timeout) == (5.0, None, 9.0)
    assert args.max_pdu == 65536
    assert args.max_runtime == 2.5
    assert args.log_level == logging.INFO
    assert parse("--output-directory", "x").output_directory == Path("x")
    assert parse("--aetitle", "X").ae_title == "X"
    assert parse("-pm").accept_any_sop_class is True
    assert parse("--promiscuous").accept_any_sop_class is True
    assert parse("-d").log_level == logging.DEBUG


@pytest.mark.parametrize(
    ("flag", "first"),
    [
        ("+x=", EXPLICIT_VR_LITTLE_ENDIAN),
        ("+xe", EXPLICIT_VR_LITTLE_ENDIAN),
        ("--prefer-little", EXPLICIT_VR_LITTLE_ENDIAN),
        ("+xb", EXPLICIT_VR_BIG_ENDIAN),
        ("--prefer-big", EXPLICIT_VR_BIG_ENDIAN),
        ("+xd", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
        ("+xi", IMPLICIT_VR_LITTLE_ENDIAN),
        ("--prefer-implicit", IMPLICIT_VR_LITTLE_ENDIAN),
    ],
)
def test_preference_flags(flag: str, first: str) -> None:
    syntaxes = parse(flag).transfer_syntaxes
    assert syntaxes[0] == first
    assert storescp.storage_transfer_syntaxes(syntaxes) == tuple(syntaxes)


def test_accept_all_prefers_compressed_syntaxes() -> None:
    """``+xa``: compressed first (stored as sent, as DCMTK), uncompressed, Deflated last."""
    order = storescp.storage_transfer_syntaxes(parse("+xa").transfer_syntaxes)
    assert set(order) == set(common.ALL_TRANSFER_SYNTAXES)
    assert len(order) == len(common.ALL_TRANSFER_SYNTAXES)
    assert order[0] == JPEG_BASELINE
    assert order[-4:] == (*UNCOMPRESSED, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: port"),
        (["65536"], "not in 0-65535"),
        (["abc"], "invalid port number"),
        (["104", "-aet", "A" * 17], "longer than 16 characters"),
        (["104", "--allowed-calling-aet", "BAD\\AE"], "backslash"),
        (["104", "--max-associations", "0"], "not a positive integer"),
        (["104", "--max-pdu", "100"], "4096..4294967295"),
        (["104", "-ta", "soon"], "invalid number of seconds"),
        (["104", "--max-runtime", "-1"], "timeout must be 0 (none) or positive"),
        (["104", "+xa", "+xi"], "not allowed with argument"),
        (["104", "-od"], "expected one argument"),
        (["104", "--sort-by-study", "X"], "unrecognized arguments"),
        (["104", "-to", "5"], "unrecognized arguments"),  # SCPs make no connections
    ],
)
def test_invalid_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        storescp.main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_make_ae_applies_the_options() -> None:
    args = parse(
        "-aet", "PACS", "--require-called-aet", "--allowed-calling-aet", "CT1", "+xi",
        "-pdu", "32768", "-td", "0", "--max-associations", "7", "--accept-any-sop-class",
    )  # fmt: skip
    ae = storescp.make_ae(args, logging.getLogger("test"))
    assert ae.ae_title == "PACS"
    assert ae.require_called_ae_title is True
    assert ae.allowed_calling_ae_titles == frozenset({"CT1"})
    assert ae.maximum_associations == 7
    assert ae.maximum_pdu_length == 32768
    assert ae.dimse_timeout is None
    assert ae.accept_any_abstract_syntax is True
    by_uid = {context.abstract_syntax: context for context in ae.supported_contexts}
    assert by_uid.keys() == {VERIFICATION_SOP_CLASS, *STORAGE_SOP_CLASSES}
    assert by_uid[VERIFICATION_SOP_CLASS].transfer_syntaxes == (IMPLICIT_VR_LITTLE_ENDIAN,)
    assert by_uid[CT_IMAGE_STORAGE].transfer_syntaxes == (IMPLICIT_VR_LITTLE_ENDIAN,)
    assert ae.echo_handler is not None


def test_make_ae_default_contexts_are_uncompressed() -> None:
    ae = storescp.make_ae(parse(), logging.getLogger("test"))
    assert ae.accept_any_abstract_syntax is False
    assert all(context.transfer_syntaxes == UNCOMPRESSED for context in ae.supported_contexts)
    accept_all = storescp.make_ae(parse("+xa"), logging.getLogger("test"))
    ct = next(c for c in accept_all.supported_contexts if c.abstract_syntax == CT_IMAGE_STORAGE)
    assert JPEG_BASELINE in ct.transfer_syntaxes


def test_output_directory_must_exist(tmp_path: Path) -> None:
    assert storescp.check_output_directory(tmp_path) == tmp_path.resolve()
    with pytest.raises(common.AppError, match="does not exist"):
        storescp.check_output_directory(tmp_path / "missing")
    file = tmp_path / "file"
    file.write_bytes(b"")
    with pytest.raises(common.AppError, match="is not a directory"):
        storescp.check_output_directory(file)


def test_main_reports_a_missing_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert storescp.main(["0", "--bind", "127.0.0.1", "-od", str(missing)]) == 1
    assert f"E: output directory '{missing}' does not exist" in capsys.readouterr().err


def test_main_with_ignore_needs_no_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ignore`` never writes, so a missing directory is fine; --max-runtime stops it."""
    argv = ["0", "--bind", "127.0.0.1", "-od", str(tmp_path / "nowhere"), "--ignore"]
    assert storescp.main([*argv, "--max-runtime", "0.2"]) == 0
    assert "not storing (--ignore)" in capsys.readouterr().err
