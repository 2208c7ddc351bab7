"""Shared machinery of the hostile-peer tests: a watched server, raw peers, the checks.

Every case runs inside :func:`serving`. It starts our SCP, has a well-behaved SCU
echo before the case and after it, waits for the server to end every connection the
case opened, and fails the case if anything was logged as an error (or with a
traceback), an asyncio task exception went unretrieved, or an exception was
unraisable while it ran. The cases themselves check what the peer got back: an
A-ABORT with the PS3.8 source and reason, an A-ASSOCIATE-RJ with result, source and
reason, a DIMSE status, or the connection closed, each within the server's timers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import sniffio
from anyio.abc import SocketAttribute, SocketStream

from aionetdicom import AE, Server
from aionetdicom.contexts import EXPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from aionetdicom.dimse.command_set import Command, CommandField, encode_command, make_command
from aionetdicom.dimse.fragments import AssembledMessage, MessageAssembler
from aionetdicom.dimse.packing import pack_message
from aionetdicom.pdu import (
    PDU,
    PDV,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    PDataTF,
    PDUReader,
    PresentationContextRQ,
    UserInformation,
    decode_pdu,
    encode_pdu,
)

HOST = "127.0.0.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Server timers for cases that must not wait for them (the reply comes at once).
SLOW = 2.0
#: Server timers for cases that wait for them to expire.
FAST = 0.5
#: Slack on top of a timer for the reply to arrive on a busy machine.
SLACK = 1.5

#: A-ABORT sources (PS3.8 9.3.8).
USER, PROVIDER = 0, 2
#: A-ABORT reasons when the source is the service provider (PS3.8 9.3.8).
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU = 0, 1, 2
UNRECOGNIZED_PARAMETER, UNEXPECTED_PARAMETER, INVALID_VALUE = 4, 5, 6


# --------------------------------------------------------------------------- the watch


class _Problems(logging.Handler):
    """Keeps every log record at ERROR or above, and every one carrying a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.found.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextmanager
def _unraisable_watch(problems: list[str]) -> Iterator[None]:
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        problems.append(f"unraisable: {unraisable.exc_value!r} in {unraisable.object!r}")
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


@asynccontextmanager
async def no_unhandled_errors() -> AsyncIterator[list[str]]:
    """Fail if the block logs an error or traceback, leaves a task exception
    unretrieved (asyncio) or raises an unraisable exception."""
    handler = _Problems()
    root = logging.getLogger()
    root.addHandler(handler)
    loop: asyncio.AbstractEventLoop | None = None
    previous_handler: Any = None
    if sniffio.current_async_library() == "asyncio":
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()

        def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            handler.found.append(f"asyncio: {context.get('message')} {context.get('exception')!r}")
            if previous_handler is not None:
                previous_handler(loop, context)

        loop.set_exception_handler(on_loop_error)
    failed = True
    try:
        with _unraisable_watch(handler.found):
            yield handler.found
            gc.collect()  # finalize dropped tasks now: "Task exception was never retrieved"
            await anyio.lowlevel.checkpoint()
        failed = False
    finally:
        root.removeHandler(handler)
        if loop is not None:
            loop.set_exception_handler(previous_handler)
    if not failed:
        assert handler.found == [], "\n".join(handler.found)


async def echo_ok(server: Server) -> None:
    """A well-behaved SCU associates, echoes and releases promptly."""
    scu = AE("GOOD-SCU", acse_timeout=2, dimse_timeout=2, network_timeout=5)
    with anyio.fail_after(3 + SLACK):
        async with scu.associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0


async def eventually(condition: Callable[[], bool], within: float, poll: float = 0.01) -> None:
    """Wait until ``condition()`` holds; fail if it does not within ``within`` seconds."""
    with anyio.fail_after(within):
        while True:
            if condition():
                return
            await anyio.sleep(poll)


async def wait_until_drained(server: Server, within: float) -> None:
    """Every connection the server had is ended within ``within`` seconds."""
    await eventually(lambda: not server.associations, within)


@asynccontextmanager
async def serving(
    timer: float = SLOW, *, scp: AE | None = None, **settings: Any
) -> AsyncIterator[Server]:
    """Our SCP with ``timer`` seconds of ARTIM/ACSE, DIMSE and network timeout, watched.

    A good SCU echoes before the block and after it; then every connection must end
    within the timers, and nothing may have been logged as an error meanwhile.
    ``scp`` replaces the default AE; ``settings`` go to the default AE.
    """
    if scp is None:
        scp = AE(
            "ANY-SCP",
            acse_timeout=timer,
            network_timeout=timer,
            dimse_timeout=timer,
            **settings,
        )
    async with no_unhandled_errors(), scp.serve(HOST, 0) as server:
        await echo_ok(server)
        yield server
        await echo_ok(server)
        await wait_until_drained(server, 2 * timer + SLACK)


# --------------------------------------------------------------------------- raw peers


class RawPeer:
    """A raw TCP connection that reads whole PDUs with :class:`PDUReader`."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reader = PDUReader(1 << 24, 1 << 24)
        self.assembler = MessageAssembler()

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def send_slowly(self, data: bytes, interval: float) -> None:
        """Send ``data`` one byte at a time, ``interval`` seconds apart."""
        for index in range(len(data)):
            await self.stream.send(data[index : index + 1])
            await anyio.sleep(interval)

    async def next_pdu(self, timeout: float = SLOW + SLACK) -> PDU | None:
        """The next PDU from the server, or None once it closed the connection."""
        with anyio.fail_after(timeout):
            while (pdu := self.reader.next_pdu()) is None:
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return None
                self.reader.feed(data)
            return pdu

    async def associate(
        self, contexts: Sequence[PresentationContextRQ] | None = None, **fields: object
    ) -> AAssociateAC:
        """Establish an association (proposed contexts default to Verification as #1)."""
        await self.send(encode_pdu(association_request(contexts, **fields)))
        reply = await self.next_pdu()
        assert isinstance(reply, AAssociateAC), reply
        return reply

    async def send_message(
        self,
        context_id: int,
        command: Command,
        dataset: bytes | None = None,
        max_pdu: int = 16384,
    ) -> None:
        """Send one DIMSE message in P-DATA-TF PDUs of at most ``max_pdu`` bytes."""
        for pdu in pack_message(context_id, encode_command(command), dataset, max_pdu):
            await self.send(b"".join(bytes(part) for part in pdu))

    async def receive_message(
        self, timeout: float = SLOW + SLACK, pdu_lengths: list[int] | None = None
    ) -> AssembledMessage:
        """The next DIMSE message; the length of each P-DATA-TF goes to ``pdu_lengths``."""
        with anyio.fail_after(timeout):
            while True:
                pdu = await self.next_pdu(timeout)
                assert isinstance(pdu, PDataTF), f"expected P-DATA-TF, got {pdu!r}"
                if pdu_lengths is not None:
                    pdu_lengths.append(sum(len(pdv.data) + 6 for pdv in pdu.pdvs))
                for pdv in pdu.pdvs:
                    message = self.assembler.feed(pdv)
                    if message is not None:
                        assert isinstance(message, AssembledMessage)
                        return message

    async def kill(self) -> None:
        """Drop the connection with a TCP reset, as a killed peer's kernel would."""
        sock = self.stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


@asynccontextmanager
async def raw_connection(server: Server) -> AsyncIterator[RawPeer]:
    stream = await anyio.connect_tcp(HOST, server.port)
    async with stream:
        yield RawPeer(stream)


def association_request(
    contexts: Sequence[PresentationContextRQ] | None = None, **fields: object
) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ to our SCP; ``user_information`` may be given in ``fields``."""
    if contexts is None:
        contexts = [PresentationContextRQ(1, VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN,))]
    fields.setdefault(
        "user_information",
        UserInformation(maximum_length=16384, implementation_class_uid="1.2.3.4.5.6"),
    )
    return AAssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="HOSTILE",
        presentation_contexts=tuple(contexts),
        **fields,  # type: ignore[arg-type]
    )


def echo_command(message_id: int = 7) -> Command:
    return make_command(
        CommandField.C_ECHO_RQ, MessageID=message_id, AffectedSOPClassUID=VERIFICATION_SOP_CLASS
    )


def echo_pdata(context_id: int = 1) -> bytes:
    return encode_pdu(PDataTF((PDV(context_id, True, True, encode_command(echo_command())),)))


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


# --------------------------------------------------------------------------- the checks


def assert_abort(pdu: PDU | None, reason: int, source: int = PROVIDER) -> None:
    """An A-ABORT with this source and reason, byte-exact on the wire."""
    assert isinstance(pdu, AAbort), f"expected an A-ABORT, got {pdu!r}"
    assert (pdu.source, pdu.reason) == (source, reason)
    assert decode_pdu(encode_pdu(pdu)) == pdu


def assert_reject(pdu: PDU | None, result: int, source: int, reason: int) -> None:
    """An A-ASSOCIATE-RJ with this result, source and reason."""
    assert isinstance(pdu, AAssociateRJ), f"expected an A-ASSOCIATE-RJ, got {pdu!r}"
    assert (pdu.result, pdu.source, pdu.reason) == (result, source, reason)


async def expect_abort_at_once(
    peer: RawPeer, sent_at: float, reason: int, timer: float = SLOW
) -> None:
    """An A-ABORT arrives well before the server's ``timer`` could have fired."""
    assert_abort(await peer.next_pdu(), reason)
    assert time.monotonic() - sent_at < timer / 2


async def expect_closed(peer: RawPeer, timeout: float) -> None:
    """The server closes the connection within ``timeout`` seconds, sending nothing more."""
    assert await peer.next_pdu(timeout) is None
