"""Tests for the score networks in kinetic.models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetic.models import (
    MLP,
    PRESETS,
    FourierEmbedding,
    SinusoidalEmbedding,
    UNet,
    build_model,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core box two
    OpenMP threads make these tests ~10x slower. Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta_count(factory) -> int:
    """Parameter count without allocating/initialising weights or running forward."""
    with torch.device("meta"):
        return n_params(factory())


# ----------------------------------------------------------------- embeddings


@pytest.mark.parametrize("cls", [SinusoidalEmbedding, FourierEmbedding])
@pytest.mark.parametrize("dim", [16, 17])
def test_embedding_shapes(cls, dim):
    emb = cls(dim)
    out = emb(torch.rand(5))
    assert out.shape == (5, dim)
    assert torch.isfinite(out).all()
    assert emb(0.5).shape == (1, dim)


def test_fourier_embedding_seeded_and_in_state_dict():
    torch.manual_seed(0)
    a = FourierEmbedding(32)
    torch.manual_seed(0)
    b = FourierEmbedding(32)
    assert torch.equal(a.W, b.W)
    assert "W" in a.state_dict()
    assert not any(p.requires_grad for p in a.parameters())


def test_sinusoidal_distinguishes_times():
    emb = SinusoidalEmbedding(64)
    e = emb(torch.tensor([0.0, 0.001, 0.5, 1.0]))
    assert torch.cdist(e, e).fill_diagonal_(1.0).min() > 0.1


# ----------------------------------------------------------------- shapes


def test_mlp_shapes_and_scalar_time():
    torch.manual_seed(0)
    m = MLP.from_preset("tiny", in_dim=6, out_dim=2)
    x = torch.randn(7, 6)
    assert m(x, torch.rand(7)).shape == (7, 2)
    assert m(x, 0.3).shape == (7, 2)
    assert m(x, torch.tensor(0.3)).shape == (7, 2)
    with pytest.raises(ValueError):
        m(torch.randn(7, 5), torch.rand(7))
    with pytest.raises(ValueError):
        m(x, torch.rand(3))


@pytest.mark.parametrize("res,c_in,c_out", [(8, 2, 1), (32, 6, 3)])
def test_unet_shapes(res, c_in, c_out):
    torch.manual_seed(0)
    m = UNet.from_preset("tiny", c_in, c_out, resolution=res)
    x = torch.randn(2, c_in, res, res)
    assert m(x, torch.rand(2)).shape == (2, c_out, res, res)
    assert m(x, 0.5).shape == (2, c_out, res, res)


def test_unet_digits_does_not_go_below_2x2():
    for size in ("tiny", "small", "cifar"):
        with torch.device("meta"):
            m = UNet.from_preset(size, 1, 1, resolution=8)
        assert 8 // 2 ** (len(m.channel_mult) - 1) >= 2
    with torch.device("meta"):
        m = UNet.from_preset("cifar", 3, 3, resolution=32)
    assert m.channel_mult == (1, 2, 2, 2)
    assert m.attn_resolutions == (16,)


def test_unet_custom_config_and_groups_clamp():
    torch.manual_seed(0)
    m = UNet(3, 3, channels=12, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
             embedding="sinusoidal", resolution=8, groups=32)
    assert m(torch.randn(2, 3, 8, 8), torch.rand(2)).shape == (2, 3, 8, 8)


def test_build_model():
    m = build_model("mlp", "tiny", (2,), order=3)
    assert isinstance(m, MLP) and m.in_dim == 6 and m.out_dim == 2
    u = build_model("unet", "tiny", (1, 8, 8), order=2)
    assert isinstance(u, UNet) and u.in_channels == 2 and u.out_channels == 1
    state = torch.randn(4, 2, 1, 8, 8)  # (B, order, C, H, W)
    assert u(state.reshape(4, 2, 8, 8), torch.rand(4)).shape == (4, 1, 8, 8)
    assert isinstance(build_model("auto", "tiny", (3, 32, 32), order=1), UNet)
    assert isinstance(build_model("auto", "tiny", (2,), order=1), MLP)
    f = build_model("mlp", "tiny", (1, 8, 8), order=3)  # images through a flattening MLP
    assert f.mlp.in_dim == 3 * 64 and f.mlp.out_dim == 64
    assert f(torch.randn(4, 3, 8, 8), torch.rand(4)).shape == (4, 1, 8, 8)
    for args, word in [
        (("cnn", "tiny", (2,), 1), "kind"),
        (("mlp", "huge", (2,), 1), "size"),
        (("unet", "huge", (1, 8, 8), 1), "size"),
        (("mlp", "tiny", (8, 8), 1), "data_shape"),
        (("unet", "tiny", (2,), 1), "data_shape"),
        (("unet", "tiny", (3, 8, 16), 1), "data_shape"),
        (("mlp", "tiny", (2,), 0), "order"),
    ]:
        with pytest.raises(ValueError, match=word):
            build_model(*args)


# ----------------------------------------------------------------- init / training


def _step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = ((model(x, torch.rand(x.shape[0])) - target) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _models():
    torch.manual_seed(0)
    return [
        (MLP.from_preset("tiny", 4, 2), torch.randn(8, 4), torch.randn(8, 2)),
        (UNet.from_preset("tiny", 2, 1, resolution=8), torch.randn(2, 2, 8, 8), torch.randn(2, 1, 8, 8)),
    ]


def test_zero_output_at_init_then_nonzero_after_step():
    for model, x, target in _models():
        t = torch.rand(x.shape[0])
        assert torch.count_nonzero(model(x, t)) == 0
        _step(model, x, target)
        assert model(x, t).abs().max() > 0


def test_gradients_reach_all_parameters():
    for model, x, target in _models():
        _step(model, x, target)  # moves the zero-initialised output layer off zero
        model.zero_grad()
        loss = ((model(x, torch.rand(x.shape[0])) - target) ** 2).mean()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_determinism_under_manual_seed():
    def make_and_run():
        torch.manual_seed(123)
        u = UNet.from_preset("tiny", 2, 1, resolution=8)
        nn.init.normal_(u.conv_out.weight, std=0.1)  # non-trivial output
        x = torch.randn(2, 2, 8, 8)
        return u.state_dict(), u(x, torch.rand(2))

    sd1, y1 = make_and_run()
    sd2, y2 = make_and_run()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert torch.equal(y1, y2)


def test_time_conditioning_matters():
    torch.manual_seed(0)
    m = MLP.from_preset("tiny", 2, 2)
    nn.init.normal_(m.out.weight, std=0.1)
    x = torch.randn(4, 2)
    assert not torch.allclose(m(x, 0.1), m(x, 0.9))


# ----------------------------------------------------------------- presets / errors


def test_preset_parameter_counts():
    tiny = n_params(UNet.from_preset("tiny", 6, 3, resolution=32))
    assert tiny < 1_000_000
    assert n_params(UNet.from_preset("tiny", 2, 1, resolution=8)) < 1_000_000
    small = meta_count(lambda: UNet.from_preset("small", 2, 1, resolution=8))
    assert 2_000_000 <= small <= 6_000_000
    cifar = meta_count(lambda: UNet.from_preset("cifar", 6, 3, resolution=32))
    assert 35_000_000 <= cifar <= 60_000_000
    assert n_params(MLP.from_preset("tiny", 4, 2)) < 100_000
    assert n_params(MLP.from_preset("small", 4, 2)) < 2_000_000
    assert set(PRESETS) == {"mlp", "unet"}
    assert set(PRESETS["unet"]) == set(PRESETS["mlp"]) == {"tiny", "small", "cifar"}


def test_bad_preset_names():
    with pytest.raises(ValueError, match="name.*tiny, small, cifar"):
        UNet.from_preset("huge", 3, 3, resolution=32)
    with pytest.raises(ValueError, match="name.*tiny, small, cifar"):
        MLP.from_preset("huge", 2, 2)


def test_bad_resolution():
    with pytest.raises(ValueError, match="resolution.*channel_mult"):
        UNet(3, 3, channels=16, channel_mult=(1, 2, 2), resolution=10, groups=8)
    m = UNet(3, 3, channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, resolution=8, groups=8)
    with pytest.raises(ValueError, match="channel_mult"):
        m(torch.randn(1, 3, 6, 6), torch.rand(1))
    with pytest.raises(ValueError, match="embedding"):
        UNet(3, 3, embedding="learned")


# ----------------------------------------------------------------- class labels
@pytest.mark.parametrize("kind,shape", [("mlp", (2,)), ("mlp", (1, 8, 8)), ("unet", (1, 8, 8))])
def test_unconditional_networks_unchanged_by_labels(kind, shape):
    """An unconditional network has no label parameters: the same state_dict keys and initial
    weights as a conditional one minus its label table (created last), and it refuses labels."""
    torch.manual_seed(0)
    plain = build_model(kind, "tiny", shape, 3)
    torch.manual_seed(0)
    cond = build_model(kind, "tiny", shape, 3, num_classes=10)
    sp, sc = plain.state_dict(), cond.state_dict()
    assert set(sc) - set(sp) == {k for k in sc if k.endswith("label_embed.table.weight")} and len(sc) == len(sp) + 1
    assert all(torch.equal(sp[k], sc[k]) for k in sp)
    assert not any("label" in k for k in sp) and getattr(plain, "num_classes", 0) == 0
    x = torch.randn(4, 3 * shape[0], *shape[1:])
    t = torch.rand(4)
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, torch.zeros(4, dtype=torch.int64))


@pytest.mark.parametrize("kind,shape", [("mlp", (2,)), ("unet", (1, 8, 8))])
def test_label_embedding_conditions_the_output(kind, shape):
    torch.manual_seed(0)
    net = build_model(kind, "tiny", shape, 2, num_classes=3)
    for p in net.parameters():  # a non-zero output layer (it is zero-initialised)
        nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 2 * shape[0], *shape[1:]).expand(4, *([-1] * len(shape)))
    t = torch.full((4,), 0.3)
    out = net(x, t, torch.tensor([0, 1, 2, 3]))  # 3 is the null class
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(out[i], out[j])
    assert torch.equal(net(x, t), net(x, t, torch.full((4,), 3)))  # None is the null class
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        net(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="int64"):
        net(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        net(x, t, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_classes"):
        build_model(kind, "tiny", shape, 2, num_classes=-1)
