"""`shipyard models` and `shipyard evaluate`."""

from __future__ import annotations

import argparse
import json
import math

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    m = sub.add_parser("models", help="list the model kinds and when to choose each")
    m.set_defaults(handler=models)

    e = sub.add_parser("evaluate", help="score a registered model version on a corpus split")
    add_project_argument(e)
    e.add_argument(
        "model",
        help="name@alias, name/VERSION, models:/..., an alias or version of the project's"
        " model, or an export folder",
    )
    e.add_argument("--split", choices=["train", "validation", "test"], default="test")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(handler=evaluate)


def models(args: argparse.Namespace) -> int:
    from shipyard.training.models import KINDS

    width = max(len(name) for name in KINDS)
    for kind in KINDS.values():
        print(f"{kind.name:<{width}}  {kind.corpus:<8}{kind.when}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from shipyard.training.evaluate import evaluate, format_table

    metrics = evaluate(args.model, load(args), split=args.split)
    if args.json:
        print(json.dumps(_finite(metrics), indent=1))
    else:
        print(format_table(metrics))
    return 0


def _finite(value):
    """JSON has no NaN: an undefined score (ROC-AUC of a one-class split) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
