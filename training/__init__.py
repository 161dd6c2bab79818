"""Data-parallel training: Horovod on Ray Train, checkpoints, evaluation, export, registry."""

from shipyard.training.trainer import TrainResult, format_result, train

__all__ = ["TrainResult", "format_result", "train"]
