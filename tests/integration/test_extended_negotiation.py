"""SOP Class Extended Negotiation: the acceptor's hook decides the reply items."""

from __future__ import annotations

import logging

import pytest

from aionetdicom import AE, sop_classes
from aionetdicom.contexts import PresentationContext
from aionetdicom.pdu.items import SOPClassExtendedNegotiation

HOST = "127.0.0.1"
FIND = sop_classes.STUDY_ROOT_FIND
MOVE = sop_classes.STUDY_ROOT_MOVE


async def negotiate(
    scp: AE, proposed: list[SOPClassExtendedNegotiation]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(what our SCU sees, what the SCP's association says) after one association."""
    seen: list[dict[str, bytes]] = []

    @scp.on_echo
    async def on_echo(request: object) -> int:
        seen.append(request.assoc.extended_negotiation)  # type: ignore[attr-defined]
        return 0

    async with (
        scp.serve(HOST, 0) as server,
        AE("SCU").associate(
            HOST,
            server.port,
            called_ae_title="SCP",
            contexts=[PresentationContext(uid) for uid in (FIND, sop_classes.VERIFICATION)],
            extended_negotiation=proposed,
        ) as assoc,
    ):
        await assoc.echo()
        return assoc.extended_negotiation, seen[0]


def scp_with_contexts() -> AE:
    return AE(
        "SCP",
        supported_contexts=[
            PresentationContext(uid) for uid in (FIND, MOVE, sop_classes.VERIFICATION)
        ],
    )


async def test_hook_replies_for_accepted_sop_classes_only() -> None:
    scp = scp_with_contexts()
    calls: list[tuple[str, bytes]] = []

    @scp.on_extended_negotiation
    def reply(uid: str, information: bytes) -> bytes | None:
        calls.append((uid, information))
        return b"\x01\x00"

    proposed = [
        SOPClassExtendedNegotiation(FIND, b"\x01\x01"),
        SOPClassExtendedNegotiation(MOVE, b"\x01"),  # MOVE was not proposed as a context
    ]
    ours, theirs = await negotiate(scp, proposed)
    assert calls == [(FIND, b"\x01\x01")]
    assert ours == theirs == {FIND: b"\x01\x00"}


async def test_without_a_hook_no_reply_is_sent() -> None:
    ours, theirs = await negotiate(
        scp_with_contexts(), [SOPClassExtendedNegotiation(FIND, b"\x01")]
    )
    assert ours == theirs == {}


async def test_a_failing_hook_sends_no_reply_and_the_association_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp = scp_with_contexts()

    @scp.on_extended_negotiation
    def reply(uid: str, information: bytes) -> bytes | None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="aionetdicom.ae"):
        ours, _ = await negotiate(scp, [SOPClassExtendedNegotiation(FIND, b"\x01")])
    assert ours == {}
    assert "extended negotiation handler failed" in caplog.text
