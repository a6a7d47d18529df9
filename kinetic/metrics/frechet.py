"""Frechet distance between Gaussians fitted to feature sets (the formula behind FID and fd-digits).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

i.e. the squared 2-Wasserstein distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982;
Heusel et al. 2017). Computed in float64 with ``scipy.linalg.sqrtm`` and the usual handling of
pytorch-fid / EDM: an eps-regularised retry when the square root is not finite, and the imaginary
part (numerical noise) dropped when it is small.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy
import scipy.linalg
import torch

__all__ = ["MetricError", "frechet_distance", "frechet_distance_from_features", "feature_statistics"]


class MetricError(ValueError):
    """A metric cannot be computed from what it was given (the message says what is expected)."""


# scipy >= 1.16 deprecates ``sqrtm(disp=...)`` and reports singularity through a LinAlgWarning;
# older versions print to stdout unless ``disp=False`` (which then returns (sqrtm, errest)).
_SCIPY_NEW_SQRTM = tuple(int(p) for p in scipy.__version__.split(".")[:2] if p.isdigit()) >= (1, 16)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _SCIPY_NEW_SQRTM:
            return np.asarray(scipy.linalg.sqrtm(a))
        return np.asarray(scipy.linalg.sqrtm(a, disp=False)[0])


def _as_float64(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numpy array or torch tensor of numbers, got {type(x).__name__}") from e


def _check_stats(mu: np.ndarray, cov: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(_as_float64(mu, f"mu{which}"))
    cov = np.atleast_2d(_as_float64(cov, f"cov{which}"))
    if mu.ndim != 1:
        raise MetricError(f"mu{which} must be a vector (d,), got shape {mu.shape}")
    d = mu.shape[0]
    if cov.shape != (d, d):
        raise MetricError(f"cov{which} must have shape ({d}, {d}) to match mu{which}, got {cov.shape}")
    return mu, cov


def frechet_distance(
    mu1: np.ndarray | torch.Tensor,
    cov1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    cov2: np.ndarray | torch.Tensor,
    eps: float = 1e-6,
) -> float:
    """Squared Frechet (W2) distance between N(mu1, cov1) and N(mu2, cov2); mu (d,), cov (d, d).

    d^2 = ||mu1 - mu2||^2 + Tr(cov1) + Tr(cov2) - 2 Tr sqrtm(cov1 cov2), in float64. If sqrtm is
    not finite, ``eps * I`` is added to both covariances; an imaginary part above 1e-3 on the
    diagonal (after that retry) raises MetricError. Non-finite inputs give ``nan``. Tiny negative
    round-off is clipped to 0.
    """
    mu1, cov1 = _check_stats(mu1, cov1, "1")
    mu2, cov2 = _check_stats(mu2, cov2, "2")
    if mu1.shape != mu2.shape:
        raise MetricError(f"mu1 and mu2 have different dimensions: {mu1.shape[0]} vs {mu2.shape[0]}")
    if not all(np.isfinite(a).all() for a in (mu1, cov1, mu2, cov2)):
        return float("nan")
    diff = mu1 - mu2
    covmean = _sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all() or (
        np.iscomplexobj(covmean) and not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3)
    ):
        offset = np.eye(mu1.shape[0]) * eps
        covmean = _sqrtm((cov1 + offset) @ (cov2 + offset))
    if not np.isfinite(covmean).all():
        raise MetricError("the matrix square root of cov1 @ cov2 is not finite even after eps-regularisation")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            m = float(np.max(np.abs(covmean.imag)))
            raise MetricError(f"the matrix square root of cov1 @ cov2 has an imaginary component {m:.3g}")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def feature_statistics(features: np.ndarray | torch.Tensor, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) (divisor N - 1, as np.cov, pytorch-fid and EDM) of
    features (N, d), float64."""
    f = _as_float64(features, name)
    if f.ndim != 2:
        raise MetricError(f"{name} must have shape (N, d), got {f.shape}")
    if f.shape[0] < 2:
        raise MetricError(f"{name} needs at least 2 rows to estimate a covariance, got {f.shape[0]}")
    mu = f.mean(axis=0)
    cov = np.atleast_2d(np.cov(f, rowvar=False))
    return mu, cov


def frechet_distance_from_features(f1: np.ndarray | torch.Tensor, f2: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to f1 (N1, d) and f2 (N2, d) (mean, unbiased cov)."""
    mu1, cov1 = feature_statistics(f1, "f1")
    mu2, cov2 = feature_statistics(f2, "f2")
    if mu1.shape != mu2.shape:
        raise MetricError(f"f1 and f2 have different feature dimensions: {mu1.shape[0]} vs {mu2.shape[0]}")
    return frechet_distance(mu1, cov1, mu2, cov2)
