"""`shipyard demo [PROJECT]`: the whole life of a model on an embedded Ray, timed."""

from __future__ import annotations

import argparse
import functools


def register(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="prepare, train, sweep, serve, HTTP, feedback, retrain, versions, lineage:"
        " the whole life on an embedded Ray, in a fresh workdir",
    )
    d.add_argument(
        "project",
        nargs="?",
        help="project file on a synthetic text corpus (default: the repository's"
        " examples/demo.yaml); --workdir DIR: a new or empty folder, instead of a fresh"
        " .shipyard-demo/<time>",
    )
    # The project is optional, and then the default one takes the overrides.
    d.set_defaults(handler=run, overrides_apply=lambda args: True)


def run(args: argparse.Namespace) -> int:
    from shipyard.demo import DEFAULT_PROJECT, run_demo

    result = run_demo(
        args.project or DEFAULT_PROJECT,
        overrides=args.overrides,
        out=functools.partial(print, flush=True),
    )
    return 0 if result.ok else 1
