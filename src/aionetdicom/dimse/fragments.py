"""DIMSE messages to PDVs and back (PS3.7 8.2, PS3.8 9.3.5.1), sans-I/O.

A message is its command set, then (if CommandDataSetType says so) its data set,
each cut into PDVs on one presentation context, with the last-fragment bit on the
final PDV of each. Messages are not interleaved, so one is assembled at a time.

A data set is either gathered into one ``bytes`` value, or, when the assembler's
``stream_dataset`` callback says so for the command, handed on fragment by fragment
(:class:`DatasetFragment`) so that the I/O layer can pass it to a consumer as it
arrives, with memory bounded whatever the data set's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aionetdicom.dimse.command_set import Command, decode_command
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu.pdus import PDV, Buffer

if TYPE_CHECKING:
    from aionetdicom.dataset_stream import DatasetStream

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH",
    "AssembledMessage",
    "DatasetFragment",
    "MessageAssembler",
    "fragment",
]

#: Default limit on the size of a received command set; real ones are a few hundred bytes.
DEFAULT_MAX_COMMAND_LENGTH = 64 * 1024


def fragment(context_id: int, is_command: bool, data: Buffer, max_pdv_data: int) -> Iterator[PDV]:
    """Cut ``data`` into PDVs of at most ``max_pdv_data`` bytes (zero copy).

    ``max_pdv_data`` is the peer's maximum PDU length less 6 (PDV item header);
    0 or less means unlimited. Empty ``data`` still gives one (empty, last) PDV.
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if max_pdv_data <= 0 or size <= max_pdv_data:
        yield PDV(context_id, is_command, True, view)
        return
    for start in range(0, size, max_pdv_data):
        end = start + max_pdv_data
        yield PDV(context_id, is_command, end >= size, view[start:end])


@dataclass(frozen=True, slots=True)
class AssembledMessage:
    """A DIMSE message: decoded command set and raw data set bytes.

    ``streamed`` is True when the data set was not gathered (``dataset`` is None) but
    follows as :class:`DatasetFragment` values; the I/O layer then attaches the
    ``stream`` its consumer reads them from.
    """

    context_id: int
    command: Command
    dataset: bytes | None
    streamed: bool = False
    stream: DatasetStream | None = None


@dataclass(frozen=True, slots=True)
class DatasetFragment:
    """A piece of a streamed data set; ``is_last`` on the final one."""

    data: Buffer
    is_last: bool


def _keepable(chunk: Buffer) -> Buffer:
    # Keep immutable buffers as they are; copy writable ones, which the sender may reuse.
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, memoryview) and chunk.readonly:
        return chunk
    return bytes(chunk)


class MessageAssembler:
    """Reassemble incoming PDVs into :class:`AssembledMessage` values.

    Fragments are kept as a list and joined once, so assembly is linear. Limits are
    checked before a fragment is kept; any violation raises :class:`ProtocolError`
    and discards the partial message.
    """

    __slots__ = (
        "_chunks",
        "_command",
        "_context_id",
        "_size",
        "_streaming",
        "max_command_length",
        "max_dataset_length",
        "max_streamed_dataset_length",
        "stream_dataset",
    )

    def __init__(
        self,
        *,
        max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH,
        max_dataset_length: int | None = None,
        max_streamed_dataset_length: int | None = None,
        stream_dataset: Callable[[Command], bool] | None = None,
    ) -> None:
        self.max_command_length = max_command_length
        #: Largest data set gathered in memory (None: no limit).
        self.max_dataset_length = max_dataset_length
        #: Largest data set handed on as fragments (None: no limit).
        self.max_streamed_dataset_length = max_streamed_dataset_length
        #: Asked once a command with a data set is complete: True streams the data set.
        self.stream_dataset = stream_dataset
        self._context_id: int | None = None
        self._command: Command | None = None
        self._streaming = False
        self._chunks: list[Buffer] = []
        self._size = 0

    @property
    def in_progress(self) -> bool:
        """True while part of a message has arrived but not all of it."""
        return self._context_id is not None

    def reset(self) -> None:
        """Drop any partial message."""
        self._context_id = None
        self._command = None
        self._streaming = False
        self._chunks = []
        self._size = 0

    @property
    def streaming(self) -> bool:
        """True while a streamed data set is arriving."""
        return self._streaming

    def _fail(self, message: str) -> ProtocolError:
        self.reset()
        return ProtocolError(message)

    def feed(self, pdv: PDV) -> AssembledMessage | DatasetFragment | None:
        """Take one PDV; return the message it completes, else None.

        For a streamed data set the command gives an :class:`AssembledMessage` with
        ``streamed=True`` and each data set PDV a :class:`DatasetFragment`.
        """
        context_id = pdv.context_id
        if self._context_id is None:
            if not pdv.is_command:
                raise self._fail(
                    f"data set fragment on presentation context {context_id} "
                    "arrived before any command set"
                )
            self._context_id = context_id
        elif context_id != self._context_id:
            raise self._fail(
                f"PDV for presentation context {context_id} arrived while a message on "
                f"context {self._context_id} was incomplete"
            )
        elif self._command is None and not pdv.is_command:
            raise self._fail(
                f"data set fragment on presentation context {context_id} "
                "arrived before its command set was complete"
            )
        elif self._command is not None and pdv.is_command:
            raise self._fail(
                f"command fragment on presentation context {context_id} "
                "arrived while the data set of the previous command was expected"
            )

        size = self._size + len(pdv.data)
        if self._streaming:
            limit = self.max_streamed_dataset_length
            if limit is not None and size > limit:
                raise self._fail(f"data set exceeds the limit of {limit} bytes")
            self._size = size
            if pdv.is_last:
                self.reset()
            return DatasetFragment(_keepable(pdv.data), pdv.is_last)
        if self._command is None:
            if size > self.max_command_length:
                raise self._fail(
                    f"command set exceeds the limit of {self.max_command_length} bytes"
                )
        elif self.max_dataset_length is not None and size > self.max_dataset_length:
            raise self._fail(f"data set exceeds the limit of {self.max_dataset_length} bytes")
        self._size = size
        self._chunks.append(_keepable(pdv.data))
        if not pdv.is_last:
            return None

        data = b"".join(self._chunks)
        if self._command is None:
            try:
                command = decode_command(data)
            except ProtocolError:
                self.reset()
                raise
            if "CommandDataSetType" not in command:
                raise self._fail(
                    "command set lacks CommandDataSetType (0000,0800), "
                    "so it cannot be told whether a data set follows"
                )
            if command.has_dataset:
                self._command = command
                self._chunks = []
                self._size = 0
                decide = self.stream_dataset
                if decide is not None and decide(command):
                    self._streaming = True
                    return AssembledMessage(context_id, command, None, streamed=True)
                return None
            self.reset()
            return AssembledMessage(context_id, command, None)
        command = self._command
        self.reset()
        return AssembledMessage(context_id, command, data)
