"""The DIMSE command set (group 0000, PS3.7 Annex E): a small typed codec, no pydicom.

A command set is always Implicit VR Little Endian (PS3.7 6.3.1), so the VR of every
element comes from the table below. Python value types by VR:

* UI, AE, CS, SH, LO, LT, IS: :class:`str` (padding stripped on decode; a received
  non-ASCII byte is an error in UI and decodes as ``?`` in the others)
* US, UL: :class:`int`
* AT: :class:`tuple` of :class:`int` tags, each ``group << 16 | element``
* US with VM 1-n (retired Overlays): :class:`tuple` of :class:`int`
* group-0000 tags not in the table: raw :class:`bytes`, kept in
  :attr:`Command.unknown_elements`
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import suppress
from typing import Any, NamedTuple, Union

from aionetdicom.errors import ProtocolError

__all__ = [
    "COMMAND_ELEMENTS",
    "DATASET_PRESENT",
    "NO_DATASET",
    "Command",
    "CommandDecodeError",
    "CommandElement",
    "CommandField",
    "CommandValue",
    "Priority",
    "command_priority",
    "decode_command",
    "encode_command",
    "is_response",
    "make_command",
    "set_if_valid",
]

CommandValue = Union[str, int, tuple[int, ...], bytes]

#: CommandDataSetType (0000,0800) value meaning "no data set follows" (PS3.7 E.1).
NO_DATASET = 0x0101
#: The value sent when a data set follows. PS3.7 accepts anything but 0x0101; DCMTK
#: (DIMSE_DATASET_PRESENT) and pynetdicom both send 0x0001, so we do too.
DATASET_PRESENT = 0x0001


class CommandDecodeError(ProtocolError):
    """Bytes received as a DIMSE command set are not a valid group-0000 encoding."""


class CommandField(enum.IntEnum):
    """Values of CommandField (0000,0100), PS3.7 Table E.1-1."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150
    C_CANCEL_RQ = 0x0FFF

    @property
    def is_response(self) -> bool:
        """True for the ``*-RSP`` messages (bit 15 set)."""
        return bool(self & 0x8000)

    @property
    def label(self) -> str:
        """The name as the standard writes it, e.g. ``C-ECHO-RQ``."""
        return self.name.replace("_", "-")


def is_response(command_field: int) -> bool:
    """True if a CommandField value names a response message (bit 15 set)."""
    return bool(command_field & 0x8000)


class Priority(enum.IntEnum):
    """Values of Priority (0000,0700)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


class CommandElement(NamedTuple):
    """One row of the command dictionary (PS3.7 Annex E)."""

    tag: int
    keyword: str
    vr: str
    multi: bool
    retired: bool


_E = CommandElement
#: Every command element of PS3.7 Table E.1-1 and the retired ones of E.2, by tag.
COMMAND_ELEMENTS: tuple[CommandElement, ...] = (
    _E(0x0000_0000, "CommandGroupLength", "UL", False, False),
    _E(0x0000_0001, "CommandLengthToEnd", "UL", False, True),
    _E(0x0000_0002, "AffectedSOPClassUID", "UI", False, False),
    _E(0x0000_0003, "RequestedSOPClassUID", "UI", False, False),
    _E(0x0000_0010, "CommandRecognitionCode", "SH", False, True),
    _E(0x0000_0100, "CommandField", "US", False, False),
    _E(0x0000_0110, "MessageID", "US", False, False),
    _E(0x0000_0120, "MessageIDBeingRespondedTo", "US", False, False),
    _E(0x0000_0200, "Initiator", "AE", False, True),
    _E(0x0000_0300, "Receiver", "AE", False, True),
    _E(0x0000_0400, "FindLocation", "AE", False, True),
    _E(0x0000_0600, "MoveDestination", "AE", False, False),
    _E(0x0000_0700, "Priority", "US", False, False),
    _E(0x0000_0800, "CommandDataSetType", "US", False, False),
    _E(0x0000_0850, "NumberOfMatches", "US", False, True),
    _E(0x0000_0860, "ResponseSequenceNumber", "US", False, True),
    _E(0x0000_0900, "Status", "US", False, False),
    _E(0x0000_0901, "OffendingElement", "AT", True, False),
    _E(0x0000_0902, "ErrorComment", "LO", False, False),
    _E(0x0000_0903, "ErrorID", "US", False, False),
    _E(0x0000_1000, "AffectedSOPInstanceUID", "UI", False, False),
    _E(0x0000_1001, "RequestedSOPInstanceUID", "UI", False, False),
    _E(0x0000_1002, "EventTypeID", "US", False, False),
    _E(0x0000_1005, "AttributeIdentifierList", "AT", True, False),
    _E(0x0000_1008, "ActionTypeID", "US", False, False),
    _E(0x0000_1020, "NumberOfRemainingSuboperations", "US", False, False),
    _E(0x0000_1021, "NumberOfCompletedSuboperations", "US", False, False),
    _E(0x0000_1022, "NumberOfFailedSuboperations", "US", False, False),
    _E(0x0000_1023, "NumberOfWarningSuboperations", "US", False, False),
    _E(0x0000_1030, "MoveOriginatorApplicationEntityTitle", "AE", False, False),
    _E(0x0000_1031, "MoveOriginatorMessageID", "US", False, False),
    _E(0x0000_4000, "DialogReceiver", "LT", False, True),
    _E(0x0000_4010, "TerminalType", "LT", False, True),
    _E(0x0000_5010, "MessageSetID", "SH", False, True),
    _E(0x0000_5020, "EndMessageID", "SH", False, True),
    _E(0x0000_5110, "DisplayFormat", "LT", False, True),
    _E(0x0000_5120, "PagePositionID", "LT", False, True),
    _E(0x0000_5130, "TextFormatID", "CS", False, True),
    _E(0x0000_5140, "NormalReverse", "CS", False, True),
    _E(0x0000_5150, "AddGrayScale", "CS", False, True),
    _E(0x0000_5160, "Borders", "CS", False, True),
    _E(0x0000_5170, "Copies", "IS", False, True),
    _E(0x0000_5180, "CommandMagnificationType", "CS", False, True),
    _E(0x0000_5190, "Erase", "CS", False, True),
    _E(0x0000_51A0, "Print", "CS", False, True),
    _E(0x0000_51B0, "Overlays", "US", True, True),
)
del _E

_BY_TAG: dict[int, CommandElement] = {e.tag: e for e in COMMAND_ELEMENTS}
_BY_KEYWORD: dict[str, CommandElement] = {e.keyword: e for e in COMMAND_ELEMENTS}
_GROUP_LENGTH = "CommandGroupLength"
_TEXT_VRS = frozenset({"UI", "AE", "CS", "SH", "LO", "LT", "IS"})
# Leading spaces are insignificant for these VRs (PS3.5 6.2), trailing for all text.
_STRIP_BOTH = frozenset({"AE", "CS", "SH", "LO", "IS"})
_MAX_UINT = {"US": 0xFFFF, "UL": 0xFFFF_FFFF}
#: bytes.translate table keeping ASCII and turning every other byte into "?".
_ASCII_OR_QUESTION_MARK = bytes(range(128)) + b"?" * 128

_HEADER = struct.Struct("<HHL")
_US_ELEMENT = struct.Struct("<HHLH")
_UL_ELEMENT = struct.Struct("<HHLL")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<L")


def _check_value(element: CommandElement, value: object) -> CommandValue:
    """Validate a locally supplied value for ``element``; raise TypeError/ValueError."""
    vr = element.vr
    if vr in _TEXT_VRS:
        if not isinstance(value, str):
            raise TypeError(f"{element.keyword} ({vr}) takes a str, not {type(value).__name__}")
        if not value.isascii():
            raise ValueError(f"{element.keyword} {value!r} must be ASCII")
        if vr == "UI" and len(value) > 64:
            raise ValueError(f"{element.keyword} {value!r} is longer than 64 characters")
        if vr == "AE" and len(value.strip(" ")) > 16:
            raise ValueError(f"{element.keyword} {value!r} is longer than 16 characters")
        return value
    if element.multi:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{element.keyword} ({vr}) takes a sequence of int")
        limit = 0xFFFF_FFFF if vr == "AT" else 0xFFFF
        items = tuple(value)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= limit:
                raise ValueError(f"{element.keyword}: {item!r} is not an int in 0..0x{limit:X}")
        return items
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{element.keyword} ({vr}) takes an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_UINT[vr]:
        raise ValueError(f"{element.keyword} {value} does not fit in {vr}")
    return int(value)


def _lookup(keyword: str) -> CommandElement:
    element = _BY_KEYWORD.get(keyword)
    if element is None:
        raise KeyError(f"{keyword!r} is not a DIMSE command element keyword (PS3.7 Annex E)")
    if keyword == _GROUP_LENGTH:
        raise KeyError("CommandGroupLength is computed by encode_command and cannot be set")
    return element


class Command(MutableMapping[str, CommandValue]):
    """A DIMSE command set: element values keyed by pydicom-style keyword.

    Reach values as attributes (``cmd.MessageID``) or items (``cmd["MessageID"]``).
    Iteration yields keywords in ascending tag order. CommandGroupLength is never
    stored: :func:`encode_command` computes it.
    """

    __slots__ = ("_unknown", "_values")

    _values: dict[str, CommandValue]
    _unknown: dict[int, bytes]

    def __init__(self, elements: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_unknown", {})
        if elements:
            self.update(elements)
        if kwargs:
            self.update(kwargs)

    # -- mapping protocol
    def __getitem__(self, keyword: str) -> CommandValue:
        return self._values[keyword]

    def __setitem__(self, keyword: str, value: CommandValue) -> None:
        element = _lookup(keyword)
        self._values[keyword] = _check_value(element, value)

    def __delitem__(self, keyword: str) -> None:
        del self._values[keyword]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._values, key=lambda k: _BY_KEYWORD[k].tag))

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._values

    # -- attribute access
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            if name in _BY_KEYWORD:
                raise AttributeError(f"command has no {name} element") from None
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Command.__slots__:
            object.__setattr__(self, name, value)
            return
        try:
            element = _lookup(name)
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None
        self._values[name] = _check_value(element, value)

    def __delattr__(self, name: str) -> None:
        try:
            del self._values[name]
        except KeyError:
            raise AttributeError(f"command has no {name} element") from None

    # -- the rest
    @property
    def has_dataset(self) -> bool:
        """True if CommandDataSetType is present and says a data set follows."""
        value = self._values.get("CommandDataSetType", NO_DATASET)
        return value != NO_DATASET

    @property
    def unknown_elements(self) -> Mapping[int, bytes]:
        """Group-0000 elements not in PS3.7 Annex E, by tag, as received (raw bytes)."""
        return self._unknown

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Command):
            return self._values == other._values and self._unknown == other._unknown
        if isinstance(other, Mapping):
            return not self._unknown and self._values == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        parts = []
        for keyword in self:
            value = self._values[keyword]
            if keyword == "CommandField" and isinstance(value, int):
                try:
                    parts.append(f"{keyword}={CommandField(value).label}")
                    continue
                except ValueError:
                    pass
            parts.append(f"{keyword}={value!r}")
        parts.extend(f"({t >> 16:04X},{t & 0xFFFF:04X})={v!r}" for t, v in self._unknown.items())
        return f"Command({', '.join(parts)})"

    def copy(self) -> Command:
        """A shallow copy (values are immutable, so it is independent)."""
        new = Command()
        new._values.update(self._values)
        new._unknown.update(self._unknown)
        return new

    __copy__ = copy


def make_command(
    command_field: int, *, has_dataset: bool = False, **elements: CommandValue
) -> Command:
    """Build a command with CommandField, CommandDataSetType and the given elements.

    CommandDataSetType is :data:`DATASET_PRESENT` if ``has_dataset`` else
    :data:`NO_DATASET`; an explicit CommandDataSetType in ``elements`` wins.
    """
    cmd = Command()
    cmd["CommandField"] = int(command_field)
    cmd["CommandDataSetType"] = DATASET_PRESENT if has_dataset else NO_DATASET
    cmd.update(elements)
    return cmd


def command_priority(command: Command) -> int:
    """A request's Priority: a :class:`Priority` when valid, MEDIUM when missing or not int."""
    value = command.get("Priority", Priority.MEDIUM)
    if not isinstance(value, int):
        return int(Priority.MEDIUM)
    try:
        return Priority(value)
    except ValueError:
        return value


def set_if_valid(command: Command, keyword: str, value: object) -> None:
    """Set ``keyword`` to ``value`` unless it is None or invalid (echoing a peer's values)."""
    # Never let a value the peer sent (too long, say) stop us from answering.
    if value is None:
        return
    with suppress(TypeError, ValueError):
        command[keyword] = value  # type: ignore[assignment]


# --------------------------------------------------------------------------- encoding


def _encode_text(vr: str, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) & 1:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def encode_command(cmd: Command) -> bytes:
    """Encode ``cmd`` as Implicit VR Little Endian, CommandGroupLength first."""
    values = cmd._values
    items: list[tuple[int, str, CommandValue]] = [
        (_BY_KEYWORD[k].tag, k, v) for k, v in values.items()
    ]
    items.extend((tag, "", raw) for tag, raw in cmd._unknown.items())
    items.sort()
    parts: list[bytes] = [b""]
    total = 0
    for tag, keyword, value in items:
        element = tag & 0xFFFF
        if not keyword:
            assert isinstance(value, bytes)
            raw = value + b"\x00" if len(value) & 1 else value
            parts.append(_HEADER.pack(0, element, len(raw)))
            parts.append(raw)
            total += 8 + len(raw)
            continue
        vr = _BY_KEYWORD[keyword].vr
        if isinstance(value, str):
            raw = _encode_text(vr, value)
            parts.append(_HEADER.pack(0, element, len(raw)))
            parts.append(raw)
            total += 8 + len(raw)
        elif isinstance(value, tuple):
            if vr == "AT":
                raw = struct.pack(
                    f"<{2 * len(value)}H", *(h for t in value for h in (t >> 16, t & 0xFFFF))
                )
            else:
                raw = struct.pack(f"<{len(value)}H", *value)
            parts.append(_HEADER.pack(0, element, len(raw)))
            parts.append(raw)
            total += 8 + len(raw)
        elif vr == "US":
            parts.append(_US_ELEMENT.pack(0, element, 2, value))
            total += 10
        else:
            parts.append(_UL_ELEMENT.pack(0, element, 4, value))
            total += 12
    parts[0] = _UL_ELEMENT.pack(0, 0, 4, total)
    return b"".join(parts)


# --------------------------------------------------------------------------- decoding


def _decode_value(element: CommandElement, raw: bytes) -> CommandValue | None:
    """Decode one element value from the peer; None means 'treat as absent'."""
    vr = element.vr
    length = len(raw)
    if vr in _TEXT_VRS:
        if vr == "UI":
            if not raw.isascii():
                raise CommandDecodeError(f"{element.keyword} (UI) holds non-ASCII bytes")
            return raw.decode("ascii").rstrip("\x00 ")
        # A stray non-ASCII byte becomes "?", so the value stays encodable (ASCII).
        text = raw.translate(_ASCII_OR_QUESTION_MARK).decode("ascii").rstrip("\x00 ")
        return text.lstrip(" ") if vr in _STRIP_BOTH else text
    if vr == "AT":
        if length % 4:
            raise CommandDecodeError(
                f"{element.keyword} (AT) has length {length}, not a multiple of 4"
            )
        halves = struct.unpack(f"<{length // 2}H", raw)
        return tuple((halves[i] << 16) | halves[i + 1] for i in range(0, len(halves), 2))
    if length == 0:
        return () if element.multi else None
    if element.multi:
        # Only US is multi-valued besides AT; the caller already rejected odd lengths.
        return struct.unpack(f"<{length // 2}H", raw)
    if vr == "US":
        if length != 2:
            raise CommandDecodeError(f"{element.keyword} (US) has length {length}, expected 2")
        return int(_U16.unpack(raw)[0])
    if length != 4:
        raise CommandDecodeError(f"{element.keyword} (UL) has length {length}, expected 4")
    return int(_U32.unpack(raw)[0])


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Decode a group-0000 command set; raise :class:`CommandDecodeError` if malformed.

    Nothing is trusted: every length is checked against the bytes actually present.
    CommandGroupLength must be a well-formed UL but its value is not needed and is
    ignored. Zero-length US/UL elements are taken as absent; unknown group-0000 tags
    are kept as raw bytes.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    end = len(buf)
    cmd = Command()
    values = cmd._values
    unknown = cmd._unknown
    seen: set[int] = set()
    unpack_header = _HEADER.unpack_from
    pos = 0
    while pos < end:
        if end - pos < 8:
            raise CommandDecodeError(
                f"command set truncated: {end - pos} byte(s) at offset {pos} "
                "are too few for an element header"
            )
        group, elem, length = unpack_header(buf, pos)
        if group != 0:
            raise CommandDecodeError(
                f"element ({group:04X},{elem:04X}) at offset {pos} is outside command group 0000"
            )
        pos += 8
        if length > end - pos:
            raise CommandDecodeError(
                f"element (0000,{elem:04X}) declares {length} bytes "
                f"but only {end - pos} remain in the command set"
            )
        if length & 1:
            raise CommandDecodeError(f"element (0000,{elem:04X}) has odd length {length}")
        if elem in seen:
            raise CommandDecodeError(f"element (0000,{elem:04X}) appears twice")
        seen.add(elem)
        raw = buf[pos : pos + length]
        pos += length
        element = _BY_TAG.get(elem)
        if element is None:
            unknown[elem] = raw
            continue
        value = _decode_value(element, raw)
        if element.keyword == _GROUP_LENGTH:
            if value is None:
                raise CommandDecodeError("CommandGroupLength (UL) has length 0, expected 4")
            continue
        if value is not None:
            values[element.keyword] = value
    return cmd
