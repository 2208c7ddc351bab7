"""DIMSE messages to PDVs and back (PS3.7 8.2, PS3.8 9.3.5.1), sans-I/O.

A message is its command set, then (if CommandDataSetType says so) its data set,
each cut into PDVs on one presentation context, with the last-fragment bit on the
final PDV of each. Messages are not interleaved, so one is assembled at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aionetdicom.dimse.command_set import Command, decode_command
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu.pdus import PDV, Buffer

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH",
    "AssembledMessage",
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
    """A complete DIMSE message: decoded command set and raw data set bytes."""

    context_id: int
    command: Command
    dataset: bytes | None


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
        "max_command_length",
        "max_dataset_length",
    )

    def __init__(
        self,
        *,
        max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH,
        max_dataset_length: int | None = None,
    ) -> None:
        self.max_command_length = max_command_length
        self.max_dataset_length = max_dataset_length
        self._context_id: int | None = None
        self._command: Command | None = None
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
        self._chunks = []
        self._size = 0

    def _fail(self, message: str) -> ProtocolError:
        self.reset()
        return ProtocolError(message)

    def feed(self, pdv: PDV) -> AssembledMessage | None:
        """Take one PDV; return the message it completes, else None."""
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
                return None
            self.reset()
            return AssembledMessage(context_id, command, None)
        command = self._command
        self.reset()
        return AssembledMessage(context_id, command, data)
