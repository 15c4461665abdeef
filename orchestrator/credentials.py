"""MLflow credentials for Ray workers, kept out of Ray's job config, its dashboard and Tune's state.

Trials log to an authenticated tracking server with MLflow's standard variables
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`. On a local cluster started by the sweep the
workers inherit them from the driver. On a cluster that was started elsewhere (`--address`) they do not,
and the usual ways in would expose them: a `runtime_env` is part of the job's config (shown by the
dashboard and `ray job` commands), and anything in the trainable's parameters lands in Tune's
experiment state on storage. So the driver hands them to one small actor in memory, on its own node,
that lives as long as the sweep; a trial whose environment lacks them asks that actor at start-up and
sets them in its own process. The values pass only as a method call's argument and result (worker to
worker, not through the GCS), never as actor constructor arguments (which the GCS keeps).
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator import server, tracking

ACTOR_NAME = "fgdsr-mlflow-credentials"


class _Holder:
    """The actor's class: remembers one dict of environment variables."""

    def __init__(self) -> None:
        self._env: dict[str, str] = {}

    def put(self, env: dict[str, str]) -> None:
        self._env = dict(env)

    def get(self) -> dict[str, str]:
        return dict(self._env)


def share_with_workers(uri: str) -> Any | None:
    """On the driver, after Ray is up: start the holder when `uri` is HTTP and credentials are set.

    Returns the actor handle (keep it until the sweep ends, then `stop_sharing`), or None.
    """
    creds = server.credentials()
    if not tracking.is_http(uri) or creds is None:
        return None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    holder = (
        ray.remote(_Holder)
        .options(
            name=ACTOR_NAME,
            get_if_exists=True,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True),
        )
        .remote()
    )
    ray.get(holder.put.remote({server.USER_VAR: creds[0], server.PASSWORD_VAR: creds[1]}), timeout=120)
    return holder


def stop_sharing(holder: Any | None) -> None:
    if holder is not None:
        import ray

        ray.kill(holder)


def load_in_worker() -> None:
    """In a trial (or Ray Train worker): take the credentials from the holder unless inherited."""
    if server.credentials() is not None:
        return  # a local cluster: inherited from the driver
    import ray

    try:
        holder = ray.get_actor(ACTOR_NAME)
    except ValueError:
        return  # nothing shared: a server without login (or a non-HTTP store)
    os.environ.update(ray.get(holder.get.remote(), timeout=120))
