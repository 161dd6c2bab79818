"""What `shipyard data prepare` prints: what runs where before it starts, and then about the
corpus: rows read, dropped, deduplicated, kept, and the rows per split and label."""

from __future__ import annotations


def format_plan(
    name: str, nodes: int, cpus: int, files: int, size: int, rows: int | None = None
) -> str:
    """One line: "preparing corpus demo on 1 node, 2 CPUs: 1 source file, 1.2 MB, 6,000 rows"."""
    where = f"{nodes} node{'s' * (nodes != 1)}, {cpus} CPU{'s' * (cpus != 1)}"
    what = f"{files:,} source file{'s' * (files != 1)}, {_size(size)}"
    if rows is not None:
        what += f", {rows:,} rows"
    return f"preparing corpus {name} on {where}: {what}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def format_summary(manifest: dict) -> str:
    """What `shipyard data prepare` prints: rows read, dropped, deduplicated, per split/label."""
    counts = manifest["counts"]
    lines = [
        f"corpus {manifest['name']}  content {manifest['content_hash'][:12]}",
        f"  read                {counts['read']:>10,}",
    ]
    if "extra_rows" in counts:
        extra = counts["extra_rows"]
        lines.append(f"  of them extra rows  {extra['read']:>10,}  ({extra['kept']:,} kept)")
        if extra.get("contradicting"):
            lines.append(
                f"  contradicting       {extra['contradicting']:>10,}  (feedback gives a source"
                " row another label)"
            )
    for reason, n in sorted(counts["dropped"].items()):
        lines.append(f"  dropped ({reason + ')':<10} {n:>10,}")
    lines.append(f"  exact duplicates    {counts['exact_duplicates']:>10,}")
    if counts["near_duplicates"]:
        lines.append(f"  near duplicates     {counts['near_duplicates']:>10,}")
    lines.append(f"  kept                {counts['kept']:>10,}")
    labels = sorted({lab for s in manifest["splits"].values() for lab in s["labels"]})
    lines.append("  " + f"{'split':<12}{'rows':>10}" + "".join(f"{lab[:12]:>14}" for lab in labels))
    for name, entry in manifest["splits"].items():
        cells = "".join(f"{entry['labels'].get(lab, 0):>14,}" for lab in labels)
        lines.append(f"  {name:<12}{entry['rows']:>10,}{cells}")
    if "vocabulary" in manifest:
        lines.append(f"  vocabulary          {len(manifest['vocabulary']) + 2:>10,} tokens")
    return "\n".join(lines)
