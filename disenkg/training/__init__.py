"""Training loops and the training section of a configuration."""

from disenkg.training.config import TrainingConfig
from disenkg.training.link import LinkTrainer, TrainConfig

__all__ = ["LinkTrainer", "TrainConfig", "TrainingConfig"]
