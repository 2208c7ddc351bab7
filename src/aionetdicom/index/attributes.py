"""Which attributes the index keeps at each Query/Retrieve level (PS3.4 C.6.1/C.6.2).

Each level holds its unique key, its required keys and the common optional keys of
the Patient Root and Study Root models; the index stores them as text columns named
after the keyword, so a key of a C-FIND identifier maps to a column by name. Dates
and times are kept normalised (see :func:`normalise`) so that range matching can
compare them as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Level(str, Enum):
    """A Query/Retrieve level, top to bottom."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        """0 for PATIENT down to 3 for IMAGE."""
        return list(Level).index(self)


@dataclass(frozen=True)
class Attribute:
    """One indexed attribute: its keyword (also the column name) and its VR."""

    keyword: str
    vr: str
    level: Level


def _attributes(level: Level, spec: str) -> tuple[Attribute, ...]:
    pairs = (item.split(":") for item in spec.split())
    return tuple(Attribute(keyword, vr, level) for keyword, vr in pairs)


#: The indexed attributes of each level; the first is the level's unique key.
ATTRIBUTES: dict[Level, tuple[Attribute, ...]] = {
    Level.PATIENT: _attributes(
        Level.PATIENT,
        "PatientID:LO PatientName:PN IssuerOfPatientID:LO PatientBirthDate:DA "
        "PatientBirthTime:TM PatientSex:CS EthnicGroup:SH PatientComments:LT",
    ),
    Level.STUDY: _attributes(
        Level.STUDY,
        "StudyInstanceUID:UI StudyDate:DA StudyTime:TM AccessionNumber:SH StudyID:SH "
        "ReferringPhysicianName:PN StudyDescription:LO PatientAge:AS PatientSize:DS "
        "PatientWeight:DS",
    ),
    Level.SERIES: _attributes(
        Level.SERIES,
        "SeriesInstanceUID:UI Modality:CS SeriesNumber:IS SeriesDescription:LO "
        "BodyPartExamined:CS SeriesDate:DA SeriesTime:TM ProtocolName:LO "
        "PerformedProcedureStepStartDate:DA PerformedProcedureStepStartTime:TM "
        "Laterality:CS",
    ),
    Level.IMAGE: _attributes(
        Level.IMAGE,
        "SOPInstanceUID:UI SOPClassUID:UI InstanceNumber:IS ContentDate:DA "
        "ContentTime:TM AcquisitionDate:DA AcquisitionTime:TM ImageType:CS Rows:US "
        "Columns:US NumberOfFrames:IS",
    ),
}

#: The unique key of each level.
UNIQUE_KEY: dict[Level, str] = {level: attrs[0].keyword for level, attrs in ATTRIBUTES.items()}

#: Attributes the SCP computes from the index rather than stores (PS3.4 C.3.4).
COMPUTED: dict[str, Level] = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}

#: Every indexed attribute by keyword.
BY_KEYWORD: dict[str, Attribute] = {
    attribute.keyword: attribute for attrs in ATTRIBUTES.values() for attribute in attrs
}


def value_text(value: Any) -> str:
    """A data element value as text: multi-values joined by ``\\``, None as ``""``."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(part) for part in value)
    return str(value)


def normalise(vr: str, value: str) -> str:
    """A stored or queried value in the form the index compares.

    TM values are padded to ``HHMMSS.FFFFFF`` (``0930`` and ``093000`` are the same
    time); other values lose the padding spaces DICOM allows.
    """
    value = value.strip(" \0")
    if vr == "TM" and value:
        return normalise_time(value)
    return value


def normalise_time(value: str) -> str:
    """``HH[MM[SS[.F{1,6}]]]`` (colons tolerated) as ``HHMMSS.FFFFFF``."""
    text = value.replace(":", "")
    whole, _, fraction = text.partition(".")
    whole = (whole + "0000")[:6] if len(whole) < 6 else whole[:6]
    return f"{whole}.{(fraction + '000000')[:6]}"
