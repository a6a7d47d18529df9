"""Tests for kinetic.metrics: sliced Wasserstein, Frechet distance, fd-digits, FID (user weights)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import norm

from kinetic.data import load_digits, to_uint8_images
from kinetic.metrics import (
    DATA_RANGE,
    INCEPTION_FILENAME,
    MetricError,
    clamp_to_data_range,
    out_of_range_fraction,
    compute_statistics,
    fd_digits,
    fid_from_samples,
    frechet_distance,
    frechet_distance_from_features,
    images_to_uint8,
    load_inception,
    load_statistics,
    save_statistics,
    sliced_wasserstein,
)
from kinetic.metrics import digits_classifier as dc
from kinetic.metrics.swd import wasserstein_1d_squared


def _gauss_quantiles(mu: float, s: float, n: int) -> torch.Tensor:
    """n deterministic 'samples' of N(mu, s^2): the quantiles at (i + 1/2) / n, shape (n, 1)."""
    u = (np.arange(n) + 0.5) / n
    return torch.from_numpy(mu + s * norm.ppf(u)).reshape(n, 1)


# ------------------------------------------------------------------------ sliced Wasserstein


@pytest.mark.parametrize("n, m", [(4000, 4000), (4000, 2500)])
def test_swd_matches_exact_w2_for_1d_gaussians(n, m):
    mu1, s1, mu2, s2 = 0.3, 1.0, -1.2, 2.5
    x, y = _gauss_quantiles(mu1, s1, n), _gauss_quantiles(mu2, s2, m)
    exact = (mu1 - mu2) ** 2 + (s1 - s2) ** 2  # W2^2 between 1-D Gaussians
    sw = sliced_wasserstein(x, y, n_projections=8)
    assert sw**2 == pytest.approx(exact, rel=5e-3)


def test_w1d_unequal_sizes_equals_replicated_equal_sizes():
    # W2 between empirical measures is unchanged by replicating every atom: n=4, m=6 -> 12 each.
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 4, generator=g, dtype=torch.float64)
    b = torch.randn(5, 6, generator=g, dtype=torch.float64) * 2 + 1
    got = wasserstein_1d_squared(a, b)
    ra = torch.sort(a.repeat_interleave(3, dim=1), dim=1).values
    rb = torch.sort(b.repeat_interleave(2, dim=1), dim=1).values
    ref = (ra - rb).square().mean(dim=1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_swd_zero_for_identical_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 1, 4, 4, generator=g)
    assert sliced_wasserstein(x, x.clone()) == pytest.approx(0.0, abs=1e-12)
    direction = torch.randn(1, 1, 4, 4, generator=g)
    direction = direction / direction.norm()
    vals = [sliced_wasserstein(x, x + c * direction) for c in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    # A pure shift c: W2^2 on direction theta is (theta . c)^2 exactly, and E(theta . u)^2 = 1/d.
    sw = sliced_wasserstein(x, x + 2.0 * direction, n_projections=4096)
    assert sw == pytest.approx(2.0 / math.sqrt(16), rel=0.05)


def test_swd_reproducible_default_and_generator():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 5, generator=g), torch.randn(300, 5, generator=g) + 0.5
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x, y)
    a = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(7))
    b = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(7))
    c = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(8))
    assert a == b and a != c
    assert sliced_wasserstein(x.numpy(), y.numpy()) == sliced_wasserstein(x, y)


def test_swd_validation_and_nan():
    x = torch.zeros(10, 3)
    with pytest.raises(MetricError, match="same number of features"):
        sliced_wasserstein(x, torch.zeros(10, 4))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(TypeError, match="x must be"):
        sliced_wasserstein([[0.0]], x)
    bad = x.clone()
    bad[0, 0] = float("nan")
    assert math.isnan(sliced_wasserstein(bad, x))


# ------------------------------------------------------------------------ Frechet distance


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-10)


def test_frechet_1d_closed_form():
    got = frechet_distance(np.array([1.5]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]]))
    assert got == pytest.approx((1.5 + 0.5) ** 2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_general_matches_symmetric_form_and_zero_for_identical():
    # Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}, computed here with eigh only.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-9)
    assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_singular_covariances_are_finite():
    # rank-1 covariances (features with fewer samples than dimensions): sqrtm is singular.
    u = np.array([1.0, 2.0, 0.0, 0.0])
    s1 = np.outer(u, u)
    s2 = np.zeros((4, 4))
    got = frechet_distance(np.zeros(4), s1, np.zeros(4), s2)
    assert got == pytest.approx(np.trace(s1), rel=1e-4)


def test_frechet_from_features():
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 3))
    shift = np.array([0.5, -1.0, 2.0])
    # same covariance, shifted mean: the distance is exactly |shift|^2.
    assert frechet_distance_from_features(f1, f1 + shift) == pytest.approx(shift @ shift, rel=1e-7)
    f2 = rng.normal(size=(300, 3)) * 2.0
    ref = frechet_distance(f1.mean(0), np.cov(f1.T), f2.mean(0), np.cov(f2.T))
    assert frechet_distance_from_features(torch.tensor(f1), torch.tensor(f2)) == pytest.approx(ref, rel=1e-12)


def test_frechet_validation_and_nan():
    with pytest.raises(MetricError, match="cov1"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(MetricError, match="different dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(MetricError, match="at least 2"):
        frechet_distance_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
    assert math.isnan(frechet_distance(np.array([np.nan]), np.eye(1), np.zeros(1), np.eye(1)))


# ------------------------------------------------------------------------ fd-digits


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """A fresh cache dir holding the classifier, trained once per test session (worker)."""
    d = tmp_path_factory.mktemp("kinetic_cache")
    clf = dc.load_digits_classifier(d)
    return d, clf


def test_classifier_accuracy_and_cache_file(digits_cache):
    d, clf = digits_cache
    assert not clf.from_cache and clf.version == dc.CLASSIFIER_VERSION
    assert clf.test_accuracy >= 0.95
    # independent re-check on the held-out split
    _, _, x_te, y_te = dc.digits_split()
    with torch.no_grad():
        acc = (clf.net(x_te).argmax(1) == y_te).double().mean().item()
    assert acc == pytest.approx(clf.test_accuracy)
    assert len(x_te) == 359
    path = d / "digits_classifier_v1.pt"
    assert path.is_file() and clf.path == path.resolve()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["version"] == "v1" and payload["test_accuracy"] == pytest.approx(clf.test_accuracy)
    assert [p.name for p in d.iterdir()] == [path.name]  # no temp files left behind


def test_classifier_training_is_deterministic(digits_cache, tmp_path):
    _, clf = digits_cache
    fresh = tmp_path / "fresh"
    with torch.inference_mode():  # training happens inside fd_digits, even under inference mode
        value = fd_digits(load_digits()[:200], cache_dir=fresh)
    assert value > 0 and (fresh / "digits_classifier_v1.pt").is_file()
    other = dc.load_digits_classifier(fresh)
    assert not other.from_cache
    sd1, sd2 = clf.net.state_dict(), other.net.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    assert other.test_accuracy == clf.test_accuracy


def test_classifier_cache_reload_and_stale_versions(digits_cache, tmp_path, monkeypatch):
    d, clf = digits_cache
    calls = []

    def fake_train():
        calls.append(1)
        return dc.DigitsClassifier(clf.net, clf.test_accuracy, 0.0, dc.CLASSIFIER_VERSION, None, False)

    monkeypatch.setattr(dc, "train_digits_classifier", fake_train)
    monkeypatch.setattr(dc, "_MEMO", {})
    loaded = dc.load_digits_classifier(d)  # from the file, no training
    assert loaded.from_cache and not calls
    for k, v in clf.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[k], v)
    # a file from another version, one with another architecture, and a corrupt one: retrained
    stale = tmp_path / "stale"
    stale.mkdir()
    f = stale / "digits_classifier_v1.pt"
    for content in (
        {"version": "v0", "state_dict": clf.net.state_dict(), "test_accuracy": 1.0},
        {"version": "v1", "state_dict": {"w": torch.zeros(3)}, "test_accuracy": 1.0},
    ):
        torch.save(content, f)
        monkeypatch.setattr(dc, "_MEMO", {})
        assert not dc.load_digits_classifier(stale).from_cache
    f.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(dc, "_MEMO", {})
    assert not dc.load_digits_classifier(stale).from_cache
    assert len(calls) == 3
    monkeypatch.setattr(dc, "_MEMO", {})
    assert dc.load_digits_classifier(stale).from_cache  # the rewritten file is valid


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KINETIC_CACHE", str(tmp_path / "c"))
    assert dc.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("KINETIC_CACHE")
    assert dc.default_cache_dir() == dc.Path.home() / ".cache" / "kinetic"


def test_fd_digits_real_vs_real_vs_noise(digits_cache):
    d, _ = digits_cache
    x = load_digits()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    half_a, half_b = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    real = fd_digits(half_a, half_b, cache_dir=d)
    noise = torch.rand(x.shape, generator=g) * 2 - 1
    vs_noise = fd_digits(noise, cache_dir=d)
    assert fd_digits(x, cache_dir=d) == pytest.approx(0.0, abs=1e-6)  # default reference: all 1797
    assert 0.0 < real < 10.0
    assert vs_noise > 20 * real and vs_noise > 100.0
    blended = [fd_digits((1 - a) * x + a * noise, cache_dir=d) for a in (0.0, 0.3, 0.6)]
    assert blended[0] < blended[1] < blended[2]


def test_fd_digits_validation(digits_cache):
    d, _ = digits_cache
    with pytest.raises(MetricError, match=r"\(N, 1, 8, 8\)"):
        fd_digits(torch.zeros(10, 3, 8, 8), cache_dir=d)
    with pytest.raises(MetricError, match="at least 2"):
        fd_digits(torch.zeros(1, 1, 8, 8), cache_dir=d)
    bad = load_digits()[:50].clone()
    bad[0, 0, 0, 0] = float("inf")
    assert math.isnan(fd_digits(bad, cache_dir=d))


def test_fd_digits_clamps_to_the_data_range_by_default(digits_cache):
    d, _ = digits_cache
    x = load_digits()[:400]
    g = torch.Generator().manual_seed(5)
    wide = x * 1.6 + 0.3 * torch.randn(x.shape, generator=g)  # about half the pixels outside [-1, 1]
    assert out_of_range_fraction(wide) > 0.3
    clamped = fd_digits(wide, cache_dir=d)
    assert clamped == pytest.approx(fd_digits(wide.clamp(-1, 1), cache_dir=d, clamp=False), rel=1e-12)
    raw = fd_digits(wide, cache_dir=d, clamp=False)
    assert raw != pytest.approx(clamped, rel=1e-3)
    # in-range samples are scored the same either way; the reference is clamped the same way
    assert fd_digits(x, cache_dir=d) == pytest.approx(fd_digits(x, cache_dir=d, clamp=False), rel=1e-12)
    assert fd_digits(x, wide, cache_dir=d) == pytest.approx(fd_digits(x, wide.clamp(-1, 1), cache_dir=d, clamp=False),
                                                            rel=1e-12)
    with pytest.raises(TypeError, match="clamp must be"):
        fd_digits(x, cache_dir=d, clamp="yes")


def test_out_of_range_fraction_and_clamp():
    assert DATA_RANGE == (-1.0, 1.0)
    x = torch.tensor([[-1.0, 1.0, 0.0, 1.0001], [-2.0, float("nan"), float("inf"), 0.5]])
    assert out_of_range_fraction(x) == pytest.approx(4 / 8)  # 1.0001, -2, nan, inf
    assert out_of_range_fraction(x.numpy(), low=-3.0, high=3.0) == pytest.approx(2 / 8)  # nan, inf
    assert out_of_range_fraction(torch.zeros(0)) == 0.0
    c = clamp_to_data_range(x)
    assert c.dtype == x.dtype and c.shape == x.shape
    assert c[0].tolist() == [-1.0, 1.0, 0.0, 1.0] and c[1, 0] == -1.0 and c[1, 2] == 1.0 and torch.isnan(c[1, 1])
    with pytest.raises(ValueError, match="low < high"):
        out_of_range_fraction(x, low=1.0, high=-1.0)
    with pytest.raises(TypeError, match="x must be"):
        clamp_to_data_range([1.0, 2.0])


# ------------------------------------------------------------------------ FID (user-supplied weights)


class _TinyDetector(nn.Module):
    """Stands in for inception-2015-12-05.pt: uint8 (N, 3, H, W) -> features (N, 16), any H, W."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, 16)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(x.to(torch.float32) / 255.0, 4).flatten(1)
        f = torch.tanh(self.proj(h))
        if return_features:
            return f
        return torch.softmax(f, dim=1)


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in new torch
        scripted = torch.jit.script(_TinyDetector())
    path = tmp_path / "tiny-inception.pt"
    scripted.save(str(path))
    return path


def _images(n: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, 12, 12, generator=g) * 2 - 1


def test_fid_self_zero_shift_positive(tiny_weights):
    x = _images(300)
    assert fid_from_samples(x, x.clone(), tiny_weights, batch_size=64) == pytest.approx(0.0, abs=1e-6)
    vals = [fid_from_samples((x + s).clamp(-1, 1), x, tiny_weights) for s in (0.1, 0.3)]
    assert 0 < vals[0] < vals[1]


def test_fid_statistics_match_direct_features_and_npz_roundtrip(tiny_weights, tmp_path):
    x, y = _images(200, seed=1), _images(150, seed=2) * 0.5
    net = load_inception(tiny_weights)
    mu, sigma = compute_statistics(x, tiny_weights, batch_size=64)  # 4 batches, last partial
    with torch.no_grad():
        f = net(torch.from_numpy(to_uint8_images(x)).permute(0, 3, 1, 2), return_features=True).double().numpy()
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-7, atol=1e-10)
    ref = tmp_path / "ref" / "stats.npz"
    save_statistics(ref, mu, sigma)
    with np.load(ref) as data:
        assert sorted(data.files) == ["mu", "sigma"] and data["mu"].dtype == np.float64
    mu2, sigma2 = load_statistics(ref)
    np.testing.assert_array_equal(mu2, mu)
    from_images = fid_from_samples(y, x, tiny_weights)
    assert fid_from_samples(y, ref, tiny_weights) == pytest.approx(from_images, rel=1e-9)
    assert fid_from_samples(y, (mu, sigma), net) == pytest.approx(from_images, rel=1e-9)
    assert from_images > 0


def test_fid_grayscale_is_repeated(tiny_weights):
    g = _images(100, c=1, seed=3)
    ref = _images(100, seed=4)
    assert fid_from_samples(g, ref, tiny_weights) == pytest.approx(
        fid_from_samples(g.repeat(1, 3, 1, 1), ref, tiny_weights), rel=1e-12
    )
    assert images_to_uint8(g).shape == (100, 3, 12, 12)
    np.testing.assert_array_equal(images_to_uint8(ref).permute(0, 2, 3, 1).numpy(), to_uint8_images(ref))


def test_fid_missing_or_bad_weights_message(tmp_path):
    x = _images(10)
    missing = tmp_path / "nope" / INCEPTION_FILENAME
    with pytest.raises(MetricError) as e:
        fid_from_samples(x, x, missing)
    msg = str(e.value)
    assert str(missing) in msg and "inception-2015-12-05.pt" in msg
    assert "never downloads" in msg and "--inception-weights" in msg and "TorchScript" in msg
    assert isinstance(e.value, ValueError)
    garbage = tmp_path / "garbage.pt"  # (under the known name it is refused by its digest first)
    garbage.write_bytes(b"not torchscript")
    with pytest.raises(MetricError, match="cannot load .* as TorchScript.*never downloads"):
        load_inception(garbage)
    with pytest.raises(MetricError, match="no Inception weights"):
        fid_from_samples(x, x, None)


def test_fid_validation(tiny_weights, tmp_path):
    with pytest.raises(MetricError, match=r"samples must have shape"):
        fid_from_samples(torch.zeros(4, 2, 8, 8), _images(4), tiny_weights)
    with pytest.raises(MetricError, match="features"):
        fid_from_samples(_images(20), (np.zeros(5), np.eye(5)), tiny_weights)
    bad = tmp_path / "bad.npz"
    np.savez(bad, m=np.zeros(3))
    with pytest.raises(MetricError, match="'mu'"):
        load_statistics(bad)
    with pytest.raises(MetricError, match="does not exist"):
        load_statistics(tmp_path / "missing.npz")


def test_known_inception_name_with_another_digest_is_refused(tiny_weights, tmp_path):
    """torch.jit.load runs the file's code: a file named inception-2015-12-05.pt must be the known one."""
    from kinetic.metrics.fid import INCEPTION_SHA256

    fake = tmp_path / INCEPTION_FILENAME
    fake.write_bytes(tiny_weights.read_bytes())
    with pytest.raises(MetricError, match=f"sha256 .* not the known {INCEPTION_SHA256[:16]}"):
        load_inception(fake)
    assert load_inception(tiny_weights) is not None  # another name: the user's own network, loaded
