"""A bad search space exits 2 naming the key and the value, before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shipyard import cli
from shipyard.errors import ConfigError, UserInputError
from shipyard.project import load_project, validate_project
from shipyard.tuning.space import check_space, mutations, param_space, trial_values

BASE = {"name": "t", "data": {"synthetic": {"rows": 100}}}


def write(tmp_path: Path, tuning: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tuning": tuning}), encoding="utf-8")
    return path


@pytest.fixture
def sweep_cli():
    """`shipyard sweep` through the real CLI entry point."""
    assert "sweep" in cli.COMMAND_MODULES
    return cli.main


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"model.kind": {"choice": ["bogus"]}}, "tuning.search_space.model.kind: 'bogus' is not"),
        ({"model.units": {"randint": [16, 8]}}, "model.units: empty or inverted range [16, 8]"),
        ({"model.units": {"randint": [0, 8]}}, "model.units: 0 is not a value model.units"),
        ({"model.unitz": {"choice": [8]}}, "tuning.search_space.model.unitz: unknown field"),
        ({"model.units": {"uniform": [4, 8]}}, "model.units: 5.48 is not a value"),
        ({"model.dropout": {"uniform": [0.1, 1.0]}}, "model.dropout: 1.0 is not a value"),
        ({"training.learning_rate": {"loguniform": [0, 1]}}, "learning_rate: loguniform takes"),
        ({"training.learning_rate": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
        ({"training.workers": {"choice": [1, 2]}}, "training.workers: cannot be searched"),
        ({"data.vocab_size": {"choice": [100]}}, "data.vocab_size: not a searchable field"),
        ({"model.units": {"choice": []}}, "model.units: choice takes a non-empty list"),
    ],
)
def test_bad_space_exits_2_naming_key_and_value(tmp_path, sweep_cli, capsys, space, expected):
    path = write(tmp_path, {"search_space": space})
    with pytest.raises(ConfigError) as err:
        load_project(path)
    assert expected in str(err.value)
    assert f"(got {next(iter(space.values()))!r})" in str(err.value)
    assert sweep_cli(["sweep", str(path)]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tuning", "expected"),
    [
        ({"search": "grid", "search_space": {"model.units": {"randint": [4, 8]}}}, "randint is"),
        ({"search": "optuna", "search_space": {"model.units": {"grid": [4, 8]}}}, "optuna samples"),
        (
            {
                "scheduler": "pbt",
                "search": "random",
                "search_space": {"model.units": {"grid": [4]}},
            },
            "pbt copies one trial's checkpoint",
        ),
        ({"search_space": {}}, "tuning.search_space: empty"),
    ],
)
def test_space_the_search_cannot_use_is_refused(tmp_path, tuning, expected):
    project = load_project(write(tmp_path, tuning))
    with pytest.raises(UserInputError, match=expected):
        check_space(project)


def test_goals_are_metrics_trials_report(tmp_path, sweep_cli, capsys):
    space = {"training.learning_rate": {"loguniform": [1e-4, 1e-2]}}
    path = write(tmp_path, {"metric": "val_acuracy", "search_space": space})
    assert sweep_cli(["sweep", str(path)]) == 2
    assert "tuning.metric: not a metric trials report each epoch (got 'val_acuracy')" in (
        capsys.readouterr().err
    )
    multi = {
        "objectives": [{"val_accuracy": "max"}, {"latency_ms": "min"}],
        "search_space": space,
    }
    path = write(tmp_path, multi)  # scheduler asha (the default) cannot rank by two metrics
    assert sweep_cli(["sweep", str(path)]) == 2
    assert (
        "multi-objective sweep (tuning.objectives) needs scheduler fifo" in capsys.readouterr().err
    )


def test_constraints_and_objectives_parse():
    p = validate_project(
        {
            **BASE,
            "tuning": {
                "objectives": [{"val_accuracy": "max"}, {"latency_ms": "min"}],
                "constraints": {"latency_ms": "<= 5"},
            },
        }
    )
    assert p.tuning.goals == [("val_accuracy", "max"), ("latency_ms", "min")]
    assert p.tuning.parsed_constraints() == [("latency_ms", "<=", 5.0)]
    with pytest.raises(ConfigError, match=r"constraints: latency_ms: expected a comparison"):
        validate_project({**BASE, "tuning": {"constraints": {"latency_ms": "5ms"}}})


def test_dotted_keys_map_into_the_train_loop_config():
    from ray import tune

    space = param_space(
        {"model.units": {"grid": [4, 8]}, "training.learning_rate": {"loguniform": [1e-4, 1e-2]}},
        "random",
    )
    loop = space["train_loop_config"]
    assert loop["model"]["units"] == tune.grid_search([4, 8])
    assert isinstance(loop["training"]["learning_rate"], tune.search.sample.Float)
    config = {"train_loop_config": {"model": {"units": 8}, "training": {"learning_rate": 0.01}}}
    assert trial_values(config, ["model.units", "training.learning_rate"]) == {
        "model.units": 8,
        "training.learning_rate": 0.01,
    }


def test_pbt_explores_listed_values_within_the_list():
    """PBT moves a listed value to a neighbour in its list and perturbs a range by a factor;
    a `grid_search` handed to it would be read as a nested config (a TypeError mid-sweep)."""
    import random

    from ray import tune
    from ray.tune.schedulers.pbt import _explore

    space = {
        "training.batch_size": {"choice": [16, 32, 64]},
        "training.learning_rate": {"grid": [1e-3, 1e-2]},
        "training.warmup_epochs": {"randint": [0, 3]},
    }
    explored = mutations(space)["train_loop_config"]["training"]
    assert explored["batch_size"] == [16, 32, 64] and explored["learning_rate"] == [1e-3, 1e-2]
    assert isinstance(explored["warmup_epochs"], tune.search.sample.Integer)
    random.seed(0)
    config = {"train_loop_config": {"training": {"batch_size": 32, "learning_rate": 1e-2}}}
    config["train_loop_config"]["training"]["warmup_epochs"] = 1
    for _ in range(20):
        new, _ = _explore(config, mutations(space), 0.25, [1.2, 0.8], None)
        training = new["train_loop_config"]["training"]
        assert training["batch_size"] in (16, 32, 64) and training["learning_rate"] in (1e-3, 1e-2)
