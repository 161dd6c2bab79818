"""`shipyard submit` and `shipyard jobs list|status|logs|stop` (Ray's Jobs API)."""

from __future__ import annotations

import argparse

from shipyard.errors import UserInputError


def register(sub) -> None:
    submit = sub.add_parser(
        "submit",
        help="run a project action or any Horovod script as a Ray job",
        description=(
            "shipyard submit PROJECT.yaml train|sweep|prepare|serve [--section.field value ...]\n"
            "shipyard submit --script train.py --workers N [-- script args]"
        ),
    )
    submit.add_argument("project", nargs="?", help="project file (YAML)")
    submit.add_argument("action", nargs="?", help="train, sweep, prepare or serve")
    submit.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    submit.add_argument("--script", help="a Horovod script to run unchanged")
    submit.add_argument("--workers", type=int, default=2, help="Horovod ranks for --script")
    submit.add_argument("--cpus-per-worker", type=float, default=1)
    submit.add_argument("--gpus-per-worker", type=float, default=1)
    submit.add_argument("--use-gpu", action="store_true")
    submit.add_argument("--address", help="dashboard URL, e.g. http://127.0.0.1:8265")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("--skip-preflight", action="store_true", help="do not check resources")
    # Overrides are fields of the project file; a --script job has none.
    submit.set_defaults(handler=run_submit, overrides_apply=lambda args: not args.script)

    p = sub.add_parser("jobs", help="list, inspect, read or stop jobs on a cluster")
    group = p.add_subparsers(dest="jobs_command", required=True, parser_class=type(p))
    for name, handler, text in (
        ("list", run_list, "all jobs, including ones submitted with `ray job submit`"),
        ("status", run_status, "one job's status and message"),
        ("logs", run_logs, "one job's log"),
        ("stop", run_stop, "stop a running job"),
    ):
        q = group.add_parser(name, help=text)
        if name != "list":
            q.add_argument("job_id", help="submission id (raysubmit_...) or job id")
        if name == "logs":
            q.add_argument("--follow", "-f", action="store_true", help="until the job ends")
        q.add_argument("--address", help="dashboard URL, e.g. http://127.0.0.1:8265")
        q.set_defaults(handler=handler)


def run_submit(args: argparse.Namespace) -> int:
    from shipyard.cluster import jobs

    if args.script:
        jobs.submit_script(
            args.script,
            script_arguments(args),
            args.workers,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
            use_gpu=args.use_gpu,
            address=args.address,
            wait=not args.no_wait,
            preflight=not args.skip_preflight,
        )
        return 0
    if not args.project or not args.action or args.rest:
        raise UserInputError(
            f"submit: give PROJECT.yaml and one action ({', '.join(jobs.ACTIONS)}),"
            " or --script SCRIPT --workers N [-- script args]"
        )
    from shipyard.commands.project_args import load

    jobs.submit_project(
        load(args),
        args.action,
        args.overrides,
        address=args.address,
        wait=not args.no_wait,
        preflight=not args.skip_preflight,
    )
    return 0


def script_arguments(args: argparse.Namespace) -> list[str]:
    """The script's own arguments: with --script, every positional token is one (after `--`,
    argparse hands them to the positionals in order)."""
    return [a for a in (args.project, args.action) if a is not None] + list(args.rest)


def run_list(args: argparse.Namespace) -> int:
    from shipyard.cluster.jobs import format_jobs, list_jobs

    print(format_jobs(list_jobs(args.address), _address_flag(args)))
    return 0


def run_status(args: argparse.Namespace) -> int:
    from shipyard.cluster.jobs import format_job, job_status

    print(format_job(job_status(args.job_id, args.address), _address_flag(args)))
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from shipyard.cluster.jobs import job_logs

    text = job_logs(args.job_id, args.address, follow_logs=args.follow)
    if not args.follow:
        print(text, end="")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from shipyard.cluster.jobs import format_job, stop_job

    result = stop_job(args.job_id, args.address)
    if not result.stopped:
        print(f"job {args.job_id} had already ended; nothing to stop")
    print(format_job(result.row, _address_flag(args)))
    return 0


def _address_flag(args: argparse.Namespace) -> str:
    """` --address URL` for the follow-up commands we suggest, when one was given."""
    return f" --address {args.address}" if args.address else ""
