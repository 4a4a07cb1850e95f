# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``monai-sre evaluate-rotation`` on real MedMNIST test images with networks built from a bundle config."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_sre.cli import main
from monai_sre.evaluation.metrics import medmnist_acc, medmnist_auc, scores_from_logits


def _resnet(channels: int, classes: int, width: int) -> dict:
    return {
        "_target_": "monai.networks.nets.ResNet",
        "block": "basic",
        "layers": [1, 1, 1, 1],
        "block_inplanes": [width, width, 2 * width, 2 * width],
        "spatial_dims": 2,
        "n_input_channels": channels,
        "num_classes": classes,
        "conv1_t_size": 3,
        "no_max_pool": True,
    }


@pytest.fixture()
def bundle(tmp_path):
    """A bundle folder whose train.json defines two networks, and a checkpoint for each (two formats)."""
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    config = {"flag": "breastmnist", "image_size": 28, "network_def": _resnet(1, 2, 4), "baseline_def": _resnet(1, 2, 8)}
    (root / "configs" / "train.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    parser = ConfigParser(config)
    sre, base = parser.get_parsed_content("network_def"), parser.get_parsed_content("baseline_def")
    torch.save(sre.state_dict(), tmp_path / "sre.pt")  # flat state dict, as CheckpointSaver writes
    torch.save({"model": base.state_dict()}, tmp_path / "base.pt")
    return root, {"sre": sre, "base": base}


def _expected(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray, task: str) -> tuple[float, float]:
    x = torch.from_numpy(images).float() / 255
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
    with torch.no_grad():
        scores = scores_from_logits(net.eval()(x), task)
    return medmnist_acc(labels, scores, task), medmnist_auc(labels, scores, task)


def test_evaluate_rotation_two_checkpoints(bundle, tmp_path, data_root, capsys):
    from monai_sre.data.medmnist import load_split

    root, nets = bundle
    out = tmp_path / "report"
    argv = ["evaluate-rotation", "--bundle", str(root), "--data-root", str(data_root), "--out", str(out)]
    argv += ["--checkpoint", str(tmp_path / "sre.pt"), str(tmp_path / "base.pt"), "--name", "sre", "resnet"]
    argv += ["--network-id", "network_def", "baseline_def", "--limit", "24", "--batch-size", "16", "--no-progress"]
    assert main(argv) == 0
    assert "sre: ACC@0" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "rotation_resnet.csv",
        "rotation_robustness.png",
        "rotation_sre.csv",
        "rotation_summary.json",
    ]
    images, labels = load_split("breastmnist", "test", 28, data_root)
    for name, net in (("sre", nets["sre"]), ("resnet", nets["base"])):
        with open(out / f"rotation_{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 38 and {r["n"] for r in rows} == {"24"}
        acc, auc = _expected(net, images[:24], labels[:24], "binary-class")
        assert float(rows[0]["acc"]) == pytest.approx(acc) and float(rows[0]["auc"]) == pytest.approx(auc)
        rot180 = _expected(net, np.ascontiguousarray(images[:24, ::-1, ::-1]), labels[:24], "binary-class")
        assert float(rows[18]["acc"]) == pytest.approx(rot180[0])  # rot_180 is the exact half turn
    report = json.loads((out / "rotation_summary.json").read_text())
    assert sorted(report["models"]) == ["resnet", "sre"] and report["spatial_dims"] == 2
    assert (out / "rotation_robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_rotation_rgb_flag_override(tmp_path, data_root):
    from monai_sre.data.medmnist import load_split

    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    config = {"flag": "breastmnist", "network_def": _resnet(3, 5, 4)}
    (root / "configs" / "train.json").write_text(json.dumps(config))
    torch.manual_seed(1)
    net = ConfigParser(config).get_parsed_content("network_def")
    torch.save(net.state_dict(), tmp_path / "rgb.pt")
    argv = ["evaluate-rotation", "--bundle", str(root), "--checkpoint", str(tmp_path / "rgb.pt")]
    argv += ["--flag", "retinamnist", "--data-root", str(data_root), "--out", str(tmp_path / "out")]
    argv += ["--limit", "30", "--interpolation", "nearest", "--no-progress"]
    assert main(argv) == 0
    with open(tmp_path / "out" / "rotation_rgb.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images, labels = load_split("retinamnist", "test", 28, data_root)
    acc, _ = _expected(net, images[:30], labels[:30], "ordinal-regression")
    assert float(rows[0]["acc"]) == pytest.approx(acc)
    report = json.loads((tmp_path / "out" / "rotation_summary.json").read_text())
    assert report["task"] == "ordinal-regression" and report["interpolation"] == "nearest"


def test_evaluate_rotation_bad_input(bundle, tmp_path, data_root, capsys):
    root, _ = bundle
    common = ["--data-root", str(data_root), "--out", str(tmp_path / "out"), "--no-progress", "--limit", "4"]
    missing = tmp_path / "nope.pt"
    assert main(["evaluate-rotation", "--bundle", str(root), "--checkpoint", str(missing), *common]) == 2
    assert f"checkpoint {missing} not found" in capsys.readouterr().err
    # base.pt holds the wider baseline: it does not fit network_def
    assert main(["evaluate-rotation", "--bundle", str(root), "--checkpoint", str(tmp_path / "base.pt"), *common]) == 2
    assert "does not fit 'network_def'" in capsys.readouterr().err
    no_config = ["evaluate-rotation", "--bundle", str(tmp_path), "--checkpoint", str(tmp_path / "sre.pt")]
    assert main([*no_config, *common]) == 2
    assert "train.json not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written when the input is refused
