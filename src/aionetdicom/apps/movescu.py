"""movescu: have a DICOM peer send instances to an AE with C-MOVE (like DCMTK's movescu).

::

    movescu -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=1.2.3 -aem STORE pacs 104

The peer opens its own association to the move destination (an AE title it must know)
and reports progress in C-MOVE responses. With ``--port`` (``+P``) movescu also runs a
storage SCP on that port for the duration, writing received instances to ``-od``: make
the destination an AE title the peer maps to this host and port.

Query keys and files work as in findscu. Exit status 0 when every move ended with
Success, 1 on a failure, warning (failed sub-operations) or network error, 2 for bad
arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import PresentationContext
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.apps.findscu import (
    add_output_directory,
    add_query_options,
    check_output_directory,
    connect_error,
    log_association,
    log_dataset,
    queries,
)
from aionetdicom.apps.getscu import check_final, log_progress
from aionetdicom.contexts import VERIFICATION
from aionetdicom.dimse.command_set import CommandField
from aionetdicom.errors import DicomNetworkError
from aionetdicom.services.query_retrieve import (
    DEFAULT_RETRIEVE_STORAGE_CLASSES,
    RetrieveResponse,
    query_model,
)
from aionetdicom.services.storage import StoreRequest, store_service

DESCRIPTION = "movescu: DICOM retrieve (C-MOVE) SCU"


def build_parser() -> argparse.ArgumentParser:
    """The movescu command line (``+P`` as DCMTK spells ``--port``)."""
    parser = common.make_parser("movescu", DESCRIPTION, plus_options=True)
    common.add_general_options(parser)
    network = common.add_scu_network_options(parser, calling_aet="MOVESCU", key_option=False)
    network.add_argument(
        "-aem",
        "--move",
        "--move-aet",
        dest="move_destination",
        type=common.ae_title,
        required=True,
        metavar="AETITLE",
        help="move the instances to AETITLE (required)",
    )
    network.add_argument(
        "+P",
        "--port",
        dest="store_port",
        type=common.port_number,
        metavar="PORT",
        help="also receive the instances: run a storage SCP on PORT while moving",
    )
    network.add_argument(
        "--store-bind",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="address the storage SCP of --port listens on (default: 0.0.0.0)",
    )
    add_query_options(parser, models=("patient", "study", "patient-study"), default="patient")
    common.add_propose_ts_options(parser)
    add_output_directory(parser, "instances received with --port")
    return parser


def storage_scp(
    ae_title: str, folder: Path, args: argparse.Namespace, log: logging.Logger
) -> tuple[AE, list[Path]]:
    """An AE that accepts every storage SOP class and writes what it gets to ``folder``."""
    classes = dict.fromkeys([*DEFAULT_RETRIEVE_STORAGE_CLASSES, *sop_classes.STORAGE_SOP_CLASSES])
    contexts = [
        *VERIFICATION,
        *(PresentationContext(uid, common.ALL_TRANSFER_SYNTAXES) for uid in classes),
    ]
    ae = AE(ae_title, supported_contexts=contexts, **common.timeout_kwargs(args))
    received: list[Path] = []

    async def on_store(request: StoreRequest) -> int:
        path = await request.save_to(folder)
        received.append(path)
        log.debug("Stored %s from %s", path, request.assoc.peer_ae_title)
        return 0x0000

    ae.handle_dimse(CommandField.C_STORE_RQ, store_service(on_store))
    return ae, received


async def move(args: argparse.Namespace, log: logging.Logger) -> int:
    """Optionally start the storage SCP, send each C-MOVE, release; return the exit status."""
    identifiers = queries(args)
    model_uid = query_model(args.model, "move")
    contexts = [PresentationContext(model_uid, tuple(args.transfer_syntaxes))]
    ae = AE(args.calling_aet, **common.timeout_kwargs(args))
    failures = 0
    received: list[Path] = []
    async with AsyncExitStack() as stack:
        if args.store_port is not None:
            folder = check_output_directory(args.output_directory)
            scp, received = storage_scp(args.move_destination, folder, args, log)
            try:
                server = await stack.enter_async_context(
                    scp.serve(args.store_bind, args.store_port)
                )
            except OSError as exc:
                text = common.describe_os_error(exc)
                raise common.AppError(f"cannot listen on port {args.store_port}: {text}") from exc
            log.info("Storage SCP %s listening on port %d", args.move_destination, server.port)
        log.info("Requesting Association")
        try:
            async with ae.associate(
                args.peer,
                args.port,
                called_ae_title=args.called_aet,
                ssl_context=common.tls_context(args, server=False),
                contexts=contexts,
            ) as assoc:
                log_association(assoc, log)
                for identifier in identifiers:
                    log.info("Sending Move Request (destination %s)", args.move_destination)
                    log_dataset(log, identifier)
                    final: RetrieveResponse | None = None
                    async with assoc.move(
                        identifier, args.move_destination, model=model_uid
                    ) as responses:
                        async for response in responses:
                            log_progress(log, "Move", response)
                            if not response.status.is_pending:
                                final = response
                    if not check_final(log, "Move", final):
                        failures += 1
                log.info("Releasing Association")
        except OSError as exc:
            if isinstance(exc, DicomNetworkError):
                raise
            raise connect_error(exc, args) from exc
    if args.store_port is not None:
        log.info("Received %d instance(s) in %s", len(received), args.output_directory)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run movescu with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    log = common.setup_logging(args, "movescu")
    return common.run_app(lambda: move(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
