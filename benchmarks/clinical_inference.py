# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Time one clinical study through ``monai_sre.inference.predict``: load, preprocess and model, per input.

The study is a CT-sized DICOM series (512x512x100 int16 slices by default) made here and written with the
project's DICOM writer (:func:`monai_sre.data.dicom.write_dicom_series`), plus the same volume as NIfTI, each
preprocessed whole (resampled to 1 mm, then fitted to the grid), and the series once more with a centred region of
interest (as for organ-centred MedMNIST3D models). The network sits in a temporary bundle with random weights:
speed does not depend on what the weights are.

Run from the repository root::

    python benchmarks/clinical_inference.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_sre.data.dicom import write_dicom_series
from monai_sre.inference import discover_inputs, predict
from monai_sre.transforms import medmnist_contract

NETWORKS = {
    "sre_resnet18": {"_target_": "monai_sre.networks.sre_resnet18"},
    "resnet18": {"_target_": "monai.networks.nets.resnet18"},
}


def ct_phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """An int16 HU volume shaped like a body CT: air, an elliptic body with noise, lungs and a bone ring."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    lungs = ((np.abs(x) - 0.4) / 0.25) ** 2 + (y / 0.4) ** 2 < 1
    bone = ((x / 0.8) ** 2 + (y / 0.6) ** 2 < 1) & ~((x / 0.75) ** 2 + (y / 0.55) ** 2 < 1)
    plane = np.full(shape[:2], -1000, dtype=np.int16)
    plane[body] = 40
    plane[lungs & body] = -850
    plane[bone] = 700
    volume = np.repeat(plane[:, :, None], shape[2], axis=2)
    return (volume + rng.normal(0, 20, size=shape).astype(np.int16)).astype(np.int16)


def make_bundle(root: Path, network: str, image_size: int) -> Path:
    """A bundle folder with ``network`` (3D, 1 channel, 2 classes) and random weights."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net = {**NETWORKS[network], "spatial_dims": 3, "n_input_channels": 1, "num_classes": 2}
    metadata = {
        "name": f"benchmark_{network}",
        "version": "0.0.0",
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1, "spatial_shape": [image_size] * 3}},
            "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "class_0", "1": "class_1"}}},
        },
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    contract = medmnist_contract(3, image_size).to_dict()  # 1 mm RAS, HU window for CT, as the 3D bundle
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": net, "input_contract": contract}))
    torch.manual_seed(0)
    torch.save(ConfigParser({"net": net}).get_parsed_content("net").state_dict(), root / "models" / "model.pt")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[512, 512, 100], metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", nargs=3, type=float, default=[0.7, 0.7, 2.5], metavar=("SX", "SY", "SZ"))
    parser.add_argument("--network", choices=sorted(NETWORKS), default="sre_resnet18")
    parser.add_argument("--image-size", type=int, default=28, help="model grid edge (28 or 64)")
    parser.add_argument("--roi-mm", type=float, default=80.0, help="edge of the centred ROI of the third case (mm)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", help="folder for the series and bundle (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        volume = ct_phantom(tuple(args.shape))
        start = time.perf_counter()
        write_dicom_series(volume, tmp / "series", spacing=args.spacing, modality="CT", uid_seed="benchmark")
        write_s = time.perf_counter() - start
        affine = np.diag([*args.spacing, 1.0])
        nib.save(nib.Nifti1Image(volume, affine), tmp / "volume.nii.gz")
        bundle = make_bundle(tmp / "bundle", args.network, args.image_size)

        start = time.perf_counter()
        discover_inputs([tmp / "series"])
        discovery_s = time.perf_counter() - start

        centre = [(n - 1) * s / 2 for n, s in zip(args.shape, args.spacing)]  # the writer's affine: diag(spacing)
        roi = {"roi_center": centre, "roi_size": [args.roi_mm] * 3}
        inputs = {
            "DICOM series": (tmp / "series", {}),
            "NIfTI (.nii.gz)": (tmp / "volume.nii.gz", {}),
            f"DICOM series, {args.roi_mm:g} mm ROI": (tmp / "series", roi),
        }
        results = {}
        for name, (path, overrides) in inputs.items():
            runs = []
            for i in range(args.repeats + 1):
                start = time.perf_counter()
                (row,) = predict([path], bundle, device=args.device, preprocessing_overrides=overrides)
                total = time.perf_counter() - start
                if row["status"] != "ok":
                    raise RuntimeError(row["error"])
                if i:  # the first run warms up caches and lazy initialisation
                    runs.append({k: row[k] for k in ("load_s", "preprocess_s", "model_s")} | {"total_s": total})
            results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    info = {
        "shape": args.shape,
        "spacing": args.spacing,
        "network": args.network,
        "image_size": args.image_size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "repeats": args.repeats,
        "write_series_s": round(write_s, 3),
        "discover_series_headers_s": round(discovery_s, 3),
        "results": {k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
    }
    print(f"{args.shape[0]}x{args.shape[1]}x{args.shape[2]} int16 CT, spacing {args.spacing} mm -> "
          f"{args.image_size}^3, {args.network}, device {args.device}, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeats}")  # fmt: skip
    print("| input | load (s) | preprocess (s) | model (s) | predict() total (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in info["results"].items():
        print(f"| {name} | {r['load_s']:.3f} | {r['preprocess_s']:.3f} | {r['model_s']:.3f} | {r['total_s']:.3f} |")
    print(f"writing the series: {write_s:.2f} s; reading its {args.shape[2]} headers (discovery): {discovery_s:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
