"""Running an SCP app: listen, announce where, stop on SIGINT/SIGTERM or ``--max-runtime``."""

from __future__ import annotations

import argparse
import logging
import math
import signal
from contextlib import AsyncExitStack, ExitStack

import anyio
import anyio.abc

from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.errors import DicomNetworkError


def add_server_options(
    parser: argparse.ArgumentParser, *, ae_title_default: str, port_default: int | None = None
) -> argparse._ArgumentGroup:
    """The SCP network options plus ``--max-runtime``, which :func:`serve_until_stopped` reads."""
    network = common.add_scp_network_options(
        parser, ae_title_default=ae_title_default, port_default=port_default
    )
    network.add_argument(
        "--max-runtime",
        type=common.timeout_seconds,
        default=None,
        metavar="SECONDS",
        help="stop after SECONDS (default: run until SIGINT or SIGTERM)",
    )
    return network


async def serve_until_stopped(
    ae: AE, args: argparse.Namespace, log: logging.Logger, name: str, what: str = ""
) -> None:
    """Serve ``ae`` on ``args.bind``/``args.port`` until a signal or ``args.max_runtime``.

    The start-up line reads ``<name> listening on <addresses> as <AE title><what>``;
    leaving shuts the server down gracefully.
    """
    async with anyio.create_task_group() as tg:
        # Catch the signals before listening, so a SIGTERM right after start-up is graceful.
        await tg.start(stop_on_signal, tg.cancel_scope, log)
        await _listen(ae, args, log, name, what)
        tg.cancel_scope.cancel()
    log.info("%s stopped", name)


async def _listen(
    ae: AE, args: argparse.Namespace, log: logging.Logger, name: str, what: str
) -> None:
    hosts = args.bind or ["0.0.0.0"]
    ssl_context = common.tls_context(args, server=True)
    async with AsyncExitStack() as stack:
        try:
            server = await stack.enter_async_context(
                ae.serve(hosts, args.port, ssl_context=ssl_context)
            )
        except OSError as exc:
            if isinstance(exc, DicomNetworkError):
                raise
            where = ", ".join(f"{host}:{args.port}" for host in hosts)
            raise common.AppError(
                f"cannot listen on {where}: {common.describe_os_error(exc)}"
            ) from exc
        where = ", ".join(f"{host}:{port}" for host, port in server.addresses)
        if ssl_context is not None:
            where += " (TLS)"
        log.log(common.NOTICE, "%s listening on %s as %s%s", name, where, ae.ae_title, what)
        limit = math.inf if args.max_runtime is None else args.max_runtime
        with anyio.move_on_after(limit) as timer:
            await server.wait_closed()
        if timer.cancelled_caught:
            log.info("Maximum run time reached; shutting down")


async def stop_on_signal(
    scope: anyio.CancelScope,
    log: logging.Logger,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` on SIGINT or SIGTERM (where the platform lets us catch them)."""
    with ExitStack() as stack:
        try:
            signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.debug("signal handling unavailable (%s); Ctrl-C will interrupt", exc)
            task_status.started()
            return
        task_status.started()
        async for signum in signals:
            log.info("%s received; shutting down", signal.Signals(signum).name)
            scope.cancel()
            return
