"""shipyard: a model's whole life on a Ray cluster — corpus, Horovod training, sweeps, serving."""

__version__ = "0.1.0"
