"""The few-step harness (kinetic.bench.problems / fewstep): its metrics and reference against independent
computations, the same-prior-draw pathwise error, and a small end-to-end run."""

import math

import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.bench import fewstep as fs
from kinetic.bench import problems as pb

F64 = torch.float64


def _brute_w1(y: torch.Tensor, mix1d: GaussianMixture) -> float:
    """W1 of a 1-D sample to a 1-D mixture: |F_n - F| integrated on a fine grid (trapezoid)."""
    grid = torch.linspace(float(y.min()) - 3, float(y.max()) + 3, 400_001, dtype=F64)
    z = (grid[:, None] - mix1d.means[:, 0]) / mix1d.std
    F = (mix1d.weights * 0.5 * torch.erfc(-z / math.sqrt(2))).sum(-1)
    Fn = torch.searchsorted(torch.sort(y).values, grid, right=True).to(F64) / y.numel()
    return float(torch.trapezoid((Fn - F).abs(), grid))


def test_sliced_w1_against_brute_force_and_a_shift():
    mix = pb.mixture4()
    x = mix.sample(3000, torch.Generator().manual_seed(1))
    one = GaussianMixture(mix.weights, mix.means[:, :1], mix.std)  # the first coordinate alone
    assert pb.sliced_w1_to_mixture(x[:, :1], one, n_proj=2) == pytest.approx(_brute_w1(x[:, 0], one), rel=2e-3)
    # a shift by delta along e1 moves every projection by delta |cos theta| (at large n, far above the floor)
    metric = pb.SlicedW1ToMixture(mix, n_proj=32)
    delta = 0.5
    cos = torch.cos(torch.arange(32, dtype=F64) * math.pi / 32).abs().mean()
    shifted = metric(x + torch.tensor([delta, 0.0], dtype=F64))
    assert shifted == pytest.approx(delta * float(cos), abs=3 * metric(x))
    # exact samples: the error falls like n^-1/2
    big = metric(mix.sample(20_000, torch.Generator().manual_seed(2)))
    assert big < metric(mix.sample(500, torch.Generator().manual_seed(3))) / 3
    assert math.isnan(metric(torch.full((10, 2), float("nan"), dtype=F64)))
    with pytest.raises(ValueError, match="features"):
        metric(torch.zeros(10, 3))


def test_product_score_is_the_parts_side_by_side():
    laws = {"a": pb.mixture4(), "b": GaussianData([0.3, -0.2, 1.0], [0.5, 1.5, 0.2])}
    joint = pb.Product(laws)
    assert joint.dim == 5 and joint.slices["b"] == slice(2, 5)
    sde = kn.hold()
    z = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.full((6,), 0.3, dtype=F64)
    s = joint.score_fn(sde)(z, t)
    torch.testing.assert_close(s[:, :2], laws["a"].score_fn(sde)(z[..., :2], t))
    torch.testing.assert_close(s[:, 2:], laws["b"].score_fn(sde)(z[..., 2:], t))


def test_flow_map_closed_form_vp_gaussian():
    """VP and 1-D Gaussian data N(m, s^2): the probability-flow map is the monotone (quantile) map
    x_t = mean_t + sd_t (x_T - mean_T) / sd_T between the Gaussian marginals."""
    sde, m, s2 = kn.vp(), 0.7, 0.3
    law = GaussianData([m], s2)
    z_T = torch.linspace(-2.5, 2.5, 11, dtype=F64).reshape(11, 1, 1)
    out = pb.flow_map(sde, law.score_fn(sde), z_T, 1e-3, rtol=1e-10)[:, 0, 0]
    co = {t: sde.coefficients(torch.tensor(t, dtype=F64)) for t in (sde.T, 1e-3)}
    mean = {t: float(c.c[0]) * m for t, c in co.items()}
    sd = {t: math.sqrt(float(c.c[0]) ** 2 * s2 + float(c.sigma[0, 0])) for t, c in co.items()}
    expect = mean[1e-3] + sd[1e-3] * (z_T[:, 0, 0] - mean[sde.T]) / sd[sde.T]
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-8)


def test_flow_map_tolerance():
    """The reduced run's reference (rtol 1e-6) against a tight one, on the mixture."""
    sde, law = kn.vp(), pb.mixture4()
    z_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    a = pb.flow_map(sde, law.score_fn(sde), z_T, rtol=1e-6)[:, 0]
    b = pb.flow_map(sde, law.score_fn(sde), z_T, rtol=1e-9)[:, 0]
    assert pb.pathwise_error(a, b) < 2e-5


def test_ei_is_exact_pathwise_for_matched_gaussian_data():
    """Deterministic ei is exact at any step count for data N(m, sigma_d^2 I) with its reference
    scale sigma_d: its pathwise error to the exact flow of the same prior draw is ~0 at 3 steps
    (which also checks that the harness compares the same prior draw)."""
    sde = kn.cld()
    law = GaussianData([0.4, -1.0, 0.2], 0.25)
    ref = fs.reference(sde, law, 8, 8, seed=3, rtol=1e-10)
    errors = {"g": (slice(None), fs.distribution_error(law))}
    cfg = fs.Config("ei-3", "ei", {"multistep": 3, "data_std": 0.5, "gls_steps": 0})
    rows = fs.run_config(sde, law, errors, cfg, "quadratic", (3,), 8, ref, seed=3)["g"]
    assert rows[0]["nfe"] == 3 and rows[0]["path_error"] < 1e-6
    # a sampler at few steps is far from exact, and a wrong prior draw is caught
    off = fs.run_config(sde, law, errors, fs.Config("ei-1", "ei", {"multistep": 1, "data_std": 0.0}),
                        "quadratic", (3,), 8, ref, seed=3)["g"]
    assert off[0]["path_error"] > 1e-3
    bad = fs.Reference(ref.z_T + 1.0, ref.x_ref, ref.nfe, ref.seconds)
    with pytest.raises(RuntimeError, match="prior draw"):
        fs.run_config(sde, law, errors, cfg, "quadratic", (3,), 8, bad, seed=3)


def test_run_tables_and_budgets(tmp_path):
    res = fs.run(presets=["vp", "cld"], nfes=(3, 5), n=300, n_path=20, rtol=1e-6,
                 configs=("kn.sample default", "ei-3", "pc", "em"))
    assert set(res["results"]) == {"mixture4", "gauss64"} and res["floor"]["mixture4"] > 0
    vp = res["results"]["mixture4"]["vp"]
    assert [r["nfe"] for r in vp["pc"]["quadratic"]] == [2, 4]  # 2 NFE a step, never above the budget
    assert [r["nfe"] for r in vp["ei-3"]["logsnr"]] == [3, 5]
    assert all(r["path_error"] is None for r in vp["em"]["uniform"])  # stochastic: no pathwise error
    assert all(r["path_error"] > 0 for r in vp["ei-3"]["uniform"])
    assert all("skipped" in r for r in res["results"]["gauss64"]["cld"]["pc"]["uniform"])  # pc needs order 1
    b = fs.best(res, "mixture4", "vp", 5)
    assert b["nfe"] <= 5 and b["value"] == min(
        r["error"] for per in vp.values() for rows in per.values() for r in rows if r.get("target") == 5 and "error" in r)
    md = fs.to_markdown(res)
    assert "Best of all kinetic samplers and grids" in md and "| pc | quadratic |" in md and "(stochastic)" in md
    assert "#### gauss64 / cld" in md and "| pc |" not in md.split("#### gauss64 / cld")[1]
    fs.plot(res, str(tmp_path / "few.png"))
    assert (tmp_path / "few.png").stat().st_size > 10_000


def test_a_preset_is_one_line_and_unsupported_samplers_are_skipped(monkeypatch):
    """A new preset (here noise on two blocks, like PSLD) joins with one entry; samplers that cannot
    run it yet give skipped rows, and the exact flow of the reference still works."""
    two = lambda: kn.LinearSDE([[0.0, 4.0], [-1.0, -4.0]], [[0.1, 0.0], [0.0, 2.0]], aux_cov=0.04, name="two")  # noqa: E731
    monkeypatch.setitem(fs.PRESETS, "two", two)
    res = fs.run(problems=("mixture4",), presets=["two"], nfes=(3,), n=50, n_path=5, rtol=1e-5, configs=("em", "ei-3"))
    assert res["reference"]["two"]["nfe"] > 0
    for label in ("em", "ei-3"):
        for rows in res["results"]["mixture4"]["two"][label].values():
            assert all(("skipped" in r) or r["error"] > 0 for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["--nfes", "3,x"], "argument --nfes: comma-separated integers expected, got '3,x'"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--grids", "nope"], "unknown configuration, grid or preset ['nope']"),
])
def test_bad_options_exit_2_with_one_line_naming_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        fs.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
