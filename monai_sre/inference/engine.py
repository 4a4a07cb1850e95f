# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Clinical inference inside MONAI engines: the dataset and the CSV handler of the bundles' ``run inferring``.

:class:`ClinicalDataset` turns paths (NIfTI files, DICOM files, DICOM series folders, folders of studies) into one
item per image or series, loaded and preprocessed by the same code as ``monai-sre predict``
(:func:`~monai_sre.transforms.clinical.clinical_loader` and :func:`~monai_sre.transforms.clinical.clinical_transforms`).
An input that cannot be read or preprocessed still yields an item, with a blank image and the reason, so that one
bad input never stops a ``SupervisedEvaluator`` run. :class:`PredictionWriter` collects the evaluator's
probabilities and writes one CSV (or JSON) row per input, with the columns of ``monai-sre predict --output``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import Dataset

from monai_sre.inference.discovery import ClinicalInput, discover_inputs
from monai_sre.inference.predict import error_reason, original_geometry
from monai_sre.inference.results import probability_value, write_predictions
from monai_sre.transforms.clinical import ClinicalPreprocessingConfig, clinical_loader, clinical_transforms
from monai_sre.io.files import escape_undecodable

__all__ = ["ClinicalDataset", "PredictionWriter", "InputsFailedError"]

logger = logging.getLogger(__name__)


class ClinicalDataset(Dataset):
    """One item per clinical image or DICOM series, preprocessed to the model grid.

    Each item is ``{image_key: (in_channels, *grid) float32 tensor, input_key: str}``. The string is the JSON text
    of the input's description (``path``, ``series_uid``, ``modality``, ``intensity_rule``, ``error``,
    ``original_shape``,
    ``original_spacing``, ``original_orientation``, ``preprocessing``): JSON text collates to a list of strings
    whatever its values (``None``, nested settings) and crosses ``DataLoader`` worker processes intact. An input
    that discovery flags (missing path, not NIfTI/DICOM) or that fails to load or preprocess gets a zero image and
    its ``error``; :class:`PredictionWriter` reports it and ignores the prediction made on the blank image.

    Args:
        data: NIfTI files, DICOM files, DICOM series folders, folders of studies (searched recursively, one input
            per DICOM series), or :class:`~monai_sre.inference.discovery.ClinicalInput` items; one path alone is
            one input path, not a sequence of characters.
        preprocessing: the clinical preprocessing settings (a bundle's ``clinical_preprocessing``).
        image_key: key of the image in each item.
        input_key: key of the input's JSON description in each item.
        transform: the transforms from a loaded image to the model's input (a bundle's top-level
            ``preprocessing``); ``None`` builds them from ``preprocessing`` with
            :func:`~monai_sre.transforms.clinical.clinical_transforms` (``load=False``). Loading stays here, so that
            a file that fails to load gets its row.

    Raises:
        ValueError: when ``data`` is empty or a preprocessing setting is invalid.
    """

    def __init__(
        self,
        data: str | os.PathLike | ClinicalInput | Sequence[str | os.PathLike | ClinicalInput],
        preprocessing: ClinicalPreprocessingConfig | Mapping[str, Any],
        image_key: str = "image",
        input_key: str = "input",
        transform: Callable | None = None,
    ) -> None:
        if isinstance(data, (str, os.PathLike, ClinicalInput)):
            data = [data]
        if not data:
            raise ValueError("input paths: none given; expected NIfTI files, DICOM files or folders")
        items: list[ClinicalInput] = []
        for p in data:  # each path expands in place, so items follow the caller's order
            items.extend([p] if isinstance(p, ClinicalInput) else discover_inputs([p]))
        if not isinstance(preprocessing, ClinicalPreprocessingConfig):
            preprocessing = ClinicalPreprocessingConfig.from_dict(preprocessing)
        self.preprocessing = preprocessing
        self.image_key = image_key
        self.input_key = input_key
        self.loader = clinical_loader(image_key)
        if transform is None:
            transform = clinical_transforms(preprocessing, keys=image_key, load=False)
        super().__init__(data=items, transform=transform)

    def _blank_image(self) -> torch.Tensor:
        cfg = self.preprocessing
        return torch.zeros((cfg.in_channels, *[cfg.image_size] * cfg.spatial_dims), dtype=torch.float32)

    def _transform(self, index: int) -> dict[Hashable, Any]:
        item: ClinicalInput = self.data[index]
        description: dict[str, Any] = {
            "path": item.path,
            "series_uid": item.series_uid,
            "modality": item.modality,
            "intensity_rule": None,
            "error": item.error,
            "original_shape": None,
            "original_spacing": None,
            "original_orientation": None,
            "preprocessing": None,
        }
        image = self._blank_image()
        if item.error is None:
            try:
                data = self.loader({self.image_key: item.image})
                description.update(original_geometry(data[self.image_key]))
                prepared = self.transform(data)[self.image_key]
                applied = {k: prepared.meta[k] for k in ("intensity_scaling", "grid_resize") if k in prepared.meta}
                description["modality"] = applied.get("intensity_scaling", {}).get("modality", item.modality)
                description["intensity_rule"] = applied.get("intensity_scaling", {}).get("rule")
                description["preprocessing"] = {**self.preprocessing.to_dict(), "applied": applied}
                image = prepared.as_tensor()
            except Exception as e:  # one bad input must not stop the run: its row carries the reason
                description["error"] = error_reason(e, item.path)
        return {self.image_key: image, self.input_key: json.dumps(description)}


def _per_sample(data: Any, key: str) -> list[Any]:
    """Values of ``key`` per sample, from a decollated batch (list of dicts) or a collated one (dict of batches)."""
    if isinstance(data, Mapping):
        return list(data[key])
    return [d[key] for d in data]


class InputsFailedError(RuntimeError):
    """Some inputs of a ``run inferring`` could not be predicted; their rows in the output file say why."""


class PredictionWriter:
    """Ignite handler writing one row per input of a :class:`ClinicalDataset` with the evaluator's probabilities.

    Rows have the columns of ``monai-sre predict --output``: ``path``, ``series_uid``, ``status`` (``"ok"`` or
    ``"error"``), ``error``, ``pred_index``, ``pred_label``, ``prob_<class name>`` per class, ``modality``,
    ``intensity_rule``,
    ``original_shape``, ``original_spacing``, ``original_orientation`` and ``preprocessing``. The file is written
    once per epoch (the evaluator runs one), atomically, as CSV with a header or as JSON, chosen by its suffix.

    Args:
        output_file: the ``.csv`` or ``.json`` file to write; missing folders are created.
        class_names: one name per model output.
        multi_label: classes are independent flags: ``pred_label`` joins (with ``;``) every class whose
            probability is at least 0.5; ``pred_index`` is the most probable class either way.
        pred_key: key of the probabilities in the engine's output; they must already be probabilities (softmax
            or sigmoid, e.g. :class:`~monai_sre.transforms.ClassProbabilitiesd` in the evaluator's postprocessing, as the
            bundles' ``inference.json``).
        input_key: key of the input descriptions in the engine's batch (see :class:`ClinicalDataset`).

    Raises:
        ValueError: when ``class_names`` is empty or ``output_file`` does not end in ``.csv`` or ``.json``.
    """

    def __init__(
        self,
        output_file: str | os.PathLike,
        class_names: Sequence[str],
        multi_label: bool = False,
        pred_key: str = "pred",
        input_key: str = "input",
    ) -> None:
        self.output_file = Path(output_file)
        if self.output_file.suffix.lower() not in (".csv", ".json"):
            raise ValueError(f"output_file {self.output_file}: expected a name ending in .csv or .json")
        self.class_names = [str(n) for n in class_names]
        if not self.class_names:
            raise ValueError("class_names: expected one name per model output, got none")
        self.multi_label = multi_label
        self.pred_key = pred_key
        self.input_key = input_key
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        """Collect rows at every iteration and write them when the epoch completes.

        Args:
            engine: the evaluator running over a :class:`ClinicalDataset`.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _row(self, description: Mapping[str, Any], probs: torch.Tensor) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": description["path"],
            "series_uid": description["series_uid"],
            "status": "error" if description["error"] else "ok",
            "error": description["error"],
            "pred_index": None,
            "pred_label": None,
            **{f"prob_{n}": None for n in self.class_names},
        }
        if not description["error"]:
            probs = probs.detach().double().cpu().reshape(-1)  # float64, as the evaluation scores (probability_value)
            if len(probs) != len(self.class_names):
                raise ValueError(
                    f"the model returned {len(probs)} class scores but there are {len(self.class_names)} class names"
                )
            if bool(((probs < 0) | (probs > 1) | ~torch.isfinite(probs)).any()):
                raise ValueError(
                    f"'{self.pred_key}' holds values outside [0, 1] ({probs.tolist()}); expected probabilities: apply "
                    "a softmax or sigmoid in the evaluator's postprocessing (monai_sre.transforms.ClassProbabilitiesd)"
                )
            index = int(probs.argmax())
            names = self.class_names
            row["pred_index"] = index
            row["pred_label"] = (
                ";".join(n for n, p in zip(names, probs) if p >= 0.5) if self.multi_label else names[index]
            )
            row.update({f"prob_{n}": probability_value(p) for n, p in zip(names, probs)})
        for key in ("modality", "intensity_rule", "original_shape", "original_spacing", "original_orientation",
                    "preprocessing"):
            row[key] = description.get(key)
        return row

    def __call__(self, engine: Engine) -> None:
        """Add the rows of the engine's current batch.

        Args:
            engine: the evaluator.
        """
        descriptions = _per_sample(engine.state.batch, self.input_key)
        probs = _per_sample(engine.state.output, self.pred_key)
        self.rows.extend(self._row(json.loads(d), p) for d, p in zip(descriptions, probs))

    def _write(self, engine: Engine) -> None:
        path = write_predictions(self.rows, self.output_file)
        failed = sum(row["status"] != "ok" for row in self.rows)
        for row in self.rows:
            if row["status"] != "ok":
                logger.warning("input failed: %s", escape_undecodable(row["error"]))
        logger.info(
            "%d input(s): %d predicted, %d failed; results in %s",
            len(self.rows),
            len(self.rows) - failed,
            failed,
            escape_undecodable(str(path)),
        )

    def raise_for_failures(self) -> None:
        """Raise when any input of the last run failed, after its row was written (as ``monai-sre predict`` exits 1).

        The bundles call it as the last step of ``run inferring``, so the process exits non-zero and a script or
        pipeline sees the failure, while the good rows are already in the output file.

        Raises:
            InputsFailedError: naming how many inputs failed, the first reason and the output file.
        """
        failed = [row for row in self.rows if row["status"] != "ok"]
        if failed:
            raise InputsFailedError(
                f"{len(failed)} of {len(self.rows)} input(s) failed (first: {escape_undecodable(failed[0]['error'])}); "
                f"every row, with the reasons, is in {escape_undecodable(str(self.output_file))}"
            )
