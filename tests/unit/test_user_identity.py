"""User identity negotiation values (PS3.7 D.3.3.7)."""

from __future__ import annotations

import pytest

from aionetdicom.acse import UserIdentity
from aionetdicom.pdu import UserIdentityRQ, UserIdentityType

T = UserIdentityType


def test_username() -> None:
    identity = UserIdentity.username("jürgen")
    assert identity.identity_type is T.USERNAME
    assert identity.primary == "jürgen".encode()
    assert identity.secondary == b""
    assert not identity.positive_response_requested


def test_username_and_passcode() -> None:
    identity = UserIdentity.username_and_passcode(
        "alice", "s3cret", positive_response_requested=True
    )
    assert identity.identity_type is T.USERNAME_AND_PASSCODE
    assert (identity.primary, identity.secondary) == (b"alice", b"s3cret")
    assert identity.positive_response_requested


def test_kerberos_saml_jwt() -> None:
    assert UserIdentity.kerberos(b"\x01\x02").primary == b"\x01\x02"
    assert UserIdentity.kerberos(bytearray(b"\x03")).primary == b"\x03"  # type: ignore[arg-type]
    assert UserIdentity.saml("<saml:Assertion/>").primary == b"<saml:Assertion/>"
    assert UserIdentity.saml(b"<a/>").identity_type is T.SAML
    jwt = UserIdentity.jwt("aaa.bbb.ccc", positive_response_requested=True)
    assert (jwt.identity_type, jwt.primary) == (T.JWT, b"aaa.bbb.ccc")


def test_int_type_is_coerced() -> None:
    identity = UserIdentity(1, b"bob")  # type: ignore[arg-type]
    assert identity.identity_type is T.USERNAME


def test_item_round_trip() -> None:
    identity = UserIdentity.username_and_passcode("a", "b", positive_response_requested=True)
    item = identity.to_item()
    assert item == UserIdentityRQ(2, True, b"a", b"b")
    assert UserIdentity.from_item(item) == identity
    jwt = UserIdentity.jwt("x.y.z")
    assert jwt.to_item() == UserIdentityRQ(5, False, b"x.y.z", b"")
    assert UserIdentity.from_item(jwt.to_item()) == jwt


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (UserIdentityRQ(9, False, b"x"), "unknown user identity type 9"),
        (UserIdentityRQ(0, False, b"x"), "unknown user identity type 0"),
        (UserIdentityRQ(1, False, b""), "non-empty primary"),
        (UserIdentityRQ(1, False, b"x", b"y"), "no secondary field"),
        (UserIdentityRQ(2, False, b"x", b""), "non-empty passcode"),
    ],
)
def test_from_item_rejects_malformed(item: UserIdentityRQ, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UserIdentity.from_item(item)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: UserIdentity.username(""), "non-empty primary"),
        (lambda: UserIdentity.username_and_passcode("", "pw"), "non-empty primary"),
        (lambda: UserIdentity.username_and_passcode("bob", ""), "non-empty passcode"),
        (lambda: UserIdentity.kerberos(b""), "non-empty primary"),
        (lambda: UserIdentity.saml(""), "non-empty primary"),
        (lambda: UserIdentity.jwt(""), "non-empty primary"),
        (lambda: UserIdentity.username("x" * 65536), "65536 bytes"),
        (lambda: UserIdentity.kerberos(b"x" * 65536), "65536 bytes"),
        (lambda: UserIdentity.username_and_passcode("bob", "p" * 65536), "passcode is 65536"),
        (lambda: UserIdentity(T.KERBEROS, b"t", b"extra"), "no secondary field"),
        (lambda: UserIdentity(T.JWT, b"t", b"extra"), "no secondary field"),
        (lambda: UserIdentity(T.USERNAME, b"u", b"pw"), "no secondary field"),
        (lambda: UserIdentity(7, b"u"), "unknown user identity type"),  # type: ignore[arg-type]
    ],
)
def test_limits(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_field_limit_boundaries() -> None:
    # One field can use the full 65535 bytes only if the whole sub-item still fits.
    limit = 65535 - 6
    assert len(UserIdentity.jwt("j" * limit).primary) == limit
    with pytest.raises(ValueError, match="sub-item of 65536 bytes"):
        UserIdentity.jwt("j" * (limit + 1))
    with pytest.raises(ValueError, match="sub-item"):
        UserIdentity.username_and_passcode("u" * 40000, "p" * 40000)


def test_repr_hides_secrets() -> None:
    secret = "hunter2-top-secret"
    text = repr(UserIdentity.username_and_passcode("alice", secret))
    assert "alice" in text
    assert secret not in text
    assert "hidden" in text
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXNlY3JldA"
    for identity in (
        UserIdentity.jwt(token),
        UserIdentity.saml(token),
        UserIdentity.kerberos(token.encode()),
    ):
        text = repr(identity)
        assert token not in text
        assert token[:12] not in text
        assert f"{len(token)} bytes hidden" in text
    assert "bob" in repr(UserIdentity.username("bob"))
    assert "USERNAME" in repr(UserIdentity.username("bob"))
    assert secret not in str(UserIdentity.username_and_passcode("alice", secret))
