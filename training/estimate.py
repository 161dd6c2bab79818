"""`shipyard estimate`: how long and how much a training run and a sweep will take, measured here.

The profile is a real, short `HorovodTrainer` fit of the project (the trainer `build_trainer`
builds, the loop's own set-up; see `estimate_loop`): a few steps, the gradients' allreduce, an
evaluation pass, a few epoch ends, and the driver's work before and after `fit()`. From those:

    train(publish=False) = driver before fit + start-up + E x steps(N) x step(N)
                           + E x epoch end(N) + final evaluation(N) + teardown
    step(N)      = compute + allreduce(N)        (the loop batches per worker: compute is
                                                  the same for any N, the global batch grows)
    allreduce(N) = latency x (N-1)/(Np-1) + 2(N-1)/N x gradient bytes / bandwidth   (0 for N=1)
    steps(N)     = ceil((train rows // N) / batch)

with Np the profiled workers, latency the one-float allreduce measured at Np, bandwidth from a
probe buffer's allreduce (a ring allreduce moves 2(N-1)/N of the buffer through every link), and
compute the measured step minus the modelled allreduce at Np (no overlap assumed: on CPU ranks
backprop and the allreduce compete for the same cores). Evaluation costs a read of the whole
split on every rank plus a prediction of its 1/N of the rows (train: its own shard only).

`shipyard train` also exports and registers; that is measured separately, on the profile's
checkpoint, against a throwaway registry. A sweep is its trials (each with its own start-up),
the epochs its scheduler lets them run (`sweep_trial_epochs`), packed onto as many slots as
`tuning.driver.concurrency_for` gives.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.project import Project

if TYPE_CHECKING:
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.project import TuningConfig
    from shipyard.training.trainer import TrainResult

log = logging.getLogger(__name__)

SCALING_WORKERS = (1, 2, 4, 8, 16)
PROBE_BYTES = 8 << 20  # the bandwidth probe: large enough that latency is a small part of it
MAX_WARMUP_STEPS = 5
MIN_STEPS = 5
DEFAULT_STEPS = 30
SPLITS = ("train", "validation", "test")
# What build_trainer imports on first use (TensorFlow, Keras, TensorFlow Text among them).
DRIVER_MODULES = (
    "shipyard.training.models",
    "shipyard.training.loop",
    "shipyard.training.horovod_backend",
)


def ring_factor(workers: int) -> float:
    """The share of a buffer a ring allreduce sends over each rank's link: 2(N-1)/N."""
    return 2 * (workers - 1) / workers if workers > 1 else 0.0


@dataclass
class Profile:
    """What the short real run measured (seconds; per-rank values are the slowest rank's unless
    said otherwise), with the cost model built on it (see the module docstring). Start-up and
    teardown compare the driver's clock with the workers' (one clock on one host, NTP-close on a
    cluster)."""

    workers: int
    cpus_per_worker: float
    use_gpu: bool
    gpus_per_worker: float
    nodes: int
    hosts: int
    steps: int
    warmup_steps: int
    batch_size: int
    split_rows: dict[str, int]
    parameters: int
    trainable_parameters: int
    gradient_bytes: int
    dense_gradients: bool
    step_seconds: float  # median after warm-up
    step_mean_seconds: float
    first_steps_extra_seconds: float  # the warm-up steps beyond the median (tracing, broadcast)
    latency_seconds: float  # one-float allreduce (median over ranks)
    allreduce_seconds: float  # the gradients' allreduce, measured
    probe_bytes: int
    probe_seconds: float
    startup_seconds: float  # driver's fit() call to the first step
    epoch_end_seconds: float  # Keras's own epoch end (metric averaging, TensorBoard)
    reporter_seconds: float  # the Reporter's epoch end (median): validation, checkpoint, report
    eval_split: str | None
    eval_first_seconds: float
    eval_read_seconds: float
    eval_seconds: float
    eval_rows_predicted: int  # per rank
    train_read_seconds: float  # one pass over a rank's train shard, reading only
    train_read_rows: int  # per rank
    serving_cost_seconds: float
    teardown_seconds: float  # the last report to fit() returning in the driver
    driver_before_seconds: float  # train()'s corpus check and trainer set-up (shard reads)
    driver_after_seconds: float
    fit_seconds: float  # the profile's whole trainer.fit()
    publish_seconds: float | None = None
    ranks: list[dict] = field(default_factory=list)

    # -- the cost model ------------------------------------------------------------------------
    @property
    def train_rows(self) -> int:
        return self.split_rows.get("train", 0)

    @property
    def bandwidth(self) -> float | None:
        """Bytes per second through a rank's link, from the probe; None on one worker or when
        the probe was no slower than the latency (too noisy to say)."""
        if self.workers < 2 or self.probe_seconds <= self.latency_seconds:
            return None
        return (
            ring_factor(self.workers)
            * self.probe_bytes
            / (self.probe_seconds - self.latency_seconds)
        )

    def latency(self, workers: int) -> float:
        """Per-step collective latency: a ring has 2(N-1) hops, so it scales as N-1."""
        if workers < 2 or self.workers < 2:
            return 0.0
        return self.latency_seconds * (workers - 1) / (self.workers - 1)

    def transfer(self, workers: int) -> float:
        bandwidth = self.bandwidth
        if bandwidth is None:
            return 0.0
        return ring_factor(workers) * self.gradient_bytes / bandwidth

    def allreduce(self, workers: int) -> float:
        return self.latency(workers) + self.transfer(workers)

    @property
    def compute_seconds(self) -> float:
        return max(0.0, self.step_seconds - self.allreduce(self.workers))

    def step(self, workers: int) -> float:
        return self.compute_seconds + self.allreduce(workers)

    def steps_per_epoch(self, workers: int) -> int:
        """As the loop counts them: every rank gets train rows // N and batches them itself."""
        return max(1, -(-(self.train_rows // workers) // self.batch_size))

    @property
    def read_seconds_per_row(self) -> float:
        rows = self.split_rows.get(self.eval_split or "", 0)
        return self.eval_read_seconds / rows if rows else 0.0

    @property
    def predict_seconds_per_row(self) -> float:
        if not self.eval_rows_predicted:
            return 0.0
        return max(0.0, self.eval_seconds - self.eval_read_seconds) / self.eval_rows_predicted

    @property
    def train_read_seconds_per_row(self) -> float:
        return self.train_read_seconds / self.train_read_rows if self.train_read_rows else 0.0

    def evaluation(self, split: str, workers: int) -> float:
        """One rank's pass over a split: evaluation splits are read whole by every rank, the
        train split is each rank's own shard (read at its own rate); each rank predicts 1/N of
        the rows."""
        rows = self.split_rows.get(split, 0)
        if split == "train":
            read = self.train_read_seconds_per_row * rows / workers
        else:
            read = self.read_seconds_per_row * rows
        return read + self.predict_seconds_per_row * rows / workers

    @property
    def epoch_end_fixed(self) -> float:
        """An epoch end without its validation pass."""
        validated = self.eval_seconds if self.split_rows.get("validation") else 0.0
        return self.epoch_end_seconds + max(0.0, self.reporter_seconds - validated)

    def epoch_end(self, workers: int) -> float:
        return self.epoch_end_fixed + (
            self.evaluation("validation", workers) if self.split_rows.get("validation") else 0.0
        )

    def final_evaluation(self, workers: int) -> float:
        """The last epoch's extra: every split with the kept weights, and the serving cost."""
        passes = sum(self.evaluation(s, workers) for s in SPLITS if self.split_rows.get(s))
        return passes + self.serving_cost_seconds

    @property
    def one_time_seconds(self) -> float:
        """Paid once per run beyond the steady state: the first steps and predict's tracing."""
        tracing = max(0.0, self.eval_first_seconds - self.eval_seconds)
        return self.first_steps_extra_seconds + tracing

    def epoch(self, workers: int) -> float:
        return self.steps_per_epoch(workers) * self.step(workers) + self.epoch_end(workers)

    def train_parts(self, workers: int, epochs: int) -> dict[str, float]:
        """Predicted seconds of `train(project, publish=False)`, by part."""
        return {
            "driver": self.driver_before_seconds + self.driver_after_seconds,
            "start-up": self.startup_seconds + self.one_time_seconds,
            "steps": epochs * self.steps_per_epoch(workers) * self.step(workers),
            "epoch ends": epochs * self.epoch_end(workers),
            "final evaluation": self.final_evaluation(workers),
            "teardown": self.teardown_seconds,
        }

    def trial_seconds(self, workers: int, epochs: int, complete: bool) -> float:
        """One sweep trial: its own start-up and teardown, `epochs` epochs, and the final
        evaluation only when it runs to its last epoch (a trial the scheduler stops has none)."""
        return (
            self.startup_seconds
            + self.one_time_seconds
            + epochs * self.epoch(workers)
            + (self.final_evaluation(workers) if complete else 0.0)
            + self.teardown_seconds
        )


@dataclass
class TrainPrediction:
    workers: int
    epochs: int
    parts: dict[str, float]
    publish_seconds: float | None
    command_seconds: float | None  # a command's own start: interpreter, imports, Ray's start
    worker_hours: float  # N x the time the workers are held (trainer.fit)
    cost: float | None

    @property
    def wall_seconds(self) -> float:
        """`train(project, publish=False)`: the driver's work and trainer.fit()."""
        return sum(self.parts.values())

    @property
    def total_seconds(self) -> float:
        """`shipyard train`: also export and register, and (when measured) the command's own
        start."""
        return self.wall_seconds + (self.publish_seconds or 0.0) + (self.command_seconds or 0.0)


@dataclass
class ScalingRow:
    workers: int
    compute_seconds: float
    allreduce_seconds: float
    steps_per_epoch: int
    train_seconds: float
    speedup: float  # the training steps' time at 1 worker / at N
    worker_hours: float
    cost: float | None
    schedulable: bool

    @property
    def step_seconds(self) -> float:
        return self.compute_seconds + self.allreduce_seconds


@dataclass
class SweepPrediction:
    trials: int
    concurrency: int
    search: str
    scheduler: str
    trial_epochs: list[int]
    fifo_trial_epochs: int
    trial_seconds: list[float]
    wall_seconds: float
    worker_hours: float
    cost: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def total_trial_epochs(self) -> int:
        return sum(self.trial_epochs)


@dataclass
class Estimate:
    project: str
    model: str
    workers: int
    cpus_per_worker: float
    use_gpu: bool
    gpus_per_worker: float
    epochs: int
    corpus_hash: str
    cluster: dict[str, float]
    profile: Profile
    train: TrainPrediction
    scaling: list[ScalingRow]
    sweep: SweepPrediction | None
    price_per_hour: float | None
    prepare_seconds: float | None  # when the corpus had to be prepared first
    schedulable_workers: int  # how many such workers the cluster can ever hold
    import_seconds: float = 0.0  # this process's first import of the driver's engines
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """What a person reads: what was profiled where, the measurements, the predictions, the
        scaling table and any flag."""
        p, t = self.profile, self.train
        device = _device(self.use_gpu, self.gpus_per_worker, self.cpus_per_worker)
        rows = " / ".join(f"{p.split_rows[s]:,} {s}" for s in SPLITS if p.split_rows.get(s))
        lines = [
            f"estimate {self.project}: {self.model}, {self.epochs} epochs of per-worker batch"
            f" {p.batch_size} on {_workers(self.workers)} x {device}"
        ]
        lines += [f"  FLAG         {flag}" for flag in self.flags]
        prepared = (
            f" (not prepared: prepared it first in {self.prepare_seconds:.1f} s)"
            if self.prepare_seconds is not None
            else ""
        )
        lines.append(f"  {'corpus':<12} {self.corpus_hash[:12]}: {rows} rows{prepared}")
        link = "loopback (one host)" if p.hosts <= 1 else f"the network between {p.hosts} hosts"
        cluster = (
            f"{self.cluster.get('nodes', 0):g} node(s), {self.cluster.get('CPU', 0):g} CPUs,"
            f" {self.cluster.get('GPU', 0):g} GPUs"
        )
        lines.append(
            f"  {'profiled':<12} {p.steps} steps on {_workers(p.workers)} x"
            f" {_device(p.use_gpu, p.gpus_per_worker, p.cpus_per_worker)} on {p.nodes} node(s)"
            f" of this cluster ({cluster}); allreduce over {link}; fit {p.fit_seconds:.1f} s"
        )
        dense = "allreduced dense" if p.dense_gradients else "embeddings allgathered sparse"
        lines.append(
            f"  {'model':<12} {p.parameters:,} parameters; {_bytes(p.gradient_bytes)} of"
            f" gradients a step ({dense})"
        )
        lines.append(
            f"  {'step':<12} {_ms(p.step_seconds)} median (mean {_ms(p.step_mean_seconds)}):"
            f" compute {_ms(p.compute_seconds)} + allreduce {_ms(p.allreduce(p.workers))}"
        )
        if p.workers > 1:
            bandwidth = p.bandwidth
            shown = f"{bandwidth / 1e9:.2f} GB/s" if bandwidth else "not measurable (probe noise)"
            lines.append(
                f"  {'allreduce':<12} gradients {_ms(p.allreduce_seconds)} measured; latency"
                f" {_ms(p.latency_seconds)}, bandwidth {shown} ({_bytes(p.probe_bytes)} probe)"
            )
        if p.eval_split:
            lines.append(
                f"  {'evaluation':<12} {p.read_seconds_per_row * 1e3:.3f} ms/row read"
                f" ({p.eval_split}: every rank reads it whole), train shard"
                f" {p.train_read_seconds_per_row * 1e3:.3f} ms/row read,"
                f" {p.predict_seconds_per_row * 1e3:.3f} ms/row predicted"
            )
        lines.append(
            f"  {'start-up':<12} {p.startup_seconds:.1f} s from trainer.fit() to the first step,"
            f" + {p.one_time_seconds:.1f} s first steps and tracing"
        )
        lines.append(
            f"  {'epoch end':<12} {p.epoch_end_fixed:.2f} s (Keras, checkpoint, report)"
            + (" + the validation pass" if p.split_rows.get("validation") else "")
        )
        lines.append(
            f"  {'teardown':<12} {p.teardown_seconds:.1f} s from the last report to fit()"
            f" returning; driver {p.driver_before_seconds:.1f} s before fit (corpus check, shard"
            f" reads), {p.driver_after_seconds:.2f} s after"
        )
        parts = t.parts
        spe = p.steps_per_epoch(t.workers)
        unmeasured = [
            what
            for what, value in (
                ("export + register", t.publish_seconds),
                ("start", t.command_seconds),
            )
            if value is None
        ]
        lines.append(
            f"training on {_workers(t.workers)}: shipyard train ≈ {t.total_seconds:.1f} s"
            f" ({t.total_seconds / 60:.1f} min)"
            + (f"; not measured: the command's {' and '.join(unmeasured)}" if unmeasured else "")
        )
        if t.command_seconds is not None:
            lines.append(
                f"  {'command':<12} {t.command_seconds:.1f} s: interpreter, imports (TensorFlow,"
                f" Ray Train: {self.import_seconds:.1f} s) and Ray's start, as this command paid"
                " them (its exit, Ray's shutdown, is not measured)"
            )
        lines.append(
            f"  {'train()':<12} {t.wall_seconds:.1f} s = driver {parts['driver']:.1f}"
            f" + start-up {parts['start-up']:.1f} + steps {t.epochs} x {spe:,} x"
            f" {_ms(p.step(t.workers))} = {parts['steps']:.1f} + epoch ends"
            f" {parts['epoch ends']:.1f} + final evaluation {parts['final evaluation']:.1f}"
            f" + teardown {parts['teardown']:.1f}"
        )
        lines.append(
            f"  {'':<12} (train(project, publish=False): the driver's work and trainer.fit())"
        )
        if t.publish_seconds is not None:
            lines.append(
                f"  {'publish':<12} {t.publish_seconds:.1f} s export + register (measured on the"
                " profile's checkpoint, into a throwaway registry)"
            )
        lines.append(f"  {'cost':<12} {self._cost(t.worker_hours, t.cost)}")
        if self.sweep is not None:
            lines += self._describe_sweep()
        lines += self._describe_scaling()
        lines += [f"  note: {note}" for note in self.notes]
        return lines

    def _cost(self, worker_hours: float, cost: float | None) -> str:
        shown = f"{worker_hours:.4f} worker-hours"
        if cost is None:
            return f"{shown} (--price-per-hour P: the price of one worker-hour, for a cost)"
        return f"{shown} x {self.price_per_hour:g} per worker-hour = {cost:.2f}"

    def _describe_sweep(self) -> list[str]:
        s = self.sweep
        assert s is not None
        lines = [
            f"sweep ({s.search}, {s.scheduler}): {s.trials} trials of {_workers(self.workers)},"
            f" {s.concurrency} at once: {s.total_trial_epochs} trial-epochs"
            f" (fifo would run {s.fifo_trial_epochs}); ≈ {s.wall_seconds:.0f} s"
            f" ({s.wall_seconds / 60:.1f} min)"
        ]
        lines.append(f"  {'cost':<12} {self._cost(s.worker_hours, s.cost)}")
        lines += [f"  {'':<12} {note}" for note in s.notes]
        return lines

    def _describe_scaling(self) -> list[str]:
        p = self.profile
        bandwidth = p.bandwidth
        transfer = (
            f" + 2(N-1)/N x {_bytes(p.gradient_bytes)} / {bandwidth / 1e9:.2f} GB/s"
            if bandwidth
            else ""
        )
        lines = [
            f"scaling (step = compute {_ms(p.compute_seconds)} + allreduce; allreduce ="
            f" {_ms(p.latency_seconds)} x (N-1)/{max(1, p.workers - 1)}{transfer}):"
        ]
        costed = self.price_per_hour is not None
        lines.append(
            f"  {'N':>4} {'step ms':>9} {'allreduce ms':>13} {'steps/epoch':>12}"
            f" {'train s':>9} {'speed-up':>9} {'worker-h':>9}" + (f" {'cost':>8}" if costed else "")
        )
        for row in self.scaling:
            mark = "*" if row.workers == p.workers else "!" if not row.schedulable else " "
            lines.append(
                f"  {row.workers:>4}{mark}{row.step_seconds * 1e3:>8.1f}"
                f" {row.allreduce_seconds * 1e3:>13.2f} {row.steps_per_epoch:>12,}"
                f" {row.train_seconds:>9.1f} {row.speedup:>8.2f}x {row.worker_hours:>9.4f}"
                + (f" {row.cost:>8.2f}" if costed and row.cost is not None else "")
            )
        lines.append(
            "  * profiled here  ! more than this cluster can ever hold (extrapolated)"
            "  train s: train(publish=False)  speed-up: of the training steps alone"
        )
        return lines

    def to_dict(self) -> dict:
        p, t = self.profile, self.train
        profile = {k: v for k, v in vars(p).items() if k != "ranks"}
        profile.update(
            compute_seconds=p.compute_seconds,
            bandwidth_bytes_per_second=p.bandwidth,
            read_seconds_per_row=p.read_seconds_per_row,
            train_read_seconds_per_row=p.train_read_seconds_per_row,
            predict_seconds_per_row=p.predict_seconds_per_row,
            epoch_end_fixed_seconds=p.epoch_end_fixed,
            one_time_seconds=p.one_time_seconds,
            ranks=[{k: v for k, v in r.items() if k != "step_seconds"} for r in p.ranks],
        )
        sweep = None
        if self.sweep is not None:
            sweep = dict(vars(self.sweep), total_trial_epochs=self.sweep.total_trial_epochs)
        return {
            "project": self.project,
            "model": self.model,
            "request": {
                "workers": self.workers,
                "cpus_per_worker": self.cpus_per_worker,
                "use_gpu": self.use_gpu,
                "gpus_per_worker": self.gpus_per_worker,
                "epochs": self.epochs,
                "schedulable_workers": self.schedulable_workers,
            },
            "import_seconds": self.import_seconds,
            "corpus_content_hash": self.corpus_hash,
            "cluster": self.cluster,
            "price_per_worker_hour": self.price_per_hour,
            "prepare_seconds": self.prepare_seconds,
            "profile": profile,
            "train": {
                "workers": t.workers,
                "epochs": t.epochs,
                "parts": t.parts,
                "wall_seconds": t.wall_seconds,
                "measures": "train(project, publish=False): the driver's work and trainer.fit()",
                "publish_seconds": t.publish_seconds,
                "command_seconds": t.command_seconds,
                "total_seconds": t.total_seconds,
                "worker_hours": t.worker_hours,
                "cost": t.cost,
            },
            "scaling": [dict(vars(r), step_seconds=r.step_seconds) for r in self.scaling],
            "sweep": sweep,
            "flags": self.flags,
            "notes": self.notes,
        }


# -- the entry point ------------------------------------------------------------------------------
def estimate(
    project: Project,
    *,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    price_per_hour: float | None = None,
    steps: int = DEFAULT_STEPS,
    publish: bool = True,
) -> Estimate:
    """Profile the project on this cluster and predict its training run and sweep.

    `workers`/`gpus_per_worker` change the request (`gpus_per_worker` > 0 asks for a GPU run, 0
    for CPU); `price_per_hour` is the price of one worker-hour. `publish`: also time export and
    registration (into a throwaway registry). A request that can never be scheduled is flagged,
    profiled on as many workers as fit, and extrapolated.
    """
    from shipyard.cluster import connect
    from shipyard.training.ray_train_v1 import select_v1
    from shipyard.verbosity import quiet_engines

    _check_arguments(workers, gpus_per_worker, price_per_hour, steps)
    select_v1()
    command = _command_start(project, connect)
    quiet_engines()
    imports = _import_driver_modules()
    if command is not None:
        command += imports
    requested = _requested(project, workers, gpus_per_worker)
    flags: list[str] = []
    notes: list[str] = []
    profiled, fits = _profiled_project(requested, flags, notes)
    corpus, prepare_seconds = _corpus(requested)
    profile = _profile(profiled, corpus, steps, publish)
    tr = requested.training
    notes += _model_notes(requested, profile)
    train = _train_prediction(profile, tr.workers, tr.epochs, price_per_hour)
    train.command_seconds = command
    autoscaling = requested.cluster.provider != "local"
    scaling = [
        _scaling_row(profile, n, tr.epochs, price_per_hour, schedulable=n <= fits or autoscaling)
        for n in sorted({*SCALING_WORKERS, tr.workers, profile.workers})
    ]
    sweep_project = requested if tr.workers <= fits else profiled
    sweep = sweep_prediction(sweep_project, profile, price_per_hour, workers=tr.workers)
    if sweep is None:
        notes.append("no tuning.search_space: no sweep to estimate")
    else:
        sweep.wall_seconds += command or 0.0  # `shipyard sweep` starts as this command did
    if sweep is not None and sweep_project is not requested:
        sweep.notes.append(
            f"concurrency from {profile.workers}-worker trials, the most that fit: trials of"
            f" {tr.workers} can never be scheduled here"
        )
    import ray

    cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    cluster["nodes"] = float(sum(1 for n in ray.nodes() if n.get("Alive")))
    return Estimate(
        project=requested.name,
        model=requested.model.kind,
        workers=tr.workers,
        cpus_per_worker=tr.cpus_per_worker,
        use_gpu=tr.use_gpu,
        gpus_per_worker=tr.gpus_per_worker,
        epochs=tr.epochs,
        corpus_hash=corpus.content_hash,
        cluster=cluster,
        profile=profile,
        train=train,
        scaling=scaling,
        sweep=sweep,
        price_per_hour=price_per_hour,
        prepare_seconds=prepare_seconds,
        schedulable_workers=fits,
        import_seconds=imports,
        flags=flags,
        notes=notes,
    )


def _command_start(project: Project, connect) -> float | None:
    """Connect to Ray; when this call starts it, this process is a fresh command like
    `shipyard train` would be: return what it paid before its real work (the interpreter and
    imports since the process began, and Ray's start). None in a process that was already
    connected (a notebook, a test): nothing to measure that a command would pay."""
    import ray

    if ray.is_initialized():
        connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
        return None
    import psutil

    before = time.time() - psutil.Process().create_time()
    started = time.perf_counter()
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    return before + time.perf_counter() - started


def _import_driver_modules() -> float:
    """Seconds to import what train()'s driver imports on first use: TensorFlow, Keras and
    TensorFlow Text (through the model builders and the loop) and Ray Train's Horovod trainer.
    A process pays that once, so it is part of a command's start, not of train(): a second run
    in the same process (a notebook, a test) does not pay it again."""
    import importlib

    from shipyard.training.ray_train_v1 import horovod_trainer

    started = time.perf_counter()
    horovod_trainer()
    for module in DRIVER_MODULES:
        importlib.import_module(module)
    return time.perf_counter() - started


def _check_arguments(workers, gpus_per_worker, price_per_hour, steps) -> None:
    checks = [
        ("workers", workers, 1),
        ("gpus_per_worker", gpus_per_worker, 0),
        ("price_per_hour", price_per_hour, 0),
        ("steps", steps, MIN_STEPS),
    ]
    for name, value, minimum in checks:
        if value is not None and not value >= minimum:
            raise UserInputError(f"{name}: must be >= {minimum} (got {value})")


def _requested(project: Project, workers: int | None, gpus: float | None) -> Project:
    overrides: dict = {}
    if workers is not None:
        overrides["training.workers"] = workers
    if gpus is not None:
        overrides["training.use_gpu"] = gpus > 0
        if gpus > 0:
            overrides["training.gpus_per_worker"] = gpus
    return project.with_overrides(overrides) if overrides else project


def _profiled_project(requested: Project, flags: list[str], notes: list[str]):
    """The project the profile runs: the request itself when it fits, else the most workers
    that fit (on CPU when no GPU worker fits at all). Returns it and how many of the requested
    workers the cluster can ever hold."""
    from shipyard.cluster.preflight import check_resources

    t = requested.training
    autoscaling = requested.cluster.provider != "local"

    def placement(use_gpu: bool):
        # autoscaling=True only so that it reports instead of raising: the flag is ours to word.
        return check_resources(
            workers=t.workers,
            cpus_per_worker=t.cpus_per_worker,
            gpus_per_worker=t.gpus_per_worker,
            use_gpu=use_gpu,
            autoscaling=True,
        )

    found = placement(t.use_gpu)
    fits = found.fits_ever
    if fits >= t.workers:
        if found.must_wait:
            notes.append(
                f"only {found.fits_now} of {t.workers} workers fit in what is free now: the"
                " profile waited for running work, and its times may include that contention"
            )
        return requested, fits
    ask = " + ".join(f"{v:g} {k}" for k, v in found.per_worker.items())
    have = f"{found.total.get('CPU', 0):g} CPUs and {found.total.get('GPU', 0):g} GPUs"
    problem = (
        f"{_workers(t.workers)} x {ask}, but at most {fits} such worker(s) fit on its nodes"
        f" ({have} in all)"
    )
    if autoscaling:
        notes.append(f"{problem} today: the autoscaler must add nodes (cluster.provider)")
    else:
        flags.append(f"can never be scheduled on this cluster: {problem}")
    overrides: dict = {}
    if fits == 0 and t.use_gpu:
        fits_cpu = placement(False).fits_ever
        if fits_cpu == 0:
            raise UserInputError(
                f"nothing to profile on: not even one worker x {t.cpus_per_worker:g} CPU fits"
                " this cluster (training.cpus_per_worker)"
            )
        overrides["training.use_gpu"] = False
        flags.append(
            "no GPU worker fits here: profiled on CPU, so the step times are this CPU's, not a"
            " GPU's"
        )
        profile_workers = min(t.workers, fits_cpu)
    elif fits == 0:
        raise UserInputError(
            f"nothing to profile on: not even one worker x {ask} fits this cluster"
            " (training.cpus_per_worker, training.gpus_per_worker)"
        )
    else:
        profile_workers = fits
    overrides["training.workers"] = profile_workers
    if profile_workers < t.workers:
        flags.append(
            f"profiled on {_workers(profile_workers)} (the most that fit) and extrapolated to"
            f" {t.workers} with the allreduce model"
        )
    return requested.with_overrides(overrides), fits


def _corpus(project: Project) -> tuple[PreparedCorpus, float | None]:
    """The prepared corpus, preparing it first when needed (and saying so, with its time)."""
    from shipyard.corpus.manifest import MANIFEST
    from shipyard.corpus.prepare import prepare

    local = "://" not in project.corpus_dir
    missing = local and not os.path.isfile(os.path.join(project.corpus_dir, MANIFEST))
    if missing:
        log.info("corpus not prepared: preparing it first")
    started = time.perf_counter()
    result = prepare(project, feedback=True)
    took = time.perf_counter() - started
    if result.reused:
        return result.corpus, None
    if not missing:
        log.info("corpus out of date: prepared it again (%.1f s)", took)
    else:
        log.info("corpus prepared in %.1f s", took)
    return result.corpus, took


def _profile(project: Project, corpus: PreparedCorpus, steps: int, publish: bool) -> Profile:
    """Run the short real fit and turn every rank's numbers into a `Profile`."""
    from shipyard.corpus.prepare import prepare
    from shipyard.training.estimate_loop import EPOCH_ENDS, PROFILE_KEY
    from shipyard.training.trainer import TrainResult, build_trainer, check_feasible

    t = project.training
    warmup = min(MAX_WARMUP_STEPS, max(1, steps // 4))
    # One epoch more than the profile's epoch ends, so that none of them is the final one,
    # checkpointed so that each costs what a checkpointed epoch costs, and no retries.
    profiling = project.with_overrides(
        {
            "training.epochs": EPOCH_ENDS + 1,
            "training.checkpoint_every": 1,
            "training.max_failures": 0,
        }
    )
    os.makedirs(project.runs_dir, exist_ok=True)
    storage = tempfile.mkdtemp(prefix=".estimate-", dir=project.runs_dir)
    run_name = f"{project.name}-estimate"
    try:
        # What train() does in the driver before fit(): the feasibility and corpus checks (the
        # corpus is reused now) and the trainer with its datasets (read first when the workers
        # take every CPU).
        started = time.perf_counter()
        check_feasible(project)
        prepare(project, feedback=True)
        trainer = build_trainer(
            profiling,
            corpus,
            run_name=run_name,
            storage_path=storage,
            loop_config={"profile": {"steps": steps, "probe_bytes": PROBE_BYTES}},
        )
        before = time.perf_counter() - started
        log.info(
            "profiling %d steps of %s on %s x %s",
            steps, project.model.kind, _workers(t.workers),
            _device(t.use_gpu, t.gpus_per_worker, t.cpus_per_worker),
        )  # fmt: skip
        fit_called_at, started = time.time(), time.perf_counter()
        from shipyard.training.ray_train_v1 import interruptible

        with interruptible(), _quiet_forced_snapshots():  # Ctrl-C stops the profile, as train
            result = trainer.fit()
        fit_seconds = time.perf_counter() - started
        fit_returned_at = time.time()
        if result.error or PROFILE_KEY not in (result.metrics or {}):
            why = first_line(result.error) if result.error else "no measurements reported"
            raise ShipyardError(f"estimate: the profile run failed: {why}")
        started = time.perf_counter()
        outcome = TrainResult.from_result(result, run_name=run_name, corpus=corpus)
        after = time.perf_counter() - started
        ranks = json.loads(result.metrics[PROFILE_KEY])
        profile = _from_ranks(
            project,
            corpus,
            ranks,
            steps=steps,
            warmup=warmup,
            fit_called_at=fit_called_at,
            fit_returned_at=fit_returned_at,
            fit_seconds=fit_seconds,
            before=before,
            after=after,
        )
        if publish:
            log.info("timing export + register on the profile's checkpoint (throwaway registry)")
            profile.publish_seconds = _time_publish(project, outcome)
        return profile
    finally:
        shutil.rmtree(storage, ignore_errors=True)


@contextlib.contextmanager
def _quiet_forced_snapshots():
    """The profile checkpoints a few epoch ends within a second, which makes Tune force an
    experiment snapshot and warn that snapshots come too often: true of the profile only, so
    unless verbose that warning is off while it runs."""
    from shipyard.temporary_env import temporary_env
    from shipyard.verbosity import is_verbose

    if is_verbose():
        yield
        return
    with temporary_env("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"):
        yield


def _from_ranks(project, corpus, ranks, *, steps, warmup, fit_called_at, fit_returned_at,
                fit_seconds, before, after) -> Profile:  # fmt: skip
    import ray

    t = project.training
    medians = [statistics.median(r["step_seconds"][warmup:]) for r in ranks]
    extra = [
        sum(r["step_seconds"][:warmup]) - warmup * m for r, m in zip(ranks, medians, strict=True)
    ]

    def slowest(key: str, default: float = 0.0) -> float:
        return max((float(r.get(key, default)) for r in ranks), default=default)

    def middle(key: str) -> float:
        return statistics.median(float(r.get(key, 0.0)) for r in ranks)

    hosts_of = {n["NodeID"]: n.get("NodeManagerAddress", "") for n in ray.nodes()}
    nodes = {r["node"] for r in ranks}
    rank0 = next(r for r in ranks if r["rank"] == 0)
    return Profile(
        workers=len(ranks),
        cpus_per_worker=t.cpus_per_worker,
        use_gpu=t.use_gpu,
        gpus_per_worker=t.gpus_per_worker,
        nodes=len(nodes),
        hosts=len({hosts_of.get(n, n) for n in nodes}),
        steps=steps,
        warmup_steps=warmup,
        batch_size=t.batch_size,
        split_rows={s: corpus.rows(s) for s in SPLITS if corpus.rows(s)},
        parameters=int(rank0["parameters"]),
        trainable_parameters=int(rank0["trainable_parameters"]),
        gradient_bytes=int(rank0["gradient_bytes"]),
        dense_gradients=bool(rank0["dense_gradients"]),
        step_seconds=max(medians),
        step_mean_seconds=max(statistics.mean(r["step_seconds"][warmup:]) for r in ranks),
        first_steps_extra_seconds=max(0.0, max(extra)),
        latency_seconds=middle("latency_seconds"),
        allreduce_seconds=middle("allreduce_seconds"),
        probe_bytes=PROBE_BYTES,
        probe_seconds=middle("probe_seconds"),
        startup_seconds=slowest("train_begin_at") - fit_called_at,
        epoch_end_seconds=slowest("epoch_end_seconds"),
        reporter_seconds=max(statistics.median(r["reporter_seconds"]) for r in ranks),
        eval_split=rank0.get("eval_split"),
        eval_first_seconds=slowest("eval_first_seconds"),
        eval_read_seconds=slowest("eval_read_seconds"),
        eval_seconds=slowest("eval_seconds"),
        eval_rows_predicted=int(slowest("eval_rows_predicted")),
        train_read_seconds=slowest("train_read_seconds"),
        train_read_rows=int(slowest("train_read_rows")),
        serving_cost_seconds=float(rank0.get("serving_cost_seconds", 0.0)),
        teardown_seconds=max(0.0, fit_returned_at - slowest("reported_at")),
        driver_before_seconds=before,
        driver_after_seconds=after,
        fit_seconds=fit_seconds,
        ranks=ranks,
    )


def _time_publish(project: Project, outcome: TrainResult) -> float:
    """Seconds `publish` takes for this checkpoint: the export (and its TFLite variants when
    `training.export.compress`), the MLflow run and the registered version, all written into a
    throwaway workdir and a fresh sqlite registry (creating that store is part of the time, as
    for a project's first run) and deleted afterwards."""
    from shipyard.temporary_env import temporary_env
    from shipyard.training.mlflow_store import DB_FILE
    from shipyard.training.publish import publish

    scratch = tempfile.mkdtemp(prefix="shipyard-estimate-")
    try:
        throwaway = project.with_overrides(
            {"workdir": scratch, "training.storage_path": os.path.join(scratch, "runs")}
        )
        uri = f"sqlite:///{os.path.join(scratch, DB_FILE)}"
        with temporary_env("MLFLOW_TRACKING_URI", uri):
            started = time.perf_counter()
            publish(throwaway, outcome)
            return time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- predictions ----------------------------------------------------------------------------------
def _worker_hours(workers: int, seconds: float) -> float:
    return workers * seconds / 3600


def _price(worker_hours: float, price: float | None) -> float | None:
    return None if price is None else worker_hours * price


def _held_seconds(parts: dict[str, float]) -> float:
    """The part of a run during which its workers are held: trainer.fit()."""
    return sum(v for k, v in parts.items() if k != "driver")


def _train_prediction(p: Profile, workers: int, epochs: int, price: float | None):
    parts = p.train_parts(workers, epochs)
    hours = _worker_hours(workers, _held_seconds(parts))
    return TrainPrediction(
        workers=workers,
        epochs=epochs,
        parts=parts,
        publish_seconds=p.publish_seconds,
        command_seconds=None,
        worker_hours=hours,
        cost=_price(hours, price),
    )


def _scaling_row(p: Profile, workers: int, epochs: int, price, *, schedulable: bool):
    parts = p.train_parts(workers, epochs)
    one = p.train_parts(1, epochs)["steps"]
    hours = _worker_hours(workers, _held_seconds(parts))
    return ScalingRow(
        workers=workers,
        compute_seconds=p.compute_seconds,
        allreduce_seconds=p.allreduce(workers),
        steps_per_epoch=p.steps_per_epoch(workers),
        train_seconds=sum(parts.values()),
        speedup=one / parts["steps"] if parts["steps"] else 1.0,
        worker_hours=hours,
        cost=_price(hours, price),
        schedulable=schedulable,
    )


def sweep_trial_epochs(tuning: TuningConfig, epochs: int, trials: int) -> list[int]:
    """The epochs each trial is expected to run under the sweep's scheduler.

    fifo and pbt: every trial runs `epochs` (PBT exploits by copying checkpoints, it stops no
    one). ASHA (as Ray Tune's AsyncHyperBand builds it): rungs at grace_period x rf^k for
    k < int(log(max_t / grace_period) / log(rf) + 1); at each rung a trial below the best 1/rf
    of those recorded there stops, so a fraction rf^-(k+1) of the trials is expected past rung
    k, never fewer than one (the first trial to reach a rung has nothing to lose against). That
    is the asymptotic rate: with few trials running at once ASHA stops fewer, so read it as the
    least the sweep will run.
    """
    if tuning.scheduler != "asha" or trials < 1:
        return [epochs] * max(0, trials)
    max_t = tuning.max_t or epochs
    end = min(max_t, epochs)
    grace, rf = tuning.grace_period, tuning.reduction_factor
    count = int(math.log(max_t / grace) / math.log(rf) + 1) if max_t >= grace else 0
    rungs = [math.ceil(grace * rf**k) for k in range(count)]
    out: list[int] = []
    alive = trials
    for k, rung in enumerate(r for r in rungs if r < end):
        passing = min(alive, max(1, round(trials / rf ** (k + 1))))
        out += [rung] * (alive - passing)
        alive = passing
    return out + [end] * alive


def sweep_prediction(
    project: Project, profile: Profile, price: float | None, *, workers: int | None = None
) -> SweepPrediction | None:
    """The sweep of `project.tuning` costed with this profile (None without a search space).

    Trials start as slots free up (`concurrency_for`): the wall time is the trials' durations
    packed longest first onto that many slots, plus the driver's corpus check and shard read and,
    with `tuning.promote`, the best trial's export and registration.
    """
    from shipyard.tuning.driver import concurrency_for, planned_trials

    t = project.tuning
    if not t.search_space:
        return None
    n = workers or project.training.workers
    epochs = project.training.epochs
    trials = planned_trials(t)
    concurrency = concurrency_for(project)
    per_trial = sweep_trial_epochs(t, epochs, trials)
    seconds = [profile.trial_seconds(n, e, complete=e >= epochs) for e in per_trial]
    slots = [0.0] * concurrency
    for duration in sorted(seconds, reverse=True):
        heapq.heappush(slots, heapq.heappop(slots) + duration)
    wall = profile.driver_before_seconds + max(slots, default=0.0)
    notes = [
        f"each trial pays its own start-up and teardown (≈ {profile.startup_seconds:.0f} s +"
        f" {profile.teardown_seconds:.0f} s here)",
        "trials are costed at the project's own model and batch size: searched values (units,"
        " batch size) change the step time",
    ]
    if t.promote and profile.publish_seconds is not None:
        wall += profile.publish_seconds
        notes.append(
            "includes exporting and registering the best trial; not its comparison with the"
            " champion"
        )
    if t.scheduler == "asha":
        notes.append(
            f"asha: grace {t.grace_period}, reduction factor {t.reduction_factor:g}, max_t"
            f" {t.max_t or epochs}; expected fraction past rung k: rf^-(k+1), at least one trial"
        )
    elif t.scheduler == "pbt":
        notes.append("pbt: every trial runs all epochs; restarts after exploits are not counted")
    hours = sum(_worker_hours(n, s) for s in seconds)
    return SweepPrediction(
        trials=trials,
        concurrency=concurrency,
        search=t.search,
        scheduler=t.scheduler,
        trial_epochs=per_trial,
        fifo_trial_epochs=epochs * trials,
        trial_seconds=seconds,
        wall_seconds=wall,
        worker_hours=hours,
        cost=_price(hours, price),
        notes=notes,
    )


def _model_notes(project: Project, p: Profile) -> list[str]:
    notes = []
    if not p.dense_gradients:
        notes.append(
            "embedding gradients are allgathered as sparse rows (training.sparse_as_dense): the"
            " dense allreduce model overstates their cost"
        )
    if p.eval_split is None:
        notes.append(
            "no validation or test split to time an evaluation on: the final evaluation of the"
            " train split is left out"
        )
    if project.training.early_stopping:
        notes.append("training.early_stopping may end the run sooner: this is all epochs")
    if p.workers == 1:
        notes.append(
            "profiled on 1 worker: no allreduce to measure, so the scaling table leaves"
            " communication out"
        )
    elif p.bandwidth is None:
        notes.append("the bandwidth probe was within noise of the latency: transfer left out")
    if p.use_gpu:
        notes.append("GPU steps are timed at dispatch (no host sync per step)")
    notes.append(
        "more workers: start-up, teardown and the per-rank read of evaluation splits are taken"
        " as measured; placement and rendezvous grow somewhat with N"
    )
    return notes


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


def _device(use_gpu: bool, gpus: float, cpus: float) -> str:
    return f"{gpus:g} GPU" if use_gpu else f"{cpus:g} CPU"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _bytes(size: float) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} KB"
