"""C-ECHO against DCMTK: our echoscu/echoscp apps and the library, with DCMTK on the other end.

Every process runs on 127.0.0.1 with a free port and a timeout, and is killed in teardown.
DCMTK runs with ``TCP_NODELAY=1`` (Debian's build otherwise waits 40 ms per reply).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from aionetdicom import AE, AssociationRejected, EchoRequest
from aionetdicom.acse.contexts import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aionetdicom.ul.fsm import State

pytestmark = pytest.mark.interop

ECHOSCU = "/usr/bin/echoscu"
STORESCP = "/usr/bin/storescp"
DCMQRSCP = "/usr/bin/dcmqrscp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
OUR_SCP_AET = "AIOSCP"
RUN_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def our_app(*args: str) -> list[str]:
    """The command line running one of our apps as ``python -m aionetdicom``."""
    return [sys.executable, "-m", "aionetdicom", *args]


@dataclass
class Peer:
    """A long-running peer process with its port and log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")


def wait_for_port(peer: Peer, timeout: float = 10.0) -> None:
    """Poll until ``peer`` accepts TCP connections; fail early if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            pytest.fail(f"peer exited with {peer.process.returncode}:\n{peer.log()}")
        try:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"peer did not listen on port {peer.port} within {timeout} s:\n{peer.log()}")


def stop(peer: Peer) -> None:
    """Kill the peer's process group (dcmqrscp forks per association) and reap it."""
    if peer.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(peer.process.pid, signal.SIGKILL)
    peer.process.wait(timeout=10)


def start_peer(
    command: list[str], log_path: Path, *, port: int, env: dict[str, str] | None = None
) -> Peer:
    """Start ``command`` with its output in ``log_path`` and wait until it listens."""
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=log_path.parent,
        env=env,
        start_new_session=True,
    )
    log_file.close()
    peer = Peer(process, port, log_path)
    try:
        wait_for_port(peer)
    except BaseException:
        stop(peer)
        raise
    return peer


def run(command: list[str], *, dcmtk: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a client to completion (with a timeout) and capture its output."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=DCMTK_ENV if dcmtk else None,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr of a finished client together."""
    return result.stdout + result.stderr


def wait_for_log(peer: Peer, pattern: str, count: int = 1, timeout: float = 10.0) -> str:
    """Poll the peer's log until ``pattern`` occurs ``count`` times; return the log."""
    deadline = time.monotonic() + timeout
    while True:
        text = peer.log()
        if text.count(pattern) >= count:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{pattern!r} not seen {count} time(s) in the peer's log:\n{text}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def our_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """Our echoscp app at -d, insisting on being called AIOSCP."""
    folder = tmp_path_factory.mktemp("our_scp")
    port = free_port()
    command = our_app(
        "echoscp",
        str(port),
        "-d",
        "-aet",
        OUR_SCP_AET,
        "--require-called-aet",
        "--bind",
        "127.0.0.1",
        "--max-runtime",
        "120",
    )
    peer = start_peer(command, folder / "echoscp.log", port=port)
    yield peer
    stop(peer)


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """DCMTK's storescp at -v (it answers C-ECHO and logs releases and aborts)."""
    folder = tmp_path_factory.mktemp("storescp")
    port = free_port()
    command = [STORESCP, "-v", "-od", str(folder), str(port)]
    peer = start_peer(command, folder / "storescp.log", port=port, env=DCMTK_ENV)
    yield peer
    stop(peer)


def _context_lines(log: str, calling_aet: str) -> list[str]:
    """The presentation context lines our SCP logged for the association from ``calling_aet``."""
    lines = log.splitlines()
    header = next(
        i
        for i, line in enumerate(lines)
        if re.match(rf"D: Association #\d+ from {calling_aet} ", line)
    )
    contexts = []
    for line in lines[header + 1 :]:
        if not line.startswith("D:   Context ID"):
            break
        contexts.append(line)
    return contexts


# ------------------------------------------------------------- DCMTK echoscu -> our echoscp


def test_our_echoscp_announces_where_it_listens(our_scp: Peer) -> None:
    """The start-up line names the address, port and AE title."""
    assert f"I: echoscp listening on 127.0.0.1:{our_scp.port} as {OUR_SCP_AET}" in our_scp.log()


def test_dcmtk_echoscu_to_our_echoscp(our_scp: Peer) -> None:
    """DCMTK's echoscu gets Success from our echoscp and releases cleanly."""
    result = run(
        [ECHOSCU, "-v", "-aet", "DCMTKONE", "-aec", OUR_SCP_AET, "127.0.0.1", str(our_scp.port)],
        dcmtk=True,
    )
    assert result.returncode == 0, output(result)
    assert "Received Echo Response (Success)" in output(result)
    assert "Releasing Association" in output(result)
    log = wait_for_log(our_scp, "Received Echo Request (MsgID 1) from DCMTKONE")
    assert re.search(r"association #\d+ accepted from DCMTKONE ", log)


def test_dcmtk_echoscu_repeat_on_one_association(our_scp: Peer) -> None:
    """Five C-ECHOs on one association all succeed."""
    result = run(
        [
            ECHOSCU,
            "-v",
            "--repeat",
            "5",
            "-aet",
            "DCMTKFIVE",
            "-aec",
            OUR_SCP_AET,
            "127.0.0.1",
            str(our_scp.port),
        ],
        dcmtk=True,
    )
    assert result.returncode == 0, output(result)
    assert output(result).count("Received Echo Response (Success)") == 5
    log = wait_for_log(our_scp, "Received Echo Request (MsgID 5) from DCMTKFIVE")
    assert len(re.findall(r"accepted from DCMTKFIVE ", log)) == 1


def test_dcmtk_echoscu_proposing_many_contexts(our_scp: Peer) -> None:
    """DCMTK proposing 10 contexts of 3 transfer syntaxes: all accepted, explicit LE chosen."""
    result = run(
        [
            ECHOSCU,
            "-v",
            "--propose-ts",
            "3",
            "--propose-pc",
            "10",
            "-aet",
            "DCMTKMANY",
            "-aec",
            OUR_SCP_AET,
            "127.0.0.1",
            str(our_scp.port),
        ],
        dcmtk=True,
    )
    assert result.returncode == 0, output(result)
    assert "Received Echo Response (Success)" in output(result)
    log = wait_for_log(our_scp, "from DCMTKMANY on association")
    contexts = _context_lines(log, "DCMTKMANY")
    assert len(contexts) == 10, log
    assert [int(re.search(r"Context ID (\d+)", line)[1]) for line in contexts] == list(  # type: ignore[index]
        range(1, 20, 2)
    )
    assert all(
        "(Accepted)" in line and EXPLICIT_VR_LITTLE_ENDIAN + ")" in line for line in contexts
    )


def test_dcmtk_echoscu_rejected_by_our_echoscp(our_scp: Peer) -> None:
    """A wrong called AE title: DCMTK reports the rejection and its reason."""
    result = run([ECHOSCU, "-aec", "WRONGAET", "127.0.0.1", str(our_scp.port)], dcmtk=True)
    text = output(result)
    assert result.returncode != 0
    assert "Association Rejected" in text
    assert "Rejected Permanent, Source: Service User" in text
    assert "Called AE Title Not Recognized" in text


async def test_library_scp_sees_dcmtk_contexts() -> None:
    """The library's SCP negotiates every context DCMTK proposes, preferring its own TS."""
    ae = AE("LIBSCP", supported_contexts=[])
    ae.add_supported_context("1.2.840.10008.1.1", [IMPLICIT_VR_LITTLE_ENDIAN])
    seen = []

    @ae.on_echo
    async def on_echo(request: EchoRequest) -> int:
        seen.append(request.assoc.contexts)
        return 0

    async with ae.serve("127.0.0.1", 0) as server:
        with anyio.fail_after(RUN_TIMEOUT):
            result = await anyio.run_process(
                [
                    ECHOSCU,
                    "-pts",
                    "5",
                    "-ppc",
                    "4",
                    "-aec",
                    "LIBSCP",
                    "127.0.0.1",
                    str(server.port),
                ],
                env=DCMTK_ENV,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    assert len(seen) == 1
    contexts = seen[0]
    assert [c.context_id for c in contexts] == [1, 3, 5, 7]
    assert all(c.accepted and c.transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN for c in contexts)


# ------------------------------------------------------------- our echoscu -> DCMTK storescp


def test_our_echoscu_to_storescp(storescp: Peer) -> None:
    """Our echoscu gets Success from DCMTK's storescp and prints DCMTK-like progress."""
    result = run(our_app("echoscu", "-v", "127.0.0.1", str(storescp.port)))
    text = output(result)
    assert result.returncode == 0, text
    for line in (
        "I: Requesting Association",
        "I: Association Accepted (Max Send PDV: ",
        "I: Sending Echo Request (MsgID 1)",
        "I: Received Echo Response (Success)",
        "I: Releasing Association",
    ):
        assert line in text


def test_our_echoscu_repeat_on_trio(storescp: Peer) -> None:
    """Three C-ECHOs on one association, run on the trio backend."""
    before = storescp.log().count("Association Release")
    result = run(
        our_app(
            "echoscu", "-v", "--backend", "trio", "--repeat", "3", "127.0.0.1", str(storescp.port)
        )
    )
    assert result.returncode == 0, output(result)
    assert output(result).count("Received Echo Response (Success)") == 3
    wait_for_log(storescp, "Association Release", before + 1)


def test_our_echoscu_abort(storescp: Peer) -> None:
    """--abort ends the association with A-ABORT, which storescp logs."""
    before = storescp.log().count("Association Aborted")
    result = run(our_app("echoscu", "-v", "--abort", "127.0.0.1", str(storescp.port)))
    assert result.returncode == 0, output(result)
    assert "I: Aborting Association" in output(result)
    assert "Releasing Association" not in output(result)
    wait_for_log(storescp, "Association Aborted", before + 1)


def test_our_echoscu_connection_refused() -> None:
    """Nobody listening: one clear error line and exit status 1."""
    result = run(our_app("echoscu", "127.0.0.1", str(free_port())))
    assert result.returncode == 1
    assert "E: Association Request Failed" in result.stderr
    assert "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------- rejections


def test_our_echoscu_rejected_by_our_echoscp(our_scp: Peer) -> None:
    """--require-called-aet: result/source/reason 1/1/7 with their names."""
    result = run(our_app("echoscu", "-aec", "SOMEONEELSE", "127.0.0.1", str(our_scp.port)))
    text = output(result)
    assert result.returncode == 1, text
    assert "E: Association Rejected" in text
    assert "called-AE-title-not-recognized" in text
    assert "result=1, source=1, reason=7" in text
    assert "Traceback" not in text


def test_our_echoscu_to_our_echoscp(our_scp: Peer) -> None:
    """The right called AE title is accepted by the same SCP."""
    result = run(
        our_app("echoscu", "-aet", "OURSCU", "-aec", OUR_SCP_AET, "127.0.0.1", str(our_scp.port))
    )
    assert result.returncode == 0, output(result)
    wait_for_log(our_scp, "Received Echo Request (MsgID 1) from OURSCU")


@pytest.fixture
def dcmqrscp(tmp_path: Path) -> Iterator[Peer]:
    """DCMTK's dcmqrscp knowing only the AE title QRSCP (it rejects other called titles).

    It runs in its default fork mode: Debian's 3.6.7 crashes in ``--single-process`` mode
    once the first association is released.
    """
    storage = tmp_path / "db"
    storage.mkdir()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        "NetworkTCPPort  = 104\n"
        "MaxPDUSize      = 16384\n"
        "MaxAssociations = 4\n"
        "HostTable BEGIN\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        "AETable BEGIN\n"
        f"QRSCP {storage} RW (9, 1024mb) ANY\n"
        "AETable END\n"
    )
    port = free_port()
    command = [DCMQRSCP, "-v", "-c", str(config), str(port)]
    peer = start_peer(command, tmp_path / "dcmqrscp.log", port=port, env=DCMTK_ENV)
    yield peer
    stop(peer)


def test_our_echoscu_rejected_by_dcmqrscp(dcmqrscp: Peer) -> None:
    """dcmqrscp rejects an unknown called AE title; our echoscu names source and reason."""
    accepted = run(our_app("echoscu", "-aec", "QRSCP", "127.0.0.1", str(dcmqrscp.port)))
    assert accepted.returncode == 0, output(accepted)
    rejected = run(our_app("echoscu", "-aec", "NOTQRSCP", "127.0.0.1", str(dcmqrscp.port)))
    text = output(rejected)
    assert rejected.returncode == 1, text
    assert "E: Association Rejected: association rejected-permanent" in text
    assert "DICOM UL service-user: called-AE-title-not-recognized" in text
    assert "result=1, source=1, reason=7" in text


# ---------------------------------------------------------------------- echoscp lifecycle


def test_our_echoscp_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM shuts echoscp down cleanly with exit status 0."""
    port = free_port()
    peer = start_peer(
        our_app("echoscp", "-v", str(port), "--bind", "127.0.0.1"),
        tmp_path / "echoscp.log",
        port=port,
    )
    try:
        peer.process.send_signal(signal.SIGTERM)
        assert peer.process.wait(timeout=10) == 0, peer.log()
    finally:
        stop(peer)
    assert "SIGTERM received; shutting down" in peer.log()
    assert "echoscp stopped" in peer.log()


# ---------------------------------------------------------------------- library -> storescp


async def test_library_echo_and_release(storescp: Peer) -> None:
    """AE.associate to storescp: Success, DCMTK's version name, orderly release."""
    ae = AE("LIBSCU")
    async with ae.associate("127.0.0.1", storescp.port, called_ae_title="STORESCP") as assoc:
        status = await assoc.echo()
        assert status.is_success
        assert int(status) == 0
        assert (assoc.peer_implementation_version_name or "").startswith("OFFIS_DCMTK")
        assert assoc.accepted_contexts
    assert assoc.state is State.STA1
    assert assoc.abort_reason is None


async def test_library_abort_then_new_association(storescp: Peer) -> None:
    """assoc.abort(): storescp logs the abort and still serves the next association."""
    ae = AE("LIBSCU")
    before = storescp.log().count("Association Aborted")
    async with ae.associate("127.0.0.1", storescp.port, called_ae_title="STORESCP") as assoc:
        assert (await assoc.echo()).is_success
        await assoc.abort()
        assert not assoc.is_established
    for _ in range(200):  # up to 10 s
        if storescp.log().count("Association Aborted") > before:
            break
        await anyio.sleep(0.05)
    else:
        pytest.fail(f"storescp did not log the abort:\n{storescp.log()}")
    async with ae.associate("127.0.0.1", storescp.port, called_ae_title="STORESCP") as again:
        assert (await again.echo()).is_success


async def test_library_rejected_by_dcmqrscp(dcmqrscp: Peer) -> None:
    """AssociationRejected carries dcmqrscp's result, source and reason."""
    ae = AE("LIBSCU")
    with pytest.raises(AssociationRejected) as caught:
        async with ae.associate("127.0.0.1", dcmqrscp.port, called_ae_title="UNKNOWN"):
            pytest.fail("the association should have been rejected")
    assert (caught.value.result, caught.value.source, caught.value.reason) == (1, 1, 7)
    assert "called-AE-title-not-recognized" in str(caught.value)
