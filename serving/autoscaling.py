"""Serve's autoscaling, counted in requests rather than in handle calls.

The ingress sends a model deployment its requests in batches, one handle call each, so Serve's
own metric (ongoing calls per replica) undercounts load by the batch size: at 32 clients a
replica sees one or two calls in flight where 32 requests wait, and the default policy never
scales up. Model replicas report the requests inside their calls (`REQUESTS_IN_FLIGHT`, from
`record_autoscaling_stats`), and this policy applies Serve's own rule to that number: as many
replicas as keep `target_ongoing_requests` requests in flight on each. Serve's wrapper applies
min/max_replicas and the up/downscale delays as for its default policy.
"""

from __future__ import annotations

from typing import Any

REQUESTS_IN_FLIGHT = "requests_in_flight"
POLICY = "shipyard.serving.autoscaling:requests_in_flight_policy"


def requests_in_flight_policy(ctx) -> tuple[float, dict[str, Any]]:
    """Desired replicas for a `ray.serve.config.AutoscalingContext`."""
    running = ctx.current_num_replicas
    if running == 0:
        return ctx.target_num_replicas, {}
    # Each replica's report averaged over look_back_period_s; none yet: fall back to Serve's count.
    per_replica = (ctx.aggregated_metrics or {}).get(REQUESTS_IN_FLIGHT) or {}
    in_flight = sum(per_replica.values()) if per_replica else ctx.total_num_requests
    target = ctx.config.get_target_ongoing_requests() * running
    return running * in_flight / target, {}
