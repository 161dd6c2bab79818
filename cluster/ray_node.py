"""Run Ray's own `ray start` CLI, keeping a loopback node address as given.

`ray start` replaces 127.0.0.1 in `--node-ip-address` and `--address` with the machine's network
address (Ray assumes loopback means "this machine" and wants an address other hosts can reach).
For a cluster that must stay on this machine that is wrong twice: the worker node then advertises
and binds a non-loopback address, and it tries to reach a head whose GCS only listens on
127.0.0.1. The head avoids the rewrite with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, but worker
nodes refuse to start with that setting, so worker nodes are started through this module, which
makes the one rewrite keep loopback hosts and then hands over to the unchanged `ray start`.

Usage: python -m shipyard.cluster.ray_node start --address 127.0.0.1:PORT ... (same flags as Ray).
"""

from __future__ import annotations

import sys


def main() -> None:
    import ray._private.services as services
    from ray._common.network_utils import is_localhost
    from ray.scripts.scripts import main as ray_main

    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if is_localhost(host) else resolve(host)
    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
