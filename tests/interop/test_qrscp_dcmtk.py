"""Our qrscp app against DCMTK: storescu stores, findscu finds, getscu and movescu retrieve.

One qrscp (a subprocess on 127.0.0.1 with a fresh storage folder and SQLite index)
serves the module; DCMTK's storescu stores two patients' studies into it (three
series), then each test queries or retrieves with a DCMTK tool or our own SCU. A
DCMTK storescp is the C-MOVE destination. DCMTK runs with ``TCP_NODELAY=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from aionetdicom import AE, sop_classes
from aionetdicom.contexts import PresentationContext
from aionetdicom.services.query_retrieve import retrieve_contexts
from tests.dicom_files import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, make_ct, make_mr, write_file
from tests.interop.test_echo_dcmtk import (
    Peer,
    free_port,
    our_app,
    output,
    run,
    start_peer,
    stop,
)
from tests.postgres import fresh_database

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
QR_AET = "QRSCP"
DEST_AET = "DESTSCP"
DCMTK = "/usr/bin/"


@dataclass
class Archive:
    qrscp: Peer
    storage: Path
    destination: Peer
    moved: Path
    study_a: str
    study_b: str
    ct_series: str
    uids: dict[str, list[str]]  # study UID -> SOP Instance UIDs
    database: list[str]  # the --database flag qrscp was started with, if any


def _instances(folder: Path) -> tuple[list[Path], str, str, str, dict[str, list[str]]]:
    """Study A (Doe^Jane, CT x3 + MR x2, 2024) and study B (Roe^Rick, CT x2, 2023)."""
    study_a, study_b = generate_uid(), generate_uid()
    ct_series, mr_series, b_series = generate_uid(), generate_uid(), generate_uid()
    paths: list[Path] = []
    uids: dict[str, list[str]] = {study_a: [], study_b: []}
    plan = [
        (study_a, ct_series, "CT", 3, "Doe^Jane", "P1", "20240102", "ACC-A"),
        (study_a, mr_series, "MR", 2, "Doe^Jane", "P1", "20240102", "ACC-A"),
        (study_b, b_series, "CT", 2, "Roe^Rick", "P2", "20230505", "ACC-B"),
    ]
    for study, series, modality, count, name, patient, date, accession in plan:
        for number in range(count):
            ds = make_ct(seed=number) if modality == "CT" else make_mr(seed=number)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.PatientName, ds.PatientID, ds.StudyDate = name, patient, date
            ds.AccessionNumber = accession
            uids[study].append(str(ds.SOPInstanceUID))
            paths.append(write_file(ds, folder / f"{ds.SOPInstanceUID}.dcm"))
    return paths, study_a, study_b, ct_series, uids


def write_worklist(folder: Path) -> None:
    """Two worklist items: a CT step for Doe^Jane, an MR step for Roe^Rick."""
    for number, (name, modality, date) in enumerate(
        [("Doe^Jane", "CT", "20240105"), ("Roe^Rick", "MR", "20240210")]
    ):
        step = Dataset()
        step.Modality = modality
        step.ScheduledStationAETitle = "SCANNER"
        step.ScheduledProcedureStepStartDate = date
        step.ScheduledProcedureStepStartTime = "080000"
        step.ScheduledProcedureStepID = f"SPS{number}"
        item = Dataset()
        item.SpecificCharacterSet = "ISO_IR 100"
        item.PatientName = name
        item.PatientID = f"P{number + 1}"
        item.AccessionNumber = f"WL{number}"
        item.ScheduledProcedureStepSequence = Sequence([step])
        pydicom.dcmwrite(folder / f"item{number}.wl", item, implicit_vr=False, little_endian=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    """qrscp with its index on SQLite (the default) or on the test PostgreSQL server."""
    folder = tmp_path_factory.mktemp("qrscp")
    database: list[str] = []
    if request.param == "postgresql":
        server: str = request.getfixturevalue("postgres_url")
        database = ["--database", fresh_database(server, f"qrscp_{folder.name}")]
    moved = folder / "moved"
    moved.mkdir()
    destination_port = free_port()
    destination = start_peer(
        [f"{DCMTK}storescp", "-aet", DEST_AET, "-od", str(moved), str(destination_port)],
        folder / "storescp.log",
        port=destination_port,
        env={"TCP_NODELAY": "1"},
    )
    worklist = folder / "worklist"
    worklist.mkdir()
    write_worklist(worklist)
    port = free_port()
    storage = folder / "storage"
    qrscp = start_peer(
        our_app(
            "qrscp",
            str(port),
            "-v",
            "--bind",
            HOST,
            "-od",
            str(storage),
            "--destination",
            f"{DEST_AET}={HOST}:{destination_port}",
            "--max-runtime",
            "120",
            "--worklist",
            str(worklist),
            *database,
        ),
        folder / "qrscp.log",
        port=port,
    )
    try:
        inputs = folder / "in"
        inputs.mkdir()
        paths, study_a, study_b, ct_series, uids = _instances(inputs)
        result = run(
            [f"{DCMTK}storescu", "-aec", QR_AET, HOST, str(port), *map(str, paths)], dcmtk=True
        )
        assert result.returncode == 0, output(result) + qrscp.log()
        yield Archive(
            qrscp, storage, destination, moved, study_a, study_b, ct_series, uids, database
        )
    finally:
        stop(qrscp)
        stop(destination)


def findscu(
    archive: Archive, tmp_path: Path, model: str, *keys: str, port: int | None = None
) -> list[Dataset]:
    """Run DCMTK findscu (-P patient root, -S study root, -O patient/study only)."""
    return findscu_run(archive, tmp_path, model, *keys, port=port)[0]


def findscu_run(
    archive: Archive, tmp_path: Path, model: str, *keys: str, port: int | None = None
) -> tuple[list[Dataset], str]:
    """findscu's responses (rsp*.dcm) and its output."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    args = [f"{DCMTK}findscu", model, "-v", "-aec", QR_AET, "-X", "-od", str(tmp_path)]
    for key in keys:
        args += ["-k", key]
    result = run([*args, HOST, str(port or archive.qrscp.port)], dcmtk=True)
    assert result.returncode == 0, output(result) + archive.qrscp.log()
    found = [pydicom.dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
    return found, output(result)


def retrieve_study(archive: Archive, tool: str, study: str, *flags: str) -> Any:
    """Run DCMTK getscu or movescu (Study Root) for one study with ``flags``."""
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    command = [f"{DCMTK}{tool}", "-S", "-aec", QR_AET, *flags, *keys]
    return run([*command, HOST, str(archive.qrscp.port)], dcmtk=True)


def test_stored_files_are_on_disk_by_study(archive: Archive) -> None:
    files = sorted(archive.storage.rglob("*.dcm"))
    assert len(files) == 7
    assert {path.parent.name for path in files} == {archive.study_a, archive.study_b}
    assert "Stored" in archive.qrscp.log()


def test_patient_level_with_case_insensitive_name_wildcard(
    archive: Archive, tmp_path: Path
) -> None:
    found = findscu(
        archive, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=doe*", "PatientID"
    )
    assert [str(ds.PatientID) for ds in found] == ["P1"]
    assert str(found[0].PatientName) == "Doe^Jane"


def test_study_level_date_ranges(archive: Archive, tmp_path: Path) -> None:
    newer = findscu(
        archive,
        tmp_path / "a",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyDate=20240101-",
        "StudyInstanceUID",
    )
    older = findscu(
        archive,
        tmp_path / "b",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyDate=-20231231",
        "StudyInstanceUID",
    )
    assert [str(ds.StudyInstanceUID) for ds in newer] == [archive.study_a]
    assert [str(ds.StudyInstanceUID) for ds in older] == [archive.study_b]


def test_study_level_uid_list_and_counts(archive: Archive, tmp_path: Path) -> None:
    found = findscu(
        archive,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={archive.study_a}\\{archive.study_b}",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
        "AccessionNumber",
    )
    by_uid = {str(ds.StudyInstanceUID): ds for ds in found}
    assert set(by_uid) == {archive.study_a, archive.study_b}
    assert int(by_uid[archive.study_a].NumberOfStudyRelatedInstances) == 5
    assert sorted(by_uid[archive.study_a].ModalitiesInStudy) == ["CT", "MR"]
    assert by_uid[archive.study_b].AccessionNumber == "ACC-B"


def test_series_and_image_levels(archive: Archive, tmp_path: Path) -> None:
    series = findscu(
        archive,
        tmp_path / "series",
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study_a}",
        "SeriesInstanceUID",
        "Modality=C?",
    )
    assert [str(ds.SeriesInstanceUID) for ds in series] == [archive.ct_series]
    images = findscu(
        archive,
        tmp_path / "images",
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={archive.study_a}",
        f"SeriesInstanceUID={archive.ct_series}",
        "SOPInstanceUID",
    )
    assert sorted(str(ds.SOPInstanceUID) for ds in images) == sorted(
        archive.uids[archive.study_a][:3]
    )


def test_getscu_retrieves_a_study(archive: Archive, tmp_path: Path) -> None:
    result = retrieve_study(archive, "getscu", archive.study_a, "-od", str(tmp_path))
    assert result.returncode == 0, output(result) + archive.qrscp.log()
    got = {str(pydicom.dcmread(path).SOPInstanceUID) for path in tmp_path.iterdir()}
    assert got == set(archive.uids[archive.study_a])


def test_movescu_moves_a_study_to_dcmtk_storescp(archive: Archive) -> None:
    result = retrieve_study(archive, "movescu", archive.study_b, "-aem", DEST_AET)
    assert result.returncode == 0, output(result) + archive.qrscp.log()
    got = {str(pydicom.dcmread(path).SOPInstanceUID) for path in archive.moved.iterdir()}
    assert set(archive.uids[archive.study_b]) <= got


def test_move_to_an_unknown_destination_is_refused(archive: Archive) -> None:
    result = retrieve_study(archive, "movescu", archive.study_b, "-aem", "NOBODY")
    assert "MoveDestinationUnknown" in output(result) or "a801" in output(result).lower()


def test_our_scu_finds_and_gets(archive: Archive, tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[str]]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = "ROE^*"
        query.StudyInstanceUID = ""
        contexts = retrieve_contexts(
            [sop_classes.STUDY_ROOT_FIND, sop_classes.STUDY_ROOT_GET],
            (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE),
        )
        async with AE("OURSCU").associate(
            HOST, archive.qrscp.port, called_ae_title=QR_AET, contexts=contexts
        ) as assoc:
            studies = [
                str(match.StudyInstanceUID)
                async for _, match in assoc.find(query, model="study")
                if match is not None
            ]
            got: list[str] = []
            get = Dataset()
            get.QueryRetrieveLevel = "STUDY"
            get.StudyInstanceUID = studies[0]
            async with assoc.get_instances(get, model="study") as instances:
                async for instance in instances:
                    path = await instance.save_to(tmp_path)
                    got.append(path.stem)
        return studies, got

    studies, got = anyio.run(main)
    assert studies == [archive.study_b]
    assert sorted(got) == sorted(archive.uids[archive.study_b])


def test_findscu_worklist_with_sequence_matching(archive: Archive, tmp_path: Path) -> None:
    found = findscu(
        archive,
        tmp_path,
        "-W",
        "PatientName",
        "AccessionNumber",
        "ScheduledProcedureStepSequence[0].Modality=CT",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20240101-20240131",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    )
    assert [str(ds.PatientName) for ds in found] == ["Doe^Jane"]
    assert found[0].AccessionNumber == "WL0"
    step = found[0].ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT"
    assert step.ScheduledProcedureStepID == "SPS0"
    assert "ScheduledStationAETitle" not in step


def test_our_scu_stores_finds_and_moves(archive: Archive, tmp_path: Path) -> None:
    """Our own SCU against qrscp: C-STORE a new study, C-FIND it, C-MOVE it to DCMTK."""
    ds = make_ct(seed=42, patient="Zed^Zoe")
    ds.PatientID = "P3"
    del ds.StudyDate  # keeps the date-range tests' expectations
    path = write_file(ds, tmp_path / "new.dcm")

    async def main() -> tuple[int, list[str], int]:
        contexts = [
            PresentationContext(uid)
            for uid in (sop_classes.STUDY_ROOT_FIND, sop_classes.STUDY_ROOT_MOVE, CT_IMAGE_STORAGE)
        ]
        async with AE("OURSCU").associate(
            HOST, archive.qrscp.port, called_ae_title=QR_AET, contexts=contexts
        ) as assoc:
            status = await assoc.store(path)
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = "P3"
            query.StudyInstanceUID = ""
            studies = [
                str(match.StudyInstanceUID)
                async for _, match in assoc.find(query, model="study")
                if match is not None
            ]
            move = Dataset()
            move.QueryRetrieveLevel = "STUDY"
            move.StudyInstanceUID = str(ds.StudyInstanceUID)
            completed = 0
            async for progress in assoc.move(move, DEST_AET, model="study"):
                completed = progress.completed or completed
        return int(status), studies, completed

    status, studies, completed = anyio.run(main)
    assert status == 0
    assert studies == [str(ds.StudyInstanceUID)]
    assert completed == 1
    moved = {str(pydicom.dcmread(p).SOPInstanceUID) for p in archive.moved.iterdir()}
    assert str(ds.SOPInstanceUID) in moved


def test_hierarchical_rules_without_relational_negotiation(
    archive: Archive, tmp_path: Path
) -> None:
    """Without relational queries, a SERIES query lacking the Study Instance UID, or with
    a wildcard in it, and a retrieve naming no unique key get 0xA900 and no match."""
    for number, study in enumerate(["", "1.2.*"]):
        found, text = findscu_run(
            archive,
            tmp_path / f"find{number}",
            "-S",
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={study}",
            "SeriesInstanceUID",
        )
        assert found == []
        assert "DataSetDoesNotMatchSOPClass" in text, text
    command = [f"{DCMTK}movescu", "-v", "-S", "-aec", QR_AET, "-aem", DEST_AET]
    keys = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={archive.ct_series}"]
    result = run([*command, *keys, HOST, str(archive.qrscp.port)], dcmtk=True)
    text = output(result)
    assert "DataSetDoesNotMatchSOPClass" in text, text
    assert "Retrieve from MOVESCU: StudyInstanceUID is required" in archive.qrscp.log()


def test_relational_queries_when_negotiated(archive: Archive) -> None:
    """Our SCU proposes relational queries (extended negotiation); qrscp agrees and then
    answers a SERIES query without the Study Instance UID across every study."""
    from aionetdicom.pdu.items import SOPClassExtendedNegotiation

    async def main() -> tuple[dict[str, bytes], set[str]]:
        relational = SOPClassExtendedNegotiation(sop_classes.STUDY_ROOT_FIND, b"\x01\x01")
        async with AE("OURSCU").associate(
            HOST,
            archive.qrscp.port,
            called_ae_title=QR_AET,
            contexts=[PresentationContext(sop_classes.STUDY_ROOT_FIND)],
            extended_negotiation=[relational],
        ) as assoc:
            query = Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.SeriesInstanceUID = ""
            query.Modality = "CT"
            series = {
                str(match.SeriesInstanceUID)
                async for _, match in assoc.find(query, model="study")
                if match is not None
            }
            return assoc.extended_negotiation, series

    agreed, series = anyio.run(main)
    # Relational yes; combined date-time matching (byte 2) is not offered.
    assert agreed == {sop_classes.STUDY_ROOT_FIND: b"\x01\x00"}
    assert archive.ct_series in series
    assert len(series) >= 2  # the CT series of both studies


def test_lenient_queries_flag(archive: Archive, tmp_path: Path) -> None:
    """A second qrscp on the same index with --lenient-queries answers the query the
    first refuses."""
    port = free_port()
    lenient = start_peer(
        our_app(
            "qrscp",
            str(port),
            "--bind",
            HOST,
            "-od",
            str(archive.storage),
            "--lenient-queries",
            "--max-runtime",
            "60",
            *archive.database,
        ),
        tmp_path / "lenient.log",
        port=port,
    )
    try:
        found = findscu(
            archive,
            tmp_path / "find",
            "-S",
            "QueryRetrieveLevel=SERIES",
            "SeriesInstanceUID",
            "Modality=CT",
            port=port,
        )
    finally:
        stop(lenient)
    assert archive.ct_series in {str(ds.SeriesInstanceUID) for ds in found}
    assert len(found) >= 2


def test_cancel_stops_find_and_move(archive: Archive) -> None:
    """C-CANCEL against qrscp: a C-FIND over 400 matches and a C-MOVE of 400 instances
    end with Cancel (0xFE00) long before the end, and the association goes on."""
    from aionetdicom import sop_classes as classes

    study, series = generate_uid(), generate_uid()
    instances = []
    for number in range(400):
        ds = make_ct(seed=number, patient="Cancel^Case")
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P9", study, series
        del ds.StudyDate
        instances.append(ds)

    async def main() -> tuple[list[int], int, Any]:
        contexts = [
            PresentationContext(uid)
            for uid in (
                classes.STUDY_ROOT_FIND,
                classes.STUDY_ROOT_MOVE,
                CT_IMAGE_STORAGE,
                classes.VERIFICATION,
            )
        ]
        async with AE("OURSCU").associate(
            HOST, archive.qrscp.port, called_ae_title=QR_AET, contexts=contexts
        ) as assoc:
            for ds in instances:
                assert (await assoc.store(ds)).is_success
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = study
            query.SeriesInstanceUID = series
            query.SOPInstanceUID = ""
            statuses: list[int] = []
            async with assoc.find(query, model="study") as responses:
                async for response in responses:
                    statuses.append(int(response.status))
                    if len(statuses) == 3:
                        await responses.cancel()
            move = Dataset()
            move.QueryRetrieveLevel = "STUDY"
            move.StudyInstanceUID = study
            progress = None
            async with assoc.move(move, DEST_AET, model="study") as moving:
                async for progress in moving:
                    if progress.completed == 3:
                        await moving.cancel()
            echo = await assoc.echo()
            assert echo.is_success
            return statuses, len(instances), progress

    statuses, total, final = anyio.run(main)
    assert statuses[-1] == 0xFE00, [hex(s) for s in statuses[-3:]]
    assert len(statuses) < total
    assert final is not None
    assert final.status == 0xFE00
    assert final.completed < total
    assert final.remaining
