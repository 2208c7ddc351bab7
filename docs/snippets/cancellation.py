"""Cancellation: C-CANCEL for C-FIND/C-GET/C-MOVE, A-ABORT for the rest."""

from collections.abc import AsyncIterator

import anyio
from pydicom import Dataset

from aionetdicom import AE, AssociationAborted, EchoRequest, FindRequest, sop_classes
from aionetdicom.contexts import VERIFICATION, PresentationContext

# ------------------------------------------------------------------------ a slow SCP
scp = AE("SLOW_SCP", supported_contexts=VERIFICATION)
scp.add_supported_context(sop_classes.STUDY_ROOT_FIND)


@scp.on_find
async def on_find(request: FindRequest) -> AsyncIterator[Dataset]:
    try:
        for number in range(1000):
            await anyio.sleep(0.01)
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.StudyInstanceUID = f"1.2.3.{number}"
            yield match
    finally:  # the generator is closed when the SCU cancels
        print("SCP: C-CANCEL received:", request.cancelled)


@scp.on_echo
async def on_echo(request: EchoRequest) -> int:
    await anyio.sleep(5)
    return 0x0000


# ------------------------------------------------------------------------ the SCU
QUERY = Dataset()
QUERY.QueryRetrieveLevel = "STUDY"
QUERY.StudyInstanceUID = ""
CONTEXTS = [*VERIFICATION, PresentationContext(sop_classes.STUDY_ROOT_FIND)]


async def scu(port: int) -> None:
    ae = AE("MY_SCU")
    async with ae.associate(
        "127.0.0.1", port, called_ae_title="SLOW_SCP", contexts=CONTEXTS
    ) as assoc:
        # 1. Leave an ``async with`` block early: C-CANCEL is sent at once and the
        #    remaining responses are read and dropped before the block ends.
        async with assoc.find(QUERY) as responses:
            async for _status, match in responses:
                if match is not None and match.StudyInstanceUID == "1.2.3.2":
                    break
        print("1. still established:", assoc.is_established)

        # 2. Cancel explicitly and keep reading, to see the final Cancel status.
        responses = assoc.find(QUERY)
        async for status, _ in responses:
            if status.is_pending:
                await responses.cancel()  # once; later calls do nothing
        print("2. final status:", repr(status))

        # 3. Cancelling the task (here a timeout) also sends C-CANCEL, shielded.
        received = 0
        with anyio.move_on_after(0.1):
            async for _response in assoc.find(QUERY):
                received += 1
        print("3.", received, "responses; still established:", assoc.is_established)

        # 4. An operation without C-CANCEL (C-ECHO, C-STORE, N-*) cancelled while
        #    waiting for its response: the association is aborted (A-ABORT).
        with anyio.move_on_after(0.1):
            await assoc.echo()
        print("4. still established:", assoc.is_established)
        try:
            await assoc.echo()
        except AssociationAborted as exc:
            print("4. next operation:", exc)


async def main() -> None:
    async with scp.serve("127.0.0.1", 0, shutdown_grace=1.0) as server:
        await scu(server.port)
        await server.aclose()


anyio.run(main)
