"""The index tables: patient, study, series and instance, one row per entity.

SQLAlchemy Core tables, so the same schema works on SQLite (aiosqlite) and PostgreSQL
(asyncpg). Each level's attributes (see :mod:`.attributes`) are text columns named
after their keyword; the instance table also says where the file is and how it is
encoded.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from aionetdicom.index.attributes import ATTRIBUTES, Level

metadata = MetaData()


def _columns(level: Level) -> list[Column[str]]:
    return [Column(attribute.keyword, Text, nullable=True) for attribute in ATTRIBUTES[level]]


patient = Table(
    "patient",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    *_columns(Level.PATIENT),
    UniqueConstraint("PatientID", "IssuerOfPatientID", name="patient_identity"),
)

study = Table(
    "study",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", Integer, ForeignKey("patient.id", ondelete="CASCADE"), nullable=False),
    *_columns(Level.STUDY),
    UniqueConstraint("StudyInstanceUID", name="study_uid"),
    Index("study_patient", "patient_id"),
    Index("study_date", "StudyDate"),
    Index("study_accession", "AccessionNumber"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("study.id", ondelete="CASCADE"), nullable=False),
    *_columns(Level.SERIES),
    UniqueConstraint("SeriesInstanceUID", name="series_uid"),
    Index("series_study", "study_id"),
    Index("series_modality", "Modality"),
)

instance = Table(
    "instance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("series_id", Integer, ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    *_columns(Level.IMAGE),
    Column("path", Text, nullable=False),
    Column("transfer_syntax", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    UniqueConstraint("SOPInstanceUID", name="instance_uid"),
    Index("instance_series", "series_id"),
)

#: The table of each level.
TABLES: dict[Level, Table] = {
    Level.PATIENT: patient,
    Level.STUDY: study,
    Level.SERIES: series,
    Level.IMAGE: instance,
}

#: The column of a table that points at its parent's ``id``.
PARENT_KEY: dict[Level, str] = {
    Level.STUDY: "patient_id",
    Level.SERIES: "study_id",
    Level.IMAGE: "series_id",
}
