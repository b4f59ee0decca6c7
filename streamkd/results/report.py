"""Rebuild every table and plot from a folder of run records (``streamkd report``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import yaml

from streamkd.results.aggregate import TableData, aggregate
from streamkd.results.config import ResultsConfig, ResultsConfigError
from streamkd.results.load import find_records, load_records

log = logging.getLogger(__name__)


@dataclass
class ReportOutputs:
    tables: Dict[str, TableData]
    table_dir: Path
    plots: Dict[str, List[Path]]
    records: List[Path]


def results_config_from_file(path: Optional[Path]) -> ResultsConfig:
    """The ``results`` section of an experiment config, or a file holding only that section."""
    if path is None:
        return ResultsConfig()
    try:
        loaded: Any = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ResultsConfigError(f"cannot read {path}: {e}") from e
    if loaded is None:
        return ResultsConfig()
    if not isinstance(loaded, Mapping):
        raise ResultsConfigError(f"{path}: expected a mapping at the top level")
    section = loaded.get("results", {}) if "exp_dir" in loaded or "results" in loaded else loaded
    return ResultsConfig.from_dict(section)


def build_report(
    records: Iterable[Path],
    out_dir: Path,
    config: Optional[ResultsConfig] = None,
    skip_invalid: bool = False,
) -> ReportOutputs:
    """Tables to ``out_dir/tables`` and plots to ``out_dir/plots``."""
    from streamkd.results.plots import build_plots

    config = config or ResultsConfig()
    records = [Path(r) for r in records]
    out_dir = Path(out_dir)
    tables = aggregate(records, out_dir / "tables", config, skip_invalid=skip_invalid)
    runs = load_records(records, skip_invalid=skip_invalid).runs
    plots = build_plots(runs, out_dir / "plots", config)
    return ReportOutputs(tables=tables, table_dir=out_dir / "tables", plots=plots, records=records)


def report_from_exp_dir(exp_dir: Path, out_dir: Path, config: Optional[ResultsConfig] = None, skip_invalid: bool = False) -> ReportOutputs:
    records = find_records(exp_dir)
    if not records:
        raise FileNotFoundError(f"no record.json under {exp_dir}: run the workflow (or `streamkd record`) first")
    log.info("found %d run record(s) under %s", len(records), exp_dir)
    return build_report(records, out_dir, config, skip_invalid=skip_invalid)
