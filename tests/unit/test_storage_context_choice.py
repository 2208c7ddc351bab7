"""Choosing the presentation context for C-STORE, proposing contexts, the file fast path.

No network: ``store`` runs against a recording stand-in for the association, so what
would be sent (context, command, data set bytes) is checked directly.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from aionetdicom import NegotiationError
from aionetdicom.acse.contexts import NegotiatedContext, PresentationContext
from aionetdicom.datasets import DatasetError, decode_dataset, encode_dataset, read_file_meta
from aionetdicom.dimse.command_set import Command, CommandField, Priority, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.pdu.constants import PresentationContextResult
from aionetdicom.services import storage
from aionetdicom.services.storage import (
    InvalidSOPInstanceUID,
    choose_context,
    contexts_for_files,
    plan_contexts,
    storage_contexts,
)
from tests.dicom_files import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    file_bytes,
    make_ct,
    make_mr,
    make_sc8,
    write_file,
)

ACCEPT = PresentationContextResult.ACCEPTANCE
UNCOMPRESSED_ORDER = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def negotiated(
    context_id: int,
    abstract_syntax: str,
    transfer_syntax: str,
    result: PresentationContextResult = ACCEPT,
    *,
    scu: bool = True,
    scp: bool = False,
) -> NegotiatedContext:
    """A negotiated context as the requestor sees it (default roles)."""
    if result != ACCEPT:
        return NegotiatedContext(context_id, abstract_syntax, "", result, False, False)
    return NegotiatedContext(context_id, abstract_syntax, transfer_syntax, result, scu, scp)


# ---------------------------------------------------------------------- choose_context


def test_own_transfer_syntax_wins_even_when_listed_last() -> None:
    contexts = [
        negotiated(1, CT_IMAGE_STORAGE, ExplicitVRLittleEndian),
        negotiated(3, CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
    ]
    context, convert = choose_context(contexts, CT_IMAGE_STORAGE, ImplicitVRLittleEndian)
    assert (context.context_id, convert) == (3, False)


def test_uncompressed_converts_preferring_explicit_little_endian() -> None:
    contexts = [
        negotiated(1, CT_IMAGE_STORAGE, DeflatedExplicitVRLittleEndian),
        negotiated(3, CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
        negotiated(5, CT_IMAGE_STORAGE, ExplicitVRLittleEndian),
    ]
    context, convert = choose_context(contexts, CT_IMAGE_STORAGE, ExplicitVRBigEndian)
    assert (context.context_id, convert) == (5, True)
    context, convert = choose_context(contexts[:2], CT_IMAGE_STORAGE, ExplicitVRBigEndian)
    assert (context.context_id, convert) == (3, True)


def test_unknown_transfer_syntax_takes_any_uncompressed() -> None:
    contexts = [
        negotiated(1, CT_IMAGE_STORAGE, JPEGBaseline8Bit),
        negotiated(3, CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
    ]
    context, convert = choose_context(contexts, CT_IMAGE_STORAGE, None)
    assert (context.context_id, convert) == (3, True)


def test_other_sop_classes_are_ignored() -> None:
    contexts = [
        negotiated(1, MR_IMAGE_STORAGE, ExplicitVRLittleEndian),
        negotiated(3, CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
    ]
    context, _ = choose_context(contexts, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assert context.context_id == 3


def test_compressed_not_accepted_names_both_sides() -> None:
    contexts = [
        negotiated(1, CT_IMAGE_STORAGE, ExplicitVRLittleEndian),
        negotiated(3, CT_IMAGE_STORAGE, ImplicitVRLittleEndian),
    ]
    with pytest.raises(NegotiationError) as caught:
        choose_context(contexts, CT_IMAGE_STORAGE, JPEGBaseline8Bit)
    assert str(caught.value) == (
        "CT Image Storage (1.2.840.10008.5.1.4.1.1.2) in JPEG Baseline (Process 1) was not "
        "accepted; accepted for this SOP class: Explicit VR Little Endian, Implicit VR Little "
        "Endian (compressed data sets are not decompressed to convert them)"
    )


def test_uncompressed_with_only_compressed_accepted() -> None:
    contexts = [negotiated(1, CT_IMAGE_STORAGE, RLELossless)]
    with pytest.raises(NegotiationError, match="accepted for this SOP class: RLE Lossless"):
        choose_context(contexts, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)


def test_sop_class_not_proposed() -> None:
    contexts = [negotiated(1, MR_IMAGE_STORAGE, ExplicitVRLittleEndian)]
    with pytest.raises(NegotiationError, match=r"CT Image Storage .* was not proposed"):
        choose_context(contexts, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)


def test_sop_class_rejected() -> None:
    rejected = PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
    contexts = [negotiated(1, CT_IMAGE_STORAGE, "", rejected)]
    with pytest.raises(NegotiationError, match=r"accepted no context .* #1 ABSTRACT_SYNTAX"):
        choose_context(contexts, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)


def test_roles_decide_who_may_send() -> None:
    """As requestor we need the SCU role; as acceptor the requestor must be SCP."""
    scp_only = [negotiated(1, CT_IMAGE_STORAGE, ExplicitVRLittleEndian, scu=False, scp=True)]
    default = [negotiated(1, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)]
    with pytest.raises(NegotiationError, match="SCU role"):
        choose_context(scp_only, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    with pytest.raises(NegotiationError, match="SCP"):
        choose_context(default, CT_IMAGE_STORAGE, ExplicitVRLittleEndian, as_requestor=False)
    context, _ = choose_context(
        scp_only, CT_IMAGE_STORAGE, ExplicitVRLittleEndian, as_requestor=False
    )
    assert context.context_id == 1


# ---------------------------------------------------------------------- proposing


def test_storage_contexts_covers_every_storage_class() -> None:
    contexts = storage_contexts()
    uids = [c.abstract_syntax for c in contexts]
    assert CT_IMAGE_STORAGE in uids
    assert len(uids) == len(set(uids)) > 128
    assert all(c.transfer_syntaxes == tuple(UNCOMPRESSED_ORDER) for c in contexts)
    only = storage_contexts([MR_IMAGE_STORAGE], [ImplicitVRLittleEndian])
    assert only == [PresentationContext(MR_IMAGE_STORAGE, (ImplicitVRLittleEndian,))]


def test_plan_keeps_compressed_syntaxes_apart() -> None:
    contexts = plan_contexts(
        {
            CT_IMAGE_STORAGE: [ImplicitVRLittleEndian, JPEGBaseline8Bit],
            MR_IMAGE_STORAGE: [DeflatedExplicitVRLittleEndian],
        }
    )
    assert contexts == [
        # the instances' own uncompressed syntax alone, so no peer preference converts them
        PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian,)),
        PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian, ExplicitVRLittleEndian)),
        PresentationContext(CT_IMAGE_STORAGE, (JPEGBaseline8Bit,)),
        PresentationContext(MR_IMAGE_STORAGE, (DeflatedExplicitVRLittleEndian,)),
        PresentationContext(
            MR_IMAGE_STORAGE,
            (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian),
        ),
    ]


def test_plan_combines_when_separate_would_exceed_128() -> None:
    found = {f"1.2.3.{n}": [JPEGBaseline8Bit, RLELossless] for n in range(100)}
    contexts = plan_contexts(found)
    assert len(contexts) == 100
    assert contexts[0] == PresentationContext(
        "1.2.3.0",
        (JPEGBaseline8Bit, RLELossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    )


def test_plan_refuses_more_than_128_sop_classes() -> None:
    found = {f"1.2.3.{n}": [ExplicitVRLittleEndian] for n in range(129)}
    with pytest.raises(ValueError, match=r"129 SOP classes.*at most 128"):
        plan_contexts(found)
    assert len(plan_contexts(dict(list(found.items())[:128]))) == 128


def test_contexts_for_files(tmp_path: Path) -> None:
    paths = [
        write_file(make_ct(seed=1), tmp_path / "1.dcm", ImplicitVRLittleEndian),
        write_file(make_ct(seed=2), tmp_path / "2.dcm", ExplicitVRLittleEndian),
        write_file(make_sc8(seed=3), tmp_path / "3.dcm", JPEGBaseline8Bit),
    ]
    assert contexts_for_files(paths) == [
        PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian,)),
        PresentationContext(CT_IMAGE_STORAGE, (ExplicitVRLittleEndian,)),
        PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian, ExplicitVRLittleEndian)),
        PresentationContext(SECONDARY_CAPTURE_IMAGE_STORAGE, UNCOMPRESSED_ORDER),
        PresentationContext(SECONDARY_CAPTURE_IMAGE_STORAGE, (JPEGBaseline8Bit,)),
    ]
    assert contexts_for_files(paths, [ImplicitVRLittleEndian], file_syntaxes=False) == [
        PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian,)),
        PresentationContext(SECONDARY_CAPTURE_IMAGE_STORAGE, (ImplicitVRLittleEndian,)),
    ]
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"x\.txt: not a DICOM Part 10 file"):
        contexts_for_files([*paths, tmp_path / "x.txt"])


# ---------------------------------------------------------------------- store() fast path


class FakeAssociation:
    """Records what ``store`` would send and answers each request with ``status``."""

    def __init__(self, contexts: list[NegotiatedContext], status: int = 0x0000) -> None:
        self.contexts = tuple(contexts)
        self.is_requestor = True
        self.status = status
        self.sent: list[tuple[int, Command, bytes | memoryview | None]] = []
        self.id = 1
        self._ids = iter(range(1, 1000))
        import logging

        self.log = logging.getLogger("test.fake")

    def next_message_id(self) -> int:
        return next(self._ids)

    @asynccontextmanager
    async def expect_responses(self, message_id: int) -> AsyncIterator[int]:
        yield message_id

    async def send_message(
        self, context_id: int, command: Command, dataset: bytes | memoryview | None = None
    ) -> None:
        self.sent.append((context_id, command, dataset))

    async def send_message_stream(
        self, context_id: int, command: Command, chunks: AsyncIterator[bytes], length: int
    ) -> None:
        data = b"".join([chunk async for chunk in chunks])
        assert len(data) == length
        self.sent.append((context_id, command, data))

    async def receive_response(
        self, responses: int, what: str, timeout: float | None = None
    ) -> AssembledMessage:
        response = make_command(
            CommandField.C_STORE_RSP, MessageIDBeingRespondedTo=responses, Status=self.status
        )
        return AssembledMessage(1, response, None)


def uncompressed_contexts(sop_class: str = CT_IMAGE_STORAGE) -> list[NegotiatedContext]:
    return [
        negotiated(1, sop_class, ExplicitVRLittleEndian),
        negotiated(3, sop_class, ImplicitVRLittleEndian),
    ]


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if pydicom decodes or encodes anything."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("the fast path must not decode or encode")

    monkeypatch.setattr(storage, "decode_dataset", refuse)
    monkeypatch.setattr(storage, "encode_dataset", refuse)


@pytest.mark.usefixtures("no_decoding")
async def test_bytes_are_sent_as_a_view_of_the_file() -> None:
    ds = make_ct(seed=4)
    data = file_bytes(ds, ImplicitVRLittleEndian)
    fake = FakeAssociation(uncompressed_contexts())
    status = await storage.store(fake, data)  # type: ignore[arg-type]
    assert status.is_success
    ((context_id, command, sent),) = fake.sent
    assert context_id == 3
    offset = read_file_meta(io.BytesIO(data)).dataset_offset
    assert isinstance(sent, memoryview)
    assert sent.obj is data  # zero copy
    assert bytes(sent) == data[offset:]
    assert command["CommandField"] == CommandField.C_STORE_RQ
    assert command["AffectedSOPClassUID"] == CT_IMAGE_STORAGE
    assert command["AffectedSOPInstanceUID"] == ds.SOPInstanceUID
    assert command["Priority"] == Priority.MEDIUM
    assert command["MessageID"] == 1
    assert command.has_dataset
    assert "MoveOriginatorApplicationEntityTitle" not in command


@pytest.mark.usefixtures("no_decoding")
async def test_path_is_sent_as_it_is(tmp_path: Path) -> None:
    ds = make_mr(seed=5)
    path = write_file(ds, tmp_path / "mr.dcm", DeflatedExplicitVRLittleEndian)
    contexts = [negotiated(7, MR_IMAGE_STORAGE, DeflatedExplicitVRLittleEndian)]
    fake = FakeAssociation(contexts)
    await storage.store(fake, str(path))  # type: ignore[arg-type]
    await storage.store(fake, path)  # type: ignore[arg-type]
    data = path.read_bytes()
    expected = data[read_file_meta(path).dataset_offset :]
    assert [(c, bytes(d or b"")) for c, _, d in fake.sent] == [(7, expected), (7, expected)]


async def test_file_is_converted_when_its_syntax_was_not_accepted(tmp_path: Path) -> None:
    ds = make_ct(seed=6)
    path = write_file(ds, tmp_path / "ct.dcm", ExplicitVRLittleEndian)
    fake = FakeAssociation([negotiated(1, CT_IMAGE_STORAGE, ImplicitVRLittleEndian)])
    await storage.store(fake, path)  # type: ignore[arg-type]
    ((_, _, sent),) = fake.sent
    assert sent is not None
    explicit = path.read_bytes()[read_file_meta(path).dataset_offset :]
    assert bytes(sent) != explicit
    decoded = decode_dataset(sent, ImplicitVRLittleEndian)
    assert decoded.SOPInstanceUID == ds.SOPInstanceUID
    assert decoded.ImagePositionPatient == ds.ImagePositionPatient
    assert decoded.PixelData == ds.PixelData
    assert bytes(sent) == encode_dataset(pydicom.dcmread(path), ImplicitVRLittleEndian)


async def test_compressed_file_not_accepted_sends_nothing(tmp_path: Path) -> None:
    path = write_file(make_sc8(seed=7), tmp_path / "sc.dcm", JPEGBaseline8Bit)
    fake = FakeAssociation(uncompressed_contexts(SECONDARY_CAPTURE_IMAGE_STORAGE))
    with pytest.raises(NegotiationError, match="JPEG Baseline"):
        await storage.store(fake, path)  # type: ignore[arg-type]
    assert fake.sent == []


async def test_dataset_transfer_syntax_from_file_meta_or_encoding(tmp_path: Path) -> None:
    """A Dataset goes in its own syntax when accepted: file meta, else how it was read."""
    fake = FakeAssociation(uncompressed_contexts())
    with_meta = make_ct(seed=8)
    with_meta.file_meta = pydicom.dataset.FileMetaDataset()
    with_meta.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    read_back = pydicom.dcmread(
        write_file(make_ct(seed=9), tmp_path / "x.dcm", ImplicitVRLittleEndian)
    )
    del read_back.file_meta.TransferSyntaxUID
    fresh = make_ct(seed=10)
    for ds in (with_meta, read_back, fresh):
        await storage.store(fake, ds)  # type: ignore[arg-type]
    assert [context_id for context_id, _, _ in fake.sent] == [3, 3, 1]
    for (_, command, sent), ds in zip(fake.sent, (with_meta, read_back, fresh), strict=True):
        assert command["AffectedSOPInstanceUID"] == ds.SOPInstanceUID
        assert sent is not None
        assert len(sent) % 2 == 0


async def test_command_options_are_checked_before_sending() -> None:
    fake = FakeAssociation(uncompressed_contexts())
    ds = make_ct(seed=11)
    with pytest.raises(ValueError, match="longer than 16"):
        await storage.store(  # type: ignore[arg-type]
            fake, ds, move_originator_ae_title="A" * 17, move_originator_message_id=1
        )
    with pytest.raises(ValueError, match="go together"):
        await storage.store(fake, ds, move_originator_ae_title="MOVER")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        await storage.store(fake, ds, priority=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Dataset, a path or bytes"):
        await storage.store(fake, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SOPClassUID"):
        await storage.store(fake, Dataset())  # type: ignore[arg-type]
    assert fake.sent == []
    await storage.store(  # type: ignore[arg-type]
        fake,
        ds,
        priority=Priority.HIGH,
        move_originator_ae_title="MOVER",
        move_originator_message_id=9,
    )
    ((_, command, _),) = fake.sent
    assert command["Priority"] == Priority.HIGH
    assert command["MoveOriginatorApplicationEntityTitle"] == "MOVER"
    assert command["MoveOriginatorMessageID"] == 9


async def test_response_status_is_returned() -> None:
    fake = FakeAssociation(uncompressed_contexts(), status=0xA701)
    status = await storage.store(fake, make_ct(seed=12))  # type: ignore[arg-type]
    assert int(status) == 0xA701
    assert status.is_failure
    assert status.description == "Refused: out of resources"


# ---------------------------------------------------------------------- receiving side


@pytest.mark.parametrize("uid", ["1.2.840.10008.1", "2.25.1234567890123", "0.0"])
def test_valid_uids_name_files(uid: str) -> None:
    assert storage._check_file_uid(uid) == uid


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("../../etc/x", "path separator"),
        ("..", "path separator"),
        ("1\\2", "path separator"),
        ("1.2\x00", "NUL or control"),
        ("1.2\x1b3", "NUL or control"),
        ("", "not a valid UID"),
        ("1." + "2" * 70, "not a valid UID"),
        ("1.02", "not a valid UID"),
    ],
)
def test_invalid_uids_are_refused(uid: str, why: str) -> None:
    with pytest.raises(InvalidSOPInstanceUID, match=why):
        storage._check_file_uid(uid)
    assert issubclass(InvalidSOPInstanceUID, ValueError)


def test_encoded_file_meta_reads_back() -> None:
    """Our hand-made file header is what pydicom and read_file_meta expect."""
    values: dict[int, bytes | str] = {
        0x0001: b"\x00\x01",
        0x0002: CT_IMAGE_STORAGE,
        0x0003: "1.2.3.4.5",
        0x0010: ExplicitVRLittleEndian,
        0x0012: "2.25.42",
        0x0013: "VERSION_1",
        0x0016: "OURS",
        0x0017: "PEER",
    }
    ds = make_ct(seed=13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body = encode_dataset(ds, ExplicitVRLittleEndian)
    data = storage._encode_file_meta(values) + body
    meta = read_file_meta(io.BytesIO(data))
    assert (meta.sop_class_uid, meta.sop_instance_uid) == (CT_IMAGE_STORAGE, "1.2.3.4.5")
    read = pydicom.dcmread(io.BytesIO(data))
    assert read.file_meta.ImplementationClassUID == "2.25.42"
    assert read.file_meta.ImplementationVersionName == "VERSION_1"
    assert read.file_meta.SourceApplicationEntityTitle == "OURS"
    assert read.file_meta.SendingApplicationEntityTitle == "PEER"
    assert read.file_meta.FileMetaInformationGroupLength == meta.dataset_offset - 144
    assert read.PatientName == ds.PatientName
