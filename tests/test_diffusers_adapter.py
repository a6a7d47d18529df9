"""Tests for kinetic.models.diffusers_unet: a diffusers UNet2DModel as a kinetic score network."""

from __future__ import annotations

import io
import math

import pytest
import torch

pytest.importorskip("diffusers")

import kinetic as kn  # noqa: E402
from kinetic.data import load_dataset  # noqa: E402
from kinetic.models import build_model  # noqa: E402
from kinetic.models.diffusers_unet import DiffusersUNet, build_diffusers_unet, unet2d_config  # noqa: E402


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# a very small UNet2DModel for the fast tests: two levels of 16 / 32 channels at 8x8
_SMALL = dict(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8)


def _tiny_net(order: int, out_blocks: int = 1, T: float = 1.0) -> DiffusersUNet:
    torch.manual_seed(0)
    return DiffusersUNet.from_config(unet2d_config((1, 8, 8), order, "tiny", out_blocks=out_blocks, **_SMALL), T=T)


@pytest.mark.parametrize("order", [1, 3])
def test_shapes_and_time_forms(order):
    net = _tiny_net(order)
    h = torch.randn(5, order, 8, 8)
    out = net(h, torch.rand(5))
    assert out.shape == (5, 1, 8, 8) and torch.isfinite(out).all()
    # a scalar time is broadcast: the same as a (B,) tensor of that value
    torch.testing.assert_close(net(h, 0.3), net(h, torch.full((5,), 0.3)))
    two = _tiny_net(order, out_blocks=2)
    assert two(h, torch.rand(5)).shape == (5, 2, 8, 8)  # (B, m*C, H, W) for m predicted blocks


def test_time_maps_to_ddpm_timesteps():
    # t in [0, T] enters the UNet2DModel as the float timestep 1000 * t / T
    net = _tiny_net(1, T=2.0)
    h, t = torch.randn(4, 1, 8, 8), torch.tensor([0.0, 0.5, 1.3, 2.0])
    ref = net.unet(h, t * 500.0).sample
    torch.testing.assert_close(net(h, t), ref)
    assert not torch.allclose(net(h, t), net.unet(h, t).sample)  # the scaling is not a no-op


@pytest.mark.parametrize("size, shape, order", [("tiny", (1, 8, 8), 1), ("small", (1, 8, 8), 1),
                                                ("small", (1, 8, 8), 3), ("tiny", (3, 16, 16), 2)])
def test_parameter_count_matches_kinetic_unet(size, shape, order):
    ours = _n_params(build_model("unet", size, shape, order))
    theirs = build_diffusers_unet(shape, order, size)
    n = _n_params(theirs)
    assert abs(n - ours) <= 0.10 * ours, (n, ours)
    cfg = theirs.config
    assert cfg["in_channels"] == order * shape[0] and cfg["out_channels"] == shape[0]
    assert cfg["sample_size"] == shape[1]


def test_config_mirrors_preset_levels():
    cfg = unet2d_config((1, 8, 8), 3, "small")
    # kinetic's small preset at 8x8: widths 48, 96, 96; attention at 4x4 only (level 1)
    assert tuple(cfg["block_out_channels"]) == (48, 96, 96)
    assert cfg["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    assert cfg["up_block_types"] == ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert cfg["layers_per_block"] == 2 and 48 % cfg["norm_num_groups"] == 0
    assert unet2d_config((1, 8, 8), 1, "small", dropout=0.2)["dropout"] == 0.2  # overrides win


@pytest.mark.parametrize("sde_name", ["vp", "hold"])
def test_training_steps_reduce_the_dsm_loss(sde_name):
    sde = kn.preset(sde_name)
    net = _tiny_net(sde.order, T=sde.T)
    model = kn.ScoreModel(net, sde, "x0")
    loss_fn = kn.DSMLoss(sde, "x0", weighting="edm", time_sampling="lognormal")
    x0 = load_dataset("digits", n=32)
    t = torch.linspace(0.05, 0.9, 32, dtype=torch.float64) * sde.T

    def fixed_loss():
        return loss_fn(model, x0, generator=torch.Generator().manual_seed(1), t=t)

    with torch.no_grad():
        before = float(fixed_loss())
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in range(25):
        loss = fixed_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(fixed_loss())
    assert after < 0.7 * before, (before, after)
    # gradients reached the UNet2DModel's weights
    assert all(p.grad is not None for p in net.unet.conv_in.parameters())


def test_state_dict_round_trip():
    net = _tiny_net(3)
    buf = io.BytesIO()
    torch.save({"config": net.config, "state_dict": net.state_dict()}, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    assert all(k.startswith("unet.") for k in payload["state_dict"])
    torch.manual_seed(123)  # other initial weights: the load must overwrite them all
    other = DiffusersUNet.from_config(payload["config"])
    h, t = torch.randn(3, 3, 8, 8), torch.rand(3)
    assert not torch.allclose(other(h, t), net(h, t))
    other.load_state_dict(payload["state_dict"])
    torch.testing.assert_close(other(h, t), net(h, t), rtol=0, atol=0)


def test_samplers_run_with_the_adapter():
    sde = kn.hold()
    model = kn.ScoreModel(_tiny_net(3).eval(), sde, "x0")
    x = kn.sample(sde, kn.as_score_fn(model), (4, 1, 8, 8), solver="ei", steps=3,
                  generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_bad_input_messages():
    net = _tiny_net(3)
    with pytest.raises(ValueError, match=r"h of shape \(B, 3, H, W\)"):
        net(torch.zeros(2, 1, 8, 8), 0.5)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.zeros(2, 3, 7, 7), 0.5)
    with pytest.raises(TypeError, match="UNet2DModel"):
        DiffusersUNet(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="T must be"):
        DiffusersUNet(net.unet, T=0.0)
    with pytest.raises(ValueError, match="square"):
        unet2d_config((1, 8, 4), 1)
    with pytest.raises(ValueError, match="images"):
        unet2d_config((64,), 1)
    with pytest.raises(ValueError, match="valid sizes"):
        unet2d_config((1, 8, 8), 1, "huge")
    with pytest.raises(ValueError, match="order must be"):
        unet2d_config((1, 8, 8), 0)


def test_conditional_adapter_takes_labels_and_guidance():
    torch.manual_seed(0)
    net = build_diffusers_unet((1, 8, 8), 3, "tiny", num_classes=10)
    assert net.num_classes == 10 and net.config["num_class_embeds"] == 11
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    h, t = torch.randn(1, 3, 8, 8).expand(3, -1, -1, -1), torch.full((3,), 0.4)
    out = net(h, t, torch.tensor([0, 1, 10]))
    assert not torch.allclose(out[0], out[1]) and torch.allclose(net(h, t), net(h, t, torch.full((3,), 10)))
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        net(h, t, torch.tensor([0, 1, 11]))
    sde = kn.hold()
    model = kn.ScoreModel(net.eval(), sde, "x0")
    assert model.num_classes == 10
    x, nfe = kn.sample(sde, kn.as_score_fn(model), (4, 1, 8, 8), steps=3, labels=torch.arange(4), guidance=1.0,
                       return_state=True, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 1, 8, 8) and nfe == 6
    plain = _tiny_net(3)
    assert plain.num_classes == 0
    with pytest.raises(ValueError, match="unconditional"):
        plain(h, t, torch.zeros(3, dtype=torch.int64))


# ---------------------------------------------------------------------- a diffusers model folder as a denoiser
_FOLDER_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    norm_num_groups=4, attention_head_dim=None)


def _save_folder(path, prediction_type="epsilon", **unet_kw):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**{**_FOLDER_UNET, **unet_kw})
    unet.save_pretrained(path)
    DDPMScheduler(prediction_type=prediction_type).save_pretrained(path)
    return unet


def test_load_diffusers_folder_ddim_is_the_first_order_exponential_integrator(tmp_path):
    """A random UNet2DModel and its DDPM scheduler saved with save_pretrained and loaded back: under VP,
    kinetic's first-order deterministic exponential integrator (ei: order 1, no corrector, data_std 0,
    the k-block plan) on the model's own noise levels equals diffusers' DDIMScheduler (eta = 0) on the
    same model and timesteps (DDIM is DPM-Solver++ order 1), to float32 tolerance."""
    from diffusers import DDIMScheduler

    from kinetic.solvers.ei import ExponentialIntegrator

    unet = _save_folder(tmp_path)
    den = kn.load_diffusers(tmp_path)
    assert den.num_classes == 0 and den.prediction_type == "epsilon" and den.sigmas.shape == (1000,)
    sch = DDIMScheduler.from_pretrained(tmp_path, set_alpha_to_one=False, clip_sample=False)
    sch.set_timesteps(10)
    steps = sch.timesteps.tolist()  # 900, 800, ..., 0; DDIM's last step (0 -> abar_0) is the identity
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = x.clone()
    with torch.no_grad():
        for i in sch.timesteps:
            ref = sch.step(unet(ref, i).sample, i, ref, eta=0.0).prev_sample
    sde = kn.vp()
    ts = den.times(sde, steps)
    torch.testing.assert_close(sde.coefficients(ts).sigma_tilde, den.sigmas[steps], rtol=1e-12, atol=0)
    torch.testing.assert_close(den.timestep(den.sigmas[steps]), torch.tensor(steps, dtype=torch.float64),
                               rtol=0, atol=1e-9)
    solver = ExponentialIntegrator(multistep=1, corrector=False, data_std=0.0, gls_steps=0)
    out, nfe = solver.run(sde, kn.as_score_fn(den, sde), x.unsqueeze(1), ts)
    assert nfe == len(steps) - 1
    scale = float(ref.abs().max())
    torch.testing.assert_close(out[:, 0], ref, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_loaded_denoiser_matches_the_schedulers_data_prediction(tmp_path, prediction_type):
    """x0_hat at a level sigma_i is DDIM's pred_original_sample for every prediction type; between two
    levels the timestep is interpolated in log sigma."""
    from diffusers import DDIMScheduler

    unet = _save_folder(tmp_path, prediction_type)
    den = kn.load_diffusers(tmp_path)
    sch = DDIMScheduler.from_pretrained(tmp_path, clip_sample=False)
    sch.set_timesteps(10)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    i = 600
    abar = float(sch.alphas_cumprod[i])
    with torch.no_grad():
        want = sch.step(unet(x, i).sample, i, x, eta=0.0).pred_original_sample
        sigma = den.sigmas[[i]].expand(3)
        got = den(x / math.sqrt(abar), sigma)  # y = x_i / sqrt(abar_i)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))
    s = den.sigmas
    mid = torch.exp(0.25 * s[10].log() + 0.75 * s[11].log()).reshape(1)
    torch.testing.assert_close(den.timestep(mid), torch.tensor([10.75], dtype=torch.float64), rtol=0, atol=1e-9)
    assert float(den.timestep(s[:1] / 10)) == 0.0 and float(den.timestep(s[-1:] * 10)) == 999.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_above_the_models_top_level_the_estimate_stays_the_posterior_mean(tmp_path, prediction_type):
    """Gaussian data N(m, s^2) with m = -0.6 and a U-Net replaced by the exact predictor of its level
    (it reads the level from the timestep and its input as y c_in): up to the model's top level sigma_n the
    estimate is E[x0 | y]; at 40 sigma_n (HOLD's sigma(T) over DDPM's) it stays within 0.02 of it (the
    data mean), where x0 = y - sigma eps_hat would put it near 40 m."""
    from types import SimpleNamespace

    _save_folder(tmp_path, prediction_type)
    den = kn.load_diffusers(tmp_path)
    m, s2 = -0.6, 0.25
    ls = den.sigmas.log()

    def exact(sample, timestep, **_):
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)
        lo = t.floor().long().clamp(0, ls.numel() - 2)
        sig = torch.exp(ls[lo] + (t - lo) * (ls[lo + 1] - ls[lo])).reshape(-1, 1, 1, 1)
        c_in = (sig**2 + 1).rsqrt()
        y = sample.to(torch.float64) / c_in
        x0 = m + s2 / (s2 + sig**2) * (y - m)
        eps = (y - x0) / sig
        out = {"epsilon": eps, "sample": x0, "v_prediction": c_in * (eps - sig * x0)}[prediction_type]
        return SimpleNamespace(sample=out.to(sample.dtype))

    den.unet.forward = exact
    y0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    top = den.sigmas[-1]
    for sigma in (den.sigmas[500], top):
        y = m + (s2 + sigma**2).sqrt() * y0
        want = m + s2 / (s2 + sigma**2) * (y - m)
        torch.testing.assert_close(den(y.float(), sigma.reshape(1)).double(), want, rtol=0, atol=1e-4 * float(y.abs().max()))
    sigma = 40 * top
    y = m + (s2 + sigma**2).sqrt() * y0
    got = den(y, sigma.reshape(1))
    assert float((got - m).abs().max()) < 0.02
    seen = y * (sigma**2 + 1).rsqrt() * (top**2 + 1).sqrt()  # what the model reads as its top level's y
    eps_top = (seen - (m + s2 / (s2 + top**2) * (seen - m))) / top
    assert float((y - sigma * eps_top - m).abs().min()) > 10  # the rule x0 = y - sigma eps_hat: far off


@pytest.mark.parametrize("preset", ["cld", "hold", "psld"])
def test_loaded_denoiser_samples_under_every_fixed_grid_solver(tmp_path, preset):
    from kinetic.solvers import SOLVERS, FixedGridSolver

    _save_folder(tmp_path)
    den = kn.load_diffusers(tmp_path)
    sde = kn.preset(preset)
    fn = kn.as_score_fn(den, sde)
    ran = []
    for name, cls in sorted(SOLVERS.items()):
        if not issubclass(cls, FixedGridSolver):
            continue
        try:  # a solver made for some SDEs only (sscs: CLD-like, pc: noise on every block) refuses the others
            cls().check(sde, torch.linspace(sde.T, 1e-3, 4, dtype=torch.float64))
        except ValueError:
            continue
        x = kn.sample(sde, fn, (2, 1, 8, 8), solver=name, steps=3, generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), name
        ran.append(name)
    assert {"em", "ei", "gls", "lie_trotter"} <= set(ran), ran


def test_load_diffusers_refuses_bad_folders_and_takes_labels(tmp_path):
    with pytest.raises(ValueError, match="no config.json") as e:
        kn.load_diffusers(tmp_path)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ValueError, match="not a folder"):
        kn.load_diffusers(tmp_path / "missing")
    from diffusers import UNet2DModel

    UNet2DModel(**_FOLDER_UNET).save_pretrained(tmp_path / "nosched")
    with pytest.raises(ValueError, match="scheduler_config.json"):
        kn.load_diffusers(tmp_path / "nosched")
    _save_folder(tmp_path / "cond", num_class_embeds=4)
    den = kn.load_diffusers(tmp_path / "cond")
    assert den.num_classes == 4
    sde = kn.hold()
    fn = kn.as_score_fn(den, sde)
    z = sde.prior_sample((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.5, dtype=torch.float64)
    a, b = fn(z, t, torch.tensor([0, 1])), fn(z, t, torch.tensor([2, 3]))
    assert a.shape == (2, 1, 8, 8) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        fn(z, t)
    x = kn.sample(sde, fn, (2, 1, 8, 8), steps=3, labels=torch.tensor([0, 3]), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8)
