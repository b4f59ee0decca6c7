"""Turn run records into results tables: statistics over seeds, relative reductions, significance.

The numbers of a table are computed here, as a tidy pandas frame with one row per
(system, chunk size, test set); :mod:`streamkd.results.tables` only lays them out.

- ``wer_mean`` / ``wer_std``: mean and sample standard deviation (ddof=1) over seeds of the
  per-seed corpus WER; the std is empty for a single seed.
- ``rel_reduction``: ``100 * (WER_baseline - WER) / WER_baseline`` on the seed means, where
  the baseline is the ``none`` student (``results.baseline``) at the same chunk size and
  test set; positive means fewer errors than the baseline.
- ``delay_mean_ms`` / ``delay_median_ms`` / ``delay_p90_ms``: emission delay of the correctly
  recognised tokens against the teacher's reference times (:mod:`streamkd.decode.emission`),
  averaged over seeds; ``delay_decoding`` names the decode it was measured on (a student's
  chunk-by-chunk twin of the table's method; the teacher's own offline decode).
- ``delta_wer``, ``ci_low``, ``ci_high``, ``prob_improvement``, ``p_value``, ``significant``:
  the utterance-level paired bootstrap of :mod:`streamkd.results.significance` (seeds
  averaged, models treated as fixed) against the same baseline, uncorrected.
- ``seed_ci_low``, ``seed_ci_high``, ``seed_p_value``, ``seed_p_holm``, ``seed_significant``:
  the two-level (seeds, then utterances) bootstrap against the same baseline, seeds paired by
  number, over the seeds both sides have where they share at least ``MIN_SEEDS``;
  ``seed_p_holm`` is Holm-adjusted over every seed-level comparison of the table (its family),
  and ``seed_significant`` means ``seed_p_holm < 1 - confidence``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd

from streamkd.results.config import MAIN_TABLE, TEACHER_METHOD, ResultsConfig, TableSpec
from streamkd.results.load import (
    DELAY_COLUMNS,
    FRAME_MS,
    SYSTEM_FIELDS,
    RecordError,
    system_sort_key,
)
from streamkd.results.significance import MIN_SEEDS, ErrorsFileError, compare, compare_seeds, holm

log = logging.getLogger(__name__)

TEACHER = TEACHER_METHOD

SUMMARY_COLUMNS = [
    "model",
    *SYSTEM_FIELDS,
    "chunk_size",
    "chunk_ms",
    "test_set",
    "decoding",
    "num_seeds",
    "seeds",
    "wer_mean",
    "wer_std",
    "wer_min",
    "wer_max",
    *DELAY_COLUMNS,
    "baseline_wer",
    "rel_reduction",
    "delta_wer",
    "gap_recovered",
    "ci_low",
    "ci_high",
    "prob_improvement",
    "p_value",
    "significant",
    "seed_ci_low",
    "seed_ci_high",
    "seed_p_value",
    "seed_p_holm",
    "seed_significant",
    "num_utterances",
    "num_params",
    "num_params_training",
    "train_seconds",
    "runs",
    "decoded_model",
]


@dataclass
class TableData:
    """Everything one table shows, before layout."""

    name: str
    spec: TableSpec
    summary: pd.DataFrame  # SUMMARY_COLUMNS, one row per (system, chunk size, test set)
    baselines: pd.DataFrame  # chunk_size, test_set, baseline_wer
    systems: List[str]  # row order (model labels)
    chunk_sizes: List[int]
    test_sets: List[str]
    decoding: str
    teacher_decoding: str
    baseline: str  # the baseline's method ...
    baseline_model: Optional[str]  # ... and its row's label (None when no run of it is selected)
    confidence: float
    precision: int
    notes: List[str] = field(default_factory=list)  # warnings worth printing under the table
    scored: List[str] = field(default_factory=list)  # per test set: utterances scored (and excluded)


def _is_teacher(runs: pd.DataFrame) -> pd.Series:
    return runs["method"] == TEACHER


def ordered_unique(values: Iterable) -> List:
    return list(dict.fromkeys(values))


def _system_filters(runs: pd.DataFrame, spec: TableSpec) -> pd.Series:
    """Rows of the systems and chunk sizes the table shows (any test set, any decoding)."""
    keep = pd.Series(True, index=runs.index)
    if spec.methods is not None:
        keep &= runs["method"].isin(spec.methods)
    if spec.chunk_sizes is not None:
        keep &= _is_teacher(runs) | runs["chunk_size"].isin(spec.chunk_sizes)
    if spec.kd_layers is not None:
        keep &= runs["kd_layers"].isna() | runs["kd_layers"].isin(spec.kd_layers)
    if spec.apc_shifts is not None:
        keep &= runs["apc_shift"].isna() | runs["apc_shift"].isin(spec.apc_shifts)
    if spec.chunk_training is not None:
        keep &= _is_teacher(runs) | _trained_as(runs, spec.chunk_training)
    return keep


def _trained_as(runs: pd.DataFrame, chunk_training: str) -> pd.Series:
    """Students with a fixed chunk size (no ``chunk_training``), or dynamic-chunk ones."""
    return runs["chunk_training"].isna() if chunk_training == "fixed" else runs["chunk_training"] == chunk_training


def _decoding_filter(runs: pd.DataFrame, decoding: str, teacher_decoding: str) -> pd.Series:
    return np.where(_is_teacher(runs), runs["decoding"] == teacher_decoding, runs["decoding"] == decoding)


def select_runs(
    runs: pd.DataFrame, spec: TableSpec, config: ResultsConfig
) -> Tuple[pd.DataFrame, List[str], List[Tuple[str, str]]]:
    """The rows a table is computed from, its test sets, and the records that lack a cell.

    A run that the table selects must have a WER for every test set of the table with the
    table's decoding method; if it does not, that record is reported (by file name) rather
    than silently leaving a hole in a mean over seeds.
    """
    decoding, teacher_decoding = config.table_decoding(spec)
    candidates = runs[_system_filters(runs, spec)]
    if candidates.empty:
        raise RecordError([("<selection>", f"no run record matches the table's selection: {_describe(spec)}")])
    with_decoding = candidates[_decoding_filter(candidates, decoding, teacher_decoding)]
    if spec.test_sets is not None:
        test_sets = list(spec.test_sets)
    else:
        test_sets = sorted(set(with_decoding["test_set"]) or set(candidates["test_set"]))
    selected = with_decoding[with_decoding["test_set"].isin(test_sets)]
    problems: List[Tuple[str, str]] = []
    for record, part in candidates.groupby("record", sort=True):
        is_teacher = part["method"].iloc[0] == TEACHER
        want = teacher_decoding if is_teacher else decoding
        have = set(selected.loc[selected["record"] == record, "test_set"])
        for test_set in test_sets:
            if test_set not in have:
                available = ", ".join(sorted({f"{t}/{d}" for t, d in zip(part["test_set"], part["decoding"])}))
                problems.append((record, f"no WER for {test_set}/{want} (it has: {available})"))
    return selected, test_sets, problems


def _describe(spec: TableSpec) -> str:
    parts = [
        f"{k}={v!r}"
        for k, v in (
            ("methods", spec.methods),
            ("chunk_sizes", spec.chunk_sizes),
            ("kd_layers", spec.kd_layers),
            ("apc_shifts", spec.apc_shifts),
            ("test_sets", spec.test_sets),
        )
        if v is not None
    ]
    return ", ".join(parts) or "everything"


def seed_statistics(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std, min and max of WER over seeds per (system, chunk size, test set)."""
    frame = runs.assign(chunk_key=runs["chunk_size"].fillna(-1).astype(int))
    if "decoded_model" not in frame:
        frame = frame.assign(decoded_model="final")
    keys = ["model", "chunk_key", "test_set"]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    stats = grouped.agg(
        wer_mean=("wer", "mean"),
        wer_std=("wer", lambda s: s.std(ddof=1) if len(s) > 1 else np.nan),
        wer_min=("wer", "min"),
        wer_max=("wer", "max"),
        num_seeds=("seed", "count"),
        seeds=("seed", lambda s: ",".join(str(v) for v in sorted(s))),
        runs=("run", lambda s: ";".join(sorted(s))),
        decoding=("decoding", "first"),
        num_params=("num_params", "first"),
        num_params_training=("num_params_training", "first"),
        train_seconds=("train_seconds", "mean"),
        # Emission delay: the mean over seeds of each seed's mean, median and 90th percentile.
        delay_mean_ms=("delay_mean_ms", "mean"),
        delay_median_ms=("delay_median_ms", "mean"),
        delay_p90_ms=("delay_p90_ms", "mean"),
        delay_first_token_ms=("delay_first_token_ms", "mean"),
        delay_share_matched=("delay_share_matched", "mean"),
        delay_reference=("delay_reference", "first"),
        delay_mode=("delay_mode", "first"),
        delay_decoding=("delay_decoding", "first"),
        decoded_model=("decoded_model", "first"),
        **{f: (f, "first") for f in SYSTEM_FIELDS},
    ).reset_index()
    for (model, _, _), part in grouped:
        if part["num_params"].nunique() > 1:
            log.warning(
                "%s: runs differ in parameter count (%s); the table shows the first",
                model,
                sorted(part["num_params"].unique()),
            )
    stats["chunk_size"] = stats["chunk_key"].where(stats["chunk_key"] >= 0).astype("Int64")
    stats["chunk_ms"] = (stats["chunk_size"] * FRAME_MS).astype("Int64")
    return stats.drop(columns="chunk_key")


def _attach_baseline(stats: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    merged = stats.merge(baselines, on=["chunk_size", "test_set"], how="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * (merged["baseline_wer"] - merged["wer_mean"]) / merged["baseline_wer"]
    # The teacher has no chunk size of its own: its relative numbers are per column (tables.py).
    merged["rel_reduction"] = rel.where(merged["baseline_wer"] > 0)
    merged["delta_wer"] = merged["wer_mean"] - merged["baseline_wer"]
    # The share of the baseline-to-teacher WER gap a student closes, 100 * (base - wer) / (base - teacher).
    teacher = merged[merged["method"] == TEACHER].groupby("test_set")["wer_mean"].first()
    gap = merged["baseline_wer"] - merged["test_set"].map(teacher)
    with np.errstate(divide="ignore", invalid="ignore"):
        recovered = 100.0 * (merged["baseline_wer"] - merged["wer_mean"]) / gap
    merged["gap_recovered"] = recovered.where((gap > 0) & (merged["method"] != TEACHER))
    return merged


def relative_reduction(baseline_wer: float, wer: float) -> float:
    """``100 * (baseline - wer) / baseline``; NaN when there is no (or a zero) baseline."""
    if baseline_wer is None or pd.isna(baseline_wer) or baseline_wer <= 0:
        return float("nan")
    return 100.0 * (baseline_wer - wer) / baseline_wer


def _baselines(
    runs: pd.DataFrame, config: ResultsConfig, spec: TableSpec, baseline: str, test_sets: List[str]
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline's runs and seed-mean WER per (chunk size, test set), shown in the table or not."""
    decoding, _ = config.table_decoding(spec)
    base = runs[(runs["method"] == baseline) & (runs["decoding"] == decoding) & runs["test_set"].isin(test_sets)]
    if spec.chunk_sizes is not None:
        base = base[base["chunk_size"].isin(spec.chunk_sizes)]
    if spec.baseline_apc_shift is not None:
        base = base[base["apc_shift"] == spec.baseline_apc_shift]
    if spec.chunk_training is not None:
        base = base[_trained_as(base, spec.chunk_training)]
    fixed = base["chunk_training"].isna()
    if fixed.any() and not fixed.all():
        # Dynamic-chunk students are compared with the fixed-chunk baseline trained for each chunk size.
        base = base[fixed]
    systems = base["model"].unique()
    if len(systems) > 1:
        raise RecordError(
            [
                (r, f"several {baseline!r} systems ({', '.join(systems)}): cannot tell which is the baseline")
                for r in sorted(base["record"].unique())
            ]
        )
    stats = seed_statistics(base) if len(base) else pd.DataFrame(columns=["chunk_size", "test_set", "wer_mean"])
    table = stats[["chunk_size", "test_set", "wer_mean"]].rename(columns={"wer_mean": "baseline_wer"})
    table["chunk_size"] = table["chunk_size"].astype("Int64")
    return base, table.reset_index(drop=True)


def _significance(
    stats: pd.DataFrame,
    selected: pd.DataFrame,
    base_runs: pd.DataFrame,
    config: ResultsConfig,
    baseline: str,
    baseline_model: Optional[str],
    notes: List[str],
) -> pd.DataFrame:
    sig = config.significance
    stats = _no_significance(stats)
    for i, row in stats.iterrows():
        if row["method"] == TEACHER or row["model"] == baseline_model or pd.isna(row["chunk_size"]):
            continue
        mine = selected[
            (selected["model"] == row["model"])
            & (selected["chunk_size"] == row["chunk_size"])
            & (selected["test_set"] == row["test_set"])
        ]
        theirs = base_runs[(base_runs["chunk_size"] == row["chunk_size"]) & (base_runs["test_set"] == row["test_set"])]
        what = f"{row['model']} vs {baseline} at chunk {row['chunk_size']} on {row['test_set']}"
        if theirs.empty:
            continue  # build_table notes the missing baseline once per column
        lacking = sorted(
            set(mine.loc[mine["errors_path"].isna(), "record"])
            | set(theirs.loc[theirs["errors_path"].isna(), "record"])
        )
        if lacking:
            notes.append(f"{what}: not tested, the record(s) {', '.join(lacking)} name no per-utterance errors")
            continue
        try:
            result = compare(
                list(mine["errors_path"]),
                list(theirs["errors_path"]),
                num_resamples=sig.num_resamples,
                confidence=sig.confidence,
                seed=sig.seed,
            )
        except (ErrorsFileError, ValueError) as e:
            notes.append(f"{what}: not tested ({e})")
            continue
        stats.loc[i, ["ci_low", "ci_high", "prob_improvement", "p_value", "num_utterances"]] = [
            result.ci_low,
            result.ci_high,
            result.prob_improvement,
            result.p_value,
            result.num_utterances,
        ]
        stats.loc[i, "significant"] = result.significant
        # Seed level: seeds paired by number, over the seeds both sides have (a grid in
        # progress may have more seeds of one method than of another).
        shared = sorted(set(mine["seed"]) & set(theirs["seed"]))
        if len(shared) >= MIN_SEEDS:
            by_seed = compare_seeds(
                list(mine.set_index("seed").loc[shared, "errors_path"]),
                list(theirs.set_index("seed").loc[shared, "errors_path"]),
                num_resamples=sig.num_resamples,
                confidence=sig.confidence,
                seed=sig.seed,
            )
            if len(shared) < max(len(mine), len(theirs)):
                notes.append(f"{what}: seed-level test over the seeds both have ({', '.join(map(str, shared))})")
            stats.loc[i, ["seed_ci_low", "seed_ci_high", "seed_p_value"]] = [
                by_seed.ci_low,
                by_seed.ci_high,
                by_seed.p_value,
            ]
        if not np.isclose(result.delta, row["delta_wer"], atol=1e-3):  # records round WER to 1e-4
            # The per-utterance errors and the WER in the records disagree: say so, loudly.
            notes.append(
                f"{what}: the per-utterance errors give a WER difference of {result.delta:.4f} but the records "
                f"{row['delta_wer']:.4f}; are the errors files those of these runs?"
            )
    stats["num_utterances"] = stats["num_utterances"].astype("Int64")
    # Holm over the table's seed-level comparisons: one family per table.
    stats["seed_p_holm"] = holm(stats["seed_p_value"].to_numpy(dtype=float))
    tested = stats["seed_p_holm"].notna()
    stats.loc[tested, "seed_significant"] = stats.loc[tested, "seed_p_holm"] < 1.0 - sig.confidence
    return stats


def _no_significance(stats: pd.DataFrame) -> pd.DataFrame:
    """The significance columns, all empty."""
    numbers = ("ci_low", "ci_high", "prob_improvement", "p_value", "seed_ci_low", "seed_ci_high", "seed_p_value")
    return stats.assign(
        **{c: np.nan for c in numbers + ("seed_p_holm",)},
        num_utterances=pd.array([pd.NA] * len(stats), dtype="Int64"),
        significant=pd.array([pd.NA] * len(stats), dtype="boolean"),
        seed_significant=pd.array([pd.NA] * len(stats), dtype="boolean"),
    )


def _row_order(stats: pd.DataFrame, spec: TableSpec) -> List[str]:
    systems = stats.drop_duplicates("model")

    def key(r):
        first = spec.methods.index(r["method"]) if spec.methods is not None and r["method"] in spec.methods else 0
        return (first, system_sort_key(*(r[f] if not pd.isna(r[f]) else None for f in SYSTEM_FIELDS)), r["model"])

    return [r["model"] for _, r in sorted(systems.iterrows(), key=lambda ir: key(ir[1]))]


def build_table(runs: pd.DataFrame, name: str, spec: TableSpec, config: ResultsConfig) -> TableData:
    """Compute one table's numbers from the loaded runs (see the module docstring)."""
    selected, test_sets, problems = select_runs(runs, spec, config)
    if problems:
        raise RecordError(problems)
    if selected.empty:
        raise RecordError(
            [("<selection>", f"table {name!r}: no WER with the selected decoding method(s) for {_describe(spec)}")]
        )
    decoding, teacher_decoding = config.table_decoding(spec)
    baseline = config.table_baseline(spec)
    notes: List[str] = []
    stats = seed_statistics(selected)
    base_runs, baselines = _baselines(runs, config, spec, baseline, test_sets)
    baseline_model = next(iter(base_runs["model"].unique()), None)  # _baselines allows one system
    stats = _attach_baseline(stats, baselines)
    if spec.significance:
        stats = _significance(stats, selected, base_runs, config, baseline, baseline_model, notes)
    else:
        stats = _no_significance(stats)
    chunk_sizes = sorted(int(c) for c in stats["chunk_size"].dropna().unique())
    for chunk in chunk_sizes:
        for test_set in test_sets:
            if baselines[(baselines["chunk_size"] == chunk) & (baselines["test_set"] == test_set)].empty:
                notes.append(
                    f"no {baseline} run at chunk size {chunk} on {test_set}: relative reductions there are empty"
                )
    stats = stats[SUMMARY_COLUMNS]
    order = _row_order(stats, spec)
    stats = stats.assign(_row=stats["model"].map({m: i for i, m in enumerate(order)}))
    stats = (
        stats.sort_values(["_row", "chunk_size", "test_set"], na_position="first")
        .drop(columns="_row")
        .reset_index(drop=True)
    )
    for note in ordered_unique(notes):
        log.warning("table %s: %s", name, note)
    return TableData(
        name=name,
        spec=spec,
        summary=stats,
        baselines=baselines,
        systems=order,
        chunk_sizes=chunk_sizes,
        test_sets=test_sets,
        decoding=decoding,
        teacher_decoding=teacher_decoding,
        baseline=baseline,
        baseline_model=baseline_model,
        confidence=config.significance.confidence,
        precision=config.precision,
        notes=ordered_unique(notes),
        scored=scored_sentences(selected, test_sets),
    )


def _counts(values: pd.Series) -> str:
    """'8', or '7 to 8' where the runs of a test set differ, or '' where no record says."""
    known = sorted({int(v) for v in values.dropna()})
    if not known:
        return ""
    return str(known[0]) if len(known) == 1 else f"{known[0]} to {known[-1]}"


def scored_sentences(selected: pd.DataFrame, test_sets: List[str]) -> List[str]:
    """'test: 200 utterances scored (2 excluded by the data check)' per test set, where records say."""
    if "num_scored" not in selected:
        return []
    sentences = []
    for test_set in test_sets:
        rows = selected[selected["test_set"] == test_set]
        scored, excluded = _counts(rows["num_scored"]), _counts(rows["num_excluded"])
        if scored:
            sentences.append(
                f"{test_set}: {scored} utterances scored"
                + (f" ({excluded} excluded by the data check)" if excluded else "")
            )
    return sentences


__all__ = [
    "MAIN_TABLE",
    "TableData",
    "build_table",
    "relative_reduction",
    "seed_statistics",
    "select_runs",
]
