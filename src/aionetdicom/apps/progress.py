"""A one-line text progress bar for the command-line apps (no dependency)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """``[#####.....]  50/100  50%  2 failed  31.4/s`` rewritten in place on a stream.

    Disabled, it does nothing, so callers need no ``if``. Redraws at most every
    ``interval`` seconds, and once more at the end.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 30,
        interval: float = 0.1,
        unit: str = "files",
    ) -> None:
        self.total = max(total, 0)
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and total > 0
        self.width = width
        self.interval = interval
        self.unit = unit
        self.done = 0
        self.failed = 0
        self._started = time.monotonic()
        self._drawn_at = -1.0
        self._drawn_done = -1
        self._last_length = 0
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, *, failed: bool = False) -> None:
        """Count one more item done (``failed`` when it did not succeed) and redraw."""
        self.done += 1
        if failed:
            self.failed += 1
        now = time.monotonic()
        if self.done >= self.total or now - self._drawn_at >= self.interval:
            self._draw(now)

    def render(self, now: float | None = None) -> str:
        """The bar as text, without the carriage return."""
        now = time.monotonic() if now is None else now
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        digits = len(str(self.total))
        text = f"[{bar}] {self.done:>{digits}}/{self.total} {fraction:4.0%}"
        if self.failed:
            text += f"  {self.failed} failed"
        elapsed = now - self._started
        if elapsed > 0 and self.done:
            text += f"  {self.done / elapsed:.1f} {self.unit}/s"
        return text

    def _draw(self, now: float) -> None:
        if not self.enabled or self._closed:
            return
        text = self.render(now)
        padding = " " * max(self._last_length - len(text), 0)
        self.stream.write(f"\r{text}{padding}")
        self.stream.flush()
        self._last_length = len(text)
        self._drawn_at = now
        self._drawn_done = self.done

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled and not self._closed:
            if self._drawn_done != self.done:
                self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
