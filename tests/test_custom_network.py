"""A user's own network through ``kn.train``: trained, resumed bit-for-bit, loaded back and sampled."""

import pytest
import torch
from torch import nn

import kinetic as kn
from kinetic.checkpoint import CheckpointError, load_checkpoint


class TinyNet(nn.Module):
    """A user's score network: net(h, t) with h the state (B, k*D) of 2-D data, output (B, D)."""

    def __init__(self, order: int = 3, dim: int = 2, hidden: int = 32):
        super().__init__()
        self.inp = nn.Linear(order * dim + 1, hidden)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, dim)

    def forward(self, h, t):
        t = torch.as_tensor(t, dtype=h.dtype, device=h.device).reshape(-1, 1).expand(h.shape[0], 1)
        return self.out(self.body(self.inp(torch.cat([h, t.log()], dim=1))))


def config(tmp_path, **kw) -> kn.TrainConfig:
    base = dict(sde="hold", data="moons", data_n=256, steps=6, batch_size=32, warmup=2, ckpt_every=0,
                sample_every=0, n_samples=0, log_every=1, device="cpu", out=str(tmp_path / "run"))
    return kn.TrainConfig(**{**base, **kw})


def fresh_net() -> TinyNet:
    torch.manual_seed(11)
    return TinyNet()


def test_custom_network_trains_resumes_bit_for_bit_and_samples(tmp_path):
    whole = kn.train(config(tmp_path / "a", steps=6), network=fresh_net())
    first = kn.train(config(tmp_path / "b", steps=3), network=fresh_net())
    resumed = kn.train(config(tmp_path / "b", steps=6, resume=True), network=fresh_net())
    assert whole["step"] == resumed["step"] == 6 and first["step"] == 3 and resumed["start_step"] == 3
    ca, cb = load_checkpoint(tmp_path / "a" / "run"), load_checkpoint(tmp_path / "b" / "run")
    assert ca["model_config"]["kind"] == "custom" and ca["model_config"]["network"].endswith("TinyNet")
    assert ca["model"].keys() == fresh_net().state_dict().keys()
    for part in ("model", "ema"):
        for k, v in ca[part].items():
            assert torch.equal(v, cb[part][k]), (part, k)
    assert ca["history"]["loss"] == cb["history"]["loss"] and len(ca["history"]["loss"]) == 6
    # the weights moved: the run trained the module it was given
    assert any(not torch.equal(v, fresh_net().state_dict()[k]) for k, v in ca["model"].items())

    # loads back with the class, an instance or a constructor; never without it
    with pytest.raises(CheckpointError, match="TinyNet"):
        kn.load_model(tmp_path / "a" / "run")
    for given in (TinyNet, TinyNet(), lambda: TinyNet(order=3)):
        sm, _ = kn.load_model(tmp_path / "a" / "run", network=given)
        for k, v in sm.network.state_dict().items():
            assert torch.equal(v, ca["ema"][k]), k
    x = kn.sample(sm.sde, sm.score, (64, 2), solver="ei", steps=10, generator=torch.Generator().manual_seed(0))
    again = kn.sample(sm.sde, sm.score, (64, 2), solver="ei", steps=10, generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 2) and bool(torch.isfinite(x).all()) and torch.equal(x, again)


def test_custom_network_errors_are_one_line(tmp_path):
    with pytest.raises(TypeError, match="network must be a torch.nn.Module"):
        kn.train(config(tmp_path / "t"), network=lambda h, t: h)
    kn.train(config(tmp_path / "k", steps=2))  # kinetic's own network
    with pytest.raises(CheckpointError, match="different model configuration"):
        kn.train(config(tmp_path / "k", steps=4, resume=True), network=fresh_net())
    with pytest.raises(CheckpointError, match="leave network out"):
        kn.load_model(tmp_path / "k" / "run", network=TinyNet)
