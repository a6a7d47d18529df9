"""Image datasets (digits, CIFAR-10, image folders) and image/scatter writers.

Nothing here downloads anything. Image tensors are float32 (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write as _atomic_write

__all__ = [
    "DataError",
    "load_digits",
    "load_cifar10",
    "load_image_folder",
    "folder_classes",
    "to_uint8_images",
    "save_image_grid",
    "save_scatter",
    "CIFAR10_TRAIN_FILES",
    "CIFAR10_TEST_FILES",
    "CIFAR10_URL",
    "IMAGE_EXTENSIONS",
]


class DataError(ValueError):
    """A dataset is missing, malformed or misnamed (message says what is expected)."""


CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


# --------------------------------------------------------------------------- digits


def load_digits(return_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """sklearn's bundled 8x8 digits: x (1797, 1, 8, 8) in [-1, 1] (from [0, 16]).

    With ``return_labels=True`` returns ``(x, y)`` with y int64 of shape (1797,).
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    x = torch.from_numpy(np.asarray(d.images, dtype=np.float32)).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    if return_labels:
        return x, torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    return x


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_help(path: Path, problem: str) -> str:
    return (
        f"CIFAR-10 {problem} (at {path}). Expected the python version of CIFAR-10: a folder "
        f"'{CIFAR10_DIRNAME}' containing {', '.join(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES)} "
        "(pickles with b'data' uint8 (N, 3072) and b'labels'); pass either that folder or its parent "
        "as the data directory. Nothing is downloaded automatically: get the official archive "
        f"cifar-10-python.tar.gz from {CIFAR10_URL} and extract it yourself "
        "(tar -xzf cifar-10-python.tar.gz)."
    )


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays, dtypes and plain containers."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")
        if module.startswith("numpy.core."):  # numpy >= 2 moved these; avoid the deprecation shim
            try:
                return super().find_class("numpy._core." + module.split(".", 2)[2], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _resolve_cifar_dir(data_dir: str | os.PathLike[str], files: tuple[str, ...]) -> Path:
    root = Path(data_dir).expanduser()
    for cand in (root / CIFAR10_DIRNAME, root):
        if cand.is_dir() and all((cand / f).is_file() for f in files):
            return cand
    if not root.exists():
        raise DataError(_cifar_help(root, "directory not found"))
    for cand in (root / CIFAR10_DIRNAME, root):
        if cand.is_dir() and any((cand / f).exists() for f in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
            missing = [f for f in files if not (cand / f).is_file()]
            raise DataError(_cifar_help(cand, f"files missing: {', '.join(missing)}"))
    raise DataError(_cifar_help(root, "files not found"))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure means a malformed file
        raise DataError(_cifar_help(path, f"batch file is not a readable pickle ({type(e).__name__}: {e})")) from e
    if not isinstance(d, dict):
        raise DataError(_cifar_help(path, f"batch file holds a {type(d).__name__}, not a dict"))
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(_cifar_help(path, f"batch file has bad b'data' ({desc}; expected uint8 (N, 3072))"))
    try:
        labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(_cifar_help(path, "batch file has unreadable b'labels'")) from e
    if labels is None or labels_arr.shape[0] != data.shape[0]:
        raise DataError(_cifar_help(path, f"batch file has {data.shape[0]} images but bad b'labels'"))
    return data, labels_arr


def load_cifar10(
    data_dir: str | os.PathLike[str], train: bool = True, return_labels: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the python layout: x (N, 3, 32, 32) float32 in [-1, 1].

    ``data_dir`` is the ``cifar-10-batches-py`` folder or its parent. train=True
    reads data_batch_1..5 (N = 50000), else test_batch (N = 10000). Each row of
    b'data' is 1024 R, 1024 G, 1024 B values, each row-major 32x32.
    With ``return_labels=True`` returns ``(x, y)`` with y int64 (N,).
    Raises DataError if the folder is missing or a file is malformed. Batch files
    are unpickled with a restricted unpickler (numpy arrays / containers only).
    """
    files = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
    folder = _resolve_cifar_dir(data_dir, files)
    parts = [_read_cifar_batch(folder / f) for f in files]
    data = np.concatenate([p[0] for p in parts], axis=0)
    x = torch.from_numpy(data).reshape(-1, 3, 32, 32).float().div_(127.5).sub_(1.0)
    if return_labels:
        return x, torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return x


# --------------------------------------------------------------------------- image folder


def _list_images(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def folder_classes(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The class names of an image folder, or None when it is unlabelled.

    A folder is labelled when every image lies inside one of its first-level sub-folders and there
    are at least two such sub-folders holding images: the classes are those sub-folders' names,
    sorted (label i = the i-th name, like torchvision's ImageFolder). Images directly in the root,
    or a single sub-folder, make it unlabelled.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    tops = set()
    for f in _list_images(root):
        parts = f.relative_to(root).parts
        if len(parts) < 2:
            return None
        tops.add(parts[0])
    return tuple(sorted(tops)) if len(tops) >= 2 else None


def load_image_folder(
    path: str | os.PathLike[str], resolution: int = 32, channels: int = 3, return_labels: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Every PNG/JPEG under ``path`` (recursive, sorted by relative path).

    Each image is EXIF-rotated, converted to RGB (channels=3) or L (channels=1), resized so the
    shorter side equals ``resolution`` (bicubic) and center-cropped to
    resolution x resolution. Returns float32 (N, channels, resolution, resolution)
    in [-1, 1]. Missing/empty folder or an unreadable file -> DataError.
    With ``return_labels=True`` returns ``(x, y)``, y int64 (N,) the index of each image's class
    sub-folder in `folder_classes`; an unlabelled folder is a DataError.
    """
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
        raise DataError(f"resolution must be a positive integer, got {resolution!r}")
    resolution = int(resolution)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    files = _list_images(root)
    if not files:
        raise DataError(
            f"image folder {root} contains no images (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    labels = None
    if return_labels:
        classes = folder_classes(root)
        if classes is None:
            raise DataError(
                f"image folder {root} has no class labels: a labelled folder keeps every image in one of at least "
                "two sub-folders (one per class), none directly in the folder"
            )
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[f.relative_to(root).parts[0]] for f in files], dtype=torch.int64)
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(files), resolution, resolution, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = ImageOps.exif_transpose(_to_8bit(im, f)).convert(mode)
                w, h = im.size
                s = resolution / min(w, h)
                nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
                im = im.resize((nw, nh), Image.Resampling.BICUBIC)
                left, top = (nw - resolution) // 2, (nh - resolution) // 2
                im = im.crop((left, top, left + resolution, top + resolution))
                arr = np.asarray(im, dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - PIL raises many types
            raise DataError(f"cannot read image {f}: {type(e).__name__}: {e}") from e
        out[i] = arr.reshape(resolution, resolution, channels)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().float().div_(127.5).sub_(1.0)
    return (x, labels) if return_labels else x


def _to_8bit(im, path):
    """A 16- or 32-bit integer grey image (PIL modes I;16*, I) as 8-bit grey scaled by its real
    bit depth (PIL's convert("L") clips at 255: a 16-bit PNG loaded nearly white); a float image
    (mode F) is refused with one line. Other modes are returned as they are."""
    from PIL import Image

    if im.mode == "F":
        raise DataError(f"cannot read image {path}: 32-bit float pixels (mode F) have no defined range; "
                        "save it as an 8- or 16-bit image")
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    arr = np.asarray(im).astype(np.int64)
    bits = 16
    if im.mode == "I" and arr.size and int(arr.max()) > 65535:
        bits = 32
    if arr.size and int(arr.min()) < 0:
        raise DataError(f"cannot read image {path}: negative pixel values in a {im.mode} image")
    scaled = np.round(arr * (255.0 / (2**bits - 1))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


# --------------------------------------------------------------------------- writers


def to_uint8_images(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) (or (C, H, W)) in [-1, 1] -> uint8 numpy (N, H, W, C) in [0, 255].

    Values are clipped; NaN maps to 0 (black).
    """
    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    x = torch.nan_to_num(x, nan=-1.0, posinf=1.0, neginf=-1.0)
    x = ((x + 1.0) * 127.5).round().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()




def save_image_grid(
    x: torch.Tensor | np.ndarray, path: str | os.PathLike[str], nrow: int | None = None, padding: int = 2,
    scale: int = 1,
) -> Path:
    """Write images (N, C, H, W) in [-1, 1] (C = 1 or 3) as one PNG grid.

    ``nrow`` images per row (default ceil(sqrt(N))), ``padding`` black pixels
    between and around images: grid size is
    (rows*(H+padding)+padding) x (nrow*(W+padding)+padding) pixels, times ``scale``
    (nearest-neighbour upscaling, e.g. 4 for legible 8x8 digits).
    """
    from PIL import Image

    imgs = to_uint8_images(x)
    n, h, w, c = imgs.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {c}")
    if n == 0:
        raise ValueError("no images to save")
    nrow = int(nrow) if nrow else math.ceil(math.sqrt(n))
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    nrow = min(nrow, n)
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        grid[y0 : y0 + h, x0 : x0 + w] = imgs[i]
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if scale > 1:
        grid = grid.repeat(int(scale), axis=0).repeat(int(scale), axis=1)
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    return _atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def save_scatter(
    x2d: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    reference: torch.Tensor | np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Scatter plot of 2-D points (N, 2) as PNG (matplotlib Agg, no pyplot).

    ``reference`` (M, 2), e.g. training data, is drawn in grey underneath and
    fixes the axis limits. Non-finite points are dropped and counted in the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = np.asarray(torch.as_tensor(x2d).detach().cpu().double())
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2), got {pts.shape}")
    finite = np.isfinite(pts).all(axis=1)
    n_bad = int((~finite).sum())
    pts = pts[finite]

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lim_src = pts
    if reference is not None:
        ref = np.asarray(torch.as_tensor(reference).detach().cpu().double())
        if ref.ndim != 2 or ref.shape[1] != 2:
            raise ValueError(f"expected reference of shape (M, 2), got {ref.shape}")
        ref = ref[np.isfinite(ref).all(axis=1)]
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.7", alpha=0.5, linewidths=0, label="data")
        lim_src = ref if len(ref) else pts
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="tab:blue", alpha=0.6, linewidths=0, label="samples")
    if len(lim_src):
        lo, hi = np.percentile(lim_src, 0.5, axis=0), np.percentile(lim_src, 99.5, axis=0)
        pad = 0.15 * float(np.max(hi - lo) + 1e-6)
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    full_title = title or ""
    if n_bad:
        full_title = f"{full_title} ({n_bad} non-finite points dropped)".strip()
    if full_title:
        ax.set_title(full_title)
    if reference is not None:
        ax.legend(loc="upper right", markerscale=8, fontsize=8)
    fig.tight_layout()
    return _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
