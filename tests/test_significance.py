"""The significance tests behind the tables' marks, against independent references.

* The utterance-level paired bootstrap against ``scipy.stats.bootstrap`` (paired, percentile
  method) on the same ratio statistic: the two intervals agree to Monte-Carlo precision.
* The two-level bootstrap where its utterance level is degenerate (every utterance of a seed
  has the same errors and words): it is then a bootstrap of the per-seed differences, which
  ``scipy.stats.bootstrap`` computes independently.
* Holm's correction against hand-worked values.
* A difference driven by one seed of three: the utterance-level test marks it, the seed-level
  test does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamkd.results.load import find_records
from streamkd.results.significance import holm, paired_bootstrap, two_level_bootstrap
from streamkd.results.table_writer import aggregate

from results_factory import utterance_errors as ue
from results_factory import write_run

scipy_stats = pytest.importorskip("scipy.stats")

RESAMPLES = 20_000


def test_utterance_bootstrap_interval_matches_scipy():
    rng = np.random.default_rng(5)
    n = 200
    words = rng.integers(3, 20, size=n).astype(float)
    baseline = rng.binomial(words.astype(int), 0.3).astype(float)
    system = rng.binomial(words.astype(int), 0.26).astype(float)
    ours = paired_bootstrap(system, baseline, words, num_resamples=RESAMPLES, seed=1)
    reference = scipy_stats.bootstrap(
        (system - baseline, words),
        lambda d, w, axis=-1: 100 * d.sum(axis=axis) / w.sum(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(2),
    ).confidence_interval
    assert ours.delta == pytest.approx(100 * (system - baseline).sum() / words.sum())
    # Monte-Carlo error of a 2.5 % quantile over 20000 resamples: well under 0.1 points here.
    assert ours.ci_low == pytest.approx(reference.low, abs=0.1)
    assert ours.ci_high == pytest.approx(reference.high, abs=0.1)


def test_two_level_bootstrap_reduces_to_a_bootstrap_of_seed_differences():
    """Within a seed every utterance is alike, so resampling utterances changes nothing and
    resampling seeds is all that is left: scipy's bootstrap of the mean per-seed difference."""
    n = 50
    words = np.full(n, 10.0)
    per_seed_baseline = np.array([4.0, 5.0, 3.0, 6.0, 4.0])
    per_seed_system = np.array([3.0, 5.0, 1.0, 4.0, 4.0])  # per-utterance errors of each seed
    system = np.repeat(per_seed_system[:, None], n, axis=1)
    baseline = np.repeat(per_seed_baseline[:, None], n, axis=1)
    ours = two_level_bootstrap(system, baseline, words, num_resamples=RESAMPLES, seed=3)
    seed_deltas = 100 * (per_seed_system - per_seed_baseline) / 10.0
    reference = scipy_stats.bootstrap(
        (seed_deltas,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(4),
    ).confidence_interval
    assert ours.delta == pytest.approx(seed_deltas.mean())
    assert ours.num_seeds == 5
    # The resampled means take few distinct values (multiples of 20/5 = 4 points): the
    # percentiles agree exactly or by one step where both sit on a boundary.
    assert ours.ci_low == pytest.approx(reference.low, abs=2.01)
    assert ours.ci_high == pytest.approx(reference.high, abs=2.01)
    # Exact: the share of resamples with no improvement is P(all 5 drawn seeds are 2 or 5), (2/5)^5.
    assert 1 - ours.prob_improvement == pytest.approx((2 / 5) ** 5, abs=0.004)


def test_two_level_bootstrap_point_estimate_is_the_difference_of_seed_mean_wers():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 15, size=40).astype(float)
    system = rng.binomial(words.astype(int), 0.2, size=(3, 40)).astype(float)
    baseline = rng.binomial(words.astype(int), 0.3, size=(3, 40)).astype(float)
    result = two_level_bootstrap(system, baseline, words, num_resamples=500)
    wer = lambda e: 100 * e.sum(axis=1) / words.sum()  # noqa: E731 (per-seed corpus WER)
    assert result.delta == pytest.approx(wer(system).mean() - wer(baseline).mean())
    assert result.ci_low < result.delta < result.ci_high
    assert result.significant and result.p_value < 0.05


def test_two_level_bootstrap_needs_three_paired_seeds():
    with pytest.raises(ValueError, match="at least 3 seeds"):
        two_level_bootstrap(np.zeros((2, 5)), np.zeros((2, 5)), np.ones(5))
    with pytest.raises(ValueError, match="one shape"):
        two_level_bootstrap(np.zeros((3, 5)), np.zeros((4, 5)), np.ones(5))


def test_identical_systems_tie_exactly():
    """A tie stays a tie: no floating-point noise decides the sign of a zero difference."""
    rng = np.random.default_rng(1)
    errors = rng.integers(0, 5, size=(3, 30)).astype(float) / 3  # seed-averaged thirds
    words = np.full(30, 7.0)
    result = paired_bootstrap(errors[0], errors[0], words, num_resamples=200)
    assert result.ci_low == result.ci_high == 0.0 and result.p_value == 1.0 and not result.significant


def test_holm_adjusts_step_down_and_keeps_order():
    adjusted = holm([0.01, 0.04, 0.03, np.nan, 0.20])
    # Sorted 0.01, 0.03, 0.04, 0.20 among m = 4: 4*0.01, 3*0.03, max(0.09, 2*0.04), max(.., 1*0.20).
    np.testing.assert_allclose(adjusted, [0.04, 0.09, 0.09, np.nan, 0.20])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # 2 * 0.5, then never below the previous


def test_a_difference_driven_by_one_seed_is_not_marked_at_the_seed_level(tmp_path):
    exp = tmp_path / "exp"
    n = 40  # utterances of 10 words
    for seed in (1, 2, 3):
        write_run(exp, f"none-chunk4-seed{seed}", seed=seed, errors={"test": ue(120, n)})  # 30 %
        # aux equals none on seeds 1 and 2, and is far better on seed 3 alone.
        aux_errors = ue(120, n) if seed < 3 else ue(20, n)
        write_run(exp, f"aux-seed{seed}", method="aux", kd_layers="2", seed=seed, errors={"test": aux_errors})
    tables = aggregate(find_records(exp), tmp_path / "tables")
    row = tables["wer"].summary.set_index("model").loc["aux (layers 2)"]
    assert bool(row["significant"]) is True  # utterance level: the seed-averaged checkpoints differ
    assert bool(row["seed_significant"]) is False  # seed level: one seed of three is no evidence
    assert row["seed_ci_low"] < 0 <= row["seed_ci_high"]
    md = (tmp_path / "tables/wer.md").read_text()
    aux_line = next(line for line in md.splitlines() if line.startswith("| aux "))
    assert "‡" in aux_line and "†" not in aux_line
    assert "Holm-adjusted p < 0.05 over the family of this table's 1 seed-level comparisons" in md


def test_a_consistent_difference_over_three_seeds_is_marked_at_both_levels(tmp_path):
    exp = tmp_path / "exp"
    for seed in (1, 2, 3):
        write_run(exp, f"none-chunk4-seed{seed}", seed=seed, errors={"test": ue(120 + seed, 40)})
        write_run(exp, f"aux-seed{seed}", method="aux", kd_layers="2", seed=seed, errors={"test": ue(40 + seed, 40)})
    tables = aggregate(find_records(exp), tmp_path / "tables")
    row = tables["wer"].summary.set_index("model").loc["aux (layers 2)"]
    assert bool(row["seed_significant"]) is True and row["seed_ci_high"] < 0
    md = (tmp_path / "tables/wer.md").read_text()
    assert "†‡" in next(line for line in md.splitlines() if line.startswith("| aux "))


def test_a_table_with_fewer_than_three_seeds_says_no_seed_level_test_was_possible(tmp_path):
    exp = tmp_path / "exp"
    for seed in (1, 2):
        write_run(exp, f"none-chunk4-seed{seed}", seed=seed, errors={"test": ue(120, 40)})
        write_run(exp, f"aux-seed{seed}", method="aux", kd_layers="2", seed=seed, errors={"test": ue(40, 40)})
    tables = aggregate(find_records(exp), tmp_path / "tables")
    assert tables["wer"].summary["seed_p_value"].isna().all()
    md = (tmp_path / "tables/wer.md").read_text()
    assert (
        "No seed-level test (†) was possible: it needs at least 3 seed numbers that a student and its baseline both have"
        in md
    )


def test_the_seed_level_test_pairs_seed_numbers_over_the_seeds_both_systems_have(tmp_path):
    """A grid in progress: none has seeds 1-5, aux 1-3; the seed level uses seeds 1-3 and says so."""
    exp = tmp_path / "exp"
    for seed in (1, 2, 3, 4, 5):
        # none's seeds 4 and 5 are far worse: the seed level must leave them out.
        write_run(exp, f"none-chunk4-seed{seed}", seed=seed, errors={"test": ue(120 if seed < 4 else 300, 40)})
    for seed in (1, 2, 3):
        write_run(exp, f"aux-seed{seed}", method="aux", kd_layers="2", seed=seed, errors={"test": ue(40 + seed, 40)})
    tables = aggregate(find_records(exp), tmp_path / "tables")
    row = tables["wer"].summary.set_index("model").loc["aux (layers 2)"]
    # The interval is that of aux against none's seeds 1-3 alone: about -20 points, not -34.
    three = aggregate(
        [p for p in find_records(exp) if not any(f"seed{s}" in str(p) for s in (4, 5))], tmp_path / "three"
    )
    expected = three["wer"].summary.set_index("model").loc["aux (layers 2)"]
    assert row["seed_ci_low"] == pytest.approx(expected["seed_ci_low"])
    assert row["seed_ci_high"] == pytest.approx(expected["seed_ci_high"]) and row["seed_ci_high"] < 0
    assert bool(row["seed_significant"]) is True
    md = (tmp_path / "tables/wer.md").read_text()
    assert "seed-level test over the seeds both have (1, 2, 3)" in md
