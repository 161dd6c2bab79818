"""Serving throughput and latency: shipyard on Ray Serve (batched, unbatched) vs plain FastAPI.

    (a) shipyard batched    `shipyard.serving.deploy.deploy(project)`: Serve's proxy, the FastAPI
                            ingress, `serving.min_replicas = max_replicas` model replicas with
                            `@serve.batch` on the export's compiled signature
    (b) shipyard unbatched  the same with `deploy(..., batching=False)`
    (c) plain FastAPI       one uvicorn worker that loads the same export with
                            `tf.saved_model.load` and calls its serving signature once per request
                            (a sync endpoint, as a user would write it)

All three serve one model, trained here in-process on the SMS spam corpus (../shared/data; the
synthetic corpus with --synthetic or when it is absent) and published with the real pipeline
(`shipyard.training.publish.publish`), so the served artifact is what shipyard serves. Every
request POSTs `{"inputs": [<one real SMS text>]}` (rotating through 64 texts) to `/v1/predict`.

The load generator is wrk (Debian's, with a Lua script; 1 thread by default, so it leaves the
server its CPUs) or, without wrk, a Python asyncio client in its own process; the output says
which. For each target and 1, 8 and 32 concurrent connections: a warm-up, then --seconds of
measurement; --repeats rounds interleave the targets (the order rotates each round) so drift in a
shared machine's load hits every target alike; the report is the median of the rounds' req/s and
p50/p95/p99. Any non-200 response is counted and reported (there must be none). Memory: the RSS
of the Serve replica processes (model replicas, ingress, proxy) and of the uvicorn process.

Targets at 32 clients: (a) >= 3x (b) and (a) >= 1.5x (c) in req/s, (a)'s p99 <= 2x (c)'s.

    .venv/bin/python bench/serving.py                          # ~8 min on 2 cores
    .venv/bin/python bench/serving.py --replicas 2             # 2 model replicas (1 CPU each)
    .venv/bin/python bench/serving.py --targets a,c --set serving.max_batch_size=8
    .venv/bin/python bench/serving.py --proxy-modes            # + (a), (b) direct: ~10 min

--proxy-modes [direct,ha_proxy] also measures (a) and (b), interleaved, in each of Serve's modes,
each in a fresh process with its own Ray (Serve reads the mode when it starts): `direct` is
`serving.ingress: direct` on RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (the ingress replica answers HTTP
itself), `ha_proxy` RAY_SERVE_ENABLE_HA_PROXY=1 (refused by shipyard unless serving.host is all
interfaces: --set serving.host=0.0.0.0). The targets are then checked for each mode too.
Results go to bench/results/serving-<time>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SMS = REPO.parent / "shared" / "data" / "sms_spam_collection" / "SMSSpamCollection"
EXAMPLE = REPO / "examples" / "sms_spam.yaml"
NAMES = {"a": "(a) shipyard batched", "b": "(b) shipyard unbatched", "c": "(c) plain FastAPI"}
# mode: (the environment its fresh Ray starts with, serving overrides)
PROXY_MODES = {
    "direct": ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, ["serving.ingress=direct"]),
    "ha_proxy": ({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, []),
}
SYNTHETIC_TEXTS = [
    "win a free prize now, call to claim your reward",
    "see you at lunch tomorrow, I will bring the notes",
    "urgent: your account has been selected for a cash bonus",
    "are we still on for the movie tonight?",
]


# -- the model ------------------------------------------------------------------------------------
def project_raw(args) -> dict:
    import yaml

    serving = {
        "host": "127.0.0.1",
        "port": args.port,
        "min_replicas": args.replicas,
        "max_replicas": args.replicas,
    }
    training = {"workers": 1, "epochs": args.epochs, "batch_size": 32}
    if args.synthetic:
        return {
            "name": "bench_serving",
            "workdir": str(args.workdir),
            "data": {
                "synthetic": {"rows": 4000, "seed": 11},
                "vocab_size": 4000,
                "sequence_length": 48,
            },
            "model": {"kind": "lstm_classifier", "embedding_dim": 32, "units": 32},
            "training": {**training, "learning_rate": 0.005},
            "serving": serving,
        }
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["name"] = "bench_serving"
    raw["workdir"] = str(args.workdir)
    raw["data"]["source"] = str(SMS)
    raw["training"] = {**raw["training"], **training}
    raw["serving"] = serving
    return raw


def load_project(args):
    from shipyard.project import parse_override_value, validate_project

    project = validate_project(project_raw(args), "bench")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = parse_override_value(value)
    return project.with_overrides(overrides) if overrides else project


def request_texts(args, n: int = 64) -> list[str]:
    if args.synthetic:
        return SYNTHETIC_TEXTS
    texts = []
    with open(SMS, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            text = row[1].strip() if len(row) > 1 else ""
            if text and len(text) <= 400 and text not in texts:
                texts.append(text)
            if len(texts) >= n:
                break
    return texts


def trained_model(project, reuse: bool) -> tuple[str, dict]:
    """The export path of the project's champion: trained and published now unless `reuse`."""
    from shipyard.training.model_versions import artifact_path, resolve

    if reuse:
        version = resolve(project, "champion")
        return artifact_path(project, version), {"reused": version.uri}
    sys.path.insert(0, str(REPO / "tests"))
    from trained_models import train_in_process

    from shipyard.corpus.prepare import prepare
    from shipyard.training.publish import publish

    started = time.perf_counter()
    corpus = prepare(project).corpus
    trained = train_in_process(project, corpus, Path(project.runs_dir) / "bench-run")
    published = publish(project, trained.result)
    info = {
        "uri": published.version.uri,
        "train_rows": corpus.rows("train"),
        "test_accuracy": trained.result.metrics.get("test_accuracy"),
        "export_bytes": published.export.bytes,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return published.export.path, info


# -- (c) the plain FastAPI baseline ---------------------------------------------------------------
BASELINE_APP = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    export, port = sys.argv[1], int(sys.argv[2])
    meta = json.load(open(os.path.join(export, "signature.json")))
    for name in meta.get("op_libraries") or []:
        __import__(name)
    labels = meta["labels"]
    loaded = tf.saved_model.load(os.path.join(export, "saved_model"))
    fn = loaded.signatures[meta.get("serving_signature", "serving_default")]
    app = FastAPI()

    class PredictRequest(BaseModel):
        inputs: list[str]

    @app.post("/v1/predict")
    def predict(body: PredictRequest):
        probs = fn(text=tf.constant(body.inputs))["probs"].numpy()
        if probs.shape[1] == 1:
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        return {
            "predictions": [
                {
                    "label": labels[int(np.argmax(p))],
                    "probabilities": {k: float(v) for k, v in zip(labels, p)},
                }
                for p in probs
            ]
        }

    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning")
    """
)


def start_baseline(export: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", BASELINE_APP, export, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/v1/predict"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the FastAPI baseline exited:\n{proc.stderr.read()[-3000:]}")
        try:
            check(url, ["hello"], timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the FastAPI baseline did not answer within 120 s")


# -- load ----------------------------------------------------------------------------------------
def check(url: str, texts: list[str], timeout: float = 30) -> dict:
    """One prediction per text, each must be a 200 with a label."""
    import urllib.request

    for text in texts[:4]:
        req = urllib.request.Request(
            url,
            data=json.dumps({"inputs": [text]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
            if resp.status != 200 or not body["predictions"][0]["label"]:
                raise RuntimeError(f"{url}: unexpected answer {resp.status} {body}")
    return body


WRK_SCRIPT = """
local bodies = {%s}
local counter = 0
local non200 = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%f, "p95_us": %%f, ' ..
    '"p99_us": %%f, "mean_us": %%f, "non_200": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.mean, bad, e.connect, e.read, e.write, e.timeout))
end
"""


def wrk_script(texts: list[str], folder: str) -> str:
    bodies = ", ".join(f"[==[{json.dumps({'inputs': [t]})}]==]" for t in texts)
    path = os.path.join(folder, "post.lua")
    Path(path).write_text(WRK_SCRIPT % bodies, encoding="utf-8")
    return path


def run_wrk(url: str, clients: int, seconds: float, script: str, threads: int) -> dict:
    cmd = [
        "wrk",
        f"-t{min(threads, clients)}",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        script,
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("WRKJSON "))
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p95_ms": r["p95_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "requests": r["requests"],
        "non_200": r["non_200"] + errors,
        "socket_errors": errors,
    }


async def _python_load(url: str, clients: int, seconds: float, texts: list[str]) -> dict:
    """Keep-alive HTTP/1.1 over raw asyncio streams, `clients` connections in a closed loop."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
    heads = [
        (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    latencies: list[float] = []
    bad = 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        n = i
        while time.perf_counter() < stop:
            started = time.perf_counter()
            writer.write(heads[n % len(heads)])
            n += 1
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status_line.split()[1:2] != [b"200"]:
                bad += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "rps": len(latencies) / wall,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "requests": len(latencies),
        "non_200": bad,
        "socket_errors": 0,
    }


def run_python_load(url: str, clients: int, seconds: float, texts: list[str]) -> dict:
    spec = json.dumps({"url": url, "clients": clients, "seconds": seconds, "texts": texts})
    done = subprocess.run(
        [sys.executable, __file__, "--load-child", spec], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Load:
    def __init__(self, args, texts: list[str], folder: str):
        self.args, self.texts = args, texts
        self.tool = "wrk" if shutil.which("wrk") and not args.python_load else "python-asyncio"
        self.script = wrk_script(texts, folder) if self.tool == "wrk" else None

    def describe(self) -> str:
        if self.tool == "wrk":
            return f"wrk -t{self.args.wrk_threads} (Lua POST script, wrk's latency percentiles)"
        return "Python asyncio client in its own process (raw keep-alive HTTP/1.1)"

    def run(self, url: str, clients: int, seconds: float) -> dict:
        if self.tool == "wrk":
            return run_wrk(url, clients, seconds, self.script, self.args.wrk_threads)
        return run_python_load(url, clients, seconds, self.texts)

    def measure(self, url: str, clients: int) -> dict:
        self.run(url, clients, self.args.warmup)
        return self.run(url, clients, self.args.seconds)


# -- memory --------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def our_ray_processes() -> list:
    """The processes of this driver's embedded Ray (its descendants): other people's clusters on
    a shared machine run replicas with the same titles."""
    import psutil

    return psutil.Process().children(recursive=True)


def serve_memory(app: str) -> dict:
    """RSS of the app's replica processes and of Serve's proxy, found by process title among
    this driver's Ray processes (`ray::ServeReplica:<app>:<deployment>[.<method>]`)."""
    import psutil

    found: dict[str, list[float]] = {}
    for proc in our_ray_processes():
        with contextlib.suppress(psutil.Error):
            title = " ".join(proc.cmdline())
            if not title.startswith("ray::"):
                if proc.name().startswith("haproxy"):
                    found.setdefault("haproxy", []).append(round(rss_mb(proc.pid), 1))
                continue
            name = title.removeprefix("ray::").split()[0]
            if name.startswith(f"ServeReplica:{app}:"):
                deployment = name.removeprefix(f"ServeReplica:{app}:").split(".")[0]
                kind = "ingress" if deployment == "ingress" else "model_replica"
            elif name.startswith("ProxyActor"):
                kind = "proxy"
            else:
                continue
            found.setdefault(kind, []).append(round(rss_mb(proc.pid), 1))
    return found


# -- Serve targets --------------------------------------------------------------------------------
def serve_round(project, batching: bool, load: Load, clients: list[int], texts) -> tuple:
    from ray import serve

    from shipyard.serving.deploy import deploy

    service = deploy(project, batching=batching)
    try:
        url = service.url + "v1/predict"
        check(url, texts)
        runs = {}
        for c in clients:
            runs[c] = load.measure(url, c)
            print(f"    {c:>3} clients {runs[c]['rps']:>8.1f} req/s", flush=True)
        memory = serve_memory(project.name)
    finally:
        serve.delete(project.name)
    return runs, memory


def summarize(runs: list[dict]) -> dict:
    keys = ("rps", "p50_ms", "p95_ms", "p99_ms")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["non_200"] = sum(r["non_200"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["rounds_rps"] = [round(r["rps"], 1) for r in runs]
    return out


def proxy_child(args) -> int:
    """`--proxy-child MODE`: (a) and (b), interleaved, on a fresh Ray whose Serve starts with
    MODE's environment."""
    from shipyard.cluster import connect

    project = load_project(args)
    texts = request_texts(args)
    connect(num_cpus=args.cpus, log_to_driver=False)
    targets = [t for t in args.targets if t in ("a", "b")]
    rounds = {t: {c: [] for c in args.clients} for t in targets}
    memory: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        load = Load(args, texts, folder)
        for i in range(args.repeats):
            k = i % len(targets)
            for t in targets[k:] + targets[:k]:
                print(f"    [{i + 1}/{args.repeats}] {NAMES[t]}", flush=True)
                runs, memory[t] = serve_round(project, t == "a", load, args.clients, texts)
                for c, r in runs.items():
                    rounds[t][c].append(r)
    from ray import serve

    serve.shutdown()
    summary = {
        t: {str(c): summarize(rs) | {"runs": rs} for c, rs in by.items()}
        for t, by in rounds.items()
    }
    print("PROXYJSON " + json.dumps({"targets": summary, "memory_mb": memory}))
    return 0


def run_proxy_mode(args, mode: str) -> dict:
    mode_env, mode_sets = PROXY_MODES[mode]
    env = {**os.environ, **mode_env, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, __file__, "--proxy-child", mode, "--reuse"]
    cmd += ["--workdir", str(args.workdir), "--port", str(args.port)]
    cmd += ["--replicas", str(args.replicas), "--repeats", str(args.repeats)]
    cmd += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    cmd += ["--clients", ",".join(map(str, args.clients)), "--cpus", str(args.cpus)]
    cmd += ["--wrk-threads", str(args.wrk_threads)]
    cmd += ["--targets", ",".join(args.targets)]
    cmd += [x for item in [*args.set, *mode_sets] for x in ("--set", item)]
    cmd += ["--synthetic"] * args.synthetic + ["--python-load"] * args.python_load
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("PROXYJSON ")), None)
    if done.returncode or line is None:
        return {"error": (done.stderr or done.stdout)[-2000:]}
    for x in done.stdout.splitlines():
        if x.startswith("    "):
            print(x)
    return json.loads(line.removeprefix("PROXYJSON "))


# -- report --------------------------------------------------------------------------------------
def ratios(medians: dict) -> dict:
    """The targets at 32 clients, for the default proxy and for each proxy mode measured."""
    out = {}
    at = lambda t: medians.get(t, {}).get("32")  # noqa: E731
    c = at("c")
    for suffix in ["", *(f"_{mode}" for mode in PROXY_MODES)]:
        a, b = at(f"a{suffix}"), at(f"b{suffix}")
        if a and b:
            v = a["rps"] / b["rps"]
            out[f"a_over_b_rps_32{suffix}"] = {"value": v, "target": ">= 3", "pass": v >= 3}
        if a and c:
            v = a["rps"] / c["rps"]
            out[f"a_over_c_rps_32{suffix}"] = {"value": v, "target": ">= 1.5", "pass": v >= 1.5}
            v = a["p99_ms"] / c["p99_ms"]
            out[f"a_over_c_p99_32{suffix}"] = {"value": v, "target": "<= 2", "pass": v <= 2}
    return out


def format_report(report: dict) -> str:
    s = report["setup"]
    m = report["model"]
    lines = [
        f"model: {m.get('uri') or m.get('reused')} ({s['corpus']}; LSTM, trained in-process and"
        " published);"
        f" {s['replicas']} model replica(s), serving overrides {s['set'] or 'none'},"
        f" ingress max_ongoing_requests {s['ingress_max_ongoing']}",
        f"load: {report['load_generator']}; {s['warmup']:g} s warm-up + {s['seconds']:g} s per"
        f" point, {s['repeats']} round(s) interleaved, medians",
        f"{'target':<28}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'non-200':>9}   rounds req/s",
    ]
    for t, by_clients in report["medians"].items():
        for c, r in by_clients.items():
            each = ", ".join(f"{x:.0f}" for x in r["rounds_rps"])
            lines.append(
                f"{report['names'][t]:<28}{c:>8}{r['rps']:>10.1f}{r['p50_ms']:>9.1f}"
                f"{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['non_200']:>9}   {each}"
            )
    lines.append("memory (RSS, MB):")
    for t, mem in report["memory_mb"].items():
        shown = ", ".join(f"{k} {' + '.join(f'{v:.0f}' for v in vs)}" for k, vs in mem.items())
        lines.append(f"  {report['names'][t]:<26} {shown}")
    for name, r in report["ratios"].items():
        verdict = "PASS" if r["pass"] else "MISS"
        lines.append(f"  {name:<18} {r['value']:6.2f}  (target {r['target']})  {verdict}")
    lines.append(
        f"  load average before {report['machine']['loadavg_before']},"
        f" after {report['loadavg_after']}"
    )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (t, by_clients) in enumerate(report["medians"].items()):
        color = f"C{i}"
        xs = [r["rps"] for r in by_clients.values()]
        ax.plot(xs, [r["p50_ms"] for r in by_clients.values()], "o-", color=color,
                label=f"{report['names'][t]} p50")  # fmt: skip
        ax.plot(xs, [r["p99_ms"] for r in by_clients.values()], "s--", color=color,
                label=f"{report['names'][t]} p99")  # fmt: skip
        for c, r in by_clients.items():
            ax.annotate(f"{c}", (r["rps"], r["p99_ms"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color=color)  # fmt: skip
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_yscale("log")
    ax.set_title("latency vs throughput at 1, 8, 32 clients (labels: clients)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- driver --------------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="a,b,c", help="any of a,b,c (comma-separated)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per point")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1, help="serving.min = max_replicas")
    parser.add_argument(
        "--set", action="append", default=[], help="an override, e.g. serving.max_batch_size=16"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="the embedded Ray's CPUs")
    parser.add_argument("--synthetic", action="store_true", help="the synthetic corpus")
    parser.add_argument(
        "--proxy-modes",
        nargs="?",
        const="direct",
        default="",
        help=f"also (a), (b) in these Serve modes: {','.join(PROXY_MODES)} (default direct)",
    )
    parser.add_argument("--python-load", action="store_true", help="not wrk, even if installed")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--port", type=int, default=0, help="Serve's HTTP port (0: a free one)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--reuse", action="store_true", help="serve --workdir's champion")
    parser.add_argument("--proxy-child", help=argparse.SUPPRESS)
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    args.targets = [x.strip() for x in args.targets.split(",") if x.strip()]
    args.proxy_modes = [x.strip() for x in args.proxy_modes.split(",") if x.strip()]
    unknown = sorted(set(args.proxy_modes) - set(PROXY_MODES))
    if unknown:
        parser.error(f"--proxy-modes: unknown {unknown} (known: {', '.join(PROXY_MODES)})")
    if not SMS.is_file():
        args.synthetic = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_child:
        spec = json.loads(args.load_child)
        result = asyncio.run(
            _python_load(spec["url"], spec["clients"], spec["seconds"], spec["texts"])
        )
        print(json.dumps(result))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from shipyard.cluster.network import free_ports

    if not args.port:
        args.port = free_ports(1)[0]
    temp = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="bench-serving-")
        args.workdir = Path(temp)
    if args.proxy_child:
        return proxy_child(args)

    from ray import serve

    from shipyard.cluster import connect

    load_before = os.getloadavg()
    started = time.perf_counter()
    project = load_project(args)
    texts = request_texts(args)
    connect(num_cpus=args.cpus, log_to_driver=False)
    export, model_info = trained_model(project, args.reuse)
    print(f"model: {json.dumps(model_info)}", flush=True)
    folder = tempfile.mkdtemp(prefix="bench-serving-load-")
    load = Load(args, texts, folder)
    print(f"load generator: {load.describe()}", flush=True)
    baseline = None
    rounds = {t: {c: [] for c in args.clients} for t in args.targets}
    memory: dict[str, dict] = {}
    try:
        if "c" in args.targets:
            (baseline_port,) = free_ports(1)
            baseline = start_baseline(export, baseline_port)
            baseline_url = f"http://127.0.0.1:{baseline_port}/v1/predict"
        for i in range(args.repeats):
            k = i % len(args.targets)
            for t in args.targets[k:] + args.targets[:k]:
                print(f"[{i + 1}/{args.repeats}] {NAMES[t]}", flush=True)
                if t == "c":
                    check(baseline_url, texts)
                    runs = {}
                    for c in args.clients:
                        runs[c] = load.measure(baseline_url, c)
                        print(f"    {c:>3} clients {runs[c]['rps']:>8.1f} req/s", flush=True)
                    memory["c"] = {"uvicorn": [round(rss_mb(baseline.pid), 1)]}
                else:
                    runs, memory[t] = serve_round(project, t == "a", load, args.clients, texts)
                for c, r in runs.items():
                    rounds[t][c].append(r)
    finally:
        if baseline is not None:
            baseline.terminate()
            baseline.wait(30)
        serve.shutdown()
        import ray

        ray.shutdown()

    medians = {t: {str(c): summarize(rs) for c, rs in by.items()} for t, by in rounds.items()}
    names = {t: NAMES[t] for t in args.targets}
    proxy = {}
    if args.proxy_modes:
        for mode in args.proxy_modes:
            print(f"(a) with {mode} (fresh Ray)", flush=True)
            proxy[mode] = run_proxy_mode(args, mode)
            for t, by_clients in proxy[mode].get("targets", {}).items():
                key = f"{t}_{mode}"
                medians[key] = by_clients
                memory[key] = proxy[mode]["memory_mb"][t]
                names[key] = f"{NAMES[t]}, {mode.replace('_', '-')}"
            if "error" in proxy[mode]:
                print(f"  failed: {proxy[mode]['error']}", flush=True)
    report = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before},
        "command": " ".join([".venv/bin/python", "bench/serving.py", *(argv or sys.argv[1:])]),
        "setup": {
            "targets": args.targets,
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "replicas": args.replicas,
            "set": args.set,
            "ingress_max_ongoing": project.serving.max_replicas
            * project.serving.max_ongoing_requests,
            "corpus": "synthetic" if args.synthetic else "SMS spam",
            "serving": project.serving.model_dump(mode="json", exclude={"canary"}),
        },
        "model": model_info,
        "load_generator": load.describe(),
        "names": names,
        "medians": medians,
        "rounds": {t: {str(c): rs for c, rs in by.items()} for t, by in rounds.items()},
        "memory_mb": memory,
        "ratios": ratios(medians),
        "proxy_modes": {k: v for k, v in proxy.items() if "error" in v},
        "loadavg_after": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"serving-{stamp}.json"
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    plot(report, out.with_suffix(".png"))
    print(format_report(report))
    print(f"wrote {out} and {out.with_suffix('.png').name} ({report['seconds']:.0f} s)")
    shutil.rmtree(folder, ignore_errors=True)
    if temp:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
