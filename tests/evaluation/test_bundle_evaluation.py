# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``evaluate_bundle_checkpoints`` called directly: summaries and report files of bundle checkpoints, and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_sre.data.medmnist import load_split
from monai_sre.evaluation import evaluate_bundle_checkpoints
from tests.evaluation.bundle_checkpoints import SMALL, expected_metrics, read_rows, save_checkpoint

# smaller still than SMALL: two networks on 38 rotated sets of 12 images in a few seconds
TINY = {**SMALL, "widen_factor": 0.0625, "kernel_size": [3, 3, 3, 3]}


def test_two_checkpoints_on_the_val_split(bundle, tmp_path, data_root):
    overrides = {**TINY, "dataset_dir": str(tmp_path / "data"), "data_root": str(data_root), "batch_size": 16}
    nets = {"sre-a": save_checkpoint(bundle, tmp_path / "a.pt", overrides, 0),
            "sre.b": save_checkpoint(bundle, tmp_path / "b.pt", overrides, 1, nested=False)}  # fmt: skip
    out = tmp_path / "report" / "nested"
    summaries = evaluate_bundle_checkpoints(
        bundle,
        [tmp_path / "a.pt", tmp_path / "b.pt"],
        out=out,
        names=list(nets),
        overrides=overrides,
        split="val",
        limit=12,
        interpolation="nearest",
        variants=("full",),
        progress=False,
    )
    assert list(summaries) == ["sre-a", "sre.b"]
    assert sorted(p.name for p in out.iterdir()) == [
        "rotation_robustness.png", "rotation_sre-a.csv", "rotation_sre.b.csv", "rotation_summary.json"
    ]  # fmt: skip
    # the split the bundle exported (its first 12 validation images), read by its validation transforms
    datalist = json.loads((tmp_path / "data" / "breastmnist_28_nifti" / "datalist.json").read_text())
    assert len(datalist["validation"]) == 12
    images, labels = load_split("breastmnist", "val", 28, data_root)
    for name, net in nets.items():
        acc, auc = expected_metrics(net, images[:12], labels[:12], "binary-class")
        s = summaries[name]
        assert s["n_samples"] == 12 and s["n_transforms"] == 38 and s["rotation"]["n"] == 36
        assert s["acc_0"] == pytest.approx(acc) and s["auc_0"] == pytest.approx(auc)
        rows = read_rows(out / f"rotation_{name}.csv")
        assert len(rows) == 38 and float(rows[0]["acc"]) == pytest.approx(s["acc_0"])
        worst = min(float(r["acc"]) for r in rows if r["kind"] == "angle")
        assert s["rotation"]["worst"]["acc"] == pytest.approx(worst)
    report = json.loads((out / "rotation_summary.json").read_text())
    assert report["models"] == summaries
    assert (report["task"], report["spatial_dims"], report["interpolation"]) == ("binary-class", 2, "nearest")
    assert report["variants"] == ["full"]


def test_network_id_missing(bundle, tmp_path, data_root):
    overrides = {**SMALL, "dataset_dir": str(tmp_path / "data"), "data_root": str(data_root)}
    save_checkpoint(bundle, tmp_path / "a.pt", overrides, 0)
    with pytest.raises(ValueError, match=r"the bundle config defines no 'net' \(network_ids\)"):
        evaluate_bundle_checkpoints(
            bundle, tmp_path / "a.pt", out=tmp_path / "out", network_ids="net", overrides=overrides, limit=4,
            progress=False,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def _bad_calls(bundle: Path, tmp: Path) -> list[tuple[str, dict, type[Exception], str]]:
    """(case, arguments besides bundles/checkpoints/out when given, error type, message)."""
    (tmp / "blocker").write_text("a file")
    (tmp / "other" / "configs").mkdir(parents=True)
    (tmp / "other" / "configs" / "train.json").write_text('{"flag": "breastmnist"}')
    two = {"checkpoints": [tmp / "a.pt", tmp / "b.pt"]}
    return [
        ("bundles count", {**two, "bundles": [bundle] * 3}, ValueError,
         "bundles takes 1 value or one per checkpoint (2), got 3"),
        ("network ids count", {**two, "network_ids": ["a", "b", "c"]}, ValueError,
         "network_ids takes 1 value or one per checkpoint (2), got 3"),
        ("no checkpoints", {"checkpoints": []}, ValueError, "checkpoints is empty"),
        ("missing checkpoint", {"checkpoints": [tmp / "a.pt", tmp / "nope.pt"]}, FileNotFoundError,
         f"checkpoint {tmp / 'nope.pt'} not found"),
        ("missing config", {"bundles": tmp}, FileNotFoundError,
         f"bundle config {tmp / 'configs' / 'train.json'} not found (bundles {tmp}, config configs/train.json)"),
        ("out below a file", {"out": tmp / "blocker" / "report"}, ValueError,
         f"out {tmp / 'blocker' / 'report'}: cannot create the report folder there "
         f"({tmp / 'blocker'} is not a folder)"),
        ("repeated names", {**two, "names": ["m", "m"]}, ValueError,
         "names takes 2 distinct names (one per checkpoint), got ['m', 'm']"),
        ("too few names", {**two, "names": ["m"]}, ValueError, "names takes 2 distinct names"),
        ("limit 0", {"limit": 0}, ValueError, "limit must be a positive number of images, got 0"),
        ("unknown split", {"split": "dev"}, ValueError, "split must be one of ['test', 'train', 'val'], got 'dev'"),
        ("option names", {"limit": -1, "argument_names": {"limit": "--limit"}}, ValueError,
         "--limit must be a positive number of images, got -1"),
        ("not a training config", {"bundles": tmp / "other"}, ValueError,
         f"the config configs/train.json of {tmp / 'other'} defines no 'task'; expected a bundle training config"),
    ]  # fmt: skip


def test_bad_arguments_are_refused_before_anything_is_written(bundle, tmp_path):
    save_checkpoint(bundle, tmp_path / "a.pt", SMALL, 0)
    save_checkpoint(bundle, tmp_path / "b.pt", SMALL, 1)
    for case, kwargs, error, message in _bad_calls(bundle, tmp_path):
        call = {"bundles": bundle, "checkpoints": tmp_path / "a.pt", "out": tmp_path / "out", **kwargs}
        with pytest.raises(error) as info:
            evaluate_bundle_checkpoints(call.pop("bundles"), call.pop("checkpoints"), progress=False, **call)
        assert message in str(info.value), case
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "data").exists() and not (bundle / "data").exists()  # no export either
