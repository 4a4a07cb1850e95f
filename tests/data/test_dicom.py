# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The general DICOM writers: any uint8/int8/uint16/int16 array, geometry, UIDs, atomic writes, pydicom bytes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import monai_sre.data.dicom as dicom_module
from monai_sre.data.dicom import write_dicom_image, write_dicom_series
from monai_sre.data.export import write_nifti
from tests.data.conftest import monai_load, sitk_array

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader", "ignore:nvImageCodec")


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "dtype, shape, kwargs",
    [
        (np.uint8, (28, 28, 28), {}),
        (np.int16, (17, 9, 5), {"modality": "CT", "rescale_intercept": -1024}),
        (np.uint16, (7, 5, 3), {"modality": "MR", "patient_name": "Doe^Jane", "series_description": "odd length"}),
        (np.int8, (3, 5, 2), {"spacing": (0.7031249999, 0.5, 2.5), "origin": (1.5, -2.0, 3.25)}),
    ],
)
def test_fast_writer_gives_the_bytes_pydicom_writes(tmp_path, dtype, shape, kwargs):
    info = np.iinfo(dtype)
    volume = np.random.default_rng(0).integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    image = volume[:, :, 0]
    spacing2d = {k: v[:2] if k == "spacing" else v for k, v in kwargs.items()}
    write_dicom_series(volume, tmp_path / "fast", uid_seed="s", **kwargs)
    write_dicom_image(image, tmp_path / "fast.dcm", uid_seed="s", **spacing2d)
    write_dicom_series(volume, tmp_path / "ref", uid_seed="s", encoder="pydicom", **kwargs)
    write_dicom_image(image, tmp_path / "ref.dcm", uid_seed="s", encoder="pydicom", **spacing2d)
    assert _files(tmp_path / "fast") == _files(tmp_path / "ref")
    assert (tmp_path / "fast.dcm").read_bytes() == (tmp_path / "ref.dcm").read_bytes()
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_dicom_image(rgb, tmp_path / "rgb_ref.dcm", uid_seed="r", encoder="pydicom")
    write_dicom_image(rgb, tmp_path / "rgb_fast.dcm", uid_seed="r")
    assert (tmp_path / "rgb_fast.dcm").read_bytes() == (tmp_path / "rgb_ref.dcm").read_bytes()
    with pytest.raises(ValueError, match=r"encoder must be one of \('template', 'pydicom'\), got 'gdcm'"):
        write_dicom_image(rgb, tmp_path / "bad.dcm", encoder="gdcm")


def test_ct_sized_int16_series_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1024, 3071, (256, 192, 40), dtype=np.int16)
    spacing, origin = (0.8, 0.6, 2.5), (-100.0, 50.0, 10.0)
    files = write_dicom_series(volume, tmp_path / "ct", spacing=spacing, origin=origin, modality="CT")
    assert len(files) == 40 and [f.name for f in files[:2]] == ["slice_0000.dcm", "slice_0001.dcm"]
    img = monai_load(tmp_path / "ct")  # CT: RescaleSlope 1 / RescaleIntercept 0, so MONAI gives float32
    np.testing.assert_array_equal(img[0].numpy(), volume.astype(np.float32))
    expected_affine = np.diag(list(spacing) + [1.0])
    expected_affine[:3, 3] = origin
    np.testing.assert_allclose(img.affine.numpy(), expected_affine, atol=1e-6)
    array, direction = sitk_array(tmp_path / "ct")
    np.testing.assert_array_equal(array, volume.transpose(2, 1, 0))
    assert direction == (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    np.testing.assert_allclose(image.GetSpacing(), spacing)
    np.testing.assert_allclose(image.GetOrigin(), (100.0, -50.0, 10.0))  # LPS
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == dicom_module.SOP_CLASS_UIDS["CT"] and ds.Modality == "CT"
    assert (ds.BitsAllocated, ds.PixelRepresentation, float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (
        16,
        1,
        1.0,
        0.0,
    )
    # The same volume as NIfTI: same array and the same affine.
    write_nifti(volume, tmp_path / "ct.nii.gz", spacing=spacing, origin=origin)
    nii = monai_load(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(nii[0].numpy(), volume)
    np.testing.assert_allclose(nii.affine.numpy(), expected_affine, atol=1e-6)


def test_readers_agree_for_each_kind_of_image(tmp_path):
    """MONAI's default reader and PydicomReader give the input back; NIfTI and DICOM give the same MetaTensor."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    vol = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    write_dicom_image(gray, tmp_path / "g.dcm")
    write_dicom_image(rgb, tmp_path / "c.dcm")
    write_dicom_series(vol, tmp_path / "v")
    write_nifti(gray, tmp_path / "g.nii.gz")
    write_nifti(rgb, tmp_path / "c.nii.gz")
    write_nifti(vol, tmp_path / "v.nii.gz")
    for name, expected, channel_dim in (
        ("g", gray[None], None),
        ("c", rgb.transpose(2, 0, 1), -1),
        ("v", vol[None], None),
    ):
        loaded = [
            monai_load(tmp_path / f"{name}.dcm" if name != "v" else tmp_path / "v", channel_dim),
            monai_load(tmp_path / f"{name}.dcm" if name != "v" else tmp_path / "v", channel_dim, "PydicomReader"),
            monai_load(tmp_path / f"{name}.nii.gz", channel_dim),
        ]
        for img in loaded:
            np.testing.assert_array_equal(img.numpy(), expected)
            np.testing.assert_array_equal(img.affine.numpy(), np.eye(4))
    # Without the channel hint MONAI takes a 2D RGB file for a 3D image: documented, hence channel_dim=-1.
    assert tuple(monai_load(tmp_path / "c.dcm").shape) == (1, 5, 6, 3)


def test_uids_are_random_seeded_or_given(tmp_path):
    vol = np.zeros((4, 4, 3), np.uint8)
    a = [pydicom.dcmread(f) for f in write_dicom_series(vol, tmp_path / "a")]
    b = [pydicom.dcmread(f) for f in write_dicom_series(vol, tmp_path / "b")]
    assert a[0].SeriesInstanceUID != b[0].SeriesInstanceUID and a[0].StudyInstanceUID != b[0].StudyInstanceUID
    write_dicom_series(vol, tmp_path / "s1", uid_seed="x")
    write_dicom_series(vol, tmp_path / "s2", uid_seed="x")
    assert _files(tmp_path / "s1") == _files(tmp_path / "s2")
    study = str(pydicom.uid.generate_uid())
    c = pydicom.dcmread(write_dicom_image(vol[:, :, 0], tmp_path / "c.dcm", study_uid=study, series_uid="1.2.3"))
    assert c.StudyInstanceUID == study and c.SeriesInstanceUID == "1.2.3" and c.InstanceNumber == 1


def test_bad_arrays_and_existing_targets(tmp_path):
    with pytest.raises(TypeError, match=r"cannot write a float32 array as DICOM: supported pixel types are uint8"):
        write_dicom_series(np.zeros((4, 4, 4), np.float32), tmp_path / "f")
    with pytest.raises(TypeError, match=r"an RGB DICOM image must be uint8, got uint16"):
        write_dicom_image(np.zeros((4, 4, 3), np.uint16), tmp_path / "f.dcm")
    with pytest.raises(ValueError, match=r"a DICOM series needs a 3D \(X, Y, Z\) array, got shape \(4, 4\)"):
        write_dicom_series(np.zeros((4, 4), np.uint8), tmp_path / "f")
    with pytest.raises(ValueError, match=r"shape \(H, W\) or \(H, W, 3\), got \(4, 4, 4\)"):
        write_dicom_image(np.zeros((4, 4, 4), np.uint8), tmp_path / "f.dcm")
    with pytest.raises(ValueError, match=r"spacing must be 3 positive numbers"):
        write_dicom_series(np.zeros((4, 4, 4), np.uint8), tmp_path / "f", spacing=(1, 0, 1))
    with pytest.raises(ValueError, match=r"PatientName must be at most 64 ASCII characters"):
        write_dicom_series(np.zeros((4, 4, 4), np.uint8), tmp_path / "f", patient_name="Zoë")
    assert list(tmp_path.iterdir()) == []

    write_dicom_series(np.zeros((4, 4, 2), np.uint8), tmp_path / "s")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_dicom_series(np.ones((4, 4, 2), np.uint8), tmp_path / "s")
    write_dicom_series(np.ones((4, 4, 3), np.uint8), tmp_path / "s", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"slice_000{k}.dcm" for k in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_a_failed_write_leaves_no_trace_and_keeps_the_old_series(tmp_path, monkeypatch):
    write_dicom_series(np.zeros((4, 4, 5), np.uint8), tmp_path / "s", uid_seed="old")
    before = _files(tmp_path / "s")
    written = []
    original = dicom_module._Template.write

    def failing(self, path, values, pixels):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        original(self, path, values, pixels)

    monkeypatch.setattr(dicom_module._Template, "write", failing)
    with pytest.raises(KeyboardInterrupt):
        write_dicom_series(np.ones((4, 4, 5), np.uint8), tmp_path / "s", overwrite=True)
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        write_dicom_series(np.ones((4, 4, 5), np.uint8), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"] and _files(tmp_path / "s") == before


@pytest.mark.slow
def test_ct_sized_512_by_512_by_100_series(tmp_path):
    volume = np.random.default_rng(0).integers(-1024, 3071, (512, 512, 100), dtype=np.int16)
    write_dicom_series(volume, tmp_path / "ct", spacing=(0.7, 0.7, 1.25), modality="CT", uid_seed="ct")
    np.testing.assert_array_equal(monai_load(tmp_path / "ct")[0].numpy(), volume.astype(np.float32))
    np.testing.assert_array_equal(sitk_array(tmp_path / "ct")[0], volume.transpose(2, 1, 0))
