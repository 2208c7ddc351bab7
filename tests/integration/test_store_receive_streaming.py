"""Streaming receive of C-STORE data sets: our SCU to our own SCP over TCP on 127.0.0.1.

A handler registered with ``streaming=True`` (or ``store_service(..., streaming=True)``)
gets the request as soon as the command arrives and reads the data set while it
arrives: ``save_to`` writes it to disk in bounded memory, so an instance far larger
than the AE's in-memory limit is received; ``peek`` reads only the elements before
Pixel Data. Aborts, hostile UIDs, UID mismatches and a full disk leave nothing behind.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from aionetdicom import AE, Association
from aionetdicom.apps import storescp
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.datasets import encode_dataset, read_file_meta
from aionetdicom.dimse.command_set import CommandField, make_command
from aionetdicom.errors import AssociationAborted, DicomNetworkError
from aionetdicom.services import storage
from aionetdicom.services.storage import StoreRequest, storage_contexts, store_service
from tests.dicom_files import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, make_ct, make_mr, write_file

pytestmark = [
    # A streamed data set must not leave half-read async generators to be finalized.
    pytest.mark.filterwarnings("error::ResourceWarning"),
    # pydicom's opinion of the hostile UIDs sent on purpose.
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length .* exceeds:UserWarning"),
]

HOST = "127.0.0.1"
SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)
SUPPORTED = [*VERIFICATION, *storage_contexts((CT_IMAGE_STORAGE, MR_IMAGE_STORAGE), SYNTAXES)]
#: The in-memory limit of the SCPs here: far below the big instance.
MEMORY_LIMIT = 1024 * 1024
#: Fails a test that would otherwise hang (never reached when the code is right).
LIMIT = 60.0
SUCCESS = 0x0000
INVALID_SOP_INSTANCE = 0x0117
DATASET_MISMATCH = 0xA900
OUT_OF_RESOURCES = 0xA700
STORE_FAILURE = 0xC211

Handler = Callable[[StoreRequest], Awaitable[int]]


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def big_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Path]:
    """A CT instance of ~8 MiB (2048 x 2048, 16 bits) as an Explicit VR LE file."""
    ds = make_ct(2048, 2048, seed=21)
    path = write_file(ds, tmp_path_factory.mktemp("big") / "big.dcm", ExplicitVRLittleEndian)
    assert len(dataset_of(path)) > 8 * MEMORY_LIMIT
    return ds, path


def dataset_of(path: Path) -> bytes:
    """The bytes after a Part 10 file's File Meta Information."""
    return path.read_bytes()[read_file_meta(path).dataset_offset :]


def all_files(root: Path) -> list[Path]:
    """Every file below ``root``, hidden (temporary) ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def scp_ae(**kwargs: Any) -> AE:
    """Our Storage SCP, with an in-memory limit of :data:`MEMORY_LIMIT`."""
    kwargs.setdefault("maximum_dataset_size", MEMORY_LIMIT)
    return AE("STREAM-SCP", supported_contexts=SUPPORTED, **kwargs)


@asynccontextmanager
async def serving(scp: AE) -> AsyncIterator[int]:
    async with scp.serve(HOST, 0) as server:
        yield server.port


@asynccontextmanager
async def connect(
    port: int, contexts: list[PresentationContext] | None = None
) -> AsyncIterator[Association]:
    async with AE("STREAM-SCU").associate(
        HOST,
        port,
        called_ae_title="STREAM-SCP",
        contexts=SUPPORTED if contexts is None else contexts,
    ) as assoc:
        yield assoc


@asynccontextmanager
async def streaming_pair(
    handler: Handler, contexts: list[PresentationContext] | None = None, **kwargs: Any
) -> AsyncIterator[Association]:
    """An SCP whose C-STORE handler is ``handler`` (streaming) and an SCU association."""
    scp = scp_ae(**kwargs)
    scp.on_store(streaming=True)(handler)
    async with serving(scp) as port, connect(port, contexts) as assoc:
        yield assoc


def context_for(assoc: Association, sop_class: str, syntax: str) -> int:
    for context in assoc.accepted_contexts:
        if context.abstract_syntax == sop_class and context.transfer_syntax == syntax:
            return context.context_id
    raise AssertionError(f"no accepted context for {sop_class} in {syntax}")


async def send_store(
    assoc: Association,
    raw: bytes,
    *,
    sop_class: str,
    sop_instance: str,
    syntax: str = ExplicitVRLittleEndian,
) -> int:
    """C-STORE ``raw`` with a command of our making (any SOP Instance UID); the status."""
    message_id = assoc.next_message_id()
    command = make_command(
        CommandField.C_STORE_RQ,
        has_dataset=True,
        MessageID=message_id,
        Priority=0,
        AffectedSOPClassUID=sop_class,
    )
    if len(sop_instance) <= 64:
        command["AffectedSOPInstanceUID"] = sop_instance
    else:  # longer than a UID may be: the encoder refuses it, so write it raw
        command._unknown[0x1000] = sop_instance.encode("ascii")
    async with assoc.expect_responses(message_id) as responses:
        await assoc.send_message(context_for(assoc, sop_class, syntax), command, raw)
        response = await assoc.receive_response(responses, "C-STORE response")
    status = response.command.get("Status")
    assert isinstance(status, int)
    return status


def with_uid(ds: Dataset, uid: str) -> Dataset:
    """A copy of ``ds`` with SOP Instance UID ``uid`` (pydicom warns; we mean it)."""
    out = Dataset()
    out.update(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.SOPInstanceUID = uid
    return out


def encoded(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encode_dataset(ds, syntax)


# ------------------------------------------------------------------ larger than memory


async def test_instance_larger_than_the_memory_limit_is_saved(
    tmp_path: Path, big_ct: tuple[Dataset, Path]
) -> None:
    ds, source = big_ct
    folder = tmp_path / "in" / "coming"  # created by save_to
    seen: list[tuple[bool, str, Path | None]] = []

    async def handler(request: StoreRequest) -> int:
        try:
            request.raw  # noqa: B018 - streamed: not in memory
        except RuntimeError as exc:
            raw_error = str(exc)
        else:
            raw_error = ""
        path = await request.save_to(folder)
        seen.append((request.is_streaming, raw_error, request.path))
        assert str(request.dataset.PatientName) == str(ds.PatientName)  # read back from disk
        assert path == request.path
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            status = await assoc.store(source)
            assert status.is_success, status
            assert (await assoc.echo()).is_success
    final = folder / f"{ds.SOPInstanceUID}.dcm"
    ((streaming, raw_error, path),) = seen
    assert streaming
    assert "streamed" in raw_error
    assert path == final
    assert all_files(tmp_path) == [final]
    assert dataset_of(final) == dataset_of(source)
    stored = pydicom.dcmread(final)
    assert stored.PixelData == ds.PixelData


async def test_saved_file_has_correct_file_meta_information(
    tmp_path: Path, big_ct: tuple[Dataset, Path]
) -> None:
    ds, source = big_ct
    headers: list[bytes] = []
    scp = scp_ae()

    @scp.on_store(streaming=True)
    async def handler(request: StoreRequest) -> int:
        headers.append(request.file_header())
        await request.save_to(tmp_path)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port) as assoc:
            assert (await assoc.store(source)).is_success
    final = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    data = final.read_bytes()
    (header,) = headers
    assert data.startswith(header)
    assert header[:132] == bytes(128) + b"DICM"
    meta = read_file_meta(final)
    assert meta.dataset_offset == len(header)
    assert meta.sop_instance_uid == ds.SOPInstanceUID
    assert meta.sop_class_uid == CT_IMAGE_STORAGE
    assert meta.transfer_syntax == ExplicitVRLittleEndian
    stored = pydicom.dcmread(final)
    file_meta = stored.file_meta
    assert file_meta.FileMetaInformationGroupLength == len(header) - 132 - 12
    assert file_meta.FileMetaInformationVersion == b"\x00\x01"
    assert file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert file_meta.ImplementationClassUID == scp.implementation_class_uid
    assert file_meta.ImplementationVersionName == scp.implementation_version_name
    assert file_meta.SourceApplicationEntityTitle == "STREAM-SCP"
    assert file_meta.ReceivingApplicationEntityTitle == "STREAM-SCP"
    assert file_meta.SendingApplicationEntityTitle == "STREAM-SCU"
    assert stored.SOPInstanceUID == ds.SOPInstanceUID
    assert stored.PixelData == ds.PixelData


async def test_non_streaming_handler_over_the_limit_aborts(
    tmp_path: Path, big_ct: tuple[Dataset, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The same instance to an ordinary handler: the limit aborts the association."""
    _, source = big_ct
    calls: list[StoreRequest] = []
    scp = scp_ae()

    @scp.on_store
    async def handler(request: StoreRequest) -> int:
        calls.append(request)
        return SUCCESS

    with caplog.at_level(logging.WARNING, logger="aionetdicom"), anyio.fail_after(LIMIT):
        async with serving(scp) as port:
            async with connect(port) as assoc:
                with pytest.raises(DicomNetworkError) as info:
                    await assoc.store(source)
                await assoc.wait_closed()
                assert not assoc.is_established
            # The server goes on serving.
            async with connect(port) as other:
                assert (await other.echo()).is_success
    assert calls == []
    assert isinstance(info.value, AssociationAborted)
    assert f"data set exceeds the limit of {MEMORY_LIMIT} bytes" in caplog.text


async def test_streamed_size_limit_aborts_and_leaves_nothing(
    tmp_path: Path, big_ct: tuple[Dataset, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, source = big_ct
    errors: list[BaseException] = []
    finished = anyio.Event()
    streamed_limit = 3 * MEMORY_LIMIT

    async def handler(request: StoreRequest) -> int:
        try:
            await request.save_to(tmp_path)
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            finished.set()
        return SUCCESS

    with caplog.at_level(logging.WARNING, logger="aionetdicom"), anyio.fail_after(LIMIT):
        async with streaming_pair(handler, maximum_streamed_dataset_size=streamed_limit) as assoc:
            with pytest.raises(AssociationAborted):
                await assoc.store(source)
            await finished.wait()
    assert len(errors) == 1
    assert f"data set exceeds the limit of {streamed_limit} bytes" in caplog.text
    assert all_files(tmp_path) == []


async def test_handler_returning_without_reading_drains_the_rest(
    big_ct: tuple[Dataset, Path],
) -> None:
    """A streaming handler may answer without reading (or after peeking): the rest of
    the data set is read and dropped, and the association goes on."""
    ds, source = big_ct
    names: list[str] = []

    async def handler(request: StoreRequest) -> int:
        if request.message_id % 2 == 0:
            names.append(str((await request.peek()).PatientName))
        return 0xB000 if request.message_id == 1 else SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            first = await assoc.store(source)
            second = await assoc.store(source)
            third = await assoc.store(make_ct(seed=22))
            assert (await assoc.echo()).is_success
    assert int(first) == 0xB000
    assert second.is_success
    assert third.is_success
    assert names == [str(ds.PatientName)]


# ------------------------------------------------------------------ abort mid-transfer


async def _counting_write(monkeypatch: pytest.MonkeyPatch) -> anyio.Event:
    """An event set (from the worker thread) once save_to has written part of the data."""
    writing = anyio.Event()
    real = storage._write_all
    calls = 0

    def write(fd: int, data: bytes | memoryview) -> None:
        nonlocal calls
        real(fd, data)
        calls += 1
        if calls == 2:  # the header, then data set bytes: the part file has both
            anyio.from_thread.run_sync(writing.set)

    monkeypatch.setattr(storage, "_write_all", write)
    return writing


@pytest.mark.parametrize("how", ["sender-fails", "connection-closed"])
async def test_abort_mid_transfer_leaves_no_file(
    tmp_path: Path,
    big_ct: tuple[Dataset, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    ds, source = big_ct
    raw = dataset_of(source)
    folder = tmp_path / "store"
    writing = await _counting_write(monkeypatch)
    caplog.set_level(logging.INFO, logger="aionetdicom")
    errors: list[BaseException] = []
    finished = anyio.Event()

    async def handler(request: StoreRequest) -> int:
        try:
            await request.save_to(folder)
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            finished.set()
        return SUCCESS

    scp = scp_ae()
    scp.on_store(streaming=True)(handler)
    step = 512 * 1024

    with anyio.fail_after(LIMIT):
        async with serving(scp) as port:
            async with connect(port) as assoc:

                async def chunks() -> AsyncIterator[bytes]:
                    cut = False
                    for start in range(0, len(raw), step):
                        if start >= 6 * 1024 * 1024 and not cut:
                            cut = True  # once: what follows goes to a closed connection
                            await writing.wait()
                            # Part of the data set is on disk, in the temporary file only.
                            (part,) = folder.iterdir()
                            assert part.name.startswith(f".{ds.SOPInstanceUID}.dcm.")
                            assert part.name.endswith(".part")
                            if how == "sender-fails":
                                raise RuntimeError("the sender gave up")
                            await assoc._stream.aclose()
                        yield raw[start : start + step]

                command = make_command(
                    CommandField.C_STORE_RQ,
                    has_dataset=True,
                    MessageID=assoc.next_message_id(),
                    Priority=0,
                    AffectedSOPClassUID=CT_IMAGE_STORAGE,
                    AffectedSOPInstanceUID=ds.SOPInstanceUID,
                )
                context_id = context_for(assoc, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
                expected: type[BaseException] = (
                    RuntimeError if how == "sender-fails" else DicomNetworkError
                )
                with pytest.raises(expected):
                    await assoc.send_message_stream(context_id, command, chunks(), len(raw))
                await finished.wait()
            # Another association is served as before.
            async with connect(port) as other:
                assert (await other.echo()).is_success
    assert len(errors) == 1
    assert isinstance(errors[0], DicomNetworkError)
    assert writing.is_set()
    assert list(folder.iterdir()) == []
    # The peer's abort is no failure of the handler: no error (nor traceback) logged
    # for it, and no claim of a response that cannot be sent.
    assert "C-STORE not completed" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "answering 0x" not in caplog.text


# ------------------------------------------------------------------ hostile UIDs

HOSTILE_UIDS = [
    pytest.param("../x", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("1.2.3\x00.4", id="nul"),
    pytest.param("1.2.\x013", id="control"),
    pytest.param("1.2\n.3", id="newline"),
    pytest.param("", id="empty"),
    pytest.param("1." * 32 + "12", id="too-long"),
    pytest.param("not a uid", id="text"),
    pytest.param("1.2.abc", id="letters"),
    pytest.param("..", id="bare-dotdot"),
]


async def _store_and_check(
    tmp_path: Path, sends: Callable[[Association], Awaitable[int]], check_uids: bool = True
) -> tuple[int, list[BaseException]]:
    folder = tmp_path / "store"
    folder.mkdir()
    errors: list[BaseException] = []

    async def handler(request: StoreRequest) -> int:
        try:
            await request.save_to(folder, check_uids=check_uids)
        except Exception as exc:
            errors.append(exc)
            raise
        return SUCCESS

    good = make_ct(seed=30)
    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            status = await sends(assoc)
            # The association is fine: the next instance is stored.
            assert (await assoc.store(good)).is_success
    assert all_files(tmp_path) == [folder / f"{good.SOPInstanceUID}.dcm"]
    return status, errors


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
async def test_hostile_command_uid_is_refused(tmp_path: Path, uid: str) -> None:
    """The command's SOP Instance UID names the file: refused with 0x0117, nothing written."""
    ds = with_uid(make_ct(seed=31), uid)

    async def send(assoc: Association) -> int:
        return await send_store(assoc, encoded(ds), sop_class=CT_IMAGE_STORAGE, sop_instance=uid)

    for check_uids in (True, False):
        folder = tmp_path / str(check_uids)
        folder.mkdir()
        status, errors = await _store_and_check(folder, send, check_uids)
        assert status == INVALID_SOP_INSTANCE
        assert [type(exc) for exc in errors] == [storage.InvalidSOPInstanceUID]


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
async def test_hostile_dataset_uid_is_refused(tmp_path: Path, uid: str) -> None:
    """A valid command UID with a hostile one in the data set: 0xA900, nothing written."""
    command_uid = generate_uid()
    ds = with_uid(make_ct(seed=32), uid)

    async def send(assoc: Association) -> int:
        return await send_store(
            assoc, encoded(ds), sop_class=CT_IMAGE_STORAGE, sop_instance=command_uid
        )

    status, errors = await _store_and_check(tmp_path, send)
    assert status == DATASET_MISMATCH
    assert [type(exc) for exc in errors] == [storage.DatasetMismatch]


async def test_hostile_dataset_uid_without_checks_is_saved_under_the_command_uid(
    tmp_path: Path,
) -> None:
    command_uid = generate_uid()
    raw = encoded(with_uid(make_ct(seed=33), "../../escape"))
    folder = tmp_path / "store"

    async def handler(request: StoreRequest) -> int:
        await request.save_to(folder, check_uids=False)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            status = await send_store(
                assoc, raw, sop_class=CT_IMAGE_STORAGE, sop_instance=command_uid
            )
    assert status == SUCCESS
    assert all_files(tmp_path) == [folder / f"{command_uid}.dcm"]
    assert dataset_of(folder / f"{command_uid}.dcm") == raw


# ------------------------------------------------------------------ UID mismatch


@pytest.mark.parametrize("what", ["instance", "class"])
async def test_uid_mismatch_is_refused(tmp_path: Path, what: str) -> None:
    ds = make_ct(seed=34)
    raw = encoded(ds)
    command_uid = generate_uid() if what == "instance" else ds.SOPInstanceUID
    sop_class = CT_IMAGE_STORAGE if what == "instance" else MR_IMAGE_STORAGE

    async def send(assoc: Association) -> int:
        return await send_store(assoc, raw, sop_class=sop_class, sop_instance=command_uid)

    status, errors = await _store_and_check(tmp_path, send)
    assert status == DATASET_MISMATCH
    assert [type(exc) for exc in errors] == [storage.DatasetMismatch]


async def test_uid_mismatch_is_saved_with_check_uids_false(
    tmp_path: Path, big_ct: tuple[Dataset, Path]
) -> None:
    _, source = big_ct
    raw = dataset_of(source)
    command_uid = generate_uid()
    folder = tmp_path / "store"

    async def handler(request: StoreRequest) -> int:
        await request.save_to(folder, check_uids=False)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            status = await send_store(
                assoc, raw, sop_class=CT_IMAGE_STORAGE, sop_instance=command_uid
            )
    assert status == SUCCESS
    final = folder / f"{command_uid}.dcm"
    assert all_files(tmp_path) == [final]
    assert dataset_of(final) == raw
    assert pydicom.dcmread(final).file_meta.MediaStorageSOPInstanceUID == command_uid


async def test_verify_uids_alone(tmp_path: Path) -> None:
    """verify_uids raises DatasetMismatch (answered 0xA900) and passes matching UIDs."""
    outcomes: list[str] = []

    async def handler(request: StoreRequest) -> int:
        await request.verify_uids()
        outcomes.append(request.sop_instance_uid)
        return SUCCESS

    ds = make_ct(seed=35)
    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            assert (await assoc.store(ds)).is_success
            status = await send_store(
                assoc, encoded(ds), sop_class=CT_IMAGE_STORAGE, sop_instance="1.2.3.4"
            )
    assert status == DATASET_MISMATCH
    assert outcomes == [ds.SOPInstanceUID]


# ------------------------------------------------------------------ disk full


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
async def test_disk_full_answers_out_of_resources(
    tmp_path: Path, big_ct: tuple[Dataset, Path], monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    ds, source = big_ct
    folder = tmp_path / "store"
    real = storage._write_all
    full = False
    partial: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> None:
        if full and os.fstat(fd).st_size > 0:  # past the header: half, then ENOSPC
            os.write(fd, memoryview(data)[: len(data) // 2])
            partial.append(os.fstat(fd).st_size)
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number))
        real(fd, data)

    monkeypatch.setattr(storage, "_write_all", write)

    async def handler(request: StoreRequest) -> int:
        await request.save_to(folder)
        return SUCCESS

    other = make_mr(seed=36)
    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            assert (await assoc.store(source)).is_success
            assert (await assoc.store(other)).is_success
            before = {path: path.read_bytes() for path in all_files(tmp_path)}
            full = True
            # The same instance again (its file exists) and a new one: both fail.
            status = await assoc.store(source)
            assert int(status) == OUT_OF_RESOURCES
            assert status.is_failure
            status = await assoc.store(make_ct(1024, 1024, seed=37))
            assert int(status) == OUT_OF_RESOURCES
            full = False
            assert (await assoc.echo()).is_success
    assert len(partial) == 2
    assert len(before) == 2
    # Only the files stored before, unchanged; no partial or temporary file.
    assert {path: path.read_bytes() for path in all_files(tmp_path)} == before
    assert dataset_of(folder / f"{ds.SOPInstanceUID}.dcm") == dataset_of(source)


# ------------------------------------------------------------------ peek


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "in-memory"])
@pytest.mark.parametrize(
    "syntax",
    SYNTAXES,
    ids=["explicit-le", "implicit-le", "explicit-be", "deflated"],
)
async def test_peek_then_save_to(tmp_path: Path, syntax: str, streaming: bool) -> None:
    """peek gives the elements before Pixel Data in every uncompressed syntax (streamed
    or in memory), and save_to afterwards still writes the whole instance."""
    ds = make_ct(1024, 1024, seed=40)  # 2 MiB: more than the in-memory limit
    source = write_file(ds, tmp_path / "source.dcm", syntax)
    folder = tmp_path / "store"
    peeked: list[Dataset] = []
    partial: list[Dataset] = []

    async def handler(request: StoreRequest) -> int:
        assert request.transfer_syntax == syntax
        partial.append(await request.peek(stop_before=0x00100000))
        peeked.append(await request.peek())
        await request.save_to(folder)
        return SUCCESS

    contexts = [*VERIFICATION, PresentationContext(CT_IMAGE_STORAGE, (syntax,))]
    scp = scp_ae(maximum_dataset_size=MEMORY_LIMIT if streaming else None)
    scp.on_store(streaming=streaming)(handler)
    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port, contexts) as assoc:
            assert (await assoc.store(source)).is_success
    (head,) = peeked
    assert "PixelData" not in head
    assert head.PatientName == ds.PatientName
    assert head.StudyInstanceUID == ds.StudyInstanceUID
    assert head.SOPInstanceUID == ds.SOPInstanceUID
    assert head.Rows == ds.Rows == 1024
    assert head.RescaleIntercept == ds.RescaleIntercept
    assert list(head.ImageOrientationPatient) == list(ds.ImageOrientationPatient)
    (group8,) = partial
    assert group8.SOPInstanceUID == ds.SOPInstanceUID
    assert "PatientName" not in group8
    final = folder / f"{ds.SOPInstanceUID}.dcm"
    assert all_files(tmp_path) == sorted([source, final])
    assert dataset_of(final) == dataset_of(source)
    stored = pydicom.dcmread(final)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert (stored.pixel_array == pydicom.dcmread(source).pixel_array).all()


async def test_streamed_read_beyond_the_memory_limit_is_out_of_resources(tmp_path: Path) -> None:
    """read() of a streamed data set stops at maximum_dataset_size: 0xA700, nothing kept;
    the association carries on."""
    ds = make_ct(1024, 1024, seed=42)  # 2 MiB
    source = write_file(ds, tmp_path / "big.dcm", ExplicitVRLittleEndian)
    reached: list[str] = []

    async def handler(request: StoreRequest) -> int:
        try:
            await request.read()
        except MemoryError as exc:
            reached.append(str(exc))
            raise
        return SUCCESS

    scp = scp_ae(maximum_dataset_size=MEMORY_LIMIT)
    scp.on_store(streaming=True)(handler)
    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port) as assoc:
            status = await assoc.store(source)
            assert (await assoc.echo()).is_success
    assert int(status) == 0xA700
    assert reached
    assert "maximum_dataset_size" in reached[0]


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "in-memory"])
async def test_read_then_save_to_chunks_and_peek(tmp_path: Path, streaming: bool) -> None:
    """Once read() has the data set in memory, a streamed request is used as one received
    whole: save_to writes it (once), chunks gives it, peek and dataset see it."""
    first, second = make_ct(seed=60), make_mr(seed=61)
    raws = {ds.SOPInstanceUID: encoded(ds) for ds in (first, second)}
    folder = tmp_path / "store"
    results: dict[str, object] = {}

    async def handler(request: StoreRequest) -> int:
        data = await request.read()
        assert data == raws[request.sop_instance_uid]
        assert request.raw == data
        assert (await request.peek()).SOPInstanceUID == request.sop_instance_uid
        assert request.dataset.SOPInstanceUID == request.sop_instance_uid
        if request.message_id == 1:
            results["saved"] = await request.save_to(folder)
            try:
                await request.save_to(folder)
            except RuntimeError as exc:
                results["saved-again"] = str(exc)
        else:
            results["chunks"] = b"".join([bytes(chunk) async for chunk in request.chunks()])
        assert await request.read() == data  # read() again: the same bytes
        return SUCCESS

    scp = scp_ae()
    scp.on_store(streaming=streaming)(handler)
    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port) as assoc:
            assert (await assoc.store(first)).is_success
            assert (await assoc.store(second)).is_success
    final = folder / f"{first.SOPInstanceUID}.dcm"
    assert results["saved"] == final
    assert "already read" in str(results["saved-again"])
    assert all_files(folder) == [final]
    assert dataset_of(final) == raws[first.SOPInstanceUID]
    assert pydicom.dcmread(final).file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert results["chunks"] == raws[second.SOPInstanceUID]


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "in-memory"])
async def test_peek_read_and_chunks(tmp_path: Path, streaming: bool) -> None:
    """peek, then read (or chunks) gives the whole data set; each reads once."""
    ds = make_mr(256, 256, seed=41)
    source = write_file(ds, tmp_path / "mr.dcm", ExplicitVRLittleEndian)
    raw = dataset_of(source)
    results: dict[str, object] = {}

    async def handler(request: StoreRequest) -> int:
        results["streaming"] = request.is_streaming
        results["peek"] = str((await request.peek()).PatientName)
        if request.message_id == 1:
            results["read"] = await request.read()
            results["raw"] = request.raw
            results["dataset"] = request.dataset.PatientName
        else:
            results["chunks"] = b"".join([bytes(chunk) async for chunk in request.chunks()])
            try:
                results["again"] = await request.read()
            except RuntimeError as exc:
                results["again"] = str(exc)
            try:
                await request.peek()
            except RuntimeError as exc:
                results["late-peek"] = str(exc)
        return SUCCESS

    scp = AE("STREAM-SCP", supported_contexts=SUPPORTED)
    scp.on_store(streaming=streaming)(handler)
    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port) as assoc:
            assert (await assoc.store(source)).is_success
            assert (await assoc.store(source)).is_success
    assert results["streaming"] is streaming
    assert results["peek"] == str(ds.PatientName)
    assert results["read"] == raw
    assert results["raw"] == raw
    assert results["dataset"] == ds.PatientName
    assert results["chunks"] == raw
    if streaming:
        # The stream was read by chunks(): nothing is left to read or peek at.
        assert "already read" in str(results["again"])
        assert "must come before" in str(results["late-peek"])
    else:
        # In memory the bytes stay: read() gives them again, peek() still works.
        assert results["again"] == raw
        assert "late-peek" not in results


async def test_peek_walks_a_long_prefix_in_linear_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long prefix in small fragments: the bytes peek walks stay proportional to the
    prefix (walking it again after every fragment would be quadratic)."""
    real = storage.prefix_end
    walked: list[int] = []

    def counting(data: Any, *, implicit: bool, little: bool, stop_tag: int) -> int | None:
        if stop_tag == storage.PIXEL_DATA:
            walked.append(len(data))
        return real(data, implicit=implicit, little=little, stop_tag=stop_tag)

    monkeypatch.setattr(storage, "prefix_end", counting)
    ds = make_ct(seed=55)
    items = []
    for index in range(8000):
        item = Dataset()
        item.is_undefined_length_sequence_item = True
        item.TextValue = f"finding number {index:05d}"
        items.append(item)
    ds.ContentSequence = items
    ds["ContentSequence"].is_undefined_length = True
    raw = encoded(ds)
    offset = raw.index(b"\xe0\x7f\x10\x00OW")  # where Pixel Data starts
    assert offset > 300_000
    pdu = 4096
    heads: list[int] = []

    async def handler(request: StoreRequest) -> int:
        heads.append(len((await request.peek()).ContentSequence))
        await request.save_to(tmp_path)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler, maximum_pdu_length=pdu) as assoc:
            assert (await assoc.store(ds)).is_success
    assert heads == [8000]
    assert dataset_of(tmp_path / f"{ds.SOPInstanceUID}.dcm") == raw
    assert len(walked) > 1
    assert max(walked) >= offset + 4
    assert sum(walked) <= 4 * offset + 10 * pdu


async def test_peek_of_a_data_set_without_pixel_data(tmp_path: Path) -> None:
    """No Pixel Data: peek gives the whole data set, and save_to still writes it all."""
    ds = make_ct(seed=42)
    del ds.PixelData
    raw = encoded(ds, ImplicitVRLittleEndian)
    heads: list[Dataset] = []

    async def handler(request: StoreRequest) -> int:
        heads.append(await request.peek())
        await request.save_to(tmp_path)
        return SUCCESS

    contexts = [PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian,))]
    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler, contexts) as assoc:
            status = await send_store(
                assoc,
                raw,
                sop_class=CT_IMAGE_STORAGE,
                sop_instance=ds.SOPInstanceUID,
                syntax=ImplicitVRLittleEndian,
            )
    assert status == SUCCESS
    (head,) = heads
    assert head.Rows == ds.Rows
    assert dataset_of(tmp_path / f"{ds.SOPInstanceUID}.dcm") == raw


def nested_sequences(ds: Dataset, levels: int) -> Dataset:
    """``ds`` with ``levels`` Content Sequences nested in one another (undefined lengths)."""
    inner = Dataset()
    inner.TextValue = "deep"
    for _ in range(levels):  # the last item's sequence becomes the top-level one
        item = Dataset()
        item.is_undefined_length_sequence_item = True
        item.ContentSequence = [inner]
        item["ContentSequence"].is_undefined_length = True
        inner = item
    out = Dataset()
    out.update(ds)
    out.ContentSequence = inner.ContentSequence
    out["ContentSequence"].is_undefined_length = True
    return out


async def test_hostile_nesting_fails_peek_not_the_association(tmp_path: Path) -> None:
    """Sequences nested beyond MAX_NESTING: peek raises DatasetError (answered 0xC211)."""
    from aionetdicom.dataset_prefix import MAX_NESTING

    outcomes: list[str] = []

    async def handler(request: StoreRequest) -> int:
        try:
            head = await request.peek()
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append(str(head.PatientName))
        await request.save_to(tmp_path)
        return SUCCESS

    deep = make_ct(seed=44)
    too_deep = nested_sequences(make_ct(seed=45), MAX_NESTING + 1)
    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            refused = await assoc.store(too_deep)
            assert (await assoc.store(nested_sequences(deep, MAX_NESTING))).is_success
    assert int(refused) == STORE_FAILURE
    assert outcomes == ["DatasetError", str(deep.PatientName)]
    assert all_files(tmp_path) == [tmp_path / f"{deep.SOPInstanceUID}.dcm"]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
async def test_peek_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syntax: str) -> None:
    """Elements before Pixel Data longer than PEEK_LIMIT: peek raises DatasetError; what
    it read is not lost, save_to still writes the whole data set."""
    monkeypatch.setattr(storage, "PEEK_LIMIT", 64 * 1024)
    ds = make_ct(512, 512, seed=46)
    ds.add_new(0x00282000, "OB", bytes(range(256)) * 1024)  # 256 KiB ICC Profile
    source = write_file(ds, tmp_path / "source.dcm", syntax)
    folder = tmp_path / "store"
    errors: list[str] = []

    async def handler(request: StoreRequest) -> int:
        assert (await request.peek(stop_before=0x00200000)).PatientName == ds.PatientName
        try:
            await request.peek()
        except storage.DatasetError as exc:
            errors.append(str(exc))
        await request.save_to(folder)
        return SUCCESS

    contexts = [*VERIFICATION, PresentationContext(CT_IMAGE_STORAGE, (syntax,))]
    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler, contexts) as assoc:
            assert (await assoc.store(source)).is_success
    (error,) = errors
    assert f"take more than {64 * 1024} bytes" in error
    final = folder / f"{ds.SOPInstanceUID}.dcm"
    assert all_files(folder) == [final]
    assert dataset_of(final) == dataset_of(source)


async def test_handler_raising_before_reading(tmp_path: Path, big_ct: tuple[Dataset, Path]) -> None:
    _, source = big_ct
    calls = 0

    async def handler(request: StoreRequest) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database is down")
        await request.save_to(tmp_path)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            failed = await assoc.store(source)
            assert (await assoc.store(source)).is_success
    assert int(failed) == STORE_FAILURE
    assert len(all_files(tmp_path)) == 1


async def test_handler_timeout_during_save_to_removes_the_part_file(
    tmp_path: Path, big_ct: tuple[Dataset, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer stalls half-way through the data set: the handler timeout cancels save_to,
    which removes its temporary file; the rest is drained and 0xC211 answered."""
    ds, source = big_ct
    raw = dataset_of(source)
    folder = tmp_path / "store"
    writing = await _counting_write(monkeypatch)
    cancelled = anyio.Event()
    outcomes: list[str] = []

    async def handler(request: StoreRequest) -> int:
        try:
            await request.save_to(folder)
        except anyio.get_cancelled_exc_class():
            outcomes.append("cancelled")
            cancelled.set()
            raise
        outcomes.append("saved")
        return SUCCESS

    step = 512 * 1024

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), step):
            if start == 5 * 1024 * 1024:
                await writing.wait()
                (part,) = folder.iterdir()  # part of it is on disk, in the part file
                assert part.suffix == ".part"
                await cancelled.wait()  # stall until the handler has given up
                assert list(folder.iterdir()) == []
            yield raw[start : start + step]

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler, handler_timeout=1.0) as assoc:
            message_id = assoc.next_message_id()
            command = make_command(
                CommandField.C_STORE_RQ,
                has_dataset=True,
                MessageID=message_id,
                Priority=0,
                AffectedSOPClassUID=CT_IMAGE_STORAGE,
                AffectedSOPInstanceUID=ds.SOPInstanceUID,
            )
            context_id = context_for(assoc, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
            async with assoc.expect_responses(message_id) as responses:
                await assoc.send_message_stream(context_id, command, chunks(), len(raw))
                response = await assoc.receive_response(responses, "C-STORE response")
            assert (await assoc.echo()).is_success
    assert response.command["Status"] == STORE_FAILURE
    assert outcomes == ["cancelled"]
    assert all_files(tmp_path) == []


async def test_handler_timeout_while_the_buffer_is_full(big_ct: tuple[Dataset, Path]) -> None:
    """A handler that never reads: the buffer fills, progress stops, the handler timeout
    cancels it; the rest is drained and 0xC211 answered."""
    _, source = big_ct
    cancelled: list[bool] = []

    async def handler(request: StoreRequest) -> int:
        if request.message_id == 1:
            try:
                await anyio.sleep_forever()
            finally:
                cancelled.append(True)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler, handler_timeout=1.0) as assoc:
            status = await assoc.store(source)
            assert (await assoc.store(source)).is_success
    assert int(status) == STORE_FAILURE
    assert cancelled == [True]


async def test_streaming_per_sop_class(tmp_path: Path, big_ct: tuple[Dataset, Path]) -> None:
    """A SOP class's own handler decides: CT streamed (any size), MR in memory."""
    ds, source = big_ct
    seen: list[tuple[str, bool]] = []
    scp = scp_ae()

    @scp.on_store(streaming=True)
    async def any_class(request: StoreRequest) -> int:
        seen.append((request.sop_class_uid, request.is_streaming))
        await request.save_to(tmp_path)
        return SUCCESS

    @scp.on_store(sop_class=MR_IMAGE_STORAGE)
    async def mr(request: StoreRequest) -> int:
        seen.append((request.sop_class_uid, request.is_streaming))
        await request.save_to(tmp_path)
        return SUCCESS

    small_mr = make_mr(seed=47)
    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port) as assoc:
            assert (await assoc.store(source)).is_success
            assert (await assoc.store(small_mr)).is_success
            with pytest.raises(AssociationAborted):  # an MR over the limit: in memory
                await assoc.store(make_mr(1024, 1024, seed=48))
    assert seen == [(CT_IMAGE_STORAGE, True), (MR_IMAGE_STORAGE, False)]
    assert all_files(tmp_path) == sorted(
        tmp_path / f"{uid}.dcm" for uid in (ds.SOPInstanceUID, small_mr.SOPInstanceUID)
    )


async def test_save_to_replaces_an_existing_file(tmp_path: Path) -> None:
    ds = make_ct(seed=49)
    first = encoded(ds, ExplicitVRLittleEndian)
    ds.PatientName = "Second^Version"
    second = encoded(ds, ExplicitVRLittleEndian)
    assert first != second

    async def handler(request: StoreRequest) -> int:
        await request.save_to(tmp_path)
        return SUCCESS

    with anyio.fail_after(LIMIT):
        async with streaming_pair(handler) as assoc:
            for raw in (first, second):
                status = await send_store(
                    assoc, raw, sop_class=CT_IMAGE_STORAGE, sop_instance=ds.SOPInstanceUID
                )
                assert status == SUCCESS
    final = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    assert all_files(tmp_path) == [final]
    assert dataset_of(final) == second


# ------------------------------------------------------------------ store_service


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "in-memory"])
async def test_store_service_via_handle_dimse(
    tmp_path: Path, big_ct: tuple[Dataset, Path], streaming: bool
) -> None:
    ds, source = big_ct
    seen: list[bool] = []

    async def handler(request: StoreRequest) -> int:
        seen.append(request.is_streaming)
        await request.peek()
        await request.save_to(tmp_path)
        return SUCCESS

    scp = scp_ae()
    scp.handle_dimse(CommandField.C_STORE_RQ, store_service(handler, streaming=streaming))
    with anyio.fail_after(LIMIT):
        async with serving(scp) as port, connect(port) as assoc:
            if streaming:
                assert (await assoc.store(source)).is_success
                assert (await assoc.store(make_ct(seed=43))).is_success
            else:
                with pytest.raises(AssociationAborted):
                    await assoc.store(source)
    if streaming:
        assert seen == [True, True]
        final = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        assert final in all_files(tmp_path)
        assert len(all_files(tmp_path)) == 2
        assert dataset_of(final) == dataset_of(source)
    else:
        assert seen == []
        assert all_files(tmp_path) == []


# ------------------------------------------------------------------ storescp


@asynccontextmanager
async def storescu(port: int, contexts: list[PresentationContext]) -> AsyncIterator[Association]:
    async with AE("STORESCU").associate(
        HOST, port, called_ae_title="STORESCP", contexts=contexts
    ) as assoc:
        yield assoc


async def test_storescp_sorts_by_study(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    args = storescp.build_parser().parse_args(["0", "--sort-by-study", "-od", str(output)])
    ae = storescp.make_ae(args, logging.getLogger("test.storescp"), output)
    ae.maximum_dataset_size = MEMORY_LIMIT  # what arrives must be streamed to disk
    big = make_ct(1024, 1024, seed=50)
    small = make_mr(seed=51)
    small.StudyInstanceUID = big.StudyInstanceUID  # same study
    other_study = make_ct(seed=52)
    files = [
        write_file(ds, tmp_path / f"{index}.dcm", syntax)
        for index, (ds, syntax) in enumerate(
            [
                (big, ExplicitVRLittleEndian),
                (small, ImplicitVRLittleEndian),
                (other_study, ExplicitVRBigEndian),
            ]
        )
    ]
    no_study = make_ct(seed=53)
    del no_study.StudyInstanceUID
    contexts = [  # one per transfer syntax: each file goes as it is
        PresentationContext(sop_class, (syntax,))
        for sop_class in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
    ]
    with anyio.fail_after(LIMIT):
        async with serving(ae) as port, storescu(port, contexts) as assoc:
            for path in files:
                assert (await assoc.store(path)).is_success
            refused = await assoc.store(no_study)
    assert int(refused) == STORE_FAILURE
    expected = sorted(
        output / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        for ds in (big, small, other_study)
    )
    assert all_files(output) == expected
    for ds, path in zip((big, small, other_study), files, strict=True):
        stored = output / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        assert dataset_of(stored) == dataset_of(path)
        assert (
            pydicom.dcmread(stored).file_meta.TransferSyntaxUID
            == read_file_meta(path).transfer_syntax
        )


def with_private_un_sequence(ds: Dataset) -> bytes:
    """``ds`` in Explicit VR Little Endian with a private sequence sent as UN of undefined
    length before its Pixel Data (its items Implicit VR Little Endian, PS3.5 6.2.2), as
    a peer that does not know the sequence's VR sends it."""

    def implicit(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value

    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    # Item contents whose misreading as explicit VR would go astray: values whose
    # first bytes look like VRs and lengths.
    contents = implicit(0x00091011, b"OB\xff\xff\xff\x7f" * 4) + implicit(0x00091012, b"x" * 300)
    private = (
        struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 8)
        + b"ACME 1.0"
        + struct.pack("<HH2sHL", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF)
        + (item + contents + item_end) * 3
        + sequence_end
    )
    before, after = Dataset(), Dataset()
    for element in ds:
        (before if element.tag < 0x00090000 else after).add(element)
    return encoded(before) + private + encoded(after)


async def test_storescp_sorts_by_study_past_a_private_un_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """peek walks past an undefined-length UN (its value is implicit VR LE) to the Study
    Instance UID and Pixel Data, reading only the start of the data set."""
    monkeypatch.setattr(storage, "PEEK_LIMIT", 64 * 1024)
    output = tmp_path / "out"
    output.mkdir()
    args = storescp.build_parser().parse_args(["0", "--sort-by-study", "-od", str(output)])
    ae = storescp.make_ae(args, logging.getLogger("test.storescp"), output)
    ae.maximum_dataset_size = MEMORY_LIMIT
    ds = make_ct(1024, 1024, seed=56)  # 2 MiB: far beyond what peek may read
    raw = with_private_un_sequence(ds)
    private = pydicom.dcmread(DicomBytesIO(raw), force=True)[0x00091010]
    assert len(private.value) == 3  # pydicom reads the UN value as a sequence of 3 items
    contexts = storage_contexts((CT_IMAGE_STORAGE,), (ExplicitVRLittleEndian,))
    with anyio.fail_after(LIMIT):
        async with serving(ae) as port, storescu(port, contexts) as assoc:
            status = await send_store(
                assoc, raw, sop_class=CT_IMAGE_STORAGE, sop_instance=ds.SOPInstanceUID
            )
    assert status == SUCCESS
    stored = output / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
    assert all_files(output) == [stored]
    assert dataset_of(stored) == raw


async def test_storescp_refuses_a_hostile_study_uid(tmp_path: Path) -> None:
    args = storescp.build_parser().parse_args(["0", "--sort-by-study", "-od", str(tmp_path)])
    ae = storescp.make_ae(args, logging.getLogger("test.storescp"), tmp_path)
    ds = make_ct(seed=54)
    ds.StudyInstanceUID = "../../evil"
    raw = encoded(ds, ExplicitVRLittleEndian)
    contexts = storage_contexts((CT_IMAGE_STORAGE,), (ExplicitVRLittleEndian,))
    with anyio.fail_after(LIMIT):
        async with serving(ae) as port, storescu(port, contexts) as assoc:
            status = await send_store(
                assoc, raw, sop_class=CT_IMAGE_STORAGE, sop_instance=ds.SOPInstanceUID
            )
    assert status == STORE_FAILURE
    assert all_files(tmp_path) == []
    assert not (tmp_path.parent.parent / "evil").exists()
