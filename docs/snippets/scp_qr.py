"""A Query/Retrieve SCP answering C-FIND, C-GET and C-MOVE from an in-memory index."""

from collections.abc import AsyncIterator

import anyio
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from aionetdicom import AE, FindRequest, GetRequest, MoveRequest, contexts
from aionetdicom.index.dataset_matching import matches, response
from aionetdicom.services.qr_scp import (
    StoredInstance,
    query_retrieve_contexts,
    retrieve_storage_contexts,
)

UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

scp = AE(
    "QR_SCP",
    supported_contexts=[
        *contexts.VERIFICATION,
        *query_retrieve_contexts(),  # every C-FIND, C-GET and C-MOVE SOP class
        *retrieve_storage_contexts(),  # storage with the requestor as SCP (C-GET)
    ],
    known_aes={"STORE_SCP": ("127.0.0.1", 11113)},  # C-MOVE destinations
)
#: (attributes without Pixel Data, where the file is) for every instance we hold.
INDEX: list[tuple[Dataset, StoredInstance]] = []


def load_index(paths: list[str]) -> None:
    for path in paths:
        header = dcmread(path, stop_before_pixels=True)
        stored = StoredInstance(
            path,
            header.SOPClassUID,
            header.SOPInstanceUID,
            header.file_meta.TransferSyntaxUID,
        )
        INDEX.append((header, stored))


def select(request: FindRequest | GetRequest | MoveRequest) -> list[tuple[Dataset, StoredInstance]]:
    return [(header, stored) for header, stored in INDEX if matches(request.identifier, header)]


@scp.on_find
async def on_find(request: FindRequest) -> AsyncIterator[Dataset | tuple[int, None]]:
    key = UNIQUE_KEY.get(request.query_level or "")
    if key is None:
        yield 0xA900, None  # final status: Identifier does not match SOP class
        return
    seen = set()
    for header, _ in select(request):
        if header.get(key) in seen:
            continue  # one response per entity at the query level
        seen.add(header.get(key))
        match = response(request.identifier, header)  # the requested keys, filled in
        yield match  # a Pending response; C-CANCEL stops the generator here


@scp.on_get
@scp.on_move  # the same handler serves C-MOVE: the library runs the sub-operations
async def on_retrieve(request: GetRequest | MoveRequest) -> AsyncIterator[int | StoredInstance]:
    chosen = select(request)
    yield len(chosen)  # first the count, so Pending responses carry "remaining"
    for _, stored in chosen:
        yield stored  # a StoredInstance, a path, Part 10 bytes or a Dataset


async def main() -> None:
    paths = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
    await anyio.to_thread.run_sync(load_index, paths)
    async with scp.serve("127.0.0.1", 11112) as server:
        await server.wait_closed()


if __name__ == "__main__":
    anyio.run(main)
