"""README's reference tables, rendered from the CLI parser and the project models.

Rendered rather than written so they cannot drift: `make docs` rewrites README.md between the
markers, and tests/test_reference_doc.py fails when what is there differs from what this renders.
Field descriptions come from `Field(description=...)` or, failing that, the comments beside the
field in shipyard/project.py, so documenting a field in its model documents it here too.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

START = "<!-- reference:start -->"
END = "<!-- reference:end -->"
DESCRIPTION_CHARS = 130  # one table line; longer texts are cut at a word


# -- commands ------------------------------------------------------------------------------------
def commands_table(parser: argparse.ArgumentParser) -> str:
    rows = [
        "| command | what it does | arguments and options |",
        "| --- | --- | --- |",
    ]
    for words, help_text, sub in walk_commands(parser):
        what = [help_text] if words else ["options every command takes"]
        # A description spells out forms argparse cannot (serve's actions, submit's two shapes).
        if sub.description and sub.description != help_text and words:
            what += [line.strip() for line in re.split(r"\n|; ", sub.description) if line.strip()]
        options = [_option(a) for a in sub._actions if _documented(a)]
        children = _subcommands(sub)
        if children:
            options.append("subcommands: " + ", ".join(f"`{name}`" for name in children.choices))
        rows.append(
            f"| `{' '.join(['shipyard', *words])}` | {_escape('<br>'.join(what))}"
            f" | {'<br>'.join(_escape(o) for o in options)} |"
        )
    return "\n".join(rows)


def walk_commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = (), help_text: str = ""
) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """Every parser under `parser`, depth first: (command words, one-line help, parser)."""
    yield words, help_text or (parser.description or ""), parser
    children = _subcommands(parser)
    if children is None:
        return
    helps = {a.dest: a.help or "" for a in children._choices_actions}
    for name, child in children.choices.items():
        yield from walk_commands(child, (*words, name), helps.get(name, ""))


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _documented(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(
        action, argparse._HelpAction | argparse._SubParsersAction
    )


def _option(action: argparse.Action) -> str:
    """`--nodes NODES` nodes including the head (default 2)."""
    if not action.option_strings:
        name = action.metavar or action.dest.upper()
        usage = {"?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}
        text = f"`{usage.get(action.nargs, name)}`"
    elif isinstance(action, argparse.BooleanOptionalAction):
        text = " / ".join(f"`{flag}`" for flag in action.option_strings)
    else:
        flags = "/".join(action.option_strings)
        if action.nargs == 0:
            text = f"`{flags}`"
        else:
            metavar = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}"
                if action.choices
                else action.dest.upper()
            )
            text = f"`{flags} {metavar}`"
    help_text = action.help or ""
    notes = []
    if action.option_strings and action.required:
        notes.append("required")
    if isinstance(action, argparse._AppendAction):
        notes.append("repeatable")
    default = action.default
    shown = action.nargs != 0 and not (
        default is None or default is argparse.SUPPRESS or default == []
    )
    if isinstance(action, argparse.BooleanOptionalAction):
        shown, default = True, "on" if default else "off"
    if shown and "default" not in help_text:
        notes.append(f"default {default}")
    parts = [text, help_text, f"({', '.join(notes)})" if notes else ""]
    return " ".join(p for p in parts if p)


# -- project file --------------------------------------------------------------------------------
def fields_tables(project_model: type[BaseModel]) -> str:
    """One table for the top-level fields, then one per section, nested sections inline."""
    top = [(n, f) for n, f in project_model.model_fields.items() if not _model_in(f.annotation)]
    out = [_table([row for n, f in top for row in _rows(project_model, n, f, n, None)])]
    for name, field in project_model.model_fields.items():
        section = _model_in(field.annotation)
        if section is None:
            continue
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        heading = f"#### `{name}`" + (" (required)" if field.is_required() else "")
        intro = _first_sentence(_paragraphs(section.__doc__)[:1])
        out += [heading, intro] if intro else [heading]
        out.append(_table(list(_section_rows(section, name, default))))
    return "\n\n".join(out)


def _section_rows(model: type[BaseModel], prefix: str, instance: BaseModel | None):
    for name, field in model.model_fields.items():
        yield from _rows(model, name, field, f"{prefix}.{name}", instance)


def _rows(model: type[BaseModel], name: str, field, dotted: str, instance: BaseModel | None):
    """The field's row and, for a nested section, its fields' rows after it."""
    if instance is not None:
        value = getattr(instance, name)
    elif field.is_required():
        value = _REQUIRED
    else:
        value = field.get_default(call_default_factory=True)
    nested = _model_in(field.annotation)
    description = field.description or _field_comments(model).get(name, "")
    if nested is not None and not description:
        description = _first_sentence(_paragraphs(nested.__doc__)[:1])
    default = "" if isinstance(value, BaseModel) else _yaml(value)
    yield (
        f"`{dotted}`",
        f"`{_type(field.annotation)}`",
        f"`{default}`" if default and value is not _REQUIRED else default,
        _constraints(field.metadata),
        _trim(description),
    )
    if nested is not None:
        yield from _section_rows(nested, dotted, value if isinstance(value, BaseModel) else None)


def _table(rows: list[tuple[str, ...]]) -> str:
    lines = [
        "| field | type | default | constraint | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class _Required:
    def __repr__(self) -> str:
        return "required"


_REQUIRED = _Required()


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        return " | ".join(_yaml(a) for a in args)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    if _model_in(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is typing.Union or isinstance(annotation, types.UnionType):
        return next(filter(None, map(_model_in, typing.get_args(annotation))), None)
    return None


def _yaml(value: Any) -> str:
    """A value as it would be written in the project file."""
    if value is _REQUIRED:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(_yaml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _constraints(metadata: Sequence[Any]) -> str:
    """`>= 1, < 10`, `length 1`, `matches ...`: pydantic's metadata as the file's rules."""
    found = {}
    for item in metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            if getattr(item, attr, None) is not None:
                found[attr] = getattr(item, attr)
    if "min_length" in found and found.get("min_length") == found.get("max_length"):
        found["length"] = found.pop("min_length")
        del found["max_length"]
    words = {
        "ge": ">=",
        "gt": ">",
        "le": "<=",
        "lt": "<",
        "min_length": "length >=",
        "max_length": "length <=",
        "length": "length",
    }
    out = [f"{words[k]} {v!r}" for k, v in found.items() if k in words]
    if "pattern" in found:
        out.append(f"matches `{found['pattern']}`")
    return ", ".join(out)


def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    """What the source says about each field: its trailing comment, else the comment lines just
    above it, else a paragraph of the class docstring that begins with the field's name."""
    source = textwrap.dedent(inspect.getsource(model))
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    by_paragraph = {}
    for paragraph in _paragraphs(model.__doc__):
        match = re.match(r"`(\w+)`", paragraph)
        if match:
            by_paragraph[match.group(1)] = paragraph
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = comments.get(node.end_lineno, "")
        if trailing.startswith("type:") or lines[node.end_lineno - 1].lstrip().startswith("#"):
            trailing = ""
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        text = trailing or " ".join(above) or by_paragraph.get(node.target.id, "")
        if text:
            found[node.target.id] = text
    return found


def _paragraphs(doc: str | None) -> list[str]:
    text = inspect.cleandoc(doc or "")
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def _first_sentence(paragraphs: list[str]) -> str:
    if not paragraphs:
        return ""
    return re.split(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z])", paragraphs[0])[0].rstrip(".") + "."


def _trim(text: str) -> str:
    """One line: the first sentence, cut at a word (never inside a code span) when too long."""
    text = " ".join(text.split())
    if not text:
        return ""
    text = _first_sentence([text])
    if len(text) <= DESCRIPTION_CHARS:
        return text
    cut = text[:DESCRIPTION_CHARS].rsplit(" ", 1)[0]
    if cut.count("`") % 2:
        cut = cut[: cut.rindex("`")].rstrip()
    return cut.rstrip(",;:") + " …"


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


# -- the document --------------------------------------------------------------------------------
def render_reference() -> str:
    """The Markdown that belongs between README's reference markers."""
    from shipyard.cli import build_parser
    from shipyard.project import Project

    return "\n\n".join(
        [
            "_Generated from the CLI parser (`shipyard/cli.py`, `shipyard/commands/`) and the"
            " project models (`shipyard/project.py`) by `make docs`; edit those, not this._",
            "### Commands",
            "Commands that read a project file also take `--section.field value` (or"
            " `--workdir value`): one override per project field below.",
            commands_table(build_parser()),
            "### Project file fields",
            "Top-level fields, then one table per section; a nested section's fields follow its"
            " own row. `required` marks fields without a default.",
            fields_tables(Project),
        ]
    )


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block`."""
    start, end = _marker_span(text)
    return f"{text[: start + len(START)]}\n{block}\n{text[end:]}"


def current_block(text: str) -> str:
    start, end = _marker_span(text)
    return text[start + len(START) : end].strip("\n")


def _marker_span(text: str) -> tuple[int, int]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START} followed by one {END}")
    return text.index(START), text.index(END)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rewrite README.md's reference tables")
    parser.add_argument("readme", nargs="?", default="README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when stale; write nothing")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    updated = replace_block(text, render_reference())
    if updated == text:
        print(f"{path}: reference is current")
        return 0
    if args.check:
        print(f"{path}: reference is stale; run `make docs`", file=sys.stderr)
        return 1
    path.write_text(updated, encoding="utf-8")
    print(f"{path}: reference rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
