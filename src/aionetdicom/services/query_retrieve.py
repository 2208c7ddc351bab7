"""C-FIND, C-GET and C-MOVE as SCU (PS3.4 Annex C, PS3.7 9.1.2-9.1.4 and 9.3.2-9.3.4).

Each operation is a :class:`~aionetdicom.operation.PendingResponses`: an async iterator
over the peer's responses that ends after the final one. It sends its request on first
use; leaving it early (``break``, an exception, cancelling the task) sends C-CANCEL and
reads up to the final response, so the association stays usable::

    async for status, match in assoc.find(query, model="study"):
        ...
    async with assoc.move(query, "STORE_SCP") as responses:
        async for progress in responses:
            print(progress.completed, progress.remaining)

C-GET brings the instances back on the same association as C-STORE sub-operations
(the SCU takes the Storage SCP role, negotiated with SCP/SCU role selection, see
:func:`retrieve_contexts`). Hand them to a handler with ``get(..., on_store=handler)``
or iterate over them with :meth:`QueryRetrieveOperations.get_instances`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import DEFAULT_TRANSFER_SYNTAXES, PresentationContext, is_valid_uid
from aionetdicom.acse.requestor import MAX_PRESENTATION_CONTEXTS
from aionetdicom.datasets import decode_dataset, encode_dataset
from aionetdicom.dimse.command_set import (
    Command,
    CommandField,
    CommandValue,
    Priority,
    make_command,
)
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.dimse.status import Status
from aionetdicom.errors import DicomNetworkError, LocalProtocolError
from aionetdicom.operation import PendingResponses
from aionetdicom.services.storage import (
    DEFAULT_STORE_STATUS,
    OUT_OF_RESOURCES,
    StoreHandler,
    StoreRequest,
    store_service,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from aionetdicom.acse.contexts import NegotiatedContext
    from aionetdicom.association import Association

__all__ = [
    "DEFAULT_RETRIEVE_STORAGE_CLASSES",
    "MODEL_NAMES",
    "STORE_CONSUMER_FAILED",
    "STORE_NOT_TAKEN",
    "FindResponse",
    "QueryRetrieveOperations",
    "ReceivedInstances",
    "RetrieveResponse",
    "failed_uid_list",
    "find_response",
    "query_model",
    "retrieve_contexts",
    "retrieve_response",
]

Operation = Literal["find", "get", "move"]

#: Status when a response lacks Status (0000,0900): Processing failure (PS3.7 C.4.2).
MISSING_STATUS = 0x0110
#: C-STORE status for a sub-operation the consumer of ``get_instances`` did not take
#: (it left the loop): 0xA700 Refused, out of resources (PS3.4 B.2.3).
STORE_NOT_TAKEN = OUT_OF_RESOURCES
#: C-STORE status for the instance the consumer was handling when its block raised:
#: 0xC211, Error: cannot understand (the storage service's failure for a handler error).
STORE_CONSUMER_FAILED = DEFAULT_STORE_STATUS

_OPERATIONS: tuple[Operation, ...] = ("find", "move", "get")
_SERVICES = {"find": "C-FIND", "get": "C-GET", "move": "C-MOVE"}

# name -> (FIND, MOVE, GET) SOP Class UIDs of the information model (None: not defined).
_MODEL_TABLE: dict[str, tuple[str | None, str | None, str | None]] = {
    "patient": (
        sop_classes.PATIENT_ROOT_FIND,
        sop_classes.PATIENT_ROOT_MOVE,
        sop_classes.PATIENT_ROOT_GET,
    ),
    "study": (
        sop_classes.STUDY_ROOT_FIND,
        sop_classes.STUDY_ROOT_MOVE,
        sop_classes.STUDY_ROOT_GET,
    ),
    "patient-study": (
        sop_classes.PATIENT_STUDY_ONLY_FIND,
        sop_classes.PATIENT_STUDY_ONLY_MOVE,
        sop_classes.PATIENT_STUDY_ONLY_GET,
    ),
    "worklist": (sop_classes.MODALITY_WORKLIST_FIND, None, None),
    "composite": (
        None,
        sop_classes.COMPOSITE_INSTANCE_ROOT_MOVE,
        sop_classes.COMPOSITE_INSTANCE_ROOT_GET,
    ),
    "composite-nobulk": (None, None, sop_classes.COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET),
}
_ALIASES = {
    "patient-root": "patient",
    "p": "patient",
    "study-root": "study",
    "s": "study",
    "psonly": "patient-study",
    "patient-study-only": "patient-study",
    "o": "patient-study",
    "mwl": "worklist",
    "modality-worklist": "worklist",
    "w": "worklist",
    "composite-instance-root": "composite",
    "composite-instance": "composite",
    "without-bulk-data": "composite-nobulk",
    "composite-without-bulk-data": "composite-nobulk",
}
#: Every short model name :func:`query_model` understands (aliases included).
MODEL_NAMES: tuple[str, ...] = (*_MODEL_TABLE, *_ALIASES)
# UID -> (model name, operation), to catch a MOVE model given to find() and the like.
_KNOWN_UIDS: dict[str, tuple[str, Operation]] = {
    uid: (name, operation)
    for name, uids in _MODEL_TABLE.items()
    for operation, uid in zip(_OPERATIONS, uids, strict=True)
    if uid is not None
}


def query_model(model: str, operation: Operation) -> str:
    """The SOP Class UID of information ``model`` for ``operation`` ("find", "get", "move").

    ``model`` is a UID or a short name: ``patient``, ``study``, ``patient-study``
    (``psonly``), ``worklist`` (find only), ``composite`` (get and move),
    ``composite-nobulk`` (get only); case, ``_`` and spaces do not matter. A known
    Q/R UID of another operation (a MOVE model given to find) is a ValueError.
    """
    if operation not in _SERVICES:
        raise ValueError(f"operation must be 'find', 'get' or 'move', not {operation!r}")
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, not {type(model).__name__}")
    text = model.strip()
    if text[:1].isdigit():
        if not is_valid_uid(text):
            raise ValueError(f"model {model!r} is not a valid UID")
        known = _KNOWN_UIDS.get(text)
        if known is not None and known[1] != operation:
            name, other = known
            raise ValueError(
                f"{text} is the {name} model for {_SERVICES[other]}, not for {_SERVICES[operation]}"
            )
        return text
    key = text.lower().replace("_", "-").replace(" ", "-")
    key = _ALIASES.get(key, key)
    uids = _MODEL_TABLE.get(key)
    if uids is None:
        choices = ", ".join(MODEL_NAMES)
        raise ValueError(f"unknown query/retrieve model {model!r} (a UID or one of: {choices})")
    uid = uids[_OPERATIONS.index(operation)]
    if uid is None:
        raise ValueError(f"the {key} model has no {_SERVICES[operation]} SOP class")
    return uid


# ---------------------------------------------------------------------- presentation contexts

# Storage SOP Classes proposed with the SCP role for C-GET by default: the current
# (non-retired) image, waveform, SR, presentation state, RT and document classes in
# common use, 120 of them so that a few Q/R models still fit in 128 contexts.
_DEFAULT_STORAGE_KEYWORDS: tuple[str, ...] = (
    # radiography, CT, MR, US, secondary capture
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation",
    "DigitalIntraOralXRayImageStorageForProcessing",
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "LegacyConvertedEnhancedCTImageStorage",
    "UltrasoundMultiFrameImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "MRSpectroscopyStorage",
    "EnhancedMRColorImageStorage",
    "LegacyConvertedEnhancedMRImageStorage",
    "UltrasoundImageStorage",
    "EnhancedUSVolumeStorage",
    "PhotoacousticImageStorage",
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
    # waveforms
    "TwelveLeadECGWaveformStorage",
    "GeneralECGWaveformStorage",
    "AmbulatoryECGWaveformStorage",
    "General32bitECGWaveformStorage",
    "HemodynamicWaveformStorage",
    "CardiacElectrophysiologyWaveformStorage",
    "BasicVoiceAudioWaveformStorage",
    "GeneralAudioWaveformStorage",
    "ArterialPulseWaveformStorage",
    "RespiratoryWaveformStorage",
    "MultichannelRespiratoryWaveformStorage",
    "RoutineScalpElectroencephalogramWaveformStorage",
    # presentation states
    "GrayscaleSoftcopyPresentationStateStorage",
    "ColorSoftcopyPresentationStateStorage",
    "PseudoColorSoftcopyPresentationStateStorage",
    "BlendingSoftcopyPresentationStateStorage",
    "XAXRFGrayscaleSoftcopyPresentationStateStorage",
    "GrayscalePlanarMPRVolumetricPresentationStateStorage",
    "CompositingPlanarMPRVolumetricPresentationStateStorage",
    "AdvancedBlendingPresentationStateStorage",
    "VolumeRenderingVolumetricPresentationStateStorage",
    "SegmentedVolumeRenderingVolumetricPresentationStateStorage",
    "MultipleVolumeRenderingVolumetricPresentationStateStorage",
    "VariableModalityLUTSoftcopyPresentationStateStorage",
    # angiography, fluoroscopy, tomosynthesis, NM, PET
    "XRayAngiographicImageStorage",
    "EnhancedXAImageStorage",
    "XRayRadiofluoroscopicImageStorage",
    "EnhancedXRFImageStorage",
    "XRay3DAngiographicImageStorage",
    "XRay3DCraniofacialImageStorage",
    "BreastTomosynthesisImageStorage",
    "BreastProjectionXRayImageStorageForPresentation",
    "BreastProjectionXRayImageStorageForProcessing",
    "IntravascularOpticalCoherenceTomographyImageStorageForPresentation",
    "IntravascularOpticalCoherenceTomographyImageStorageForProcessing",
    "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage",
    "LegacyConvertedEnhancedPETImageStorage",
    "EnhancedPETImageStorage",
    # derived objects
    "ParametricMapStorage",
    "RawDataStorage",
    "SpatialRegistrationStorage",
    "SpatialFiducialsStorage",
    "DeformableSpatialRegistrationStorage",
    "SegmentationStorage",
    "SurfaceSegmentationStorage",
    "TractographyResultsStorage",
    "RealWorldValueMappingStorage",
    "SurfaceScanMeshStorage",
    "SurfaceScanPointCloudStorage",
    # visible light
    "VLEndoscopicImageStorage",
    "VideoEndoscopicImageStorage",
    "VLMicroscopicImageStorage",
    "VideoMicroscopicImageStorage",
    "VLSlideCoordinatesMicroscopicImageStorage",
    "VLPhotographicImageStorage",
    "VideoPhotographicImageStorage",
    "OphthalmicPhotography8BitImageStorage",
    "OphthalmicPhotography16BitImageStorage",
    "StereometricRelationshipStorage",
    "OphthalmicTomographyImageStorage",
    "VLWholeSlideMicroscopyImageStorage",
    "DermoscopicPhotographyImageStorage",
    # structured reports and documents
    "BasicTextSRStorage",
    "EnhancedSRStorage",
    "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage",
    "ExtensibleSRStorage",
    "ProcedureLogStorage",
    "MammographyCADSRStorage",
    "KeyObjectSelectionDocumentStorage",
    "ChestCADSRStorage",
    "XRayRadiationDoseSRStorage",
    "RadiopharmaceuticalRadiationDoseSRStorage",
    "ColonCADSRStorage",
    "ImplantationPlanSRStorage",
    "AcquisitionContextSRStorage",
    "SimplifiedAdultEchoSRStorage",
    "PatientRadiationDoseSRStorage",
    "EnhancedXRayRadiationDoseSRStorage",
    "ContentAssessmentResultsStorage",
    "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage",
    "EncapsulatedSTLStorage",
    "EncapsulatedOBJStorage",
    "EncapsulatedMTLStorage",
    "BasicStructuredDisplayStorage",
    # radiotherapy
    "RTImageStorage",
    "RTDoseStorage",
    "RTStructureSetStorage",
    "RTBeamsTreatmentRecordStorage",
    "RTPlanStorage",
    "RTBrachyTreatmentRecordStorage",
    "RTTreatmentSummaryRecordStorage",
    "RTIonPlanStorage",
    "RTIonBeamsTreatmentRecordStorage",
)


def _storage_uids(keywords: Iterable[str]) -> tuple[str, ...]:
    from pydicom._uid_dict import UID_dictionary

    by_keyword = {entry[4]: uid for uid, entry in UID_dictionary.items()}
    return tuple(by_keyword[keyword] for keyword in keywords if keyword in by_keyword)


#: The Storage SOP Classes :func:`retrieve_contexts` proposes when given none.
DEFAULT_RETRIEVE_STORAGE_CLASSES: tuple[str, ...] = _storage_uids(_DEFAULT_STORAGE_KEYWORDS)


def retrieve_contexts(
    model_uids: Sequence[str] | str,
    storage_sop_classes: Sequence[str] | None = None,
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
    *,
    model_transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
) -> list[PresentationContext]:
    """Contexts for C-GET: the Q/R ``model_uids`` plus Storage classes with the SCP role.

    The storage contexts propose SCP/SCU role selection with ``scp_role=True`` and
    ``scu_role=False`` (PS3.4 C.4.3.1.1, PS3.7 D.3.3.4): the retrieving SCU is the
    Storage SCP of the sub-operations and does not send C-STOREs itself on them.
    ``model_uids`` may be model names (see :func:`query_model`; a name gives its GET
    model). ``storage_sop_classes`` defaults to :data:`DEFAULT_RETRIEVE_STORAGE_CLASSES`,
    trimmed so that everything fits in 128 contexts; an explicit list that does not fit
    is a ValueError. ``transfer_syntaxes`` are those accepted for received instances.
    """
    names = [model_uids] if isinstance(model_uids, str) else list(model_uids)
    models: list[str] = []
    for name in names:
        uid = name if name[:1].isdigit() else query_model(name, "get")
        if uid not in models:
            models.append(uid)
    room = MAX_PRESENTATION_CONTEXTS - len(models)
    if storage_sop_classes is None:
        storage = list(DEFAULT_RETRIEVE_STORAGE_CLASSES[: max(room, 0)])
    else:
        storage = list(dict.fromkeys(storage_sop_classes))
        if len(storage) > room:
            raise ValueError(
                f"{len(models)} model(s) and {len(storage)} storage SOP classes need "
                f"{len(models) + len(storage)} presentation contexts; at most "
                f"{MAX_PRESENTATION_CONTEXTS} can be proposed"
            )
    contexts = [PresentationContext(uid, tuple(model_transfer_syntaxes)) for uid in models]
    contexts.extend(
        PresentationContext(uid, tuple(transfer_syntaxes), scu_role=False, scp_role=True)
        for uid in storage
        if uid not in models
    )
    return contexts


# ---------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class FindResponse:
    """One C-FIND response: its status and, while Pending, the matching identifier.

    Unpacks as ``status, identifier`` (typed as Any then; the attributes keep their
    types).
    """

    status: Status
    identifier: Dataset | None
    command: Command

    def __iter__(self) -> Iterator[Any]:
        yield self.status
        yield self.identifier


@dataclass(frozen=True, slots=True)
class RetrieveResponse:
    """One C-GET or C-MOVE response: status and sub-operation counts.

    Counts are None when the response leaves them out (PS3.7 9.1.3/9.1.4: remaining is
    only in Pending responses). ``failed_sop_instance_uids`` come from the identifier's
    Failed SOP Instance UID List (0008,0058), sent with a final status other than Success.
    """

    status: Status
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None
    failed_sop_instance_uids: tuple[str, ...]
    identifier: Dataset | None
    command: Command


def _status(command: Command, service: str) -> Status:
    value = command.get("Status")
    return Status(value if isinstance(value, int) else MISSING_STATUS, service)


#: A Deflated response identifier is not inflated beyond this many bytes.
RESPONSE_INFLATE_LIMIT = 64 * 1024 * 1024


def _identifier(message: AssembledMessage, transfer_syntax: str) -> Dataset | None:
    if not message.command.has_dataset or not message.dataset:
        return None
    return decode_dataset(message.dataset, transfer_syntax, inflate_limit=RESPONSE_INFLATE_LIMIT)


def _count(command: Command, keyword: str) -> int | None:
    value = command.get(keyword)
    return value if isinstance(value, int) else None


def failed_uid_list(identifier: Dataset | None) -> tuple[str, ...]:
    """The Failed SOP Instance UID List (0008,0058) of a response identifier, as a tuple."""
    if identifier is None:
        return ()
    value = identifier.get("FailedSOPInstanceUIDList")
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part for part in value.split("\\") if part)
    return tuple(str(part) for part in value if part)


def find_response(message: AssembledMessage, transfer_syntax: str) -> FindResponse:
    """Convert a received C-FIND-RSP (identifier decoded in ``transfer_syntax``)."""
    command = message.command
    return FindResponse(_status(command, "C-FIND"), _identifier(message, transfer_syntax), command)


def retrieve_response(
    message: AssembledMessage, transfer_syntax: str, service: str = "C-MOVE"
) -> RetrieveResponse:
    """Convert a received C-GET-RSP or C-MOVE-RSP."""
    command = message.command
    identifier = _identifier(message, transfer_syntax)
    return RetrieveResponse(
        status=_status(command, service),
        remaining=_count(command, "NumberOfRemainingSuboperations"),
        completed=_count(command, "NumberOfCompletedSuboperations"),
        failed=_count(command, "NumberOfFailedSuboperations"),
        warning=_count(command, "NumberOfWarningSuboperations"),
        failed_sop_instance_uids=failed_uid_list(identifier),
        identifier=identifier,
        command=command,
    )


def _check_priority(priority: int) -> int:
    try:
        return int(Priority(priority))
    except ValueError:
        raise ValueError(
            f"priority must be 0 (medium), 1 (high) or 2 (low), not {priority!r}"
        ) from None


# ---------------------------------------------------------------------- C-GET bookkeeping


class _GetSlot:
    """Installs the C-STORE handler of one C-GET for as long as the C-GET runs.

    C-STORE sub-operations do not say which C-GET they belong to, so only one C-GET
    may run on an association at a time; a second one is refused when it starts.
    """

    def __init__(self, assoc: Association, handler: StoreHandler | None) -> None:
        self.assoc = assoc
        self.handler = handler
        self.message_id = 0
        self._previous: object = None
        self._installed = False

    def start(self) -> None:
        assoc = self.assoc
        running = assoc._running_get
        if running is not None:
            raise LocalProtocolError(
                f"a C-GET (message ID {running.message_id}) is already running on this "
                "association; C-STORE sub-operations cannot be attributed to one of two "
                "C-GETs, so run them one after the other or on separate associations"
            )
        assoc._running_get = self
        if self.handler is not None:
            field = int(CommandField.C_STORE_RQ)
            self._previous = assoc.request_handlers.get(field)
            assoc.request_handlers[field] = store_service(self.handler)
            self._installed = True

    def finish(self) -> None:
        assoc = self.assoc
        if assoc._running_get is not self:
            return
        assoc._running_get = None
        if self._installed:
            self._installed = False
            field = int(CommandField.C_STORE_RQ)
            if self._previous is None:
                assoc.request_handlers.pop(field, None)
            else:
                assoc.request_handlers[field] = self._previous  # type: ignore[assignment]


@dataclass(eq=False)
class _Delivery:
    request: StoreRequest
    done: anyio.Event
    status: int = STORE_NOT_TAKEN

    def complete(self, status: int) -> None:
        if not self.done.is_set():
            self.status = status
            self.done.set()


class ReceivedInstances:
    """The instances a C-GET brings back, as an async iterator (see ``get_instances``).

    Each C-STORE sub-operation is answered only when the consumer is done with its
    instance, that is when it asks for the next one or leaves the block: Success
    then, or :data:`STORE_CONSUMER_FAILED` if the block raised. Until then the peer
    waits for the C-STORE-RSP, so a slow consumer slows the retrieve down and at most
    one instance (per outstanding sub-operation) is held in memory. Instances the
    consumer never took (it left early) are refused with :data:`STORE_NOT_TAKEN`.
    """

    def __init__(self) -> None:
        send, receive = anyio.create_memory_object_stream[_Delivery](0)
        self._send = send
        self._receive = receive
        self._current: _Delivery | None = None
        self._pending: set[_Delivery] = set()
        self._error: BaseException | None = None
        self._error_raised = False
        #: The final C-GET response; None until it arrived (or when the C-GET was
        #: cancelled before the peer answered).
        self.response: RetrieveResponse | None = None
        #: The latest C-GET response (Pending ones carry the progress counts).
        self.progress: RetrieveResponse | None = None
        #: How many instances were handed to the consumer.
        self.received = 0

    def __aiter__(self) -> ReceivedInstances:
        return self

    async def __anext__(self) -> StoreRequest:
        self._finish_current(0x0000)
        try:
            delivery = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._error is not None:
                self._error_raised = True
                raise self._error from None
            raise StopAsyncIteration from None
        self._current = delivery
        self.received += 1
        return delivery.request

    def _finish_current(self, status: int) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.complete(status)
            self._pending.discard(current)

    async def _on_store(self, request: StoreRequest) -> int:
        delivery = _Delivery(request, anyio.Event())
        self._pending.add(delivery)
        try:
            await self._send.send(delivery)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._pending.discard(delivery)
            return STORE_NOT_TAKEN
        await delivery.done.wait()
        return delivery.status

    async def _run(self, operation: PendingResponses[RetrieveResponse]) -> None:
        try:
            async for response in operation:
                self.progress = response
                if not response.status.is_pending:
                    self.response = response
        except Exception as exc:
            self._error = exc
        finally:
            self._send.close()

    def _close(self, consumer_ok: bool) -> None:
        self._finish_current(0x0000 if consumer_ok else STORE_CONSUMER_FAILED)
        self._receive.close()
        for delivery in list(self._pending):
            delivery.complete(STORE_NOT_TAKEN)
        self._pending.clear()


@asynccontextmanager
async def _receive_instances(
    operation: PendingResponses[RetrieveResponse], instances: ReceivedInstances
) -> AsyncIterator[ReceivedInstances]:
    error: BaseException | None = None
    try:
        await operation.__aenter__()
        async with anyio.create_task_group() as tg:
            tg.start_soon(instances._run, operation)
            try:
                yield instances
            except BaseException as exc:
                error = exc
            finally:
                instances._close(error is None)
                if not operation.done:
                    # Ask the peer to stop; the reader task collects the final response
                    # (or the association's failure, which it reports).
                    with anyio.CancelScope(shield=True), suppress(DicomNetworkError):
                        await operation.cancel()
    finally:
        await operation.aclose()
    if error is not None:
        raise error
    if instances._error is not None and not instances._error_raised:
        raise instances._error


# ---------------------------------------------------------------------- the mixin


class QueryRetrieveOperations:
    """Association methods for this service (mixed into :class:`Association`)."""

    #: The C-GET running on this association, if any (see ``_GetSlot``).
    _running_get: _GetSlot | None = None

    def _qr_association(self) -> Association:
        # The mixin is only ever used as a base of Association.
        return cast("Association", self)

    def _qr_request(
        self,
        field: CommandField,
        uid: str,
        identifier: Dataset,
        priority: int,
        **elements: CommandValue,
    ) -> tuple[NegotiatedContext, Command, bytes]:
        """The accepted context, the C-xxx-RQ command and the encoded identifier."""
        assoc = self._qr_association()
        context = assoc.context_for(uid)
        command = make_command(
            field,
            has_dataset=True,
            MessageID=assoc.next_message_id(),
            AffectedSOPClassUID=uid,
            Priority=_check_priority(priority),
            **elements,
        )
        return context, command, encode_dataset(identifier, context.transfer_syntax)

    def find(
        self,
        identifier: Dataset,
        *,
        model: str = sop_classes.STUDY_ROOT_FIND,
        priority: int = 0,
    ) -> PendingResponses[FindResponse]:
        """C-FIND: iterate over ``(status, identifier)`` responses (PS3.4 C.4.1).

        ``model`` is the information model's FIND SOP Class UID or a name
        (``patient``, ``study``, ``patient-study``, ``worklist``). Pending responses carry
        a match; the last one has the final status and usually no identifier. Raises
        NegotiationError when no context for the model was accepted.
        """
        assoc = self._qr_association()
        uid = query_model(model, "find")
        context, command, data = self._qr_request(CommandField.C_FIND_RQ, uid, identifier, priority)
        syntax = context.transfer_syntax
        return PendingResponses(
            assoc,
            context.context_id,
            command,
            data,
            lambda message: find_response(message, syntax),
            "C-FIND response",
        )

    def move(
        self,
        identifier: Dataset,
        destination: str,
        *,
        model: str = sop_classes.STUDY_ROOT_MOVE,
        priority: int = 0,
    ) -> PendingResponses[RetrieveResponse]:
        """C-MOVE: have the peer send the matching instances to AE ``destination``.

        Iterates over :class:`RetrieveResponse` progress reports, the final one last
        (PS3.4 C.4.2). An unknown destination gives a final 0xA801 response.
        """
        from aionetdicom.ae import validate_ae_title

        assoc = self._qr_association()
        uid = query_model(model, "move")
        destination = validate_ae_title(destination, "move destination")
        context, command, data = self._qr_request(
            CommandField.C_MOVE_RQ, uid, identifier, priority, MoveDestination=destination
        )
        syntax = context.transfer_syntax
        return PendingResponses(
            assoc,
            context.context_id,
            command,
            data,
            lambda message: retrieve_response(message, syntax, "C-MOVE"),
            "C-MOVE response",
        )

    def get(
        self,
        identifier: Dataset,
        *,
        model: str = sop_classes.STUDY_ROOT_GET,
        priority: int = 0,
        on_store: StoreHandler | None = None,
    ) -> PendingResponses[RetrieveResponse]:
        """C-GET: the peer sends the matching instances back on this association.

        ``on_store(request) -> status`` answers each C-STORE sub-operation while the
        C-GET runs (it is installed when the request is sent and removed after the final
        response). Without it the AE's own C-STORE service, if any, answers them. Only
        one C-GET may run on an association at a time (LocalProtocolError otherwise).
        Propose the storage contexts with :func:`retrieve_contexts`.
        """
        return self._get(identifier, model, priority, on_store)

    def get_instances(
        self,
        identifier: Dataset,
        *,
        model: str = sop_classes.STUDY_ROOT_GET,
        priority: int = 0,
    ) -> AbstractAsyncContextManager[ReceivedInstances]:
        """C-GET with the received instances as an async iterator::

            async with assoc.get_instances(query) as instances:
                async for instance in instances:
                    await instance.save_to(folder)
            print(instances.response.completed)

        Each C-STORE-RSP is sent when the consumer is done with the instance (it asks
        for the next one or leaves the block), so a slow consumer slows the peer down.
        Leaving the block early sends C-CANCEL and waits for the final response.
        """
        instances = ReceivedInstances()
        operation = self._get(identifier, model, priority, instances._on_store)
        return _receive_instances(operation, instances)

    def _get(
        self,
        identifier: Dataset,
        model: str,
        priority: int,
        on_store: StoreHandler | None,
    ) -> PendingResponses[RetrieveResponse]:
        assoc = self._qr_association()
        uid = query_model(model, "get")
        context, command, data = self._qr_request(CommandField.C_GET_RQ, uid, identifier, priority)
        syntax = context.transfer_syntax
        slot = _GetSlot(assoc, on_store)
        slot.message_id = int(command["MessageID"])  # type: ignore[arg-type]
        return PendingResponses(
            assoc,
            context.context_id,
            command,
            data,
            lambda message: retrieve_response(message, syntax, "C-GET"),
            "C-GET response",
            on_start=slot.start,
            on_finish=slot.finish,
        )
