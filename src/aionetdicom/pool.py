"""A pool of associations to one peer, reused across many short calls.

Opening an association costs a TCP connection and an A-ASSOCIATE round trip; a web
service answering many small requests with C-ECHO, C-STORE or C-FIND should not pay it
every time. :class:`AssociationPool` keeps up to ``max_size`` associations to one peer,
negotiated once for the presentation contexts declared up front, and lends them out::

    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from aionetdicom import AE, AssociationPool, contexts
    from aionetdicom.services.storage import storage_contexts

    ae = AE("WEB_SCU")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AssociationPool(
            ae, "pacs.example", 104, called_ae_title="PACS",
            contexts=[*contexts.VERIFICATION, *storage_contexts([CT_IMAGE_STORAGE])],
            max_size=4, idle_timeout=30.0, check_after=60.0, acquire_timeout=10.0,
        ) as pool:
            app.state.pool = pool
            yield                       # leaving: leases get close_grace s, then A-RELEASE

    app = FastAPI(lifespan=lifespan)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        pool: AssociationPool = request.app.state.pool
        return {"status": await pool.echo()}       # acquire, C-ECHO, give back

    # Several operations on one leased association:
    async with pool.acquire() as assoc:
        await assoc.store(path_1)
        await assoc.store(path_2)

    async with pool.find(query, model="study") as responses:   # or plain ``async for``
        async for status, identifier in responses:
            ...

Behaviour, in short:

* **Bounded.** At most ``max_size`` associations exist at once (being opened, open or
  being closed). Callers that find them all busy queue first come, first served; one
  that waits longer than ``acquire_timeout`` gets :class:`PoolTimeout`. Opening an
  association is bounded by the AE's connect and ACSE timeouts instead, and its errors
  (``OSError``, :class:`~aionetdicom.errors.AssociationRejected`, ...) reach the caller
  without costing a place in the pool.
* **Reused only when sound.** A lease given back is kept for the next caller only while
  the association is established and has no operation left outstanding. It is aborted
  (counted as *discarded*) after an association-level error (abort, lost connection,
  protocol error, timeout), when the peer released or aborted it, or when the lease
  ended with an operation still running: a half-finished operation is never handed on.
  ``echo``, ``store``, ``find``, ``get`` and ``move`` of the pool retry once on a new
  association when a *reused* one proves dead before any response came (``retry_stale``):
  the peer may close an idle association at any time, and that race is not the
  caller's problem.
* **Health check.** With ``check_after`` set, an association idle for at least that many
  seconds is checked with C-ECHO (``check_timeout``) before it is lent; one that fails
  is aborted and the caller gets another. The Verification context is added to the
  proposal for this.
* **Idle timeout.** A background task releases (A-RELEASE) associations that have been
  idle for ``idle_timeout`` seconds.
* **Exclusive or shared.** By default a lease is exclusive: one caller per association.
  With ``max_shared > 1`` the pool proposes an asynchronous operations window and lets
  up to ``min(max_shared, window the peer accepted)`` callers use one association at
  once (the association multiplexes their operations by Message ID); a peer that
  accepts no window gets exclusive leases. C-GET always takes an exclusive lease (only
  one C-GET may run per association).
* **Cancellation.** A caller cancelled while queued, or while an association is being
  opened for it, holds no place afterwards (an opening interrupted half-way is
  aborted). Cancelled during an operation, the association's own rules apply (C-CANCEL
  and drain for C-FIND/C-GET/C-MOVE, A-ABORT otherwise), and the pool then keeps the
  association only if it is still established with nothing outstanding.
* **Shutdown.** :meth:`AssociationPool.aclose` (also run when the ``async with`` block
  ends, shielded from cancellation) refuses new leases, fails queued callers with
  :class:`PoolClosed`, releases idle associations at once, waits up to ``close_grace``
  seconds for leases to come back, aborts those still lent, and waits for every
  association to be closed.

Works under asyncio and trio (anyio only). Logs to ``aionetdicom.pool``;
:attr:`AssociationPool.statistics` gives counts for monitoring.
"""

from __future__ import annotations

import itertools
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import VERIFICATION, VERIFICATION_SOP_CLASS, PresentationContext
from aionetdicom.acse.requestor import propose
from aionetdicom.acse.user_identity import UserIdentity
from aionetdicom.association import Association, Timeouts
from aionetdicom.dimse.command_set import Priority
from aionetdicom.dimse.status import Status
from aionetdicom.errors import (
    AssociationError,
    AssociationRejected,
    ConnectTimeout,
    DicomNetworkError,
    DicomTimeoutError,
    ProtocolError,
)
from aionetdicom.operation import PendingResponses
from aionetdicom.pdu.items import SOPClassCommonExtendedNegotiation, SOPClassExtendedNegotiation

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from aionetdicom.ae import AE
    from aionetdicom.services.query_retrieve import (
        FindResponse,
        ReceivedInstances,
        RetrieveResponse,
    )
    from aionetdicom.services.storage import StoreHandler, StoreSource

logger = logging.getLogger("aionetdicom.pool")

T = TypeVar("T")
R = TypeVar("R")


_ids = itertools.count(1)


class PoolTimeout(DicomTimeoutError):
    """No association of the pool became free within the acquire timeout."""


class PoolClosed(DicomNetworkError):
    """The pool is closing or closed: it lends no more associations."""


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of an :class:`AssociationPool`, for monitoring.

    ``size`` counts what ``max_size`` bounds: ``connecting`` + ``open`` + ``closing``.
    ``open`` = ``idle`` + ``in_use``; ``leases`` exceeds ``in_use`` only when
    associations are shared. The last five are totals since the pool started:
    associations ``created``, leases served by an existing association (``reused``),
    associations ``discarded`` as unusable (error, peer ended it, failed check,
    unfinished operation), ``expired`` by the idle timeout, and health ``checks`` sent.
    """

    max_size: int
    size: int
    connecting: int
    open: int
    idle: int
    in_use: int
    closing: int
    leases: int
    waiting: int
    created: int
    reused: int
    discarded: int
    expired: int
    checks: int


_EntryState = Literal["connecting", "open", "closing", "closed"]


class _Entry:
    """One place in the pool: an association being opened, lent, idle or closing."""

    __slots__ = (
        "abort",
        "assoc",
        "capacity",
        "close",
        "discarded",
        "exclusive",
        "id",
        "idle_since",
        "leases",
        "state",
    )

    def __init__(self) -> None:
        self.id = next(_ids)
        self.state: _EntryState = "connecting"
        self.assoc: Association | None = None
        self.leases = 0
        #: Leases this association takes at once (1 until the window is known).
        self.capacity = 1
        #: Held by an exclusive lease: nobody else may share it meanwhile.
        self.exclusive = False
        self.idle_since = anyio.current_time()
        #: Set to make the keeper task end the association (abort if ``abort``).
        self.close = anyio.Event()
        self.abort = False
        self.discarded = False

    def __repr__(self) -> str:
        which = f"association #{self.assoc.id}" if self.assoc is not None else "new association"
        return f"<pool entry {self.id}: {which} {self.state}, {self.leases} lease(s)>"


class _Closed:
    """What a queued caller is handed when the pool closes."""


_CLOSED = _Closed()


class _Waiter:
    """A caller queued for an association; ``grant`` is set when it is served."""

    __slots__ = ("event", "exclusive", "grant")

    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive
        self.event = anyio.Event()
        self.grant: _Entry | _Closed | None = None


class _Lease:
    """One caller's use of one pooled association; give it back exactly once."""

    __slots__ = ("entry", "exclusive", "pool", "returned", "reused")

    def __init__(self, pool: AssociationPool, entry: _Entry, exclusive: bool, reused: bool) -> None:
        self.pool = pool
        self.entry = entry
        self.exclusive = exclusive
        self.reused = reused
        self.returned = False

    @property
    def assoc(self) -> Association:
        assert self.entry.assoc is not None
        return self.entry.assoc

    def give_back(self, error: BaseException | None) -> None:
        """Return the association; ``error`` is what ended the caller's use, if anything."""
        if not self.returned:
            self.returned = True
            self.pool._give_back(self, error)


def _outstanding(assoc: Association) -> bool:
    """True while a request of ours on ``assoc`` waits for its turn or its responses.

    (A request cut short while being sent aborts the association, so what was sent is
    either whole or the association is gone.)
    """
    return assoc.outstanding_operations > 0


def _fatal(error: BaseException | None) -> bool:
    """Whether ``error`` leaving a lease condemns its association even if it looks open.

    Errors of the association itself do; those only about opening one (from a nested
    acquisition, say) and the application's own exceptions do not.
    """
    if isinstance(error, (AssociationRejected, ConnectTimeout, PoolTimeout)):
        return False
    return isinstance(error, (AssociationError, ProtocolError, DicomTimeoutError))


def _accepts_verification(assoc: Association) -> bool:
    return any(c.accepted and c.abstract_syntax == VERIFICATION_SOP_CLASS for c in assoc.contexts)


def _window_capacity(assoc: Association, wanted: int) -> int:
    """How many leases may share ``assoc``: ``wanted``, capped by the accepted window."""
    if wanted <= 1:
        return 1
    may_invoke, _ = assoc.operations_window
    return max(1, min(wanted, may_invoke))


class AssociationPool:
    """Associations to one peer (``host``, ``port``, AE title ``called_ae_title``), lent to callers.

    Use it as ``async with AssociationPool(ae, host, port, ...) as pool:``; see the
    module documentation for the behaviour. ``contexts`` (with ``user_identity``,
    ``operations_window``, the extended negotiation items and ``timeouts``) are what
    every association of the pool proposes, as for :meth:`AE.associate
    <aionetdicom.ae.AE.associate>`. Times are seconds; ``None`` means no limit
    (``idle_timeout``: never release idle associations; ``check_after``: no health
    checks; ``acquire_timeout``: queue forever; ``check_timeout``: the DIMSE timeout).
    Keep ``idle_timeout`` below the network timeout (``timeouts.network``, else the
    AE's): an association aborts itself after that long without data, and the pool
    then has to discard it instead of releasing it.
    """

    def __init__(
        self,
        ae: AE,
        host: str,
        port: int,
        *,
        called_ae_title: str = "ANY-SCP",
        contexts: Sequence[PresentationContext] = VERIFICATION,
        max_size: int = 4,
        max_shared: int = 1,
        idle_timeout: float | None = 30.0,
        check_after: float | None = None,
        check_timeout: float | None = 5.0,
        acquire_timeout: float | None = 30.0,
        close_grace: float = 10.0,
        retry_stale: bool = True,
        user_identity: UserIdentity | None = None,
        operations_window: tuple[int, int] | None = None,
        extended_negotiation: Sequence[SOPClassExtendedNegotiation] = (),
        common_extended_negotiation: Sequence[SOPClassCommonExtendedNegotiation] = (),
        timeouts: Timeouts | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        from aionetdicom.ae import validate_ae_title

        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size!r}")
        if max_shared < 1:
            raise ValueError(f"max_shared must be at least 1, not {max_shared!r}")
        for name, value in (
            ("idle_timeout", idle_timeout),
            ("check_after", check_after),
            ("check_timeout", check_timeout),
            ("acquire_timeout", acquire_timeout),
            ("close_grace", close_grace),
        ):
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0 or None, not {value!r}")
        self.ae = ae
        self.host = host
        self.port = port
        self.called_ae_title = validate_ae_title(called_ae_title, "called AE title")
        #: TLS for every association of the pool (see :mod:`aionetdicom.tls`).
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        proposal = list(contexts)
        if check_after is not None and not any(
            c.abstract_syntax == VERIFICATION_SOP_CLASS for c in proposal
        ):
            proposal.extend(VERIFICATION)  # the health check needs it
        propose(proposal)  # invalid proposals fail here, not on first use
        #: What every association of the pool proposes.
        self.contexts: tuple[PresentationContext, ...] = tuple(proposal)
        self.max_size = max_size
        self.max_shared = max_shared
        self.idle_timeout = idle_timeout
        self.check_after = check_after
        self.check_timeout = check_timeout
        self.acquire_timeout = acquire_timeout
        self.close_grace = close_grace
        self.retry_stale = retry_stale
        self.user_identity = user_identity
        if operations_window is None and max_shared > 1:
            operations_window = (max_shared, 1)
        self.operations_window = operations_window
        self.extended_negotiation = tuple(extended_negotiation)
        self.common_extended_negotiation = tuple(common_extended_negotiation)
        self.timeouts = timeouts
        self._label = f"{self.called_ae_title}@{host}:{port}"
        self._entries: list[_Entry] = []
        self._waiters: deque[_Waiter] = deque()
        # Events are made on entry: the pool may be built outside any event loop.
        self._change: anyio.Event
        self._close_lock: anyio.Lock
        self._tg: TaskGroup | None = None
        self._started = False
        self._closing = False
        self._shut = False  # aclose() completed
        self._created = 0
        self._reused = 0
        self._discarded = 0
        self._expired = 0
        self._checks = 0

    def __repr__(self) -> str:
        s = self.statistics
        state = "closed" if self._closing else f"{s.in_use} in use, {s.idle} idle"
        return f"<AssociationPool {self._label} {state}, max_size={self.max_size}>"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AssociationPool:
        if self._started:
            raise RuntimeError("an AssociationPool can be entered only once")
        self._started = True
        self._change = anyio.Event()
        self._close_lock = anyio.Lock()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        if self.idle_timeout is not None:
            tg.start_soon(self._expire_idle, name=f"pool {self._label} idle timer")
        logger.debug("%r started", self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            await self.aclose()
        self._tg.cancel_scope.cancel()
        # The block's own exception is not the task group's business: it propagates
        # as it is, never wrapped in an exception group.
        await self._tg.__aexit__(None, None, None)
        return None

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` started: no more leases."""
        return self._closing

    async def aclose(self) -> None:
        """Stop lending, let leases come back (``close_grace`` s), then close everything.

        Queued callers get :class:`PoolClosed`. Idle associations are released at once;
        those still lent after the grace are aborted. Returns when every association
        is closed (releases are bounded by the ACSE timeout). Concurrent calls wait
        for the first one; a call that was cancelled is completed by the next (leaving
        the ``async with`` block makes one, shielded).
        """
        if not self._started:
            self._started = self._closing = True
            return
        self._closing = True
        async with self._close_lock:
            if not self._shut:
                await self._shut_down()
                logger.debug("%r closed", self)
                self._shut = True

    async def _shut_down(self) -> None:
        """The steps of :meth:`aclose`; each may be repeated after an interruption."""
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.grant = _CLOSED
            waiter.event.set()
        for entry in self._entries:
            if entry.state == "open" and entry.leases == 0:
                self._close_entry(entry)
        with anyio.move_on_after(self.close_grace):
            while any(entry.leases for entry in self._entries):
                await self._wait_change()
        for entry in self._entries:
            if entry.state == "open":
                logger.warning(
                    "%r: association #%d still lent after %s s; aborting it",
                    self,
                    entry.assoc.id if entry.assoc is not None else 0,
                    self.close_grace,
                )
                self._close_entry(entry, abort=True)
        acse = (self.timeouts or self.ae.timeouts()).acse
        with anyio.move_on_after(math.inf if acse is None else acse + 1.0):
            while self._entries:
                await self._wait_change()

    # ------------------------------------------------------------------ information

    @property
    def statistics(self) -> PoolStatistics:
        """Counts of the pool's associations and leases right now, and totals."""
        entries = self._entries
        opened = [e for e in entries if e.state == "open"]
        return PoolStatistics(
            max_size=self.max_size,
            size=len(entries),
            connecting=sum(1 for e in entries if e.state == "connecting"),
            open=len(opened),
            idle=sum(1 for e in opened if not e.leases),
            in_use=sum(1 for e in opened if e.leases),
            closing=sum(1 for e in entries if e.state == "closing"),
            leases=sum(e.leases for e in entries if e.state != "connecting"),
            waiting=len(self._waiters),
            created=self._created,
            reused=self._reused,
            discarded=self._discarded,
            expired=self._expired,
            checks=self._checks,
        )

    # ------------------------------------------------------------------ leasing

    @asynccontextmanager
    async def acquire(
        self, *, exclusive: bool = False, timeout: float | None = None
    ) -> AsyncIterator[Association]:
        """Lend an association for the block: ``async with pool.acquire() as assoc:``.

        Waits (first come, first served) while all ``max_size`` are busy, at most
        ``timeout`` seconds (None: the pool's ``acquire_timeout``), then raises
        :class:`PoolTimeout`. ``exclusive`` matters only with ``max_shared > 1``: no
        other lease shares the association meanwhile (needed for C-GET). Do not release
        or abort the association yourself; leave iterators of C-FIND/C-GET/C-MOVE with
        ``async with`` or ``aclose()``, or the association is discarded.
        """
        lease = await self._lease(exclusive, timeout)
        try:
            yield lease.assoc
        except BaseException as exc:
            lease.give_back(exc)
            raise
        lease.give_back(None)

    async def _lease(
        self, exclusive: bool, timeout: float | None, *, front: bool = False
    ) -> _Lease:
        """Wait for a place, open or check its association, and lend it."""
        if self._tg is None:
            raise RuntimeError("enter the AssociationPool with 'async with' before use")
        limit = self.acquire_timeout if timeout is None else timeout
        deadline = math.inf if limit is None else anyio.current_time() + limit
        while True:
            entry = await self._wait_for_entry(exclusive, deadline, limit, front)
            if entry.assoc is None:
                lease = await self._open(entry, exclusive)
                if self._closing:
                    lease.give_back(None)
                    raise PoolClosed(f"{self!r} closed while the association was being opened")
                return lease
            lease = _Lease(self, entry, exclusive, reused=True)
            if await self._healthy(lease):
                self._reused += 1
                return lease
            front = True  # served already: keep the place at the head of the queue

    async def _wait_for_entry(
        self, exclusive: bool, deadline: float, limit: float | None, front: bool
    ) -> _Entry:
        if self._closing:
            raise PoolClosed(f"{self!r} is closed")
        waiter = _Waiter(exclusive)
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self._dispatch()
        if waiter.grant is None:
            try:
                with anyio.move_on_after(deadline - anyio.current_time()):
                    await waiter.event.wait()
            except BaseException:
                self._withdraw(waiter)
                raise
        grant = waiter.grant
        if grant is None:
            self._withdraw(waiter)
            stats = self.statistics
            raise PoolTimeout(
                f"no association to {self.called_ae_title} at {self.host}:{self.port} became free "
                f"within {limit} s (all {self.max_size} busy: {stats.in_use} in use, "
                f"{stats.connecting} opening, {stats.closing} closing; "
                f"{stats.waiting} other callers waiting)"
            )
        if isinstance(grant, _Closed):
            raise PoolClosed(f"{self!r} closed while waiting for an association")
        return grant

    def _withdraw(self, waiter: _Waiter) -> None:
        """A queued caller gives up (timeout, cancellation): undo any grant it got."""
        grant = waiter.grant
        if grant is None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return
        waiter.grant = None
        if isinstance(grant, _Entry):
            grant.leases -= 1
            if waiter.exclusive:
                grant.exclusive = False
            if grant.assoc is None:
                self._drop(grant)  # a place reserved for a new association
            else:
                self._settle(grant)

    def _dispatch(self) -> None:
        """Serve queued callers, in order, while associations or places are free.

        When sharing, callers that the associations being opened will likely take
        (``max_shared`` each) wait for them rather than open more; if the peer accepts
        a smaller window, the next dispatch opens more then.
        """
        room = 0
        if self.max_shared > 1:
            room = sum(self.max_shared - e.leases for e in self._entries if e.state == "connecting")
        index = 0
        while index < len(self._waiters):
            waiter = self._waiters[index]
            entry = self._pick(waiter.exclusive)
            if entry is None:
                if not waiter.exclusive and room > 0:
                    room -= 1  # served when an association being opened is open
                    index += 1
                    continue
                if len(self._entries) >= self.max_size:
                    return  # first come, first served: nobody overtakes this caller
                entry = _Entry()
                self._entries.append(entry)
                if not waiter.exclusive:
                    room += self.max_shared - 1
            entry.leases += 1
            if waiter.exclusive:
                entry.exclusive = True
            del self._waiters[index]
            waiter.grant = entry
            waiter.event.set()

    def _pick(self, exclusive: bool) -> _Entry | None:
        """The open association to lend next: the busiest that has room (so the others
        can idle out), the most recently used among equals; None if none has room."""
        best: _Entry | None = None
        for entry in self._entries:
            if entry.state != "open" or entry.exclusive or entry.discarded:
                continue
            assoc = entry.assoc
            assert assoc is not None
            if not assoc.is_established:
                if not entry.leases:
                    self._discard(entry, "it is no longer established")
                continue
            if entry.leases >= (1 if exclusive else entry.capacity):
                continue
            if best is None or (entry.leases, entry.idle_since) > (best.leases, best.idle_since):
                best = entry
        return best

    async def _open(self, entry: _Entry, exclusive: bool) -> _Lease:
        """Open the association of a reserved place; on failure the place is freed."""
        assert self._tg is not None
        try:
            await self._tg.start(self._keep, entry, name=f"pool {self._label} association")
        except BaseException as exc:
            if entry.state == "open":
                # Opened, but the caller was cancelled on the way out: keep it for others.
                _Lease(self, entry, exclusive, reused=False).give_back(exc)
            else:
                self._drop(entry)  # (the keeper task has ended)
            if isinstance(exc, Exception):
                logger.info(
                    "%r: could not open an association to %s at %s:%d: %s",
                    self,
                    self.called_ae_title,
                    self.host,
                    self.port,
                    exc,
                )
            raise
        return _Lease(self, entry, exclusive, reused=False)

    async def _healthy(self, lease: _Lease) -> bool:
        """C-ECHO an association idle for ``check_after`` s; False (and discarded) if
        it fails. Associations in use by others, or without Verification, pass."""
        entry = lease.entry
        if (
            self.check_after is None
            or entry.leases > 1
            or anyio.current_time() - entry.idle_since < self.check_after
            or not _accepts_verification(lease.assoc)
        ):
            return True
        self._checks += 1
        try:
            await lease.assoc.echo(timeout=self.check_timeout)
        except Exception as exc:
            logger.warning(
                "%r: association #%d failed its health check (%s); opening another",
                self,
                lease.assoc.id,
                exc,
            )
            self._discard(entry, f"health check failed: {exc}")
            lease.give_back(exc)
            return False
        except BaseException as exc:
            lease.give_back(exc)
            raise
        return True

    def _give_back(self, lease: _Lease, error: BaseException | None) -> None:
        """A lease ends: keep the association for others or discard it."""
        entry = lease.entry
        entry.leases -= 1
        if lease.exclusive:
            entry.exclusive = False
        assoc = entry.assoc
        if entry.state == "open" and assoc is not None:
            if not assoc.is_established:
                self._discard(entry, "it is no longer established")
            elif _fatal(error):
                self._discard(entry, f"a lease ended with {type(error).__name__}: {error}")
            elif not entry.leases and _outstanding(assoc):
                self._discard(entry, "a lease ended with an operation still outstanding")
        self._settle(entry)

    def _settle(self, entry: _Entry) -> None:
        """After a lease count change: close what must close, serve who waits."""
        if not entry.leases:
            entry.idle_since = anyio.current_time()
            if entry.state == "open" and (entry.discarded or self._closing):
                self._close_entry(entry, abort=entry.discarded)
        self._changed()
        self._dispatch()

    def _discard(self, entry: _Entry, reason: str) -> None:
        """Never lend ``entry`` again; abort it as soon as nobody uses it."""
        if not entry.discarded:
            entry.discarded = True
            self._discarded += 1
            logger.info(
                "%r: discarding association #%d: %s",
                self,
                entry.assoc.id if entry.assoc is not None else 0,
                reason,
            )
        if not entry.leases and entry.state == "open":
            self._close_entry(entry, abort=True)

    def _close_entry(self, entry: _Entry, *, abort: bool = False) -> None:
        """Ask the keeper task to release (or abort) the association."""
        if entry.state in ("closing", "closed") and not abort:
            return
        if entry.state != "closed":
            entry.state = "closing"
        entry.abort = entry.abort or abort
        entry.close.set()

    def _drop(self, entry: _Entry) -> None:
        """The place is free: its association is closed (or was never opened)."""
        entry.state = "closed"
        if entry in self._entries:
            self._entries.remove(entry)
            self._changed()
            self._dispatch()

    def _changed(self) -> None:
        """Wake whoever waits for a change (idle timer, aclose)."""
        self._change.set()
        self._change = anyio.Event()

    async def _wait_change(self) -> None:
        await self._change.wait()

    # ------------------------------------------------------------------ background

    async def _keep(
        self, entry: _Entry, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold one association open until asked to close it, or the peer ends it."""
        started = False
        try:
            async with self.ae.associate(
                self.host,
                self.port,
                called_ae_title=self.called_ae_title,
                contexts=self.contexts,
                user_identity=self.user_identity,
                operations_window=self.operations_window,
                extended_negotiation=self.extended_negotiation,
                common_extended_negotiation=self.common_extended_negotiation,
                timeouts=self.timeouts,
                ssl_context=self.ssl_context,
                server_hostname=self.server_hostname,
            ) as assoc:
                entry.assoc = assoc
                entry.capacity = _window_capacity(assoc, self.max_shared)
                entry.state = "open"
                self._created += 1
                logger.info(
                    "%r: opened association #%d (takes %d lease(s) at once)",
                    self,
                    assoc.id,
                    entry.capacity,
                )
                started = True
                task_status.started()
                self._dispatch()  # a shared association may serve more callers
                await self._hold(entry, assoc)
                if entry.abort and assoc.is_established:
                    await assoc.abort()
                elif assoc.is_established:
                    logger.debug("%r: releasing association #%d", self, assoc.id)
        except Exception as exc:
            if not started:
                raise
            assert entry.assoc is not None
            logger.info("%r: association #%d ended with an error: %s", self, entry.assoc.id, exc)
        finally:
            self._drop(entry)

    async def _hold(self, entry: _Entry, assoc: Association) -> None:
        """Wait until the pool closes ``entry`` or the association ends by itself."""
        async with anyio.create_task_group() as watch:

            async def ended_by_peer() -> None:
                await assoc.wait_closed()
                if entry.state == "open":
                    why = assoc.abort_reason or "released or closed by the peer"
                    entry.state = "closing"
                    self._discard(entry, f"the association ended: {why}")
                watch.cancel_scope.cancel()

            watch.start_soon(ended_by_peer)
            await entry.close.wait()
            watch.cancel_scope.cancel()

    async def _expire_idle(self) -> None:
        """Release associations idle for ``idle_timeout`` seconds (background task)."""
        assert self.idle_timeout is not None
        while not self._closing:
            now = anyio.current_time()
            wake = math.inf
            for entry in list(self._entries):
                if entry.state != "open" or entry.leases:
                    continue
                expires = entry.idle_since + self.idle_timeout
                if expires <= now:
                    self._expired += 1
                    logger.info(
                        "%r: releasing association #%d, idle for %s s",
                        self,
                        entry.assoc.id if entry.assoc is not None else 0,
                        self.idle_timeout,
                    )
                    self._close_entry(entry)
                else:
                    wake = min(wake, expires)
            with anyio.move_on_after(wake - now):
                await self._wait_change()

    # ------------------------------------------------------------------ operations

    async def run(
        self,
        operation: Callable[[Association], Awaitable[R]],
        *,
        exclusive: bool = False,
        retry: bool = False,
        acquire_timeout: float | None = None,
    ) -> R:
        """``await operation(assoc)`` on a lent association and return its result.

        For any single-response operation, e.g.
        ``await pool.run(lambda a: a.n_get(sop_class, instance))``. With ``retry``
        (and the pool's ``retry_stale``) an association-level failure on a *reused*
        association runs ``operation`` once more on another: only for operations that
        are safe to repeat. ``acquire_timeout`` overrides the pool's for this call.
        """
        retried = False
        while True:
            lease = await self._lease(exclusive, acquire_timeout, front=retried)
            try:
                result = await operation(lease.assoc)
            except BaseException as exc:
                lease.give_back(exc)
                if retry and not retried and self._stale(lease, exc):
                    retried = True
                    logger.info("%r: reused association failed (%s); retrying once", self, exc)
                    continue
                raise
            lease.give_back(None)
            return result

    def _stale(self, lease: _Lease, error: BaseException) -> bool:
        """Whether ``error`` says a reused association was dead: worth one retry."""
        return (
            self.retry_stale
            and lease.reused
            and isinstance(error, AssociationError)
            and not isinstance(error, AssociationRejected)
        )

    async def echo(self, *, timeout: float | None = None) -> Status:
        """C-ECHO on a lent association (retried once on a stale one)."""
        return await self.run(lambda assoc: assoc.echo(timeout=timeout), retry=True)

    async def store(
        self,
        dataset: StoreSource,
        *,
        priority: int = Priority.MEDIUM,
        move_originator_ae_title: str | None = None,
        move_originator_message_id: int | None = None,
        timeout: float | None = None,
    ) -> Status:
        """C-STORE one instance on a lent association; see :meth:`Association.store`.

        Retried once on another association when a reused one proved dead (with
        ``retry_stale``); storing an instance twice is harmless, losing it is not.
        """
        return await self.run(
            lambda assoc: assoc.store(
                dataset,
                priority=priority,
                move_originator_ae_title=move_originator_ae_title,
                move_originator_message_id=move_originator_message_id,
                timeout=timeout,
            ),
            retry=True,
        )

    def find(
        self,
        identifier: Dataset,
        *,
        model: str = sop_classes.STUDY_ROOT_FIND,
        priority: int = 0,
    ) -> PooledResponses[FindResponse]:
        """C-FIND on a lent association: ``async for status, match in pool.find(q):``.

        The lease ends with the final response, or when the iterator is closed
        (``async with``/``aclose()``: C-CANCEL first if still running).
        """
        return PooledResponses(
            self,
            lambda assoc: assoc.find(identifier, model=model, priority=priority),
            exclusive=False,
        )

    def move(
        self,
        identifier: Dataset,
        destination: str,
        *,
        model: str = sop_classes.STUDY_ROOT_MOVE,
        priority: int = 0,
    ) -> PooledResponses[RetrieveResponse]:
        """C-MOVE on a lent association; iterate over the progress reports."""
        return PooledResponses(
            self,
            lambda assoc: assoc.move(identifier, destination, model=model, priority=priority),
            exclusive=False,
        )

    def get(
        self,
        identifier: Dataset,
        *,
        model: str = sop_classes.STUDY_ROOT_GET,
        priority: int = 0,
        on_store: StoreHandler | None = None,
    ) -> PooledResponses[RetrieveResponse]:
        """C-GET on an exclusively lent association; see :meth:`Association.get`.

        The pool's ``contexts`` must propose the storage contexts with the SCP role
        (:func:`~aionetdicom.services.query_retrieve.retrieve_contexts`).
        """
        return PooledResponses(
            self,
            lambda assoc: assoc.get(identifier, model=model, priority=priority, on_store=on_store),
            exclusive=True,
        )

    def get_instances(
        self,
        identifier: Dataset,
        *,
        model: str = sop_classes.STUDY_ROOT_GET,
        priority: int = 0,
    ) -> AbstractAsyncContextManager[ReceivedInstances]:
        """C-GET with the instances as an async iterator, on an exclusively lent
        association; see :meth:`Association.get_instances`."""
        return self._get_instances(identifier, model, priority)

    @asynccontextmanager
    async def _get_instances(
        self, identifier: Dataset, model: str, priority: int
    ) -> AsyncIterator[ReceivedInstances]:
        async with (
            self.acquire(exclusive=True) as assoc,
            assoc.get_instances(identifier, model=model, priority=priority) as instances,
        ):
            yield instances


class PooledResponses(Generic[T]):
    """The responses of one C-FIND, C-GET or C-MOVE run on a lent association.

    An async iterator (and async context manager) like
    :class:`~aionetdicom.operation.PendingResponses`: the request goes out on first
    use; the lease ends after the final response, or on ``aclose()``/leaving the
    ``async with`` block, which send C-CANCEL and wait for the final response first.
    If a reused association proves dead before the first response, the request is
    sent once more on another (the pool's ``retry_stale``); sub-operations of a C-GET or
    C-MOVE the peer did before it died may then be done twice.
    """

    def __init__(
        self,
        pool: AssociationPool,
        start: Callable[[Association], PendingResponses[T]],
        *,
        exclusive: bool,
    ) -> None:
        self._pool = pool
        self._start = start
        self._exclusive = exclusive
        self._lease: _Lease | None = None
        self._operation: PendingResponses[T] | None = None
        self._done = False
        self._received = False
        self._retried = False

    def __repr__(self) -> str:
        state = "done" if self._done else "open" if self._lease is not None else "not started"
        return f"<PooledResponses {state}>"

    @property
    def assoc(self) -> Association | None:
        """The lent association while the operation runs."""
        return None if self._lease is None or self._lease.returned else self._lease.assoc

    async def _begin(self) -> PendingResponses[T]:
        """Lease an association and send the request (once)."""
        if self._operation is None:
            lease = await self._pool._lease(self._exclusive, None, front=self._retried)
            self._lease = lease
            operation = self._start(lease.assoc)
            self._operation = operation
            await operation.__aenter__()
        return self._operation

    def _end(self, error: BaseException | None) -> None:
        self._done = True
        if self._lease is not None:
            self._lease.give_back(error)

    def _retry(self, error: BaseException) -> bool:
        """After a failure: start over on another association if the old one was stale."""
        lease = self._lease
        if self._received or self._retried or lease is None or not self._pool._stale(lease, error):
            return False
        logger.info("%r: reused association failed (%s); retrying once", self._pool, error)
        self._retried = True
        self._lease = None
        self._operation = None
        self._done = False
        return True

    async def __aenter__(self) -> PooledResponses[T]:
        while True:
            try:
                await self._begin()
            except BaseException as exc:
                self._end(exc)
                if self._retry(exc):
                    continue
                raise
            return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> PooledResponses[T]:
        return self

    async def __anext__(self) -> T:
        while not self._done:
            try:
                operation = await self._begin()
                item = await operation.__anext__()
            except StopAsyncIteration:
                self._end(None)
                raise
            except BaseException as exc:
                self._end(exc)
                if self._retry(exc):
                    continue
                raise
            self._received = True
            if operation.done:
                self._end(None)
            return item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop early (C-CANCEL, wait for the final response) and end the lease."""
        if self._done:
            return
        operation = self._operation
        try:
            if operation is not None:
                await operation.aclose()
        except BaseException as exc:
            self._end(exc)
            raise
        self._end(None)

    def __del__(self) -> None:
        # Dropped unfinished (a ``break`` without aclose): the association still has
        # the operation outstanding, so the pool discards it.
        lease = self._lease
        if lease is not None and not lease.returned:
            with suppress(Exception):  # no event loop any more: nothing to give back to
                lease.give_back(None)
