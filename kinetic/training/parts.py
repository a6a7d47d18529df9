"""The parts of a run, built from a `TrainConfig`: its data, network (and the spec that rebuilds it),
score model, loss and optimiser; `build_trainer` puts them into a `Trainer`.

The model spec is the checkpoint's ``model_config`` (see `kinetic.checkpoint`): kind, size,
data_shape, order, parameterization, data_std, input_scaling, num_classes. `build_network` and
`score_model` are the one place a network and its `ScoreModel` are made from it (training,
resuming, `kinetic.load_model`). A network the user gives (``kn.train(config, network=module)``)
has kind ``"custom"`` and its class in ``"network"``; it is rebuilt from the module the user passes
again (`kinetic.load_model(run, network=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..checks import check_training_memory
from ..config import ConfigError, TrainConfig
from ..presets import preset
from .distributed import DistInfo, resolve_device

__all__ = [
    "RunData", "CUSTOM", "build_sde", "load_data", "model_spec", "build_network", "score_model", "train_model",
    "build_loss", "build_optimizer", "build_trainer",
]

#: The model kind of a network given by the user (not built from the registry in kinetic.models).
CUSTOM = "custom"
#: Training examples kept (on the host) for the scatter plots of the sample grids.
REFERENCE_N = 2000


@dataclass
class RunData:
    """A run's training data as this rank sees it.

    data (N_rank, *D) float32 on the run's device; labels (N_rank,) int64 or None; reference
    (<= 2000, *D) for scatter plots; num_classes 0 for an unconditional run; fingerprint of the whole
    data set (`kinetic.data.data_fingerprint`: a resumed run checks it trains on the same data)."""

    data: Tensor
    labels: Tensor | None
    reference: Tensor
    data_shape: tuple[int, ...]
    num_classes: int
    fingerprint: str


def build_sde(cfg: TrainConfig):
    """The `LinearSDE` of ``cfg``: ``kinetic.preset(sde, order=order, **sde_params)`` (the one route
    from a name and an order to an SDE; its arguments were checked when ``cfg`` was made)."""
    return preset(cfg.sde, order=cfg.order, **cfg.sde_params)


def _classes(cfg: TrainConfig, labels: Tensor | None, loaded: bool) -> int:
    from ..data import DataError, dataset_classes

    if not cfg.conditional:
        return 0
    if loaded:
        return dataset_classes(cfg.data, cfg.data_dir)
    if labels is None:
        raise ConfigError("a conditional run needs labels with its data (Trainer(data=..., labels=...))", "conditional")
    try:
        n = dataset_classes(cfg.data, cfg.data_dir)
    except DataError:
        n = 0
    return max(n, int(labels.max()) + 1 if labels.numel() else 0)


def _check_data(cfg: TrainConfig, data: Any, labels: Any, num_classes: int) -> Tensor | None:
    if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ConfigError("data must be a tensor of shape (N, *data_shape)", "data")
    if cfg.conditional:
        if (not isinstance(labels, Tensor) or labels.shape != (data.shape[0],) or labels.is_floating_point()
                or labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ConfigError(f"labels must be {data.shape[0]} integers in [0, {num_classes}), one per example",
                              "conditional")
        labels = labels.to(torch.int64)
    elif labels is not None:
        raise ConfigError("labels were given for an unconditional run (set conditional=True)", "conditional")
    if not bool(torch.isfinite(data).all()):
        bad = int((~torch.isfinite(data.reshape(data.shape[0], -1))).any(1).sum())
        raise ConfigError(f"data has non-finite values (NaN or inf) in {bad} of its {data.shape[0]} examples", "data")
    return labels


def load_data(cfg: TrainConfig, dist: DistInfo, device: torch.device, data: Tensor | None = None,
              labels: Tensor | None = None) -> RunData:
    """``data`` (and ``labels``), else ``cfg.data`` loaded; checked, and this rank's shard on ``device``."""
    from ..data import data_fingerprint, load_dataset

    loaded = data is None
    if loaded:
        got = load_dataset(cfg.data, data_dir=cfg.data_dir, n=cfg.data_n, seed=cfg.seed, resolution=cfg.resolution,
                           channels=cfg.channels, labels=cfg.conditional)
        data, labels = got if cfg.conditional else (got, None)
    num_classes = _classes(cfg, labels, loaded)
    labels = _check_data(cfg, data, labels, num_classes)
    shard = data[dist.rank :: dist.world_size] if dist.enabled else data
    if shard.shape[0] < 1:
        raise ConfigError(f"data has {data.shape[0]} examples, fewer than the {dist.world_size} ranks", "data")
    if labels is not None:
        labels = (labels[dist.rank :: dist.world_size] if dist.enabled else labels).to(device)
    return RunData(shard.to(device, torch.float32), labels, data[:REFERENCE_N], tuple(int(s) for s in data.shape[1:]),
                   num_classes, data_fingerprint(data))


def _class_name(net: nn.Module) -> str:
    return f"{type(net).__module__}.{type(net).__qualname__}"


def model_spec(cfg: TrainConfig, sde, data_shape: tuple[int, ...], num_classes: int,
               network: nn.Module | None = None) -> dict[str, Any]:
    """The model spec (a checkpoint's ``model_config``) of a run of ``cfg`` on data of ``data_shape``."""
    from ..models import auto_kind  # kinetic.models: the repository's models/ folder

    spec = {
        "kind": CUSTOM if network is not None else (cfg.model if cfg.model != "auto" else auto_kind(data_shape)),
        "size": None if network is not None else cfg.model_size,
        "data_shape": list(data_shape),
        "order": sde.order,
        "parameterization": cfg.parameterization,
        "data_std": cfg.data_std,
        "input_scaling": cfg.input_scaling,
        "num_classes": num_classes,
    }
    if network is not None:
        spec["network"] = _class_name(network)
    return spec


NetworkArg = nn.Module | Callable[[], nn.Module] | None


def build_network(spec: dict[str, Any], sde, network: NetworkArg = None) -> nn.Module:
    """The network of a model spec: built from the registry (`kinetic.models.build_model`), or, for a
    custom one, ``network`` itself (an ``nn.Module``) or what it returns (a class or constructor called
    with no arguments). ValueError (one line) when a custom spec comes without ``network``."""
    from ..models import build_model
    from ..score import input_blocks, output_blocks

    if spec["kind"] != CUSTOM:
        if network is not None:
            raise ValueError(f"network= was given, but this model is kinetic's own {spec['kind']!r} network; "
                             "leave network out")
        return build_model(spec["kind"], spec["size"], spec["data_shape"], input_blocks(sde, spec["parameterization"]),
                           output_blocks(sde, spec["parameterization"]), num_classes=int(spec.get("num_classes", 0)))
    name = spec.get("network", "a custom network")
    if network is None:
        raise ValueError(f"this model is a custom network ({name}): pass it, e.g. network={name.rsplit('.', 1)[-1]}(...)")
    net = network if isinstance(network, nn.Module) else network()
    if not isinstance(net, nn.Module):
        raise TypeError(f"network must be an nn.Module, its class or a constructor; got {type(net).__name__}")
    return net


def score_model(net: nn.Module, sde, spec: dict[str, Any]):
    """``net`` wrapped as the `ScoreModel` the spec says (parameterisation, data_std, input scaling)."""
    from ..score import ScoreModel

    return ScoreModel(net, sde, spec["parameterization"], data_std=spec.get("data_std", 1.0),
                      input_scaling=spec.get("input_scaling", True))


class _Autocast(nn.Module):
    """Runs the wrapped network under bf16 autocast (CUDA only); returns float32."""

    is_kinetic_wrapper = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.inner = net

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return (self.inner(x, t) if labels is None else self.inner(x, t, labels)).float()


def train_model(cfg: TrainConfig, net: nn.Module, sde, spec: dict[str, Any], dist: DistInfo, device: torch.device):
    """The `ScoreModel` a training step takes the loss of: ``net`` under DDP across ranks, torch.compile
    (``cfg.compile``) and bf16 autocast on CUDA (``cfg.amp``), wrapped as the spec says."""
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    if cfg.amp and device.type == "cuda":
        net = _Autocast(net)
    return score_model(net, sde, spec)


def build_loss(cfg: TrainConfig, sde):
    """The objective of ``cfg``: `kinetic.losses.DSMLoss` (denoising score matching)."""
    from ..losses import DSMLoss

    return DSMLoss(sde, cfg.parameterization, cfg.weighting, cfg.t_eps, cfg.time_sampling, data_std=cfg.data_std,
                   input_scaling=cfg.input_scaling, label_dropout=cfg.label_dropout if cfg.conditional else 0.0)


def build_optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    """AdamW at ``cfg.lr`` (the Trainer applies the warm-up each step)."""
    return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_network(net: nn.Module, run: RunData) -> None:
    if not isinstance(net, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module (net(h, t[, labels])); got {type(net).__name__}")
    have = int(getattr(net, "num_classes", 0) or 0)
    if run.num_classes and have < run.num_classes:
        raise ConfigError(f"this conditional run has {run.num_classes} classes: the network must take labels, "
                          f"net(h, t, labels), and have num_classes >= {run.num_classes} (it has {have})", "conditional")


def build_trainer(config: TrainConfig, *, network: nn.Module | None = None, data: Tensor | None = None,
                  labels: Tensor | None = None, dist_info: DistInfo | None = None,
                  device: torch.device | str | None = None):
    """A `Trainer` with the parts ``config`` names: its data (or ``data`` / ``labels``), its network
    (or ``network``, any ``nn.Module`` with ``net(h, t[, labels])``: h (B, k*D[0], *D[1:]), output
    data-shaped times `output_blocks`), the DSM loss and AdamW."""
    from ..score import input_blocks
    from .trainer import Trainer

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a kinetic.config.TrainConfig, got {type(config).__name__}")
    dist = dist_info or DistInfo()
    dev = torch.device(device) if device is not None else resolve_device(config.device, dist)
    sde = build_sde(config)
    run = load_data(config, dist, dev, data, labels)
    spec = model_spec(config, sde, run.data_shape, run.num_classes, network)
    if network is None:
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        try:
            network = build_network(spec, sde)
        except ValueError as err:
            raise ConfigError(str(err), "model") from None
    _check_network(network, run)
    check_training_memory(config.batch_size // dist.world_size, input_blocks(sde, config.parameterization), run.data_shape,
                          network, run.data, dev)
    network = network.to(dev)
    return Trainer(config, network=network, sde=sde, data=run, spec=spec, loss=build_loss(config, sde),
                   optimizer=build_optimizer(config, network), train_model=train_model(config, network, sde, spec, dist, dev),
                   dist_info=dist, device=dev)
