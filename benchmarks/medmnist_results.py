# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Train and evaluate SRE-ResNet and MONAI's ResNet on MedMNIST with the bundles' own commands; tabulate the results.

Every run is a copy of a bundle's configs in its own folder, trained with
``python -m monai.bundle run training --config_file configs/train.json --flag F --model_type M --seed S ...``
and evaluated with ``python -m monai.bundle run evaluating --config_file "['configs/train.json','configs/evaluate.json']"``
with the same overrides, so the numbers come from exactly what a user runs. Runs go in parallel (``--jobs``).
The summary (``results.md``, ``results.json``) gives, per dataset and model, parameters, training time, test ACC/AUC
on the original test set, mean and worst-angle ACC/AUC over the rotated test sets and the flips, as mean ± std over
seeds, beside the MedMNIST v2 ResNet-18 numbers; ``robustness_<flag>.png`` plots ACC and AUC against angle for both
models (mean over seeds).

Example (the default 2D recipe on BreastMNIST, 3 seeds; the recorded commands are in ``benchmarks/README.md``)::

    python benchmarks/medmnist_results.py --out results --datasets breastmnist --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: MedMNIST v2 ResNet-18 (28) test AUC / ACC (3D: ResNet-18+3D), from medmnist.com and the MedMNIST v2 paper.
MEDMNIST_V2_RESNET18 = {
    "breastmnist": (0.901, 0.863),
    "retinamnist": (0.717, 0.524),
    "adrenalmnist3d": (0.827, 0.721),
}


def _bundle_for(flag: str) -> Path:
    return REPO / "bundles" / ("sre_medmnist_3d" if flag.endswith("3d") else "sre_medmnist_2d")


def _run_one(out: Path, flag: str, model: str, seed: int, overrides: list[str], timeout: float) -> dict:
    """Train and evaluate one (dataset, model, seed) in its own bundle copy; returns its record."""
    run_dir = out / "runs" / flag / f"{model}_seed{seed}"
    record_file = run_dir / "record.json"
    if record_file.is_file():  # finished earlier: resumable
        return json.loads(record_file.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(_bundle_for(flag) / "configs", run_dir / "configs")
    shutil.copy(_bundle_for(flag) / "LICENSE", run_dir / "LICENSE")
    common = ["--flag", flag, "--model_type", model, "--seed", str(seed),
              "--dataset_dir", str(out / "data"), *overrides]  # exports to data/<flag>_28_nifti
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "2"}
    record = {"flag": flag, "model": model, "seed": seed, "overrides": common}
    start = time.perf_counter()
    for step, args in (
        ("training", ["--config_file", "configs/train.json"]),
        ("evaluating", ["--config_file", "['configs/train.json','configs/evaluate.json']"]),
    ):
        t0 = time.perf_counter()
        with open(run_dir / f"{step}.log", "w") as log:
            proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", step, *args, *common], cwd=run_dir,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        record[f"{step}_seconds"] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            record["error"] = f"{step} failed (exit {proc.returncode}); see {run_dir / (step + '.log')}"
            return record
    metrics = dict(line.split(",") for line in (run_dir / "eval" / "metrics.csv").read_text().splitlines() if line)
    record.update({k: float(v) for k, v in metrics.items()})
    summary = json.loads((run_dir / "eval" / "rotation" / "rotation_summary.json").read_text())["models"][model]
    record["rotation"] = summary
    with open(run_dir / "eval" / "rotation" / f"rotation_{model}.csv") as f:
        record["rows"] = [line.rstrip("\n").split(",") for line in f]
    record["total_seconds"] = round(time.perf_counter() - start, 1)
    record_file.write_text(json.dumps(record, indent=1))
    return record


def _params(flag: str, model: str, overrides: list[str]) -> int:
    from monai_sre.data import dataset_info
    from monai_sre.networks import medmnist_classifier

    info = dataset_info(flag, 28)
    cfg = json.loads((_bundle_for(flag) / "configs" / "train.json").read_text())
    widen = float(overrides[overrides.index("--widen_factor") + 1]) if "--widen_factor" in overrides else cfg[
        "widen_factor"]
    net = medmnist_classifier(model, cfg["arch"], cfg["spatial_dims"], info.n_channels, info.n_classes, widen,
                              cfg["kernel_size"], cfg["conv1_t_size"])
    return sum(p.numel() for p in net.parameters())


def _ms(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarize(records: list[dict], overrides: list[str]) -> tuple[str, dict]:
    """Markdown table and JSON summary (mean ± std over seeds) of finished runs."""
    header = (
        "| dataset | model | params | seeds | train time (s) | test AUC | test ACC | rotated mean AUC | "
        "rotated mean ACC | worst-angle ACC | flips ACC | MedMNIST v2 R18 AUC / ACC |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines, table = [], {}
    for flag in dict.fromkeys(r["flag"] for r in records):
        for model in ("sre", "resnet"):
            runs = [r for r in records if r["flag"] == flag and r["model"] == model and "error" not in r]
            if not runs:
                continue
            rot = [r["rotation"]["rotation"] for r in runs]
            flips = [r["rotation"]["flip"]["mean_acc"] for r in runs if r["rotation"].get("flip")]
            entry = {
                "params": _params(flag, model, overrides),
                "seeds": [r["seed"] for r in runs],
                "train_seconds": [r["training_seconds"] for r in runs],
                "test_auc": [r["test_auc"] for r in runs],
                "test_acc": [r["test_acc"] for r in runs],
                "rot_mean_auc": [x["mean_auc"] for x in rot],
                "rot_mean_acc": [x["mean_acc"] for x in rot],
                "worst_acc": [x["worst"]["acc"] for x in rot],
                "flip_acc": flips,
            }
            table.setdefault(flag, {})[model] = entry
            ref = MEDMNIST_V2_RESNET18.get(flag)
            lines.append(
                f"| {flag} | {'SRE-ResNet-18' if model == 'sre' else 'ResNet-18 (MONAI)'} | {entry['params']:,} | "
                f"{len(runs)} | {_ms(entry['train_seconds'], 0)} | {_ms(entry['test_auc'])} | "
                f"{_ms(entry['test_acc'])} | {_ms(entry['rot_mean_auc'])} | {_ms(entry['rot_mean_acc'])} | "
                f"{_ms(entry['worst_acc'])} | {_ms(flips)} | {f'{ref[0]:.3f} / {ref[1]:.3f}' if ref else '–'} |"
            )
    return header + "\n".join(lines) + "\n", table


def plot(records: list[dict], out: Path) -> list[Path]:
    """One robustness plot per dataset: both models, ACC/AUC averaged over seeds at each transform."""
    from monai_sre.evaluation import plot_robustness

    paths = []
    for flag in dict.fromkeys(r["flag"] for r in records):
        curves = {}
        for model in ("sre", "resnet"):
            runs = [r for r in records if r["flag"] == flag and r["model"] == model and "error" not in r]
            if not runs:
                continue
            head = runs[0]["rows"][0]
            per_run = [[dict(zip(head, row)) for row in r["rows"][1:]] for r in runs]
            rows = []
            for i, row in enumerate(per_run[0]):
                mean = {k: statistics.mean(float(p[i][k]) for p in per_run) for k in ("acc", "auc")}
                rows.append({**row, "angle": float(row["angle"]) if row["angle"] else None, **mean, "n": int(row["n"])})
            curves["SRE-ResNet-18" if model == "sre" else "ResNet-18"] = rows
        path = out / f"robustness_{flag}.png"
        plot_robustness(curves, path, title=f"{flag}: test ACC/AUC under rotation (mean over seeds)")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist", "adrenalmnist3d"])
    parser.add_argument("--models", nargs="+", default=["sre", "resnet"], choices=["sre", "resnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per bundle command")
    parser.add_argument("--summarize-only", action="store_true",
                        help="only tabulate and plot the runs already finished under --out")
    parser.add_argument("--set", nargs=argparse.REMAINDER, default=[],
                        help="bundle overrides for every run, e.g. --set --epochs 100 --batch_size 128")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.summarize_only:
        records = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/*/record.json"))]
        records.sort(key=lambda r: (args.datasets.index(r["flag"]) if r["flag"] in args.datasets else 99, r["seed"]))
        overrides = records[0]["overrides"] if records else []
        table, summary = summarize(records, overrides)
        (out / "results.md").write_text(table)
        (out / "results.json").write_text(json.dumps({"runs": len(records), "table": summary}, indent=1))
        plot(records, out)
        print(table)
        return 0
    from monai_sre.data import export_medmnist

    for flag in args.datasets:  # export once, before the parallel runs read it
        export_medmnist(flag, out / "data" / f"{flag}_28_nifti", size=28, image_format="nifti")
    jobs = [(f, m, s) for f in args.datasets for s in args.seeds for m in args.models]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_run_one, out, f, m, s, args.set, args.timeout) for f, m, s in jobs]
        records = []
        for fut, job in zip(futures, jobs):
            rec = fut.result()
            records.append(rec)
            status = rec.get("error") or f"test AUC {rec['test_auc']:.3f} ACC {rec['test_acc']:.3f}"
            print(f"{job}: {status}", flush=True)
    table, summary = summarize(records, args.set)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"overrides": args.set, "table": summary}, indent=1))
    plot(records, out)
    print(table)
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
