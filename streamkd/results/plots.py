"""Figures for papers and the report: WER vs chunk size, WER vs APC shift, loss curves, WER vs emission delay.

Each figure is written as PNG (for the report and quick looks) and PDF (vector, for papers).
Matplotlib runs headless (Agg) and without pyplot's global state. When the records hold
nothing a figure could show (no APC shift in the grid, no training history), the figure
says so in words instead of being left out, so a workflow's outputs are always the same set.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from streamkd.results.config import PLOTS, TEACHER_METHOD, PlotConfig, ResultsConfig  # noqa: E402
from streamkd.results.load import (  # noqa: E402
    FRAME_MS,
    SYSTEM_FIELDS,
    describe_varying,
    load_loss_history,
    system_sort_key,
    varying_fields,
)
from streamkd.utils import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

FORMATS = ("png", "pdf")
TEACHER_COLOUR = "black"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINESTYLES = ("-", "--", "-.", ":")
DODGE = 0.02  # sideways offset between systems, in octaves of chunk size
SHIFT_DODGE = 0.04  # sideways offset between lines of the APC shift plot, in frames


def plot_files(out_dir: Path) -> Dict[str, Dict[str, Path]]:
    """``{plot: {format: path}}`` of every figure :func:`build_plots` writes."""
    return {name: {fmt: Path(out_dir) / f"{name}.{fmt}" for fmt in FORMATS} for name in PLOTS}


def save_figure(fig: Figure, base: Path, dpi: int = 150) -> List[Path]:
    """Write ``base.png`` and ``base.pdf`` (atomically, without time stamps)."""
    paths = []
    for fmt in FORMATS:
        path = Path(base).with_suffix(f".{fmt}")
        metadata = {"Software": None} if fmt == "png" else {"CreationDate": None, "Creator": None}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        paths.append(path)
    return paths


def _colours(n: int) -> List:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def _footnote(fig: Figure, text: str) -> None:
    """Lines under the panels (laid out by the figure, so they never cover an axis label).

    The text is wrapped to the figure's width: constrained layout makes room below the
    panels but never narrows a centred line that is wider than the figure.
    """
    size = FontProperties(size="small").get_size_in_points()
    # ~0.6 em per character of DejaVu Sans, 90 % of the width for the margins.
    chars = max(20, int(fig.get_figwidth() * 72 * 0.9 / (0.6 * size)))
    fig.supxlabel(textwrap.fill(text, chars), fontsize=size, color="0.25")


def _placeholder(title: str, message: str) -> Figure:
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    return fig


def _select(runs: pd.DataFrame, plots: PlotConfig, config: ResultsConfig) -> Tuple[pd.DataFrame, List[str], str]:
    decoding = plots.decoding_method or config.decoding_method
    sel = runs[runs["decoding"] == decoding]
    if plots.methods is not None:
        sel = sel[sel["method"].isin(plots.methods)]
    test_sets = list(plots.test_sets) if plots.test_sets is not None else sorted(set(sel["test_set"]))
    sel = sel[sel["test_set"].isin(test_sets)]
    return sel, test_sets, decoding


def _systems(frame: pd.DataFrame) -> List[str]:
    first = frame.drop_duplicates("model")
    keyed = [
        (system_sort_key(*(None if pd.isna(r[f]) else r[f] for f in SYSTEM_FIELDS)), r["model"])
        for _, r in first.iterrows()
    ]
    return [m for _, m in sorted(keyed)]


def _panels(n: int, title: str, width: float = 5.2, height: float = 4.0) -> Tuple[Figure, list]:
    fig = Figure(figsize=(width * n + 2.6, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    # Over the panels from the left edge: centred on the figure it runs into the legend on the right.
    fig.suptitle(title, x=0.01, ha="left")
    return fig, list(axes)


def _chunk_axis(ax, chunk_ms: Sequence[int]) -> None:
    values = sorted(set(int(c) for c in chunk_ms))
    if len(values) >= 3 and values[-1] / values[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(v) for v in values])
    if len(values) == 1:
        ax.set_xlim(values[0] * 0.5, values[0] * 1.5)
    ax.set_xlabel("Chunk size (ms)")


def plot_wer_vs_chunk(runs: pd.DataFrame, config: ResultsConfig) -> Figure:
    """One line per student system: seed mean, ±1 std bars, and each seed as a dot."""
    sel, test_sets, decoding = _select(runs, config.plots, config)
    students = sel[sel["method"] != TEACHER_METHOD]
    title = f"WER vs chunk size ({decoding} decoding)"
    if students.empty:
        return _placeholder(title, f"No streaming student has a WER with {decoding} decoding in these records.")
    systems = _systems(students)
    colours = dict(zip(systems, _colours(len(systems))))
    fig, axes = _panels(len(test_sets), title)
    for ax, test_set in zip(axes, test_sets):
        part = students[students["test_set"] == test_set]
        for k, model in enumerate(systems):
            runs_of = part[part["model"] == model]
            if runs_of.empty:
                continue
            stats = runs_of.groupby("chunk_size")["wer"].agg(["mean", "std", "count"]).sort_index()
            # Systems are dodged sideways a little so that their error bars stay apart.
            dodge = 2.0 ** (DODGE * (k - (len(systems) - 1) / 2))
            x = stats.index.to_numpy(dtype=float) * FRAME_MS * dodge
            ax.errorbar(
                x,
                stats["mean"],
                yerr=stats["std"].fillna(0.0),
                color=colours[model],
                marker=MARKERS[k % len(MARKERS)],
                capsize=3,
                linewidth=1.5,
                label=model,
            )
            ax.scatter(
                runs_of["chunk_size"].to_numpy(dtype=float) * FRAME_MS * dodge,
                runs_of["wer"],
                color=colours[model],
                s=12,
                alpha=0.45,
                linewidths=0,
                zorder=3,
            )
        teacher = sel[(sel["method"] == TEACHER_METHOD) & (sel["test_set"] == test_set)]
        if not teacher.empty:
            ax.axhline(
                teacher["wer"].mean(),
                color=TEACHER_COLOUR,
                linestyle="--",
                linewidth=1.2,
                label="teacher (full context)",
            )
        _chunk_axis(ax, students["chunk_size"].dropna().astype(int) * FRAME_MS)
        ax.set_ylabel("WER (%)")
        ax.set_title(f"test set: {test_set}")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", title="system", fontsize="small")
    _footnote(
        fig,
        "Lines: mean over seeds; bars: ±1 std over seeds; dots: single seeds. Systems are offset slightly "
        "sideways at each chunk size for legibility.",
    )
    return fig


def plot_wer_vs_shift(runs: pd.DataFrame, config: ResultsConfig) -> Figure:
    """WER against the APC shift k, one colour per chunk size; the baseline as a dotted line."""
    sel, test_sets, decoding = _select(runs, config.plots, config)
    shifted = sel[sel["apc_shift"].notna() & (sel["method"] != TEACHER_METHOD)]
    title = f"WER vs APC shift ({decoding} decoding)"
    if shifted.empty:
        return _placeholder(title, "No run in these records has an APC shift (apc_shift), so there is nothing to plot.")
    chunks = sorted(int(c) for c in shifted["chunk_size"].dropna().unique())
    colours = dict(zip(chunks, _colours(len(chunks))))
    # A line is a system without its shift (method, layers, ...) at one chunk size.
    variant_fields = [f for f in SYSTEM_FIELDS if f != "apc_shift"]
    shifted = shifted.assign(
        variant=shifted[variant_fields]
        .astype(object)
        .where(shifted[variant_fields].notna(), None)
        .astype(str)
        .agg("|".join, axis=1)
    )
    variants = list(dict.fromkeys(shifted.sort_values(["method", "variant"])["variant"]))
    variant_label = {}
    varying = varying_fields(shifted)
    for v in variants:
        r = shifted[shifted["variant"] == v].iloc[0]
        variant_label[v] = r["method"] + (f" layers {r['kd_layers']}" if not pd.isna(r["kd_layers"]) else "")
        extra = describe_varying(r, varying)
        if extra:
            variant_label[v] += " (" + ", ".join(extra) + ")"
    combos = [
        (c, v)
        for c in chunks
        for v in variants
        if not shifted[(shifted["chunk_size"] == c) & (shifted["variant"] == v)].empty
    ]
    fig, axes = _panels(len(test_sets), title)
    for ax, test_set in zip(axes, test_sets):
        part = shifted[shifted["test_set"] == test_set]
        for chunk in chunks:
            for j, v in enumerate(variants):
                line = part[(part["chunk_size"] == chunk) & (part["variant"] == v)]
                if line.empty:
                    continue
                # Lines are dodged sideways a little (in frames) so that their error bars stay apart.
                dodge = SHIFT_DODGE * (combos.index((chunk, v)) - (len(combos) - 1) / 2)
                stats = line.groupby("apc_shift")["wer"].agg(["mean", "std"]).sort_index()
                ax.errorbar(
                    stats.index.to_numpy(dtype=float) + dodge,
                    stats["mean"],
                    yerr=stats["std"].fillna(0.0),
                    color=colours[chunk],
                    linestyle=LINESTYLES[j % len(LINESTYLES)],
                    marker=MARKERS[j % len(MARKERS)],
                    capsize=3,
                    label=f"{variant_label[v]}, {chunk * FRAME_MS} ms chunks",
                )
                ax.scatter(
                    line["apc_shift"].to_numpy(dtype=float) + dodge,
                    line["wer"],
                    color=colours[chunk],
                    s=12,
                    alpha=0.45,
                    linewidths=0,
                    zorder=3,
                )
            base = sel[
                (sel["method"] == config.baseline) & (sel["chunk_size"] == chunk) & (sel["test_set"] == test_set)
            ]
            if not base.empty:
                ax.axhline(
                    base["wer"].mean(),
                    color=colours[chunk],
                    linestyle=":",
                    linewidth=1.5,
                    label=f"{config.baseline} (no KD), {chunk * FRAME_MS} ms chunks",
                )
        shifts = sorted(int(s) for s in shifted["apc_shift"].dropna().unique())
        ax.xaxis.set_major_locator(FixedLocator(shifts))
        if len(shifts) == 1:
            ax.set_xlim(shifts[0] - 1, shifts[0] + 1)
        ax.set_xlabel(f"APC shift k (encoder frames of {FRAME_MS} ms)")
        ax.set_ylabel("WER (%)")
        ax.set_title(f"test set: {test_set}")
        ax.grid(True, alpha=0.3)
    _figure_legend(fig, axes)
    _footnote(
        fig,
        "Lines: mean over seeds; bars: ±1 std over seeds; dots: single seeds; dotted: baseline. "
        "Lines are offset slightly sideways for legibility.",
    )
    return fig


def _figure_legend(fig, axes, **options) -> None:
    """One legend for the whole figure, each label once, in the order the panels first show it."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", **options)


def loss_histories(runs: pd.DataFrame) -> Dict[str, Tuple[pd.Series, List[Dict[str, float]]]]:
    """``{record: (its first run row, per-epoch losses)}`` for every record with a history."""
    out = {}
    for record, part in runs.groupby("record", sort=True):
        row = part.iloc[0]
        history = load_loss_history(Path(record), row["train_summary"])
        if history:
            out[record] = (row, history)
        else:
            log.warning(
                "no training history for %s (no train_summary.json and no epoch lines in log/train.log)", record
            )
    return out


def plot_loss_curves(runs: pd.DataFrame, config: ResultsConfig) -> Figure:
    """Training loss and ASR-only validation loss per epoch of the teacher and every student run.

    The validation panel shows ``dev_asr_loss``, the ASR loss without the KD term, so KD
    students and the baseline are on one scale (teacher, ``none`` and older histories
    without it fall back to their dev loss, which is the same thing there).
    """
    if config.plots.methods is not None:
        runs = runs[runs["method"].isin(config.plots.methods)]
    histories = loss_histories(runs)
    title = "Training loss and ASR validation loss"
    if not histories:
        return _placeholder(
            title, "No training history (train_summary.json or log/train.log) was found for these runs."
        )
    rows = [row for row, _ in histories.values()]
    frame = pd.DataFrame(rows)
    frame["series"] = [
        "teacher (full context)"
        if r["method"] == TEACHER_METHOD
        else f"{r['model']}, {int(r['chunk_size']) * FRAME_MS} ms chunks"
        for _, r in frame.iterrows()
    ]
    sort_keys: Dict[str, Tuple] = {}
    for _, r in frame.iterrows():
        system = system_sort_key(*(None if pd.isna(r[f]) else r[f] for f in SYSTEM_FIELDS))
        sort_keys.setdefault(r["series"], (system, -1 if pd.isna(r["chunk_size"]) else int(r["chunk_size"])))
    series_order = sorted(sort_keys, key=sort_keys.get)
    colours = dict(zip([s for s in series_order if not s.startswith("teacher")], _colours(len(series_order))))
    colours["teacher (full context)"] = TEACHER_COLOUR
    fig, (ax_train, ax_dev) = _panels(2, title, width=5.0)
    seen = set()
    for record, (_row, history) in histories.items():
        series = frame.loc[frame["record"] == record, "series"].iloc[0]
        epochs = [h["epoch"] for h in history]
        label = None if series in seen else series
        seen.add(series)
        for ax, key in ((ax_train, "train_loss"), (ax_dev, "dev_asr_loss")):
            values = [h[key] for h in history]
            ax.plot(
                epochs,
                values,
                color=colours[series],
                marker="o",
                markersize=3,
                linewidth=1.3,
                alpha=0.9,
                label=label if ax is ax_train else None,
            )
    for ax, title_of, ylabel in (
        (ax_train, "Training loss (each run's objective)", "Loss per frame (nats)"),
        (ax_dev, "ASR loss on the validation (dev) set", "ASR loss per frame (nats)"),
    ):
        ax.set_title(title_of)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    handles, labels = ax_train.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: series_order.index(labels[i]))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="outside right upper",
        fontsize="small",
        title="run (seeds share a colour)",
    )
    _footnote(
        fig,
        "Training: each run's own objective per frame, for KD students the ASR loss plus the weighted KD term. "
        "Validation: the ASR loss alone, comparable between KD students and the baseline.",
    )
    return fig


def plot_wer_vs_delay(runs: pd.DataFrame, config: ResultsConfig) -> Figure:
    """The accuracy-latency trade-off: WER against mean emission delay, one point per system and chunk size."""
    sel, test_sets, decoding = _select(runs, config.plots, config)
    timed = sel[sel["delay_mean_ms"].notna()]
    title = f"WER vs mean emission delay ({decoding})"
    if timed.empty:
        return _placeholder(
            title, "No run in these records has emission delays (streamkd emission-delay), so there is nothing to plot."
        )
    systems = _systems(timed[timed["method"] != TEACHER_METHOD]) if (timed["method"] != TEACHER_METHOD).any() else []
    colours = dict(zip(systems, _colours(len(systems))))
    chunks = sorted(int(c) for c in timed["chunk_size"].dropna().unique())
    markers = {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(chunks)}
    fig, axes = _panels(len(test_sets), title, width=6.4)
    for ax, test_set in zip(axes, test_sets):
        part = timed[timed["test_set"] == test_set]
        means = part.groupby(["model", "chunk_size"], dropna=False)[["wer", "delay_mean_ms"]].mean().reset_index()
        for _, r in means.iterrows():
            if pd.isna(r["chunk_size"]):  # the teacher: offline, its own times
                ax.scatter(
                    r["delay_mean_ms"],
                    r["wer"],
                    color=TEACHER_COLOUR,
                    marker="*",
                    s=110,
                    zorder=4,
                    label="teacher (full context, offline)",
                )
                continue
            chunk = int(r["chunk_size"])
            ax.scatter(
                r["delay_mean_ms"],
                r["wer"],
                color=colours[r["model"]],
                marker=markers[chunk],
                s=45,
                zorder=3,
                label=f"{r['model']}, {chunk * FRAME_MS} ms chunks",
            )
        ax.set_xlabel("Mean emission delay (ms)")
        ax.set_ylabel("WER (%)")
        ax.set_title(f"test set: {test_set}")
        ax.grid(True, alpha=0.3)
    _figure_legend(fig, axes, title="system, chunk size")
    _footnote(
        fig,
        "Delay: when chunk-by-chunk decoding emits each correctly recognised token minus its time\n"
        "in the teacher's forced alignment; mean over tokens, then over seeds. Lower left is better.",
    )
    return fig


def build_plots(runs: pd.DataFrame, out_dir: Path, config: Optional[ResultsConfig] = None) -> Dict[str, List[Path]]:
    """Write every figure of :data:`PLOTS` as PNG and PDF to ``out_dir``."""
    config = config or ResultsConfig()
    makers = {
        "wer_vs_chunk": plot_wer_vs_chunk,
        "wer_vs_apc_shift": plot_wer_vs_shift,
        "loss_curves": plot_loss_curves,
        "wer_vs_delay": plot_wer_vs_delay,
    }
    written = {}
    for name in PLOTS:
        fig = makers[name](runs, config)
        written[name] = save_figure(fig, Path(out_dir) / name, dpi=config.plots.dpi)
    log.info("wrote %s to %s", ", ".join(f"{n}.{{png,pdf}}" for n in PLOTS), out_dir)
    return written


__all__ = [
    "PLOTS",
    "build_plots",
    "plot_files",
    "plot_loss_curves",
    "plot_wer_vs_chunk",
    "plot_wer_vs_delay",
    "plot_wer_vs_shift",
    "save_figure",
]
