"""Several operations at once on one association (asynchronous operations window)."""

import time

import anyio
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from aionetdicom import AE, StoreRequest
from aionetdicom.services.storage import storage_contexts

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# The SCP performs up to 8 of the peer's operations at once.
scp = AE("STORE_SCP", maximum_operations_performed=8)
scp.add_storage_contexts([CT_IMAGE_STORAGE])


@scp.on_store
async def on_store(request: StoreRequest) -> int:
    await anyio.sleep(0.1)  # a slow store: a database, a remote disk...
    return 0x0000


async def scu(port: int) -> None:
    template = await anyio.to_thread.run_sync(dcmread, get_testdata_file("CT_small.dcm"))
    datasets = []
    for _ in range(16):
        dataset = template.copy()
        dataset.SOPInstanceUID = generate_uid()
        datasets.append(dataset)

    ae = AE("MY_SCU")
    async with ae.associate(
        "127.0.0.1",
        port,
        called_ae_title="STORE_SCP",
        contexts=storage_contexts([CT_IMAGE_STORAGE]),
        operations_window=(8, 1),  # propose: we invoke up to 8, perform 1
    ) as assoc:
        assert assoc.response is not None
        print("negotiated:", assoc.response.user_information.asynchronous_operations_window)
        statuses = []

        async def store(dataset: Dataset) -> None:
            statuses.append(await assoc.store(dataset))  # responses matched by Message ID

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for dataset in datasets:  # 16 C-STOREs, at most 8 outstanding at a time
                tg.start_soon(store, dataset)
        elapsed = time.perf_counter() - started  # about 0.2 s, not 1.6 s
        print(f"{sum(s.is_success for s in statuses)} stored in {elapsed:.2f} s")


async def main() -> None:
    async with scp.serve("127.0.0.1", 0) as server:
        await scu(server.port)
        await server.aclose()


anyio.run(main)
