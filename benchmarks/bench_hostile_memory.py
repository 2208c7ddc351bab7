"""Memory under hostile input: malformed A-ASSOCIATE-RQs in a row must not grow the SCP.

Starts our SCP (``AE.serve`` on asyncio or trio) in a subprocess on a free 127.0.0.1
port, then, one connection after another, sends malformed association requests of
several kinds (items running past the PDU, no presentation context, even, duplicate
or too many context IDs, a maximum length that cannot carry a PDV, an unknown item,
an unsupported protocol version, a length of 0xFFFFFFFF, a truncated request, garbage,
an HTTP request) and checks each answer (the A-ABORT or A-ASSOCIATE-RJ the standard
names, or nothing for a truncated one). The SCP's VmRSS (``/proc/<pid>/status``) is
read after ``--warm-up`` requests and again after ``--requests`` more; the growth must
stay under ``--limit-mb`` (10 MB, issue 7). A valid C-ECHO association runs before
each reading, so the server is known to be responsive and idle when it is read.

    python benchmarks/bench_hostile_memory.py                 # 10,000 requests, asyncio
    python benchmarks/bench_hostile_memory.py --backend trio --requests 20000

Prints one line per checkpoint and a summary; results go to
``benchmarks/results/hostile-memory-<timestamp>.json``. Exit status 1 when the growth
exceeds the limit, an answer was wrong, or the SCP logged an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SCRIPT = str(Path(__file__).resolve())
RESULTS = Path(__file__).resolve().parent / "results"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


# ====================================================================== the requests


def _item(item_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body) if length is None else length) + body


def _context(context_id: int) -> bytes:
    syntaxes = _item(0x30, VERIFICATION.encode()) + _item(0x40, EXPLICIT_VR_LITTLE_ENDIAN.encode())
    return _item(0x20, bytes((context_id, 0, 0, 0)) + syntaxes)


def _user_info(maximum_length: int = 16384) -> bytes:
    return _item(0x50, _item(0x51, struct.pack(">L", maximum_length)))


_APP = _item(0x10, b"1.2.840.10008.3.1.1.1")


def _request(items: bytes, version: int = 1) -> bytes:
    fixed = struct.pack(">HH16s16s32s", version, 0, b"ANY-SCP".ljust(16), b"HOSTILE".ljust(16), b"")
    body = fixed + items
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


ABORT_INVALID = ("abort", 2, 6)
ABORT_UNEXPECTED_PARAMETER = ("abort", 2, 5)
ABORT_UNRECOGNIZED = ("abort", 2, 1)

#: name -> (bytes to send, expected answer: (kind, a, b[, c]) or None for no answer).
MALFORMED: dict[str, tuple[bytes, tuple[Any, ...] | None]] = {
    "item-past-the-end": (_request(_APP + _user_info() + _item(0x20, b"\x01", 900)), ABORT_INVALID),
    "no-presentation-context": (_request(_APP + _user_info()), ABORT_INVALID),
    "even-context-id": (_request(_APP + _context(2) + _user_info()), ABORT_INVALID),
    "duplicate-context-ids": (
        _request(_APP + _context(1) + _context(1) + _user_info()),
        ABORT_INVALID,
    ),
    "129-contexts": (
        _request(_APP + b"".join(_context(2 * n + 1) for n in range(128)) + _context(1)),
        ABORT_INVALID,
    ),
    "maximum-length-3": (_request(_APP + _context(1) + _user_info(3)), ABORT_INVALID),
    "unknown-item": (
        _request(_APP + _context(1) + _item(0x77, b"x" * 10) + _user_info()),
        ABORT_UNEXPECTED_PARAMETER,
    ),
    "protocol-version-2": (_request(_APP + _context(1) + _user_info(), 2), ("reject", 1, 2, 2)),
    "all-ones-length": (struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF), ABORT_INVALID),
    "truncated": (_request(_APP + _context(1) + _user_info())[:40], None),
    "garbage": (bytes([0xA5]) + bytes(range(63)), ABORT_UNRECOGNIZED),
    "http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ABORT_UNRECOGNIZED),
}


def _answer(sock: socket.socket) -> tuple[Any, ...] | None:
    """The PDU the server answered with, as (kind, fields...), or None if it just closed."""
    data = b""
    while len(data) < 10:
        chunk = sock.recv(64)
        if not chunk:
            return None
        data += chunk
    pdu_type = data[0]
    if pdu_type == 0x07:
        return ("abort", data[8], data[9])
    if pdu_type == 0x03:
        return ("reject", data[7], data[8], data[9])
    return ("other", pdu_type)


def send_malformed(port: int, name: str) -> tuple[Any, ...] | None:
    """One connection: send the malformed request ``name``, return the server's answer."""
    payload, expected = MALFORMED[name]
    with socket.create_connection((HOST, port), timeout=10) as sock:
        # Hang up with a reset: no TIME_WAIT left behind, so that tens of thousands of
        # connections in a row do not run out of ports.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(payload)
        if expected is None:
            return None  # a truncated request: we hang up, the server sees the end
        return _answer(sock)


# ====================================================================== the SCP


def _scp_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_hostile_memory.py _scp")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import anyio

    from aionetdicom import AE

    async def main() -> None:
        scp = AE("ANY-SCP", acse_timeout=5, network_timeout=10)
        async with scp.serve(HOST, 0) as server:
            print(f"LISTENING {server.port}", flush=True)
            await server.wait_closed()

    anyio.run(main, backend=args.backend)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _echo(port: int) -> None:
    """A valid association with one C-ECHO: the SCP still serves."""
    import anyio

    from aionetdicom import AE

    async def echo() -> None:
        with anyio.fail_after(30):
            async with AE("GOOD").associate(HOST, port) as assoc:
                if not (await assoc.echo()).is_success:
                    raise RuntimeError("the C-ECHO failed")

    anyio.run(echo)


@contextlib.contextmanager
def running_scp(backend: str, log_path: Path) -> Iterator[tuple[int, int]]:
    """Start our SCP in a subprocess; yield (pid, port); stop it afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, SCRIPT, "_scp", "--backend", backend],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"the SCP did not start (exit {process.poll()}): {line!r}")
            yield process.pid, int(line.split()[1])
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# ====================================================================== the run


@dataclass
class Outcome:
    """What one run measured."""

    backend: str
    warm_up: int
    requests: int
    baseline_kb: int = 0
    final_kb: int = 0
    peak_kb: int = 0
    seconds: float = 0.0
    checkpoints: list[tuple[int, int]] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    @property
    def growth_mb(self) -> float:
        return (self.final_kb - self.baseline_kb) / 1024


def _send_many(port: int, count: int, wrong: list[str], start: int = 0) -> None:
    names = list(MALFORMED)
    for number in range(start, start + count):
        name = names[number % len(names)]
        answer = send_malformed(port, name)
        expected = MALFORMED[name][1]
        if answer != expected and len(wrong) < 20:
            wrong.append(f"{name}: expected {expected}, got {answer}")


def _settle(port: int) -> None:
    """Let the server finish the last connections, then prove it responsive."""
    time.sleep(0.3)
    _echo(port)
    time.sleep(0.2)


def run(
    requests: int = 10_000,
    warm_up: int = 1_000,
    backend: str = "asyncio",
    checkpoints: int = 5,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Send ``warm_up`` then ``requests`` malformed requests; measure the SCP's RSS."""
    outcome = Outcome(backend, warm_up, requests)
    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "scp.log"
        with running_scp(backend, log_path) as (pid, port):
            _echo(port)
            _send_many(port, warm_up, outcome.wrong_answers)
            _settle(port)
            outcome.baseline_kb = _status_kb(pid, "VmRSS")
            started = time.monotonic()
            step = max(1, requests // checkpoints)
            sent = 0
            while sent < requests:
                batch = min(step, requests - sent)
                _send_many(port, batch, outcome.wrong_answers, warm_up + sent)
                sent += batch
                rss = _status_kb(pid, "VmRSS")
                outcome.checkpoints.append((sent, rss))
                if progress is not None:
                    progress(f"{sent:>7} requests: VmRSS {rss / 1024:7.1f} MB")
            outcome.seconds = time.monotonic() - started
            _settle(port)
            outcome.final_kb = _status_kb(pid, "VmRSS")
            outcome.peak_kb = _status_kb(pid, "VmHWM")
        text = log_path.read_text(errors="replace")
    for line in text.splitlines():
        if "ERROR" in line or "Traceback" in line or "never retrieved" in line:
            outcome.log_problems.append(line)
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_scp":
        _scp_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warm-up", type=int, default=1_000)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--limit-mb", type=float, default=10.0)
    args = parser.parse_args(argv)
    outcome = run(args.requests, args.warm_up, args.backend, progress=print)
    print(
        f"{outcome.backend}: {outcome.requests} malformed A-ASSOCIATE-RQs in "
        f"{outcome.seconds:.1f} s ({outcome.requests / outcome.seconds:.0f}/s); VmRSS "
        f"{outcome.baseline_kb / 1024:.1f} MB after {outcome.warm_up} warm-up requests, "
        f"{outcome.final_kb / 1024:.1f} MB after, growth {outcome.growth_mb:+.2f} MB "
        f"(limit {args.limit_mb} MB); VmHWM {outcome.peak_kb / 1024:.1f} MB"
    )
    for line in outcome.wrong_answers + outcome.log_problems:
        print("  problem:", line)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {"argv": argv, "pid": os.getpid(), **outcome.__dict__}
    (RESULTS / f"hostile-memory-{stamp}.json").write_text(json.dumps(report, indent=2))
    failed = outcome.growth_mb >= args.limit_mb or outcome.wrong_answers or outcome.log_problems
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
