"""Datasets: 2-D toys, sklearn digits, CIFAR-10 (local files) and image folders.

``load_dataset(name, ...)`` returns the whole training set as one float32 tensor:
toys (n, 2) at roughly unit scale, images (N, C, H, W) in [-1, 1].
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
    "is_image_dataset",
    "make_toy",
    "load_digits",
    "load_cifar10",
    "load_image_folder",
    "to_uint8_images",
    "save_image_grid",
    "save_scatter",
    "CIFAR10_URL",
]

TOY_DATASETS = tuple(TOYS)
IMAGE_DATASETS = ("digits", "cifar10", "folder")
#: The dataset registry's names (toys from `kinetic.data.toys.TOYS`, then the image sets).
DATASETS = TOY_DATASETS + IMAGE_DATASETS

DEFAULT_TOY_N = 10_000
DEFAULT_FOLDER_RESOLUTION = 32
_FIXED_RESOLUTION = {"digits": 8, "cifar10": 32}


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


def dataset_shape(name: str, resolution: int | None = None) -> tuple[int, ...]:
    """Shape of one sample: (2,) for toys, (1, 8, 8) digits, (3, 32, 32) cifar10,
    (3, r, r) folder (r = resolution, default 32)."""
    _check_name(name)
    if name in TOY_DATASETS:
        return (2,)
    res = _resolution(name, resolution)
    return (1 if name == "digits" else 3, res, res)


DIGITS_TEST_SIZE = 297
TEST_SEED_OFFSET = 1_000_003


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    n: int | None = None,
    seed: int = 0,
    resolution: int | None = None,
    split: str = "train",
) -> torch.Tensor:
    """The ``split`` ("train", "test" or "all") of ``name`` as float32 tensor (N, *dataset_shape(name)).

    Held-out splits: toys draw the test set with another seed; digits hold out a fixed random
    297 of the 1797 images (1500 train); cifar10 uses ``test_batch``; folder holds out every
    10th image in sorted order.

    Toys: ``n`` samples (default 10_000) drawn with ``seed``. Images: all
    training images; if ``n`` is given, only the first ``n`` (``seed`` unused).
    ``data_dir`` is required for cifar10 (the cifar-10-batches-py folder or its
    parent) and folder (root of PNG/JPEG files).
    """
    _check_name(name)
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise DataError(f"n must be a positive integer, got {n!r}")
    if name in TOY_DATASETS:
        if resolution is not None:
            raise DataError(f"resolution does not apply to the 2-D toy dataset {name!r}")
        toy_seed = seed + TEST_SEED_OFFSET if split == "test" else seed
        return make_toy(name, DEFAULT_TOY_N if n is None else int(n), seed=toy_seed)
    res = _resolution(name, resolution)
    if name == "digits":
        x = load_digits()
        if split != "all":
            perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
            idx = perm[DIGITS_TEST_SIZE:] if split == "train" else perm[:DIGITS_TEST_SIZE]
            x = x[idx.sort().values]
    else:
        if data_dir is None:
            what = "the cifar-10-batches-py folder (or its parent)" if name == "cifar10" else "a folder of PNG/JPEG images"
            raise DataError(f"dataset {name!r} needs --data-dir (data_dir): {what}")
        if name == "cifar10":
            if split == "all":
                x = torch.cat([load_cifar10(data_dir, train=True), load_cifar10(data_dir, train=False)])
            else:
                x = load_cifar10(data_dir, train=(split == "train"))
        else:
            x = load_image_folder(data_dir, resolution=res, channels=3)
            if split != "all":
                keep = (torch.arange(x.shape[0]) % 10 == 9) if split == "test" else (torch.arange(x.shape[0]) % 10 != 9)
                if split == "test" and not bool(keep.any()):
                    raise DataError(f"folder {data_dir} has fewer than 10 images: no held-out test split")
                x = x[keep]
    if n is not None:
        x = x[: int(n)].clone()
    return x
