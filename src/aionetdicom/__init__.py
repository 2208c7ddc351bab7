"""aionetdicom: asyncio-native DICOM networking (anyio, so trio works too).

Start with :class:`AE`: ``AE.associate(...)`` for an SCU, ``AE.serve(...)`` for an SCP.
"""

from aionetdicom import contexts, sop_classes, tls
from aionetdicom.acse.contexts import is_valid_uid
from aionetdicom.acse.user_identity import UserIdentity
from aionetdicom.ae import AE, validate_ae_title
from aionetdicom.association import Association, AssociationEvent, Timeouts
from aionetdicom.dimse.status import Status, StatusCategory
from aionetdicom.errors import (
    ACSETimeout,
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    ConnectionClosed,
    ConnectTimeout,
    DicomNetworkError,
    DicomTimeoutError,
    DIMSETimeout,
    LocalProtocolError,
    NegotiationError,
    NetworkTimeout,
    PDUDecodeError,
    ProtocolError,
    TLSError,
)
from aionetdicom.handlers import HandlerRegistry, Service
from aionetdicom.observe import Metrics, Observer, OperationRecord
from aionetdicom.pool import AssociationPool, PoolClosed, PoolStatistics, PoolTimeout
from aionetdicom.server import Server
from aionetdicom.services.normalized import EventReportRequest, NRequest, NResponse
from aionetdicom.services.qr_scp import (
    EncodedIdentifier,
    FindRequest,
    GetRequest,
    MoveRequest,
    StoredInstance,
)
from aionetdicom.services.query_retrieve import FindResponse, RetrieveResponse
from aionetdicom.services.storage import StoreRequest
from aionetdicom.services.verification import EchoRequest

__version__ = "0.1.0.dev0"

__all__ = [
    "AE",
    "ACSETimeout",
    "Association",
    "AssociationAborted",
    "AssociationError",
    "AssociationEvent",
    "AssociationPool",
    "AssociationRejected",
    "ConnectTimeout",
    "ConnectionClosed",
    "DIMSETimeout",
    "DicomNetworkError",
    "DicomTimeoutError",
    "EchoRequest",
    "EncodedIdentifier",
    "EventReportRequest",
    "FindRequest",
    "FindResponse",
    "GetRequest",
    "HandlerRegistry",
    "LocalProtocolError",
    "Metrics",
    "MoveRequest",
    "NRequest",
    "NResponse",
    "NegotiationError",
    "NetworkTimeout",
    "Observer",
    "OperationRecord",
    "PDUDecodeError",
    "PoolClosed",
    "PoolStatistics",
    "PoolTimeout",
    "ProtocolError",
    "RetrieveResponse",
    "Server",
    "Service",
    "Status",
    "StatusCategory",
    "StoreRequest",
    "StoredInstance",
    "TLSError",
    "Timeouts",
    "UserIdentity",
    "__version__",
    "contexts",
    "is_valid_uid",
    "sop_classes",
    "tls",
    "validate_ae_title",
]
