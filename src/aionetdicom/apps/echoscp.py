"""echoscp: a Verification SCP answering C-ECHO, to test that peers can reach us.

Runs until SIGINT or SIGTERM (or ``--max-runtime``), then stops accepting and lets
running associations finish before it exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import weakref
from collections.abc import Sequence

from aionetdicom.acse.contexts import VERIFICATION_SOP_CLASS, PresentationContext
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.apps.serving import add_server_options, serve_until_stopped
from aionetdicom.association import Association
from aionetdicom.services.verification import EchoRequest

DESCRIPTION = "echoscp: DICOM verification (C-ECHO) SCP"


def build_parser() -> argparse.ArgumentParser:
    """The echoscp command line: DCMTK's (``+xe``) and pynetdicom's (``-xe``) spellings."""
    parser = common.make_parser("echoscp", DESCRIPTION, plus_options=True)
    common.add_general_options(parser)
    add_server_options(parser, ae_title_default="ECHOSCP")
    common.add_prefer_ts_options(parser)
    return parser


def make_ae(args: argparse.Namespace, log: logging.Logger) -> AE:
    """The Verification SCP the options describe, logging each echo it answers."""
    ae = AE(
        args.ae_title,
        maximum_associations=args.max_associations,
        require_called_ae_title=args.require_called_aet,
        allowed_calling_ae_titles=args.allowed_calling_aet,
        allowed_peer_addresses=args.allowed_peer,
        supported_contexts=[PresentationContext(VERIFICATION_SOP_CLASS, args.transfer_syntaxes)],
        **common.timeout_kwargs(args),
    )
    described: weakref.WeakSet[Association] = weakref.WeakSet()

    @ae.on_echo
    async def on_echo(request: EchoRequest) -> int:
        assoc = request.assoc
        if assoc not in described:
            described.add(assoc)
            log.debug(
                "Association #%d from %s (%s:%d), peer implementation %s %s\n%s",
                assoc.id,
                assoc.peer_ae_title,
                *assoc.peer_address,
                assoc.peer_implementation_class_uid,
                assoc.peer_implementation_version_name or "",
                common.describe_contexts(assoc.contexts),
            )
        log.info(
            "Received Echo Request (MsgID %d) from %s on association #%d",
            request.message_id,
            assoc.peer_ae_title,
            assoc.id,
        )
        log.info("Sending Echo Response (Success)")
        return 0x0000

    return ae


async def serve(args: argparse.Namespace, log: logging.Logger) -> int:
    """Listen until a signal or ``--max-runtime``; shut down gracefully; return 0."""
    ae = make_ae(args, log)
    await serve_until_stopped(ae, args, log, "echoscp")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run echoscp with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    log = common.setup_logging(args, "echoscp", library_verbose=True)
    return common.run_app(lambda: serve(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
