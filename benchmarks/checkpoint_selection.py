# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Which checkpoint would each selection rule keep? Train once with every epoch saved, then score the rules offline.

The 2D bundle keeps the checkpoint with the best validation AUC. To compare other rules without one training run per
rule (a run is deterministic given its seed and thread count, so only the kept epoch differs), this script

1. ``train``: copies the 2D bundle's configs to ``RUN`` and runs its own training command
   (``python -m monai.bundle run training``) with one more config file that saves the network after every epoch
   (``RUN/runs/default/epoch_NNN.pt``, with the input contract, as the bundle's own checkpoints);
2. ``table``: scores every epoch's network on the validation split, upright, turned by 10° and 45° and turned and
   back (the rotation report's bilinear resampling), into ``RUN/val_epochs.json``;
3. ``rules``: prints the epoch each rule keeps with its validation ACC per transform. Rules: validation AUC (the
   bundles' default, ``--val_metric auc``), the pooled AUC over 0°, 10° and 45° (``--val_angles "[0,10,45]"``),
   the pooled ACC, the mean of pooled AUC and ACC (``--val_angles "[0,10,45]" --val_metric auc_acc``), the mean
   of upright AUC and ACC (``--val_metric auc_acc``) and the last epoch. As ignite's ``Checkpoint`` does, the first
   epoch reaching the maximum is kept.

The kept checkpoints are then evaluated on the test set with ``monai-sre evaluate-rotation`` (commands in
``benchmarks/README.md``), and ``summary --report DIR`` prints, per model of that report, the columns of the README's
table: upright AUC and ACC, rotated mean and worst ACC over the angles other than 0°, ACC at 10°, the disk's worst
drop and the control's mean drop.

Example::

    python benchmarks/checkpoint_selection.py train --run sel/b28_s0 --seed 0 --image-size 28 --dataset-dir sel/data
    python benchmarks/checkpoint_selection.py table --run sel/b28_s0
    python benchmarks/checkpoint_selection.py rules --run sel/b28_s0
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from monai_sre.io import files

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "sre_medmnist_2d"
#: The task of a ``val_epochs.json`` written before the task was stored in it (BreastMNIST only).
DEFAULT_TASK = "binary-class"
TRANSFORMS = ("rot_000", "rot_010", "rot_045", "rot_010_control", "rot_045_control")
#: The extra config of ``train``: a handler that saves the network the validator scored (the weight average with
#: ``--ema_decay``) after every validation.
SAVE_EVERY_EPOCH = {
    "+initialize": [
        "$@validate#evaluator.add_event_handler(ignite.engine.Events.EPOCH_COMPLETED, lambda e: ("
        "os.makedirs(@ckpt_dir, exist_ok=True), torch.save({'model': @train#weight_average.network.state_dict(), "
        "'input_contract': @input_contract.state_dict()}, os.path.join(@ckpt_dir, 'epoch_%03d.pt' % e.state.epoch))))"
    ]
}


def _overrides(args: argparse.Namespace) -> list[str]:
    return ["--flag", args.flag, "--image_size", str(args.image_size), "--model_type", "sre", "--seed", str(args.seed),
            "--dataset_dir", str(Path(args.dataset_dir).resolve()), "--augmentation", "standard"]  # fmt: skip


def train(args: argparse.Namespace) -> None:
    run = Path(args.run)
    if run.exists():
        raise SystemExit(f"--run {run} exists; give a new folder (nothing was changed)")
    run.mkdir(parents=True)
    shutil.copytree(BUNDLE / "configs", run / "configs")
    files.write_text(run / "save_every_epoch.json", json.dumps(SAVE_EVERY_EPOCH, indent=4) + "\n")
    files.write_text(run / "overrides.json", json.dumps(_overrides(args)) + "\n")
    with open(run / "training.log", "w") as log:
        subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                        "['configs/train.json','save_every_epoch.json']", *_overrides(args)],
                       cwd=run, stdout=log, stderr=subprocess.STDOUT, check=True)  # fmt: skip


def run_split(run: Path, split: str = "validation") -> tuple[Any, Any, Any]:
    """A run folder's bundle config (``configs/train.json`` with its ``overrides.json``, as its training command parsed
    them) and one split of its datalist through the bundle's preprocessing: ``(parser, images, labels)``.

    ``train`` and ``benchmarks/medmnist_results.py`` write run folders of this layout; ``split`` is the datalist key
    (``"test"`` as ``evaluate.json`` sets it).
    """
    import torch
    from fire.parser import DefaultParseValue
    from monai.bundle import ConfigParser

    overrides = json.loads((run / "overrides.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(run / "configs" / "train.json"))
    # each value typed as `python -m monai.bundle run` typed it for training (fire's parser: "28" -> 28)
    parser.update({k[2:]: DefaultParseValue(v) for k, v in zip(overrides[::2], overrides[1::2], strict=True)})
    parser["validate#data_list_key"] = split
    parser.get_parsed_content("initialize")  # checks the settings, exports the split if needed
    batches = list(parser.get_parsed_content("validate#dataloader"))
    x = torch.cat([torch.as_tensor(b["image"]).as_subclass(torch.Tensor) for b in batches])
    y = torch.cat([torch.as_tensor(b["label"]).as_subclass(torch.Tensor) for b in batches])
    return parser, x, y


def table(args: argparse.Namespace) -> None:
    import torch

    from monai_sre.evaluation import medmnist_acc, rotation_transforms, scores_from_logits
    from monai_sre.io.checkpoints import load_weights

    run = Path(args.run)
    parser, x, y = run_split(run)
    y = y.numpy()
    specs = [s for s in rotation_transforms(2, [0, 10, 45], include_flips=False, variants=("full", "control"))
             if s.name in TRANSFORMS]  # fmt: skip
    inputs = {s.name: s(x) for s in specs}
    task = parser.get_parsed_content("task")  # the flag's MedMNIST task (RetinaMNIST: ordinal, scored multi-class)
    net, contract = parser.get_parsed_content("network_def"), parser.get_parsed_content("input_contract")
    epochs = {}
    for checkpoint in sorted((run / "runs" / "default").glob("epoch_*.pt")):
        load_weights(net, checkpoint, contract=contract)  # the project's checkpoint reader, as evaluate-rotation's
        net.eval()
        with torch.no_grad():
            scores = {name: scores_from_logits(net(v), task) for name, v in inputs.items()}
        epoch = int(checkpoint.stem.split("_")[1])
        epochs[epoch] = {name: s.tolist() for name, s in scores.items()}
        print(epoch, {name: round(medmnist_acc(y, s, task), 3) for name, s in scores.items()}, flush=True)
    # minutes of scoring: written atomically, so an interrupted table never leaves a half file for `rules`
    files.write_text(run / "val_epochs.json", json.dumps({"task": task, "labels": y.tolist(), "epochs": epochs}))


def _pooled(metric: Callable, angles: tuple[str, ...], task: str) -> Callable:
    def score(y: np.ndarray, s: dict[str, np.ndarray]) -> float:
        return metric(np.concatenate([y] * len(angles)), np.concatenate([s[a] for a in angles]), task)

    return score


def selection_rules(task: str = DEFAULT_TASK) -> dict[str, Callable | None]:
    """Rule name to a score of one epoch's validation predictions of a ``task`` (``None``: the last epoch)."""
    from monai_sre.evaluation import medmnist_acc, medmnist_auc

    turned = ("rot_000", "rot_010", "rot_045")
    auc, acc = _pooled(medmnist_auc, ("rot_000",), task), _pooled(medmnist_acc, ("rot_000",), task)
    pooled_auc, pooled_acc = _pooled(medmnist_auc, turned, task), _pooled(medmnist_acc, turned, task)
    return {
        "AUC (default)": auc,
        "pooled AUC [0,10,45]": pooled_auc,
        "pooled ACC [0,10,45]": pooled_acc,
        "pooled (AUC+ACC)/2 [0,10,45]": lambda y, s: (pooled_auc(y, s) + pooled_acc(y, s)) / 2,
        "(AUC+ACC)/2": lambda y, s: (auc(y, s) + acc(y, s)) / 2,
        "last epoch": None,
    }


def pick(scores: dict[int, float]) -> int:
    """The first epoch with the highest score, as ignite's ``Checkpoint`` keeps it (it replaces only on a gain)."""
    return max(sorted(scores), key=lambda e: (scores[e], -e))


def rules(args: argparse.Namespace) -> None:
    from monai_sre.evaluation import medmnist_acc, medmnist_auc

    data = json.loads((Path(args.run) / "val_epochs.json").read_text())
    y, task = np.asarray(data["labels"]), data.get("task", DEFAULT_TASK)
    epochs = {int(e): {n: np.asarray(v) for n, v in s.items()} for e, s in data["epochs"].items()}
    print(f"{args.run}: {len(epochs)} epochs; validation ACC of the kept epoch, upright / 10° / 45° / "
          "10° and back / 45° and back; its upright validation AUC")
    for name, rule in selection_rules(task).items():
        epoch = max(epochs) if rule is None else pick({e: rule(y, s) for e, s in epochs.items()})
        s = epochs[epoch]
        accs = " / ".join(f"{medmnist_acc(y, s[t], task):.3f}" for t in TRANSFORMS)
        print(f"  {name:30s} epoch {epoch:3d}   ACC {accs}   AUC {medmnist_auc(y, s['rot_000'], task):.3f}")


def summary(args: argparse.Namespace) -> None:
    from monai_sre.evaluation import read_csv, summarize

    for path in sorted(Path(args.report).glob("rotation_*.csv")):
        s = summarize(read_csv(path))  # means and worst over the turned copies, as in the results tables
        full, disk, control = s["rotation"], s["disk"], s["control"]
        print(f"{path.stem.removeprefix('rotation_')}: AUC {s['auc_0']:.3f} ACC {s['acc_0']:.3f} rotated mean"
              f" {full['mean_acc']:.3f} worst {full['worst']['acc']:.3f} (drop {100 * full['worst_drop_acc']:.1f})"
              f" at {full['first_angle']['angle']:.0f} deg {full['first_angle']['acc']:.3f} disk {disk['acc_0']:.3f}"
              f" / {disk['worst']['acc']:.3f} (drop {100 * disk['worst_drop_acc']:.1f}) control mean"
              f" {control['mean_acc']:.3f} (drop {100 * (s['acc_0'] - control['mean_acc']):.1f})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for step in ("train", "table", "rules", "summary"):
        p = sub.add_parser(step)
        if step == "summary":
            p.add_argument("--report", required=True, help="a monai-sre evaluate-rotation report folder")
            continue
        p.add_argument("--run", required=True, help="run folder (train creates it)")
        if step == "train":
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--flag", default="breastmnist")
            p.add_argument("--image-size", type=int, default=28)
            p.add_argument("--dataset-dir", required=True, help="where the bundle exports the MedMNIST split")
    args = parser.parse_args(argv)
    {"train": train, "table": table, "rules": rules, "summary": summary}[args.step](args)


if __name__ == "__main__":
    main()
