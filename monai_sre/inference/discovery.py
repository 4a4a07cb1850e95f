# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Turn the paths a user gives (files, series folders, folders of studies) into one input per image or series.

A NIfTI file is one input. DICOM files are grouped by ``SeriesInstanceUID`` (read from headers only), so a folder
mixing series gives one input per series and series are never merged; a series spread over sub-folders stays one
input. Problems found here (a missing path, an empty folder, a file that is neither NIfTI nor DICOM) become
inputs that carry an ``error`` instead of stopping the batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monai_sre.data.dicom_series import is_image_header, is_nifti_path, read_dicom_header

__all__ = ["ClinicalInput", "discover_inputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClinicalInput:
    """One image to predict on, or the reason why a given path cannot be one.

    Args:
        path: the NIfTI file, the DICOM file, or the folder holding the series (shown in results).
        kind: ``"nifti"``, ``"dicom"`` or ``"invalid"``.
        files: the files to read: the NIfTI file, or every file of the DICOM series.
        series_uid: ``SeriesInstanceUID`` for DICOM inputs.
        modality: DICOM ``Modality`` (e.g. ``"CT"``, ``"MR"``); ``None`` when unknown (NIfTI).
        error: why the path is not a usable input (``kind == "invalid"``).
    """

    path: str
    kind: str
    files: tuple[str, ...] = ()
    series_uid: str | None = None
    modality: str | None = None
    error: str | None = None

    @property
    def image(self) -> str | list[str]:
        """What ``LoadImage`` takes for this input: the NIfTI path or the list of DICOM files."""
        return self.files[0] if self.kind == "nifti" else list(self.files)


def _invalid(path: str, reason: str) -> ClinicalInput:
    return ClinicalInput(path=path, kind="invalid", error=f"{path}: {reason}")


def _walk_files(folder: str) -> Iterable[str]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()  # deterministic order of inputs and of files within a series
        for name in sorted(files):
            yield os.path.join(root, name)


def _single_file(path: str) -> ClinicalInput:
    if is_nifti_path(path):
        return ClinicalInput(path=path, kind="nifti", files=(path,))
    try:
        header = read_dicom_header(path)
    except (OSError, ValueError) as e:
        return _invalid(path, str(e).removeprefix(f"{path}: "))
    if header is None:
        return _invalid(path, "not a NIfTI (.nii, .nii.gz) or DICOM file (no DICM preamble)")
    if not is_image_header(header):
        return _invalid(path, "a DICOM file without an image (e.g. a DICOMDIR, report or structure set)")
    return ClinicalInput(
        path=path,
        kind="dicom",
        files=(path,),
        series_uid=str(header.get("SeriesInstanceUID", "")) or None,
        modality=str(header.get("Modality", "")).upper() or None,
    )


def _folder(folder: str) -> list[ClinicalInput]:
    nifti: list[ClinicalInput] = []
    unreadable: list[ClinicalInput] = []
    series: dict[str, list[str]] = {}
    modalities: dict[str, str | None] = {}
    skipped_other, skipped_non_image = [], []
    for f in _walk_files(folder):
        if is_nifti_path(f):
            nifti.append(ClinicalInput(path=f, kind="nifti", files=(f,)))
            continue
        try:
            header = read_dicom_header(f)
        except (OSError, ValueError) as e:
            unreadable.append(_invalid(f, str(e).removeprefix(f"{f}: ")))
            continue
        if header is None:
            skipped_other.append(f)
        elif not is_image_header(header):
            skipped_non_image.append(f)
        else:
            # A slice without SeriesInstanceUID (a required attribute) cannot be grouped: it stays on its own.
            uid = str(header.get("SeriesInstanceUID", "")) or f"<no SeriesInstanceUID: {f}>"
            series.setdefault(uid, []).append(f)
            modalities.setdefault(uid, str(header.get("Modality", "")).upper() or None)
    if skipped_other or skipped_non_image:
        logger.warning(
            "%s: skipped %d file(s) that are neither NIfTI nor DICOM (e.g. %s) and %d DICOM file(s) without an image "
            "(DICOMDIR, reports)",
            folder,
            len(skipped_other),
            skipped_other[0] if skipped_other else "-",
            len(skipped_non_image),
        )
    dicom = []
    for uid, files in series.items():
        # A one-file series is named by its file, a series by the folder holding all its files.
        path = files[0] if len(files) == 1 else os.path.commonpath([os.path.dirname(f) for f in files])
        real_uid = None if uid.startswith("<no SeriesInstanceUID") else uid
        dicom.append(
            ClinicalInput(path=path, kind="dicom", files=tuple(files), series_uid=real_uid, modality=modalities[uid])
        )
    found = sorted(nifti + dicom, key=lambda item: (item.path, item.series_uid or ""))
    if not found and not unreadable:
        detail = (
            f" ({len(skipped_other)} other file(s) and {len(skipped_non_image)} DICOM file(s) without an image skipped)"
            if skipped_other or skipped_non_image
            else " (the folder is empty)"
        )
        return [_invalid(folder, "no NIfTI or DICOM image found" + detail)]
    return found + unreadable


def discover_inputs(paths: Sequence[str | os.PathLike]) -> list[ClinicalInput]:
    """Find the images to predict on: one input per NIfTI file and per DICOM series.

    A file given explicitly is one input (a DICOM file alone, not its whole series); a folder is searched
    recursively and its DICOM files are grouped by ``SeriesInstanceUID``. Files in a folder that are neither
    NIfTI nor DICOM images (README files, DICOMDIR indexes, reports) are skipped with a logged warning.

    Args:
        paths: files and folders, in the order results should follow.

    Returns:
        the inputs, in the order of ``paths`` (and sorted by path within a folder). Paths that give no image
        (missing, empty folder, not NIfTI/DICOM, unreadable header) are inputs of kind ``"invalid"`` whose
        ``error`` names the path and the reason.
    """
    inputs: list[ClinicalInput] = []
    for p in paths:
        path = os.fspath(p)
        if os.path.isdir(path):
            inputs.extend(_folder(path))
        elif os.path.isfile(path):
            inputs.append(_single_file(path))
        else:
            inputs.append(_invalid(path, "no such file or folder"))
    return inputs
