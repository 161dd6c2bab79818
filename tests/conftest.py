"""Fixtures shared by every test folder: one local Ray per session, the real datasets, projects.

- `ray_local`: a private 2-CPU Ray for the whole session (started on first use).
- `shared_data`: the real datasets in `<repo>/../shared/data`, or a skip with the reason.
- `project_factory` / `session_project_factory`: write a project dict as YAML and load it like
  the CLI does, so tests exercise the real loader and path resolution.

One driver holds one Ray connection, so tests that start their own Ray (`ray.cluster_utils.Cluster`,
`ray start`, a module's own `ray.init`) cannot run while `ray_local` is up. Collection therefore
moves every test that uses `ray_local` after all the others (order is kept within each group), and
the session cluster starts only when the first of them runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.project import Project, load_project
from shipyard.training.ray_train_v1 import select_v1

# Before any test module imports ray.train: HorovodTrainer needs Ray Train's V1 API.
select_v1()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
LAST_SERVING_TEST = pytest.StashKey[str | None]()


def pytest_collection_modifyitems(config, items: list[pytest.Item]) -> None:
    """Tests on the session Ray run last, after the ones that bring their own cluster; `gpu`
    tests are skipped on machines without a GPU."""
    items.sort(key=lambda item: "ray_local" in getattr(item, "fixturenames", ()))
    serving = [item for item in items if "serve_port" in getattr(item, "fixturenames", ())]
    config.stash[LAST_SERVING_TEST] = serving[-1].nodeid if serving else None
    if not _has_gpu():
        skip = pytest.mark.skip(reason="no GPU on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.hookimpl(trylast=True)  # after the item's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop Serve after the last test that uses it (the session's `serve_port`): its controller
    and proxy keep polling, and the training and tuning tests after them want the CPU."""
    if item.nodeid == item.config.stash.get(LAST_SERVING_TEST, None):
        import ray

        if ray.is_initialized():
            from ray import serve

            serve.shutdown()


def _has_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/dxg").exists()


@pytest.fixture
def two_node_cluster(monkeypatch):
    """Two real raylets (1 CPU each) on this machine via `ray.cluster_utils.Cluster`.

    The cluster records its address in a private temp dir (where no later bare `ray.init()` can
    find it) and every node stays on loopback (Ray otherwise swaps 127.0.0.1 for the machine's
    network address, the same switch `shipyard cluster up` sets for its head).
    """
    import shutil
    import tempfile

    import ray
    import ray._private.ray_constants
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    ray_tmp = tempfile.mkdtemp(prefix="sy-")  # short: Ray's socket paths live below it
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **loopback})
    try:
        cluster.add_node(num_cpus=1, **loopback)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=True)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray with 2 CPUs, shared by the session; shut down at the end.

    `address="local"` always starts a new cluster: a bare `ray.init()` would join whatever
    `ray start` cluster /tmp/ray/ray_current_cluster points at (another engineer's, or a dead one).
    """
    import logging

    import ray
    import ray.data

    if ray.is_initialized():  # a test that started its own Ray and did not shut it down
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # pytest captures the output anyway: bars only cost time, and Ray Data's debug log (meant for
    # its own log file) would bury a failure's report in operator metrics.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`<repo>/../shared/data` (read-only real datasets; refer to files there, never copy them)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent: real-dataset tests run in CI, where it exists")
    return SHARED_DATA


class ProjectFactory:
    """`make(raw)` writes `raw` (a project dict) to `<folder>/<name>.yaml` and loads it.

    `name` defaults to "test" and `workdir` to `<folder>/<name>`, so two projects with different
    names in one test get separate corpora. Relative paths in `raw` resolve against `folder`.
    """

    def __init__(self, folder: Callable[[], Path]):
        self._folder = folder

    def __call__(self, raw: dict[str, Any], **overrides: Any) -> Project:
        raw = {**raw, **overrides}
        raw.setdefault("name", "test")
        folder = self._folder()
        raw.setdefault("workdir", str(folder / raw["name"]))
        file = folder / f"{raw['name']}.yaml"
        file.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return load_project(file)


@pytest.fixture
def project_factory(tmp_path: Path) -> ProjectFactory:
    """Projects in this test's tmp_path."""
    return ProjectFactory(lambda: tmp_path)


@pytest.fixture(scope="session")
def session_project_factory(tmp_path_factory) -> ProjectFactory:
    """Projects for module- or session-scoped fixtures; each call gets a fresh folder."""
    return ProjectFactory(lambda: tmp_path_factory.mktemp("project"))


# -- a tiny text corpus and a model trained on it, shared by the training and serving tests ------
@pytest.fixture(scope="session")
def text_corpus(ray_local, session_project_factory):
    """The tiny text project (tests/trained_models.py) and its prepared corpus."""
    from trained_models import TEXT_PROJECT

    from shipyard.corpus.prepare import prepare

    project = session_project_factory(TEXT_PROJECT)
    return project, prepare(project).corpus


@pytest.fixture(scope="session")
def text_run(text_corpus, tmp_path_factory):
    """An LSTM trained on it in this process (a `trained_models.Trained`)."""
    from trained_models import train_in_process

    project, corpus = text_corpus
    run_dir = tmp_path_factory.mktemp("runs") / "tiny_text-run"
    return train_in_process(project, corpus, run_dir)
