"""Outstanding DIMSE requests with several responses (C-FIND, C-GET, C-MOVE).

:class:`PendingResponses` is an async iterator over the responses to one request
that ends after the final (non-Pending) response. Leaving it early sends C-CANCEL
and reads up to the final response, so the association stays usable:

* ``async with`` or ``await it.aclose()`` does this at once and waits for it;
* cancelling the task that iterates does it (shielded) before the cancellation
  continues;
* a plain ``async for`` left with ``break`` does it as soon as the iterator is
  garbage collected: the association's reader sends the C-CANCEL and discards the
  remaining responses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from aionetdicom.dimse.command_set import Command, CommandField, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.errors import DicomNetworkError

if TYPE_CHECKING:
    from aionetdicom.association import Association

T = TypeVar("T")

PENDING_STATUSES = frozenset({0xFF00, 0xFF01})


def is_pending(message: AssembledMessage) -> bool:
    """True when a response carries a Pending status (more responses follow)."""
    return message.command.get("Status") in PENDING_STATUSES


class PendingResponses(Generic[T]):
    """The responses to one request, converted by ``convert``; sent on first use."""

    def __init__(
        self,
        assoc: Association,
        context_id: int,
        command: Command,
        dataset: bytes | None,
        convert: Callable[[AssembledMessage], T],
        what: str,
        *,
        on_start: Callable[[], None] | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self.assoc = assoc
        self.context_id = context_id
        self.command = command
        message_id = command.get("MessageID")
        if not isinstance(message_id, int):
            raise ValueError("the request command has no MessageID")
        self.message_id = message_id
        self._dataset = dataset
        self._responses: MemoryObjectReceiveStream[AssembledMessage] | None = None
        self._convert = convert
        self._what = what
        self._on_start = on_start
        self._on_finish = on_finish
        self._done = False
        self._cancel_sent = False

    async def _start(self) -> MemoryObjectReceiveStream[AssembledMessage]:
        if self._responses is None:
            try:
                # on_start may refuse the operation; do that before queueing for a
                # slot in the operations window.
                if self._on_start is not None:
                    self._on_start()
                self._responses = await self.assoc._register_waiter(self.message_id)
                await self.assoc.send_message(self.context_id, self.command, self._dataset)
            except BaseException:
                self._finish()
                raise
            self._dataset = None
        return self._responses

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return f"<PendingResponses {self._what} message {self.message_id} {state}>"

    @property
    def done(self) -> bool:
        """True once the final response arrived (or the association ended)."""
        return self._done

    def __aiter__(self) -> PendingResponses[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        responses = await self._start()
        try:
            message = await self.assoc.receive_response(
                responses, self._what, abort_on_cancel=False
            )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._cancel_and_drain()
            raise
        except BaseException:
            self._finish()
            raise
        if not is_pending(message):
            self._finish()
        return self._convert(message)

    async def __aenter__(self) -> PendingResponses[T]:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop early: send C-CANCEL and wait for the final response."""
        if self._responses is None:
            self._done = True
        if not self._done:
            with anyio.CancelScope(shield=True):
                await self._cancel_and_drain()

    async def cancel(self) -> None:
        """Send C-CANCEL now; keep iterating to receive the remaining responses."""
        if self._responses is not None and not self._done and not self._cancel_sent:
            self._cancel_sent = True
            await send_cancel(self.assoc, self.context_id, self.message_id)

    def _final_already_received(self) -> bool:
        """Consume buffered responses; True (and finished) if the final one is among them."""
        if self._responses is None:
            return False
        try:
            while True:
                if not is_pending(self._responses.receive_nowait()):
                    self._finish()
                    return True
        except anyio.WouldBlock:
            return False
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._finish()
            return True

    async def _cancel_and_drain(self) -> None:
        if self._final_already_received():
            return
        try:
            await self.cancel()
            limit = self.assoc.timeouts.dimse
            assert self._responses is not None
            with anyio.fail_after(math.inf if limit is None else limit):
                async for message in self._responses:
                    if not is_pending(message):
                        break
        except (DicomNetworkError, TimeoutError, anyio.EndOfStream):
            pass
        finally:
            self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._responses is not None:
                self._responses.close()
            self.assoc._forget_waiter(self.message_id)
            if self._on_finish is not None:
                self._on_finish()

    def __del__(self) -> None:
        if self._done or self._responses is None or self._final_already_received():
            return
        if not self._done:
            self._done = True
            self._responses.close()
            self.assoc._cancel_abandoned(self.context_id, self.message_id, self._on_finish)


async def send_cancel(assoc: Association, context_id: int, message_id: int) -> None:
    """Send C-CANCEL-RQ for ``message_id`` (PS3.7 9.3.2.3)."""
    command = make_command(CommandField.C_CANCEL_RQ, MessageIDBeingRespondedTo=message_id)
    await assoc.send_message(context_id, command)
