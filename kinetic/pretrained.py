"""Pretrained diffusers models from disk as kinetic denoisers, sampled under any linear SDE.

    import kinetic as kn
    den = kn.load_diffusers("path/to/folder")              # never downloads: a folder on disk only
    x = kn.sample(kn.hold(), kn.as_score_fn(den, kn.hold()), (16, 3, 32, 32), steps=20)

The folder is what ``UNet2DModel.save_pretrained`` and a DDPM/DDIM scheduler's ``save_pretrained`` write
(``config.json`` with the weights and ``scheduler_config.json`` side by side, or a pipeline's ``unet/`` and
``scheduler/`` subfolders). Needs the optional extra ``pip install 'kinetic[diffusers]'``.

The model is a discrete-time DDPM: x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps at timesteps i = 0..n-1.
In VE terms y = x_i / sqrt(abar_i) = x0 + sigma_i eps with sigma_i = sqrt((1 - abar_i) / abar_i), so it is a
denoiser D(y, sigma) (`kinetic.denoiser`) at its own noise levels, wrapped as k-diffusion's
``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser`` do (Karras et al. 2022, Table 1, VP column): the
network sees y / sqrt(sigma^2 + 1) (= x_i) and the timestep of sigma, and

* ``"epsilon"``:    x0_hat = y - sigma eps_hat;
* ``"v_prediction"``: x0_hat = y / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v_hat;
* ``"sample"``:     x0_hat is the output.

Noise levels between the model's timesteps: the timestep is interpolated linearly in log sigma between
the two neighbouring levels (k-diffusion's ``sigma_to_t``) and passed to the U-Net as a float; at a
level sigma_i it is exactly i. Outside [sigma_0, sigma_{n-1}] it is clamped to 0 or n - 1 (the scalings
above still use the true sigma). A sampler that evaluates the model only at its own levels (e.g. the
grid of `DiffusersDenoiser.times`) sees exactly the network the model was trained as.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .denoiser import Denoiser

__all__ = ["DiffusersDenoiser", "load_diffusers", "PREDICTION_TYPES"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_INSTALL_HINT = "loading a diffusers model needs the optional dependency diffusers: pip install 'kinetic[diffusers]'"


def _diffusers():
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"{_INSTALL_HINT} ({err})") from None
    return diffusers


class DiffusersDenoiser(Denoiser):
    """A diffusers ``UNet2DModel`` trained on discrete DDPM noise levels, as a `Denoiser` (module docstring).

    Args:
        unet: the ``UNet2DModel``.
        alphas_cumprod: (n,) the scheduler's abar_i (decreasing).
        prediction_type: "epsilon", "v_prediction" or "sample" (the scheduler's ``prediction_type``).

    ``sigmas`` (n,) float64: the model's noise levels sigma_i. ``num_classes``: the ``num_class_embeds``
    of a class-conditional U-Net (labels (B,) int64 in [0, num_classes); it has no null class, so labels
    are required), 0 otherwise.
    """

    def __init__(self, unet, alphas_cumprod, prediction_type: str = "epsilon"):
        super().__init__()
        cls = _diffusers().UNet2DModel
        if not isinstance(unet, cls):
            raise TypeError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")
        acp = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().reshape(-1)
        if acp.numel() < 2 or not bool(((acp > 0) & (acp < 1)).all()) or not bool((acp[1:] < acp[:-1]).all()):
            raise ValueError("alphas_cumprod must hold at least 2 decreasing values in (0, 1)")
        self.unet = unet
        self.prediction_type = prediction_type
        self.sigmas = ((1.0 - acp) / acp).sqrt()  # float64 CPU, whatever dtype the module is moved to
        self.sigma_top = float(self.sigmas[-1])
        cfg = unet.config
        embeds = cfg.get("num_class_embeds") or 0
        if embeds and cfg.get("class_embed_type") is not None:
            raise ValueError(
                f"class_embed_type {cfg.get('class_embed_type')!r} is not supported (only a label table: class_embed_type None)"
            )
        self.num_classes = int(embeds)
        self.channels = int(cfg.in_channels)
        out = int(cfg.out_channels)
        if out not in (self.channels, 2 * self.channels):
            raise ValueError(f"the U-Net has {self.channels} input and {out} output channels; expected equal (or twice, learned variance)")

    def timestep(self, sigma: Tensor) -> Tensor:
        """The model's (fractional) timestep of noise levels sigma (B,): linear in log sigma between
        neighbouring levels, clamped to [0, n - 1]; float64."""
        ls = self.sigmas.to(sigma.device).log()
        x = torch.as_tensor(sigma, dtype=torch.float64).log().clamp(float(ls[0]), float(ls[-1]))
        hi = torch.searchsorted(ls, x).clamp(1, ls.numel() - 1)
        lo = hi - 1
        frac = (x - ls[lo]) / (ls[hi] - ls[lo])
        return lo.to(torch.float64) + frac

    def times(self, sde, timesteps) -> Tensor:
        """Times t of ``sde`` (float64, in the order given) at which its GLS noise level
        `kinetic.coefficients.Coefficients.sigma_tilde` equals the model's sigma_i at ``timesteps``
        (integers in [0, n)): a grid on which a sampler evaluates the model only at its own levels.
        Found by bisection on sigma_tilde(t) (increasing in t); ValueError when a level is beyond sigma_tilde(T)."""
        idx = torch.as_tensor(timesteps, dtype=torch.int64).reshape(-1)
        target = self.sigmas[idx].to(torch.float64)
        top = float(sde.coefficients(torch.tensor([sde.T], dtype=torch.float64)).sigma_tilde[0])
        if bool((target > top).any()):
            raise ValueError(f"timesteps: the level sigma = {float(target.max()):.4g} lies beyond the SDE's sigma(T) = {top:.4g}")
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, sde.T)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = sde.coefficients(mid).sigma_tilde < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def residual(self, y: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        """x0_hat - y for y (B, C, H, W) at noise levels sigma (B,).

        Above the model's top level sigma_n (HOLD's sigma_tilde(T) is about 40 times DDPM's), the
        estimate is the model's own at sigma_n, of the input rescaled to that level's variance,
        y sqrt((sigma_n^2 + 1) / (sigma^2 + 1)): bounded, and within O(data variance / sigma_n^2) of
        E[x0 | y], which is the data mean there. (Taking x0 = y - sigma eps_hat instead multiplies the
        error of eps_hat by sigma: about 40 times the data mean at HOLD's sigma(T).)"""
        if y.dim() != 4 or y.shape[1] != self.channels:
            raise ValueError(f"the diffusers model takes images (B, {self.channels}, H, W), got {tuple(y.shape)}")
        B = y.shape[0]
        sig = torch.as_tensor(sigma, dtype=torch.float64, device=y.device).reshape(-1).expand(B)
        shape = (B, 1, 1, 1)
        eff = sig.clamp(max=self.sigma_top)
        y_eff = y.to(torch.float64) * ((eff.square() + 1.0) / (sig.square() + 1.0)).sqrt().reshape(shape)
        res = self._residual(y_eff, eff, labels, shape)
        return (y_eff + res - y.to(torch.float64)).to(y.dtype)

    def _residual(self, y: Tensor, sig: Tensor, labels: Tensor | None, shape: tuple) -> Tensor:
        """x0_hat - y in float64 for y (B, C, H, W) float64 at levels sig (B,) within the model's range."""
        B = y.shape[0]
        dtype = next((p.dtype for p in self.unet.parameters() if p.is_floating_point()), y.dtype)
        c_in = (sig.square() + 1.0).rsqrt()
        inp = (y.to(torch.float64) * c_in.reshape(shape)).to(dtype)
        ts = self.timestep(sig).to(dtype)
        if self.num_classes:
            if labels is None:
                raise ValueError(f"this diffusers model is class-conditional ({self.num_classes} classes): give labels")
            labels = torch.as_tensor(labels, device=y.device)
            if labels.shape != (B,) or labels.dtype != torch.int64 or bool(((labels < 0) | (labels >= self.num_classes)).any()):
                raise ValueError(f"labels must be int64 of shape ({B},) in [0, {self.num_classes}) for this diffusers model")
            out = self.unet(inp, ts, class_labels=labels).sample
        else:
            if labels is not None:
                raise ValueError("labels were given to an unconditional diffusers model (no num_class_embeds)")
            out = self.unet(inp, ts).sample
        out = out[:, : self.channels].to(torch.float64)  # learned-variance models: the mean channels
        s = sig.reshape(shape)
        if self.prediction_type == "epsilon":
            res = -s * out
        elif self.prediction_type == "v_prediction":
            c = c_in.reshape(shape)
            res = -(s * c).square() * y.to(torch.float64) - s * c * out
        else:
            res = out - y.to(torch.float64)
        return res

    def extra_repr(self) -> str:
        return f"prediction_type={self.prediction_type!r}, levels={self.sigmas.numel()}" + (
            f", num_classes={self.num_classes}" if self.num_classes else ""
        )


def _find(folder: Path, name: str, sub: str) -> Path | None:
    for p in (folder / name, folder / sub / name):
        if p.is_file():
            return p
    return None


def load_diffusers(path, *, device=None, dtype: torch.dtype | None = None) -> DiffusersDenoiser:
    """A `DiffusersDenoiser` from a folder on disk (never downloads): the U-Net from ``config.json``
    (or ``unet/config.json``) and its weights, abar_i from ``scheduler_config.json`` (or
    ``scheduler/scheduler_config.json``: any diffusers scheduler with ``alphas_cumprod``, e.g. DDPM or
    DDIM, with its betas schedule) and its ``prediction_type``. In eval mode, on ``device``, in ``dtype``."""
    diffusers = _diffusers()
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"path: {str(path)!r} is not a folder (a diffusers model saved with save_pretrained)")
    unet_cfg = _find(folder, "config.json", "unet")
    if unet_cfg is None:
        raise ValueError(f"path: {folder} holds no config.json (nor unet/config.json): not a saved diffusers UNet2DModel")
    sched_cfg = _find(folder, "scheduler_config.json", "scheduler")
    if sched_cfg is None:
        raise ValueError(
            f"path: {folder} holds no scheduler_config.json (nor scheduler/scheduler_config.json): save the "
            "model's scheduler there with its save_pretrained"
        )
    try:
        ucfg = json.loads(unet_cfg.read_text())
        scfg = json.loads(sched_cfg.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"path: cannot read the diffusers configs in {folder}: {err}") from None
    if ucfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"path: {unet_cfg} describes a {ucfg.get('_class_name')}; kinetic loads UNet2DModel")
    sched_cls = getattr(diffusers, str(scfg.get("_class_name", "DDPMScheduler")), None)
    if sched_cls is None or not hasattr(sched_cls, "from_config"):
        raise ValueError(f"path: {sched_cfg} names an unknown scheduler {scfg.get('_class_name')!r}")
    sched = sched_cls.from_config(scfg)
    acp = getattr(sched, "alphas_cumprod", None)
    if acp is None:
        raise ValueError(f"path: the scheduler {scfg.get('_class_name')!r} has no discrete alphas_cumprod (a DDPM-type model is needed)")
    try:
        unet = diffusers.UNet2DModel.from_pretrained(str(unet_cfg.parent), local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, EnvironmentError) as err:
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ValueError(f"path: cannot load the UNet2DModel in {unet_cfg.parent}: {msg}") from None
    den = DiffusersDenoiser(unet, acp, scfg.get("prediction_type", "epsilon"))
    den.eval()
    if device is not None or dtype is not None:
        den.to(device=device, dtype=dtype)
    return den
