"""`sample_batches` is the one sampling engine: `sample(batch_size=)` and `kinetic.evaluation.draw` run it."""

import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData
from kinetic.evaluation import draw
from kinetic.sampling import SEED_STRIDE, sample_batches


def _model():
    sde = kn.cld()
    return sde, GaussianData(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]])).score_fn(sde)


def test_draw_chunks_are_seeded_batches_of_the_engine():
    sde, sf = _model()
    x, nfe = draw(sde, sf, (10, 2), solver="em", steps=5, seed=7, batch_size=4, device="cpu")
    assert x.shape == (10, 2) and x.dtype == torch.float32 and nfe == 5
    # chunk i is an independent run from the generator seeded seed + i * SEED_STRIDE, as before
    for i, (a, b) in enumerate([(0, 4), (4, 8), (8, 10)]):
        one = kn.sample(sde, sf, (b - a, 2), solver="em", steps=5, generator=torch.Generator().manual_seed(7 + i * SEED_STRIDE))
        assert torch.equal(x[a:b], one.float()), i
    # n <= batch_size: the same samples as one unbatched call with the seed
    y, _ = draw(sde, sf, (4, 2), solver="em", steps=5, seed=7, batch_size=8, device="cpu")
    assert torch.equal(y, x[:4])
    parts = list(sample_batches(sde, sf, (10, 2), solver="em", steps=5, seed=7, batch_size=4))
    assert torch.equal(torch.cat(parts).float(), x)


def test_seed_and_generator_exclude_each_other():
    sde, sf = _model()
    with pytest.raises(ValueError, match="seed must be an integer >= 0, and not given with generator"):
        next(sample_batches(sde, sf, (4, 2), seed=1, generator=torch.Generator()))
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        next(sample_batches(sde, sf, (4, 2), seed=-1))
