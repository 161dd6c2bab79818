"""Unchanged Horovod scripts on Ray Train: placement across nodes and bad input."""

from __future__ import annotations

import json

import pytest

from shipyard.cli import main as shipyard
from shipyard.errors import UserInputError
from shipyard.training.horovod_script import main, run_script

# A user script that also records where it ran and proves the ranks talk (an allreduce).
NODE_SCRIPT = """\
import json, os, sys
import horovod.tensorflow as hvd
import ray
import tensorflow as tf

hvd.init()
total = float(hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum).numpy())
record = {
    "rank": hvd.rank(),
    "size": hvd.size(),
    "node": ray.get_runtime_context().get_node_id(),
    "sum": total,
    "argv": sys.argv[1:],
}
with open(os.path.join(sys.argv[1], f"rank-{hvd.rank()}.json"), "w") as handle:
    json.dump(record, handle)
"""


@pytest.mark.multinode
@pytest.mark.slow
def test_spread_places_one_worker_per_node(two_node_cluster, tmp_path):
    import ray

    script = tmp_path / "where.py"
    script.write_text(NODE_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    run = run_script(
        str(script),
        [str(out), "--flag"],
        workers=2,
        placement_strategy="SPREAD",
        storage_path=str(tmp_path / "runs"),
    )
    records = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    assert [(r["rank"], r["size"]) for r in records] == [(0, 2), (1, 2)]
    assert len({r["node"] for r in records}) == 2  # one worker on each node
    assert {r["node"] for r in records} == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert all(r["sum"] == 3.0 for r in records)  # 1 + 2 over Gloo
    assert all(r["argv"] == [str(out), "--flag"] for r in records)
    assert run.workers == 2
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}


def test_missing_script_is_bad_input(tmp_path, capsys):
    with pytest.raises(UserInputError, match=r"nope\.py: file not found"):
        run_script(str(tmp_path / "nope.py"), [], workers=2)
    assert main([str(tmp_path / "nope.py"), "--workers", "2"]) == 2
    assert "nope.py: file not found" in capsys.readouterr().err


def test_zero_workers_is_bad_input(tmp_path, isolated_state, capsys):
    script = tmp_path / "s.py"
    script.write_text("print('hi')\n")
    with pytest.raises(UserInputError, match=r"workers: must be >= 1 \(got 0\)"):
        run_script(str(script), [], workers=0)
    # The job's entrypoint and the CLI both exit 2 with one line naming the value, before any
    # Ray is started or any cluster is looked for (none is recorded here).
    assert main([str(script), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "shipyard: error: workers: must be >= 1 (got 0)"
    assert shipyard(["submit", "--script", str(script), "--workers", "0"]) == 2
    assert "--workers: must be >= 1 (got 0)" in capsys.readouterr().err
    assert shipyard(["submit", "--script", str(tmp_path / "nope.py"), "--workers", "2"]) == 2
    assert "--script " + str(tmp_path / "nope.py") + ": file not found" in capsys.readouterr().err
