"""Tests for kinetic.data (no downloads: CIFAR-10 and image folders are synthesised)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kinetic.data import (
    DATASETS,
    DataError,
    dataset_shape,
    load_cifar10,
    load_dataset,
    load_digits,
    load_image_folder,
    make_toy,
    save_image_grid,
    save_scatter,
    to_uint8_images,
)

TOYS = ("swissroll", "moons", "checkerboard", "gaussians8")


# ----------------------------------------------------------------- toys


@pytest.mark.parametrize("name", TOYS)
def test_toy_shape_seed_scale(name):
    x = make_toy(name, 5000, seed=1)
    assert x.shape == (5000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, make_toy(name, 5000, seed=1))
    assert not torch.equal(x, make_toy(name, 5000, seed=2))
    assert x.mean(0).abs().max() < 0.2
    std = x.std(0)
    assert (std > 0.5).all() and (std < 1.5).all(), std
    assert x.abs().max() < 4.0


def test_toy_specifics():
    c = make_toy("checkerboard", 20000)
    assert c.abs().max() <= 3**0.5 + 1e-5
    # occupied squares alternate: the sign pattern of (floor(x), floor(y)) on the 4x4 board
    cell = torch.floor(c / (3**0.5 / 2)).long() + 2  # 0..3
    assert ((cell[:, 0] + cell[:, 1]) % 2).unique().numel() == 1
    g = make_toy("gaussians8", 20000)
    r = g.norm(dim=1)
    assert (r - 1.407).abs().median() < 0.1


def test_toy_errors():
    with pytest.raises(DataError, match="valid names"):
        make_toy("spiral", 10)
    with pytest.raises(DataError):
        make_toy("moons", 0)


# ----------------------------------------------------------------- digits


def test_digits():
    x = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    x2, y = load_digits(return_labels=True)
    assert torch.equal(x, x2)
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))


# ----------------------------------------------------------------- cifar10


def _write_batch(path: Path, data: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels, b"filenames": []}, f, protocol)


def _fake_cifar(root: Path, n: int = 10) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        data[0, :] = 0
        data[0, 0] = 255  # R, row 0, col 0
        data[0, 1024 + 33] = 255  # G, row 1, col 1
        data[0, 2048 + 1023] = 255  # B, row 31, col 31
        _write_batch(folder / name, data, [(i + j) % 10 for j in range(n)], protocol=(2, 4, 5)[i % 3])
        batches[name] = data
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}))
    return batches


def test_cifar10_loader(tmp_path):
    batches = _fake_cifar(tmp_path)
    x = load_cifar10(tmp_path)  # parent of cifar-10-batches-py
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    first = x[0]
    assert first[0, 0, 0] == 1.0 and first[1, 1, 1] == 1.0 and first[2, 31, 31] == 1.0
    assert (first == 1.0).sum() == 3 and (first == -1.0).sum() == 3 * 1024 - 3
    # second image equals the raw row reshaped to (3, 32, 32)
    raw = torch.from_numpy(batches["data_batch_1"][1].astype(np.float32)).reshape(3, 32, 32)
    assert torch.allclose(x[1], raw / 127.5 - 1)
    # ordering across batches and direct folder path, test split, labels
    x_direct, y = load_cifar10(tmp_path / "cifar-10-batches-py", return_labels=True)
    assert torch.equal(x, x_direct)
    assert y.shape == (50,) and y[:3].tolist() == [0, 1, 2] and y[10:13].tolist() == [1, 2, 3]
    xt = load_cifar10(tmp_path, train=False)
    assert xt.shape == (10, 3, 32, 32)
    assert torch.equal(load_dataset("cifar10", data_dir=tmp_path), x)
    assert load_dataset("cifar10", data_dir=tmp_path, n=7).shape == (7, 3, 32, 32)


def _assert_cifar_help(msg: str) -> None:
    assert "cifar-10-batches-py" in msg
    assert "data_batch_1" in msg and "data_batch_5" in msg and "test_batch" in msg
    assert "cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg


def test_cifar10_missing_dir(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path / "nope")
    _assert_cifar_help(str(e.value))
    assert "nope" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path / "empty")
    _assert_cifar_help(str(e.value))


def test_cifar10_missing_file(tmp_path):
    _fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as e:
        load_cifar10(tmp_path)
    _assert_cifar_help(str(e.value))
    assert load_cifar10(tmp_path, train=False).shape == (10, 3, 32, 32)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a pickle",
        pickle.dumps([1, 2, 3]),
        pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}),
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}),
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4, b"evil": Path(".")}),
    ],
)
def test_cifar10_malformed(tmp_path, content):
    _fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(content)
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path)
    assert "data_batch_2" in str(e.value)
    _assert_cifar_help(str(e.value))


# ----------------------------------------------------------------- image folder


def _make_folder(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 60), (255, 0, 0)).save(root / "a.png")
    Image.new("RGB", (100, 50), (0, 0, 255)).save(root / "sub" / "b.JPG", quality=95)
    grad = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (20, 1))  # 20 x 64, grey ramp
    Image.fromarray(grad, "L").save(root / "sub" / "c.jpeg")
    (root / "notes.txt").write_text("not an image")


def test_image_folder(tmp_path):
    _make_folder(tmp_path)
    x = load_image_folder(tmp_path, resolution=16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # sorted by relative path: a.png, sub/b.JPG, sub/c.jpeg
    assert torch.allclose(x[0, 0], torch.ones(16, 16)) and torch.allclose(x[0, 1:], -torch.ones(2, 16, 16))
    assert (x[1, 2] > 0.9).all() and (x[1, 0] < -0.9).all()
    # grey ramp: equal channels, center-cropped so the extreme columns are cut away
    assert torch.allclose(x[2, 0], x[2, 1]) and torch.allclose(x[2, 1], x[2, 2])
    assert x[2, 0, :, 0].mean() > -0.9 and x[2, 0, :, -1].mean() < 0.9
    assert x[2, 0, 8, 15] > x[2, 0, 8, 0]
    g = load_image_folder(tmp_path, resolution=8, channels=1)
    assert g.shape == (3, 1, 8, 8)
    assert load_dataset("folder", data_dir=tmp_path, resolution=8).shape == (3, 3, 8, 8)
    assert dataset_shape("folder", resolution=8) == (3, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="missing_dir"):
        load_image_folder(tmp_path / "missing_dir")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="no images") as e:
        load_image_folder(tmp_path / "empty")
    assert "empty" in str(e.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("RGB", (8, 8)).save(bad / "ok.png")
    (bad / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(bad)


# ----------------------------------------------------------------- writers


def test_to_uint8_images():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, float("nan")]).reshape(1, 1, 1, 5)
    u = to_uint8_images(x)
    assert u.dtype == np.uint8 and u.shape == (1, 1, 5, 1)
    assert u.ravel().tolist() == [0, 128, 255, 255, 0]


@pytest.mark.parametrize("channels", [1, 3])
def test_save_image_grid(tmp_path, channels):
    x = torch.rand(10, channels, 8, 8) * 2 - 1
    out = save_image_grid(x, tmp_path / "grid" / "g.png", nrow=4)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (4 * 10 + 2, 3 * 10 + 2)  # (width, height), padding 2
        assert im.mode == ("L" if channels == 1 else "RGB")
        arr = np.asarray(im)
    first = to_uint8_images(x[:1])[0]
    assert np.array_equal(arr[2:10, 2:10].reshape(8, 8, -1), first)
    assert [p.name for p in (tmp_path / "grid").iterdir()] == ["g.png"]  # no temp files left
    with Image.open(save_image_grid(x, tmp_path / "d.png")) as im:
        assert im.size == (4 * 10 + 2, 3 * 10 + 2)  # nrow = ceil(sqrt(10)) = 4


def test_save_scatter(tmp_path):
    x = make_toy("moons", 500)
    x[0] = float("nan")
    out = save_scatter(x, tmp_path / "s.png", reference=make_toy("moons", 500, seed=1))
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


# ----------------------------------------------------------------- registry


def test_load_dataset_and_shapes():
    assert DATASETS == ("swissroll", "moons", "checkerboard", "gaussians8", "digits", "cifar10", "folder")
    x = load_dataset("moons")
    assert x.shape == (10_000, 2)
    assert torch.equal(load_dataset("moons", n=100, seed=3), make_toy("moons", 100, seed=3))
    assert load_dataset("digits", split="all").shape == (1797, 1, 8, 8)
    assert load_dataset("digits").shape == (1500, 1, 8, 8)
    assert load_dataset("digits", n=10).shape == (10, 1, 8, 8)
    assert dataset_shape("swissroll") == (2,)
    assert dataset_shape("digits") == (1, 8, 8)
    assert dataset_shape("cifar10") == (3, 32, 32)
    assert dataset_shape("folder") == (3, 32, 32)


def test_load_dataset_errors():
    with pytest.raises(DataError, match="valid names.*swissroll.*folder"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="valid names"):
        dataset_shape("mnist")
    for name in ("cifar10", "folder"):
        with pytest.raises(DataError, match="--data-dir"):
            load_dataset(name)
    with pytest.raises(DataError, match="resolution"):
        load_dataset("digits", resolution=32)
    assert issubclass(DataError, ValueError)


def test_splits_are_disjoint_and_deterministic():
    from kinetic.data import load_dataset

    tr = load_dataset("digits")
    te = load_dataset("digits", split="test")
    al = load_dataset("digits", split="all")
    assert tr.shape[0] == 1500 and te.shape[0] == 297 and al.shape[0] == 1797
    flat = lambda x: {tuple(r.tolist()) for r in x.reshape(x.shape[0], -1)}
    assert flat(tr) | flat(te) == flat(al) or len(flat(tr) | flat(te)) == len(flat(al))
    assert torch.equal(te, load_dataset("digits", split="test"))
    a = load_dataset("moons", n=50)
    b = load_dataset("moons", n=50, split="test")
    assert not torch.allclose(a, b)
    import pytest

    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")


def test_atomic_write_leaves_no_temp_and_normal_permissions(tmp_path):
    import os

    import pytest

    from kinetic.fileio import atomic_write, atomic_write_text

    p = atomic_write_text(tmp_path / "a.txt", "hello")
    assert p.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)

    def boom(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", boom)
    assert p.read_text() == "hello"  # the old file survives
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


# ---------------------------------------------------------------------- labels
def test_labels_of_digits_follow_the_images():
    from kinetic.data import class_names, dataset_classes, load_digits

    xa, ya = load_digits(return_labels=True)
    for split in ("train", "test", "all"):
        x, y = load_dataset("digits", split=split, labels=True)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert torch.equal(x, load_dataset("digits", split=split))
        index = {xa[i].numpy().tobytes(): int(ya[i]) for i in range(len(xa))}
        assert all(index[x[i].numpy().tobytes()] == int(y[i]) for i in range(0, len(x), 37))
    x, y = load_dataset("digits", labels=True, n=10)
    assert x.shape[0] == y.shape[0] == 10
    assert dataset_classes("digits") == dataset_classes("cifar10") == 10 and dataset_classes("moons") == 0
    assert class_names("cifar10")[3] == "cat" and class_names("swissroll") is None
    with pytest.raises(DataError, match="no class labels"):
        load_dataset("moons", labels=True)


def test_cifar10_labels(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.random.RandomState(0).randint(0, 255, (4, 3072)).astype(np.uint8)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [1, 2, 3, 4]}, f)
    x, y = load_dataset("cifar10", data_dir=tmp_path, labels=True, split="test")
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [1, 2, 3, 4]
    x, y = load_dataset("cifar10", data_dir=tmp_path, labels=True, split="all")
    assert x.shape[0] == y.shape[0] == 24


def test_image_folder_classes(tmp_path):
    from PIL import Image

    from kinetic.data import dataset_classes, folder_classes

    for cls, count in (("cat", 12), ("dog", 9)):
        (tmp_path / "lab" / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (10, 12), (20 * i, 100 if cls == "cat" else 200, 0)).save(tmp_path / "lab" / cls / f"{i:02d}.png")
    assert folder_classes(tmp_path / "lab") == ("cat", "dog")
    assert dataset_classes("folder", tmp_path / "lab") == 2
    x, y = load_dataset("folder", data_dir=tmp_path / "lab", resolution=8, labels=True, split="all")
    assert x.shape == (21, 3, 8, 8) and y.tolist() == [0] * 12 + [1] * 9
    assert torch.all(x[y == 0, 1] < x[y == 1, 1].min())  # the green channel tells the classes apart
    xt, yt = load_dataset("folder", data_dir=tmp_path / "lab", resolution=8, labels=True, split="test")
    assert xt.shape[0] == yt.shape[0] == 2 and yt.tolist() == [0, 1]  # images 9 and 19 of the sorted list
    # images directly in the root, or a single sub-folder: unlabelled
    Image.new("RGB", (8, 8)).save(tmp_path / "lab" / "loose.png")
    assert folder_classes(tmp_path / "lab") is None
    with pytest.raises(DataError, match="no class labels"):
        load_dataset("folder", data_dir=tmp_path / "lab", labels=True)
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only" / "a.png")
    assert folder_classes(tmp_path / "one") is None
