# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``benchmarks/corner_padding.py`` on a tiny run folder laid out as ``medmnist_results.py`` writes one."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from monai_sre.evaluation.rotated_sets import rotate

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the script imports its sibling
import corner_padding as cp  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "sre_medmnist_2d"
N = 12  # test images exported (--max_samples)


def _run(tmp_path):
    run = tmp_path / "sre_seed0"
    shutil.copytree(BUNDLE / "configs", run / "configs")
    overrides = ["--flag", "breastmnist", "--image_size", "28", "--model_type", "sre", "--seed", "0", "--dataset_dir",
                 str(tmp_path / "data"), "--max_samples", str(N), "--widen_factor", "0.0625", "--corner_mask", "0"]
    (run / "overrides.json").write_text(json.dumps(overrides))
    parser, _, _ = cp.run_split(run, "test")  # exports the split, as the run did
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (run / "runs" / "default").mkdir(parents=True)
    torch.save({"model": net.state_dict(), "input_contract": parser.get_parsed_content("input_contract").state_dict()},
               run / "runs" / "default" / "model.pt")
    return run, net


def test_padding_table_scores_the_run_s_model_on_the_test_split(tmp_path, capsys):
    run, net = _run(tmp_path)
    assert cp.main([str(run), "--angles", "45", "30", "--json", str(tmp_path / "t.json")]) == 0
    (table,) = json.loads((tmp_path / "t.json").read_text())
    columns = (*cp.PADDINGS, cp.TURNED_BACK)
    assert table["run"] == str(run) and set(table) == {"run", "upright", *columns}
    assert all(list(table[c]) == ["45.0", "30.0"] for c in columns)
    values = [table["upright"], *(v for c in columns for v in table[c].values())]
    assert all(0 <= v <= 1 and abs(v * N - round(v * N)) < 1e-9 for v in values)  # a share of the 12 test images
    # the same numbers by hand: the test split through the bundle's preprocessing, the fills through rotate()
    _, x, y, task = cp._load(run)
    assert x.shape == (N, 1, 28, 28)
    with torch.no_grad():
        for padding in cp.PADDINGS:
            turned = net.eval()(rotate(x, 45.0, padding_mode=padding)).argmax(1)
            assert table[padding]["45.0"] == pytest.approx(float((turned == y.view(-1)).float().mean()))
        back = rotate(rotate(x, 30.0, padding_mode="border"), -30.0, padding_mode="border")
        # blurred, not turned: further from the upright image than nothing, much nearer than the turned image
        turned = rotate(x, 30.0, padding_mode="border")
        assert 0 < float((back - x).abs().mean()) < 0.5 * float((turned - x).abs().mean())
        turned_back = net(back).argmax(1)
        assert table[cp.TURNED_BACK]["30.0"] == pytest.approx(float((turned_back == y.view(-1)).float().mean()))
    assert f"| {run.name} | {table['upright']:.3f} |" in capsys.readouterr().out


def test_quarter_turns_are_refused(capsys):
    with pytest.raises(SystemExit):
        cp.main(["somewhere", "--angles", "30", "90"])
    assert "--angles: quarter turns are exact" in capsys.readouterr().err
