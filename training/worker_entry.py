"""The function Ray Train runs on every Horovod worker, in a module that imports nothing heavy.

Ray pickles it by reference into Tune's trainable actor, which only carries the trainer and
never trains: naming `shipyard.training.loop` there would import TensorFlow into that actor,
1.9 s before every run and every trial starts its workers. The workers import the loop when
they call it.
"""

from __future__ import annotations


def train_loop_per_worker(config: dict) -> None:
    """`shipyard.training.loop.train_loop_per_worker`, imported on the worker."""
    from shipyard.training.loop import train_loop_per_worker as run

    run(config)
