"""Conditional generation with exact scores (no network): class-conditional sampling and
classifier-free guidance on a Gaussian mixture whose classes are sets of components, and
inpainting by replacement (the k-block kernel, its bridge form, exactness for product data)."""

from __future__ import annotations

import math

import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.conditioning import GuidedScore, MixtureClasses, Replacement, ReplacementPlan, check_inpainting

SDES = {"vp": kn.vp, "cld": kn.cld, "hold": kn.hold, "psld": kn.psld}


def four_modes() -> MixtureClasses:
    """Two classes of two overlapping modes each in 2-D (Bayes accuracy about 0.9)."""
    means = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]) * 0.8
    return MixtureClasses(GaussianMixture(torch.ones(4), means, 0.45), [0, 0, 1, 1])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- guidance
@pytest.mark.parametrize("name", list(SDES))
def test_guidance_zero_is_the_conditional_model(name):
    """w = 0 with labels y draws exactly what the class-y score alone draws (same noise)."""
    sde = SDES[name]()
    mc = four_modes()
    n = 64
    for y in (0, 1):
        a = kn.sample(sde, mc.score_fn(sde), (n, 2), steps=12, labels=torch.full((n,), y), guidance=0.0,
                      generator=gen(3), solver="ei", eta=1.0)
        b = kn.sample(sde, mc.sub_mixture(y).score_fn(sde), (n, 2), steps=12, generator=gen(3), solver="ei", eta=1.0)
        assert torch.allclose(a, b, atol=1e-12, rtol=0)  # (row subsets round a little differently)
    # the null label is the whole mixture
    a = kn.sample(sde, mc.score_fn(sde), (n, 2), steps=12, labels=torch.full((n,), 2), generator=gen(4))
    b = kn.sample(sde, mc.mixture.score_fn(sde), (n, 2), steps=12, generator=gen(4))
    assert torch.allclose(a, b, atol=1e-12, rtol=0)


def _mixture_moments(m: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    w, mu = m.weights, m.means
    mean = w @ mu
    second = (w[:, None, None] * (mu[:, :, None] * mu[:, None, :])).sum(0) + (w * m.std**2).sum() * torch.eye(mu.shape[1])
    return mean, second - mean[:, None] * mean[None, :]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "cld", "hold"])
def test_guidance_zero_gives_the_exact_class_law(name):
    """Class-conditional samples (w = 0) have the class's exact mean and covariance, and the Bayes
    classifier of the data law agrees with the label as often as on exact draws of the class."""
    sde = SDES[name]()
    mc = four_modes()
    n = 4000
    y = torch.arange(n) % 2
    x = kn.sample(sde, mc.score_fn(sde), (n, 2), steps=40, labels=y, generator=gen(0), dtype=torch.float64)
    for c in (0, 1):
        xs = x[y == c]
        mean, cov = _mixture_moments(mc.sub_mixture(c))
        se = (torch.diagonal(cov) / xs.shape[0]).sqrt()
        assert ((xs.mean(0) - mean).abs() <= 4 * se + 0.01).all(), (xs.mean(0), mean)
        assert torch.allclose(torch.cov(xs.T), cov, atol=0.05), (torch.cov(xs.T), cov)
    exact = torch.cat([mc.sub_mixture(c).sample(20000, generator=gen(5 + c)) for c in (0, 1)])
    ey = torch.cat([torch.zeros(20000, dtype=torch.int64), torch.ones(20000, dtype=torch.int64)])
    bayes = float((mc.posterior(exact).argmax(1) == ey).double().mean())
    purity = float((mc.posterior(x).argmax(1) == y).double().mean())
    assert abs(purity - bayes) < 4 * math.sqrt(bayes * (1 - bayes) / n) + 0.005, (purity, bayes)


@pytest.mark.parametrize("name", ["vp", "cld", "hold"])
def test_guided_class_purity_rises_with_w(name):
    """The Bayes posterior of the requested class averaged over guided samples rises strictly with
    w, and the share assigned to the requested class never falls (same prior noise for every w)."""
    sde = SDES[name]()
    mc = four_modes()
    n = 600
    y = torch.arange(n) % 2
    posts, shares = [], []
    for w in (0.0, 0.5, 1.0, 2.0, 4.0):
        x = kn.sample(sde, mc.score_fn(sde), (n, 2), steps=20, labels=y, guidance=w, generator=gen(1))
        p = mc.posterior(x)
        posts.append(float(p[torch.arange(n), y].mean()))
        shares.append(float((p.argmax(1) == y).double().mean()))
    assert all(b > a for a, b in zip(posts, posts[1:])), posts
    assert all(b >= a for a, b in zip(shares, shares[1:])), shares
    assert shares[-1] > shares[0] + 0.05, shares


class Spy:
    """A conditional score that records the batch sizes it is called with."""

    def __init__(self, fn, num_classes):
        self.fn, self.num_classes, self.rows = fn, num_classes, []

    def __call__(self, z, t, labels):
        self.rows.append((z.shape[0], labels.clone()))
        return self.fn(z, t, labels)


@pytest.mark.parametrize("solver,options,sde_name", [
    ("ei", {}, "hold"), ("ei", {"eta": 1.0}, "cld"), ("em", {}, "psld"), ("sscs", {}, "cld"),
    ("lie_trotter", {}, "hold"), ("pc", {}, "vp"), ("ode", {"rtol": 1e-3, "atol": 1e-3}, "vp"),
    ("torchsde", {}, "cld"),
])
def test_guidance_every_solver_one_batched_call_two_network_evaluations(solver, options, sde_name):
    sde = SDES[sde_name]()
    mc = four_modes()
    spy = Spy(mc.score_fn(sde), 2)
    n = 16
    y = torch.arange(n) % 2
    x, nfe = kn.sample(sde, spy, (n, 2), steps=8, solver=solver, labels=y, guidance=1.5, generator=gen(0),
                       return_state=True, **options)
    assert torch.isfinite(x).all()
    calls = len(spy.rows)
    assert nfe == 2 * calls  # each call is one forward of the conditional and the null branch
    for rows, labels in spy.rows:
        assert rows == 2 * n
        assert torch.equal(labels[:n], y) and bool((labels[n:] == 2).all())
    # without guidance: one evaluation per call on n rows
    spy.rows.clear()
    _, nfe0 = kn.sample(sde, spy, (n, 2), steps=8, solver=solver, labels=y, generator=gen(0), return_state=True,
                        **options)
    assert nfe0 == len(spy.rows) and all(r == n for r, _ in spy.rows)


def test_guided_score_formula():
    sde = kn.cld()
    mc = four_modes()
    fn = mc.score_fn(sde)
    z = torch.randn(5, 2, 2, dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    g = GuidedScore(fn, y, 2.0, 2)(z, t)
    expected = 3.0 * fn(z, t, y) - 2.0 * fn(z, t, torch.full((5,), 2))
    assert torch.allclose(g, expected, atol=1e-12)


def test_labels_follow_their_batch():
    """With batch_size the i-th sample keeps the i-th label (far-apart classes)."""
    sde = kn.vp()
    mc = MixtureClasses(GaussianMixture(torch.ones(3), torch.tensor([[-3.0, 0], [0, 3.0], [3.0, 0]]), 0.2), [0, 1, 2])
    y = torch.tensor([2, 0, 1, 1, 2, 0, 0, 2, 1, 0, 2])
    x = kn.sample(sde, mc.score_fn(sde), (11, 2), steps=20, labels=y, batch_size=4, generator=gen(0))
    assert torch.equal(mc.posterior(x).argmax(1), y)
    parts = list(kn.sample_batches(sde, mc.score_fn(sde), (11, 2), steps=20, labels=y, batch_size=4, generator=gen(0)))
    assert torch.equal(mc.posterior(torch.cat(parts)).argmax(1), y)


# ---------------------------------------------------------------------- the replacement kernel
@pytest.mark.parametrize("name", ["cld", "hold", "psld"])
def test_fresh_draw_is_the_joint_kernel_of_all_blocks(name):
    """At node j the known pixels' state is N(c_j x0, Sigma_j) over all k blocks jointly."""
    sde = SDES[name]()
    ts = kn.time_grid(sde, 6, 1e-3, "quadratic")
    plan = ReplacementPlan(sde, ts, "fresh")
    n, x0v = 40000, 0.7
    x0, mask = check_inpainting(torch.full((n, 1), x0v), torch.ones(1), (n, 1), torch.float64)
    g = gen(0)
    rep = Replacement(plan, x0, mask, lambda s, dt, dev: torch.randn(s, generator=g, dtype=dt))
    z = rep(torch.zeros(n, sde.order, 1, dtype=torch.float64), 2, float(ts[3]))[:, :, 0]
    mean, cov = sde.marginal(torch.full((1, 1), x0v, dtype=torch.float64), ts[3])
    assert torch.allclose(z.mean(0), mean[0, :, 0], atol=4 * cov[0].diagonal().max().sqrt() / math.sqrt(n))
    assert torch.allclose(torch.cov(z.T), cov[0], atol=0.03 * float(cov[0].diagonal().max()))


@pytest.mark.parametrize("name", ["vp", "cld", "hold", "psld"])
def test_bridge_is_the_gaussian_conditional_of_the_forward_kernel(name):
    """The bridge's gain and covariance equal the conditioning of the joint law of (z_t', z_t) given
    x0, built independently from Sigma(t'), Sigma(t) and Phi(t', t); its marginals stay N(c x0, Sigma)."""
    sde = SDES[name]()
    ts = kn.time_grid(sde, 5, 1e-2, "quadratic")
    plan = ReplacementPlan(sde, ts, "bridge")
    for i in range(5):
        t, tp = ts[i], ts[i + 1]
        S_t, S_p = sde.covariance(t), sde.covariance(tp)
        Phi = sde.transition(tp, t)
        cross = S_p @ Phi.T  # Cov(z_t', z_t)
        gain = torch.linalg.solve(S_t, cross.T).T
        cond = S_p - gain @ cross.T
        assert torch.allclose(plan.gain[i], gain, atol=1e-7, rtol=1e-6)
        got = plan.step_chol[i] @ plan.step_chol[i].T
        assert torch.allclose(got, cond, atol=1e-9 + 1e-6 * float(S_p.abs().max()))
    # a chain of bridge draws keeps the kernel's marginal at every node
    n = 30000
    x0, mask = check_inpainting(torch.full((n, 1), -0.4), torch.ones(1), (n, 1), torch.float64)
    g = gen(2)
    rep = Replacement(plan, x0, mask, lambda s, dt, dev: torch.randn(s, generator=g, dtype=dt))
    z = rep.initial(torch.zeros(n, sde.order, 1, dtype=torch.float64))
    for i in range(5):
        z = rep(z, i, float(ts[i + 1]))
    mean, cov = sde.marginal(torch.full((1, 1), -0.4, dtype=torch.float64), ts[-1])
    zz = z[:, :, 0]
    assert torch.allclose(zz.mean(0), mean[0, :, 0], atol=0.02)
    assert torch.allclose(torch.cov(zz.T), cov[0], atol=0.03 * float(cov[0].diagonal().max()) + 1e-6)


def product_data(d: int = 6) -> GaussianData:
    """Independent coordinates N(m_j, 0.5^2): known and unknown pixels are independent."""
    return GaussianData(torch.linspace(-0.6, 0.8, d), torch.full((d,), 0.25))


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("method", ["fresh", "bridge"])
def test_inpainting_product_data_leaves_unknown_pixels_exact(name, method):
    """For product data with the exact score the unknown pixels follow their own reverse dynamics:
    with the deterministic ei sampler they equal the unconditional samples' (same prior noise),
    whatever the known pixels do; the known pixels come out exactly as given."""
    sde = SDES[name]()
    data = product_data()
    n, d = 200, 6
    mask = torch.tensor([1, 0, 0, 1, 1, 0], dtype=torch.bool)
    known = torch.randn(n, d, generator=gen(9), dtype=torch.float64) + 5.0  # far from the data: must not leak
    x = kn.sample(sde, data.score_fn(sde), (n, d), steps=15, known=known, mask=mask, replacement=method,
                  generator=gen(0), data_std=0.5, dtype=torch.float64)
    free = kn.sample(sde, data.score_fn(sde), (n, d), steps=15, generator=gen(0), data_std=0.5, dtype=torch.float64)
    assert torch.equal(x[:, mask], known[:, mask])
    assert torch.allclose(x[:, ~mask], free[:, ~mask], atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SDES))
def test_inpainting_product_data_exact_law_stochastic(name):
    """The same with a stochastic sampler (ei, eta = 1, exact for this Gaussian at any step count):
    the unknown pixels have the data law N(m_U, 0.25 I), the known ones are the given values."""
    sde = SDES[name]()
    data = product_data()
    n, d = 4000, 6
    mask = torch.tensor([[1, 0, 0, 1, 1, 0]], dtype=torch.float64)
    known = torch.full((1, d), 2.0, dtype=torch.float64)
    x = kn.sample(sde, data.score_fn(sde), (n, d), steps=10, solver="ei", eta=1.0, data_std=0.5, known=known,
                  mask=mask, generator=gen(1))
    U = [1, 2, 5]
    assert bool((x[:, [0, 3, 4]] == 2.0).all())
    se = math.sqrt(0.25 / n)
    assert ((x[:, U].mean(0) - data.mean[U]).abs() < 4 * se).all(), x[:, U].mean(0)
    assert torch.allclose(torch.cov(x[:, U].T), 0.25 * torch.eye(3, dtype=torch.float64), atol=0.03)


def test_inpainting_batches_and_callback():
    sde = kn.hold()
    data = product_data(4)
    known = torch.arange(20, dtype=torch.float64).reshape(5, 4)
    mask = torch.tensor([1, 0, 1, 0])
    seen = []
    x = kn.sample(sde, data.score_fn(sde), (5, 4), steps=6, known=known, mask=mask, batch_size=2, generator=gen(0),
                  callback=lambda info: seen.append(info["z"].shape[0]))
    assert torch.equal(x[:, [0, 2]], known[:, [0, 2]])
    assert seen == [2] * 6 + [2] * 6 + [1] * 6


# ---------------------------------------------------------------------- bad input
def test_bad_conditioning_input_one_clear_line():
    sde = kn.cld()
    mc = four_modes()
    cond = mc.score_fn(sde)
    plain = mc.mixture.score_fn(sde)
    shape = (4, 2)

    def err(**kw):
        with pytest.raises((ValueError, TypeError)) as e:
            kn.sample(sde, kw.pop("score", cond), shape, steps=3, **kw)
        msg = str(e.value)
        assert "\n" not in msg
        return msg

    assert "[0, 2]" in err(labels=torch.tensor([0, 1, 3, 0]))
    assert "[0, 2]" in err(labels=torch.tensor([0, -1, 1, 0]))
    assert "shape (4,)" in err(labels=torch.tensor([0, 1]))
    assert "int64" in err(labels=torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert "guidance needs labels" in err(guidance=1.0)
    assert "null class" in err(labels=torch.tensor([0, 2, 1, 0]), guidance=1.0)
    assert ">= 0" in err(labels=torch.tensor([0, 1, 1, 0]), guidance=-1.0)
    plain.num_classes = 0
    assert "unconditional" in err(score=plain, labels=torch.tensor([0, 1, 1, 0]))
    assert "unconditional" in err(score=plain, guidance=2.0)
    assert "num_classes" in err(score=lambda z, t, y=None: plain(z, t), labels=torch.tensor([0, 1, 1, 0]))
    x = torch.zeros(4, 2)
    assert "does not broadcast" in err(score=plain, known=x, mask=torch.ones(3))
    assert "only 0 and 1" in err(score=plain, known=x, mask=torch.full((2,), 0.5))
    assert "both known" in err(score=plain, known=x)
    assert "shaped like the output" in err(score=plain, known=torch.zeros(3, 2), mask=torch.ones(2))
    assert "non-finite" in err(score=plain, known=torch.full((4, 2), float("nan")), mask=torch.ones(2))
    assert "fixed-grid" in err(score=plain, known=x, mask=torch.ones(2), solver="ode")
    assert "replacement" in err(score=plain, known=x, mask=torch.ones(2), replacement="repaint")
    # NaN where nothing is known is ignored
    y = kn.sample(sde, plain, shape, steps=3, known=torch.tensor([[1.0, float("nan")]] * 4), mask=torch.tensor([1, 0]))
    assert torch.isfinite(y).all() and bool((y[:, 0] == 1.0).all())
