"""`shipyard cluster up|down|status|env|spec`."""

from __future__ import annotations

import argparse
import sys

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    p = sub.add_parser("cluster", help="a local multi-node Ray cluster, or specs for real ones")
    group = p.add_subparsers(dest="cluster_command", required=True, parser_class=type(p))

    up = group.add_parser("up", help="start a Ray head and worker nodes on this machine")
    up.add_argument("--nodes", type=int, default=2, help="nodes including the head (default 2)")
    up.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each node offers")
    up.add_argument("--gpus-per-node", type=int, default=0, help="GPUs each node offers")
    up.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the dashboard and Jobs API bind to (default 127.0.0.1: this machine only)",
    )
    up.set_defaults(handler=run_up)

    down = group.add_parser("down", help="stop exactly the nodes `cluster up` started")
    down.set_defaults(handler=run_down)

    status = group.add_parser("status", help="nodes, CPUs/GPUs used and free, running jobs")
    status.add_argument("--address", help="dashboard URL (default: the cluster from `up`)")
    status.set_defaults(handler=run_status)

    env = group.add_parser(
        "env",
        help='what Ray\'s own clients need to reach it: eval "$(shipyard cluster env)"',
    )
    env.set_defaults(handler=run_env)

    spec = group.add_parser("spec", help="write a `ray up` config or a KubeRay RayCluster")
    add_project_argument(spec)
    spec.add_argument("--provider", choices=("aws", "gcp", "kubernetes"))
    spec.add_argument("--out", help="file to write (default: print)")
    spec.set_defaults(handler=run_spec)


def run_up(args: argparse.Namespace) -> int:
    from shipyard.cluster.local import connect_hint, state_dir, up

    result = up(args.nodes, args.cpus_per_node, args.gpus_per_node, host=args.host)
    for warning in result.warnings:
        print(f"shipyard: warning: {warning}", file=sys.stderr)
    c = result.cluster
    if result.already_running:
        print(f"a shipyard cluster is already running ({len(c.nodes)} nodes); nothing changed")
    else:
        print(f"started {len(c.nodes)} node(s) on {c.host}, token from {c.auth}")
    nodes = ", ".join(f"{n.name} ({n.cpus} CPU, {n.gpus} GPU)" for n in c.nodes)
    print(f"nodes:                {nodes}; logs in {state_dir() / 'logs'}")
    print(f"dashboard / Jobs API: {c.dashboard_url}")
    print(f"gcs address:          {c.gcs_address}")
    print()
    print("\n".join(connect_hint(c)))
    return 0


def run_down(args: argparse.Namespace) -> int:
    from shipyard.cluster.local import down

    result = down()
    if not result.had_cluster:
        print("no cluster started by shipyard; nothing to stop")
        return 0
    if result.stopped:
        print(f"stopped: {', '.join(result.stopped)}")
    if result.not_running:
        print(f"already gone (cleaned up): {', '.join(result.not_running)}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from shipyard.cluster.local import format_status, status

    print(format_status(status(args.address)))
    return 0


def run_env(args: argparse.Namespace) -> int:
    from shipyard.cluster.local import exports

    print(exports())
    return 0


def run_spec(args: argparse.Namespace) -> int:
    from shipyard.cluster.spec import write_spec

    spec = write_spec(load(args), args.provider, args.out)
    if spec.path:
        print(f"wrote {spec.provider} spec to {spec.path}")
    else:
        print(spec.text, end="")
    return 0
