"""Training: the run loop on one page and the small pieces beside it.

    from kinetic.config import TrainConfig
    from kinetic.training import train
    summary = train(TrainConfig(sde="hold", data="digits", steps=2000, out="runs/hold-digits"))

Modules: `loop` (`train`, what ``kinetic train`` runs), `parts` (a run's parts built from its config:
data, network and model spec, loss, optimiser; `build_trainer`), `trainer` (`Trainer`: state and one
optimisation step), `ema`, `distributed` (torchrun / DDP set-up), `rundir` (the run directory,
its artefacts and lock), `outputs` (loss curve, sample grids, metrics.jsonl, TensorBoard),
`monitor` (periodic fd-digits / SWD), `signals` (SIGINT / SIGTERM). The checkpoint file format is
`kinetic.checkpoint`, shared with sampling and evaluation.

Launched under ``torchrun`` (WORLD_SIZE > 1) `train` runs DDP: NCCL on CUDA, gloo on CPU; each
rank draws from its own shard with its own seed; rank 0 alone writes files.
"""

from ..checkpoint import CHECKPOINT_NAME
from .distributed import DistInfo
from .ema import EMA
from .loop import RunDirError, train
from .outputs import MetricsLog, TensorBoardLog, sample_to_file, save_loss_curve
from .rundir import RunDir
from .trainer import Trainer, TrainingError

__all__ = [
    "train", "Trainer", "TrainingError", "RunDirError", "EMA", "DistInfo", "RunDir", "MetricsLog",
    "TensorBoardLog", "save_loss_curve", "sample_to_file", "CHECKPOINT_NAME",
]
