# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""ClinicalDataset and PredictionWriter on real pydicom/nibabel files, driven by a MONAI SupervisedEvaluator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose

from monai_sre.inference import ClinicalDataset, PredictionWriter, predict_with_model
from monai_sre.transforms import ClassProbabilitiesd
from tests.inference.clinical_data import CT_SERIES, CT_SERIES_GAP, NIBABEL_DATA, tiny_network_def

SETTINGS_3D = {"spatial_dims": 3, "image_size": 28, "in_channels": 1}
COLUMNS = [
    "path", "series_uid", "status", "error", "pred_index", "pred_label", "prob_benign", "prob_malignant", "modality",
    "intensity_rule", "original_shape", "original_spacing", "original_orientation", "preprocessing",
]  # fmt: skip


def _network(seed: int = 0) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    torch.manual_seed(seed)
    return ConfigParser({"net": tiny_network_def(3, 1)}).get_parsed_content("net").eval()


def _run(dataset: ClinicalDataset, net: torch.nn.Module, writer: PredictionWriter, batch_size: int = 2) -> None:
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0),
        network=net,
        postprocessing=Compose([ClassProbabilitiesd(keys="pred")]),
        val_handlers=[writer],
    )
    evaluator.run()


def test_dataset_items(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    paths = [NIBABEL_DATA / "anatomical.nii", CT_SERIES, text, CT_SERIES_GAP]
    ds = ClinicalDataset([str(p) for p in paths], SETTINGS_3D)
    assert len(ds) == 4
    items = [ds[i] for i in range(4)]
    for item in items:
        assert item["image"].shape == (1, 28, 28, 28) and item["image"].dtype == torch.float32
        assert isinstance(item["input"], str)
    described = [json.loads(item["input"]) for item in items]
    assert [d["path"] for d in described] == [str(p) for p in paths]
    nifti, ct, bad, gap = described
    assert nifti["error"] is None and nifti["original_shape"] == [33, 41, 25]
    assert ct["error"] is None and ct["modality"] == "CT" and ct["series_uid"]
    assert ct["preprocessing"]["applied"]["intensity_scaling"]["method"] == "hu_window"
    assert float(items[1]["image"].min()) >= 0.0 and float(items[1]["image"].max()) <= 1.0
    assert "not a NIfTI" in bad["error"] and bad["preprocessing"] is None
    assert "uneven slice spacing" in gap["error"]
    # a failed input gets a blank image, never a partly preprocessed one
    assert not items[2]["image"].any() and not items[3]["image"].any()


def test_dataset_single_path_and_empty():
    ds = ClinicalDataset(str(CT_SERIES), SETTINGS_3D)  # one path, not its characters
    assert len(ds) == 1 and json.loads(ds[0]["input"])["path"] == str(CT_SERIES)
    with pytest.raises(ValueError, match="input paths: none given"):
        ClinicalDataset([], SETTINGS_3D)
    with pytest.raises(ValueError, match="spatial_dims"):
        ClinicalDataset([str(CT_SERIES)], {**SETTINGS_3D, "spatial_dims": 4})


def test_evaluator_writes_rows_like_predict(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    paths = [str(NIBABEL_DATA / "anatomical.nii"), str(CT_SERIES), str(text), str(CT_SERIES_GAP)]
    out = tmp_path / "out" / "predictions.csv"
    net = _network()
    _run(ClinicalDataset(paths, SETTINGS_3D), net, PredictionWriter(out, ["benign", "malignant"]), batch_size=3)

    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [r["path"] for r in rows] == paths
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "error"]
    expected = predict_with_model(paths, net, SETTINGS_3D, class_names=["benign", "malignant"])
    for row, want in zip(rows, expected):
        assert row["status"] == want["status"]
        if row["status"] == "ok":
            probs = [float(row["prob_benign"]), float(row["prob_malignant"])]
            # float64 softmax (ClassProbabilitiesd): sums to 1 where MONAI's Activationsd (float32 inside) was 6e-8 off
            assert sum(probs) == pytest.approx(1.0, abs=1e-12)
            # predict runs batches of one, the evaluator of three: float32 kernels differ in the last bits
            assert probs == pytest.approx([want["prob_benign"], want["prob_malignant"]], abs=2e-6)
            assert int(row["pred_index"]) == want["pred_index"] and row["pred_label"] == want["pred_label"]
            assert json.loads(row["preprocessing"]) == want["preprocessing"]
            assert json.loads(row["original_spacing"]) == want["original_spacing"]
        else:
            assert row["error"] == want["error"] and row["prob_benign"] == row["pred_index"] == ""


def test_writer_multi_label_json_and_errors(tmp_path):
    out = tmp_path / "predictions.json"
    writer = PredictionWriter(out, ["a", "b"], multi_label=True)
    described = {"path": "x.nii.gz", "series_uid": None, "modality": None, "error": None, "original_shape": None,
                 "original_spacing": None, "original_orientation": None, "preprocessing": None}  # fmt: skip
    row = writer._row(described, torch.tensor([0.7, 0.9]))
    assert row["pred_index"] == 1 and row["pred_label"] == "a;b"
    assert writer._row(described, torch.tensor([0.2, 0.1]))["pred_label"] == ""
    with pytest.raises(ValueError, match="ClassProbabilitiesd"):
        writer._row(described, torch.tensor([2.5, -1.0]))  # logits, not probabilities
    with pytest.raises(ValueError, match="3 class scores"):
        writer._row(described, torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        PredictionWriter(tmp_path / "predictions.txt", ["a"])
    with pytest.raises(ValueError, match="class_names"):
        PredictionWriter(out, [])

    _run(ClinicalDataset([str(CT_SERIES)], SETTINGS_3D), _network(), writer)
    written = json.loads(out.read_text())
    assert len(written) == 1 and written[0]["status"] == "ok" and set(written[0]["pred_label"].split(";")) <= {"a", "b"}


def test_failed_run_keeps_previous_file(tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("previous results\n")
    with pytest.raises(Exception, match="ClassProbabilitiesd"):
        evaluator = SupervisedEvaluator(  # no postprocessing: the writer gets logits and refuses them
            device=torch.device("cpu"),
            val_data_loader=DataLoader(ClinicalDataset([str(CT_SERIES)], SETTINGS_3D), batch_size=1),
            network=_network(seed=3),
            val_handlers=[PredictionWriter(out, ["benign", "malignant"])],
        )
        with torch.no_grad():
            net = evaluator.network
            net.fc.bias.fill_(5.0)  # logits far outside [0, 1]
        evaluator.run()
    assert out.read_text() == "previous results\n"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["predictions.csv"]
