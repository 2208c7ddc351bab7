"""getscu: retrieve instances with C-GET and store them locally (like DCMTK's getscu).

The peer sends the matching instances back on the same association as C-STORE
sub-operations; each is written atomically to ``-od`` as ``<SOP Instance UID>.dcm``::

    getscu -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=1.2.3 -od in pacs 104

Query keys and files work as in findscu. The storage SOP classes are proposed with the
SCP role (SCP/SCU role selection). Exit status 0 when every retrieve ended with
Success, 1 on a failure, warning (failed sub-operations) or network error, 2 for bad
arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from aionetdicom.acse.contexts import DEFAULT_TRANSFER_SYNTAXES
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
    status_text,
)
from aionetdicom.errors import DicomNetworkError
from aionetdicom.services.query_retrieve import RetrieveResponse, query_model, retrieve_contexts
from aionetdicom.services.storage import StoreRequest

DESCRIPTION = "getscu: DICOM retrieve (C-GET) SCU"


def build_parser() -> argparse.ArgumentParser:
    """The getscu command line."""
    parser = common.make_parser("getscu", DESCRIPTION)
    common.add_general_options(parser)
    common.add_scu_network_options(parser, calling_aet="GETSCU", key_option=False)
    add_query_options(parser, models=("patient", "study", "patient-study"), default="patient")
    common.add_propose_ts_options(parser)
    add_output_directory(parser, "received instances")
    return parser


def log_progress(log: logging.Logger, what: str, response: RetrieveResponse) -> None:
    """One progress line: status and sub-operation counts (INFO, i.e. ``-v``)."""

    def shown(value: int | None) -> str:
        return "-" if value is None else str(value)

    log.info(
        "%s Response (%s): completed %s, remaining %s, failed %s, warning %s",
        what,
        status_text(response.status),
        shown(response.completed),
        shown(response.remaining),
        shown(response.failed),
        shown(response.warning),
    )


def check_final(log: logging.Logger, what: str, final: RetrieveResponse | None) -> bool:
    """Log the final response; True when it is Success."""
    if final is None:
        log.error("%s Failed: no final response", what)
        return False
    if final.failed_sop_instance_uids:
        log.warning(
            "Failed SOP Instance UIDs:\n%s",
            "\n".join(f"  {uid}" for uid in final.failed_sop_instance_uids),
        )
    if final.status.is_success:
        return True
    log.error(
        "%s Failed: %s (completed %s, failed %s, warning %s)",
        what,
        status_text(final.status),
        final.completed,
        final.failed,
        final.warning,
    )
    return False


async def get(args: argparse.Namespace, log: logging.Logger) -> int:
    """Associate, send each C-GET, store what arrives, release; return the exit status."""
    identifiers = queries(args)
    folder = check_output_directory(args.output_directory)
    model_uid = query_model(args.model, "get")
    syntaxes = tuple(args.transfer_syntaxes) or DEFAULT_TRANSFER_SYNTAXES
    contexts = retrieve_contexts([model_uid], transfer_syntaxes=syntaxes)
    ae = AE(args.calling_aet, **common.timeout_kwargs(args))
    stored = 0

    async def on_store(request: StoreRequest) -> int:
        nonlocal stored
        path = await request.save_to(folder)
        stored += 1
        log.debug("Stored %s", path)
        return 0x0000

    failures = 0
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
                log.info("Sending Get Request")
                log_dataset(log, identifier)
                final: RetrieveResponse | None = None
                async with assoc.get(identifier, model=model_uid, on_store=on_store) as responses:
                    async for response in responses:
                        log_progress(log, "Get", response)
                        if not response.status.is_pending:
                            final = response
                if not check_final(log, "Get", final):
                    failures += 1
            log.info("Releasing Association")
    except OSError as exc:
        if isinstance(exc, DicomNetworkError):
            raise
        raise connect_error(exc, args) from exc
    log.info("Stored %d instance(s) in %s", stored, folder)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run getscu with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    log = common.setup_logging(args, "getscu")
    return common.run_app(lambda: get(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
