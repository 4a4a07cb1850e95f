# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Bad clinical inputs, built from real files (pydicom's CT_small.dcm) and small arrays, as PACS exports break them."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from monai_sre.data import write_dicom_series

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))  # a real 128x128 CT slice, Explicit VR Little Endian
EXPLICIT_VR_LE = b"1.2.840.10008.1.2.1\0"


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _volume(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((16, 16, 6)) * 1000).astype(np.int16)


def _edit_slice(files: list[Path], index: int, **values) -> None:
    """Overwrite header elements of slice ``index`` of a written series."""
    ds = pydicom.dcmread(files[index])
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(files[index])


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """Write every kind of bad input (and two good ones) into ``folder``.

    Returns:
        ``{case name: path}``; the names are those of the bad-input matrix.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    p: dict[str, Path] = {}
    p["good_volume"] = _nifti(folder / "good_volume.nii.gz", rng.random((20, 22, 24), dtype=np.float32))
    p["good_slice"] = _nifti(folder / "good_slice.nii.gz", rng.random((28, 28), dtype=np.float32))
    raw_gz = p["good_volume"].read_bytes()
    raw = _nifti(folder / "plain.nii", rng.random((20, 22, 24), dtype=np.float32)).read_bytes()
    p["truncated_nifti_gz"] = _bytes(folder / "truncated.nii.gz", raw_gz[: len(raw_gz) // 2])
    p["truncated_nifti"] = _bytes(folder / "truncated.nii", raw[: 352 + 1000])
    p["corrupt_nifti"] = _bytes(folder / "corrupt.nii.gz", rng.bytes(3000))
    p["corrupt_nifti_header"] = _bytes(folder / "corrupt_header.nii", b"\0" * 348 + raw[348:])
    p["empty_file"] = _bytes(folder / "empty.nii.gz", b"")
    nan = np.where(rng.random((20, 22, 24)) > 0.9, np.nan, 1.0).astype(np.float32)
    p["nan_voxels"] = _nifti(folder / "nan.nii.gz", nan)
    p["inf_voxels"] = _nifti(folder / "inf.nii.gz", np.full((20, 22, 24), np.inf, np.float32))
    p["zero_size"] = _nifti(folder / "zero_size.nii.gz", np.zeros((0, 22, 24), np.float32))
    p["one_d"] = _nifti(folder / "one_d.nii.gz", rng.random(30, dtype=np.float32))
    p["four_d"] = _nifti(folder / "four_d.nii.gz", rng.random((10, 10, 10, 3), dtype=np.float32))
    p["five_channels"] = _nifti(folder / "five_channels.nii.gz", rng.random((28, 28, 1, 1, 5), dtype=np.float32))
    # pixdim 500 mm where 0.5 was meant: resampling to 1 mm would ask for 10^12 voxels
    p["huge_spacing"] = _nifti(folder / "huge_spacing.nii.gz", rng.random((20, 22, 24), dtype=np.float32),
                               np.diag([500.0, 500.0, 500.0, 1.0]))  # fmt: skip
    rgba = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    p["rgba_voxels"] = _nifti(folder / "rgba.nii.gz", rgba)  # a NIfTI RGBA datatype: no intensity to read

    ct = pydicom.dcmread(CT_SMALL)
    del ct.PixelData
    p["dicom_without_pixels"] = folder / "no_pixels.dcm"
    ct.save_as(p["dicom_without_pixels"])
    ct_raw = CT_SMALL.read_bytes()
    assert ct_raw.count(EXPLICIT_VR_LE) == 1
    # The same bytes under another transfer syntax UID (same length, so the header stays consistent).
    rle = ct_raw.replace(EXPLICIT_VR_LE, b"1.2.840.10008.1.2.5\0")
    p["dicom_rle_claimed"] = _bytes(folder / "rle_claimed.dcm", rle)
    unknown = ct_raw.replace(EXPLICIT_VR_LE, b"1.2.840.99999.9.9.9\0")
    p["dicom_unknown_syntax"] = _bytes(folder / "unknown_syntax.dcm", unknown)
    p["dicom_truncated"] = _bytes(folder / "truncated.dcm", ct_raw[:-5000])
    for name, rows in (("dicom_pixels_longer", 64), ("dicom_pixels_shorter", 256)):
        # the header says 64 (256) rows of the 128x128 slice: pydicom would read (64, 2, 128) or fail in numpy
        ds = pydicom.dcmread(CT_SMALL)
        ds.Rows = rows
        p[name] = folder / f"{name}.dcm"
        ds.save_as(p[name])
    p["not_an_image"] = _bytes(folder / "readme.txt", b"exported by the PACS")

    files = write_dicom_series(_volume(), folder / "uneven_series", spacing=(1, 1, 2), uid_seed="uneven")
    for k in range(3, len(files)):  # 5 mm more between slices 2 and 3: about 2 missing slices
        _edit_slice(files, k, ImagePositionPatient=[0.0, 0.0, 2.0 * k + 5])
    p["uneven_slice_spacing"] = folder / "uneven_series"
    files = write_dicom_series(_volume(), folder / "pixel_spacing_series", spacing=(1, 1, 2), uid_seed="spacing")
    _edit_slice(files, 2, PixelSpacing=[0.5, 0.5])
    p["inconsistent_pixel_spacing"] = folder / "pixel_spacing_series"
    files = write_dicom_series(_volume(), folder / "mixed_modality", spacing=(1, 1, 2), modality="CT",
                               rescale_intercept=0, uid_seed="modality")  # fmt: skip
    for k in (2, 4):  # two MR slices under the CT series' UID
        _edit_slice(files, k, Modality="MR")
    p["mixed_modality"] = folder / "mixed_modality"
    p["constant_volume"] = _nifti(folder / "zeros.nii.gz", np.zeros((20, 22, 24), np.float32))
    p["constant_slice"] = _nifti(folder / "constant_slice.nii.gz", np.full((28, 28), 117, np.uint8))
    files = write_dicom_series(_volume(), folder / "mixed_orientation", spacing=(1, 1, 2), uid_seed="orientation")
    _edit_slice(files, 1, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])  # a localizer-like slice
    p["mixed_orientation"] = folder / "mixed_orientation"

    mixed = folder / "two_series"
    mixed.mkdir()
    for tag, depth in (("a", 6), ("b", 4)):
        for f in write_dicom_series(_volume()[:, :, :depth], folder / f"series_{tag}", uid_seed=f"series {tag}"):
            shutil.move(f, mixed / f"{tag}_{f.name}")
        (folder / f"series_{tag}").rmdir()
    p["mixed_series"] = mixed
    p["empty_folder"] = folder / "empty_folder"
    p["empty_folder"].mkdir()
    p["missing"] = folder / "not_there.nii.gz"
    return p
