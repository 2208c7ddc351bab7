"""DIMSE message layer (PS3.7): command sets, status codes, message fragmentation."""

from aionetdicom.dimse.command_set import (
    COMMAND_ELEMENTS,
    DATASET_PRESENT,
    NO_DATASET,
    Command,
    CommandDecodeError,
    CommandElement,
    CommandField,
    CommandValue,
    Priority,
    decode_command,
    encode_command,
    is_response,
    make_command,
)
from aionetdicom.dimse.fragments import (
    DEFAULT_MAX_COMMAND_LENGTH,
    AssembledMessage,
    MessageAssembler,
    fragment,
)
from aionetdicom.dimse.status import (
    GENERAL_STATUSES,
    SERVICE_STATUSES,
    Status,
    StatusCategory,
    describe_status,
    status_category,
)

__all__ = [
    "COMMAND_ELEMENTS",
    "DATASET_PRESENT",
    "DEFAULT_MAX_COMMAND_LENGTH",
    "GENERAL_STATUSES",
    "NO_DATASET",
    "SERVICE_STATUSES",
    "AssembledMessage",
    "Command",
    "CommandDecodeError",
    "CommandElement",
    "CommandField",
    "CommandValue",
    "MessageAssembler",
    "Priority",
    "Status",
    "StatusCategory",
    "decode_command",
    "describe_status",
    "encode_command",
    "fragment",
    "is_response",
    "make_command",
    "status_category",
]
