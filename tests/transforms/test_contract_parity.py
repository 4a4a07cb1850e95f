# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""One input contract from training files to clinical volumes (issue 13).

``monai-sre predict`` and the bundle's ``run inferring`` on the exported NIfTI and DICOM test files reproduce the
bundle evaluation's probabilities (1e-5) and its test ACC/AUC exactly; quarter turns and flips of the files give
the upright probabilities, and at 30 and 45 degrees predict's ACC is the rotation evaluation's.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from monai_sre.data import export_medmnist, write_nifti
from monai_sre.evaluation.metrics import medmnist_acc, medmnist_auc
from monai_sre.evaluation.rotation import evaluate_rotations, rotation_transforms
from monai_sre.inference import predict
from monai_sre.transforms import class_probabilities

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
BUNDLE_OF = {"breastmnist": "sre_medmnist_2d", "retinamnist": "sre_medmnist_2d", "adrenalmnist3d": "sre_medmnist_3d"}
FAST_SAMPLES = {"breastmnist": 12, "retinamnist": 12, "adrenalmnist3d": 8}


def _edit_flag(config: Path, flag: str) -> None:
    values = json.loads(config.read_text())
    values["flag"] = flag
    config.write_text(json.dumps(values, indent=4))


def _bundle(tmp: Path, flag: str, train_epochs: int = 0, data_root: Path | None = None) -> tuple[Path, Path]:
    """A copy of the bundle for ``flag`` and the weights to use: the shipped ones, or for a dataset without shipped
    weights (RetinaMNIST) a seeded network saved as the bundle's training saves it, in its run folder, or, with
    ``train_epochs``, the network that the bundle's own training gives after that many epochs."""
    name = BUNDLE_OF[flag]
    bundle = tmp / f"{name}_{flag}"
    if bundle.exists():
        return bundle, _weights(bundle, flag)
    shutil.copytree(BUNDLES / name, bundle, ignore=shutil.ignore_patterns("data", "eval", "runs", "*.ts", "*.onnx"))
    if flag != "breastmnist" and name == "sre_medmnist_2d":
        for config in ("train.json", "inference.json"):
            _edit_flag(bundle / "configs" / config, flag)
        parser = _parser(bundle, ("train.json",))
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def")
        (bundle / "runs" / "default").mkdir(parents=True)
        contract = parser.get_parsed_content("input_contract").to_dict()
        torch.save({"model": net.state_dict(), "input_contract": contract}, bundle / "runs" / "default" / "model.pt")
        # the metadata states the dataset's classes and input, as a bundle retrained on RetinaMNIST would
        meta_file = bundle / "configs" / "metadata.json"
        meta = json.loads(meta_file.read_text())
        names = parser.get_parsed_content("class_names") if "class_names" in parser else None
        info = parser.get_parsed_content("info")
        names = names or [name for _, name in sorted(info.labels.items())]
        meta["network_data_format"]["outputs"]["pred"].update(
            {"num_channels": len(names), "channel_def": {str(i): n for i, n in enumerate(names)}}
        )
        meta["network_data_format"]["inputs"]["image"]["num_channels"] = info.n_channels
        meta["input_contract"] = contract
        meta_file.write_text(json.dumps(meta, indent=4))
        if train_epochs:  # probabilities of a random network lie too close for rank metrics at float precision
            training = _parser(bundle, ("train.json",), epochs=train_epochs, data_root=str(data_root),
                               dataset_dir=str(tmp / "train_data"))  # fmt: skip
            training.get_parsed_content("initialize")
            training.get_parsed_content("training")
    return bundle, _weights(bundle, flag)


def _weights(bundle: Path, flag: str) -> Path:
    trained = bundle / "runs" / "default" / "model.pt"
    return trained if trained.is_file() else bundle / "models" / "model.pt"


def _parser(bundle: Path, configs: tuple[str, ...], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _evaluation(bundle: Path, dataset_dir: Path, image_format: str, limit: int | None, data_root: Path):
    """The bundle evaluation (``run evaluating``'s evaluator) on the test split: probabilities, metrics, files."""
    parser = _parser(
        bundle, ("train.json", "evaluate.json"), image_format=image_format, max_samples=limit,
        dataset_dir=str(dataset_dir), data_root=str(data_root), output_dir=str(bundle / "eval"),
    )  # fmt: skip
    parser.get_parsed_content("initialize")  # settings checked, the split exported with its datalist
    export_dir = Path(parser.get_parsed_content("export_dir"))
    evaluator = parser.get_parsed_content("validate#evaluator")
    probs: list[torch.Tensor] = []
    multi = parser.get_parsed_content("info").multi_label

    def collect(engine):
        for item in engine.state.output:
            # the evaluation's own float64 softmax/sigmoid (scores_from_logits and the prediction rows use it)
            probs.append(class_probabilities(item["pred"], multi, dim=0))

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    evaluator.run()
    datalist = json.loads((export_dir / "datalist.json").read_text())
    paths = [str(export_dir / item["image"]) for item in datalist["test"]]
    labels = np.asarray([item["label"] for item in datalist["test"]])
    return torch.stack(probs), dict(evaluator.state.metrics), paths, labels, parser.get_parsed_content("task")


def _row_probs(rows: list[dict]) -> torch.Tensor:
    # float64: float32 ties probabilities near 0 and 1, which changes the AUC (monai_sre.inference.probability_value)
    return torch.tensor([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in rows],
                        dtype=torch.float64)


def _inferring(bundle: Path, paths: list[str], weights: Path, out: Path) -> list[dict]:
    parser = _parser(bundle, ("inference.json",), input_paths=paths, ckpt_path=str(weights), output_file=str(out))
    parser.get_parsed_content("inferring")
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def _check_parity(
    tmp: Path, data_root: Path, flag: str, image_format: str, limit: int | None, train_epochs: int = 0
) -> None:
    bundle, weights = _bundle(tmp, flag, train_epochs, data_root)
    dataset_dir = tmp / f"{flag}_{image_format}_{limit}"
    expected, metrics, paths, labels, task = _evaluation(bundle, dataset_dir, image_format, limit, data_root)
    rows = predict(paths, bundle, checkpoint=weights)
    assert {r["status"] for r in rows} == {"ok"}, rows[0]["error"]
    assert {r["intensity_rule"] for r in rows} == {"8bit_range"}
    assert {(r["checkpoint"], r["shipped_weights"]) for r in rows} == {(str(weights), weights.parent.name == "models")}
    got = _row_probs(rows)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert medmnist_acc(labels, got.numpy(), task) == metrics["test_acc"]
    auc = medmnist_auc(labels, got.numpy(), task)
    assert auc == metrics["test_auc"] or (math.isnan(auc) and math.isnan(metrics["test_auc"]))
    inferred = _inferring(bundle, paths, weights, tmp / f"inferring_{flag}_{image_format}.csv")
    assert [r["path"] for r in inferred] == paths and {r["intensity_rule"] for r in inferred} == {"8bit_range"}
    torch.testing.assert_close(_row_probs(inferred), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("image_format", ["nifti", "dicom"])
@pytest.mark.parametrize("flag", ["breastmnist", "retinamnist", "adrenalmnist3d"])
def test_predict_and_inferring_reproduce_the_bundle_evaluation(tmp_path_factory, data_root, flag, image_format):
    tmp = tmp_path_factory.getbasetemp() / "parity"
    tmp.mkdir(exist_ok=True)
    _check_parity(tmp, data_root, flag, image_format, FAST_SAMPLES[flag])


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["breastmnist", "retinamnist", "adrenalmnist3d"])
def test_full_test_split_parity(tmp_path, data_root, flag):
    """Every test image of the split (156 / 400 / 298), NIfTI; RetinaMNIST with weights of 3 epochs of the bundle."""
    _check_parity(tmp_path, data_root, flag, "nifti", None, train_epochs=3)


def _upright(tmp: Path, data_root: Path, flag: str, n: int) -> tuple[Path, list[Path]]:
    out = tmp / f"{flag}_upright"
    export_medmnist(flag, out, splits="test", root=data_root, progress=False, limit=n)
    datalist = json.loads((out / "datalist.json").read_text())
    return out, [out / item["image"] for item in datalist["test"]]


def _turned_copies(path: Path, out: Path, spatial_dims: int) -> list[Path]:
    """Quarter turns and flips of one exported file, 8-bit as the original, same header geometry."""
    image = nib.load(path)
    array = np.asarray(image.dataobj)
    planes = [(0, 1)] if spatial_dims == 2 else [(0, 1), (0, 2), (1, 2)]
    variants = {f"rot{k}_{a}{b}": np.rot90(array, k, axes=(a, b)) for a, b in planes for k in (1, 2, 3)}
    variants.update({f"flip{axis}": np.flip(array, axis) for axis in range(spatial_dims)})
    files = []
    for name, turned in variants.items():
        target = out / f"{path.name.split('.')[0]}_{name}.nii.gz"
        write_nifti(np.ascontiguousarray(turned), target)
        files.append(target)
    return files


@pytest.mark.parametrize("flag,n", [("breastmnist", 3), ("adrenalmnist3d", 1)])
def test_quarter_turns_and_flips_give_the_upright_probabilities(tmp_path, data_root, flag, n):
    bundle = BUNDLES / BUNDLE_OF[flag]
    _, upright = _upright(tmp_path, data_root, flag, n)
    spatial_dims = 3 if flag.endswith("3d") else 2
    turned_dir = tmp_path / "turned"
    turned = {p: _turned_copies(p, turned_dir, spatial_dims) for p in upright}
    rows = predict([str(p) for p in upright] + [str(t) for p in upright for t in turned[p]], bundle)
    assert {r["status"] for r in rows} == {"ok"} and {r["intensity_rule"] for r in rows} == {"8bit_range"}
    probs = _row_probs(rows)
    per_file = len(turned[upright[0]])
    assert per_file == (5 if spatial_dims == 2 else 12)
    for i in range(len(upright)):
        copies = probs[len(upright) + i * per_file : len(upright) + (i + 1) * per_file]
        torch.testing.assert_close(copies, probs[i].expand_as(copies), atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("flag,n", [("breastmnist", None), ("adrenalmnist3d", 64)])
def test_predict_accuracy_at_30_and_45_degrees_matches_the_rotation_evaluation(tmp_path, data_root, flag, n):
    """Rotated copies of the exported files, as float32 files of 0-255 values told to predict with ``--intensity
    8bit_range``, and as 8-bit files (what an image editor writes), which get that rule by themselves."""
    bundle = BUNDLES / BUNDLE_OF[flag]
    spatial_dims = 3 if flag.endswith("3d") else 2
    dataset_dir, upright = _upright(tmp_path, data_root, flag, n)
    parser = _parser(bundle, ("train.json", "evaluate.json"), export_dir=str(dataset_dir), max_samples=n,
                     data_root=str(data_root))  # fmt: skip
    parser["validate#data_list_key"] = "test"
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    specs = rotation_transforms(spatial_dims, angles=[30, 45], axes=("z",), include_cube=False, include_flips=False)
    loader, task = parser.get_parsed_content("validate#dataloader"), parser.get_parsed_content("task")
    rows = evaluate_rotations(network, loader, task, spatial_dims, specs, progress=False)
    datalist = json.loads((dataset_dir / "datalist.json").read_text())
    labels = np.asarray([item["label"] for item in datalist["test"]])
    for spec, row in zip(specs, rows):
        float_files, byte_files = [], []
        for path in upright:
            image = torch.as_tensor(np.asarray(nib.load(path).dataobj), dtype=torch.float32)[None, None]
            turned = spec(image)[0, 0]
            float_files.append(write_nifti(turned.numpy(), tmp_path / spec.name / "float" / path.name))
            byte = turned.round().clamp(0, 255).to(torch.uint8).numpy()
            byte_files.append(write_nifti(byte, tmp_path / spec.name / "uint8" / path.name))
        told = predict([str(f) for f in float_files], bundle, preprocessing_overrides={"intensity": "8bit_range"})
        assert {r["intensity_rule"] for r in told} == {"8bit_range"}
        acc = medmnist_acc(labels, _row_probs(told).numpy(), task)
        assert abs(acc - row["acc"]) <= 0.005, (spec.name, acc, row["acc"])
        stored = predict([str(f) for f in byte_files], bundle)
        assert {r["intensity_rule"] for r in stored} == {"8bit_range"}
        # rounding to 8 bits moves each voxel by up to 0.5/255: at most one borderline image may change its class
        acc8 = medmnist_acc(labels, _row_probs(stored).numpy(), task)
        assert abs(acc8 - row["acc"]) <= max(0.005, 1 / len(labels) + 1e-9), (spec.name, acc8, row["acc"])
