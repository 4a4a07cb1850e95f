# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Checkpoints: the one place that reads, checks and promotes network weights.

Two kinds of weight files exist:

* **run checkpoints**, written by a bundle's training into its run folder (``runs/<run_name>/``): the best model
  ``{"model": state_dict, "input_contract": {...}}`` (with ``--ema_decay``, the weight average the validator scored)
  and the full training state (``checkpoint_last.pt``, ``model_final.pt``: model, optimizer, scheduler, engines, the
  weight average under ``"weight_average"``, empty without one, and the contract);
* **shipped weights**, ``models/model.pt`` of a bundle: a flat state dict (what MONAI's ``CheckpointLoader`` and
  ``python -m monai.bundle ckpt_export`` read), whose SHA-256 and input contract ``configs/metadata.json`` records
  under ``shipped_weights``. Training never writes them; :func:`promote_checkpoint` (``monai-sre promote``) does.

Every reader goes through :func:`read_checkpoint` (``torch.load(weights_only=True)``, a state dict flat or under
``"model"``, a ``DistributedDataParallel`` ``module.`` prefix stripped) and, to use the weights, :func:`load_weights`
or :func:`check_checkpoint`, which also refuse shipped weights whose bytes changed and a checkpoint trained on
another input contract than the one it is used with, naming both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_sre.io import files

__all__ = [
    "CONTRACT_KEY",
    "MODEL_KEY",
    "SHIPPED_KEY",
    "Checkpoint",
    "check_checkpoint",
    "checkpoint_to_evaluate",
    "file_sha256",
    "load_weights",
    "promote_checkpoint",
    "read_checkpoint",
    "shipped_weights",
]

logger = logging.getLogger(__name__)

#: Key of the input contract inside the checkpoints a bundle writes.
CONTRACT_KEY = "input_contract"
#: Key of the network weights inside a full (nested) checkpoint.
MODEL_KEY = "model"
#: Key of ``metadata.json`` recording the shipped weight files: ``{"models/model.pt": {"sha256": ..., ...}}``.
SHIPPED_KEY = "shipped_weights"
_METADATA = Path("configs") / "metadata.json"


@dataclass(frozen=True)
class Checkpoint:
    """Network weights read from a file, with what is known about them.

    Args:
        path: the file.
        state: the network's state dict (a ``module.`` prefix of ``DistributedDataParallel`` removed).
        sha256: the file's SHA-256.
        contract: the input contract the weights were trained with (saved in the file, or recorded for shipped
            weights in the bundle's ``metadata.json``); ``None`` when unknown (a plain state dict from elsewhere).
        shipped: whether the file is a bundle's shipped weights, checked against the SHA-256 recorded for it.
    """

    path: Path
    state: dict[str, torch.Tensor]
    sha256: str
    contract: dict[str, Any] | None = None
    shipped: bool = False

    def describe(self) -> str:
        """One line naming the weights: path, SHA-256, and whether they are shipped weights or a run's.

        Returns:
            the line.
        """
        kind = "shipped weights, SHA-256 verified" if self.shipped else "not the shipped weights"
        return f"{self.path} (sha256 {self.sha256}; {kind})"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in chunks.

    Args:
        path: the file.

    Returns:
        the hex digest.

    Raises:
        OSError: when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-shaped copy (tuples as lists) so that contracts from configs, JSON and checkpoints compare equal."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value))


def read_checkpoint(path: str | os.PathLike, key: str = MODEL_KEY) -> Checkpoint:
    """Read the network weights (and saved input contract) of a checkpoint file.

    Args:
        path: a ``torch.save`` file holding a state dict, flat or under ``key`` next to other training state.
        key: where a nested checkpoint keeps the network's weights.

    Returns:
        the checkpoint, its state dict without a ``DistributedDataParallel`` ``module.`` prefix.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not a readable ``weights_only`` checkpoint or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch names neither the file nor the cause of a damaged one ("101", "central directory")
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(
            f"checkpoint {path} is not a readable PyTorch checkpoint (truncated, corrupt, or not written by "
            f"torch.save with tensors only): {type(e).__name__}: {reason}"
        ) from e
    contract = None
    state = content
    if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
        state = content[key]
        saved = content.get(CONTRACT_KEY)
        contract = _plain(saved) if isinstance(saved, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"checkpoint {path} holds no state dict (flat or under {key!r}; found {type(content).__name__}); "
            "expected network weights"
        )
    state = dict(state)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return Checkpoint(path=path, state=state, sha256=file_sha256(path), contract=contract)


def _bundle_of(path: Path) -> Path | None:
    """The bundle folder whose ``models/`` holds ``path``, if any."""
    folder = path.resolve().parent
    if folder.name == "models" and (folder.parent / _METADATA).is_file():
        return folder.parent
    return None


def shipped_weights(bundle_dir: str | os.PathLike) -> dict[Path, dict[str, Any]]:
    """The shipped weight files a bundle's ``metadata.json`` records, with their SHA-256 and input contract.

    Args:
        bundle_dir: the bundle folder.

    Returns:
        ``{resolved file path: record}``; empty when the metadata records none.

    Raises:
        ValueError: when ``metadata.json`` is not valid JSON or its ``shipped_weights`` is malformed.
    """
    meta_file = Path(bundle_dir) / _METADATA
    if not meta_file.is_file():
        return {}
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{meta_file} is not valid JSON: {e}") from e
    records = metadata.get(SHIPPED_KEY) or {}
    if not isinstance(records, Mapping) or not all(
        isinstance(r, Mapping) and isinstance(r.get("sha256"), str) for r in records.values()
    ):
        raise ValueError(f"{meta_file}: '{SHIPPED_KEY}' must map file names to {{'sha256': ..., ...}}")
    return {(Path(bundle_dir) / name).resolve(): dict(record) for name, record in records.items()}


def _contract_difference(found: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    keys = sorted(set(found) | set(expected))
    diffs = [f"{k}: {found.get(k)!r} in the checkpoint, {expected.get(k)!r} here" for k in keys
             if found.get(k) != expected.get(k)]  # fmt: skip
    return "; ".join(diffs)


def _verified(
    path: str | os.PathLike, key: str, contract: Any | None, bundle_dir: str | os.PathLike | None
) -> Checkpoint:
    checkpoint = read_checkpoint(path, key)
    bundle = Path(bundle_dir) if bundle_dir is not None else _bundle_of(checkpoint.path)
    record = shipped_weights(bundle).get(checkpoint.path.resolve()) if bundle is not None else None
    if record is not None:
        if record["sha256"] != checkpoint.sha256:
            raise ValueError(
                f"checkpoint {checkpoint.path}: its SHA-256 {checkpoint.sha256} differs from the {record['sha256']} "
                f"recorded for the shipped weights in {bundle / _METADATA}; the file was damaged or replaced. "
                "Restore it, or promote trained weights with `monai-sre promote`"
            )
        saved = record.get(CONTRACT_KEY)
        recorded = _plain(saved) if saved else None
        checkpoint = replace(checkpoint, shipped=True, contract=checkpoint.contract or recorded)
    if contract is not None and checkpoint.contract is not None:
        expected = _plain(contract)
        if checkpoint.contract != expected:
            raise ValueError(
                f"checkpoint {checkpoint.path} was trained with input contract {checkpoint.contract}, but it is used "
                f"with input contract {expected} ({_contract_difference(checkpoint.contract, expected)}); use the "
                "bundle settings the checkpoint was trained with, or a checkpoint trained with these"
            )
    return checkpoint


def _check_fits(checkpoint: Checkpoint, network: nn.Module) -> None:
    """Name the file and the first differing tensors when the weights do not fit ``network``."""
    net = getattr(network, "module", network)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in checkpoint.state.items()}
    # files written before SRE state-dict version 2 have no band_scale: the layer loads them as scale 1
    optional = {f"{name}.band_scale" if name else "band_scale" for name, m in net.named_modules()
                if hasattr(m, "band_scale_mode")}
    missing = [k for k in expected if k not in found and k not in optional]
    unexpected = [k for k in found if k not in expected]
    resized = [k for k in expected if k in found and found[k] != expected[k]]
    if not (missing or unexpected or resized):
        return
    parts = []
    if resized:
        k = resized[0]
        parts.append(f"{len(resized)} tensor(s) of other shapes (e.g. {k}: {found[k]} in the file, {expected[k]} here)")
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
    # the gradient-norm split has no weights, only its index buffer: name the setting that differs
    hint = ""
    if all(k.endswith("gradient_index") for k in resized + missing + unexpected):
        hint = (" (only the gradient-norm channels differ: build the network with the gradient_fraction the checkpoint "
                "was trained with; in the bundles --gradient_fraction)")
    raise ValueError(
        f"checkpoint {checkpoint.path} does not fit the {type(getattr(network, 'module', network)).__name__} of this "
        f"configuration: {'; '.join(parts)}; expected a checkpoint of the same architecture and settings{hint}"
    )


def check_checkpoint(
    path: str | os.PathLike,
    network: nn.Module,
    key: str = MODEL_KEY,
    contract: Any | None = None,
    bundle_dir: str | os.PathLike | None = None,
) -> Path:
    """Check, before a run uses or resumes from it, that ``path`` holds weights fit for ``network``.

    Loading a checkpoint of another architecture fails inside ``load_state_dict`` with one line per tensor and
    without the file's name; this names the file and the first differences on one line. It also refuses shipped
    weights whose bytes changed and weights trained on another input contract, and logs which weights are used.
    ``network`` is not modified.

    Args:
        path: the checkpoint (flat state dict or nested under ``key``).
        network: the network the weights are for; a ``DistributedDataParallel`` wrapper is looked through.
        key: where a nested checkpoint keeps the network's weights.
        contract: the input contract the weights will be fed with (an ``InputContract`` or its dict); ``None``
            skips the check.
        bundle_dir: the bundle whose ``metadata.json`` records the shipped weights; default: the bundle holding
            ``path`` in its ``models/`` folder.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is unreadable, holds no state dict, does not fit ``network``, differs from its
            recorded SHA-256, or was trained with another input contract.
    """
    checkpoint = _verified(path, key, contract, bundle_dir)
    _check_fits(checkpoint, network)
    logger.info("weights: %s", checkpoint.describe())
    return Path(path)


def load_weights(
    network: nn.Module,
    path: str | os.PathLike,
    key: str = MODEL_KEY,
    contract: Any | None = None,
    bundle_dir: str | os.PathLike | None = None,
) -> Checkpoint:
    """Check a checkpoint as :func:`check_checkpoint` does and load it into ``network``.

    Args:
        network: the network; a ``DistributedDataParallel`` wrapper is looked through.
        path: the checkpoint.
        key: where a nested checkpoint keeps the network's weights.
        contract: the input contract the network will be fed with; ``None`` skips the check.
        bundle_dir: the bundle recording the shipped weights (default: found from ``path``).

    Returns:
        the checkpoint that was loaded.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: as :func:`check_checkpoint`.
    """
    checkpoint = _verified(path, key, contract, bundle_dir)
    _check_fits(checkpoint, network)
    getattr(network, "module", network).load_state_dict(checkpoint.state)
    return checkpoint


def checkpoint_to_evaluate(run_dir: str | os.PathLike, name: str, bundle_dir: str | os.PathLike) -> str:
    """The weights a bundle evaluation uses: the training run's, when it has any, else the shipped ones.

    The README's ``run training`` then ``run evaluating`` evaluates the model just trained; ``run evaluating`` in a
    fresh bundle evaluates the shipped weights. The choice is logged.

    Args:
        run_dir: the training run folder (``runs/<run_name>``).
        name: the weight file name (``model.pt``, or ``model_resnet.pt`` for the baseline).
        bundle_dir: the bundle folder (shipped weights in ``models/``).

    Returns:
        the path of the weights to evaluate.

    Raises:
        FileNotFoundError: when neither the run nor the bundle has ``name``.
    """
    trained, shipped = Path(run_dir) / name, Path(bundle_dir) / "models" / name
    if trained.is_file():
        logger.info("evaluating the model trained in %s: %s", run_dir, trained)
        return str(trained)
    if shipped.is_file():
        logger.info("no trained %s in %s: evaluating the shipped weights %s", name, run_dir, shipped)
        return str(shipped)
    raise FileNotFoundError(f"no {name} in the run folder {run_dir} nor in {Path(bundle_dir) / 'models'}; train first")


def promote_checkpoint(
    run_checkpoint: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    name: str = "model.pt",
    contract: Any | None = None,
) -> Path:
    """Make a training run's weights the bundle's shipped weights: ``models/<name>`` and its metadata record.

    The weights are written as a flat state dict (what ``CheckpointLoader`` and ``ckpt_export`` read), and
    ``metadata.json`` records their SHA-256, input contract and origin under ``shipped_weights``. Both files are
    replaced atomically. Re-export ``models/model.ts`` afterwards (``python -m monai.bundle ckpt_export``).

    Args:
        run_checkpoint: the run's weights, e.g. ``runs/default/model.pt``.
        bundle_dir: the bundle folder.
        name: the shipped file name in ``models/``.
        contract: the input contract to record when the checkpoint has none saved (older runs).

    Returns:
        the shipped weight file.

    Raises:
        FileNotFoundError: when the checkpoint or the bundle's ``metadata.json`` is missing.
        ValueError: when the checkpoint is unreadable, or no input contract is known for it, or ``contract``
            differs from the one saved in the checkpoint.
    """
    bundle = Path(bundle_dir)
    meta_file = bundle / _METADATA
    if not meta_file.is_file():
        raise FileNotFoundError(f"bundle {bundle}: {meta_file} not found (is this a MONAI bundle folder?)")
    checkpoint = _verified(run_checkpoint, MODEL_KEY, contract, bundle_dir=None)
    saved_contract = checkpoint.contract or (_plain(contract) if contract is not None else None)
    if saved_contract is None:
        raise ValueError(
            f"checkpoint {checkpoint.path} records no input contract; pass the contract it was trained with"
        )
    target = bundle / "models" / name
    files.atomic_write(target, lambda f: torch.save(checkpoint.state, f))
    metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    records = dict(metadata.get(SHIPPED_KEY) or {})
    records[f"models/{name}"] = {
        "sha256": file_sha256(target),
        CONTRACT_KEY: saved_contract,
        "promoted_from": os.path.relpath(checkpoint.path.resolve(), bundle.resolve()),
    }
    metadata[SHIPPED_KEY] = records
    # ASCII, as the model zoo's JSON hook formats it (monai_sre.bundle.format_json): a ± in a changelog stays \u00b1
    files.write_json(meta_file, metadata, indent=4, ensure_ascii=True)
    logger.info("promoted %s to %s (sha256 %s)", checkpoint.path, target, records[f"models/{name}"]["sha256"])
    return target
