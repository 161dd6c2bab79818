"""The project's `tuning.search_space` as a Ray Tune param space, and back.

A dotted key names a project field (`model.units`); in a trial it lives in the trainer's
`train_loop_config` (`{"model": {"units": ...}}`), which Ray Tune deep-merges over the trainer's
own config. The shape of each dimension was checked when the project loaded
(`shipyard.project.TuningConfig`); `check_space` also builds a whole project for every discrete
value and asks the model whether it can read this corpus, before any trial starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipyard.errors import UserInputError
from shipyard.project import set_dotted

if TYPE_CHECKING:
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.project import Project

LOOP_CONFIG = "train_loop_config"
SOURCE = "tuning.search_space"  # what a bad key's error names (keys are checked on load)


def dimension(spec: dict[str, Any], search: str):
    """One dimension as a Tune domain (`grid` as Tune's grid_search)."""
    from ray import tune

    name, args = next(iter(spec.items()))
    if search == "grid" and name == "choice":
        name = "grid"  # a grid search tries every listed value
    if name == "grid":
        return tune.grid_search(list(args))
    if name == "choice":
        return tune.choice(list(args))
    return getattr(tune, name)(*args)


def param_space(search_space: dict[str, dict], search: str) -> dict:
    """`{"train_loop_config": {"model": {"units": tune.randint(...)}, ...}}` plus the constants
    every trial shares."""
    # Every trial of a sweep would write TensorBoard into one folder; the sweep's curves are its
    # PNGs and MLflow runs instead.
    loop: dict[str, Any] = {"tensorboard_dir": None}
    for key, spec in search_space.items():
        set_dotted(loop, key, dimension(spec, search), SOURCE, parse=False)
    return {LOOP_CONFIG: loop}


def trial_values(config: dict, keys) -> dict[str, Any]:
    """A trial's value of each searched key (dotted), read from its config."""
    out = {}
    for key in keys:
        node: Any = config.get(LOOP_CONFIG, {})
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def check_space(project: Project, corpus: PreparedCorpus | None = None) -> None:
    """Every discrete value builds a valid project (and, with `corpus`, a model that can read
    it); the search method and scheduler can use the space. UserInputError names key and value."""
    from shipyard.errors import ConfigError

    t = project.tuning
    space = t.search_space
    if not space:
        raise UserInputError(
            "tuning.search_space: empty; list the fields to search, e.g."
            " training.learning_rate: {loguniform: [1e-4, 1e-2]}"
        )
    for key, spec in space.items():
        name, args = next(iter(spec.items()))
        where = f"tuning.search_space.{key}"
        if t.search == "grid" and name not in ("grid", "choice"):
            raise UserInputError(
                f"{where}: search grid tries listed values; {name} is a range (got {spec!r}):"
                " use {grid: [...]} or search random/optuna"
            )
        if t.search == "optuna" and name == "grid":
            raise UserInputError(
                f"{where}: optuna samples values, it does not try a grid (got {spec!r}):"
                " use {choice: [...]} or search grid/random"
            )
        if t.scheduler == "pbt" and not key.startswith("training."):
            raise UserInputError(
                f"{where}: pbt copies one trial's checkpoint into another, so it can only"
                f" change training fields, not the model's shape (got {spec!r})"
            )
        if t.scheduler == "pbt" and key == "training.epochs":
            raise UserInputError(f"{where}: pbt trials all run training.epochs (got {spec!r})")
        values = list(args) if name in ("choice", "grid") else []
        for value in values:
            try:
                trial = project.with_overrides({key: value})
            except ConfigError as exc:
                raise UserInputError(
                    f"{where}: {value!r} makes an invalid project: {'; '.join(exc.problems)}"
                ) from None
            if corpus is not None and key.startswith("model."):
                from shipyard.training.models import model_kind

                try:
                    model_kind(trial.model, corpus)
                except UserInputError as exc:
                    raise UserInputError(f"{where}: {value!r}: {exc}") from None


def mutations(search_space: dict[str, dict]) -> dict:
    """PBT's `hyperparam_mutations`: the searched training fields, nested like the config.

    Listed values (`choice`, `grid`) stay a list, which PBT explores by moving to a neighbour or
    resampling from the list; a range is a Tune domain, which PBT perturbs by a factor (a Tune
    `choice` would be perturbed like a range, off its listed values, and a `grid_search` would be
    read as a nested config)."""
    loop: dict[str, Any] = {}
    for key, spec in search_space.items():
        name, args = next(iter(spec.items()))
        value = list(args) if name in ("choice", "grid") else dimension(spec, "random")
        set_dotted(loop, key, value, SOURCE, parse=False)
    return {LOOP_CONFIG: loop}
