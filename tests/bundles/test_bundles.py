# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""End-to-end runs of both bundles at tiny settings on the real MedMNIST files, through MONAI's bundle CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_sre.bundle import BundleSettingError
from monai_sre.evaluation import read_metrics

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"

# Tiny settings: a few samples per split, 4..32 channels, one epoch.
TINY = {
    "sre_medmnist_2d": ["--epochs", "1", "--max_samples", "24", "--widen_factor", "0.0625", "--batch_size", "8"],
    "sre_medmnist_3d": ["--epochs", "1", "--max_samples", "8", "--widen_factor", "0.0625", "--batch_size", "4",
                        "--rotation_angles", "[0, 90, 135]"],
}


def _bundle(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns("data", "eval", "runs", "*.ts", "*.onnx"))
    return dst


def _run(bundle: Path, *args: str, torchrun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"] \
        if torchrun else [sys.executable]
    proc = subprocess.run([*launcher, "-m", "monai.bundle", *args], cwd=bundle, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _metrics(bundle: Path) -> dict[str, float]:
    return read_metrics(bundle / "eval" / "metrics.csv")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "name,image_format,n_transforms,eval_run",
    [
        # the rotated sets, then the inscribed-disk and turn-and-back variants of every angle (and axis)
        ("sre_medmnist_2d", "nifti", 38 + 2 * 36, []),  # the model zoo's evaluate command: the default "run" id
        pytest.param("sre_medmnist_2d", "dicom", 38 + 2 * 36, ["evaluating"], marks=pytest.mark.slow),
        ("sre_medmnist_3d", "nifti", 3 * 3 + 24 + 3 + 2 * 3 * 3, ["evaluating"]),
        pytest.param("sre_medmnist_3d", "dicom", 3 * 3 + 24 + 3 + 2 * 3 * 3, [], marks=pytest.mark.slow),
    ],
)
def test_train_evaluate_infer(tmp_path, name, image_format, n_transforms, eval_run):
    bundle = _bundle(tmp_path, name)
    opts = [*TINY[name], "--image_format", image_format]
    shipped = (bundle / "models" / "model.pt").read_bytes()
    _run(bundle, "run", "training", "--config_file", "configs/train.json", *opts)
    models = bundle / "runs" / "default"  # training writes to its run folder, never over the shipped weights
    assert (models / "model.pt").is_file() and (models / "model_final.pt").is_file()
    assert (bundle / "models" / "model.pt").read_bytes() == shipped
    best = torch.load(models / "model.pt", weights_only=True)
    assert "fc.weight" in best["model"]  # the network's state dict, loadable with weights_only
    contract = json.loads((bundle / "configs" / "metadata.json").read_text())["input_contract"]
    assert best["input_contract"] == contract  # saved inside every checkpoint, as metadata.json states it
    final = torch.load(models / "model_final.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(final)
    datalist = json.loads((bundle / "data" / f"{'breastmnist' if '2d' in name else 'adrenalmnist3d'}_28_{image_format}"
                                              / "datalist.json").read_text())
    assert len(datalist["training"]) == (24 if "2d" in name else 8)

    proc = _run(bundle, "run", *eval_run, "--config_file", "['configs/train.json','configs/evaluate.json']", *opts)
    assert "evaluating the model trained in ./runs/default" in proc.stdout + proc.stderr  # and says so
    metrics = _metrics(bundle)
    assert 0.0 <= metrics["test_auc"] <= 1.0 and 0.0 <= metrics["test_acc"] <= 1.0
    rows = _read_csv(bundle / "eval" / "rotation" / "rotation_sre.csv")
    assert len(rows) == n_transforms
    assert all(0.0 <= float(r["acc"]) <= 1.0 for r in rows)
    # the SRE network is exactly invariant to quarter turns and flips: identical accuracy on those test sets, and a
    # quarter turn and back is the upright set; the masked (disk) quarter turns agree among themselves
    quarter = [r for r in rows if r["kind"] == "angle" and float(r["angle"]) % 90 == 0]
    exact = [r for r in rows if r["kind"] in ("flip", "cube")] + [r for r in quarter if r["variant"] != "disk"]
    assert len({r["acc"] for r in exact}) == 1, [(r["name"], r["acc"]) for r in exact]
    disk = [r for r in quarter if r["variant"] == "disk"]
    assert len(disk) == (4 if "2d" in name else 6) and len({r["acc"] for r in disk}) == 1, disk
    png = (bundle / "eval" / "rotation" / "rotation_robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    summary = json.loads((bundle / "eval" / "rotation" / "rotation_summary.json").read_text())
    assert set(summary["models"]) == {"sre"} and summary["variants"] == ["full", "disk", "control"]
    assert summary["models"]["sre"]["disk"]["acc_0"] == float(next(r for r in rows if r["variant"] == "disk")["acc"])


@pytest.mark.parametrize("name", ["sre_medmnist_2d", "sre_medmnist_3d"])
def test_config_workflow_properties(tmp_path, name):
    """``check_properties()`` of the train, infer and eval workflows (the model zoo's unit-test pattern)."""
    bundle = _bundle(tmp_path, name)
    shutil.copy(BUNDLES / name / "models" / "model.pt", bundle / "models" / "model.pt")
    configs = bundle / "configs"
    data = tmp_path / "data"
    for config, workflow_type, dataset_dir in (
        ([configs / "train.json"], "train", data),
        ([configs / "inference.json"], "infer", bundle / "data" / "inference"),
        ([configs / "train.json", configs / "evaluate.json"], "eval", data),
    ):
        wf = ConfigWorkflow(config_file=[str(c) for c in config], workflow_type=workflow_type,
                            meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"),
                            bundle_root=str(bundle), dataset_dir=str(dataset_dir), max_samples=4)  # fmt: skip
        dataset_dir.mkdir(parents=True, exist_ok=True)
        wf.initialize()
        assert not wf.check_properties(), (config, wf.check_properties())
    # initialize is where the data is prepared, in dataset_dir (the input folder), and nowhere else
    assert [p.name for p in data.iterdir()] == [f"{'breastmnist' if '2d' in name else 'adrenalmnist3d'}_28_nifti"]


def test_ddp_two_cpu_processes(tmp_path):
    """Training and evaluation under torchrun with two CPU processes (gloo), as the model zoo's multi-GPU commands."""
    bundle = _bundle(tmp_path, "sre_medmnist_2d")
    _run(bundle, "run", "training", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
         *TINY["sre_medmnist_2d"], torchrun=True)
    state = torch.load(bundle / "runs" / "default" / "model.pt", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped, loadable without DDP
    assert len(list((bundle / "runs" / "default").glob("model.pt"))) == 1
    # the test set split over two ranks scores what one process scores (MetricsSaver, which gathers over the ranks,
    # runs on every rank: on rank 0 alone it waited forever for rank 1)
    _run(bundle, "run", "evaluating", "--config_file",
         "['configs/train.json','configs/evaluate.json','configs/multi_gpu_evaluate.json']", *TINY["sre_medmnist_2d"],
         torchrun=True)  # fmt: skip
    two_ranks = _metrics(bundle)
    assert not (bundle / "eval" / "rotation").exists()  # the multi-GPU evaluation leaves the rotation report out
    _run(bundle, "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
         *TINY["sre_medmnist_2d"], "--rotation_angles", "[0, 90]", "--rotation_variants", "['full']")
    one = _metrics(bundle)
    assert set(two_ranks) == {"test_auc", "test_acc"} and two_ranks == pytest.approx(one, abs=1e-6)


BAD_OVERRIDES = [
    ("train.json", {"flag": "notamnist"}, "--flag 'notamnist' refused: expected one of the 2D MedMNIST flags: "),
    ("train.json", {"image_size": 30},
     "--image_size 30 refused: expected one of the sizes released for breastmnist: 28, 64, 128, 224"),
    ("train.json", {"learning_rate": "fast"}, "--learning_rate 'fast' refused: expected a positive number"),
    ("train.json", {"epochs": 0}, "--epochs 0 refused: expected a positive integer"),
    ("train.json", {"data_root": "{tmp}/no_such_folder"},
     "--data_root '{tmp}/no_such_folder' refused: expected an existing folder holding the MedMNIST .npz files, or None "
     "(no folder {tmp}/no_such_folder exists; it is not created)"),
    ("inference.json", {"kernel_size": 4}, "--kernel_size 4 refused: expected an odd positive integer"),
    ("train.json", {"gradient_fraction": 1}, "--gradient_fraction 1 refused: expected a number from 0 to below 1"),
    ("train.json", {"optimizer": "rmsprop"}, "--optimizer 'rmsprop' refused: expected one of adam, sgd"),
    ("train.json", {"lr_schedule": "linear"}, "--lr_schedule 'linear' refused: expected one of step, cosine"),
    ("train.json", {"augmentation": "rotate"},
     "--augmentation 'rotate' refused: expected one of none, standard, rotation"),
    ("train.json", {"momentum": 1.5}, "--momentum 1.5 refused: expected a number from 0 to below 1"),
    ("train.json", {"corner_mask": 1.5}, "--corner_mask 1.5 refused: expected a number from 0 to 1"),
    ("train.json", {"blur": -0.5}, "--blur -0.5 refused: expected a number from 0 to 1"),
    ("train.json", {"val_angles": [0, 360]},
     "--val_angles [0, 360] refused: expected a non-empty list of distinct angles in degrees"),
    ("train.json", {"val_metric": "acc"}, "--val_metric 'acc' refused: expected one of auc, auc_acc"),
    ("train.json", {"zero_mean_init": "yes"}, "--zero_mean_init 'yes' refused: expected true or false"),
    ("train.json", {"zero_init_residual": 1}, "--zero_init_residual 1 refused: expected true or false"),
    ("train.json", {"resume": "no"}, "--resume 'no' refused: expected true or false"),
]


def _nothing_done(tmp_path: Path, bundle: Path) -> None:
    assert not (bundle / "data").exists()  # nothing exported
    assert not (tmp_path / "no_such_folder").exists()  # a missing data_root is reported, not created
    assert not (bundle / "runs").exists() and not (bundle / "eval").exists()  # no run folder, no report
    assert [p.name for p in (bundle / "models").iterdir()] == ["model.pt"]  # the shipped weights only


@pytest.mark.parametrize("config,override,message", BAD_OVERRIDES)
def test_bad_overrides_fail_before_anything(tmp_path, config, override, message):
    """Refused by the first step of ``initialize``, before any data is exported or any model is built."""
    bundle = _bundle(tmp_path, "sre_medmnist_2d")
    override = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in override.items()}
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / config), logging_file=False, bundle_root=str(bundle),
                        **override)  # fmt: skip
    with pytest.raises(RuntimeError) as raised:
        wf.initialize()
    assert isinstance(raised.value.__cause__, BundleSettingError)
    assert str(raised.value.__cause__).startswith("bundle setting " + message.replace("{tmp}", str(tmp_path)))
    _nothing_done(tmp_path, bundle)


def test_bad_override_command_line(tmp_path):
    """The command line reports the override: a 3D flag on the 2D bundle, before the 3D data is exported."""
    bundle = _bundle(tmp_path, "sre_medmnist_2d")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                           "configs/train.json", "--flag", "adrenalmnist3d"], cwd=bundle, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert ("BundleSettingError: bundle setting --flag 'adrenalmnist3d' refused: adrenalmnist3d is a 3D dataset and "
            "this bundle is 2D; expected one of the 2D MedMNIST flags: pathmnist, chestmnist") in proc.stderr
    assert "Epoch" not in proc.stdout + proc.stderr
    _nothing_done(tmp_path, bundle)


def test_missing_data_offline_fails_before_training(tmp_path):
    bundle = _bundle(tmp_path, "sre_medmnist_2d")
    env = {**os.environ, "MONAI_SRE_DATA_ROOT": str(tmp_path / "empty"), "MPLBACKEND": "Agg"}
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                           "configs/train.json", "--data_root", "None"], cwd=bundle, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "breastmnist.npz" in proc.stderr and "750601b1f35ba3300ea97c75c52ff8f6" in proc.stderr
    assert "Epoch" not in proc.stdout + proc.stderr
