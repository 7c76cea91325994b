"""Semantic losses by name, combined with weights: ``loss.name=bce+dice+jaccard``, each term's own arguments (and
its ``weight`` in the sum) under ``loss.args.<term>``.

Every term takes the model's logits and the (N, H, W) targets with the taxonomy's ignore value, in the mode of the
model's head (``multiclass`` for a softmax head, ``binary`` for a one-logit sigmoid head), and each is logged as its
own term. Dice, Jaccard, Focal, Lovasz and Tversky are segmentation_models_pytorch's (ignore index honoured in both
modes: a test changes the logits of ignored pixels and sees the same loss). Cross-entropy is torch's; binary
cross-entropy is a masked mean written here, because smp's ``SoftBCEWithLogitsLoss`` averages over ignored pixels
too (the loss then shrinks with the share of ignored pixels).

Class weights (``loss.class_weights``) weight the pixels of the terms that take them (``cross_entropy``, ``bce``):
``enet`` (``auto``) 1 / ln(1.02 + p) (Paszke et al. 2016), ``inverse`` 1 / p normalised to mean 1, ``median``
median frequency balancing (Eigen & Fergus 2015), or one number per class; the weights a run trained with are in
its ``run.json``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import SegLoopError
from train.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss", "loss.name", args_key="loss.args")
ALIASES = {"ce_dice": "cross_entropy+dice"}
WEIGHTED = ("cross_entropy", "bce")  # the terms that take class weights
CLASS_WEIGHT_SCHEMES = ("auto", "enet", "inverse", "median")


class CrossEntropy(nn.Module):
    """Cross-entropy over the classes (softmax head), pixels weighted by class.

    Args:
        label_smoothing: share of the target mass spread over the other classes (0 = none)
    """

    modes = ("multiclass",)

    def __init__(self, mode: str, ignore_index: int, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.register_buffer("weight", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class BinaryCrossEntropy(nn.Module):
    """Binary cross-entropy with logits (sigmoid head), averaged over the labelled pixels, weighted by class.

    Args:
        smooth: label smoothing: targets become smooth / 2 and 1 - smooth / 2
    """

    modes = ("binary",)

    def __init__(self, mode: str, ignore_index: int, class_weights: torch.Tensor | None = None,
                 smooth: float = 0.0) -> None:
        super().__init__()
        if not 0 <= smooth < 1:
            raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
        self.ignore_index, self.smooth = ignore_index, smooth
        self.register_buffer("weight", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        y = (target == 1).float()
        if self.smooth:
            y = y * (1 - self.smooth) + self.smooth / 2
        loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), y, reduction="none")
        w = valid.float() if self.weight is None else self.weight[target.clamp(0, 1)] * valid
        return (loss * w).sum() / w.sum().clamp_min(1e-12)


Check = tuple[Callable[[Any], bool], str]  # a test of an argument's value, and the valid values in words


def _number(v: Any) -> bool:
    """A finite number (``.inf`` as a weight or an argument would make every loss infinite or NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


NON_NEGATIVE: Check = (lambda v: _number(v) and v >= 0, "a number >= 0")
POSITIVE: Check = (lambda v: _number(v) and v > 0, "a number > 0")
FRACTION_OR_NULL: Check = (lambda v: v is None or (_number(v) and 0 <= v <= 1), "a number in [0, 1], or null")
FLAG: Check = (lambda v: isinstance(v, bool), "true or false")

# segmentation_models_pytorch's losses SegLoop offers: (class, what it is, {argument: (default, meaning, valid)})
SMP_LOSSES: dict[str, tuple[str, str, dict[str, tuple[Any, str, Check]]]] = {
    "dice": ("DiceLoss", "1 - soft Dice over the classes present in the batch (segmentation_models_pytorch).",
             {"smooth": (0.0, "added to numerator and denominator", NON_NEGATIVE),
              "log_loss": (False, "-log(Dice) instead of 1 - Dice", FLAG)}),
    "jaccard": ("JaccardLoss", "1 - soft Jaccard index (IoU) over the classes present (segmentation_models_pytorch).",
                {"smooth": (0.0, "added to numerator and denominator", NON_NEGATIVE),
                 "log_loss": (False, "-log(IoU) instead of 1 - IoU", FLAG)}),
    "focal": ("FocalLoss", "Focal loss (Lin et al. 2017), one sigmoid term per class, easy pixels down-weighted (smp).",
              {"gamma": (2.0, "focusing parameter (0 = no focusing)", NON_NEGATIVE),
               "alpha": (None, "weight of the positive term (null = none)", FRACTION_OR_NULL),
               "normalized": (False, "normalise by the sum of the focal weights", FLAG)}),
    "lovasz": ("LovaszLoss", "Lovasz-softmax / Lovasz hinge (Berman et al. 2018), a convex surrogate of IoU (smp).",
               {"per_image": (False, "the surrogate per image, then averaged (else over the batch)", FLAG)}),
    "tversky": ("TverskyLoss", "Tversky loss (Salehi et al. 2017), Dice with false positives and negatives weighted "
                               "(smp).",
                {"alpha": (0.5, "weight of false positives", NON_NEGATIVE),
                 "beta": (0.5, "weight of false negatives", NON_NEGATIVE),
                 "gamma": (1.0, "focal exponent of the Tversky index (1 = plain)", POSITIVE),
                 "smooth": (0.0, "added to numerator and denominator", NON_NEGATIVE)}),
}


def _smp(cls_name: str, summary: str, own: dict[str, tuple[Any, str, Check]]) -> Callable[..., nn.Module]:
    """A builder over segmentation_models_pytorch's loss ``cls_name``, with the arguments ``own`` (defaults,
    meanings and valid values: smp itself takes a focal alpha of 2 or a negative Tversky weight, and the loss then
    goes negative and the run diverges), so the registry checks and lists them as it does for every loss."""

    def build(mode: str, ignore_index: int, class_weights: torch.Tensor | None = None, **kwargs: Any) -> nn.Module:
        import segmentation_models_pytorch.losses as smp_losses

        for k, v in kwargs.items():
            valid, words = own[k][2]
            if not valid(v):
                raise ValueError(f"{k} must be {words}, got {v!r}")
        return getattr(smp_losses, cls_name)(mode=mode, ignore_index=ignore_index, **kwargs)

    params = [inspect.Parameter("mode", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
              inspect.Parameter("ignore_index", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
              inspect.Parameter("class_weights", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, (v, _, _) in own.items()]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__doc__ = summary + "\n\nArgs:\n" + "".join(f"    {k}: {m}, {c[1]}\n" for k, (_, m, c) in own.items())
    build.modes = ("multiclass", "binary")  # type: ignore[attr-defined]
    build.__name__ = cls_name
    return build


LOSSES.register("cross_entropy")(CrossEntropy)
LOSSES.register("bce")(BinaryCrossEntropy)
for _name, (_cls, _summary, _own) in SMP_LOSSES.items():
    LOSSES.register(_name)(_smp(_cls, _summary, _own))

FIXED = ("mode", "ignore_index", "class_weights")


def term_names(name: str) -> list[str]:
    """``bce+dice`` -> ['bce', 'dice'] (an alias expanded); unknown or repeated terms refused."""
    terms = ALIASES.get(name, name).split("+")
    for t in terms:
        LOSSES.get(t.strip())
    terms = [t.strip() for t in terms]
    if len(set(terms)) != len(terms):
        raise SegLoopError(f"loss.name {name!r} names a term twice", fix="give each term once; weight it with "
                                                                         "loss.args.<term>.weight")
    return terms


def term_args(terms: list[str], args: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each term's arguments from ``loss.args``, checked against that loss (its ``weight`` kept apart)."""
    args = dict(args or {})
    unknown = [k for k in args if k not in terms]
    if unknown:
        raise SegLoopError(f"loss.args.{unknown[0]} sets arguments of a term loss.name does not have",
                           fix=f"loss.args takes one section per term of loss.name ({', '.join(terms)})")
    out = {}
    for t in terms:
        own = args.get(t) or {}
        if not isinstance(own, dict):
            raise SegLoopError(f"loss.args.{t} must map arguments to values, got {own!r}",
                               fix=f"e.g. loss.args.{t}.weight=0.5")
        weight = own.get("weight", 1.0)
        if not _number(weight) or not weight > 0:
            raise SegLoopError(f"loss.args.{t}.weight must be a positive number, got {weight!r}",
                               fix="give each term a weight > 0 (drop a term from loss.name to leave it out)")
        rest = {k: v for k, v in own.items() if k != "weight"}
        LOSSES.check_args(t, rest, FIXED, args_key=f"loss.args.{t}")
        given = {**LOSSES.defaults(t, FIXED), **rest}
        if t == "tversky" and all(_number(given[k]) and given[k] >= 0 for k in ("alpha", "beta")) and (
                given["alpha"] + given["beta"] == 0):  # each one's own range is checked with the loss's arguments
            raise SegLoopError("loss.args.tversky: alpha and beta are both 0, so the Tversky index is 1 whatever "
                               "the prediction and the loss is always 0: nothing would be learnt",
                               fix="give false positives or negatives a weight, e.g. alpha=0.5, beta=0.5")
        out[t] = {"weight": float(weight), **rest}
    return out


def class_weights(scheme: Any, pixels: np.ndarray, present_pixels: np.ndarray) -> np.ndarray:
    """Per-class weights from the training split's pixel counts.

    ``pixels[c]``: labelled pixels of class c; ``present_pixels[c]``: all labelled pixels of the images where c
    appears (median frequency balancing's denominator). A class absent from training gets the largest weight of
    the present ones (it has no target pixel to weight; the value only matters if validation has it)."""
    if scheme in ("auto", "enet"):
        p = pixels / max(pixels.sum(), 1)
        return (1.0 / np.log(1.02 + p)).astype(np.float32)
    present = pixels > 0
    w = np.zeros(len(pixels), np.float64)
    if scheme == "inverse":
        w[present] = pixels.sum() / (present.sum() * pixels[present])
    elif scheme == "median":
        freq = pixels[present] / present_pixels[present]
        w[present] = np.median(freq) / freq
    else:
        raise SegLoopError(f"loss.class_weights {scheme!r} is not a weighting scheme",
                           fix=f"one of: {', '.join(CLASS_WEIGHT_SCHEMES)}, a list (one per class), or null")
    if present.any():
        w[~present] = w[present].max()
    return w.astype(np.float32)


def class_weights_from_pixels(pixels: np.ndarray) -> np.ndarray:
    """ENet's weighting 1 / ln(1.02 + p): rare classes count more, without exploding for very rare ones."""
    return class_weights("enet", pixels, pixels)


class CombinedLoss(nn.Module):
    """The weighted terms of ``loss.name``; ``forward`` returns each term's weighted value by name."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.weights[name] * term(logits, target) for name, term in self.terms.items()}


def resolve_class_weights(cfg: dict[str, Any], num_classes: int, pixels: np.ndarray | None,
                          present_pixels: np.ndarray | None) -> np.ndarray | None:
    cw = cfg["class_weights"]
    if cw is None:
        return None
    if isinstance(cw, list):
        if len(cw) != num_classes:
            raise SegLoopError(f"loss.class_weights has {len(cw)} values for {num_classes} classes",
                               fix="give one weight per class, or a scheme: " + ", ".join(CLASS_WEIGHT_SCHEMES))
        return np.asarray(cw, np.float32)
    if pixels is None:
        raise SegLoopError(f"loss.class_weights={cw} needs the training split's pixel counts")
    return class_weights(cw, pixels, present_pixels if present_pixels is not None else pixels)


def build_loss(cfg: dict[str, Any], mode: str, ignore_index: int, weights: np.ndarray | None) -> CombinedLoss:
    """The loss of ``cfg`` (the ``loss`` section) for a head of ``mode``, with the resolved class weights."""
    terms = term_names(cfg["name"])
    args = term_args(terms, cfg.get("args"))
    built, term_weights = {}, {}
    for t in terms:
        modes = getattr(LOSSES.get(t), "modes", ())
        if mode not in modes:
            other = "bce" if mode == "binary" else "cross_entropy"
            raise SegLoopError(f"loss {t} is for a {' or '.join(modes)} head; this model's head is {mode} "
                               f"({'one logit, sigmoid' if mode == 'binary' else 'softmax'})",
                               fix=f"use {other} in loss.name, or set model.args.head="
                                   f"{'softmax' if mode == 'binary' else 'sigmoid'}")
        own = {k: v for k, v in args[t].items() if k != "weight"}
        w = torch.from_numpy(weights) if weights is not None and t in WEIGHTED else None
        try:
            built[t] = LOSSES.get(t)(mode, ignore_index, w, **own)
        except (TypeError, ValueError) as exc:
            raise SegLoopError(f"loss {t} refused its arguments {own}: {exc}",
                               fix=f"python -m train.run --models lists the arguments of {t}") from None
        term_weights[t] = args[t]["weight"]
    return CombinedLoss(built, term_weights)


def uses_class_weights(name: str) -> bool:
    return any(t in WEIGHTED for t in ALIASES.get(name, name).split("+"))


def describe(cfg: dict[str, Any]) -> list[str]:
    """One line per term, from the loss classes' own docstrings: what the report says of a run's loss."""
    terms = term_names(cfg["name"])
    args = term_args(terms, cfg.get("args"))
    lines = []
    for t in terms:
        own = {k: v for k, v in args[t].items() if k != "weight"}
        shown = ", ".join(f"{k}={v}" for k, v in own.items())
        lines.append(f"{args[t]['weight']:g} x `{t}`: {LOSSES.summary(t)}" + (f" ({shown})" if shown else ""))
    return lines
