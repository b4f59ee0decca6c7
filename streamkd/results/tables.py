"""Lay a computed table out as Markdown, LaTeX (booktabs) and HTML.

Rows are systems, the teacher first as a reference; columns are chunk size x test set, each
with the WER (mean ± std over seeds) and, optionally, the relative WER reduction against the
baseline. In every WER column the best student (lowest mean at the printed precision; ties
all count) is bold, and so is its relative reduction unless it is the baseline itself. The
teacher is never bold: with full context it is a reference, not a competitor. A dagger marks
a WER whose paired-bootstrap interval of the difference to the baseline excludes zero.

The LaTeX needs only ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import pandas as pd

from streamkd.results.aggregate import TEACHER, TableData, relative_reduction
from streamkd.results.kd_settings import SETTING_FIELDS
from streamkd.results.load import FRAME_MS, varying_fields
from streamkd.results.significance import MIN_SEEDS

DASH = "–"
DAGGER = "†"  # the seed-level test (two-level bootstrap, Holm over the table)
DOUBLE_DAGGER = "‡"  # the utterance-level test (seeds averaged, models fixed), uncorrected
LABEL_COLUMNS = (
    ("method", "Method"),
    ("kd_layers", "KD layers"),
    ("kd_teacher_layers", "Teacher layers"),
    ("apc_shift", "APC shift"),
    ("kd_loss", "KD loss"),
    ("kd_weight", "KD weight"),
    # Shown only when they differ between the table's rows (see results.kd_settings).
    ("left_chunks", "Left chunks"),
    ("kd_teacher_input", "Teacher input"),
    ("kd_temperature", "KD temperature"),
    ("kd_token_delay", "Token delay"),
    ("aux_type", "Branch"),
    ("aux_attention", "Branch attention"),
    ("aux_positional", "Branch positions"),
    ("aux_ff_dim", "Branch FF dim"),
    ("aux_num_heads", "Branch heads"),
    ("aux_conv_kernel", "Branch kernel"),
    ("decoded_model", "Decoded model"),  # shown when some row is not the final weights (avg-last-N)
    ("chunk_training", "Chunk"),  # shown when some row is a dynamic-chunk student: fixed | dynamic
)
ALWAYS_SHOWN = {"method", "kd_layers", "apc_shift", "chunk_training"}  # when any row has a value
REL_HEADER = "rel. %"
GAP_HEADER = "gap %"
DELAY_HEADER = "delay ms"
PARAMS_HEADER = "Params (M)"
STAT_HEADERS = {"rel": REL_HEADER, "gap": GAP_HEADER, "delay": DELAY_HEADER}


@dataclass
class Cell:
    value: Optional[str] = None  # None: nothing to show
    std: Optional[str] = None
    bold: bool = False
    mark: bool = False  # significantly different from the baseline at the seed level (†)
    utterance_mark: bool = False  # ... at the utterance level only (‡)
    seeds: Optional[int] = None  # shown where the table's cells rest on different numbers of seeds


@dataclass
class ValueColumn:
    chunk_size: int
    test_set: str
    stat: str  # "wer", "rel" (relative reduction), "gap" (share of the baseline-teacher gap closed) or "delay"

    @property
    def chunk_label(self) -> str:
        return f"{self.chunk_size * FRAME_MS} ms"


@dataclass
class Layout:
    label_headers: List[str]
    labels: List[List[str]]
    columns: List[ValueColumn]
    cells: List[List[Cell]]
    params: Optional[List[str]]
    show_test_level: bool
    show_stat_level: bool
    legend: List[str] = field(default_factory=list)
    title: str = ""


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _label_value(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return DASH
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _system_label(row, key: str) -> str:
    """A label cell; a student beside dynamic-chunk students says that its own chunk is fixed."""
    value = row[key]
    if key == "chunk_training" and _label_value(value) == DASH and row["method"] != TEACHER:
        return "fixed"
    return _label_value(value)


def _params(num: float) -> str:
    """Millions to 3 significant digits, trailing zeros kept (1.00, 0.943, 30.2, 119)."""
    return DASH if pd.isna(num) else f"{num / 1e6:#.3g}".rstrip(".")


def value_stats(table: TableData) -> Tuple[str, ...]:
    """The numbers each chunk size x test set column shows."""
    spec = table.spec
    return (
        ("wer",)
        + (("rel",) if spec.relative_reduction else ())
        + (("gap",) if spec.gap_recovered else ())
        + (("delay",) if has_delay(table) else ())
    )


def has_delay(table: TableData) -> bool:
    """Whether the table shows emission delays: asked for, and some row was measured.

    A measurement without a correctly recognised token has no delay; its cell shows a dash.
    """
    return bool(table.spec.delay and table.summary["delay_decoding"].notna().any())


def _delay_text(row) -> Optional[str]:
    """``mean / median / p90 (matched %)`` in whole ms, ``offline`` first for a full-context model."""
    values = [row["delay_mean_ms"], row["delay_median_ms"], row["delay_p90_ms"]]
    if any(pd.isna(v) for v in values):
        return None
    text = " / ".join(f"{v:.0f}" for v in values)
    if not pd.isna(row.get("delay_share_matched")):
        text += f" ({100 * row['delay_share_matched']:.0f} %)"
    return ("offline " if row.get("delay_mode") == "offline" else "") + text


def delay_legend(table: TableData) -> str:
    """What the delay column measures, against which reference times."""
    references = sorted(set(table.summary["delay_reference"].dropna()))
    return (
        f"{DELAY_HEADER}: emission delay, mean / median / 90th percentile over correctly recognised words (mean over "
        "seeds), and the share of reference words recognised: when chunk-by-chunk decoding shows a word's last token "
        "for good (chunk arrival plus front-end look-ahead) minus the word's end in the reference "
        f"({'; '.join(references) or 'none'}). An offline row waits for the end of the utterance. The first-token "
        "delay (first token minus word start) is in the CSV."
    )


def _baseline_label(table: TableData) -> str:
    """The baseline's method, or its row's label where one shift of a shifted method is chosen."""
    if table.spec.baseline_apc_shift is not None and table.baseline_model:
        return table.baseline_model
    return table.baseline


def layout(table: TableData) -> Layout:
    spec, summary, p = table.spec, table.summary, table.precision
    first = summary.drop_duplicates("model").set_index("model")
    shown_labels = []
    # A branch size set for some systems of a method and left at the student's (null) for others tells them apart too.
    settings = ("left_chunks", *SETTING_FIELDS)
    varying = set().union(*(varying_fields(part, settings) for _, part in first.loc[table.systems].groupby("method")))
    for key, header in LABEL_COLUMNS:
        values = first.loc[table.systems, key]
        distinct = values.dropna().astype(str).unique()
        averaged = key == "decoded_model" and any(v != "final" for v in distinct)
        if (
            key == "method"
            or (key in ALWAYS_SHOWN and len(distinct))
            or len(distinct) > 1
            or key in varying
            or averaged
        ):
            shown_labels.append((key, header))
    labels = [[_system_label(first.loc[m], k) for k, _ in shown_labels] for m in table.systems]

    stats = value_stats(table)
    columns = [ValueColumn(c, t, stat) for c in table.chunk_sizes for t in table.test_sets for stat in stats]
    by_key = {}
    for _, r in summary.iterrows():
        chunk = None if pd.isna(r["chunk_size"]) else int(r["chunk_size"])
        by_key[(r["model"], chunk, r["test_set"])] = r
    baseline_wer = {(int(r["chunk_size"]), r["test_set"]): r["baseline_wer"] for _, r in table.baselines.iterrows()}
    # A grid completed in parts: each WER says how many seeds it rests on until all cells have the same.
    show_seeds = _student_seed_counts(table).nunique() > 1

    cells: List[List[Cell]] = []
    for model in table.systems:
        method = first.loc[model, "method"]
        row_cells = []
        for col in columns:
            r = by_key.get((model, None if method == TEACHER else col.chunk_size, col.test_set))
            if r is None:
                row_cells.append(Cell())
            elif col.stat == "wer":
                std = None if (not spec.std or pd.isna(r["wer_std"])) else _fmt(r["wer_std"], p)
                mark = bool(spec.significance and _true(r["seed_significant"]))
                utterance_mark = bool(spec.significance and _true(r["significant"]))
                seeds = int(r["num_seeds"]) if show_seeds and method != TEACHER else None
                row_cells.append(
                    Cell(_fmt(r["wer_mean"], p), std, mark=mark, utterance_mark=utterance_mark, seeds=seeds)
                )
            elif col.stat == "gap":
                gap = float("nan") if method == TEACHER or model == table.baseline_model else r["gap_recovered"]
                row_cells.append(Cell(None if pd.isna(gap) else _fmt(gap, 0)))
            elif col.stat == "delay":
                row_cells.append(Cell(_delay_text(r)))
            else:
                if model == table.baseline_model:
                    rel = float("nan")
                elif method == TEACHER:
                    rel = relative_reduction(baseline_wer.get((col.chunk_size, col.test_set)), r["wer_mean"])
                else:
                    rel = r["rel_reduction"]
                row_cells.append(Cell(None if pd.isna(rel) else _fmt(rel, 1)))
        cells.append(row_cells)

    # Bold: the best student of each WER column (at the printed precision), and its reduction.
    methods = [first.loc[m, "method"] for m in table.systems]
    for j, col in enumerate(columns):
        if col.stat != "wer":
            continue
        candidates = [
            (i, float(cells[i][j].value))
            for i in range(len(cells))
            if methods[i] != TEACHER and cells[i][j].value is not None
        ]
        if not candidates:
            continue
        best = min(v for _, v in candidates)
        for i, v in candidates:
            if v == best:
                cells[i][j].bold = True
                # ... and its reduction and gap closed (the delay is not a rank).
                for k, stat in enumerate(stats[1:], 1):
                    if (
                        stat in ("rel", "gap")
                        and table.systems[i] != table.baseline_model
                        and cells[i][j + k].value is not None
                    ):
                        cells[i][j + k].bold = True

    params = [_params(first.loc[m, "num_params"]) for m in table.systems] if spec.params else None
    out = Layout(
        label_headers=[h for _, h in shown_labels],
        labels=labels,
        columns=columns,
        cells=cells,
        params=params,
        show_test_level=len(table.test_sets) > 1,
        show_stat_level=len(stats) > 1,
    )
    out.title, out.legend = describe(table)
    return out


def _true(value) -> bool:
    return not pd.isna(value) and bool(value)


def _significance_legend(table: TableData) -> List[str]:
    """What † and ‡ mean in this table, and the family Holm's correction ran over."""
    level = f"{table.confidence * 100:g}%"
    summary = table.summary
    tested = int(summary["seed_p_holm"].notna().sum())
    if tested:
        seed_line = (
            f"{DAGGER}: seed-level test, a two-level paired bootstrap (training seeds, then test utterances within "
            f"them; seeds paired by number) of the WER difference to the baseline at the same chunk size; "
            f"Holm-adjusted p < {1 - table.confidence:g} over the family of this table's {tested} seed-level "
            f"comparisons (every student against {_baseline_label(table)} in every column)."
        )
    else:
        seed_line = (
            f"No seed-level test ({DAGGER}) was possible: it needs at least {MIN_SEEDS} seed numbers that a student "
            "and its baseline both have."
        )
    return [
        seed_line,
        f"{DOUBLE_DAGGER}: utterance-level test, the {level} paired-bootstrap interval over test utterances (seeds "
        "averaged, trained models treated as fixed) excludes zero; uncorrected. It says the checkpoints differ on "
        "this test set, not that the method does.",
    ]


def _student_seed_counts(table: TableData) -> pd.Series:
    return table.summary.loc[table.summary["model"] != TEACHER, "num_seeds"]


def describe(table: TableData) -> Tuple[str, List[str]]:
    """The table's title and the sentences that explain its conventions (plain text)."""
    spec = table.spec
    seeds = _student_seed_counts(table)
    if seeds.empty:
        seed_text = ""
    elif seeds.min() == seeds.max():
        seed_text = f" ({int(seeds.min())} seed{'s' if seeds.min() != 1 else ''} per student)"
    else:
        seed_text = f" ({int(seeds.min())} to {int(seeds.max())} seeds per student)"
    decoding = (
        table.decoding
        if table.teacher_decoding == table.decoding
        else f"{table.decoding} (teacher: {table.teacher_decoding})"
    )
    stat = "mean ± std over seeds" if spec.std else "mean over seeds"
    title = spec.caption or f"WER (%) on {', '.join(table.test_sets)} with {decoding} decoding, {stat}{seed_text}."
    legend = [
        f"Columns: chunk size ({FRAME_MS} ms encoder frames); a streaming student's algorithmic latency is the chunk plus 30 ms of front-end look-ahead.",
    ]
    if seeds.nunique() > 1:
        legend.append(
            f"Seeds: {int(seeds.min())} to {int(seeds.max())} per student; (n=k) after a WER: the k seeds it is the mean of."
        )
    if has_delay(table):
        legend.append(delay_legend(table))
    if spec.relative_reduction:
        legend.append(
            f"{REL_HEADER}: relative WER reduction against the baseline ({_baseline_label(table)}) at the same chunk size (positive: fewer errors)."
        )
    if spec.gap_recovered:
        legend.append(
            f"{GAP_HEADER}: the share of the baseline's WER gap to the full-context teacher that a student closes, "
            f"100 x (baseline - student) / (baseline - teacher)."
        )
    if spec.significance:
        legend.extend(_significance_legend(table))
    legend.append(
        "Bold: the best student in each column. The full-context teacher is a reference, repeated in every chunk column."
    )
    if spec.params:
        legend.append(f"{PARAMS_HEADER}: parameters of the decoded model (training-only branches excluded).")
    if table.scored:
        legend.append("Scored utterances: " + "; ".join(table.scored) + ".")
    legend.extend(f"Note: {n}" for n in table.notes)
    return title, legend


# -- Markdown ---------------------------------------------------------------------------------


def _seeds_suffix(cell: Cell) -> str:
    return "" if cell.seeds is None else f" (n={cell.seeds})"


def _md_cell(cell: Cell) -> str:
    if cell.value is None:
        return DASH
    text = cell.value + (f" ± {cell.std}" if cell.std else "")
    if cell.bold:
        text = f"**{text}**"
    return text + _marks(cell) + _seeds_suffix(cell)


def _marks(cell: Cell) -> str:
    return (DAGGER if cell.mark else "") + (DOUBLE_DAGGER if cell.utterance_mark else "")


def markdown_header(col: ValueColumn) -> str:
    name = f"{col.test_set} @ {col.chunk_label}"
    return name if col.stat == "wer" else f"{name} {STAT_HEADERS[col.stat]}"


def to_markdown(table: TableData) -> str:
    lay = layout(table)
    headers = lay.label_headers + [markdown_header(c) for c in lay.columns] + ([PARAMS_HEADER] if lay.params else [])
    rows = []
    for i, labels in enumerate(lay.labels):
        rows.append(labels + [_md_cell(c) for c in lay.cells[i]] + ([lay.params[i]] if lay.params else []))
    frame = pd.DataFrame(rows, columns=range(len(headers)))
    body = frame.to_markdown(
        index=False,
        headers=headers,
        disable_numparse=True,
        colalign=["left"] * len(lay.label_headers) + ["right"] * (len(headers) - len(lay.label_headers)),
    )
    legend = "\n".join(f"- {line}" for line in lay.legend)
    return f"{lay.title}\n\n{body}\n\n{legend}\n"


# -- LaTeX ------------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    DASH: "--",
    "±": r"$\pm$",
    DAGGER: r"$^{\dagger}$",
    DOUBLE_DAGGER: r"$^{\ddagger}$",
    "'": "'",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_number(text: str) -> str:
    return r"$-$" + text[1:] if text.startswith("-") else text


def _tex_cell(cell: Cell) -> str:
    if cell.value is None:
        return "--"
    text = _latex_number(cell.value) + (rf" $\pm$ {cell.std}" if cell.std else "")
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    return text + "".join(_LATEX_SPECIAL[m] for m in _marks(cell)) + _seeds_suffix(cell)


def _column_tuples(
    lay: Layout, label_headers: Sequence[str], params_header: Optional[str], stat_names
) -> List[Tuple[str, ...]]:
    def levels(group: Tuple[str, str, str], name: str) -> Tuple[str, ...]:
        chunk, test, stat = group
        out = [chunk]
        if lay.show_test_level:
            out.append(test)
        if lay.show_stat_level:
            out.append(stat)
        return tuple(out)

    depth = 1 + lay.show_test_level + lay.show_stat_level
    tuples = [("",) * (depth - 1) + (h,) for h in label_headers]
    for col in lay.columns:
        tuples.append(levels((col.chunk_label, col.test_set, stat_names[col.stat]), col.stat))
    if params_header:
        tuples.append(("",) * (depth - 1) + (params_header,))
    return tuples


def _columns_index(tuples: List[Tuple[str, ...]]) -> pd.Index:
    return pd.MultiIndex.from_tuples(tuples) if len(tuples[0]) > 1 else pd.Index([t[0] for t in tuples])


_MULTICOLUMN = re.compile(r"^\\multicolumn\{(\d+)\}\{[lcr]\}\{(.*)\}$")


def _add_cmidrules(latex: str) -> str:
    """booktabs style: a \\cmidrule under every grouped column header."""
    lines = latex.split("\n")
    out = []
    in_header = False
    for line in lines:
        out.append(line)
        if line.startswith(r"\toprule"):
            in_header = True
            continue
        if line.startswith(r"\midrule"):
            in_header = False
            continue
        if in_header and r"\multicolumn" in line:
            rules, col = [], 1
            for cell in line.rstrip().removesuffix(r"\\").split(" & "):
                m = _MULTICOLUMN.match(cell.strip())
                span, label = (int(m.group(1)), m.group(2)) if m else (1, cell.strip())
                if m and label:
                    rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
                col += span
            if rules:
                out.append(" ".join(rules))
    return "\n".join(out)


def to_latex(table: TableData) -> str:
    lay = layout(table)
    stat_names = {"wer": "WER", **{k: latex_escape(v) for k, v in STAT_HEADERS.items()}}
    tuples = _column_tuples(
        lay,
        [latex_escape(h) for h in lay.label_headers],
        latex_escape(PARAMS_HEADER) if lay.params else None,
        stat_names,
    )
    rows = []
    for i, labels in enumerate(lay.labels):
        rows.append(
            [latex_escape(v) for v in labels]
            + [_tex_cell(c) for c in lay.cells[i]]
            + ([lay.params[i]] if lay.params else [])
        )
    frame = pd.DataFrame(rows, columns=_columns_index(tuples))
    column_format = "l" * len(lay.label_headers) + "r" * (len(tuples) - len(lay.label_headers))
    caption = latex_escape(" ".join([lay.title] + lay.legend))
    latex = frame.style.hide(axis="index").to_latex(
        hrules=True,
        multicol_align="c",
        column_format=column_format,
        caption=caption,
        label=f"tab:{table.name}",
        position_float="centering",
        environment="table",
    )
    header = (
        f"% {table.name}: generated by `streamkd aggregate` from the run records; do not edit by hand.\n"
        "% Needs \\usepackage{booktabs}.\n"
    )
    return header + _add_cmidrules(latex)


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; border-top: 2px solid #000; border-bottom: 2px solid #000; }
th, td { padding: 0.25em 0.7em; text-align: right; white-space: nowrap; }
thead tr:last-child th { border-bottom: 1px solid #000; }
th.col_heading.level0 { text-align: center; }
td.label, th.label { text-align: left; }
caption { caption-side: top; text-align: left; max-width: 60em; margin-bottom: 0.6em; }
ul.legend { max-width: 60em; font-size: 90%; }
"""


def _html_cell(cell: Cell) -> str:
    if cell.value is None:
        return DASH
    text = html.escape(cell.value) + (f" ± {html.escape(cell.std)}" if cell.std else "")
    if cell.bold:
        text = f"<b>{text}</b>"
    marks = _marks(cell)
    return text + (f"<sup>{marks}</sup>" if marks else "") + _seeds_suffix(cell)


def html_fragment(table: TableData) -> str:
    """The table (with its title as caption) and its legend, to be placed in an HTML page."""
    lay = layout(table)
    tuples = _column_tuples(
        lay,
        [html.escape(h) for h in lay.label_headers],
        PARAMS_HEADER if lay.params else None,
        {"wer": "WER", **{k: html.escape(v) for k, v in STAT_HEADERS.items()}},
    )
    rows = []
    for i, labels in enumerate(lay.labels):
        rows.append(
            [html.escape(v) for v in labels]
            + [_html_cell(c) for c in lay.cells[i]]
            + ([lay.params[i]] if lay.params else [])
        )
    frame = pd.DataFrame(rows, columns=_columns_index(tuples))
    styler = frame.style.hide(axis="index").set_caption(html.escape(lay.title))
    n_labels = len(lay.label_headers)
    styler = styler.set_td_classes(
        pd.DataFrame(
            [["label"] * n_labels + [""] * (len(tuples) - n_labels)] * len(rows),
            columns=frame.columns,
            index=frame.index,
        )
    )
    body = styler.to_html(table_uuid=table.name)
    legend = "\n".join(f"<li>{html.escape(line)}</li>" for line in lay.legend)
    return f'{body}\n<ul class="legend">\n{legend}\n</ul>\n'


TABLE_CSS = _CSS


def to_html(table: TableData) -> str:
    """A self-contained HTML page with the table (the Snakemake report shows it)."""
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(table.name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{html_fragment(table)}</body>\n</html>\n"
    )


# -- checking LaTeX without a TeX engine ------------------------------------------------------


def latex_problems(latex: str) -> List[str]:
    """Structural checks of a generated table: what a TeX engine would trip over first.

    Balanced braces and environments, booktabs rules in order, and every row of the tabular
    with as many cells (``\\multicolumn`` spans counted) as the column specification.
    """
    problems = []
    text = re.sub(r"(?<!\\)%.*", "", latex)  # comments
    depth = 0
    for i, ch in enumerate(text):
        if ch in "{}" and i > 0 and text[i - 1] == "\\":
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            problems.append(f"unbalanced '}}' at character {i}")
            break
    if depth > 0:
        problems.append(f"{depth} unclosed '{{'")
    stack = []
    for m in re.finditer(r"\\(begin|end)\{([^}]*)\}", text):
        if m.group(1) == "begin":
            stack.append(m.group(2))
        elif not stack or stack.pop() != m.group(2):
            problems.append(f"\\end{{{m.group(2)}}} without a matching \\begin")
    problems.extend(f"\\begin{{{env}}} is never closed" for env in stack)
    if text.count("$") % 2:
        problems.append("an odd number of '$' (unbalanced math mode)")
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", text)
    body = re.search(r"\\begin\{tabular\}\{[^}]*\}(.*)\\end\{tabular\}", text, re.S)
    if not spec or not body:
        return problems + ["no tabular environment"]
    num_columns = len(re.findall(r"[lcrpmbX]", spec.group(1)))
    rules = [r for r in re.findall(r"\\(toprule|midrule|bottomrule)", body.group(1))]
    if not rules or rules[0] != "toprule" or rules[-1] != "bottomrule" or "midrule" not in rules:
        problems.append(f"booktabs rules out of order: {rules}")
    content = re.sub(r"\\(toprule|midrule|bottomrule)(\[[^\]]*\])?|\\cmidrule(\([lr]*\))?\{[^}]*\}", "", body.group(1))
    for row in content.split(r"\\"):
        row = row.strip()
        if not row:
            continue
        cells = split_latex_row(row)
        width = sum(int(m.group(1)) if (m := _MULTICOLUMN.match(c)) else 1 for c in cells)
        if width != num_columns:
            problems.append(f"row has {width} cells, the tabular has {num_columns}: {row[:80]}")
    return problems


def split_latex_row(row: str) -> List[str]:
    """Cells of one tabular row (``&`` outside braces, not escaped)."""
    cells, depth, current, prev = [], 0, [], ""
    for ch in row:
        if ch == "{" and prev != "\\":
            depth += 1
        elif ch == "}" and prev != "\\":
            depth -= 1
        if ch == "&" and prev != "\\" and depth == 0:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        prev = ch
    cells.append("".join(current).strip())
    return cells


def latex_body_rows(latex: str) -> List[List[str]]:
    """The body rows (between \\midrule and \\bottomrule) of a generated table, cell by cell."""
    body = latex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    return [split_latex_row(r.strip()) for r in body.split(r"\\") if r.strip()]
