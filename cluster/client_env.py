"""The environment Ray's own clients need to reach the cluster that `shipyard cluster up` started.

`eval "$(shipyard cluster env)"` exports it; then a plain `ray.init()`, `ray job submit`,
`JobSubmissionClient()` or `ray status` in that shell talks to this cluster. Each variable is
there for a reason found in Ray 2.60's source:

- `RAY_ADDRESS=127.0.0.1:PORT`: the GCS, what `ray.init()` (no argument) and `ray status` join.
- `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (loopback clusters only): `ray.init` passes the address
  through `services.canonicalize_bootstrap_address` → `resolve_ip_for_localhost`, which replaces
  127.0.0.1 with `get_node_ip_address()`, the machine's network address, where a GCS bound to
  loopback does not listen: the driver then retries "Failed to connect to GCS" and never joins.
  With this switch off, `get_node_ip_address()` answers the loopback address instead
  (`ray_constants.ENABLE_RAY_CLUSTER`; it is the default on macOS and Windows). The same switch
  makes `ray start --address` refuse to add a node in that shell: add nodes with
  `shipyard cluster up --nodes N`.
- `RAY_AUTH_MODE=token`: `ray start --head` turned token authentication on, and a client given an
  explicit address (argument or `RAY_ADDRESS`) never turns it on by itself; without it the
  client fails with "Missing authentication token" or cannot connect.
- `RAY_AUTH_TOKEN_PATH=FILE` when the token lives in a file (and `unset RAY_AUTH_TOKEN`, which Ray
  would read first). A token given in `$RAY_AUTH_TOKEN` is never printed: that shell must have it.
- `RAY_API_SERVER_ADDRESS=http://127.0.0.1:PORT`: the Jobs API (dashboard). `ray job` would find
  it through the GCS too; with it set, `ray job`, `JobSubmissionClient()` and `shipyard jobs` /
  `shipyard submit` all go straight to the same dashboard.
"""

from __future__ import annotations

import shlex

from shipyard.cluster.auth import AUTH_MODE_VAR, TOKEN_PATH_VAR, TOKEN_VAR
from shipyard.cluster.local_state import LocalCluster, load_state, state_file
from shipyard.cluster.network import is_loopback
from shipyard.errors import UserInputError

ADDRESS_VAR = "RAY_ADDRESS"
API_SERVER_VAR = "RAY_API_SERVER_ADDRESS"
CLIENT_ADDRESS_VARS = (ADDRESS_VAR, API_SERVER_VAR)
# ray._private.ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR (not imported: this module imports no Ray)
KEEP_LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_DISABLED = "disabled"  # LocalCluster.auth when the cluster was started without tokens


def client_env(cluster: LocalCluster | None = None) -> dict[str, str]:
    """The variables to export for Ray's clients (the recorded cluster when none is given)."""
    cluster = cluster or _recorded()
    env = {ADDRESS_VAR: cluster.gcs_address, API_SERVER_VAR: cluster.dashboard_url}
    host = cluster.gcs_address.rsplit(":", 1)[0]
    if is_loopback(host):
        env[KEEP_LOOPBACK_VAR] = "0"
    if cluster.auth == AUTH_DISABLED:
        env[AUTH_MODE_VAR] = AUTH_DISABLED
    else:
        env[AUTH_MODE_VAR] = "token"
        if not _token_in_env(cluster):
            env[TOKEN_PATH_VAR] = cluster.auth
    return env


def exports(cluster: LocalCluster | None = None) -> str:
    """`export NAME=value` lines (shell-quoted) for `eval "$(shipyard cluster env)"`."""
    cluster = cluster or _recorded()
    lines = [f"export {name}={shlex.quote(value)}" for name, value in client_env(cluster).items()]
    if _token_in_env(cluster):
        lines.append(f"# the token is read from ${TOKEN_VAR}, as when the cluster started")
    elif cluster.auth != AUTH_DISABLED:
        lines.append(f"unset {TOKEN_VAR}  # Ray would read it before {TOKEN_PATH_VAR}")
    return "\n".join(lines)


def _token_in_env(cluster: LocalCluster) -> bool:
    return cluster.auth == f"${TOKEN_VAR}"


def _recorded() -> LocalCluster:
    cluster = load_state()
    if cluster is None:
        raise UserInputError(
            f"no cluster started by shipyard (no {state_file()}); run `shipyard cluster up`"
        )
    if not cluster.nodes or not cluster.head.alive():
        raise UserInputError(
            f"the cluster recorded in {state_file()} is not running; run `shipyard cluster down`"
            " to clean up, then `shipyard cluster up`"
        )
    return cluster
