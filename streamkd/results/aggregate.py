"""Turn run records into WER tables (CSV and Markdown) with pandas."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, List

import pandas as pd

from streamkd.results.record import REQUIRED_FIELDS
from streamkd.utils import write_text

TEACHER = "teacher"


def _check_record(path: Path, record: dict) -> None:
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"{path}: run record lacks field(s): {', '.join(missing)}")
    for test_set, by_method in record["wer"].items():
        for method, value in by_method.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{path}: WER for {test_set}/{method} is not a finite number: {value!r}")


def load_records(paths: Iterable[Path]) -> pd.DataFrame:
    """One row per (run, test set, decoding method)."""
    rows: List[dict] = []
    for path in map(Path, paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read run record {path}: {e}") from e
        _check_record(path, record)
        for test_set, by_method in record["wer"].items():
            for decoding, wer in by_method.items():
                rows.append(
                    {
                        "model": TEACHER if record["role"] == TEACHER else record["method"],
                        "kd_layers": record.get("kd_layers"),
                        "apc_shift": record.get("apc_shift"),
                        "chunk_size": record["chunk_size"],
                        "seed": record["seed"],
                        "test_set": test_set,
                        "decoding": decoding,
                        "wer": float(wer),
                        "num_params": record["num_params"],
                        "train_seconds": record["train_seconds"],
                        "run": record["run"],
                        "record": str(path),
                    }
                )
    if not rows:
        raise ValueError("no run records to aggregate")
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of WER over seeds for every method/layers/shift, chunk size and test set."""
    keys = ["model", "kd_layers", "apc_shift", "chunk_size", "test_set", "decoding"]
    # Placeholders keep runs without layers or shift in their own group (restored below).
    grouped = df.fillna({"chunk_size": -1, "apc_shift": -1, "kd_layers": ""}).groupby(keys, dropna=False)
    out = grouped.agg(
        wer_mean=("wer", "mean"),
        wer_std=("wer", "std"),
        num_seeds=("seed", "nunique"),
        num_params=("num_params", "first"),
        train_seconds=("train_seconds", "mean"),
    ).reset_index()
    for column in ("chunk_size", "apc_shift"):
        out[column] = out[column].astype(int).replace(-1, pd.NA)
    out["kd_layers"] = out["kd_layers"].replace("", pd.NA)
    return out


def _row_label(row: pd.Series) -> str:
    """e.g. ``aux L3,6 k2``: the method plus the layer set and APC shift it was run with."""
    label = str(row["model"])
    if not pd.isna(row["kd_layers"]):
        label += f" L{row['kd_layers']}"
    if not pd.isna(row["apc_shift"]):
        label += f" k{int(row['apc_shift'])}"
    return label


def _cell(mean: float, std: float) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def markdown_table(summary: pd.DataFrame) -> str:
    """Rows: models; columns: test set x chunk size. The teacher is repeated in every chunk column."""
    chunk_sizes = sorted(int(c) for c in summary["chunk_size"].dropna().unique())
    if not chunk_sizes:
        chunk_sizes = []
    rows = []
    labelled = summary.assign(label=summary.apply(_row_label, axis=1))
    for model, part in labelled.groupby("label", sort=False):
        row = {"model": model}
        for _, r in part.iterrows():
            columns = chunk_sizes if pd.isna(r["chunk_size"]) else [int(r["chunk_size"])]
            for chunk in columns or [None]:
                name = f"{r['test_set']} {r['decoding']}" + (f" @ {chunk * 40} ms" if chunk else "")
                row[name] = _cell(r["wer_mean"], r["wer_std"])
        row["params (M)"] = f"{part['num_params'].iloc[0] / 1e6:.2f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    table["order"] = (table["model"] != TEACHER).astype(int)
    table = table.sort_values(["order", "model"]).drop(columns="order")
    return "WER (%), mean ± std over seeds\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"


def aggregate(record_paths: Iterable[Path], out_dir: Path) -> pd.DataFrame:
    df = load_records(record_paths)
    summary = summarise(df)
    out_dir = Path(out_dir)
    write_text(out_dir / "wer.csv", summary.to_csv(index=False))
    write_text(out_dir / "wer.md", markdown_table(summary))
    return summary
