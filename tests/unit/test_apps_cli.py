"""Command lines of the apps: defaults, DCMTK and pynetdicom aliases, errors, dispatch."""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from aionetdicom import (
    ACSETimeout,
    AssociationAborted,
    AssociationRejected,
    UserIdentity,
    __version__,
)
from aionetdicom.acse.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
)
from aionetdicom.ae import DEFAULT_MAXIMUM_PDU_LENGTH
from aionetdicom.apps import __main__ as dispatcher
from aionetdicom.apps import common, echoscp, echoscu
from aionetdicom.pdu.constants import UserIdentityType

UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging reconfigures the package logger; put it back for other tests."""
    names = ["aionetdicom", "aionetdicom.apps.echoscu", "aionetdicom.apps.echoscp"]
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


def scu(*argv: str) -> argparse.Namespace:
    """echoscu's parsed arguments for ``argv`` after a peer and port."""
    return echoscu.parse_args(["peer.example", "104", *argv])


def scp(*argv: str) -> argparse.Namespace:
    """echoscp's parsed arguments for ``argv`` after a port."""
    return echoscp.build_parser().parse_args(["11112", *argv])


def usage_error(capsys: pytest.CaptureFixture[str], parse: object, *argv: str) -> str:
    """Assert that parsing ``argv`` is an argparse error (exit 2); return stderr."""
    assert callable(parse)
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------------- dispatcher


def test_dispatcher_help_lists_every_app(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in dispatcher.APPS:
        assert name in out
    assert "echoscu" in out
    assert "echoscp" in out


def test_dispatcher_without_app_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main([]) == 2
    err = capsys.readouterr().err
    assert "no app given" in err
    assert "echoscu" in err


def test_dispatcher_rejects_unknown_app(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main(["storescx", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown app 'storescx'" in err
    assert "echoscp" in err


def test_dispatcher_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_dispatcher_passes_arguments_to_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        dispatcher.main(["echoscu", "--version"])
    assert caught.value.code == 0
    assert f"echoscu (aionetdicom {__version__})" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(dispatcher.APPS))
def test_every_registered_app_has_main_and_parser(name: str) -> None:
    main = dispatcher.load_app(name)
    assert callable(main)
    module = importlib.import_module(dispatcher.APPS[name][0])
    assert isinstance(module.build_parser(), argparse.ArgumentParser)


def test_package_main_module_uses_the_dispatcher() -> None:
    import aionetdicom.__main__ as package_main

    assert package_main.main is dispatcher.main


# ---------------------------------------------------------------------- echoscu


def test_echoscu_defaults() -> None:
    args = scu()
    assert (args.peer, args.port) == ("peer.example", 104)
    assert args.calling_aet == "ECHOSCU"
    assert args.called_aet == "ANY-SCP"
    assert args.repeat == 1
    assert args.abort is False
    assert (args.connect_timeout, args.acse_timeout, args.dimse_timeout) == (30.0, 30.0, 30.0)
    assert args.network_timeout == 60.0
    assert args.max_pdu == DEFAULT_MAXIMUM_PDU_LENGTH
    assert args.transfer_syntaxes == UNCOMPRESSED
    assert (args.propose_ts, args.propose_pc) == (None, 1)
    assert args.log_level == common.NOTICE
    assert args.backend == "asyncio"
    assert echoscu.user_identity(args) is None


@pytest.mark.parametrize("flag", ["-aet", "--aetitle", "--calling-aet"])
def test_echoscu_calling_aet_aliases(flag: str) -> None:
    assert scu(flag, "MY_SCU").calling_aet == "MY_SCU"


@pytest.mark.parametrize("flag", ["-aec", "--call", "--called-aet"])
def test_echoscu_called_aet_aliases(flag: str) -> None:
    assert scu(flag, "PACS").called_aet == "PACS"


@pytest.mark.parametrize("flag", ["-tn", "--network-timeout", "-ts", "--socket-timeout"])
def test_network_timeout_aliases(flag: str) -> None:
    assert scu(flag, "2.5").network_timeout == 2.5


def test_timeouts_and_pdu() -> None:
    args = scu("-to", "1", "-ta", "2", "-td", "3", "-pdu", "16384")
    assert (args.connect_timeout, args.acse_timeout, args.dimse_timeout) == (1.0, 2.0, 3.0)
    assert args.max_pdu == 16384
    unlimited = scu("-to", "0", "-td", "0", "--max-pdu", "0")
    assert unlimited.connect_timeout is None
    assert unlimited.dimse_timeout is None
    assert unlimited.max_pdu == 0
    assert common.timeout_kwargs(args) == {
        "maximum_pdu_length": 16384,
        "acse_timeout": 2.0,
        "dimse_timeout": 3.0,
        "network_timeout": 60.0,
        "connect_timeout": 1.0,
    }


def test_echoscu_repeat_abort_and_verbosity() -> None:
    args = scu("-r", "4", "--abort", "-v", "--backend", "trio")
    assert (args.repeat, args.abort, args.backend) == (4, True, "trio")
    assert args.log_level == logging.INFO
    assert scu("--repeat", "2").repeat == 2
    assert scu("-d").log_level == logging.DEBUG
    assert scu("-q").log_level == logging.CRITICAL
    assert scu("-ll", "warn").log_level == logging.WARNING
    assert scu("-v", "-d").log_level == logging.DEBUG  # the last one wins


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("-x=", UNCOMPRESSED),
        ("--propose-uncompr", UNCOMPRESSED),
        ("-xe", UNCOMPRESSED),
        ("--propose-little", UNCOMPRESSED),
        ("-xb", (EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)),
        (
            "--propose-big",
            (EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN),
        ),
        ("-xi", (IMPLICIT_VR_LITTLE_ENDIAN,)),
        ("--propose-implicit", (IMPLICIT_VR_LITTLE_ENDIAN,)),
        ("-xd", (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, *UNCOMPRESSED)),
        ("--propose-deflated", (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, *UNCOMPRESSED)),
    ],
)
def test_echoscu_transfer_syntax_flags(flag: str, expected: tuple[str, ...]) -> None:
    args = scu(flag)
    assert args.transfer_syntaxes == expected
    (context,) = echoscu.proposed_contexts(args)
    assert context.transfer_syntaxes == expected


def test_echoscu_propose_ts_and_pc_like_dcmtk() -> None:
    contexts = echoscu.proposed_contexts(scu("--propose-ts", "3", "--propose-pc", "10"))
    assert len(contexts) == 10
    for context in contexts:
        assert context.abstract_syntax == VERIFICATION_SOP_CLASS
        assert context.transfer_syntaxes == (
            IMPLICIT_VR_LITTLE_ENDIAN,
            EXPLICIT_VR_LITTLE_ENDIAN,
            EXPLICIT_VR_BIG_ENDIAN,
        )
    (everything,) = echoscu.proposed_contexts(scu("-pts", "38"))
    assert len(everything.transfer_syntaxes) == len(set(everything.transfer_syntaxes)) == 38


def test_echoscu_user_identities(tmp_path: Path) -> None:
    identity = echoscu.user_identity(scu("-usr", "alice"))
    assert identity == UserIdentity.username("alice")
    identity = echoscu.user_identity(scu("--username", "alice", "-pwd", "secret", "-rsp"))
    assert identity == UserIdentity.username_and_passcode(
        "alice", "secret", positive_response_requested=True
    )
    token = tmp_path / "token.jwt"
    token.write_text("header.payload.signature\n")
    identity = echoscu.user_identity(scu("--jwt", str(token), "--request-response"))
    assert identity == UserIdentity.jwt(
        "header.payload.signature", positive_response_requested=True
    )
    ticket = tmp_path / "ticket"
    ticket.write_bytes(b"\x00\x01kerberos")
    identity = echoscu.user_identity(scu("-kt", str(ticket)))
    assert identity is not None
    assert identity.identity_type == UserIdentityType.KERBEROS
    assert identity.primary == b"\x00\x01kerberos"
    saml = tmp_path / "assertion.xml"
    saml.write_text("<saml/>")
    identity = echoscu.user_identity(scu("--saml", str(saml)))
    assert identity == UserIdentity.saml(b"<saml/>")


def test_echoscu_unreadable_identity_file_is_an_app_error(tmp_path: Path) -> None:
    with pytest.raises(common.AppError, match="cannot read user identity"):
        echoscu.user_identity(scu("--saml", str(tmp_path / "missing.xml")))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["peer"], "required: port"),
        (["peer", "70000"], "port 70000 is not in 0-65535"),
        (["peer", "http"], "invalid port number"),
        (["peer", "104", "-aet", "A" * 17], "longer than 16 characters"),
        (["peer", "104", "-aec", "   "], "must not be empty"),
        (["peer", "104", "-aet", "BAD\\AE"], "backslash"),
        (["peer", "104", "-pdu", "100"], "maximum PDU length"),
        (["peer", "104", "-r", "0"], "not a positive integer"),
        (["peer", "104", "--repeat", "many"], "invalid integer"),
        (["peer", "104", "-pts", "39"], "not in 1..38"),
        (["peer", "104", "--propose-pc", "129"], "not in 1..128"),
        (["peer", "104", "-ta", "-1"], "timeout must be 0 (none) or positive"),
        (["peer", "104", "-to", "soon"], "invalid number of seconds"),
        (["peer", "104", "-xe", "-xb"], "not allowed with argument"),
        (["peer", "104", "--password", "x"], "--password requires --user"),
        (["peer", "104", "-rsp"], "--pos-response requires a user identity"),
        (["peer", "104", "--user", "a", "--jwt", "t"], "not allowed with argument"),
        (["peer", "104", "-ll", "loud"], "unknown log level"),
        (["peer", "104", "--backend", "curio"], "invalid choice"),
        (["peer", "104", "--abo"], "unrecognized arguments"),  # no abbreviations
    ],
)
def test_echoscu_invalid_arguments(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = usage_error(capsys, echoscu.parse_args, argv)
    assert message in err
    assert "usage: echoscu" in err


def test_echoscu_main_reports_argument_errors_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        echoscu.main(["peer", "0x68"])
    assert caught.value.code == 2
    assert "invalid port number" in capsys.readouterr().err


# ---------------------------------------------------------------------- echoscp


def test_echoscp_defaults() -> None:
    args = scp()
    assert args.port == 11112
    assert args.ae_title == "ECHOSCP"
    assert args.bind is None
    assert args.require_called_aet is False
    assert args.allowed_calling_aet is None
    assert args.max_associations == 1000
    assert args.max_runtime is None
    assert args.transfer_syntaxes == UNCOMPRESSED
    assert (args.acse_timeout, args.dimse_timeout, args.network_timeout) == (30.0, 30.0, 60.0)
    assert not hasattr(args, "connect_timeout")


def test_echoscp_network_options() -> None:
    args = scp(
        "--aetitle",
        "PACS",
        "--bind",
        "127.0.0.1",
        "-ba",
        "::1",
        "--require-called-aet",
        "--allowed-calling-aet",
        "A",
        "--require-calling-aet",
        "B",
        "--max-associations",
        "3",
        "--max-runtime",
        "1.5",
        "-pdu",
        "0",
    )
    assert args.ae_title == "PACS"
    assert args.bind == ["127.0.0.1", "::1"]
    assert args.require_called_aet is True
    assert args.allowed_calling_aet == ["A", "B"]
    assert args.max_associations == 3
    assert args.max_runtime == 1.5
    assert args.max_pdu == 0
    assert scp("--ae-title", "X").ae_title == scp("-aet", "X").ae_title == "X"


@pytest.mark.parametrize(
    ("flags", "first"),
    [
        (("+x=", "-x=", "--prefer-uncompr"), EXPLICIT_VR_LITTLE_ENDIAN),
        (("+xe", "-xe", "--prefer-little"), EXPLICIT_VR_LITTLE_ENDIAN),
        (("+xb", "-xb", "--prefer-big"), EXPLICIT_VR_BIG_ENDIAN),
        (("+xd", "-xd", "--prefer-deflated"), DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
        (("+xi", "-xi", "--implicit", "--prefer-implicit"), IMPLICIT_VR_LITTLE_ENDIAN),
        (("+xa", "--accept-all"), EXPLICIT_VR_LITTLE_ENDIAN),
    ],
)
def test_echoscp_preference_flags(flags: tuple[str, ...], first: str) -> None:
    results = {scp(flag).transfer_syntaxes for flag in flags}
    assert len(results) == 1
    (syntaxes,) = results
    assert syntaxes[0] == first
    if flags[0] == "+xi":
        assert syntaxes == (IMPLICIT_VR_LITTLE_ENDIAN,)
    if flags[0] == "+xa":
        assert set(syntaxes) == set(common.ALL_TRANSFER_SYNTAXES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: port"),
        (["-1"], "port -1 is not in 0-65535"),  # a negative number, not an option
        (["65536"], "not in 0-65535"),
        (["104", "+xe", "+xb"], "not allowed with argument"),
        (["104", "--max-associations", "0"], "not a positive integer"),
        (["104", "--allowed-calling-aet", "A" * 17], "longer than 16 characters"),
        (["104", "--max-runtime", "-3"], "timeout must be 0 (none) or positive"),
        (["104", "-to", "5"], "unrecognized arguments"),  # SCPs make no connections
    ],
)
def test_echoscp_invalid_arguments(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = usage_error(capsys, echoscp.build_parser().parse_args, argv)
    assert message in err


def test_echoscp_make_ae_applies_the_options() -> None:
    args = scp(
        "-aet",
        "PACS",
        "--require-called-aet",
        "--allowed-calling-aet",
        "CT1",
        "+xi",
        "-pdu",
        "32768",
        "-td",
        "0",
        "--max-associations",
        "7",
    )
    ae = echoscp.make_ae(args, logging.getLogger("test"))
    assert ae.ae_title == "PACS"
    assert ae.require_called_ae_title is True
    assert ae.allowed_calling_ae_titles == frozenset({"CT1"})
    assert ae.maximum_associations == 7
    assert ae.maximum_pdu_length == 32768
    assert ae.dimse_timeout is None
    (context,) = ae.supported_contexts
    assert context.abstract_syntax == VERIFICATION_SOP_CLASS
    assert context.transfer_syntaxes == (IMPLICIT_VR_LITTLE_ENDIAN,)
    assert ae.echo_handler is not None


# ---------------------------------------------------------------------- logging and run_app


def test_formatter_prefixes_every_line_like_dcmtk() -> None:
    formatter = common.DcmtkFormatter()
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "a\nb %d", (2,), None)
    assert formatter.format(record) == "D: a\nD: b 2"
    for level, letter in [(logging.INFO, "I"), (common.NOTICE, "I"), (logging.ERROR, "E")]:
        record = logging.LogRecord("x", level, __file__, 1, "text", (), None)
        assert formatter.format(record) == f"{letter}: text"


def test_setup_logging_levels(capsys: pytest.CaptureFixture[str]) -> None:
    log = common.setup_logging(scu("-v"), "echoscu")
    library = logging.getLogger("aionetdicom.association")
    log.info("app detail")
    library.info("library detail")
    library.warning("library warning")
    err = capsys.readouterr().err
    assert "I: app detail" in err
    assert "library detail" not in err  # SCUs keep -v output like DCMTK's
    assert "W: library warning" in err

    common.setup_logging(scp("-v"), "echoscp", library_verbose=True)
    library.info("association accepted")
    assert "I: association accepted" in capsys.readouterr().err

    log = common.setup_logging(scu(), "echoscu")
    log.info("hidden")
    log.log(common.NOTICE, "shown")
    assert capsys.readouterr().err == "I: shown\n"

    log = common.setup_logging(scu("-q"), "echoscu")
    log.error("silenced")
    assert capsys.readouterr().err == ""


def _run(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    async def fail() -> int:
        raise exc

    log = common.setup_logging(scu(), "echoscu")
    code = common.run_app(fail, "asyncio", log)
    return code, capsys.readouterr().err


def test_run_app_maps_rejection(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(AssociationRejected(1, 1, 7), capsys)
    assert code == 1
    assert err.startswith("E: Association Rejected: ")
    assert "called-AE-title-not-recognized (result=1, source=1, reason=7)" in err
    assert err.count("\n") == 1


def test_run_app_maps_abort_timeout_and_network_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _run(AssociationAborted(2, 1), capsys)
    assert (code, err.startswith("E: Association Aborted: ")) == (1, True)
    code, err = _run(ACSETimeout("no A-ASSOCIATE-AC within 1 s"), capsys)
    assert (code, err) == (1, "E: Timeout: no A-ASSOCIATE-AC within 1 s\n")
    code, err = _run(ConnectionRefusedError(111, "Connection refused"), capsys)
    assert (code, err) == (1, "E: Network error: [Errno 111] Connection refused\n")
    code, err = _run(common.AppError("custom failure", code=3), capsys)
    assert (code, err) == (3, "E: custom failure\n")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_app_unwraps_exception_groups(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def late() -> None:
        raise ACSETimeout("late")

    async def grouped() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(late)
            await anyio.sleep(5)
        return 0

    log = common.setup_logging(scu(), "echoscu")
    assert common.run_app(grouped, backend, log) == 1
    assert capsys.readouterr().err == "E: Timeout: late\n"


def test_run_app_ctrl_c_gives_130(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(KeyboardInterrupt(), capsys)
    assert code == common.EXIT_INTERRUPTED == 130
    assert "E: Interrupted" in err


def test_run_app_keeps_tracebacks_for_bugs() -> None:
    async def broken() -> int:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        common.run_app(broken, "asyncio")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_app_returns_the_status_on_each_backend(backend: str) -> None:
    async def ok() -> int:
        await anyio.lowlevel.checkpoint()
        return 7

    assert common.run_app(ok, backend) == 7
