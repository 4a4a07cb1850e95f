# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Training that is killed (SIGKILL, a real separate process) and resumed ends exactly where an uninterrupted run does.

Resume is exact on CPU: the bundles checkpoint at every epoch's end (``runs/default/checkpoint_last.pt``: network,
optimizer, scheduler, trainer, validator with its best metric, best-model saver), the shuffle order is a function of
``seed + epoch`` (``DistributedSampler.set_epoch``), and every epoch re-seeds the global and transform random states
the same way. A kill in the middle of an epoch loses that epoch's iterations, which the resumed run repeats. All
checkpoint files are written to a temporary file and renamed (ignite ``DiskSaver(atomic=True)``), so a kill during
a save leaves the previous file intact.
"""

from __future__ import annotations

import pytest
import torch

from tests.reliability.bundle_runs import (
    TINY,
    Job,
    assert_identical,
    copy_bundle,
    load_checkpoints,
    run_jobs,
    run_training,
)
from tests.reliability.conftest import EPOCHS, PAUSE_AT_ITERATION

CHECKPOINT_KEYS = ["model", "optimizer", "lr_scheduler", "trainer", "validator", "best_model_saver", "weight_average",
                   "input_contract"]


def test_checkpoints_hold_the_whole_training_state_and_load_with_weights_only(runs_2d):
    reference = runs_2d.runs["reference"]
    assert reference.returncode == 0, reference.output[-3000:]
    ckpts = load_checkpoints(reference.bundle)
    assert sorted(ckpts) == ["checkpoint_last.pt", "model.pt", "model_final.pt"]
    last = ckpts["checkpoint_last.pt"]
    assert list(last) == CHECKPOINT_KEYS and last["weight_average"] == {}  # no weight average by default
    assert last["trainer"]["iteration"] == EPOCHS * 3 and last["trainer"]["epoch_length"] == 3
    validator = last["validator"]
    assert set(validator["metrics"]) == {"val_auc", "val_acc"}
    assert 1 <= validator["best_metric_epoch"] <= EPOCHS and 0.0 <= validator["best_metric"] <= 1.0
    # the best-model saver remembers the score that model.pt was saved with
    assert last["best_model_saver"]["_saved"] == [(validator["best_metric"], "model.pt")]
    assert_identical(last, ckpts["model_final.pt"], "model_final.pt")
    # the best model: the network's state dict and the input contract it was trained with
    best = ckpts["model.pt"]
    assert set(best) == {"model", "input_contract"} and set(best["model"]) == set(last["model"])
    assert best["input_contract"] == last["input_contract"] and last["input_contract"]["image_size"] == 28


def test_kill_in_the_middle_of_an_epoch_then_resume_gives_the_uninterrupted_result(runs_2d):
    killed, resumed = runs_2d.runs["killed_mid_epoch"], runs_2d.runs["resumed_mid_epoch"]
    assert killed.returncode == -9, killed.output[-3000:]  # SIGKILL while paused after iteration 5 (epoch 2)
    assert killed.epochs_trained() == [1, 2]
    left = runs_2d.after_kill["killed_mid_epoch"]
    assert "model_final.pt" not in left["files"]
    assert left["checkpoints"]["checkpoint_last.pt"]["trainer"]["iteration"] == 3  # the end of epoch 1

    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "Restored all variables from" in resumed.output
    assert resumed.epochs_trained() == [2, 3]  # epoch 1 is not trained again
    expected = load_checkpoints(runs_2d.runs["reference"].bundle)
    got = load_checkpoints(resumed.bundle)
    assert sorted(got) == sorted(expected)
    for name in expected:  # weights, optimizer moments, scheduler, best metric, last metrics: bit-exact
        assert_identical(got[name], expected[name], name)


def test_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint_and_resumes(runs_2d):
    killed, resumed = runs_2d.runs["killed_in_save"], runs_2d.runs["resumed_after_save"]
    assert killed.returncode == -9, killed.output[-3000:]  # died half-way through writing epoch 2's checkpoint
    left = runs_2d.after_kill["killed_in_save"]
    # every file under a checkpoint name loads; the half-written bytes sit in a temporary file no run reads
    assert sorted(left["checkpoints"]) == ["checkpoint_last.pt", "model.pt"]
    assert left["checkpoints"]["checkpoint_last.pt"]["trainer"]["iteration"] == 3
    leftovers = [f for f in left["files"] if not f.endswith(".pt")]
    assert len(leftovers) == 1 and leftovers[0].startswith("tmp")
    with pytest.raises(RuntimeError):  # the partial file is not a checkpoint
        torch.load(killed.bundle / "runs" / "default" / leftovers[0], weights_only=True)

    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.epochs_trained() == [2, 3]
    expected = load_checkpoints(runs_2d.runs["reference"].bundle)
    got = load_checkpoints(resumed.bundle)
    for name in expected:
        assert_identical(got[name], expected[name], name)


@pytest.mark.slow
def test_kill_during_the_first_best_model_save_leaves_nothing_to_trust(tmp_path):
    bundle = copy_bundle(tmp_path, "sre_medmnist_2d")
    killed = run_training(bundle, "--epochs", "2", *TINY["sre_medmnist_2d"], kill_in_save=1, kill_save_kind="best")
    assert killed.returncode == -9, killed.output[-3000:]
    files = sorted(p.name for p in (bundle / "runs" / "default").iterdir())
    assert not [f for f in files if f.endswith(".pt")] and len(files) == 1, files  # only the temporary file
    again = run_training(bundle, "--epochs", "2", *TINY["sre_medmnist_2d"], "--resume", "true")
    assert again.returncode != 0 and "checkpoint_last.pt not found" in again.last_error()
    assert again.epochs_trained() == []


@pytest.mark.slow
def test_3d_bundle_resumes_exactly(tmp_path):
    opts = ["--epochs", "3", *TINY["sre_medmnist_3d"]]
    reference = run_training(copy_bundle(tmp_path, "sre_medmnist_3d", "reference"), *opts)
    bundle = copy_bundle(tmp_path, "sre_medmnist_3d", "killed")
    killed = run_training(bundle, *opts, pause_at_iteration=3)  # 2 iterations per epoch: inside epoch 2
    assert killed.returncode == -9, killed.output[-3000:]
    assert load_checkpoints(bundle)["checkpoint_last.pt"]["trainer"]["iteration"] == 2
    resumed = run_training(bundle, *opts, "--resume", "true")
    assert reference.returncode == 0 and resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.epochs_trained() == [2, 3]
    expected, got = load_checkpoints(reference.bundle), load_checkpoints(bundle)
    for name in expected:
        assert_identical(got[name], expected[name], name)


@pytest.mark.slow
def test_ddp_run_killed_mid_epoch_resumes_exactly(tmp_path):
    """Two CPU processes (gloo): both load the checkpoint rank 0 wrote, and end where an uninterrupted run ends."""
    config = "['configs/train.json','configs/multi_gpu_train.json']"
    opts = ["--epochs", "3", *TINY["sre_medmnist_2d"]]  # 12 samples per rank: 2 iterations per epoch
    reference, killed = copy_bundle(tmp_path, "sre_medmnist_2d", "reference"), copy_bundle(tmp_path, "sre_medmnist_2d")
    runs = run_jobs({
        "reference": Job(reference, opts, config_file=config, nproc=2),
        "killed": Job(killed, opts, {"pause_at_iteration": 3}, config_file=config, nproc=2),
    })  # fmt: skip
    assert runs["reference"].returncode == 0, runs["reference"].output[-3000:]
    assert runs["killed"].returncode == -9, runs["killed"].output[-3000:]
    assert load_checkpoints(killed)["checkpoint_last.pt"]["trainer"]["iteration"] == 2
    resumed = run_jobs({"resumed": Job(killed, [*opts, "--resume", "true"], config_file=config, nproc=2)})["resumed"]
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.epochs_trained() == [2, 3]
    expected, got = load_checkpoints(reference), load_checkpoints(killed)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert_identical(got[name], expected[name], name)


def test_weight_average_resumes_exactly_and_leaves_the_network_training_unchanged(tmp_path):
    """``--ema_decay``: the averaged copy is in the resumable state and a killed run resumes it bit-exactly; the
    network's own training (weights, optimizer) is bit-for-bit the run without the option."""
    opts = ["--epochs", str(EPOCHS), *TINY["sre_medmnist_2d"]]
    ema = [*opts, "--ema_decay", "0.5"]
    bundles = {name: copy_bundle(tmp_path, "sre_medmnist_2d", name) for name in ("plain", "reference", "killed")}
    runs = run_jobs({
        "plain": Job(bundles["plain"], opts),
        "reference": Job(bundles["reference"], ema),
        "killed": Job(bundles["killed"], ema, {"pause_at_iteration": PAUSE_AT_ITERATION}),
    })  # fmt: skip
    assert runs["plain"].returncode == 0 and runs["reference"].returncode == 0, runs["reference"].output[-3000:]
    assert runs["killed"].returncode == -9, runs["killed"].output[-3000:]
    resumed = run_training(bundles["killed"], *ema, "--resume", "true")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.epochs_trained() == [2, 3]
    expected, got = load_checkpoints(bundles["reference"]), load_checkpoints(bundles["killed"])
    assert sorted(got) == sorted(expected)
    for name in expected:  # the averaged copy, with its measured BatchNorm statistics, too
        assert_identical(got[name], expected[name], name)
    final, plain = expected["model_final.pt"], load_checkpoints(bundles["plain"])["model_final.pt"]
    assert plain["weight_average"] == {} and list(final["weight_average"]) == list(final["model"])
    for key in ("model", "optimizer", "lr_scheduler", "trainer"):
        assert_identical(final[key], plain[key], key)
    average, network = final["weight_average"], final["model"]
    assert not torch.equal(average["conv1.weight"], network["conv1.weight"])
    assert not torch.equal(average["bn1.running_var"], network["bn1.running_var"])
    if final["validator"]["best_metric_epoch"] == EPOCHS:  # the kept model is the copy the validator scored
        assert_identical(expected["model.pt"]["model"], average, "model.pt")
