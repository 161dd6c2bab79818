"""`shipyard estimate`: how long and how much a training run and a sweep will take, measured."""

from __future__ import annotations

import argparse
import json

from shipyard.commands.project_args import add_project_argument, load
from shipyard.errors import UserInputError
from shipyard.training.estimate import DEFAULT_STEPS, MIN_STEPS


def register(sub) -> None:
    e = sub.add_parser(
        "estimate",
        help="profile a few training steps here; predict a run's and a sweep's time and cost",
        description=(
            "Profile a few real Horovod training steps of the project on this cluster, then"
            " predict the wall time and cost of `shipyard train` and `shipyard sweep`, and how"
            " they scale with more workers. Prepares the corpus first if needed. A request the"
            " cluster can never schedule is flagged, profiled on the most workers that fit and"
            " extrapolated; the exit code is still 0 when an estimate is printed."
        ),
    )
    add_project_argument(e)
    e.add_argument(
        "--workers",
        type=_number("--workers", int, minimum=1),
        help="Horovod workers to estimate for (default: training.workers)",
    )
    e.add_argument(
        "--gpus-per-worker",
        type=_number("--gpus-per-worker", float, minimum=0),
        help="GPUs per worker; > 0 estimates a GPU run, 0 a CPU run (default: the project's)",
    )
    e.add_argument(
        "--price-per-hour",
        type=_number("--price-per-hour", float, minimum=0),
        help="price of one worker-hour (one Horovod worker with its CPUs/GPUs), e.g. 0.50;"
        " costs are worker-hours x this price (default: worker-hours only)",
    )
    e.add_argument(
        "--steps",
        type=_number("--steps", int, minimum=MIN_STEPS),
        default=DEFAULT_STEPS,
        help=f"training steps to profile (default {DEFAULT_STEPS}; the first few are warm-up)",
    )
    e.add_argument("--json", action="store_true", help="print the estimate as JSON")
    e.set_defaults(handler=estimate)


def estimate(args: argparse.Namespace) -> int:
    from shipyard.training.estimate import estimate

    result = estimate(
        load(args),
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        price_per_hour=args.price_per_hour,
        steps=args.steps,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print("\n".join(result.describe()))
    return 0


def _number(option: str, kind: type, *, minimum: float):
    """An argparse type that refuses bad values naming the option: `--workers: must be >= 1
    (got 0)` (argparse's own message would not say what is allowed)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise UserInputError(f"{option}: must be {noun} (got {text!r})") from None
        if not value >= minimum:  # also refuses NaN
            raise UserInputError(f"{option}: must be >= {minimum:g} (got {text})")
        return value

    return parse
