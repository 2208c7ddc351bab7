"""In-memory C-FIND matching (worklist files): values, ranges, sequences, responses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from aionetdicom.index.dataset_matching import MatchingError, matches, response, value_matches


def worklist_item(modality: str = "CT", date: str = "20240102", time: str = "0930") -> Dataset:
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = "CT1"
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = time
    step.ScheduledProcedureStepID = "SPS1"
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.AccessionNumber = "ACC1"
    ds.StudyInstanceUID = "1.2.3"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def sps_query(**keys: str) -> Dataset:
    step = Dataset()
    for keyword, value in keys.items():
        setattr(step, keyword, value)
    query = Dataset()
    query.PatientName = ""
    query.ScheduledProcedureStepSequence = Sequence([step])
    return query


def test_sequence_matching_on_item_keys() -> None:
    item = worklist_item()
    assert matches(sps_query(Modality="CT", ScheduledProcedureStepStartDate="20240101-"), item)
    assert not matches(sps_query(Modality="MR"), item)
    assert not matches(sps_query(ScheduledProcedureStepStartDate="-20231231"), item)
    assert matches(sps_query(ScheduledProcedureStepStartTime="0900-1000"), item)
    assert not matches(sps_query(ScheduledProcedureStepStartTime="1000-"), item)


def test_empty_sequence_key_is_universal() -> None:
    query = Dataset()
    query.ScheduledProcedureStepSequence = Sequence([])
    assert matches(query, worklist_item())
    assert matches(query, Dataset())


def test_missing_attribute_does_not_match_a_value() -> None:
    query = Dataset()
    query.AdmissionID = "X"
    assert not matches(query, worklist_item())


def test_response_holds_the_requested_keys_with_the_candidate_values() -> None:
    query = sps_query(Modality="", ScheduledProcedureStepID="")
    query.PatientID = ""
    query.RequestedProcedureID = ""
    result = response(query, worklist_item())
    assert result.PatientName == "Doe^Jane"
    assert result.PatientID == "P1"
    assert result.RequestedProcedureID in (None, "")
    step = result.ScheduledProcedureStepSequence[0]
    assert {e.keyword for e in step} == {"Modality", "ScheduledProcedureStepID"}
    assert step.Modality == "CT"
    assert "AccessionNumber" not in result


@pytest.mark.parametrize(
    ("vr", "query", "value", "expected"),
    [
        ("PN", "doe^*", "Doe^Jane", True),
        ("LO", "doe*", "Doe", False),
        ("CS", "ORIGINAL", "ORIGINAL\\PRIMARY", True),
        ("UI", "1.2\\1.3", "1.3", True),
        ("UI", "1.2", "1.2.3", False),
        ("DA", "20240101-20240131", "20240115", True),
        ("DA", "20240101-20240131", "", False),
        ("TM", "-12", "123000", True),
        ("TM", "0930", "093000.000", True),
        ("DT", "20240101-20240102", "20240102235959", True),
        ("DT", "20240103-", "20240102235959", False),
        ("SH", "A?C", "ABC", True),
        ("SH", "A?C", "ABBC", False),
    ],
)
def test_value_matching(vr: str, query: str, value: str, expected: bool) -> None:
    assert value_matches(vr, query, value) is expected


def test_malformed_range() -> None:
    with pytest.raises(MatchingError):
        value_matches("DA", "2024-01-01", "20240101")


@given(
    value=st.text(alphabet="abAB*?.^\\", max_size=6),
    pattern=st.text(alphabet="abAB*?.^", min_size=1, max_size=6),
)
def test_wildcards_agree_with_a_regular_expression(value: str, pattern: str) -> None:
    """``*`` any run, ``?`` one character, the rest literal; case-sensitive (LO)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    values = value.split("\\") if value else [""]
    expected = any(re.fullmatch(regex, each, re.DOTALL) for each in values)
    if pattern == "*":
        expected = True
    assert value_matches("LO", pattern, value) is expected
