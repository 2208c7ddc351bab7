"""C-MOVE: the peer sends the instances to another AE over its own association."""

import anyio
from pydicom import Dataset

from aionetdicom import AE, sop_classes
from aionetdicom.services.qr_scp import query_retrieve_contexts

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"  # pydicom's CT_small.dcm


async def main() -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = CT_STUDY
    contexts = query_retrieve_contexts([sop_classes.STUDY_ROOT_MOVE])
    ae = AE("MY_SCU")
    async with ae.associate(
        "127.0.0.1", 11112, called_ae_title="QRSCP", contexts=contexts
    ) as assoc:
        # "STORE_SCP" must be a destination the peer knows (qrscp: --destination).
        async for progress in assoc.move(query, "STORE_SCP", model="study"):
            print(
                repr(progress.status),
                f"remaining={progress.remaining} completed={progress.completed}",
                f"failed={progress.failed} warning={progress.warning}",
            )
        if progress.failed_sop_instance_uids:
            print("failed:", progress.failed_sop_instance_uids)


anyio.run(main)
