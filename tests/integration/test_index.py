"""The qrscp index on SQLite: C-FIND matching (PS3.4 C.2.2.2), responses, retrieve lists."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from aionetdicom.index import Added, DicomIndex, Level, MatchingError
from aionetdicom.index.attributes import normalise_time
from aionetdicom.index.matching import is_universal
from tests.postgres import fresh_database

EXPLICIT = "1.2.840.10008.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def instance(
    patient: str,
    study: str,
    series: str,
    sop: str,
    *,
    name: str = "Doe^John",
    date: str = "20200101",
    time: str = "093000",
    modality: str = "CT",
    accession: str = "",
) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient
    ds.PatientName = name
    ds.StudyInstanceUID = study
    ds.StudyDate = date
    ds.StudyTime = time
    ds.AccessionNumber = accession
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.SOPInstanceUID = sop
    ds.SOPClassUID = CT if modality == "CT" else MR
    return ds


#: Two patients, three studies, four series, six instances.
ARCHIVE = [
    instance("P1", "1.1", "1.1.1", "1.1.1.1", date="20200101", time="0930", accession="A_1"),
    instance("P1", "1.1", "1.1.1", "1.1.1.2", date="20200101", time="0930", accession="A_1"),
    instance("P1", "1.1", "1.1.2", "1.1.2.1", modality="MR", accession="A_1"),
    instance("P1", "1.2", "1.2.1", "1.2.1.1", date="20210615", time="141500", accession="A%2"),
    instance("P2", "2.1", "2.1.1", "2.1.1.1", name="Smith^Anna", date="20191231", time="2359"),
    instance("P2", "2.1", "2.1.1", "2.1.1.2", name="Smith^Anna", date="20191231", time="2359"),
]


@pytest.fixture
def anyio_backend() -> str:
    """SQLAlchemy's async engine runs on asyncio only (the index says so in its docs)."""
    return "asyncio"


_databases = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty index database: SQLite in a file, or one on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.db'}"
    server: str = request.getfixturevalue("postgres_url")
    return fresh_database(server, f"index_{next(_databases)}")


@pytest.fixture
async def index(database_url: str) -> AsyncIterator[DicomIndex]:
    opened = await DicomIndex.open(database_url)
    for number, ds in enumerate(ARCHIVE):
        added, old = await opened.add(
            ds, path=f"/store/{ds.SOPInstanceUID}.dcm", transfer_syntax=EXPLICIT, size=number
        )
        assert (added, old) == (Added.NEW, None)
    try:
        yield opened
    finally:
        await opened.aclose()


def query(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def found(
    index: DicomIndex, level: str, key: str, top: str = "PATIENT", **keys: object
) -> list[str]:
    identifier = query(level, **{key: ""}, **keys)
    return sorted([str(r.get(key)) async for r in index.find(level, identifier, top=top)])


async def test_counts(index: DicomIndex) -> None:
    assert await index.count(Level.PATIENT) == 2
    assert await index.count(Level.STUDY) == 3
    assert await index.count(Level.SERIES) == 4
    assert await index.count(Level.IMAGE) == 6


async def test_universal_matching_returns_every_entity(index: DicomIndex) -> None:
    assert await found(index, "STUDY", "StudyInstanceUID", top="STUDY") == ["1.1", "1.2", "2.1"]
    assert await found(index, "PATIENT", "PatientID") == ["P1", "P2"]


async def test_single_value_and_uid_list(index: DicomIndex) -> None:
    assert await found(index, "SERIES", "SeriesInstanceUID", StudyInstanceUID="1.1") == [
        "1.1.1",
        "1.1.2",
    ]
    identifier = query("STUDY", StudyInstanceUID=["1.2", "2.1"])
    studies = [r.StudyInstanceUID async for r in index.find("STUDY", identifier, top="STUDY")]
    assert sorted(studies) == ["1.2", "2.1"]


async def test_wildcards_are_case_sensitive_except_for_person_names(index: DicomIndex) -> None:
    assert await found(index, "PATIENT", "PatientID", PatientName="smith*") == ["P2"]
    assert await found(index, "PATIENT", "PatientID", PatientName="D?E^*") == ["P1"]
    assert await found(index, "SERIES", "SeriesInstanceUID", Modality="c*") == []
    assert await found(index, "SERIES", "SeriesInstanceUID", Modality="M?") == ["1.1.2"]


async def test_like_metacharacters_are_literal(index: DicomIndex) -> None:
    assert await found(index, "STUDY", "StudyInstanceUID", AccessionNumber="A%2") == ["1.2"]
    assert await found(index, "STUDY", "StudyInstanceUID", AccessionNumber="A_*") == [
        "1.1",
    ]


async def test_date_ranges_with_open_ends(index: DicomIndex) -> None:
    assert await found(index, "STUDY", "StudyInstanceUID", StudyDate="20200101-20201231") == ["1.1"]
    assert await found(index, "STUDY", "StudyInstanceUID", StudyDate="20200102-") == ["1.2"]
    assert await found(index, "STUDY", "StudyInstanceUID", StudyDate="-20200101") == [
        "1.1",
        "2.1",
    ]


async def test_time_ranges_compare_normalised_times(index: DicomIndex) -> None:
    assert await found(index, "STUDY", "StudyInstanceUID", StudyTime="0900-1000") == ["1.1"]
    assert await found(index, "STUDY", "StudyInstanceUID", StudyTime="14-14") == ["1.2"]
    assert await found(index, "STUDY", "StudyInstanceUID", StudyTime="2300-") == ["2.1"]


async def test_malformed_range_is_a_matching_error(index: DicomIndex) -> None:
    with pytest.raises(MatchingError, match="not a DA value"):
        await found(index, "STUDY", "StudyInstanceUID", StudyDate="2020-2021")


async def test_modalities_in_study_matches_and_is_computed(index: DicomIndex) -> None:
    identifier = query("STUDY", StudyInstanceUID="", ModalitiesInStudy="MR")
    responses = [r async for r in index.find("STUDY", identifier, top="STUDY")]
    assert [r.StudyInstanceUID for r in responses] == ["1.1"]
    assert sorted(responses[0].ModalitiesInStudy) == ["CT", "MR"]
    # Each study gets its own modalities (a CT-only study says CT alone), and the SOP
    # classes likewise.
    identifier = query("STUDY", StudyInstanceUID="", ModalitiesInStudy="", SOPClassesInStudy="")
    by_study = {
        r.StudyInstanceUID: (r.ModalitiesInStudy, r.SOPClassesInStudy)
        async for r in index.find("STUDY", identifier, top="STUDY")
    }
    assert by_study["1.2"] == ("CT", CT)
    assert by_study["2.1"] == ("CT", CT)
    assert sorted(by_study["1.1"][1]) == sorted([CT, MR])


async def test_response_holds_exactly_the_requested_keys(index: DicomIndex) -> None:
    identifier = query(
        "STUDY",
        StudyInstanceUID="1.1",
        PatientName="",
        NumberOfStudyRelatedInstances="",
        NumberOfStudyRelatedSeries="",
        StudyComments="",  # not indexed: returned empty
    )
    responses = [r async for r in index.find("STUDY", identifier, top="STUDY")]
    assert len(responses) == 1
    response = responses[0]
    assert {element.keyword for element in response} == {
        "SpecificCharacterSet",
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "PatientName",
        "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "StudyComments",
    }
    assert response.PatientName == "Doe^John"
    assert int(response.NumberOfStudyRelatedInstances) == 3
    assert int(response.NumberOfStudyRelatedSeries) == 2
    assert response.StudyComments in (None, "")


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
async def test_encoded_responses_equal_the_datasets(index: DicomIndex, syntax: str) -> None:
    """find(transfer_syntax=...) writes each response directly: the same bytes pydicom
    writes for the Dataset the other path gives."""
    from aionetdicom.datasets import encode_dataset

    identifier = query(
        "IMAGE",
        StudyInstanceUID="1.1",
        SeriesInstanceUID="*",
        SOPInstanceUID="",
        InstanceNumber="",
        Rows="",
        ImageType="",
        ContentTime="",
        PatientName="",
    )
    datasets = [r async for r in index.find("IMAGE", identifier, top="PATIENT")]
    encoded = [
        r async for r in index.find("IMAGE", identifier, top="PATIENT", transfer_syntax=syntax)
    ]
    assert len(datasets) == len(encoded) == 3
    assert encoded == [encode_dataset(ds, syntax) for ds in datasets]
    with pytest.raises(ValueError, match="cannot write responses"):
        async for _ in index.find("IMAGE", identifier, transfer_syntax="1.2.840.10008.1.2.2"):
            pass


async def test_series_level_adds_the_unique_keys_above(index: DicomIndex) -> None:
    identifier = query("SERIES", StudyInstanceUID="1.2", Modality="")
    responses = [r async for r in index.find("SERIES", identifier, top="PATIENT")]
    assert len(responses) == 1
    assert responses[0].PatientID == "P1"
    assert responses[0].SeriesInstanceUID == "1.2.1"


async def test_files_of_a_study(index: DicomIndex) -> None:
    identifier = query("STUDY", StudyInstanceUID="2.1")
    files = [f async for f in index.files("STUDY", identifier, top="STUDY")]
    assert [f.sop_instance_uid for f in files] == ["2.1.1.1", "2.1.1.2"]
    assert files[0].path == "/store/2.1.1.1.dcm"
    assert files[0].transfer_syntax == EXPLICIT
    assert files[0].sop_class_uid == CT


async def test_duplicate_sop_instance_replaces_the_entry(index: DicomIndex) -> None:
    again = instance("P1", "1.1", "1.1.1", "1.1.1.1", accession="A_1")
    added, old = await index.add(again, path="/elsewhere/x.dcm", transfer_syntax=EXPLICIT, size=9)
    assert added is Added.REPLACED
    assert old == "/store/1.1.1.1.dcm"
    assert await index.count(Level.IMAGE) == 6
    paths = [f.path async for f in index.files("IMAGE", query("IMAGE", SOPInstanceUID="1.1.1.1"))]
    assert paths == ["/elsewhere/x.dcm"]


async def test_remove(index: DicomIndex) -> None:
    assert await index.remove("2.1.1.2") == "/store/2.1.1.2.dcm"
    assert await index.remove("2.1.1.2") is None
    assert await index.count(Level.IMAGE) == 5


async def test_instance_without_uids_is_refused(index: DicomIndex) -> None:
    ds = instance("P9", "9.1", "9.1.1", "")
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        await index.add(ds, path="/x", transfer_syntax=EXPLICIT, size=0)


def test_universal_values() -> None:
    assert is_universal("")
    assert is_universal("*")
    assert is_universal("  ")
    assert not is_universal("**x")


def test_time_normalisation() -> None:
    assert normalise_time("09") == "090000.000000"
    assert normalise_time("0930") == "093000.000000"
    assert normalise_time("093015.5") == "093015.500000"
    assert normalise_time("09:30:15") == "093015.000000"


NAMES = st.text(alphabet="abAB%_!*?^", min_size=0, max_size=6)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stored=st.lists(
        st.text(alphabet="abAB%_!^", min_size=1, max_size=5), min_size=1, max_size=5, unique=True
    ),
    pattern=NAMES,
)
def test_wildcard_matching_agrees_with_a_reference(
    tmp_path_factory: pytest.TempPathFactory, stored: list[str], pattern: str
) -> None:
    """LO wildcard matching in SQL equals a regular-expression reference, case-sensitive."""
    import anyio

    folder = tmp_path_factory.mktemp("wild")

    async def run() -> list[str]:
        index = await DicomIndex.open(f"sqlite:///{folder / 'index.db'}")
        try:
            for number, value in enumerate(stored):
                ds = instance("P", "1", "1.1", f"1.1.{number}", accession=value)
                ds.StudyInstanceUID = f"1.{number}"
                await index.add(ds, path="/x", transfer_syntax=EXPLICIT, size=0)
            identifier = query("STUDY", StudyInstanceUID="", AccessionNumber=pattern)
            return sorted(
                [str(r.AccessionNumber) async for r in index.find("STUDY", identifier, top="STUDY")]
            )
        finally:
            await index.aclose()

    got = anyio.run(run)
    if is_universal(pattern):
        expected = sorted(stored)
    elif "*" in pattern or "?" in pattern:
        expected = sorted(v for v in stored if _wild(pattern, v))
    else:
        expected = sorted(v for v in stored if v == pattern)
    assert got == expected


def _wild(pattern: str, value: str) -> bool:
    """DICOM wildcard matching: ``*`` any run, ``?`` one character, all else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None
