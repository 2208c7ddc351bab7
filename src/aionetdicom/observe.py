"""Hooks for metrics: what associations and DIMSE operations did, as it happens.

Register an :class:`Observer` with ``ae.add_observer(obs)``; every association the AE
makes or accepts then reports to it (synchronously, on the event loop: keep the
methods quick, hand slow work to a queue). :class:`Metrics` is a ready observer with
in-memory counters and a Prometheus text exposition (no dependency); wire it to
Prometheus or OpenTelemetry by serving :meth:`Metrics.prometheus_text` or by writing
an observer that updates your own instruments (see ``examples/metrics.py``).
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from aionetdicom.dimse.status import status_category

if TYPE_CHECKING:
    from aionetdicom.association import Association

__all__ = ["LATENCY_BUCKETS", "Metrics", "Observer", "OperationRecord"]

logger = logging.getLogger("aionetdicom.observe")

#: Upper bounds (seconds) of the operation latency histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """One DIMSE operation that ended, seen from this side of the association."""

    #: "C-ECHO", "C-STORE", "C-FIND", "C-GET", "C-MOVE", "N-GET", ...
    service: str
    #: "SCU": we sent the request; "SCP": we answered it.
    role: Literal["SCU", "SCP"]
    sop_class_uid: str
    #: The final status (None when the operation ended without one: abort, timeout).
    status: int | None
    #: Seconds from the request to the final response.
    duration: float
    #: Why it ended without a final status, if it did.
    error: str | None = None


class Observer:
    """Base class of observers: override the methods you need (each does nothing)."""

    def association_opened(self, assoc: Association) -> None:
        """An association was established (requested or accepted)."""

    def association_closed(self, assoc: Association, error: BaseException | None) -> None:
        """An association ended: released (``error`` None), aborted or lost."""

    def bytes_received(self, assoc: Association, count: int) -> None:
        """``count`` bytes arrived on the association's connection."""

    def bytes_sent(self, assoc: Association, count: int) -> None:
        """``count`` bytes were written to the association's connection."""

    def operation_finished(self, assoc: Association, operation: OperationRecord) -> None:
        """A DIMSE operation ended (its final response was sent or received)."""


def _category(status: int | None) -> str:
    """The status class as a label: "success", "warning", ... or "none"."""
    return "none" if status is None else status_category(status).value.lower()


@dataclass
class _Latency:
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if index < len(self.buckets):
            self.buckets[index] += 1


class Metrics(Observer):
    """Counters of what the AE's associations did (one instance per AE, or shared)."""

    def __init__(self) -> None:
        #: Associations established and not yet ended.
        self.associations_open = 0
        #: Associations ended, by outcome ("released" or "aborted").
        self.associations_closed: Counter[str] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        #: Operations by (service, role, status category).
        self.operations: Counter[tuple[str, str, str]] = Counter()
        self._latency: dict[tuple[str, str], _Latency] = {}

    def association_opened(self, assoc: Association) -> None:
        self.associations_open += 1

    def association_closed(self, assoc: Association, error: BaseException | None) -> None:
        self.associations_open -= 1
        self.associations_closed["released" if error is None else "aborted"] += 1

    def bytes_received(self, assoc: Association, count: int) -> None:
        self.bytes_in += count

    def bytes_sent(self, assoc: Association, count: int) -> None:
        self.bytes_out += count

    def operation_finished(self, assoc: Association, operation: OperationRecord) -> None:
        key = (operation.service, operation.role)
        self.operations[(operation.service, operation.role, _category(operation.status))] += 1
        latency = self._latency.get(key)
        if latency is None:
            latency = self._latency[key] = _Latency()
        latency.add(operation.duration)

    def latency(self, service: str, role: str) -> tuple[int, float]:
        """(count, total seconds) of the operations of ``service`` in ``role``."""
        latency = self._latency.get((service, role))
        return (0, 0.0) if latency is None else (latency.count, latency.total)

    def prometheus_text(self, prefix: str = "dicom") -> str:
        """The counters in the Prometheus text exposition format (version 0.0.4)."""
        lines = [
            f"# TYPE {prefix}_associations_open gauge",
            f"{prefix}_associations_open {self.associations_open}",
            f"# TYPE {prefix}_associations_closed_total counter",
        ]
        for outcome in ("released", "aborted"):
            value = self.associations_closed[outcome]
            lines.append(f'{prefix}_associations_closed_total{{outcome="{outcome}"}} {value}')
        lines += [
            f"# TYPE {prefix}_bytes_received_total counter",
            f"{prefix}_bytes_received_total {self.bytes_in}",
            f"# TYPE {prefix}_bytes_sent_total counter",
            f"{prefix}_bytes_sent_total {self.bytes_out}",
            f"# TYPE {prefix}_operations_total counter",
        ]
        for (service, role, category), value in sorted(self.operations.items()):
            labels = f'service="{service}",role="{role}",status="{category}"'
            lines.append(f"{prefix}_operations_total{{{labels}}} {value}")
        lines.append(f"# TYPE {prefix}_operation_seconds histogram")
        for (service, role), latency in sorted(self._latency.items()):
            labels = f'service="{service}",role="{role}"'
            running = 0
            for bound, count in zip(LATENCY_BUCKETS, latency.buckets, strict=True):
                running += count
                lines.append(
                    f'{prefix}_operation_seconds_bucket{{{labels},le="{bound}"}} {running}'
                )
            lines.append(f'{prefix}_operation_seconds_bucket{{{labels},le="+Inf"}} {latency.count}')
            lines.append(f"{prefix}_operation_seconds_sum{{{labels}}} {latency.total}")
            lines.append(f"{prefix}_operation_seconds_count{{{labels}}} {latency.count}")
        return "\n".join(lines) + "\n"


def notify(observers: tuple[Observer, ...], method: str, *args: object) -> None:
    """Call ``method`` on every observer; an observer that raises is logged, not fatal."""
    for observer in observers:
        try:
            getattr(observer, method)(*args)
        except Exception:
            logger.exception("observer %r failed in %s", observer, method)
