"""Training throughput: plain Keras vs shipyard/HorovodTrainer, same model, same shards.

    (a) plain    one process, `model.fit`, TensorFlow using both cores
    (b) hvd 1x2  `shipyard.training.train`, 1 Horovod worker with 2 CPUs
    (c) hvd 2x1  `shipyard.training.train`, 2 Horovod workers with 1 CPU each

Runs are interleaved (a, b, c, a, b, c, ...) so drift in a shared machine's load hits every
configuration alike; each run's samples/s is the mean over its epochs after the first (warm-up:
graph tracing, Ray Data start), and the report is the median over runs. Horovod samples/s come
from the `epoch_seconds` the training loop reports (train steps only, not evaluation).

A second, separate job measures the cost of the gradient exchange on 2 workers x 1 CPU: the same
model's train step with a plain optimizer vs with `hvd.DistributedOptimizer`, and the allreduce
alone on one step's real gradients.

    .venv/bin/python bench/training.py            # 3 runs each, ~15 min on 2 cores
    .venv/bin/python bench/training.py --quick    # a small smoke run, ~3 min

Results go to bench/results/training-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
CONFIGS = {
    "a_plain": {"workers": 0, "cpus_per_worker": 2},
    "b_hvd_1x2": {"workers": 1, "cpus_per_worker": 2},
    "c_hvd_2x1": {"workers": 2, "cpus_per_worker": 1},
}


def project_dict(args, workers: int = 2, cpus: float = 1) -> dict:
    return {
        "name": "bench_training",
        "workdir": str(args.workdir),
        "data": {
            "synthetic": {"rows": args.rows, "seed": 11},
            "vocab_size": 10_000,
            "sequence_length": args.sequence_length,
        },
        "model": {
            "kind": "lstm_classifier",
            "embedding_dim": args.embedding_dim,
            "units": args.units,
            "dropout": 0.0,
        },
        "training": {
            "workers": max(1, workers),
            "cpus_per_worker": cpus,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": 0.001,
            "checkpoint_every": args.epochs,  # one checkpoint at the end: not what is measured
        },
    }


# -- (a) plain Keras, in a fresh process per run --------------------------------------------------
def plain_run(spec: dict) -> dict:
    """One plain Keras run on the corpus's train shards (called in a child process)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(min(2, spec["threads"]))
    import numpy as np
    import pyarrow.parquet as pq

    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.project import ModelConfig
    from shipyard.training.models import build

    corpus = PreparedCorpus.load(spec["corpus"])
    table = pq.read_table(corpus.split_path("train"), columns=["ids", "label"])
    # to_pylist reads both a plain list column and Ray's tensor extension type.
    ids = np.asarray(table.column("ids").to_pylist(), dtype=np.int32)
    labels = table.column("label").to_numpy().astype(np.float32).reshape(-1, 1)
    tf.keras.utils.set_random_seed(spec["seed"])
    model = build(ModelConfig(**spec["model"]), corpus)
    model.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(spec["learning_rate"]),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    batch = spec["batch_size"]
    data = (
        tf.data.Dataset.from_tensor_slices((ids, labels))
        .shuffle(batch * 8, seed=spec["seed"])
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )

    class Clock(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    clock = Clock()
    model.fit(data, epochs=spec["epochs"], callbacks=[clock], verbose=0)
    return {"epoch_seconds": clock.seconds, "samples_per_epoch": len(labels)}


def run_plain(args, corpus) -> dict:
    spec = {
        "corpus": corpus.path,
        "model": project_dict(args)["model"],
        "threads": 2,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "learning_rate": 0.001,
        "seed": 42,
    }
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, __file__, "--plain-run", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"plain run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- (b), (c) shipyard/HorovodTrainer ------------------------------------------------------------
def run_shipyard(args, corpus, workers: int, cpus: float) -> dict:
    from shipyard.project import validate_project
    from shipyard.training import train

    project = validate_project(project_dict(args, workers, cpus), "bench")
    result = train(project, corpus=corpus)
    history = sorted(result.history, key=lambda row: row["epoch"])
    samples = corpus.rows("train") // workers * workers  # equal shards drop the remainder
    return {
        "epoch_seconds": [float(row["epoch_seconds"]) for row in history],
        "samples_per_epoch": samples,
        "run": result.run_name,
        "test_accuracy": result.metrics.get("test_accuracy"),
    }


def samples_per_second(run: dict) -> float:
    measured = run["epoch_seconds"][1:] or run["epoch_seconds"]  # epoch 1 is warm-up
    return run["samples_per_epoch"] / statistics.mean(measured)


# -- the gradient exchange -----------------------------------------------------------------------
def allreduce_probe(config: dict) -> None:
    """On each of 2 Horovod workers: step time with a plain vs a distributed optimizer, and the
    allreduce alone on one step's gradients (sparse embedding gradients are allgathered, as
    Horovod's optimizer does)."""
    import numpy as np
    import ray.train
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(config["threads"])
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd

    hvd.init()
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.project import ModelConfig
    from shipyard.training.models import build

    corpus = PreparedCorpus(config["corpus_path"], config["manifest"])
    cfg = ModelConfig(**config["model"])
    rng = np.random.default_rng(hvd.rank())
    shape = (config["batch_size"], corpus.tokenizer.sequence_length)
    x = rng.integers(2, corpus.tokenizer.vocab_size, size=shape).astype(np.int32)
    y = rng.integers(0, 2, size=(shape[0], 1)).astype(np.float32)

    from shipyard.training.loop import _sparse_as_dense

    def compiled(distributed: bool):
        tf.keras.utils.set_random_seed(0)
        model = build(cfg, corpus)
        opt = tf.keras.optimizers.legacy.Adam(1e-3)
        if distributed:  # as the training loop does it
            opt = hvd.DistributedOptimizer(opt, sparse_as_dense=_sparse_as_dense("auto", model))
        model.compile(
            optimizer=opt,
            loss="binary_crossentropy",
        )
        return model

    def barrier():
        hvd_tf.allreduce(tf.constant(0.0), name="barrier")

    def timed(step, n: int) -> float:
        for _ in range(config["warmup"]):
            step()
        barrier()
        started = time.perf_counter()
        for _ in range(n):
            step()
        barrier()
        return (time.perf_counter() - started) / n * 1000

    plain, dist = compiled(False), compiled(True)
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.binary_crossentropy(y, plain(x, training=True))
    grads = tape.gradient(loss, plain.trainable_variables)

    grads = [tf.convert_to_tensor(g) for g in grads]  # dense, as sparse_as_dense sends them

    @tf.function
    def exchange(gradients):  # an argument, not a capture: Horovod names ops by their tensors
        return [hvd_tf.allreduce(g, op=hvd_tf.Average) for g in gradients]

    # Alternating blocks, medians: a shared machine's load drifts within a minute.
    n = config["steps"]
    samples: dict[str, list[float]] = {"plain": [], "dist": [], "allreduce": []}
    for _ in range(config["blocks"]):
        samples["plain"].append(timed(lambda: plain.train_on_batch(x, y), n))
        samples["dist"].append(timed(lambda: dist.train_on_batch(x, y), n))
        samples["allreduce"].append(timed(lambda: exchange(grads), n))
    plain_ms, dist_ms, allreduce_ms = (float(np.median(samples[k])) for k in samples)
    nbytes = sum(
        int(np.prod(g.values.shape if isinstance(g, tf.IndexedSlices) else g.shape)) * 4
        for g in grads
    )
    ray.train.report(
        {
            "plain_step_ms": plain_ms,
            "distributed_step_ms": dist_ms,
            "allreduce_ms": allreduce_ms,
            "gradient_bytes_per_step": nbytes,
            "workers": hvd.size(),
        }
    )


def run_probe(args, corpus) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.horovod import HorovodTrainer

    trainer = HorovodTrainer(
        train_loop_per_worker=allreduce_probe,
        train_loop_config={
            "corpus_path": corpus.path,
            "manifest": corpus.manifest,
            "model": project_dict(args)["model"],
            "batch_size": args.batch_size,
            "threads": 1,
            "steps": args.probe_steps,
            "warmup": 3,
            "blocks": 3,
        },
        scaling_config=ScalingConfig(
            num_workers=2, resources_per_worker={"CPU": 1}, trainer_resources={"CPU": 0}
        ),
        run_config=RunConfig(name="allreduce-probe", storage_path=str(args.workdir / "probe")),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"allreduce probe failed: {result.error}")
    keys = (
        "plain_step_ms",
        "distributed_step_ms",
        "allreduce_ms",
        "gradient_bytes_per_step",
        "workers",
    )
    return {k: result.metrics[k] for k in keys}


# -- driver --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, 1 run each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=50)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--probe-steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--workdir", type=Path, default=REPO / ".shipyard" / "bench_training")
    parser.add_argument("--probe-only", action="store_true", help="only the allreduce probe")
    parser.add_argument("--no-probe", action="store_true", help="skip the allreduce probe")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"which configurations to run, comma-separated (default: all of {', '.join(CONFIGS)})",
    )
    parser.add_argument("--plain-run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_run:
        print(json.dumps(plain_run(json.loads(args.plain_run))))
        return 0
    if args.quick:
        args.repeats, args.rows, args.epochs, args.probe_steps = 1, 3_000, 2, 10

    from shipyard.cluster import connect
    from shipyard.corpus.prepare import prepare
    from shipyard.project import validate_project

    connect(num_cpus=2, log_to_driver=False)
    corpus = prepare(validate_project(project_dict(args), "bench")).corpus
    load_before = os.getloadavg()
    if args.probe_only:
        print(json.dumps(run_probe(args, corpus), indent=1))
        return 0
    chosen = {name: CONFIGS[name] for name in args.configs.split(",")}
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    started = time.perf_counter()
    for i in range(args.repeats):
        for name, cfg in chosen.items():
            if cfg["workers"] == 0:
                run = run_plain(args, corpus)
            else:
                run = run_shipyard(args, corpus, cfg["workers"], cfg["cpus_per_worker"])
            run["samples_per_second"] = samples_per_second(run)
            runs[name].append(run)
            print(
                f"[{i + 1}/{args.repeats}] {name:<10} {run['samples_per_second']:>8,.0f} samples/s"
            )
    probe = None if args.no_probe else run_probe(args, corpus)
    medians = {
        name: statistics.median(r["samples_per_second"] for r in rs) for name, rs in runs.items()
    }
    report = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before},
        "setup": {
            k: v for k, v in vars(args).items() if k not in ("plain_run", "probe_only", "no_probe")
        }
        | {"workdir": str(args.workdir)},
        "corpus": {"train_rows": corpus.rows("train"), "content_hash": corpus.content_hash},
        "runs": runs,
        "median_samples_per_second": medians,
        "ratios": {
            f"{name[0]}_over_a": medians[name] / medians["a_plain"]
            for name in medians
            if name != "a_plain" and "a_plain" in medians
        },
        "allreduce_probe": probe,
        "loadavg_after": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"training-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1))
    print(format_report(report))
    print(f"wrote {out}")
    return 0


def format_report(report: dict) -> str:
    s = report["setup"]
    lines = [
        f"LSTM classifier: Embedding(10k,{s['embedding_dim']})-LSTM({s['units']}), batch"
        f" {s['batch_size']}, {report['corpus']['train_rows']:,} train rows,"
        f" {s['epochs']} epochs (first excluded), {s['repeats']} run(s) each, interleaved",
    ]
    for name, value in report["median_samples_per_second"].items():
        each = ", ".join(f"{r['samples_per_second']:,.0f}" for r in report["runs"][name])
        lines.append(f"  {name:<10} median {value:>8,.0f} samples/s   (runs: {each})")
    ratios = sorted(report["ratios"].items(), reverse=True)
    lines.append("  " + "   ".join(f"({k[0]})/(a) = {v:.2f}" for k, v in ratios))
    p = report["allreduce_probe"]
    if p is not None:
        lines.append(
            f"  2 workers x 1 CPU, per step: plain {p['plain_step_ms']:.1f} ms, with"
            f" DistributedOptimizer {p['distributed_step_ms']:.1f} ms, allreduce alone"
            f" {p['allreduce_ms']:.1f} ms"
            f" ({p['gradient_bytes_per_step'] / 1e6:.2f} MB of gradients)"
        )
    lines.append(f"  load average before {report['machine']['loadavg_before']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
