"""Will this job ever be scheduled? Answer before launching it, not after an endless wait.

Ray queues a placement group that cannot fit and waits forever, silently: a 4-worker job with
2 CPUs per worker on two 2-CPU nodes looks exactly like a slow start. Each Horovod worker is one
actor that must fit on ONE node, so the check packs workers node by node instead of comparing
cluster-wide sums (3 nodes × 1 GPU cannot host a worker that asks for 2 GPUs).

`check_resources` is pure when given explicit resources (`ClusterResources`), so it is testable and
cheap; without them it reads Ray's view of the cluster this process is connected to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shipyard.errors import UserInputError

_EPS = 1e-9


@dataclass(frozen=True)
class NodeResources:
    """One node's resources; `available` is None when only the totals are known."""

    node_id: str
    total: Mapping[str, float]
    available: Mapping[str, float] | None = None
    is_head: bool = False
    ip: str = ""
    alive: bool = True

    def get(self, name: str) -> float:
        return float(self.total.get(name, 0.0))

    def free(self, name: str) -> float | None:
        return None if self.available is None else float(self.available.get(name, 0.0))


@dataclass(frozen=True)
class ClusterResources:
    """Totals per alive node, plus what is free right now (cluster-wide, and per node if known)."""

    nodes: tuple[NodeResources, ...]
    available: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls, nodes: Iterable[NodeResources], available: Mapping[str, float] | None = None
    ) -> ClusterResources:
        alive = tuple(n for n in nodes if n.alive)
        if available is None:
            available = {}
            for node in alive:
                for name, value in (node.available or node.total).items():
                    available[name] = available.get(name, 0.0) + float(value)
        return cls(nodes=alive, available=dict(available))

    @classmethod
    def from_ray(cls) -> ClusterResources:
        """Ray's view of the cluster this process is connected to (`ray.init` must have run)."""
        import ray

        if not ray.is_initialized():
            raise RuntimeError("check_resources without explicit resources needs ray.init() first")
        nodes = [
            NodeResources(
                node_id=info["NodeID"],
                total=dict(info.get("Resources") or {}),
                ip=info.get("NodeManagerAddress", ""),
                alive=bool(info.get("Alive")),
            )
            for info in ray.nodes()
        ]
        return cls.of(nodes, available=ray.available_resources())

    def total(self, name: str) -> float:
        return sum(node.get(name) for node in self.nodes)


@dataclass(frozen=True)
class PreflightResult:
    """What was asked, what exists, and whether the job runs now, waits, or may need autoscaling."""

    workers: int
    per_worker: dict[str, float]
    total: dict[str, float]
    free: dict[str, float]
    fits_ever: int  # how many such workers the cluster can host when idle
    fits_now: int  # how many it can host with what is free now
    must_wait: bool
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.fits_ever >= self.workers

    def describe(self) -> str:
        lines = [
            f"preflight: {_ask(self.workers, self.per_worker)}; cluster has {_fmt(self.total)}"
            f" ({_fmt(self.free)} free)"
        ]
        lines += [f"preflight: {note}" for note in self.notes]
        return "\n".join(lines)


def check_resources(
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    use_gpu: bool,
    cluster_resources: ClusterResources | Mapping[str, float] | None = None,
    autoscaling: bool = False,
) -> PreflightResult:
    """Compare a data-parallel job's needs with the cluster; raise UserInputError if it never fits.

    `cluster_resources` may be a `ClusterResources` (per node), a plain mapping of cluster totals
    (treated as one node: the optimistic view when per-node data is missing), or None to ask Ray.
    With `autoscaling=True` a job larger than today's cluster is allowed (nodes may be added) and
    only reported. The Ray Train trainer actor itself is assumed to ask for no resources
    (`trainer_resources={"CPU": 0}`), as shipyard configures it.
    """
    if workers < 1:
        raise UserInputError(f"workers: must be >= 1 (got {workers})")
    if cpus_per_worker <= 0:
        raise UserInputError(f"cpus_per_worker: must be > 0 (got {cpus_per_worker})")
    if use_gpu and gpus_per_worker <= 0:
        raise UserInputError(f"gpus_per_worker: must be > 0 with use_gpu (got {gpus_per_worker})")
    if cluster_resources is None:
        cluster = ClusterResources.from_ray()
    elif isinstance(cluster_resources, ClusterResources):
        cluster = cluster_resources
    else:
        totals = {k: float(v) for k, v in cluster_resources.items()}
        cluster = ClusterResources.of([NodeResources("cluster", totals)], available=totals)

    need = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        need["GPU"] = float(gpus_per_worker)
    total = {name: cluster.total(name) for name in ("CPU", "GPU")}
    free = {name: float(cluster.available.get(name, 0.0)) for name in ("CPU", "GPU")}

    fits_ever = sum(_fits(need, node.total) for node in cluster.nodes)
    if all(node.available is not None for node in cluster.nodes) and cluster.nodes:
        fits_now = sum(_fits(need, node.available or {}) for node in cluster.nodes)
    else:
        fits_now = min(fits_ever, _fits(need, free))
    notes: list[str] = []

    if fits_ever < workers:
        problem = _why(workers, need, cluster, fits_ever)
        if not autoscaling:
            raise UserInputError(
                f"this job can never be scheduled: {_ask(workers, need)}, but {problem}."
                " Lower the workers or the resources per worker (training.workers,"
                " training.cpus_per_worker, training.gpus_per_worker), or add nodes"
            )
        notes.append(f"{problem}; the autoscaler must add nodes before it can start")
    must_wait = fits_now < workers
    if must_wait and fits_ever >= workers:
        notes.append(
            f"only {fits_now} of {workers} workers fit in what is free now; the job waits for"
            " running work to finish"
        )
    return PreflightResult(
        workers=workers,
        per_worker=need,
        total=total,
        free=free,
        fits_ever=fits_ever,
        fits_now=fits_now,
        must_wait=must_wait,
        notes=tuple(notes),
    )


def _fits(need: Mapping[str, float], have: Mapping[str, float]) -> int:
    """How many workers with `need` fit into `have` (one node's resources)."""
    counts = [
        math.floor(float(have.get(name, 0.0)) / amount + _EPS) for name, amount in need.items()
    ]
    return max(0, min(counts)) if counts else 0


def _why(workers: int, need: Mapping[str, float], cluster: ClusterResources, fits: int) -> str:
    if not cluster.nodes:
        return "the cluster has no alive nodes"
    shapes = ", ".join(sorted({_fmt(n.total) for n in cluster.nodes}))
    count = len(cluster.nodes)
    where = f"the cluster has {count} node{'s' if count != 1 else ''} ({shapes})"
    biggest = {name: max(n.get(name) for n in cluster.nodes) for name in need}
    short = [name for name, amount in need.items() if biggest[name] + _EPS < amount]
    if short:
        detail = ", ".join(f"{_num(biggest[n])} {n}" for n in short)
        return f"{where}: no single node has {_fmt(need)} for one worker (largest: {detail})"
    return f"{where}: at most {fits} such worker{'s' if fits != 1 else ''} fit at once"


def _ask(workers: int, need: Mapping[str, float]) -> str:
    total = {name: workers * amount for name, amount in need.items()}
    return f"{workers} worker{'s' if workers != 1 else ''} × {_fmt(need)} = {_fmt(total)}"


def _fmt(resources: Mapping[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU") if k in resources] or list(resources)
    return " + ".join(f"{_num(resources.get(k, 0.0))} {k}" for k in keys)


def _num(value: float) -> str:
    return f"{value:g}"
