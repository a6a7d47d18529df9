"""Metrics of conditional generation on the 8x8 digits, with kinetic's bundled digits classifier.

- ``classify_digits(x)``: the classifier's labels (N,) for digits (N, 1, 8, 8) in [-1, 1].
- ``class_accuracy(samples, labels)``: the share of samples the classifier assigns to the class
  they were drawn for (class-conditional accuracy; for inpainting, the agreement of the completion
  with the true label).
- ``fd_digits_per_class(samples, labels)``: fd-digits of each class's samples against the real
  digits of that class (all 1797 bundled digits, about 180 per class).
- ``right_half_mask()`` / ``inpainting_inputs(x)``: the study's inpainting task: the left half
  (columns 0..3) of a digit is known, the right half is generated.

The classifier is the one fd-digits uses (`load_digits_classifier`: trained once, deterministically,
on a fixed 80/20 split; its held-out accuracy is ``test_accuracy``, about 0.97). Its test split
holds the 297 held-out digits of ``load_dataset("digits", split="test")`` (the same permutation),
so the classifier never saw them. Samples are clamped to [-1, 1] first, as for fd-digits.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..data import load_digits
from .data_range import clamp_to_data_range
from .digits_classifier import _check_digits, digits_features, load_digits_classifier
from .frechet import MetricError, feature_statistics, frechet_distance

__all__ = ["classify_digits", "class_accuracy", "fd_digits_per_class", "per_class_mean", "right_half_mask", "inpainting_inputs"]

NUM_DIGIT_CLASSES = 10


def _labels(labels, n: int) -> torch.Tensor:
    y = torch.as_tensor(labels)
    if y.is_floating_point() or y.shape != (n,):
        raise MetricError(f"labels must be integer class labels of shape ({n},), got {tuple(y.shape)} {y.dtype}")
    if n and (int(y.min()) < 0 or int(y.max()) >= NUM_DIGIT_CLASSES):
        raise MetricError(f"labels must lie in [0, {NUM_DIGIT_CLASSES - 1}] (digit classes)")
    return y.to(torch.int64).cpu()


def classify_digits(
    x: torch.Tensor | np.ndarray, cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 1024
) -> torch.Tensor:
    """The digits classifier's labels (N,) int64 for digits x (N, 1, 8, 8), clamped to [-1, 1]."""
    x = clamp_to_data_range(_check_digits(x, "x"))
    if not bool(torch.isfinite(x).all()):
        raise MetricError("x contains NaN or inf")
    net = load_digits_classifier(cache_dir).net
    with torch.no_grad():
        return torch.cat([net(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def class_accuracy(samples, labels, cache_dir: str | os.PathLike[str] | None = None) -> float:
    """The share of ``samples`` (N, 1, 8, 8) that the digits classifier assigns to ``labels`` (N,);
    nan when a sample is not finite."""
    s = _check_digits(samples, "samples")
    y = _labels(labels, s.shape[0])
    if not bool(torch.isfinite(s).all()):
        return float("nan")
    return float((classify_digits(s, cache_dir) == y).double().mean())


def fd_digits_per_class(
    samples, labels, cache_dir: str | os.PathLike[str] | None = None, *, clamp: bool = True
) -> dict[int, float]:
    """{class: fd-digits of that class's samples vs the real digits of the class} for every class
    present in ``labels`` (each with at least 2 samples). Values from fewer samples than the 64
    feature dimensions are biased upwards (a rank-deficient covariance): compare like with like."""
    s = _check_digits(samples, "samples")
    y = _labels(labels, s.shape[0])
    if not bool(torch.isfinite(s).all()):
        return {int(c): float("nan") for c in y.unique()}
    if clamp:
        s = clamp_to_data_range(s)
    ref, ref_y = load_digits(return_labels=True)
    feats = digits_features(s, cache_dir).double()
    ref_feats = digits_features(ref, cache_dir).double()
    out = {}
    for c in sorted(int(v) for v in y.unique()):
        if int((y == c).sum()) < 2:
            continue
        mu1, cov1 = feature_statistics(feats[y == c], f"class {c} samples")
        mu2, cov2 = feature_statistics(ref_feats[ref_y == c], f"class {c} digits")
        out[c] = float(frechet_distance(mu1, cov1, mu2, cov2))
    return out


def per_class_mean(per: dict[int, float], labels) -> dict:
    """``{"value": mean over classes, "per_class": per}`` of `fd_digits_per_class`'s result; where
    there is no value (no class with 2 samples, or non-finite samples) the value is None and
    ``"reason"`` says why, so that a JSON report stays valid (no bare NaN)."""
    y = torch.as_tensor(labels).reshape(-1)
    finite = {c: v for c, v in per.items() if math.isfinite(v)}
    out: dict = {"value": float(sum(finite.values()) / len(finite)) if finite and len(finite) == len(per) else None,
                 "per_class": {c: (v if math.isfinite(v) else None) for c, v in per.items()}}
    if out["value"] is None:
        if not per:
            counts = torch.bincount(y.to(torch.int64)).tolist() if y.numel() else []
            out["reason"] = (f"no class has the 2 samples a covariance needs ({y.numel()} samples over "
                             f"{sum(1 for c in counts if c)} classes, at most {max(counts, default=0)} per class); draw more")
        else:
            out["reason"] = "the samples have non-finite values (nan/inf)"
    return out


def right_half_mask(shape=(1, 8, 8)) -> torch.Tensor:
    """(C, H, W) bool: True on the known left half (columns < W // 2), False on the right half."""
    c, h, w = shape
    m = torch.zeros(c, h, w, dtype=torch.bool)
    m[..., : w // 2] = True
    return m


def inpainting_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(known, mask) for completing digits x (N, 1, 8, 8) from their left half: known is x with the
    right half set to 0 (it is never read), mask the `right_half_mask` broadcast to x."""
    x = _check_digits(x, "x")
    m = right_half_mask(tuple(x.shape[1:])).expand_as(x)
    return torch.where(m, x, torch.zeros_like(x)), m
