# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The bundles' ``run inferring`` with the shipped checkpoints on real NIfTI files, DICOM files and DICOM series.

Checks one CSV row per input with a header, bad inputs reported in their row, and the same predictions as
``monai_sre.inference.predict`` (what ``monai-sre predict --bundle`` runs): both use one preprocessing code.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow
from pydicom.data import get_testdata_file

from monai_sre.data import export_medmnist
from monai_sre.inference import InputsFailedError, predict
from monai_sre.io.files import write_csv

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DICOMDIR_TESTS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
CT_SERIES = DICOMDIR_TESTS / "98892001" / "CT5N"  # 5 axial CT slices
CT_SERIES_GAP = DICOMDIR_TESTS / "77654033" / "CT2"  # 161 slices missing between the first two: refused
FIXED_COLUMNS = ["path", "series_uid", "status", "error", "pred_index", "pred_label"]
TRAILING_COLUMNS = [
    "modality", "intensity_rule", "original_shape", "original_spacing", "original_orientation", "preprocessing"
]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Path]:
    """The first MedMNIST test samples exported as NIfTI and DICOM, and a text file that is no image."""
    root = tmp_path_factory.mktemp("inference_inputs")
    found = {}
    for flag, limit in (("breastmnist", 4), ("adrenalmnist3d", 2)):
        for fmt in ("nifti", "dicom"):
            out = root / f"{flag}_{fmt}"
            export_medmnist(flag, out, image_format=fmt, splits="test", root=data_root, progress=False, limit=limit)
            found[f"{flag}_{fmt}"] = out
    found["text"] = root / "notes.txt"
    found["text"].write_text("not an image\n")
    return found


def _bundle(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns("data", "eval", "*.ts", "*.onnx"))
    return dst


def _class_names(bundle: Path) -> list[str]:
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    return parser.get_parsed_content("class_names")


def _check_rows(csv_path: Path, bundle: Path, expected_paths: list[str], errors: dict[int, str]) -> list[dict]:
    """Header, one row per input in order, probabilities, errors, and agreement with ``predict``."""
    names = _class_names(bundle)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIXED_COLUMNS + [f"prob_{n}" for n in names] + TRAILING_COLUMNS
        rows = list(reader)
    assert [r["path"] for r in rows] == expected_paths
    assert {i for i, r in enumerate(rows) if r["status"] == "error"} == set(errors)
    settings = ConfigParser.load_config_file(bundle / "configs" / "inference.json")["clinical_preprocessing"]
    for i, row in enumerate(rows):
        probs = [row[f"prob_{n}"] for n in names]
        if i in errors:
            assert errors[i] in row["error"] and row["path"] in row["error"]
            assert probs == [""] * len(names) and row["pred_index"] == row["pred_label"] == ""
            continue
        probs = [float(p) for p in probs]
        # float64 softmax (ClassProbabilitiesd) written at full precision: the row sums to 1 (MONAI's Activationsd, which
        # computes in float32, gave rows 4e-8 off)
        assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) == pytest.approx(1.0, abs=1e-12)
        index = int(row["pred_index"])
        assert probs[index] == max(probs) and row["pred_label"] == names[index]
        recorded = json.loads(row["preprocessing"])
        # the exported MedMNIST files are 8-bit: the training mapping, named in the row
        assert row["intensity_rule"] == ("hu_window" if row["modality"] == "CT" else "8bit_range")
        # every literal choice of the config is recorded with the prediction
        assert {k: recorded[k] for k, v in settings.items() if not str(v).startswith("@")} == {
            k: v for k, v in settings.items() if not str(v).startswith("@")
        }
    # ``monai-sre predict --bundle`` reads the same inference.json and must predict the same
    expected = predict(expected_paths, bundle)
    assert [r["status"] for r in expected] == [r["status"] for r in rows]
    for row, want in zip(rows, expected):
        if want["status"] == "ok":
            # run inferring batches 8 inputs, predict one: float32 kernels differ in the last bits with the batch size
            assert [float(row[f"prob_{n}"]) for n in names] == pytest.approx(
                [want[f"prob_{n}"] for n in names], abs=2e-6
            )
            assert json.loads(row["preprocessing"]) == want["preprocessing"]
    return rows


def test_run_inferring_2d_cli(tmp_path, inputs):
    bundle = _bundle(tmp_path, "sre_medmnist_2d")
    nifti = min((inputs["breastmnist_nifti"] / "test").glob("*.nii.gz"))
    dicom_files = sorted(str(p) for p in (inputs["breastmnist_dicom"] / "test").glob("*.dcm"))
    missing = tmp_path / "missing.nii.gz"
    latin1 = tmp_path / os.fsdecode(b"s\xe9rie.nii.gz")  # a file name that is not UTF-8 must not lose the rows
    shutil.copy(nifti, latin1)
    paths = [str(nifti), str(inputs["breastmnist_dicom"]), str(inputs["text"]), str(missing), str(latin1)]
    out = tmp_path / "results" / "predictions.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", "configs/inference.json",
           "--input_paths", repr(paths), "--output_file", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=600, check=False,
                          errors="backslashreplace")  # fmt: skip
    # like `monai-sre predict`: a non-zero exit when an input failed, after every row is written
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "InputsFailedError: 2 of 8 input(s) failed (first: " in proc.stdout + proc.stderr
    assert len(dicom_files) == 4
    escaped = str(tmp_path / "s\\xe9rie.nii.gz")
    with open(out, newline="", encoding="utf-8") as f:  # valid UTF-8: the Latin-1 byte is written as \xe9
        reader = csv.DictReader(f)
        header, all_rows = reader.fieldnames, list(reader)
    assert [r["path"] for r in all_rows] == [str(nifti), *dicom_files, str(inputs["text"]), str(missing), escaped]
    assert all_rows[7]["status"] == "ok" and all_rows[7]["prob_malignant"] == all_rows[0]["prob_malignant"]
    others = tmp_path / "others.csv"  # the rows of the real paths, checked against `predict` below
    write_csv(others, header, ([r[c] for c in header] for r in all_rows[:7]))
    rows = _check_rows(
        others,
        bundle,
        [str(nifti), *dicom_files, str(inputs["text"]), str(missing)],
        {5: "not a NIfTI (.nii, .nii.gz) or DICOM file", 6: "no such file or folder"},
    )
    # the NIfTI and the DICOM export of the same sample give the same prediction
    assert rows[0]["prob_malignant"] == rows[1]["prob_malignant"]
    assert rows[1]["modality"] == "OT" and rows[1]["series_uid"]
    assert "8 input(s): 6 predicted, 2 failed" in proc.stdout + proc.stderr
    assert not (bundle / "eval").exists()  # nothing written besides the requested file


def test_run_inferring_3d_workflow(tmp_path, inputs):
    bundle = _bundle(tmp_path, "sre_medmnist_3d")
    out = tmp_path / "predictions.csv"
    nifti = sorted(str(p) for p in (inputs["adrenalmnist3d_nifti"] / "test").glob("*.nii.gz"))
    series = sorted(str(p) for p in (inputs["adrenalmnist3d_dicom"] / "test").iterdir())
    paths = [str(inputs["adrenalmnist3d_nifti"]), str(inputs["adrenalmnist3d_dicom"]), str(CT_SERIES),
             str(CT_SERIES_GAP)]  # fmt: skip
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        run_id="inferring",
        bundle_root=str(bundle),
        input_paths=paths,
        output_file=str(out),
    )
    wf.initialize()
    assert not wf.check_properties()
    with pytest.raises(RuntimeError) as info:  # the series with a gap failed: the run says so after writing
        wf.run()
    wf.finalize()
    cause = info.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, InputsFailedError) and f"1 of 6 input(s) failed (first: {CT_SERIES_GAP}" in str(cause)
    assert len(nifti) == len(series) == 2
    rows = _check_rows(out, bundle, [*nifti, *series, str(CT_SERIES), str(CT_SERIES_GAP)], {5: "uneven slice spacing"})
    assert [rows[i]["prob_hyperplasia"] for i in (0, 1)] == [rows[i]["prob_hyperplasia"] for i in (2, 3)]
    ct = rows[4]
    assert ct["modality"] == "CT" and json.loads(ct["original_shape"]) == [16, 16, 5]
    assert json.loads(ct["preprocessing"])["applied"]["intensity_scaling"]["method"] == "hu_window"


def test_default_input_is_dataset_dir(tmp_path, inputs):
    """Without ``input_paths`` the bundle predicts on every image under ``dataset_dir``."""
    bundle = _bundle(tmp_path, "sre_medmnist_2d")
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(bundle),
        dataset_dir=str(inputs["breastmnist_nifti"]),
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(bundle / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == [f"breastmnist_test_{i:06d}.nii.gz" for i in range(4)]
    assert {r["status"] for r in rows} == {"ok"}
