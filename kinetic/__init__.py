"""kinetic: diffusion generative modelling with Langevin dynamics of any order.

    import kinetic as kn
    sde = kn.hold()                                   # third-order Langevin dynamics, exact transitions
    z, eps = sde.perturb(x0, t)                       # (B, 3, *D)
    x = kn.sample(sde, score_fn, (64, 2), solver="ei", steps=20)
    logp = kn.log_likelihood(sde, score_fn, x)
"""

from ._version import __version__

from . import analytic, schedules, solvers
from .checkpoint import CheckpointError, load_checkpoint, load_model
from .config import TrainConfig
from .losses import DSMLoss
from .score import ScoreModel, as_score_fn
from .training import TrainingError, train
from .likelihood import bits_per_dim, log_likelihood
from .presets import cld, hold, langevin, preset, psld, ve, vp
from .sampling import sample, sample_batches, time_grid
from .sde import MAX_ORDER, LinearSDE

__all__ = [
    "LinearSDE", "MAX_ORDER", "vp", "ve", "cld", "psld", "hold", "langevin", "preset",
    "sample", "sample_batches", "time_grid", "log_likelihood", "bits_per_dim",
    "ScoreModel", "as_score_fn", "DSMLoss", "TrainConfig", "train", "TrainingError",
    "load_model", "load_checkpoint", "CheckpointError",
    "analytic", "schedules", "solvers", "__version__",
]
