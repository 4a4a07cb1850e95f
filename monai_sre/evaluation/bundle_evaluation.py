# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotation robustness of trained checkpoints of a MONAI bundle, read as the bundle's ``run evaluating`` reads them.

:func:`evaluate_bundle_checkpoints` builds each network from the bundle's training config, loads a checkpoint into
it (checked against the config's input contract), reads a split through the bundle's datalist and validation
transforms and writes the report of :func:`monai_sre.evaluation.report.run_rotation_evaluation`. It is what
``monai-sre evaluate-rotation`` runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_sre.data.export import DATALIST_KEYS
from monai_sre.evaluation.report import run_rotation_evaluation
from monai_sre.evaluation.rotated_sets import VARIANTS
from monai_sre.io.checkpoints import load_weights

__all__ = ["evaluate_bundle_checkpoints"]

# The config ids a bundle training config must define for the evaluation (datalist and validation transforms).
_NEEDED_IDS = ("flag", "task", "spatial_dims", "validate#dataloader")


def _as_list(value: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    return [os.fspath(value)] if isinstance(value, (str, os.PathLike)) else [os.fspath(v) for v in value]


def _bundle_parser(bundle: str, config: str, overrides: Mapping[str, Any]) -> ConfigParser:
    """The bundle's ``config`` (an existing file) with ``bundle_root`` set and ``overrides`` applied."""
    parser = ConfigParser()
    parser.read_config(str(Path(bundle) / config))
    parser["bundle_root"] = str(Path(bundle).resolve())
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _network(parser: ConfigParser, network_id: str, checkpoint: str, option: str) -> nn.Module:
    """Build ``network_id`` and load ``checkpoint`` into it, checked against the config's input contract."""
    if network_id not in parser:
        raise ValueError(f"the bundle config defines no '{network_id}' ({option})")
    net = parser.get_parsed_content(network_id, instantiate=True, lazy=False)  # a new network per checkpoint
    contract = parser.get_parsed_content("input_contract") if "input_contract" in parser else None
    load_weights(net, checkpoint, contract=contract)
    return net


def evaluate_bundle_checkpoints(
    bundles: str | os.PathLike | Sequence[str | os.PathLike],
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    names: Sequence[str] | None = None,
    config: str = "configs/train.json",
    network_ids: str | Sequence[str] = ("network_def",),
    overrides: Mapping[str, Any] | None = None,
    split: str = "test",
    limit: int | None = None,
    interpolation: str = "bilinear",
    variants: Sequence[str] = VARIANTS,
    device: str | torch.device = "cpu",
    progress: bool = True,
    argument_names: Mapping[str, str] | None = None,
) -> dict[str, dict]:
    """Evaluate trained checkpoints of MONAI bundles on rotated and flipped versions of a MedMNIST split.

    The split is read through the first bundle's datalist and validation transforms (``validate#dataloader`` of
    ``config`` with ``validate#data_list_key`` set to the split), after the bundle's ``initialize`` (its checks of
    its settings and its export of the split), exactly as the bundle's ``run evaluating`` reads it. Each checkpoint
    is loaded into a new network built from its bundle's config and checked against the config's input contract.
    All inputs are checked before anything is evaluated, and nothing is written unless every model was evaluated.

    Args:
        bundles: bundle folder(s): one for all checkpoints or one per checkpoint.
        checkpoints: state dicts to evaluate (a bare state dict or a bundle checkpoint with ``model`` and
            ``input_contract``).
        out: report folder, created if needed; receives ``rotation_<name>.csv`` per model,
            ``rotation_summary.json`` and ``rotation_robustness.png``.
        names: model names for the files and the legend (letters, digits, ``_``, ``.``, ``-``), one per checkpoint;
            default: the checkpoints' file stems.
        config: training config inside each bundle (network, input contract, datalist, validation transforms).
        network_ids: config id of the network: one for all checkpoints or one per checkpoint.
        overrides: config ids to set before anything is parsed, e.g. ``{"flag": "retinamnist", "image_size": 64,
            "data_root": ..., "batch_size": 16}``, as ``python -m monai.bundle run --ID VALUE`` sets them.
        split: ``"train"``, ``"val"`` or ``"test"``.
        limit: export and evaluate only the first ``limit`` images of each split (the bundle's ``max_samples``).
        interpolation: ``"bilinear"`` or ``"nearest"``, for the rotations by angles that are not multiples of 90°.
        variants: which of :data:`~monai_sre.evaluation.rotated_sets.VARIANTS` to evaluate for every angle,
            ``"full"`` among them (see :func:`~monai_sre.evaluation.report.run_rotation_evaluation`).
        device: where the networks run.
        progress: show progress bars.
        argument_names: how error messages name the arguments, e.g. ``{"out": "--out"}`` from a command line;
            default: the parameter names.

    Returns:
        ``{model name: summary}``, as :func:`~monai_sre.evaluation.report.run_rotation_evaluation` returns it.

    Raises:
        FileNotFoundError: when a bundle's ``config`` or a checkpoint does not exist.
        ValueError: for a count of ``bundles``, ``network_ids`` or ``names`` that fits neither one nor the number of
            checkpoints, repeated names, an ``out`` that cannot be a folder, a ``limit`` below 1, an unknown
            ``split``, a config that is not a bundle training config or lacks the network id, a checkpoint that does
            not fit the network or the input contract (see :func:`monai_sre.io.checkpoints.load_weights`), and the
            errors of :func:`monai_sre.evaluation.report.run_rotation_evaluation`.
    """
    arg = {key: key for key in ("bundles", "checkpoints", "names", "config", "network_ids", "out", "limit", "split")}
    arg.update(argument_names or {})
    bundles, checkpoints, network_ids = _as_list(bundles), _as_list(checkpoints), _as_list(network_ids)
    n = len(checkpoints)
    if n == 0:
        raise ValueError(f"{arg['checkpoints']} is empty: give at least one checkpoint to evaluate")
    for key, values in (("bundles", bundles), ("network_ids", network_ids)):
        if len(values) not in (1, n):
            raise ValueError(f"{arg[key]} takes 1 value or one per checkpoint ({n}), got {len(values)}")
    for bundle in bundles:
        if not (Path(bundle) / config).is_file():
            raise FileNotFoundError(
                f"bundle config {Path(bundle) / config} not found ({arg['bundles']} {bundle}, {arg['config']} {config})"
            )
    for checkpoint in checkpoints:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    out_dir = Path(out).resolve()
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())  # missing folders are created for the report
    if not existing.is_dir():
        raise ValueError(f"{arg['out']} {out}: cannot create the report folder there ({existing} is not a folder)")
    names = list(names) if names is not None else [Path(c).stem for c in checkpoints]
    if len(names) != n or len(set(names)) != n:
        raise ValueError(f"{arg['names']} takes {n} distinct names (one per checkpoint), got {names}")
    if limit is not None and limit < 1:
        raise ValueError(f"{arg['limit']} must be a positive number of images, got {limit}")
    if split not in DATALIST_KEYS:
        raise ValueError(f"{arg['split']} must be one of {sorted(DATALIST_KEYS)}, got {split!r}")

    # The network and the data follow the dataset the user chose, through the bundle's plain config ids.
    settings = {**(overrides or {}), **({} if limit is None else {"max_samples": limit})}
    parsers = [_bundle_parser(bundle, config, settings) for bundle in bundles]
    first = parsers[0]  # its datalist and validation transforms read the split
    for needed in _NEEDED_IDS:
        try:
            found = needed in first
        except KeyError:  # a missing parent id ('validate')
            found = False
        if not found:
            raise ValueError(f"the config {config} of {bundles[0]} defines no '{needed}'; expected a bundle "
                             "training config (the datalist and validation transforms come from it)")  # fmt: skip
    first["validate#data_list_key"] = DATALIST_KEYS[split]
    if "initialize" in first:  # the bundle's own checks of its settings and its export of the split (datalist)
        first.get_parsed_content("initialize")
    flag, size = first.get_parsed_content("flag"), first.get_parsed_content("image_size")
    models = {
        name: _network(parsers[i % len(parsers)], network_ids[i % len(network_ids)], checkpoint, arg["network_ids"])
        for i, (name, checkpoint) in enumerate(zip(names, checkpoints, strict=True))
    }
    return run_rotation_evaluation(
        models,
        first.get_parsed_content("validate#dataloader"),
        first.get_parsed_content("task"),
        first.get_parsed_content("spatial_dims"),
        out,
        interpolation=interpolation,
        variants=variants,
        device=device,
        progress=progress,
        title=f"{flag} ({size}), {split} split: rotation robustness ({interpolation})",
    )
