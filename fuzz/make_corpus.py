"""Write seed inputs for the fuzz targets into fuzz/corpus/<target>/ (idempotent).

Seeds are valid encodings made with the library itself, so the fuzzers start from
inputs that get past the first checks. Files are named by content hash, the way
libFuzzer names what it adds, so running this again never duplicates or deletes.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zlib
from pathlib import Path

from pydicom.dataset import Dataset

from aionetdicom.datasets import encode_dataset
from aionetdicom.dimse.command_set import CommandField, encode_command, make_command
from aionetdicom.dimse.packing import pack_message
from aionetdicom.pdu import (
    PDV,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsynchronousOperationsWindow,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    encode_pdu,
)

HERE = Path(__file__).resolve().parent
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
)


def pdu_seeds() -> list[bytes]:
    """One of each PDU, every user information sub-item included, and a short stream."""
    rq = AAssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="FUZZ-SCU",
        presentation_contexts=(
            PresentationContextRQ(1, VERIFICATION, (SYNTAXES[0],)),
            PresentationContextRQ(3, CT_IMAGE, SYNTAXES),
        ),
        user_information=UserInformation(
            maximum_length=16384,
            implementation_class_uid="1.2.826.0.1.3680043.9.1",
            implementation_version_name="FUZZ_1",
            asynchronous_operations_window=AsynchronousOperationsWindow(4, 4),
            role_selections=(RoleSelection(CT_IMAGE, True, True),),
            sop_class_extended=(SOPClassExtendedNegotiation(STUDY_FIND, b"\x01\x01\x00"),),
            sop_class_common_extended=(
                SOPClassCommonExtendedNegotiation(CT_IMAGE, "1.2.840.10008.4.2", ("1.2.3",)),
            ),
            user_identity=UserIdentityRQ(2, True, b"alice", b"s3cret"),
            unknown_items=(UnknownSubItem(0x5A, b"\x00\x01"),),
        ),
    )
    ac = AAssociateAC(
        called_ae_title="ANY-SCP",
        calling_ae_title="FUZZ-SCU",
        presentation_contexts=(
            PresentationContextAC(1, 0, SYNTAXES[0]),
            PresentationContextAC(3, 3, ""),
        ),
        user_information=UserInformation(
            maximum_length=0,
            implementation_class_uid="1.2.3.4",
            user_identity=UserIdentityAC(b"token"),
        ),
    )
    echo = encode_command(make_command(CommandField.C_ECHO_RQ, MessageID=1))
    pdata = PDataTF((PDV(1, True, False, echo[:10]), PDV(1, True, True, echo[10:])))
    singles = [
        encode_pdu(pdu)
        for pdu in (rq, ac, AAssociateRJ(1, 1, 3), pdata, AReleaseRQ(), AReleaseRP(), AAbort(2, 6))
    ]
    return [*singles, singles[0] + singles[3] + singles[4], singles[1] + singles[3] + singles[5]]


def _commands() -> list[bytes]:
    store = make_command(
        CommandField.C_STORE_RQ,
        has_dataset=True,
        MessageID=7,
        Priority=0,
        AffectedSOPClassUID=CT_IMAGE,
        AffectedSOPInstanceUID="1.2.3.4.5.6",
        MoveOriginatorApplicationEntityTitle="MOVER",
        MoveOriginatorMessageID=3,
    )
    find_rsp = make_command(
        CommandField.C_FIND_RSP,
        MessageIDBeingRespondedTo=2,
        Status=0xA900,
        ErrorComment="no such attribute",
        OffendingElement=(0x00100010, 0x00080050),
    )
    n_get = make_command(
        CommandField.N_GET_RQ,
        MessageID=9,
        RequestedSOPClassUID="1.2.840.10008.5.1.1.16",
        RequestedSOPInstanceUID="1.2.3",
        AttributeIdentifierList=(0x21100010,),
    )
    return [encode_command(cmd) for cmd in (store, find_rsp, n_get)]


def _dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName = "FUZZ^PATIENT"
    ds.PatientID = "ID42"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.Rows = 2
    item = Dataset()
    item.CodeValue = "C1"
    ds.ProcedureCodeSequence = [item]
    return ds


def _records(pdvs: list[PDV], stream: bool) -> bytes:
    out = bytearray()
    for pdv in pdvs:
        data = bytes(pdv.data)[:255]
        control = int(pdv.is_command) | int(pdv.is_last) << 1 | (pdv.context_id // 2 & 3) << 2
        out += bytes((control | (16 if stream else 0), len(data))) + data
    return bytes(out)


def _file_header(syntax: str) -> bytes:
    def element(number: int, vr: bytes, value: bytes) -> bytes:
        if vr == b"OB":
            return struct.pack("<HH2sHL", 2, number, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", 2, number, vr, len(value)) + value

    def uid(text: str) -> bytes:
        raw = text.encode("ascii")
        return raw + b"\x00" if len(raw) % 2 else raw

    elements = (
        element(0x0001, b"OB", b"\x00\x01")
        + element(0x0002, b"UI", uid(CT_IMAGE))
        + element(0x0003, b"UI", uid("1.2.3.4.5.6"))
        + element(0x0010, b"UI", uid(syntax))
    )
    meta = element(0x0000, b"UL", struct.pack("<L", len(elements))) + elements
    return bytes(128) + b"DICM" + meta


def dimse_seeds() -> list[bytes]:
    """Seeds for each mode of fuzz_dimse.py (first byte = mode)."""
    seeds = [b"\x00" + raw for raw in _commands()]
    store = _commands()[0]
    dataset = encode_dataset(_dataset(), SYNTAXES[1])
    pdvs = [
        PDV(1, True, False, store[:40]),
        PDV(1, True, True, store[40:]),
        PDV(1, False, False, dataset[:30]),
        PDV(1, False, True, dataset[30:]),
    ]
    seeds += [b"\x01" + _records(pdvs, False), b"\x01" + _records(pdvs, True)]
    for limit in (64, 256):
        wire = b"".join(
            bytes(part) for pdu in pack_message(3, store, dataset, limit) for part in pdu
        )
        seeds.append(b"\x02" + wire)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    seeds.append(b"\x03" + compressor.compress(dataset) + compressor.flush())
    for index, syntax in enumerate(SYNTAXES):
        seeds.append(bytes((4, index)) + encode_dataset(_dataset(), syntax))
        seeds.append(b"\x05" + _file_header(syntax) + dataset[:32])
    return seeds


def write(target: str, seeds: list[bytes]) -> int:
    folder = HERE / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for seed in seeds:
        path = folder / hashlib.sha1(seed).hexdigest()
        if not path.exists():
            path.write_bytes(seed)
            added += 1
    return added


def main() -> None:
    for target, seeds in (("pdu", pdu_seeds()), ("dimse", dimse_seeds())):
        added = write(target, seeds)
        print(f"corpus/{target}: {len(seeds)} seeds, {added} new", file=sys.stderr)


if __name__ == "__main__":
    main()
