"""echoscu: send C-ECHO to a DICOM peer to check connectivity (like DCMTK's echoscu).

Exit status 0 when every echo succeeded, 1 when the association failed or an echo did not
return Success, 2 for bad arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from aionetdicom.acse.contexts import VERIFICATION_SOP_CLASS, PresentationContext
from aionetdicom.acse.requestor import MAX_PRESENTATION_CONTEXTS
from aionetdicom.acse.user_identity import UserIdentity
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.association import Association
from aionetdicom.dimse.packing import PDV_OVERHEAD
from aionetdicom.errors import DicomNetworkError
from aionetdicom.pdu.items import UserIdentityAC

DESCRIPTION = "echoscu: DICOM verification (C-ECHO) SCU"


def build_parser() -> argparse.ArgumentParser:
    """The echoscu command line: DCMTK's options plus pynetdicom's spellings."""
    parser = common.make_parser("echoscu", DESCRIPTION)
    common.add_general_options(parser)
    network = common.add_scu_network_options(parser, calling_aet="ECHOSCU")
    network.add_argument(
        "-r",
        "--repeat",
        type=common.positive_int,
        default=1,
        metavar="N",
        help="send N echo requests on the one association (default: 1)",
    )
    network.add_argument(
        "--abort", action="store_true", help="abort the association instead of releasing it"
    )
    debugging = parser.add_argument_group("association negotiation debugging")
    debugging.add_argument(
        "-pts",
        "--propose-ts",
        type=common.bounded_int(1, len(common.ALL_TRANSFER_SYNTAXES)),
        metavar="N",
        help=f"propose N transfer syntaxes (1..{len(common.ALL_TRANSFER_SYNTAXES)}), "
        "implicit VR little endian first",
    )
    debugging.add_argument(
        "-ppc",
        "--propose-pc",
        type=common.bounded_int(1, MAX_PRESENTATION_CONTEXTS),
        default=1,
        metavar="N",
        help=f"propose N presentation contexts (1..{MAX_PRESENTATION_CONTEXTS})",
    )
    common.add_propose_ts_options(parser)
    identity = parser.add_argument_group("user identity negotiation")
    kinds = identity.add_mutually_exclusive_group()
    kinds.add_argument(
        "-usr", "--user", "--username", dest="username", help="authenticate with user name USERNAME"
    )
    identity.add_argument(
        "-pwd", "--password", help="authenticate with PASSWORD too (only with --user)"
    )
    kinds.add_argument(
        "-kt", "--kerberos", type=Path, metavar="FILE", help="read a Kerberos ticket from FILE"
    )
    kinds.add_argument("--saml", type=Path, metavar="FILE", help="read a SAML assertion from FILE")
    kinds.add_argument("--jwt", type=Path, metavar="FILE", help="read a JSON web token from FILE")
    identity.add_argument(
        "-rsp",
        "--pos-response",
        "--request-response",
        dest="pos_response",
        action="store_true",
        help="request a positive response and fail without one",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the command line (argparse errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    has_identity = any((args.username, args.kerberos, args.saml, args.jwt))
    if args.password is not None and args.username is None:
        parser.error("--password requires --user")
    if args.pos_response and not has_identity:
        parser.error("--pos-response requires a user identity (--user, --kerberos, ...)")
    return args


def proposed_contexts(args: argparse.Namespace) -> list[PresentationContext]:
    """``--propose-pc`` copies of Verification with the transfer syntaxes asked for."""
    if args.propose_ts is not None:
        syntaxes = common.ALL_TRANSFER_SYNTAXES[: args.propose_ts]
    else:
        syntaxes = args.transfer_syntaxes
    context = PresentationContext(VERIFICATION_SOP_CLASS, tuple(syntaxes))
    return [context] * args.propose_pc


def user_identity(args: argparse.Namespace) -> UserIdentity | None:
    """The user identity the options ask for (files are read here), or None."""
    response = bool(args.pos_response)
    try:
        if args.username is not None:
            if args.password is not None:
                return UserIdentity.username_and_passcode(
                    args.username, args.password, positive_response_requested=response
                )
            return UserIdentity.username(args.username, positive_response_requested=response)
        if args.kerberos is not None:
            ticket = args.kerberos.read_bytes()
            return UserIdentity.kerberos(ticket, positive_response_requested=response)
        if args.saml is not None:
            assertion = args.saml.read_bytes()
            return UserIdentity.saml(assertion, positive_response_requested=response)
        if args.jwt is not None:
            token = args.jwt.read_text(encoding="utf-8").strip()
            return UserIdentity.jwt(token, positive_response_requested=response)
    except OSError as exc:
        raise common.AppError(f"cannot read user identity: {exc}") from None
    except ValueError as exc:
        raise common.AppError(f"invalid user identity: {exc}") from None
    return None


async def echo(args: argparse.Namespace, log: logging.Logger) -> int:
    """Associate, send the echoes, release (or abort); return the exit status."""
    ae = AE(args.calling_aet, **common.timeout_kwargs(args))
    contexts = proposed_contexts(args)
    identity = user_identity(args)
    log.info("Requesting Association")
    log.debug(
        "Proposing %d presentation context(s) for Verification with %d transfer syntax(es)",
        len(contexts),
        len(contexts[0].transfer_syntaxes),
    )
    failures = 0
    try:
        async with ae.associate(
            args.peer,
            args.port,
            called_ae_title=args.called_aet,
            ssl_context=common.tls_context(args, server=False),
            contexts=contexts,
            user_identity=identity,
        ) as assoc:
            log.info("Association Accepted (Max Send PDV: %d)", assoc.send_max_pdu - PDV_OVERHEAD)
            log.debug(
                "Peer implementation: %s %s\n%s",
                assoc.peer_implementation_class_uid,
                assoc.peer_implementation_version_name or "",
                common.describe_contexts(assoc.contexts),
            )
            if identity is not None and not _check_identity_response(assoc, identity, log):
                await assoc.abort()
                return 1
            for message_id in range(1, args.repeat + 1):
                log.info("Sending Echo Request (MsgID %d)", message_id)
                status = await assoc.echo()
                if status.is_success:
                    log.info("Received Echo Response (Success)")
                else:
                    failures += 1
                    log.error(
                        "Received Echo Response (0x%04X: %s)", int(status), status.description
                    )
            if args.abort:
                log.info("Aborting Association")
                await assoc.abort()
            else:
                log.info("Releasing Association")
    except OSError as exc:
        if isinstance(exc, DicomNetworkError):
            raise
        text = common.describe_os_error(exc)
        if f"{args.peer}:{args.port}" not in text:
            text = f"cannot connect to {args.peer}:{args.port}: {text}"
        raise common.AppError(f"Association Request Failed: {text}") from exc
    return 1 if failures else 0


def _check_identity_response(
    assoc: Association, identity: UserIdentity, log: logging.Logger
) -> bool:
    """Log the peer's user identity response; False when one was requested but missing."""
    response = assoc.response
    reply = None if response is None else response.user_information.user_identity
    if isinstance(reply, UserIdentityAC):
        log.info("Received User Identity Response (%d bytes)", len(reply.server_response))
        return True
    if identity.positive_response_requested:
        log.error("User Identity Negotiation failed: positive response requested, none received")
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run echoscu with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = parse_args(argv)
    log = common.setup_logging(args, "echoscu")
    return common.run_app(lambda: echo(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
