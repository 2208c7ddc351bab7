"""C-STORE of a large Part 10 file from a path: the data set is streamed, not read whole.

A ~40 MB Secondary Capture (random 8-bit pixels, Explicit VR Little Endian) goes to our
own SCP over TCP on 127.0.0.1; it must arrive byte for byte, and the sending process
must not hold the file in memory while doing so.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from aionetdicom import AE, Association
from aionetdicom.contexts import PresentationContext
from aionetdicom.datasets import read_file_meta
from aionetdicom.dimse.command_set import Command, CommandField, make_command
from aionetdicom.errors import AssociationAborted, LocalProtocolError
from aionetdicom.services.storage import StoreRequest
from tests.dicom_files import SECONDARY_CAPTURE_IMAGE_STORAGE, make_sc8, write_file

HOST = "127.0.0.1"
ROWS, COLUMNS = 5000, 8000  # 40 000 000 bytes of 8-bit pixels
CONTEXTS = [PresentationContext(SECONDARY_CAPTURE_IMAGE_STORAGE, (ExplicitVRLittleEndian,))]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = make_sc8(ROWS, COLUMNS, seed=11)
    return write_file(ds, tmp_path_factory.mktemp("big") / "big.dcm", ExplicitVRLittleEndian)


def dataset_digest(path: Path) -> tuple[int, str]:
    """Length and SHA-256 of the bytes after the file's meta header, read in pieces."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        handle.seek(read_file_meta(path).dataset_offset)
        while piece := handle.read(1 << 20):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


@asynccontextmanager
async def hashing_scp(received: list[tuple[int, str]]) -> AsyncIterator[int]:
    """Our SCP accepting Secondary Capture; it records (length, SHA-256) of each data set."""
    scp = AE("STREAM-SCP")
    scp.add_supported_context(SECONDARY_CAPTURE_IMAGE_STORAGE, [ExplicitVRLittleEndian])

    @scp.on_store
    async def on_store(request: StoreRequest) -> int:
        received.append((len(request.raw), hashlib.sha256(request.raw).hexdigest()))
        return 0x0000

    async with scp.serve(HOST, 0) as server:
        yield server.port


async def test_big_file_arrives_byte_for_byte(big_file: Path) -> None:
    received: list[tuple[int, str]] = []
    async with (
        hashing_scp(received) as port,
        AE("STREAM-SCU").associate(HOST, port, contexts=CONTEXTS) as assoc,
    ):
        status = await assoc.store(big_file)
        assert status.is_success, status
        assert (await assoc.store(str(big_file))).is_success
    expected = dataset_digest(big_file)
    assert expected[0] > ROWS * COLUMNS
    assert received == [expected, expected]


SCU_SCRIPT = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import anyio
    from pydicom.uid import ExplicitVRLittleEndian
    from aionetdicom import AE
    from aionetdicom.contexts import PresentationContext

    SC = "1.2.840.10008.5.1.4.1.1.7"
    WHOLE = sys.argv[3] == "whole"

    def status_bytes(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        raise LookupError(field)

    async def main(port: int, path: str) -> None:
        contexts = [PresentationContext(SC, (ExplicitVRLittleEndian,))]
        async with AE("STREAM-SCU").associate("127.0.0.1", port, contexts=contexts) as assoc:
            if WHOLE:  # what store() did before streaming: the data set read whole
                from aionetdicom.services import storage
                storage._read_file_meta = storage._read_part10
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM (peak RSS) to the current RSS
            baseline = status_bytes("VmRSS:")
            tracemalloc.start()
            status = await assoc.store(path)
            _, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            peak = status_bytes("VmHWM:")
        print(json.dumps({"status": int(status), "baseline_rss": baseline,
                          "peak_rss": peak, "traced_peak": traced_peak}))

    anyio.run(main, int(sys.argv[1]), sys.argv[2])
    """
)


async def _measure(big_file: Path, mode: str) -> dict[str, int]:
    received: list[tuple[int, str]] = []
    async with hashing_scp(received) as port:
        result = await anyio.run_process(
            [sys.executable, "-c", SCU_SCRIPT, str(port), str(big_file), mode], check=False
        )
    assert result.returncode == 0, result.stderr.decode()
    measures: dict[str, int] = json.loads(result.stdout)
    assert measures["status"] == 0
    assert received == [dataset_digest(big_file)]
    return measures


async def test_sending_a_big_file_keeps_memory_bounded(big_file: Path) -> None:
    """The SCU runs in a subprocess storing the 40 MB file; its memory is measured.

    Two measures during ``store`` alone: the peak RSS (Linux ``VmHWM``, reset just
    before through ``/proc/self/clear_refs``) less the RSS before, and the peak of the
    Python allocations ``tracemalloc`` traces. Streaming holds a few MiB whatever the
    file size (1 MiB reads, the PDUs waiting for the next write, the ~4 MiB joined
    for one write), so both must stay under half the file. As a control, the same
    script with the data set read whole (the code before streaming) must exceed
    that bound, so the check can fail.
    """
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    file_size = (await anyio.Path(big_file).stat()).st_size
    bound = file_size / 2
    streamed = await _measure(big_file, "stream")
    whole = await _measure(big_file, "whole")
    for name, measures in (("streamed", streamed), ("read whole", whole)):
        growth = measures["peak_rss"] - measures["baseline_rss"]
        print(
            f"{name}: file {file_size} B, peak RSS growth {growth} B, "
            f"traced peak {measures['traced_peak']} B"
        )
    assert streamed["traced_peak"] < bound
    assert streamed["peak_rss"] - streamed["baseline_rss"] < bound
    assert whole["traced_peak"] > file_size
    assert whole["peak_rss"] - whole["baseline_rss"] > bound


async def test_length_mismatch_aborts(tmp_path: Path) -> None:
    """A streamed data set shorter or longer than announced aborts the association."""

    async def chunks(*pieces: bytes) -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    received: list[tuple[int, str]] = []
    for pieces, match in [((b"ab", b"cd"), "ended after 4 of the 6"), ((b"abcdefgh",), "longer")]:
        async with (
            hashing_scp(received) as port,
            AE("STREAM-SCU").associate(HOST, port, contexts=CONTEXTS) as assoc,
        ):
            context_id = assoc.accepted_contexts[0].context_id
            with pytest.raises(LocalProtocolError, match=match):
                await assoc.send_message_stream(
                    context_id, _store_command(assoc), chunks(*pieces), 6
                )
            assert not assoc.is_established
            with pytest.raises(AssociationAborted, match="cut short"):
                await assoc.send_message_stream(context_id, _store_command(assoc), chunks(), 0)
            with anyio.fail_after(5):
                await assoc.wait_closed()
    assert received == []


def _store_command(assoc: Association) -> Command:
    return make_command(
        CommandField.C_STORE_RQ,
        has_dataset=True,
        MessageID=assoc.next_message_id(),
        Priority=0,
        AffectedSOPClassUID=SECONDARY_CAPTURE_IMAGE_STORAGE,
        AffectedSOPInstanceUID="1.2.3.4",
    )
