"""aionetdicom: asyncio-native DICOM networking (anyio, so trio works too).

Start with :class:`AE`: ``AE.associate(...)`` for an SCU, ``AE.serve(...)`` for an SCP.
"""

from aionetdicom import contexts, tls
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
from aionetdicom.pool import AssociationPool, PoolClosed, PoolStatistics, PoolTimeout
from aionetdicom.server import Server
from aionetdicom.services.normalized import NRequest, NResponse
from aionetdicom.services.qr_scp import FindRequest, GetRequest, MoveRequest
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
    "FindRequest",
    "FindResponse",
    "GetRequest",
    "HandlerRegistry",
    "LocalProtocolError",
    "MoveRequest",
    "NRequest",
    "NResponse",
    "NegotiationError",
    "NetworkTimeout",
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
    "TLSError",
    "Timeouts",
    "UserIdentity",
    "__version__",
    "contexts",
    "tls",
    "validate_ae_title",
]
