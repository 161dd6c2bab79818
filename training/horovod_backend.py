"""Ray Train's Horovod backend, made to work on local multi-node clusters too."""

from __future__ import annotations

import dataclasses
import sys

from shipyard.training.ray_train_v1 import require_v1

require_v1()  # subclasses Ray Train's V1 classes; imported only once training has selected V1

from ray.train.horovod import HorovodConfig  # noqa: E402
from ray.train.horovod.config import _HorovodBackend  # noqa: E402


class SharedHostHorovodBackend(_HorovodBackend):
    """Ray Train's Horovod backend, also for several Ray nodes on one machine.

    Ray's backend asserts one hostname per Ray node, so on a local multi-node cluster
    (`shipyard cluster up`, `ray.cluster_utils.Cluster`) a job whose workers land on two nodes of
    the same host dies with a bare AssertionError. On such hosts this backend names each node
    distinctly for that bookkeeping and uses the loopback interface, as Horovod does when all
    ranks are local. With one node per host (real clusters) it is Ray's backend unchanged.
    """

    def on_start(self, worker_group, backend_config):
        workers = worker_group.workers
        nodes_per_host: dict[str, set[str]] = {}
        for worker in workers:
            meta = worker.metadata
            nodes_per_host.setdefault(meta.hostname, set()).add(meta.node_id)
        if all(len(nodes) == 1 for nodes in nodes_per_host.values()):
            return super().on_start(worker_group, backend_config)
        from horovod.runner.driver.driver_service import get_local_interfaces

        nics = backend_config.nics or get_local_interfaces(backend_config)
        originals = [w.metadata.hostname for w in workers]
        try:
            for worker in workers:
                meta = worker.metadata
                meta.hostname = f"{meta.hostname}.{meta.node_id[:12]}"
            return super().on_start(worker_group, dataclasses.replace(backend_config, nics=nics))
        finally:
            for worker, hostname in zip(workers, originals, strict=True):
                worker.metadata.hostname = hostname

    def restart_rendezvous(self) -> None:
        """A new Horovod run on the workers of the last one (`shipyard.training.kept_workers`):
        the same rendezvous server with its store emptied, so no rank reads the last run's
        addresses when it calls `hvd.init()` again."""
        from horovod.runner.common.util import hosts

        coordinator = self.coordinator
        plan = hosts.get_host_assignments(
            hosts.parse_hosts(coordinator.node_id_string), coordinator.world_size
        )
        coordinator.rendezvous.init(plan)

    def on_shutdown(self, worker_group, backend_config):
        # Ray's backend leaves its rendezvous server's thread serving; a trial actor that runs
        # many trials would gather one per run.
        rendezvous = getattr(getattr(self, "coordinator", None), "rendezvous", None)
        if rendezvous is not None:
            rendezvous.stop()
        super().on_shutdown(worker_group, backend_config)


@dataclasses.dataclass
class SharedHostHorovodConfig(HorovodConfig):
    """`HorovodTrainer(..., horovod_config=SharedHostHorovodConfig())`: see the backend above."""

    @property
    def backend_cls(self):
        return SharedHostHorovodBackend


def leave_together() -> None:
    """Wait for every rank, then shut Horovod down on all of them at once.

    A rank whose actor ends first closes its Gloo connections under the others' background loop
    ("Connection reset by peer"); `hvd.join()` holds each rank until all have finished.
    """
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is not None and hvd.is_initialized():
        hvd.join()
        hvd.shutdown()
