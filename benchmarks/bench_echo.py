"""Benchmark C-ECHO: associations per second and echo round-trips per second.

Three clients (aionetdicom, pynetdicom, DCMTK ``echoscu``) against three SCPs
(aionetdicom, pynetdicom, DCMTK ``storescp``), all in one run, so the numbers can
be compared as ratios on a noisy machine. Every SCP and every Python client runs
in its own process; Python clients time themselves after imports and one warm-up
association, DCMTK ``echoscu`` is timed from outside (one process per association).

    python benchmarks/bench_echo.py                      # full matrix, N=200, R=3
    python benchmarks/bench_echo.py --associations 50 --rounds 1 --scp ours

The same file is the worker: ``bench_echo.py _client ...`` and ``bench_echo.py _scp ...``
are what the driver starts in subprocesses (handy for profiling one client alone:
``python -m cProfile -s cumtime benchmarks/bench_echo.py _client ours --port P``,
with an SCP from ``bench_echo.py _scp ours --port P``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Union

HOST = "127.0.0.1"
SCP_TITLE = "ANY-SCP"
CLIENT_TITLE = "BENCH"
ECHOSCU = "/usr/bin/echoscu"
STORESCP = "/usr/bin/storescp"
#: Debian's DCMTK keeps Nagle's algorithm on unless this is set (see DESIGN.md).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
#: Seconds one client run may take before it counts as failed.
CLIENT_TIMEOUT = 60.0
#: Seconds an SCP gets to accept its first connection.
SCP_READY_TIMEOUT = 10.0
WARMUP_ASSOCIATIONS = 1
#: ACSE and DIMSE timeout of the Python clients: loopback answers in milliseconds, and a
#: lost reply should cost a few seconds, not the libraries' default 30.
PEER_TIMEOUT = 3.0
#: Tries per client, SCP and round: a run that fails (pynetdicom's client sometimes
#: loses a reply) is repeated; every failure is footnoted in the table. A cell that has
#: failed this many times twice over without one success is given up.
ATTEMPTS = 3
#: About this many closed-port echoscu runs per DCMTK cell, to estimate process start.
STARTUP_SAMPLES = 25
SCRIPT = str(Path(__file__).resolve())

SCPS = {
    "ours": "ours (asyncio)",
    "pynetdicom": "pynetdicom",
    "dcmtk": "DCMTK storescp",
}
CLIENTS = {
    "ours": "ours (asyncio)",
    "ours-trio": "ours (trio)",
    "pynetdicom": "pynetdicom",
    "dcmtk": "DCMTK echoscu [1]",
}


# ====================================================================== workers (subprocesses)


def _ours_client(port: int, mode: str, count: int, backend: str) -> float:
    import anyio

    from aionetdicom import AE

    ae = AE(CLIENT_TITLE, acse_timeout=PEER_TIMEOUT, dimse_timeout=PEER_TIMEOUT)

    async def one_association() -> None:
        async with ae.associate(HOST, port, called_ae_title=SCP_TITLE) as assoc:
            status = await assoc.echo()
        if int(status) != 0:
            raise RuntimeError(f"C-ECHO status 0x{int(status):04X}")

    async def associations() -> float:
        for _ in range(WARMUP_ASSOCIATIONS):
            await one_association()
        start = time.perf_counter()
        for _ in range(count):
            await one_association()
        return time.perf_counter() - start

    async def echoes() -> float:
        async with ae.associate(HOST, port, called_ae_title=SCP_TITLE) as assoc:
            await assoc.echo()  # warm-up
            start = time.perf_counter()
            for _ in range(count):
                status = await assoc.echo()
                if int(status) != 0:
                    raise RuntimeError(f"C-ECHO status 0x{int(status):04X}")
            elapsed = time.perf_counter() - start
        return elapsed

    main = associations if mode == "assoc" else echoes
    return float(anyio.run(main, backend=backend))


def _pynetdicom_client(port: int, mode: str, count: int) -> float:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=CLIENT_TITLE)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = PEER_TIMEOUT
    started = time.perf_counter()

    def open_association() -> Any:
        assoc = ae.associate(HOST, port, ae_title=SCP_TITLE)
        if not assoc.is_established:
            raise RuntimeError("pynetdicom: association not established")
        return assoc

    def check(status: Any) -> None:
        if not status or status.Status != 0:
            after = time.perf_counter() - started
            what = f"status {status.Status:#06x}" if status else "no response"
            raise RuntimeError(f"C-ECHO failed, {what}, {after:.1f} s into the run")

    def one_association() -> None:
        assoc = open_association()
        check(assoc.send_c_echo())
        assoc.release()

    if mode == "assoc":
        for _ in range(WARMUP_ASSOCIATIONS):
            one_association()
        start = time.perf_counter()
        for _ in range(count):
            one_association()
        return time.perf_counter() - start
    assoc = open_association()
    check(assoc.send_c_echo())  # warm-up
    start = time.perf_counter()
    for _ in range(count):
        check(assoc.send_c_echo())
    elapsed = time.perf_counter() - start
    assoc.release()
    return elapsed


def _client_run(client: str, port: int, mode: str, count: int) -> float:
    if client == "pynetdicom":
        return _pynetdicom_client(port, mode, count)
    backend = "trio" if client == "ours-trio" else "asyncio"
    return _ours_client(port, mode, count, backend)


def _client_main(argv: Sequence[str]) -> None:
    """One run (``--port``), or, with ``--serve``, one run per JSON line on stdin."""
    parser = argparse.ArgumentParser(prog="bench_echo.py _client")
    parser.add_argument("client", choices=["ours", "ours-trio", "pynetdicom"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--mode", choices=["assoc", "echo"], default="assoc")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help="take runs from stdin")
    args = parser.parse_args(argv)
    # Warnings and errors of either library go to stderr; the driver reports them.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.serve:
        if args.port is None:
            parser.error("--port is required without --serve")
        seconds = _client_run(args.client, args.port, args.mode, args.count)
        print(json.dumps({"seconds": seconds, "count": args.count}), flush=True)
        return
    for line in sys.stdin:
        job = json.loads(line)
        try:
            reply = {"seconds": _client_run(args.client, job["port"], job["mode"], job["count"])}
        except Exception as exc:
            error: BaseException = exc
            while getattr(error, "exceptions", None):  # an exception group: show a real error
                error = error.exceptions[0]  # type: ignore[attr-defined]
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)


def _scp_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_echo.py _scp")
    parser.add_argument("scp", choices=["ours", "pynetdicom"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.scp == "ours":
        import anyio

        from aionetdicom import AE

        async def serve() -> None:
            async with AE(SCP_TITLE).serve(HOST, args.port) as server:
                await server.wait_closed()

        anyio.run(serve)
    else:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=SCP_TITLE)
        ae.add_supported_context(Verification)
        ae.start_server((HOST, args.port), block=True)


# ====================================================================== driver


@dataclass
class Run:
    """One client run: ``count`` operations took ``seconds``."""

    seconds: float
    stderr: str = ""
    #: DCMTK only: the same run less the estimated process start-up.
    estimate: float | None = None
    #: DCMTK only: seconds of each echoscu run against a closed port.
    startup: list[float] = field(default_factory=list)


@dataclass
class Cell:
    """Every run of one client against one SCP."""

    seconds: list[float] = field(default_factory=list)
    estimates: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def rates(self, count: int, estimated: bool = False) -> list[float]:
        values = self.estimates if estimated else self.seconds
        return [count / s for s in values if s > 0]

    def median_rate(self, count: int, estimated: bool = False) -> float | None:
        """Median over the rounds that succeeded."""
        rates = self.rates(count, estimated)
        return statistics.median(rates) if rates else None


Matrix = dict[tuple[str, str], Cell]


class ClientError(Exception):
    """A client run failed; the message goes into its table cell."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not accepting connections on port {port} after {timeout} s")


def _last_line(text: bytes | str | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def running_scps(
    names: Sequence[str], workdir: Path, log_dir: Path | None, log_level: str
) -> Iterator[tuple[dict[str, int], dict[str, str]]]:
    """Start each SCP on a free port; yield ({name: port}, {name: error}); stop them all."""
    processes: list[tuple[subprocess.Popen[bytes], Any]] = []
    ports: dict[str, int] = {}
    failed: dict[str, str] = {}
    try:
        for name in names:
            port = free_port()
            if name == "dcmtk":
                command = [STORESCP, "-aet", SCP_TITLE, "--ignore", "-od", str(workdir), str(port)]
            else:
                command = [sys.executable, SCRIPT, "_scp", name, "--port", str(port)]
                command += ["--log-level", log_level]
            if log_dir is None:
                output: Any = subprocess.DEVNULL
            else:
                output = open(log_dir / f"scp-{name}.log", "wb")  # noqa: SIM115
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=DCMTK_ENV,
                    cwd=workdir,
                )
            except OSError as exc:
                failed[name] = f"SCP did not start: {exc}"
                if output is not subprocess.DEVNULL:
                    output.close()
                continue
            processes.append((process, output))
            try:
                wait_for_port(port, process, SCP_READY_TIMEOUT)
            except RuntimeError as exc:
                failed[name] = f"SCP {exc}"
                continue
            ports[name] = port
        yield ports, failed
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.terminate()
        for process, output in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if output is not subprocess.DEVNULL:
                output.close()


class PythonClient:
    """A Python client process kept for the whole benchmark, one run per request.

    Keeping it saves the interpreter and import start-up per run (~0.3-0.5 s), which
    would not be measured anyway: every run times itself inside the process.
    """

    def __init__(self, client: str, workdir: Path) -> None:
        self.client = client
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._stderr_seen = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self.close()
        self._stderr = open(self.workdir / f"client-{self.client}.err", "wb")  # noqa: SIM115
        self._stderr_seen = 0
        self.process = subprocess.Popen(
            [sys.executable, SCRIPT, "_client", self.client, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=self.workdir,
        )
        return self.process

    def _new_stderr(self) -> str:
        path = self.workdir / f"client-{self.client}.err"
        try:
            data = path.read_bytes()
        except OSError:
            return ""
        fresh, self._stderr_seen = data[self._stderr_seen :], len(data)
        return fresh.decode(errors="replace")

    def run(self, port: int, mode: str, count: int) -> Run:
        process = self.process
        if process is None or process.poll() is not None:
            process = self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        job = json.dumps({"port": port, "mode": mode, "count": count}) + "\n"
        try:
            process.stdin.write(job.encode())
            process.stdin.flush()
        except OSError as exc:
            self.close()
            raise ClientError(f"client process gone: {exc}") from exc
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(CLIENT_TIMEOUT)
        if not ready:
            self.close()
            raise ClientError(f"timed out after {CLIENT_TIMEOUT:.0f} s")
        line = process.stdout.readline()
        stderr = self._new_stderr()
        if not line:
            self.close()
            raise ClientError(_last_line(stderr) or "client process exited")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise ClientError(f"unreadable output: {line[:200]!r}") from exc
        if "error" in reply:
            logged = _last_line(stderr)
            raise ClientError(f"{reply['error']}" + (f" (log: {logged})" if logged else ""))
        return Run(float(reply["seconds"]), stderr)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _echoscu(port: int, *extra: str) -> list[str]:
    return [ECHOSCU, "-aet", CLIENT_TITLE, "-aec", SCP_TITLE, *extra, HOST, str(port)]


def time_process(command: list[str], expect_success: bool = True) -> float:
    """Wall time of one process from spawn to exit."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=DCMTK_ENV,
            timeout=CLIENT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"echoscu timed out after {CLIENT_TIMEOUT:.0f} s") from exc
    elapsed = time.perf_counter() - start
    if expect_success and done.returncode != 0:
        message = _last_line(done.stderr) or "no message"
        raise ClientError(f"echoscu exit {done.returncode}: {message}")
    return elapsed


def run_dcmtk_associations(port: int, count: int) -> Run:
    """``count`` echoscu processes in a row, with closed-port runs interleaved.

    The closed-port runs (exec, dynamic linking, DCMTK start-up, a refused connect,
    exit) estimate what starting a process costs; the median of the real runs less
    the median of those is an estimate of the association alone. Medians, because
    the sums of two large noisy numbers differ by less than their noise.
    """
    closed_port = free_port()  # nothing listens there once the socket is closed
    stride = max(1, count // STARTUP_SAMPLES)
    real: list[float] = []
    startup: list[float] = []
    for i in range(count):
        real.append(time_process(_echoscu(port)))
        if i % stride == 0:
            startup.append(time_process(_echoscu(closed_port), expect_success=False))
    per_association = statistics.median(real) - statistics.median(startup)
    estimate = count * per_association if per_association > 0 else None
    return Run(sum(real), estimate=estimate, startup=startup)


def run_client(
    client: str, port: int, mode: str, count: int, workers: dict[str, PythonClient]
) -> Run:
    if client != "dcmtk":
        return workers[client].run(port, mode, count)
    if mode == "assoc":
        return run_dcmtk_associations(port, count)
    return Run(time_process(_echoscu(port, "--repeat", str(count))))


def run_matrix(
    scps: Sequence[str],
    ports: dict[str, int],
    scp_errors: dict[str, str],
    clients: Sequence[str],
    mode: str,
    count: int,
    rounds: int,
    workers: dict[str, PythonClient],
    log: Callable[[str], None],
) -> tuple[Matrix, dict[str, str], list[float]]:
    """Every client against every SCP, ``rounds`` times, in alternating order.

    Returns the cells, the last stderr line of clients that wrote any, and the
    DCMTK process start-up samples.
    """
    cells: Matrix = {(c, s): Cell() for c in clients for s in scps}
    notes: dict[str, str] = {}
    startup: list[float] = []
    for s, message in scp_errors.items():
        for c in clients:
            cells[(c, s)].errors.append(message)
    for r in range(rounds):
        # Clients A B C D, then D C B A, ...; SCPs rotate: drift hits everyone alike.
        client_order = list(clients) if r % 2 == 0 else list(reversed(clients))
        scp_order = list(scps[r % len(scps) :]) + list(scps[: r % len(scps)])
        for s in scp_order:
            if s not in ports:
                continue
            for c in client_order:
                cell = cells[(c, s)]
                if len(cell.errors) >= 2 * ATTEMPTS and not cell.seconds:
                    continue  # failing for good: do not wait for it again
                run = None
                for attempt in range(1, ATTEMPTS + 1):
                    again = f" (attempt {attempt})" if attempt > 1 else ""
                    log(f"{mode} round {r + 1}/{rounds}: {c} -> {s}{again}")
                    try:
                        run = run_client(c, ports[s], mode, count, workers)
                        break
                    except ClientError as exc:
                        cell.errors.append(str(exc))
                if run is None:
                    continue
                cell.seconds.append(run.seconds)
                if run.estimate is not None:
                    cell.estimates.append(run.estimate)
                startup.extend(run.startup)
                if run.stderr.strip():
                    notes.setdefault(f"{mode}: {c} -> {s}", _last_line(run.stderr))
    return cells, notes, startup


# ====================================================================== reporting


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


#: A table cell: its text, and the error to footnote (None when there is none).
CellText = tuple[str, Union[str, None]]


def _cell_text(cell: Cell | None, count: int, estimated: bool = False) -> CellText:
    """The median rate of the rounds that succeeded, and the first error if a round failed."""
    if cell is None:
        return "-", None
    rate = _fmt_rate(cell.median_rate(count, estimated))
    if not cell.errors:
        return rate, None
    runs = len(cell.errors) + len(cell.seconds)
    error = f"{cell.errors[0]} ({len(cell.errors)} of {runs} runs failed; failed runs retried)"
    return (rate if cell.seconds else "ERROR"), error


def format_table(
    title: str,
    scps: Sequence[str],
    rows: Sequence[tuple[str, Sequence[CellText]]],
    notes: Sequence[str],
) -> str:
    """Rows of (label, cells); an empty label draws a rule; errors become footnotes."""
    width = 42
    col = max([16, *(len(SCPS[s]) for s in scps)]) + 2
    errors = list(dict.fromkeys(e for _, cells in rows for _, e in cells if e is not None))
    rule = "-" * (width + col * len(scps))
    lines = [title, "=" * len(title)]
    lines.append("client \\ SCP".ljust(width) + "".join(SCPS[s].rjust(col) for s in scps))
    lines.append(rule)
    for label, cells in rows:
        if not label:
            lines.append(rule)
            continue
        line = label.ljust(width)
        for text, error in cells:
            if error is not None:
                text = f"{text} [e{errors.index(error) + 1}]"
            line += text.rjust(col)
        lines.append(line)
    lines += [f"  [e{number}] {error}" for number, error in enumerate(errors, 1)]
    lines += notes
    return "\n".join(lines)


def table_rows(
    cells: Matrix,
    scps: Sequence[str],
    clients: Sequence[str],
    count: int,
) -> list[tuple[str, list[CellText]]]:
    rows = [(CLIENTS[c], [_cell_text(cells.get((c, s)), count) for s in scps]) for c in clients]
    if "dcmtk" in clients:
        estimated = [_cell_text(cells.get(("dcmtk", s)), count, estimated=True) for s in scps]
        rows.append(("DCMTK echoscu, excl. process start [2]", estimated))
    ratios: list[tuple[str, str, str, bool]] = [
        ("ours / pynetdicom", "ours", "pynetdicom", False),
        ("ours / DCMTK", "ours", "dcmtk", False),
        ("ours / DCMTK excl. process start [2]", "ours", "dcmtk", True),
        ("ours (trio) / ours (asyncio)", "ours-trio", "ours", False),
    ]
    rule_added = False
    for label, a, b, estimated_b in ratios:
        if a not in clients or b not in clients:
            continue
        if not rule_added:
            rows.append(("", []))
            rule_added = True
        texts: list[CellText] = []
        for s in scps:
            cell_a, cell_b = cells.get((a, s)), cells.get((b, s))
            rate_a = cell_a.median_rate(count) if cell_a else None
            rate_b = cell_b.median_rate(count, estimated_b) if cell_b else None
            texts.append((_fmt_ratio(rate_a, rate_b), None))
        rows.append((label, texts))
    return rows


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("aionetdicom", "pynetdicom", "pydicom", "anyio", "trio"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        out = subprocess.run([ECHOSCU, "--version"], capture_output=True, text=True, timeout=10)
        first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
        versions["dcmtk"] = first.strip("$ ").replace("dcmtk: ", "")
    except (OSError, subprocess.TimeoutExpired, IndexError):
        versions["dcmtk"] = "not found"
    return versions


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": library_versions(),
    }


def _dump(cells: Matrix, count: int) -> dict[str, Any]:
    return {
        f"{c} -> {s}": {
            "client": c,
            "scp": s,
            "count": count,
            "seconds": cell.seconds,
            "rates": cell.rates(count),
            "median_rate": cell.median_rate(count),
            "estimated_seconds_excl_process_start": cell.estimates,
            "estimated_median_rate": cell.median_rate(count, estimated=True),
            "errors": cell.errors,
        }
        for (c, s), cell in cells.items()
    }


# ====================================================================== main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_client":
        _client_main(argv[1:])
        return 0
    if argv and argv[0] == "_scp":
        _scp_main(argv[1:])
        return 0

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--associations", "-n", type=int, default=200, metavar="N")
    parser.add_argument("--echoes", type=int, default=1000, metavar="E")
    parser.add_argument("--rounds", "-r", type=int, default=3, metavar="R")
    parser.add_argument("--scp", choices=["ours", "dcmtk", "pynetdicom", "all"], default="all")
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated subset of {','.join(CLIENTS)} (default: all)",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="keep SCP output in DIR/scp-NAME.log (default: /dev/null)"
    )
    parser.add_argument(
        "--scp-log-level", default="WARNING", help="logging level of the Python SCPs"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown or not clients:
        parser.error(f"unknown clients {unknown}; choose from {', '.join(CLIENTS)}")
    if min(args.associations, args.rounds, args.echoes) < 1:
        parser.error("--associations, --echoes and --rounds must be at least 1")
    scps = list(SCPS) if args.scp == "all" else [args.scp]
    for program in (ECHOSCU, STORESCP):
        if not shutil.which(program):
            print(f"warning: {program} not found; DCMTK cells will fail", file=sys.stderr)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        if not args.quiet:
            print(f"  .. {text}", file=sys.stderr, flush=True)

    machine = machine_info()
    n, e, rounds = args.associations, args.echoes, args.rounds
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-echo-") as tmp,
        running_scps(scps, Path(tmp), args.log_dir, args.scp_log_level) as (ports, scp_errors),
    ):
        workers = {c: PythonClient(c, Path(tmp)) for c in clients if c != "dcmtk"}
        try:
            assoc_cells, assoc_notes, startup = run_matrix(
                scps, ports, scp_errors, clients, "assoc", n, rounds, workers, log
            )
            echo_cells, echo_notes, _ = run_matrix(
                scps, ports, scp_errors, clients, "echo", e, rounds, workers, log
            )
        finally:
            for worker in workers.values():
                worker.close()
    total = time.perf_counter() - started
    per_process = statistics.median(startup) if startup else None
    if per_process is not None:
        for s in scps:
            cell = echo_cells.get(("dcmtk", s))
            if cell is not None:
                cell.estimates = [x - per_process for x in cell.seconds if x > per_process]

    load = "/".join(f"{x:.2f}" for x in machine["loadavg"] or [])
    header = [
        f"machine: nproc={machine['nproc']} usable={machine['usable_cpus']} "
        f"loadavg(at start)={load} {machine['platform']}",
        f"python {machine['python']} ({machine['python_implementation']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        f"peers on {HOST}, DCMTK with TCP_NODELAY=1; {rounds} round(s), clients alternating "
        f"order; total {total:.0f} s",
    ]
    start_note = (
        f"{per_process * 1000:.1f} ms, the median of {len(startup)} echoscu runs against a "
        "closed port (exec, linking, DCMTK start-up, refused connect)"
        if per_process is not None
        else "not measured"
    )

    def dcmtk_notes(*lines: str) -> tuple[str, ...]:
        return lines if "dcmtk" in clients else ()

    assoc_table = format_table(
        f"Associations per second ({n} x [associate, 1 C-ECHO, release], sequential)",
        scps,
        table_rows(assoc_cells, scps, clients, n),
        [
            f"cells: associations/s, median of {rounds} round(s). Python clients: one process "
            "each for the whole benchmark; every run timed inside it, after "
            f"{WARMUP_ASSOCIATIONS} warm-up association.",
            *dcmtk_notes(
                f"[1] DCMTK echoscu: {n} processes, one association each; wall time INCLUDING "
                "process start.",
                "[2] estimate: median time of one echoscu run less that of a start-up run, "
                f"measured interleaved in the same cell (start-up ~ {start_note}).",
            ),
        ],
    )
    echo_table = format_table(
        f"C-ECHO round-trips per second over one association ({e} echoes)",
        scps,
        table_rows(echo_cells, scps, clients, e),
        [
            f"cells: echoes/s, median of {rounds} round(s). Python clients time only the "
            f"{e} echoes (association open, one warm-up echo).",
            *dcmtk_notes(
                f"[1] DCMTK: one `echoscu --repeat {e}` process, wall time of all of it "
                "(start, associate, echoes, release).",
                "[2] the same less the start-up estimate above (association and release remain).",
            ),
        ],
    )
    print()
    print("\n".join(header))
    print()
    print(assoc_table)
    print()
    print(echo_table)
    notes = {**assoc_notes, **echo_notes}
    if notes:
        print()
        print("client stderr (last line), for the record:")
        for where, line in notes.items():
            print(f"  {where}: {line}")

    results = {
        "benchmark": "echo",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "arguments": {"associations": n, "echoes": e, "rounds": rounds, "scps": scps},
        "clients": clients,
        "dcmtk_process_start_samples": startup,
        "dcmtk_process_start_median": per_process,
        "associations": _dump(assoc_cells, n),
        "echoes": _dump(echo_cells, e),
        "client_stderr": notes,
        "total_seconds": total,
        "tables": "\n".join(header) + "\n\n" + assoc_table + "\n\n" + echo_table,
    }
    out_dir = Path(SCRIPT).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"echo-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
