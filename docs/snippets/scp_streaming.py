"""A streaming C-STORE handler: the data set goes to disk while it arrives."""

import anyio

from aionetdicom import AE, StoreRequest
from aionetdicom.acse.contexts import is_valid_uid

scp = AE("STREAM_SCP")
scp.add_storage_contexts()


@scp.on_store(streaming=True)
async def on_store(request: StoreRequest) -> int:
    head = await request.peek()  # the elements before Pixel Data, parsed early
    study = str(head.get("StudyInstanceUID", ""))
    # A UID from the network names a folder only once it is known to be a valid UID.
    folder = f"archive/{study}" if is_valid_uid(study) else "archive/unsorted"
    path = await request.save_to(folder)  # creates the folder; bounded memory
    print("stored", path, head.get("Modality"))
    return 0x0000


async def main() -> None:
    await scp.serve_forever("127.0.0.1", 11112)  # until cancelled


if __name__ == "__main__":
    anyio.run(main)
