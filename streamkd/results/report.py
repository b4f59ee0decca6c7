"""Rebuild every table and plot from a folder of run records (``streamkd report``).

Besides the tables and plots, ``report.html`` puts them on one self-contained page (images
and downloads embedded, no scripts, nothing fetched), with the same captions as Snakemake's
report (``streamkd/report/*.rst``). It is the report for machines that cannot build
Snakemake's, which downloads its JavaScript when it is built.
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import yaml

from streamkd.results.aggregate import TableData
from streamkd.results.config import ResultsConfig, ResultsConfigError
from streamkd.results.load import find_records, load_records
from streamkd.results.table_writer import write_tables

log = logging.getLogger(__name__)


CAPTIONS = "report"  # package data: streamkd/report/*.rst, also Snakemake's report captions
PLOT_TITLES = {
    "wer_vs_chunk": "WER vs chunk size",
    "wer_vs_apc_shift": "WER vs APC shift",
    "loss_curves": "Training and validation loss",
    "wer_vs_delay": "WER vs emission delay",
}


@dataclass
class ReportOutputs:
    tables: Dict[str, TableData]
    table_dir: Path
    plots: Dict[str, List[Path]]
    records: List[Path]
    page: Optional[Path] = None


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
    allow_mixed_teachers: bool = False,
    delay_reference: Optional[Path] = None,
) -> ReportOutputs:
    """Tables to ``out_dir/tables`` and plots to ``out_dir/plots``; delays recomputed against
    ``delay_reference`` (word times: a cut manifest or a teacher alignment) when given."""
    from streamkd.results.plots import build_plots

    config = config or ResultsConfig()
    records = [Path(r) for r in records]
    out_dir = Path(out_dir)
    references = None
    if delay_reference is not None:
        from streamkd.decode.word_delay import load_references

        references = load_references(delay_reference)
    loaded = load_records(
        records, skip_invalid=skip_invalid, allow_mixed_teachers=allow_mixed_teachers, delay_reference=references
    )
    tables = write_tables(loaded, out_dir / "tables", config, skip_invalid=skip_invalid)
    plots = build_plots(loaded.runs, out_dir / "plots", config)
    outputs = ReportOutputs(tables=tables, table_dir=out_dir / "tables", plots=plots, records=records)
    outputs.page = write_html_report(outputs, out_dir / "report.html", config)
    return outputs


def render_caption(name: str, config: ResultsConfig) -> str:
    """A caption of streamkd/report/ as HTML (Jinja first, as Snakemake does, then reStructuredText)."""
    path = resources.files("streamkd").joinpath(CAPTIONS, f"{name}.rst")
    if not path.is_file():
        return ""
    import jinja2
    from docutils.core import publish_parts

    text = jinja2.Template(path.read_text()).render(snakemake=SimpleNamespace(config={"results": config.to_dict()}))
    parts = publish_parts(text, writer="html", settings_overrides={"report_level": 5, "halt_level": 5})
    return parts["body"]


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _downloads(paths: Iterable[Path]) -> str:
    links = [f'<a download="{html.escape(p.name)}" href="{_data_uri(p)}">{html.escape(p.name)}</a>' for p in paths]
    return f'<p class="downloads">Download: {" · ".join(links)}</p>' if links else ""


_PAGE_CSS = """
h1, h2 { font-weight: 600; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.caption { max-width: 60em; color: #222; } .downloads { font-size: 90%; }
img.figure { max-width: 100%; border: 1px solid #eee; }
nav ul { columns: 2; max-width: 40em; }
"""


def write_html_report(outputs: ReportOutputs, path: Path, config: Optional[ResultsConfig] = None) -> Path:
    """One self-contained page with every table and figure and their captions."""
    from streamkd.results.tables import TABLE_CSS, html_fragment
    from streamkd.utils import write_text

    config = config or ResultsConfig()
    sections, toc = [], []
    for name, table in outputs.tables.items():
        anchor = f"table-{name}"
        toc.append(f'<li><a href="#{anchor}">Table {html.escape(name)}</a></li>')
        files = [outputs.table_dir / f"{name}.{ext}" for ext in ("csv", "tex", "md")]
        sections.append(
            f'<h2 id="{anchor}">Table {html.escape(name)}</h2>\n{html_fragment(table)}'
            f'{_downloads(p for p in files if p.is_file())}<div class="caption">{render_caption("table", config)}</div>'
        )
    runs_csv = outputs.table_dir / "runs.csv"
    for name, paths in outputs.plots.items():
        png = next(p for p in paths if p.suffix == ".png")
        anchor = f"plot-{name}"
        title = PLOT_TITLES.get(name, name)
        toc.append(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>')
        sections.append(
            f'<h2 id="{anchor}">{html.escape(title)}</h2>\n<img class="figure" alt="{html.escape(title)}" src="{_data_uri(png)}">'
            f'{_downloads(p for p in paths if p.suffix != ".png")}<div class="caption">{render_caption(name, config)}</div>'
        )
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>streamkd results</title>\n'
        f"<style>{TABLE_CSS}{_PAGE_CSS}</style>\n</head>\n<body>\n<h1>streamkd results</h1>\n"
        f"<p>Built {when} from {len(outputs.records)} run record(s). {_downloads([runs_csv] if runs_csv.is_file() else [])}</p>\n"
        f'<div class="caption">{render_caption("workflow", config)}</div>\n<nav><ul>{"".join(toc)}</ul></nav>\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    write_text(path, page)
    return Path(path)


def report_from_exp_dir(
    exp_dirs: Union[Path, Sequence[Path]],
    out_dir: Path,
    config: Optional[ResultsConfig] = None,
    skip_invalid: bool = False,
    allow_mixed_teachers: bool = False,
    delay_reference: Optional[Path] = None,
) -> ReportOutputs:
    """The report of every record under one or more folders (a variant's records with the grid's)."""
    exp_dirs = [Path(exp_dirs)] if isinstance(exp_dirs, (str, Path)) else [Path(d) for d in exp_dirs]
    # A folder given twice, or inside another one given, must not count its runs twice.
    records = sorted({path.resolve(): path for d in exp_dirs for path in find_records(d)}.values())
    where = ", ".join(str(d) for d in exp_dirs)
    if not records:
        raise FileNotFoundError(f"no record.json under {where}: run the workflow (or `streamkd record`) first")
    log.info("found %d run record(s) under %s", len(records), where)
    return build_report(
        records,
        out_dir,
        config,
        skip_invalid=skip_invalid,
        allow_mixed_teachers=allow_mixed_teachers,
        delay_reference=delay_reference,
    )
