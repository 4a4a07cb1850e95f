# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The one float64 softmax/sigmoid of the evaluation, predict and the bundles' ``run inferring``."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd

from monai_sre.evaluation import scores_from_logits
from monai_sre.transforms import ClassProbabilitiesd, class_probabilities


def test_softmax_in_float64_where_activationsd_rounds_to_float32():
    # two confident binary logits 0.009 apart: float64 keeps them apart, float32 ties them (both 0.99999392)
    logits = torch.tensor([[0.0, 12.001], [0.0, 12.01]], dtype=torch.float32)
    probs = [ClassProbabilitiesd("pred")({"pred": z})["pred"] for z in logits]
    assert all(p.dtype == torch.float64 and type(p) is torch.Tensor for p in probs)
    assert probs[0][1] < probs[1][1]
    assert torch.equal(torch.stack(probs), torch.softmax(logits.double(), dim=1))
    assert float(probs[0].sum()) == pytest.approx(1.0, abs=1e-15)
    # MONAI's Activationsd casts to float32 before the softmax even when given float64: the tie this module avoids
    monai = [Activationsd("pred", softmax=True)({"pred": z.double()})["pred"] for z in logits]
    assert monai[0][1] == monai[1][1] and monai[0].dtype == torch.float64
    # the evaluation scores the same numbers
    assert torch.equal(torch.as_tensor(scores_from_logits(logits, "binary-class")), torch.stack(probs))


def test_sigmoid_for_multi_label_and_single_logit_and_metatensor_input():
    z = MetaTensor(torch.tensor([2.0, -1.0, 0.5]))
    multi = ClassProbabilitiesd("pred", multi_label=True)({"pred": z})["pred"]
    assert type(multi) is torch.Tensor and torch.equal(multi, torch.sigmoid(z.as_tensor().double()))
    one_logit = torch.tensor([[0.3], [-2.0]])
    single = class_probabilities(one_logit, dim=1)  # one logit: a sigmoid, not a softmax (always 1.0)
    assert torch.equal(single, torch.sigmoid(one_logit.double()))
    assert torch.equal(torch.as_tensor(scores_from_logits(torch.tensor([0.3, -2.0]), "binary-class")), single)
    assert torch.equal(torch.as_tensor(scores_from_logits(z[None], "multi-label, binary-class")), multi[None])
    with pytest.raises(ValueError, match="0-d"):
        class_probabilities(torch.tensor(1.0))
