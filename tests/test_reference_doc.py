"""README's reference section is what the CLI parser and the project models say now.

Fast and without Ray: the parser and the pydantic models are all it reads.
"""

from __future__ import annotations

import argparse
import difflib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from shipyard import reference_doc
from shipyard.cli import build_parser
from shipyard.project import Project

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def rendered() -> str:
    return reference_doc.render_reference()


def test_readme_reference_is_current(rendered):
    written = reference_doc.current_block(README.read_text(encoding="utf-8"))
    if written != rendered:
        diff = difflib.unified_diff(
            written.splitlines(), rendered.splitlines(), "README.md", "rendered", lineterm="", n=0
        )
        pytest.fail(
            "README.md's reference section is stale: run `make docs`\n" + "\n".join(list(diff)[:40])
        )


def test_reference_is_the_readme_last_section():
    text = README.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[-1] == "## Reference"
    assert text.index(reference_doc.START) > text.index("## Reference")
    assert text.rstrip().endswith(reference_doc.END)


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """Every command path and its parser, walked here independently of the generator."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*words, name))


def test_every_command_and_option_is_listed(rendered):
    commands = list(_commands(build_parser()))
    assert len(commands) > 20  # the walk itself found the subcommands
    for words, parser in commands:
        command = " ".join(("shipyard", *words))
        row = next((r for r in rendered.splitlines() if r.startswith(f"| `{command}` |")), None)
        assert row is not None, f"no row for `{command}`"
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(
                action, argparse._HelpAction | argparse._SubParsersAction
            ):
                continue
            for name in action.option_strings or [action.metavar or action.dest.upper()]:
                assert name in row, f"`{command}`: {name} missing"


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        yield dotted
        for nested in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                yield from _fields(nested, f"{dotted}.")


def test_every_project_field_has_a_row(rendered):
    fields = list(_fields(Project))
    assert {"name", "data.splits.train", "training.early_stopping.patience"} <= set(fields)
    rows = {line.split(" | ")[0].removeprefix("| ").strip("`") for line in rendered.splitlines()}
    # A top-level section has a heading; every other field, nested sections included, a row.
    headings = {line.split("`")[1] for line in rendered.splitlines() if line.startswith("#### `")}
    missing = [f for f in fields if f not in rows and f not in headings]
    assert not missing, f"project fields without a row: {missing}"
    assert headings == {f for f in fields if "." not in f and f not in rows}
    assert {"data", "training", "cluster"} <= headings


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("training.workers", ["`int`", "`2`", ">= 1", ""]),
        # The default comes from the section's default instance (NodeType(gpus=1)), not the class.
        ("cluster.worker.gpus", ["`int`", "`1`", ">= 0", ""]),
        ("cluster.head.gpus", ["`int`", "`0`", ">= 0", ""]),
        ("data.delimiter", ["`str \\| null`", "`null`", "length 1", ""]),
        ("name", ["`str`", "required", "matches `^[A-Za-z0-9][A-Za-z0-9_.-]*$`", ""]),
        ("serving.max_items", ["`int`", "`64`", ">= 1", "inputs in one request."]),
        ("training.early_stopping", ["`section \\| null`", "`null`", "", "Stop every rank"]),
    ],
)
def test_field_rows_say_type_default_constraint_and_description(rendered, field, expected):
    row = next(line for line in rendered.splitlines() if line.startswith(f"| `{field}` |"))
    cells = [cell.strip() for cell in row.strip("|").split(" | ")]
    assert cells[1:4] == expected[:3], row
    assert cells[4].startswith(expected[3]), row


def test_rewrite_is_idempotent_and_check_reports_stale(tmp_path, rendered):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{reference_doc.START}\nold\n{reference_doc.END}\n", encoding="utf-8")
    assert reference_doc.main([str(readme), "--check"]) == 1
    assert "old" in readme.read_text(encoding="utf-8")
    assert reference_doc.main([str(readme)]) == 0
    assert reference_doc.current_block(readme.read_text(encoding="utf-8")) == rendered
    assert reference_doc.main([str(readme), "--check"]) == 0
