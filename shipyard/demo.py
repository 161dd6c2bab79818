"""`shipyard demo`: a model's whole life on an embedded Ray, in one call.

    start Ray → prepare → train (Horovod) → sweep (Tune, ASHA) → serve (Serve, autoscaled)
    → predictions, an explanation and feedback over HTTP → load until a second replica
    → feedback export → retrain with the feedback → versions and aliases → lineage → stop

Every step calls the library function the matching CLI command calls; this module only chooses
the demo's settings, sends the HTTP requests a user would, prints and times. It runs in a fresh
workdir (`.shipyard-demo/<time>` by default), never the project's own, with its own MLflow
registry, and stops Serve and the Ray it started when it ends, fails or is interrupted.

The demo's settings, applied over the project file (a `--section.field` override still wins):
Serve replicas ask for half a CPU and autoscale between 1 and 2 on short delays, so the second
replica shows up within the demo; the embedded Ray claims enough logical CPUs for 2 Horovod
workers to retrain while the service stays up (on 2 cores: 4 CPUs, 2 workers + 2 × 0.5 replicas +
1 for Ray Data), and the sweep runs as many trials at once as those hold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.project import Project, load_project

DEFAULT_PROJECT = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
DEMO_ROOT = ".shipyard-demo"  # under the current folder; gitignored
# Variables that would send the demo's work somewhere else than its own embedded Ray and
# registry: set aside for the demo's duration, put back after.
ISOLATED_ENV = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")
# Ctrl-C stops the demo. Ray Tune (under every Ray Train V1 fit, and the sweep) otherwise takes
# SIGINT for itself: the run it is in ends "gracefully" and returns as if finished, and its
# handler stays installed after the run, swallowing a later Ctrl-C too.
DEMO_ENV = {"TUNE_DISABLE_SIGINT_HANDLER": "1"}
# Unless --verbose: the engines' own chatter kept off the console for the demo's duration (each
# is read when Ray starts its processes or when the engine first runs; a value the environment
# already has wins). Serve's controller, proxy and replicas then log to their files only.
QUIET_ENV = {
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_WARN_THRESHOLD_S": "60",  # "`choose_trial_to_run` took 1.2 s" on a busy machine
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
MAX_REPLICAS = 2
REPLICA_CPUS = 0.5
FEEDBACK_ROWS = 128  # labelled answers posted to /v1/feedback: the rows retraining merges
PREDICT_EXAMPLES = 4
# Enough requests in flight to ask for a second replica (target 1 ongoing request each), light
# enough that the new replica still gets the CPU to start.
LOAD_CLIENTS = 4
LOAD_TEXTS = 8
SCALE_UP_TIMEOUT_S = 90.0
HTTP_TIMEOUT_S = 60.0


# -- the result ----------------------------------------------------------------------------------
@dataclass
class StepTiming:
    number: int
    name: str
    seconds: float
    state: str = "ok"  # ok, skipped, failed, interrupted
    note: str = ""


@dataclass
class DemoResult:
    project: str
    workdir: Path
    steps: list[StepTiming] = field(default_factory=list)
    dashboard_url: str | None = None
    tracking_uri: str | None = None
    playground_url: str | None = None

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def ok(self) -> bool:
        return all(s.state in ("ok", "skipped") for s in self.steps)

    def format_timings(self) -> str:
        """The steps, their state and duration, and the total, as an aligned table."""
        return format_timings(self.steps)


def format_timings(steps: Sequence[StepTiming]) -> str:
    width = max([len(s.name) for s in steps] + [len("total")])
    lines = [f"  {'#':>2}  {'step':<{width}}  {'time':>8}"]
    for s in steps:
        state = "" if s.state == "ok" else f"  {s.state}"
        note = f"  ({s.note})" if s.note else ""
        lines.append(
            f"  {s.number:>2}  {s.name:<{width}}  {format_seconds(s.seconds):>8}{state}{note}"
        )
    total = sum(s.seconds for s in steps)
    lines.append(f"  {'':>2}  {'total':<{width}}  {format_seconds(total):>8}")
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    """`4.2 s`, `58 s`, `3m 07s`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s"


# -- the settings --------------------------------------------------------------------------------
def new_workdir(root: str | os.PathLike = DEMO_ROOT) -> Path:
    """A fresh folder for one demo run: `<root>/<YYYYmmdd-HHMMSS>` (a suffix if taken)."""
    base = Path(root).resolve() / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_workdir(path: Path) -> Path:
    """The demo starts from nothing: its workdir must be new or empty."""
    path = path.resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserInputError(
            f"--workdir: {path} is not empty; the demo runs in a fresh folder"
            " (omit --workdir for a new one under .shipyard-demo/)"
        )
    return path


def demo_overrides(
    project: Project, *, workdir: Path, port: int, cores: int | None = None
) -> dict[str, Any]:
    """The fields the demo sets over the project file (see the module docstring)."""
    cores = cores or os.cpu_count() or 1
    t = project.training
    training_cpus = t.workers * t.cpus_per_worker
    replica_cpus = min(project.serving.replica_cpus, REPLICA_CPUS)
    # Training alongside the service at its largest, plus one CPU for a Ray Data read task
    # (streamed reads need one; with none free a read would wait forever).
    needed = math.ceil(training_cpus + MAX_REPLICAS * replica_cpus + 1)
    overrides: dict[str, Any] = {
        "workdir": str(workdir),
        # Everything the demo writes stays in its workdir (the defaults live there).
        "data.output": None,
        "training.storage_path": None,
        "serving.feedback_path": None,
        "serving.host": "127.0.0.1",
        "serving.port": port,
        "serving.model_version": "champion",
        "serving.min_replicas": 1,
        "serving.initial_replicas": 1,
        "serving.max_replicas": MAX_REPLICAS,
        "serving.replica_cpus": replica_cpus,
        # Scale up after a second of queueing (Serve's metrics look back at least 10 s) and
        # back down soon after the load stops, so both happen while the demo watches.
        "serving.target_ongoing_requests": 1,
        "serving.upscale_delay_s": 1.0,
        "serving.downscale_delay_s": 15.0,
        "serving.look_back_period_s": 12.0,
        # The sweep then runs as many trials at once as these CPUs hold: 2 on 2 cores, a little
        # faster than one at a time for the demo's 4 trials (`shipyard sweep`, 3 interleaved
        # pairs on a shared, loaded machine: median 136 s against 152 s; noisy).
        "cluster.num_cpus": project.cluster.num_cpus or max(cores, needed),
    }
    return overrides


def demo_project(
    project_path: str | os.PathLike,
    overrides: Sequence[tuple[str, str]] = (),
    *,
    workdir: Path,
    port: int,
    cores: int | None = None,
) -> Project:
    """The project file with the user's `--section.field` overrides, then the demo's settings
    for every field the user did not override."""
    project = load_project(project_path, overrides)
    data = project.data
    if data.synthetic is None or data.kind != "text":
        raise UserInputError(
            f"{project_path}: the demo runs on a synthetic text corpus (data.synthetic with"
            " kind text), so that it needs no files and can write new texts for the service"
            f" (this project has {'a ' + data.kind + ' ' if data.synthetic else ''}"
            f"{'synthetic corpus' if data.synthetic else 'data.source'}); try {DEFAULT_PROJECT}"
        )
    if project.cluster.address or project.cluster.provider != "local":
        raise UserInputError(
            f"cluster.address / cluster.provider: the demo runs on an embedded Ray on this"
            f" machine (got address {project.cluster.address!r}, provider"
            f" {project.cluster.provider!r})"
        )
    given = {name for name, _ in overrides}
    ours = demo_overrides(project, workdir=workdir, port=port, cores=cores)
    if "workdir" in given:
        ours["workdir"] = str(check_workdir(project.workdir_path))
    return project.with_overrides({k: v for k, v in ours.items() if k not in given})


def held_out_texts(project: Project, rows: int) -> tuple[list[str], list[str]]:
    """New texts and their true labels from the project's synthetic generator: the same
    vocabulary and topics as the corpus, drawn afresh (none of them is a corpus row), without
    the generator's planted duplicates (what users would send)."""
    from shipyard.corpus.synth import SynthSpec, iter_text_batches

    spec = SynthSpec(**{**project.data.synthetic.model_dump(), "rows": rows, "duplicate_rate": 0})
    texts: list[str] = []
    labels: list[str] = []
    for batch in iter_text_batches(spec):
        texts += batch.column("text").to_pylist()
        labels += batch.column("label").to_pylist()
    return texts, labels


# -- HTTP ----------------------------------------------------------------------------------------
class ServiceClient:
    """JSON over HTTP to the served app, with the bearer token when one is set."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/") + "/"
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def get(self, path: str) -> Any:
        return self._send(urllib.request.Request(self.url + path, headers=self.headers))

    def post(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers=self.headers, method="POST"
        )
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> Any:
        where = f"{request.get_method()} {request.full_url}"
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", "")
            except (ValueError, AttributeError, OSError):
                detail = ""
            raise ShipyardError(f"{where}: HTTP {exc.code} {detail}".rstrip()) from None
        except (OSError, ValueError) as exc:
            raise ShipyardError(f"{where}: {first_line(exc)}") from None


# -- running -------------------------------------------------------------------------------------
def run_demo(
    project_path: str | os.PathLike = DEFAULT_PROJECT,
    *,
    workdir: str | os.PathLike | None = None,
    overrides: Sequence[tuple[str, str]] = (),
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole demo (see the module docstring) and return its steps with their durations.

    `workdir`: where everything goes (new or empty; default a fresh `.shipyard-demo/<time>`);
    `overrides`: `(section.field, value)` pairs as on the command line. A failing step stops
    the demo: Serve and Ray are stopped, the timings printed, and the error raised.
    """
    from shipyard.cluster.network import free_ports

    if workdir is not None:
        overrides = [*overrides, ("workdir", str(Path(workdir).resolve()))]
    port, dashboard_port = free_ports(2)
    project = demo_project(
        project_path, overrides, workdir=new_workdir(), port=port, cores=os.cpu_count()
    )
    demo = _Demo(project, str(project_path), dashboard_port, out)
    with _isolated_env(ISOLATED_ENV) as set_aside, _env(DEMO_ENV), _quiet():
        demo.set_aside = set_aside
        demo.run()
    return demo.result


@contextlib.contextmanager
def _isolated_env(names: Sequence[str]) -> Iterator[dict[str, str]]:
    """Unset `names` for the block; put back what was there after."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield saved
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set for the block (a value the environment already has wins)."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """QUIET_ENV, and Serve's INFO lines in this process ("Started Serve", "Application ... is
    ready") filtered out, unless verbose."""
    from shipyard.verbosity import WarningsAndUp, is_verbose

    if is_verbose():
        yield
        return
    serve_logger = logging.getLogger("ray.serve")  # Serve replaces its handlers, not filters
    only_warnings = WarningsAndUp()
    serve_logger.addFilter(only_warnings)
    try:
        with _env(QUIET_ENV):
            yield
    finally:
        serve_logger.removeFilter(only_warnings)


class _Demo:
    def __init__(self, project: Project, source: str, dashboard_port: int, out):
        from shipyard.training.mlflow_store import tracking_uri

        self.project = project
        project.workdir_path.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.dashboard_port = dashboard_port
        self.set_aside: Mapping[str, str] = {}
        self.result = DemoResult(source, project.workdir_path, tracking_uri=tracking_uri(project))
        self.started_ray = False
        self.serving = False
        self.service = None
        self.retrained = None  # the version retraining registered, if any
        self.client: ServiceClient | None = None
        self.texts, self.labels = held_out_texts(project, FEEDBACK_ROWS + PREDICT_EXAMPLES)
        self.steps: list[tuple[str, str, Callable[[], str | None]]] = [
            ("start Ray", self._where_ray, self.start_ray),
            ("prepare", "Ray Data tasks on the embedded Ray", self.prepare),
            ("train", self._where_training, self.train),
            ("sweep", self._where_sweep, self.sweep),
            ("serve", self._where_serving, self.serve),
            ("predict, explain, feedback", "HTTP to the Serve app", self.http),
            ("autoscale", "HTTP load until Serve adds a replica", self.autoscale),
            ("feedback export", "the replicas' JSON lines -> one Parquet batch", self.export),
            ("retrain", self._where_retrain, self.retrain),
            ("versions", "the MLflow registry in the workdir", self.versions),
            ("lineage", "the served version, read back from the registry", self.lineage),
        ]

    # -- framing ---------------------------------------------------------------------------------
    def say(self, text: str = "", indent: str = "  ") -> None:
        for line in str(text).splitlines() or [""]:
            self.out(f"{indent}{line}" if line else "")

    def run(self) -> None:
        p = self.project
        total = len(self.steps) + 1  # and the stop at the end
        self.out(
            f"shipyard demo: the whole life of {p.name!r} ({self.result.project}) on an embedded"
            f" Ray, {total} steps"
        )
        self.say(f"workdir      {p.workdir_path}  (everything the demo writes; kept afterwards)")
        self.say(f"MLflow UI    mlflow ui --backend-store-uri {self.result.tracking_uri}")
        for name in self.set_aside:
            self.say(f"note         {name} is set; the demo ignores it (its own Ray and registry)")
        failure: BaseException | None = None
        try:
            for number, (name, where, step) in enumerate(self.steps, 1):
                self._run_step(number, total, name, where() if callable(where) else where, step)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._run_step(
                total, total, "stop", "Serve, then the embedded Ray", self.stop, final=True
            )
            self.out("")
            self.out(f"timings ({'ok' if failure is None else 'stopped: ' + _why(failure)})")
            self.out(self.result.format_timings())
            self._where_to_look()

    def _run_step(self, number, total, name, where, step, final=False) -> None:
        self.out("")
        self.out(f"[{number}/{total}] {name} · {where}")
        started = time.monotonic()
        timing = StepTiming(number, name, 0.0)
        self.result.steps.append(timing)
        try:
            note = step()
            if note:
                timing.state, timing.note = "skipped", note
        except KeyboardInterrupt:
            timing.state = "interrupted"
            raise
        except BaseException as exc:
            timing.state = "failed"
            self.say(f"failed: {_why(exc)}")
            if not final:
                raise
        finally:
            timing.seconds = time.monotonic() - started
            self.say(f"({format_seconds(timing.seconds)})")

    def _where_to_look(self) -> None:
        r = self.result
        self.out("")
        self.out("where to look")
        self.say(f"workdir      {r.workdir}")
        self.say(f"MLflow UI    mlflow ui --backend-store-uri {r.tracking_uri}")
        self.say(f"runs         {self.project.runs_dir}  (tensorboard --logdir <run>/tensorboard)")
        if r.dashboard_url:
            self.say(f"dashboard    {r.dashboard_url}  (was up while the demo ran)")
        if r.playground_url:
            self.say(f"playground   {r.playground_url}  (was up while the demo ran)")
        self.say(f"again        shipyard versions {r.project} --workdir {r.workdir}")
        self.say(f"clean up     rm -rf {r.workdir}")

    # -- where each step runs (read when it starts: Ray is up by then) -----------------------------
    def _cpus(self) -> str:
        import ray

        return f"{ray.cluster_resources().get('CPU', 0):g} CPUs"

    def _where_ray(self) -> str:
        cores = os.cpu_count() or 1
        return (
            f"{self.project.cluster.num_cpus} logical CPUs on {cores} core(s), dashboard on"
            f" 127.0.0.1:{self.dashboard_port}"
        )

    def _where_training(self) -> str:
        t = self.project.training
        return (
            f"Ray Train: {t.workers} Horovod workers x {t.cpus_per_worker:g} CPU,"
            f" {t.epochs} epochs of {self.project.model.kind}"
        )

    def _where_sweep(self) -> str:
        from shipyard.tuning.driver import concurrency_for

        t = self.project.tuning
        return (
            f"Ray Tune: {t.num_samples} trials ({t.search} search, {t.scheduler} scheduler),"
            f" {concurrency_for(self.project)} at once, each {self.project.training.workers}"
            " Horovod workers"
        )

    def _where_retrain(self) -> str:
        return (
            f"the feedback merged into the corpus, {self.project.training.workers} Horovod"
            " workers again, while the service keeps serving"
        )

    def _where_serving(self) -> str:
        s = self.project.serving
        return (
            f"Ray Serve on {s.host}:{s.port}: the champion, {s.min_replicas}-{s.max_replicas}"
            f" replicas x {s.replica_cpus:g} CPU"
        )

    # -- the steps -------------------------------------------------------------------------------
    def start_ray(self) -> None:
        import ray

        from shipyard.cluster import connect
        from shipyard.cluster.auth import find_token
        from shipyard.verbosity import quiet_engines

        quiet_engines()
        self.started_ray = not ray.is_initialized()
        resources = connect(
            num_cpus=self.project.cluster.num_cpus, dashboard_port=self.dashboard_port
        )
        self.say(
            f"embedded Ray {ray.__version__}: {resources.get('CPU', 0):g} logical CPUs,"
            f" {resources.get('object_store_memory', 0) / 1e9:.1f} GB object store"
        )
        if not self.started_ray:
            self.say("Ray was already running in this process: the demo uses it as it is")
            return
        url = f"http://127.0.0.1:{self.dashboard_port}"
        self.result.dashboard_url = url
        token = find_token()
        ask = f" (it asks for the token in {token[1].describe()})" if token else ""
        self.say(f"Ray dashboard  {url}{ask}")

    def prepare(self) -> None:
        from shipyard.corpus.prepare import format_summary, prepare

        result = prepare(self.project, feedback=True, announce=self.say)
        self.say(format_summary(result.manifest))
        self.say(f"corpus written to {result.corpus.path}")

    def train(self) -> None:
        from shipyard.training import format_result, train

        self.say(format_result(train(self.project)))

    def sweep(self) -> None:
        from shipyard.tuning import format_sweep, sweep

        self.say(format_sweep(sweep(self.project)))

    def serve(self) -> None:
        from shipyard.serving.deploy import deploy

        self.serving = True  # from the first replica on, stop() has Serve to shut down
        self._deploy(deploy(self.project, announce=self.say))
        self.say(f"in another terminal: shipyard serve status {self._project_args()}")

    def _deploy(self, service) -> None:
        self.service = service
        for line in service.describe():
            self.say(line)
        self._record_service(service)
        self.client = ServiceClient(service.url, os.environ.get("SHIPYARD_API_TOKEN"))
        self.result.playground_url = service.url
        self.say(f"playground   {service.url}")

    def _record_service(self, service) -> None:
        """The marker a foreground `shipyard serve` keeps (deploy.serve_forever), so that
        `shipyard lineage` and `serve status` find this process's service."""
        import ray

        from shipyard.serving.deploy import PID_FILE

        marker = self.project.workdir_path / PID_FILE
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "app": service.app,
                    "url": service.url,
                    "address": ray.get_runtime_context().gcs_address,
                }
            )
        )

    def http(self) -> None:
        client = self.client
        model = client.get("v1/model")["champion"]
        self.say(
            f"GET  /v1/model     models:/{model['name']}/{model['version']}, labels"
            f" {', '.join(model['labels'])}"
        )
        texts, labels = self.texts[:PREDICT_EXAMPLES], self.labels[:PREDICT_EXAMPLES]
        reply = client.post("v1/predict", {"inputs": texts})
        self.say(f"POST /v1/predict   {len(texts)} texts (request {reply['request_id'][:8]})")
        for text, truth, p in zip(texts, labels, reply["predictions"], strict=True):
            mark = "ok" if p["label"] == truth else "wrong"
            self.say(
                f"  {_clip(text, 44):<46} -> {p['label']:<5} {_confidence(p):.2f}"
                f"  (true {truth}: {mark})"
            )
        texts, labels = self.texts[PREDICT_EXAMPLES:], self.labels[PREDICT_EXAMPLES:]
        answers: list[tuple[str, str, dict, str]] = []  # text, truth, prediction, request id
        for start in range(0, len(texts), 64):  # the API's max_items per request
            chunk = texts[start : start + 64]
            reply = client.post("v1/predict", {"inputs": chunk})
            answers += [
                (text, truth, p, reply["request_id"])
                for text, truth, p in zip(
                    chunk, labels[start : start + 64], reply["predictions"], strict=True
                )
            ]
        # The least confident answer: the one whose tokens matter most to it.
        unsure = min(answers, key=lambda a: _confidence(a[2]))[0]
        e = client.post("v1/explain", {"inputs": [unsure]})["explanations"][0]
        top = sorted(e["attributions"], key=lambda a: a["score"], reverse=True)[:5]
        self.say(
            f"POST /v1/explain   the least sure of {len(answers)} more answers:"
            f" {_clip(unsure, 44)} -> {e['label']} {_confidence(e):.2f}; the tokens that"
            " pushed it there most (occlusion: probability lost without the token):"
        )
        for a in top:
            self.say(f"  {a['token']:<16} {a['score']:+.3f}")
        wrong = 0
        for text, truth, p, request_id in answers:
            client.post(
                "v1/feedback",
                {
                    "input": text,
                    "prediction": p["label"],
                    "label": truth,
                    "version": p["model"]["version"],
                    "request_id": request_id,
                },
            )
            wrong += p["label"] != truth
        self.say(
            f"POST /v1/feedback  the true label of each of those {len(answers)} answers"
            f" ({wrong} of them corrections); stored under {self.service.feedback_dir}"
        )

    def autoscale(self) -> None:
        from shipyard.serving.deploy import format_status, status_of

        def replicas() -> int:
            return int(status_of(self.project).get("replicas", {}).get("champion", 0))

        before = replicas()
        stop = threading.Event()
        sent, failed, seconds = [0], [0], []
        body = {"inputs": self.texts[:LOAD_TEXTS]}
        lock = threading.Lock()

        def load() -> None:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    self.client.post("v1/predict", body)
                    ok = True
                except ShipyardError:
                    ok = False
                with lock:
                    sent[0] += 1
                    failed[0] += not ok
                    seconds.append(time.monotonic() - began)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(LOAD_CLIENTS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        now = before
        try:
            while now < MAX_REPLICAS and time.monotonic() - started < SCALE_UP_TIMEOUT_S:
                time.sleep(1.0)
                now = replicas()
        finally:
            stop.set()
            for thread in threads:
                thread.join(HTTP_TIMEOUT_S)
        waited = time.monotonic() - started
        p50 = sorted(seconds)[len(seconds) // 2] * 1000 if seconds else float("nan")
        self.say(
            f"{LOAD_CLIENTS} clients x {LOAD_TEXTS} texts: {sent[0]} requests in {waited:.0f} s,"
            f" {failed[0]} failed, median {p50:.0f} ms"
        )
        if now > before:
            self.say(f"replicas {before} -> {now} after {waited:.0f} s under load")
        else:
            self.say(
                f"still {now} replica(s) after {waited:.0f} s (Serve did not scale up in time)"
            )
        self.say(format_status(status_of(self.project)))
        self.say(
            f"back to {self.project.serving.min_replicas} about"
            f" {self.project.serving.downscale_delay_s:g} s after the load stops"
        )

    def export(self) -> None:
        from shipyard.serving.feedback_export import export_feedback

        for line in export_feedback(self.project).describe():
            self.say(line)

    def retrain(self) -> str | None:
        if importlib.util.find_spec("shipyard.training.retrain") is None:
            self.say("retrain: not available yet (no shipyard.training.retrain in this checkout)")
            return "not available yet"
        from shipyard.training.retrain import retrain

        result = retrain(self.project, announce=self.say)
        for line in result.describe():
            self.say(line)
        self.retrained = result.version
        return None

    def versions(self) -> None:
        from shipyard.training.model_versions import describe_versions, format_versions

        name = self.project.registered_model_name
        self.say(format_versions(describe_versions(self.project), name))

    def lineage(self) -> None:
        from shipyard.serving.deploy import status_of
        from shipyard.training.lineage import format_lineage, lineage

        arm = status_of(self.project)["arms"]["champion"]
        self.say(format_lineage(lineage(self.project, f"{arm['name']}:{arm['version']}")))
        if self.retrained is not None and self.retrained.version != arm["version"]:
            v = self.retrained
            self.say("")
            self.say(
                f"the retrained version's chain (its corpus merged the feedback): shipyard"
                f" lineage {self._project_args()} {v.name}:{v.version}"
            )

    def stop(self) -> None:
        import ray

        from shipyard.serving.deploy import PID_FILE

        (self.project.workdir_path / PID_FILE).unlink(missing_ok=True)
        stopped = []
        if self.serving and ray.is_initialized():
            from ray import serve

            # The app's replicas drain and stop; the embedded Ray's end takes Serve's controller
            # and proxy with it (serve.shutdown first only adds Ray's retry warnings about them).
            try:
                serve.delete(self.project.name)
                stopped.append(f"the Serve app {self.project.name!r}")
            except Exception as exc:  # still stop Ray: that ends the app too
                self.say(f"could not delete the Serve app: {first_line(exc)}")
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
            stopped.append("the embedded Ray")
        self.say(f"stopped {' and '.join(stopped)}" if stopped else "nothing to stop")

    def _project_args(self) -> str:
        return f"{self.result.project} --workdir {self.project.workdir_path}"


def _confidence(prediction: dict) -> float:
    return float(prediction["probabilities"][prediction["label"]])


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return first_line(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shipyard.demo [PROJECT] [--section.field value ...]`: `shipyard demo`."""
    import sys

    from shipyard.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "DEFAULT_PROJECT",
    "DemoResult",
    "StepTiming",
    "demo_overrides",
    "demo_project",
    "format_timings",
    "run_demo",
]
