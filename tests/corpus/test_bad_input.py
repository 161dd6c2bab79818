"""Bad input fails with one clear line naming the file (and line), exit code 2, and leaves no
output that could pass for a corpus."""

from __future__ import annotations

import json

import pytest
from corpus_helpers import no_partial_output, write_tsv

from shipyard.cli import main
from shipyard.corpus.prepare import prepare
from shipyard.errors import UserInputError

pytestmark = pytest.mark.usefixtures("ray_local")


def tsv_project(project_factory, source, **data):
    return project_factory(
        {
            "name": "bad",
            "data": {"kind": "text", "source": str(source), "quoting": False, **data},
        }
    )


def fails(project, match: str) -> str:
    with pytest.raises(UserInputError, match=match) as info:
        prepare(project)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert no_partial_output(project.corpus_dir)
    return message


def good_rows(n: int = 20) -> list[tuple[str, str]]:
    return [("ham" if i % 2 else "spam", f"message number {i}") for i in range(n)]


def test_missing_file(project_factory, tmp_path):
    project = tsv_project(project_factory, tmp_path / "missing.tsv")
    fails(project, r"data.source: .*missing\.tsv: no such file or folder")
    # The CLI maps it to exit code 2.
    assert main(["data", "prepare", project.source_file]) == 2


def test_not_utf8_names_file_and_line(project_factory, tmp_path):
    path = write_tsv(tmp_path / "latin1.tsv", good_rows())
    raw = path.read_bytes().split(b"\n")
    raw[3] = "spam\tcaf\u00e9 cr\u00e8me".encode("latin-1")
    path.write_bytes(b"\n".join(raw))
    fails(tsv_project(project_factory, path), r"latin1\.tsv line 4: not UTF-8 text")


def test_not_utf8_deep_in_a_big_file_is_found_by_the_worker_path(project_factory, tmp_path):
    # Past the driver's 1 MiB sample: the error is raised by a read task, then located.
    rows = [("ham", f"row {i} " + "x" * 20) for i in range(60_000)]
    path = write_tsv(tmp_path / "big.tsv", rows)
    raw = path.read_bytes().split(b"\n")
    raw[50_000] = b"spam\tbad \xff byte"
    path.write_bytes(b"\n".join(raw))
    fails(tsv_project(project_factory, path), r"big\.tsv line 50001: not UTF-8 text")


def test_wrong_number_of_columns(project_factory, tmp_path):
    rows = good_rows()
    rows[6] = ("spam", "a tab\tinside the text")
    path = write_tsv(tmp_path / "cols.tsv", rows)
    fails(
        tsv_project(project_factory, path),
        r"cols\.tsv line 8: expected 2 columns, got 3 \(quoting is off",
    )


def test_label_not_in_label_map(project_factory, tmp_path):
    rows = good_rows()
    rows[11] = ("maybe", "neither ham nor spam")
    path = write_tsv(tmp_path / "labels.tsv", rows)
    project = tsv_project(project_factory, path, label_map={"ham": 0, "spam": 1})
    fails(
        project, r"labels\.tsv line 13: label 'maybe' is not in data.label_map \(known: ham, spam\)"
    )


def test_corpus_empty_after_cleaning(project_factory, tmp_path):
    rows = [("ham", " \u200b "), ("spam", "\u0085"), ("ham", "x" * 50)]
    path = write_tsv(tmp_path / "blank.tsv", rows)
    project = tsv_project(project_factory, path, max_chars=10)
    fails(project, r"blank\.tsv: the corpus is empty after cleaning \(2 empty, 1 too_long\)")


def test_a_failed_rebuild_keeps_the_previous_corpus(project_factory, tmp_path):
    path = write_tsv(tmp_path / "data.tsv", good_rows(40))
    project = tsv_project(project_factory, path, label_map={"ham": 0, "spam": 1})
    before = prepare(project).manifest
    write_tsv(path, [*good_rows(40), ("eggs", "a new label")])
    with pytest.raises(UserInputError, match=r"data\.tsv line 42: label 'eggs'"):
        prepare(project)
    with open(f"{project.corpus_dir}/manifest.json") as f:
        assert json.load(f)["content_hash"] == before["content_hash"]
