"""MLflow for a sweep: one parent run, each trial a child run (`mlflow.parentRunId`).

Written by the driver only (the embedded store is one sqlite file), from the finished sweep's
results, so a resumed sweep logs every trial exactly once: the parent's id is kept in the sweep
folder and a trial that already has a child run (tag `shipyard.trial_id`) is skipped.
"""

from __future__ import annotations

import json
import math
import os

from shipyard.project import Project
from shipyard.training.mlflow_store import client, experiment_id

PARENT_FILE = "mlflow_parent_run"
STATUS = {"done": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
SKIP = {"epoch", "timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid"}


def parent_run(project: Project, sweep_dir: str, name: str) -> str:
    """The sweep's parent run id: the one recorded in the sweep folder, or a new one."""
    record = os.path.join(sweep_dir, PARENT_FILE)
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            return f.read().strip()
    mlc = client(project)
    t = project.tuning
    run = mlc.create_run(
        experiment_id(mlc, project),
        run_name=name,
        tags={"shipyard.kind": "sweep", "project_file": project.source_file},
    )
    run_id = run.info.run_id
    params = {
        "tuning.search": t.search,
        "tuning.scheduler": t.scheduler,
        "tuning.num_samples": t.num_samples,
        "tuning.objectives": json.dumps(t.goals),
        "tuning.constraints": json.dumps(t.constraints),
        "tuning.search_space": json.dumps(t.search_space)[:6000],
    }
    for k, v in params.items():
        mlc.log_param(run_id, k, str(v))
    os.makedirs(sweep_dir, exist_ok=True)
    with open(record, "w", encoding="utf-8") as f:
        f.write(run_id)
    return run_id


def log_trials(project: Project, parent: str, trials, goals) -> int:
    """A child run per trial not yet logged; returns how many were written."""
    from mlflow.entities import Metric, Param

    mlc = client(project)
    exp = mlc.get_run(parent).info.experiment_id
    logged = {
        r.data.tags.get("shipyard.trial_id")
        for r in mlc.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=5000)
    }
    written = 0
    for t in trials:
        if t.trial_id in logged:
            continue
        tags = {"mlflow.parentRunId": parent, "shipyard.trial_id": t.trial_id, "state": t.state}
        if t.error:
            tags["error"] = t.error[:5000]
        run = mlc.create_run(exp, run_name=t.trial_id, tags=tags)
        params = [Param(k, str(v)[:6000]) for k, v in t.values.items()]
        metrics = []
        for i, row in enumerate(t.history):
            step = int(row.get("epoch") or i + 1)
            ts = int(float(row.get("timestamp") or 0) * 1000)
            for k, v in row.items():
                if k not in SKIP and _finite(v):
                    metrics.append(Metric(k, float(v), ts, step))
        for m, _ in goals:
            if _finite(t.score(m)):
                metrics.append(Metric(f"score_{m}", t.score(m), 0, 0))
        mlc.log_batch(run.info.run_id, params=params[:100])
        for i in range(0, len(metrics), 1000):
            mlc.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])
        mlc.set_terminated(run.info.run_id, STATUS[t.state])
        written += 1
    return written


def finish_parent(project: Project, parent: str, best, goals, files: list[str]) -> None:
    mlc = client(project)
    if best is not None:
        mlc.set_tag(parent, "best_trial", best.trial_id)
        for m, _ in goals:
            if _finite(best.score(m)):
                mlc.log_metric(parent, f"best_{m}", best.score(m))
    for path in files:
        mlc.log_artifact(parent, path, "sweep")
    mlc.set_terminated(parent, "FINISHED")


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
