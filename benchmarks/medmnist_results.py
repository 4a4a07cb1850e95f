# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Train and evaluate SRE-ResNet and MONAI's ResNet on MedMNIST with the bundles' own commands; tabulate the results.

Every run is a copy of a bundle's configs in its own folder, trained with
``python -m monai.bundle run training --config_file configs/train.json --flag F --model_type M --seed S ...``
and evaluated with ``python -m monai.bundle run evaluating --config_file "['configs/train.json','configs/evaluate.json']"``
with the same overrides, so the numbers come from exactly what a user runs. Runs go in parallel (``--jobs``).
The models are the entries of :data:`MODELS` (a bundle ``model_type`` plus that model's own overrides: the
rotation-augmented ResNet is ``resnet`` with ``--augmentation rotation``); ``--models`` picks some and may define
more on the command line (``NAME=BASE --key value ...``). ``--set`` overrides the recipe of every model; a model's
own overrides win for the keys they name.

The summary (``results.md``, ``results.json``) gives, per dataset (and image size) and model, parameters, training
seconds per epoch, test ACC/AUC on the original test set, mean and worst-angle ACC/AUC over the rotated test sets, the
flips, and the mean and worst ACC of the rotation report's ``disk`` (inscribed disk/ball) and ``control`` (turned by
the angle and back) variants, each as mean ± std over seeds, beside the MedMNIST v2 ResNet-18 numbers (28 px);
``robustness_<dataset>.png`` plots ACC and AUC against angle for every model (mean over seeds).

Example (the default 2D recipe on BreastMNIST, 3 seeds; the recorded commands are in ``benchmarks/README.md``)::

    python benchmarks/medmnist_results.py --out results --datasets breastmnist --seeds 0 1 2
    python benchmarks/medmnist_results.py --out results --datasets breastmnist --image-size 64 \
        --models sre resnet resnet_rotation "sre_sgd=sre --optimizer sgd --learning_rate 0.02" --set --epochs 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from monai_sre.evaluation import summarize as summarize_report
from monai_sre.evaluation import read_metrics, write_json
from monai_sre.io import files

REPO = Path(__file__).resolve().parents[1]

#: MedMNIST v2 ResNet-18 (28) test AUC / ACC (3D: ResNet-18+3D), from medmnist.com and the MedMNIST v2 paper.
MEDMNIST_V2_RESNET18 = {
    "breastmnist": (0.901, 0.863),
    "retinamnist": (0.717, 0.524),
    "adrenalmnist3d": (0.827, 0.721),
}


class Model(NamedTuple):
    """One model of the comparison: the bundle's ``model_type``, its own overrides, the table label."""

    model_type: str
    overrides: tuple[str, ...]
    label: str


def _spelt(augmentation: str, corner_mask: str = "0", ema_decay: str = "0", gradient_fraction: str | None = "0",
           learning_rate: str = "0.0001", initialisation: str = "false",
           extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Overrides that spell out every training setting whose bundle default changed or may change (the augmentation
    since 0.5.0, the corner mask since 0.8.0, the rate, the gradient fraction and both initialisations since 0.9.0,
    the weight average), so that a record says what it ran whatever the default becomes; ``gradient_fraction`` None
    for the dense ResNet, which has neither it nor the SRE initialisations (``initialisation``: the value of both
    ``zero_init_residual`` and ``zero_mean_init``)."""
    sre = gradient_fraction is not None
    gradient = ("--gradient_fraction", gradient_fraction) if sre else ()
    init = ("--zero_init_residual", initialisation, "--zero_mean_init", initialisation) if sre else ()
    return ("--augmentation", augmentation, *gradient, "--corner_mask", corner_mask, "--ema_decay", ema_decay,
            "--learning_rate", learning_rate, *init, *extra)


#: The MedMNIST protocol's rate with residual branches that start as their shortcuts and zero-mean kernels
_ADAM_1E3_INIT = {"learning_rate": "0.001", "initialisation": "true"}
_PAPER = ("--optimizer", "sgd", "--weight_decay", "0.001", "--lr_schedule", "cosine", "--batch_size", "128")
#: Models of the comparison; adding a recipe variant is one entry (its overrides win over ``--set``).
MODELS: dict[str, Model] = {
    "sre": Model("sre", _spelt("none"), "SRE-ResNet-18"),
    "resnet": Model("resnet", _spelt("none", gradient_fraction=None), "ResNet-18 (MONAI)"),
    "resnet_rotation": Model("resnet", _spelt("rotation", gradient_fraction=None), "ResNet-18 (MONAI), rotation aug."),
    # the dense ResNet with SRE's default recipe (standard aug. + corner mask): target 4's "same recipe" comparison
    "resnet_corners": Model("resnet", _spelt("standard", corner_mask="0.5", gradient_fraction=None),
                            "ResNet-18 (MONAI), standard aug. + corner mask"),
    # the dense ResNet with SRE's 3D default recipe (standard aug., no corner mask): target 4's comparison in 3D
    "resnet_standard": Model("resnet", _spelt("standard", gradient_fraction=None), "ResNet-18 (MONAI), standard aug."),
    "sre_standard": Model("sre", _spelt("standard"), "SRE-ResNet-18, standard aug."),
    # the standard augmentation plus the zero-filled corners of a random turn, without the turn (RandCornerMaskd)
    "sre_corners": Model("sre", _spelt("standard", corner_mask="0.5"), "SRE-ResNet-18, standard aug. + corner mask"),
    # the corner-mask recipe, validated and kept as an exponential average of the weights (WeightEMA)
    "sre_ema": Model("sre", _spelt("standard", corner_mask="0.5", ema_decay="0.99"),
                     "SRE-ResNet-18, standard aug. + corner mask, weight average 0.99"),
    # the rotation-augmented ResNet's recipe for SRE: does the invariant network gain from turned training images too?
    "sre_rotation": Model("sre", _spelt("rotation"), "SRE-ResNet-18, rotation aug."),
    # half of the channels after every first SRE convolution carry their gradient norm (edges in any direction)
    "sre_gradient": Model("sre", _spelt("standard", gradient_fraction="0.5"),
                          "SRE-ResNet-18, standard aug., gradient norm on half the channels"),
    # the same, validated and kept as the weight average (the 64-px remedy for a noisy kept checkpoint)
    "sre_gradient_ema": Model("sre", _spelt("standard", ema_decay="0.99", gradient_fraction="0.5"),
                              "SRE-ResNet-18, standard aug., gradient norm on half the channels, weight average 0.99"),
    # the MedMNIST protocol's rate (Adam 1e-3) with the gradient channels, residual branches that start as their
    # shortcuts and zero-mean kernels (the three that end SRE's majority-class plateau there), and the same rate alone
    "sre_init_lr1e3": Model("sre", _spelt("standard", gradient_fraction="0.5", **_ADAM_1E3_INIT),
        "SRE-ResNet-18, standard aug., gradient channels, zero-init residual, zero-mean kernels, Adam 1e-3"),
    "sre_init_lr1e3_corners": Model("sre", _spelt("standard", corner_mask="0.5", gradient_fraction="0.5",
                                                  **_ADAM_1E3_INIT),
        "SRE-ResNet-18, standard aug. + corner mask, gradient channels, zero-init residual, zero-mean kernels, "
        "Adam 1e-3"),
    # the same, validated and kept as the weight average (it removed a noisy kept checkpoint's resampling drop at 64 px)
    "sre_init_lr1e3_ema": Model("sre", _spelt("standard", ema_decay="0.99", gradient_fraction="0.5",
                                              **_ADAM_1E3_INIT),
        "SRE-ResNet-18, standard aug., gradient channels, zero-init residual, zero-mean kernels, Adam 1e-3, "
        "weight average 0.99"),
    # the same with a Gaussian blur (sigma 0-1 px) on half the training images: the smoothing of a turn, without it
    "sre_init_lr1e3_blur": Model("sre", _spelt("standard", gradient_fraction="0.5",
                                               extra=("--blur", "0.5"), **_ADAM_1E3_INIT),
        "SRE-ResNet-18, standard aug. + blur 0.5, gradient channels, zero-init residual, zero-mean kernels, Adam 1e-3"),
    # the same with random turns over the full circle plus flips instead of the standard augmentation: the turned test
    # images' resampling and zero-filled corners seen in training (SRE needs no turn for its orientation)
    "sre_init_lr1e3_rotation": Model("sre", _spelt("rotation", gradient_fraction="0.5", **_ADAM_1E3_INIT),
        "SRE-ResNet-18, rotation aug., gradient channels, zero-init residual, zero-mean kernels, Adam 1e-3"),
    "sre_gradient_lr1e3": Model("sre", _spelt("standard", gradient_fraction="0.5", learning_rate="0.001"),
                                "SRE-ResNet-18, standard aug., gradient channels, Adam 1e-3"),
    # the dense ResNet with that recipe (its SRE-only settings do not apply): target 4's comparison for it
    "resnet_lr1e3": Model("resnet", _spelt("standard", gradient_fraction=None, learning_rate="0.001"),
                          "ResNet-18 (MONAI), standard aug., Adam 1e-3"),
    # the rotation-augmented ResNet at that rate: target 6's comparison for the Adam 1e-3 recipes
    "resnet_rotation_lr1e3": Model("resnet", _spelt("rotation", gradient_fraction=None, learning_rate="0.001"),
                                   "ResNet-18 (MONAI), rotation aug., Adam 1e-3"),
    # the SRE-Conv paper's recipe (its repository's src/main.py and src/opt.py), without its test-set model selection;
    # band_scale spelt out (the bundles' default for SGD), and the same recipe with the band weights stored unscaled
    "sre_paper": Model("sre", _spelt("standard", learning_rate="0.02", extra=(*_PAPER, "--band_scale", "rsqrt_taps")),
                       "SRE-ResNet-18, paper recipe (SGD 2e-2, cosine, batch 128, standard aug.)"),
    "sre_paper_unscaled": Model("sre", _spelt("standard", learning_rate="0.02",
                                              extra=(*_PAPER, "--band_scale", "none")),
                                "SRE-ResNet-18, paper recipe, band_scale none"),
}
DEFAULT_MODELS = ("sre", "resnet", "resnet_rotation")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_overrides(tokens: list[str] | tuple[str, ...], what: str = "overrides") -> dict[str, str]:
    """Bundle overrides ``--key value`` / ``--key=value`` as an ordered ``{key: value}`` (a later key wins).

    Raises:
        ValueError: for a token that is not ``--key`` where a key is expected, or a key without a value.
    """
    out: dict[str, str] = {}
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise ValueError(f"{what}: expected '--key value' pairs, got {tok!r} where a '--key' should be: {tokens}")
        if "=" in tok:
            key, value = tok[2:].split("=", 1)
            i += 1
        elif i + 1 < len(tokens):
            key, value = tok[2:], tokens[i + 1]
            i += 2
        else:
            raise ValueError(f"{what}: {tok!r} has no value: {tokens}")
        out[key] = value
    return out


def merge_overrides(*groups: list[str] | tuple[str, ...]) -> list[str]:
    """Merge override lists into one ``--key value`` list; a later group wins for the keys it names."""
    merged: dict[str, str] = {}
    for group in groups:
        merged.update(parse_overrides(group))
    return [t for k, v in merged.items() for t in (f"--{k}", v)]


def resolve_models(specs: list[str]) -> dict[str, Model]:
    """The models named by ``--models``: keys of :data:`MODELS`, or ``NAME=BASE --key value ...`` (``BASE`` a key of
    :data:`MODELS`; the new model is ``BASE`` with these overrides added after its own).

    Raises:
        ValueError: for an unknown model or base, a name unfit for a folder name, a repeated name or bad overrides.
    """
    models: dict[str, Model] = {}
    for spec in specs:
        if "=" in spec.split(" ", 1)[0]:
            name, rest = spec.split("=", 1)
            base, *extra = shlex.split(rest) or [""]
            if base not in MODELS:
                raise ValueError(f"--models {spec!r}: base {base!r} must be one of {list(MODELS)}")
            parse_overrides(extra, f"--models {spec!r}")
            label = f"{name} ({base} {' '.join(extra)})"
            model = Model(MODELS[base].model_type, (*MODELS[base].overrides, *extra), label)
        elif spec in MODELS:
            name, model = spec, MODELS[spec]
        else:
            raise ValueError(f"--models: unknown model {spec!r}; known: {list(MODELS)}, or define NAME=BASE --key v")
        if not _NAME.match(name):
            raise ValueError(f"--models: name {name!r} names a folder: use letters, digits, '_', '.', '-'")
        if name in models:
            raise ValueError(f"--models: {name!r} given twice")
        models[name] = model
    return models


def dataset_key(flag: str, image_size: int) -> str:
    """The results' name of a dataset at a size: ``breastmnist`` (28), ``breastmnist_64``."""
    return flag if int(image_size) == 28 else f"{flag}_{image_size}"


_EPOCH_LINE = re.compile(r"(SupervisedTrainer|SupervisedEvaluator) - INFO - Epoch\[\d+\] Complete\. Time taken: "
                         r"(\d+):(\d+):([\d.]+)")


def epoch_seconds(log: str) -> list[float]:
    """Training seconds of every epoch from a bundle's training log: ignite's trainer epoch time (which includes the
    validation run at the end of the epoch) minus the evaluator's time logged since the previous trainer epoch."""
    epochs, validation = [], 0.0
    for engine, h, m, sec in _EPOCH_LINE.findall(log):
        seconds = int(h) * 3600 + int(m) * 60 + float(sec)
        if engine == "SupervisedEvaluator":
            validation += seconds
        else:
            epochs.append(round(max(seconds - validation, 0.0), 3))
            validation = 0.0
    return epochs


def _bundle_for(flag: str) -> Path:
    return REPO / "bundles" / ("sre_medmnist_3d" if flag.endswith("3d") else "sre_medmnist_2d")


def _last_checkpoint(run_dir: Path, model_type: str) -> Path | None:
    """The bundle's last-epoch checkpoint of a run folder, if it exists: ``runs/default/checkpoint_last.pt`` for SRE,
    ``checkpoint_<model_type>_last.pt`` for a baseline (the bundle's ``last_ckpt_name``)."""
    from monai_sre.recipes import last_checkpoint_name

    path = run_dir / "runs" / "default" / last_checkpoint_name(model_type)
    return path if path.is_file() else None


def _run_one(out: Path, flag: str, image_size: int, name: str, model: Model, seed: int, overrides: list[str],
             timeout: float, threads: int, resume: bool = False) -> dict:
    """Train and evaluate one (dataset, size, model, seed) in its own bundle copy; returns its record.

    ``threads`` is the run's ``OMP_NUM_THREADS``: with more runs than cores, torch's OpenMP threads spin-wait for each
    other (an epoch took 55 s instead of 3.5 s with 2 threads beside another process on 2 cores).

    A run folder without a record is started over, unless ``resume`` is set and it holds the bundle's last-epoch
    checkpoint: then training continues from it with the bundle's own ``--resume true`` (exact: same samples and
    random state), its log appended, and the record says ``resumed``. A run that exceeds ``timeout`` seconds in a
    command gets an ``error`` naming ``--timeout`` and ``--resume``, like any other failed run.

    Raises:
        ValueError: with ``resume``, when the folder's first attempt ran other overrides (``overrides.json``).
    """
    run_dir = out / "runs" / dataset_key(flag, image_size) / f"{name}_seed{seed}"
    record_file = run_dir / "record.json"
    if record_file.is_file():  # finished earlier: resumable
        return json.loads(record_file.read_text())
    common = merge_overrides(
        ["--flag", flag, "--image_size", str(image_size), "--model_type", model.model_type, "--seed", str(seed),
         "--dataset_dir", str(out / "data")],  # exports to data/<flag>_<size>_nifti
        overrides,
        model.overrides,
    )
    first = run_dir / "overrides.json"
    resuming = resume and _last_checkpoint(run_dir, model.model_type) is not None
    if resuming and first.is_file() and json.loads(first.read_text()) != common:
        raise ValueError(f"--resume: {run_dir} was started with the overrides {json.loads(first.read_text())}, "
                         f"not {common}; rerun without --resume to start it over")
    if not resuming:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(_bundle_for(flag) / "configs", run_dir / "configs")
        shutil.copy(_bundle_for(flag) / "LICENSE", run_dir / "LICENSE")
        write_json(common, first)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads)}
    record = {"flag": flag, "image_size": image_size, "model": name, "model_type": model.model_type,
              "label": model.label, "seed": seed, "overrides": common}
    if resuming:
        record["resumed"] = True
    start = time.perf_counter()
    for step, args in (
        ("training", ["--config_file", "configs/train.json", *(["--resume", "true"] if resuming else [])]),
        ("evaluating", ["--config_file", "['configs/train.json','configs/evaluate.json']"]),
    ):
        t0 = time.perf_counter()
        with open(run_dir / f"{step}.log", "a" if resuming and step == "training" else "w") as log:
            try:
                proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", step, *args, *common],
                                      cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                record["error"] = (f"{step} exceeded --timeout {timeout:g} s; see {run_dir / (step + '.log')}; "
                                   "rerun with a larger --timeout and --resume to continue from its last checkpoint")
                return record
        record[f"{step}_seconds"] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            record["error"] = f"{step} failed (exit {proc.returncode}); see {run_dir / (step + '.log')}"
            return record
    record.update(read_metrics(run_dir / "eval" / "metrics.csv"))
    record["train_epoch_seconds"] = epoch_seconds((run_dir / "training.log").read_text())
    rotation_dir = run_dir / "eval" / "rotation"
    record["rotation"] = json.loads((rotation_dir / "rotation_summary.json").read_text())["models"][model.model_type]
    with open(rotation_dir / f"rotation_{model.model_type}.csv") as f:
        record["rows"] = [line.rstrip("\n").split(",") for line in f]
    record["total_seconds"] = round(time.perf_counter() - start, 1)
    write_json(record, record_file)
    return record


def _recipe(record: dict) -> dict:
    """The bundle's ``train.json`` of a run with the run's overrides applied (values parsed as JSON where they are)."""
    cfg = json.loads((_bundle_for(record["flag"]) / "configs" / "train.json").read_text())
    for key, value in parse_overrides(record["overrides"]).items():
        try:
            cfg[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key] = value
    return cfg


def _params(record: dict) -> int:
    """Parameters of the network a run trained (its model type, size and overrides)."""
    from monai_sre.data import dataset_info
    from monai_sre.recipes import medmnist_classifier

    info = dataset_info(record["flag"], int(record.get("image_size", 28)))
    cfg = _recipe(record)
    net = medmnist_classifier(record.get("model_type", record["model"]), cfg["arch"], cfg["spatial_dims"],
                              info.n_channels, info.n_classes, float(cfg["widen_factor"]), cfg["kernel_size"],
                              cfg["conv1_t_size"], gradient_fraction=float(cfg["gradient_fraction"]))
    return sum(p.numel() for p in net.parameters())


def _label(record: dict) -> str:
    """The table label of a run: its entry's in :data:`MODELS` when it names one (a model first defined on the command
    line and later added to the table gets the table's label), else the label it was recorded with."""
    model = record["model"]
    return MODELS[model].label if model in MODELS else record.get("label", model)


def _ms(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _train_epoch_seconds(record: dict) -> float | None:
    """Mean training seconds per epoch of a run (without validation); from the whole command for older records."""
    epochs = record.get("train_epoch_seconds")
    if epochs:
        return statistics.mean(epochs)
    return record["training_seconds"] / int(_recipe(record)["epochs"])


def _report_rows(record: dict) -> list[dict]:
    """The run's rotation report (kept in its record as the CSV's lines split at commas), typed by the package's
    reader of that CSV."""
    from monai_sre.evaluation import rows_from_csv

    return rows_from_csv((",".join(cells) for cells in record["rows"]),
                         source=f"record of {record['model']} seed {record['seed']} on {record['flag']}")  # fmt: skip


def _worst_auc(record: dict) -> float | None:
    """Lowest AUC over the turned copies (rotations by an angle other than 0°, full test set) of a run."""
    aucs = [r["auc"] for r in _report_rows(record) if r["kind"] == "angle" and r["variant"] == "full"
            and r["angle"] % 360 != 0 and not math.isnan(r["auc"])]  # fmt: skip
    return min(aucs) if aucs else None


def _at(*path: str):
    """A getter of ``record["rotation"][path...]`` (the run's rotation summary); ``None`` where a key is missing."""

    def get(record: dict) -> float | None:
        value = record["rotation"]
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return get


#: Columns of the results table: (JSON key, header, digits, value of one run's record).
COLUMNS = (
    ("train_epoch_seconds", "train s/epoch", 1, _train_epoch_seconds),
    ("test_auc", "test AUC", 3, lambda r: r.get("test_auc")),
    ("test_acc", "test ACC", 3, lambda r: r.get("test_acc")),
    ("rot_mean_auc", "rotated mean AUC", 3, _at("rotation", "mean_auc")),
    ("rot_mean_acc", "rotated mean ACC", 3, _at("rotation", "mean_acc")),
    ("worst_acc", "worst-angle ACC", 3, _at("rotation", "worst", "acc")),
    ("worst_auc", "worst-angle AUC", 3, _worst_auc),
    ("flip_acc", "flips ACC", 3, _at("flip", "mean_acc")),
    ("disk_acc_0", "disk 0° ACC", 3, _at("disk", "acc_0")),
    ("disk_mean_acc", "disk mean ACC", 3, _at("disk", "mean_acc")),
    ("disk_worst_acc", "disk worst ACC", 3, _at("disk", "worst", "acc")),
    ("control_mean_acc", "control mean ACC", 3, _at("control", "mean_acc")),
    ("control_worst_acc", "control worst ACC", 3, _at("control", "worst", "acc")),
)


def summarize(records: list[dict]) -> tuple[str, dict]:
    """Markdown table and JSON summary (mean ± std over seeds) of finished runs.

    Rows are datasets (with image size) in order of first appearance, then models in order of first appearance.
    Each JSON entry holds the per-seed values of every column of :data:`COLUMNS` (``None`` where a run lacks it,
    e.g. a report without the disk variant) and ``mean_std``: ``{key: [mean, std]}`` over the seeds that have it
    (std ``None`` for one seed).
    """
    header = (
        "| dataset | model | params | seeds | " + " | ".join(c[1] for c in COLUMNS) + " | MedMNIST v2 R18 AUC / ACC |\n"
        + "|" + "---|" * (len(COLUMNS) + 5) + "\n"
    )
    lines, table = [], {}
    done = [r for r in records if "error" not in r]
    for key in dict.fromkeys(dataset_key(r["flag"], r.get("image_size", 28)) for r in done):
        runs_of = [r for r in done if dataset_key(r["flag"], r.get("image_size", 28)) == key]
        for model in dict.fromkeys(r["model"] for r in runs_of):
            runs = [r for r in runs_of if r["model"] == model]
            entry: dict = {"label": _label(runs[0]), "params": _params(runs[0]),
                           "seeds": [r["seed"] for r in runs], "overrides": runs[0]["overrides"]}
            cells = []
            for name, _, digits, get in COLUMNS:
                values = [get(r) for r in runs]
                entry[name] = values
                present = [v for v in values if v is not None]
                entry.setdefault("mean_std", {})[name] = [
                    statistics.mean(present) if present else None,
                    statistics.stdev(present) if len(present) > 1 else None,
                ]
                cells.append(_ms(present, digits))
            table.setdefault(key, {})[model] = entry
            ref = MEDMNIST_V2_RESNET18.get(key)
            lines.append(
                f"| {key} | {entry['label']} | {entry['params']:,} | {len(runs)} | {' | '.join(cells)} | "
                f"{f'{ref[0]:.3f} / {ref[1]:.3f}' if ref else '–'} |"
            )
    return header + "\n".join(lines) + "\n", table


def plot(records: list[dict], out: Path) -> list[Path]:
    """One robustness plot per dataset and size: every model, ACC/AUC averaged over seeds at each transform."""
    from monai_sre.evaluation import plot_robustness

    paths = []
    done = [r for r in records if "error" not in r]
    for key in dict.fromkeys(dataset_key(r["flag"], r.get("image_size", 28)) for r in done):
        curves = {}
        runs_of = [r for r in done if dataset_key(r["flag"], r.get("image_size", 28)) == key]
        for model in dict.fromkeys(r["model"] for r in runs_of):
            runs = [r for r in runs_of if r["model"] == model]
            per_run = [_report_rows(r) for r in runs]
            curves[_label(runs[0])] = [
                {**row, **{k: statistics.mean(p[i][k] for p in per_run) for k in ("acc", "auc")}}
                for i, row in enumerate(per_run[0])
            ]
        path = out / f"robustness_{key}.png"
        plot_robustness(curves, path, title=f"{key}: test ACC/AUC under rotation (mean over seeds)")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist", "adrenalmnist3d"])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help=f"keys of MODELS ({', '.join(MODELS)}) or NAME=BASE --key value ... (quoted)")
    parser.add_argument("--image-size", type=int, default=28, choices=[28, 64], help="MedMNIST image size")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seeds to run; with --summarize-only, the seeds to tabulate (default: the protocol's 3)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs in parallel (each gets OMP_NUM_THREADS = cores // jobs unless OMP_NUM_THREADS is set)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per bundle command")
    parser.add_argument("--resume", action="store_true",
                        help="continue an unfinished run (no record.json) from its last-epoch checkpoint instead of "
                             "starting it over (the bundle's --resume true; same overrides required)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="only tabulate and plot the runs already finished under --records (of --seeds and "
                             "--datasets) into --out")
    parser.add_argument("--records", type=Path, default=None,
                        help="with --summarize-only: the results folder whose runs/ to read (default: --out)")
    parser.add_argument("--set", nargs=argparse.REMAINDER, default=[],
                        help="bundle overrides for every run, e.g. --set --epochs 100 --batch_size 128")
    args = parser.parse_args(argv)
    try:
        models = resolve_models(args.models)
        parse_overrides(args.set, "--set")
    except ValueError as e:
        parser.error(str(e))
    out = args.out.resolve()
    if args.summarize_only:
        # runs/<dataset>/<run>/record.json; the first version of this script wrote runs/<dataset>/<run>.json
        source = (args.records or args.out).resolve()
        paths = sorted(source.glob("runs/*/*/record.json")) + sorted(source.glob("runs/*/*.json"))
        # seeds beyond the protocol's (run to settle one comparison) stay out of the tables unless asked for
        records = [r for r in (json.loads(p.read_text()) for p in paths)
                   if r["seed"] in args.seeds and r["flag"] in args.datasets]
        if not records:
            parser.error(f"--summarize-only: no record of seeds {args.seeds} and datasets {args.datasets} under "
                         f"{source / 'runs'}")
        for r in records:  # records of an older version of this script: epoch times from the log
            log = source / "runs" / dataset_key(r["flag"], r.get("image_size", 28)) / f"{r['model']}_seed{r['seed']}"
            if "train_epoch_seconds" not in r and (log / "training.log").is_file():
                r["train_epoch_seconds"] = epoch_seconds((log / "training.log").read_text())
            # the summary again from the run's own report rows: records before 2026-12-03 hold a summary whose means
            # and worst angle counted the 0° rows (three of 12 in 3D, one per axis), today's leave them out
            r["rotation"] = summarize_report(_report_rows(r))
        records.sort(key=lambda r: (args.datasets.index(r["flag"]), r.get("image_size", 28), r["seed"]))
        table, summary = summarize(records)
        files.write_text(out / "results.md", table)
        write_json({"runs": len(records), "table": summary}, out / "results.json")
        plot(records, out)
        print(table)
        return 0
    from monai_sre.data import export_medmnist

    size = args.image_size
    for flag in args.datasets:  # export once, before the parallel runs read it
        export_medmnist(flag, out / "data" / f"{flag}_{size}_nifti", size=size, image_format="nifti")
    jobs = [(f, m, s) for f in args.datasets for s in args.seeds for m in models]
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // args.jobs))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(_run_one, out, f, size, m, models[m], s, args.set, args.timeout, threads, args.resume)
            for f, m, s in jobs
        ]
        records = []
        for fut, job in zip(futures, jobs):
            rec = fut.result()
            records.append(rec)
            status = rec.get("error") or f"test AUC {rec['test_auc']:.3f} ACC {rec['test_acc']:.3f}"
            print(f"{job}: {status}", flush=True)
    table, summary = summarize(records)
    files.write_text(out / "results.md", table)
    write_json({"overrides": args.set, "image_size": size, "table": summary}, out / "results.json")
    plot(records, out)
    print(table)
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
