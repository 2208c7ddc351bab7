"""A long operation is not an idle link: the network timeout must not abort it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from pydicom.dataset import Dataset

from aionetdicom import AE, FindRequest, sop_classes
from aionetdicom.contexts import PresentationContext

HOST = "127.0.0.1"


def _query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    return query


async def test_slow_find_outlives_the_network_timeout_on_both_sides() -> None:
    """Matches 0.6 s apart with network timeouts of 0.3 s: all arrive, nobody aborts."""
    scp = AE("ANY-SCP", network_timeout=0.3, dimse_timeout=5, handler_timeout=5)
    scp.add_supported_context(sop_classes.STUDY_ROOT_FIND)

    @scp.on_find
    async def slow(request: FindRequest) -> AsyncIterator[Dataset]:
        for number in range(3):
            await anyio.sleep(0.6)
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.StudyInstanceUID = f"1.2.3.{number}"
            yield match

    scu = AE("SCU", network_timeout=0.3, dimse_timeout=5)
    async with scp.serve(HOST, 0) as server:
        contexts = [PresentationContext(sop_classes.STUDY_ROOT_FIND)]
        async with scu.associate(HOST, server.port, contexts=contexts) as assoc:
            responses = []
            # Checked as each response arrives: once the final one is in, both sides
            # are idle and may rightly time out (after 0.3 s, not before).
            established = []
            with anyio.fail_after(10):
                async for response in assoc.find(_query(), model="study"):
                    responses.append(response)
                    established.append(assoc.is_established)
            assert [r.status.is_pending for r in responses] == [True, True, True, False]
            assert responses[-1].status == 0x0000
            assert [r.identifier.StudyInstanceUID for r in responses[:3]] == [
                "1.2.3.0",
                "1.2.3.1",
                "1.2.3.2",
            ]
            assert established == [True, True, True, True]


async def test_idle_association_is_still_aborted_at_the_network_timeout() -> None:
    """With nothing outstanding, silence longer than the network timeout ends it."""
    scp = AE("ANY-SCP", network_timeout=0.3)
    scu = AE("SCU", network_timeout=30)
    async with scp.serve(HOST, 0) as server, scu.associate(HOST, server.port) as assoc:
        with anyio.fail_after(5):
            await assoc.wait_closed()
        assert not assoc.is_established


async def test_ups_query_is_a_c_find_on_the_ups_pull_model() -> None:
    """UPS query (PS3.4 CC) reaches an on_find handler registered for UPS Pull."""
    scp = AE("ANY-SCP")
    scp.add_supported_context(sop_classes.UPS_PULL)
    seen: list[str] = []

    @scp.on_find(sop_class=sop_classes.UPS_PULL)
    async def worklist(request: FindRequest) -> AsyncIterator[Dataset]:
        seen.append(request.sop_class_uid)
        item = Dataset()
        item.SOPInstanceUID = "1.2.3.4"
        item.ProcedureStepState = "SCHEDULED"
        yield item

    query = Dataset()
    query.ProcedureStepState = "SCHEDULED"
    query.SOPInstanceUID = ""
    contexts = [PresentationContext(sop_classes.UPS_PULL)]
    async with (
        scp.serve(HOST, 0) as server,
        AE("SCU").associate(HOST, server.port, contexts=contexts) as assoc,
    ):
        responses = [r async for r in assoc.find(query, model=sop_classes.UPS_PULL)]
    assert seen == [sop_classes.UPS_PULL]
    assert [int(r.status) for r in responses] == [0xFF00, 0x0000]
    assert responses[0].identifier.ProcedureStepState == "SCHEDULED"
