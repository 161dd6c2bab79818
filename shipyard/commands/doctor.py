"""`shipyard doctor`."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("doctor", help="versions, Horovod build flags and cluster resources")
    p.add_argument("--address", help="Ray cluster to inspect (default: an embedded local one)")
    p.add_argument("--no-cluster", action="store_true", help="skip starting/joining Ray")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shipyard.cluster.doctor import diagnose, format_report

    report = diagnose(args.address, check_cluster=not args.no_cluster)
    print(format_report(report))
    return 0 if report.ok else 1
