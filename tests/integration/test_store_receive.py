"""Our C-STORE SCU to our own C-STORE SCP (``store_service``) over TCP on 127.0.0.1.

The request a handler gets, lazy decoding, atomic ``save_to``, hostile SOP Instance
UIDs, and the statuses the service answers when the handler fails.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from aionetdicom import AE, Association
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.datasets import read_file_meta
from aionetdicom.dimse.command_set import CommandField, Priority
from aionetdicom.services import storage
from aionetdicom.services.storage import StoreRequest, storage_contexts, store_service
from tests.dicom_files import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    make_ct,
    make_mr,
    write_file,
)

HOST = "127.0.0.1"
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
Handler = Callable[[StoreRequest], Awaitable[object]]


@asynccontextmanager
async def store_pair(
    handler: Handler, contexts: list[PresentationContext] | None = None
) -> AsyncIterator[Association]:
    """An SCP answering C-STORE with ``handler`` and an SCU association to it."""
    supported = [*VERIFICATION, *storage_contexts((CT_IMAGE_STORAGE, MR_IMAGE_STORAGE), SYNTAXES)]
    scp = AE("STORE-SCP", supported_contexts=supported)
    scp.handle_dimse(CommandField.C_STORE_RQ, store_service(handler))  # type: ignore[arg-type]
    contexts = supported if contexts is None else [*VERIFICATION, *contexts]
    async with (
        scp.serve(HOST, 0) as server,
        AE("STORE-SCU").associate(
            HOST, server.port, called_ae_title="STORE-SCP", contexts=contexts
        ) as assoc,
    ):
        yield assoc


def hostile(uid: str, seed: int) -> Dataset:
    """A CT dataset whose SOP Instance UID is ``uid`` (pydicom warns; we mean it)."""
    ds = make_ct(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = uid
    return ds


def all_files(root: Path) -> list[Path]:
    """Every file below ``root``."""
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_request_fields_reach_the_handler(tmp_path: Path) -> None:
    """Message ID, UIDs, context, priority, move originator, raw bytes and file meta."""
    ds = make_ct(seed=1)
    path = write_file(ds, tmp_path / "ct.dcm", ImplicitVRLittleEndian)
    seen: list[StoreRequest] = []

    async def handler(request: StoreRequest) -> int:
        seen.append(request)
        return 0xB000

    contexts = [PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian,))]
    async with store_pair(handler, contexts) as assoc:
        status = await assoc.store(
            path,
            priority=Priority.LOW,
            move_originator_ae_title="MOVER",
            move_originator_message_id=77,
        )
    assert int(status) == 0xB000
    assert status.is_warning
    (request,) = seen
    assert request.message_id == 1
    assert request.sop_class_uid == CT_IMAGE_STORAGE
    assert request.sop_instance_uid == ds.SOPInstanceUID
    assert request.transfer_syntax == ImplicitVRLittleEndian
    assert request.context.abstract_syntax == CT_IMAGE_STORAGE
    assert request.priority == Priority.LOW
    assert request.move_originator_ae_title == "MOVER"
    assert request.move_originator_message_id == 77
    data = path.read_bytes()
    assert request.raw == data[read_file_meta(path).dataset_offset :]
    meta = request.file_meta
    assert meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.ImplementationClassUID == request.assoc.ae.implementation_class_uid
    assert meta.ImplementationVersionName == request.assoc.ae.implementation_version_name
    assert meta.SendingApplicationEntityTitle == "STORE-SCU"
    assert meta.ReceivingApplicationEntityTitle == "STORE-SCP"


async def test_request_without_move_originator(tmp_path: Path) -> None:
    """An ordinary C-STORE has no move originator and medium priority."""
    seen: list[StoreRequest] = []

    async def handler(request: StoreRequest) -> int:
        seen.append(request)
        return 0

    async with store_pair(handler) as assoc:
        assert (await assoc.store(make_mr(seed=2))).is_success
    (request,) = seen
    assert request.move_originator_ae_title is None
    assert request.move_originator_message_id is None
    assert request.priority == Priority.MEDIUM
    assert request.sop_class_uid == MR_IMAGE_STORAGE


async def test_dataset_is_decoded_lazily_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No decode unless the handler asks; two accesses decode once."""
    calls: list[str] = []
    real = storage.decode_dataset

    def counting(data: bytes, transfer_syntax: str, **kwargs: object) -> Dataset:
        calls.append(transfer_syntax)
        return real(data, transfer_syntax, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "decode_dataset", counting)
    names: list[str] = []

    async def handler(request: StoreRequest) -> int:
        if request.sop_class_uid == MR_IMAGE_STORAGE:
            names.append(str(request.dataset.PatientName))
            assert request.dataset is request.dataset
        return 0

    ct, mr = make_ct(seed=3), make_mr(seed=4)
    async with store_pair(handler) as assoc:
        assert (await assoc.store(ct)).is_success
        assert calls == []
        assert (await assoc.store(mr)).is_success
    assert names == [str(mr.PatientName)]
    assert len(calls) == 1


async def test_save_to_writes_part10_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary file in the folder, renamed over the final name; nothing left over."""
    folder = tmp_path / "store"
    renames: list[tuple[Path, Path, bool]] = []
    real_replace = os.replace

    def spy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        renames.append((Path(source), Path(target), Path(target).exists()))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy)
    saved: list[Path] = []

    async def handler(request: StoreRequest) -> int:
        saved.append(await request.save_to(folder))
        return 0

    ds = make_ct(seed=5)
    async with store_pair(handler) as assoc:
        assert (await assoc.store(ds)).is_success
    final = folder / f"{ds.SOPInstanceUID}.dcm"
    assert saved == [final]
    ((source, target, existed),) = renames
    assert target == final
    assert source.parent == folder
    assert source != final
    assert not existed
    assert all_files(tmp_path) == [final]
    stored = pydicom.dcmread(final)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert stored.SOPInstanceUID == ds.SOPInstanceUID
    assert stored.pixel_array.tobytes() == ds.PixelData


async def test_save_to_deflated(tmp_path: Path) -> None:
    """A Deflated data set is saved as received and reads back with pydicom."""
    ds = make_mr(seed=6)
    path = write_file(ds, tmp_path / "mr.dcm", DeflatedExplicitVRLittleEndian)
    folder = tmp_path / "store"
    patients: list[str] = []

    async def handler(request: StoreRequest) -> int:
        patients.append(str(request.dataset.PatientName))
        await request.save_to(folder)
        return 0

    contexts = [PresentationContext(MR_IMAGE_STORAGE, (DeflatedExplicitVRLittleEndian,))]
    async with store_pair(handler, contexts) as assoc:
        assert (await assoc.store(path)).is_success
    assert patients == [str(ds.PatientName)]
    stored_path = folder / f"{ds.SOPInstanceUID}.dcm"
    assert (
        stored_path.read_bytes()[read_file_meta(stored_path).dataset_offset :]
        == (path.read_bytes()[read_file_meta(path).dataset_offset :])
    )
    stored = pydicom.dcmread(stored_path)
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert stored.pixel_array.tobytes() == ds.PixelData


@pytest.mark.parametrize(
    "uid",
    ["../../etc/x", "1.2.3\x00.4", "1.2/3", "..", "1.2.3\\4", "1.2.\n3", "01.2"],
    ids=["dotdot", "nul", "slash", "bare-dotdot", "backslash", "newline", "leading-zero"],
)
async def test_hostile_sop_instance_uid_is_refused(tmp_path: Path, uid: str) -> None:
    """save_to refuses a UID that is not one: 0x0117, nothing written anywhere."""
    folder = tmp_path / "a" / "b" / "store"
    folder.mkdir(parents=True)
    seen: list[str] = []

    async def handler(request: StoreRequest) -> int:
        seen.append(request.sop_instance_uid)
        await request.save_to(folder)
        return 0

    good = make_ct(seed=8)
    async with store_pair(handler) as assoc:
        status = await assoc.store(hostile(uid, seed=7))
        assert int(status) == storage.INVALID_SOP_INSTANCE
        assert status.is_failure
        assert (await assoc.store(good)).is_success
    assert seen == [uid, good.SOPInstanceUID]
    assert all_files(tmp_path) == [folder / f"{good.SOPInstanceUID}.dcm"]


async def test_handler_raising_gives_failure_and_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler exception answers 0xC211 with the traceback logged; the next store works."""
    calls = 0

    async def handler(request: StoreRequest) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database is down")
        return 0

    with caplog.at_level(logging.ERROR, logger="aionetdicom"):
        async with store_pair(handler) as assoc:
            first = await assoc.store(make_ct(seed=9))
            second = await assoc.store(make_ct(seed=10))
            assert assoc.is_established
    assert int(first) == storage.DEFAULT_STORE_STATUS == 0xC211
    assert first.is_failure
    assert second.is_success
    records = [r for r in caplog.records if r.exc_info]
    assert any("database is down" in str(r.exc_info[1]) for r in records if r.exc_info)


async def test_handler_returning_no_status(caplog: pytest.LogCaptureFixture) -> None:
    """A handler returning None answers 0xC211 and logs a warning."""

    async def handler(request: StoreRequest) -> object:
        return None

    with caplog.at_level(logging.WARNING, logger="aionetdicom"):
        async with store_pair(handler) as assoc:
            status = await assoc.store(make_ct(seed=11))
    assert int(status) == 0xC211
    assert any("not an int status" in r.getMessage() for r in caplog.records)


async def test_disk_full_answers_out_of_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC half-way: 0xA700, the partial file removed, the association still fine."""
    written: list[int] = []

    def full_disk(fd: int, data: bytes | memoryview) -> None:
        if written:  # header went through; the data set hits a full disk half-way
            os.write(fd, memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(os.write(fd, data))

    monkeypatch.setattr(storage, "_write_all", full_disk)
    folder = tmp_path / "store"

    async def handler(request: StoreRequest) -> int:
        await request.save_to(folder)
        return 0

    async with store_pair(handler) as assoc:
        status = await assoc.store(make_ct(seed=12))
        assert int(status) == storage.OUT_OF_RESOURCES == 0xA700
        assert status.is_failure
        assert (await assoc.echo()).is_success
    assert written
    assert all_files(tmp_path) == []
