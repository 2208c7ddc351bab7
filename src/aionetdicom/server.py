"""The SCP listener: one task per incoming connection under one task group."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup

from aionetdicom.association import Association
from aionetdicom.transport import set_nodelay
from aionetdicom.ul.connection import Role, ULConnection
from aionetdicom.ul.fsm import State

if TYPE_CHECKING:
    from aionetdicom.ae import AE

logger = logging.getLogger("aionetdicom.server")

#: Seconds running associations get to finish when the server shuts down.
DEFAULT_SHUTDOWN_GRACE = 5.0

_ESTABLISHED = frozenset(State(n) for n in range(6, 13))


class Server:
    """A running SCP: its listeners and the associations it serves."""

    def __init__(self, ae: AE, listeners: Sequence[SocketListener]) -> None:
        self.ae = ae
        self._listeners = list(listeners)
        self.associations: set[Association] = set()
        self._accept_scope = anyio.CancelScope()
        self._task_group: TaskGroup | None = None
        self._closed = anyio.Event()
        self._closing = False
        self._drained = anyio.Event()

    def __repr__(self) -> str:
        where = ", ".join(f"{h}:{p}" for h, p in self.addresses)
        return f"<Server {self.ae.ae_title!r} on {where}>"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) of each listener."""
        result = []
        for listener in self._listeners:
            address = listener.extra(SocketAttribute.local_address)
            if isinstance(address, tuple):
                result.append((str(address[0]), int(address[1])))
        return result

    @property
    def port(self) -> int:
        """The port of the first listener (useful when serving on port 0)."""
        return self.addresses[0][1]

    @property
    def active_associations(self) -> int:
        """Associations established (or releasing) right now."""
        return sum(1 for assoc in self.associations if assoc.state in _ESTABLISHED)

    @classmethod
    @asynccontextmanager
    async def running(cls, ae: AE, listeners: Sequence[SocketListener]) -> AsyncIterator[Server]:
        """Accept connections on ``listeners`` while the block runs, then shut down."""
        server = cls(ae, listeners)
        async with anyio.create_task_group() as tg:
            server._task_group = tg
            tg.start_soon(server._accept_all)
            try:
                yield server
            finally:
                with anyio.CancelScope(shield=True):
                    await server.aclose()
                tg.cancel_scope.cancel()

    async def _accept_all(self) -> None:
        with self._accept_scope:
            async with anyio.create_task_group() as tg:
                for listener in self._listeners:
                    tg.start_soon(self._accept_loop, listener)

    async def _accept_loop(self, listener: SocketListener) -> None:
        assert self._task_group is not None
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                except OSError as exc:
                    logger.warning("accept failed (%s); retrying shortly", exc)
                    await anyio.sleep(0.1)
                    continue
                self._task_group.start_soon(self._handle, stream)

    async def _handle(self, stream: SocketStream) -> None:
        set_nodelay(stream)
        ae = self.ae
        connection = ULConnection(
            Role.ACCEPTOR,
            max_pdata_length=ae._receive_limit(),
            max_associate_length=ae.maximum_associate_length,
        )
        assoc = Association(
            ae, stream, connection, timeouts=ae.timeouts(), send_cap=ae.maximum_pdu_length
        )
        self.associations.add(assoc)
        try:
            await ae._serve_connection(assoc, self)
        except Exception:
            logger.exception("association #%d failed unexpectedly; closing it", assoc.id)
            await assoc.abort()
        finally:
            self.associations.discard(assoc)
            if self._closing and not self.associations:
                self._drained.set()
            if not assoc._closed.is_set():
                await assoc._close_stream()

    def stop_accepting(self) -> None:
        """Stop accepting new connections; running associations continue."""
        self._accept_scope.cancel()

    async def aclose(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        """Stop accepting, give running associations ``grace`` seconds, abort the rest."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.stop_accepting()
        if self.associations:
            with anyio.move_on_after(grace if grace >= 0 else math.inf):
                await self._drained.wait()
        for assoc in list(self.associations):
            await assoc.abort()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the server has shut down."""
        await self._closed.wait()
