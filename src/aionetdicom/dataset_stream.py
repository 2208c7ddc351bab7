"""A data set arriving fragment by fragment: the hand-over from the reader task to a handler.

The association's reader puts each received fragment of a streamed data set into a
:class:`DatasetStream`; the handler reads them (``async for chunk in stream``). At most
``buffer_limit`` bytes wait between the two: beyond that the reader stops reading the
socket, so TCP flow control slows the peer and memory stays bounded whatever the data
set's size. A consumer that loses interest calls :meth:`DatasetStream.discard`; what
is left is then read from the socket and dropped, so the association stays usable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio

from aionetdicom.errors import ConnectionClosed, DicomNetworkError
from aionetdicom.pdu.pdus import Buffer

__all__ = ["DEFAULT_STREAM_BUFFER", "DatasetStream"]

#: Bytes of a streamed data set that may wait for the consumer before the reader pauses.
DEFAULT_STREAM_BUFFER = 4 * 1024 * 1024


class DatasetStream:
    """The fragments of one data set, in order, with backpressure on the producer."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_consumer_waiting",
        "_discarded",
        "_error",
        "_finished",
        "_producer_waiting",
        "buffer_limit",
        "on_progress",
        "received",
    )

    def __init__(self, buffer_limit: int = DEFAULT_STREAM_BUFFER) -> None:
        self.buffer_limit = buffer_limit
        #: Bytes of the data set received so far.
        self.received = 0
        #: Called on every fragment received (the association restarts the handler's
        #: inactivity clock with it).
        self.on_progress: Callable[[], None] | None = None
        self._chunks: deque[Buffer] = deque()
        self._buffered = 0
        self._complete = False
        self._discarded = False
        self._error: DicomNetworkError | None = None
        self._finished = anyio.Event()
        self._consumer_waiting: anyio.Event | None = None
        self._producer_waiting: anyio.Event | None = None

    def __repr__(self) -> str:
        state = "complete" if self._complete else "failed" if self._error else "arriving"
        return f"<DatasetStream {self.received} bytes {state}>"

    # ------------------------------------------------------------------ producer

    @property
    def complete(self) -> bool:
        """True once the last fragment has arrived."""
        return self._complete

    async def put(self, data: Buffer, last: bool) -> None:
        """Add a fragment (reader side); waits while the consumer is ``buffer_limit`` behind."""
        if self._complete or self._error is not None:
            return
        size = len(data)
        self.received += size
        if not self._discarded and size:
            self._chunks.append(data)
            self._buffered += size
        if last:
            self._complete = True
            self._finished.set()
        self._wake_consumer()
        if self.on_progress is not None:
            self.on_progress()
        while self._buffered > self.buffer_limit and not self._discarded and self._error is None:
            waiting = self._producer_waiting = anyio.Event()
            await waiting.wait()

    def fail(self, error: DicomNetworkError) -> None:
        """The association ended before the last fragment: the consumer gets ``error``."""
        if self._complete or self._error is not None:
            return
        self._error = error
        self._finished.set()
        self._wake_consumer()
        self._wake_producer()

    # ------------------------------------------------------------------ consumer

    def _wake_consumer(self) -> None:
        if self._consumer_waiting is not None:
            self._consumer_waiting.set()
            self._consumer_waiting = None

    def _wake_producer(self) -> None:
        if self._producer_waiting is not None:
            self._producer_waiting.set()
            self._producer_waiting = None

    async def receive(self) -> Buffer:
        """The next fragment; ``anyio.EndOfStream`` after the last, the association's
        error if it ended before that."""
        while not self._chunks:
            if self._discarded:
                raise anyio.ClosedResourceError("the data set was discarded")
            if self._error is not None:
                raise self._error
            if self._complete:
                raise anyio.EndOfStream
            waiting = self._consumer_waiting = anyio.Event()
            await waiting.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= self.buffer_limit:
            self._wake_producer()
        return chunk

    def __aiter__(self) -> AsyncIterator[Buffer]:
        # The stream is its own iterator (no async generator): a consumer that stops
        # early leaves nothing to be closed or finalized later.
        return self

    async def __anext__(self) -> Buffer:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def discard(self) -> None:
        """Drop what is buffered and whatever still arrives (the consumer is done)."""
        self._discarded = True
        self._chunks.clear()
        self._buffered = 0
        self._wake_producer()
        self._wake_consumer()

    async def wait_finished(self) -> None:
        """Wait for the last fragment; raises the association's error if it ended first."""
        await self._finished.wait()
        if self._error is not None:
            raise self._error
        if not self._complete:  # pragma: no cover - _finished is set only with one of them
            raise ConnectionClosed("the data set did not arrive")
