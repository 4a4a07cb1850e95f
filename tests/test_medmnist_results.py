# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``benchmarks/medmnist_results.py`` without training: its model table, overrides, epoch times from the training log
and the results table, from synthetic run records shaped as the script writes them."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import medmnist_results as mr
from monai_sre.recipes import last_checkpoint_name

_HEAD = ["name", "kind", "axis", "angle", "acc", "auc", "n", "variant"]


def _summary(acc_0: float, mean: float, worst: float, auc: float) -> dict:
    return {"acc_0": acc_0, "mean_acc": mean, "mean_auc": auc, "worst": {"name": "rot_040", "acc": worst, "auc": auc}}


def _record(flag="breastmnist", size=28, model="sre", seed=0, acc=0.8, disk=True, **extra) -> dict:
    """A finished run's record: ACC values derived from ``acc`` so that each column has its own known value."""
    rotation = {"acc_0": acc, "auc_0": 0.9, "rotation": _summary(acc, acc - 0.05, acc - 0.1, 0.85),
                "flip": {"n": 2, "mean_acc": acc, "mean_auc": 0.9, "min_acc": acc}}
    if disk:
        rotation["disk"] = _summary(acc - 0.2, acc - 0.21, acc - 0.22, 0.6)
        rotation["control"] = _summary(acc, acc - 0.15, acc - 0.3, 0.7)
    rows = [_HEAD]
    for variant, auc in (("full", 0.85), ("disk", 0.1), ("control", 0.2)):  # disk/control AUCs: not the worst AUC
        for i, angle in enumerate((0, 40, 90)):
            name = f"rot_{angle:03d}" + ("" if variant == "full" else f"_{variant}")
            rows.append([name, "angle", "", f"{angle}.0", str(acc), str(auc - 0.01 * i), "10", variant])
    rows.append(["flip_vertical", "flip", "x", "", str(acc), "0.5", "10", "full"])  # not an angle: not the worst AUC
    model_type, overrides, label = mr.MODELS[model] if model in mr.MODELS else ("sre", (), model)
    return {"flag": flag, "image_size": size, "model": model, "model_type": model_type, "label": label,
            "seed": seed, "overrides": mr.merge_overrides(["--flag", flag, "--image_size", str(size), "--model_type",
                                                           model_type, "--epochs", "4"], overrides),
            "training_seconds": 40.0, "train_epoch_seconds": [2.0 + seed, 4.0 + seed], "test_auc": 0.9,
            "test_acc": acc, "rotation": rotation, "rows": rows, **extra}


def test_the_model_table_holds_the_comparison_and_recipe_variants():
    assert {"sre", "resnet", "resnet_rotation"} <= set(mr.MODELS) and set(mr.DEFAULT_MODELS) <= set(mr.MODELS)
    assert mr.MODELS["resnet_rotation"].model_type == "resnet"
    # the rotation-augmented ResNet at Adam 1e-3 differs from it in the rate alone
    assert mr.parse_overrides(mr.MODELS["resnet_rotation_lr1e3"].overrides) == {
        **mr.parse_overrides(mr.MODELS["resnet_rotation"].overrides), "learning_rate": "0.001"}
    assert mr.parse_overrides(mr.MODELS["resnet_rotation"].overrides) == {
        "augmentation": "rotation", "corner_mask": "0", "ema_decay": "0", "learning_rate": "0.0001"}
    assert mr.parse_overrides(mr.MODELS["sre_standard"].overrides) == {
        "augmentation": "standard", "gradient_fraction": "0", "corner_mask": "0", "ema_decay": "0",
        "learning_rate": "0.0001", "zero_init_residual": "false", "zero_mean_init": "false"}
    # every model names its augmentation, corner mask, weight average and rate, and every SRE model its gradient
    # fraction and initialisation: the bundles' defaults differ (2D and 3D) and changed in 0.9.0 (2D)
    assert {name: mr.parse_overrides(m.overrides).get("augmentation") for name, m in mr.MODELS.items()} == {
        "sre": "none", "resnet": "none", "resnet_rotation": "rotation", "resnet_corners": "standard",
        "resnet_standard": "standard", "sre_standard": "standard",
        "sre_corners": "standard", "sre_ema": "standard", "sre_rotation": "rotation", "sre_gradient": "standard", "sre_paper": "standard",
        "sre_paper_unscaled": "standard", "sre_gradient_ema": "standard", "sre_init_lr1e3": "standard",
        "sre_gradient_lr1e3": "standard", "resnet_lr1e3": "standard", "sre_init_lr1e3_corners": "standard",
        "sre_init_lr1e3_ema": "standard", "sre_init_lr1e3_blur": "standard", "sre_init_lr1e3_rotation": "rotation",
        "resnet_rotation_lr1e3": "rotation"}
    assert {name: mr.parse_overrides(m.overrides).get("corner_mask") for name, m in mr.MODELS.items()} == {
        **{name: "0" for name in mr.MODELS}, "sre_corners": "0.5", "sre_ema": "0.5", "resnet_corners": "0.5",
        "sre_init_lr1e3_corners": "0.5"}
    assert {name: mr.parse_overrides(m.overrides).get("ema_decay") for name, m in mr.MODELS.items()} == {
        **{name: "0" for name in mr.MODELS}, "sre_ema": "0.99", "sre_gradient_ema": "0.99",
        "sre_init_lr1e3_ema": "0.99"}
    assert {name: mr.parse_overrides(m.overrides).get("gradient_fraction") for name, m in mr.MODELS.items()
            if m.model_type == "sre"} == {"sre": "0", "sre_standard": "0", "sre_corners": "0", "sre_ema": "0",
                                          "sre_rotation": "0", "sre_gradient": "0.5", "sre_paper": "0", "sre_paper_unscaled": "0",
                                          "sre_gradient_ema": "0.5", "sre_init_lr1e3": "0.5",
                                          "sre_gradient_lr1e3": "0.5", "sre_init_lr1e3_corners": "0.5",
                                          "sre_init_lr1e3_ema": "0.5", "sre_init_lr1e3_blur": "0.5",
                                          "sre_init_lr1e3_rotation": "0.5"}
    # the MedMNIST protocol's rate, and SRE's initialisation switches that start from it
    rate = {name: mr.parse_overrides(m.overrides).get("learning_rate") for name, m in mr.MODELS.items()}
    assert {name for name, lr in rate.items() if lr not in ("0.001", "0.0001")} == {"sre_paper", "sre_paper_unscaled"}
    for name, m in mr.MODELS.items():  # the SRE initialisations with the rate that needs them, and only there
        init = {mr.parse_overrides(m.overrides).get(key) for key in ("zero_init_residual", "zero_mean_init")}
        assert init == ({None} if m.model_type == "resnet" else {"true"} if name.startswith("sre_init") else {"false"})
    assert {name for name, lr in rate.items() if lr == "0.001"} == {"sre_init_lr1e3", "sre_gradient_lr1e3",
                                                                     "resnet_lr1e3", "sre_init_lr1e3_corners",
                                                                     "sre_init_lr1e3_ema", "sre_init_lr1e3_blur",
                                                                     "sre_init_lr1e3_rotation", "resnet_rotation_lr1e3"}
    init = mr.parse_overrides(mr.MODELS["sre_init_lr1e3"].overrides)
    assert (init["zero_init_residual"], init["zero_mean_init"]) == ("true", "true")
    # the variants of that recipe differ from it in exactly one setting
    for variant, setting in (("sre_init_lr1e3_ema", {"ema_decay": "0.99"}), ("sre_init_lr1e3_blur", {"blur": "0.5"}),
                             ("sre_init_lr1e3_corners", {"corner_mask": "0.5"}),
                             ("sre_init_lr1e3_rotation", {"augmentation": "rotation"})):
        assert mr.parse_overrides(mr.MODELS[variant].overrides) == {**init, **setting}
    paper = {"augmentation": "standard", "optimizer": "sgd", "learning_rate": "0.02", "weight_decay": "0.001",
             "lr_schedule": "cosine", "batch_size": "128", "gradient_fraction": "0", "corner_mask": "0",
             "ema_decay": "0", "zero_init_residual": "false", "zero_mean_init": "false"}
    assert mr.parse_overrides(mr.MODELS["sre_paper"].overrides) == {**paper, "band_scale": "rsqrt_taps"}
    assert mr.parse_overrides(mr.MODELS["sre_paper_unscaled"].overrides) == {**paper, "band_scale": "none"}
    models = mr.resolve_models(["resnet", "sre_sgd=sre_standard --optimizer sgd --learning_rate=0.02"])
    assert list(models) == ["resnet", "sre_sgd"]
    assert models["sre_sgd"].model_type == "sre"
    assert mr.parse_overrides(models["sre_sgd"].overrides) == {
        "augmentation": "standard", "gradient_fraction": "0", "corner_mask": "0", "ema_decay": "0", "optimizer": "sgd",
        "learning_rate": "0.02", "zero_init_residual": "false", "zero_mean_init": "false"}
    for bad, match in ((["vit"], "unknown model 'vit'"), (["x=vit"], "base 'vit'"), (["a/b=sre"], "names a folder"),
                       (["sre", "sre"], "given twice"), (["x=sre --epochs"], "has no value")):
        with pytest.raises(ValueError, match=match):
            mr.resolve_models(bad)


def test_overrides_merge_with_the_model_s_own_winning():
    merged = mr.merge_overrides(["--flag", "breastmnist", "--seed", "0"], ["--augmentation", "standard",
                                "--epochs=20"], mr.MODELS["resnet_rotation"].overrides)
    assert merged == ["--flag", "breastmnist", "--seed", "0", "--augmentation", "rotation", "--epochs", "20",
                      "--corner_mask", "0", "--ema_decay", "0", "--learning_rate", "0.0001"]
    with pytest.raises(ValueError, match="--set: expected '--key value' pairs, got 'epochs'"):
        mr.parse_overrides(["epochs", "3"], "--set")


def test_epoch_seconds_subtract_the_validation_of_each_epoch():
    log = "\n".join([
        "2026-12-01 17:28:59,930 - INFO - Epoch[1] Metrics -- val_acc: 0.7500",
        "2026-12-01 17:28:59,951 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. "
        "Time taken: 00:00:01.500",
        "2026-12-01 17:29:00,250 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. "
        "Time taken: 00:00:05.353",
        "x - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. Time taken: 00:00:00.500",
        "x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 00:01:02.000",
        "x - ignite.engine.engine.SupervisedTrainer - INFO - Engine run complete. Time taken: 00:01:08.000",
    ])
    assert mr.epoch_seconds(log) == [pytest.approx(3.853), pytest.approx(61.5)]
    assert mr.epoch_seconds("no epochs here") == []


def test_summarize_mean_std_over_seeds_per_dataset_size_and_model():
    records = [
        _record(seed=0, acc=0.80), _record(seed=1, acc=0.70),
        _record(model="resnet_rotation", seed=0, acc=0.75, disk=False),
        _record(size=64, seed=0, acc=0.6),
        {**_record(model="resnet", seed=0), "error": "training failed"},  # failed runs are left out
    ]
    table, summary = mr.summarize(records)
    assert list(summary) == ["breastmnist", "breastmnist_64"]
    assert list(summary["breastmnist"]) == ["sre", "resnet_rotation"]
    sre = summary["breastmnist"]["sre"]
    assert sre["seeds"] == [0, 1] and sre["test_acc"] == [0.80, 0.70]
    assert sre["rot_mean_acc"] == pytest.approx([0.75, 0.65]) and sre["worst_acc"] == pytest.approx([0.7, 0.6])
    assert sre["worst_auc"] == pytest.approx([0.83, 0.83])  # lowest full-set angle AUC, not disk/control/flip
    assert sre["disk_acc_0"] == pytest.approx([0.6, 0.5]) and sre["disk_worst_acc"] == pytest.approx([0.58, 0.48])
    assert sre["control_mean_acc"] == pytest.approx([0.65, 0.55])
    assert sre["control_worst_acc"] == pytest.approx([0.5, 0.4])
    assert sre["train_epoch_seconds"] == [3.0, 4.0]
    assert sre["mean_std"]["test_acc"] == pytest.approx([0.75, statistics.stdev([0.8, 0.7])])
    rot = summary["breastmnist"]["resnet_rotation"]
    assert rot["disk_mean_acc"] == [None] and rot["mean_std"]["disk_mean_acc"] == [None, None]
    assert rot["mean_std"]["test_acc"] == [0.75, None]
    assert rot["params"] > sre["params"] > 0  # the dense ResNet at widen 0.5 has more weights than SRE
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:4] == ["dataset", "model", "params", "seeds"] and "control worst ACC" in head
    assert len(lines) == 2 + 3 and all(len(line.split("|")) == len(head) + 2 for line in lines)
    cells = dict(zip(head, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert cells["model"] == "SRE-ResNet-18" and cells["seeds"] == "2"
    assert cells["test ACC"] == "0.750 ± 0.071" and cells["disk mean ACC"] == "0.540 ± 0.071"
    # labels: the table's for a known name (even when recorded under a command-line label), else the recorded one
    assert mr._label({**_record(model="sre_paper"), "label": "sre_paper (sre_standard --optimizer sgd)"}) == (
        mr.MODELS["sre_paper"].label)
    assert mr._label({**_record(model="mine"), "label": "mine (sre --epochs 3)"}) == "mine (sre --epochs 3)"
    assert cells["train s/epoch"] == "3.5 ± 0.7" and cells["MedMNIST v2 R18 AUC / ACC"] == "0.901 / 0.863"
    rot_cells = dict(zip(head, (c.strip() for c in lines[3].strip("|").split("|"))))
    assert rot_cells["disk mean ACC"] == "–" and rot_cells["test ACC"] == "0.750"
    size64 = dict(zip(head, (c.strip() for c in lines[4].strip("|").split("|"))))
    assert size64["dataset"] == "breastmnist_64" and size64["MedMNIST v2 R18 AUC / ACC"] == "–"


def test_params_follow_the_run_s_overrides():
    narrow, wide = _record(), _record()
    wide["overrides"] = mr.merge_overrides(wide["overrides"], ["--widen_factor", "1.0"])
    assert mr._params(wide) > 2 * mr._params(narrow)
    old = _record(model="resnet")  # records of the earlier script: no model_type, no per-epoch times
    del old["model_type"], old["train_epoch_seconds"]
    assert mr._params(old) == mr._params(_record(model="resnet_rotation"))
    assert mr._train_epoch_seconds(old) == 40.0 / 4


def test_summarize_only_writes_table_json_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for record in (_record(seed=0), _record(seed=1, acc=0.7), _record(size=64)):
        key = mr.dataset_key(record["flag"], record["image_size"])
        path = tmp_path / "runs" / key / f"{record['model']}_seed{record['seed']}" / "record.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    first = _record(flag="retinamnist", acc=0.5)  # the first version's layout: runs/<dataset>/<run>.json
    (tmp_path / "runs" / "retinamnist").mkdir()
    (tmp_path / "runs" / "retinamnist" / "sre_seed0.json").write_text(json.dumps(first))
    assert mr.main(["--out", str(tmp_path), "--summarize-only"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["runs"] == 4 and summary["table"]["breastmnist"]["sre"]["seeds"] == [0, 1]
    assert summary["table"]["retinamnist"]["sre"]["rot_mean_acc"] == pytest.approx([0.5])
    # the rotation summary is made again from each record's rows (every row at the run's ACC), not the stored one
    assert summary["table"]["breastmnist"]["sre"]["rot_mean_acc"] == pytest.approx([0.8, 0.7])
    assert summary["table"]["breastmnist"]["sre"]["worst_auc"] == pytest.approx([0.83, 0.83])
    assert (tmp_path / "results.md").read_text().count("\n") == 2 + 3
    for key in ("breastmnist", "breastmnist_64", "retinamnist"):
        assert (tmp_path / f"robustness_{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        mr.main(["--out", str(tmp_path), "--models", "vit"])
    # a seed beyond the protocol's stays out of the default tables; --seeds and --records tabulate it elsewhere
    extra = tmp_path / "runs" / "breastmnist" / "sre_seed3" / "record.json"
    extra.parent.mkdir()
    extra.write_text(json.dumps(_record(seed=3, acc=0.6)))
    assert mr.main(["--out", str(tmp_path), "--summarize-only"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["table"]["breastmnist"]["sre"]["seeds"] == [0, 1]
    assert mr.main(["--out", str(tmp_path / "breast"), "--records", str(tmp_path), "--summarize-only", "--datasets",
                    "breastmnist"]) == 0
    assert set(json.loads((tmp_path / "breast" / "results.json").read_text())["table"]) == {"breastmnist",
                                                                                             "breastmnist_64"}
    four = tmp_path / "four_seeds"
    assert mr.main(["--out", str(four), "--records", str(tmp_path), "--summarize-only", "--seeds", "0", "1", "3"]) == 0
    table = json.loads((four / "results.json").read_text())["table"]
    assert table["breastmnist"]["sre"]["seeds"] == [0, 1, 3]
    assert table["breastmnist"]["sre"]["rot_mean_acc"] == pytest.approx([0.8, 0.7, 0.6])
    with pytest.raises(SystemExit):
        mr.main(["--out", str(four), "--records", str(tmp_path), "--summarize-only", "--seeds", "7"])


def test_a_run_that_timed_out_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    """A command past ``--timeout`` becomes the run's error (naming ``--resume``), not a crash of the whole grid;
    ``--resume`` then continues training with the bundle's ``--resume true`` in the same folder, appending to its
    log, and refuses a folder first started with other overrides."""
    import subprocess

    from monai.bundle import ConfigParser

    # the file the bundle itself writes (its last_ckpt_name), so a name that --resume does not look for fails here
    parser = ConfigParser()
    parser.read_config(str(mr._bundle_for("breastmnist") / "configs" / "train.json"))
    parser["model_type"] = "sre"
    last = parser.get_parsed_content("last_ckpt_name")
    assert last == "checkpoint_last.pt"
    parser["model_type"] = "resnet"
    assert parser.get_parsed_content("last_ckpt_name", lazy=False) == "checkpoint_resnet_last.pt"
    with pytest.raises(ValueError, match="model_type must be one of"):
        last_checkpoint_name("densenet")
    calls = []

    def fake_run(argv, cwd, env, stdout, stderr, timeout):
        step = argv[4]
        calls.append((step, list(argv), stdout.mode))
        run = cwd / "runs" / "default"
        if step == "training" and "--resume" not in argv:  # first attempt: one epoch, then the time is up
            run.mkdir(parents=True)
            (run / last).write_bytes(b"epoch 1")
            stdout.write("SupervisedTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:05.000\n")
            raise subprocess.TimeoutExpired(argv, timeout)
        if step == "training":
            assert (run / last).read_bytes() == b"epoch 1"
            stdout.write("SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 00:00:07.000\n")
        else:
            rotation = cwd / "eval" / "rotation"
            rotation.mkdir(parents=True, exist_ok=True)
            (cwd / "eval" / "metrics.csv").write_text("test_auc,0.75\ntest_acc,0.5\n")
            (rotation / "rotation_summary.json").write_text(json.dumps({"models": {"sre": {"acc_0": 0.5}}}))
            (rotation / "rotation_sre.csv").write_text(",".join(_HEAD) + "\n")
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(mr.subprocess, "run", fake_run)
    args = (tmp_path, "breastmnist", 28, "sre", mr.MODELS["sre"], 0, ["--epochs", "2"], 1.0, 1)
    first = mr._run_one(*args)
    assert "exceeded --timeout 1 s" in first["error"] and "--resume" in first["error"]
    run_dir = tmp_path / "runs" / "breastmnist" / "sre_seed0"
    assert not (run_dir / "record.json").exists()

    record = mr._run_one(*args, resume=True)
    assert [c[0] for c in calls] == ["training", "training", "evaluating"]
    assert "--resume" not in calls[0][1] and calls[1][1][calls[1][1].index("--resume") + 1] == "true"
    assert calls[1][2] == "a" and calls[2][2] == "w"  # the resumed training appends to the first attempt's log
    assert record["resumed"] is True and "error" not in record
    assert record["train_epoch_seconds"] == [5.0, 7.0] and record["test_auc"] == 0.75
    assert json.loads((run_dir / "record.json").read_text())["resumed"] is True

    (run_dir / "record.json").unlink()
    with pytest.raises(ValueError, match="started with the overrides"):
        mr._run_one(tmp_path, "breastmnist", 28, "sre", mr.MODELS["sre"], 0, ["--epochs", "3"], 1.0, 1, resume=True)
    calls.clear()
    restarted = mr._run_one(tmp_path, "breastmnist", 28, "sre", mr.MODELS["sre"], 0, ["--epochs", "3"], 1.0, 1)
    assert "error" in restarted and "--resume" not in calls[0][1]  # without --resume the folder starts over
