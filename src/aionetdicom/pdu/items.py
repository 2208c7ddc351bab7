"""Items and sub-items carried by A-ASSOCIATE PDUs (PS3.8 9.3.2-9.3.3, PS3.7 Annex D).

Each item is an immutable value; :mod:`aionetdicom.pdu.codec` turns them into bytes
and back. Text fields hold Python ``str`` (UIDs and names without padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aionetdicom.pdu.constants import APPLICATION_CONTEXT_NAME, PresentationContextResult


@dataclass(frozen=True, slots=True)
class PresentationContextRQ:
    """A proposed presentation context: one abstract syntax, one or more transfer syntaxes."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresentationContextAC:
    """The acceptor's answer for one proposed presentation context.

    ``transfer_syntax`` is significant only when ``result`` is acceptance.
    """

    context_id: int
    result: int
    transfer_syntax: str = ""

    @property
    def accepted(self) -> bool:
        """True when the context was accepted."""
        return self.result == PresentationContextResult.ACCEPTANCE


@dataclass(frozen=True, slots=True)
class AsynchronousOperationsWindow:
    """Maximum operations invoked / performed; 0 means unlimited (PS3.7 D.3.3.3)."""

    maximum_invoked: int
    maximum_performed: int


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """SCP/SCU role selection for one SOP class (PS3.7 D.3.3.4)."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True, slots=True)
class SOPClassExtendedNegotiation:
    """Service-class specific application information for one SOP class (PS3.7 D.3.3.5)."""

    sop_class_uid: str
    service_class_application_information: bytes


@dataclass(frozen=True, slots=True)
class SOPClassCommonExtendedNegotiation:
    """Service class and related general SOP classes of one SOP class (PS3.7 D.3.3.6)."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserIdentityRQ:
    """User identity offered by the requestor (PS3.7 D.3.3.7.1).

    ``secondary_field`` is used only with username+passcode (type 2).
    """

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""


@dataclass(frozen=True, slots=True)
class UserIdentityAC:
    """The acceptor's positive user identity response (PS3.7 D.3.3.7.2)."""

    server_response: bytes = b""


@dataclass(frozen=True, slots=True)
class UnknownSubItem:
    """A user information sub-item this library does not know; kept, never interpreted."""

    item_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class UserInformation:
    """The user information item (type 0x50) and its sub-items."""

    maximum_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    asynchronous_operations_window: AsynchronousOperationsWindow | None = None
    role_selections: tuple[RoleSelection, ...] = ()
    sop_class_extended: tuple[SOPClassExtendedNegotiation, ...] = ()
    sop_class_common_extended: tuple[SOPClassCommonExtendedNegotiation, ...] = ()
    user_identity: UserIdentityRQ | UserIdentityAC | None = None
    unknown_items: tuple[UnknownSubItem, ...] = field(default=())


__all__ = [
    "APPLICATION_CONTEXT_NAME",
    "AsynchronousOperationsWindow",
    "PresentationContextAC",
    "PresentationContextRQ",
    "RoleSelection",
    "SOPClassCommonExtendedNegotiation",
    "SOPClassExtendedNegotiation",
    "UnknownSubItem",
    "UserIdentityAC",
    "UserIdentityRQ",
    "UserInformation",
]
