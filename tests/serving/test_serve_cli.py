"""`shipyard serve` refusals (exit 2 before anything starts) and `serve spec` vs Ray's schema."""

from __future__ import annotations

import pytest
import yaml

from shipyard.cli import main

pytestmark = pytest.mark.slow


def _project_file(registered) -> str:
    return registered.project.source_file


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "tflite_int4"], "--variant: models:/served/1 has no variant 'tflite_int4'"),
        (["--canary", "served:1"], "--canary: served:1 is models:/served/1, the version already"),
        (["--canary", "served:2", "--canary-percent", "150"], "--canary-percent: must be in"),
        (["served:9"], "served"),
    ],
)
def test_bad_serve_requests_exit_2_naming_the_problem(registered, capsys, args, message):
    assert main(["serve", _project_file(registered), *args]) == 2
    assert message in capsys.readouterr().err


def test_status_without_a_service_says_so(registered, capsys):
    assert main(["serve", "status", _project_file(registered)]) == 2
    assert "no service 'served' runs here" in capsys.readouterr().err


def test_spec_is_a_valid_serve_config_that_builds_the_app(registered, tmp_path, capsys):
    from ray.serve.schema import ServeDeploySchema

    out = tmp_path / "serve.yaml"
    code = main(
        ["serve", "spec", _project_file(registered), "--canary", "served:2", "-o", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["name"] == "served" and app["args"]["canary"] == "served:2"
    assert config["http_options"] == {"host": "127.0.0.1", "port": registered.project.serving.port}

    # The builder Serve would import resolves the versions and binds the ingress and both arms.
    from shipyard.serving.spec import app as builder

    application = builder(app["args"])
    assert type(application).__name__ == "Application"
