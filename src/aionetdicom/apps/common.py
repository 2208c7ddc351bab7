"""Options and helpers the command-line apps share, so each app stays small.

Option names follow DCMTK (``-aet``, ``-aec``, ``-ta``, ``-pdu``, ``+xe`` ...) with the
pynetdicom spellings as aliases (``--calling-aet``, ``-tn``, ``-xe`` ...). Log lines look
like DCMTK's: ``I: ...``, ``D: ...``, ``E: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from aionetdicom import __version__
from aionetdicom.acse.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NegotiatedContext,
)
from aionetdicom.ae import DEFAULT_MAXIMUM_PDU_LENGTH, validate_ae_title
from aionetdicom.errors import (
    AssociationAborted,
    AssociationRejected,
    DicomNetworkError,
    DicomTimeoutError,
)

#: Log level between INFO and WARNING: shown by default, printed with DCMTK's ``I:``.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: Exit status of an app interrupted by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

#: The transfer syntaxes DCMTK's echoscu proposes with ``--propose-ts n``, in its order.
ALL_TRANSFER_SYNTAXES: tuple[str, ...] = (
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(50, 67)),  # JPEG processes 1 to 29
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.5",  # RLE lossless
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 part 2 lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 part 2
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),  # MPEG-2, MPEG-4, HEVC
)

_UNCOMPRESSED_LITTLE = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
_UNCOMPRESSED_BIG = (EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
_DEFLATED_FIRST = (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, *_UNCOMPRESSED_LITTLE)
_IMPLICIT_ONLY = (IMPLICIT_VR_LITTLE_ENDIAN,)


class AppError(Exception):
    """A failure the app reports as one ``E:`` line and exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- argument types


def ae_title(value: str) -> str:
    """argparse type: a valid AE title (1-16 printable ASCII characters, no backslash)."""
    try:
        return validate_ae_title(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number(value: str) -> int:
    """argparse type: a TCP port 0-65535 (0 lets the system pick one when listening)."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port number {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0-65535")
    return port


def positive_int(value: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not a positive integer")
    return number


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """argparse type factory: an integer in ``low``..``high``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {value!r}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is not in {low}..{high}")
        return number

    parse.__name__ = f"integer ({low}..{high})"
    return parse


def timeout_seconds(value: str) -> float | None:
    """argparse type: seconds as a non-negative number; 0 means no limit (None)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"timeout must be 0 (none) or positive, not {value}")
    return seconds or None


def max_pdu_length(value: str) -> int:
    """argparse type: largest PDU to receive, 0 (unlimited) or 4096..4294967295 bytes."""
    try:
        length = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid PDU length {value!r}") from None
    if length != 0 and not 4096 <= length <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(
            f"maximum PDU length must be 0 (unlimited) or 4096..4294967295, not {length}"
        )
    return length


# ---------------------------------------------------------------------- parsers


def make_parser(
    prog: str, description: str, *, plus_options: bool = False
) -> argparse.ArgumentParser:
    """An app's parser; ``plus_options`` also allows DCMTK's ``+x..`` style flags."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        prefix_chars="-+" if plus_options else "-",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


_LOG_LEVELS = {
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


def add_general_options(parser: argparse.ArgumentParser) -> None:
    """--version, -q/-v/-d/-ll verbosity (the last one given wins) and --backend."""
    group = parser.add_argument_group("general options")
    group.add_argument(
        "--version", action="version", version=f"%(prog)s (aionetdicom {__version__})"
    )
    group.set_defaults(log_level=NOTICE)
    group.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const=logging.CRITICAL,
        help="quiet mode, print no warnings and errors",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const=logging.INFO,
        help="verbose mode, print processing details",
    )
    group.add_argument(
        "-d",
        "--debug",
        dest="log_level",
        action="store_const",
        const=logging.DEBUG,
        help="debug mode, print debug information",
    )
    group.add_argument(
        "-ll",
        "--log-level",
        dest="log_level",
        type=_log_level,
        metavar="LEVEL",
        help="use level LEVEL for the logger (fatal, error, warn, info, debug, trace)",
    )
    group.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop to run on (default: asyncio, with uvloop when installed)",
    )


def _log_level(value: str) -> int:
    try:
        return _LOG_LEVELS[value.lower()]
    except KeyError:
        choices = ", ".join(_LOG_LEVELS)
        raise argparse.ArgumentTypeError(f"unknown log level {value!r} ({choices})") from None


def _add_timeouts(group: argparse._ArgumentGroup, *, connect: bool) -> None:
    if connect:
        group.add_argument(
            "-to",
            "--timeout",
            dest="connect_timeout",
            type=timeout_seconds,
            default=30.0,
            metavar="SECONDS",
            help="timeout for connection requests (default: 30, 0 for none)",
        )
    group.add_argument(
        "-ta",
        "--acse-timeout",
        dest="acse_timeout",
        type=timeout_seconds,
        default=30.0,
        metavar="SECONDS",
        help="timeout for ACSE messages (default: 30, 0 for none)",
    )
    group.add_argument(
        "-td",
        "--dimse-timeout",
        dest="dimse_timeout",
        type=timeout_seconds,
        default=30.0,
        metavar="SECONDS",
        help="timeout for DIMSE messages (default: 30, 0 for none)",
    )
    group.add_argument(
        "-tn",
        "--network-timeout",
        "-ts",
        "--socket-timeout",
        dest="network_timeout",
        type=timeout_seconds,
        default=60.0,
        metavar="SECONDS",
        help="timeout for an idle network connection (default: 60, 0 for none)",
    )
    group.add_argument(
        "-pdu",
        "--max-pdu",
        dest="max_pdu",
        type=max_pdu_length,
        default=DEFAULT_MAXIMUM_PDU_LENGTH,
        metavar="BYTES",
        help="set max receive pdu to BYTES (0 for unlimited, "
        f"default: {DEFAULT_MAXIMUM_PDU_LENGTH})",
    )


def add_scu_network_options(
    parser: argparse.ArgumentParser,
    *,
    calling_aet: str,
    called_aet: str = "ANY-SCP",
    key_option: bool = True,
) -> argparse._ArgumentGroup:
    """Peer address positionals, AE titles, timeouts, PDU size and TLS of an SCU
    (``key_option=False``: the app's ``-k/--key`` is a query key, so the private key
    is ``--private-key`` only)."""
    parser.add_argument("peer", help="hostname or address of the DICOM peer")
    parser.add_argument("port", type=port_number, help="TCP port number of the peer")
    group = parser.add_argument_group("network options")
    group.add_argument(
        "-aet",
        "--aetitle",
        "--calling-aet",
        dest="calling_aet",
        type=ae_title,
        default=calling_aet,
        metavar="AETITLE",
        help=f"set my calling AE title (default: {calling_aet})",
    )
    group.add_argument(
        "-aec",
        "--call",
        "--called-aet",
        dest="called_aet",
        type=ae_title,
        default=called_aet,
        metavar="AETITLE",
        help=f"set called AE title of peer (default: {called_aet})",
    )
    _add_timeouts(group, connect=True)
    add_tls_options(parser, server=False, key_option=key_option)
    return group


def add_scp_network_options(
    parser: argparse.ArgumentParser, *, ae_title_default: str, port_default: int | None = None
) -> argparse._ArgumentGroup:
    """Listening port and addresses, AE title checks, limits, timeouts and PDU size
    (with ``port_default`` the port may be left out)."""
    if port_default is None:
        parser.add_argument(
            "port", type=port_number, help="TCP port to listen on (0: any free one)"
        )
    else:
        parser.add_argument(
            "port",
            type=port_number,
            nargs="?",
            default=None,
            help=f"TCP port to listen on (0: any free one; default: the config's, "
            f"else {port_default})",
        )
    group = parser.add_argument_group("network options")
    group.add_argument(
        "-aet",
        "--aetitle",
        "--ae-title",
        dest="ae_title",
        type=ae_title,
        default=ae_title_default,
        metavar="AETITLE",
        help=f"set my AE title (default: {ae_title_default})",
    )
    group.add_argument(
        "-ba",
        "--bind",
        "--bind-address",
        dest="bind",
        action="append",
        metavar="ADDRESS",
        help="address to listen on; repeat for several (default: 0.0.0.0)",
    )
    group.add_argument(
        "--require-called-aet",
        action="store_true",
        help="reject associations whose called AE title is not my AE title",
    )
    group.add_argument(
        "--allowed-calling-aet",
        "--require-calling-aet",
        dest="allowed_calling_aet",
        action="append",
        type=ae_title,
        metavar="AETITLE",
        help="accept only this calling AE title; repeat for several (default: any)",
    )
    group.add_argument(
        "--allowed-peer",
        action="append",
        type=peer_network,
        metavar="NETWORK",
        help="accept connections only from this address or network (10.0.0.0/8, ::1); "
        "repeat for several (default: any); others are disconnected at once",
    )
    group.add_argument(
        "--max-associations",
        type=positive_int,
        default=1000,
        metavar="N",
        help="refuse associations beyond N at once (default: 1000)",
    )
    _add_timeouts(group, connect=False)
    add_tls_options(parser, server=True)
    return group


def peer_network(text: str) -> Any:
    """An ``--allowed-peer`` value: an address or a network."""
    from aionetdicom.addresses import network

    try:
        return network(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tls_options(
    parser: argparse.ArgumentParser, *, server: bool, key_option: bool = True
) -> None:
    """DICOM TLS (PS3.15 B.12): ``--tls`` with ``--cert``/``--key``/``--ca``; DCMTK's
    ``+tls KEY CERT`` and ``+cf CA`` where the app takes ``+`` options."""
    group = parser.add_argument_group("transport layer security (TLS) options")
    group.add_argument("--tls", action="store_true", help="use a TLS connection")
    group.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="my certificate (PEM, chain allowed)" + ("; required with --tls" if server else ""),
    )
    group.add_argument(
        *(("--key",) if key_option else ()),
        "--private-key",
        dest="key",
        type=Path,
        metavar="FILE",
        help="my private key (PEM; default: in --cert)",
    )
    group.add_argument(
        "--ca",
        type=Path,
        action="append",
        metavar="FILE",
        help="trusted CA certificates (PEM file or hashed folder); repeat for several"
        + (
            "; clients must present a certificate they issued"
            if server
            else " (default: the system's trust store)"
        ),
    )
    if "+" in parser.prefix_chars:
        group.add_argument(
            "+tls",
            "--enable-tls",
            dest="tls_key_cert",
            nargs=2,
            type=Path,
            metavar=("KEY", "CERT"),
            help="as DCMTK: use TLS with private key KEY and certificate CERT",
        )
        group.add_argument(
            "+cf",
            "--add-cert-file",
            dest="ca",
            type=Path,
            action="append",
            metavar="FILE",
            help="as DCMTK: add FILE to the trusted certificates (same as --ca)",
        )
    if server:
        group.add_argument(
            "--optional-client-cert",
            action="store_true",
            help="with --ca: verify a client certificate if one is sent, allow none",
        )
    else:
        group.add_argument(
            "--no-verify-peer",
            action="store_true",
            help="do not verify the server's certificate (encryption without authentication)",
        )
        group.add_argument(
            "--check-hostname",
            action="store_true",
            help="also check that the server's certificate names the host connected to",
        )


def take_tls_pair(args: argparse.Namespace) -> None:
    """DCMTK's ``+tls KEY CERT`` as ``--tls --key KEY --cert CERT`` (idempotent)."""
    pair = getattr(args, "tls_key_cert", None)
    if pair is not None:
        args.tls, args.key, args.cert = True, pair[0], pair[1]
        args.tls_key_cert = None


def tls_context(args: argparse.Namespace, *, server: bool) -> ssl.SSLContext | None:
    """The SSL context the TLS options describe, or None without ``--tls``."""
    from aionetdicom import tls

    take_tls_pair(args)
    if not args.tls:
        used_elsewhere = getattr(args, "tls_files_used_elsewhere", False)
        if (args.cert or args.key or args.ca) and not used_elsewhere:
            raise AppError("--cert, --key and --ca need --tls")
        return None
    cas: list[Path] | None = list(args.ca) if args.ca else None
    try:
        if server:
            if args.cert is None:
                raise AppError("--tls needs --cert (and --key) for a server")
            context = tls.server_context(
                args.cert,
                args.key,
                ca=cas,
                require_client_certificate=not args.optional_client_cert,
            )
        else:
            context = tls.client_context(
                ca=cas,
                cert=args.cert,
                key=args.key,
                verify=not args.no_verify_peer,
                check_hostname=args.check_hostname,
            )
    except (OSError, ssl.SSLError) as exc:
        raise AppError(f"cannot set up TLS: {exc}") from exc
    return context


def add_propose_ts_options(parser: argparse.ArgumentParser) -> None:
    """DCMTK's storescu transfer syntax proposal flags (``-x=``, ``-xe``, ``-xb`` ...)."""
    group = parser.add_argument_group(
        "proposed transmission transfer syntaxes"
    ).add_mutually_exclusive_group()
    group.set_defaults(transfer_syntaxes=_UNCOMPRESSED_LITTLE)
    flags: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
        ("-x=", "--propose-uncompr", _UNCOMPRESSED_LITTLE, "propose all uncompressed TS, "
         "explicit VR little endian first (default)"),
        ("-xe", "--propose-little", _UNCOMPRESSED_LITTLE, "propose all uncompressed TS, "
         "explicit VR little endian first"),
        ("-xb", "--propose-big", _UNCOMPRESSED_BIG, "propose all uncompressed TS, "
         "explicit VR big endian first"),
        ("-xi", "--propose-implicit", _IMPLICIT_ONLY, "propose implicit VR little endian TS only"),
        ("-xd", "--propose-deflated", _DEFLATED_FIRST, "propose deflated explicit VR little "
         "endian TS and all uncompressed TS"),
    )  # fmt: skip
    for short, long, syntaxes, text in flags:
        group.add_argument(
            short, long, dest="transfer_syntaxes", action="store_const", const=syntaxes, help=text
        )


def add_prefer_ts_options(parser: argparse.ArgumentParser, *, accept_all: bool = False) -> None:
    """DCMTK's storescp preference flags (``+x=``, ``+xe`` ...; ``-xe`` pynetdicom style).

    The default is the uncompressed syntaxes, or with ``accept_all`` every known one
    (what an archive wants: instances kept in the syntax they were sent in).
    """
    group = parser.add_argument_group(
        "preferred network transfer syntaxes"
    ).add_mutually_exclusive_group()
    group.set_defaults(
        transfer_syntaxes=_accept_all_order() if accept_all else _UNCOMPRESSED_LITTLE
    )
    flags: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
        (("+x=", "-x=", "--prefer-uncompr"), _UNCOMPRESSED_LITTLE,
         "prefer explicit VR little endian, then big endian, then implicit"
         + ("" if accept_all else " (default)")),
        (("+xe", "-xe", "--prefer-little"), _UNCOMPRESSED_LITTLE,
         "prefer explicit VR little endian TS"),
        (("+xb", "-xb", "--prefer-big"), _UNCOMPRESSED_BIG, "prefer explicit VR big endian TS"),
        (("+xd", "-xd", "--prefer-deflated"), _DEFLATED_FIRST,
         "prefer deflated explicit VR little endian TS"),
        (("+xi", "-xi", "--implicit", "--prefer-implicit"), _IMPLICIT_ONLY,
         "accept implicit VR little endian TS only"),
        (("+xa", "--accept-all"), _accept_all_order(),
         "accept all known transfer syntaxes, uncompressed first"
         + (" (default)" if accept_all else "")),
    )  # fmt: skip
    for names, syntaxes, text in flags:
        group.add_argument(
            *names, dest="transfer_syntaxes", action="store_const", const=syntaxes, help=text
        )


def _accept_all_order() -> tuple[str, ...]:
    rest = tuple(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in _UNCOMPRESSED_LITTLE)
    return _UNCOMPRESSED_LITTLE + rest


def timeout_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``AE(...)`` keyword arguments the common network options set."""
    kwargs: dict[str, Any] = {
        "maximum_pdu_length": args.max_pdu,
        "acse_timeout": args.acse_timeout,
        "dimse_timeout": args.dimse_timeout,
        "network_timeout": args.network_timeout,
    }
    if hasattr(args, "connect_timeout"):
        kwargs["connect_timeout"] = args.connect_timeout
    return kwargs


# ---------------------------------------------------------------------- logging

_LEVEL_LETTERS = {
    logging.DEBUG: "D",
    logging.INFO: "I",
    NOTICE: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "F",
}


class DcmtkFormatter(logging.Formatter):
    """Formats records as DCMTK does: a level letter and a colon before every line."""

    def format(self, record: logging.LogRecord) -> str:
        """``I: message``; multi-line messages get the prefix on each line."""
        letter = _LEVEL_LETTERS.get(record.levelno, record.levelname[:1])
        text = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return "\n".join(f"{letter}: {line}" for line in text.splitlines() or [""])


_handler: logging.Handler | None = None


def setup_logging(
    args: argparse.Namespace, app: str, *, library_verbose: bool = False
) -> logging.Logger:
    """Send aionetdicom's logs to stderr in DCMTK's format; return the app's logger.

    At ``-v`` the app logs INFO and the library WARNING (INFO when ``library_verbose``,
    which SCPs use to log each association); ``-d`` logs everything at DEBUG.
    """
    global _handler
    level: int = args.log_level
    package = logging.getLogger("aionetdicom")
    if _handler is not None:
        package.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(DcmtkFormatter())
    package.addHandler(_handler)
    package.propagate = False
    if level <= logging.DEBUG:
        library_level = logging.DEBUG
    elif level <= logging.INFO:
        library_level = logging.INFO if library_verbose else logging.WARNING
    else:
        library_level = level
    package.setLevel(library_level)
    log = logging.getLogger(f"aionetdicom.apps.{app}")
    log.setLevel(level)
    return log


def uid_name(uid: str) -> str:
    """``uid`` with its registered name when pydicom knows it (for debug logs)."""
    try:
        from pydicom.uid import UID

        name = str(UID(uid).name)
    except Exception:  # pragma: no cover - pydicom missing or odd UID
        return uid
    return uid if name == uid else f"{name} ({uid})"


def describe_contexts(contexts: Sequence[NegotiatedContext]) -> str:
    """One line per negotiated presentation context, for ``-d`` logs."""
    lines = []
    for context in contexts:
        outcome = "Accepted" if context.accepted else f"Rejected: {context.result.name}"
        line = f"  Context ID {context.context_id} ({outcome}): {uid_name(context.abstract_syntax)}"
        if context.accepted:
            line += f", Transfer Syntax {uid_name(context.transfer_syntax)}"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------- running


def run_app(
    main: Callable[[], Awaitable[int]],
    backend: str = "asyncio",
    log: logging.Logger | None = None,
) -> int:
    """Run ``main`` under anyio and turn our exceptions into one ``E:`` line and a status.

    Rejections, aborts, timeouts and network errors give status 1, Ctrl-C gives 130;
    anything else is a bug and keeps its traceback.
    """
    log = log or logging.getLogger("aionetdicom.apps")
    options: dict[str, Any] = {}
    if backend == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        options["use_uvloop"] = True
    try:
        return anyio.run(main, backend=backend, backend_options=options)
    except BaseException as exc:
        leaves = _leaf_errors(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            log.error("Interrupted")
            return EXIT_INTERRUPTED
        for leaf in leaves:
            described = describe_error(leaf)
            if described is not None:
                message, code = described
                log.error("%s", message)
                return code
        raise


def describe_error(exc: BaseException) -> tuple[str, int] | None:
    """The message and exit status for an expected failure, None for anything else."""
    if isinstance(exc, AppError):
        return str(exc), exc.code
    if isinstance(exc, AssociationRejected):
        return f"Association Rejected: {exc}", 1
    if isinstance(exc, AssociationAborted):
        return f"Association Aborted: {exc}", 1
    if isinstance(exc, DicomTimeoutError):
        return f"Timeout: {exc}", 1
    if isinstance(exc, DicomNetworkError):
        return f"{type(exc).__name__}: {exc}", 1
    if isinstance(exc, OSError):
        return f"Network error: {describe_os_error(exc)}", 1
    return None


def describe_os_error(exc: BaseException) -> str:
    """``exc`` as text, with the underlying cause when anyio wrapped it."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if getattr(exc, "errno", None) is None and cause is not None and str(cause) not in text:
        text = f"{text} ({cause})"
    return text


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``[exc]``."""
    children = getattr(exc, "exceptions", None)
    if hasattr(exc, "split") and isinstance(children, (tuple, list)):
        return [leaf for child in children for leaf in _leaf_errors(child)]
    return [exc]
