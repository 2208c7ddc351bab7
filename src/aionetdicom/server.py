"""The SCP listener: one task per incoming connection under one task group.

Limits, all enforced without ever raising into the accept loop:

* ``AE.maximum_pending_connections``: connections that have not sent their
  A-ASSOCIATE-RQ yet. At the limit the server first stops accepting for up to
  :data:`PENDING_CAP_WAIT` seconds: in a burst of ordinary clients a place frees as
  soon as one of them has been read, and the others wait in the kernel's backlog
  instead of being turned away. If no place frees in that time the pending ones are
  stuck (silent or very slow peers, each closed by ARTIM, the ACSE timeout, in the
  end): each further connection then takes the place of the oldest pending one if that
  one has been pending for :data:`PENDING_CAP_WAIT` seconds or more (it is closed), and
  is closed itself otherwise. A flood of silent connections thus cannot use up file
  descriptors or memory, nor keep a real client out for an ARTIM period.
* ``AE.maximum_associations``: associations accepted and not yet ended. The place is
  taken when the A-ASSOCIATE-AC is decided, so associations negotiating at the same
  time cannot overshoot; one more is rejected (transient, local limit exceeded).

Shutdown (:meth:`Server.aclose`, or leaving ``AE.serve``): stop accepting, close the
connections that are still pending, reject new association requests on connections
already open (transient, temporary congestion), give the associations in flight
``grace`` seconds to end, then abort the rest.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from aionetdicom.addresses import peer_allowed
from aionetdicom.association import NOTIFICATION_DRAIN, Association, _Notifier
from aionetdicom.errors import TLSError
from aionetdicom.transport import TCPListener, accept_tls, peer_address, set_nodelay
from aionetdicom.ul.connection import Role, ULConnection
from aionetdicom.ul.fsm import State

if TYPE_CHECKING:
    from aionetdicom.ae import AE


logger = logging.getLogger("aionetdicom.server")

#: Seconds running associations get to finish when the server shuts down.
DEFAULT_SHUTDOWN_GRACE = 5.0
#: Seconds the accept loop waits, at ``maximum_pending_connections``, for a place to
#: free before it closes the connections beyond the limit.
PENDING_CAP_WAIT = 0.5

_ESTABLISHED = frozenset(State(n) for n in range(6, 13))


class Server:
    """A running SCP: its listeners and the associations it serves."""

    def __init__(
        self,
        ae: AE,
        listeners: Sequence[TCPListener],
        *,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ae = ae
        self.shutdown_grace = shutdown_grace
        #: TLS for every connection (the handshake runs in the connection's own task,
        #: bounded by the AE's ACSE timeout, never in the accept loop).
        self.ssl_context = ssl_context
        #: Connections whose TLS handshake failed or timed out.
        self.failed_handshakes = 0
        self._listeners = list(listeners)
        self._addresses = [_address_of(listener) for listener in self._listeners]
        #: Every connection being served (pending, negotiating, established, ending).
        self.associations: set[Association] = set()
        self._admitted: set[Association] = set()
        self._pending = 0
        # Pending associations, oldest first: their "no longer pending" callback and
        # when they were accepted.
        self._pending_associations: dict[Association, tuple[Callable[[], None], float]] = {}
        self._pending_freed = anyio.Event()
        self._shedding = False  # at the limit for longer than PENDING_CAP_WAIT
        self._notifiers = 0
        self._notifiers_done = anyio.Event()
        self._accept_scope = anyio.CancelScope()
        self._task_group: TaskGroup | None = None
        self._closed = anyio.Event()
        self._closing = False
        self._drained = anyio.Event()
        #: Connections closed at once because ``maximum_pending_connections`` was reached.
        self.refused_connections = 0
        #: Pending connections closed to make room for a new one (see the module notes).
        self.evicted_connections = 0
        #: Connections closed at once because their address is not allowed.
        self.refused_addresses = 0

    def __repr__(self) -> str:
        where = ", ".join(_format(h, p) for h, p in self.addresses)
        return f"<Server {self.ae.ae_title!r} on {where}>"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) of each listener (IPv6 hosts without brackets)."""
        return [address for address in self._addresses if address is not None]

    @property
    def port(self) -> int:
        """The port of the first listener (useful when serving on port 0)."""
        return self.addresses[0][1]

    @property
    def active_associations(self) -> int:
        """Associations established (or releasing) right now."""
        return sum(1 for assoc in self.associations if assoc.state in _ESTABLISHED)

    @property
    def admitted(self) -> int:
        """Associations accepted (or being accepted) and not ended: what
        ``maximum_associations`` limits."""
        return len(self._admitted)

    @property
    def pending_connections(self) -> int:
        """Connections that have not sent their A-ASSOCIATE-RQ yet."""
        return self._pending

    @property
    def closing(self) -> bool:
        """True once shutdown started."""
        return self._closing

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        ae: AE,
        listeners: Sequence[TCPListener],
        *,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncIterator[Server]:
        """Accept connections on ``listeners`` while the block runs, then shut down."""
        server = cls(ae, listeners, shutdown_grace=shutdown_grace, ssl_context=ssl_context)
        async with anyio.create_task_group() as tg:
            server._task_group = tg
            tg.start_soon(server._accept_all)
            try:
                yield server
            finally:
                with anyio.CancelScope(shield=True):
                    await server.aclose(shutdown_grace)
                    if server._notifiers:
                        with anyio.move_on_after(NOTIFICATION_DRAIN):
                            await server._notifiers_done.wait()
                tg.cancel_scope.cancel()

    async def _accept_all(self) -> None:
        with self._accept_scope:
            async with anyio.create_task_group() as tg:
                for listener in self._listeners:
                    tg.start_soon(self._accept_loop, listener)

    async def _wait_for_pending_place(self) -> None:
        """At the pending-connection limit: wait (a while) for a place to free."""
        limit = self.ae.maximum_pending_connections
        if self._pending < limit or self._shedding:
            return
        with anyio.move_on_after(PENDING_CAP_WAIT):
            while self._pending >= limit:
                await self._pending_freed.wait()
            return
        self._shedding = True
        logger.info(
            "%d connections have not sent an A-ASSOCIATE-RQ for %s s "
            "(maximum_pending_connections); closing new connections until one does",
            self._pending,
            PENDING_CAP_WAIT,
        )

    def _pending_done(self) -> None:
        self._pending -= 1
        if self._pending < self.ae.maximum_pending_connections:
            self._shedding = False
            if self._pending_freed.statistics().tasks_waiting:
                freed, self._pending_freed = self._pending_freed, anyio.Event()
                freed.set()

    async def _accept_loop(self, listener: TCPListener) -> None:
        assert self._task_group is not None
        async with listener:
            while True:
                await self._wait_for_pending_place()
                try:
                    stream = await listener.accept()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                except OSError as exc:
                    logger.warning("accept failed (%s); retrying shortly", exc)
                    await anyio.sleep(0.1)
                    continue
                if not self._address_allowed(stream):
                    continue
                if self._pending >= self.ae.maximum_pending_connections and not self._evict():
                    self.refused_connections += 1
                    logger.debug(
                        "%d connections have not sent an A-ASSOCIATE-RQ yet "
                        "(maximum_pending_connections); closing the new one from %s",
                        self._pending,
                        _peer(stream),
                    )
                    await _close_at_once(stream)
                    continue
                self._pending += 1
                self._task_group.start_soon(self._handle, stream)

    def _evict(self) -> bool:
        """Make room by closing the oldest pending connection, if it has been pending
        for at least :data:`PENDING_CAP_WAIT` seconds (a client sends its A-ASSOCIATE-RQ
        within milliseconds; one still silent or trickling after that is stuck or
        hostile). True when a place was freed."""
        oldest = next(iter(self._pending_associations.items()), None)
        if oldest is None:
            return False
        assoc, (identified, since) = oldest
        if anyio.current_time() - since < PENDING_CAP_WAIT:
            return False
        identified()  # no longer counts as pending: the new connection takes its place
        self._shedding = True  # still at the limit: no pause before the next accept
        self.evicted_connections += 1
        logger.debug(
            "closing the connection from %s:%d, pending for %.1f s, to make room",
            *assoc.peer_address,
            anyio.current_time() - since,
        )
        assert self._task_group is not None
        self._task_group.start_soon(assoc._close_stream)
        return True

    def _address_allowed(self, stream: ByteStream) -> bool:
        """False (the connection closed at once, logged) for a peer outside
        ``AE.allowed_peer_addresses``."""
        networks = self.ae.allowed_peer_addresses
        if networks is None:
            return True
        host, _ = peer_address(stream)
        if host and peer_allowed(networks, host):
            return True
        self.refused_addresses += 1
        logger.info("connection from %s refused: address not allowed", _peer(stream))
        self._task_group.start_soon(_close_at_once, stream)  # type: ignore[union-attr]
        return False

    async def _handle(self, stream: ByteStream) -> None:
        pending = True

        def identified() -> None:
            nonlocal pending
            if pending:
                pending = False
                self._pending_done()
                self._pending_associations.pop(assoc, None)

        ae = self.ae
        where = _peer(stream) if self.ssl_context is not None else ""  # for a TLS failure
        try:
            set_nodelay(stream)  # before any TLS handshake: its messages are small too
            if self.ssl_context is not None:
                stream = await accept_tls(stream, self.ssl_context, ae.acse_timeout)
            connection = ULConnection(
                Role.ACCEPTOR,
                max_pdata_length=ae._receive_limit(),
                max_associate_length=ae.maximum_associate_length,
            )
            assoc = Association(
                ae, stream, connection, timeouts=ae.timeouts(), send_cap=ae.maximum_pdu_length
            )
        except TLSError as exc:  # accept_tls closed the connection
            self.failed_handshakes += 1
            self._pending_done()
            logger.info("connection from %s closed: %s", where, exc)
            return
        except BaseException:
            self._pending_done()
            await _close_at_once(stream)
            raise
        self.associations.add(assoc)
        self._pending_associations[assoc] = (identified, anyio.current_time())
        notifier = ae._make_notifier(assoc)
        if notifier is not None and self._task_group is not None:
            self._notifiers += 1
            self._task_group.start_soon(self._deliver, notifier)
        try:
            if self._closing:
                await assoc._close_stream()
                return
            await ae._serve_connection(assoc, self, identified)
        except Exception:
            logger.exception("association #%d failed unexpectedly; closing it", assoc.id)
            await assoc.abort()
        finally:
            identified()
            self._admitted.discard(assoc)
            self.associations.discard(assoc)
            if not assoc._closed.is_set():
                await assoc._close_stream()
            if notifier is not None:
                notifier.close()
            if self._closing and not self.associations:
                self._drained.set()

    async def _deliver(self, notifier: _Notifier) -> None:
        try:
            await notifier.run()
        finally:
            self._notifiers -= 1
            if self._closing and not self._notifiers:
                self._notifiers_done.set()

    def _admit(self, assoc: Association) -> None:
        """Count ``assoc`` against ``maximum_associations`` until its task ends."""
        self._admitted.add(assoc)

    def stop_accepting(self) -> None:
        """Stop accepting new connections; running associations continue."""
        self._accept_scope.cancel()

    async def aclose(self, grace: float | None = None) -> None:
        """Stop accepting, give running associations ``grace`` seconds, abort the rest.

        ``grace`` defaults to the server's ``shutdown_grace``; connections that have
        not sent an A-ASSOCIATE-RQ are closed at once. Concurrent calls wait for the
        first one to finish.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        grace = self.shutdown_grace if grace is None else grace
        self.stop_accepting()
        for assoc in list(self._pending_associations):
            await assoc._close_stream()
        if self.associations:
            with anyio.move_on_after(grace if grace >= 0 else math.inf):
                await self._drained.wait()
        for assoc in list(self.associations):
            await assoc.abort()
        if not self._notifiers:
            self._notifiers_done.set()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the server has shut down."""
        await self._closed.wait()


def _address_of(listener: TCPListener) -> tuple[str, int] | None:
    try:
        address = listener.extra(SocketAttribute.local_address)
    except anyio.TypedAttributeLookupError:
        return None
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return None


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(stream: ByteStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?"
    if isinstance(address, tuple):
        return _format(str(address[0]), int(address[1]))
    return str(address)


async def _close_at_once(stream: ByteStream) -> None:
    """Close a connection we will not serve, never letting an error escape."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(1.0),
        suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError),
    ):
        await stream.aclose()
