"""User identity offered by a requestor (PS3.7 D.3.3.7), with secrets kept out of reprs."""

from __future__ import annotations

from dataclasses import dataclass

from aionetdicom.pdu.constants import UserIdentityType
from aionetdicom.pdu.items import UserIdentityRQ

_MAX_FIELD = 0xFFFF
# Sub-item body: type, response flag, two 2-byte field lengths, then the two fields.
_FIXED_BODY = 1 + 1 + 2 + 2


@dataclass(frozen=True, slots=True, repr=False)
class UserIdentity:
    """One user identity: username, username+passcode, Kerberos, SAML or JWT.

    ``secondary`` (the passcode) exists only for username+passcode.
    """

    identity_type: UserIdentityType
    primary: bytes
    secondary: bytes = b""
    positive_response_requested: bool = False

    def __post_init__(self) -> None:
        try:
            kind = UserIdentityType(self.identity_type)
        except ValueError:
            raise ValueError(f"unknown user identity type {self.identity_type!r}") from None
        object.__setattr__(self, "identity_type", kind)
        object.__setattr__(self, "primary", bytes(self.primary))
        object.__setattr__(self, "secondary", bytes(self.secondary))
        if not self.primary:
            raise ValueError(f"{kind.name} user identity needs a non-empty primary field")
        if len(self.primary) > _MAX_FIELD:
            raise ValueError(
                f"{kind.name} user identity primary field is {len(self.primary)} bytes; "
                f"at most {_MAX_FIELD} fit"
            )
        if kind == UserIdentityType.USERNAME_AND_PASSCODE:
            if not self.secondary:
                raise ValueError("username and passcode identity needs a non-empty passcode")
            if len(self.secondary) > _MAX_FIELD:
                raise ValueError(f"passcode is {len(self.secondary)} bytes; at most {_MAX_FIELD}")
        elif self.secondary:
            raise ValueError(f"{kind.name} user identity takes no secondary field")
        body = _FIXED_BODY + len(self.primary) + len(self.secondary)
        if body > _MAX_FIELD:
            raise ValueError(f"user identity sub-item of {body} bytes exceeds {_MAX_FIELD}")

    @classmethod
    def username(cls, name: str, *, positive_response_requested: bool = False) -> UserIdentity:
        """A username alone (type 1), UTF-8 encoded."""
        return cls(
            UserIdentityType.USERNAME, name.encode("utf-8"), b"", positive_response_requested
        )

    @classmethod
    def username_and_passcode(
        cls, name: str, passcode: str, *, positive_response_requested: bool = False
    ) -> UserIdentity:
        """A username with a passcode (type 2), both UTF-8 encoded."""
        return cls(
            UserIdentityType.USERNAME_AND_PASSCODE,
            name.encode("utf-8"),
            passcode.encode("utf-8"),
            positive_response_requested,
        )

    @classmethod
    def kerberos(cls, ticket: bytes, *, positive_response_requested: bool = False) -> UserIdentity:
        """A Kerberos service ticket (type 3) as RFC 1510 bytes."""
        return cls(UserIdentityType.KERBEROS, bytes(ticket), b"", positive_response_requested)

    @classmethod
    def saml(
        cls, assertion: str | bytes, *, positive_response_requested: bool = False
    ) -> UserIdentity:
        """A SAML assertion (type 4); text is UTF-8 encoded."""
        raw = assertion.encode("utf-8") if isinstance(assertion, str) else bytes(assertion)
        return cls(UserIdentityType.SAML, raw, b"", positive_response_requested)

    @classmethod
    def jwt(cls, token: str, *, positive_response_requested: bool = False) -> UserIdentity:
        """A JSON Web Token (type 5) in its compact base64url form, UTF-8 encoded."""
        return cls(UserIdentityType.JWT, token.encode("utf-8"), b"", positive_response_requested)

    def to_item(self) -> UserIdentityRQ:
        """The A-ASSOCIATE-RQ sub-item carrying this identity."""
        return UserIdentityRQ(
            int(self.identity_type), self.positive_response_requested, self.primary, self.secondary
        )

    @classmethod
    def from_item(cls, item: UserIdentityRQ) -> UserIdentity:
        """The identity a received sub-item carries; ValueError when it is malformed."""
        try:
            kind = UserIdentityType(item.identity_type)
        except ValueError:
            raise ValueError(f"unknown user identity type {item.identity_type}") from None
        return cls(
            kind,
            item.primary_field,
            item.secondary_field,
            item.positive_response_requested,
        )

    def __repr__(self) -> str:
        kind = self.identity_type
        if kind in (UserIdentityType.USERNAME, UserIdentityType.USERNAME_AND_PASSCODE):
            shown = f"user={self.primary.decode('utf-8', 'replace')!r}"
            if kind == UserIdentityType.USERNAME_AND_PASSCODE:
                shown += ", passcode=<hidden>"
        else:
            shown = f"credential=<{len(self.primary)} bytes hidden>"
        return (
            f"UserIdentity({kind.name}, {shown}, "
            f"positive_response_requested={self.positive_response_requested})"
        )
