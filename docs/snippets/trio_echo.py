"""The same code on trio: anyio runs it on either event loop."""

import anyio

from aionetdicom import AE, EchoRequest

scp = AE("TRIO_SCP")


@scp.on_echo
async def on_echo(request: EchoRequest) -> int:
    return 0x0000


async def main() -> None:
    async with scp.serve("127.0.0.1", 0) as server:
        async with AE("MY_SCU").associate("127.0.0.1", server.port) as assoc:
            print(repr(await assoc.echo()))
        await server.aclose()


anyio.run(main, backend="trio")  # the default is backend="asyncio" (uvloop: see below)
