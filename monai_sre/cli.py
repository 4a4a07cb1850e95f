# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``monai-sre`` command line: thin wiring over the package's modules.

Each sub-command imports its module lazily so that ``monai-sre --help`` stays fast. Errors raised for bad input
are printed as one line naming the input (``monai-sre: error: ...``) with a non-zero exit code; ``--debug`` shows the
full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["main", "build_parser"]

# ---------------------------------------------------------------------------------------------------------------
# Sub-commands. Each section owns one command: ``_args_<name>`` adds its arguments, ``_run_<name>`` runs it.
# ---------------------------------------------------------------------------------------------------------------


# --- evaluate-rotation -----------------------------------------------------------------------------------------


def _args_evaluate_rotation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle", nargs="+", required=True, metavar="DIR",
        help="MONAI bundle folder(s) whose config defines the network; one for all checkpoints or one per checkpoint",
    )  # fmt: skip
    parser.add_argument("--checkpoint", nargs="+", required=True, metavar="FILE", help="state dict(s) to evaluate")
    parser.add_argument("--name", nargs="+", metavar="NAME", help="model names for files and legend (default: stems)")
    parser.add_argument(
        "--config", default="configs/train.json",
        help="training config inside each bundle: network, input contract, datalist and validation transforms",
    )  # fmt: skip
    parser.add_argument(
        "--network-id", nargs="+", default=["network_def"], metavar="ID",
        help="config id of the network; one for all checkpoints or one per checkpoint (default: network_def)",
    )  # fmt: skip
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="ID=VALUE",
        help="config overrides (VALUE parsed as JSON, else kept as text), as `python -m monai.bundle run --ID VALUE`",
    )  # fmt: skip
    parser.add_argument("--flag", help="MedMNIST flag, e.g. breastmnist (default: the config's 'flag' id)")
    parser.add_argument("--size", type=int, help="MedMNIST image size (default: the config's 'image_size' id, else 28)")
    parser.add_argument("--data-root", help="folder with the MedMNIST .npz files (default: MONAI_SRE_DATA_ROOT)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument(
        "--limit", type=int, help="export and evaluate only the first N images of each split (the bundle's max_samples)"
    )
    parser.add_argument("--interpolation", default="bilinear", choices=("bilinear", "nearest"))
    parser.add_argument(
        "--variants", nargs="+", default=["full", "disk", "control"], choices=("full", "disk", "control"),
        help="variants of every angle, 'full' among them: the rotated set, the inscribed disk (upright masked too) and "
        "the turn-and-back control; each adds one model pass per angle (default: all three)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder (created if needed)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the bundle's batch_size)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


# How the errors of evaluate_bundle_checkpoints name its arguments: as the options of this command.
_EVALUATE_ROTATION_OPTIONS = {
    "bundles": "--bundle", "checkpoints": "--checkpoint", "names": "--name", "config": "--config",
    "network_ids": "--network-id", "out": "--out", "limit": "--limit", "split": "--split",
}  # fmt: skip


def _run_evaluate_rotation(args: argparse.Namespace) -> int:
    """Read the split through the bundle's datalist and validation transforms, as ``run evaluating`` does."""
    from pathlib import Path

    from monai_sre.evaluation.bundle_evaluation import evaluate_bundle_checkpoints

    overrides = _parse_set(args.set)
    for key, value in (("flag", args.flag), ("image_size", args.size), ("data_root", args.data_root),
                       ("batch_size", args.batch_size)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    summaries = evaluate_bundle_checkpoints(
        args.bundle,
        args.checkpoint,
        out=args.out,
        names=args.name,
        config=args.config,
        network_ids=args.network_id,
        overrides=overrides,
        split=args.split,
        limit=args.limit,
        interpolation=args.interpolation,
        variants=args.variants,
        device=args.device,
        progress=not args.no_progress,
        argument_names=_EVALUATE_ROTATION_OPTIONS,
    )
    for name, s in summaries.items():
        r = s["rotation"]
        print(
            f"{name}: ACC@0 {s['acc_0']:.4f}  mean ACC {r['mean_acc']:.4f} (drop {r['drop_acc']:+.4f}), "
            f"worst {r['worst']['name']} ACC {r['worst']['acc']:.4f}  AUC@0 {_evaluate_rotation_fmt(s['auc_0'])}  "
            f"mean AUC {_evaluate_rotation_fmt(r['mean_auc'])}"
        )
        for variant in ("disk", "control"):  # the other two causes of a drop, when evaluated
            v = s.get(variant)
            if v:
                print(f"  {variant}: ACC@0 {v['acc_0']:.4f}  mean ACC {v['mean_acc']:.4f} (drop {v['drop_acc']:+.4f}), "
                      f"worst {v['worst']['name']} ACC {v['worst']['acc']:.4f}")
    print(f"report written to {Path(args.out).resolve()}")
    return 0


def _parse_set(items: Sequence[str]) -> dict:
    """``--set ID=VALUE ...`` as ``{ID: VALUE}``, VALUE parsed as JSON, else kept as text."""
    import json

    overrides: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects ID=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def _evaluate_rotation_fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# --- prepare-data (monai_sre.data.export) ----------------------------------------------------------------------


def _args_prepare_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flag", required=True, help="medmnist flag, e.g. breastmnist, retinamnist, adrenalmnist3d")
    p.add_argument("--size", type=int, default=28, help="image size: 28 (default), 64, 128, 224 (3D: 28, 64)")
    p.add_argument("--format", dest="image_format", default="nifti", help="nifti (default) or dicom")
    p.add_argument("--out", required=True, help="export folder (new, empty, or an earlier export of the same data)")
    p.add_argument(
        "--splits", nargs="+", default=["train", "val", "test"], help="splits to export (default: train val test)"
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder with the MedMNIST .npz files (default: $MONAI_SRE_DATA_ROOT, else ~/.medmnist)",
    )
    p.add_argument("--limit", type=int, default=None, help="export only the first N samples of each split")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing .npz file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_prepare_data(args: argparse.Namespace) -> int:
    from monai_sre.data.export import export_medmnist

    datalist = export_medmnist(
        args.flag,
        args.out,
        size=args.size,
        image_format=args.image_format,
        splits=args.splits,
        root=args.data_root,
        progress=not args.no_progress,
        limit=args.limit,
        download=not args.no_download,
    )
    print(datalist)
    return 0


# --- predict (monai_sre.inference) -----------------------------------------------------------------------------


def _args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".nii/.nii.gz files, DICOM files or folders")
    p.add_argument("--bundle", required=True, metavar="DIR", help="MONAI bundle folder (configs/inference.json)")
    p.add_argument(
        "--checkpoint", metavar="FILE",
        help="weights (default: BUNDLE/models/model.pt, the shipped weights, checked against their recorded SHA-256)",
    )  # fmt: skip
    p.add_argument("--output", metavar="FILE", help="write every result row to FILE.csv or FILE.json")
    p.add_argument(
        "--rotation-check", action="store_true",
        help="also predict under the grid's 24 cube rotations (3D) or 8 rotations/flips (2D) and report the spread",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    pre = p.add_argument_group("preprocessing overrides (default: the bundle's clinical_preprocessing)")
    pre.add_argument("--modality", help="'auto' (DICOM Modality; NIfTI unknown) or a modality for all inputs: CT, MR")
    pre.add_argument(
        "--intensity", choices=("auto", "8bit_range", "hu_window", "foreground_percentiles"),
        help="intensity rule for every input (default auto: CT -> hu_window, 8-bit -> 8bit_range, else percentiles)",
    )  # fmt: skip
    pre.add_argument("--hu-window", nargs=2, type=float, metavar=("LOW", "HIGH"), help="CT window in HU")
    pre.add_argument("--percentiles", nargs=2, type=float, metavar=("LOW", "HIGH"), help="non-CT scaling range")
    pre.add_argument("--spacing", nargs="+", type=float, metavar="MM", help="resampling spacing (1 value or 1/axis)")
    pre.add_argument("--roi-center", nargs="+", type=float, metavar="C", help="region of interest centre, 1 per axis")
    pre.add_argument("--roi-size", nargs="+", type=float, metavar="S", help="region of interest size, 1 per axis")
    pre.add_argument("--roi-units", choices=("mm", "voxel"), help="units of --roi-center/--roi-size (default mm)")
    pre.add_argument("--size-mode", choices=("fit", "resize", "crop"), help="how the image reaches the model grid")


def _run_predict(args: argparse.Namespace) -> int:
    from monai_sre.inference import predict, write_predictions
    from monai_sre.io.files import escape_undecodable

    overrides = {
        name: value
        for name, value in (
            ("modality", args.modality),
            ("intensity", args.intensity),
            ("hu_window", args.hu_window),
            ("percentiles", args.percentiles),
            ("spacing", args.spacing),
            ("roi_center", args.roi_center),
            ("roi_size", args.roi_size),
            ("roi_units", args.roi_units),
            ("size_mode", args.size_mode),
        )
        if value is not None
    }
    if args.output:
        _predict_check_output(args.output)
    rows = predict(
        args.inputs,
        args.bundle,
        checkpoint=args.checkpoint,
        rotation_check=args.rotation_check,
        preprocessing_overrides=overrides,
        device=args.device,
    )
    written = write_predictions(rows, args.output) if args.output else None  # first: nothing below can lose rows
    for row in rows:
        series = f" [{row['series_uid']}]" if row["series_uid"] else ""
        if row["status"] == "ok":
            spread = f", rotation spread {row['rotation_spread']:.2e}" if args.rotation_check else ""
            prob = [v for k, v in row.items() if k.startswith("prob_")][row["pred_index"]]
            line = f"ok     {row['path']}{series}: {row['pred_label']} (class {row['pred_index']}, p={prob:.3f}{spread})"
        else:
            line = f"error  {row['error']}{series}"
        print(escape_undecodable(line))  # a file name that is not UTF-8 must not stop the report
    if rows:
        shipped = "shipped weights, SHA-256 verified" if rows[0]["shipped_weights"] else "not the shipped weights"
        weights = f"weights: {rows[0]['checkpoint']} (sha256 {rows[0]['checkpoint_sha256']}; {shipped})"
        print(escape_undecodable(weights), file=sys.stderr)
    failed = sum(row["status"] != "ok" for row in rows)
    if written is not None:
        print(f"results written to {escape_undecodable(str(written))}")
    print(f"{len(rows)} input(s): {len(rows) - failed} predicted, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _predict_check_output(output: str) -> None:
    """Refuse an ``--output`` that cannot be written before any prediction runs."""
    from pathlib import Path

    path = Path(output)
    if path.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--output {output}: the file name must end in .csv or .json")
    if path.is_dir():
        raise ValueError(f"--output {output} is a folder; expected a .csv or .json file name")
    existing = next(p for p in path.resolve().parents if p.exists())  # missing folders are created when writing
    if not existing.is_dir():
        raise ValueError(f"--output {output}: cannot write a file there ({existing} is not a folder)")


# --- promote (monai_sre.io.checkpoints) ------------------------------------------------------------------------


def _args_promote(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, metavar="DIR", help="MONAI bundle folder")
    p.add_argument(
        "--run", dest="run_dir", required=True, metavar="DIR", help="the training run folder, e.g. BUNDLE/runs/default"
    )
    p.add_argument("--name", default="model.pt", help="weight file of the run and of models/ (default model.pt)")


def _run_promote(args: argparse.Namespace) -> int:
    from pathlib import Path

    from monai_sre.io.checkpoints import promote_checkpoint

    target = promote_checkpoint(Path(args.run_dir) / args.name, args.bundle, name=args.name)
    print(f"promoted {Path(args.run_dir) / args.name} to {target}; re-export models/model.ts with "
          "`python -m monai.bundle ckpt_export` (see the bundle's docs/README.md)")  # fmt: skip
    return 0


class _Command(NamedTuple):
    """One sub-command: its name and help, the function adding its arguments and the one running it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# The sub-commands, in the order ``monai-sre --help`` lists them.
_COMMANDS: tuple[_Command, ...] = (
    _Command(
        "evaluate-rotation",
        "ACC/AUC of trained classifiers on rotated and flipped MedMNIST test sets, read through the bundle's datalist "
        "and validation transforms (as `run evaluating`); writes per-model CSVs, rotation_summary.json and "
        "rotation_robustness.png",
        _args_evaluate_rotation,
        _run_evaluate_rotation,
    ),
    _Command(
        "prepare-data",
        "export a MedMNIST dataset as NIfTI or DICOM files with a MONAI datalist JSON",
        _args_prepare_data,
        _run_prepare_data,
    ),
    _Command(
        "predict",
        "predict with a bundle on NIfTI files, DICOM files, DICOM series folders and folders of studies (one result "
        "per series); exits 1 when any input failed",
        _args_predict,
        _run_predict,
    ),
    _Command(
        "promote",
        "make a training run's weights the bundle's shipped weights (models/model.pt) and record their SHA-256 and "
        "input contract in metadata.json",
        _args_promote,
        _run_promote,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``monai-sre`` argument parser with every sub-command of the table ``_COMMANDS``.

    Returns:
        the parser; ``parse_args`` yields a namespace whose ``run`` attribute executes the chosen command.
    """
    parser = argparse.ArgumentParser(
        prog="monai-sre",
        description="SRE-Conv (rotation-equivariant convolution) for MONAI: data preparation, rotation-robustness "
        "evaluation and clinical inference (benchmarks: python benchmarks/networks.py in a source checkout).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_arguments, run in _COMMANDS:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``monai-sre`` command line.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        the process exit code: 0 on success, 1 when the command reported failures, 2 on bad input.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("monai-sre: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for users; the traceback only on request
        if args.debug:
            raise
        print(f"monai-sre {args.command}: error: {_one_line(_cause(e))}", file=sys.stderr)
        return 2


def _cause(error: BaseException) -> str:
    """The message that explains ``error``: MONAI's config and transform wrappers hide it in ``__cause__``."""
    wrappers = ("Failed to evaluate ConfigExpression", "Failed to instantiate component", "applying transform")
    while error.__cause__ is not None and str(error).startswith(wrappers):
        error = error.__cause__
    return str(error) or type(error).__name__


def _one_line(message: str, limit: int = 1000) -> str:
    """``message`` on one line (torch's state-dict errors span one line per tensor), cut at ``limit`` characters."""
    line = " ".join(message.split())
    if len(line) <= limit:
        return line
    return line[:limit] + f" ... ({len(line) - limit} more characters; --debug shows all)"


if __name__ == "__main__":
    sys.exit(main())
