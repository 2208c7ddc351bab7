"""C-ECHO a DICOM peer: is it there, does it accept us, how long does a round trip take?

Opens one association (Verification), sends ``--count`` C-ECHO requests on it and
prints one line per response, then releases the association::

    python examples/echo.py 127.0.0.1 11112 -aec ANY-SCP --count 3
    python examples/echo.py pacs.example 2762 -aec PACS --tls --tls-ca ca.pem

Exit status: 0 when every C-ECHO answered Success, 1 otherwise (failure status,
association rejected or aborted, connection refused, timeout), 2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import _common

from aionetdicom import AE


def build_parser() -> argparse.ArgumentParser:
    """The command line: peer, AE titles, TLS and ``--count``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_peer_options(parser, calling="ECHO_SCU")
    parser.add_argument(
        "--count",
        type=_common.positive_int,
        default=1,
        metavar="N",
        help="send N C-ECHO requests on the association (default: 1)",
    )
    _common.add_general_options(parser)
    return parser


async def echo(args: argparse.Namespace) -> int:
    """Associate, C-ECHO ``args.count`` times, release; return the exit status."""
    ae = AE(
        args.calling_aet,
        connect_timeout=args.timeout,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
    )
    failures = 0
    async with ae.associate(
        args.host,
        args.port,
        called_ae_title=args.called_aet,
        ssl_context=_common.client_tls(args),
    ) as assoc:
        via = f" over {assoc.tls.version}" if assoc.tls is not None else ""
        for number in range(1, args.count + 1):
            started = time.perf_counter()
            status = await assoc.echo()
            took = (time.perf_counter() - started) * 1000
            print(
                f"C-ECHO {number} to {args.called_aet} at {args.host}:{args.port}{via}: "
                f"0x{int(status):04X} {status.description} ({took:.1f} ms)"
            )
            failures += not status.is_success
    return _common.EXIT_FAILED if failures else _common.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, return the exit status."""
    args = build_parser().parse_args(argv)
    _common.setup_logging(args.verbose)
    return _common.run(lambda: echo(args), backend=args.backend, program="echo")


if __name__ == "__main__":
    sys.exit(main())
