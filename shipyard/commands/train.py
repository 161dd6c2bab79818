"""`shipyard train|evaluate|models`."""

from __future__ import annotations

import argparse

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    t = sub.add_parser("train", help="train the project's model with Horovod on Ray Train")
    add_project_argument(t)
    t.add_argument("--resume", metavar="RUN", help="continue a stopped run (name or path)")
    t.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    from shipyard.training import format_result, train

    result = train(load(args), resume=args.resume)
    print(format_result(result))
    return 0
