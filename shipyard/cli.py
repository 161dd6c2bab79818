"""The `shipyard` command: parse, load the project, call one library function, map errors.

Exit codes: 0 ok, 1 the job itself failed, 2 bad input (config, paths, arguments). Any argument of
the form `--section.field value` (or `--section.field=value`) overrides one project field.
Command groups live in `shipyard.commands.*`, each registering its own subcommands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shipyard.errors import ShipyardError, UserInputError

COMMAND_MODULES = ("doctor", "data", "train", "cluster", "jobs", "models")
TOP_LEVEL_FIELDS = ("workdir",)  # project fields outside any section that take --field value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too, but with a usage dump; keep one line
        raise UserInputError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="shipyard", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"shipyard.commands.{name}").register(sub)
    return parser


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate `--section.field value` overrides from the command's own arguments."""
    rest: list[str] = []
    overrides: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rest, overrides = split_overrides(argv)
        args = build_parser().parse_args(rest)
        args.overrides = overrides
        result = args.handler(args)
        return int(result or 0)
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("shipyard: interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from shipyard import __version__

    return f"shipyard {__version__}"


if __name__ == "__main__":
    sys.exit(main())
