"""kinetic: diffusion generative modelling with Langevin dynamics of any order.

    import kinetic as kn
    sde = kn.hold()                      # third-order Langevin dynamics, exact transitions
    z, eps = sde.perturb(x0, t)          # (B, 3, *D)
"""

__version__ = "0.1.0"

from .sde import LinearSDE
from .presets import cld, hold, langevin, preset, ve, vp
from . import schedules

__all__ = ["LinearSDE", "vp", "ve", "cld", "hold", "langevin", "preset", "schedules", "__version__"]
