"""Put registered versions behind HTTP on the cluster, and move traffic between them.

`deploy` resolves the references in the registry (in the driver: the replicas never touch the
registry's database, only its artifact store), builds the Serve application and runs it under the
project's name. On the embedded cluster the caller then keeps the process in the foreground
(`serve_forever`, like `serve run`); on a running cluster the app outlives the call (like
`serve deploy`). `set_traffic`, `status` and `down` reach the running app by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import Project
from shipyard.serving.feedback_store import feedback_dir
from shipyard.temporary_env import temporary_env
from shipyard.training.model_versions import RegisteredVersion, artifact_path, resolve
from shipyard.training.signature import read_signature

TOKEN_ENV = "SHIPYARD_API_TOKEN"
SERVED_METRICS = ("test_accuracy", "test_f1", "val_accuracy", "latency_ms", "model_bytes")
PID_FILE = "serve.json"  # where the embedded cluster's foreground `shipyard serve` runs
log = logging.getLogger("shipyard.serving")


@dataclass
class Service:
    app: str
    url: str
    champion: dict[str, Any]
    challenger: dict[str, Any] | None
    challenger_percent: float
    embedded: bool
    feedback_dir: str
    extra: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"serving {_arm(self.champion)} as {self.app!r} at {self.url}"]
        if self.challenger:
            lines.append(
                f"canary: {_arm(self.challenger)} takes {self.challenger_percent:g}% of requests"
            )
        lines += [
            f"  try it:   {self.url}  (API docs: {self.url}docs)",
            f"  predict:  curl -s {self.url}v1/predict -H 'content-type: application/json'"
            """ -d '{"inputs": ["..."]}'""",
            f"  feedback: stored under {self.feedback_dir}",
            *self.extra,
        ]
        return lines


def arm_for(project: Project, role: str, version: RegisteredVersion, variant: str):
    """What the ingress and the replicas need of a version, read once here from the registry."""
    from shipyard.serving.app import Arm
    from shipyard.training.mlflow_store import client

    signature = read_signature(artifact_path(project, version))
    if variant != "full" and not (
        signature.variants.get(variant) and signature.variants[variant].file
    ):
        known = ["full", *(k for k, v in signature.variants.items() if v.file)]
        raise UserInputError(
            f"--variant: {version.uri} has no variant {variant!r} (it has: {', '.join(known)})"
        )
    metrics: dict[str, float] = {}
    if version.run_id:
        logged = client(project).get_run(version.run_id).data.metrics
        metrics = {k: float(logged[k]) for k in SERVED_METRICS if k in logged}
    return Arm(
        role=role,
        name=version.name,
        version=int(version.version),
        variant=variant,
        source=version.source,
        tracking_uri=version.tracking_uri,
        labels=list(signature.labels),
        columns=dict(signature.columns),
        tokenizer_mode=(signature.tokenizer or {}).get("mode", "word"),
        corpus_content_hash=signature.corpus.content_hash,
        metrics=metrics,
    )


def build_app(
    project: Project,
    champion: RegisteredVersion,
    challenger: RegisteredVersion | None = None,
    *,
    challenger_percent: float = 0.0,
    variant: str | None = None,
    batching: bool = True,
):
    """The Serve application for these versions (not yet running)."""
    from shipyard.serving import autoscaling
    from shipyard.serving.app import Batching, Ingress, Limits, ModelReplica

    s = project.serving
    variant = variant or s.variant
    autoscaling = {
        "min_replicas": s.min_replicas,
        "max_replicas": s.max_replicas,
        "initial_replicas": s.initial_replicas,
        "target_ongoing_requests": s.target_ongoing_requests,
        "upscale_delay_s": s.upscale_delay_s,
        "downscale_delay_s": s.downscale_delay_s,
        "look_back_period_s": s.look_back_period_s,
        # Batches arrive as one call each: scale on the requests inside them.
        "policy": {"policy_function": autoscaling.POLICY},
    }
    if s.initial_replicas is None:
        del autoscaling["initial_replicas"]
    arms = 2 if challenger else 1
    # Enough of the ingress's batches in flight for the autoscaler to see every arm's replicas
    # at twice their target at full scale, else it could never scale up to max_replicas.
    in_flight = max(4, math.ceil(2 * arms * s.max_replicas * s.target_ongoing_requests))
    batch = Batching(batching, s.max_batch_size, s.batch_wait_timeout_s, in_flight)

    def model(role: str, version: RegisteredVersion):
        arm = arm_for(project, role, version, variant)
        return arm, ModelReplica.options(
            name=role,
            autoscaling_config=autoscaling,
            max_ongoing_requests=s.max_ongoing_requests,
            ray_actor_options={"num_cpus": s.replica_cpus},
        ).bind(arm, batch)

    champion_arm, champion_app = model("champion", champion)
    challenger_arm, challenger_app = model("challenger", challenger) if challenger else (None, None)
    token = os.environ.get(TOKEN_ENV) or None
    # The ingress only awaits the model handles: it must admit every request the model replicas
    # could be working on at full scale, and fill its batches, or Serve's default cap (5 in
    # flight) throttles the whole service and the proxy retries the rest with backoff.
    ingress_ongoing = max(
        arms * s.max_replicas * s.max_ongoing_requests,
        s.max_batch_size * batch.max_concurrent_batches if batching else 0,
    )
    return Ingress.options(
        user_config={"challenger_percent": challenger_percent},
        max_ongoing_requests=ingress_ongoing,
    ).bind(
        champion_app,
        champion_arm,
        challenger_app,
        challenger_arm,
        Limits(s.max_items, s.max_chars),
        str(feedback_dir(project)),
        project.serving.canary.model_dump(),
        hashlib.sha256(token.encode()).hexdigest() if token else None,
        batch,
    )


# Ray Serve's HAProxy mode (read by Serve from the environment when it starts) binds its stats
# page and Prometheus frontend on every interface, whatever http_options.host says
# (ray/serve/_private/haproxy_templates.py: `bind *:<stats>`, `bind :<metrics>`); Ray has port
# settings for them but no host setting. Measured on Ray 2.60: both answer on the node's address.
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# Serve's throughput-optimized mode: direct ingress (the ingress replica serves HTTP on a port of
# its own, RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT and up) and gRPC between replicas.
THROUGHPUT_ENV = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
DRAINING_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
EMBEDDED_DRAINING_S = "2"
ALL_INTERFACES = ("0.0.0.0", "::")


def check_proxy_binding(host: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a Serve proxy mode that would listen beyond `serving.host`.

    Only HAProxy mode does (the default proxy, direct ingress and the throughput-optimized mode
    bind Serve's HTTP listeners on http_options.host). With `serving.host` on all interfaces the
    user asked for that exposure, so it is allowed. Not covered, in every mode: each replica's
    inter-deployment gRPC server, which Ray binds on all interfaces behind its token auth."""
    env = os.environ if environ is None else environ
    if env.get(HAPROXY_ENV, "0") != "1" or host.strip() in ALL_INTERFACES:
        return
    stats = env.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404")
    metrics = env.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")
    raise UserInputError(
        f"{HAPROXY_ENV}=1: Ray Serve's HAProxy would also listen on all interfaces, not only on"
        f" serving.host ({host}): its stats page on port {stats} (no authentication) and its"
        f" Prometheus metrics on port {metrics}, and Ray has no setting to bind them elsewhere."
        f" Unset {HAPROXY_ENV} to serve on {host} only, or set serving.host: 0.0.0.0"
        " (--serving.host 0.0.0.0) to serve on all interfaces on purpose"
    )


def deploy(
    project: Project,
    ref: str | None = None,
    *,
    canary: str | None = None,
    canary_percent: float = 10.0,
    variant: str | None = None,
    batching: bool = True,
    announce: Callable[[str], None] | None = None,
) -> Service:
    """Serve `ref` (default `serving.model_version`) and, with `canary`, a second version taking
    `canary_percent` of the traffic. Returns once every replica is up."""
    from ray import serve

    from shipyard.cluster import connect

    if canary is not None and not 0 <= canary_percent <= 100:
        raise UserInputError(f"--canary-percent: must be in [0, 100] (got {canary_percent:g})")
    check_proxy_binding(project.serving.host)
    champion = resolve(project, ref or project.serving.model_version)
    challenger = resolve(project, canary) if canary else None
    if challenger is not None and (challenger.name, challenger.version) == (
        champion.name,
        champion.version,
    ):
        raise UserInputError(f"--canary: {canary} is {champion.uri}, the version already served")
    app = build_app(
        project,
        champion,
        challenger,
        challenger_percent=canary_percent if challenger else 0.0,
        variant=variant,
        batching=batching,
    )
    import ray

    embedded = not (project.cluster.address or os.environ.get("RAY_ADDRESS"))
    s = project.serving
    # Serve's controller and replicas read the mode from the environment they start with: the
    # embedded cluster's processes inherit it from here (this process keeps its own).
    direct_env = s.ingress == "direct" and embedded and not ray.is_initialized()
    with contextlib.ExitStack() as env:
        if direct_env:
            env.enter_context(temporary_env(THROUGHPUT_ENV, "1"))
            # A stopping direct ingress waits 30 s by default for external load balancers to
            # notice; none sits in front of the embedded cluster, whose Ctrl-C would wait.
            env.enter_context(temporary_env(DRAINING_ENV, EMBEDDED_DRAINING_S))
        connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    serve.start(http_options={"host": s.host, "port": s.port})
    if announce:
        announce(
            f"starting {project.name!r}: {champion.uri}"
            + (f" + canary {challenger.uri}" if challenger else "")
        )
    serve.run(app, name=project.name, route_prefix=s.route_prefix, blocking=False)
    status = status_of(project)
    url = f"http://{s.host}:{s.port}{s.route_prefix.rstrip('/')}/"
    extra = []
    if s.ingress == "direct":
        direct = direct_ingress_url(project)
        if direct is None:
            extra.append(
                "  note:     serving.ingress is direct, but this cluster's Serve runs without"
                f" direct ingress: requests go through its proxy. Start the cluster with"
                f" {THROUGHPUT_ENV}=1 for the direct path."
            )
        else:
            extra.append(f"  ingress:  direct (Serve's proxy answers too, slower, at {url})")
            url = direct
    return Service(
        app=project.name,
        url=url,
        champion=status["arms"]["champion"],
        challenger=status["arms"].get("challenger"),
        challenger_percent=status["challenger_percent"],
        embedded=embedded,
        feedback_dir=str(feedback_dir(project)),
        extra=extra,
    )


def direct_ingress_url(project: Project) -> str | None:
    """Where the app's ingress replica answers HTTP itself, when Serve runs direct ingress.

    Serve's controller knows the port it gave the replica (its `get_target_groups`, what HAProxy
    mode balances over; no public API has it). Without direct ingress it only lists proxies."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    s = project.serving
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    groups = ray.get(controller.get_target_groups.remote(project.name), timeout=30)
    for group in groups:
        if group.ingress_deployment_name and str(group.protocol).endswith("HTTP") and group.targets:
            target = group.targets[0]
            host = target.ip if s.host.strip() in ALL_INTERFACES else s.host
            return f"http://{host}:{target.port}{s.route_prefix.rstrip('/')}/"
    return None


def serve_forever(project: Project, service: Service) -> None:
    """Keep the embedded cluster's service up until Ctrl-C (or `shipyard serve down`)."""
    from ray import serve

    marker = project.workdir_path / PID_FILE
    marker.parent.mkdir(parents=True, exist_ok=True)
    import ray

    address = ray.get_runtime_context().gcs_address
    marker.write_text(
        json.dumps({"pid": os.getpid(), "app": service.app, "url": service.url, "address": address})
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        marker.unlink(missing_ok=True)
        serve.shutdown()


def connect_to_service(project: Project) -> None:
    """Join the cluster the project's service runs on: the configured one, or the embedded
    cluster of a foreground `shipyard serve` on this machine (its address is in its marker)."""
    from shipyard.cluster import connect

    address = project.cluster.address or os.environ.get("RAY_ADDRESS")
    marker = project.workdir_path / PID_FILE
    if not address:
        if not marker.is_file():
            raise UserInputError(
                f"no service {project.name!r} runs here (no {marker}); start one with"
                " shipyard serve, or give --cluster.address"
            )
        address = json.loads(marker.read_text())["address"]
    connect(address)


def promote(project: Project) -> str:
    """All traffic to the challenger, and the registry's `champion` alias to its version."""
    from shipyard.training.model_versions import promote as move_alias

    state = status_of(project)
    challenger = state["arms"].get("challenger")
    if challenger is None:
        raise UserInputError(f"{project.name!r} serves no challenger (start one with --canary)")
    set_traffic(project, 100.0)
    moved = move_alias(project, f"{challenger['name']}:{challenger['version']}")
    return (
        f"all traffic goes to {_arm(challenger)}; champion -> version {moved.version}"
        " (a restart of the service now serves it as the champion)"
    )


def format_status(state: dict[str, Any]) -> str:
    lines = []
    percent = state["challenger_percent"]
    for role, arm in state["arms"].items():
        share = percent if role == "challenger" else 100.0 - percent
        replicas = state.get("replicas", {}).get(role)
        scale = f", {replicas} replica(s)" if replicas is not None else ""
        lines.append(f"{role:<10} {_arm(arm):<32} {share:5.1f}% of traffic{scale}")
    canary = state.get("canary")
    if canary:
        lines.append(f"canary     {canary['summary']}")
        if canary.get("decision"):
            lines.append(f"           {canary['decision']}")
    for i, url in enumerate(state.get("metrics", [])):
        lines.append(f"{'metrics' if i == 0 else '':<10} {url}  (Prometheus: ray_serve_*)")
    return "\n".join(lines)


def _handle(project: Project):
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        handle = serve.get_app_handle(project.name)
    except RayServeException:
        raise UserInputError(f"no service {project.name!r} is running on this cluster") from None
    # This process calls it without an event loop of its own; throughput-optimized Serve
    # (THROUGHPUT_ENV) defaults handles to the caller's loop, which would refuse the call.
    if not handle.is_initialized:  # Serve hands out one cached handle per app
        handle._init(_run_router_in_separate_loop=True)
    return handle


def status_of(project: Project) -> dict[str, Any]:
    """The running app's arms, traffic split and canary verdict (from its ingress), and each
    arm's running replicas (from Serve)."""
    from ray import serve

    state = _handle(project).status.remote().result(timeout_s=30)
    app = serve.status().applications.get(project.name)
    if app is not None:
        state["replicas"] = {
            name: sum(n for s, n in d.replica_states.items() if str(s).endswith("RUNNING"))
            for name, d in app.deployments.items()
        }
    state["metrics"] = _metrics_endpoints()
    return state


def _metrics_endpoints() -> list[str]:
    """Each live node's Prometheus endpoint: Serve's request, latency, queue and replica metrics
    (`ray_serve_*`) are exported there with the rest of Ray's."""
    import ray

    return [
        f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        for n in ray.nodes()
        if n.get("Alive") and n.get("MetricsExportPort")
    ]


def set_traffic(project: Project, challenger_percent: float) -> float:
    """Move traffic between the arms through the ingress's `reconfigure` (no restart)."""
    state = status_of(project)
    if "challenger" not in state["arms"]:
        raise UserInputError(f"{project.name!r} serves no challenger (start one with --canary)")
    return _handle(project).set_traffic.remote(challenger_percent).result(timeout_s=30)


def down(project: Project) -> str:
    """Stop the project's service: the foreground `shipyard serve` of the embedded cluster, or the
    app on the running cluster."""
    marker = project.workdir_path / PID_FILE
    if marker.is_file() and not (project.cluster.address or os.environ.get("RAY_ADDRESS")):
        info = json.loads(marker.read_text())
        try:
            os.kill(int(info["pid"]), signal.SIGINT)
        except ProcessLookupError:
            marker.unlink(missing_ok=True)
            raise UserInputError(f"{project.name!r} is not running (stale {marker})") from None
        deadline = time.monotonic() + 60
        while marker.exists():
            if time.monotonic() > deadline:
                raise ShipyardError(f"process {info['pid']} did not stop within 60 s")
            time.sleep(0.2)
        return f"stopped {project.name!r} (process {info['pid']})"
    from ray import serve

    connect_to_service(project)
    _handle(project)
    serve.delete(project.name)
    return f"deleted the Serve app {project.name!r}"


def _arm(arm: dict[str, Any]) -> str:
    variant = "" if arm["variant"] == "full" else f" ({arm['variant']})"
    return f"models:/{arm['name']}/{arm['version']}{variant}"
