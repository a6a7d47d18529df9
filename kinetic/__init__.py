"""kinetic: diffusion generative modelling with Langevin dynamics of any order.

    import kinetic as kn
    sde = kn.hold()                                   # third-order Langevin dynamics, exact transitions
    z, eps = sde.perturb(x0, t)                       # (B, 3, *D)
    x = kn.sample(sde, score_fn, (64, 2), solver="ei", steps=20)
    den = kn.load_diffusers("folder")                 # a diffusers UNet2DModel on disk, as a denoiser
    x = kn.sample(sde, kn.as_score_fn(den, sde), (16, 3, 32, 32))   # sampled under any SDE
    logp = kn.log_likelihood(sde, score_fn, x)
"""

from ._version import __version__

from . import analytic, schedules, solvers
from .checkpoint import CheckpointError, load_checkpoint, load_model
from .config import TrainConfig
from .losses import DSMLoss
from .denoiser import Denoiser, EDMDenoiser
from .pretrained import load_diffusers
from .score import ScoreModel, as_score_fn
from .training import TrainingError, train
from .likelihood import bits_per_dim, log_likelihood
from .presets import cld, hold, langevin, preset, psld, ve, vp
from .sampling import sample, sample_batches, time_grid
from .sde import MAX_ORDER, LinearSDE

__all__ = [
    "LinearSDE", "MAX_ORDER", "vp", "ve", "cld", "psld", "hold", "langevin", "preset",
    "sample", "sample_batches", "time_grid", "log_likelihood", "bits_per_dim",
    "ScoreModel", "as_score_fn", "Denoiser", "EDMDenoiser", "load_diffusers", "DSMLoss", "TrainConfig", "train", "TrainingError",
    "load_model", "load_checkpoint", "CheckpointError",
    "analytic", "schedules", "solvers", "__version__",
]
