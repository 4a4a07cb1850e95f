# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The same seed gives the same metrics and weights twice: each bundle trained twice in separate processes (CPU)."""

from __future__ import annotations

import re

import pytest

from tests.reliability.bundle_runs import TINY, Finished, Job, assert_identical, copy_bundle, load_checkpoints, run_jobs
from tests.reliability.conftest import EPOCHS


def _validation_metrics(run: Finished) -> list[tuple[int, str, str]]:
    """(epoch, val_acc, val_auc) of every validation, as the StatsHandler printed them."""
    found = re.findall(r"Epoch\[(\d+)\] Metrics -- val_acc: ([\d.na]+) val_auc: ([\d.na]+)", run.output)
    return [(int(e), acc, auc) for e, acc, auc in found]


def _assert_same_run(a: Finished, b: Finished, epochs: int) -> None:
    assert a.returncode == 0, a.output[-3000:]
    assert b.returncode == 0, b.output[-3000:]
    metrics = _validation_metrics(a)
    assert [m[0] for m in metrics] == list(range(1, epochs + 1))
    assert _validation_metrics(b) == metrics
    expected, got = load_checkpoints(a.bundle), load_checkpoints(b.bundle)
    assert sorted(got) == sorted(expected) == ["checkpoint_last.pt", "model.pt", "model_final.pt"]
    for name in expected:  # full-precision metrics live in the checkpoint's validator state
        assert_identical(got[name], expected[name], name)


def test_2d_bundle_gives_identical_metrics_and_weights_twice(runs_2d):
    _assert_same_run(runs_2d.runs["reference"], runs_2d.runs["repeat"], EPOCHS)


@pytest.mark.slow
def test_3d_bundle_gives_identical_metrics_and_weights_twice(tmp_path):
    opts = ["--epochs", "2", *TINY["sre_medmnist_3d"]]
    runs = run_jobs({n: Job(copy_bundle(tmp_path, "sre_medmnist_3d", n), opts) for n in ("first", "second")})
    _assert_same_run(runs["first"], runs["second"], 2)
