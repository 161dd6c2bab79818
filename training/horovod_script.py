"""Run an unchanged Horovod script (`horovodrun -np N python train.py ...`) on a Ray cluster.

Ray Train's V1 `HorovodTrainer` starts N worker actors and prepares Horovod's Gloo rendezvous;
each worker then runs the user's script as `__main__` with its own `sys.argv`, so the script's
`hvd.init()` joins that rendezvous and everything else (data, model, callbacks) stays the user's.

`shipyard submit --script train.py --workers N -- args` makes this module the entrypoint of a
Ray job: `python -m shipyard.training.horovod_script train.py --workers N -- args`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shipyard.cluster import runtime
from shipyard.errors import ShipyardError, UserInputError, first_line


@dataclass
class ScriptRun:
    script: str
    workers: int
    seconds: float


def run_script(
    script: str,
    args: Sequence[str] = (),
    workers: int = 2,
    cpus_per_worker: float = 1,
    use_gpu: bool = False,
    *,
    gpus_per_worker: float = 1,
    placement_strategy: str = "PACK",
    address: str | None = None,
    storage_path: str | None = None,
) -> ScriptRun:
    """Run `script args...` on `workers` Horovod ranks; raise ShipyardError if a rank fails.

    Joins the cluster at `address` (inside a Ray job: the job's cluster), or reuses the Ray this
    process already initialized, or starts an embedded one. Checks first that the workers can be
    placed at all. `storage_path` holds Ray Train's run folder (a temporary one by default: a
    script reports nothing to Ray Train, so there is nothing to keep).
    """
    path = Path(script).resolve()
    if not path.is_file():
        raise UserInputError(f"script {script}: file not found")
    if workers < 1:
        raise UserInputError(f"workers: must be >= 1 (got {workers})")
    runtime.connect(address)

    from shipyard.training.ray_train_v1 import interruptible, new_horovod_trainer, select_v1

    select_v1()  # before the first import of ray.train
    from ray.train import RunConfig

    from shipyard.cluster.preflight import check_resources

    result = check_resources(workers, cpus_per_worker, gpus_per_worker, use_gpu)
    if result.must_wait:
        print(result.describe(), flush=True)

    cwd = os.getcwd()
    config = {
        "script": str(path),
        # On another machine the driver's absolute path does not exist; the worker's own copy of
        # the job's working_dir has the script at the same relative place.
        "relative": os.path.relpath(path, cwd),
        "cwd": cwd,
        "args": [str(a) for a in args],
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shipyard-script-") as scratch:
        trainer = new_horovod_trainer(
            _run_in_worker,
            config,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            use_gpu=use_gpu,
            gpus_per_worker=gpus_per_worker,
            placement_strategy=placement_strategy,
            run_config=RunConfig(
                name=f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=storage_path or scratch,
                verbose=0,
            ),
        )
        try:
            with interruptible():
                trainer.fit()
        except Exception as exc:  # TrainingFailedError wraps the rank's own exception
            raise ShipyardError(
                f"{path.name} failed on {workers} Horovod worker(s): {first_line(exc)}"
            ) from None
    return ScriptRun(str(path), workers, time.monotonic() - started)


def _run_in_worker(config: dict) -> None:
    """One Horovod rank: become `python script args...` in the script's usual surroundings."""
    import runpy

    if os.path.isdir(config["cwd"]):
        os.chdir(config["cwd"])  # Ray Train moved us to its trial folder; relative paths expect cwd
    script = config["script"]
    if not os.path.isfile(script):
        script = os.path.abspath(config["relative"])
    sys.argv = [script, *config["args"]]
    script_dir = os.path.dirname(script)
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)  # like `python script.py`: sibling modules import
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:  # argparse and sys.exit(); only a non-zero code is a failure
        if exc.code not in (None, 0):
            raise RuntimeError(f"{os.path.basename(script)} exited with {exc.code}") from None
    from shipyard.training.horovod_backend import leave_together

    leave_together()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shipyard.training.horovod_script SCRIPT --workers N [...] -- script args`."""
    parser = argparse.ArgumentParser(prog="shipyard.training.horovod_script")
    parser.add_argument("script")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=1)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--placement-strategy", default="PACK")
    parser.add_argument("--address")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` belongs to the script, untouched.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    script_args = argv[split + 1 :]
    try:
        run = run_script(
            args.script,
            script_args,
            args.workers,
            args.cpus_per_worker,
            args.use_gpu,
            gpus_per_worker=args.gpus_per_worker,
            placement_strategy=args.placement_strategy,
            address=args.address,
        )
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    name = Path(run.script).name
    print(f"{name}: {run.workers} Horovod worker(s) finished in {run.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
