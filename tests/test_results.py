"""Results: aggregation over seeds, relative reductions, bold, significance, LaTeX, plots, CLI.

Every test builds its run records by hand (tests/results_factory.py), so the expected
numbers below are computed by hand from them.
"""

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from streamkd.cli import main as cli
from streamkd.results.aggregate import build_table
from streamkd.results.config import ResultsConfig, ResultsConfigError, TableSpec
from streamkd.results.load import RecordError, find_records, load_loss_history, load_records, parse_train_log
from streamkd.results.plots import build_plots
from streamkd.results.record import build_record, resolve_record_path
from streamkd.results.significance import ErrorsFileError, compare, paired_bootstrap
from streamkd.results.table_writer import aggregate
from streamkd.results.tables import latex_body_rows, latex_problems, layout, to_latex, to_markdown
from streamkd.results.teachers import MixedTeachersError

from results_factory import utterance_errors as ue
from results_factory import write_run

# -- a small grid with known numbers ------------------------------------------------------------
#
# test set "test" (10 utterances x 10 words, so errors = WER in %):
#   teacher                    5
#   none   chunk 4   seeds 1-3 10, 12, 14  -> mean 12, std 2
#   aux    chunk 4   seeds 1-2 9, 10       -> mean 9.5, std 0.7071, rel 100*(12-9.5)/12 = 20.833
#   token  chunk 4   seed 1    13          -> rel -8.333
#   none   chunk 8   seed 1    8
#   aux    chunk 8   seed 1    6           -> rel 25


@pytest.fixture
def grid(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "teacher", method="teacher", seed=42, errors={"test": ue(5)})
    for seed, errors in zip((1, 2, 3), (10, 12, 14)):
        write_run(exp, f"none-chunk4-seed{seed}", seed=seed, errors={"test": ue(errors)})
    for seed, errors in zip((1, 2), (9, 10)):
        write_run(
            exp,
            f"aux-chunk4-seed{seed}",
            method="aux",
            kd_layers="3,6",
            apc_shift=2,
            seed=seed,
            errors={"test": ue(errors)},
        )
    write_run(exp, "token-chunk4-seed1", method="token", errors={"test": ue(13)})
    write_run(exp, "none-chunk8-seed1", chunk=8, errors={"test": ue(8)})
    write_run(exp, "aux-chunk8-seed1", chunk=8, method="aux", kd_layers="3,6", apc_shift=2, errors={"test": ue(6)})
    return exp


def _row(summary, model, chunk):
    part = summary[
        (summary["model"] == model) & ((summary["chunk_size"] == chunk) if chunk else summary["chunk_size"].isna())
    ]
    assert len(part) == 1, part
    return part.iloc[0]


def test_means_stds_and_relative_reductions_match_hand_computation(grid, tmp_path):
    tables = aggregate(find_records(grid), tmp_path / "tables")
    summary = tables["wer"].summary
    none4 = _row(summary, "none", 4)
    assert none4["wer_mean"] == pytest.approx(12.0)
    assert none4["wer_std"] == pytest.approx(2.0)  # sample std of 10, 12, 14
    assert none4["num_seeds"] == 3 and none4["seeds"] == "1,2,3"
    aux4 = _row(summary, "aux (layers 3,6; shift 2)", 4)
    assert aux4["wer_mean"] == pytest.approx(9.5)
    assert aux4["wer_std"] == pytest.approx(math.sqrt(0.5))
    assert aux4["baseline_wer"] == pytest.approx(12.0)
    assert aux4["rel_reduction"] == pytest.approx(100 * 2.5 / 12)
    assert aux4["delta_wer"] == pytest.approx(-2.5)
    assert _row(summary, "token", 4)["rel_reduction"] == pytest.approx(-100 / 12)
    # Gap to the teacher (5.0) recovered: (12 - 9.5) / (12 - 5) at chunk 4, (8 - 6) / (8 - 5) at chunk 8.
    assert aux4["gap_recovered"] == pytest.approx(100 * 2.5 / 7)
    assert _row(summary, "aux (layers 3,6; shift 2)", 8)["gap_recovered"] == pytest.approx(100 * 2 / 3)
    assert _row(summary, "none", 4)["gap_recovered"] == pytest.approx(0.0)
    assert math.isnan(_row(summary, "teacher", None)["gap_recovered"])
    aux8 = _row(summary, "aux (layers 3,6; shift 2)", 8)
    assert aux8["rel_reduction"] == pytest.approx(25.0)
    assert math.isnan(aux8["wer_std"])  # one seed: no spread
    teacher = _row(summary, "teacher", None)
    assert teacher["wer_mean"] == pytest.approx(5.0) and teacher["method"] == "teacher"

    # The CSV round-trips through pandas with the same numbers.
    csv = pd.read_csv(tmp_path / "tables/wer.csv")
    assert set(csv["model"]) == {"teacher", "none", "token", "aux (layers 3,6; shift 2)"}
    back = csv.set_index(["model", "chunk_size"], drop=False)
    assert back.loc[("aux (layers 3,6; shift 2)", 4), "rel_reduction"] == pytest.approx(20.8333, abs=1e-3)
    assert back.loc[("none", 4), "wer_std"] == pytest.approx(2.0)
    runs = pd.read_csv(tmp_path / "tables/runs.csv")
    assert len(runs) == 9 and runs["wer"].sum() == pytest.approx(5 + 10 + 12 + 14 + 9 + 10 + 13 + 8 + 6)

    # The teacher's relative reduction is per chunk column: 100*(12-5)/12 and 100*(8-5)/8.
    md = (tmp_path / "tables/wer.md").read_text()
    teacher_line = next(line for line in md.splitlines() if line.startswith("| teacher"))
    # Columns per chunk size: WER, rel. %, gap % (no gap for the teacher itself).
    assert [c.strip() for c in teacher_line.strip("|").split("|")][3:9] == ["5.00", "58.3", "–", "5.00", "37.5", "–"]
    aux_line = next(line for line in md.splitlines() if line.startswith("| aux"))
    assert [c.strip() for c in aux_line.strip("|").split("|")][5:10:3] == ["**36**", "**67**"]


def _table_cells(line: str):
    return [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []


def _cells(md: str, label: str):
    return _table_cells(next(line for line in md.splitlines() if line.startswith(f"| {label} ")))


def test_bold_marks_the_true_best_student_not_the_teacher(grid):
    runs = load_records(find_records(grid)).runs
    table = build_table(runs, "wer", TableSpec(), ResultsConfig())
    md = to_markdown(table)
    # Columns: Method, KD layers, APC shift, test@160, rel, gap, test@320, rel, gap, params
    aux = _cells(md, "aux")
    assert aux[3].startswith("**9.50 ± 0.71**") and aux[4] == "**20.8**" and aux[5] == "**36**"
    assert aux[6] == "**6.00** (n=1)" and aux[7] == "**25.0**"
    assert "**" not in "".join(_cells(md, "teacher"))  # 5.00 is lower but the teacher is a reference
    assert "**" not in "".join(_cells(md, "none")) + "".join(_cells(md, "token"))
    rows = latex_body_rows(to_latex(table))
    by_method = {r[0]: r for r in rows}
    assert by_method["aux"][3].startswith(r"\textbf{9.50 $\pm$ 0.71}")
    assert not any(r"\textbf" in c for c in by_method["teacher"] + by_method["none"] + by_method["token"])


def test_bold_follows_the_best_when_the_baseline_wins_and_ties_share_it(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "none", errors={"test": ue(10)})
    write_run(exp, "token", method="token", errors={"test": ue(12)})
    write_run(exp, "layer", method="layer", kd_layers="3", errors={"test": ue(12)})
    table = build_table(load_records(find_records(exp)).runs, "wer", TableSpec(), ResultsConfig())
    lay = layout(table)
    bold = {lab[0]: [c.bold for c in cells] for lab, cells in zip(lay.labels, lay.cells)}
    assert bold["none"] == [True, False, False]  # best WER; its own reduction is not a result
    assert bold["token"] == [False, False, False] and bold["layer"] == [False, False, False]

    write_run(exp, "token", method="token", errors={"test": ue(9)})
    write_run(exp, "layer", method="layer", kd_layers="3", errors={"test": ue(9)})
    table = build_table(load_records(find_records(exp)).runs, "wer", TableSpec(), ResultsConfig())
    lay = layout(table)
    bold = {lab[0]: [c.bold for c in cells] for lab, cells in zip(lay.labels, lay.cells)}
    # No teacher in these records: no gap to close, nothing to show or bold there.
    assert bold["token"] == [True, True, False] and bold["layer"] == [True, True, False]
    assert bold["none"] == [False, False, False]


# -- significance ------------------------------------------------------------------------------


def test_bootstrap_of_identical_systems_contains_zero():
    rng = np.random.default_rng(1)
    errors = rng.integers(0, 5, size=200)
    words = rng.integers(5, 20, size=200)
    result = paired_bootstrap(errors, errors.copy(), words, num_resamples=1000, seed=3)
    assert result.delta == 0.0
    assert result.ci_low <= 0.0 <= result.ci_high
    assert not result.significant


def test_bootstrap_of_noisy_but_equal_systems_contains_zero():
    # Same error distribution, independent noise per utterance: no true difference.
    rng = np.random.default_rng(7)
    words = np.full(300, 12)
    a = rng.binomial(12, 0.2, size=300)
    b = rng.permutation(a)  # same total errors, reassigned utterances
    result = paired_bootstrap(a, b, words, num_resamples=2000, seed=0)
    assert result.delta == pytest.approx(0.0)
    assert result.ci_low < 0.0 < result.ci_high and not result.significant


def test_bootstrap_of_clearly_different_systems_excludes_zero():
    rng = np.random.default_rng(2)
    words = rng.integers(5, 20, size=200)
    good = rng.binomial(words, 0.05)
    bad = rng.binomial(words, 0.25)
    result = paired_bootstrap(good, bad, words, num_resamples=1000, seed=0)
    assert result.delta < 0 and result.ci_high < 0 and result.significant
    assert result.prob_improvement == 1.0
    reverse = paired_bootstrap(bad, good, words, num_resamples=1000, seed=0)
    assert reverse.ci_low > 0 and reverse.significant


def test_bootstrap_pairs_utterances_by_id_and_averages_seeds(tmp_path):
    exp = tmp_path / "exp"
    sys1 = write_run(exp, "a1", errors={"test": ue(20)})
    sys2 = write_run(exp, "a2", errors={"test": ue(30)})
    base = write_run(exp, "b", errors={"test": ue(40)})
    path = lambda rec: resolve_record_path(rec, json.loads(rec.read_text())["errors"]["test"]["ctc-1best"])  # noqa: E731
    result = compare([path(sys1), path(sys2)], [path(base)], num_resamples=500)
    assert result.delta == pytest.approx((20 + 30) / 2 - 40)  # seed-averaged: 25% vs 40%
    # Rows in another order pair up the same way.
    lines = path(base).read_text().splitlines()
    path(base).write_text("\n".join(reversed(lines)) + "\n")
    assert compare([path(sys1), path(sys2)], [path(base)], num_resamples=500) == result
    # A missing utterance cannot be paired.
    path(base).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ErrorsFileError, match="cannot pair utterances"):
        compare([path(sys1)], [path(base)])


def test_table_marks_only_significant_differences(tmp_path):
    exp = tmp_path / "exp"
    n = 40
    write_run(exp, "none", errors={"test": ue(120, n)})  # 30 %
    write_run(exp, "aux", method="aux", kd_layers="2", errors={"test": ue(40, n)})  # 10 %: clearly better
    write_run(exp, "token", method="token", errors={"test": ue(121, n, first_utt=5)})  # one error more
    tables = aggregate(find_records(exp), tmp_path / "tables")
    summary = tables["wer"].summary.set_index("model")
    assert bool(summary.loc["aux (layers 2)", "significant"]) is True
    assert summary.loc["aux (layers 2)", "ci_high"] < 0
    assert bool(summary.loc["token", "significant"]) is False
    assert summary.loc["token", "ci_low"] <= 0 <= summary.loc["token", "ci_high"]
    md = (tmp_path / "tables/wer.md").read_text()
    header = _table_cells(md.splitlines()[2])
    wer_column = header.index("test @ 160 ms")
    assert _cells(md, "aux")[wer_column].endswith("‡")
    assert not _cells(md, "token")[wer_column].endswith("‡")
    assert "‡" not in "".join(_cells(md, "none"))


def test_a_table_can_compare_against_another_method_than_the_baseline(tmp_path):
    exp = tmp_path / "exp"
    n = 40
    write_run(exp, "teacher", method="teacher", seed=42, errors={"test": ue(40, n)})  # 10 %
    write_run(exp, "none", errors={"test": ue(120, n)})  # 30 %
    write_run(exp, "layer", method="layer", kd_layers="2", errors={"test": ue(100, n)})  # 25 %
    write_run(exp, "aux", method="aux", kd_layers="2", errors={"test": ue(60, n)})  # 15 %
    config = ResultsConfig.from_dict(
        {"tables": {"aux_vs_layer": {"baseline": "layer", "methods": ["teacher", "layer", "aux"]}}}
    )
    tables = aggregate(find_records(exp), tmp_path / "tables", config)
    main = tables["wer"].summary.set_index("model")
    versus_layer = tables["aux_vs_layer"].summary.set_index("model")
    assert main.loc["aux (layers 2)", "rel_reduction"] == pytest.approx(100 * (30 - 15) / 30)
    assert versus_layer.loc["aux (layers 2)", "baseline_wer"] == pytest.approx(25.0)
    assert versus_layer.loc["aux (layers 2)", "rel_reduction"] == pytest.approx(100 * (25 - 15) / 25)
    assert versus_layer.loc["aux (layers 2)", "ci_high"] < 0 and bool(versus_layer.loc["aux (layers 2)", "significant"])
    assert pd.isna(versus_layer.loc["layer (layers 2)", "significant"])  # the baseline is not tested against itself
    assert tables["aux_vs_layer"].baseline == "layer"
    assert "baseline (layer)" in (tmp_path / "tables/aux_vs_layer.md").read_text()
    with pytest.raises(ResultsConfigError, match="results.tables.t.baseline: the baseline is a streaming student"):
        ResultsConfig.from_dict({"tables": {"t": {"baseline": "teacher"}}})


def test_a_table_can_compare_shifts_against_one_shift_of_the_baseline_method(tmp_path):
    exp = tmp_path / "exp"
    n = 40
    write_run(exp, "teacher", method="teacher", seed=42, errors={"test": ue(40, n)})
    write_run(exp, "none", errors={"test": ue(120, n)})  # 30 %
    for shift, errors in ((0, 60), (2, 100), (4, 62)):  # 15 %, 25 %, 15.5 %
        write_run(exp, f"aux{shift}", method="aux", kd_layers="2", apc_shift=shift, errors={"test": ue(errors, n)})
    spec = {"baseline": "aux", "baseline_apc_shift": 0, "methods": ["aux"], "gap_recovered": False}
    config = ResultsConfig.from_dict({"tables": {"shifts": spec}})
    table = aggregate(find_records(exp), tmp_path / "tables", config)["shifts"]
    rows = table.summary.set_index("model")
    assert table.baseline_model == "aux (layers 2; shift 0)"
    assert rows["baseline_wer"].tolist() == pytest.approx([15.0] * 3)
    assert rows.loc["aux (layers 2; shift 2)", "rel_reduction"] == pytest.approx(100 * (15 - 25) / 15)
    assert bool(rows.loc["aux (layers 2; shift 2)", "significant"])  # 10 points worse on every utterance
    assert not bool(rows.loc["aux (layers 2; shift 4)", "significant"])  # 0.5 points: within noise
    assert pd.isna(rows.loc["aux (layers 2; shift 0)", "significant"])  # the baseline is not tested against itself
    md = (tmp_path / "tables/shifts.md").read_text()
    assert "baseline (aux (layers 2; shift 0))" in md
    cells = {tuple(row[:3]): row[3:5] for row in map(_table_cells, md.splitlines()) if row and row[0] == "aux"}
    assert cells[("aux", "2", "0")] == ["**15.00**", "–"]  # no reduction of the baseline against itself
    assert cells[("aux", "2", "2")] == ["25.00‡", "-66.7"]
    # Without the shift the baseline method names three systems: which one is meant must be said.
    del spec["baseline_apc_shift"]
    with pytest.raises(RecordError, match="several 'aux' systems"):
        aggregate(find_records(exp), tmp_path / "t2", ResultsConfig.from_dict({"tables": {"shifts": spec}}))
    with pytest.raises(ResultsConfigError, match="results.tables.t.baseline_apc_shift: expected a shift of 0 or more"):
        ResultsConfig.from_dict({"tables": {"t": {"baseline": "aux", "baseline_apc_shift": -1}}})


# -- broken records are named, not dropped -----------------------------------------------------


@pytest.mark.parametrize(
    "wer, message",
    [
        ({"test": {"ctc-1best": "n/a"}}, "WER for test/ctc-1best is not a finite number: 'n/a'"),
        ({"test": {"ctc-1best": None}}, "WER for test/ctc-1best is not a finite number: None"),
        ({"test": {"ctc-1best": float("nan")}}, "is not a finite number: nan"),
        ({"test": {"ctc-1best": True}}, "is not a finite number: True"),
        ({"test": {}}, "WER for test set 'test' is missing"),
        ({}, "wer is {}"),
    ],
)
def test_bad_wer_is_reported_by_file_name(tmp_path, wer, message):
    exp = tmp_path / "exp"
    write_run(exp, "good", errors={"test": ue(10)})
    bad = write_run(exp, "bad", method="token")
    record = json.loads(bad.read_text())
    record["wer"] = wer
    bad.write_text(json.dumps(record))
    with pytest.raises(RecordError) as err:
        aggregate(find_records(exp), tmp_path / "tables")
    assert str(bad) in str(err.value) and message in str(err.value)
    assert not (tmp_path / "tables/wer.md").exists()


def test_every_broken_record_is_listed_at_once(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "good", errors={"test": ue(10)})
    missing_field = write_run(exp, "nofield", method="token", errors={"test": ue(9)})
    record = json.loads(missing_field.read_text())
    del record["seed"]
    missing_field.write_text(json.dumps(record))
    not_json = exp / "broken" / "record.json"
    not_json.parent.mkdir()
    not_json.write_text("{ not json")
    with pytest.raises(RecordError) as err:
        load_records(find_records(exp))
    text = str(err.value)
    assert f"{missing_field}: lacks field(s): seed" in text
    assert f"{not_json}: is not valid JSON" in text
    assert len(err.value.problems) == 2


def test_a_run_without_the_tables_test_set_or_decoding_is_named(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "none-s1", seed=1, errors={"test": ue(10), "dev": ue(9)})
    lacking = write_run(exp, "none-s2", seed=2, errors={"test": ue(12)})  # never decoded on dev
    other = write_run(exp, "aux", method="aux", errors={"test": ue(8), "dev": ue(8)}, decoding="ctc-hlg")
    with pytest.raises(RecordError) as err:
        aggregate(find_records(exp), tmp_path / "tables")
    text = str(err.value)
    assert f"{lacking}: no WER for dev/ctc-1best" in text
    assert f"{other}: no WER for dev/ctc-1best (it has: dev/ctc-hlg, test/ctc-hlg)" in text


def test_skip_invalid_leaves_the_record_out_loudly(tmp_path, caplog):
    exp = tmp_path / "exp"
    write_run(exp, "none", errors={"test": ue(10)})
    write_run(exp, "aux", method="aux", kd_layers="3", errors={"test": ue(8)})
    bad = write_run(exp, "token", method="token", wer={"test": "oops"})
    tables = aggregate(find_records(exp), tmp_path / "tables", skip_invalid=True)
    assert set(tables["wer"].summary["model"]) == {"none", "aux (layers 3)"}
    assert str(bad) in caplog.text
    assert f"left out {bad}" in (tmp_path / "tables/wer.md").read_text()


def test_duplicate_runs_are_refused(tmp_path):
    exp = tmp_path / "exp"
    first = write_run(exp, "none-seed1", errors={"test": ue(10)})
    copy = exp / "copy-of-none-seed1"
    shutil.copytree(first.parent, copy)
    with pytest.raises(RecordError, match="duplicates"):
        load_records(find_records(exp))


# -- table configuration -----------------------------------------------------------------------


def test_rows_and_columns_follow_the_table_spec(grid):
    runs = load_records(find_records(grid)).runs
    spec = TableSpec.from_dict(
        {
            "methods": ["aux", "none"],
            "chunk_sizes": [4],
            "params": False,
            "relative_reduction": False,
            "gap_recovered": False,
        }
    )
    table = build_table(runs, "ablation", spec, ResultsConfig())
    md = to_markdown(table)
    header = md.splitlines()[2]
    assert [h.strip() for h in header.strip("|").split("|")] == ["Method", "KD layers", "APC shift", "test @ 160 ms"]
    bodies = [line for line in md.splitlines() if line.startswith("| ") and "Method" not in line]
    assert [b.split("|")[1].strip() for b in bodies] == ["aux", "none"]  # the order given, no teacher, no token
    assert "320 ms" not in md and "Params" not in md

    with pytest.raises(ResultsConfigError, match="unknown option"):
        TableSpec.from_dict({"method": ["aux"]}, "results.tables.x")
    with pytest.raises(ResultsConfigError, match="results.precision"):
        ResultsConfig.from_dict({"precision": 9})
    assert list(ResultsConfig.from_dict({"tables": {"abl": {}}}).tables) == ["wer", "abl"]


def test_filters_on_kd_fields_keep_runs_without_them(grid, tmp_path):
    write_run(grid, "aux-k0", method="aux", kd_layers="3,6", apc_shift=0, errors={"test": ue(11)})
    runs = load_records(find_records(grid)).runs
    table = build_table(runs, "shift2", TableSpec.from_dict({"apc_shifts": [2]}), ResultsConfig())
    assert set(table.summary["model"]) == {"teacher", "none", "token", "aux (layers 3,6; shift 2)"}


def test_markdown_is_readable_without_code(grid, tmp_path):
    aggregate(find_records(grid), tmp_path / "tables")
    md = (tmp_path / "tables/wer.md").read_text()
    assert md.startswith("WER (%) on test with ctc-1best decoding, mean ± std over seeds (1 to 3 seeds per student).")
    header = [h.strip() for h in md.splitlines()[2].strip("|").split("|")]
    assert header[3:] == [
        "test @ 160 ms",
        "test @ 160 ms rel. %",
        "test @ 160 ms gap %",
        "test @ 320 ms",
        "test @ 320 ms rel. %",
        "test @ 320 ms gap %",
        "Params (M)",
    ]
    assert "relative WER reduction against the baseline (none)" in md
    assert "95% paired-bootstrap interval over test utterances" in md
    # Cells rest on 1 to 3 seeds: each WER says on how many (the teacher is one model).
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "12.00 ± 2.00 (n=3)" in rows["none"] and "(n=1)" in rows["token"]
    assert "9.50 ± 0.71" in rows["aux"] and "(n=2)" in rows["aux"] and "(n=" not in rows["teacher"]
    assert "Seeds: 1 to 3 per student" in md


def test_seed_counts_stay_out_of_cells_when_every_cell_has_the_same(grid, tmp_path):
    spec = TableSpec.from_dict({"methods": ["teacher", "none", "aux"], "chunk_sizes": [8]})
    md = to_markdown(build_table(load_records(find_records(grid)).runs, "chunk8", spec, ResultsConfig()))
    assert "(n=" not in md and "Seeds:" not in md


# -- LaTeX -------------------------------------------------------------------------------------


def _unlatex(cell: str) -> str:
    cell = re.sub(r"\\textbf\{([^{}]*)\}", r"\1", cell)
    return (
        cell.replace(r"$\pm$", "±")
        .replace(r"$^{\dagger}$", "†")
        .replace(r"$^{\ddagger}$", "‡")
        .replace(r"$-$", "-")
        .replace("--", "–")
        .replace(r"\%", "%")
    )


def _unmarkdown(cell: str) -> str:
    return cell.replace("**", "")


def test_latex_is_well_formed_and_round_trips_to_the_markdown(grid, tmp_path):
    write_run(grid, "aux_dev", method="aux", kd_layers="12", apc_shift=1, kd_loss="l1_cos", errors={"test": ue(10)})
    files = aggregate(find_records(grid), tmp_path / "tables")
    latex = (tmp_path / "tables/wer.tex").read_text()
    assert latex_problems(latex) == []
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){4-6}"):
        assert rule in latex
    assert r"\label{tab:wer}" in latex and r"\begin{tabular}{lllrrrrrrr}" in latex
    # Every body cell, stripped of its LaTeX, equals the Markdown cell, stripped of its Markdown.
    latex_rows = pd.DataFrame([[_unlatex(c) for c in r] for r in latex_body_rows(latex)])
    md_lines = [line for line in (tmp_path / "tables/wer.md").read_text().splitlines() if line.startswith("| ")][1:]
    md_rows = pd.DataFrame([[_unmarkdown(c.strip()) for c in line.strip().strip("|").split("|")] for line in md_lines])
    md_rows = md_rows[~md_rows[0].str.startswith(":")].reset_index(drop=True)
    pd.testing.assert_frame_equal(latex_rows, md_rows)
    # And the numbers are those of the CSV.
    csv = pd.read_csv(tmp_path / "tables/wer.csv")
    aux = csv[(csv["model"] == "aux (layers 3,6; shift 2)") & (csv["chunk_size"] == 4)].iloc[0]
    expected = f"{aux['wer_mean']:.2f} ± {aux['wer_std']:.2f}"
    aux_row = latex_rows[(latex_rows[0] == "aux") & (latex_rows[1] == "3,6")].iloc[0]
    assert aux_row[3].startswith(expected)
    assert set(files) == {"wer"}


def test_structural_check_catches_broken_latex(grid, tmp_path):
    aggregate(find_records(grid), tmp_path / "tables")
    latex = (tmp_path / "tables/wer.tex").read_text()
    assert latex_problems(latex.replace(r"teacher & -- &", r"teacher & --", 1))  # a cell lost
    assert latex_problems(latex.replace(r"\end{tabular}", "", 1))
    assert latex_problems(latex.replace(r"\textbf{9.50", r"\textbf{{9.50", 1))
    assert latex_problems(latex.replace(r"\bottomrule", "", 1))


def test_special_characters_are_escaped(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "none", errors={"test_other": ue(10)})
    write_run(exp, "x", method="my_method&co", errors={"test_other": ue(9)})
    aggregate(find_records(exp), tmp_path / "tables")
    latex = (tmp_path / "tables/wer.tex").read_text()
    assert r"my\_method\&co" in latex and r"test\_other" in latex
    assert latex_problems(latex) == []


# -- plots -------------------------------------------------------------------------------------


def test_plots_are_written_as_png_and_pdf(grid, tmp_path):
    runs = load_records(find_records(grid)).runs
    written = build_plots(runs, tmp_path / "plots")
    assert set(written) == {"wer_vs_chunk", "wer_vs_apc_shift", "loss_curves", "wer_vs_delay"}
    for paths in written.values():
        png, pdf = paths
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_figures_carry_titles_axis_labels_and_legends(grid):
    from streamkd.results.plots import plot_loss_curves, plot_wer_vs_chunk, plot_wer_vs_shift

    runs = load_records(find_records(grid)).runs
    config = ResultsConfig()
    chunk = plot_wer_vs_chunk(runs, config)
    ax = chunk.axes[0]
    assert ax.get_xlabel() == "Chunk size (ms)" and ax.get_ylabel() == "WER (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["160", "320"]
    legend = [t.get_text() for t in chunk.legends[0].get_texts()]
    assert legend == ["teacher (full context)", "none", "token", "aux (layers 3,6; shift 2)"]
    shift = plot_wer_vs_shift(runs, config)
    assert shift.axes[0].get_xlabel() == "APC shift k (encoder frames of 40 ms)"
    assert "none (no KD), 160 ms chunks" in [t.get_text() for t in shift.legends[0].get_texts()]
    losses = plot_loss_curves(runs, config)
    assert [a.get_ylabel() for a in losses.axes] == ["Loss per frame (nats)", "ASR loss per frame (nats)"]
    assert losses.legends[0].get_texts()[0].get_text() == "teacher (full context)"


def test_shift_plot_says_so_when_there_is_no_shift(tmp_path):
    from streamkd.results.plots import plot_wer_vs_shift

    exp = tmp_path / "exp"
    write_run(exp, "none", errors={"test": ue(10)})
    fig = plot_wer_vs_shift(load_records(find_records(exp)).runs, ResultsConfig())
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("No run in these records has an APC shift" in t for t in texts)


def test_loss_history_from_summary_or_log(tmp_path):
    exp = tmp_path / "exp"
    history = [
        {"epoch": 1, "train_loss": 3.0, "dev_loss": 3.5},
        {"epoch": 2, "train_loss": 2.0, "dev_loss": 2.5, "dev_asr_loss": 2.25},
    ]
    record = write_run(exp, "aux", method="aux", kd_layers="3", errors={"test": ue(10)}, history=history)
    # An epoch without the ASR-only loss (older summaries, no KD term) falls back to its dev loss.
    assert load_loss_history(record, str(record.parent / "train_summary.json")) == [
        {"epoch": 1, "train_loss": 3.0, "dev_loss": 3.5, "dev_asr_loss": 3.5},
        {"epoch": 2, "train_loss": 2.0, "dev_loss": 2.5, "dev_asr_loss": 2.25},
    ]
    (record.parent / "train_summary.json").unlink()
    log = record.parent / "log" / "train.log"
    log.parent.mkdir()
    log.write_text(
        "2026-01-01 INFO [x] epoch 1 done: train loss/frame 2.5000, dev loss/frame 2.7000, 0m05s elapsed\n"
        "2026-01-01 INFO [x] epoch 2 done: train loss/frame 1.5000, dev loss/frame 1.9000 (ASR alone 1.7000), 0m10s elapsed\n"
        "2026-01-01 INFO [x] epoch 2 done: train loss/frame 1.4000, dev loss/frame 1.8000 (ASR alone 1.6000), 0m11s elapsed\n"  # resumed
    )
    assert parse_train_log(log) == [
        {"epoch": 1, "train_loss": 2.5, "dev_loss": 2.7, "dev_asr_loss": 2.7},
        {"epoch": 2, "train_loss": 1.4, "dev_loss": 1.8, "dev_asr_loss": 1.6},
    ]
    assert load_loss_history(record, None)[-1]["train_loss"] == 1.4


def test_loss_curves_plot_the_asr_only_dev_loss_of_every_run(tmp_path):
    from streamkd.results.plots import plot_loss_curves

    exp = tmp_path / "exp"
    kd_history = [{"epoch": e, "train_loss": 4.0 / e, "dev_loss": 5.0 / e, "dev_asr_loss": 3.0 / e} for e in (1, 2, 3)]
    old_history = [{"epoch": e, "train_loss": 2.0 / e, "dev_loss": 2.2 / e} for e in (1, 2, 3)]  # no dev_asr_loss
    write_run(exp, "aux", method="aux", kd_layers="3", errors={"test": ue(8)}, history=kd_history)
    write_run(exp, "none", errors={"test": ue(10)}, history=old_history)
    fig = plot_loss_curves(load_records(find_records(exp)).runs, ResultsConfig())
    ax_train, ax_dev = fig.axes[:2]
    dev_curves = sorted(tuple(np.round(line.get_ydata(), 6)) for line in ax_dev.get_lines())
    assert dev_curves == sorted(
        [tuple(round(3.0 / e, 6) for e in (1, 2, 3)), tuple(round(2.2 / e, 6) for e in (1, 2, 3))]
    )
    train_curves = sorted(tuple(np.round(line.get_ydata(), 6)) for line in ax_train.get_lines())
    assert tuple(round(4.0 / e, 6) for e in (1, 2, 3)) in train_curves  # training keeps the run's own objective
    assert ax_dev.get_ylabel() == "ASR loss per frame (nats)" and "ASR" in ax_dev.get_title()


# -- records and the command line --------------------------------------------------------------


def test_record_stores_paths_relative_to_its_folder(tmp_path, monkeypatch):
    import streamkd.results.record as record_module

    monkeypatch.setattr(record_module, "software_versions", lambda: {})
    run_dir = tmp_path / "exp" / "none-chunk4-seed1"
    decode = run_dir / "decode" / "test-ctc-1best"
    decode.mkdir(parents=True)
    (decode / "wer.json").write_text(json.dumps({"wer": 12.5}))
    (decode / "errors.jsonl").write_text(json.dumps({"utt_id": "u", "errors": 1, "ref_words": 8}) + "\n")
    (run_dir / "train_summary.json").write_text(
        json.dumps(
            {
                "role": "student",
                "method": "none",
                "chunk_size": 4,
                "seed": 1,
                "config_hash": "h",
                "num_params": 10,
                "train_seconds": 1.0,
            }
        )
    )
    record = build_record(
        "none-chunk4-seed1",
        run_dir / "train_summary.json",
        {"test": decode / "wer.json"},
        "ctc-1best",
        errors_paths={"test": decode / "errors.jsonl"},
        record_dir=run_dir,
    )
    assert record["errors"] == {"test": {"ctc-1best": "decode/test-ctc-1best/errors.jsonl"}}
    assert record["train_summary"] == "train_summary.json"
    (run_dir / "record.json").write_text(json.dumps(record))
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "exp"), moved)
    runs = load_records([moved / "none-chunk4-seed1" / "record.json"]).runs
    assert runs.loc[0, "errors_path"] == str(moved / "none-chunk4-seed1/decode/test-ctc-1best/errors.jsonl")


def test_report_command_rebuilds_tables_and_plots(grid, tmp_path):
    config = tmp_path / "results.yaml"
    config.write_text(
        "results:\n  tables:\n    small: {methods: [none, aux], chunk_sizes: [4]}\n"
        "  significance: {num_resamples: 200}\n  plots: {dpi: 72}\n"
    )
    result = CliRunner().invoke(
        cli, ["report", "--exp-dir", str(grid), "--out-dir", str(tmp_path / "out"), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "WER (%)" in result.output
    for name in ("wer", "small"):
        for ext in ("csv", "md", "tex", "html"):
            assert (tmp_path / "out/tables" / f"{name}.{ext}").is_file()
    for name in ("wer_vs_chunk", "wer_vs_apc_shift", "loss_curves", "wer_vs_delay"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "out/plots" / f"{name}.{ext}").is_file()
    html = (tmp_path / "out/tables/wer.html").read_text()
    assert "<b>9.50 ± 0.71</b>" in html and "<table" in html
    # One self-contained page: tables, embedded figures and the report's captions, nothing fetched.
    page = (tmp_path / "out/report.html").read_text()
    assert page.count("<table") == 2 and page.count('src="data:image/png;base64,') == 4
    assert "WER (%) against chunk size (ms)" in page  # streamkd/report/wer_vs_chunk.rst
    assert "relative WER reduction against" in page and "small.tex" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    # Outputs get the usual file permissions (not the 0600 of a temporary file).
    probe = tmp_path / "probe"
    probe.write_text("")
    assert (tmp_path / "out/report.html").stat().st_mode & 0o777 == probe.stat().st_mode & 0o777


def test_report_command_joins_several_record_folders_once(grid, tmp_path):
    variant = tmp_path / "variant"
    write_run(variant, "token-chunk8-seed1", method="token", chunk=8, errors={"test": ue(7)})
    args = ["report", "--out-dir", str(tmp_path / "out"), "--exp-dir", str(grid), "--exp-dir", str(variant)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "out/tables/wer.csv")
    token8 = summary[(summary["method"] == "token") & (summary["chunk_size"] == 8)]
    assert len(token8) == 1 and token8["wer_mean"].iloc[0] == pytest.approx(7.0)
    # A folder named twice (or inside another one named) counts its runs once, not as duplicates.
    result = CliRunner().invoke(cli, args + ["--exp-dir", str(grid / "teacher")])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "out/tables/wer.csv")) == len(summary)


def test_report_command_names_a_broken_record_and_fails(grid, tmp_path):
    bad = write_run(grid, "token-chunk8-seed1", method="token", chunk=8, wer={"test": "NaN?"})
    result = CliRunner().invoke(cli, ["report", "--exp-dir", str(grid), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert str(bad) in result.output and "not a finite number" in result.output


def test_aggregate_command_prints_the_table(grid, tmp_path):
    records = [str(p) for p in find_records(grid)]
    result = CliRunner().invoke(
        cli, ["aggregate", "--out-dir", str(tmp_path / "t"), "--results-config", '{"precision": 1}', *records]
    )
    assert result.exit_code == 0, result.output
    assert "**9.5 ± 0.7**" in result.output
    result = CliRunner().invoke(
        cli, ["aggregate", "--out-dir", str(tmp_path / "t"), "--results-config", '{"colour": 1}', *records]
    )
    assert result.exit_code != 0 and "colour" in result.output


def test_parameter_counts_keep_three_significant_digits():
    from streamkd.results.tables import _params

    assert [_params(n) for n in (1_000_412, 942_884, 30_219_000, 118_650_000)] == ["1.00", "0.943", "30.2", "119"]
    assert _params(float("nan")) == "–"


def test_report_refuses_students_of_different_teachers_unless_allowed(grid, tmp_path):
    # A student of a retrained teacher, and an older KD record that names no teacher at all.
    write_run(grid, "token-chunk4-seed2", method="token", seed=2, errors={"test": ue(12)}, teacher_sha256="ab" * 32)
    write_run(grid, "layer-chunk4-seed1", method="layer", kd_layers="3,6", errors={"test": ue(11)}, teacher_sha256=None)
    command = ["report", "--exp-dir", str(grid), "--out-dir", str(tmp_path / "out")]
    refused = CliRunner().invoke(cli, command)
    assert refused.exit_code != 0
    assert "different teachers" in refused.output and "ab" * 32 in refused.output
    assert "token-chunk4-seed2" in refused.output and "7e" * 32 in refused.output
    assert "name no teacher digest: layer-chunk4-seed1" in refused.output
    assert "--allow-mixed-teachers" in refused.output and not (tmp_path / "out").exists()

    allowed = CliRunner().invoke(cli, [*command, "--allow-mixed-teachers"])
    assert allowed.exit_code == 0, allowed.output
    runs = pd.read_csv(tmp_path / "out/tables/runs.csv")
    assert {"token-chunk4-seed2", "layer-chunk4-seed1"} <= set(runs["run"])


def test_older_records_name_their_teacher_through_the_training_summary(grid):
    # Records from before teacher_sha256 was copied into them: the summary they name has it.
    for path in find_records(grid):
        record = json.loads(path.read_text())
        digest = record.pop("teacher_sha256", None)
        summary = resolve_record_path(path, record["train_summary"])
        role_digest = {"checkpoint_sha256": digest} if record["role"] == "teacher" else {"teacher_sha256": digest}
        summary.write_text(json.dumps({**json.loads(summary.read_text()), **role_digest}))
        path.write_text(json.dumps(record))
    assert len(load_records(find_records(grid)).runs) > 0
    aux = grid / "aux-chunk8-seed1"
    summary = json.loads((aux / "train_summary.json").read_text())
    (aux / "train_summary.json").write_text(json.dumps({**summary, "teacher_sha256": "cd" * 32}))
    with pytest.raises(MixedTeachersError, match=f"teacher sha256 {'cd' * 32}: aux-chunk8-seed1"):
        load_records(find_records(grid))
