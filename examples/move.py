"""Have a PACS send instances to an AE with C-MOVE, printing its progress as it goes.

The PACS opens its own association to the destination AE (which it must know by AE
title, with host and port in its configuration) and reports after each sub-operation
how many are remaining, completed, failed and warned. The query keys are as in
``find.py``::

    python examples/move.py 127.0.0.1 11112 -aec QRSCP --destination VIEWER \\
        -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=1.2.840.113619.2.1.1

One ``progress:`` line per pending response on stdout, then ``done:`` with the final
status (and the Failed SOP Instance UID List, if any). Exit status: 0 when every
sub-operation succeeded, 1 when any failed, the destination is unknown (0xA801) or
the association failed, 2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _common

from aionetdicom import AE, RetrieveResponse
from aionetdicom.contexts import PresentationContext
from aionetdicom.services.query_retrieve import query_model


def build_parser() -> argparse.ArgumentParser:
    """The command line: peer, AE titles, TLS, query keys, model and the destination."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    _common.add_peer_options(parser, calling="MOVE_SCU")
    _common.add_query_options(parser, models=_common.MODELS)
    parser.add_argument(
        "-aem",
        "--destination",
        type=_common.ae_title,
        required=True,
        help="AE title the peer sends the instances to",
    )
    _common.add_general_options(parser)
    return parser


def counts(response: RetrieveResponse) -> str:
    """The sub-operation counts of a response, as text (missing counts as '-')."""

    def show(value: int | None) -> str:
        return "-" if value is None else str(value)

    return (
        f"{show(response.remaining)} remaining, {show(response.completed)} completed, "
        f"{show(response.failed)} failed, {show(response.warning)} warning"
    )


async def move(args: argparse.Namespace) -> int:
    """Associate, C-MOVE, print the progress; return the exit status."""
    query = _common.parse_keys(args.keys)
    ae = AE(
        args.calling_aet,
        connect_timeout=args.timeout,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
    )
    final: RetrieveResponse | None = None
    async with (
        ae.associate(
            args.host,
            args.port,
            called_ae_title=args.called_aet,
            contexts=[PresentationContext(query_model(args.model, "move"))],
            ssl_context=_common.client_tls(args),
        ) as assoc,
        assoc.move(query, args.destination, model=args.model) as responses,
    ):
        async for response in responses:
            if response.status.is_pending:
                print(f"progress: {counts(response)}", flush=True)
            else:
                final = response
    if final is None:
        raise _common.ExampleError("the association ended before the final C-MOVE response")
    status = final.status
    print(f"done: 0x{int(status):04X} {status.description}; {counts(final)}")
    for uid in final.failed_sop_instance_uids:
        print(f"failed: {uid}")
    ok = status.is_success and not final.failed
    return _common.EXIT_OK if ok else _common.EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, return the exit status."""
    args = build_parser().parse_args(argv)
    _common.setup_logging(args.verbose)
    return _common.run(lambda: move(args), backend=args.backend, program="move")


if __name__ == "__main__":
    sys.exit(main())
