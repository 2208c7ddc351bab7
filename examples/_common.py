"""Helpers the example scripts share: peer, TLS and query options, logging, and a runner
that turns the errors a user can cause into one clear line and an exit status.

Not an example itself; every script next to it imports it (a script's own folder is on
``sys.path`` when it runs, so ``import _common`` works from anywhere).

Exit statuses used by every example: 0 done, 1 failed (a DICOM failure status, a
rejected or aborted association, a network error, a bad file), 2 bad command line,
130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from aionetdicom import (
    AssociationAborted,
    AssociationRejected,
    DicomNetworkError,
    DicomTimeoutError,
    tls,
    validate_ae_title,
)
from aionetdicom.contexts import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
)
from aionetdicom.datasets import DatasetError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: What the SCP examples accept for received instances, in their order of preference
#: (the acceptor picks one per presentation context): lossless compression first, so an
#: instance offered in its own lossless syntax is kept as it is; then the uncompressed
#: syntaxes; lossy compression last, so an uncompressed instance is never offered up
#: for lossy compression, while a lossy one proposed alone is still taken as it is.
STORAGE_TRANSFER_SYNTAXES = (
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    RLE_LOSSLESS,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_2000,
)

#: Information models of the Query/Retrieve examples (names the library understands).
MODELS = ("study", "patient", "patient-study")

_BINARY_VRS = {"US", "UL", "SS", "SL", "UV", "SV", "FL", "FD", "AT"}
_TEXT_VRS = {"LT", "ST", "UT"}  # a backslash is text there, not a value separator


class ExampleError(Exception):
    """A failure the user can fix (bad file, bad query, ...): printed as one line."""


# ---------------------------------------------------------------------- argument types


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 0 and 65535")
    return port


def ae_title(text: str) -> str:
    """argparse type: a valid AE title (1-16 characters, no backslash or control chars)."""
    try:
        return validate_ae_title(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


# ---------------------------------------------------------------------- options


def add_general_options(parser: argparse.ArgumentParser) -> None:
    """``-v`` (repeat for debug) and ``--backend``."""
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log lines (-vv: debug)"
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop to run on (default: asyncio)",
    )


def add_peer_options(parser: argparse.ArgumentParser, *, calling: str) -> None:
    """Where the peer is, the AE titles, the timeout and the TLS options of an SCU."""
    parser.add_argument("host", help="host name or address of the peer")
    parser.add_argument("port", type=port_number, help="TCP port of the peer")
    parser.add_argument(
        "-aet",
        "--calling-aet",
        type=ae_title,
        default=calling,
        help=f"our AE title (default: {calling})",
    )
    parser.add_argument(
        "-aec",
        "--called-aet",
        type=ae_title,
        default="ANY-SCP",
        help="the peer's AE title (default: ANY-SCP)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="connect, association and response timeout (default: 30)",
    )
    add_tls_client_options(parser)


def add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    """``--tls`` with ``--tls-ca``, ``--tls-cert``/``--tls-key`` and ``--tls-no-verify``."""
    group = parser.add_argument_group("TLS (PS3.15 BCP 195 profile)")
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--tls-ca", metavar="PEM", help="CA certificates to verify the peer with")
    group.add_argument(
        "--tls-cert", metavar="PEM", help="our certificate (for mutual authentication)"
    )
    group.add_argument("--tls-key", metavar="PEM", help="our private key (default: in the cert)")
    group.add_argument(
        "--tls-no-verify", action="store_true", help="do not verify the peer's certificate"
    )


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context the options ask for, or None for plain TCP."""
    if not args.tls:
        if args.tls_ca or args.tls_cert or args.tls_key or args.tls_no_verify:
            raise ExampleError("--tls-ca, --tls-cert, --tls-key and --tls-no-verify need --tls")
        return None
    try:
        return tls.client_context(
            ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, verify=not args.tls_no_verify
        )
    except (OSError, ssl.SSLError) as exc:
        raise ExampleError(f"cannot load the TLS certificates or keys: {exc}") from None


def add_query_options(parser: argparse.ArgumentParser, *, models: Sequence[str]) -> None:
    """``-k KEY[=VALUE]`` (repeatable) and ``--model``."""
    parser.add_argument(
        "-k",
        "--key",
        dest="keys",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="query key: a keyword (PatientName) or tag (0010,0010), '=value' to match, "
        "nothing to ask for it; repeat for several (QueryRetrieveLevel defaults to STUDY)",
    )
    parser.add_argument(
        "--model",
        choices=tuple(models),
        default="study",
        help="information model (default: study root)",
    )


def parse_keys(keys: Sequence[str], *, default_level: str | None = "STUDY") -> Dataset:
    """The identifier the ``-k`` options describe.

    ``PatientName=DOE^*`` matches, ``StudyInstanceUID`` (no ``=``) asks for the value,
    ``StudyInstanceUID=1.2\\1.3`` is a list of UIDs. Raises ExampleError naming a bad key.
    """
    identifier = Dataset()
    for key in keys:
        name, has_value, text = key.partition("=")
        name = name.strip()
        tag: int | None
        if "," in name:
            group, _, element = name.strip("()").partition(",")
            try:
                tag = int(Tag(int(group, 16), int(element, 16)))
            except (ValueError, OverflowError):
                raise ExampleError(f"-k {key}: {name!r} is not a tag like 0010,0010") from None
        else:
            tag = tag_for_keyword(name)
            if tag is None:
                raise ExampleError(f"-k {key}: {name!r} is not a DICOM keyword")
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise ExampleError(f"-k {key}: tag {Tag(tag)} is not in the dictionary") from None
        if vr == "SQ":
            raise ExampleError(f"-k {key}: sequence matching is not supported here")
        value: object = None
        if has_value and text:
            parts = [text] if vr in _TEXT_VRS else text.split("\\")
            if vr in _BINARY_VRS:
                try:
                    numbers = [float(p) if vr in ("FL", "FD") else int(p, 0) for p in parts]
                except ValueError:
                    raise ExampleError(f"-k {key}: {text!r} is not a number") from None
                value = numbers[0] if len(numbers) == 1 else numbers
            else:
                value = parts[0] if len(parts) == 1 else parts
        identifier.add_new(tag, vr, value)
    if default_level is not None and "QueryRetrieveLevel" not in identifier:
        identifier.QueryRetrieveLevel = default_level
    return identifier


# ---------------------------------------------------------------------- running


def setup_logging(verbose: int) -> None:
    """Log to stderr: warnings by default, INFO with -v, DEBUG with -vv."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if verbose < 2:  # the library's own INFO lines only with -vv
        logging.getLogger("aionetdicom").setLevel(max(level, logging.WARNING))


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``[exc]``."""
    children = getattr(exc, "exceptions", None)
    if isinstance(children, (tuple, list)) and hasattr(exc, "split"):
        return [leaf for child in children for leaf in leaves(child)]
    return [exc]


def describe(exc: BaseException) -> str | None:
    """One line for an error a user can cause, None for anything else (a bug)."""
    if isinstance(exc, ExampleError):
        return str(exc)
    if isinstance(exc, AssociationRejected):
        return f"association rejected: {exc}"
    if isinstance(exc, AssociationAborted):
        return f"association aborted: {exc}"
    if isinstance(exc, DicomTimeoutError):
        return f"timeout: {exc}"
    if isinstance(exc, DicomNetworkError):
        return f"DICOM network error: {exc}"
    if isinstance(exc, DatasetError):
        return f"not a usable DICOM file: {exc}"
    if isinstance(exc, sqlite3.Error):
        return f"database error: {exc}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" if exc.filename else str(exc)
    return None


def _report(exc: BaseException, program: str) -> int | None:
    """Print ``exc`` as one line and return the exit status; None for a bug."""
    found = leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
        print(f"{program}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    for leaf in found:
        text = describe(leaf)
        if text is not None:
            if isinstance(leaf, OSError) and leaf.filename:
                text = f"{leaf.filename}: {text}"
            print(f"{program}: error: {text}", file=sys.stderr)
            return EXIT_FAILED
    return None


def run(main: Callable[[], Awaitable[int]], *, backend: str, program: str) -> int:
    """``anyio.run(main)``; expected errors become ``program: error: ...`` and status 1."""
    try:
        return anyio.run(main, backend=backend)
    except BaseException as exc:
        code = _report(exc, program)
        if code is None:
            raise
        return code


def run_sync(main: Callable[[], int], *, program: str) -> int:
    """``main()`` with the error handling of :func:`run`, for work without I/O waits."""
    try:
        return main()
    except BaseException as exc:
        code = _report(exc, program)
        if code is None:
            raise
        return code
