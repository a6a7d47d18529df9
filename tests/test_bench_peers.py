"""The peer benchmark (kinetic.bench.peers): the VP schedule check and diffusers' schedulers driven by the
exact score. Skipped without diffusers (an optional dependency: the `peers` extra)."""

import math

import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData
from kinetic.bench import fewstep as fs
from kinetic.bench import peers as pr
from kinetic.bench import problems as pb

pytest.importorskip("diffusers")

F64 = torch.float64


def test_exact_betas_reproduce_kinetics_vp():
    sde = kn.vp()
    t = torch.arange(1, 1001, dtype=F64) / 1000
    B = 0.1 * t + 0.5 * 19.9 * t * t  # int_0^t (0.1 + 19.9 s) ds
    torch.testing.assert_close(torch.cumprod(1 - pr.exact_betas(sde), 0), torch.exp(-B), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="VP only"):
        pr.exact_betas(kn.cld())


def test_schedule_mismatch_against_closed_forms():
    m = pr.schedule_mismatch(kn.vp())
    # step 0: diffusers' alpha_bar = 1 - 1e-4; kinetic's exp(-B(1e-3)), B(1e-3) = 1e-4 + 9.95e-6
    assert m["sigma_over_alpha_first"]["diffusers"] == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    assert m["sigma_over_alpha_first"]["kinetic"] == pytest.approx(math.sqrt(math.expm1(1.0995e-4)), rel=1e-9)
    # step 999: sum of log(1 - beta_i) against -B(1) = -10.05
    betas = [1e-4 + i * (0.02 - 1e-4) / 999 for i in range(1000)]
    expect = abs(sum(math.log1p(-b) for b in betas) + 10.05)
    assert m["at_log_alpha_bar"] == 999 and m["max_abs_log_alpha_bar"] == pytest.approx(expect, rel=1e-9)
    assert 0.01 < m["max_rel_sigma"] < 0.1  # a few percent: the reason the comparison uses exact betas


@pytest.mark.parametrize("label", ["UniPC-3 (bh2), Karras", "DPM-Solver++ 2M, lambda-uniform", "DEIS-3"])
def test_peers_converge_to_the_exact_flow(label):
    """Driven by the exact score, each scheduler converges to the probability-flow map of the same
    prior draw (so the conversion eps = -sigma score and the time of each noise level are right);
    it makes exactly the requested score calls and ends at t_eps = 1e-3."""
    sde = kn.vp()
    law = GaussianData([0.5, -1.0], [0.3, 1.2])
    ref = fs.reference(sde, law, 32, 32, seed=1, rtol=1e-10)
    peer = next(p for p in pr.PEERS if p.label == label)
    errs = []
    for nfe in (10, 40):
        r = pr.sample_peer(peer, sde, law.score_fn(sde), ref.z_T, nfe)
        assert r["nfe"] == nfe
        # diffusers keeps alpha_bar in float32: 1 - alpha_bar near t = 0 has ~4 digits
        assert r["t_start"] == pytest.approx(1.0, rel=1e-6) and r["t_end"] == pytest.approx(1e-3, rel=1e-3)
        errs.append(pb.pathwise_error(r["x"], ref.x_ref))
    assert errs[1] < errs[0] / 4 and errs[1] < 2e-2


def test_default_betas_end_at_diffusers_sigma_min():
    sde = kn.vp()
    law = GaussianData([0.0], 1.0)
    peer = next(p for p in pr.PEERS if p.betas == "default")
    r = pr.sample_peer(peer, sde, law.score_fn(sde), sde.prior_sample((4, 1), dtype=F64), 5)
    assert r["nfe"] == 5 and r["t_end"] == pytest.approx(9.17e-4, rel=1e-3)  # sigma/alpha 0.0100 < 0.01049 at 1e-3


def test_vp_sigma_is_the_inverse_of_the_time_of_a_sigma():
    sde = kn.vp()
    t = torch.tensor([1e-3, 0.07, 0.5, 1.0], dtype=F64)
    c = sde.coefficients(t)
    # sigma / alpha of VP: sqrt(Sigma) / Phi
    torch.testing.assert_close(pr.vp_sigma(sde, t), c.sigma[..., 0, 0].sqrt() / c.c[..., 0], rtol=1e-10, atol=0)
    for ti, si in zip(t.tolist(), pr.vp_sigma(sde, t).tolist()):
        assert pr._time_of_sigma(sde, si) == pytest.approx(ti, rel=1e-10)


def test_kinetic_grid_is_kn_sample_defaults():
    """`kinetic_grid` is the grid kn.sample's default steps through: the times its score calls see, then t_eps."""
    sde = kn.vp()
    law = GaussianData([0.0], 1.0)
    seen = []
    sf = law.score_fn(sde)
    kn.sample(sde, lambda z, t: seen.append(float(t.reshape(-1)[0])) or sf(z, t), (4, 1), steps=7, t_eps=1e-3,
              dtype=F64)
    ts = pr.kinetic_grid(sde, 7)
    assert ts.dtype == F64 and ts.shape == (8,) and float(ts[-1]) == 1e-3
    assert seen == ts[:-1].tolist()


@pytest.mark.parametrize("label", ["UniPC-3 (bh2), kinetic grid", "DPM-Solver++ 2M, kinetic grid"])
def test_solver_only_peers_step_on_kinetics_grid(label):
    """The solver-only peers make exactly nfe score calls, at kinetic's grid times (T first, never t_eps),
    with the scheduler's sigmas at those times, and converge to the exact flow."""
    sde = kn.vp()
    law = GaussianData([0.5, -1.0], [0.3, 1.2])
    ref = fs.reference(sde, law, 32, 32, seed=1, rtol=1e-10)
    peer = next(p for p in pr.PEERS if p.label == label)
    assert peer.solver_only and peer.label in [p.label for p in pr.PEERS if p.grid == "kinetic"]
    sf = law.score_fn(sde)
    errs = []
    for nfe in (10, 40):
        seen = []

        def score(z, t):
            assert t.shape == (z.shape[0],) and bool((t == t[0]).all())
            seen.append(float(t[0]))
            return sf(z, t)

        r = pr.sample_peer(peer, sde, score, ref.z_T, nfe)
        ts = pr.kinetic_grid(sde, nfe)
        assert r["nfe"] == nfe == len(seen)
        assert seen == ts[:-1].tolist()
        assert r["t_start"] == 1.0 and r["t_end"] == 1e-3
        errs.append(pb.pathwise_error(r["x"], ref.x_ref))
    assert errs[1] < errs[0] / 4 and errs[1] < 1e-2
    # the scheduler itself steps between the same nodes: its sigmas are sigma/alpha there, index from 0
    sch = pr._build(peer, sde)
    ts = pr._set_kinetic_grid(sch, sde, 5)
    torch.testing.assert_close(sch.sigmas, pr.vp_sigma(sde, ts), rtol=0, atol=0)
    assert sch.sigmas.dtype == F64 and len(sch.timesteps) == 5 and sch.num_inference_steps == 5
    assert sch.begin_index == 0 and bool((sch.timesteps[1:] <= sch.timesteps[:-1]).all())


def _rows(errors, paths, nfes=(3, 5)):
    return [{"target": t, "nfe": t, "error": e, "path_error": q} for t, e, q in zip(nfes, errors, paths)]


def _fake_result():
    """One problem "m" (floor 0.01) at NFE 3 and 5: the default, one other kinetic config, a peer on its own
    schedule and a solver-only peer."""
    return {
        "schedule": pr.schedule_mismatch(kn.vp()), "nfes": [3, 5], "solver_only": ["P2, kinetic grid"],
        "kinetic": {"floor": {"m": 0.01}, "n": {"m": 100}, "deterministic": {pr.DEFAULT: True, "ei-3": True},
                    "results": {"m": {"vp": {pr.DEFAULT: {"None": _rows([0.05, 0.011], [0.2, 0.1])},
                                             "ei-3": {"band": _rows([0.03, 0.02], [0.1, 0.2])}}}}},
        "peers": {"m": {"P1": _rows([0.06, 0.010], [0.3, 0.05]), "P2, kinetic grid": _rows([0.045, 0.02], [0.25, 0.08])}},
    }


def _row(md, title, n):
    """The n-th table row (0: distribution, 1: pathwise) that starts with ``title``."""
    return [ln for ln in md.splitlines() if ln.startswith(f"| {title} |")][n]


def test_markdown_default_rows_and_ratios():
    res = _fake_result()
    md = pr.to_markdown(res)
    assert _row(md, "**kinetic, `kn.sample` default**", 0) == "| **kinetic, `kn.sample` default** | 0.05 (5.0x) | 0.011 (1.1x) |"
    assert _row(md, "**kinetic, `kn.sample` default**", 1) == "| **kinetic, `kn.sample` default** | 0.2 | 0.1 |"
    # best peer / default: 0.045 / 0.05 (the solver-only row), 0.010 / 0.011; pathwise 0.25 / 0.2, 0.05 / 0.1
    assert _row(md, "**best peer / default**", 0) == "| **best peer / default** | 0.90 (P2, kinetic grid) | 0.91 (P1) |"
    assert _row(md, "**best peer / default**", 1) == "| **best peer / default** | 1.25 (P2, kinetic grid) | 0.50 (P1) |"
    # against kinetic's best (ei-3 at NFE 3): 0.045 / 0.03; pathwise 0.25 / 0.1 and 0.05 / 0.1 (the default)
    assert _row(md, "**best peer / best kinetic**", 0) == "| **best peer / best kinetic** | 1.50 (P2, kinetic grid) | 0.91 (P1) |"
    assert _row(md, "**best peer / best kinetic**", 1) == "| **best peer / best kinetic** | 2.50 (P2, kinetic grid) | 0.50 (P1) |"
    assert _row(md, "P2, kinetic grid *(solver-only (kinetic's grid))*", 0).endswith("| 0.045 (4.5x) | 0.02 (2.0x) |")
    assert "| P1 | 0.06 (6.0x) | 0.01 (1.0x) |" in md
    wins = pr._wins(res, "m")
    assert ("Peers beat the `kn.sample` default on the distribution error at NFE 3: P2, kinetic grid (1.11x smaller); "
            "NFE 5: P1 (1.10x smaller; both at the Monte Carlo floor, so within noise).") in wins
    assert "Peers beat the `kn.sample` default on the pathwise error at NFE 5: P1 (2.00x smaller)." in wins
    assert "No peer beats kinetic's best on the distribution error" not in wins
    assert wins in md


def test_markdown_no_win():
    res = _fake_result()
    for rows in res["peers"]["m"].values():
        for r in rows:
            r["error"], r["path_error"] = 1.0, 1.0
    wins = pr._wins(res, "m")
    assert "No peer beats the `kn.sample` default on the distribution error at any NFE." in wins
    assert "No peer beats kinetic's best on the pathwise error at any NFE." in wins


def test_run_and_markdown(tmp_path):
    res = pr.run(nfes=(3, 8), n=200, n_path=16, peers=["UniPC-3 (bh2)", "DEIS-2", "UniPC-3 (bh2), kinetic grid"],
                 kinetic_configs=("ei-3", "em"), rtol=1e-8)
    md = pr.to_markdown(res)
    assert "Schedule check" in md and "**kinetic, best**" in md and "**best peer / best kinetic**" in md
    assert res["solver_only"] == ["UniPC-3 (bh2), kinetic grid"]
    for p in ("mixture4", "gauss64"):
        assert pr.DEFAULT in res["kinetic"]["results"][p]["vp"]  # added to the configurations asked for
        d = res["kinetic"]["results"][p]["vp"][pr.DEFAULT]["None"]
        assert _row(md, "**kinetic, `kn.sample` default**", 2 * list(res["peers"]).index(p)) == (
            "| **kinetic, `kn.sample` default** | " + " | ".join(fs.cell(r["error"], res["kinetic"]["floor"][p])
                                                              for r in d) + " |")
        rows = res["peers"][p]["UniPC-3 (bh2)"]
        assert [r["nfe"] for r in rows] == [3, 8] and all(r["path_error"] > 0 for r in rows)
        assert [r["nfe"] for r in res["peers"][p]["UniPC-3 (bh2), kinetic grid"]] == [3, 8]
    assert md.count("**best peer / default**") == 4 and md.count("*(solver-only (kinetic's grid))*") == 4
    pr.plot(res, str(tmp_path / "peers.png"))
    assert (tmp_path / "peers.png").stat().st_size > 10_000
