"""Every registered loss in every head mode it supports, one parametrised suite: the ignore value honoured (the
logits of ignored pixels change neither the value nor receive a gradient), a perfect prediction costs less than a
wrong one; then combinations, per-term weights and arguments, and the class weighting schemes."""

import numpy as np
import pytest
import torch

from core.errors import SegLoopError
from train.losses import LOSSES, build_loss, class_weights, class_weights_from_pixels, describe, resolve_class_weights

CASES = [(name, mode) for name in LOSSES.names() for mode in LOSSES.get(name).modes]


def _batch(mode: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    classes = 2 if mode == "binary" else 4
    target = torch.randint(0, classes, (2, 8, 8), generator=g)
    target[:, :3] = 255  # ignored rows
    logits = torch.randn(2, 1 if mode == "binary" else classes, 8, 8, generator=g)
    return logits, target


def _perfect(mode: str, target: torch.Tensor) -> torch.Tensor:
    t = target.clamp(max=1 if mode == "binary" else 3)
    if mode == "binary":
        return (t.float() * 2 - 1)[:, None] * 20
    return torch.nn.functional.one_hot(t, 4).permute(0, 3, 1, 2).float() * 40 - 20


def test_every_loss_has_a_mode():
    assert len(CASES) >= len(LOSSES.names()) and all(LOSSES.get(n).modes for n in LOSSES.names())


@pytest.mark.parametrize(("name", "mode"), CASES)
class TestLoss:
    def test_ignored_pixels_change_nothing(self, name, mode):
        loss = build_loss({"name": name}, mode, 255, None)
        logits, target = _batch(mode)
        logits.requires_grad_(True)
        value = loss(logits, target)[name]
        value.backward()
        assert torch.isfinite(value)
        assert float(logits.grad[:, :, :3].abs().max()) == 0.0, "a gradient reached an ignored pixel"
        changed = logits.detach().clone()
        changed[:, :, :3] = torch.randn_like(changed[:, :, :3]) * 50
        torch.testing.assert_close(loss(changed, target)[name], value.detach())

    def test_a_perfect_prediction_costs_less_than_a_wrong_one(self, name, mode):
        loss = build_loss({"name": name}, mode, 255, None)
        _, target = _batch(mode, seed=1)
        good = _perfect(mode, target)
        assert float(loss(good, target)[name]) < 0.05
        assert float(loss(-good, target)[name]) > float(loss(good, target)[name]) + 0.3


def test_terms_are_combined_with_their_weights_and_arguments():
    logits, target = _batch("multiclass")
    one = {t: build_loss({"name": t}, "multiclass", 255, None)(logits, target)[t] for t in ("cross_entropy", "dice")}
    both = build_loss({"name": "cross_entropy+dice", "args": {"dice": {"weight": 0.5}}}, "multiclass", 255, None)
    out = both(logits, target)
    assert set(out) == {"cross_entropy", "dice"}
    torch.testing.assert_close(out["dice"], 0.5 * one["dice"])
    torch.testing.assert_close(out["cross_entropy"], one["cross_entropy"])
    alias = build_loss({"name": "ce_dice"}, "multiclass", 255, None)(logits, target)
    assert set(alias) == {"cross_entropy", "dice"}
    focal = {g: float(build_loss({"name": "focal", "args": {"focal": {"gamma": g}}}, "multiclass", 255, None)(
        logits, target)["focal"]) for g in (0.0, 2.0)}
    assert focal[2.0] < focal[0.0]  # the focusing term down-weights the pixels it already gets right
    assert "1 x `cross_entropy`: Cross-entropy" in describe({"name": "cross_entropy+dice"})[0]
    assert "smooth=1.0" in describe({"name": "dice", "args": {"dice": {"smooth": 1.0}}})[0]


@pytest.mark.parametrize(("cfg", "message"), [
    ({"name": "cross_entropy+focal", "args": {"dice": {}}}, "loss.args.dice sets arguments of a term"),
    ({"name": "dice", "args": {"dice": {"gama": 2}}}, "loss 'dice' has no argument 'gama'"),
    ({"name": "focal", "args": {"focal": {"gama": 2}}}, "did you mean 'gamma'"),
    ({"name": "dice", "args": {"dice": {"weight": 0}}}, "weight must be a positive number"),
    ({"name": "dice", "args": {"dice": {"weight": "x"}}}, "weight must be a positive number"),
    ({"name": "dice", "args": {"dice": {"mode": "binary"}}}, "set by SegLoop"),
    ({"name": "cross_entropy", "args": {"cross_entropy": {"label_smoothing": 1.5}}}, "label_smoothing"),
    ({"name": "dice+dice"}, "names a term twice"),
    ({"name": "focal", "args": {"focal": {"alpha": 2}}}, "alpha must be a number in"),
    ({"name": "tversky", "args": {"tversky": {"gamma": 0}}}, "gamma must be a number > 0"),
    ({"name": "dice", "args": {"dice": {"log_loss": "yes"}}}, "log_loss must be true or false"),
])
def test_bad_loss_settings_name_the_key(cfg, message):
    with pytest.raises(SegLoopError, match=message):
        build_loss(cfg, "multiclass", 255, None)


def test_a_loss_for_the_other_head_is_refused_with_the_fix():
    with pytest.raises(SegLoopError, match="loss bce is for a binary head.*multiclass") as e:
        build_loss({"name": "bce"}, "multiclass", 255, None)
    assert "cross_entropy" in str(e.value)
    with pytest.raises(SegLoopError, match="loss cross_entropy is for a multiclass head") as e:
        build_loss({"name": "cross_entropy+dice"}, "binary", 255, None)
    assert "use bce" in str(e.value)


def test_class_weighting_schemes():
    pixels = np.array([900, 90, 10, 0])
    present = np.array([1000, 1000, 100, 0])  # class 2 appears in one small image only
    enet = class_weights("enet", pixels, present)
    assert enet[2] > enet[1] > enet[0] and np.allclose(enet[:3], 1 / np.log(1.02 + pixels[:3] / 1000))
    np.testing.assert_allclose(class_weights_from_pixels(pixels), enet)
    inv = class_weights("inverse", pixels, present)
    np.testing.assert_allclose(inv[:3], 1000 / (3 * pixels[:3]), rtol=1e-6)
    freq = pixels[:3] / present[:3]  # 0.9, 0.09, 0.1: median 0.1
    np.testing.assert_allclose(class_weights("median", pixels, present)[:3], 0.1 / freq, rtol=1e-6)
    assert all(w[3] == w[:3].max() for w in (inv, class_weights("median", pixels, present)))  # absent: the largest
    cfg = {"name": "cross_entropy", "class_weights": [1, 2, 3, 4]}
    np.testing.assert_array_equal(resolve_class_weights(cfg, 4, pixels, present), [1, 2, 3, 4])
    with pytest.raises(SegLoopError, match="4 values for 3 classes"):
        resolve_class_weights(cfg, 3, pixels, present)


def test_class_weights_weight_the_pixels_of_ce_and_bce():
    logits, target = _batch("multiclass")
    w = np.array([1.0, 5.0, 1.0, 1.0], np.float32)
    weighted = build_loss({"name": "cross_entropy"}, "multiclass", 255, w)(logits, target)["cross_entropy"]
    ref = torch.nn.functional.cross_entropy(logits, target, weight=torch.from_numpy(w), ignore_index=255)
    torch.testing.assert_close(weighted, ref)
    blogits, btarget = _batch("binary")
    flat = build_loss({"name": "bce"}, "binary", 255, None)(blogits, btarget)["bce"]
    same = build_loss({"name": "bce"}, "binary", 255, np.array([2.0, 2.0], np.float32))(blogits, btarget)["bce"]
    torch.testing.assert_close(flat, same)  # a uniform weight is a weighted mean's no-op
    valid = btarget != 255
    ref = torch.nn.functional.binary_cross_entropy_with_logits(blogits[:, 0][valid], btarget[valid].float())
    torch.testing.assert_close(flat, ref)
