"""Preflight: never-schedulable jobs fail at once with both sides named; waiting is reported."""

from __future__ import annotations

import pytest

from shipyard.cluster.preflight import ClusterResources, NodeResources, check_resources
from shipyard.errors import UserInputError


def cluster(*shapes: dict, free: list[dict] | None = None) -> ClusterResources:
    nodes = [
        NodeResources(f"node{i}", total, None if free is None else free[i])
        for i, total in enumerate(shapes)
    ]
    return ClusterResources.of(nodes)


def test_fits_on_two_small_nodes():
    result = check_resources(2, 1, 1, False, cluster({"CPU": 1}, {"CPU": 1}))
    assert result.ok and not result.must_wait
    assert result.fits_ever == 2 and result.fits_now == 2
    assert result.total == {"CPU": 2.0, "GPU": 0.0}


def test_worker_larger_than_any_node_names_ask_and_cluster():
    with pytest.raises(UserInputError) as err:
        check_resources(2, 2, 1, False, cluster({"CPU": 1}, {"CPU": 1}))
    text = str(err.value)
    # The cluster-wide sum (2 CPU) would be enough; each worker must fit on one node.
    assert "2 workers × 2 CPU = 4 CPU" in text
    assert "2 nodes (1 CPU)" in text
    assert "no single node has 2 CPU" in text
    assert err.value.exit_code == 2


def test_gpu_job_on_cpu_cluster():
    with pytest.raises(UserInputError, match=r"largest: 0 GPU"):
        check_resources(1, 1, 1, True, cluster({"CPU": 8}, {"CPU": 8}))


def test_fractional_gpus_pack_per_node():
    # 4 workers × 0.5 GPU fit on two 1-GPU nodes; 5 do not.
    two_gpu_nodes = cluster({"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1})
    assert check_resources(4, 1, 0.5, True, two_gpu_nodes).fits_ever == 4
    with pytest.raises(UserInputError, match="at most 4 such workers fit"):
        check_resources(5, 1, 0.5, True, two_gpu_nodes)


def test_busy_cluster_waits_and_says_what_is_free():
    busy = cluster({"CPU": 2}, {"CPU": 2}, free=[{"CPU": 0}, {"CPU": 1}])
    result = check_resources(2, 1, 1, False, busy)
    assert result.ok and result.must_wait
    assert result.fits_now == 1
    assert result.free["CPU"] == 1.0
    assert "only 1 of 2 workers fit in what is free now" in result.describe()


def test_autoscaling_cluster_reports_instead_of_failing():
    result = check_resources(4, 1, 1, True, cluster({"CPU": 8}), autoscaling=True)
    assert not result.ok
    assert any("autoscaler" in note for note in result.notes)


def test_plain_totals_mapping():
    assert check_resources(4, 1, 1, False, {"CPU": 4.0}).fits_ever == 4
    with pytest.raises(UserInputError):
        check_resources(5, 1, 1, False, {"CPU": 4.0})


def test_dead_nodes_do_not_count():
    nodes = [NodeResources("a", {"CPU": 1}), NodeResources("b", {"CPU": 1}, alive=False)]
    with pytest.raises(UserInputError, match="1 node"):
        check_resources(2, 1, 1, False, ClusterResources.of(nodes))


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 1, 1, False), "workers"),
        ((1, 0, 1, False), "cpus_per_worker"),
        ((1, 1, 0, True), "gpus_per_worker"),
    ],
)
def test_bad_requests_name_the_field(args, field):
    with pytest.raises(UserInputError, match=field):
        check_resources(*args, {"CPU": 4})


def test_reads_the_connected_ray_cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert check_resources(2, 1, 1, False).fits_ever == 2
        with pytest.raises(UserInputError, match="at most 2 such workers"):
            check_resources(3, 1, 1, False)
    finally:
        ray.shutdown()
