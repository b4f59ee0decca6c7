"""Write the tables: every configured table of the records in CSV, Markdown, LaTeX and HTML.

:mod:`streamkd.results.aggregate` computes a table's numbers and :mod:`streamkd.results.tables`
lays them out; this module puts both together and writes the files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, Optional

from streamkd.results.aggregate import TableData, build_table, ordered_unique
from streamkd.results.config import ResultsConfig
from streamkd.results.load import LoadedRecords, RecordError, load_records
from streamkd.results.tables import to_html, to_latex, to_markdown
from streamkd.utils import write_text

log = logging.getLogger(__name__)


def table_files(out_dir: Path, name: str) -> Dict[str, Path]:
    out_dir = Path(out_dir)
    return {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex", "html")}


def write_table(table: TableData, out_dir: Path) -> Dict[str, Path]:
    """``{name}.csv`` (the tidy numbers), ``.md``, ``.tex`` (booktabs) and ``.html``."""
    files = table_files(out_dir, table.name)
    write_text(files["csv"], table.summary.to_csv(index=False, float_format="%.6g"))
    write_text(files["md"], to_markdown(table))
    write_text(files["tex"], to_latex(table))
    write_text(files["html"], to_html(table))
    return files


def aggregate(
    record_paths: Iterable[Path],
    out_dir: Path,
    config: Optional[ResultsConfig] = None,
    skip_invalid: bool = False,
    allow_mixed_teachers: bool = False,
) -> Dict[str, TableData]:
    """Load the records and write every configured table (and ``runs.csv``) to ``out_dir``.

    Raises :class:`RecordError` naming every unusable record unless ``skip_invalid``, and
    :class:`~streamkd.results.teachers.MixedTeachersError` unless ``allow_mixed_teachers``.
    """
    loaded = load_records(record_paths, skip_invalid=skip_invalid, allow_mixed_teachers=allow_mixed_teachers)
    return write_tables(loaded, out_dir, config, skip_invalid)


def write_tables(
    loaded: LoadedRecords,
    out_dir: Path,
    config: Optional[ResultsConfig] = None,
    skip_invalid: bool = False,
) -> Dict[str, TableData]:
    """Every configured table of already loaded records, plus ``runs.csv``.

    ``runs.csv`` lists every record's WER per test set and decoding method, unaveraged. A
    record that lacks a cell a table needs is an error, or with ``skip_invalid`` is left
    out of that table (named in a warning and in the table's notes).
    """
    config = config or ResultsConfig()
    runs = loaded.runs
    tables: Dict[str, TableData] = {}
    for name, spec in config.tables.items():
        skipped = list(loaded.skipped)
        try:
            tables[name] = build_table(runs, name, spec, config)
        except RecordError as e:
            if not skip_invalid or all(p.startswith("<") for p, _ in e.problems):
                raise
            bad = {p for p, _ in e.problems}
            for path, message in e.problems:
                log.warning("table %s: left out run record %s: %s", name, path, message)
            skipped.extend(e.problems)
            tables[name] = build_table(runs[~runs["record"].isin(bad)], name, spec, config)
        if skipped:
            tables[name].notes = ordered_unique(tables[name].notes + [f"left out {p}: {m}" for p, m in skipped])
    out_dir = Path(out_dir)
    write_text(
        out_dir / "runs.csv",
        runs.drop(columns=["errors_path", "train_summary"]).to_csv(index=False, float_format="%.6g"),
    )
    for table in tables.values():
        write_table(table, out_dir)
    log.info("wrote %s to %s", ", ".join(f"{n}.{{csv,md,tex,html}}" for n in tables), out_dir)
    return tables
