"""C-GET: the peer sends the instances back on the same association."""

import anyio
from pydicom import Dataset

from aionetdicom import AE, StoreRequest, sop_classes
from aionetdicom.services.query_retrieve import retrieve_contexts

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"  # pydicom's CT_small.dcm


async def main() -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = CT_STUDY
    # The GET model, plus the storage SOP classes with the SCP role for us
    # (SCP/SCU role selection): the sub-operations are C-STOREs to us.
    contexts = retrieve_contexts([sop_classes.STUDY_ROOT_GET])
    ae = AE("MY_SCU")
    async with ae.associate(
        "127.0.0.1", 11112, called_ae_title="QRSCP", contexts=contexts
    ) as assoc:
        # 1. As an async iterator of instances; each C-STORE-RSP is sent when we
        #    ask for the next instance, so a slow consumer slows the peer down.
        async with assoc.get_instances(query, model="study") as instances:
            async for instance in instances:
                path = await instance.save_to("retrieved")  # atomic, named by UID
                print("saved", path)
        final = instances.response  # the final C-GET response
        if final is not None:
            print("final:", repr(final.status), final.completed, final.failed)

        # 2. With a handler for the sub-operations and the progress responses.
        async def on_store(request: StoreRequest) -> int:
            print("received", request.sop_instance_uid, request.dataset.Modality)
            return 0x0000

        async for progress in assoc.get(query, model="study", on_store=on_store):
            print(repr(progress.status), progress.completed, progress.failed)


anyio.run(main)
