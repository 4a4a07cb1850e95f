# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Write arrays as DICOM: one 2D image per file, or a 3D volume as a series folder (one file per slice).

Orientation convention (the same as :mod:`monai_sre.data.medmnist` and the NIfTI writer of
:mod:`monai_sre.data.export`): the array you pass is the array MONAI gives back. Reading the result with
``monai.transforms.LoadImage`` (``PydicomReader``, MONAI's default reader for a ``.dcm`` file or a folder when
``itk`` is not installed) gives exactly ``array`` for 2D grayscale and 3D input. For 2D RGB input ``(H, W, 3)``
it gives ``(H, W, 3)``, and ``EnsureChannelFirst(channel_dim=-1)`` turns that into ``(3, H, W)``. The affine is
``diag(spacing)`` in RAS with ``origin`` as translation, the same affine the NIfTI files of
:mod:`monai_sre.data.export` have. The geometry behind this:

* array axis 0 runs along the DICOM columns (``Columns`` = ``shape[0]``), axis 1 along the rows (``Rows`` =
  ``shape[1]``), axis 2 across the slices (``InstanceNumber`` = index + 1). So a slice's ``pixel_array`` in
  pydicom is ``volume[:, :, k].T``. MONAI's ``PydicomReader`` (``swap_ij=True``) swaps it back.
* ``ImageOrientationPatient`` = ``[-1, 0, 0, 0, -1, 0]`` and ``ImagePositionPatient`` of slice ``k`` =
  ``(-origin[0], -origin[1], origin[2] + k * spacing[2])`` (LPS). So axis 0 runs to patient Right (+x in RAS),
  axis 1 to Anterior, axis 2 to Superior, and MONAI's RAS affine is ``diag(spacing)`` (+ ``origin``). That is
  identity orientation, so ``Orientation(axcodes="RAS")`` leaves the array unchanged.
* SimpleITK (``ImageSeriesReader`` with ``GetGDCMSeriesFileNames``, or ``ReadImage`` of one file) reads the
  same voxels: image index ``(i, j, k)`` is ``volume[i, j, k]``. So ``sitk.GetArrayFromImage`` returns
  ``volume.transpose(2, 1, 0)`` (``(1, W, H)`` or ``(1, W, H, 3)`` for a 2D file). Its direction is
  ``diag(-1, -1, 1)`` (LPS), the direction SimpleITK reports for the matching NIfTI file too.

Files are written with pydicom as Explicit VR Little Endian, with file meta information, Secondary Capture
(modality ``OT``, the default), CT or MR Image Storage SOP class. UIDs come from ``pydicom.uid.generate_uid``.
They are random, or derived from ``uid_seed``, which makes a re-run byte-identical. The writes are atomic. A
file is written under a temporary name and renamed. A series is written into a temporary sibling folder and
renamed as a whole. An interrupted write therefore never leaves a file or folder under its final name.
"""

from __future__ import annotations

import copy
import functools
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from monai_sre.io.files import TEMP_MARKER, atomic_folder, atomic_path

__all__ = ["write_dicom_image", "write_dicom_series", "SOP_CLASS_UIDS", "TEMP_MARKER", "DICOM_ENCODERS"]

#: SOP class written for each supported modality (Secondary Capture for anything that is not CT or MR).
SOP_CLASS_UIDS = {
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}

#: Encoders of :func:`write_dicom_image` / :func:`write_dicom_series`: ``"template"`` encodes the elements shared by
#: a series once and only the per-file ones for every file; ``"pydicom"`` writes every file with pydicom's
#: ``dcmwrite`` (the same bytes, about 10 times slower; the reference the tests compare against).
DICOM_ENCODERS = ("template", "pydicom")


# pixel dtype -> (BitsAllocated, PixelRepresentation, VR of PixelData)
_PIXEL_FORMATS = {
    np.dtype(np.uint8): (8, 0, "OB"),
    np.dtype(np.int8): (8, 1, "OB"),
    np.dtype(np.uint16): (16, 0, "OW"),
    np.dtype(np.int16): (16, 1, "OW"),
}

# Elements that differ between files or series: (tag, keyword, VR), in tag order. Everything else of a file is
# the same for all files of the same shape, type, spacing and modality, and is encoded once by pydicom.
_VARIABLE = (
    (0x00080018, "SOPInstanceUID", "UI"),
    (0x00081030, "StudyDescription", "LO"),
    (0x0008103E, "SeriesDescription", "LO"),
    (0x00100010, "PatientName", "PN"),
    (0x00100020, "PatientID", "LO"),
    (0x0020000D, "StudyInstanceUID", "UI"),
    (0x0020000E, "SeriesInstanceUID", "UI"),
    (0x00200013, "InstanceNumber", "IS"),
    (0x00200032, "ImagePositionPatient", "DS"),
    (0x00200052, "FrameOfReferenceUID", "UI"),
    (0x00201041, "SliceLocation", "DS"),
)
_VARIABLE_TAGS = frozenset(tag for tag, _, _ in _VARIABLE)
_PIXEL_DATA = 0x7FE00010
_MEDIA_SOP_INSTANCE_UID = 0x00020003


# Safe module-level memo: a pure function of a float that returns an immutable string.
@functools.lru_cache(maxsize=4096)
def _ds_str(value: float) -> str:
    """A Decimal String value that fits the 16-character DS limit, as pydicom writes it."""
    return str(DSfloat(float(value), auto_format=True))


def _pixel_format(array: np.ndarray, rgb: bool) -> tuple[int, int, str]:
    fmt = _PIXEL_FORMATS.get(array.dtype.newbyteorder("=")) if array.dtype.kind in "iu" else None
    if fmt is None:
        raise TypeError(
            f"cannot write a {array.dtype} array as DICOM: supported pixel types are uint8, int8, uint16, int16"
        )
    if rgb and array.dtype != np.uint8:
        raise TypeError(f"an RGB DICOM image must be uint8, got {array.dtype}")
    return fmt


def _series_values(
    uid_seed: str | None,
    study_uid: str | None,
    series_uid: str | None,
    patient_id: str,
    patient_name: str,
    study_description: str,
    series_description: str,
) -> dict[str, str]:
    """The per-series elements: UIDs given, derived from ``uid_seed``, or random; patient and descriptions."""

    def make(kind: str) -> str:
        return str(generate_uid(entropy_srcs=[str(uid_seed), kind]) if uid_seed is not None else generate_uid())

    values = {
        "StudyInstanceUID": str(study_uid) if study_uid else make("study"),
        "SeriesInstanceUID": str(series_uid) if series_uid else make("series"),
        "FrameOfReferenceUID": make("frame-of-reference"),
        "PatientID": str(patient_id),
        "PatientName": str(patient_name),
        "StudyDescription": str(study_description),
        "SeriesDescription": str(series_description),
    }
    for key in ("PatientID", "PatientName", "StudyDescription", "SeriesDescription"):
        text = values[key]
        if len(text) > 64 or any(ch in text for ch in "\\\r\n") or not text.isascii():
            raise ValueError(f"DICOM {key} must be at most 64 ASCII characters without backslash, got {text!r}")
    return values


def _sop_uid(uid_seed: str | None, index: int) -> str:
    if uid_seed is None:
        return str(generate_uid())
    return str(generate_uid(entropy_srcs=[str(uid_seed), "sop", str(index)]))


def _file_values(sop_uid: str, number: int, position: Sequence[float]) -> dict[str, str]:
    return {
        "SOPInstanceUID": sop_uid,
        "InstanceNumber": str(int(number)),
        "ImagePositionPatient": "\\".join(_ds_str(p) for p in position),
        "SliceLocation": _ds_str(position[2]),
    }


def _constant_dataset(
    rows: int,
    columns: int,
    rgb: bool,
    pixel_format: tuple[int, int, str],
    spacing: tuple[float, float, float],
    modality: str,
    series_number: int,
    rescale_slope: float | None,
    rescale_intercept: float | None,
    is_series: bool,
) -> Dataset:
    """Everything but the ``_VARIABLE`` elements and the pixel data: the same for every file of a kind."""
    modality = modality.upper()
    sop_class = UID(SOP_CLASS_UIDS.get(modality, SOP_CLASS_UIDS["OT"]))
    bits, representation, _ = pixel_format

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "MONAI_SRE"

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"] if modality not in ("CT", "MR") else ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    # Type 2 dates and times are left empty: reproducible files, and nothing made up.
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyID = ""
    ds.SeriesNumber = series_number
    ds.PositionReferenceIndicator = ""
    if sop_class == SOP_CLASS_UIDS["OT"]:
        ds.ConversionType = "WSD"  # workstation: the image was made by software
    ds.ImageOrientationPatient = [
        DSfloat(v) for v in (_ds_str(-1), _ds_str(0), _ds_str(0), _ds_str(0), _ds_str(-1), _ds_str(0))
    ]
    # PixelSpacing is (spacing between rows, spacing between columns) = (axis 1 spacing, axis 0 spacing).
    ds.PixelSpacing = [DSfloat(_ds_str(spacing[1])), DSfloat(_ds_str(spacing[0]))]
    ds.SliceThickness = DSfloat(_ds_str(spacing[2]))
    if is_series:
        ds.SpacingBetweenSlices = DSfloat(_ds_str(spacing[2]))
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0  # colour-by-pixel: R G B R G B ...
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = representation
    if modality == "CT" and rescale_slope is None and rescale_intercept is None:
        rescale_slope, rescale_intercept = 1.0, 0.0  # Type 1 in the CT Image module
    if rescale_slope is not None or rescale_intercept is not None:
        ds.RescaleIntercept = DSfloat(_ds_str(0.0 if rescale_intercept is None else rescale_intercept))
        ds.RescaleSlope = DSfloat(_ds_str(1.0 if rescale_slope is None else rescale_slope))
        ds.RescaleType = "HU" if modality == "CT" else "US"
    return ds


def _pixel_bytes(pixels: np.ndarray) -> bytes:
    data = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    return data + b"\0" if len(data) % 2 else data  # DICOM values have even length


def _element(tag: int, vr: str, value: str) -> bytes:
    """Explicit VR little endian element with a 2-byte length (the VRs of ``_VARIABLE``), padded to even length."""
    data = value.encode("latin-1" if vr != "UI" else "ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(data)) + data


def _encode_dataset(ds: Dataset, keep) -> bytes:
    part = Dataset()
    for elem in ds:
        if keep(int(elem.tag)):
            part.add(elem)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, part)
    return fp.getvalue()


class _Template:
    """Byte-level writer of files that share everything but ``_VARIABLE`` elements and pixels.

    pydicom encodes the shared elements once (about 40 of them, 1 ms when ``dcmwrite`` writes each file). Only the
    variable elements are encoded per file, so writing many small slices is about 10 times faster. The tests check
    that the files are byte-identical to ``dcmwrite(..., enforce_file_format=True)``.
    """

    def __init__(self, ds: Dataset, pixel_vr: str, encoder: str = "template"):
        self.ds = ds
        self.pixel_vr = pixel_vr
        self.encoder = encoder
        meta = FileMetaDataset(ds.file_meta)
        meta.MediaStorageSOPInstanceUID = "1.2"  # placeholder: pydicom completes the standard elements around it
        write_file_meta_info(DicomBytesIO(), meta, enforce_standard=True)
        del meta[0x00020000]  # group length: computed per file
        self.meta_before = _encode_dataset(meta, lambda tag: tag < _MEDIA_SOP_INSTANCE_UID)
        self.meta_after = _encode_dataset(meta, lambda tag: tag > _MEDIA_SOP_INSTANCE_UID)
        bounds = (0,) + tuple(tag for tag, _, _ in _VARIABLE) + (_PIXEL_DATA, 0xFFFFFFFF)
        self.segments = [
            _encode_dataset(ds, lambda tag, lo=lo, hi=hi: lo < tag < hi and tag not in _VARIABLE_TAGS)
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]

    def encode(self, values: dict[str, str], pixels: bytes) -> bytes:
        media_uid = _element(_MEDIA_SOP_INSTANCE_UID, "UI", values["SOPInstanceUID"])
        parts = [
            b"\0" * 128,
            b"DICM",
            struct.pack(
                "<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(self.meta_before) + len(media_uid) + len(self.meta_after)
            ),
            self.meta_before,
            media_uid,
            self.meta_after,
        ]
        for segment, (tag, keyword, vr) in zip(self.segments, _VARIABLE):
            parts += (segment, _element(tag, vr, values[keyword]))
        parts += (
            self.segments[-2],
            struct.pack("<HH2sHI", 0x7FE0, 0x0010, self.pixel_vr.encode("ascii"), 0, len(pixels)),
            pixels,
            self.segments[-1],
        )
        return b"".join(parts)

    def write(self, path: Path, values: dict[str, str], pixels: np.ndarray) -> None:
        if self.encoder == "pydicom":
            ds = copy.deepcopy(self.ds)
            for tag, keyword, vr in _VARIABLE:
                value = values[keyword]
                ds.add_new(tag, vr, value.split("\\") if vr == "DS" else value)
            ds.file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
            ds.add_new(_PIXEL_DATA, self.pixel_vr, _pixel_bytes(pixels))
            dcmwrite(path, ds, enforce_file_format=True)
            return
        data = self.encode(values, _pixel_bytes(pixels))
        with open(path, "wb") as f:
            f.write(data)


# Safe module-level memo: a pure function of hashable arguments; a _Template is never changed after __init__ (the
# pydicom encoder deep-copies its dataset before filling a file in).
@functools.lru_cache(maxsize=16)
def _template(encoder: str, *args) -> _Template:
    """The cached ``_Template`` for ``_constant_dataset(*args)`` (the pixel VR is ``args[3][2]``) and ``encoder``."""
    if encoder not in DICOM_ENCODERS:
        raise ValueError(f"encoder must be one of {DICOM_ENCODERS}, got {encoder!r}")
    return _Template(_constant_dataset(*args), args[3][2], encoder)


def _check_spacing(spacing: Sequence[float], n: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != n or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {n} positive numbers (mm), got {spacing}")
    return spacing


def write_dicom_image(
    image: np.ndarray,
    path: str | os.PathLike,
    spacing: Sequence[float] = (1.0, 1.0),
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    modality: str = "OT",
    uid_seed: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "ANONYMOUS",
    study_description: str = "",
    series_description: str = "",
    series_number: int = 1,
    instance_number: int = 1,
    rescale_slope: float | None = None,
    rescale_intercept: float | None = None,
    overwrite: bool = True,
    encoder: str = "template",
) -> Path:
    """Write one 2D image as one DICOM file, atomically (temporary file, then rename).

    Args:
        image: ``(H, W)`` grayscale (uint8, int8, uint16 or int16), written as MONOCHROME2, or ``(H, W, 3)`` uint8
            RGB (channel last), written as RGB with PlanarConfiguration 0. ``LoadImage`` gives back ``image``;
            see the module docstring for the axis convention.
        path: the file to write (parent folders are created).
        spacing: pixel spacing in mm along axis 0 and axis 1.
        origin: RAS position in mm of pixel ``[0, 0]``; the affine MONAI reads is ``diag(spacing)`` + ``origin``.
        modality: ``"OT"`` (Secondary Capture), ``"CT"`` or ``"MR"``; selects the SOP class.
        uid_seed: if given, every UID is derived from it (reproducible files); otherwise UIDs are random.
        study_uid: StudyInstanceUID to use instead of a generated one (e.g. to put several files in one study).
        series_uid: SeriesInstanceUID to use instead of a generated one.
        patient_id: PatientID.
        patient_name: PatientName.
        study_description: StudyDescription.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        instance_number: InstanceNumber.
        rescale_slope: RescaleSlope; omitted unless given, or 1 for CT. Readers that apply it, MONAI's among
            them, return float32 data.
        rescale_intercept: RescaleIntercept; omitted unless given, or 0 for CT.
        overwrite: replace an existing file. If False, an existing ``path`` raises ``FileExistsError``.
        encoder: one of :data:`DICOM_ENCODERS`; both write the same bytes.

    Returns:
        the path written.

    Raises:
        TypeError: for an unsupported pixel type.
        ValueError: for a shape that is neither ``(H, W)`` nor ``(H, W, 3)``, bad spacing or an unknown encoder.
    """
    image = np.asarray(image)
    rgb = image.ndim == 3 and image.shape[-1] == 3
    if not (image.ndim == 2 or rgb) or min(image.shape[:2]) < 1:
        raise ValueError(f"a DICOM image must have shape (H, W) or (H, W, 3), got {image.shape}")
    pixel_format = _pixel_format(image, rgb)
    sx, sy = _check_spacing(spacing, 2)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    series = _series_values(
        uid_seed, study_uid, series_uid, patient_id, patient_name, study_description, series_description
    )
    template = _template(
        encoder,
        image.shape[1],
        image.shape[0],
        rgb,
        pixel_format,
        (sx, sy, 1.0),
        modality.upper(),
        int(series_number),
        rescale_slope,
        rescale_intercept,
        False,
    )
    ox, oy, oz = (float(o) for o in origin)
    values = {**series, **_file_values(_sop_uid(uid_seed, 0), instance_number, (-ox, -oy, oz))}
    pixels = image.transpose(1, 0, 2) if rgb else image.T  # pydicom's (rows, columns[, samples]) order

    with atomic_path(path, durable=False) as tmp:  # exports write thousands: a re-run checks them, no fsync each
        template.write(tmp, values, pixels)
    return path


def write_dicom_series(
    volume: np.ndarray,
    folder: str | os.PathLike,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    modality: str = "OT",
    uid_seed: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "ANONYMOUS",
    study_description: str = "",
    series_description: str = "",
    series_number: int = 1,
    rescale_slope: float | None = None,
    rescale_intercept: float | None = None,
    file_pattern: str = "slice_{:04d}.dcm",
    overwrite: bool = False,
    encoder: str = "template",
) -> list[Path]:
    """Write a 3D volume as a DICOM series folder, one file per slice along axis 2, atomically.

    All files share StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID, and each file has its own
    SOPInstanceUID. Each file also carries ``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``,
    ``SliceThickness``, ``SliceLocation`` and ``InstanceNumber`` (1-based slice index). MONAI's ``LoadImage`` of
    ``folder`` (``PydicomReader``) gives back ``volume`` exactly, with affine ``diag(spacing)`` + ``origin``.
    SimpleITK's ``ImageSeriesReader`` gives the same voxels (index ``(i, j, k)`` = ``volume[i, j, k]``). The
    slices are written into a temporary sibling folder that is renamed to ``folder`` at the end, so ``folder``
    is complete whenever it exists.

    Args:
        volume: ``(X, Y, Z)`` array, uint8, int8, uint16 or int16, any size (e.g. 28³, or 512×512×100 int16 CT).
            Axis 0 becomes the DICOM columns, axis 1 the rows, axis 2 the slices.
        folder: the series folder to create. It must not exist unless ``overwrite``.
        spacing: voxel spacing in mm along axes 0, 1, 2. Axis 2's is SliceThickness and the step between slices.
        origin: RAS position in mm of voxel ``[0, 0, 0]``.
        modality: ``"OT"`` (Secondary Capture), ``"CT"`` or ``"MR"``; selects the SOP class.
        uid_seed: if given, every UID is derived from it, so the same call writes byte-identical files.
        study_uid: StudyInstanceUID to use instead of a generated one.
        series_uid: SeriesInstanceUID to use instead of a generated one.
        patient_id: PatientID.
        patient_name: PatientName.
        study_description: StudyDescription.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        rescale_slope: RescaleSlope; omitted unless given, or 1 for CT. Readers that apply it, MONAI's among
            them, return float32 data.
        rescale_intercept: RescaleIntercept; omitted unless given, or 0 for CT. E.g. store HU + 1024 as uint16
            with ``rescale_intercept=-1024``.
        file_pattern: file name of slice ``k`` (0-based), ``file_pattern.format(k)``.
        overwrite: replace an existing ``folder`` (the old one is removed only after the new one is in place).
        encoder: one of :data:`DICOM_ENCODERS`; both write the same bytes.

    Returns:
        the slice files, in slice order.

    Raises:
        TypeError: for an unsupported pixel type.
        ValueError: for an array that is not 3D, bad spacing or an unknown encoder.
        FileExistsError: if ``folder`` exists and ``overwrite`` is False.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"a DICOM series needs a 3D (X, Y, Z) array, got shape {volume.shape}")
    pixel_format = _pixel_format(volume, rgb=False)
    spacing = _check_spacing(spacing, 3)
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists (pass overwrite=True to replace it)")
    series = _series_values(
        uid_seed, study_uid, series_uid, patient_id, patient_name, study_description, series_description
    )
    template = _template(
        encoder,
        volume.shape[1],
        volume.shape[0],
        False,
        pixel_format,
        spacing,
        modality.upper(),
        int(series_number),
        rescale_slope,
        rescale_intercept,
        True,
    )
    ox, oy, oz = (float(o) for o in origin)
    slices = volume.transpose(2, 1, 0)  # slices[k] is slice k in pydicom's (rows, columns) order
    names = [file_pattern.format(k) for k in range(volume.shape[2])]
    if len(set(names)) != len(names):
        raise ValueError(f"file_pattern {file_pattern!r} gives the same name to several slices")

    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for k, name in enumerate(names):
            values = {**series, **_file_values(_sop_uid(uid_seed, k), k + 1, (-ox, -oy, oz + k * spacing[2]))}
            template.write(tmp / name, values, slices[k])
    return [folder / name for name in names]
