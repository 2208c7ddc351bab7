"""Encode PDUs to bytes and decode them back, byte-exact to PS3.8 9.3.

Decoding treats every length as hostile: a length that runs past its container, a
missing mandatory item or a malformed field raises :class:`PDUDecodeError`, and no
buffer is ever allocated from a declared length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from aionetdicom.errors import PDUDecodeError, UnknownPDUType
from aionetdicom.pdu.constants import PDU_HEADER_LENGTH, ItemType, PDUType
from aionetdicom.pdu.items import (
    AsynchronousOperationsWindow,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)
from aionetdicom.pdu.pdus import (
    PDU,
    PDV,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    Buffer,
    PDataTF,
)

_PDU_HEADER = struct.Struct(">BBL")
_ITEM_HEADER = struct.Struct(">BBH")
_PDV_HEADER = struct.Struct(">LBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")

_P_DATA_TF = int(PDUType.P_DATA_TF)
_ASSOCIATE_TYPES = frozenset((int(PDUType.A_ASSOCIATE_RQ), int(PDUType.A_ASSOCIATE_AC)))
_FIXED4_TYPES = frozenset(
    int(t)
    for t in (PDUType.A_ASSOCIATE_RJ, PDUType.A_RELEASE_RQ, PDUType.A_RELEASE_RP, PDUType.A_ABORT)
)

#: The fixed part of A-ASSOCIATE-RQ/AC after the PDU header: version, reserved,
#: called AE, calling AE, 32 reserved bytes.
_ASSOCIATE_FIXED = struct.Struct(">HH16s16s32s")

# --------------------------------------------------------------------------- encoding


def _encode_text(value: str, what: str) -> bytes:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} must be ASCII") from None


def _encode_ae_title(title: str, what: str, *, echoed: bool = False) -> bytes:
    # In an A-ASSOCIATE-AC the titles only echo the request's (PS3.8 9.3.3): any value
    # up to 16 characters goes, as it does on decoding.
    raw = _encode_text(title, what)
    if len(raw) > 16 or not (echoed or raw.strip(b" ")):
        raise ValueError(f"{what} {title!r} must be 1 to 16 characters, not all spaces")
    return raw.ljust(16, b" ")


def _item(item_type: int, body: bytes, *, second_byte: int = 0) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} body of {len(body)} bytes exceeds 65535")
    return _ITEM_HEADER.pack(item_type, second_byte, len(body)) + body


def _u16_prefixed(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"field of {len(value)} bytes exceeds 65535")
    return _U16.pack(len(value)) + value


def _encode_presentation_context_rq(context: PresentationContextRQ) -> bytes:
    body = [
        bytes((context.context_id, 0, 0, 0)),
        _item(ItemType.ABSTRACT_SYNTAX, _encode_text(context.abstract_syntax, "abstract syntax")),
    ]
    body.extend(
        _item(ItemType.TRANSFER_SYNTAX, _encode_text(ts, "transfer syntax"))
        for ts in context.transfer_syntaxes
    )
    return _item(ItemType.PRESENTATION_CONTEXT_RQ, b"".join(body))


def _encode_presentation_context_ac(context: PresentationContextAC) -> bytes:
    body = bytes((context.context_id, 0, context.result, 0)) + _item(
        ItemType.TRANSFER_SYNTAX, _encode_text(context.transfer_syntax, "transfer syntax")
    )
    return _item(ItemType.PRESENTATION_CONTEXT_AC, body)


def _encode_user_identity(identity: UserIdentityRQ | UserIdentityAC) -> bytes:
    if isinstance(identity, UserIdentityAC):
        return _item(ItemType.USER_IDENTITY_AC, _u16_prefixed(identity.server_response))
    body = (
        bytes((identity.identity_type, int(identity.positive_response_requested)))
        + _u16_prefixed(identity.primary_field)
        + _u16_prefixed(identity.secondary_field)
    )
    return _item(ItemType.USER_IDENTITY_RQ, body)


def _encode_user_information(info: UserInformation) -> bytes:
    parts: list[bytes] = []
    if info.maximum_length is not None:
        parts.append(_item(ItemType.MAXIMUM_LENGTH, _U32.pack(info.maximum_length)))
    if info.implementation_class_uid is not None:
        uid = _encode_text(info.implementation_class_uid, "implementation class UID")
        parts.append(_item(ItemType.IMPLEMENTATION_CLASS_UID, uid))
    if info.implementation_version_name is not None:
        name = _encode_text(info.implementation_version_name, "implementation version name")
        parts.append(_item(ItemType.IMPLEMENTATION_VERSION_NAME, name))
    window = info.asynchronous_operations_window
    if window is not None:
        body = _U16.pack(window.maximum_invoked) + _U16.pack(window.maximum_performed)
        parts.append(_item(ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW, body))
    for role in info.role_selections:
        body = _u16_prefixed(_encode_text(role.sop_class_uid, "SOP class UID")) + bytes(
            (int(role.scu_role), int(role.scp_role))
        )
        parts.append(_item(ItemType.ROLE_SELECTION, body))
    for ext in info.sop_class_extended:
        body = (
            _u16_prefixed(_encode_text(ext.sop_class_uid, "SOP class UID"))
            + ext.service_class_application_information
        )
        parts.append(_item(ItemType.SOP_CLASS_EXTENDED_NEGOTIATION, body))
    for common in info.sop_class_common_extended:
        related = b"".join(
            _u16_prefixed(_encode_text(uid, "related general SOP class UID"))
            for uid in common.related_general_sop_class_uids
        )
        body = (
            _u16_prefixed(_encode_text(common.sop_class_uid, "SOP class UID"))
            + _u16_prefixed(_encode_text(common.service_class_uid, "service class UID"))
            + _u16_prefixed(related)
        )
        parts.append(_item(ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION, body))
    if info.user_identity is not None:
        parts.append(_encode_user_identity(info.user_identity))
    parts.extend(_item(unknown.item_type, unknown.data) for unknown in info.unknown_items)
    return _item(ItemType.USER_INFORMATION, b"".join(parts))


def _encode_associate(pdu: AAssociateRQ | AAssociateAC, pdu_type: PDUType) -> bytes:
    echoed = pdu_type == PDUType.A_ASSOCIATE_AC
    fixed = _ASSOCIATE_FIXED.pack(
        pdu.protocol_version,
        0,
        _encode_ae_title(pdu.called_ae_title, "called AE title", echoed=echoed),
        _encode_ae_title(pdu.calling_ae_title, "calling AE title", echoed=echoed),
        b"\x00" * 32,
    )
    parts = [
        fixed,
        _item(
            ItemType.APPLICATION_CONTEXT,
            _encode_text(pdu.application_context_name, "application context name"),
        ),
    ]
    if isinstance(pdu, AAssociateRQ):
        parts.extend(_encode_presentation_context_rq(pc) for pc in pdu.presentation_contexts)
    else:
        parts.extend(_encode_presentation_context_ac(pc) for pc in pdu.presentation_contexts)
    parts.append(_encode_user_information(pdu.user_information))
    body = b"".join(parts)
    return _PDU_HEADER.pack(pdu_type, 0, len(body)) + body


def encode_pdv_header(pdv_length: int, context_id: int, is_command: bool, is_last: bool) -> bytes:
    """The 6-byte header of a PDV item whose data is ``pdv_length`` bytes long."""
    control = (0x01 if is_command else 0x00) | (0x02 if is_last else 0x00)
    return _PDV_HEADER.pack(pdv_length + 2, context_id, control)


def encode_pdata_header(body_length: int) -> bytes:
    """The 6-byte header of a P-DATA-TF PDU whose PDV items total ``body_length`` bytes."""
    return _PDU_HEADER.pack(PDUType.P_DATA_TF, 0, body_length)


def iter_pdata_chunks(pdu: PDataTF) -> Iterator[Buffer]:
    """The buffers that make up an encoded P-DATA-TF, without copying PDV data."""
    total = sum(len(pdv.data) + 6 for pdv in pdu.pdvs)
    yield encode_pdata_header(total)
    for pdv in pdu.pdvs:
        yield encode_pdv_header(len(pdv.data), pdv.context_id, pdv.is_command, pdv.is_last)
        yield pdv.data


def encode_pdu(pdu: PDU) -> bytes:
    """Encode any PDU to its exact wire bytes."""
    if isinstance(pdu, PDataTF):
        return b"".join(iter_pdata_chunks(pdu))
    if isinstance(pdu, AAssociateRQ):
        return _encode_associate(pdu, PDUType.A_ASSOCIATE_RQ)
    if isinstance(pdu, AAssociateAC):
        return _encode_associate(pdu, PDUType.A_ASSOCIATE_AC)
    if isinstance(pdu, AAssociateRJ):
        return _PDU_HEADER.pack(PDUType.A_ASSOCIATE_RJ, 0, 4) + bytes(
            (0, pdu.result, pdu.source, pdu.reason)
        )
    if isinstance(pdu, AReleaseRQ):
        return _PDU_HEADER.pack(PDUType.A_RELEASE_RQ, 0, 4) + b"\x00" * 4
    if isinstance(pdu, AReleaseRP):
        return _PDU_HEADER.pack(PDUType.A_RELEASE_RP, 0, 4) + b"\x00" * 4
    if isinstance(pdu, AAbort):
        return _PDU_HEADER.pack(PDUType.A_ABORT, 0, 4) + bytes((0, 0, pdu.source, pdu.reason))
    raise TypeError(f"not a PDU: {pdu!r}")


# --------------------------------------------------------------------------- decoding


def _decode_text(raw: Buffer, what: str) -> str:
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise PDUDecodeError(f"{what} is not ASCII: {bytes(raw)[:64]!r}") from None
    return text.rstrip("\x00 ")


#: bytes.translate table keeping ASCII and turning every other byte into "?".
_ASCII_OR_QUESTION_MARK = bytes(range(128)) + b"?" * 128


def _decode_ae_title(raw: bytes, what: str, *, echoed: bool) -> str:
    """An AE title as ``_encode_ae_title`` accepts it back (so it can be echoed)."""
    title = raw.strip(b" \x00")
    if echoed:
        # A-ASSOCIATE-AC: the field "shall not be tested when received" (PS3.8 9.3.3).
        return title.translate(_ASCII_OR_QUESTION_MARK).decode("ascii")
    if not title:
        raise PDUDecodeError(f"{what} is blank (PS3.8 9.3.2 forbids an all-space title)")
    if not title.isascii():
        raise PDUDecodeError(f"{what} is not ASCII: {raw!r}")
    return title.decode("ascii")


def _iter_items(data: memoryview, where: str) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (type, second header byte, body) of each item in ``data``."""
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < 4:
            raise PDUDecodeError(
                f"{where}: {end - offset} trailing byte(s) too short for an item header"
            )
        item_type, second, length = _ITEM_HEADER.unpack_from(data, offset)
        offset += 4
        if length > end - offset:
            raise PDUDecodeError(
                f"{where}: item 0x{item_type:02X} declares {length} bytes but only "
                f"{end - offset} remain"
            )
        yield item_type, second, data[offset : offset + length]
        offset += length


def _split_u16_prefixed(data: memoryview, offset: int, what: str) -> tuple[memoryview, int]:
    if len(data) - offset < 2:
        raise PDUDecodeError(f"{what}: length field missing")
    (length,) = _U16.unpack_from(data, offset)
    offset += 2
    if length > len(data) - offset:
        raise PDUDecodeError(
            f"{what}: declares {length} bytes but only {len(data) - offset} remain"
        )
    return data[offset : offset + length], offset + length


def _decode_presentation_context_rq(body: memoryview) -> PresentationContextRQ:
    if len(body) < 4:
        raise PDUDecodeError("presentation context item (RQ) shorter than 4 bytes")
    context_id = body[0]
    abstract: str | None = None
    transfer: list[str] = []
    for item_type, _, sub in _iter_items(body[4:], f"presentation context {context_id}"):
        if item_type == ItemType.ABSTRACT_SYNTAX:
            if abstract is not None:
                raise PDUDecodeError(
                    f"presentation context {context_id} has more than one abstract syntax"
                )
            abstract = _decode_text(sub, "abstract syntax name")
        elif item_type == ItemType.TRANSFER_SYNTAX:
            transfer.append(_decode_text(sub, "transfer syntax name"))
        else:
            raise PDUDecodeError(
                f"presentation context {context_id} holds unexpected sub-item 0x{item_type:02X}",
                abort_reason=5,
            )
    if abstract is None:
        raise PDUDecodeError(f"presentation context {context_id} has no abstract syntax")
    return PresentationContextRQ(context_id, abstract, tuple(transfer))


def _decode_presentation_context_ac(body: memoryview) -> PresentationContextAC:
    if len(body) < 4:
        raise PDUDecodeError("presentation context item (AC) shorter than 4 bytes")
    context_id = body[0]
    result = body[2]
    transfer: str | None = None
    for item_type, _, sub in _iter_items(body[4:], f"presentation context {context_id}"):
        if item_type != ItemType.TRANSFER_SYNTAX:
            raise PDUDecodeError(
                f"presentation context {context_id} (AC) holds unexpected sub-item "
                f"0x{item_type:02X}",
                abort_reason=5,
            )
        if transfer is not None:
            raise PDUDecodeError(
                f"presentation context {context_id} (AC) has more than one transfer syntax"
            )
        transfer = _decode_text(sub, "transfer syntax name")
    if transfer is None and result == 0:
        raise PDUDecodeError(f"accepted presentation context {context_id} has no transfer syntax")
    return PresentationContextAC(context_id, result, transfer or "")


def _decode_user_identity_rq(body: memoryview) -> UserIdentityRQ:
    if len(body) < 2:
        raise PDUDecodeError("user identity item shorter than 2 bytes")
    primary, offset = _split_u16_prefixed(body, 2, "user identity primary field")
    secondary: memoryview | bytes = b""
    if offset < len(body):
        secondary, offset = _split_u16_prefixed(body, offset, "user identity secondary field")
    if offset != len(body):
        raise PDUDecodeError("user identity item has trailing bytes")
    return UserIdentityRQ(body[0], bool(body[1]), bytes(primary), bytes(secondary))


def _decode_user_information(body: memoryview) -> UserInformation:
    maximum_length: int | None = None
    class_uid: str | None = None
    version_name: str | None = None
    window: AsynchronousOperationsWindow | None = None
    roles: list[RoleSelection] = []
    extended: list[SOPClassExtendedNegotiation] = []
    common: list[SOPClassCommonExtendedNegotiation] = []
    identity: UserIdentityRQ | UserIdentityAC | None = None
    unknown: list[UnknownSubItem] = []
    for item_type, _, sub in _iter_items(body, "user information"):
        if item_type == ItemType.MAXIMUM_LENGTH:
            if len(sub) != 4:
                raise PDUDecodeError(f"maximum length sub-item has {len(sub)} bytes, not 4")
            (maximum_length,) = _U32.unpack(sub)
        elif item_type == ItemType.IMPLEMENTATION_CLASS_UID:
            class_uid = _decode_text(sub, "implementation class UID")
        elif item_type == ItemType.IMPLEMENTATION_VERSION_NAME:
            version_name = _decode_text(sub, "implementation version name")
        elif item_type == ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW:
            if len(sub) != 4:
                raise PDUDecodeError(f"asynchronous operations window has {len(sub)} bytes, not 4")
            window = AsynchronousOperationsWindow(*struct.unpack(">HH", sub))
        elif item_type == ItemType.ROLE_SELECTION:
            uid, offset = _split_u16_prefixed(sub, 0, "role selection SOP class UID")
            if len(sub) - offset != 2:
                raise PDUDecodeError("role selection sub-item must end with two role bytes")
            roles.append(
                RoleSelection(
                    _decode_text(uid, "role selection SOP class UID"),
                    bool(sub[offset]),
                    bool(sub[offset + 1]),
                )
            )
        elif item_type == ItemType.SOP_CLASS_EXTENDED_NEGOTIATION:
            uid, offset = _split_u16_prefixed(sub, 0, "extended negotiation SOP class UID")
            extended.append(
                SOPClassExtendedNegotiation(
                    _decode_text(uid, "extended negotiation SOP class UID"), bytes(sub[offset:])
                )
            )
        elif item_type == ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION:
            common.append(_decode_common_extended(sub))
        elif item_type == ItemType.USER_IDENTITY_RQ:
            identity = _decode_user_identity_rq(sub)
        elif item_type == ItemType.USER_IDENTITY_AC:
            response, offset = _split_u16_prefixed(sub, 0, "user identity server response")
            if offset != len(sub):
                raise PDUDecodeError("user identity response has trailing bytes")
            identity = UserIdentityAC(bytes(response))
        else:
            unknown.append(UnknownSubItem(item_type, bytes(sub)))
    return UserInformation(
        maximum_length=maximum_length,
        implementation_class_uid=class_uid,
        implementation_version_name=version_name,
        asynchronous_operations_window=window,
        role_selections=tuple(roles),
        sop_class_extended=tuple(extended),
        sop_class_common_extended=tuple(common),
        user_identity=identity,
        unknown_items=tuple(unknown),
    )


def _decode_common_extended(sub: memoryview) -> SOPClassCommonExtendedNegotiation:
    what = "common extended negotiation"
    sop_uid, offset = _split_u16_prefixed(sub, 0, f"{what} SOP class UID")
    service_uid, offset = _split_u16_prefixed(sub, offset, f"{what} service class UID")
    related_block, offset = _split_u16_prefixed(sub, offset, f"{what} related classes")
    if offset != len(sub):
        raise PDUDecodeError(f"{what} sub-item has trailing bytes")
    related: list[str] = []
    pos = 0
    while pos < len(related_block):
        uid, pos = _split_u16_prefixed(related_block, pos, f"{what} related general SOP class")
        related.append(_decode_text(uid, "related general SOP class UID"))
    return SOPClassCommonExtendedNegotiation(
        _decode_text(sop_uid, "SOP class UID"),
        _decode_text(service_uid, "service class UID"),
        tuple(related),
    )


def _decode_associate(body: memoryview, pdu_type: int) -> AAssociateRQ | AAssociateAC:
    name = "A-ASSOCIATE-RQ" if pdu_type == PDUType.A_ASSOCIATE_RQ else "A-ASSOCIATE-AC"
    if len(body) < _ASSOCIATE_FIXED.size:
        raise PDUDecodeError(f"{name} of {len(body)} bytes is shorter than its fixed fields")
    version, _, called, calling, _ = _ASSOCIATE_FIXED.unpack_from(body)
    app_context: str | None = None
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    user_info: UserInformation | None = None
    for item_type, _, item in _iter_items(body[_ASSOCIATE_FIXED.size :], name):
        if item_type == ItemType.APPLICATION_CONTEXT:
            if app_context is not None:
                raise PDUDecodeError(f"{name} has more than one application context item")
            app_context = _decode_text(item, "application context name")
        elif item_type == ItemType.PRESENTATION_CONTEXT_RQ and pdu_type == PDUType.A_ASSOCIATE_RQ:
            rq_contexts.append(_decode_presentation_context_rq(item))
        elif item_type == ItemType.PRESENTATION_CONTEXT_AC and pdu_type == PDUType.A_ASSOCIATE_AC:
            ac_contexts.append(_decode_presentation_context_ac(item))
        elif item_type == ItemType.USER_INFORMATION:
            if user_info is not None:
                raise PDUDecodeError(f"{name} has more than one user information item")
            user_info = _decode_user_information(item)
        else:
            raise PDUDecodeError(
                f"{name} holds unexpected item type 0x{item_type:02X}", abort_reason=5
            )
    if app_context is None:
        raise PDUDecodeError(f"{name} has no application context item")
    echoed = pdu_type == PDUType.A_ASSOCIATE_AC
    called_title = _decode_ae_title(called, f"{name} called AE title", echoed=echoed)
    calling_title = _decode_ae_title(calling, f"{name} calling AE title", echoed=echoed)
    if pdu_type == PDUType.A_ASSOCIATE_RQ:
        return AAssociateRQ(
            called_ae_title=called_title,
            calling_ae_title=calling_title,
            presentation_contexts=tuple(rq_contexts),
            user_information=user_info or UserInformation(),
            application_context_name=app_context,
            protocol_version=version,
        )
    return AAssociateAC(
        called_ae_title=called_title,
        calling_ae_title=calling_title,
        presentation_contexts=tuple(ac_contexts),
        user_information=user_info or UserInformation(),
        application_context_name=app_context,
        protocol_version=version,
    )


def _pdv_error(body: memoryview, offset: int) -> PDUDecodeError:
    """Say what is wrong with the PDV item at ``offset`` (the slow path of ``_decode_pdata``)."""
    remaining = len(body) - offset
    if remaining < 6:
        return PDUDecodeError(f"P-DATA-TF: {remaining} trailing byte(s) too short for a PDV header")
    length, _, control = _PDV_HEADER.unpack_from(body, offset)
    if length < 2:
        return PDUDecodeError(f"PDV item length {length} is below the minimum of 2")
    if length > remaining - 4:
        return PDUDecodeError(
            f"PDV item declares {length} bytes but only {remaining - 4} remain in the PDU"
        )
    return PDUDecodeError(f"PDV message control header 0x{control:02X} has reserved bits")


def _decode_pdata(body: memoryview) -> PDataTF:
    # Hot path of every C-STORE: one struct call per PDV and views of ``body``, no copies.
    end = len(body)
    if not end:
        raise PDUDecodeError("P-DATA-TF holds no PDV item")
    unpack_from = _PDV_HEADER.unpack_from
    pdvs: list[PDV] = []
    offset = 0
    while offset < end:
        if end - offset < 6:
            raise _pdv_error(body, offset)
        length, context_id, control = unpack_from(body, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end or control & 0xFC:
            raise _pdv_error(body, offset)
        pdvs.append(PDV(context_id, bool(control & 1), bool(control & 2), body[offset + 6 : stop]))
        offset = stop
    return PDataTF(tuple(pdvs))


def _decode_fixed4(body: memoryview, pdu_type: int) -> PDU:
    if len(body) != 4:
        raise PDUDecodeError(
            f"{PDUType(pdu_type).name} PDU length is {len(body)}, the standard fixes it at 4"
        )
    if pdu_type == PDUType.A_ASSOCIATE_RJ:
        return AAssociateRJ(body[1], body[2], body[3])
    if pdu_type == PDUType.A_RELEASE_RQ:
        return AReleaseRQ()
    if pdu_type == PDUType.A_RELEASE_RP:
        return AReleaseRP()
    return AAbort(body[2], body[3])


def decode_pdu_body(pdu_type: int, body: memoryview) -> PDU:
    """Decode a PDU from its type byte and the ``length`` bytes that follow its header.

    P-DATA-TF PDV data are views of ``body``: pass a read-only view of bytes that are
    never written again and they may be kept without copying.
    """
    if pdu_type == _P_DATA_TF:
        return _decode_pdata(body)
    if pdu_type in _ASSOCIATE_TYPES:
        return _decode_associate(body, pdu_type)
    if pdu_type in _FIXED4_TYPES:
        return _decode_fixed4(body, pdu_type)
    raise UnknownPDUType(f"unknown PDU type 0x{pdu_type:02X}")


def decode_pdu(data: Buffer) -> PDU:
    """Decode exactly one complete PDU (header included); trailing bytes are an error."""
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    if len(view) < PDU_HEADER_LENGTH:
        raise PDUDecodeError(f"{len(view)} byte(s) are too short for a PDU header")
    pdu_type, _, length = _PDU_HEADER.unpack_from(view)
    if pdu_type not in PDUType.__members__.values():
        raise UnknownPDUType(f"unknown PDU type 0x{pdu_type:02X}")
    if length != len(view) - PDU_HEADER_LENGTH:
        raise PDUDecodeError(
            f"PDU declares {length} bytes but {len(view) - PDU_HEADER_LENGTH} follow its header"
        )
    return decode_pdu_body(pdu_type, view[PDU_HEADER_LENGTH:])
