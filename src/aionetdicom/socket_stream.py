"""Plain-TCP byte streams over bare non-blocking sockets.

anyio's asyncio socket streams go through an asyncio transport and protocol, with
several cancel scopes and a copy per read. These streams call ``recv_into`` and
``sendmsg`` on the socket themselves and only wait (``anyio.wait_readable`` /
``anyio.wait_writable``) when the kernel says the call would block, which moves bulk
data noticeably faster on both asyncio and trio. They behave like anyio's own
``SocketStream``/``SocketListener`` (same exceptions, same typed attributes), so
callers and wrappers such as ``anyio.streams.tls.TLSStream`` do not see a difference.

Use :func:`supported` first: where ``wait_readable`` is not native (asyncio's
``ProactorEventLoop`` on Windows) fall back to ``anyio.connect_tcp``.

Cancellation: a call that has to wait is cancelled at that wait, with nothing consumed.
A call that the kernel can complete at once does not yield, except that after about
``_YIELD_BYTES`` of such traffic (or ``_YIELD_BYTES // _CALL_COST`` calls) it passes
through ``anyio.lowlevel.checkpoint()`` before the system call, so a busy reader or
writer cannot starve the event loop and a cancelled scope takes effect there too.
A send cancelled while waiting may have written part of its data (as with anyio).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar, Union

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream, Listener, SocketAttribute, TaskGroup

__all__ = [
    "BytesLike",
    "SocketStream",
    "TCPListener",
    "connect_tcp",
    "create_tcp_listener",
    "supported",
]

logger = logging.getLogger(__name__)

#: What :meth:`SocketStream.send` and :meth:`SocketStream.send_buffers` accept.
BytesLike = Union[bytes, bytearray, memoryview]

#: Bytes moved without waiting before the next call passes through a checkpoint.
_YIELD_BYTES = 1 << 20
#: What each call costs against that allowance on top of its bytes (bounds the calls).
_CALL_COST = 1 << 14


_Read = TypeVar("_Read", bytes, int)


def _iov_max() -> int:
    """The most buffers one ``sendmsg`` call may take."""
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 1024
    return value if value > 0 else 1024


_IOV_MAX = _iov_max()
#: Without SIGPIPE a write to a closed peer fails with EPIPE instead of killing the process.
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")
#: Non-blocking connect() results meaning "still connecting, wait until writable".
_CONNECT_PENDING = frozenset(
    {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR}
    | ({errno.WSAEWOULDBLOCK} if hasattr(errno, "WSAEWOULDBLOCK") else set())
)
#: accept() failures caused by one aborted or misrouted connection: try the next one.
_ACCEPT_RETRY = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENETDOWN",
        "EINTR",
    )
    if hasattr(errno, name)
)
#: accept() failures from running out of descriptors or memory: back off, then retry.
_ACCEPT_EXHAUSTED = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
    if hasattr(errno, name)
)
#: How long accept() sleeps when the process is out of descriptors.
_ACCEPT_BACKOFF = 0.1


def supported() -> bool:
    """Whether this module works well on the running event loop (call it inside one).

    True on trio and on asyncio loops with native ``add_reader`` (selector loops,
    uvloop); False on asyncio's ``ProactorEventLoop``, where anyio would emulate
    ``wait_readable`` with a selector thread, and on anyio older than 4.7.
    """
    if not hasattr(anyio, "notify_closing"):
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return True  # trio: its wait_readable is native on every platform
    add_reader = getattr(type(loop), "add_reader", None)
    return add_reader is not None and add_reader is not asyncio.BaseEventLoop.add_reader


def _plain_address(address: Any) -> Any:
    """A socket address as anyio reports it: IPv6 as (host, port), scope as ``%id``."""
    if isinstance(address, tuple) and len(address) == 4:
        host, port, _flowinfo, scope_id = address
        if scope_id:
            return (f"{host.split('%')[0]}%{scope_id}", port)
        return (host, port)
    return address


def _set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle off: DICOM is request/response and must not wait for delayed ACKs."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _byte_view(item: BytesLike) -> memoryview:
    """A flat byte view of ``item``, without copying."""
    view = memoryview(item)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


async def _wait(
    ready: Callable[[socket.socket], Awaitable[None]],
    sock: socket.socket,
    timeout: float | None,
    deadline: float | None,
) -> float | None:
    """Wait until ``sock`` is ready; with ``timeout``, against a deadline set at the
    first wait of the call (returned, to pass back in), raising TimeoutError."""
    if timeout is None:
        await ready(sock)
        return None
    if deadline is None:
        deadline = anyio.current_time() + timeout
    with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
        await ready(sock)
    return deadline


class SocketStream(ByteStream):
    """A byte stream that owns a connected non-blocking stream socket.

    One receive and one send may run at the same time; a second concurrent receive
    (or send) raises :exc:`anyio.BusyResourceError`.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._closed = False
        self._receiving = False
        self._sending = False
        self._receive_allowance = _YIELD_BYTES
        self._send_allowance = _YIELD_BYTES
        # Cached now: after a reset or close the socket can no longer tell.
        self._family = sock.family
        self._local_address = _plain_address(sock.getsockname())
        try:
            self._remote_address: Any = _plain_address(sock.getpeername())
        except OSError:
            self._remote_address = None

    def _failure(self, exc: OSError) -> Exception:
        """The anyio exception for a failed socket call."""
        if self._closed or exc.errno in (errno.EBADF, errno.ENOTSOCK):
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError(f"socket error: {exc}")

    async def receive(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes; :exc:`anyio.EndOfStream` once the peer sent EOF,
        TimeoutError when nothing arrived within ``timeout`` seconds of waiting."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        sock = self._sock
        return await self._read(lambda: sock.recv(max_bytes), timeout=timeout)

    async def receive_into(
        self, buffer: memoryview | bytearray, *, timeout: float | None = None
    ) -> int:
        """Read into ``buffer`` without copying; the byte count, never 0 unless it is empty.

        Raises :exc:`anyio.EndOfStream` once the peer sent EOF, and TimeoutError when
        nothing arrived within ``timeout`` seconds (the clock runs only while it has
        to wait, so a read that finds data costs no timer).
        """
        sock = self._sock
        if not len(buffer):
            return await self._read(lambda: 0, empty_ok=True)
        return await self._read(lambda: sock.recv_into(buffer), timeout=timeout)

    async def _read(
        self, call: Callable[[], _Read], *, empty_ok: bool = False, timeout: float | None = None
    ) -> _Read:
        """Run the non-blocking read ``call`` until it gives data (bytes or a count).

        Nothing (b"" or 0) means the peer sent EOF, unless ``empty_ok``.
        """
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        self._receiving = True
        try:
            sock = self._sock
            deadline: float | None = None
            if self._receive_allowance <= 0:
                self._receive_allowance = _YIELD_BYTES
                await anyio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    result = call()
                except BlockingIOError:
                    deadline = await _wait(anyio.wait_readable, sock, timeout, deadline)
                    self._receive_allowance = _YIELD_BYTES
                    continue
                except OSError as exc:
                    raise self._failure(exc) from exc
                size = result if isinstance(result, int) else len(result)
                if not size and not empty_ok:
                    raise anyio.EndOfStream
                self._receive_allowance -= size + _CALL_COST
                return result
        finally:
            self._receiving = False

    async def send(self, item: BytesLike) -> None:
        """Send all of ``item`` (no copy is made)."""
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._sending = True
        try:
            sock = self._sock
            view = _byte_view(item)
            total = len(view)
            if self._send_allowance <= 0:
                self._send_allowance = _YIELD_BYTES
                await anyio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    sent = sock.send(view, _SEND_FLAGS)
                except BlockingIOError:
                    await anyio.wait_writable(sock)
                    self._send_allowance = _YIELD_BYTES
                    continue
                except OSError as exc:
                    raise self._failure(exc) from exc
                if sent >= len(view):
                    break
                view = view[sent:]
            self._send_allowance -= total + _CALL_COST
        finally:
            self._sending = False

    async def send_buffers(
        self, buffers: Sequence[BytesLike], *, timeout: float | None = None
    ) -> None:
        """Send the buffers back to back with gather writes (``sendmsg``), copying nothing.

        Raises TimeoutError when the peer has not made room for all of it within
        ``timeout`` seconds of the first wait (a send that fits costs no timer)."""
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._sending = True
        try:
            sock = self._sock
            views = [view for view in map(_byte_view, buffers) if view]
            total = sum(map(len, views))
            if self._send_allowance <= 0:
                self._send_allowance = _YIELD_BYTES
                await anyio.lowlevel.checkpoint()
            first = 0  # index of the first view not yet sent in full
            deadline: float | None = None
            while first < len(views):
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    if _HAS_SENDMSG:
                        sent = sock.sendmsg(views[first : first + _IOV_MAX], (), _SEND_FLAGS)
                    else:
                        sent = sock.send(views[first], _SEND_FLAGS)
                except BlockingIOError:
                    deadline = await _wait(anyio.wait_writable, sock, timeout, deadline)
                    self._send_allowance = _YIELD_BYTES
                    continue
                except OSError as exc:
                    raise self._failure(exc) from exc
                while sent:
                    size = len(views[first])
                    if sent < size:
                        views[first] = views[first][sent:]
                        break
                    sent -= size
                    first += 1
            self._send_allowance -= total + _CALL_COST
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut down the sending direction (the peer reads EOF); receiving goes on."""
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._failure(exc) from exc

    async def aclose(self) -> None:
        """Close the socket; tasks waiting in receive or send get ClosedResourceError."""
        if not self._closed:
            self._closed = True
            if self._sock.fileno() >= 0:
                anyio.notify_closing(self._sock)
            self._sock.close()
        await anyio.lowlevel.checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """anyio's :class:`SocketAttribute` values (``stream.extra(...)``)."""
        attributes: dict[Any, Callable[[], Any]] = {
            SocketAttribute.raw_socket: lambda: self._sock,
            SocketAttribute.family: lambda: self._family,
            SocketAttribute.local_address: lambda: self._local_address,
        }
        remote = self._remote_address
        if remote is not None:
            attributes[SocketAttribute.remote_address] = lambda: remote
        if self._family in (socket.AF_INET, socket.AF_INET6):
            attributes[SocketAttribute.local_port] = lambda: self._local_address[1]
            if remote is not None:
                attributes[SocketAttribute.remote_port] = lambda: remote[1]
        return attributes


def _where(host: str, port: int) -> str:
    """``host:port`` for messages, with brackets around IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _connect_one(
    family: int, proto: int, address: Any, local_address: Any | None
) -> socket.socket:
    """A socket connected to ``address``; closed again if connecting fails or is cancelled."""
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setblocking(False)
        _set_nodelay(sock)
        if local_address is not None:
            sock.bind(local_address)
        error = sock.connect_ex(address)
        if error in _CONNECT_PENDING:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_tcp(host: str, port: int, *, local_host: str | None = None) -> SocketStream:
    """Connect to ``host:port``, trying its addresses (IPv6 and IPv4) in resolver order.

    ``local_host`` binds the local end. If every attempt fails, raises an
    :exc:`OSError` (such as :exc:`ConnectionRefusedError`) with the errno of the last
    failure and a message naming ``host:port``.
    """
    targets = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    local_by_family: dict[int, Any] = {}
    if local_host is not None:
        for family, _, _, _, address in await anyio.getaddrinfo(
            local_host, 0, type=socket.SOCK_STREAM
        ):
            local_by_family.setdefault(family, address)
        targets = [target for target in targets if target[0] in local_by_family]
        if not targets:
            raise OSError(
                errno.EAFNOSUPPORT,
                f"could not connect to {_where(host, port)}: "
                f"no address of the same family as {local_host}",
            )
    last: OSError | None = None
    for family, _, proto, _, address in targets:
        try:
            sock = await _connect_one(family, proto, address, local_by_family.get(family))
        except OSError as exc:
            last = exc
            continue
        return SocketStream(sock)
    assert last is not None  # getaddrinfo returns at least one address or raises
    code = last.errno if last.errno is not None else errno.ECONNREFUSED
    reason = last.strerror or str(last)
    raise OSError(code, f"could not connect to {_where(host, port)}: {reason}") from last


class TCPListener(Listener[SocketStream]):
    """Accepts connections on one or more listening sockets that it owns.

    :func:`create_tcp_listener` puts every address the host resolves to (for example
    ``0.0.0.0`` and ``::``) into one listener, so :meth:`accept` and :meth:`serve`
    cover them all; :attr:`sockets` lists them and the typed attributes describe the
    first. It is an anyio ``Listener``, so it also fits in
    ``anyio.streams.stapled.MultiListener`` next to others.
    """

    def __init__(self, sockets: Sequence[socket.socket]) -> None:
        if not sockets:
            raise ValueError("a TCPListener needs at least one socket")
        for sock in sockets:
            sock.setblocking(False)
        self._socks = tuple(sockets)
        self._closed = False
        self._accepting = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return self._socks

    async def accept(self) -> SocketStream:
        """The next incoming connection (non-blocking, TCP_NODELAY on)."""
        if self._accepting:
            raise anyio.BusyResourceError("accepting connections from")
        self._accepting = True
        try:
            await anyio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                for sock in self._socks:
                    try:
                        client, _ = sock.accept()
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if self._closed:
                            raise anyio.ClosedResourceError from exc
                        if exc.errno in _ACCEPT_RETRY:
                            continue
                        if exc.errno not in _ACCEPT_EXHAUSTED:
                            raise
                        logger.warning(
                            "accept() failed (%s); retrying in %s s", exc, _ACCEPT_BACKOFF
                        )
                        await anyio.sleep(_ACCEPT_BACKOFF)
                        break
                    try:
                        _set_nodelay(client)
                        return SocketStream(client)
                    except OSError:
                        client.close()  # reset before we got to it
                        continue
                else:
                    await self._wait_readable()
        finally:
            self._accepting = False

    async def _wait_readable(self) -> None:
        """Wait until one of the sockets has a connection to accept."""
        if len(self._socks) == 1:
            await anyio.wait_readable(self._socks[0])
            return
        closed = False

        async def watch(sock: socket.socket) -> None:
            nonlocal closed
            try:
                await anyio.wait_readable(sock)
            except anyio.ClosedResourceError:
                closed = True
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for sock in self._socks:
                group.start_soon(watch, sock)
        if closed:
            raise anyio.ClosedResourceError

    async def serve(
        self, handler: Callable[[SocketStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        """Accept forever, starting ``handler(stream)`` in a task for each connection.

        As with anyio, the handler owns the stream and should close it.
        """
        async with AsyncExitStack() as stack:
            if task_group is None:
                task_group = await stack.enter_async_context(anyio.create_task_group())
            while True:
                stream = await self.accept()
                task_group.start_soon(handler, stream)

    async def aclose(self) -> None:
        """Close the sockets; a task waiting in :meth:`accept` gets ClosedResourceError."""
        if not self._closed:
            self._closed = True
            for sock in self._socks:
                if sock.fileno() >= 0:
                    anyio.notify_closing(sock)
                sock.close()
        await anyio.lowlevel.checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """raw_socket, family, local_address and local_port of the first socket."""
        sock = self._socks[0]
        return {
            SocketAttribute.raw_socket: lambda: sock,
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: lambda: _plain_address(sock.getsockname()),
            SocketAttribute.local_port: lambda: sock.getsockname()[1],
        }


async def create_tcp_listener(
    *,
    local_host: str | None = None,
    local_port: int = 0,
    backlog: int = 65536,
    reuse_address: bool = True,
) -> TCPListener:
    """Listen on every address ``local_host`` resolves to (all interfaces if None).

    With ``local_port`` 0 the first socket picks a free port and the others reuse it.
    IPv6 sockets are IPv6-only, so ``::`` and ``0.0.0.0`` can share a port. Address
    families the kernel does not support are skipped while another one works.
    """
    infos = await anyio.getaddrinfo(
        local_host, local_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    backlog = min(max(backlog, 0), 65536)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    unsupported: OSError | None = None
    try:
        for family, _, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sock = socket.socket(family, socket.SOCK_STREAM, proto)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    raise
                unsupported = exc  # e.g. "::" on a kernel without IPv6: use the rest
                continue
            sockets.append(sock)
            sock.setblocking(False)
            if reuse_address and sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if local_port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
        if not sockets:
            assert unsupported is not None
            raise unsupported
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return TCPListener(sockets)
