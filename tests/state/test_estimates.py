"""Merge estimates learned from this cluster's past merges in the action log."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sim import by_name
from test_sim_actions import Session, quiet

from ventana.backends.actions import ActionRunner
from ventana.backends.window_runner import WindowRunner
from ventana.state.actionlog import ActionLog
from ventana.state.estimates import LearnedEstimator, MergeSample, learned_estimate
from ventana.state.plans import heuristic_merge_estimate, merge_units
from ventana.state.window import WindowStore

GB = 1024**3


def sample(ratio: float, checkpoints: int = 3, chain: int = 40 * GB) -> MergeSample:
    return MergeSample(ratio * 60 * merge_units(checkpoints, chain), checkpoints, chain)


def test_too_few_samples_fall_back_to_the_heuristic_and_say_so() -> None:
    est = learned_estimate([sample(2.0), sample(2.0)], 4, 10 * GB)
    fallback = heuristic_merge_estimate(4, 10 * GB)
    assert (est.low_s, est.likely_s, est.high_s) == (
        fallback.low_s, fallback.likely_s, fallback.high_s)
    assert est.basis.startswith("heuristic, only 2 past merge(s) on this cluster, 3 needed")
    assert learned_estimate([], 4, 10 * GB).basis.startswith(
        "heuristic, no past merges on this cluster yet")


def test_median_ratio_scales_the_model_and_the_spread_is_the_range() -> None:
    # This cluster merges twice as slowly as the heuristic says, give or take.
    samples = [sample(r) for r in (1.5, 2.0, 2.0, 2.5, 3.0)]
    est = learned_estimate(samples, 5, 100 * GB)
    base = 60 * merge_units(5, 100 * GB)
    assert est.likely_s == pytest.approx(2.0 * base)
    assert est.low_s == pytest.approx(1.5 * base) and est.high_s == pytest.approx(3.0 * base)
    assert est.basis.startswith("from 5 similar past merges (3 checkpoints) on this cluster, "
                                "±50 %")
    # One pathological merge moves the median little (the mean would be 8.5).
    wild = learned_estimate([*samples, sample(40.0)], 5, 100 * GB)
    assert wild.likely_s == pytest.approx(2.25 * base)
    # With 10 or more samples the range is the 10th to 90th percentile.
    many = [sample(1.0 + n / 10) for n in range(11)]  # 1.0 .. 2.0
    est = learned_estimate(many, 1, 0)
    base = 60 * merge_units(1, 0)
    assert est.low_s == pytest.approx(1.1 * base) and est.high_s == pytest.approx(1.9 * base)


def test_similar_chains_are_preferred_when_there_are_enough() -> None:
    short = [sample(1.0, checkpoints=2) for _ in range(3)]
    long = [sample(5.0, checkpoints=20) for _ in range(3)]
    est = learned_estimate(short + long, 2, 0)
    assert est.likely_s == pytest.approx(60 * merge_units(2, 0))
    assert est.basis.startswith("from 3 similar past merges (2 checkpoints)")
    # Too few similar ones: every past merge counts.
    est = learned_estimate(short[:2] + long, 2, 0)
    assert est.basis.startswith("from 5 past merges on this cluster")
    assert est.likely_s == pytest.approx(5.0 * 60 * merge_units(2, 0))


def seed(log: ActionLog, system: str, seconds: float, checkpoints: int, chain: int, *,
         outcome: str = "ok", action: str = "merge", clock_rate: float = 1.0) -> None:
    row = log.begin(action=action, target_system=system, mode="read-write",
                    target_object="vm:x", target_name="x",
                    plan={"facts": {"checkpoints": checkpoints, "chain_bytes": chain},
                          "clock_rate": clock_rate},
                    findings=[], override=False, confirmed=True)
    log.finish(row, outcome=outcome)
    log.db.table("actions").update(row, {"duration_s": seconds})  # the past merge's time


def test_estimator_reads_only_this_clusters_finished_ok_merges(tmp_path: Path) -> None:
    log = ActionLog.open(tmp_path / "a.db")
    base = 60 * merge_units(2, 20 * GB)
    for _ in range(2):
        seed(log, "sim://A", 3 * base, 2, 20 * GB)
    seed(log, "sim://A", base / 60, 2, 20 * GB, clock_rate=60.0)  # a faster simulated clock
    seed(log, "sim://B", 100 * base, 2, 20 * GB)  # another cluster
    seed(log, "sim://A", 100 * base, 2, 20 * GB, outcome="failed")
    seed(log, "sim://A", 100 * base, 2, 20 * GB, action="upgrade")
    estimator = LearnedEstimator(log, "sim://A")
    ratios = sorted(round(s.ratio, 6) for s in estimator.samples())
    assert ratios == [1.0, 3.0, 3.0]
    seed(log, "sim://A", 3 * base, 2, 20 * GB)
    assert len(estimator.samples()) == 4  # a new row is seen


async def test_plans_and_the_window_use_the_learned_estimate(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        log = ActionLog.open(tmp_path / "actions.db")
        runner = ActionRunner(s.store, s.backend, log, clock=s.backend.now)
        vm = by_name(s.store, "git-01")
        before = runner.plan("merge", vm.id)
        assert before.estimate and before.estimate.basis.startswith("heuristic, no past")
        for minutes, checkpoints in ((400, 4), (500, 5), (420, 3), (380, 4)):
            seed(log, s.backend.target, minutes * 60, checkpoints, 30 * GB)
        after = runner.plan("merge", vm.id)
        assert after.estimate and after.estimate.basis.startswith(
            "from 4 similar past merges (3–5 checkpoints) on this cluster, ±")
        assert after.estimate.likely_s > before.estimate.likely_s  # this cluster is slower
        window = WindowStore.open(log.path).load("w")
        window.add(vm.id, vm.name, "merge")
        proj = WindowRunner(runner, window).projection()
        assert proj.items[0].estimate == after.estimate
