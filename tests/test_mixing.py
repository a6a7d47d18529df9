"""Mixing study (kinetic.bench.mixing): clocks, tolerance times, checks and the run (the KL / W2 maths
itself is tested in test_divergence.py)."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import kinetic as kn
from kinetic.bench import mixing as mx
from kinetic.divergence import gaussian_kl, mixture_kl

F64 = torch.float64


@pytest.mark.parametrize("name", ["vp", "cld", "hold", "langevin1", "langevin3", "langevin6"])
def test_kl_decreases_to_zero(name):
    sde = mx.default_sdes()[name]
    r = sde.mixing_rate()
    tau = torch.logspace(-2, math.log10(60.0), 80, dtype=F64) / r
    for data in (mx.Dataset("g", mx.synthetic_gaussian()), mx.Dataset("c", mx.cifar_like_spectrum(256))):
        kl = mx.kl(sde, tau, data)
        assert (kl >= 0).all()
        assert (kl[1:] <= kl[:-1] * (1 + 1e-9)).all(), "KL to the stationary law must not increase"
        assert float(kl[0]) > 1.0 and float(kl[-1]) < 1e-12


def test_cld_and_hold_are_rescaled_chains():
    """cld() and hold() are langevin(2), langevin(3) with the auxiliaries rescaled: KL (invariant) agrees."""
    data = mx.digits_gaussian()
    t = torch.tensor([0.05, 0.2, 0.6, 1.0], dtype=F64)
    for a, b in ((kn.cld(), kn.langevin(2)), (kn.hold(), kn.langevin(3))):
        ka = gaussian_kl(a, t, data)
        kb = gaussian_kl(b, t, data)
        torch.testing.assert_close(ka, kb, rtol=1e-7, atol=1e-12)


def test_normalisations_do_what_they_claim():
    T = 7.0
    sdes = mx.default_sdes()
    for name, sde in sdes.items():
        assert mx.normalise(sde, "time") is sde
        # (b) int_0^T beta g2 dt = T, by trapezoid quadrature of beta(t)
        ns = mx.normalise(sde, "noise", T=T)
        tt = torch.linspace(0, T, 2001, dtype=F64)
        integral = float(torch.trapezoid(ns.beta(tt) * float(ns.noise_block[0, 0]), tt))
        assert integral == pytest.approx(T, rel=1e-10), name
        # (b') beta g2 / P[k,k] = 1
        nr = mx.normalise(sde, "noise_rel", T=T)
        assert float(nr.beta(torch.tensor(1.0))) * float(nr.noise_block[0, 0]) / float(nr.stationary_cov[-1, -1]) == pytest.approx(1.0)
        # (c) spectral abscissa of beta A is -1. Every preset is critically damped (one defective
        # eigenvalue), so beta A + I must be nilpotent: (beta A + I)^k = 0 exactly; numpy's
        # eigenvalues (perturbed by ~eps^(1/k) for a Jordan block) all lie near -1.
        nc = mx.normalise(sde, "spectral", T=T)
        beta = float(nc.beta(torch.tensor(1.0)))
        A = nc.drift_matrix.numpy()
        k = A.shape[0]
        N = beta * A + np.eye(k)
        assert np.linalg.norm(np.linalg.matrix_power(N, k)) < 1e-9 * max(1.0, np.linalg.norm(N)) ** k, name
        ev = np.linalg.eigvals(beta * A)
        assert np.abs(ev + 1).max() < 0.02, name
        # and on a short horizon (where expm is well conditioned) the norm decays no faster than e^-t
        t = 30.0
        assert np.linalg.norm(scipy.linalg.expm(t * beta * A), 2) >= math.exp(-t), name
        # the clocks invert each other
        for how in mx.NORMALISATIONS:
            nsde = mx.normalise(sde, how)
            t0 = torch.tensor([0.3, 2.0], dtype=F64)
            torch.testing.assert_close(mx.t_of_tau(nsde, mx.tau_of_t(nsde, t0)), t0, rtol=1e-9, atol=1e-12)
    # the presets' defaults: same slowest rate in t for cld, langevin(1), langevin(2) (= 8); hold = langevin(3)
    rate_t = {n: s.mixing_rate() * float(s.beta(torch.tensor(0.5))) for n, s in sdes.items() if n != "vp"}
    assert rate_t["cld"] == pytest.approx(8.0) and rate_t["langevin1"] == pytest.approx(8.0)
    assert rate_t["hold"] == pytest.approx(rate_t["langevin3"]) == pytest.approx(8 * math.sqrt(3))


def test_time_to_tolerance():
    sde, data = kn.hold(), mx.Dataset("digits", mx.digits_gaussian())
    f = lambda tau: mx.kl(sde, tau, data)  # noqa: E731
    for tol in (1e-3, 1e-5):
        ts = mx.time_to_tolerance(f, tol)
        assert float(f(torch.tensor([ts]))[0]) == pytest.approx(tol, rel=1e-6)
        assert float(f(torch.tensor([0.99 * ts]))[0]) > tol


@pytest.mark.parametrize("name", ["gaussians8", "asym2"])
def test_mixture_monte_carlo_and_bound(name):
    """The study's own checks: its Monte Carlo estimate and the convexity bound bracket the exact KL."""
    mix = mx.DATASETS[name][0]()
    sde, t = kn.hold(), 0.08
    tt = torch.tensor([t], dtype=F64)
    kl = float(mixture_kl(sde, tt, mix)["kl"][0])
    assert kl > 0.05
    assert kl <= float(mx.mixture_kl_bound(sde, tt, mix)[0])
    m, s = mx.mixture_kl_mc(sde, t, mix, 40_000, torch.Generator().manual_seed(2), "plain")
    assert abs(m - kl) < 4 * s


def test_mixture_small_kl_control_variate():
    """At tau = 6 the KL is small; the "cv" estimator resolves it (the "plain" one is for large KL)."""
    u = mx.unit_clock(kn.langevin(2))
    mix = mx.asymmetric_mixture()
    kl = float(mixture_kl(u, torch.tensor([6.0], dtype=F64), mix)["kl"][0])
    assert 1e-6 < kl < 1e-2
    assert float(mx.kl(kn.langevin(2), torch.tensor([6.0]), mx.Dataset("a", mix))[0]) == kl
    m, s = mx.mixture_kl_mc(u, 6.0, mix, 20_000, torch.Generator().manual_seed(0), "cv")
    assert abs(m - kl) < 5 * s


def test_normalisations_several_noised_blocks():
    """noise / noise_rel use D_NN and P_NN, so they also apply with noise on two blocks."""
    sde = kn.LinearSDE([[0.0, 1.0], [-1.0, -2.0]], [[0.5, 0.0], [0.0, 1.0]], aux_cov=0.1)
    assert sde.noised_blocks == (0, 1)
    D, P = sde.noise_block, sde.stationary_cov
    assert mx.clock_rate(sde, "noise") == pytest.approx(1.0 / float(D[0, 0] + D[1, 1]))
    assert mx.clock_rate(sde, "noise_rel") == pytest.approx(1.0 / float(torch.trace(torch.linalg.inv(P) @ D)))
    # and for one noised block they are the familiar 1/g2 and P[k,k]/g2
    h = kn.hold()
    assert mx.clock_rate(h, "noise") == pytest.approx(1.0 / float(h.noise_block[0, 0]))
    assert mx.clock_rate(h, "noise_rel") == pytest.approx(float(h.stationary_cov[-1, -1]) / float(h.noise_block[0, 0]))


def test_errors():
    with pytest.raises(ValueError, match="stationary"):
        mx.kl(kn.ve(), torch.tensor([0.1]), mx.Dataset("g", mx.synthetic_gaussian()))
    with pytest.raises(ValueError, match="normalisation"):
        mx.normalise(kn.vp(), "bogus")
    with pytest.raises(ValueError, match="t must lie"):
        mx.kl(kn.vp(), torch.tensor([-1.0]), mx.Dataset("g", mx.synthetic_gaussian()))
    with pytest.raises(RuntimeError, match="not reached"):
        mx.time_to_tolerance(lambda tau: torch.ones(1), 1e-3, tau_max=10.0)


def test_run_smoke(tmp_path):
    sdes = {n: s for n, s in mx.default_sdes().items() if n in ("vp", "cld", "hold", "langevin1")}
    cfg = mx._Config(n_curve=8, mixture_curves=4, mc_n=500, datasets=("synthetic2",), mixtures=("asym2",), sdes=sdes)
    res = mx.run(cfg, tmp_path)
    assert {"mixing_kl.png", "mixing_kl_asym2.png", "mixing_ratio.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}
    r = res["ratios"]["synthetic2"]["spectral"]["langevin1"]["0.001"]
    assert r["vs_ou"] == pytest.approx(1.0) and r["vs_vp"] == pytest.approx(1.0)  # OU == VP on the spectral clock
    md = mx.to_markdown(res)
    assert "hold/vp" in md and "synthetic2" in md
