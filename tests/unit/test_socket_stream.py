"""Bare-socket TCP streams: data, EOF, errors, closing, cancellation, listeners, interop."""

from __future__ import annotations

import array
import errno
import itertools
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.stapled import MultiListener

from aionetdicom import socket_stream
from aionetdicom.socket_stream import (
    BytesLike,
    SocketStream,
    TCPListener,
    connect_tcp,
    create_tcp_listener,
    supported,
)

HOST = "127.0.0.1"


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[SocketStream, SocketStream]]:
    """A (client, server) pair of streams over 127.0.0.1."""
    async with await create_tcp_listener(local_host=HOST) as listener:
        client = await connect_tcp(HOST, listener.extra(SocketAttribute.local_port))
        server = await listener.accept()
    async with client, server:
        yield client, server


async def receive_exactly(stream: SocketStream, size: int) -> bytes:
    """Read ``size`` bytes, however the kernel splits them."""
    data = bytearray()
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return bytes(data)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_supported() -> None:
    assert supported()


async def test_echo_round_trip() -> None:
    async def echo(stream: SocketStream) -> None:
        async with stream:
            while True:
                try:
                    data = await stream.receive()
                except anyio.EndOfStream:
                    return
                await stream.send(data)

    async with (
        await create_tcp_listener(local_host=HOST) as listener,
        anyio.create_task_group() as group,
    ):
        group.start_soon(listener.serve, echo)
        async with await connect_tcp(HOST, listener.extra(SocketAttribute.local_port)) as client:
            for message in (b"hello", b"x" * 100_000, bytearray(b"bytearray"), b"z"):
                await client.send(message)
                assert await receive_exactly(client, len(message)) == message
            await client.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await client.receive()
        group.cancel_scope.cancel()


async def test_20_mb_gather_write_into_one_buffer() -> None:
    payload = os.urandom(20 * 1024 * 1024)
    view = memoryview(payload)
    cuts = [*range(0, len(payload), 4093), len(payload)]
    pieces = [view[start:end] for start, end in itertools.pairwise(cuts)]
    assert len(pieces) > 4 * 1024  # more than IOV_MAX per sendmsg call
    received = bytearray(len(payload))
    target = memoryview(received)
    filled = 0

    async def read_all(server: SocketStream) -> None:
        nonlocal filled
        while filled < len(received):
            filled += await server.receive_into(target[filled:])

    async with connected() as (client, server), anyio.create_task_group() as group:
        group.start_soon(read_all, server)
        await client.send_buffers(pieces)
        await client.send_buffers([b"", memoryview(b"")])  # nothing to send is fine
    assert filled == len(payload)
    assert received == payload


async def test_send_buffers_mixed_types_and_shapes() -> None:
    words = array.array("H", [1, 2, 0xFFFF])
    grid = memoryview(bytearray(range(12))).cast("B", (3, 4))
    parts: list[BytesLike] = [b"ab", bytearray(b"cd"), memoryview(words), grid, b""]
    expected = b"abcd" + words.tobytes() + bytes(range(12))
    async with connected() as (client, server):
        await client.send_buffers(parts)
        await client.send(memoryview(words))
        assert await receive_exactly(server, len(expected)) == expected
        assert await receive_exactly(server, 6) == words.tobytes()


async def test_eof() -> None:
    async with connected() as (client, server):
        await client.send(b"last")
        await client.send_eof()
        assert await receive_exactly(server, 4) == b"last"
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        with pytest.raises(anyio.EndOfStream):
            await server.receive_into(bytearray(10))
        await server.send(b"still open the other way")  # half-close only
        assert await receive_exactly(client, 24) == b"still open the other way"


async def test_receive_into_empty_buffer() -> None:
    async with connected() as (_client, server):
        assert await server.receive_into(bytearray()) == 0


async def test_receive_rejects_zero_max_bytes() -> None:
    async with connected() as (_client, server):
        with pytest.raises(ValueError, match="max_bytes"):
            await server.receive(0)


def reset(stream: SocketStream) -> None:
    """Make the next close send RST instead of FIN."""
    sock = stream.extra(SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def keep_sending(send: Callable[[], Awaitable[None]]) -> None:
    """Send until the stream fails (the reset takes a moment to arrive)."""
    for _ in range(1000):
        await send()
        await anyio.sleep(0.001)


async def test_peer_reset_breaks_receive() -> None:
    async with connected() as (client, server):
        reset(server)
        await server.aclose()
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as info:
            await client.receive()
        assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_peer_reset_breaks_send() -> None:
    async with connected() as (client, server):
        reset(server)
        await server.aclose()
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as info:
            await keep_sending(lambda: client.send(b"x" * 1000))
        assert isinstance(info.value.__cause__, OSError)


async def test_peer_reset_breaks_send_buffers() -> None:
    async with connected() as (client, server):
        reset(server)
        await server.aclose()
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError):
            await keep_sending(lambda: client.send_buffers([b"x" * 1000, b"y"]))


async def test_use_after_close() -> None:
    async with connected() as (client, _server):
        await client.aclose()
        await client.aclose()  # idempotent
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive_into(bytearray(4))
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"x")
        with pytest.raises(anyio.ClosedResourceError):
            await client.send_buffers([b"x"])
        with pytest.raises(anyio.ClosedResourceError):
            await client.send_eof()


async def test_close_wakes_waiting_receive() -> None:
    outcome: list[BaseException] = []

    async def wait(stream: SocketStream) -> None:
        try:
            await stream.receive()
        except Exception as exc:
            outcome.append(exc)

    async with connected() as (_client, server):
        with anyio.fail_after(1):
            async with anyio.create_task_group() as group:
                group.start_soon(wait, server)
                await anyio.wait_all_tasks_blocked()
                await server.aclose()
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError)


async def test_close_wakes_waiting_send() -> None:
    outcome: list[BaseException] = []

    async def flood(stream: SocketStream) -> None:
        try:
            await stream.send(bytes(64 * 1024 * 1024))  # more than the socket buffers hold
        except Exception as exc:
            outcome.append(exc)

    async with connected() as (client, _server):
        with anyio.fail_after(2):
            async with anyio.create_task_group() as group:
                group.start_soon(flood, client)
                await anyio.wait_all_tasks_blocked()
                await client.aclose()
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError)


async def test_cancelled_receive_leaves_stream_usable() -> None:
    async with connected() as (client, server):
        with anyio.move_on_after(0.05) as scope:
            await server.receive()
        assert scope.cancelled_caught
        await client.send(b"after")
        assert await receive_exactly(server, 5) == b"after"
        buffer = bytearray(5)
        with anyio.move_on_after(0.05) as scope:
            await server.receive_into(buffer)
        assert scope.cancelled_caught
        await client.send(b"again")
        assert await server.receive_into(buffer) == 5
        assert buffer == b"again"


async def test_concurrent_receive_is_busy() -> None:
    async with connected() as (client, server), anyio.create_task_group() as group:
        group.start_soon(server.receive)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await server.receive()
        with pytest.raises(anyio.BusyResourceError):
            await server.receive_into(bytearray(1))
        await server.send(b"send while receiving is fine")
        assert await receive_exactly(client, 28) == b"send while receiving is fine"
        await client.send(b"x")  # lets the first receive finish


async def test_concurrent_send_is_busy() -> None:
    async with connected() as (client, server), anyio.create_task_group() as group:
        big = bytes(32 * 1024 * 1024)
        group.start_soon(client.send, big)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await client.send(b"x")
        with pytest.raises(anyio.BusyResourceError):
            await client.send_buffers([b"x"])
        with pytest.raises(anyio.BusyResourceError):
            await client.send_eof()
        assert await receive_exactly(server, len(big)) == big


async def test_ready_sends_yield_and_honour_cancellation() -> None:
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    async with connected() as (client, _server):
        async with anyio.create_task_group() as group:
            group.start_soon(other)
            for _ in range(1000):
                await client.send(b"x")
            assert ran
        with anyio.CancelScope() as scope:
            scope.cancel()
            for count in range(1000):  # noqa: B007
                await client.send(b"x")
        assert count < 1000 - 1


async def test_ready_receives_yield_and_honour_cancellation() -> None:
    async with connected() as (client, server):
        await client.send(bytes(4000))
        with anyio.fail_after(5):
            assert await receive_exactly(server, 100) == bytes(100)  # wait for the data
        with anyio.CancelScope() as scope:
            scope.cancel()
            got = 0
            while got < 3900:
                got += len(await server.receive(1))
        assert scope.cancelled_caught
        assert got < 3900


async def test_connect_refused_names_the_address() -> None:
    port = free_port()
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        await connect_tcp(HOST, port)


async def test_connect_with_local_host() -> None:
    async with await create_tcp_listener(local_host=HOST) as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with await connect_tcp(HOST, port, local_host=HOST) as client:
            assert client.extra(SocketAttribute.local_address)[0] == HOST
            async with await listener.accept() as server:
                assert server.extra(SocketAttribute.remote_address) == client.extra(
                    SocketAttribute.local_address
                )


async def test_accept_several_clients() -> None:
    async with await create_tcp_listener(local_host=HOST) as listener:
        port = listener.extra(SocketAttribute.local_port)
        clients = [await connect_tcp(HOST, port) for _ in range(5)]
        servers = [await listener.accept() for _ in clients]
        for number, client in enumerate(clients):
            await client.send(bytes([number]))
        ports = {server.extra(SocketAttribute.remote_port) for server in servers}
        assert ports == {client.extra(SocketAttribute.local_port) for client in clients}
        assert sorted([await server.receive() for server in servers]) == [
            bytes([n]) for n in range(5)
        ]
        for stream in clients + servers:
            await stream.aclose()


async def test_listener_on_several_sockets() -> None:
    first, second = socket.socket(), socket.socket()
    for sock in (first, second):
        sock.bind((HOST, 0))
        sock.listen()
    async with TCPListener([first, second]) as listener:
        assert listener.sockets == (first, second)
        accepted: list[SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        for sock in (second, first):
            with anyio.fail_after(5):
                async with anyio.create_task_group() as group:
                    group.start_soon(accept)
                    await anyio.wait_all_tasks_blocked()  # waiting on both sockets
                    client = await connect_tcp(HOST, sock.getsockname()[1])
            async with client, accepted.pop() as server:
                assert server.extra(SocketAttribute.local_port) == sock.getsockname()[1]
        async with anyio.create_task_group() as group:
            group.start_soon(listener.accept)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await listener.accept()
            group.cancel_scope.cancel()
    with pytest.raises(ValueError, match="at least one"):
        TCPListener([])


@pytest.mark.parametrize("sockets", [1, 2])
async def test_close_wakes_waiting_accept(sockets: int) -> None:
    listening = []
    for _ in range(sockets):
        sock = socket.socket()
        sock.bind((HOST, 0))
        sock.listen()
        listening.append(sock)
    listener = TCPListener(listening)
    with anyio.fail_after(1):
        async with anyio.create_task_group() as group:

            async def accept() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    await listener.accept()

            group.start_soon(accept)
            await anyio.wait_all_tasks_blocked()
            await listener.aclose()
            await listener.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await listener.accept()


async def test_extra_attributes() -> None:
    async with await create_tcp_listener(local_host=HOST) as listener:
        port = listener.extra(SocketAttribute.local_port)
        assert listener.extra(SocketAttribute.local_address) == (HOST, port)
        assert listener.extra(SocketAttribute.family) == socket.AF_INET
        assert isinstance(listener.extra(SocketAttribute.raw_socket), socket.socket)
        async with await connect_tcp(HOST, port) as client, await listener.accept() as server:
            assert client.extra(SocketAttribute.remote_address) == (HOST, port)
            assert client.extra(SocketAttribute.remote_port) == port
            assert client.extra(SocketAttribute.family) == socket.AF_INET
            local = client.extra(SocketAttribute.local_address)
            assert server.extra(SocketAttribute.remote_address) == local
            assert server.extra(SocketAttribute.remote_port) == local[1]
            assert client.extra(SocketAttribute.local_port) == local[1]
            assert server.extra(SocketAttribute.local_address) == (HOST, port)
            raw = server.extra(SocketAttribute.raw_socket)
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert client.extra(SocketAttribute.raw_socket).getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            assert not raw.getblocking()


async def test_anyio_client_against_our_listener() -> None:
    async with await create_tcp_listener(local_host=HOST) as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with await anyio.connect_tcp(HOST, port) as client, await listener.accept() as server:
            await client.send(b"ping" * 50_000)
            assert await receive_exactly(server, 200_000) == b"ping" * 50_000
            await server.send_buffers([b"po", b"ng"])
            data = b""
            while len(data) < 4:
                data += await client.receive()
            assert data == b"pong"


async def test_our_client_against_anyio_listener() -> None:
    async with await anyio.create_tcp_listener(local_host=HOST) as listener:
        port = listener.extra(SocketAttribute.local_port)
        received = b""

        async def handle(stream: anyio.abc.SocketStream) -> None:
            nonlocal received
            async with stream:
                while len(received) < 300_000:
                    received += await stream.receive()
                await stream.send(b"done")

        async with anyio.create_task_group() as group:
            group.start_soon(listener.serve, handle)
            async with await connect_tcp(HOST, port) as client:
                await client.send_buffers([b"a" * 100_000, b"b" * 200_000])
                assert await receive_exactly(client, 4) == b"done"
            group.cancel_scope.cancel()
        assert received == b"a" * 100_000 + b"b" * 200_000


async def test_fits_in_anyio_multilistener() -> None:
    first = await create_tcp_listener(local_host=HOST)
    second = await create_tcp_listener(local_host=HOST)
    handled: list[bytes] = []
    both = anyio.Event()

    async def handle(stream: SocketStream) -> None:
        async with stream:
            handled.append(await stream.receive())
        if len(handled) == 2:
            both.set()

    async with MultiListener([first, second]) as multi, anyio.create_task_group() as group:
        group.start_soon(multi.serve, handle)
        for listener in (first, second):
            async with await connect_tcp(HOST, listener.extra(SocketAttribute.local_port)) as c:
                await c.send(b"hi")
        with anyio.fail_after(5):
            await both.wait()
        group.cancel_scope.cancel()
    assert handled == [b"hi", b"hi"]


async def test_create_listener_default_host_and_fixed_port() -> None:
    async with await create_tcp_listener() as listener:
        port = listener.extra(SocketAttribute.local_port)
        assert port
        ports = {sock.getsockname()[1] for sock in listener.sockets}
        assert ports == {port}  # every address shares the port
        async with await connect_tcp(HOST, port), await listener.accept():
            pass
    async with await create_tcp_listener(local_host=HOST, local_port=free_port()) as listener:
        assert listener.extra(SocketAttribute.local_port)


async def test_small_checkpoint_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_stream, "_YIELD_BYTES", 0)  # checkpoint on every call
    async with connected() as (client, server):
        await client.send_buffers([b"12", b"34"])
        await client.send(b"5")
        assert await receive_exactly(server, 5) == b"12345"
        buffer = bytearray(3)
        await client.send(b"678")
        assert await server.receive_into(buffer) in (1, 2, 3)


async def test_listener_skips_unsupported_family(monkeypatch: pytest.MonkeyPatch) -> None:
    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", no_ipv6)
    async with await create_tcp_listener() as listener:  # 0.0.0.0 and, normally, ::
        assert [sock.family for sock in listener.sockets] == [socket.AF_INET]
    with pytest.raises(OSError, match="not supported"):
        await create_tcp_listener(local_host="::1")


async def test_receive_into_timeout_only_while_waiting() -> None:
    """Data already there is read whatever the timeout; silence raises TimeoutError
    after ``timeout`` seconds and leaves the stream usable."""
    async with connected() as (client, server):
        await client.send(b"abc")
        await anyio.sleep(0.05)
        buffer = bytearray(8)
        assert await server.receive_into(memoryview(buffer), timeout=0.0) == 3
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await server.receive_into(memoryview(buffer), timeout=0.2)
        await client.send(b"d")
        assert await server.receive_into(memoryview(buffer), timeout=1.0) == 1
        assert buffer[:1] == b"d"


async def test_send_buffers_timeout_when_the_peer_never_reads() -> None:
    """A peer that stops reading: the send raises TimeoutError once the socket buffers
    are full for ``timeout`` seconds."""
    async with connected() as (client, _server):
        chunk = b"x" * (1 << 20)

        async def flood() -> None:
            for _ in range(256):
                await client.send_buffers([chunk], timeout=0.2)

        with anyio.fail_after(20), pytest.raises(TimeoutError):
            await flood()
