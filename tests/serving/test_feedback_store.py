"""Feedback storage: an acknowledged record survives a killed replica; export feeds the corpus."""

from __future__ import annotations

import calendar
import json
import signal
import subprocess
import sys
import threading

import pyarrow.parquet as pq
import pytest

from shipyard.cli import build_parser, main
from shipyard.errors import UserInputError
from shipyard.serving.feedback_export import export_feedback, feedback_batches
from shipyard.serving.feedback_store import (
    FeedbackRecord,
    FeedbackWriter,
    feedback_dir,
    read_feedback,
)

TEXT = {
    "name": "fb",
    "data": {"synthetic": {"rows": 300, "seed": 1}, "label_map": {"ham": 0, "spam": 1}},
}


def utc(*ymdhms: int) -> float:
    return float(calendar.timegm((*ymdhms, 0, 0, 0)))


def record(text, label="spam", *, at=1_700_000_000.0, **extra) -> FeedbackRecord:
    return FeedbackRecord.new(
        time=at,
        input=text,
        prediction="ham",
        label=label,
        model="fb",
        version=3,
        variant="full",
        **extra,
    )


KILLED_WRITER = """
import os, signal, sys
from shipyard.serving.feedback_store import FeedbackRecord, FeedbackWriter
writer = FeedbackWriter(sys.argv[1], "fb#Ingress#abc")
writer.write(FeedbackRecord(id="r1", time=1700000000.5, input="win a prize now",
    prediction="ham", label="spam", model="fb", version=2, variant="tflite_int8",
    request_id="q-1", arm="challenger"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_written_record_survives_sigkill_right_after_write(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    (got,) = read_feedback(tmp_path)
    assert got == FeedbackRecord(
        id="r1",
        time=1700000000.5,
        input="win a prize now",
        prediction="ham",
        label="spam",
        model="fb",
        version=2,
        variant="tflite_int8",
        request_id="q-1",
        arm="challenger",
    )
    assert [p.parent.name for p in tmp_path.glob("*/*.jsonl")] == ["fb_Ingress_abc"]


def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_new_line(tmp_path):
    with FeedbackWriter(tmp_path, "r") as writer:
        writer.write(record("one", at=10.0))
        writer.write(record("two", at=11.0))
    (file,) = tmp_path.glob("r/*.jsonl")
    with open(file, "a", encoding="utf-8") as f:
        f.write('{"id": "torn", "time": 12.0, "inp')  # killed mid-write
    assert [r.input for r in read_feedback(tmp_path)] == ["one", "two"]
    with FeedbackWriter(tmp_path, "r") as writer:  # the replica restarted
        writer.write(record("three", at=13.0))
    assert [r.input for r in read_feedback(tmp_path)] == ["one", "two", "three"]


def test_files_rotate_by_the_records_utc_date_and_read_back_sorted_by_time(tmp_path):
    late, early = utc(2024, 3, 2, 0, 0, 1), utc(2024, 3, 1, 23, 59, 59)
    with FeedbackWriter(tmp_path, "a") as a, FeedbackWriter(tmp_path, "../b") as b:
        a.write(record("after midnight", at=late))
        b.write(record("before midnight", at=early))
        a.write(record("same day", at=early - 60))  # back to the 1st
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jsonl"))
    days = ["_b/feedback-20240301.jsonl", "a/feedback-20240301.jsonl"]
    assert files == [*days, "a/feedback-20240302.jsonl"]
    got = read_feedback(tmp_path)
    assert [r.input for r in got] == ["same day", "before midnight", "after midnight"]


def test_concurrent_writes_from_threads_each_land_on_one_whole_line(tmp_path):
    writer = FeedbackWriter(tmp_path, "r")
    texts = [f"t{i}-{j} " + "x" * 500 for i in range(8) for j in range(40)]

    def work(i):
        for j in range(40):
            writer.write(record(f"t{i}-{j} " + "x" * 500))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    lines = next(tmp_path.glob("r/*.jsonl")).read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["input"] for line in lines) == sorted(texts)


def test_default_folder_and_feedback_path(project_factory, tmp_path):
    project = project_factory(TEXT)
    assert feedback_dir(project) == project.workdir_path / "feedback"
    moved = project_factory({**TEXT, "serving": {"feedback_path": "captured"}})
    assert feedback_dir(moved) == tmp_path / "captured"
    remote = project_factory({**TEXT, "serving": {"feedback_path": "s3://bucket/fb"}})
    with pytest.raises(UserInputError, match=r"serving\.feedback_path"):
        feedback_dir(remote)


def test_export_writes_the_corpus_columns_once(project_factory):
    project = project_factory(TEXT)
    folder = feedback_dir(project)
    with FeedbackWriter(folder, "r1") as r1, FeedbackWriter(folder, "r2") as r2:
        r1.write(record("cheap pills", "spam", at=20.0, arm="champion"))
        r2.write(record("lunch at noon?", "ham", at=10.0, request_id="q7"))
        r1.write(record("free cruise", "spam", at=30.0))
    first = export_feedback(project)
    assert (first.rows, first.skipped_duplicates, first.labels) == (3, 0, {"ham": 1, "spam": 2})
    assert first.path.parent == folder / "exports"
    assert feedback_batches(project) == [str(first.path)]
    table = pq.read_table(first.path)
    assert table.column_names[:2] == ["text", "label"]
    assert table.select(["text", "label"]).to_pylist() == [
        {"text": "lunch at noon?", "label": "ham"},
        {"text": "cheap pills", "label": "spam"},
        {"text": "free cruise", "label": "spam"},
    ]
    assert table["feedback_request_id"].to_pylist() == ["q7", None, None]
    assert table["feedback_arm"].to_pylist() == [None, "champion", None]
    assert table["feedback_version"].to_pylist() == [3, 3, 3]

    again = export_feedback(project)
    assert (again.path, again.rows, again.skipped_duplicates) == (None, 0, 3)
    assert again.describe() == [f"no new feedback in {folder} (3 already exported)"]
    assert feedback_batches(project) == [str(first.path)]

    with FeedbackWriter(folder, "r2") as r2:
        r2.write(record("meeting moved", "ham", at=40.0))
    third = export_feedback(project)
    assert (third.rows, third.skipped_duplicates) == (1, 3)
    assert pq.read_table(third.path)["text"].to_pylist() == ["meeting moved"]
    assert feedback_batches(project) == [str(first.path), str(third.path)]


def test_tabular_feedback_exports_the_features(project_factory):
    raw = {
        "name": "tab",
        "data": {"kind": "tabular", "synthetic": {"kind": "tabular", "rows": 100}},
    }
    project = project_factory(raw)
    with FeedbackWriter(feedback_dir(project), "r") as w:
        w.write(record({"age": 41, "income": 5.5, "city": "Oslo"}, "good", at=1.0))
        w.write(record({"age": 23, "income": None, "city": "Rome"}, "bad", at=2.0))
    table = pq.read_table(export_feedback(project).path)
    assert table.select(["age", "city", "income", "label"]).to_pylist() == [
        {"age": 41, "city": "Oslo", "income": 5.5, "label": "good"},
        {"age": 23, "city": "Rome", "income": None, "label": "bad"},
    ]


def test_an_unknown_label_is_refused_naming_label_and_file(project_factory, capsys):
    project = project_factory(TEXT)
    with FeedbackWriter(feedback_dir(project), "r") as w:
        w.write(record("hello", "ham", at=1.0))
        w.write(record("spammy", "spma", at=2.0))
    (file,) = feedback_dir(project).glob("r/*.jsonl")
    with pytest.raises(UserInputError, match=r"'spma'.*known: ham, spam") as err:
        export_feedback(project)
    assert str(file) in str(err.value)
    assert not (feedback_dir(project) / "exports").exists()  # nothing half-exported

    assert main(["feedback", "export", project.source_file]) == 2
    stderr = capsys.readouterr().err
    assert "'spma'" in stderr and str(file) in stderr


def test_cli_export_prints_what_it_did(project_factory, capsys):
    project = project_factory(TEXT)
    assert main(["feedback", "export", project.source_file]) == 0
    assert capsys.readouterr().out == f"no new feedback in {feedback_dir(project)}\n"
    with FeedbackWriter(feedback_dir(project), "r") as w:
        w.write(record("hello", "ham", at=1.0))
    assert main(["feedback", "export", project.source_file]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("exported 1 feedback rows to ") and out[1].split() == ["ham", "1"]
    prepare = build_parser().parse_args(["data", "prepare", "p.yaml"])
    assert prepare.feedback is True
    assert (
        build_parser().parse_args(["data", "prepare", "p.yaml", "--no-feedback"]).feedback is False
    )


@pytest.mark.slow
def test_exported_feedback_is_merged_by_data_prepare(ray_local, project_factory, capsys):
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.corpus.prepare import prepare

    raw = {
        "name": "fb",
        "data": {"synthetic": {"rows": 300, "seed": 1}, "vocab_size": 500, "sequence_length": 16},
    }
    project = project_factory(raw)
    first = prepare(project).corpus
    assert first.labels == ["ham", "spam"]
    train = pq.read_table(first.split_path("train"), columns=["text", "label"]).to_pylist()
    known = train[0]
    flipped = "spam" if first.labels[known["label"]] == "ham" else "ham"

    folder = feedback_dir(project)
    with FeedbackWriter(folder, "bad") as w:
        w.write(record("a brand new class", "eggs", at=1.0))
    with pytest.raises(UserInputError, match=r"bad/feedback-.*'eggs'"):
        export_feedback(project)  # the prepared corpus's labels decide
    for file in (folder / "bad").iterdir():
        file.unlink()

    new = ["zqx feedback alpha", "zqx feedback beta", "zqx feedback gamma"]
    with FeedbackWriter(folder, "r") as w:
        for i, text in enumerate(new):
            w.write(record(text, ["ham", "spam", "ham"][i], at=10.0 + i))
        w.write(record(known["text"], flipped, at=20.0))  # the service's user disagrees
    assert export_feedback(project).rows == 4

    assert main(["data", "prepare", project.source_file]) == 0
    printed = capsys.readouterr().out
    assert "of them extra rows           4  (4 kept)" in printed
    assert "contradicting                1  (feedback gives a source row another label)" in printed
    merged = PreparedCorpus.load(project.corpus_dir)
    counts, before = merged.manifest["counts"], first.manifest["counts"]
    assert counts["extra_rows"] == {"read": 4, "kept": 4, "contradicting": 1}
    assert counts["read"] == before["read"] + 4
    assert counts["kept"] == before["kept"] + 3  # the disagreeing row replaced its source row
    assert counts["exact_duplicates"] == before["exact_duplicates"] + 1
    assert [s["path"] for s in merged.manifest["extra_sources"]] == feedback_batches(project)
    rows = [
        r
        for split in merged.manifest["splits"]
        for r in pq.read_table(merged.split_path(split), columns=["text", "label"]).to_pylist()
    ]
    labels = {r["text"]: merged.labels[r["label"]] for r in rows}
    assert {t: labels.get(t) for t in new} == dict(zip(new, ["ham", "spam", "ham"], strict=True))
    assert labels[known["text"]] == flipped  # feedback is the newer judgement
    # `train` and `sweep` prepare with the feedback too: the merged corpus is reused as it is,
    # not rebuilt without the feedback (their inputs would differ from `data prepare`'s).
    reused = prepare(project, feedback=True)
    assert reused.reused and reused.corpus.content_hash == merged.content_hash
    assert not prepare(project).reused  # without the batches the inputs differ
