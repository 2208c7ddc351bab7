"""A FastAPI service that C-ECHOes and C-FINDs through an association pool.

Run: ``uvicorn web_fastapi:app`` (next to this file), then ``GET /echo`` or
``GET /studies?patient_name=DOE*``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydicom import Dataset

from aionetdicom import AE, AssociationPool, contexts, sop_classes
from aionetdicom.contexts import PresentationContext


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AssociationPool(
        AE("WEB_SCU"),
        "127.0.0.1",
        11112,
        called_ae_title="QRSCP",
        contexts=[*contexts.VERIFICATION, PresentationContext(sop_classes.STUDY_ROOT_FIND)],
        max_size=4,
    ) as pool:
        app.state.pool = pool
        yield  # leaving: leases get close_grace seconds, then A-RELEASE


app = FastAPI(lifespan=lifespan)


@app.get("/echo")
async def echo(request: Request) -> dict[str, int]:
    pool: AssociationPool = request.app.state.pool
    return {"status": int(await pool.echo())}


@app.get("/studies")
async def studies(request: Request, patient_name: str = "*") -> list[dict[str, str]]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = patient_name
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    pool: AssociationPool = request.app.state.pool
    found = []
    # ``async with``: a client that goes away cancels the request, and the C-FIND
    # is then cancelled (C-CANCEL) before the association goes back to the pool.
    async with pool.find(query, model="study") as responses:
        async for status, match in responses:
            if status.is_pending:
                found.append({"study": match.StudyInstanceUID, "date": match.StudyDate})
    return found
