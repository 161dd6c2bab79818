"""Corpus preparation: shipyard (Ray Data) against a plain single-process pandas pipeline.

Both run the same steps on the same synthetic TSV (`shipyard.corpus.synth`, ~125 bytes a doc):
read; NFKC, control-character and whitespace cleaning; exact dedup on the lowercased text; a
seeded stratified 80/10/10 split; a top-k vocabulary from train; fixed-length int32 ids; Parquet
per split. Runs are interleaved (pandas, shipyard, pandas, ...) so both see the same machine load,
and the medians are compared.

Memory is the peak over the run of the summed RSS (and PSS, which splits shared pages such as
Ray's object store fairly between processes) of the whole process tree: for shipyard this process
and every Ray process it started (GCS, raylet, workers); for pandas its own subprocess.

    .venv/bin/python bench/corpus.py                 # 1,000,000 docs, 3 runs each
    .venv/bin/python bench/corpus.py --rows 3000000  # where Ray's fixed cost stops dominating
    .venv/bin/python bench/corpus.py --rows 100000   # a quick run

The pandas baseline's memory grows with the corpus (it holds every row, ~2.8 GB at 1M docs) while
shipyard's stays flat (~1.9-2.1 GB of PSS from 1M to 3M docs), about 1.1 GB of it the embedded Ray
cluster itself (GCS, raylet, agents, Ray Data's stats and autoscaling actors) and the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SEED, TRAIN, VALIDATION = 1, 0.8, 0.1
VOCAB_SIZE, SEQUENCE_LENGTH, MAX_CHARS = 20_000, 64, 5_000
PUNCT = r"[\p{P}\p{S}]"  # the word tokenizer's punctuation, as in shipyard.corpus.tokenizer


# -- the pandas baseline (runs in its own process: `--baseline IN OUT`) --------------------------
def pandas_pipeline(source: str, out: str) -> dict:
    """The same steps, written the way one would with pandas on one machine.

    Strings are pandas' pyarrow-backed `str`, so the `.str` methods run Arrow's C++ kernels (RE2
    regexes, NFKC), which is what a pandas 3 user gets by default.
    """
    import csv

    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_csv(source, sep="\t", quoting=csv.QUOTE_NONE, dtype="str", keep_default_na=False)
    read = len(df)
    text = df["text"].str.normalize("NFKC")
    text = text.str.replace(r"\p{Cf}+", "", regex=True)
    text = text.str.replace(r"[\p{Cc}\p{Z}]+", " ", regex=True).str.strip(" ")
    df = df.assign(text=text)
    df = df[(text.str.len() >= 1) & (text.str.len() <= MAX_CHARS) & (df["label"] != "")]
    df = df[~df["text"].str.lower().duplicated()]
    # Seeded stratified split: shuffle, then cut each label at round(n * fraction).
    df = df.sample(frac=1.0, random_state=SEED)
    rank = df.groupby("label").cumcount()
    size = df.groupby("label")["label"].transform("size")
    first, second = (size * TRAIN).round(), (size * (TRAIN + VALIDATION)).round()
    df["split"] = np.where(rank < first, "train", np.where(rank < second, "validation", "test"))
    tokens = df["text"].str.lower().str.replace(PUNCT, " ", regex=True).str.split()
    counts = tokens[df["split"] == "train"].explode().value_counts()
    counts = counts.rename_axis("token").reset_index(name="n")
    counts = counts.sort_values(["n", "token"], ascending=[False, True])
    vocab = counts["token"].head(VOCAB_SIZE - 2).tolist()
    index = {tok: i + 2 for i, tok in enumerate(vocab)}  # 0 = pad, 1 = out of vocabulary
    ids = np.zeros((len(df), SEQUENCE_LENGTH), dtype=np.int32)
    for i, row in enumerate(tokens):
        row = [index.get(t, 1) for t in row[:SEQUENCE_LENGTH]]
        ids[i, : len(row)] = row
    labels = {lab: i for i, lab in enumerate(sorted(df["label"].unique()))}
    df = df.assign(ids=list(ids), label=df["label"].map(labels).astype("int32"))
    for name, part in df.groupby("split"):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        part.drop(columns="split").to_parquet(os.path.join(out, name, "part-0.parquet"))
    return {"seconds": time.perf_counter() - t0, "read": read, "kept": len(df)}


# -- memory sampling -----------------------------------------------------------------------------
class TreeMemory:
    """Peak summed RSS and PSS of a process and all its descendants, sampled in a thread; `top`
    keeps the largest processes (name, RSS MiB) at the RSS peak, to show where memory goes."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.top: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            rss = pss = 0
            sizes = []
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    sizes.append((proc.name(), info.rss >> 20))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += info.pss
            if rss > self.peak_rss:
                self.peak_rss, self.top = rss, sorted(sizes, key=lambda x: -x[1])[:8]
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.interval)


# -- the runs ------------------------------------------------------------------------------------
def run_pandas(source: str, out: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--baseline", source, out],
        stdout=subprocess.PIPE,
        text=True,
    )
    with TreeMemory(proc.pid) as mem:
        stdout, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"pandas baseline failed (exit {proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_rss": mem.peak_rss, "peak_pss": mem.peak_pss, "top": mem.top}


def run_shipyard(project) -> dict:
    from shipyard.corpus.prepare import prepare

    with TreeMemory(os.getpid()) as mem:
        t0 = time.perf_counter()
        result = prepare(project, force=True)
        seconds = time.perf_counter() - t0
    counts = result.manifest["counts"]
    return {
        "seconds": seconds,
        "read": counts["read"],
        "kept": counts["kept"],
        "peak_rss": mem.peak_rss,
        "peak_pss": mem.peak_pss,
        "top": mem.top,
        "content_hash": result.manifest["content_hash"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", help="where input and outputs go (default: a temp folder)")
    parser.add_argument(
        "--warm-workers",
        type=int,
        metavar="N",
        help="keep up to N idle Ray workers (RAY_num_workers_soft_limit; Ray's default is one per"
        " CPU, which evicts the workers that already imported TensorFlow)",
    )
    parser.add_argument("--baseline", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline:
        print(json.dumps(pandas_pipeline(*args.baseline)))
        return 0

    from shipyard.cluster import connect
    from shipyard.corpus import synth
    from shipyard.project import validate_project

    work = Path(args.workdir or tempfile.mkdtemp(prefix="shipyard-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"synth-{args.rows}.tsv"
    if not source.exists():
        summary = synth.write(synth.SynthSpec(rows=args.rows, seed=SEED), source)
        print(f"input: {summary.rows:,} docs, {summary.bytes / 1e6:.1f} MB -> {source}")
    project = validate_project(
        {
            "name": "bench",
            "workdir": str(work / "shipyard"),
            "data": {
                "kind": "text",
                "source": str(source),
                "format": "tsv",
                "quoting": False,
                "dedup": "exact",
                "tokenizer": "word",
                "vocab_size": VOCAB_SIZE,
                "sequence_length": SEQUENCE_LENGTH,
                "max_chars": MAX_CHARS,
                "seed": SEED,
                "splits": {
                    "train": TRAIN,
                    "validation": VALIDATION,
                    "test": 1 - TRAIN - VALIDATION,
                },
            },
        }
    )
    if args.warm_workers:
        os.environ["RAY_num_workers_soft_limit"] = str(args.warm_workers)  # noqa: SIM112 (Ray reads this spelling)
    resources = connect()  # an embedded local Ray on all cores, started once (not timed)
    with TreeMemory(os.getpid()) as idle:
        time.sleep(2)
    print(f"idle Ray process tree: {idle.peak_rss / 2**20:,.0f} MiB RSS", flush=True)
    runs: dict[str, list[dict]] = {"pandas": [], "shipyard": []}
    for i in range(args.runs):
        order = ("pandas", "shipyard") if i % 2 == 0 else ("shipyard", "pandas")
        for name in order:
            if name == "pandas":
                result = run_pandas(str(source), str(work / "pandas"))
            else:
                result = run_shipyard(project)
            runs[name].append(result)
            print(
                f"run {i + 1} {name:<9} {result['seconds']:7.2f} s"
                f"  {args.rows / result['seconds']:>9,.0f} docs/s"
                f"  peak RSS {result['peak_rss'] / 2**20:7,.0f} MiB"
                f"  PSS {result['peak_pss'] / 2**20:7,.0f} MiB  kept {result['kept']:,}",
                flush=True,
            )
    summary = {}
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        summary[name] = {
            "median_seconds": seconds,
            "median_docs_per_s": args.rows / seconds,
            "peak_rss_mib": max(r["peak_rss"] for r in results) / 2**20,
            "peak_pss_mib": max(r["peak_pss"] for r in results) / 2**20,
        }
    speedup = summary["shipyard"]["median_docs_per_s"] / summary["pandas"]["median_docs_per_s"]
    rss_ratio = summary["shipyard"]["peak_rss_mib"] / summary["pandas"]["peak_rss_mib"]
    pss_ratio = summary["shipyard"]["peak_pss_mib"] / summary["pandas"]["peak_pss_mib"]
    for name, s in summary.items():
        print(
            f"{name:<9} median {s['median_docs_per_s']:>9,.0f} docs/s"
            f"  peak RSS {s['peak_rss_mib']:7,.0f} MiB  peak PSS {s['peak_pss_mib']:7,.0f} MiB"
        )
    print(
        f"shipyard/pandas: {speedup:.2f}x docs/s (target >= 1.5x);"
        f" peak memory {rss_ratio:.2f}x RSS, {pss_ratio:.2f}x PSS (target <= 0.5x)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"corpus-{args.rows}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "input_bytes": source.stat().st_size,
                "cpus": resources.get("CPU"),
                "warm_workers": args.warm_workers,
                "idle_ray_rss_mib": idle.peak_rss / 2**20,
                "load_average": os.getloadavg(),
                "runs": runs,
                "summary": summary,
                "speedup": speedup,
                "memory_ratio_rss": rss_ratio,
                "memory_ratio_pss": pss_ratio,
            },
            indent=1,
        )
    )
    print(f"results: {out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
