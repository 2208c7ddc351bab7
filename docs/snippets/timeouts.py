"""What happens when each timeout expires. Both sides run in this one program."""

import anyio
from anyio.abc import SocketAttribute, SocketStream

from aionetdicom import (
    AE,
    ACSETimeout,
    DicomNetworkError,
    DIMSETimeout,
    EchoRequest,
    NetworkTimeout,
    Timeouts,
)

# An SCP whose C-ECHO handler takes 2 s, but may take only 0.5 s.
scp = AE("SLOW_SCP", handler_timeout=0.5)


@scp.on_echo
async def on_echo(request: EchoRequest) -> int:
    await anyio.sleep(2)
    return 0x0000


async def scu(port: int) -> None:
    ae = AE("MY_SCU", dimse_timeout=10)
    async with ae.associate("127.0.0.1", port, called_ae_title="SLOW_SCP") as assoc:
        # 1. The SCP's handler timeout: the SCP answers with its failure status.
        status = await assoc.echo()
        print("1.", repr(status))

        # 2. Our DIMSE timeout (here per call): DIMSETimeout, association aborted.
        try:
            await assoc.echo(timeout=0.2)
        except DIMSETimeout as exc:
            print("2.", exc, "| established:", assoc.is_established)

    # 3. The network timeout: an association idle for longer is aborted by us.
    timeouts = Timeouts(acse=5, dimse=5, network=0.3, connect=5)
    async with ae.associate("127.0.0.1", port, timeouts=timeouts) as assoc:
        await anyio.sleep(0.6)  # idle
        try:
            await assoc.echo()
        except NetworkTimeout as exc:
            print("3.", exc)


async def silent(stream: SocketStream) -> None:
    async with stream:
        await anyio.sleep(3)  # accepts the connection, never answers


async def main() -> None:
    async with scp.serve("127.0.0.1", 0) as server:
        await scu(server.port)
        await server.aclose()

    # 4. The ACSE timeout: a peer that never answers the A-ASSOCIATE-RQ.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        port = listener.extra(SocketAttribute.local_port)
        try:
            async with AE("MY_SCU", acse_timeout=0.3).associate("127.0.0.1", port):
                pass
        except ACSETimeout as exc:
            print("4.", exc)
        tg.cancel_scope.cancel()

    # 5. Nothing listening: the connection error says so (ConnectTimeout when the
    #    peer does not answer within connect_timeout).
    try:
        async with AE("MY_SCU", connect_timeout=2).associate("127.0.0.1", port):
            pass
    except (OSError, DicomNetworkError) as exc:
        print("5.", type(exc).__name__, exc)


anyio.run(main)
