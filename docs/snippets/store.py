"""C-STORE files, a pydicom Dataset and raw Part 10 bytes over one association."""

import anyio
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from aionetdicom import AE
from aionetdicom.services.storage import contexts_for_files

PATHS = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]


async def main() -> None:
    # One presentation context per SOP class and transfer syntax the files use, plus
    # the uncompressed syntaxes to convert to (reads only the files' meta headers).
    contexts = await anyio.to_thread.run_sync(contexts_for_files, PATHS)
    ae = AE("MY_SCU")
    async with ae.associate(
        "127.0.0.1", 11112, called_ae_title="QRSCP", contexts=contexts
    ) as assoc:
        for path in PATHS:  # a path: sent as it is, in chunks, when its syntax was accepted
            status = await assoc.store(path)
            print(path, repr(status))

        dataset = await anyio.to_thread.run_sync(dcmread, PATHS[0])
        dataset.SOPInstanceUID = generate_uid()  # a Dataset: encoded for the context
        print(repr(await assoc.store(dataset)))

        data = await anyio.Path(PATHS[1]).read_bytes()  # bytes of a Part 10 file
        print(repr(await assoc.store(data)))


anyio.run(main)
