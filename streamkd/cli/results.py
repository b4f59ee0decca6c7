"""Results commands: run records, tables, plots, the HTML report and the record archive."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import click

from streamkd.cli.common import ExistingPath, PathType, main
from streamkd.cli.support import json_option

log = logging.getLogger("streamkd")


def _results_config(results_json: Optional[str], config_file: Optional[Path] = None):
    from streamkd.results.config import ResultsConfig, ResultsConfigError
    from streamkd.results.report import results_config_from_file

    try:
        if results_json is not None:
            return ResultsConfig.from_dict(json_option(results_json, "--results-config"))
        return results_config_from_file(config_file)
    except ResultsConfigError as e:
        raise click.UsageError(str(e)) from e


def _fail_on_record_errors(func):
    """Bad run records end the command with their list, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from streamkd.results.load import RecordError
        from streamkd.results.significance import ErrorsFileError
        from streamkd.results.teachers import MixedTeachersError

        try:
            return func(*args, **kwargs)
        except (RecordError, ErrorsFileError, MixedTeachersError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


SKIP_INVALID_HELP = (
    "Leave out unusable run records (each is named in a warning and under the table) instead of failing."
)
ALLOW_MIXED_HELP = "Report runs from different teachers (or KD students naming none) in one table instead of failing."
RESULTS_CONFIG_HELP = (
    "JSON object: the config's results section (tables, significance, plots). Default: the standard wer table."
)


@main.command("archive-records")
@click.option("--exp-dir", required=True, type=ExistingPath)
@click.option("--out-dir", required=True, type=PathType, help="e.g. results/embedded-grid/records")
def archive_records(exp_dir, out_dir) -> None:
    """Copy every run record with the errors and training summary it names (to commit as reference results)."""
    from streamkd.results.archive import archive_records as archive

    copied = archive(exp_dir, out_dir)
    click.echo(f"{len(copied)} record(s) copied to {out_dir}")


def _test_set_paths(items: Tuple[str, ...], option: str) -> Dict[str, Path]:
    paths: Dict[str, Path] = {}
    for item in items:
        test_set, sep, path = item.partition("=")
        if not sep or not test_set or not path:
            raise click.BadParameter(f"expected TEST_SET=PATH, got {item!r}", param_hint=option)
        if test_set in paths:
            raise click.BadParameter(f"test set {test_set!r} given twice", param_hint=option)
        paths[test_set] = Path(path)
    return paths


@main.command("record")
@click.option("--run", "run_name", required=True)
@click.option("--train-summary", required=True, type=ExistingPath)
@click.option(
    "--wer",
    "wer_items",
    multiple=True,
    required=True,
    help="TEST_SET/METHOD=PATH of a WER summary (TEST_SET=PATH with --decoding-method).",
)
@click.option(
    "--errors",
    "errors_items",
    multiple=True,
    help="TEST_SET/METHOD=PATH of the per-utterance errors (errors.jsonl); needed for significance tests.",
)
@click.option(
    "--decode-stats",
    "stats_items",
    multiple=True,
    help="TEST_SET/METHOD=PATH of a decode.json (RTF, latency, streaming).",
)
@click.option(
    "--delay", "delay_items", multiple=True, help="TEST_SET/METHOD=PATH of an emission-delay summary (delay.json)."
)
@click.option("--decoding-method", default=None, help="Method of items that name none.")
@click.option(
    "--data-check",
    "check_items",
    multiple=True,
    help="TEST_SET=PATH of the test set's data-check report (the record counts the excluded utterances).",
)
@click.option(
    "--decoded-model",
    default="final",
    show_default=True,
    help="Which weights were decoded: final (model.pt) or avg-last-N (streamkd average-checkpoints).",
)
@click.option(
    "--test-cuts",
    "cuts_items",
    multiple=True,
    help="TEST_SET=PATH of the scored test set's cut manifest (the record keeps its SHA-256).",
)
@click.option("--out", required=True, type=PathType)
def record(
    run_name: str,
    train_summary: Path,
    wer_items: Tuple[str, ...],
    errors_items: Tuple[str, ...],
    stats_items: Tuple[str, ...],
    decoding_method: Optional[str],
    out: Path,
    delay_items: Tuple[str, ...] = (),
    check_items: Tuple[str, ...] = (),
    decoded_model: str = "final",
    cuts_items: Tuple[str, ...] = (),
) -> None:
    """Write the run record that the tables are built from.

    Paths stored in the record (errors, training summary) are relative to the record's folder.
    """
    from streamkd.results.record import build_record, write_record

    def keyed(items: Tuple[str, ...], option: str) -> dict:
        paths = {}
        for item in items:
            key, sep, path = item.partition("=")
            test_set, _, method = key.partition("/")
            method = method or decoding_method
            if not sep or not test_set or not path or not method:
                raise click.BadParameter(f"expected TEST_SET/METHOD=PATH, got {item!r}", param_hint=option)
            if (test_set, method) in paths:
                raise click.BadParameter(f"{test_set}/{method} given twice", param_hint=option)
            paths[(test_set, method)] = Path(path)
        return paths

    write_record(
        out,
        build_record(
            run_name,
            train_summary,
            keyed(wer_items, "--wer"),
            errors_paths=keyed(errors_items, "--errors"),
            record_dir=out.parent,
            decode_stats=keyed(stats_items, "--decode-stats"),
            delay_stats=keyed(delay_items, "--delay"),
            data_checks=_test_set_paths(check_items, "--data-check"),
            decoded_model=decoded_model,
            test_cuts=_test_set_paths(cuts_items, "--test-cuts"),
        ),
    )


def _records_options(command):
    """The options of a command that reads run records given as arguments (aggregate, plot)."""
    for decorator in reversed(
        (
            click.option("--results-config", "results_json", default=None, help=RESULTS_CONFIG_HELP),
            click.option("--skip-invalid", is_flag=True, help=SKIP_INVALID_HELP),
            click.option("--allow-mixed-teachers", is_flag=True, help=ALLOW_MIXED_HELP),
            click.argument("records", nargs=-1, required=True, type=ExistingPath),
            _fail_on_record_errors,
        )
    ):
        command = decorator(command)
    return command


@main.command("aggregate")
@click.option("--out-dir", required=True, type=PathType, help="Folder for the tables (e.g. results/tables).")
@_records_options
def aggregate(
    out_dir: Path,
    results_json: Optional[str],
    skip_invalid: bool,
    records: Tuple[Path, ...],
    allow_mixed_teachers: bool = False,
) -> None:
    """Aggregate run records into tables: NAME.csv (tidy numbers), .md, .tex (booktabs), .html.

    Also writes runs.csv (every record's WER, unaveraged) and prints the main table.
    """
    from streamkd.results.config import MAIN_TABLE
    from streamkd.results.table_writer import aggregate as run

    run(
        records,
        out_dir,
        _results_config(results_json),
        skip_invalid=skip_invalid,
        allow_mixed_teachers=allow_mixed_teachers,
    )
    click.echo((out_dir / f"{MAIN_TABLE}.md").read_text())


@main.command("plot")
@click.option("--out-dir", required=True, type=PathType, help="Folder for the figures (e.g. results/plots).")
@_records_options
def plot(
    out_dir: Path,
    results_json: Optional[str],
    skip_invalid: bool,
    records: Tuple[Path, ...],
    allow_mixed_teachers: bool = False,
) -> None:
    """Plot WER vs chunk size, WER vs APC shift and the loss curves (PNG and PDF)."""
    from streamkd.results.load import load_records
    from streamkd.results.plots import build_plots

    runs = load_records(records, skip_invalid=skip_invalid, allow_mixed_teachers=allow_mixed_teachers).runs
    for paths in build_plots(runs, out_dir, _results_config(results_json)).values():
        for path in paths:
            click.echo(str(path))


@main.command("report")
@click.option(
    "--exp-dir",
    "exp_dirs",
    required=True,
    multiple=True,
    type=ExistingPath,
    help="Folder searched (recursively) for record.json files; repeat it to report several folders together.",
)
@click.option("--out-dir", required=True, type=PathType, help="Tables go to OUT_DIR/tables, plots to OUT_DIR/plots.")
@click.option(
    "--config",
    "config_file",
    type=ExistingPath,
    default=None,
    help="Experiment config (its results section is used) or a YAML file with only the results section.",
)
@click.option("--skip-invalid", is_flag=True, help=SKIP_INVALID_HELP)
@click.option("--allow-mixed-teachers", is_flag=True, help=ALLOW_MIXED_HELP)
@click.option(
    "--delay-reference",
    type=ExistingPath,
    default=None,
    help="Recompute every delay from the records' emission records against these word times: a cut "
    "manifest with word alignments, or an align-reference output (the teacher's).",
)
@_fail_on_record_errors
def report(
    exp_dirs: Tuple[Path, ...],
    out_dir: Path,
    config_file: Optional[Path],
    skip_invalid: bool,
    allow_mixed_teachers: bool = False,
    delay_reference: Optional[Path] = None,
) -> None:
    """Rebuild every table and plot from a folder of run records, and OUT_DIR/report.html.

    report.html is one self-contained page (no scripts, nothing fetched) with every table,
    figure and caption.
    """
    from streamkd.results.config import MAIN_TABLE
    from streamkd.results.report import report_from_exp_dir

    outputs = report_from_exp_dir(
        exp_dirs,
        out_dir,
        _results_config(None, config_file),
        skip_invalid=skip_invalid,
        allow_mixed_teachers=allow_mixed_teachers,
        delay_reference=delay_reference,
    )
    click.echo((outputs.table_dir / f"{MAIN_TABLE}.md").read_text())
    click.echo(f"tables: {outputs.table_dir}/{{{','.join(outputs.tables)}}}.{{csv,md,tex,html}}")
    click.echo(f"plots:  {out_dir / 'plots'}/{{{','.join(outputs.plots)}}}.{{png,pdf}}")
    click.echo(f"page:   {outputs.page}")
