"""Tests of DIMSE status categories (PS3.7 Annex C) and descriptions."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aionetdicom.dimse.status import (
    GENERAL_STATUSES,
    Status,
    StatusCategory,
    describe_status,
    status_category,
)

S = StatusCategory


@pytest.mark.parametrize(
    ("value", "category"),
    [
        (0x0000, S.SUCCESS),
        (0x0001, S.WARNING),
        (0x0107, S.WARNING),
        (0x0116, S.WARNING),
        (0xB000, S.WARNING),
        (0xB006, S.WARNING),
        (0xB007, S.WARNING),
        (0xBFFF, S.WARNING),
        (0x0105, S.FAILURE),
        (0x0106, S.FAILURE),
        (0x0110, S.FAILURE),
        (0x0122, S.FAILURE),
        (0x0124, S.FAILURE),
        (0x01FF, S.FAILURE),
        (0x0210, S.FAILURE),
        (0x0213, S.FAILURE),
        (0x02FF, S.FAILURE),
        (0xA000, S.FAILURE),
        (0xA700, S.FAILURE),
        (0xA801, S.FAILURE),
        (0xA900, S.FAILURE),
        (0xAFFF, S.FAILURE),
        (0xC000, S.FAILURE),
        (0xC211, S.FAILURE),
        (0xCFFF, S.FAILURE),
        (0xFE00, S.CANCEL),
        (0xFF00, S.PENDING),
        (0xFF01, S.PENDING),
    ],
)
def test_categories(value: int, category: StatusCategory) -> None:
    assert status_category(value) is category
    assert status_category(value, "C-STORE") is category
    assert Status(value).category is category


@pytest.mark.parametrize("value", [0x0002, 0x0300, 0x1234, 0xD000, 0xFE01, 0xFF02, 0xFFFF])
def test_codes_outside_annex_c_ranges_are_failures(value: int) -> None:
    assert status_category(value) is S.FAILURE
    assert Status(value).is_failure


@pytest.mark.parametrize("value", [-1, 0x10000])
def test_out_of_range_values_are_rejected(value: int) -> None:
    with pytest.raises(ValueError, match="16 bits"):
        status_category(value)
    with pytest.raises(ValueError, match="16 bits"):
        Status(value)


def test_predicates() -> None:
    assert Status(0).is_success
    assert Status(0xB000).is_warning
    assert Status(0xA700).is_failure
    assert Status(0xFE00).is_cancel
    assert Status(0xFF01).is_pending
    flags = Status(0xFF00)
    assert not flags.is_success
    assert not flags.is_warning
    assert not flags.is_failure
    assert not flags.is_cancel


def test_status_is_an_int() -> None:
    status = Status(0xFF00)
    assert status == 0xFF00
    assert isinstance(status, int)
    assert str(status) == "65280"
    assert f"{status:04X}" == "FF00"
    assert {0xFF00: 1}[status] == 1


def test_repr_and_description() -> None:
    assert repr(Status(0x0000)) == "Status(0x0000 Success)"
    assert repr(Status(0xFF00)) == "Status(0xFF00 Pending)"
    assert Status(0x0112).description == "No such SOP instance"
    assert Status(0x0213).description == "Resource limitation"
    assert Status(0x0122).description == "Refused: SOP class not supported"


def test_service_specific_descriptions() -> None:
    assert Status(0xB000, "C-STORE").description == "Warning: coercion of data elements"
    assert "one or more failures" in Status(0xB000, "C-MOVE").description
    assert "one or more failures" in Status(0xB000, "C-GET").description
    assert Status(0xA7F3, "C-STORE").description == "Refused: out of resources"
    assert Status(0xA912, "C-STORE").description == "Error: data set does not match SOP class"
    assert Status(0xC123, "C-STORE").description == "Error: cannot understand"
    assert Status(0xC001, "C-FIND").description == "Failed: unable to process"
    assert Status(0xA801, "C-MOVE").description == "Refused: move destination unknown"
    assert "optional keys not supported" in Status(0xFF01, "C-FIND").description
    assert Status(0xA702, "C-GET").description.startswith("Refused: out of resources")
    assert Status(0x0110, "C-FIND").description == "Processing failure"
    assert repr(Status(0xB007, "C-STORE")) == (
        "Status(0xB007 Warning: data set does not match SOP class)"
    )


def test_unknown_codes_describe_their_category() -> None:
    assert describe_status(0xB123) == "Warning (code not known)"
    assert describe_status(0xC123) == "Failure (code not known)"
    assert describe_status(0xC123, "N-GET") == "Failure (code not known)"


def test_general_table_covers_annex_c() -> None:
    for code in (
        *range(0x0105, 0x0108),
        *range(0x0110, 0x0125),
        *range(0x0210, 0x0214),
        0x0000,
        0xFE00,
        0xFF00,
    ):
        if code in (0x011A, 0x011B, 0x011C, 0x011D, 0x011E, 0x011F):
            continue
        assert code in GENERAL_STATUSES, hex(code)


def test_pickle_keeps_service() -> None:
    status = pickle.loads(pickle.dumps(Status(0xB000, "C-MOVE")))
    assert status == 0xB000
    assert status.service == "C-MOVE"


@given(st.integers(0, 0xFFFF))
def test_every_code_has_category_and_description(value: int) -> None:
    status = Status(value)
    assert isinstance(status.category, StatusCategory)
    assert status.description
    assert repr(status).startswith(f"Status(0x{value:04X} ")
