"""Sweeps: what ASHA saves over FIFO, what a sweep spends outside training, and a sweep vs
sequential `train` runs of the same configs.

    (a) the same random search (same seed, --trials trials of 1-worker Horovod runs, as many at
        once as the cluster holds) with scheduler fifo and with asha: compute spent (sum of
        trial-epochs) and best val_accuracy of each. Target: asha <= 50% of fifo's trial-epochs,
        best within 1 point.
    (b) overhead: 1 - (sum of the trials' epoch_seconds) / (wall x concurrency), i.e. the share
        of the sweep's CPU slots not spent inside the trials' epochs (start-up, rendezvous, data
        loading, evaluation, bookkeeping). Measured on fifo sweeps of --b-trials trials over
        --b-rows rows at each --b-epochs epoch count, so the trial length varies; the longest
        is about 30 s of training (the target's length: <= 20%). The wall is the sweep's whole
        call, the corpus check included; the corpus is prepared first, untimed, and that
        starts the embedded Ray the sweeps then share. A second share counts each epoch's
        validation pass as inside the epoch too (as Keras's `fit` counts `validation_data`).
    (c) the fifo sweep of (a)'s own configs as sequential `shipyard.training.train` runs (no
        publishing, like the sweep with promote off): ratio of wall times. With --sequential K
        below the trial count, K runs are timed and the total is extrapolated (said so).

    .venv/bin/python bench/tuning.py --sequential 4       # ~16 min on 2 cores
    .venv/bin/python bench/tuning.py --only b             # (b) alone, ~8 min

Results go to bench/results/tuning-<time>.json; the ratios are printed.

Measured 2026-12-04 on this 2-core machine (`bench/tuning.py --sequential 4`, 12 min): (a) 16
trials of 12 epochs (4,000 rows), 2 at once, ASHA with reduction factor 3: asha spent 92
trial-epochs, fifo 192 (ratio 0.48); best val_accuracy 0.928 vs 0.933 (-0.5 points). (c) the
fifo sweep's wall was 0.55x that of the same configs as sequential `train` runs (4 timed,
extrapolated to 16).

(b) measured 2026-12-08, after a trial started taking over the last trial's workers
(`shipyard.training.kept_workers`), `--only b`: 50.3% at 7.7 s of training a trial, 34.1% at
14.8 s, 20.2% at 35.5 s (16.1% with validation inside); the run before it, 19.6% at 33.8 s
(15.5%). `--only b --b-trials 16 --b-epochs 12`: 23.1% at 27.5 s (19.1%). The same machine and
bench before that change: 66.4% at 6.7 s, 28.3% at 32.0 s (23.3%). What is left at ~30 s, of
16 trials' 558 CPU-slot seconds: 440 in epochs, 23 validating, ~19 between trials (Tune's
hand-over, 0.7-2.2 s each), ~19 in the one slot idle while the other runs the last trial, ~22
in the two first trials' worker start (process, imports, first trace; ~13 s each, a reused
worker's trial spends ~2.5 s outside its epochs), the rest the sweep's start and end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"


def project_dict(args, name: str, scheduler: str, epochs: int) -> dict:
    return {
        "name": name,
        "workdir": str(args.workdir),
        "cluster": {"num_cpus": 2},
        "data": {
            "synthetic": {"rows": args.rows, "seed": 11},
            "vocab_size": 2000,
            "sequence_length": 32,
        },
        "model": {"kind": "lstm_classifier", "embedding_dim": 16, "units": 16},
        "training": {"workers": 1, "epochs": epochs, "batch_size": 64},
        "tuning": {
            "num_samples": args.trials,
            "search": "random",
            "scheduler": scheduler,
            "seed": args.seed,
            "metric": "val_accuracy",
            "mode": "max",
            "promote": False,
            "grace_period": 1,
            "reduction_factor": args.reduction_factor,
            "search_space": {
                "training.learning_rate": {"loguniform": [1e-4, 3e-2]},
                "model.units": {"choice": [8, 16, 32]},
            },
        },
    }


def run_sweep(args, scheduler: str, epochs: int, *, rows: int, trials: int) -> dict:
    from shipyard.corpus.prepare import prepare
    from shipyard.project import validate_project
    from shipyard.tuning import sweep

    setup = argparse.Namespace(**{**vars(args), "rows": rows, "trials": trials})
    project = validate_project(project_dict(setup, "bench_tuning", scheduler, epochs), "bench")
    # The corpus is prepared before the clock starts: a sweep's first call would otherwise count
    # the corpus pipeline (~20 s at 16,000 rows) as the sweep's overhead; every call after it
    # reuses the prepared corpus, as a sweep on a prepared project does.
    prepare(project, feedback=True)
    started = time.perf_counter()
    result = sweep(project, out=io.StringIO())
    wall = time.perf_counter() - started
    trained = [
        row
        for t in result.trials
        for row in t.history
        if (row.get("epoch") or 0) > (row.get("resumed_from_epoch") or 0)
    ]
    inside = sum(float(row.get("epoch_seconds") or 0.0) for row in trained)
    validating = sum(float(row.get("validation_seconds") or 0.0) for row in trained)
    best = result.best.score("val_accuracy") if result.best else float("nan")
    return {
        "scheduler": scheduler,
        "epochs": epochs,
        "trials": len(result.trials),
        "failed": result.count("failed"),
        "stopped": result.count("stopped"),
        "trial_epochs": result.trial_epochs,
        "best_val_accuracy": best,
        "wall_seconds": round(wall, 1),
        "tune_wall_seconds": round(result.wall_seconds, 1),
        "concurrency": result.concurrency,
        "rows": rows,
        "inside_epochs_seconds": round(inside, 1),
        "validation_seconds": round(validating, 1),
        "overhead_share": 1 - inside / (wall * result.concurrency),
        "overhead_share_validation_inside": 1 - (inside + validating) / (wall * result.concurrency),
        "mean_training_seconds": round(inside / max(1, len(result.trials)), 1),
        "mean_trial_seconds": round(
            sum(t.seconds for t in result.trials) / max(1, len(result.trials)), 1
        ),
        "configs": [t.values for t in result.trials],
    }


def run_sequential(args, configs: list[dict], epochs: int) -> dict:
    from shipyard.project import validate_project
    from shipyard.training import train

    base = validate_project(project_dict(args, "bench_tuning", "fifo", epochs), "bench")
    timed = configs[: args.sequential] if args.sequential else configs
    started = time.perf_counter()
    for values in timed:
        train(base.with_overrides(values), publish=False)
    wall = time.perf_counter() - started
    return {
        "runs_timed": len(timed),
        "runs_total": len(configs),
        "wall_seconds_timed": round(wall, 1),
        "wall_seconds": round(wall * len(configs) / max(1, len(timed)), 1),
        "extrapolated": len(timed) < len(configs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument(
        "--epochs", type=int, default=12, help="epochs per trial in (a) and (c): ~30 s of training"
    )
    parser.add_argument("--reduction-factor", type=float, default=3, help="ASHA's, for (a)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=0, help="(c): time only K runs")
    parser.add_argument("--b-rows", type=int, default=16000, help="(b)'s corpus: ~2 s an epoch")
    parser.add_argument("--b-trials", type=int, default=8)
    parser.add_argument(
        "--b-epochs", default="2,5,14", help="(b)'s trial lengths in epochs, comma-separated"
    )
    parser.add_argument("--only", choices=["ac", "b"], help="run (a) and (c), or (b), alone")
    parser.add_argument("--workdir", type=Path, default=REPO / ".shipyard" / "bench_tuning")
    args = parser.parse_args(argv)

    from shipyard.training.ray_train_v1 import select_v1

    select_v1()
    load_before = os.getloadavg()
    started = time.perf_counter()
    fifo = asha = sequential = None
    if args.only != "b":
        fifo = run_sweep(args, "fifo", args.epochs, rows=args.rows, trials=args.trials)
        print(f"fifo: {json.dumps({k: v for k, v in fifo.items() if k != 'configs'})}", flush=True)
        asha = run_sweep(args, "asha", args.epochs, rows=args.rows, trials=args.trials)
        print(f"asha: {json.dumps({k: v for k, v in asha.items() if k != 'configs'})}", flush=True)
        sequential = run_sequential(args, fifo["configs"], args.epochs)
        print(f"sequential: {json.dumps(sequential)}", flush=True)
    lengths = []
    if args.only != "ac":
        for n in [int(x) for x in args.b_epochs.split(",") if x.strip()]:
            r = run_sweep(args, "fifo", n, rows=args.b_rows, trials=args.b_trials)
            lengths.append(r)
            print(
                f"(b) {n} epochs, {r['mean_training_seconds']} s of training a trial:"
                f" overhead {r['overhead_share']:.1%}"
                f" ({r['overhead_share_validation_inside']:.1%} with validation inside)",
                flush=True,
            )

    ratios = {}
    if fifo is not None:
        ratios["a_asha_over_fifo_trial_epochs"] = asha["trial_epochs"] / fifo["trial_epochs"]
        ratios["a_asha_minus_fifo_best_points"] = 100 * (
            asha["best_val_accuracy"] - fifo["best_val_accuracy"]
        )
        ratios["c_sweep_over_sequential_wall"] = fifo["wall_seconds"] / sequential["wall_seconds"]
    if lengths:
        ratios["b_overhead_share_by_training_seconds"] = {
            f"{r['mean_training_seconds']}s ({r['epochs']} epochs)": r["overhead_share"]
            for r in lengths
        }
        ratios["b_overhead_share_validation_inside"] = {
            f"{r['mean_training_seconds']}s ({r['epochs']} epochs)": r[
                "overhead_share_validation_inside"
            ]
            for r in lengths
        }
    report = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before},
        "setup": {k: str(v) for k, v in vars(args).items()},
        "fifo": fifo,
        "asha": asha,
        "b": lengths,
        "sequential": sequential,
        "ratios": ratios,
        "loadavg_after": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"tuning-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(json.dumps(ratios, indent=1))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
