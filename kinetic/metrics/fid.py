"""FID (Heusel et al. 2017) with Inception weights that the user supplies.

The feature network is the TorchScript file ``inception-2015-12-05.pt``: NVIDIA's port of the
TensorFlow Inception-v3 graph (2015-12-05) used by StyleGAN2-ADA, StyleGAN3 and EDM. It is called
as ``net(images, return_features=True)`` on uint8 images (N, 3, H, W), resizes internally, and
returns (N, 2048) pool features. kinetic never downloads it: fetch the file yourself and pass its
path (``--inception-weights PATH``). Statistics follow EDM: float64 mean and unbiased covariance,
stored as ``.npz`` with keys ``mu`` (2048,) and ``sigma`` (2048, 2048) (the EDM / pytorch-fid
reference layout), so published reference files (e.g. EDM's cifar10-32x32.npz) can be used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import numpy as np
import torch

from .frechet import MetricError, frechet_distance

__all__ = [
    "INCEPTION_FILENAME",
    "INCEPTION_URL",
    "load_inception",
    "images_to_uint8",
    "inception_features",
    "compute_statistics",
    "save_statistics",
    "load_statistics",
    "fid_from_statistics",
    "fid_from_samples",
]

INCEPTION_FILENAME = "inception-2015-12-05.pt"
#: Where NVIDIA publishes the file (for the user to fetch; kinetic itself never opens URLs).
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"

PathLike = Union[str, os.PathLike]
Reference = Union[torch.Tensor, np.ndarray, PathLike, tuple, Mapping]


def _weights_help(problem: str) -> str:
    return (
        f"{problem}. FID needs the Inception-v3 feature network as the TorchScript file "
        f"'{INCEPTION_FILENAME}' (NVIDIA's TorchScript port of the TensorFlow Inception-v3 used by "
        f"StyleGAN2-ADA and EDM; EDM's pickled '.pkl' variant is not supported). kinetic never downloads it: "
        f"fetch it yourself (published at {INCEPTION_URL}) and pass its path with --inception-weights PATH "
        f"(weights_path=...)."
    )


#: sha256 of inception-2015-12-05.pt, the TorchScript Inception of StyleGAN2-ADA / EDM / clean-fid (the
#: digest k-diffusion checks). A file of that name with another digest is refused: torch.jit.load runs
#: code contained in the file, so it must be the known one (or renamed, as a file the user vouches for).
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_inception(weights_path: PathLike | None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load the TorchScript Inception feature network from ``weights_path`` onto ``device`` (eval mode).

    ``torch.jit.load`` runs code contained in the file: load only a file you trust. A file named
    ``inception-2015-12-05.pt`` must have the known digest `INCEPTION_SHA256`; a file under another name
    is the user's own feature network, loaded as given.

    Raises MetricError (a ValueError) naming the expected file if the path is missing, is not a
    file, has the known name but another digest, or is not a loadable TorchScript archive.
    """
    if weights_path is None:
        raise MetricError(_weights_help("no Inception weights were given"))
    if not isinstance(weights_path, (str, os.PathLike)):
        raise TypeError(f"weights_path must be a path, got {type(weights_path).__name__}")
    path = Path(weights_path).expanduser()
    if not path.exists():
        raise MetricError(_weights_help(f"Inception weights file {str(path)!r} does not exist"))
    if not path.is_file():
        raise MetricError(_weights_help(f"Inception weights path {str(path)!r} is not a file"))
    if path.name == INCEPTION_FILENAME and (digest := _sha256(path)) != INCEPTION_SHA256:
        raise MetricError(
            f"{str(path)!r} is named {INCEPTION_FILENAME} but its sha256 is {digest[:16]}..., not the known "
            f"{INCEPTION_SHA256[:16]}...: it is not the StyleGAN2-ADA Inception (corrupt or replaced), and loading "
            "it would run its code; use the original file (or rename a feature network you trust)"
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.load is deprecated in recent torch
            net = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/ValueError/... for bad archives
        raise MetricError(
            _weights_help(f"cannot load {str(path)!r} as TorchScript ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})")
        ) from e
    return net.eval()


def _check_images(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise MetricError(f"{name} must have shape (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point in [-1, 1] or uint8 in [0, 255], got {images.dtype}")
    return images.detach()


def images_to_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, C, H, W) float in [-1, 1] (or uint8 in [0, 255]) -> uint8 (N, 3, H, W); C = 1 is repeated.

    Quantised like saved PNGs: round((x + 1) * 127.5), clipped to [0, 255]; NaN -> 0, +-inf clipped.
    """
    x = _check_images(images)
    if x.dtype != torch.uint8:
        x = torch.nan_to_num(x.to(torch.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
        x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def _detector(weights_path: PathLike | torch.nn.Module | None, device: str | torch.device) -> torch.nn.Module:
    if isinstance(weights_path, torch.nn.Module):
        return weights_path
    return load_inception(weights_path, device)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


@torch.no_grad()
def _batched_features(images: torch.Tensor, net: torch.nn.Module, batch_size: int, device: str | torch.device):
    """Yield float64 CPU features (b, F) of consecutive batches of images."""
    for i in range(0, images.shape[0], batch_size):
        x = images_to_uint8(images[i : i + batch_size]).to(device)
        f = net(x, return_features=True)
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise MetricError(f"the Inception network must return features (N, F) for return_features=True, got {got}")
        yield f.to("cpu", torch.float64)


def inception_features(
    images: torch.Tensor | np.ndarray,
    weights_path: PathLike | torch.nn.Module | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Inception features (N, 2048) float64 of images (N, C, H, W) in [-1, 1] (C in 1, 3).

    ``weights_path``: the path of inception-2015-12-05.pt, or a network already loaded by load_inception.
    """
    x = _check_images(images)
    batch_size = _check_batch_size(batch_size)
    if x.shape[0] < 1:
        raise MetricError("images is empty")
    net = _detector(weights_path, device)
    return torch.cat(list(_batched_features(x, net, batch_size, device)))


def compute_statistics(
    images: torch.Tensor | np.ndarray,
    weights_path: PathLike | torch.nn.Module | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """FID statistics (mu (F,), sigma (F, F)) float64 of images (N, C, H, W) in [-1, 1], N >= 2.

    mu = mean of the features, sigma = unbiased covariance (divisor N - 1), accumulated in float64
    batch by batch (as EDM's fid.py). ``weights_path``: inception-2015-12-05.pt or a loaded network.
    """
    x = _check_images(images)
    batch_size = _check_batch_size(batch_size)
    n = x.shape[0]
    if n < 2:
        raise MetricError(f"images needs at least 2 images to estimate a covariance, got {n}")
    net = _detector(weights_path, device)
    s1 = s2 = None
    for f in _batched_features(x, net, batch_size, device):
        s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
        s2 = f.T @ f if s2 is None else s2 + f.T @ f
    mu = s1 / n
    sigma = (s2 - torch.outer(mu, mu) * n) / (n - 1)
    return mu.numpy(), sigma.numpy()


def save_statistics(path: PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write ``mu`` (F,) and ``sigma`` (F, F) as float64 to the .npz file ``path`` (atomically)."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise MetricError(f"expected mu (F,) and sigma (F, F), got {mu.shape} and {sigma.shape}")
    from ..fileio import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, mu=mu, sigma=sigma)

    return atomic_write(path, write)


def load_statistics(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu, sigma) float64 from an .npz with keys ``mu`` and ``sigma`` (EDM / pytorch-fid layout)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetricError(f"FID reference statistics file {str(path)!r} does not exist (expected an .npz with 'mu' and 'sigma')")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise MetricError(f"{str(path)!r} lacks the arrays 'mu' and/or 'sigma' (has: {', '.join(data.files) or 'nothing'})")
            mu = np.asarray(data["mu"], dtype=np.float64)
            sigma = np.asarray(data["sigma"], dtype=np.float64)
    except MetricError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy raises several types for bad files
        raise MetricError(f"cannot read FID reference statistics {str(path)!r}: {type(e).__name__}: {e}") from e
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise MetricError(f"{str(path)!r}: expected mu (F,) and sigma (F, F), got {mu.shape} and {sigma.shape}")
    return mu, sigma


def fid_from_statistics(stats1: tuple[np.ndarray, np.ndarray], stats2: tuple[np.ndarray, np.ndarray]) -> float:
    """FID between two (mu, sigma) pairs: the Frechet distance of the fitted Gaussians."""
    return frechet_distance(stats1[0], stats1[1], stats2[0], stats2[1])


def _reference_stats(
    reference: Reference, net: torch.nn.Module, batch_size: int, device: str | torch.device
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(reference, (str, os.PathLike)):
        return load_statistics(reference)
    if isinstance(reference, Mapping):
        if "mu" not in reference or "sigma" not in reference:
            raise MetricError("reference as a mapping must have keys 'mu' and 'sigma'")
        return np.asarray(reference["mu"], np.float64), np.asarray(reference["sigma"], np.float64)
    if isinstance(reference, tuple) and len(reference) == 2:
        return np.asarray(reference[0], np.float64), np.asarray(reference[1], np.float64)
    if isinstance(reference, (torch.Tensor, np.ndarray)):
        return compute_statistics(reference, net, batch_size, device)
    raise TypeError(
        "reference must be images (N, C, H, W), a (mu, sigma) pair, a mapping with 'mu'/'sigma', "
        f"or the path of an .npz file; got {type(reference).__name__}"
    )


def fid_from_samples(
    samples: torch.Tensor | np.ndarray,
    reference: Reference,
    weights_path: PathLike | torch.nn.Module | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> float:
    """FID between ``samples`` (N, C, H, W) in [-1, 1] (C in 1, 3) and ``reference``.

    ``reference``: images (M, C, H, W) in [-1, 1], a (mu, sigma) pair, or the path of an .npz
    with ``mu``/``sigma`` (e.g. EDM's reference files). ``weights_path``: inception-2015-12-05.pt
    (never downloaded) or a network from load_inception. The network is loaded once.
    """
    _check_images(samples, "samples")
    if isinstance(reference, (torch.Tensor, np.ndarray)):
        _check_images(reference, "reference")
    batch_size = _check_batch_size(batch_size)
    net = _detector(weights_path, device)
    mu1, sigma1 = compute_statistics(samples, net, batch_size, device)
    mu2, sigma2 = _reference_stats(reference, net, batch_size, device)
    if mu1.shape != mu2.shape:
        raise MetricError(
            f"the reference statistics have {mu2.shape[0] if mu2.ndim else 0} features but the network gives {mu1.shape[0]}"
        )
    return frechet_distance(mu1, sigma1, mu2, sigma2)
