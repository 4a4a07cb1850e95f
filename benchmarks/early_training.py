# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The first epochs of a MedMNIST classifier under one recipe: where SRE-ResNet stays near the majority-class loss.

Issue 14, part 1: at Adam 1e-3 SRE-ResNet-18 sat near the majority-class loss for its first epochs while MONAI's
ResNet-18 fitted the training set. This script isolates candidate causes, one switch each, on the same data and seed:

- ``--path dense``: every SRE layer runs its dense kernel (one ``F.conv``, autograd's own backward) instead of the
  automatic (ring-decomposed) path: rules out the custom backward.
- ``--kernel-size 3 --stem 3``: 3x3 SRE kernels everywhere: rules out the large (9x9, 32-tap band) kernels.
- ``--dc-init free|matched``: the kernels' mean (their gain on a constant input, which a band weight shared by many
  taps makes 10-22 times their white-noise gain) removed at initialisation (``free``), or scaled to the size a dense
  kernel's mean has (``matched``), the band weights' norm kept: rules out low-pass features at the start.
- ``--conv-lr``, ``--other-lr``: another rate for the SRE band weights or for everything else (norms, linear layer).
- ``--band-scale rsqrt_taps``: band weights stored times ``sqrt(n_b)`` (``monai_sre.layers.band_scale``), so SGD
  steps every tap as a dense tap whatever its band's size: rules out band-size-dependent steps.
- ``--warmup``: linear learning-rate warm-up over that many epochs: rules out a too-large first step.
- ``--zero-init-residual``: every block starts as its shortcut (torchvision's option).
- ``--standardize``, ``--padding-mode``: inputs with zero mean and unit variance, or reflect/replicate padding in every
  SRE layer: rule out the border of a large kernel's zero padding on a positive input (the ReLU outputs are).
- ``--gradient-fraction``: that share of the channels after the stem's and every block's first SRE convolution carry
  their local gradient norm (``monai_sre.layers.GradientNormActivation``): edge strength in any direction, which
  radially symmetric kernels cannot form; asks whether the function class is what fits slowly.
- ``--augmentation rotation|standard``: the bundles' training augmentation (``monai_sre.transforms``) on every
  training image; ``--model resnet --augmentation rotation`` asks whether a dense network that must ignore
  orientation also fits slowly, i.e. whether the slow start belongs to the invariant function class, not to SRE.

It trains with a plain loop (no bundle, no augmentation unless named; images scaled 0-255 -> 0-1 as the bundles'
``8bit_range`` rule) and prints per epoch the mean training loss, validation AUC, ACC and the share of validation
images predicted as the training set's majority class. Example::

    OMP_NUM_THREADS=1 python benchmarks/early_training.py --model sre --lr 1e-3 --epochs 8 --dc-init matched
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from monai.transforms import Compose
from torch import nn

from monai_sre.data.medmnist import dataset_info, load_split
from monai_sre.evaluation import medmnist_acc, medmnist_auc
from monai_sre.io.files import write_json
from monai_sre.layers import BAND_SCALES, SREConv, set_band_scale_
from monai_sre.recipes import medmnist_classifier
from monai_sre.transforms import AUGMENTATIONS, training_augmentation


def rescale_kernel_mean(net: nn.Module, mode: str) -> None:
    """Set the mean of every SRE kernel to zero (``"free"``, as ``SREResNet(zero_mean_init=True)``) or to a dense
    kernel's size (``"matched"``), the band weights rescaled to their former tap-weighted norm
    (:meth:`~monai_sre.layers.SREConv.center_band_weight_`).

    A kernel's mean over its ``N`` taps is ``m = sum_b n_b w_b / N``. For independent band weights its spread is
    ``sqrt(R)`` times that of a dense kernel with independent taps, ``R = sum_b n_b^2 / sum_b n_b``; ``"matched"``
    keeps ``1 / sqrt(R)`` of it.
    """
    for m in net.modules():
        if isinstance(m, SREConv):
            n = torch.tensor(m.band_sizes, dtype=m.weight.dtype)
            m.center_band_weight_(0.0 if mode == "free" else float((n.sum() / n.pow(2).sum()).sqrt()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flag", default="breastmnist", help="2D MedMNIST flag (default breastmnist)")
    parser.add_argument("--model", default="sre", choices=("sre", "resnet"))
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--conv-lr", type=float, help="rate of the SRE band weights (default --lr)")
    parser.add_argument("--other-lr", type=float, help="rate of every other parameter (default --lr)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--widen-factor", type=float, default=0.5)
    parser.add_argument("--kernel-size", type=int, help="SRE kernel size of all four stages (default [9, 9, 5, 5])")
    parser.add_argument("--stem", type=int, help="stem kernel size (default 5 SRE, 3 ResNet)")
    parser.add_argument("--path", choices=("auto", "dense", "decomposed"), default="auto")
    parser.add_argument("--dc-init", choices=("he", "free", "matched"), default="he")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=0.0, help="epochs of linear learning-rate warm-up from 0")
    parser.add_argument("--zero-init-residual", action="store_true",
                        help="zero the last norm's weight of every residual branch (torchvision's option)")
    parser.add_argument("--standardize", action="store_true", help="inputs standardised with the training mean/std")
    parser.add_argument("--padding-mode", choices=("zeros", "reflect", "replicate", "circular"), default="zeros",
                        help="padding mode of every SRE convolution")
    parser.add_argument("--band-scale", choices=BAND_SCALES, default="none",
                        help="parameterisation of the SRE band weights (monai_sre.layers.band_scale)")
    parser.add_argument("--augmentation", choices=AUGMENTATIONS, default="none",
                        help="the bundles' training augmentation of that name, applied to every training image")
    parser.add_argument("--gradient-fraction", type=float, default=0.0,
                        help="share of the channels after each first SRE convolution carrying their gradient norm")
    parser.add_argument("--json", help="also write the per-epoch rows here")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x_train, y_train = load_split(args.flag, "train")
    x_val, y_val = load_split(args.flag, "val")
    if x_train.ndim != 3 or y_train.ndim != 1:
        raise ValueError(f"--flag {args.flag}: expected a 2D gray single-label dataset, got images {x_train.shape}")
    xt = torch.from_numpy(x_train).float()[:, None] / 255
    augment = Compose(training_augmentation(args.augmentation, 2, x_train.shape[-1], keys="image"))
    augment.set_random_state(seed=args.seed)
    yt = torch.from_numpy(y_train).long()
    xv = torch.from_numpy(x_val).float()[:, None] / 255
    classes = int(y_train.max()) + 1
    task = dataset_info(args.flag).task  # medmnist's own task string, which the metrics follow
    majority = int(np.bincount(y_train).argmax())

    net = medmnist_classifier(model_type=args.model, num_classes=classes, widen_factor=args.widen_factor,
                              kernel_size=args.kernel_size, conv1_t_size=args.stem,
                              gradient_fraction=args.gradient_fraction)
    if args.dc_init != "he":
        rescale_kernel_mean(net, args.dc_init)
    if args.zero_init_residual:
        for block in net.modules():
            if hasattr(block, "bn2") and hasattr(block, "conv2") and getattr(block.bn2, "weight", None) is not None:
                nn.init.zeros_(block.bn2.weight)
    if args.standardize:
        mean, std = xt.mean(), xt.std()
        xt, xv = (xt - mean) / std, (xv - mean) / std
    set_band_scale_(net, args.band_scale)
    convs = [m for m in net.modules() if isinstance(m, SREConv)]
    for conv in convs:
        conv.path = args.path
        conv.padding_mode = args.padding_mode
    band = [conv.weight for conv in convs]
    ids = {id(w) for w in band}
    groups = [{"params": band, "lr": args.conv_lr or args.lr},
              {"params": [p for p in net.parameters() if id(p) not in ids], "lr": args.other_lr or args.lr}]
    groups = [g for g in groups if g["params"]]
    opt = (torch.optim.Adam(groups, lr=args.lr) if args.optimizer == "adam"
           else torch.optim.SGD(groups, lr=args.lr, momentum=0.9, weight_decay=1e-3))
    loss_fn = nn.CrossEntropyLoss()
    warm_steps = args.warmup * math.ceil(len(xt) / args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm_steps) if warm_steps else 1.0)
    rows, start = [], time.perf_counter()
    prior = np.bincount(y_train) / len(y_train)
    print(f"{args.model} {args.optimizer} lr {args.lr} path {args.path} dc-init {args.dc_init} band-scale "
          f"{args.band_scale} warm-up {args.warmup} zero-init-residual {args.zero_init_residual} "
          f"kernel {args.kernel_size or 'default'} augmentation {args.augmentation} gradient fraction "
          f"{args.gradient_fraction} seed {args.seed}; "
          f"majority class share of val: "
          f"{float(np.mean(y_val == majority)):.3f}, loss of the class prior: "
          f"{-sum(p * math.log(p) for p in prior if p > 0):.3f}")
    for epoch in range(args.epochs):
        net.train()
        losses = []
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), args.batch_size):
            idx = order[i : i + args.batch_size]
            batch = xt[idx]
            if args.augmentation != "none":
                batch = torch.stack([augment({"image": img})["image"] for img in batch])
            loss = loss_fn(net(batch), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        net.eval()
        with torch.no_grad():
            prob = net(xv).softmax(1).numpy()
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
               "val_auc": medmnist_auc(y_val, prob, task),
               "val_acc": medmnist_acc(y_val, prob, task),
               "majority_share": float(np.mean(prob.argmax(1) == majority)),
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
