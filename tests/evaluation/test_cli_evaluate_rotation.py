# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``monai-sre evaluate-rotation``: real MedMNIST test images read through the bundle's datalist, as ``run evaluating``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monai_sre.cli import main
from monai_sre.data.medmnist import load_split
from monai_sre.evaluation import read_metrics
from tests.evaluation.bundle_checkpoints import SMALL, bundle_parser, expected_metrics, read_rows, save_checkpoint



def _set(values: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


@pytest.mark.slow  # about 100 s: two networks on 38 rotated test sets and 36 turned-and-back ones
def test_evaluate_rotation_two_checkpoints(bundle, tmp_path, data_root, capsys):
    overrides = {**SMALL, "dataset_dir": str(tmp_path / "data")}
    nets = {"a": save_checkpoint(bundle, tmp_path / "a.pt", overrides, 0),
            "b": save_checkpoint(bundle, tmp_path / "b.pt", overrides, 1, nested=False)}  # fmt: skip
    out = tmp_path / "report"
    argv = ["evaluate-rotation", "--bundle", str(bundle), "--data-root", str(data_root), "--out", str(out)]
    argv += ["--checkpoint", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--limit", "24", "--batch-size", "16"]
    argv += ["--no-progress", "--variants", "full", "control", "--set", *_set(overrides)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "a: ACC@0" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "rotation_a.csv", "rotation_b.csv", "rotation_robustness.png", "rotation_summary.json"
    ]  # fmt: skip
    # the datalist the bundle exported, read by the bundle's validation transforms
    datalist = json.loads((tmp_path / "data" / "breastmnist_28_nifti" / "datalist.json").read_text())
    assert len(datalist["test"]) == 24 and datalist["format"] == "nifti"
    images, labels = load_split("breastmnist", "test", 28, data_root)
    for name, net in nets.items():
        rows = read_rows(out / f"rotation_{name}.csv")
        assert len(rows) == 38 + 36 and {r["n"] for r in rows} == {"24"}
        assert [r["variant"] for r in rows] == ["full"] * 38 + ["control"] * 36  # --variants: no disk
        acc, auc = expected_metrics(net, images[:24], labels[:24], "binary-class")
        assert float(rows[0]["acc"]) == pytest.approx(acc) and float(rows[0]["auc"]) == pytest.approx(auc)
        rot180 = expected_metrics(net, np.ascontiguousarray(images[:24, ::-1, ::-1]), labels[:24], "binary-class")
        assert float(rows[18]["acc"]) == pytest.approx(rot180[0])  # rot_180 is the exact half turn
    report = json.loads((out / "rotation_summary.json").read_text())
    assert sorted(report["models"]) == ["a", "b"] and report["spatial_dims"] == 2
    assert report["variants"] == ["full", "control"] and "disk" not in report["models"]["a"]
    acc_0 = float(read_rows(out / "rotation_a.csv")[0]["acc"])
    assert report["models"]["a"]["control"]["acc_0"] == pytest.approx(acc_0)
    control = report["models"]["a"]["control"]
    assert f"  control: ACC@0 {control['acc_0']:.4f}  mean ACC {control['mean_acc']:.4f}" in printed
    assert "  disk:" not in printed  # not evaluated, not printed


def test_evaluate_rotation_equals_run_evaluating(bundle, tmp_path, data_root):
    """The same checkpoint gives the same numbers through the CLI and through the bundle's ``run evaluating``."""
    overrides = {**SMALL, "dataset_dir": str(tmp_path / "data"), "max_samples": 16, "data_root": str(data_root)}
    save_checkpoint(bundle, tmp_path / "run" / "model.pt", overrides, 3)
    run = {"ckpt_dir": str(tmp_path / "run"), "output_dir": str(tmp_path / "eval"), "device": "$torch.device('cpu')"}
    evaluating = bundle_parser(bundle, {**overrides, **run}, ("train.json", "evaluate.json"))
    evaluating.get_parsed_content("initialize")  # the bundle's export, then its evaluation
    evaluating.get_parsed_content("evaluating")
    argv = ["evaluate-rotation", "--bundle", str(bundle), "--checkpoint", str(tmp_path / "run" / "model.pt")]
    argv += ["--name", "sre", "--out", str(tmp_path / "cli"), "--no-progress", "--set", *_set(overrides)]
    assert main(argv) == 0
    bundle_rows = read_rows(tmp_path / "eval" / "rotation" / "rotation_sre.csv")
    cli_rows = read_rows(tmp_path / "cli" / "rotation_sre.csv")
    assert len(cli_rows) == 38 + 2 * 36 and {r["variant"] for r in cli_rows} == {"full", "disk", "control"}
    fields = ("name", "variant", "acc", "auc")
    assert [tuple(r[k] for k in fields) for r in cli_rows] == [tuple(r[k] for k in fields) for r in bundle_rows]
    cli_report = json.loads((tmp_path / "cli" / "rotation_summary.json").read_text())["models"]["sre"]
    bundle_report = json.loads((tmp_path / "eval" / "rotation" / "rotation_summary.json").read_text())["models"]["sre"]
    assert cli_report == bundle_report and {"disk", "control"} <= set(cli_report)
    metrics = read_metrics(tmp_path / "eval" / "metrics.csv")
    assert metrics["test_acc"] == pytest.approx(float(cli_rows[0]["acc"]), abs=1e-12)
    assert metrics["test_auc"] == pytest.approx(float(cli_rows[0]["auc"]), abs=1e-12)


@pytest.mark.slow
def test_evaluate_rotation_rgb_flag_override(bundle, tmp_path, data_root):
    overrides = {**SMALL, "flag": "retinamnist", "dataset_dir": str(tmp_path / "data")}
    net = save_checkpoint(bundle, tmp_path / "rgb.pt", overrides, 1)
    argv = ["evaluate-rotation", "--bundle", str(bundle), "--checkpoint", str(tmp_path / "rgb.pt")]
    argv += ["--flag", "retinamnist", "--data-root", str(data_root), "--out", str(tmp_path / "out")]
    argv += ["--limit", "30", "--interpolation", "nearest", "--no-progress", "--set", *_set(SMALL)]
    argv += [f"dataset_dir={tmp_path / 'data'}"]
    assert main(argv) == 0
    rows = read_rows(tmp_path / "out" / "rotation_rgb.csv")
    images, labels = load_split("retinamnist", "test", 28, data_root)
    acc, _ = expected_metrics(net, images[:30], labels[:30], "ordinal-regression")
    assert float(rows[0]["acc"]) == pytest.approx(acc)
    report = json.loads((tmp_path / "out" / "rotation_summary.json").read_text())
    assert report["task"] == "ordinal-regression" and report["interpolation"] == "nearest"


def test_evaluate_rotation_bad_input(bundle, tmp_path, data_root, capsys):
    overrides = {**SMALL, "dataset_dir": str(tmp_path / "data")}
    save_checkpoint(bundle, tmp_path / "small.pt", overrides, 0)
    save_checkpoint(bundle, tmp_path / "wide.pt", {**overrides, "widen_factor": 0.25}, 0)
    other = torch.load(tmp_path / "small.pt", weights_only=True)
    other["input_contract"]["image_size"] = 64
    torch.save(other, tmp_path / "other_contract.pt")
    common = ["--data-root", str(data_root), "--out", str(tmp_path / "out"), "--no-progress", "--limit", "4",
              "--set", *_set(overrides)]  # fmt: skip
    missing = tmp_path / "nope.pt"
    assert main(["evaluate-rotation", "--bundle", str(bundle), "--checkpoint", str(missing), *common]) == 2
    assert f"checkpoint {missing} not found" in capsys.readouterr().err
    assert main(["evaluate-rotation", "--bundle", str(bundle), "--checkpoint", str(tmp_path / "wide.pt"), *common]) == 2
    assert "wide.pt does not fit the SREResNet" in capsys.readouterr().err
    argv = ["evaluate-rotation", "--bundle", str(bundle), "--checkpoint", str(tmp_path / "other_contract.pt")]
    assert main([*argv, *common]) == 2
    err = capsys.readouterr().err
    assert "other_contract.pt was trained with input contract" in err
    assert "image_size: 64 in the checkpoint, 28 here" in err
    no_config = ["evaluate-rotation", "--bundle", str(tmp_path), "--checkpoint", str(tmp_path / "small.pt")]
    assert main([*no_config, *common]) == 2
    assert "train.json not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written when the input is refused
