"""A Serve config file for the project's service: for `serve deploy` or a KubeRay RayService.

The file names an application builder (`shipyard.serving.spec:app`) and its arguments (the
project file and the versions), so the cluster builds exactly the app `shipyard serve` would:
the versions are resolved in the registry when the app is built there, not frozen here.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from shipyard.project import Project, load_project

IMPORT_PATH = "shipyard.serving.spec:app"


def serve_config(
    project: Project,
    project_file: str,
    *,
    model: str | None = None,
    canary: str | None = None,
    canary_percent: float = 10.0,
    variant: str | None = None,
) -> dict[str, Any]:
    """The config as a dict, checked against Ray's `ServeDeploySchema`."""
    from ray.serve.schema import ServeDeploySchema

    s = project.serving
    args = {"project": os.path.abspath(project_file), "model": model or s.model_version}
    if canary:
        args |= {"canary": canary, "canary_percent": canary_percent}
    if variant:
        args["variant"] = variant
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": s.host, "port": s.port},
        "applications": [
            {
                "name": project.name,
                "route_prefix": s.route_prefix,
                "import_path": IMPORT_PATH,
                "args": args,
            }
        ],
    }
    ServeDeploySchema.model_validate(config)
    return config


def write_spec(config: dict[str, Any], out: str) -> str:
    with open(out, "w", encoding="utf-8") as f:
        f.write("# Serve config written by `shipyard serve spec`; deploy with `serve deploy`.\n")
        yaml.safe_dump(config, f, sort_keys=False)
    return out


def app(args: dict[str, Any]):
    """The application builder `serve deploy` calls with the config's `args`."""
    from shipyard.serving.deploy import build_app
    from shipyard.training.model_versions import resolve

    project = load_project(args["project"])
    champion = resolve(project, args.get("model") or project.serving.model_version)
    challenger = resolve(project, args["canary"]) if args.get("canary") else None
    return build_app(
        project,
        champion,
        challenger,
        challenger_percent=float(args.get("canary_percent", 10.0)) if challenger else 0.0,
        variant=args.get("variant"),
    )
