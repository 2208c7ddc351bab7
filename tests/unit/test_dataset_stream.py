"""DatasetStream: the bounded hand-over of a streamed data set from the reader to a handler.

Order and completeness, backpressure (the producer waits once ``buffer_limit`` bytes
are buffered, until the consumer reads), the association's error reaching the
consumer, ``discard`` releasing the producer, ``wait_finished`` and ``on_progress``.
"""

from __future__ import annotations

import gc

import anyio
import anyio.lowlevel
import pytest

from aionetdicom.dataset_stream import DEFAULT_STREAM_BUFFER, DatasetStream
from aionetdicom.dimse.command_set import Command, CommandField, encode_command, make_command
from aionetdicom.dimse.fragments import (
    AssembledMessage,
    DatasetFragment,
    MessageAssembler,
    fragment,
)
from aionetdicom.errors import AssociationAborted, ConnectionClosed, ProtocolError
from aionetdicom.pdu.pdus import PDV

#: Fails a test that would otherwise hang (never reached when the code is right).
LIMIT = 10.0


async def test_fragments_come_out_in_order_then_end() -> None:
    stream = DatasetStream()
    assert stream.buffer_limit == DEFAULT_STREAM_BUFFER
    assert not stream.complete
    await stream.put(b"abc", False)
    await stream.put(memoryview(b"defg"), False)
    await stream.put(b"h", True)
    assert stream.complete
    assert stream.received == 8
    assert bytes(await stream.receive()) == b"abc"
    assert bytes(await stream.receive()) == b"defg"
    assert bytes(await stream.receive()) == b"h"
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()  # and again: the end stays the end


async def test_async_iteration_yields_everything() -> None:
    stream = DatasetStream()
    pieces = [b"x" * n for n in (1, 10, 100, 1000)]
    for piece in pieces:
        await stream.put(piece, False)
    await stream.put(b"", True)  # an empty last fragment adds nothing
    assert [bytes(chunk) async for chunk in stream] == pieces
    assert stream.received == sum(map(len, pieces))


@pytest.mark.filterwarnings("error::ResourceWarning")
async def test_stopping_iteration_early_leaves_nothing_to_finalize() -> None:
    """Breaking out of ``async for`` leaves no half-run async generator behind (trio
    warns about those when they are garbage collected); the rest stays readable."""
    stream = DatasetStream()
    for piece in (b"1", b"2", b"3"):
        await stream.put(piece, False)
    async for chunk in stream:
        assert bytes(chunk) == b"1"
        break
    gc.collect()
    await anyio.lowlevel.checkpoint()
    await stream.put(b"4", True)
    assert [bytes(chunk) async for chunk in stream] == [b"2", b"3", b"4"]


async def test_empty_dataset() -> None:
    stream = DatasetStream()
    await stream.put(b"", True)
    assert stream.complete
    assert stream.received == 0
    assert [chunk async for chunk in stream] == []
    await stream.wait_finished()


async def test_consumer_waits_for_the_producer() -> None:
    """A consumer reading ahead of the data waits, and gets each fragment as it comes."""
    stream = DatasetStream()
    got: list[bytes] = []

    async def consume() -> None:
        async for chunk in stream:
            got.append(bytes(chunk))

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await stream.put(b"one", False)
            await anyio.wait_all_tasks_blocked()
            assert got == [b"one"]
            await stream.put(b"two", False)
            await anyio.wait_all_tasks_blocked()
            assert got == [b"one", b"two"]
            await stream.put(b"three", True)
    assert got == [b"one", b"two", b"three"]


async def test_producer_blocks_at_the_buffer_limit_until_the_consumer_reads() -> None:
    stream = DatasetStream(buffer_limit=10)
    progress: list[str] = []

    async def produce() -> None:
        for index, piece in enumerate((b"a" * 6, b"b" * 6, b"c" * 6)):
            await stream.put(piece, index == 2)
            progress.append(piece[:1].decode())

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            # 6 bytes fit; with the second fragment 12 > 10 are buffered: the put waits.
            assert progress == ["a"]
            assert stream.received == 12
            assert bytes(await stream.receive()) == b"a" * 6  # 6 left: the producer goes on
            await anyio.wait_all_tasks_blocked()
            assert progress == ["a", "b"]
            # The last fragment too waits while 12 > 10 bytes are buffered.
            assert stream.complete
            assert progress == ["a", "b"]
            assert bytes(await stream.receive()) == b"b" * 6
            await anyio.wait_all_tasks_blocked()
            assert progress == ["a", "b", "c"]
    assert bytes(await stream.receive()) == b"c" * 6
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()


async def test_a_fragment_up_to_the_limit_does_not_block() -> None:
    stream = DatasetStream(buffer_limit=8)
    with anyio.fail_after(LIMIT):
        await stream.put(b"1234", False)
        await stream.put(b"5678", False)  # exactly the limit: still fine
    assert stream.received == 8


async def test_reading_only_part_does_not_release_the_producer() -> None:
    """The producer resumes only once the buffer is back within the limit."""
    stream = DatasetStream(buffer_limit=4)
    done = anyio.Event()

    async def produce() -> None:
        await stream.put(b"12", False)
        await stream.put(b"34", False)
        await stream.put(b"56", False)  # 6 > 4: waits
        done.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            await stream.receive()  # 4 left: within the limit
            await anyio.wait_all_tasks_blocked()
            assert done.is_set()


async def test_fail_reaches_a_waiting_consumer() -> None:
    stream = DatasetStream()
    error = ConnectionClosed("the peer went away")
    caught: list[BaseException] = []

    async def consume() -> None:
        try:
            await stream.receive()
        except ConnectionClosed as exc:
            caught.append(exc)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert caught == []
            stream.fail(error)
    assert caught == [error]
    assert not stream.complete
    assert "failed" in repr(stream)


async def test_fail_after_buffered_fragments_delivers_them_first() -> None:
    stream = DatasetStream()
    await stream.put(b"first", False)
    await stream.put(b"second", False)
    error = AssociationAborted(None, None, "aborted mid-transfer")
    stream.fail(error)
    got: list[bytes] = []

    async def drain() -> None:
        async for chunk in stream:
            got.append(bytes(chunk))

    with pytest.raises(AssociationAborted) as info:
        await drain()
    assert info.value is error
    assert got == [b"first", b"second"]
    with pytest.raises(AssociationAborted):
        await stream.wait_finished()
    # Nothing more is taken once failed.
    await stream.put(b"late", True)
    assert not stream.complete
    assert stream.received == len(b"firstsecond")


async def test_fail_releases_a_blocked_producer() -> None:
    stream = DatasetStream(buffer_limit=1)
    returned = anyio.Event()

    async def produce() -> None:
        await stream.put(b"too much", False)
        returned.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            assert not returned.is_set()
            stream.fail(ConnectionClosed("gone"))
    assert returned.is_set()


async def test_fail_after_complete_is_ignored() -> None:
    stream = DatasetStream()
    await stream.put(b"all", True)
    stream.fail(ConnectionClosed("too late to matter"))
    assert stream.complete
    await stream.wait_finished()
    assert [bytes(chunk) async for chunk in stream] == [b"all"]
    assert "complete" in repr(stream)


async def test_discard_releases_a_blocked_producer_and_drops_the_rest() -> None:
    stream = DatasetStream(buffer_limit=4)
    progress: list[int] = []

    async def produce() -> None:
        for index in range(5):
            await stream.put(b"12345678", index == 4)
            progress.append(index)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            assert progress == []
            stream.discard()
            await anyio.wait_all_tasks_blocked()
    # Everything after the discard was read (counted) but not kept.
    assert progress == [0, 1, 2, 3, 4]
    assert stream.received == 40
    assert stream.complete
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    await stream.wait_finished()


async def test_discard_wakes_a_waiting_consumer() -> None:
    stream = DatasetStream()
    caught: list[BaseException] = []

    async def consume() -> None:
        try:
            await stream.receive()
        except anyio.ClosedResourceError as exc:
            caught.append(exc)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            stream.discard()
    assert len(caught) == 1


async def test_wait_finished_waits_for_the_last_fragment() -> None:
    stream = DatasetStream()
    finished = anyio.Event()

    async def wait() -> None:
        await stream.wait_finished()
        finished.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await stream.put(b"part", False)
            await anyio.wait_all_tasks_blocked()
            assert not finished.is_set()
            await stream.put(b"end", True)
    assert finished.is_set()
    # The fragments are still there for a consumer.
    assert [bytes(chunk) async for chunk in stream] == [b"part", b"end"]


async def test_wait_finished_raises_the_association_error() -> None:
    stream = DatasetStream()
    error = ConnectionClosed("connection reset")
    caught: list[BaseException] = []

    async def wait() -> None:
        try:
            await stream.wait_finished()
        except ConnectionClosed as exc:
            caught.append(exc)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            stream.fail(error)
    assert caught == [error]


async def test_on_progress_is_called_for_every_fragment() -> None:
    stream = DatasetStream(buffer_limit=1 << 20)
    calls: list[int] = []
    stream.on_progress = lambda: calls.append(stream.received)
    await stream.put(b"ab", False)
    await stream.put(b"", False)
    await stream.put(b"cde", False)
    stream.discard()
    await stream.put(b"fg", True)  # discarded data still counts as progress
    assert calls == [2, 2, 5, 7]
    stream.fail(ConnectionClosed("after the end"))
    await stream.put(b"more", True)  # nothing after the end
    assert calls == [2, 2, 5, 7]


async def test_on_progress_is_called_before_the_producer_waits() -> None:
    """Progress is reported for a fragment even while its put waits for the consumer."""
    stream = DatasetStream(buffer_limit=2)
    calls: list[int] = []
    stream.on_progress = lambda: calls.append(stream.received)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.put, b"12345", False)
            await anyio.wait_all_tasks_blocked()
            assert calls == [5]
            await stream.receive()
    assert calls == [5]


async def test_repr_shows_progress() -> None:
    stream = DatasetStream()
    await stream.put(b"1234", False)
    assert repr(stream) == "<DatasetStream 4 bytes arriving>"
    await stream.put(b"56", True)
    assert repr(stream) == "<DatasetStream 6 bytes complete>"


# ------------------------------------------------------------------ the assembler's side
# MessageAssembler hands a streamed data set on fragment by fragment (the association
# puts each into a DatasetStream), bounded by its own limit, not the in-memory one.

STORE_RQ = make_command(
    CommandField.C_STORE_RQ,
    has_dataset=True,
    MessageID=7,
    Priority=0,
    AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
    AffectedSOPInstanceUID="1.2.3.4.5",
)
ECHO_RQ = make_command(CommandField.C_ECHO_RQ, MessageID=8, AffectedSOPClassUID="1.2.840.10008.1.1")


def command_pdvs(command: Command, context_id: int = 1, size: int = 0) -> list[PDV]:
    return list(fragment(context_id, True, encode_command(command), size))


def dataset_pdvs(data: bytes, context_id: int = 1, size: int = 0) -> list[PDV]:
    return list(fragment(context_id, False, data, size))


def streaming_assembler(
    decide: bool = True, **limits: int | None
) -> tuple[MessageAssembler, list[Command]]:
    asked: list[Command] = []

    def stream_dataset(command: Command) -> bool:
        asked.append(command)
        return decide

    return MessageAssembler(stream_dataset=stream_dataset, **limits), asked  # type: ignore[arg-type]


def test_assembler_streams_the_data_set_fragment_by_fragment() -> None:
    assembler, asked = streaming_assembler()
    data = bytes(range(256)) * 10
    (*head, last) = command_pdvs(STORE_RQ, size=20)
    assert all(assembler.feed(pdv) is None for pdv in head)
    assert not asked  # asked once the command is complete, not before
    message = assembler.feed(last)
    assert isinstance(message, AssembledMessage)
    assert message.streamed
    assert message.dataset is None
    assert message.stream is None  # the I/O layer attaches it
    assert message.command["AffectedSOPInstanceUID"] == "1.2.3.4.5"
    assert [command["MessageID"] for command in asked] == [7]
    assert assembler.streaming
    assert assembler.in_progress
    fragments = [assembler.feed(pdv) for pdv in dataset_pdvs(data, size=1000)]
    assert all(isinstance(f, DatasetFragment) for f in fragments)
    assert [f.is_last for f in fragments] == [False, False, True]  # type: ignore[union-attr]
    assert b"".join(bytes(f.data) for f in fragments) == data  # type: ignore[union-attr]
    assert not assembler.streaming
    assert not assembler.in_progress
    # The next message is assembled as usual.
    echo = [assembler.feed(pdv) for pdv in command_pdvs(ECHO_RQ)]
    assert isinstance(echo[-1], AssembledMessage)
    assert echo[-1].command["MessageID"] == 8
    assert [command["MessageID"] for command in asked] == [7]  # no data set: not asked


def test_assembler_gathers_when_the_callback_says_no() -> None:
    assembler, asked = streaming_assembler(decide=False)
    data = b"\x01\x02" * 600
    out = [assembler.feed(pdv) for pdv in command_pdvs(STORE_RQ) + dataset_pdvs(data, size=500)]
    assert out[:-1] == [None] * (len(out) - 1)
    message = out[-1]
    assert isinstance(message, AssembledMessage)
    assert not message.streamed
    assert message.dataset == data
    assert len(asked) == 1


def test_assembler_empty_streamed_data_set() -> None:
    assembler, _ = streaming_assembler()
    (message,) = [assembler.feed(pdv) for pdv in command_pdvs(STORE_RQ)]
    assert isinstance(message, AssembledMessage)
    assert message.streamed
    (last,) = [assembler.feed(pdv) for pdv in dataset_pdvs(b"")]
    assert isinstance(last, DatasetFragment)
    assert last.is_last
    assert bytes(last.data) == b""
    assert not assembler.in_progress


def test_assembler_streamed_limit_not_the_in_memory_one() -> None:
    """A streamed data set may exceed max_dataset_length; max_streamed_dataset_length
    bounds it (exactly the limit passes, one byte more is a ProtocolError)."""
    assembler, _ = streaming_assembler(max_dataset_length=10, max_streamed_dataset_length=3000)
    for pdv in command_pdvs(STORE_RQ):
        assembler.feed(pdv)
    fragments = [assembler.feed(pdv) for pdv in dataset_pdvs(b"x" * 3000, size=1000)]
    assert fragments[-1].is_last  # type: ignore[union-attr]
    for pdv in command_pdvs(STORE_RQ):
        assembler.feed(pdv)
    pdvs = dataset_pdvs(b"x" * 3001, size=1000)
    for pdv in pdvs[:-1]:
        assert isinstance(assembler.feed(pdv), DatasetFragment)
    with pytest.raises(ProtocolError, match="data set exceeds the limit of 3000 bytes"):
        assembler.feed(pdvs[-1])
    assert not assembler.in_progress
    assert not assembler.streaming


def test_assembler_in_memory_limit_still_applies_when_not_streamed() -> None:
    assembler, _ = streaming_assembler(decide=False, max_dataset_length=10)
    for pdv in command_pdvs(STORE_RQ):
        assembler.feed(pdv)
    *head, last = dataset_pdvs(b"y" * 11, size=4)
    assert [assembler.feed(pdv) for pdv in head] == [None, None]
    with pytest.raises(ProtocolError, match="data set exceeds the limit of 10 bytes"):
        assembler.feed(last)


@pytest.mark.parametrize("stray", ["command", "other-context"])
def test_assembler_rejects_interleaving_while_streaming(stray: str) -> None:
    assembler, _ = streaming_assembler()
    for pdv in command_pdvs(STORE_RQ):
        assembler.feed(pdv)
    assert isinstance(assembler.feed(dataset_pdvs(b"abcd", size=2)[0]), DatasetFragment)
    bad = command_pdvs(ECHO_RQ)[0] if stray == "command" else dataset_pdvs(b"zz", context_id=3)[0]
    with pytest.raises(ProtocolError):
        assembler.feed(bad)
    assert not assembler.in_progress
    assert not assembler.streaming


def test_assembler_keeps_immutable_fragments_and_copies_writable_ones() -> None:
    assembler, _ = streaming_assembler()
    for pdv in command_pdvs(STORE_RQ):
        assembler.feed(pdv)
    immutable = b"kept as it is"
    first = assembler.feed(PDV(1, False, False, immutable))
    assert isinstance(first, DatasetFragment)
    assert first.data is immutable
    writable = bytearray(b"reused by the reader")
    second = assembler.feed(PDV(1, False, True, memoryview(writable)))
    assert isinstance(second, DatasetFragment)
    writable[:] = b"X" * len(writable)
    assert bytes(second.data) == b"reused by the reader"
