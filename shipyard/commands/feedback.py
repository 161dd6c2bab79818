"""`shipyard feedback export`."""

from __future__ import annotations

import argparse

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    f = sub.add_parser("feedback", help="the feedback a service captured")
    cmds = f.add_subparsers(dest="feedback_command", required=True)

    e = cmds.add_parser(
        "export", help="compact new feedback into a Parquet batch that `data prepare` merges"
    )
    add_project_argument(e)
    e.set_defaults(handler=export)


def export(args: argparse.Namespace) -> int:
    from shipyard.serving.feedback_export import export_feedback

    for line in export_feedback(load(args)).describe():
        print(line)
    return 0
