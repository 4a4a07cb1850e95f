# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Predictions for clinical inputs (NIfTI files, DICOM files and series, folders of studies) from a bundle.

:func:`predict` reads a bundle (``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``) and
calls :func:`predict_with_model`, which needs no bundle. Each input gives one row; a bad input gives a row with
``status == "error"`` and the reason, and never stops the others.

Bundle contract:

* ``inference.json`` defines ``network_def`` (the network, e.g. ``{"_target_": "monai_sre.networks.SREResNet",
  ...}``) and ``input_contract`` (a :class:`~monai_sre.transforms.contract.InputContract`, e.g.
  ``"$monai_sre.transforms.medmnist_contract(2, 28, 1)"``): the preprocessing follows the contract, so an image of
  the training kind gets exactly the training mapping. It may define ``clinical_preprocessing``: run options and
  other fields of :class:`~monai_sre.transforms.clinical.ClinicalPreprocessingConfig` (references such as
  ``"@image_size"`` work).
* Without ``input_contract``, missing fields come from ``metadata.json``: ``network_data_format.inputs.image``
  (``spatial_shape`` gives ``spatial_dims`` and ``image_size``, ``num_channels`` gives ``in_channels``); class
  names come from
  ``network_data_format.outputs.pred.channel_def`` (``{"0": "benign", ...}``), else ``class_names`` in
  ``inference.json``, else ``class_<i>``.
* ``multi_label`` in ``inference.json`` (optional, default false) marks independent class flags: probabilities
  are then sigmoids instead of a softmax, and ``pred_label`` lists every class at or above 0.5.
* The checkpoint is a state dict, flat or under ``"model"``, read by :mod:`monai_sre.io.checkpoints`: the shipped
  ``models/model.pt`` must match the SHA-256 recorded for it in ``metadata.json``, and a checkpoint trained with
  another input contract than the bundle's is refused. Every row names the weights (``checkpoint``,
  ``checkpoint_sha256``) and the intensity rule applied (``intensity_rule``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data.utils import affine_to_spacing

from monai_sre.inference.discovery import ClinicalInput, discover_inputs
from monai_sre.inference.results import probability_value
from monai_sre.inference.rotation_check import symmetry_spread
from monai_sre.transforms.clinical import ClinicalPreprocessingConfig, clinical_loader, clinical_transforms
from monai_sre.io.checkpoints import file_sha256, load_weights
from monai_sre.transforms.contract import InputContract
from monai_sre.transforms.probabilities import class_probabilities

__all__ = [
    "LoadedBundle", "load_bundle", "predict", "predict_with_model", "file_sha256", "error_reason", "original_geometry"
]

_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


@dataclass
class LoadedBundle:
    """A bundle ready for :func:`predict_with_model`.

    Args:
        name: the bundle's ``name`` in its metadata, else its folder name.
        version: the bundle's ``version``.
        network: the network with the checkpoint loaded, in eval mode.
        class_names: one name per output class.
        preprocessing: the clinical preprocessing settings.
        checkpoint: the checkpoint file.
        checkpoint_sha256: its SHA-256.
        multi_label: whether classes are independent flags (sigmoid) rather than exclusive (softmax).
        contract: the bundle's input contract (``None`` for bundles that state none).
        shipped: whether the checkpoint is the bundle's shipped weights, verified against their recorded SHA-256.
    """

    name: str
    version: str
    network: torch.nn.Module
    class_names: list[str]
    preprocessing: ClinicalPreprocessingConfig
    checkpoint: str
    checkpoint_sha256: str
    multi_label: bool = False
    contract: InputContract | None = None
    shipped: bool = False


def _class_names(metadata: Mapping[str, Any], parser: ConfigParser) -> list[str] | None:
    pred = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    channel_def = pred.get("channel_def")
    if isinstance(channel_def, Mapping) and channel_def:
        return [str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
    if "class_names" in parser:
        return [str(n) for n in parser.get_parsed_content("class_names")]
    if isinstance(pred.get("num_channels"), int):
        return [f"class_{i}" for i in range(pred["num_channels"])]
    return None


def _preprocessing_settings(metadata: Mapping[str, Any], parser: ConfigParser) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if "input_contract" in parser:
        contract = parser.get_parsed_content("input_contract")
        contract = contract if isinstance(contract, InputContract) else InputContract.from_dict(contract)
        settings.update({k: v for k, v in contract.to_dict().items() if k != "channel_dim"})
        if "clinical_preprocessing" in parser:
            settings.update(parser.get_parsed_content("clinical_preprocessing"))
        return settings
    image = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    shape = image.get("spatial_shape")
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(s, int) for s in shape):
        settings["spatial_dims"] = len(shape)
        settings["image_size"] = max(shape)
    if isinstance(image.get("num_channels"), int):
        settings["in_channels"] = image["num_channels"]
    if "clinical_preprocessing" in parser:
        settings.update(parser.get_parsed_content("clinical_preprocessing"))
    return settings


def load_bundle(
    bundle_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    preprocessing_overrides: Mapping[str, Any] | None = None,
) -> LoadedBundle:
    """Read a bundle's metadata, network, preprocessing settings and checkpoint.

    Args:
        bundle_dir: the bundle folder (with ``configs/metadata.json`` and ``configs/inference.json``).
        checkpoint: the weights; default ``<bundle_dir>/models/model.pt`` (the shipped weights).
        preprocessing_overrides: fields of :class:`ClinicalPreprocessingConfig` replacing the bundle's.

    Returns:
        the loaded bundle, network on CPU in eval mode.

    Raises:
        FileNotFoundError: naming the missing bundle file or checkpoint.
        ValueError: when the config has no ``network_def``, a setting is invalid, the checkpoint does not fit, its
            bytes differ from the SHA-256 recorded for the shipped weights, or it was trained with another input
            contract than the bundle's (naming both).
    """
    bundle = Path(bundle_dir)
    meta_file = bundle / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"bundle {bundle}: {meta_file} not found (is this a MONAI bundle folder?)")
    config_file = next((bundle / "configs" / n for n in _CONFIG_NAMES if (bundle / "configs" / n).is_file()), None)
    if config_file is None:
        raise FileNotFoundError(f"bundle {bundle}: no configs/inference.json (or .yaml) found")
    metadata = ConfigParser.load_config_file(meta_file)
    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = str(bundle)
    if "network_def" not in parser:
        raise ValueError(f"bundle {bundle}: {config_file.name} has no 'network_def'")
    network = parser.get_parsed_content("network_def", instantiate=True)
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"bundle {bundle}: 'network_def' built a {type(network).__name__}, not a torch.nn.Module")
    settings = {**_preprocessing_settings(metadata, parser), **dict(preprocessing_overrides or {})}
    try:
        preprocessing = ClinicalPreprocessingConfig.from_dict(settings)
        contract = parser.get_parsed_content("input_contract") if "input_contract" in parser else None
        if contract is not None and not isinstance(contract, InputContract):
            contract = InputContract.from_dict(contract)
    except ValueError as e:
        raise ValueError(f"bundle {bundle}: preprocessing: {e}") from e

    ckpt = Path(checkpoint) if checkpoint is not None else bundle / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found (train the bundle first or pass a checkpoint file)")
    loaded = load_weights(network, ckpt, contract=contract, bundle_dir=bundle)
    network.eval()
    return LoadedBundle(
        name=str(metadata.get("name") or bundle.resolve().name),
        version=str(metadata.get("version", "")),
        network=network,
        class_names=_class_names(metadata, parser) or [],
        preprocessing=preprocessing,
        checkpoint=str(ckpt),
        checkpoint_sha256=loaded.sha256,
        multi_label=bool(parser.get_parsed_content("multi_label")) if "multi_label" in parser else False,
        contract=contract,
        shipped=loaded.shipped,
    )


def _unwrap(error: BaseException) -> BaseException:
    """The exception inside MONAI's 'applying transform' wrappers."""
    while isinstance(error, RuntimeError) and str(error).startswith("applying transform") and error.__cause__:
        error = error.__cause__
    return error


def error_reason(error: BaseException, path: str) -> str:
    """One line naming the input and what went wrong, without MONAI's 'applying transform' wrappers.

    Args:
        error: the exception raised while reading or predicting ``path``.
        path: the input, named in the line unless the message already names it.

    Returns:
        the line for the result's ``error`` column.
    """
    error = _unwrap(error)
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, (ValueError, OSError)):
        message = f"{type(error).__name__}: {message}"
    return message if path in message else f"{path}: {message}"


def original_geometry(image: torch.Tensor) -> dict[str, Any]:
    """Shape, spacing and orientation of an image as loaded, before any preprocessing.

    Args:
        image: a loaded image (a MONAI ``MetaTensor`` with its affine; a plain tensor counts as identity-oriented).

    Returns:
        ``original_shape``, ``original_spacing`` (mm) and ``original_orientation`` (axis codes, ``?`` where a single
        slice leaves an axis undetermined).
    """
    meta = getattr(image, "meta", {})
    channel_dim = meta.get("original_channel_dim", float("nan"))
    has_channel = not (isinstance(channel_dim, float) and np.isnan(channel_dim)) and channel_dim != "no_channel"
    spatial = image.ndim - (1 if has_channel else 0)
    affine = np.asarray(meta.get("original_affine", meta.get("affine", np.eye(4))), dtype=float)
    rank = min(spatial, affine.shape[0] - 1)
    # A single slice's affine may leave an axis undetermined; '?' marks it instead of failing the prediction.
    codes = "".join(c or "?" for c in nib.aff2axcodes(affine)) if affine.shape == (4, 4) else ""
    return {
        "original_shape": [int(s) for s in image.shape],
        "original_spacing": [round(float(s), 6) for s in affine_to_spacing(affine, r=rank, dtype=float)],
        "original_orientation": codes[:rank],
    }


def _blank_row(
    item: ClinicalInput, names: Sequence[str], extra_fields: Mapping[str, Any], rotation_check: bool
) -> dict[str, Any]:
    """A result row with every column, empty until the prediction fills it: the same columns for every input."""
    row: dict[str, Any] = {
        "path": item.path,
        "series_uid": item.series_uid,
        "status": "error",
        "error": None,
        "pred_index": None,
        "pred_label": None,
        **{f"prob_{n}": None for n in names},
        "modality": item.modality,
        "intensity_rule": None,
        "original_shape": None,
        "original_spacing": None,
        "original_orientation": None,
        "preprocessing": None,
        **dict(extra_fields),
    }
    if rotation_check:
        row.update({"rotation_spread": None, "rotation_agreement": None})
    row.update({"load_s": None, "preprocess_s": None, "model_s": None})
    return row


def predict_with_model(
    inputs: Sequence[str | os.PathLike | ClinicalInput],
    model: torch.nn.Module,
    preprocessing: ClinicalPreprocessingConfig | Mapping[str, Any],
    class_names: Sequence[str] | None = None,
    rotation_check: bool = False,
    device: str | torch.device = "cpu",
    extra_fields: Mapping[str, Any] | None = None,
    multi_label: bool = False,
) -> list[dict[str, Any]]:
    """Predict a class for every image or series found in ``inputs`` with an already built model.

    Args:
        inputs: NIfTI files, DICOM files, DICOM series folders, folders of studies, or
            :class:`~monai_sre.inference.discovery.ClinicalInput` items.
        model: maps ``(1, in_channels, *grid)`` to class logits ``(1, K)``; probabilities are their float64 softmax
            (sigmoid with ``multi_label`` or a single logit: :func:`~monai_sre.transforms.class_probabilities`). It is
            moved to ``device`` and set to eval mode.
        preprocessing: the clinical preprocessing settings.
        class_names: ``K`` names; default ``class_<i>``.
        rotation_check: also predict under every rot90 symmetry of the grid (24 in 3D, 8 in 2D) and report
            ``rotation_spread`` and ``rotation_agreement``.
        device: where the preprocessing after loading and the model run.
        extra_fields: constant columns added to every row (e.g. bundle name and version).
        multi_label: classes are independent flags: sigmoid probabilities, and ``pred_label`` joins (with ``;``)
            every class at or above 0.5; ``pred_index`` is still the most probable class.

    Returns:
        one row per input, in discovery order, with ``path``, ``series_uid``, ``status`` (``"ok"`` or ``"error"``),
        ``error``, ``pred_index``, ``pred_label``, ``prob_<name>`` per class, ``modality``, ``intensity_rule`` (the
        rule of :mod:`monai_sre.transforms.contract` that mapped the intensities), ``original_shape``,
        ``original_spacing``, ``original_orientation`` (axis codes), ``preprocessing`` (settings and what was
        applied), the ``extra_fields``, the rotation columns when requested, and ``load_s``, ``preprocess_s``,
        ``model_s`` (seconds).
    """
    if not isinstance(preprocessing, ClinicalPreprocessingConfig):
        preprocessing = ClinicalPreprocessingConfig.from_dict(preprocessing)
    device = torch.device(device)
    model = model.to(device).eval()
    names = list(class_names or [])
    if isinstance(inputs, (str, os.PathLike, ClinicalInput)):  # one path, not a sequence of characters
        inputs = [inputs]
    items: list[ClinicalInput] = []
    for p in inputs:  # each path expands in place, so results follow the caller's order
        items.extend([p] if isinstance(p, ClinicalInput) else discover_inputs([p]))
    loader = clinical_loader("image")
    transforms = clinical_transforms(preprocessing, keys="image", load=False)

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = model(batch.to(device))
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.ndim != 2:
            raise ValueError(f"the model returned shape {tuple(logits.shape)}, expected (batch, classes)")
        # float64, the softmax of the bundle evaluation and run inferring (monai_sre.transforms.probabilities)
        return class_probabilities(logits.cpu(), multi_label, dim=1)

    rows = []
    for item in items:
        row = _blank_row(item, names, extra_fields or {}, rotation_check)
        if item.error is not None:
            row["error"] = item.error
            rows.append(row)
            continue
        try:
            start = time.perf_counter()
            try:
                data = loader({"image": item.image})
            except Exception as e:
                cause = _unwrap(e)
                if isinstance(cause, (ValueError, OSError)):
                    raise
                # Readers fail on damaged files with whatever their decoder meets (TypeError, struct.error, ...).
                raise ValueError(
                    f"{item.path}: cannot read the image ({type(cause).__name__}: {' '.join(str(cause).split())}); "
                    "expected a readable NIfTI or DICOM image"
                ) from e
            loaded = time.perf_counter()
            row.update(original_geometry(data["image"]))
            if device.type != "cpu":  # resampling a clinical volume is the costly step: run it where the model runs
                data["image"] = data["image"].to(device)
            image = transforms(data)["image"]
            if device.type == "cuda":  # kernels run asynchronously: charge them to the step that launched them
                torch.cuda.synchronize(device)
            prepared = time.perf_counter()
            probs = probabilities(image.as_tensor().unsqueeze(0))[0]
            done = time.perf_counter()
            if not names:
                names = [f"class_{i}" for i in range(len(probs))]
                row.update({f"prob_{n}": None for n in names})
            if len(probs) != len(names):
                raise ValueError(f"the model returned {len(probs)} class scores but there are {len(names)} class names")
            index = int(probs.argmax())
            label = ";".join(n for n, p in zip(names, probs) if p >= 0.5) if multi_label else names[index]
            applied = {k: image.meta[k] for k in ("intensity_scaling", "grid_resize") if k in image.meta}
            row.update(
                {
                    "status": "ok",
                    "pred_index": index,
                    "pred_label": label,
                    **{f"prob_{n}": probability_value(p) for n, p in zip(names, probs)},
                    "modality": applied.get("intensity_scaling", {}).get("modality", item.modality),
                    "intensity_rule": applied.get("intensity_scaling", {}).get("rule"),
                    "preprocessing": {**preprocessing.to_dict(), "applied": applied},
                    "load_s": round(loaded - start, 4),
                    "preprocess_s": round(prepared - loaded, 4),
                    "model_s": round(done - prepared, 4),
                }
            )
            if rotation_check:
                row.update(symmetry_spread(probabilities, image.as_tensor(), preprocessing.spatial_dims))
        except Exception as e:  # one bad input must not stop the batch: report it in its row
            row["error"] = error_reason(e, item.path)
        rows.append(row)
    return rows


def predict(
    inputs: Sequence[str | os.PathLike],
    bundle_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    rotation_check: bool = False,
    preprocessing_overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Predict a class for every image or series in ``inputs`` with a bundle's network and preprocessing.

    Args:
        inputs: NIfTI files, DICOM files, DICOM series folders and folders of studies (one result per series).
        bundle_dir: the bundle folder.
        checkpoint: the weights; default ``<bundle_dir>/models/model.pt`` (the shipped weights, checked against the
            SHA-256 recorded in ``metadata.json``).
        rotation_check: also report the spread of the probabilities under the grid's rot90 symmetries.
        preprocessing_overrides: fields of :class:`ClinicalPreprocessingConfig` replacing the bundle's, e.g.
            ``{"modality": "CT", "roi_center": [0, -20, 10], "roi_size": [80, 80, 80]}``.
        device: where the model runs.

    Returns:
        one row per input as described in :func:`predict_with_model`, plus ``bundle_name``, ``bundle_version``,
        ``checkpoint`` (the weight file), ``checkpoint_sha256`` and ``shipped_weights`` (whether they are the
        bundle's shipped weights, SHA-256 verified).

    Raises:
        FileNotFoundError: when the bundle or checkpoint is missing.
        ValueError: when the bundle's configuration or checkpoint is invalid.
    """
    bundle = load_bundle(bundle_dir, checkpoint=checkpoint, preprocessing_overrides=preprocessing_overrides)
    return predict_with_model(
        inputs,
        bundle.network,
        bundle.preprocessing,
        class_names=bundle.class_names or None,
        rotation_check=rotation_check,
        device=device,
        multi_label=bundle.multi_label,
        extra_fields={
            "bundle_name": bundle.name,
            "bundle_version": bundle.version,
            "checkpoint": bundle.checkpoint,
            "checkpoint_sha256": bundle.checkpoint_sha256,
            "shipped_weights": bundle.shipped,
        },
    )
