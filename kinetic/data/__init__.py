"""Datasets: 2-D toys, sklearn digits, CIFAR-10 (local files) and image folders.

``load_dataset(name, ...)`` returns the whole training set as one float32 tensor:
toys (n, 2) at roughly unit scale, images (N, C, H, W) in [-1, 1]; with ``labels=True`` also the
class labels (N,) int64 of a labelled dataset (digits and cifar10: 10 classes; an image folder
whose sub-folders are classes, see `folder_classes`). The toys are unlabelled.
Nothing is ever downloaded.
"""

from __future__ import annotations

import os

import torch

from .images import (
    CIFAR10_URL,
    DataError,
    load_cifar10,
    load_digits,
    folder_classes,
    load_image_folder,
    save_image_grid,
    save_scatter,
    to_uint8_images,
)
from .toys import TOYS, make_toy

__all__ = [
    "DATASETS",
    "TOY_DATASETS",
    "IMAGE_DATASETS",
    "DataError",
    "load_dataset",
    "dataset_shape",
    "dataset_classes",
    "class_names",
    "folder_classes",
    "is_image_dataset",
    "make_toy",
    "load_digits",
    "load_cifar10",
    "load_image_folder",
    "to_uint8_images",
    "save_image_grid",
    "save_scatter",
    "CIFAR10_URL",
    "FIXED_SHAPE",
    "resolve_data_dir",
    "data_fingerprint",
    "check_data_fingerprint",
]


def resolve_data_dir(path):
    """``path`` made absolute (``~`` and ``..`` resolved), so that a run stores where its data are,
    not where they were relative to the directory it was started from; None stays None."""
    if path is None:
        return None
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def data_fingerprint(x) -> str:
    """A short SHA-256 of the training data as loaded (shape and float32 values): a checkpoint
    records it, and a resumed run checks that it trains on the same data."""
    import hashlib

    import numpy as np

    t = torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(t.shape)).encode())
    h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()[:16]


def check_data_fingerprint(saved: str | None, now: str, data_dir, where: str) -> None:
    """DataError when the checkpoint's data fingerprint ``saved`` differs from the data loaded now
    (a run copied elsewhere would silently train on another folder's images); old checkpoints
    without one pass."""
    if saved is not None and saved != now:
        src = f" in {data_dir}" if data_dir else ""
        raise DataError(f"the data{src} are not the data {where} was trained on (fingerprint {now} != {saved}); "
                        "give --data-dir of the original data")

TOY_DATASETS = tuple(TOYS)
IMAGE_DATASETS = ("digits", "cifar10", "folder")
#: The dataset registry's names (toys from `kinetic.data.toys.TOYS`, then the image sets).
DATASETS = TOY_DATASETS + IMAGE_DATASETS

DEFAULT_TOY_N = 10_000
DEFAULT_FOLDER_RESOLUTION = 32
DEFAULT_FOLDER_CHANNELS = 3
#: (channels, side) of the image datasets whose shape is fixed; an image folder's are chosen.
FIXED_SHAPE = {"digits": (1, 8), "cifar10": (3, 32)}
_FIXED_RESOLUTION = {name: side for name, (_, side) in FIXED_SHAPE.items()}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def is_image_dataset(name: str) -> bool:
    """True for digits / cifar10 / folder, False for the 2-D toys."""
    _check_name(name)
    return name in IMAGE_DATASETS


def _resolution(name: str, resolution: int | None) -> int:
    if name == "folder":
        res = DEFAULT_FOLDER_RESOLUTION if resolution is None else resolution
        if isinstance(res, bool) or int(res) != res or res < 1:
            raise DataError(f"resolution must be a positive integer, got {resolution!r}")
        return int(res)
    fixed = _FIXED_RESOLUTION[name]
    if resolution is not None and resolution != fixed:
        raise DataError(f"dataset {name!r} has fixed resolution {fixed}; got resolution={resolution}")
    return fixed


def _channels(name: str, channels: int | None) -> int:
    if name == "folder":
        c = DEFAULT_FOLDER_CHANNELS if channels is None else channels
        if c not in (1, 3) or isinstance(c, bool):
            raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        return int(c)
    fixed = FIXED_SHAPE[name][0]
    if channels is not None and channels != fixed:
        raise DataError(f"dataset {name!r} has fixed channels {fixed}; got channels={channels}")
    return fixed


def dataset_shape(name: str, resolution: int | None = None, channels: int | None = None) -> tuple[int, ...]:
    """Shape of one sample: (2,) for toys, (1, 8, 8) digits, (3, 32, 32) cifar10,
    (c, r, r) folder (r = resolution, default 32; c = channels, 1 or 3, default 3)."""
    _check_name(name)
    if name in TOY_DATASETS:
        if resolution is not None or channels is not None:
            raise DataError(f"resolution and channels do not apply to the 2-D toy dataset {name!r}")
        return (2,)
    res = _resolution(name, resolution)
    return (_channels(name, channels), res, res)


#: Class names of the labelled built-in datasets.
CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def class_names(name: str, data_dir: str | os.PathLike[str] | None = None) -> tuple[str, ...] | None:
    """The class names of dataset ``name`` (label i is the i-th), or None when it is unlabelled
    (the toys; an image folder without class sub-folders). ``folder`` needs ``data_dir``."""
    _check_name(name)
    if name in CLASS_NAMES:
        return CLASS_NAMES[name]
    if name == "folder":
        if data_dir is None:
            raise DataError("dataset 'folder' needs --data-dir (data_dir) to tell whether it has class sub-folders")
        return folder_classes(data_dir)
    return None


def dataset_classes(name: str, data_dir: str | os.PathLike[str] | None = None) -> int:
    """Number of classes of dataset ``name``: 10 for digits and cifar10, the class sub-folders of an
    image folder, 0 for unlabelled data (the toys, a folder without class sub-folders)."""
    names = class_names(name, data_dir)
    return 0 if names is None else len(names)


DIGITS_TEST_SIZE = 297
TEST_SEED_OFFSET = 1_000_003


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    n: int | None = None,
    seed: int = 0,
    resolution: int | None = None,
    channels: int | None = None,
    split: str = "train",
    labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The ``split`` ("train", "test" or "all") of ``name`` as float32 tensor (N, *dataset_shape(name)).

    ``labels=True``: returns ``(x, y)`` with y (N,) int64 class labels in [0, dataset_classes(name));
    unlabelled data (the toys, a folder without class sub-folders) is a DataError.

    Held-out splits: toys draw the test set with another seed; digits hold out a fixed random
    297 of the 1797 images (1500 train); cifar10 uses ``test_batch``; folder holds out every
    10th image in sorted order.

    Toys: ``n`` samples (default 10_000) drawn with ``seed``. Images: all
    training images; if ``n`` is given, only the first ``n`` (``seed`` unused).
    ``data_dir`` is required for cifar10 (the cifar-10-batches-py folder or its
    parent) and folder (root of PNG/JPEG files). ``resolution`` and ``channels`` (1 grayscale, 3 RGB)
    choose a folder's image shape (default 3 x 32 x 32); digits and cifar10 accept only their own.
    """
    _check_name(name)
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise DataError(f"n must be a positive integer, got {n!r}")
    if labels and name in TOY_DATASETS:
        raise DataError(
            f"dataset {name!r} has no class labels (the 2-D toys are unlabelled); labelled datasets: digits, cifar10, "
            "or a folder whose sub-folders are classes"
        )
    if name in TOY_DATASETS:
        if resolution is not None or channels is not None:
            raise DataError(f"resolution and channels do not apply to the 2-D toy dataset {name!r}")
        toy_seed = seed + TEST_SEED_OFFSET if split == "test" else seed
        return make_toy(name, DEFAULT_TOY_N if n is None else int(n), seed=toy_seed)
    res, ch = _resolution(name, resolution), _channels(name, channels)
    y = None
    if name == "digits":
        x, y = load_digits(return_labels=True)
        if split != "all":
            perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
            idx = perm[DIGITS_TEST_SIZE:] if split == "train" else perm[:DIGITS_TEST_SIZE]
            idx = idx.sort().values
            x, y = x[idx], y[idx]
    else:
        if data_dir is None:
            what = "the cifar-10-batches-py folder (or its parent)" if name == "cifar10" else "a folder of PNG/JPEG images"
            raise DataError(f"dataset {name!r} needs --data-dir (data_dir): {what}")
        if name == "cifar10":
            if split == "all":
                (a, ya), (b, yb) = (load_cifar10(data_dir, train=tr, return_labels=True) for tr in (True, False))
                x, y = torch.cat([a, b]), torch.cat([ya, yb])
            else:
                x, y = load_cifar10(data_dir, train=(split == "train"), return_labels=True)
        else:
            got = load_image_folder(data_dir, resolution=res, channels=ch, return_labels=labels)
            x, y = got if labels else (got, None)
            if split != "all":
                keep = (torch.arange(x.shape[0]) % 10 == 9) if split == "test" else (torch.arange(x.shape[0]) % 10 != 9)
                if split == "test" and not bool(keep.any()):
                    raise DataError(f"folder {data_dir} has fewer than 10 images: no held-out test split")
                x = x[keep]
                y = None if y is None else y[keep]
    if n is not None:
        x = x[: int(n)].clone()
        y = None if y is None else y[: int(n)].clone()
    return (x, y) if labels else x
