# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""DICOM series: header reading, slice-geometry checks and a MONAI reader for one explicit series.

MONAI's ``PydicomReader`` reads one series per folder, stacks the slices in ``InstanceNumber`` order and trusts
that the slices form a regular volume. Scanner exports break all three assumptions: a folder holds several
series, numbering does not follow position, and a series may miss or repeat a slice or mix orientations
(localizers). :class:`DicomSeriesReader` takes the files of exactly one series, checks their geometry with
:func:`order_series_slices` and then lets ``PydicomReader`` build the volume and its RAS affine, so a clinical
series goes through the same reader code as the DICOM files written for training.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pydicom
from monai.data import PydicomReader
from monai.utils import ensure_tuple
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

__all__ = [
    "is_nifti_path",
    "read_dicom_header",
    "is_image_header",
    "check_pixel_data_length",
    "check_one_modality",
    "order_series_slices",
    "DicomSeriesReader",
]

# Positions are given in mm with a few decimals; an orientation cosine that differs by more than this is another plane.
_ORIENTATION_TOLERANCE = 1e-3
# The elements that hold an image's pixels (integer, float and double-float images).
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Slices closer than this (mm) along the normal are at the same position.
_SAME_POSITION_MM = 1e-3
# A gap may exceed the series' slice spacing by this fraction (scanners round positions) before a slice counts as
# missing.
_GAP_RELATIVE_TOLERANCE = 0.1


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix (``.nii`` or ``.nii.gz``, any case).

    Args:
        path: a file name.

    Returns:
        True for ``.nii`` and ``.nii.gz`` names.
    """
    return str(path).lower().endswith((".nii", ".nii.gz"))


# The header elements that input discovery reads (series grouping, modality, image or not).
HEADER_KEYWORDS = ("SeriesInstanceUID", "Modality", "Rows", "Columns")


def read_dicom_header(path: str | os.PathLike) -> Dataset | None:
    """Read the header of a DICOM file without its pixel data.

    Args:
        path: the file to read.

    Returns:
        the dataset without pixel data, or ``None`` when the file is not DICOM (no ``DICM`` preamble).

    Raises:
        OSError: when the file cannot be read.
        ValueError: when the file claims to be DICOM but its header cannot be parsed.
    """
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        # pydicom decodes an element when it is first read: decode the ones discovery reads now, so that a damaged
        # one (a corrupted VR raises NotImplementedError) is this file's header error, not a crash later
        for keyword in HEADER_KEYWORDS:
            header.get(keyword)
        return header
    except InvalidDicomError:
        return None
    except OSError:
        raise
    except Exception as e:  # pydicom fails on damaged headers with EOFError, KeyError, struct.error, ...
        raise ValueError(f"{path}: unreadable DICOM header ({' '.join(str(e).split()) or type(e).__name__})") from e


def is_image_header(header: Dataset) -> bool:
    """Whether a DICOM header describes an image (it has ``Rows`` and ``Columns``).

    DICOMDIR indexes, structured reports, structure sets and presentation states have none.

    Args:
        header: a dataset, e.g. from :func:`read_dicom_header`.

    Returns:
        True for image objects.
    """
    return "Rows" in header and "Columns" in header


def _name(names: Sequence[str], index: int) -> str:
    return os.path.basename(str(names[index]))


# Bytes per value of the float pixel elements; PixelData's come from BitsAllocated.
_FLOAT_PIXEL_BYTES = {"FloatPixelData": 4, "DoubleFloatPixelData": 8}


def check_pixel_data_length(ds: Dataset, name: str | os.PathLike) -> None:
    """Refuse native (uncompressed) pixel data whose length does not match the header's image size.

    pydicom reads whatever the bytes hold: twice the expected bytes become two frames, fewer fail deep in numpy.
    Either way the header does not describe the pixels (a truncated copy, a wrong ``Rows`` or ``BitsAllocated``),
    and a model would be fed a reinterpreted array. Compressed (encapsulated) pixel data is left to its decoder.

    Args:
        ds: a dataset read with its pixel data.
        name: the file, named in the error.

    Raises:
        ValueError: naming the file, the byte counts and the header values they were computed from.
    """
    keyword = next((k for k in _PIXEL_DATA_KEYWORDS if k in ds), None)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if keyword is None:
        return
    if keyword == "PixelData" and syntax is not None:
        try:
            if syntax.is_encapsulated:
                return
        except ValueError:  # a UID pydicom does not know as a transfer syntax: its decoder says so, naming it
            return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = 8 * _FLOAT_PIXEL_BYTES[keyword] if keyword in _FLOAT_PIXEL_BYTES else int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{name}: the image header lacks a valid Rows, Columns or BitsAllocated ({e})") from e
    values = rows * columns * frames * samples
    expected = (values * bits + 7) // 8
    actual = len(ds[keyword].value or b"")
    if actual in (expected, expected + expected % 2):  # an odd length is padded to even
        return
    what = "less" if actual < expected else "more"
    raise ValueError(
        f"{name}: the pixel data holds {actual} bytes, {what} than the {expected} that Rows x Columns x frames x "
        f"samples x bits ({rows} x {columns} x {frames} x {samples} x {bits} bits) need; the file is truncated or "
        "its header does not describe its pixels"
    )


def check_one_modality(datasets: Sequence[Dataset], names: Sequence[str | os.PathLike]) -> None:
    """Refuse one series whose slices claim different modalities (e.g. CT slices and an MR slice under one UID).

    Args:
        datasets: the headers of every file of the series.
        names: the file of each dataset, used in the error.

    Raises:
        ValueError: naming the slices of each modality.
    """
    by_modality: dict[str, list[str]] = {}
    for d, n in zip(datasets, names):
        by_modality.setdefault(str(d.get("Modality", "") or "").upper() or "(none)", []).append(os.path.basename(n))
    if len(by_modality) > 1:
        listed = "; ".join(
            f"{m} in {', '.join(files[:3])}{f' and {len(files) - 3} more' if len(files) > 3 else ''}"
            for m, files in sorted(by_modality.items())
        )
        uid = str(datasets[0].get("SeriesInstanceUID", "") or "")
        raise ValueError(
            f"{names[0]}: the slices of series {uid} have different modalities ({listed}); expected one modality "
            "per series (a mislabelled or merged export)"
        )


def order_series_slices(datasets: Sequence[Dataset], names: Sequence[str | os.PathLike]) -> list[int]:
    """Check that the slices of one series form a regular volume and return their order along the slice normal.

    Args:
        datasets: the headers (pixel data optional) of every file of the series.
        names: the file of each dataset, used in error messages.

    Returns:
        indices into ``datasets`` sorted by position along the normal of the slice plane.

    Raises:
        ValueError: naming the offending files when the slices differ in size, pixel spacing or orientation
            (a localizer or multi-planar series), lack position/orientation, share a position (a duplicated
            slice or several time points), or are unevenly spaced (a missing slice).
    """
    if len(datasets) != len(names):
        raise ValueError(f"got {len(datasets)} datasets but {len(names)} file names")
    if len(datasets) == 0:
        raise ValueError("a series needs at least one file")
    if len(datasets) == 1:
        return [0]
    names = [str(n) for n in names]
    sizes = [(int(d.get("Rows", 0)), int(d.get("Columns", 0))) for d in datasets]
    for i, size in enumerate(sizes):
        if size != sizes[0]:
            raise ValueError(
                f"slices differ in size: {_name(names, 0)} is {sizes[0][0]}x{sizes[0][1]} (rows x columns), "
                f"{_name(names, i)} is {size[0]}x{size[1]}"
            )
    for i, d in enumerate(datasets):
        if "ImagePositionPatient" not in d or "ImageOrientationPatient" not in d:
            raise ValueError(
                f"cannot stack {len(datasets)} slices into a volume: {_name(names, i)} has no "
                "ImagePositionPatient/ImageOrientationPatient"
            )
    spacings = [np.asarray(d.get("PixelSpacing", [1.0, 1.0]), dtype=float) for d in datasets]
    for i, sp in enumerate(spacings):
        if sp.shape != (2,) or not np.allclose(sp, spacings[0], rtol=1e-3, atol=1e-4):
            raise ValueError(
                f"slices differ in PixelSpacing: {_name(names, 0)} has {spacings[0].tolist()}, "
                f"{_name(names, i)} has {sp.tolist()}"
            )
    orientations = np.asarray([np.asarray(d.ImageOrientationPatient, dtype=float) for d in datasets])
    positions = np.asarray([np.asarray(d.ImagePositionPatient, dtype=float) for d in datasets])
    if orientations.shape[1] != 6 or positions.shape[1] != 3 or not np.isfinite(orientations).all():
        raise ValueError(f"slices of {_name(names, 0)}'s series have malformed ImageOrientationPatient")
    if not np.isfinite(positions).all():
        raise ValueError(f"slices of {_name(names, 0)}'s series have non-finite ImagePositionPatient")
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    if deviation.max() > _ORIENTATION_TOLERANCE:
        other = int(np.argmax(deviation))
        raise ValueError(
            f"slices have different orientations (ImageOrientationPatient {orientations[0].round(4).tolist()} in "
            f"{_name(names, 0)}, {orientations[other].round(4).tolist()} in {_name(names, other)}): a localizer, "
            "multi-planar or radial series, which is not one volume"
        )
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    if np.linalg.norm(normal) < 0.5:
        raise ValueError(f"{_name(names, 0)}: ImageOrientationPatient rows and columns are parallel")
    normal /= np.linalg.norm(normal)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    gaps = np.diff(along[order])
    duplicated = gaps < _SAME_POSITION_MM
    if duplicated.any():
        k = int(np.argmax(duplicated))
        raise ValueError(
            f"duplicated slice positions: {_name(names, order[k])} and {_name(names, order[k + 1])} are both at "
            f"{along[order[k]]:.2f} mm along the slice normal ({int(duplicated.sum()) + 1} slices share positions: "
            "duplicated files, or several time points or echoes in one series)"
        )
    # The smallest gap is the slice spacing: a missing slice can only make a gap larger.
    step = float(gaps.min())
    uneven = gaps > (1.0 + _GAP_RELATIVE_TOLERANCE) * step
    if uneven.any():
        k = int(np.argmax(gaps))
        missing = max(1, int(round(gaps[k] / step)) - 1)
        raise ValueError(
            f"uneven slice spacing: {gaps[k]:.3f} mm between {_name(names, order[k])} and "
            f"{_name(names, order[k + 1])} where the series' slice spacing is {step:.3f} mm (about {missing} "
            f"missing slice{'s' if missing > 1 else ''}; {int(uneven.sum())} uneven gap(s) in {len(gaps) + 1} slices)"
        )
    return [int(i) for i in order]


class DicomSeriesReader(PydicomReader):
    """``PydicomReader`` for one DICOM series given as files (or as a folder holding only that series).

    Unlike ``PydicomReader``, a list of files is read as the slices of one series, not as channels. The slices are
    checked and ordered by position with :func:`order_series_slices` (``PydicomReader`` itself orders by
    ``InstanceNumber``), then stacked by ``PydicomReader`` with its RAS affine and rescale slope/intercept. The
    metadata gains ``modality`` and ``series_uid`` from the first slice. Files ending in ``.nii``/``.nii.gz`` are
    left to other readers, so ``LoadImage`` can hold this reader next to its defaults.

    Args:
        kwargs: passed to ``monai.data.PydicomReader``.
    """

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether this reader takes ``filename``: anything that is not NIfTI (DICOM files often have no suffix).

        Args:
            filename: a file, a folder or a list of files.

        Returns:
            False when any name is a NIfTI file.
        """
        return not any(is_nifti_path(name) for name in ensure_tuple(filename))

    def _series_files(self, data: Sequence[str | os.PathLike] | str | os.PathLike) -> list[str]:
        files: list[str] = []
        for name in ensure_tuple(data):
            name = os.fspath(name)
            if os.path.isdir(name):
                found = sorted(
                    os.path.join(name, f)
                    for f in os.listdir(name)
                    if os.path.isfile(os.path.join(name, f)) and pydicom.misc.is_dicom(os.path.join(name, f))
                )
                if not found:
                    raise ValueError(f"{name}: the folder holds no DICOM file")
                files.extend(found)
            else:
                files.append(name)
        return files

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> Dataset | list[Dataset]:
        """Read the files of one series, check their geometry and order them along the slice normal.

        Args:
            data: one file, a list of files of one series, or a folder holding one series.
            kwargs: passed to ``pydicom.dcmread``; override the reader's.

        Returns:
            one dataset for a single image, else the slice datasets in position order.

        Raises:
            ValueError: when the files are not one series of single-frame images with a regular geometry.
        """
        files = self._series_files(data)
        read_kwargs = {**self.kwargs, **kwargs}
        datasets, names = [], []
        for f in files:
            ds = pydicom.dcmread(f, **read_kwargs)
            if is_image_header(ds):  # a DICOMDIR or report beside the slices is not part of the volume
                if not any(tag in ds for tag in _PIXEL_DATA_KEYWORDS):
                    raise ValueError(f"{f}: the image has no pixel data (no PixelData element); expected an image file")
                datasets.append(ds)
                names.append(f)
        if not datasets:
            raise ValueError(f"{files[0]}: no DICOM image (no Rows/Columns) among {len(files)} file(s)")
        series = sorted({str(d.get("SeriesInstanceUID", "")) for d in datasets})
        if len(series) > 1:
            raise ValueError(
                f"{names[0]}: the files belong to {len(series)} series ({', '.join(series)}); read one series at a "
                "time (monai_sre.inference.discover_inputs splits folders by SeriesInstanceUID)"
            )
        check_one_modality(datasets, names)
        for d, f in zip(datasets, names):
            frames = int(d.get("NumberOfFrames", 1) or 1)
            if frames > 1:
                raise ValueError(
                    f"{f}: multi-frame DICOM ({frames} frames in one file) is not supported; export the series as "
                    "one file per slice"
                )
            check_pixel_data_length(d, f)
        order = order_series_slices(datasets, names)
        datasets = [datasets[i] for i in order]
        names = [names[i] for i in order]
        if len(datasets) == 1:
            self.has_series = False
            self.filenames = names
            return datasets[0]
        # PydicomReader stacks by InstanceNumber; renumbering the in-memory copies makes it stack in the checked
        # geometric order even where the scanner's numbering does not follow position.
        for rank, ds in enumerate(datasets, start=1):
            ds.InstanceNumber = rank
        self.has_series = True
        self.filenames = [names]
        return datasets

    def get_data(self, data: Dataset | list[Dataset]) -> tuple[np.ndarray, dict]:
        """Stack the slices read by :meth:`read` and add ``modality`` and ``series_uid`` to the metadata.

        Args:
            data: the output of :meth:`read`.

        Returns:
            the image array and its metadata (with ``affine`` in RAS).
        """
        with warnings.catch_warnings():
            if not isinstance(data, list):
                # A lone image (a radiograph, a photo) often has no patient geometry; 2D models do not need it.
                warnings.filterwarnings("ignore", message="PydicomReader: ImageOrientationPatient")
            first = data[0] if isinstance(data, list) else data
            try:
                array, meta = super().get_data(data)
            except (ValueError, NotImplementedError, RuntimeError, AttributeError, KeyError) as e:
                # pydicom's decoders report the codec's view ("unexpected tag ... Basic Offset Table"), not the file's
                syntax = getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", None)
                if syntax is None:
                    stored = "(no transfer syntax given)"
                elif syntax.name == str(syntax):  # pydicom names the syntaxes it knows
                    stored = f"{syntax}, unknown to pydicom"
                else:
                    stored = f"{syntax.name} ({syntax})"
                raise ValueError(
                    f"{getattr(first, 'filename', 'DICOM data')}: cannot decode its pixel data "
                    f"({' '.join(str(e).split())}); expected complete pixel data encoded as its transfer syntax "
                    f"says: {stored}"
                ) from e
        if int(first.get("SamplesPerPixel", 1) or 1) > 1 and array.ndim == 3 and not isinstance(data, list):
            # PydicomReader counts the colour samples of an RGB image as a spatial axis; they are channels.
            meta["original_channel_dim"] = -1
            meta["spatial_shape"] = np.asarray(array.shape[:-1])
        meta["modality"] = str(first.get("Modality", "") or "").upper()
        meta["series_uid"] = str(first.get("SeriesInstanceUID", "") or "")
        return array, meta
