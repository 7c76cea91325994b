import numpy as np
import pytest
import torch

from core.errors import SegLoopError
from train.losses import build_loss, class_weights_from_pixels

CFG = {"name": "cross_entropy", "class_weights": None, "label_smoothing": 0.0}


def _perfect(c=3):
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.full((1, c, 2, 2), -20.0)
    for (i, j), t in np.ndenumerate(target[0].numpy()):
        if t != 255:
            logits[0, t, i, j] = 20.0
    return logits, target


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "ce_dice"])
def test_perfect_prediction_has_near_zero_loss_and_ignore_is_ignored(name):
    loss = build_loss({**CFG, "name": name}, 3, 255, None)
    logits, target = _perfect()
    assert float(loss(logits, target)) < 1e-3
    logits[0, :, 1, 1] = torch.tensor([50.0, -50, -50])  # anything on the ignored pixel
    assert float(loss(logits, target)) < 1e-3


def test_wrong_prediction_costs_more():
    loss = build_loss({**CFG, "name": "ce_dice"}, 3, 255, None)
    logits, target = _perfect()
    assert float(loss(-logits, target)) > 1.0


def test_class_weights():
    w = class_weights_from_pixels(np.array([1000, 10, 0]))
    assert w[1] > w[0] and np.isfinite(w).all()
    loss = build_loss({**CFG, "class_weights": "auto"}, 3, 255, np.array([1000, 10, 1]))
    assert loss.weight.shape == (3,)
    with pytest.raises(SegLoopError, match="one weight per class"):
        build_loss({**CFG, "class_weights": [1.0]}, 3, 255, None)
    with pytest.raises(SegLoopError, match="cross_entropy"):
        build_loss({**CFG, "name": "focal"}, 3, 255, None)
