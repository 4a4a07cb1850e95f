# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``benchmarks/checkpoint_selection.py`` without training: the rules, the pick, the rules report and the summary."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from benchmarks import checkpoint_selection as cs


def test_pick_keeps_the_first_epoch_of_the_maximum():
    assert cs.pick({3: 0.5, 1: 0.9, 7: 0.9, 2: 0.1}) == 1
    assert cs.pick({5: 0.2}) == 5


def test_rules_on_hand_made_epochs(tmp_path, capsys):
    y = np.array([0, 0, 1, 1])
    ranked_but_shifted = {t: [0.6, 0.7, 0.8, 0.9] for t in cs.TRANSFORMS}  # AUC 1, ACC 0.5 (threshold 0.5)
    good = {t: [0.1, 0.2, 0.8, 0.7] for t in cs.TRANSFORMS}  # AUC 1, ACC 1
    good["rot_045"] = [0.1, 0.6, 0.4, 0.7]  # one turned copy: AUC 0.75, ACC 0.5
    rules = cs.selection_rules()
    assert rules["AUC (default)"](y, {k: np.array(v) for k, v in ranked_but_shifted.items()}) == 1.0
    assert rules["(AUC+ACC)/2"](y, {k: np.array(v) for k, v in ranked_but_shifted.items()}) == 0.75
    pooled = rules["pooled ACC [0,10,45]"](y, {k: np.array(v) for k, v in good.items()})
    assert pooled == pytest.approx((1 + 1 + 0.5) / 3)
    (tmp_path / "val_epochs.json").write_text(json.dumps({"labels": y.tolist(),
                                                          "epochs": {"1": ranked_but_shifted, "2": good}}))
    cs.rules(type("Args", (), {"run": str(tmp_path)})())
    kept = dict(re.findall(r"^  (.+?) +epoch +(\d+) ", capsys.readouterr().out, flags=re.M))
    assert kept == {"AUC (default)": "1", "pooled AUC [0,10,45]": "1", "pooled ACC [0,10,45]": "2",
                    "pooled (AUC+ACC)/2 [0,10,45]": "2", "(AUC+ACC)/2": "2", "last epoch": "2"}  # fmt: skip


def test_rules_score_a_multi_class_run_with_its_own_task(tmp_path, capsys):
    # RetinaMNIST-like: 3 classes, scores per class; the task stored by ``table`` switches AUC/ACC to argmax scoring
    y = np.array([0, 1, 2, 2])
    right = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]  # every argmax right
    wrong = [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]  # two of four right
    epochs = {"1": {t: right for t in cs.TRANSFORMS}, "2": {t: wrong for t in cs.TRANSFORMS}}
    rules = cs.selection_rules("multi-class")
    assert rules["(AUC+ACC)/2"](y, {t: np.array(right) for t in cs.TRANSFORMS}) == 1.0
    assert rules["pooled ACC [0,10,45]"](y, {t: np.array(wrong) for t in cs.TRANSFORMS}) == 0.5
    (tmp_path / "val_epochs.json").write_text(json.dumps({"task": "multi-class", "labels": y.tolist(), "epochs": epochs}))
    cs.rules(type("Args", (), {"run": str(tmp_path)})())
    out = capsys.readouterr().out
    kept = dict(re.findall(r"^  (.+?) +epoch +(\d+) ", out, flags=re.M))
    assert kept["AUC (default)"] == "1" and kept["(AUC+ACC)/2"] == "1" and kept["last epoch"] == "2"
    assert "ACC 1.000 / 1.000 / 1.000 / 1.000 / 1.000   AUC 1.000" in out


def test_summary_reads_a_rotation_report(tmp_path, capsys):
    fields = ["name", "kind", "axis", "angle", "acc", "auc", "n", "variant"]
    rows = [("rot_000", 0, 0.80, 0.9, "full"), ("rot_010", 10, 0.82, 0.9, "full"), ("rot_020", 20, 0.70, 0.8, "full"),
            ("rot_000_disk", 0, 0.75, 0.8, "disk"), ("rot_010_disk", 10, 0.74, 0.8, "disk"),
            ("rot_020_disk", 20, 0.72, 0.8, "disk"), ("rot_010_control", 10, 0.78, 0.9, "control"),
            ("rot_020_control", 20, 0.76, 0.9, "control")]  # fmt: skip
    with open(tmp_path / "rotation_ep007.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows([(n, "angle", "", a, acc, auc, 4, v) for n, a, acc, auc, v in rows])
    cs.summary(type("Args", (), {"report": str(tmp_path)})())
    assert capsys.readouterr().out.strip() == (
        "ep007: AUC 0.900 ACC 0.800 rotated mean 0.760 worst 0.700 (drop 10.0) at 10 deg 0.820 disk 0.750 / 0.720 "
        "(drop 3.0) control mean 0.770 (drop 3.0)"
    )
