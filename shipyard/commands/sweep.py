"""`shipyard sweep PROJECT [--resume NAME]`: a Ray Tune sweep of Horovod trials."""

from __future__ import annotations

import argparse

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    s = sub.add_parser(
        "sweep", help="search tuning.search_space with Ray Tune (every trial a Horovod run)"
    )
    add_project_argument(s)
    s.add_argument("--resume", metavar="NAME", help="continue a stopped sweep (name or path)")
    s.set_defaults(handler=sweep)


def sweep(args: argparse.Namespace) -> int:
    from shipyard.tuning import format_sweep, sweep

    result = sweep(load(args), resume=args.resume)
    print(format_sweep(result))
    return 0
