"""`shipyard models`, `shipyard evaluate`, `shipyard versions`, `shipyard promote` and
`shipyard lineage`."""

from __future__ import annotations

import argparse
import json
import math

from shipyard.commands.project_args import add_project_argument, load
from shipyard.verbosity import quiet_engines

REF_HELP = (
    "name@alias, name:VERSION, name/VERSION, models:/..., or an alias or version of the"
    " project's model"
)


def register(sub) -> None:
    m = sub.add_parser("models", help="list the model kinds and when to choose each")
    m.set_defaults(handler=models)

    e = sub.add_parser("evaluate", help="score a registered model version on a corpus split")
    add_project_argument(e)
    e.add_argument("model", help=f"{REF_HELP}, or an export folder")
    e.add_argument("--split", choices=["train", "validation", "test"], default="test")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(handler=evaluate)

    v = sub.add_parser("versions", help="list a registered model's versions, aliases and scores")
    add_project_argument(v)
    v.add_argument("name", nargs="?", help="registered model (default: the project's)")
    v.set_defaults(handler=versions)

    p = sub.add_parser("promote", help="point an alias (champion by default) at a version")
    add_project_argument(p)
    p.add_argument("model", metavar="MODEL:VERSION", help=REF_HELP)
    p.add_argument("--alias", default="champion", help="the alias to move (default: champion)")
    p.set_defaults(handler=promote)

    g = sub.add_parser(
        "lineage",
        help="what a registered version was made from: corpus, feedback, run, sweep, serving",
    )
    add_project_argument(g)
    g.add_argument(
        "model",
        nargs="?",
        default="@champion",
        metavar="MODEL",
        help=f"{REF_HELP} (default: champion)",
    )
    g.add_argument("--json", action="store_true", help="print the chain as JSON")
    g.set_defaults(handler=lineage)


def models(args: argparse.Namespace) -> int:
    from shipyard.training.models import KINDS

    width = max(len(name) for name in KINDS)
    for kind in KINDS.values():
        print(f"{kind.name:<{width}}  {kind.corpus:<8}{kind.when}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    quiet_engines()
    from shipyard.training.evaluate import evaluate, format_table

    metrics = evaluate(args.model, load(args), split=args.split)
    if args.json:
        print(json.dumps(_finite(metrics), indent=1))
    else:
        print(format_table(metrics))
    return 0


def versions(args: argparse.Namespace) -> int:
    quiet_engines()
    from shipyard.training.model_versions import describe_versions, format_versions

    project = load(args)
    summaries = describe_versions(project, args.name)
    print(format_versions(summaries, args.name or project.registered_model_name))
    return 0


def promote(args: argparse.Namespace) -> int:
    quiet_engines()
    from shipyard.training.model_versions import promote

    print(promote(load(args), args.model, alias=args.alias).describe())
    return 0


def lineage(args: argparse.Namespace) -> int:
    quiet_engines()
    from shipyard.training.lineage import format_lineage, lineage

    found = lineage(load(args), args.model)
    print(json.dumps(_finite(found.to_dict()), indent=1) if args.json else format_lineage(found))
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
