"""The instance index: what is stored where, and C-FIND / retrieve queries over it.

One :class:`DicomIndex` wraps an SQLAlchemy async engine, so a URL picks the database:
``sqlite:///index.db`` (embedded, the default of ``qrscp``; run through aiosqlite) or
``postgresql://user@host/db`` (asyncpg) for sites that share one index between
servers. Queries stream from a database cursor, never building the full result list.
SQLAlchemy's async engine runs on asyncio only, so the index (and ``qrscp``) do too.
Writes to a SQLite file run whole in one worker thread on a synchronous connection
(one thread hop per instance instead of one per statement); elsewhere they run on
the async engine.

Duplicates: storing a SOP Instance UID that is already indexed replaces the entry
(the newest copy wins; :meth:`DicomIndex.add` says which file it replaced, so the
caller can remove it if it is not the same path).
"""

from __future__ import annotations

import enum
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Update,
    bindparam,
    create_engine,
    distinct,
    event,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aionetdicom.index import schema
from aionetdicom.index.attributes import (
    ATTRIBUTES,
    BY_KEYWORD,
    COMPUTED,
    UNIQUE_KEY,
    Attribute,
    Level,
    normalise,
    value_text,
)
from aionetdicom.index.encoding import ResponseValue, encode_identifier
from aionetdicom.index.matching import MatchingError, condition, is_universal

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["Added", "DicomIndex", "MatchingError", "StoredFile", "async_url"]

#: Attempts of one ``add`` when concurrent writers race to create the same entity.
_ADD_ATTEMPTS = 5
#: Series whose rows ``add`` remembers (see ``DicomIndex._recent``).
_RECENT_SERIES = 64
#: Rows fetched from the cursor at a time (one database round trip per batch).
FETCH_ROWS = 256
#: The character set of every response identifier: UTF-8 covers what the index holds.
RESPONSE_CHARACTER_SET = "ISO_IR 192"

_LEVELS = list(Level)
#: The transfer syntaxes responses can be written in: UID -> implicit VR.
_LITTLE_ENDIAN = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}
_T = TypeVar("_T")


class Added(enum.Enum):
    """What :meth:`DicomIndex.add` did."""

    NEW = "new"
    REPLACED = "replaced"


@dataclass(frozen=True)
class StoredFile:
    """An indexed instance's file: what a retrieve sends."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    size: int


def async_url(url: str) -> str:
    """``url`` with the async driver the index uses (aiosqlite, asyncpg) filled in."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(f"{url!r} is not a database URL (like sqlite:///index.db)")
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    return url


#: VRs whose single ASCII value is its text as received (no decoding needed).
_PLAIN_TEXT_VRS = frozenset(
    ["AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "UT"]
)


def _element_text(dataset: Dataset, attribute: Attribute) -> str:
    """The text of one attribute; a raw single ASCII value is read as it is, since
    converting every element through pydicom costs more than the rest of ``add``."""
    from pydicom.dataelem import RawDataElement

    raw = dataset.get_item(_tag_and_vr(attribute.keyword)[0])
    if raw is None:
        return ""
    if (
        isinstance(raw, RawDataElement)
        and attribute.vr in _PLAIN_TEXT_VRS
        and isinstance(raw.value, bytes)
        and raw.value.isascii()
        and b"\\" not in raw.value
    ):
        return raw.value.decode("ascii")
    element = dataset.get(attribute.keyword)
    return value_text(element) if element is not None else ""


def _row_values(dataset: Dataset, level: Level) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for attribute in ATTRIBUTES[level]:
        text = _element_text(dataset, attribute)
        values[attribute.keyword] = normalise(attribute.vr, text) if text else None
    return values


class DicomIndex:
    """Patient / study / series / instance rows for every stored instance."""

    def __init__(self, engine: AsyncEngine, write_engine: Engine | None = None) -> None:
        self.engine = engine
        #: A synchronous engine on the same SQLite file, used by one worker thread.
        self._write_engine = write_engine
        self._writer = anyio.CapacityLimiter(1)
        self._write_lock = anyio.Lock()
        # Series written lately: UID -> (series row id, the values last written above
        # the instance). An instance of a known series with the same patient, study and
        # series values only writes its own row: most instances of a study arrive together.
        self._recent: OrderedDict[str, tuple[int, tuple[Any, ...]]] = OrderedDict()

    @classmethod
    async def open(cls, url: str, *, create: bool = True, **engine_options: Any) -> DicomIndex:
        """Connect to the database at ``url``; create the tables if ``create``."""
        engine = create_async_engine(async_url(url), **engine_options)
        write_engine = None
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            if _is_sqlite_file(engine):
                write_engine = create_engine(
                    engine.url.set(drivername="sqlite+pysqlite"),
                    connect_args={"check_same_thread": False},
                    pool_size=1,
                )
                event.listen(write_engine, "connect", _sqlite_pragmas)
        index = cls(engine, write_engine)
        if create:
            async with engine.begin() as conn:
                await conn.run_sync(schema.metadata.create_all)
        return index

    async def aclose(self) -> None:
        """Close every connection of the engines."""
        try:
            await self.engine.dispose()
        finally:
            if self._write_engine is not None:
                await anyio.to_thread.run_sync(self._write_engine.dispose, limiter=self._writer)

    async def _write(self, body: Callable[[Connection], _T]) -> _T:
        """Run ``body`` in one transaction (committed when it returns)."""
        write_engine = self._write_engine
        if write_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(body)

        def in_transaction() -> _T:
            with write_engine.begin() as conn:
                return body(conn)

        return await anyio.to_thread.run_sync(in_transaction, limiter=self._writer)

    async def __aenter__(self) -> DicomIndex:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ writing

    async def add(
        self, dataset: Dataset, *, path: str, transfer_syntax: str, size: int
    ) -> tuple[Added, str | None]:
        """Index an instance whose file is already safely at ``path``.

        ``dataset`` needs the attributes of every level (its Pixel Data is not used,
        so the prefix from ``StoreRequest.peek()`` is enough). Returns what happened
        and, for a replaced entry, the path of the file it pointed to.
        """
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if not value_text(dataset.get(keyword)).strip():
                raise ValueError(f"cannot index an instance without {keyword}")
        rows = {level: _row_values(dataset, level) for level in Level}
        rows[Level.PATIENT]["PatientID"] = rows[Level.PATIENT]["PatientID"] or ""
        rows[Level.PATIENT]["IssuerOfPatientID"] = rows[Level.PATIENT]["IssuerOfPatientID"] or ""
        extra = {"path": path, "transfer_syntax": transfer_syntax, "size": size}
        series_uid = str(rows[Level.SERIES]["SeriesInstanceUID"])
        above = tuple(
            tuple(sorted(rows[level].items()))
            for level in (Level.PATIENT, Level.STUDY, Level.SERIES)
        )
        async with self._write_lock:
            for attempt in range(_ADD_ATTEMPTS):
                recent = self._recent.get(series_uid)
                known = recent[0] if recent is not None and recent[1] == above else None

                def write(
                    conn: Connection, known: int | None = known
                ) -> tuple[int, tuple[Added, str | None]]:
                    parent = known if known is not None else _add_parents(conn, rows)
                    return parent, _add_instance(conn, rows[Level.IMAGE], extra, parent)

                try:
                    series_id, outcome = await self._write(write)
                except IntegrityError:
                    self._recent.clear()
                    if attempt == _ADD_ATTEMPTS - 1:
                        raise
                    continue
                self._recent[series_uid] = (series_id, above)
                self._recent.move_to_end(series_uid)
                while len(self._recent) > _RECENT_SERIES:
                    self._recent.popitem(last=False)
                return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    async def remove(self, sop_instance_uid: str) -> str | None:
        """Forget an instance; the path of its file, or None if it was not indexed."""
        table = schema.instance
        where = table.c.SOPInstanceUID == sop_instance_uid

        def delete(conn: Connection) -> str | None:
            path = conn.scalar(select(table.c.path).where(where))
            conn.execute(table.delete().where(where))
            return path

        async with self._write_lock:
            return await self._write(delete)

    # ------------------------------------------------------------------ reading

    async def find(
        self,
        level: Level | str,
        identifier: Dataset,
        *,
        top: Level | str = Level.PATIENT,
        transfer_syntax: str | None = None,
    ) -> AsyncIterator[Any]:
        """The C-FIND responses for ``identifier`` at ``level`` (one per match).

        ``top`` is the information model's root (PATIENT or STUDY). Every key of
        ``identifier`` at ``level`` or above constrains the match (see
        :mod:`.matching`); each response holds exactly the requested keys (empty
        when the index does not know them), the unique keys of ``level`` and above,
        ``QueryRetrieveLevel`` and ``SpecificCharacterSet``. Responses are pydicom
        Datasets, or with ``transfer_syntax`` (Implicit or Explicit VR Little Endian)
        their encoded bytes, written without building a Dataset. Raises
        :class:`MatchingError` for a key value that cannot be matched.
        """
        level, top = Level(level), Level(top)
        implicit: bool | None = None
        if transfer_syntax is not None:
            if transfer_syntax not in _LITTLE_ENDIAN:
                raise ValueError(f"cannot write responses in {transfer_syntax}")
            implicit = _LITTLE_ENDIAN[transfer_syntax]
        query, returned, computed = _find_query(level, top, identifier, self.engine.dialect.name)
        fixed: list[tuple[int, str, ResponseValue]] = [
            (0x00080005, "CS", RESPONSE_CHARACTER_SET),
            (0x00080052, "CS", level.value),
        ]
        # (tag, VR, keyword in the row or None for a key the index does not hold)
        columns: list[tuple[int, str, str | None]] = []
        seen = {0x00080005, 0x00080052}
        for element in identifier:
            keyword = element.keyword
            if not keyword or element.tag in seen:
                continue
            seen.add(element.tag)
            if keyword in returned or keyword in computed:
                columns.append((*_tag_and_vr(keyword), keyword))
            else:
                columns.append((int(element.tag), element.VR, None))
        for key in _unique_keys(level, top):
            tag, vr = _tag_and_vr(key)
            if tag not in seen:
                seen.add(tag)
                columns.append((tag, vr, key))
        async with self.engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=FETCH_ROWS))
            async for row in result.mappings():
                elements = fixed + [
                    (tag, vr, None if key is None else _response_value(vr, row[key]))
                    for tag, vr, key in columns
                ]
                if implicit is None:
                    yield _dataset(elements)
                else:
                    yield encode_identifier(elements, implicit=implicit)

    async def files(
        self,
        level: Level | str,
        identifier: Dataset,
        *,
        top: Level | str = Level.PATIENT,
    ) -> AsyncIterator[StoredFile]:
        """The files of every instance under the entities ``identifier`` matches."""
        level, top = Level(level), Level(top)
        conditions = _conditions(level, top, identifier)
        table = schema.instance
        query = select(
            table.c.path,
            table.c.SOPClassUID,
            table.c.SOPInstanceUID,
            table.c.transfer_syntax,
            table.c.size,
        ).select_from(_joined(Level.IMAGE))
        query = query.where(*conditions).order_by(table.c.id)
        async with self.engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=FETCH_ROWS))
            async for row in result:
                yield StoredFile(row[0], row[1] or "", row[2], row[3], row[4])

    async def count(self, level: Level | str = Level.IMAGE) -> int:
        """How many entities of ``level`` the index holds."""
        table = schema.TABLES[Level(level)]
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


# ---------------------------------------------------------------------- internals


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA case_sensitive_like=ON")  # LIKE as in PostgreSQL
    cursor.close()


def _is_sqlite_file(engine: AsyncEngine) -> bool:
    """Whether a SQLite URL names a file (an in-memory database is private to one engine)."""
    database = engine.url.database or ""
    return database not in ("", ":memory:") and not database.startswith("file::memory:")


def _upsert(
    conn: Connection,
    level: Level,
    identity: Mapping[str, Any],
    values: Mapping[str, Any],
) -> int:
    """The id of the row of ``level`` matching ``identity``, inserted or updated."""
    table = schema.TABLES[level]
    row_id = conn.scalar(_find_row(level, tuple(identity)), dict(identity))
    if row_id is None:
        result = conn.execute(table.insert(), dict(values))
        inserted = result.inserted_primary_key
        assert inserted is not None
        return int(inserted[0])
    conn.execute(_update_row(level), {**values, "_row": row_id})
    return int(row_id)


# Statements with bound parameters are compiled once and reused from SQLAlchemy's cache.


@functools.cache
def _find_row(level: Level, keys: tuple[str, ...]) -> Select[Any]:
    table = schema.TABLES[level]
    return select(table.c.id).where(*(table.c[key] == bindparam(key) for key in keys))


@functools.cache
def _update_row(level: Level) -> Update:
    table = schema.TABLES[level]
    return table.update().where(table.c.id == bindparam("_row"))


_FIND_INSTANCE = select(schema.instance.c.id, schema.instance.c.path).where(
    schema.instance.c.SOPInstanceUID == bindparam("uid")
)


def _add_parents(conn: Connection, rows: dict[Level, dict[str, str | None]]) -> int:
    """Insert or update the patient, study and series rows; the series row id."""
    patient = rows[Level.PATIENT]
    patient_id = _upsert(
        conn,
        Level.PATIENT,
        {"PatientID": patient["PatientID"], "IssuerOfPatientID": patient["IssuerOfPatientID"]},
        patient,
    )
    study = rows[Level.STUDY]
    study_id = _upsert(
        conn,
        Level.STUDY,
        {"StudyInstanceUID": study["StudyInstanceUID"]},
        {**study, "patient_id": patient_id},
    )
    series = rows[Level.SERIES]
    return _upsert(
        conn,
        Level.SERIES,
        {"SeriesInstanceUID": series["SeriesInstanceUID"]},
        {**series, "study_id": study_id},
    )


def _add_instance(
    conn: Connection, image: dict[str, str | None], extra: dict[str, Any], series_id: int
) -> tuple[Added, str | None]:
    """Insert or replace the instance row; what happened and the replaced file's path."""
    table = schema.instance
    values = {**image, **extra, "series_id": series_id}
    found = conn.execute(_FIND_INSTANCE, {"uid": image["SOPInstanceUID"]}).first()
    if found is None:
        conn.execute(table.insert(), values)
        return Added.NEW, None
    conn.execute(_update_row(Level.IMAGE), {**values, "_row": found[0]})
    return Added.REPLACED, str(found[1])


def _joined(level: Level) -> Any:
    """The tables from the patient down to ``level``, joined parent to child."""
    joined: Any = schema.patient
    for lower in _LEVELS[1 : level.depth + 1]:
        parent = schema.TABLES[_LEVELS[lower.depth - 1]]
        child = schema.TABLES[lower]
        joined = joined.join(child, child.c[schema.PARENT_KEY[lower]] == parent.c.id)
    return joined


def _query_value(identifier: Dataset, keyword: str) -> str:
    element = identifier.get(keyword)
    return value_text(element)


def _conditions(level: Level, top: Level, identifier: Dataset) -> list[ColumnElement[bool]]:
    """The conditions of every key at ``level`` or above (within the model)."""
    conditions: list[ColumnElement[bool]] = []
    visible = _visible_levels(level, top)
    for element in identifier:
        keyword = element.keyword
        attribute = BY_KEYWORD.get(keyword) if keyword else None
        if attribute is not None and attribute.level in visible:
            column = schema.TABLES[attribute.level].c[keyword]
            found = condition(attribute, column, _query_value(identifier, keyword))
            if found is not None:
                conditions.append(found)
        elif keyword == "ModalitiesInStudy" and Level.STUDY in visible:
            found = _modalities_condition(_query_value(identifier, keyword))
            if found is not None:
                conditions.append(found)
    return conditions


def _modalities_condition(value: str) -> ColumnElement[bool] | None:
    """A study matches ModalitiesInStudy when one of its series has one of the values."""
    if is_universal(value):
        return None
    modalities = [part.strip() for part in value.split("\\") if part.strip()]
    series = schema.series
    return exists(
        select(series.c.id).where(
            series.c.study_id == schema.study.c.id, series.c.Modality.in_(modalities)
        )
    )


def _computed_column(keyword: str, dialect: str) -> Any:
    """A correlated subquery for a computed attribute (PS3.4 C.3.4 and C.6.1.1)."""
    patient, study, series, instance = (
        schema.patient,
        schema.study,
        schema.series,
        schema.instance,
    )
    count = func.count()
    if keyword == "NumberOfPatientRelatedStudies":
        query = select(count).where(study.c.patient_id == patient.c.id)
    elif keyword == "NumberOfPatientRelatedSeries":
        query = (
            select(count).select_from(study.join(series)).where(study.c.patient_id == patient.c.id)
        )
    elif keyword == "NumberOfPatientRelatedInstances":
        query = (
            select(count)
            .select_from(study.join(series).join(instance))
            .where(study.c.patient_id == patient.c.id)
        )
    elif keyword == "NumberOfStudyRelatedSeries":
        query = select(count).where(series.c.study_id == study.c.id)
    elif keyword == "NumberOfStudyRelatedInstances":
        query = (
            select(count).select_from(series.join(instance)).where(series.c.study_id == study.c.id)
        )
    elif keyword == "NumberOfSeriesRelatedInstances":
        query = select(count).where(instance.c.series_id == series.c.id)
    elif keyword == "ModalitiesInStudy":
        return _aggregate(dialect, series.c.Modality, series.c.study_id == study.c.id).label(
            keyword
        )
    elif keyword == "SOPClassesInStudy":
        return _aggregate(
            dialect,
            instance.c.SOPClassUID,
            series.c.study_id == study.c.id,
            select_from=series.join(instance),
        ).label(keyword)
    else:  # pragma: no cover - COMPUTED and this function list the same keys
        raise KeyError(keyword)
    return query.correlate_except(*_inner_tables(keyword)).scalar_subquery().label(keyword)


def _inner_tables(keyword: str) -> Sequence[Any]:
    if keyword.startswith("NumberOfPatientRelated"):
        return [schema.study, schema.series, schema.instance]
    if keyword.startswith("NumberOfStudyRelated"):
        return [schema.series, schema.instance]
    return [schema.instance]


def _aggregate(dialect: str, column: Any, where: Any, select_from: Any = None) -> Any:
    """The distinct values of ``column`` joined with backslashes, as a scalar subquery
    correlated to the outer row (no derived table: those cannot be correlated)."""
    if dialect == "postgresql":
        joined = func.string_agg(distinct(column), literal("\\"))
    else:  # SQLite allows DISTINCT only with the default "," separator
        joined = func.replace(func.group_concat(distinct(column)), ",", "\\")
    query = select(joined).where(where, column.is_not(None))
    if select_from is not None:
        query = query.select_from(select_from)
    return query.scalar_subquery()


def _visible_levels(level: Level, top: Level) -> set[Level]:
    """The levels whose keys a query at ``level`` in the model rooted at ``top`` sees."""
    visible = set(_LEVELS[top.depth : level.depth + 1])
    if top is Level.STUDY:
        visible.add(Level.PATIENT)  # Study Root studies carry the patient attributes
    return visible


def _unique_keys(level: Level, top: Level) -> list[str]:
    """The unique keys every response at ``level`` carries: those of ``level`` and the
    levels above it in the model (Patient ID only in the Patient Root model)."""
    return [UNIQUE_KEY[each] for each in _LEVELS[top.depth : level.depth + 1]]


def _find_query(
    level: Level, top: Level, identifier: Dataset, dialect: str
) -> tuple[Select[Any], set[str], set[str]]:
    """The SELECT for a C-FIND, the stored keys it returns and the computed ones."""
    visible = _visible_levels(level, top)
    keywords = {element.keyword for element in identifier if element.keyword}
    keywords.update(_unique_keys(level, top))
    returned = {
        keyword
        for keyword in keywords
        if keyword in BY_KEYWORD and BY_KEYWORD[keyword].level in visible
    }
    computed = {
        keyword for keyword in keywords if keyword in COMPUTED and COMPUTED[keyword] in visible
    }
    columns = [schema.TABLES[BY_KEYWORD[k].level].c[k] for k in sorted(returned)]
    columns += [_computed_column(k, dialect) for k in sorted(computed)]
    query = select(*columns).select_from(_joined(level))
    query = query.where(*_conditions(level, top, identifier))
    query = query.order_by(schema.TABLES[level].c.id)
    return query, returned, computed


@functools.lru_cache(maxsize=512)
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - only dictionary keywords reach here
        raise KeyError(keyword)
    return tag, dictionary_VR(tag)


def _response_value(vr: str, value: Any) -> ResponseValue:
    """An index value as a response value (values were checked when they were indexed)."""
    if value is None:
        return None
    text = str(value)
    if vr == "TM" and text.endswith(".000000"):
        return text[:-7]
    if vr == "US":
        return int(text) if text else None
    return text


def _dataset(elements: list[tuple[int, str, ResponseValue]]) -> Dataset:
    """A pydicom Dataset of response elements."""
    from pydicom import config
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

    response = Dataset()
    for tag, vr, value in elements:
        if value is None or value == "":
            response.add_new(tag, vr, None)
            continue
        element_value: Any = value
        if isinstance(value, str) and "\\" in value:
            element_value = value.split("\\")
        response.add(DataElement(tag, vr, element_value, validation_mode=config.IGNORE))
    return response
