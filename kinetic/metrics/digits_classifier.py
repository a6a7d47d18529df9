"""fd-digits: a Frechet distance in the feature space of a small CNN trained on sklearn's 8x8 digits.

This is *not* FID: the feature network is a tiny classifier that kinetic trains itself,
deterministically (fixed seed, deterministic algorithms, one thread, a fixed number of epochs),
on a fixed 80/20 split of the 1797 bundled digits, and caches on disk as
``<cache_dir>/digits_classifier_v1.pt`` (weights only; cache_dir defaults to ``$KINETIC_CACHE``
or ``~/.cache/kinetic``). Values are comparable only between runs with the same classifier version.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import load_digits
from .data_range import clamp_to_data_range
from .frechet import MetricError, feature_statistics, frechet_distance

__all__ = [
    "CLASSIFIER_VERSION",
    "DigitsClassifier",
    "DigitsNet",
    "default_cache_dir",
    "digits_split",
    "train_digits_classifier",
    "load_digits_classifier",
    "digits_features",
    "fd_digits",
]

CLASSIFIER_VERSION = "v1"
CLASSIFIER_FILENAME = f"digits_classifier_{CLASSIFIER_VERSION}.pt"
FEATURE_DIM = 64
SEED = 0
EPOCHS = 8
BATCH_SIZE = 64
LR = 3e-3
TEST_FRACTION = 0.2


class DigitsNet(nn.Module):
    """CNN for (B, 1, 8, 8) digits in [-1, 1]: conv16-conv32-pool-fc64 (features)-ReLU-fc10 (logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) -> (B, 64): the penultimate layer before its ReLU, used by fd-digits
        (pre-activations keep all 64 dimensions informative, so the covariance is full rank)."""
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.fc1(h.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) -> logits (B, 10)."""
        return self.fc2(F.relu(self.features(x)))


@dataclass
class DigitsClassifier:
    """A trained DigitsNet (eval mode, CPU) with its held-out test accuracy and provenance."""

    net: DigitsNet
    test_accuracy: float
    train_seconds: float
    version: str
    path: Path | None
    from_cache: bool


def default_cache_dir() -> Path:
    """``$KINETIC_CACHE`` if set, else ``~/.cache/kinetic``."""
    env = os.environ.get("KINETIC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kinetic"


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed split: (x_train, y_train, x_test, y_test), 80/20 by a seeded permutation."""
    x, y = load_digits(return_labels=True)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(SEED))
    n_test = int(round(TEST_FRACTION * x.shape[0]))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


@torch.no_grad()
def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(dim=1) == y).double().mean())


def train_digits_classifier() -> DigitsClassifier:
    """Train DigitsNet from scratch, deterministically (bitwise on a given machine and torch build).

    Seed 0, ``torch.use_deterministic_algorithms(True)``, one thread, Adam with a cosine learning
    rate for a fixed number of epochs. Works when called under no_grad / inference_mode; the global
    RNG, thread count and determinism flag are restored afterwards.
    """
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            t0 = time.perf_counter()
            x_tr, y_tr, x_te, y_te = digits_split()
            torch.manual_seed(SEED)
            net = DigitsNet()
            gen = torch.Generator().manual_seed(SEED + 1)
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * math.ceil(len(x_tr) / BATCH_SIZE))
            net.train()
            for _ in range(EPOCHS):
                perm = torch.randperm(len(x_tr), generator=gen)
                for i in range(0, len(x_tr), BATCH_SIZE):
                    idx = perm[i : i + BATCH_SIZE]
                    loss = F.cross_entropy(net(x_tr[idx]), y_tr[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
            net.eval().requires_grad_(False)
            train_seconds = time.perf_counter() - t0
            acc = _accuracy(net, x_te, y_te)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
    return DigitsClassifier(net, acc, train_seconds, CLASSIFIER_VERSION, None, False)


def _save_atomic(payload: dict, path: Path) -> bool:
    """Cache the classifier; an unwritable cache is a warning, not an error (`kinetic.fileio.write_cache`)."""
    from ..fileio import write_cache

    return write_cache(path, lambda tmp: torch.save(payload, tmp), "the fd-digits classifier")


def _try_load(path: Path) -> DigitsClassifier | None:
    """The cached classifier, or None if absent, unreadable, or of another version/architecture."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("version") != CLASSIFIER_VERSION:
            return None
        net = DigitsNet()
        net.load_state_dict(payload["state_dict"], strict=True)
        acc = float(payload["test_accuracy"])
        secs = float(payload.get("train_seconds", float("nan")))
    except Exception:  # noqa: BLE001 - any corrupt/stale cache file means: retrain
        return None
    net.eval().requires_grad_(False)
    return DigitsClassifier(net, acc, secs, CLASSIFIER_VERSION, path, True)


_MEMO: dict[Path, DigitsClassifier] = {}


def load_digits_classifier(cache_dir: str | os.PathLike[str] | None = None) -> DigitsClassifier:
    """The fd-digits classifier: from memory, else ``<cache_dir>/digits_classifier_v1.pt``, else
    trained now (about a second on one CPU core) and saved there atomically (weights only).

    A cache file of another version, another architecture or that cannot be read is retrained
    and replaced.
    """
    root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    try:
        path = (root / CLASSIFIER_FILENAME).resolve()
    except (OSError, RuntimeError):
        path = root / CLASSIFIER_FILENAME
    if path in _MEMO:
        return _MEMO[path]
    clf = _try_load(path)
    if clf is None:
        clf = train_digits_classifier()
        payload = {
            "version": CLASSIFIER_VERSION,
            "state_dict": {k: v.detach().clone() for k, v in clf.net.state_dict().items()},
            "test_accuracy": clf.test_accuracy,
            "train_seconds": clf.train_seconds,
        }
        clf.path = path if _save_atomic(payload, path) else None
    _MEMO[path] = clf
    return clf


def _check_digits(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise MetricError(f"{name} must have shape (N, 1, 8, 8) (digits in [-1, 1]), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise MetricError(f"{name} needs at least 2 images to estimate a covariance, got {x.shape[0]}")
    return x.detach().to("cpu", torch.float32)


def digits_features(
    x: torch.Tensor | np.ndarray, cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 1024
) -> torch.Tensor:
    """Classifier features (N, 64) float32 of digits x (N, 1, 8, 8) in [-1, 1] (used as given)."""
    x = _check_digits(x, "x")
    net = load_digits_classifier(cache_dir).net
    with torch.no_grad():
        return torch.cat([net.features(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


_REF_STATS: dict[Path, tuple[np.ndarray, np.ndarray]] = {}


def fd_digits(
    samples: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    clamp: bool = True,
) -> float:
    """fd-digits: Frechet distance between classifier features of ``samples`` (N, 1, 8, 8) and of
    ``reference`` (M, 1, 8, 8) (default: all 1797 real digits), both in [-1, 1].

    ``clamp`` (default True): clamp both sets to the data range [-1, 1] before the features, so
    the metric scores the images a user sees (a picture clips them, as diffusers' pipelines do);
    real digits are unchanged. ``clamp=False`` scores the raw values. The share of raw values
    outside the range is `kinetic.metrics.out_of_range_fraction`.

    Not FID: the features come from kinetic's own digits classifier (see load_digits_classifier).
    Non-finite samples give ``nan`` (also with ``clamp``: inf is not clamped away).
    """
    if not isinstance(clamp, bool):
        raise TypeError(f"clamp must be True or False, got {clamp!r}")
    s = _check_digits(samples, "samples")
    if not torch.isfinite(s).all():
        return float("nan")
    if clamp:
        s = clamp_to_data_range(s)
    mu1, cov1 = feature_statistics(digits_features(s, cache_dir).double(), "samples features")
    if reference is None:
        clf_path = load_digits_classifier(cache_dir).path or Path("<memory>")
        if clf_path not in _REF_STATS:
            feats = digits_features(load_digits(), cache_dir).double()
            _REF_STATS[clf_path] = feature_statistics(feats, "reference features")
        mu2, cov2 = _REF_STATS[clf_path]
    else:
        r = _check_digits(reference, "reference")
        if not torch.isfinite(r).all():
            raise MetricError("reference contains NaN or inf")
        if clamp:
            r = clamp_to_data_range(r)
        mu2, cov2 = feature_statistics(digits_features(r, cache_dir).double(), "reference features")
    return frechet_distance(mu1, cov1, mu2, cov2)
