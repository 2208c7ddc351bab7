"""A Storage SCP (plus Verification): the C-MOVE destination STORE_SCP on port 11113."""

import anyio

from aionetdicom import AE, AssociationEvent, EchoRequest, StoreRequest, sop_classes

scp = AE("STORE_SCP")
scp.add_storage_contexts()  # every storage SOP class pydicom knows, uncompressed


@scp.on_echo  # optional: without a handler C-ECHO is answered with Success
async def on_echo(request: EchoRequest) -> int:
    print("C-ECHO from", request.assoc.peer_ae_title)
    return 0x0000


@scp.on_store  # every storage SOP class...
async def on_store(request: StoreRequest) -> int:
    path = await request.save_to("incoming")  # temp file, fsync, rename; named by UID
    print("stored", path, "for", request.move_originator_ae_title or request.assoc.peer_ae_title)
    return 0x0000


@scp.on_store(sop_class=sop_classes.uid_for_keyword("CTImageStorage"))  # ...CT wins here
async def on_ct(request: StoreRequest) -> int:
    await request.save_to("incoming/ct")
    return 0x0000


@scp.on_association("accepted", "released", "aborted")
async def log_association(event: AssociationEvent) -> None:
    print(event.kind, event.peer_ae_title, event.peer_address, event.initiator, event.error)


async def main() -> None:
    async with scp.serve("127.0.0.1", 11113) as server:
        print("listening on", server.addresses)
        await server.wait_closed()  # until cancelled (Ctrl-C), then a graceful shutdown


if __name__ == "__main__":
    anyio.run(main)
