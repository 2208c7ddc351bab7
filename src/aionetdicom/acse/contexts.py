"""Presentation contexts as the application configures them and as negotiation leaves them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aionetdicom.pdu.constants import PresentationContextResult

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

#: Uncompressed syntaxes every implementation handles; explicit VR first as it keeps VRs.
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# PS3.5 9.1: digit components separated by dots; no leading zero unless the component is "0".
_UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_UID_MAX_LENGTH = 64


def is_valid_uid(uid: str) -> bool:
    """True when ``uid`` has the PS3.5 UID syntax and fits in 64 characters."""
    return len(uid) <= _UID_MAX_LENGTH and _UID_RE.fullmatch(uid) is not None


def _check_uid(uid: object, what: str) -> None:
    if not isinstance(uid, str):
        raise TypeError(f"{what} must be a str, not {type(uid).__name__}")
    if not uid:
        raise ValueError(f"{what} must not be empty")
    if not is_valid_uid(uid):
        raise ValueError(
            f"{what} {uid!r} is not a valid UID (digits and dots, at most 64 characters, "
            "no leading zeros in a component)"
        )


@dataclass(frozen=True, slots=True)
class PresentationContext:
    """One abstract syntax with transfer syntaxes in local preference order.

    As a proposal (SCU) the roles are those proposed for ourselves via role selection
    (None: propose nothing). As a capability (SCP) they say whether the requestor may
    take the role (None: do not answer role selection; default roles apply).
    """

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    scu_role: bool | None = None
    scp_role: bool | None = None

    def __post_init__(self) -> None:
        _check_uid(self.abstract_syntax, "abstract syntax")
        syntaxes: object = self.transfer_syntaxes
        if isinstance(syntaxes, (str, bytes)):
            raise TypeError("transfer_syntaxes must be a sequence of UID strings, not a string")
        syntaxes = tuple(self.transfer_syntaxes)
        object.__setattr__(self, "transfer_syntaxes", syntaxes)
        if not syntaxes:
            raise ValueError(f"presentation context {self.abstract_syntax}: no transfer syntax")
        for syntax in syntaxes:
            _check_uid(syntax, "transfer syntax")
        if len(set(syntaxes)) != len(syntaxes):
            raise ValueError(
                f"presentation context {self.abstract_syntax}: duplicate transfer syntaxes"
            )


@dataclass(frozen=True, slots=True)
class NegotiatedContext:
    """The outcome for one proposed context; roles are the requestor's (False if rejected)."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    result: PresentationContextResult
    scu_role: bool
    scp_role: bool

    @property
    def accepted(self) -> bool:
        """True when the acceptor accepted this context."""
        return self.result == PresentationContextResult.ACCEPTANCE


#: The Verification SOP Class (C-ECHO) with the default transfer syntaxes.
VERIFICATION: tuple[PresentationContext, ...] = (PresentationContext(VERIFICATION_SOP_CLASS),)
