# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Predictions from a bundle on real clinical files (pydicom's and nibabel's test data), good and bad."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from monai_sre.evaluation import scores_from_logits
from monai_sre.inference import load_bundle, predict, predict_with_model
from tests.inference.clinical_data import (
    CLASS_NAMES,
    CT_SERIES,
    MR_SINGLE_SLICES,
    NIBABEL_DATA,
    PYDICOM_DATA,
    make_bundle,
)

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
PROBS = [f"prob_{n}" for n in CLASS_NAMES]


def _assert_prediction(row: dict) -> None:
    assert row["status"] == "ok", row["error"]
    probs = [row[k] for k in PROBS]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5) and all(0 <= p <= 1 for p in probs)
    assert row["pred_index"] == int(np.argmax(probs)) and row["pred_label"] == CLASS_NAMES[row["pred_index"]]


def test_real_3d_series_and_nifti_give_predictions(bundle3d):
    rows = predict([CT_SERIES, NIBABEL_DATA / "anatomical.nii"], bundle3d)
    for row in rows:
        _assert_prediction(row)
    ct, mr = rows
    assert ct["path"] == str(CT_SERIES) and ct["series_uid"] == "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"
    assert (ct["original_shape"], ct["original_spacing"], ct["original_orientation"]) == (
        [16, 16, 5], [0.488281, 0.488281, 2.5], "LPS",
    )  # fmt: skip
    # each row names the intensity rule of the input contract that was applied: CT by its HU window, the MR
    # volume (16-bit, no modality in NIfTI) by the percentiles of its non-zero voxels
    assert ct["modality"] == "CT" and ct["intensity_rule"] == "hu_window"
    assert ct["preprocessing"]["applied"]["intensity_scaling"]["hu_window"] == [-1000.0, 1000.0]
    assert (mr["original_shape"], mr["original_spacing"], mr["original_orientation"]) == (
        [33, 41, 25],
        [2.0] * 3,
        "LAS",
    )
    assert mr["series_uid"] is None and mr["intensity_rule"] == "foreground_percentiles"
    low, high = mr["preprocessing"]["applied"]["intensity_scaling"]["foreground_range"]
    assert 0 < low < high
    sha = hashlib.sha256((bundle3d / "models" / "model.pt").read_bytes()).hexdigest()
    assert {(r["bundle_name"], r["bundle_version"], r["checkpoint"], r["checkpoint_sha256"]) for r in rows} == {
        ("tiny_3d", "0.1.2", str(bundle3d / "models" / "model.pt"), sha)
    }
    assert all(r[k] >= 0 for r in rows for k in ("load_s", "preprocess_s", "model_s"))


def test_real_2d_dicom_files_give_predictions(bundle2d):
    rows = predict([PYDICOM_DATA / "CT_small.dcm", PYDICOM_DATA / "MR_small.dcm", MR_SINGLE_SLICES], bundle2d)
    assert len(rows) == 5  # the folder holds 3 one-slice series
    for row in rows:
        _assert_prediction(row)
    assert [r["modality"] for r in rows] == ["CT", "MR", "MR", "MR", "MR"]
    assert rows[0]["original_shape"] == [128, 128] and rows[0]["original_spacing"] == [0.661468, 0.661468]
    assert len({r["series_uid"] for r in rows[2:]}) == 3


def test_dicom_series_and_its_nifti_conversion_give_the_same_prediction(bundle3d, tmp_path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(CT_SERIES)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "ct.nii.gz"))
    # A NIfTI file does not say it is CT: tell it, as a user would with --modality CT.
    dicom, nifti = predict([CT_SERIES, tmp_path / "ct.nii.gz"], bundle3d, preprocessing_overrides={"modality": "CT"})
    _assert_prediction(dicom)
    _assert_prediction(nifti)
    np.testing.assert_allclose([nifti[k] for k in PROBS], [dicom[k] for k in PROBS], atol=1e-5)
    assert nifti["original_shape"] == dicom["original_shape"] and nifti["original_orientation"] == "LPS"


def test_folder_mixing_two_series_gives_two_results(bundle3d, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in sorted(CT_SERIES.iterdir()):
        shutil.copy(f, mixed / f"a_{f.name}")
        derived = pydicom.dcmread(f)  # a second series over the same slices: other UID, inverted pixels
        derived.SeriesInstanceUID = derived.SeriesInstanceUID + ".99"
        derived.SOPInstanceUID = derived.SOPInstanceUID + ".99"
        derived.PixelData = (2000 - derived.pixel_array).astype(np.int16).tobytes()
        derived.save_as(mixed / f"b_{f.name}")
    rows = predict([mixed], bundle3d)
    assert len(rows) == 2 and len({r["series_uid"] for r in rows}) == 2
    for row in rows:
        _assert_prediction(row)
        assert row["original_shape"] == [16, 16, 5]  # one series each, not 10 slices merged


def test_bad_inputs_are_reported_and_the_others_still_succeed(bundle3d, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
    missing, duplicated = tmp_path / "missing_slice", tmp_path / "duplicated_slice"
    shutil.copytree(CT_SERIES, missing)
    (missing / "2693").unlink()
    shutil.copytree(CT_SERIES, duplicated)
    shutil.copy(CT_SERIES / "2693", duplicated / "2693_copy")
    values = np.ones((10, 10, 10), dtype=np.float32)
    values[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "nan.nii.gz")
    bad = {
        tmp_path / "empty": "no NIfTI or DICOM image found (the folder is empty)",
        tmp_path / "report.pdf": "not a NIfTI (.nii, .nii.gz) or DICOM file",
        PYDICOM_DATA / "MR_truncated.dcm": "the pixel data holds 8130 bytes, less than the 8192 that Rows x Columns",
        missing: "uneven slice spacing: 5.000 mm between 3023 and 2392",
        duplicated: "duplicated slice positions: 2693 and 2693_copy",
        NIBABEL_DATA / "example4d.nii.gz": "a 4D NIfTI image (shape (128, 96, 24, 2)) holding 2 volumes",
        tmp_path / "nan.nii.gz": "1 voxel value(s) are NaN or infinite",
        PYDICOM_DATA / "CT_small.dcm": "a 2D image (shape (128, 128)) but the model takes 3D volumes",
    }
    inputs = list(bad)
    inputs.insert(3, CT_SERIES)  # a good series among the bad ones
    rows = predict(inputs, bundle3d)
    assert len(rows) == len(inputs)
    _assert_prediction(rows.pop(3))
    for row, (path, reason) in zip(rows, bad.items()):
        assert row["status"] == "error" and row["path"] == str(path)
        assert row["error"].startswith(str(path)) and reason in row["error"], row["error"]
        assert all(row[k] is None for k in ["pred_index", "pred_label", *PROBS])


def test_a_volume_for_a_2d_bundle_is_rejected(bundle2d):
    (row,) = predict([CT_SERIES], bundle2d)
    assert row["status"] == "error" and "a 3D volume (shape (16, 16, 5)) but the model takes 2D images" in row["error"]


def test_rotation_check_reports_the_spread(bundle3d):
    (row,) = predict([NIBABEL_DATA / "anatomical.nii"], bundle3d, rotation_check=True)
    _assert_prediction(row)
    assert 0 < row["rotation_spread"] < 1 and 0 <= row["rotation_agreement"] <= 1
    # Without a bundle: a model that only averages the image cannot see rotations at all.
    pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    (row,) = predict_with_model(
        [NIBABEL_DATA / "anatomical.nii"], pooled, {"image_size": 28}, CLASS_NAMES, rotation_check=True
    )
    _assert_prediction(row)
    assert row["rotation_spread"] < 1e-6 and row["rotation_agreement"] == 1.0


def test_bundle_settings_checkpoint_formats_and_errors(bundle2d, tmp_path):
    loaded = load_bundle(bundle2d)  # its checkpoint is {"model": state_dict}
    assert loaded.class_names == list(CLASS_NAMES) and not loaded.network.training
    assert (loaded.preprocessing.spatial_dims, loaded.preprocessing.in_channels) == (2, 3)
    assert loaded.checkpoint_sha256 == hashlib.sha256(Path(loaded.checkpoint).read_bytes()).hexdigest()

    settings = {"modality": "CT", "hu_window": "@window"}  # a reference, resolved by the bundle's parser
    bundle = make_bundle(tmp_path / "b", 3, clinical_preprocessing=settings, extra_config={"window": [-200, 300]})
    assert load_bundle(bundle).preprocessing.hu_window == (-200.0, 300.0)
    overrides = {"hu_window": [0, 80], "roi_center": [0, 0, 0], "roi_size": [50, 50, 50]}
    overridden = load_bundle(bundle, preprocessing_overrides=overrides)
    assert overridden.preprocessing.hu_window == (0.0, 80.0) and overridden.preprocessing.roi_size == (50.0,) * 3

    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nowhere.pt not found"):
        load_bundle(bundle, checkpoint=tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match=r"model.pt does not fit the ResNet of this configuration"):
        load_bundle(bundle, checkpoint=bundle2d / "models" / "model.pt")
    with pytest.raises(FileNotFoundError, match=r"metadata.json not found"):
        load_bundle(tmp_path)
    with pytest.raises(ValueError, match=r"preprocessing: unknown preprocessing setting\(s\) \['hu'\]"):
        load_bundle(bundle, preprocessing_overrides={"hu": 1})


def test_multi_label_bundles_use_independent_probabilities(tmp_path):
    bundle = make_bundle(tmp_path / "b", 3, class_names=("a", "b", "c"), extra_config={"multi_label": True})
    assert load_bundle(bundle).multi_label
    flags = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(1, 3))
    with torch.no_grad():
        flags[2].weight.zero_()
        flags[2].bias.copy_(torch.tensor([2.0, -2.0, 1.0]))  # sigmoid: 0.88, 0.12, 0.73 whatever the image
    (row,) = predict_with_model([CT_SERIES], flags, {}, ("a", "b", "c"), multi_label=True)
    assert row["pred_label"] == "a;c" and row["pred_index"] == 0
    assert [row[f"prob_{n}"] for n in "abc"] == pytest.approx([0.880797, 0.119203, 0.731059], abs=1e-6)


def test_probabilities_near_one_stay_distinct_as_the_evaluation_scores_them():
    # float32 softmax ties confident probabilities (two BreastMNIST test images of the 2D bundle's 0.9.0 weights: both
    # 0.999995), which changed the AUC of the rows; predict scores float64, as the bundle evaluation does
    def confident(margin: float) -> torch.nn.Module:
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
        with torch.no_grad():
            net[2].weight.zero_()
            net[2].bias.copy_(torch.tensor([0.0, margin]))
        return net

    rows = [predict_with_model([CT_SERIES], confident(m), {}, ("a", "b"))[0] for m in (12.001, 12.01)]
    got = [row["prob_b"] for row in rows]
    expected = [float(scores_from_logits(torch.tensor([[0.0, m]]), "binary-class")[0, 1]) for m in (12.001, 12.01)]
    assert got == expected and got[0] < got[1]  # float32 gives both 0.99999392
    single = [float(torch.softmax(torch.tensor([0.0, m]), 0)[1]) for m in (12.001, 12.01)]
    assert single[0] == single[1]


def test_single_logit_model_gets_a_sigmoid_as_the_evaluation_scores_it():
    # a softmax over one logit is 1.0 for every input; the evaluation (scores_from_logits) takes a sigmoid
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(1, 1))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.fill_(-0.7)
    row = predict_with_model([CT_SERIES], net, {}, ("positive",))[0]
    assert row["status"] == "ok" and row["prob_positive"] == float(torch.sigmoid(torch.tensor(-0.7).double()))
    assert row["prob_positive"] == float(scores_from_logits(torch.tensor([[-0.7]]), "binary-class")[0, 0])
