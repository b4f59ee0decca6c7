"""Emission delay in run records, tables and the WER-vs-delay plot."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from streamkd.cli import main as cli
from streamkd.results.config import ResultsConfig
from streamkd.results.load import RecordError, find_records, load_records
from streamkd.results.plots import plot_wer_vs_delay
from streamkd.results.record import build_record
from streamkd.results.table_writer import aggregate

from results_factory import utterance_errors as ue
from results_factory import write_run


def delay(mean, median, p90, mode="streaming"):
    return {
        "mean_ms": mean,
        "median_ms": median,
        "p90_ms": p90,
        "first_token_mean_ms": mean - 40,
        "first_token_median_ms": median - 40,
        "num_matched": 50,
        "num_reference": 60,
        "share_matched": 50 / 60,
        "reference": "espeak-ng word events",
        "mode": mode,
    }


@pytest.fixture
def timed_grid(tmp_path):
    """Teacher timed offline on ctc-1best; students on their chunk-by-chunk twin ctc-1best-streaming."""
    exp = tmp_path / "exp"
    write_run(
        exp,
        "teacher",
        method="teacher",
        seed=42,
        errors={"test": ue(5)},
        delay={"test": {"ctc-1best": delay(2.0, 0.0, 10.0, "offline")}},
    )
    for seed, (errors, mean) in zip((1, 2), ((10, 100.0), (12, 140.0))):
        write_run(
            exp,
            f"none-chunk4-seed{seed}",
            seed=seed,
            errors={"test": ue(errors)},
            delay={"test": {"ctc-1best-streaming": delay(mean, mean - 10, mean + 60)}},
        )
    write_run(
        exp,
        "aux-chunk4-seed1",
        method="aux",
        kd_layers="1,2",
        apc_shift=1,
        errors={"test": ue(9)},
        delay={"test": {"ctc-1best-streaming": delay(90.0, 80.0, 150.0)}},
    )
    return exp


def test_tables_show_mean_median_p90_delay_beside_wer(timed_grid, tmp_path):
    aggregate(
        find_records(timed_grid), tmp_path / "tables", ResultsConfig.from_dict({"significance": {"num_resamples": 100}})
    )
    table = pd.read_csv(tmp_path / "tables/wer.csv").set_index("method")
    # Seeds are averaged: (100 + 140) / 2, and so are the medians and 90th percentiles.
    assert table.loc["none", ["delay_mean_ms", "delay_median_ms", "delay_p90_ms"]].tolist() == [120.0, 110.0, 180.0]
    assert table.loc["none", "delay_decoding"] == "ctc-1best-streaming"
    assert table.loc["teacher", ["delay_mean_ms", "delay_decoding"]].tolist() == [2.0, "ctc-1best"]
    assert table.loc["aux", "delay_p90_ms"] == 150.0
    markdown = (tmp_path / "tables/wer.md").read_text()
    header = [h.strip() for h in markdown.splitlines()[2].strip("|").split("|")]
    assert "test @ 160 ms delay ms" in header
    none_row = next(line for line in markdown.splitlines() if line.startswith("| none"))
    assert [c.strip() for c in none_row.strip("|").split("|")][
        header.index("test @ 160 ms delay ms")
    ] == "120 / 110 / 180 (83 %)"
    teacher_row = next(line for line in markdown.splitlines() if line.startswith("| teacher"))
    assert "offline 2 / 0 / 10 (83 %)" in teacher_row  # it waits for the utterance's end
    assert "emission delay, mean / median / 90th percentile over correctly recognised words" in markdown
    assert "word's end in the reference (espeak-ng word events)" in markdown
    runs = pd.read_csv(tmp_path / "tables/runs.csv")
    simulated = runs[(runs["run"] == "none-chunk4-seed1") & (runs["decoding"] == "ctc-1best")].iloc[0]
    assert simulated["delay_mean_ms"] == 100.0
    assert "delay ms" in (tmp_path / "tables/wer.tex").read_text()


def test_delay_columns_disappear_without_measurements_or_when_switched_off(timed_grid, tmp_path):
    config = ResultsConfig.from_dict({"tables": {"wer": {"delay": False, "significance": False}}})
    aggregate(find_records(timed_grid), tmp_path / "off", config)
    assert "delay ms" not in (tmp_path / "off/wer.md").read_text()
    plain = tmp_path / "plain"
    write_run(plain, "teacher", method="teacher", seed=42, errors={"test": ue(5)})
    write_run(plain, "none-chunk4-seed1", errors={"test": ue(10)})
    aggregate(
        find_records(plain),
        tmp_path / "plain-tables",
        ResultsConfig.from_dict({"tables": {"wer": {"significance": False}}}),
    )
    assert "delay" not in (tmp_path / "plain-tables/wer.md").read_text()
    assert pd.read_csv(tmp_path / "plain-tables/wer.csv")["delay_mean_ms"].isna().all()


def test_a_record_with_a_broken_delay_is_refused_by_name(tmp_path):
    path = write_run(
        tmp_path / "exp",
        "none-chunk4-seed1",
        errors={"test": ue(10)},
        delay={"test": {"ctc-1best-streaming": {"mean_ms": "fast", "median_ms": 1.0, "p90_ms": 2.0}}},
    )
    with pytest.raises(RecordError, match=r"record.json: delay for test/ctc-1best-streaming: mean_ms is 'fast'"):
        load_records([path])


def test_wer_vs_delay_plot_has_one_point_per_system_and_chunk(timed_grid):
    runs = load_records(find_records(timed_grid)).runs
    fig = plot_wer_vs_delay(runs, ResultsConfig())
    (ax,) = [a for a in fig.axes if a.get_xlabel()]
    points = sorted((float(x), round(float(y), 6)) for c in ax.collections for x, y in c.get_offsets())
    # teacher (offline, 5 %), aux (9 %), none (two seeds: 10 % and 12 %, delays 100 and 140 ms, averaged)
    assert points == [(2.0, 5.0), (90.0, 9.0), (120.0, 11.0)]
    assert ax.get_xlabel() == "Mean emission delay (ms)"


def test_record_command_keeps_the_delay_summary(tmp_path):
    run_dir = tmp_path / "exp/none-chunk4-seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "train_summary.json").write_text(
        json.dumps(
            {
                "role": "student",
                "method": "none",
                "seed": 1,
                "config_hash": "h",
                "num_params": 10,
                "train_seconds": 1.0,
                "chunk_size": 4,
            }
        )
    )
    (run_dir / "wer.json").write_text(json.dumps({"wer": 12.5}))
    summary = {**delay(95.5, 80.0, 170.0), "min_ms": 30.0, "max_ms": 400.0, "num_hypothesis": 55}
    (run_dir / "delay.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(
        cli,
        [
            "record",
            "--run",
            "none-chunk4-seed1",
            "--train-summary",
            str(run_dir / "train_summary.json"),
            "--wer",
            f"test/ctc-1best-streaming={run_dir / 'wer.json'}",
            "--delay",
            f"test/ctc-1best-streaming={run_dir / 'delay.json'}",
            "--out",
            str(run_dir / "record.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "record.json").read_text())
    assert record["delay"] == {"test": {"ctc-1best-streaming": delay(95.5, 80.0, 170.0)}}
    (run_dir / "bad.json").write_text(json.dumps({"mean_ms": 1.0}))
    with pytest.raises(ValueError, match=r"bad.json.*median_ms"):
        build_record(
            "r",
            run_dir / "train_summary.json",
            {("test", "m"): run_dir / "wer.json"},
            delay_stats={("test", "m"): run_dir / "bad.json"},
        )


def test_report_recomputes_delays_from_the_emission_records_against_another_reference(tmp_path):
    from streamkd.decode.word_delay import ReferenceWords

    run_dir = tmp_path / "exp/none-chunk4-seed1"
    decode = run_dir / "decode/test-ctc-1best-streaming"
    decode.mkdir(parents=True)
    (run_dir / "train_summary.json").write_text(
        json.dumps(
            {"role": "student", "method": "none", "seed": 1, "config_hash": "h", "num_params": 10}
            | {"train_seconds": 1.0, "chunk_size": 4}
        )
    )
    (decode / "wer.json").write_text(json.dumps({"wer": 12.5}))
    (decode / "delay.json").write_text(json.dumps(delay(95.0, 80.0, 170.0)))
    rows = [
        {"id": "u1", "words": [["A", 100.0, 300.0], ["B", 400.0, 500.0]]},
        {"id": "u2", "words": [["C", 50.0, 90.0]]},
    ]
    (decode / "emissions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = build_record(
        "none-chunk4-seed1",
        run_dir / "train_summary.json",
        {("test", "ctc-1best-streaming"): decode / "wer.json"},
        record_dir=run_dir,
        delay_stats={("test", "ctc-1best-streaming"): decode / "delay.json"},
    )
    assert record["emissions"] == {"test": {"ctc-1best-streaming": "decode/test-ctc-1best-streaming/emissions.jsonl"}}
    (run_dir / "record.json").write_text(json.dumps(record))
    other = {
        "u1": ReferenceWords("hand-made", (("A", 0.0, 200.0), ("B", 200.0, 250.0))),
        "u2": ReferenceWords("hand-made", (("D", 0.0, 80.0),)),  # C is not D: unmatched
    }
    runs = load_records([run_dir / "record.json"], delay_reference=other).runs
    row = runs[runs["decoding"] == "ctc-1best-streaming"].iloc[0]
    assert row["delay_mean_ms"] == pytest.approx((100.0 + 250.0) / 2)
    assert row["delay_first_token_ms"] == pytest.approx((100.0 + 200.0) / 2)
    assert row["delay_share_matched"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["delay_reference"] == "hand-made" and row["delay_mode"] == "streaming"
    # Without the emission records there is nothing to recompute from: refused, naming the record.
    (decode / "emissions.jsonl").unlink()
    del record["emissions"]
    (run_dir / "record.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"record.json: no emission records for test/ctc-1best-streaming"):
        load_records([run_dir / "record.json"], delay_reference=other)
