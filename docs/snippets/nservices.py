"""DIMSE-N both ways: MPPS (N-CREATE, N-SET, N-GET) and storage commitment
(N-ACTION, then N-EVENT-REPORT back to the SCU). Both sides run in this one program."""

from collections.abc import Sequence

import anyio
from pydicom import Dataset
from pydicom.uid import generate_uid

from aionetdicom import AE, NRequest, sop_classes
from aionetdicom.contexts import PresentationContext
from aionetdicom.services.normalized import EventReportRequest
from aionetdicom.services.normalized_scp import StorageCommitmentSCP

MPPS = sop_classes.MODALITY_PERFORMED_PROCEDURE_STEP
MPPS_RETRIEVE = sop_classes.MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE
COMMITMENT = sop_classes.STORAGE_COMMITMENT_PUSH

# ------------------------------------------------------------------------ the SCP
scp = AE("RIS")
for uid in (MPPS, MPPS_RETRIEVE, COMMITMENT):
    scp.add_supported_context(uid)
PROCEDURES: dict[str, Dataset] = {}


@scp.on_n_create(sop_class=MPPS)
async def create_step(request: NRequest) -> int:
    # Without an instance UID from the SCU, request.sop_instance_uid is a fresh one.
    PROCEDURES[request.sop_instance_uid] = request.dataset or Dataset()
    return 0x0000


@scp.on_n_set(sop_class=MPPS)
async def update_step(request: NRequest) -> int | tuple[int, Dataset]:
    step = PROCEDURES.get(request.sop_instance_uid)
    if step is None:
        return 0x0112  # No such SOP Instance
    step.update(request.dataset or Dataset())
    return 0x0000, step


@scp.on_n_get(sop_class=MPPS_RETRIEVE)
async def get_step(request: NRequest) -> int | tuple[int, Dataset]:
    step = PROCEDURES.get(request.sop_instance_uid)
    if step is None:
        return 0x0112
    return 0x0000, step


async def commit(
    transaction_uid: str, references: Sequence[Dataset]
) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
    # Check the instances are safely stored; here: all of them are.
    return [(ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) for ref in references], []


# ------------------------------------------------------------------------ the SCU
async def scu(port: int) -> None:
    contexts = [PresentationContext(uid) for uid in (MPPS, MPPS_RETRIEVE, COMMITMENT)]
    ae = AE("MODALITY")
    async with ae.associate("127.0.0.1", port, called_ae_title="RIS", contexts=contexts) as assoc:
        step = Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        created = await assoc.n_create(MPPS, attributes=step)  # the SCP assigns the UID
        uid = created.affected_sop_instance_uid
        assert uid is not None
        print("N-CREATE", repr(created.status), uid)

        change = Dataset()
        change.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = await assoc.n_set(MPPS, uid, change)  # NResponse unpacks
        print("N-SET", repr(status))

        got = await assoc.n_get(MPPS_RETRIEVE, uid, ["PerformedProcedureStepStatus"])
        assert got.dataset is not None
        print("N-GET", repr(got.status), got.dataset.PerformedProcedureStepStatus)

        # Storage commitment: N-ACTION now, the result comes as an N-EVENT-REPORT.
        results = anyio.Event()

        @assoc.on_event_report
        async def on_report(request: EventReportRequest) -> int:
            info = request.event_information
            print("N-EVENT-REPORT", request.event_type_id, len(info.ReferencedSOPSequence))
            results.set()
            return 0x0000

        reference = Dataset()
        reference.ReferencedSOPClassUID = sop_classes.uid_for_keyword("CTImageStorage")
        reference.ReferencedSOPInstanceUID = generate_uid()
        request = Dataset()
        request.TransactionUID = generate_uid()
        request.ReferencedSOPSequence = [reference]
        action = await assoc.n_action(
            COMMITMENT, sop_classes.STORAGE_COMMITMENT_PUSH_INSTANCE, 1, request
        )
        print("N-ACTION", repr(action.status))
        with anyio.fail_after(10):
            await results.wait()


async def main() -> None:
    async with StorageCommitmentSCP(scp, commit), scp.serve("127.0.0.1", 0) as server:
        await scu(server.port)
        await server.aclose()


anyio.run(main)
