"""A DICOM router: receive instances with C-STORE, forward each to a destination AE, and
lose none of them, whether the destination is down or the router is restarted or killed.

Run it (``--show-queue`` prints what is waiting, then exits)::

    python examples/router.py 11112 --spool /var/spool/router \\
        --destination PACS@pacs.example:104
    python examples/router.py 11112 --spool ./spool --destination PACS@10.0.0.5:2762 \\
        --tls --tls-ca ca.pem --tls-cert router.pem --tls-key router.key
    python examples/router.py --spool ./spool --show-queue

How it keeps instances safe (the spool folder holds everything)::

    spool/queue.sqlite3            the queue: one row per instance to forward
    spool/instances/<UID>.dcm      the instances waiting to be forwarded
    spool/dead-letter/<UID>.dcm    instances the destination refused for good,
    spool/dead-letter/<UID>.json   each with why, when and what the destination said
    spool/lock                     locked by the router using the spool (one at a time)

* **Acknowledged only when durable.** A received data set is streamed into
  ``instances/`` (temporary file, fsync, rename, fsync of the folder: ``save_to``), then
  its row is committed to SQLite (WAL journal, ``synchronous=FULL``: the commit is on
  disk when it returns, done in a worker thread). Only then does the sender get Success;
  if the commit fails it gets 0xA700 and sends again later.
* **Removed only when delivered.** Workers send queued instances through
  :class:`~aionetdicom.AssociationPool` (associations reused across instances). A file
  leaves the spool only after the destination answered Success or Warning; then the
  file is unlinked and its row deleted, in that order.
* **Retries.** A destination that cannot be reached (refused, timed out, aborted,
  rejected) pauses all forwarding with exponential backoff (``--retry-base`` doubling
  up to ``--retry-cap`` seconds, with jitter) and is probed again then; each instance
  that failed also waits its own backoff, so one that breaks every association cannot
  hog the queue. Once the destination answers, everything queued is due at once.
  Transient refusals (0xA7xx out of resources, 0x0213, and ``--retry-status`` codes)
  are retried per instance with the same backoff. 0x0111 (duplicate SOP instance)
  counts as delivered: the destination has it already.
* **Associations.** Instances of one SOP class and transfer syntax share a pool of up
  to ``--concurrency`` associations (one association may propose only 128 presentation
  contexts, fewer than there are storage SOP classes). A destination should accept
  several associations at once (DCMTK's storescp: ``--fork``); one that serves a single
  association at a time still gets everything, only slower: a pool releases an
  association after ``--idle-timeout`` seconds without work, letting the next one in.
* **Dead letters.** Any other failure status (0xA9xx, 0x01xx, 0xCxxx, ...) or a SOP
  class or transfer syntax the destination does not accept is permanent: the instance
  moves to ``dead-letter/`` with a JSON note, and an ERROR line is logged. (To try
  them again once fixed: ``python examples/store.py ... spool/dead-letter``.)
* **Restart and crash recovery.** On start the queue resumes where it was. What a kill
  can leave half done is repaired: temporary ``.part`` files (never acknowledged) are
  removed; a file without a row (killed between rename and commit, so never
  acknowledged either) is queued anyway; a row without a file (killed between unlink
  and delete, so already delivered) is dropped. Delivery is therefore *at least once*:
  an instance whose Success was lost in a crash is sent again, and a DICOM destination
  stores a second copy of a SOP Instance UID over the first.
* **Same instance again.** Each row has a generation, increased when the same SOP
  Instance UID is received again; a worker finishing an older generation leaves the
  row alone, so the newer copy is forwarded too. A per-UID lock keeps receiving and
  removing the same UID from interleaving.

SIGINT/SIGTERM stop it gracefully (running associations get ``--grace`` seconds; an
instance being forwarded stays queued). Exit status: 0 after a signal, 1 when it cannot
listen or open the spool, 2 for bad options. Runs on asyncio or trio (``--backend``).
"""

from __future__ import annotations

import argparse
import enum
import fcntl
import functools
import json
import logging
import os
import random
import signal
import sqlite3
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import _common
import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aionetdicom import (
    AE,
    AssociationPool,
    DicomNetworkError,
    EchoRequest,
    NegotiationError,
    Status,
    StoreRequest,
    sop_classes,
)
from aionetdicom.datasets import DatasetError, read_file_meta
from aionetdicom.services.storage import plan_contexts

log = logging.getLogger("router")
T = TypeVar("T")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DUPLICATE_SOP_INSTANCE = 0x0111
#: Failure statuses worth retrying (besides the A7xx "out of resources" range):
#: 0x0213 resource limitation, 0xFE00 cancelled.
TRANSIENT_STATUSES = frozenset({0x0213, 0xFE00})

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (next_attempt, received);
"""


# ---------------------------------------------------------------------- values


class Outcome(enum.Enum):
    """What to do with an instance after the destination answered."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead-letter"


def classify(status: Status, retry_statuses: frozenset[int] = frozenset()) -> Outcome:
    """Success, Warning and 0x0111 (the destination has that SOP instance already, e.g.
    sent again after a crash): delivered; A7xx, 0x0213, 0xFE00 and ``retry_statuses``:
    try again later; every other failure (A9xx, 01xx, Cxxx, unknown codes): dead letter."""
    code = int(status)
    if status.is_success or status.is_warning or code == DUPLICATE_SOP_INSTANCE:
        return Outcome.DELIVERED
    if code & 0xFF00 == OUT_OF_RESOURCES or code in TRANSIENT_STATUSES or code in retry_statuses:
        return Outcome.RETRY
    return Outcome.DEAD


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``
    capped at ``cap``, the upper half of it at random so retries do not move in step."""
    delay = min(cap, base * 2.0 ** min(attempt - 1, 32))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True)
class Destination:
    """The AE instances are forwarded to."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT`` (an IPv6 host in brackets); argparse type."""
        title, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and title and host):
            raise argparse.ArgumentTypeError(f"{text!r} is not AET@HOST:PORT")
        return cls(_common.ae_title(title), host.strip("[]"), _common.port_number(port))


@dataclass(frozen=True)
class Item:
    """One queued instance, as its row says."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    calling_ae: str
    generation: int
    attempts: int


@dataclass(frozen=True)
class Recovery:
    """What opening the spool found and repaired."""

    queued: int
    partial_files_removed: int
    files_requeued: int
    rows_dropped: int
    unreadable: int


def _fsync_folder(folder: Path) -> None:
    """Make renames and unlinks in ``folder`` durable (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- the spool


class Spool:
    """The persistent queue: instance files in ``instances/``, one SQLite row each.

    The ``_name`` methods are blocking and run in a worker thread, one at a time (the
    connection is shared, guarded by an anyio lock); the public ones await them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instances = root / "instances"
        self.dead_letters = root / "dead-letter"
        self.database = root / "queue.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._owner: int | None = None  # the open spool/lock file, locked while we run

    def path_of(self, sop_instance_uid: str) -> Path:
        """Where a queued instance's file is (``save_to`` names it so)."""
        return self.instances / f"{sop_instance_uid}.dcm"

    async def _call(self, function: Callable[[], T]) -> T:
        async with self._lock:
            return await anyio.to_thread.run_sync(function)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the spool is not open")
        return self._db

    # -- opening and recovery

    async def open(self) -> Recovery:
        """Create or open the spool, repair what a crash left, resume the queue."""
        return await self._call(self._open)

    def _open(self) -> Recovery:
        self.instances.mkdir(parents=True, exist_ok=True)
        self.dead_letters.mkdir(exist_ok=True)
        # One router per spool: a second one would repair (delete) the first one's
        # files in progress. The kernel drops the lock when the process ends, however.
        self._owner = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(f"{self.root} is in use by another router") from None
        db = sqlite3.connect(self.database, check_same_thread=False, timeout=30.0)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        db.executescript(SCHEMA)
        _fsync_folder(self.root)
        # Temporary files of receptions cut short: never acknowledged, so not ours to keep.
        partial = 0
        for path in [*self.instances.glob(".*.part"), *self.dead_letters.glob(".*.part")]:
            path.unlink(missing_ok=True)
            partial += 1
        files = {path.name[: -len(".dcm")]: path for path in self.instances.glob("*.dcm")}
        rows = {uid for (uid,) in db.execute("SELECT sop_instance_uid FROM queue")}
        dropped = requeued = unreadable = 0
        with db:
            for uid in rows - files.keys():  # unlinked after delivery, row not yet deleted
                db.execute("DELETE FROM queue WHERE sop_instance_uid = ?", (uid,))
                dropped += 1
            for uid in files.keys() - rows:  # renamed into place, row not yet committed
                try:
                    meta = read_file_meta(files[uid])
                except (DatasetError, OSError) as exc:
                    log.error("cannot read spooled %s (%s); moving it aside", files[uid], exc)
                    os.replace(files[uid], self.dead_letters / files[uid].name)
                    unreadable += 1
                    continue
                db.execute(
                    "INSERT INTO queue (sop_instance_uid, sop_class_uid, transfer_syntax, "
                    "calling_ae, received) VALUES (?, ?, ?, ?, ?)",
                    (uid, meta.sop_class_uid, meta.transfer_syntax, "", time.time()),
                )
                requeued += 1
            db.execute("UPDATE queue SET next_attempt = 0")  # a restart retries everything
        (queued,) = db.execute("SELECT COUNT(*) FROM queue").fetchone()
        return Recovery(queued, partial, requeued, dropped, unreadable)

    async def close(self) -> None:
        """Close the database (everything is committed already) and unlock the spool."""
        db, self._db = self._db, None
        if db is not None:
            await self._call(db.close)
        owner, self._owner = self._owner, None
        if owner is not None:
            os.close(owner)

    # -- receiving

    async def enqueue(
        self, sop_instance_uid: str, sop_class_uid: str, transfer_syntax: str, calling_ae: str
    ) -> None:
        """Commit the row of an instance whose file is in place (a new generation if
        the UID is queued already). Raises sqlite3.Error if it could not."""
        await self._call(
            functools.partial(
                self._enqueue, sop_instance_uid, sop_class_uid, transfer_syntax, calling_ae
            )
        )

    def _enqueue(
        self, sop_instance_uid: str, sop_class_uid: str, transfer_syntax: str, calling_ae: str
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO queue (sop_instance_uid, sop_class_uid, transfer_syntax, "
                "calling_ae, received) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (sop_instance_uid) DO UPDATE SET "
                "sop_class_uid = excluded.sop_class_uid, "
                "transfer_syntax = excluded.transfer_syntax, "
                "calling_ae = excluded.calling_ae, generation = generation + 1, "
                "attempts = 0, next_attempt = 0, last_error = NULL",
                (sop_instance_uid, sop_class_uid, transfer_syntax, calling_ae, time.time()),
            )

    # -- forwarding

    async def due(self, limit: int) -> list[Item]:
        """Up to ``limit`` instances whose next attempt is due, oldest first."""
        return await self._call(functools.partial(self._due, time.time(), limit))

    def _due(self, now: float, limit: int) -> list[Item]:
        rows = self.db.execute(
            "SELECT sop_instance_uid, sop_class_uid, transfer_syntax, calling_ae, generation, "
            "attempts FROM queue WHERE next_attempt <= ? ORDER BY next_attempt, received "
            "LIMIT ?",
            (now, limit),
        )
        return [Item(*row) for row in rows]

    async def next_due(self) -> float | None:
        """When the next instance not due yet will be (``time.time()`` scale), or None."""
        return await self._call(functools.partial(self._next_due, time.time()))

    def _next_due(self, now: float) -> float | None:
        (when,) = self.db.execute(
            "SELECT MIN(next_attempt) FROM queue WHERE next_attempt > ?", (now,)
        ).fetchone()
        return None if when is None else float(when)

    async def retry_later(self, item: Item, delay: float, error: str) -> None:
        """Count a failed attempt and schedule the next one ``delay`` seconds from now
        (unless a newer copy arrived meanwhile: that one is due at once)."""
        await self._call(functools.partial(self._retry_later, item, time.time() + delay, error))

    def _retry_later(self, item: Item, when: float, error: str) -> None:
        with self.db:
            self.db.execute(
                "UPDATE queue SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE sop_instance_uid = ? AND generation = ?",
                (when, error, item.sop_instance_uid, item.generation),
            )

    async def retry_all_now(self) -> None:
        """Make every queued instance due (the destination is back)."""
        await self._call(self._retry_all_now)

    def _retry_all_now(self) -> None:
        with self.db:
            self.db.execute("UPDATE queue SET next_attempt = 0 WHERE next_attempt > 0")

    async def delivered(self, item: Item) -> bool:
        """The destination has ``item``: unlink its file, then delete its row. False
        (and nothing removed) when a newer copy of the instance arrived meanwhile."""
        return await self._call(functools.partial(self._delivered, item))

    def _current(self, item: Item) -> bool:
        row = self.db.execute(
            "SELECT generation FROM queue WHERE sop_instance_uid = ?", (item.sop_instance_uid,)
        ).fetchone()
        return row is not None and row[0] == item.generation

    def _delivered(self, item: Item) -> bool:
        if not self._current(item):
            return False
        # File first: a crash in between leaves a row without a file, which the next
        # start knows was delivered. (The other order would send it again.)
        self.path_of(item.sop_instance_uid).unlink(missing_ok=True)
        with self.db:
            self.db.execute(
                "DELETE FROM queue WHERE sop_instance_uid = ? AND generation = ?",
                (item.sop_instance_uid, item.generation),
            )
        return True

    async def dead_letter(self, item: Item, reason: str, destination: str) -> Path | None:
        """Move ``item`` to ``dead-letter/`` with a JSON note saying why; return its new
        path (None when a newer copy arrived meanwhile: that one gets its own try)."""
        return await self._call(functools.partial(self._dead_letter, item, reason, destination))

    def _dead_letter(self, item: Item, reason: str, destination: str) -> Path | None:
        if not self._current(item):
            return None
        uid = item.sop_instance_uid
        note = {
            "sop_instance_uid": uid,
            "sop_class_uid": item.sop_class_uid,
            "transfer_syntax": item.transfer_syntax,
            "calling_ae": item.calling_ae,
            "destination": destination,
            "reason": reason,
            "attempts": item.attempts + 1,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        temporary = self.dead_letters / f".{uid}.json.part"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(note, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.dead_letters / f"{uid}.json")
        target = self.dead_letters / f"{uid}.dcm"
        os.replace(self.path_of(uid), target)
        _fsync_folder(self.dead_letters)
        _fsync_folder(self.instances)
        with self.db:
            self.db.execute(
                "DELETE FROM queue WHERE sop_instance_uid = ? AND generation = ?",
                (uid, item.generation),
            )
        return target

    async def forget(self, item: Item) -> None:
        """Drop the row of an instance whose file is gone."""
        await self._call(functools.partial(self._forget, item))

    def _forget(self, item: Item) -> None:
        with self.db:
            self.db.execute(
                "DELETE FROM queue WHERE sop_instance_uid = ? AND generation = ?",
                (item.sop_instance_uid, item.generation),
            )

    async def count(self) -> int:
        """How many instances are queued."""
        return await self._call(self._count)

    def _count(self) -> int:
        (count,) = self.db.execute("SELECT COUNT(*) FROM queue").fetchone()
        return int(count)


def show_queue(root: Path) -> int:
    """Print the queue and the dead letters of the spool at ``root`` (read only)."""
    database = root / "queue.sqlite3"
    if not database.exists():
        raise _common.ExampleError(f"{root} is not a router spool (no {database.name})")
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT sop_instance_uid, sop_class_uid, calling_ae, attempts, last_error "
            "FROM queue ORDER BY received"
        ).fetchall()
    print(f"{len(rows)} instance(s) queued in {root}")
    for uid, sop_class, calling, attempts, error in rows:
        name = sop_classes.sop_class_name(sop_class)
        line = f"  {uid}  {name}  from {calling or '?'}  attempts {attempts}"
        print(line + (f"  last error: {error}" if error else ""))
    dead = sorted((root / "dead-letter").glob("*.json"))
    print(f"{len(dead)} dead letter(s)")
    for note_path in dead:
        note = json.loads(note_path.read_text(encoding="utf-8"))
        print(f"  {note['sop_instance_uid']}  {note['reason']}")
    return _common.EXIT_OK


# ---------------------------------------------------------------------- locks


class KeyedLocks:
    """One lock per SOP Instance UID in use, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the block."""
        lock, users = self._locks.get(key) or (anyio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# ---------------------------------------------------------------------- forwarding


class Forwarder:
    """Workers that forward due instances through association pools, with backoff."""

    def __init__(
        self,
        ae: AE,
        spool: Spool,
        locks: KeyedLocks,
        destination: Destination,
        *,
        ssl_context: ssl.SSLContext | None,
        concurrency: int,
        retry_base: float,
        retry_cap: float,
        retry_statuses: frozenset[int],
        idle_timeout: float,
    ) -> None:
        self.ae = ae
        self.spool = spool
        self.locks = locks
        self.destination = destination
        self.ssl_context = ssl_context
        self.concurrency = concurrency
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.retry_statuses = retry_statuses
        self.idle_timeout = idle_timeout
        self.forwarded = 0
        self._tg: TaskGroup | None = None
        # Pools by (SOP class, transfer syntax): one association proposes at most 128
        # presentation contexts, fewer than there are storage SOP classes, so each pool
        # proposes just what its instances need.
        self._pools: dict[tuple[str, str], AssociationPool] = {}
        self._pools_lock = anyio.Lock()
        self._in_flight: set[str] = set()
        self._wakeup = anyio.Event()
        self._failures = 0  # association-level failures in a row
        self._paused_until = 0.0  # anyio.current_time() before which nothing is sent

    def wake(self) -> None:
        """Something changed (a new instance, a worker free): look at the queue again."""
        self._wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Forward until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            send, receive = anyio.create_memory_object_stream[Item](0)
            async with receive:
                for _ in range(self.concurrency):
                    tg.start_soon(self._worker, receive.clone())
            task_status.started()
            await self._dispatch(send)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until :meth:`wake`."""
        with anyio.move_on_after(max(seconds, 0.0)):
            await self._wakeup.wait()

    async def _dispatch(self, send: MemoryObjectSendStream[Item]) -> None:
        """Hand due instances to free workers, oldest first; sleep while none is due."""
        async with send:
            while True:
                if self._wakeup.is_set():
                    self._wakeup = anyio.Event()
                paused = self._paused_until - anyio.current_time()
                if paused > 0:
                    await anyio.sleep(paused)  # the destination is down: probe it later
                    continue
                due = await self.spool.due(self.concurrency + len(self._in_flight))
                items = [item for item in due if item.sop_instance_uid not in self._in_flight]
                if not items:
                    when = await self.spool.next_due()
                    await self._sleep(float("inf") if when is None else when - time.time())
                    continue
                for item in items:
                    self._in_flight.add(item.sop_instance_uid)
                    await send.send(item)  # waits for a free worker
                    if self._paused_until > anyio.current_time():
                        break

    async def _worker(self, receive: MemoryObjectReceiveStream[Item]) -> None:
        async with receive:
            async for item in receive:
                try:
                    if self._paused_until > anyio.current_time():
                        continue  # went down meanwhile: stays queued, due as it was
                    await self._forward(item)
                except Exception:  # never lose the worker; the instance stays queued
                    log.exception("unexpected error forwarding %s", item.sop_instance_uid)
                    await self.spool.retry_later(item, self.retry_cap, "internal error")
                finally:
                    self._in_flight.discard(item.sop_instance_uid)
                    self.wake()

    async def _pool(self, sop_class_uid: str, transfer_syntax: str) -> AssociationPool:
        """The pool for instances of this SOP class and transfer syntax (made on demand)."""
        key = (sop_class_uid, transfer_syntax)
        async with self._pools_lock:
            pool = self._pools.get(key)
            if pool is None:
                assert self._tg is not None
                pool = await self._tg.start(self._keep_pool, key)
                self._pools[key] = pool
            return pool

    async def _keep_pool(
        self,
        key: tuple[str, str],
        *,
        task_status: TaskStatus[AssociationPool] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold one pool open (a task of its own: a pool is entered and left in one task)."""
        sop_class_uid, transfer_syntax = key
        async with AssociationPool(
            self.ae,
            self.destination.host,
            self.destination.port,
            called_ae_title=self.destination.ae_title,
            contexts=plan_contexts({sop_class_uid: [transfer_syntax]}),
            max_size=self.concurrency,
            idle_timeout=self.idle_timeout,
            close_grace=1.0,
            ssl_context=self.ssl_context,
        ) as pool:
            task_status.started(pool)
            await anyio.sleep_forever()

    async def _forward(self, item: Item) -> None:
        """Send one instance and act on the answer; never raises for DICOM trouble."""
        uid = item.sop_instance_uid
        path = self.spool.path_of(uid)
        if not await anyio.Path(path).exists():
            log.warning("queued instance %s has no file any more; dropping it", uid)
            await self.spool.forget(item)
            return
        try:
            pool = await self._pool(item.sop_class_uid, item.transfer_syntax)
            status = await pool.store(path)
        except NegotiationError as exc:
            await self._dead_letter(item, f"not accepted by the destination: {exc}")
            return
        except DatasetError as exc:
            await self._dead_letter(item, f"the spooled file cannot be read: {exc}")
            return
        except (DicomNetworkError, OSError) as exc:
            self._unreachable(exc)
            # Backoff per instance too, so one that breaks every association it is sent
            # on cannot hog the queue; a recovered destination makes them all due again.
            delay = backoff(item.attempts + 1, self.retry_base, self.retry_cap)
            await self.spool.retry_later(item, delay, f"{type(exc).__name__}: {exc}")
            return
        await self._reachable()
        outcome = classify(status, self.retry_statuses)
        what = f"0x{int(status):04X} {status.description}"
        if outcome is Outcome.DELIVERED:
            async with self.locks.hold(uid):
                removed = await self.spool.delivered(item)
            self.forwarded += 1
            newer = "" if removed else "; a newer copy arrived meanwhile and stays queued"
            log.info("forwarded %s to %s (%s)%s", uid, self.destination.ae_title, what, newer)
        elif outcome is Outcome.RETRY:
            delay = backoff(item.attempts + 1, self.retry_base, self.retry_cap)
            await self.spool.retry_later(item, delay, f"destination answered {what}")
            log.warning("destination answered %s for %s; retrying in %.1f s", what, uid, delay)
        else:
            await self._dead_letter(item, f"destination answered {what}")

    async def _dead_letter(self, item: Item, reason: str) -> None:
        async with self.locks.hold(item.sop_instance_uid):
            path = await self.spool.dead_letter(item, reason, str(self.destination))
        if path is not None:
            log.error(
                "dead letter: %s (%s from %s) not forwarded to %s: %s; moved to %s",
                item.sop_instance_uid,
                sop_classes.sop_class_name(item.sop_class_uid),
                item.calling_ae or "?",
                self.destination,
                reason,
                path,
            )

    def _unreachable(self, error: BaseException) -> None:
        """An association to the destination failed: pause forwarding, back off."""
        self._failures += 1
        delay = backoff(self._failures, self.retry_base, self.retry_cap)
        self._paused_until = max(self._paused_until, anyio.current_time() + delay)
        level = logging.WARNING if self._failures == 1 else logging.INFO
        log.log(
            level,
            "destination %s unreachable (%s; %d failure(s) in a row); instances stay "
            "queued, next try in %.1f s",
            self.destination,
            error,
            self._failures,
            delay,
        )

    async def _reachable(self) -> None:
        """The destination answered: after an outage, make everything due again."""
        if self._failures:
            log.warning(
                "destination %s reachable again after %d failure(s); resuming",
                self.destination,
                self._failures,
            )
            self._failures = 0
            self._paused_until = 0.0
            await self.spool.retry_all_now()
            self.wake()


# ---------------------------------------------------------------------- receiving


def make_ae(
    args: argparse.Namespace,
    spool: Spool,
    locks: KeyedLocks,
    ssl_context: ssl.SSLContext | None,
) -> tuple[AE, Forwarder]:
    """The router's AE (Storage and Verification SCP, and SCU of the pools) and its
    forwarder (over TLS with ``ssl_context``)."""
    ae = AE(args.ae_title, maximum_associations=args.max_associations)
    ae.add_storage_contexts(sop_classes.STORAGE_SOP_CLASSES, _common.STORAGE_TRANSFER_SYNTAXES)
    forwarder = Forwarder(
        ae,
        spool,
        locks,
        args.destination,
        ssl_context=ssl_context,
        concurrency=args.concurrency,
        retry_base=args.retry_base,
        retry_cap=args.retry_cap,
        retry_statuses=frozenset(args.retry_status),
        idle_timeout=args.idle_timeout,
    )

    @ae.on_echo
    async def on_echo(request: EchoRequest) -> int:
        log.info("C-ECHO from %s", request.assoc.peer_ae_title)
        return SUCCESS

    @ae.on_store(streaming=True)
    async def on_store(request: StoreRequest) -> int:
        uid = request.sop_instance_uid
        calling = request.assoc.peer_ae_title
        async with locks.hold(uid):
            # Streamed to a temporary file, fsynced, renamed, folder fsynced. Raises for
            # a UID unfit as a file name (answered 0x0117), UIDs that disagree with the
            # command (0xA900) or a full disk (0xA700): nothing is acknowledged then.
            await request.save_to(spool.instances)
            try:
                await spool.enqueue(uid, request.sop_class_uid, request.transfer_syntax, calling)
            except sqlite3.Error as exc:
                # Not acknowledged: the sender keeps it and retries. The file stays; if
                # nobody sends it again, the next start queues it anyway.
                log.error("cannot queue %s (%s); answering 0xA700", uid, exc)
                return OUT_OF_RESOURCES
        forwarder.wake()
        log.info("queued %s from %s", uid, calling)
        return SUCCESS

    return ae, forwarder


async def stop_on_signal(
    stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` on SIGINT or SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.warning("%s: shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def serve(args: argparse.Namespace) -> int:
    """Open the spool, forward, listen until a signal; return the exit status."""
    ssl_context = _common.client_tls(args)
    spool = Spool(args.spool)
    try:
        recovery = await spool.open()
    except (OSError, sqlite3.Error) as exc:
        await spool.close()
        raise _common.ExampleError(f"cannot open the spool {args.spool}: {exc}") from None
    if recovery.partial_files_removed or recovery.files_requeued or recovery.rows_dropped:
        log.warning(
            "recovered the spool: removed %d partial file(s), queued %d unqueued file(s) "
            "(%d unreadable ones moved to dead-letter/), dropped %d row(s) of instances "
            "already delivered",
            recovery.partial_files_removed,
            recovery.files_requeued,
            recovery.unreadable,
            recovery.rows_dropped,
        )
    locks = KeyedLocks()
    ae, forwarder = make_ae(args, spool, locks, ssl_context)
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(stop_on_signal, stop)
            await tg.start(forwarder.run)
            async with AsyncExitStack() as stack:
                try:
                    server = await stack.enter_async_context(
                        ae.serve(args.bind, args.port, shutdown_grace=args.grace)
                    )
                except OSError as exc:
                    raise _common.ExampleError(
                        f"cannot listen on {args.bind}:{args.port}: {exc}"
                    ) from None
                host, port = server.addresses[0]
                print(
                    f"router listening on {host}:{port} as {ae.ae_title}, forwarding to "
                    f"{args.destination}{' (TLS)' if forwarder.ssl_context else ''}; "
                    f"{recovery.queued} instance(s) queued",
                    flush=True,
                )
                await stop.wait()
                await server.aclose()  # running associations finish (up to --grace)
            tg.cancel_scope.cancel()  # in-flight forwards are aborted; they stay queued
        queued = await spool.count()
    finally:
        with anyio.CancelScope(shield=True):
            await spool.close()
    print(f"router stopped: {forwarder.forwarded} forwarded, {queued} still queued", flush=True)
    return _common.EXIT_OK


# ---------------------------------------------------------------------- command line


def status_code(text: str) -> int:
    """argparse type: a DIMSE status in hex (``A700``, ``0xC001``)."""
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal status") from None
    if not 0 < value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 16-bit failure status")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line: port, spool, destination, retries, TLS to the destination."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("port", type=_common.port_number, nargs="?", help="TCP port to listen on")
    parser.add_argument("--spool", type=Path, required=True, help="spool folder (queue, files)")
    parser.add_argument(
        "--destination",
        type=Destination.parse,
        metavar="AET@HOST:PORT",
        help="where to forward instances to",
    )
    parser.add_argument(
        "--show-queue", action="store_true", help="print the queue and dead letters, then exit"
    )
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument(
        "-aet", "--ae-title", type=_common.ae_title, default="ROUTER", help="our AE title"
    )
    parser.add_argument(
        "--concurrency",
        type=_common.positive_int,
        default=4,
        metavar="N",
        help="instances forwarded at once (default: 4)",
    )
    parser.add_argument(
        "--retry-base",
        type=_common.seconds,
        default=1.0,
        metavar="SECONDS",
        help="first retry delay, doubled each time (default: 1)",
    )
    parser.add_argument(
        "--retry-cap",
        type=_common.seconds,
        default=300.0,
        metavar="SECONDS",
        help="longest retry delay (default: 300)",
    )
    parser.add_argument(
        "--retry-status",
        type=status_code,
        action="append",
        default=[],
        metavar="HEX",
        help="also retry (not dead-letter) this failure status; repeat for several",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_common.seconds,
        default=5.0,
        metavar="SECONDS",
        help="release an association to the destination idle this long (default: 5)",
    )
    parser.add_argument(
        "--max-associations",
        type=_common.positive_int,
        default=100,
        metavar="N",
        help="senders served at once (default: 100)",
    )
    parser.add_argument(
        "--grace",
        type=_common.seconds,
        default=5.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, time running associations get to finish (default: 5)",
    )
    _common.add_tls_client_options(parser)  # for the destination
    _common.add_general_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_queue:
        return _common.run_sync(lambda: show_queue(args.spool), program="router")
    if args.port is None or args.destination is None:
        parser.error("PORT and --destination are needed (unless --show-queue)")
    if args.retry_cap < args.retry_base:
        parser.error("--retry-cap must not be less than --retry-base")
    _common.setup_logging(max(args.verbose, 1))
    return _common.run(lambda: serve(args), backend=args.backend, program="router")


if __name__ == "__main__":
    sys.exit(main())
