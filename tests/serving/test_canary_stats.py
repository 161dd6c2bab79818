"""The canary's sequential test: valid when read after every feedback, and still able to decide.

The simulations run hundreds of experiments at once through the module's own array functions
(cumulative sums give every look of every experiment in one pass); one test checks that those
functions and `CanaryMonitor.record` give the same p-values, so the monitor inherits the
measured error rates.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shipyard.serving.canary_stats import (
    ArmCounts,
    CanaryMonitor,
    CanaryVerdict,
    difference_and_variance,
    look_p_value,
    null_variance,
)

ALPHA = 0.05
FLOOR = 20
Z_975 = 1.959963984540054  # two-sided 5 % critical value of the normal


def simulate(rng, experiments, looks, p_champion, p_challenger, split):
    """Cumulative counts after each look: one feedback per look, to the challenger w.p. split.

    split=None gives one feedback to each arm per look (a paired 50/50 canary)."""
    if split is None:
        n = np.broadcast_to(np.arange(1, looks + 1), (experiments, looks))
        n_c, n_h = n, n
        k_c = np.cumsum(rng.random((experiments, looks)) < p_champion, axis=1)
        k_h = np.cumsum(rng.random((experiments, looks)) < p_challenger, axis=1)
        return n_c, k_c, n_h, k_h
    to_challenger = rng.random((experiments, looks)) < split
    u = rng.random((experiments, looks))
    right = np.where(to_challenger, u < p_challenger, u < p_champion)
    n_h = np.cumsum(to_challenger, axis=1)
    n_c = np.arange(1, looks + 1) - n_h
    k_h = np.cumsum(right & to_challenger, axis=1)
    k_c = np.cumsum(right & ~to_challenger, axis=1)
    return n_c, k_c, n_h, k_h


def sequential_p(n_c, k_c, n_h, k_h, floor=FLOOR):
    """Each look's always-valid p-value (running min of 1/Λ from the first look with `floor`)."""
    looking = np.minimum(n_c, n_h) >= floor
    # Arms still empty are clamped to n=1 only to keep the arithmetic finite; masked out anyway.
    n_c, n_h = np.maximum(n_c, 1), np.maximum(n_h, 1)
    theta, _ = difference_and_variance(n_c, k_c, n_h, k_h)
    p = np.where(looking, look_p_value(theta, null_variance(n_c, k_c, n_h, k_h)), 1.0)
    return np.minimum.accumulate(p, axis=1), theta


def naive_z_rejects(n_c, k_c, n_h, k_h, floor=FLOOR):
    """Whether a classic pooled two-proportion z-test at 5 % rejects at any look (from floor)."""
    looking = np.minimum(n_c, n_h) >= floor
    n_c, n_h = np.maximum(n_c, 1), np.maximum(n_h, 1)
    pooled = (k_c + k_h) / (n_c + n_h)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_h))
    z = np.abs(k_h / n_h - k_c / n_c) / np.where(se > 0, se, np.inf)
    return ((z >= Z_975) & looking).any(axis=1)


def a_a_rates(seed, split, experiments=300, samples=2000):
    """(always-valid, naive) fraction of A/A experiments (both 0.85) that ever reject."""
    looks = samples if split is None else 2 * samples
    counts = simulate(np.random.default_rng(seed), experiments, looks, 0.85, 0.85, split)
    p, _ = sequential_p(*counts)
    return float((p[:, -1] <= ALPHA).mean()), float(naive_z_rejects(*counts).mean())


def test_type_one_error_holds_when_looking_after_every_sample():
    always_valid, naive = a_a_rates(seed=0, split=None)
    assert always_valid <= ALPHA + 0.03
    # The same data, read after every sample by a classic z-test, "finds" a difference in
    # roughly half of the A/A experiments: looking often is what breaks it, so the sequential
    # test is the reason the first rate is low.
    assert naive > 0.2


def test_type_one_error_holds_with_an_uneven_split():
    # A canary sends the challenger a small share; the small arm's noisy accuracy is where a
    # per-arm variance would let errors through (see null_variance).
    always_valid, naive = a_a_rates(seed=1, split=0.1)
    assert always_valid <= ALPHA + 0.03
    assert naive > 0.2


def test_array_functions_match_the_monitor():
    counts = simulate(np.random.default_rng(2), 1, 600, 0.85, 0.8, split=0.3)
    p, _ = sequential_p(*counts)
    monitor = CanaryMonitor(alpha=ALPHA, floor=FLOOR)
    # Back from cumulative counts to the feedback stream: which arm got each look, and was it right.
    to_challenger = np.diff(counts[2][0], prepend=0) == 1
    right_c, right_h = (np.diff(k[0], prepend=0) == 1 for k in (counts[1], counts[3]))
    for look in range(600):
        if to_challenger[look]:
            monitor.record("challenger", bool(right_h[look]))
        else:
            monitor.record("champion", bool(right_c[look]))
        assert monitor.p_value == pytest.approx(p[0, look], rel=1e-9, abs=1e-12)


def test_power_better_challenger_is_ready_soon_after_min_samples():
    # Most experiments have the evidence by the time both arms reach min_samples (200).
    counts = simulate(np.random.default_rng(3), 300, 400, 0.80, 0.95, split=None)
    p, theta = sequential_p(*counts)
    better_by_200 = (p[:, 199] <= ALPHA) & (theta[:, 199] > 0)
    assert better_by_200.mean() >= 0.9

    monitor = CanaryMonitor(alpha=ALPHA, min_samples=200, floor=FLOOR)
    rng = np.random.default_rng(4)
    for _ in range(400):
        monitor.record("champion", bool(rng.random() < 0.80))
        verdict = monitor.record("challenger", bool(rng.random() < 0.95))
        if verdict.state != "collecting":
            break
    assert verdict.state == "challenger_better"
    assert verdict.ready and not verdict.rollback
    assert 200 <= verdict.challenger.n <= 400
    assert verdict.difference > 0 and verdict.ci[0] > 0


def test_power_worse_challenger_rolls_back_before_min_samples():
    counts = simulate(np.random.default_rng(5), 300, 200, 0.90, 0.60, split=None)
    p, theta = sequential_p(*counts)
    worse_by_150 = (p[:, 149] <= ALPHA) & (theta[:, 149] < 0)
    assert worse_by_150.mean() >= 0.95

    monitor = CanaryMonitor(alpha=ALPHA, min_samples=200, floor=FLOOR)
    rng = np.random.default_rng(6)
    for _ in range(200):
        monitor.record("champion", bool(rng.random() < 0.90))
        verdict = monitor.record("challenger", bool(rng.random() < 0.60))
        if verdict.state != "collecting":
            break
    assert verdict.state == "challenger_worse"
    assert verdict.rollback
    assert FLOOR <= verdict.challenger.n < 200
    assert "worse" in verdict.describe() and "roll back" in verdict.describe()


def test_no_verdict_below_the_floor():
    # Champion always right, challenger always wrong: worse as soon as the floor is reached,
    # and not one sample earlier.
    monitor = CanaryMonitor(alpha=ALPHA, floor=FLOOR)
    for _ in range(FLOOR - 1):
        monitor.record("champion", True)
        verdict = monitor.record("challenger", False)
    assert verdict.state == "collecting" and verdict.p_value == 1.0 and verdict.ci is None
    monitor.record("champion", True)
    assert monitor.record("challenger", False).state == "challenger_worse"


def test_p_value_never_increases():
    rng = np.random.default_rng(7)
    monitor = CanaryMonitor(alpha=ALPHA)
    previous = 1.0
    for i in range(3000):
        arm = "challenger" if rng.random() < 0.2 else "champion"
        # The challenger's accuracy changes midway, so p recomputed from the totals alone would
        # fall and then rise again; the always-valid p keeps its lowest value.
        accuracy = 0.85 if arm == "champion" else (0.92 if i < 1000 else 0.8)
        monitor.record(arm, bool(rng.random() < accuracy))
        assert monitor.p_value <= previous
        previous = monitor.p_value
    assert monitor.looks > 0


def test_better_is_collecting_until_min_samples():
    monitor = CanaryMonitor(alpha=ALPHA, min_samples=200)
    for i in range(199):
        monitor.record("champion", i % 2 == 0)  # 0.50
        verdict = monitor.record("challenger", True)  # 1.00
    assert verdict.p_value <= ALPHA
    assert verdict.state == "collecting" and not verdict.ready
    assert "better so far" in verdict.describe()
    assert "collecting until 200 per arm" in verdict.describe()
    monitor.record("champion", False)
    verdict = monitor.record("challenger", True)
    assert verdict.state == "challenger_better"
    line = verdict.describe()
    assert line.startswith("challenger 1.00 (n=200) vs champion 0.50 (n=200): better, +0.500")
    assert line.endswith("p<0.001 (always-valid), ready to promote")


def test_undecided_after_min_samples_without_a_difference():
    monitor = CanaryMonitor(alpha=ALPHA, min_samples=200)
    for i in range(200):
        monitor.record("champion", i % 10 != 0)
        verdict = monitor.record("challenger", i % 10 != 1)
    assert verdict.state == "undecided"
    assert verdict.difference == 0.0 and verdict.ci[0] < 0 < verdict.ci[1]
    assert "no significant difference" in verdict.describe()


def test_verdict_round_trips_through_json():
    monitor = CanaryMonitor()
    assert monitor.verdict().difference is None
    assert "n/a (n=0)" in monitor.verdict().describe()
    rng = np.random.default_rng(8)
    for _ in range(300):
        monitor.record("champion", bool(rng.random() < 0.85))
        monitor.record("challenger", bool(rng.random() < 0.9))
    verdict = monitor.verdict()
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["summary"] == verdict.describe()
    assert data["challenger"]["accuracy"] == verdict.challenger.accuracy
    assert CanaryVerdict.from_dict(data) == verdict
    with pytest.raises(ValueError, match="'promoted'"):
        CanaryVerdict.from_dict({**data, "state": "promoted"})


def test_state_round_trip_resumes_the_running_test():
    rng = np.random.default_rng(9)
    feedback = [
        ("challenger" if rng.random() < 0.3 else "champion", bool(rng.random() < 0.85))
        for _ in range(1500)
    ]
    uninterrupted = CanaryMonitor(min_samples=100)
    for arm, correct in feedback:
        uninterrupted.record(arm, correct)

    first = CanaryMonitor(min_samples=100)
    for arm, correct in feedback[:700]:
        first.record(arm, correct)
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = CanaryMonitor.from_state(saved)
    other = CanaryMonitor(min_samples=100)
    other.load_state(saved)
    for monitor in (resumed, other):
        for arm, correct in feedback[700:]:
            monitor.record(arm, correct)
        assert monitor.verdict() == uninterrupted.verdict()
        assert monitor.looks == uninterrupted.looks


def test_load_state_refuses_other_settings():
    saved = CanaryMonitor(tau=0.1).state_dict()
    with pytest.raises(ValueError, match="tau"):
        CanaryMonitor(tau=0.05).load_state(saved)
    with pytest.raises(ValueError, match="version"):
        CanaryMonitor().load_state({**saved, "version": 99})


def test_bad_arm_names_the_arm():
    with pytest.raises(ValueError, match="'shadow'"):
        CanaryMonitor().record("shadow", True)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        CanaryMonitor(alpha=1.5)
    with pytest.raises(ValueError, match="min_samples"):
        CanaryMonitor(min_samples=5, floor=20)


def test_arm_counts():
    arm = ArmCounts()
    assert arm.accuracy is None
    arm.add(True)
    arm.add(False)
    assert (arm.n, arm.correct, arm.accuracy) == (2, 1, 0.5)
