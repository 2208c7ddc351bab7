"""A small, fixed archive for query/retrieve tests: 2 patients, 3 studies, 6 series, 20 images.

Every UID is derived from a name, so tests can state exactly what a query must match.
Files are tiny (8x8 16-bit pixels) Part 10 files in Explicit VR Little Endian.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}


def uid(name: str) -> str:
    """A stable UID under 2.25 for ``name`` (its SHA-256 as a decimal, 38 digits)."""
    digest = hashlib.sha256(name.encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big") >> 2)


@dataclass(frozen=True)
class Series:
    """One series: its number, modality and how many images it holds."""

    key: str
    number: int
    modality: str
    images: int

    @property
    def uid(self) -> str:
        """SeriesInstanceUID."""
        return uid(f"series:{self.key}")

    def instance_uids(self) -> list[str]:
        """SOPInstanceUIDs of the images, in instance number order."""
        return [uid(f"image:{self.key}:{n}") for n in range(1, self.images + 1)]


@dataclass(frozen=True)
class Study:
    """One study and its series."""

    key: str
    date: str
    description: str
    accession: str
    series: tuple[Series, ...]

    @property
    def uid(self) -> str:
        """StudyInstanceUID."""
        return uid(f"study:{self.key}")

    def instance_uids(self) -> list[str]:
        """SOPInstanceUIDs of every image in the study."""
        return [each for series in self.series for each in series.instance_uids()]


@dataclass(frozen=True)
class Patient:
    """One patient and their studies."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    studies: tuple[Study, ...]

    def instance_uids(self) -> list[str]:
        """SOPInstanceUIDs of every image of the patient."""
        return [each for study in self.studies for each in study.instance_uids()]


DOE = Patient(
    "QR001",
    "DOE^JOHN",
    "19700101",
    "M",
    (
        Study(
            "doe-ct",
            "20200101",
            "CT HEAD",
            "ACC001",
            (Series("doe-ct-1", 1, "CT", 4), Series("doe-ct-2", 2, "CT", 3)),
        ),
        Study("doe-mr", "20210315", "MR KNEE", "ACC002", (Series("doe-mr-1", 1, "MR", 5),)),
    ),
)
ROE = Patient(
    "QR002",
    "ROE^JANE",
    "19851224",
    "F",
    (
        Study(
            "roe-ct",
            "20220720",
            "CT CHEST",
            "ACC003",
            (
                Series("roe-ct-1", 1, "CT", 4),
                Series("roe-ct-2", 2, "CT", 2),
                Series("roe-ct-3", 3, "MR", 2),
            ),
        ),
    ),
)
PATIENTS: tuple[Patient, ...] = (DOE, ROE)
STUDIES: tuple[Study, ...] = tuple(study for patient in PATIENTS for study in patient.studies)
ALL_INSTANCE_UIDS: tuple[str, ...] = tuple(
    each for patient in PATIENTS for each in patient.instance_uids()
)


def _image(patient: Patient, study: Study, series: Series, number: int) -> Dataset:
    sop_class = _SOP_CLASSES[series.modality]
    sop_instance = series.instance_uids()[number - 1]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = study.date
    ds.StudyTime = "120000"
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"{study.description} {series.number}"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.accession[-3:]
    ds.SeriesNumber = series.number
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = uid(f"frame:{series.key}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.PixelSpacing = [1, 1]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if series.modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.KVP = 120
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = 10
        ds.RepetitionTime = 500
        ds.EchoTrainLength = 1
    ds.PixelData = bytes((number + i) % 256 for i in range(8 * 8 * 2))
    return ds


def datasets() -> Iterable[tuple[str, Dataset]]:
    """(file name, dataset) of every image in the archive."""
    for patient in PATIENTS:
        for study in patient.studies:
            for series in study.series:
                for number in range(1, series.images + 1):
                    yield f"{series.key}-{number}.dcm", _image(patient, study, series, number)


def write_archive(folder: Path) -> list[Path]:
    """Write every image of the archive into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, ds in datasets():
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
