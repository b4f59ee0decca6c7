"""Read run records into one pandas table, refusing (and naming) every record that is broken.

The result has one row per (run, test set, decoding method). A *system* is what a table row
shows: the KD method with the settings that distinguish one distilled student from another
(:data:`SYSTEM_FIELDS`); seeds are repetitions of a system and are averaged over, and the
chunk size is a table column. Fields that a record lacks (records written before KD
existed, the teacher, the baseline) count as null.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

from streamkd.results.config import TEACHER_METHOD, normalise_layers
from streamkd.results.record import REQUIRED_FIELDS, resolve_record_path

log = logging.getLogger(__name__)

RECORD_NAME = "record.json"
ROLES = ("teacher", "student")
# What distinguishes one system from another (besides the chunk size, which is a column).
SYSTEM_FIELDS = ("method", "kd_layers", "kd_teacher_layers", "apc_shift", "kd_loss", "kd_weight")
METHOD_ORDER = ("teacher", "none", "token", "layer", "aux")
FRAME_MS = 40  # one encoder frame after 4x subsampling of 10 ms features

RUN_COLUMNS = [
    "model", "run", "record", "role", *SYSTEM_FIELDS, "chunk_size", "left_chunks", "seed",
    "test_set", "decoding", "wer", "errors_path", "train_summary", "num_params",
    "num_params_training", "train_seconds", "config_hash", "decoded_model",
]


class RecordError(ValueError):
    """One or more run records cannot be used; the message names every file and problem."""

    def __init__(self, problems: Sequence[Tuple[str, str]]):
        self.problems = list(problems)
        lines = [f"{path}: {message}" for path, message in self.problems]
        super().__init__(f"{len(self.problems)} problem(s) with run records:\n  " + "\n  ".join(lines))


def find_records(exp_dir: Path) -> List[Path]:
    """Every ``record.json`` under ``exp_dir`` (at any depth), in a stable order."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"experiment folder not found: {exp_dir}")
    return sorted(exp_dir.rglob(RECORD_NAME))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def check_record(record: Any) -> List[str]:
    """Everything wrong with one record, as messages (empty when it is usable)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        problems.append(f"lacks field(s): {', '.join(missing)}")
    role = record.get("role")
    if "role" in record and role not in ROLES:
        problems.append(f"role is {role!r}, expected one of {', '.join(ROLES)}")
    if "method" in record and not (isinstance(record["method"], str) and record["method"]):
        problems.append(f"method is {record['method']!r}, expected a name")
    if role == "student" and "chunk_size" in record:
        if not (_is_int(record["chunk_size"]) and record["chunk_size"] >= 1):
            problems.append(f"a streaming student needs an integer chunk_size >= 1, got {record['chunk_size']!r}")
    if "seed" in record and not _is_int(record["seed"]):
        problems.append(f"seed is {record['seed']!r}, expected an integer")
    if record.get("apc_shift") is not None and not _is_int(record["apc_shift"]):
        problems.append(f"apc_shift is {record['apc_shift']!r}, expected an integer or null")
    for name in ("kd_layers", "kd_teacher_layers"):
        try:
            normalise_layers(record.get(name))
        except (TypeError, ValueError):
            problems.append(f"{name} is {record[name]!r}, expected a layer list such as \"3,6\" or null")
    if "num_params" in record and not _is_number(record["num_params"]):
        problems.append(f"num_params is {record['num_params']!r}, expected a number")
    wer = record.get("wer")
    if "wer" in record:
        if not isinstance(wer, dict) or not wer:
            problems.append(f"wer is {wer!r}, expected {{test_set: {{decoding_method: WER}}}}")
        else:
            for test_set, by_method in wer.items():
                if not isinstance(by_method, dict) or not by_method:
                    problems.append(f"WER for test set {test_set!r} is missing (got {by_method!r})")
                    continue
                for method, value in by_method.items():
                    if not _is_number(value):
                        problems.append(f"WER for {test_set}/{method} is not a finite number: {value!r}")
                    elif value < 0:
                        problems.append(f"WER for {test_set}/{method} is negative: {value!r}")
    errors = record.get("errors")
    if errors is not None and not (
        isinstance(errors, dict) and all(isinstance(v, dict) and all(isinstance(p, str) for p in v.values()) for v in errors.values())
    ):
        problems.append("errors must map test sets to {decoding_method: path}")
    if record.get("train_summary") is not None and not isinstance(record["train_summary"], str):
        problems.append("train_summary must be a path")
    return problems


def read_record(path: Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise RecordError([(str(path), f"cannot be read ({e.strerror or e})")]) from e
    except json.JSONDecodeError as e:
        raise RecordError([(str(path), f"is not valid JSON ({e})")]) from e


def _rows(path: Path, record: dict) -> List[Dict[str, Any]]:
    is_teacher = record["role"] == "teacher"
    method = TEACHER_METHOD if is_teacher else record["method"]
    errors = record.get("errors") or {}
    summary = record.get("train_summary")
    common = {
        "run": record["run"],
        "record": str(path),
        "role": record["role"],
        "method": method,
        "kd_layers": normalise_layers(record.get("kd_layers")),
        "kd_teacher_layers": normalise_layers(record.get("kd_teacher_layers")),
        "apc_shift": record.get("apc_shift"),
        "kd_loss": record.get("kd_loss"),
        "kd_weight": record.get("kd_weight"),
        "chunk_size": None if is_teacher else record["chunk_size"],
        "left_chunks": record.get("left_chunks"),
        "seed": record["seed"],
        "train_summary": str(resolve_record_path(path, summary)) if summary else None,
        "num_params": record.get("num_params_deployed", record["num_params"]),
        "num_params_training": record.get("num_params_training", record["num_params"]),
        "train_seconds": record["train_seconds"],
        "config_hash": record["config_hash"],
        # Records from before checkpoint averaging decoded the final weights.
        "decoded_model": record.get("decoded_model") or "final",
    }
    rows = []
    for test_set, by_method in record["wer"].items():
        for decoding, wer in by_method.items():
            stored = (errors.get(test_set) or {}).get(decoding)
            rows.append(
                {
                    **common,
                    "test_set": test_set,
                    "decoding": decoding,
                    "wer": float(wer),
                    "errors_path": str(resolve_record_path(path, stored)) if stored else None,
                }
            )
    return rows


@dataclass
class LoadedRecords:
    runs: pd.DataFrame
    skipped: List[Tuple[str, str]]  # (file, problem) of records left out with skip_invalid


def load_records(paths: Iterable[Path], skip_invalid: bool = False) -> LoadedRecords:
    """One row per (run, test set, decoding method), with a ``model`` (system label) column.

    Every problem with every record is collected first and raised together, each naming its
    file; with ``skip_invalid`` the broken records are left out instead, each with a warning,
    and listed in ``skipped``.
    """
    rows: List[Dict[str, Any]] = []
    problems: List[Tuple[str, str]] = []
    for path in map(Path, paths):
        try:
            record = read_record(path)
        except RecordError as e:
            problems.extend(e.problems)
            continue
        found = check_record(record)
        if found:
            problems.extend((str(path), p) for p in found)
            continue
        rows.extend(_rows(path, record))
    runs = pd.DataFrame(rows, columns=[c for c in RUN_COLUMNS if c != "model"])
    problems.extend(_duplicates(runs))
    if problems and not skip_invalid:
        raise RecordError(problems)
    bad_files = {p for p, _ in problems}
    for path, message in problems:
        log.warning("left out run record %s: %s", path, message)
    runs = runs[~runs["record"].isin(bad_files)].reset_index(drop=True)
    if runs.empty:
        raise RecordError(problems or [("<records>", "no run records to aggregate")])
    return LoadedRecords(runs=assign_systems(runs), skipped=problems)


def _key_frame(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    return runs[list(columns)].astype(object).where(runs[list(columns)].notna(), None).astype(str)


def _duplicates(runs: pd.DataFrame) -> List[Tuple[str, str]]:
    """Two records of the same system, chunk size and seed would be averaged as if distinct."""
    if runs.empty:
        return []
    keys = list(SYSTEM_FIELDS) + ["chunk_size", "seed", "test_set", "decoding"]
    key = _key_frame(runs, keys).agg("|".join, axis=1)
    problems = []
    for _, group in runs.groupby(key, sort=False):
        files = sorted(set(group["record"]))
        if len(files) > 1:
            r = group.iloc[0]
            what = f"{r['method']} seed {r['seed']}" + (f" chunk {r['chunk_size']}" if r["chunk_size"] is not None else "")
            for f in files:
                others = ", ".join(o for o in files if o != f)
                problems.append((f, f"duplicates {others} ({what}, {r['test_set']}/{r['decoding']})"))
    return problems


def _layer_key(value: Optional[str]) -> Tuple:
    if value is None:
        return (0,)
    parts = value.split(",")
    return (1, tuple(int(p) if p.isdigit() else 10**9 for p in parts), value)


def system_sort_key(method: str, kd_layers, kd_teacher_layers, apc_shift, kd_loss, kd_weight) -> Tuple:
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (
        order,
        method,
        _layer_key(kd_layers),
        _layer_key(kd_teacher_layers),
        (0,) if apc_shift is None or pd.isna(apc_shift) else (1, int(apc_shift)),
        (0,) if kd_loss is None else (1, str(kd_loss)),
        (0,) if kd_weight is None or pd.isna(kd_weight) else (1, float(kd_weight)),
    )


def _fmt_number(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def assign_systems(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``model``: a readable, unique label per system, e.g. ``aux (layers 3,6; shift 2)``.

    Layers and shift appear whenever a run has them; the KD distance, its weight and the
    teacher layers only when they differ between runs of the same method.
    """
    runs = runs.copy()
    varying: Dict[str, set] = {}
    for method, part in runs.groupby("method"):
        varying[method] = {
            f for f in ("kd_teacher_layers", "kd_loss", "kd_weight") if part[f].astype(object).where(part[f].notna(), None).nunique(dropna=False) > 1
        }

    def label(r) -> str:
        parts = []
        if r["kd_layers"] is not None:
            parts.append(f"layers {r['kd_layers']}")
        if "kd_teacher_layers" in varying[r["method"]] and r["kd_teacher_layers"] is not None:
            parts.append(f"teacher layers {r['kd_teacher_layers']}")
        if r["apc_shift"] is not None and not pd.isna(r["apc_shift"]):
            parts.append(f"shift {int(r['apc_shift'])}")
        if "kd_loss" in varying[r["method"]] and r["kd_loss"] is not None:
            parts.append(f"loss {r['kd_loss']}")
        if "kd_weight" in varying[r["method"]] and r["kd_weight"] is not None and not pd.isna(r["kd_weight"]):
            parts.append(f"weight {_fmt_number(r['kd_weight'])}")
        if r["decoded_model"] != "final":
            parts.append(r["decoded_model"])  # e.g. avg-last-3: the weights averaged over 3 epochs
        return r["method"] + (f" ({'; '.join(parts)})" if parts else "")

    runs["model"] = runs.apply(label, axis=1) if len(runs) else pd.Series(dtype=str)
    runs["chunk_size"] = runs["chunk_size"].astype("Int64")
    runs["apc_shift"] = runs["apc_shift"].astype("Int64")
    return runs[RUN_COLUMNS]


# -- training curves ---------------------------------------------------------------------------

_EPOCH_LINE = re.compile(r"epoch (\d+) done: train loss/frame ([-+0-9.eE]+|nan|inf), dev loss/frame ([-+0-9.eE]+|nan|inf)")


def parse_train_log(path: Path) -> List[Dict[str, float]]:
    """Per-epoch losses from a training log (the trainer's ``epoch N done: ...`` lines).

    A resumed run logs an epoch again; the last line for an epoch wins.
    """
    by_epoch: Dict[int, Dict[str, float]] = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = _EPOCH_LINE.search(line)
            if m:
                epoch = int(m.group(1))
                by_epoch[epoch] = {"epoch": epoch, "train_loss": float(m.group(2)), "dev_loss": float(m.group(3))}
    return [by_epoch[e] for e in sorted(by_epoch)]


def load_loss_history(record_path: Path, train_summary: Optional[str] = None) -> Optional[List[Dict[str, float]]]:
    """A run's per-epoch train and dev loss.

    Looked for, in order, in the training summary the record names, ``train_summary.json``
    beside the record, and ``log/train.log`` beside the record. None when there is none.
    """
    run_dir = Path(record_path).parent
    candidates = [Path(train_summary)] if train_summary else []
    candidates.append(run_dir / "train_summary.json")
    for path in candidates:
        if path.is_file():
            try:
                history = json.loads(path.read_text()).get("history")
            except (OSError, json.JSONDecodeError, AttributeError) as e:
                log.warning("cannot read the training summary %s: %s", path, e)
                continue
            if history:
                return [
                    {"epoch": int(h["epoch"]), "train_loss": float(h["train_loss"]), "dev_loss": float(h["dev_loss"])}
                    for h in history
                ]
    train_log = run_dir / "log" / "train.log"
    if train_log.is_file():
        return parse_train_log(train_log) or None
    return None
