# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Clinical preprocessing: settings, intensity by modality, orientation, region of interest, grid, dimensions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_sre.data.dicom import write_dicom_image, write_dicom_series
from monai_sre.transforms.clinical import ClinicalPreprocessingConfig, clinical_transforms
from tests.inference.clinical_data import NIBABEL_DATA

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return str(path)


def _run(image, **settings) -> torch.Tensor:
    return clinical_transforms(**settings)({"image": image})["image"]


def test_config_checks_every_setting_and_round_trips():
    config = ClinicalPreprocessingConfig(spacing=2, roi_center=[1, 2, 3], roi_size=[10, 10, 10], modality="ct")
    assert config.spacing == (2.0, 2.0, 2.0) and config.modality == "CT" and config.roi_center == (1.0, 2.0, 3.0)
    assert ClinicalPreprocessingConfig.from_dict(config.to_dict()) == config
    for bad, message in [
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ({"hu_window": (100, -100)}, "hu_window must be"),
        ({"percentiles": (5, 101)}, "percentiles must be"),
        ({"spacing": (1, 1)}, "spacing must be 3 finite numbers"),
        ({"roi_center": (0, 0, 0)}, "roi_center and roi_size must be given together"),
        ({"axcodes": "RRS"}, "axcodes must be three of"),
        ({"size_mode": "zoom"}, "size_mode must be one of"),
        ({"image_size": 0}, "image_size must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            ClinicalPreprocessingConfig(**bad)
    with pytest.raises(ValueError, match=r"unknown preprocessing setting\(s\) \['window'\]"):
        ClinicalPreprocessingConfig.from_dict({"window": 3})


def test_ct_series_is_windowed_in_hounsfield_units(tmp_path):
    hu = np.full((28, 28, 28), -2000, dtype=np.int16)
    hu[7:, :, :] = -1000
    hu[14:, :, :] = 500
    hu[21:, :, :] = 3000
    write_dicom_series(hu, tmp_path / "ct", modality="CT", rescale_intercept=0)
    out = _run(str(tmp_path / "ct"), hu_window=(-1000, 1000))
    expected = np.clip((hu.astype(np.float32) + 1000) / 2000, 0, 1)
    assert out.shape == (1, 28, 28, 28) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)
    assert out.meta["intensity_scaling"] == {
        "rule": "hu_window", "method": "hu_window", "modality": "CT", "hu_window": [-1000.0, 1000.0],
        "target_range": [0.0, 1.0],
    }  # fmt: skip


def test_nifti_is_scaled_by_percentiles_unless_a_modality_is_given(tmp_path):
    ramp = np.linspace(-500, 1500, 28**3, dtype=np.float32).reshape(28, 28, 28)
    path = _nifti(tmp_path / "ramp.nii.gz", ramp)
    out = _run(path, percentiles=(10, 90))
    lo, hi = np.percentile(ramp, [10, 90])
    np.testing.assert_allclose(out[0].numpy(), np.clip((ramp - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert out.meta["intensity_scaling"]["modality"] == "unknown"
    as_ct = _run(path, modality="CT")
    np.testing.assert_allclose(as_ct[0].numpy(), np.clip((ramp + 1000) / 2000, 0, 1), atol=1e-6)


def test_orientation_and_file_format_do_not_change_the_model_input(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, size=(20, 24, 16)).astype(np.int16)
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    ras = _nifti(tmp_path / "ras.nii.gz", volume, affine)
    # The same patient stored with the first two axes reversed (LPS, as scanners often store): flip data and affine.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [1.5 * 19, 1.0 * 23]
    lps = _nifti(tmp_path / "lps.nii.gz", volume[::-1, ::-1].copy(), affine @ flip)
    write_dicom_series(volume, tmp_path / "dcm", spacing=(1.5, 1.0, 2.0), modality="CT")
    outputs = [_run(p, modality="CT") for p in (ras, lps, str(tmp_path / "dcm"))]
    assert nib.aff2axcodes(affine @ flip) == ("L", "P", "S")
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(outputs[2], outputs[0], atol=1e-6, rtol=0)


def test_region_of_interest_in_mm_and_in_voxels(tmp_path):
    volume = np.zeros((64, 64, 64), dtype=np.float32)
    volume[40:48, 10:18, 20:28] = 100.0
    volume[0, 0, 0] = -100.0  # marks the corner
    origin = np.array([-30.0, 5.0, 12.0])
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = origin
    path = _nifti(tmp_path / "cube.nii.gz", volume, affine)
    settings = {"modality": "CT", "hu_window": (0, 100), "size_mode": "crop", "image_size": 28}
    # The region holds the cube and a one-voxel rim of background.
    out = _run(path, roi_center=origin + [44, 14, 24], roi_size=(10, 10, 10), **settings)[0]
    assert out.shape == (28, 28, 28)
    assert torch.all(out[10:18, 10:18, 10:18] == 1.0) and float(out.sum()) == 8**3
    # A region over the image corner keeps its centre: outside the image is the image's lowest value, not shifted in.
    corner = _run(path, roi_center=origin, roi_size=(8, 8, 8), **{**settings, "hu_window": (-100, 0)})[0]
    assert float(corner[14:18, 14:18, 14:18].sum()) == 63 and float(corner.sum()) == 63 and corner[14, 14, 14] == 0
    # Voxel units refer to the image as loaded: a 2 mm file whose cube is at voxels 20:24, 5:9, 10:14.
    coarse = _nifti(tmp_path / "coarse.nii.gz", volume[::2, ::2, ::2].copy(), np.diag([2.0, 2.0, 2.0, 1.0]))
    out_vox = _run(coarse, roi_center=(22, 7, 12), roi_size=(6, 6, 6), roi_units="voxel", spacing=2.0, **settings)[0]
    assert torch.all(out_vox[12:16, 12:16, 12:16] == 1.0) and float(out_vox[12:16, 12:16, 12:16].sum()) == 64
    with pytest.raises(RuntimeError) as info:
        _run(path, roi_center=(500, 0, 0), roi_size=(8, 8, 8), **settings)
    assert "cube.nii.gz: the region of interest (centre [500.0, 0.0, 0.0] mm" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "size_mode, scaled, nonzero",
    [("fit", [28, 14, 7], (28, 14, 7)), ("resize", [28, 28, 28], (28, 28, 28)), ("crop", [40, 20, 10], (28, 20, 10))],
)
def test_size_modes_reach_the_grid(tmp_path, size_mode, scaled, nonzero):
    box = np.full((40, 20, 10), 7.0, dtype=np.float32)
    box[0, 0, 0] = 6.0  # not constant: a constant image is refused
    path = _nifti(tmp_path / "box.nii.gz", box)
    out = _run(path, modality="CT", hu_window=(0, 7), spacing=None, size_mode=size_mode)
    assert out.shape == (1, 28, 28, 28) and out.meta["grid_resize"]["scaled_shape"] == scaled
    assert tuple(int((out[0] > 0.5).any(dim=d).sum()) for d in ((1, 2), (0, 2), (0, 1))) == nonzero


def test_2d_inputs_get_the_models_channels(tmp_path):
    gray = np.arange(30 * 20, dtype=np.float32).reshape(30, 20, 1)
    out = _run(_nifti(tmp_path / "slice.nii.gz", gray), spatial_dims=2, in_channels=3, spacing=None)
    assert out.shape == (3, 28, 28)
    torch.testing.assert_close(out[0], out[2])
    rgb = np.zeros((28, 28, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    write_dicom_image(rgb, tmp_path / "rgb.dcm")
    grey = _run(str(tmp_path / "rgb.dcm"), spatial_dims=2, in_channels=1, spacing=None)
    # an 8-bit image: BT.601 luma, then the training mapping 0-255 -> 0-1
    luma = 200 * 0.299 + 100 * 0.587 + 50 * 0.114
    assert grey.shape == (1, 28, 28) and float(grey[0, 5, 5]) == pytest.approx(luma / 255)
    assert grey.meta["intensity_scaling"]["rule"] == "8bit_range"


@pytest.mark.parametrize(
    "case, spatial_dims, message",
    [
        ("nan", 3, r"nan.nii.gz: 2 voxel value\(s\) are NaN or infinite"),
        ("4d", 3, r"example4d.nii.gz: a 4D NIfTI image \(shape \(128, 96, 24, 2\)\) holding 2 volumes"),
        ("slice", 3, r"slice.nii.gz: a 2D image \(shape \(30, 20, 1\)\) but the model takes 3D volumes"),
        ("volume", 2, r"anatomical.nii: a 3D volume \(shape \(33, 41, 25\)\) but the model takes 2D images"),
    ],
)
def test_inputs_the_model_cannot_take_are_rejected_by_name(tmp_path, case, spatial_dims, message):
    bad = np.ones((8, 8, 8), dtype=np.float32)
    bad[1, 2, 3], bad[4, 5, 6] = np.nan, np.inf
    path = {
        "nan": lambda: _nifti(tmp_path / "nan.nii.gz", bad),
        "4d": lambda: str(NIBABEL_DATA / "example4d.nii.gz"),
        "slice": lambda: _nifti(tmp_path / "slice.nii.gz", np.ones((30, 20, 1), dtype=np.float32)),
        "volume": lambda: str(NIBABEL_DATA / "anatomical.nii"),
    }[case]()
    with pytest.raises(RuntimeError) as info:
        _run(path, spatial_dims=spatial_dims)
    assert isinstance(info.value.__cause__, ValueError)
    assert __import__("re").search(message, str(info.value.__cause__))


def test_former_inference_paths_give_the_same_objects():
    """``monai_sre.inference.volumes`` and ``.dicom_series`` keep every public name of the modules that now hold them."""
    import monai_sre.data.dicom_series as reader
    import monai_sre.inference as inference
    import monai_sre.inference.dicom_series as old_reader
    import monai_sre.inference.volumes as old_clinical
    import monai_sre.transforms as transforms
    import monai_sre.transforms.clinical as clinical

    assert "SpacingGuardd" in clinical.__all__ and "DicomSeriesReader" in reader.__all__
    for old, new in ((old_clinical, clinical), (old_reader, reader)):
        assert old.__all__ == new.__all__
        assert all(getattr(old, name) is getattr(new, name) for name in new.__all__)
    assert inference.clinical_transforms is transforms.clinical_transforms is clinical.clinical_transforms
    assert inference.DicomSeriesReader is reader.DicomSeriesReader
