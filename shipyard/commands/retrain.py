"""`shipyard retrain PROJECT [--sweep]`: feedback -> corpus -> a new version, gated promotion."""

from __future__ import annotations

import argparse

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    r = sub.add_parser(
        "retrain",
        help="merge captured feedback, train a new version and make it `challenger` only when it"
        " beats the champion by promotion.min_improvement on promotion.metric",
    )
    add_project_argument(r)
    r.add_argument(
        "--sweep", action="store_true", help="run the tuning section's sweep instead of one run"
    )
    r.set_defaults(handler=retrain)


def retrain(args: argparse.Namespace) -> int:
    """0 also when nothing was new or the new version was not promoted: both are outcomes."""
    from shipyard.training.retrain import retrain

    for line in retrain(load(args), sweep=args.sweep, announce=print).describe():
        print(line)
    return 0
