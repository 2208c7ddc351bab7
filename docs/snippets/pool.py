"""An association pool: many short operations reuse a few associations."""

import anyio
from pydicom import Dataset
from pydicom.data import get_testdata_file

from aionetdicom import AE, AssociationPool, contexts, sop_classes
from aionetdicom.contexts import PresentationContext
from aionetdicom.services.storage import contexts_for_files

CT_PATH = get_testdata_file("CT_small.dcm")


async def main() -> None:
    ae = AE("WEB_SCU")
    proposed = [
        *contexts.VERIFICATION,
        PresentationContext(sop_classes.STUDY_ROOT_FIND),
        *await anyio.to_thread.run_sync(contexts_for_files, [CT_PATH]),
    ]
    async with AssociationPool(
        ae,
        "127.0.0.1",
        11112,
        called_ae_title="QRSCP",
        contexts=proposed,  # every association of the pool proposes these
        max_size=4,  # at most 4 associations at once; callers queue beyond
        idle_timeout=30.0,  # release associations idle for 30 s
        check_after=60.0,  # C-ECHO one idle for a minute before lending it
        acquire_timeout=10.0,  # PoolTimeout after queueing 10 s
    ) as pool:
        # 20 concurrent callers share (at most) 4 associations.
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(pool.echo)
        print(repr(await pool.store(CT_PATH)))

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        async with pool.find(query, model="study") as responses:  # C-CANCEL if left early
            async for status, match in responses:
                if status.is_pending:
                    print("study", match.StudyInstanceUID)

        async with pool.acquire() as assoc:  # several operations on one association
            await assoc.echo()
            await assoc.store(CT_PATH)
        print(pool.statistics)


anyio.run(main)
