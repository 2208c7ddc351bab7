"""C-ECHO a peer: the smallest useful aionetdicom program."""

import anyio

from aionetdicom import AE


async def main() -> None:
    ae = AE("MY_SCU")
    async with ae.associate("127.0.0.1", 11112, called_ae_title="QRSCP") as assoc:
        status = await assoc.echo()
        print(repr(status))  # Status(0x0000 Success)
        print(status.category, status.is_success)  # StatusCategory.SUCCESS True


anyio.run(main)
