"""Query a PACS with C-FIND and print the matches, as text or as DICOM JSON.

The query keys come from ``-k``: ``-k Keyword=value`` matches (wildcards ``*``/``?``,
ranges ``20240101-``, UID lists ``1.2\\1.3``), ``-k Keyword`` asks for the value. The
query level defaults to STUDY. ``--limit N`` stops after N matches (the rest of the
query is cancelled with C-CANCEL)::

    python examples/find.py 127.0.0.1 11112 -aec QRSCP -k PatientName='DOE^*' \\
        -k StudyInstanceUID -k StudyDate
    python examples/find.py 127.0.0.1 11112 -aec QRSCP --model patient \\
        -k QueryRetrieveLevel=PATIENT -k PatientID --json > patients.json

Matches go to stdout (with ``--json``, one JSON array of DICOM JSON objects as in
PS3.18 F.2, made by pydicom's ``Dataset.to_json_dict``); the summary goes to stderr.
Exit status: 0 when the query completed (Success, or cancelled by ``--limit``), 1 when
the peer answered a failure or the association failed, 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import _common
from pydicom.dataset import Dataset

from aionetdicom import AE
from aionetdicom.contexts import PresentationContext
from aionetdicom.services.query_retrieve import query_model


def build_parser() -> argparse.ArgumentParser:
    """The command line: peer, AE titles, TLS, query keys, model, ``--json``, ``--limit``."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    _common.add_peer_options(parser, calling="FIND_SCU")
    _common.add_query_options(parser, models=(*_common.MODELS, "worklist"))
    parser.add_argument("--json", action="store_true", help="print the matches as DICOM JSON")
    parser.add_argument(
        "--limit",
        type=_common.positive_int,
        metavar="N",
        help="stop after N matches (C-CANCEL)",
    )
    _common.add_general_options(parser)
    return parser


def as_text(number: int, match: Dataset) -> str:
    """One match as readable lines: ``(gggg,eeee) Keyword VR: value``."""
    lines = [f"# match {number}"]
    for element in match:
        value = "" if element.value is None else str(element.value)
        lines.append(f"{element.tag} {element.keyword or '(private)'} {element.VR}: {value}")
    return "\n".join(lines)


async def find(args: argparse.Namespace) -> int:
    """Associate, C-FIND, print the matches; return the exit status."""
    level = None if args.model == "worklist" else "STUDY"
    query = _common.parse_keys(args.keys, default_level=level)
    ae = AE(
        args.calling_aet,
        connect_timeout=args.timeout,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
    )
    matches: list[Dataset] = []
    final = None
    # Leaving the find block early (--limit, an error) sends C-CANCEL and waits for
    # the peer's final response, so the association stays usable.
    async with (
        ae.associate(
            args.host,
            args.port,
            called_ae_title=args.called_aet,
            contexts=[PresentationContext(query_model(args.model, "find"))],
            ssl_context=_common.client_tls(args),
        ) as assoc,
        assoc.find(query, model=args.model) as responses,
    ):
        async for response in responses:
            if response.status.is_pending and response.identifier is not None:
                matches.append(response.identifier)
                if not args.json:
                    print(as_text(len(matches), response.identifier), flush=True)
                if args.limit is not None and len(matches) >= args.limit:
                    break
            elif not response.status.is_pending:
                final = response.status
    if args.json:
        json.dump([match.to_json_dict() for match in matches], sys.stdout, indent=2)
        print()
    if final is None:  # stopped by --limit: the final response was a cancel or success
        print(f"find: {len(matches)} match(es) (stopped at --limit)", file=sys.stderr)
        return _common.EXIT_OK
    print(
        f"find: {len(matches)} match(es); final status 0x{int(final):04X} {final.description}",
        file=sys.stderr,
    )
    return _common.EXIT_OK if final.is_success or final.is_cancel else _common.EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, return the exit status."""
    args = build_parser().parse_args(argv)
    _common.setup_logging(args.verbose)
    return _common.run(lambda: find(args), backend=args.backend, program="find")


if __name__ == "__main__":
    sys.exit(main())
