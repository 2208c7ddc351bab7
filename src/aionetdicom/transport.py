"""Byte streams for associations: the only module where bytes meet sockets."""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any, Union, cast

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener
from anyio.streams.tls import TLSAttribute, TLSStream

from aionetdicom import socket_stream
from aionetdicom.errors import ConnectTimeout, TLSError
from aionetdicom.tls import TLSInfo

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
    host: str,
    port: int,
    *,
    timeout: float | None,
    local_host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> ByteStream:
    """Open a TCP connection to the peer within ``timeout`` seconds (the TLS handshake
    included, with ``ssl_context``)."""
    try:
        with anyio.fail_after(timeout):
            stream: ByteStream
            if socket_stream.supported():
                stream = await socket_stream.connect_tcp(host, port, local_host=local_host)
            else:
                stream = await anyio.connect_tcp(host, port, local_host=local_host)
            set_nodelay(stream)
            if ssl_context is not None:
                stream = await _wrap_tls(
                    stream,
                    f" with {host}:{port}",
                    hostname=server_hostname or host,
                    ssl_context=ssl_context,
                )
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
    return stream


async def _wrap_tls(stream: ByteStream, where: str, **options: Any) -> ByteStream:
    """A TLS handshake on ``stream``; when it fails the connection is closed, and a TLS
    error or the peer closing becomes :class:`TLSError` (anything else goes through)."""
    try:
        return await TLSStream.wrap(stream, standard_compatible=False, **options)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        if isinstance(exc, ssl.SSLError):
            raise TLSError(f"TLS handshake{where} failed: {exc}") from exc
        if isinstance(exc, (anyio.BrokenResourceError, anyio.EndOfStream)):
            raise TLSError(f"TLS handshake{where} failed: the peer closed") from exc
        raise


async def accept_tls(
    stream: ByteStream, context: ssl.SSLContext, timeout: float | None
) -> ByteStream:
    """The server side of a TLS handshake on an accepted connection, within ``timeout``
    seconds; raises :class:`TLSError` (the connection closed) when it fails."""
    try:
        with anyio.fail_after(timeout):
            return await _wrap_tls(stream, "", server_side=True, ssl_context=context)
    except TimeoutError:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        raise TLSError(f"no TLS handshake within {timeout} s") from None
    except OSError as exc:  # closed already by _wrap_tls
        raise TLSError("TLS handshake failed: the peer closed the connection") from exc


def tls_info(stream: ByteStream) -> TLSInfo | None:
    """What the TLS layer of ``stream`` negotiated, or None for a plain connection."""
    try:
        ssl_object = stream.extra(TLSAttribute.ssl_object)
    except anyio.TypedAttributeLookupError:
        return None
    cipher = ssl_object.cipher()
    return TLSInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        peer_certificate=dict(ssl_object.getpeercert() or {}),
    )


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
