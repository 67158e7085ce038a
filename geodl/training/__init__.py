"""Training: Lightning task adapters, the trainer factory, resumable fit, checkpoints."""

from geodl.training.adversarial import (
    AdversarialSection,
    AdversarialTaskModule,
    generator_module,
    r1_penalty,
)
from geodl.training.checkpoints import (
    CheckpointMismatch,
    average_state_dicts,
    load_checkpoint,
    load_model_weights,
)
from geodl.training.module import LossFn, TaskModule, TrainingDiverged
from geodl.training.spec import PhaseSection, TrainSection
from geodl.training.trainer import FitResult, build_trainer, fit, fit_phases, torch_threads

__all__ = [
    "AdversarialSection",
    "AdversarialTaskModule",
    "CheckpointMismatch",
    "FitResult",
    "LossFn",
    "PhaseSection",
    "TaskModule",
    "TrainSection",
    "TrainingDiverged",
    "average_state_dicts",
    "build_trainer",
    "fit",
    "fit_phases",
    "generator_module",
    "torch_threads",
    "load_checkpoint",
    "load_model_weights",
    "r1_penalty",
]
