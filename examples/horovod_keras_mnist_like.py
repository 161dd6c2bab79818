"""A plain Horovod + Keras training script, written the way users write them for `horovodrun`.

Synthetic 28×28 "digits" (no downloads): the label is which of 10 horizontal bands is brightest,
so a small dense network learns it in a few epochs. Every rank trains on its own equally sized
shard (same number of steps on every rank, so no rank waits on a collective that never comes).

    horovodrun -np 2 --gloo python examples/horovod_keras_mnist_like.py --epochs 2
    shipyard submit --script examples/horovod_keras_mnist_like.py --workers 2 -- --epochs 2
"""

import argparse
import json
import os
import socket

import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf


def synthetic_digits(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=samples)
    images = rng.uniform(0.0, 0.3, size=(samples, 28, 28)).astype("float32")
    rows = np.arange(28) * 10 // 28  # band of each pixel row
    for i, label in enumerate(labels):
        images[i, rows == label, :] += 0.7
    return images[..., None], labels.astype("int64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples-per-rank", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--rank-dir", help="write rank-<r>.json here (rank, size, final loss)")
    args = parser.parse_args()

    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print(f"rank {hvd.rank()}/{hvd.size()} started on {socket.gethostname()}", flush=True)

    x, y = synthetic_digits(args.samples_per_rank, seed=1000 + hvd.rank())
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input(shape=(28, 28, 1)),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )
    # Scale the learning rate with the number of ranks (the effective batch grows with it).
    optimizer = hvd.DistributedOptimizer(
        tf.keras.optimizers.legacy.SGD(learning_rate=args.learning_rate * hvd.size())
    )
    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # same starting weights everywhere
        hvd.callbacks.MetricAverageCallback(),  # epoch metrics averaged over ranks
    ]
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=2 if hvd.rank() == 0 else 0,
    )
    loss = float(history.history["loss"][-1])
    accuracy = float(history.history["accuracy"][-1])
    print(
        f"rank {hvd.rank()}/{hvd.size()} done: loss {loss:.4f} accuracy {accuracy:.3f}", flush=True
    )
    if args.rank_dir:
        os.makedirs(args.rank_dir, exist_ok=True)
        record = {"rank": hvd.rank(), "size": hvd.size(), "loss": loss, "accuracy": accuracy}
        with open(os.path.join(args.rank_dir, f"rank-{hvd.rank()}.json"), "w") as handle:
            json.dump(record, handle)


if __name__ == "__main__":
    main()
