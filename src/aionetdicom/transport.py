"""Byte streams for associations: the only module where bytes meet sockets."""

from __future__ import annotations

import os
import socket
from typing import Union, cast

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener

from aionetdicom import socket_stream
from aionetdicom.errors import ConnectTimeout

#: A listening TCP endpoint: ours (bare sockets) or anyio's.
TCPListener = Union[SocketListener, socket_stream.TCPListener]

#: Bytes asked for per read; large reads keep the number of wake-ups low.
RECEIVE_SIZE = 256 * 1024


def set_nodelay(stream: ByteStream) -> None:
    """Turn Nagle's algorithm off: DIMSE is request/response and must not wait 40 ms."""
    try:
        sock = stream.extra(SocketAttribute.raw_socket)
    except anyio.TypedAttributeLookupError:
        return
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_address(stream: ByteStream) -> tuple[str, int]:
    """The remote (host, port) of a socket stream, or ("", 0) when it has none."""
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return ("", 0)
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return (str(address), 0)


async def connect(
    host: str, port: int, *, timeout: float | None, local_host: str | None = None
) -> ByteStream:
    """Open a TCP connection to the peer within ``timeout`` seconds."""
    try:
        with anyio.fail_after(timeout):
            stream: ByteStream
            if socket_stream.supported():
                stream = await socket_stream.connect_tcp(host, port, local_host=local_host)
            else:
                stream = await anyio.connect_tcp(host, port, local_host=local_host)
    except TimeoutError:
        raise ConnectTimeout(
            f"could not connect to {host}:{port} within {timeout} s (connection timeout)"
        ) from None
    except OSError as exc:
        # anyio reports a failed connect as a bare OSError("All connection attempts
        # failed") without errno or address; name both (OSError(errno, ...) picks the
        # matching subclass, e.g. ConnectionRefusedError).
        cause = exc.__cause__
        if exc.errno is None and isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(
                cause.errno, f"could not connect to {host}:{port}: {os.strerror(cause.errno)}"
            ) from exc
        if exc.errno is None:
            raise OSError(f"could not connect to {host}:{port}: {exc}") from exc
        raise
    set_nodelay(stream)
    return stream


async def listen_tcp(host: str | None, port: int) -> list[TCPListener]:
    """One listener per socket ``host`` resolves to (so each reports its own address).

    Uses the bare-socket streams of :mod:`aionetdicom.socket_stream` where the event
    loop supports them, anyio's socket streams elsewhere (asyncio's Proactor loop).
    """
    if socket_stream.supported():
        shared = await socket_stream.create_tcp_listener(local_host=host, local_port=port)
        return [socket_stream.TCPListener([sock]) for sock in shared.sockets]
    multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
    return [cast(SocketListener, each) for each in multi.listeners]
