"""What a trial's model would cost to serve: its size and the latency of one prediction.

`model_bytes` is the size of the model's weights (what an export carries, without the optimizer's
state) and `latency_ms` the median time of one single-row prediction on one CPU thread, after a
warm-up. The numbers are measured in a Ray task that asks for one CPU, in a fresh worker process
whose TensorFlow is limited to one thread before it starts; the driver only collects them.

Trials report these themselves when the training loop measures them after its last epoch
(`REPORTS_SERVING_METRICS` in shipyard.training.loop); until then the sweep measures them here,
from each trial's kept checkpoint, after the trials finish (so they decide the Pareto front and
the promotion, but cannot steer the search).
"""

from __future__ import annotations

SERVING_METRICS = ("latency_ms", "model_bytes")
WARMUP, TIMED = 5, 50


def loop_reports_serving_metrics() -> bool:
    from shipyard.training import loop

    return bool(getattr(loop, "REPORTS_SERVING_METRICS", False))


def measure_checkpoints(checkpoints: dict[str, str]) -> dict[str, dict[str, float]]:
    """{trial id: checkpoint folder} -> {trial id: {latency_ms, model_bytes}}, one task each."""
    import ray

    from shipyard.cluster.runtime import WORKER_ENV

    task = ray.remote(num_cpus=1, runtime_env={"env_vars": dict(WORKER_ENV)})(_measure)
    refs = {tid: task.remote(path) for tid, path in checkpoints.items()}
    return {tid: ray.get(ref) for tid, ref in refs.items()}


def _measure(checkpoint: str) -> dict[str, float]:
    import os
    import time

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.training.checkpoint import WEIGHTS, read_state
    from shipyard.training.models import build, feature_columns, model_kind

    state = read_state(checkpoint)
    corpus = PreparedCorpus.load(state.corpus_path)
    cfg = state.model_config()
    model = build(cfg, corpus)
    tf.train.Checkpoint(model=model).read(os.path.join(checkpoint, WEIGHTS)).expect_partial()
    size = int(sum(np.prod(w.shape) * w.dtype.size for w in model.weights))
    kind = model_kind(cfg, corpus)
    columns = feature_columns(kind, corpus)
    batch = next(corpus.dataset("train").iter_batches(batch_size=1, batch_format="numpy"))
    if kind.inputs == "features":
        x = {c: tf.constant(batch[c].reshape(-1, 1)) for c in columns}
    else:
        x = tf.constant(batch[columns[0]])
    call = tf.function(lambda inputs: model(inputs, training=False))
    for _ in range(WARMUP):
        call(x)
    times = []
    for _ in range(TIMED):
        started = time.perf_counter()
        np.asarray(call(x))
        times.append(time.perf_counter() - started)
    return {"latency_ms": float(np.median(times) * 1000), "model_bytes": float(size)}
