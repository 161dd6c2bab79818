"""`shipyard retrain` on SMS spam with injected feedback: the first retrain with no champion makes
one, a better model becomes `challenger`, one that does not beat the champion by
`promotion.min_improvement` stays unaliased, and nothing new or a foreign label trains nothing.

Real 2-worker Horovod runs: one per retrain, the third a `--sweep` of two trials. The champion is
deliberately weak (a learning rate too small to move the LSTM in one epoch) so that "better" is
certain, not a coin flip."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.cli import main
from shipyard.corpus.manifest import PreparedCorpus
from shipyard.project import load_project
from shipyard.serving.feedback_export import exports_dir
from shipyard.serving.feedback_store import FeedbackRecord, FeedbackWriter, feedback_dir
from shipyard.training import model_versions as versions
from shipyard.training.mlflow_store import client

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sms_spam.yaml"
SPAM = [
    "URGENT your mobile number has won a 2000 prize call 09061701461 now to claim",
    "FREE entry to win a brand new phone text WIN to 80082 now",
    "Congratulations you have been selected for a cash award reply YES to 85233",
]
HAM = [
    "are we still meeting for lunch at the usual place tomorrow",
    "sorry I missed your call I will ring you back after work",
    "can you pick up some milk on your way home please",
]


def feedback(project, texts: list[tuple[str, str]], replica: str) -> None:
    """What a serving replica writes for each thumbs-down it receives."""
    with FeedbackWriter(feedback_dir(project), replica) as w:
        for text, label in texts:
            other = "ham" if label == "spam" else "spam"
            w.write(
                FeedbackRecord.new(
                    input=text,
                    prediction=other,
                    label=label,
                    model="sms_spam",
                    version=1,
                    variant="full",
                )
            )


@pytest.fixture(scope="module")
def loop(ray_local, shared_data, tmp_path_factory) -> SimpleNamespace:
    from shipyard.corpus.prepare import prepare
    from shipyard.training.retrain import retrain

    workdir = tmp_path_factory.mktemp("retrain")
    overrides = [
        ("workdir", str(workdir)),
        ("training.epochs", "1"),
        ("model.units", "16"),
        ("training.learning_rate", "0.00001"),  # the weak first champion
    ]
    weak = load_project(EXAMPLE, overrides)
    good = weak.with_overrides({"training.learning_rate": 0.005})
    first = prepare(weak).corpus
    train_rows = pq.read_table(first.split_path("train"), columns=["text", "label"]).to_pylist()
    known = train_rows[0]
    flipped = "spam" if first.labels[known["label"]] == "ham" else "ham"

    feedback(weak, [(t, "spam") for t in SPAM[:2]] + [(known["text"], flipped)], "replica-a")
    a = retrain(weak)  # no champion yet
    feedback(weak, [(SPAM[2], "spam"), (HAM[0], "ham")], "replica-b")
    b = retrain(good)
    feedback(weak, [(HAM[1], "ham")], "replica-a")
    # `retrain --sweep`: the best of a two-trial grid is registered, and judged like a run.
    sweeping = {
        "promotion.min_improvement": 0.5,
        "tuning.search": "grid",
        "tuning.scheduler": "fifo",
        "tuning.metric": "val_accuracy",
        "tuning.mode": "max",
        "tuning.search_space": {"training.learning_rate": {"grid": [0.005, 0.01]}},
    }
    c = retrain(good.with_overrides(sweeping), sweep=True)
    return SimpleNamespace(
        project=good,
        workdir=workdir,
        first=first,
        a=a,
        b=b,
        c=c,
        flipped=known["text"],
        flipped_to=flipped,
    )


def test_with_no_champion_the_first_version_becomes_champion(loop):
    a = loop.a
    assert a.trained and a.promoted and a.comparison is None
    assert a.version.version == 1 and a.version.aliases == ["champion"]
    assert a.feedback_rows == 3 and len(a.feedback_batches) == 1
    # The disagreeing feedback row was counted, reported and won over its source row.
    assert a.contradicting == 1
    assert "1 contradicting a corpus label" in "\n".join(a.describe())
    labels = {
        r["text"]: a.corpus.labels[r["label"]]
        for split in a.corpus.manifest["splits"]
        for r in pq.read_table(a.corpus.split_path(split), columns=["text", "label"]).to_pylist()
    }
    assert labels[loop.flipped] == loop.flipped_to
    assert {labels[t] for t in SPAM[:2]} == {"spam"}


def test_a_better_model_becomes_challenger_and_the_champion_stays(loop):
    b, project = loop.b, loop.project
    assert b.trained and b.promoted, b.reason
    assert b.version.version == 2 and b.version.aliases == ["challenger"]
    assert versions.get_alias(project, "champion").version == 1
    assert versions.get_alias(project, "challenger").version == 2
    c = b.comparison
    # Scored on the champion's own test split (its corpus folder has been replaced since).
    assert c.note is None and c.on == "champion v1's test split"
    assert c.rows + c.left_out == loop.a.corpus.rows("test")  # v1 learned from corpus a
    assert c.new["accuracy"] > c.champion["accuracy"] and c.improvement > 0
    assert c.new["count"] == c.champion["count"] == c.rows
    assert "is now challenger" in b.reason
    # One parent MLflow run, every step a child of it (the training run included).
    mlc = client(project)
    parent = mlc.get_run(b.mlflow_parent)
    assert parent.data.tags["promoted"] == "true"
    children = mlc.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{b.mlflow_parent}'"
    )
    names = {r.info.run_name for r in children}
    assert {"feedback", "corpus", "evaluate", b.train.run_name} <= names
    evaluated = next(r for r in children if r.info.run_name == "evaluate")
    assert evaluated.data.metrics["new_accuracy"] == pytest.approx(c.new["accuracy"])
    # The lineage of the new version names the node each of its two ranks ran on.
    import ray

    from shipyard.training.lineage import format_lineage, lineage

    chain = lineage(project, "2")
    assert chain.run.nodes == [ray.get_runtime_context().get_node_id()] * 2
    assert "1 node: " in format_lineage(chain) and "(ranks 0, 1)" in format_lineage(chain)


def test_a_version_that_does_not_beat_the_champion_enough_stays_unaliased(loop):
    c, project = loop.c, loop.project
    assert c.trained and not c.promoted
    assert c.version.version == 3 and c.version.aliases == []
    assert "stays unaliased" in c.reason and "promotion.min_improvement 0.5" in c.reason
    # Compared with the champion (v1) on v1's kept split, even two corpus rebuilds later.
    assert c.comparison.on == "champion v1's test split" and c.comparison.note is None
    assert c.comparison.rows + c.comparison.left_out == loop.a.corpus.rows("test")
    assert 0 < c.comparison.improvement < 0.5
    assert versions.get_alias(project, "challenger").version == 2
    assert versions.get_alias(project, "champion").version == 1
    assert mlc_tag(project, c.mlflow_parent, "promoted") == "false"


def test_a_sweep_retrain_registers_its_best_trial_under_the_retrain(loop):
    c, mlc = loop.c, client(loop.project)
    swept = c.sweep
    assert c.train is None and swept is not None
    assert len(swept.trials) == 2 and swept.count("done") == 2
    rates = sorted(t.values["training.learning_rate"] for t in swept.trials)
    assert rates == [0.005, 0.01]
    # The registered version is the best trial's checkpoint, and its run is that trial's.
    best = swept.best
    assert best.score("val_accuracy") == max(t.score("val_accuracy") for t in swept.trials)
    assert mlc.get_run(c.version.run_id).info.run_name == f"{swept.name}-{best.trial_id}"
    # The sweep's own parent run (with a child per trial) hangs under the retrain's.
    assert mlc_tag(loop.project, swept.mlflow_parent, "mlflow.parentRunId") == c.mlflow_parent
    trials = mlc.search_runs(
        [mlc.get_run(c.mlflow_parent).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{swept.mlflow_parent}'",
    )
    assert len(trials) == 2


def test_every_version_is_tagged_with_its_retrain_and_outcome(loop):
    by_number = {v.version: v for v in versions.list_versions(loop.project)}
    for result, outcome in ((loop.b, "challenger"), (loop.c, "unaliased")):
        tags = by_number[result.version.version].tags
        assert tags["retrain_parent_run"] == result.mlflow_parent
        assert tags["retrain_outcome"] == outcome


def test_no_new_feedback_trains_nothing(loop, capsys):
    code = main(["retrain", str(EXAMPLE), "--workdir", str(loop.workdir)])
    assert code == 0
    assert "no new feedback since version 3 was trained" in capsys.readouterr().out
    assert len(versions.list_versions(loop.project)) == 3


def test_a_batch_with_a_label_the_corpus_lacks_is_refused(loop, capsys):
    bad = exports_dir(loop.project) / "feedback-29990101T000000000000Z.parquet"
    # A batch written for another corpus: the right columns, a label this corpus lacks.
    table = pa.table({"text": ["hello there"], "label": ["eggs"], "feedback_id": ["x1"]})
    pq.write_table(table, bad)
    try:
        code = main(["retrain", str(EXAMPLE), "--workdir", str(loop.workdir)])
    finally:
        bad.unlink()
    assert code == 2
    err = capsys.readouterr().err
    assert "'eggs'" in err and bad.name in err and "known: ham, spam" in err
    assert len(versions.list_versions(loop.project)) == 3
    assert PreparedCorpus.load(loop.project.corpus_dir).content_hash == loop.c.corpus.content_hash


def mlc_tag(project, run_id: str, tag: str) -> str:
    return client(project).get_run(run_id).data.tags[tag]
