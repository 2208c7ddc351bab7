"""Small, real DICOM instances for tests, made with pydicom (and Pillow for JPEG).

Every maker returns a fresh :class:`~pydicom.dataset.Dataset` with new UIDs and
deterministic pixel data (a gradient plus the ``seed``), so two calls never collide on
a receiving SCP and pixel data can be compared byte for byte. ``write_file`` writes a
Part 10 file in a chosen transfer syntax, compressing (RLE natively, JPEG Baseline via
Pillow) when that syntax asks for it.

    ds = make_ct()
    path = write_file(ds, tmp_path / "ct.dcm", EXPLICIT_VR_LITTLE_ENDIAN)
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"

#: Implementation Class UID written into the test files' meta (a 2.25 UUID UID).
TEST_IMPLEMENTATION_UID = "2.25.136403915330116734766917254401374426751"

UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)


def _pixels(rows: int, columns: int, frames: int, bits: int, seed: int) -> np.ndarray:
    """A smooth ramp (compresses well, survives lossy JPEG) offset by ``seed``."""
    y, x = np.mgrid[0:rows, 0:columns]
    planes = [(x * 3 + y * 2 + seed * 7 + frame * 11) for frame in range(frames)]
    limit = (1 << bits) - 1
    array = np.stack(planes) % (limit + 1)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return array.astype(dtype) if frames > 1 else array[0].astype(dtype)


def _base(sop_class_uid: str, modality: str, *, patient: str, seed: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = patient
    ds.PatientID = f"ID{seed:04d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{seed:04d}"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = seed + 1
    ds.Modality = modality
    ds.Manufacturer = "aionetdicom tests"
    ds.ReferringPhysicianName = ""
    return ds


def _set_pixels(ds: Dataset, array: np.ndarray, bits: int, *, signed: bool = False) -> None:
    frames = array.shape[0] if array.ndim == 3 else 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = array.shape[-2:]
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = array.tobytes()


def make_ct(
    rows: int = 64, columns: int = 64, *, seed: int = 0, patient: str = "Test^CT"
) -> Dataset:
    """A CT Image Storage instance, 16-bit (12 stored) MONOCHROME2, ``rows`` x ``columns``."""
    ds = _base(CT_IMAGE_STORAGE, "CT", patient=patient, seed=seed)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.ImagePositionPatient = [0, 0, seed]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    _set_pixels(ds, _pixels(rows, columns, 1, 12, seed), 12)
    return ds


def make_mr(
    rows: int = 64, columns: int = 64, *, seed: int = 0, patient: str = "Test^MR"
) -> Dataset:
    """An MR Image Storage instance, 16-bit MONOCHROME2."""
    ds = _base(MR_IMAGE_STORAGE, "MR", patient=patient, seed=seed)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = "20"
    ds.RepetitionTime = "500"
    ds.MagneticFieldStrength = "1.5"
    ds.PixelSpacing = [1.0, 1.0]
    _set_pixels(ds, _pixels(rows, columns, 1, 16, seed), 16)
    return ds


def make_multiframe(
    frames: int = 4, rows: int = 32, columns: int = 32, *, seed: int = 0
) -> Dataset:
    """A Multi-frame Grayscale Word Secondary Capture instance with ``frames`` frames."""
    ds = _base(MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE, "OT", patient="Test^MF", seed=seed)
    ds.ConversionType = "WSD"
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "40"
    _set_pixels(ds, _pixels(rows, columns, frames, 16, seed), 16)
    return ds


def make_sc8(rows: int = 64, columns: int = 64, *, seed: int = 0) -> Dataset:
    """An 8-bit MONOCHROME2 Secondary Capture instance (what JPEG Baseline can carry)."""
    ds = _base(SECONDARY_CAPTURE_IMAGE_STORAGE, "OT", patient="Test^SC", seed=seed)
    ds.ConversionType = "WSD"
    _set_pixels(ds, _pixels(rows, columns, 1, 8, seed), 8)
    return ds


def jpeg_baseline(ds: Dataset, quality: int = 95) -> Dataset:
    """A copy of 8-bit single-sample ``ds`` with its frames JPEG Baseline encoded (Pillow).

    pydicom has no JPEG Baseline encoder; Pillow (libjpeg) makes the ISO 10918-1 baseline
    stream and pydicom encapsulates it.
    """
    from PIL import Image

    if ds.BitsAllocated != 8 or ds.SamplesPerPixel != 1:
        raise ValueError("jpeg_baseline needs 8-bit, one-sample pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    array = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(frames, ds.Rows, ds.Columns)
    encoded = []
    for frame in array:
        buffer = io.BytesIO()
        Image.fromarray(frame, mode="L").save(buffer, format="JPEG", quality=quality)
        encoded.append(buffer.getvalue())
    out = copy.deepcopy(ds)
    out.PixelData = encapsulate(encoded)
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    out.LossyImageCompression = "01"
    out.LossyImageCompressionRatio = f"{len(ds.PixelData) / sum(map(len, encoded)):.2f}"
    out.LossyImageCompressionMethod = "ISO_10918_1"
    _meta(out, JPEGBaseline8Bit)
    return out


def rle_lossless(ds: Dataset) -> Dataset:
    """A copy of ``ds`` with RLE Lossless pixel data (pydicom's own encoder)."""
    out = copy.deepcopy(ds)
    _meta(out, ExplicitVRLittleEndian)
    out.compress(RLELossless, generate_instance_uid=False)
    return out


def _meta(ds: Dataset, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = TEST_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "AIONET_TESTS"
    ds.file_meta = meta


def encoded(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """``ds`` ready to write in ``transfer_syntax``: a copy with file meta, compressed if asked.

    Uncompressed syntaxes (Deflated included) need no change; RLE Lossless and JPEG
    Baseline compress a copy; a dataset already in ``transfer_syntax`` is kept as it is.
    """
    current = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax in UNCOMPRESSED:
        out = copy.copy(ds)
        _meta(out, transfer_syntax)
        return out
    if current == transfer_syntax:
        return ds
    if transfer_syntax == RLELossless:
        out = rle_lossless(ds)
        _meta(out, RLELossless)
        return out
    if transfer_syntax == JPEGBaseline8Bit:
        return jpeg_baseline(ds)
    raise ValueError(f"cannot encode {transfer_syntax}")


def _write(ds: Dataset, target: str | os.PathLike[str] | io.BytesIO, transfer_syntax: str) -> None:
    dcmwrite(
        target,
        encoded(ds, transfer_syntax),
        implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
        little_endian=transfer_syntax != ExplicitVRBigEndian,
        enforce_file_format=True,
    )


def write_file(
    ds: Dataset, path: str | os.PathLike[str], transfer_syntax: str = ExplicitVRLittleEndian
) -> Path:
    """Write ``ds`` as a Part 10 file in ``transfer_syntax``; return the path (``ds`` unchanged)."""
    _write(ds, path, transfer_syntax)
    return Path(path)


def file_bytes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """``ds`` as the bytes of a Part 10 file in ``transfer_syntax``."""
    buffer = io.BytesIO()
    _write(ds, buffer, transfer_syntax)
    return buffer.getvalue()
