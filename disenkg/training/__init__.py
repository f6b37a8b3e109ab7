"""Training loops."""

from disenkg.training.link import LinkTrainer, TrainConfig

__all__ = ["LinkTrainer", "TrainConfig"]
