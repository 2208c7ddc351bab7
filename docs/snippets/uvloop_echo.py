"""asyncio with uvloop when it is installed (as the command-line apps do)."""

import importlib.util

import anyio

from aionetdicom import AE


async def main() -> None:
    async with AE("MY_SCU").associate("127.0.0.1", 11112, called_ae_title="QRSCP") as assoc:
        print(repr(await assoc.echo()))


options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}
anyio.run(main, backend="asyncio", backend_options=options)
