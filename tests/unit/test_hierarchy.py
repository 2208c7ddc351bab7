"""Hierarchical query and retrieve rules (PS3.4 C.4.1.2.1, C.4.2.2.1)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from aionetdicom.index import MatchingError
from aionetdicom.index.hierarchy import check_hierarchical


def identifier(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


ACCEPTED = [
    ("STUDY", "STUDY", identifier(StudyDate="20240101-", StudyInstanceUID="")),
    ("PATIENT", "PATIENT", identifier(PatientName="DOE*")),
    ("STUDY", "PATIENT", identifier(PatientID="P1", StudyInstanceUID="")),
    ("SERIES", "STUDY", identifier(StudyInstanceUID="1.2.3", Modality="CT")),
    ("IMAGE", "STUDY", identifier(StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3")),
    (
        "IMAGE",
        "PATIENT",
        identifier(PatientID="P1", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3"),
    ),
]


@pytest.mark.parametrize(("level", "top", "query"), ACCEPTED)
def test_queries_that_follow_the_hierarchy(level: str, top: str, query: Dataset) -> None:
    check_hierarchical(level, top, query)


REFUSED = [
    ("SERIES", "STUDY", identifier(Modality="CT"), "StudyInstanceUID is required"),
    ("SERIES", "STUDY", identifier(StudyInstanceUID=""), "StudyInstanceUID is required"),
    ("SERIES", "STUDY", identifier(StudyInstanceUID="1.2.*"), "single value"),
    ("SERIES", "STUDY", identifier(StudyInstanceUID=["1.2", "1.3"]), "single value"),
    ("STUDY", "PATIENT", identifier(StudyInstanceUID=""), "PatientID is required"),
    ("STUDY", "PATIENT", identifier(PatientID="P?"), "single value"),
    (
        "IMAGE",
        "STUDY",
        identifier(StudyInstanceUID="1.2", SOPInstanceUID=""),
        "SeriesInstanceUID is required",
    ),
]


@pytest.mark.parametrize(("level", "top", "query", "message"), REFUSED)
def test_queries_that_break_the_hierarchy(
    level: str, top: str, query: Dataset, message: str
) -> None:
    with pytest.raises(MatchingError, match=message):
        check_hierarchical(level, top, query)


def test_retrieve_rules() -> None:
    study = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=["1.2", "1.3"])
    check_hierarchical("STUDY", "STUDY", study, retrieve=True)  # a UID list is fine
    series = identifier(StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", PatientID="P1")
    check_hierarchical("SERIES", "STUDY", series, retrieve=True)
    with pytest.raises(MatchingError, match="needs StudyInstanceUID"):
        check_hierarchical("STUDY", "STUDY", identifier(StudyInstanceUID=""), retrieve=True)
    with pytest.raises(MatchingError, match="wildcards"):
        check_hierarchical("STUDY", "STUDY", identifier(StudyInstanceUID="1.*"), retrieve=True)
    with pytest.raises(MatchingError, match="wildcards or lists"):
        check_hierarchical("PATIENT", "PATIENT", identifier(PatientID=["A", "B"]), retrieve=True)
    with pytest.raises(MatchingError, match="only unique keys, not StudyDate"):
        check_hierarchical(
            "STUDY", "STUDY", identifier(StudyInstanceUID="1.2", StudyDate="2024"), retrieve=True
        )
    with pytest.raises(MatchingError, match="not SOPInstanceUID"):
        check_hierarchical(
            "SERIES",
            "STUDY",
            identifier(StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", SOPInstanceUID="9"),
            retrieve=True,
        )
