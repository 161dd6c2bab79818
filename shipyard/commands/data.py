"""`shipyard data synth|prepare`."""

from __future__ import annotations

import argparse

from shipyard.commands.project_args import add_project_argument, load


def register(sub) -> None:
    data = sub.add_parser("data", help="make and prepare corpora")
    cmds = data.add_subparsers(dest="data_command", required=True)

    s = cmds.add_parser("synth", help="write a seeded synthetic labeled corpus")
    s.add_argument("--kind", choices=["text", "tabular"], default="text")
    s.add_argument("--rows", type=int, default=10_000)
    s.add_argument("--classes", type=int, default=2)
    s.add_argument("--language", choices=["en", "zh"], default="en")
    s.add_argument("--duplicate-rate", type=float, default=0.05)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="file to write: .tsv .csv .jsonl or .parquet")
    s.set_defaults(handler=synth)

    p = cmds.add_parser("prepare", help="clean, dedup, split, encode and shard a corpus")
    add_project_argument(p)
    p.add_argument("--force", action="store_true", help="rebuild even if the inputs are unchanged")
    p.add_argument(
        "--extra", action="append", default=[], help="extra labeled rows to merge (Parquet)"
    )
    p.add_argument(
        "--feedback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge the feedback batches `shipyard feedback export` wrote (default: on)",
    )
    p.set_defaults(handler=prepare)


def synth(args: argparse.Namespace) -> int:
    from shipyard.corpus.synth import SynthSpec, write

    spec = SynthSpec(
        kind=args.kind,
        rows=args.rows,
        classes=args.classes,
        language=args.language,
        duplicate_rate=args.duplicate_rate,
        seed=args.seed,
    )
    summary = write(spec, args.out)
    labels = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.labels.items()))
    print(f"wrote {summary.rows:,} rows ({summary.bytes / 1e6:.1f} MB) to {summary.path}: {labels}")
    return 0


def prepare(args: argparse.Namespace) -> int:
    from shipyard.corpus.prepare import format_summary, prepare

    project = load(args)
    result = prepare(
        project,
        force=args.force,
        extra_sources=args.extra,
        feedback=args.feedback,
        announce=_say,
    )
    print(format_summary(result.manifest))
    if result.reused:
        print(f"inputs unchanged: reused the corpus in {result.corpus.path} (--force rebuilds it)")
    else:
        print(f"corpus written to {result.corpus.path}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)  # before Ray Data's progress bars, which go to stderr
