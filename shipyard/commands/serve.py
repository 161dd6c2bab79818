"""`shipyard serve PROJECT [MODEL]` and `shipyard serve down|status|promote|rollback PROJECT`."""

from __future__ import annotations

import argparse
import json

from shipyard.commands.project_args import load
from shipyard.errors import UserInputError
from shipyard.verbosity import quiet_engines, quiet_serve

ACTIONS = {
    "down": "stop the project's service",
    "status": "arms, versions, traffic split and the canary's verdict",
    "promote": "send all traffic to the challenger and make it the registry's champion",
    "rollback": "send all traffic back to the champion",
    "spec": "write a Serve config file (for serve deploy or a KubeRay RayService)",
}


def register(sub) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a registered model over HTTP (Ray Serve); or: serve down|status|promote|"
        "rollback PROJECT",
        description="shipyard serve PROJECT.yaml [MODEL[@alias|:version]] starts the service;"
        " " + "; ".join(f"shipyard serve {a} PROJECT.yaml: {h}" for a, h in ACTIONS.items()),
    )
    s.add_argument("project", metavar="[ACTION] PROJECT", help="project file, after an action")
    s.add_argument("model", nargs="?", help="version to serve (default: serving.model_version)")
    s.add_argument("--canary", metavar="MODEL", help="a second version taking part of the traffic")
    s.add_argument("--canary-percent", type=float, default=10.0, help="its share (default 10)")
    s.add_argument(
        "--variant", help="full, tflite_float16 or tflite_int8 (default serving.variant)"
    )
    s.add_argument("--no-batching", action="store_true", help="one request per model call")
    s.add_argument("--detach", action="store_true", help="return once deployed (embedded: no)")
    s.add_argument("--json", action="store_true", help="status as JSON")
    s.add_argument("-o", "--output", default="serve_config.yaml", help="spec: the file to write")
    s.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    if args.project in ACTIONS:
        if args.model is None:
            raise UserInputError(f"shipyard serve {args.project}: give the project file")
        action, args.project = args.project, args.model
        args.model = None
        return _action(action, args)
    quiet_engines()
    quiet_serve()
    from shipyard.serving.deploy import deploy, serve_forever

    project = load(args)
    service = deploy(
        project,
        args.model,
        canary=args.canary,
        canary_percent=args.canary_percent,
        variant=args.variant,
        batching=not args.no_batching,
        announce=print,
    )
    for line in service.describe():
        print(line)
    if service.embedded and not args.detach:
        print("  stop:     Ctrl-C, or shipyard serve down " + args.project)
        serve_forever(project, service)
    return 0


def _action(action: str, args: argparse.Namespace) -> int:
    quiet_engines()
    from shipyard.serving import deploy

    project = load(args)
    if action == "spec":
        from shipyard.serving.spec import serve_config, write_spec

        config = serve_config(
            project,
            args.project,
            canary=args.canary,
            canary_percent=args.canary_percent,
            variant=args.variant,
        )
        written = write_spec(config, args.output)
        print(f"wrote {written}; deploy it with: serve deploy {written}")
        return 0
    if action == "down":
        print(deploy.down(project))
        return 0
    deploy.connect_to_service(project)
    if action == "status":
        state = deploy.status_of(project)
        print(json.dumps(state, indent=1) if args.json else deploy.format_status(state))
    elif action == "promote":
        print(deploy.promote(project))
    elif action == "rollback":
        deploy.set_traffic(project, 0.0)
        print("all traffic goes to the champion")
    return 0
