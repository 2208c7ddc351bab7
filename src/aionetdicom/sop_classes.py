"""SOP Class UIDs grouped by service class, from pydicom's UID dictionary and PS3.4."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary

VERIFICATION = "1.2.840.10008.1.1"

#: Every Storage SOP Class pydicom knows (PS3.4 Annex B), retired ones included.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    sorted(
        (
            uid
            for uid, (_, kind, _, _, keyword) in UID_dictionary.items()
            if kind == "SOP Class"
            and "Storage" in keyword
            and not keyword.startswith("StorageCommitment")
            and keyword != "MediaStorageDirectoryStorage"
        ),
        key=lambda uid: tuple(int(part) for part in uid.split(".")),
    )
)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"
PATIENT_STUDY_ONLY_MOVE = "1.2.840.10008.5.1.4.1.2.3.2"
PATIENT_STUDY_ONLY_GET = "1.2.840.10008.5.1.4.1.2.3.3"
COMPOSITE_INSTANCE_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.4.2"
COMPOSITE_INSTANCE_ROOT_GET = "1.2.840.10008.5.1.4.1.2.4.3"
COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET = "1.2.840.10008.5.1.4.1.2.5.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"


def sop_class_name(uid: str) -> str:
    """The standard's name of a UID, or the UID itself when pydicom does not know it."""
    entry = UID_dictionary.get(uid)
    return entry[0] if entry else uid
