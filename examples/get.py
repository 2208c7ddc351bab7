"""Retrieve instances with C-GET into a folder: the peer sends them back on our own
association, so no port needs to be open on this side (unlike C-MOVE).

Each instance is written while it arrives, as ``<output>/<SOP Instance UID>.dcm``
through a temporary file that is fsynced and renamed into place; the peer gets its
C-STORE response only then. The query keys are as in ``find.py``::

    python examples/get.py 127.0.0.1 11112 -aec QRSCP -o ./retrieved \\
        -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=1.2.840.113619.2.1.1
    python examples/get.py 127.0.0.1 11112 -aec QRSCP -o ./series \\
        -k QueryRetrieveLevel=SERIES -k StudyInstanceUID=1.2.3 -k SeriesInstanceUID=1.2.3.4

Prints a line per stored instance and a summary. Exit status: 0 when every
sub-operation succeeded, 1 when any failed (or none matched and the peer says so) or
the association failed, 2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import _common
import anyio

from aionetdicom import AE
from aionetdicom.services.query_retrieve import retrieve_contexts


def build_parser() -> argparse.ArgumentParser:
    """The command line: peer, AE titles, TLS, query keys, model and the output folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    _common.add_peer_options(parser, calling="GET_SCU")
    _common.add_query_options(parser, models=_common.MODELS)
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder to write the instances to"
    )
    _common.add_general_options(parser)
    return parser


async def get(args: argparse.Namespace) -> int:
    """Associate, C-GET, save each instance; return the exit status."""
    query = _common.parse_keys(args.keys)
    output: Path = args.output
    try:
        await anyio.Path(output).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _common.ExampleError(f"cannot create {output}: {exc.strerror}") from None
    ae = AE(
        args.calling_aet,
        connect_timeout=args.timeout,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
    )
    # The GET model plus the common storage SOP classes with the SCP role (we are the
    # Storage SCP of the C-STORE sub-operations).
    contexts = retrieve_contexts([args.model])
    async with ae.associate(
        args.host,
        args.port,
        called_ae_title=args.called_aet,
        contexts=contexts,
        ssl_context=_common.client_tls(args),
    ) as assoc:
        async with assoc.get_instances(query, model=args.model) as instances:
            async for instance in instances:
                path = await instance.save_to(output)
                print(f"saved {path}", flush=True)
        final = instances.response
    if final is None:
        raise _common.ExampleError("the association ended before the final C-GET response")
    failed = final.failed or 0
    print(
        f"get: {instances.received} instance(s) saved in {output}; completed "
        f"{final.completed or 0}, failed {failed}, warning {final.warning or 0}; "
        f"final status 0x{int(final.status):04X} {final.status.description}",
        file=sys.stderr,
    )
    for uid in final.failed_sop_instance_uids:
        print(f"get: failed: {uid}", file=sys.stderr)
    return _common.EXIT_OK if final.status.is_success and not failed else _common.EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, return the exit status."""
    args = build_parser().parse_args(argv)
    _common.setup_logging(args.verbose)
    return _common.run(lambda: get(args), backend=args.backend, program="get")


if __name__ == "__main__":
    sys.exit(main())
