"""The `shipyard` command: parse, load the project, call one library function, map errors.

Exit codes: 0 ok, 1 the job itself failed, 2 bad input (config, paths, arguments). Any argument of
the form `--section.field value` (or `--section.field=value`) overrides one project field; only
commands that read a project file take them (the others exit 2 naming them). `--` ends
shipyard's own arguments: everything after it is passed on as is (a script's arguments).
`--verbose` (anywhere before `--`) shows Ray's own tables, INFO lines and warnings.
Command groups live in `shipyard.commands.*`, each registering its own subcommands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shipyard.errors import ShipyardError, UserInputError
from shipyard.verbosity import is_verbose, set_verbose

COMMAND_MODULES = (
    "doctor",
    "data",
    "train",
    "sweep",
    "estimate",
    "retrain",
    "cluster",
    "jobs",
    "models",
    "serve",
    "feedback",
    "demo",
)
TOP_LEVEL_FIELDS = ("workdir",)  # project fields outside any section that take --field value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too, but with a usage dump; keep one line
        raise UserInputError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="shipyard", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=(
            "also show Ray's own tables, INFO lines and warnings, and a sweep's trials' own"
            " output (any position before `--`)"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"shipyard.commands.{name}").register(sub)
    return parser


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate `--section.field value` overrides from the command's own arguments.

    Everything from a `--` on is left as it is (the `--` included): it belongs to what the
    command runs, not to shipyard.
    """
    rest: list[str] = []
    overrides: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if ("." in name and not name.startswith(".")) or name in TOP_LEVEL_FIELDS:
            if "=" in arg:
                overrides.append((name, arg.split("=", 1)[1]))
            elif i + 1 < len(argv):
                overrides.append((name, argv[i + 1]))
                i += 1
            else:
                raise UserInputError(f"--{name}: missing a value")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def split_verbose(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Take `--verbose` out wherever it stands before `--` (`shipyard jobs list --verbose`)."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [arg for arg in argv[:end] if arg != "--verbose"]
    return [*head, *argv[end:]], len(head) < end


def check_overrides_apply(args: argparse.Namespace) -> None:
    """Overrides change fields of a project file: a command that reads none refuses them.

    A command reads a project file when it has a `project` argument; a command whose project
    argument is optional sets `overrides_apply` (a function of the parsed arguments).
    """
    overrides = getattr(args, "overrides", None)
    if not overrides:
        return
    rule = getattr(args, "overrides_apply", None)
    applies = rule(args) if callable(rule) else getattr(args, "project", None) is not None
    if applies:
        return
    words = [args.command] + [v for k, v in vars(args).items() if k.endswith("_command") and v]
    names = ", ".join(f"--{name}" for name, _ in overrides)
    hint = " (a script's own arguments go after `--`)" if getattr(args, "script", None) else ""
    raise UserInputError(
        f"{' '.join(words)}: {names}: project overrides (--section.field) need a project file,"
        f" and this command reads none{hint}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, verbose = split_verbose(argv)
        if verbose:
            set_verbose(True)  # exported: library code and the processes we start see it too
        rest, overrides = split_overrides(argv)
        args = build_parser().parse_args(rest)
        args.verbose = verbose or is_verbose()
        args.overrides = overrides
        check_overrides_apply(args)
        _show_progress()
        result = args.handler(args)
        return int(result or 0)
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("shipyard: interrupted", file=sys.stderr)
        return 130


def _show_progress() -> None:
    """The library's progress lines (`logging.getLogger("shipyard....").info`) on stderr, as
    plain sentences; results go to stdout."""
    import logging

    logger = logging.getLogger("shipyard")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _version() -> str:
    from shipyard import __version__

    return f"shipyard {__version__}"


if __name__ == "__main__":
    sys.exit(main())
