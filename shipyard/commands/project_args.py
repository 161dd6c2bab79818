"""The project-file argument every project command shares."""

from __future__ import annotations

import argparse

from shipyard.project import Project, load_project


def add_project_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", help="project file (YAML); override fields with --section.field")


def load(args: argparse.Namespace) -> Project:
    return load_project(args.project, getattr(args, "overrides", ()))
