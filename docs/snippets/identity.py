"""Who may associate: AE titles and user identity, decided by the SCP."""

import hmac

import anyio

from aionetdicom import AE, AssociationRejected, UserIdentity
from aionetdicom.acse.user_identity import UserIdentityType
from aionetdicom.pdu.pdus import AAssociateRQ

PASSCODES = {"alice": "correct horse"}

scp = AE(
    "SECURE_SCP",
    require_called_ae_title=True,  # the SCU must call us by our title
    allowed_calling_ae_titles=["MY_SCU", "VIEWER"],  # and be one of these
    allowed_peer_addresses=["127.0.0.0/8", "::1"],  # from these networks only
)


@scp.on_user_identity
async def check_identity(identity: UserIdentity, request: AAssociateRQ) -> bool:
    if identity.identity_type is not UserIdentityType.USERNAME_AND_PASSCODE:
        return False
    expected = PASSCODES.get(identity.primary.decode("utf-8"), "")
    return hmac.compare_digest(expected.encode("utf-8"), identity.secondary)


async def main() -> None:
    async with scp.serve("127.0.0.1", 0) as server:
        ae = AE("MY_SCU")
        login = UserIdentity.username_and_passcode("alice", "correct horse")
        async with ae.associate(
            "127.0.0.1", server.port, called_ae_title="SECURE_SCP", user_identity=login
        ) as assoc:
            print("accepted:", repr(await assoc.echo()))

        wrong = UserIdentity.username_and_passcode("alice", "guess")
        try:
            async with ae.associate(
                "127.0.0.1", server.port, called_ae_title="SECURE_SCP", user_identity=wrong
            ):
                pass
        except AssociationRejected as exc:
            print("rejected:", exc)
            print(exc.result, exc.source, exc.reason)
        await server.aclose()


anyio.run(main)
