"""C-FIND: an async iterator of (status, identifier) responses."""

import anyio
from pydicom import Dataset

from aionetdicom import AE, sop_classes
from aionetdicom.services.qr_scp import query_retrieve_contexts


async def main() -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "Compressed*"  # wildcard matching
    query.StudyInstanceUID = ""  # return keys: empty
    query.StudyDate = ""

    contexts = query_retrieve_contexts([sop_classes.STUDY_ROOT_FIND])
    ae = AE("MY_SCU")
    async with ae.associate(
        "127.0.0.1", 11112, called_ae_title="QRSCP", contexts=contexts
    ) as assoc:
        async for status, match in assoc.find(query, model="study"):
            if status.is_pending:
                print(match.StudyInstanceUID, match.StudyDate)
            else:
                print("final:", repr(status))  # the last response has no identifier


anyio.run(main)
