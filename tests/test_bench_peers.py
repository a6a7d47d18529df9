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


def test_run_and_markdown(tmp_path):
    res = pr.run(nfes=(3, 8), n=200, n_path=16, peers=["UniPC-3 (bh2)", "DEIS-2"], kinetic_configs=("ei-3", "em"),
                 rtol=1e-8)
    md = pr.to_markdown(res)
    assert "Schedule check" in md and "**kinetic, best**" in md and "**best peer / best kinetic**" in md
    for p in ("mixture4", "gauss64"):
        rows = res["peers"][p]["UniPC-3 (bh2)"]
        assert [r["nfe"] for r in rows] == [3, 8] and all(r["path_error"] > 0 for r in rows)
        assert ("Peers win" in md) or ("No peer beats" in md)
    pr.plot(res, str(tmp_path / "peers.png"))
    assert (tmp_path / "peers.png").stat().st_size > 10_000
