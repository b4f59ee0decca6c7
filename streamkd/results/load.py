"""Read run records into one pandas table, refusing (and naming) every record that is broken.

The result has one row per (run, test set, decoding method). A *system* is what a table row
shows: the KD method with the settings that distinguish one distilled student from another
(:data:`SYSTEM_FIELDS`); seeds are repetitions of a system and are averaged over, and the
chunk size is a table column. A dynamic-chunk student (one checkpoint decoded at several chunk
sizes, its decodes named ``METHOD@chunkN``) is one system with a row per chunk size it was
decoded at (``chunk_training`` is ``dynamic``). Fields that a record lacks (records written before KD
existed, the teacher, the baseline) count as null.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from streamkd.decode.word_delay import TEACHER_REFERENCE, ReferenceWords
from streamkd.dynamic_chunk import DYNAMIC, decode_key, split_decode_key
from streamkd.results.config import TEACHER_METHOD, normalise_layers
from streamkd.results.delays import recompute_delays
from streamkd.results.kd_settings import SETTING_FIELDS, describe_setting, kd_settings, left_chunks_of
from streamkd.results.record import REQUIRED_FIELDS, resolve_record_path
from streamkd.results.teachers import check_one_teacher

log = logging.getLogger(__name__)

RECORD_NAME = "record.json"
ROLES = ("teacher", "student")
# What distinguishes one system from another (besides the chunk size, which is a column).
SYSTEM_FIELDS = (
    "method",
    "kd_layers",
    "kd_teacher_layers",
    "apc_shift",
    "kd_loss",
    "kd_weight",
    "left_chunks",
    *SETTING_FIELDS,
    "chunk_training",  # "dynamic" for a dynamic-chunk student, else null
)
# Shown in a row label only when they differ between systems of the same method.
INTEGER_FIELDS = ("left_chunks", "kd_token_delay", "aux_ff_dim", "aux_num_heads", "aux_conv_kernel")
LABELLED_WHEN_VARYING = ("kd_teacher_layers", "kd_loss", "kd_weight", "left_chunks", *SETTING_FIELDS)
METHOD_ORDER = ("teacher", "none", "token", "layer", "aux")
FRAME_MS = 40  # one encoder frame after 4x subsampling of 10 ms features
# Emission delay (ms) of a row, and which decode it was measured on (see _delay_of).
DELAY_COLUMNS = (
    "delay_mean_ms",
    "delay_median_ms",
    "delay_p90_ms",
    "delay_first_token_ms",
    "delay_share_matched",
    "delay_reference",
    "delay_mode",
    "delay_decoding",
)
STREAMING_SUFFIX = "-streaming"

RUN_COLUMNS = [
    "model",
    "run",
    "record",
    "role",
    *SYSTEM_FIELDS,
    "chunk_size",
    "seed",
    "test_set",
    "decoding",
    "wer",
    "errors_path",
    "train_summary",
    "num_params",
    "num_params_training",
    "train_seconds",
    "config_hash",
    "num_scored",
    "num_excluded",
    "decoded_model",
    *DELAY_COLUMNS,
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
        if record["chunk_size"] == DYNAMIC:
            problems.extend(_dynamic_problems(record.get("wer")))
        elif not (_is_int(record["chunk_size"]) and record["chunk_size"] >= 1):
            problems.append(
                f"a streaming student needs an integer chunk_size >= 1 or {DYNAMIC!r}, got {record['chunk_size']!r}"
            )
    if "seed" in record and not _is_int(record["seed"]):
        problems.append(f"seed is {record['seed']!r}, expected an integer")
    if record.get("apc_shift") is not None and not _is_int(record["apc_shift"]):
        problems.append(f"apc_shift is {record['apc_shift']!r}, expected an integer or null")
    for name in ("kd_layers", "kd_teacher_layers"):
        try:
            normalise_layers(record.get(name))
        except (TypeError, ValueError):
            problems.append(f'{name} is {record[name]!r}, expected a layer list such as "3,6" or null')
    for name in INTEGER_FIELDS:
        if record.get(name) is not None and not _is_int(record[name]):
            problems.append(f"{name} is {record[name]!r}, expected an integer or null")
    if record.get("kd_temperature") is not None and not _is_number(record["kd_temperature"]):
        problems.append(f"kd_temperature is {record['kd_temperature']!r}, expected a number or null")
    for name in ("kd_teacher_input", "aux_type", "aux_attention", "aux_positional"):
        if record.get(name) is not None and not isinstance(record[name], str):
            problems.append(f"{name} is {record[name]!r}, expected a name or null")
    if record.get("kd") is not None and not (
        isinstance(record["kd"], dict) and isinstance(record["kd"].get("aux") or {}, dict)
    ):
        problems.append(f"kd is {record['kd']!r}, expected the run's KD options")
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
        isinstance(errors, dict)
        and all(isinstance(v, dict) and all(isinstance(p, str) for p in v.values()) for v in errors.values())
    ):
        problems.append("errors must map test sets to {decoding_method: path}")
    problems.extend(_delay_problems(record.get("delay")))
    if record.get("train_summary") is not None and not isinstance(record["train_summary"], str):
        problems.append("train_summary must be a path")
    return problems


def _dynamic_problems(wer: Any) -> List[str]:
    """Every decode of a dynamic-chunk student must say its chunk size (``METHOD@chunkN``)."""
    if not isinstance(wer, dict):
        return []
    problems = []
    for test_set, by_method in wer.items():
        for key in by_method if isinstance(by_method, dict) else ():
            try:
                chunk = split_decode_key(key)[1]
            except ValueError as e:
                problems.append(f"WER for {test_set}/{key}: {e}")
                continue
            if chunk is None:
                problems.append(
                    f"WER for {test_set}/{key} of a dynamic-chunk student names no chunk size (expected {key}@chunkN)"
                )
    return problems


def _delay_problems(delay: Any) -> List[str]:
    if delay is None:
        return []
    if not isinstance(delay, dict) or not all(isinstance(v, dict) for v in delay.values()):
        return ["delay must map test sets to {decoding_method: {mean_ms, median_ms, p90_ms, ...}}"]
    problems = []
    for test_set, by_method in delay.items():
        for method, stats in by_method.items():
            for key in ("mean_ms", "median_ms", "p90_ms"):
                value = stats.get(key) if isinstance(stats, dict) else None
                if not isinstance(stats, dict) or key not in stats or not (value is None or _is_number(value)):
                    problems.append(f"delay for {test_set}/{method}: {key} is {value!r}, expected a number or null")
    return problems


def _delay_of(record: dict, test_set: str, decoding: str) -> Dict[str, Any]:
    """The emission delay of a (test set, decoding) row.

    A student's whole-utterance ("simulated") decode has no timing of its own; it gives the
    same hypotheses as its chunk-by-chunk twin, whose delay it shows.
    """
    by_method = (record.get("delay") or {}).get(test_set) or {}
    source = decoding
    method, chunk = split_decode_key(decoding)
    if source not in by_method and record["role"] == "student" and not method.endswith(STREAMING_SUFFIX):
        source = decode_key(method + STREAMING_SUFFIX, chunk)
    stats = by_method.get(source)
    if stats is None:
        return {c: None for c in DELAY_COLUMNS}
    return {
        "delay_mean_ms": stats.get("mean_ms"),
        "delay_median_ms": stats.get("median_ms"),
        "delay_p90_ms": stats.get("p90_ms"),
        # Word-level measurements (records before them: token-level, teacher reference).
        "delay_first_token_ms": stats.get("first_token_mean_ms"),
        "delay_share_matched": stats.get("share_matched"),
        "delay_reference": stats.get("reference", TEACHER_REFERENCE + " (tokens)"),
        "delay_mode": stats.get("mode"),
        "delay_decoding": source,
    }


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
    # Records written before the flat KD settings existed: read them from the kd dict, or default.
    settings = kd_settings(method, record.get("kd"))
    settings.update({f: record[f] for f in SETTING_FIELDS if f in record})
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
        "left_chunks": left_chunks_of(record["role"], record.get("left_chunks")),
        **settings,
        "chunk_size": None if is_teacher else record["chunk_size"],
        "chunk_training": DYNAMIC if record.get("chunk_size") == DYNAMIC and not is_teacher else None,
        "seed": record["seed"],
        "train_summary": str(resolve_record_path(path, summary)) if summary else None,
        "num_params": record.get("num_params_deployed", record["num_params"]),
        "num_params_training": record.get("num_params_training", record["num_params"]),
        "train_seconds": record["train_seconds"],
        "config_hash": record["config_hash"],
        # Records from before checkpoint averaging decoded the final weights.
        "decoded_model": record.get("decoded_model") or "final",
    }
    scored = record.get("scored_utterances") or {}
    excluded = record.get("excluded_utterances") or {}
    rows = []
    for test_set, by_method in record["wer"].items():
        for decoding, wer in by_method.items():
            stored = (errors.get(test_set) or {}).get(decoding)
            # A dynamic-chunk student's decode says its chunk size: it is that row's column.
            method, chunk = split_decode_key(decoding)
            rows.append(
                {
                    **common,
                    **({"chunk_size": chunk} if chunk is not None else {}),
                    "test_set": test_set,
                    "decoding": method,
                    "wer": float(wer),
                    "errors_path": str(resolve_record_path(path, stored)) if stored else None,
                    **_delay_of(record, test_set, decoding),
                    # Older records say neither how many utterances were scored nor excluded.
                    "num_scored": (scored.get(test_set) or {}).get(decoding),
                    "num_excluded": excluded.get(test_set),
                }
            )
    return rows


@dataclass
class LoadedRecords:
    runs: pd.DataFrame
    skipped: List[Tuple[str, str]]  # (file, problem) of records left out with skip_invalid


def load_records(
    paths: Iterable[Path],
    skip_invalid: bool = False,
    allow_mixed_teachers: bool = False,
    delay_reference: Optional[Mapping[str, Optional[ReferenceWords]]] = None,
) -> LoadedRecords:
    """One row per (run, test set, decoding method), with a ``model`` (system label) column.

    Every problem with every record is collected first and raised together, each naming its
    file; with ``skip_invalid`` the broken records are left out instead, each with a warning,
    and listed in ``skipped``. Runs from different teachers, or KD students that name none,
    raise :class:`~streamkd.results.teachers.MixedTeachersError` unless
    ``allow_mixed_teachers``. With ``delay_reference`` every delay is recomputed from the
    records' emission records against those word times.
    """
    rows: List[Dict[str, Any]] = []
    usable: List[Tuple[Path, dict]] = []
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
        if delay_reference is not None:
            record = recompute_delays(path, record, delay_reference)
        rows.extend(_rows(path, record))
        usable.append((path, record))
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
    check_one_teacher([(p, r) for p, r in usable if str(p) not in bad_files], allow_mixed_teachers)
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
            what = f"{r['method']} seed {r['seed']}" + (
                f" chunk {r['chunk_size']}" if r["chunk_size"] is not None else ""
            )
            for f in files:
                others = ", ".join(o for o in files if o != f)
                problems.append((f, f"duplicates {others} ({what}, {r['test_set']}/{r['decoding']})"))
    return problems


def _layer_key(value: Optional[str]) -> Tuple:
    if value is None:
        return (0,)
    parts = value.split(",")
    return (1, tuple(int(p) if p.isdigit() else 10**9 for p in parts), value)


def _is_null(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


def _value_key(value: Any) -> Tuple:
    if _is_null(value):
        return (0,)
    return (1, str(value)) if isinstance(value, str) else (1, float(value))


def system_sort_key(method: str, kd_layers, kd_teacher_layers, apc_shift, *settings) -> Tuple:
    """Row order: method, layers, shift, then the other :data:`SYSTEM_FIELDS` in their order."""
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (
        order,
        method,
        _layer_key(kd_layers),
        _layer_key(kd_teacher_layers),
        _value_key(apc_shift),
        *(_value_key(v) for v in settings),
    )


def _fmt_number(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def varying_fields(runs: pd.DataFrame, fields: Sequence[str] = LABELLED_WHEN_VARYING) -> set:
    """Those of ``fields`` that take more than one value (null counts) in ``runs``."""
    return {f for f in fields if runs[f].astype(object).where(runs[f].notna(), None).nunique(dropna=False) > 1}


def describe_varying(r, varying: set, skip: Sequence[str] = ()) -> List[str]:
    """Label parts of the settings in ``varying`` that row ``r`` has, e.g. ``loss l1``, ``attention causal``."""
    parts = []
    for f in LABELLED_WHEN_VARYING:
        if f not in varying or f in skip or _is_null(r[f]):
            continue
        if f == "kd_teacher_layers":
            parts.append(f"teacher layers {r[f]}")
        elif f == "kd_loss":
            parts.append(f"loss {r[f]}")
        elif f == "kd_weight":
            parts.append(f"weight {_fmt_number(r[f])}")
        else:
            parts.append(describe_setting(f, r[f]))
    return parts


def assign_systems(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``model``: a readable, unique label per system, e.g. ``aux (layers 3,6; shift 2)``.

    Layers and shift appear whenever a run has them; every other field of
    :data:`SYSTEM_FIELDS` (the KD distance and weight, teacher layers, left context, branch
    and token-KD settings) only when it differs between runs of the same method, e.g.
    ``aux (layers 3,6; shift 2; attention causal)``.
    """
    runs = runs.copy()
    varying = {method: varying_fields(part) for method, part in runs.groupby("method")}

    def label(r) -> str:
        parts = []
        if r["kd_layers"] is not None:
            parts.append(f"layers {r['kd_layers']}")
        parts.extend(describe_varying(r, varying[r["method"]] & {"kd_teacher_layers"}))
        if not _is_null(r["apc_shift"]):
            parts.append(f"shift {int(r['apc_shift'])}")
        parts.extend(describe_varying(r, varying[r["method"]], skip=("kd_teacher_layers",)))
        if r["chunk_training"] == DYNAMIC:
            parts.append("dynamic chunk")
        if r["decoded_model"] != "final":
            parts.append(r["decoded_model"])  # e.g. avg-last-3: the weights averaged over 3 epochs
        return r["method"] + (f" ({'; '.join(parts)})" if parts else "")

    runs["model"] = runs.apply(label, axis=1) if len(runs) else pd.Series(dtype=str)
    for column in ("chunk_size", "apc_shift", *INTEGER_FIELDS):
        runs[column] = runs[column].astype("Int64")
    for column in ("delay_mean_ms", "delay_median_ms", "delay_p90_ms", "delay_first_token_ms", "delay_share_matched"):
        runs[column] = pd.to_numeric(runs[column]).astype(float)
    return runs[RUN_COLUMNS]


# -- training curves ---------------------------------------------------------------------------

_NUMBER = r"([-+0-9.eE]+|nan|inf)"
# "dev loss/frame X (ASR alone Y)": logs written before the ASR-only loss have no parenthesis.
_EPOCH_LINE = re.compile(
    rf"epoch (\d+) done: train loss/frame {_NUMBER}, dev loss/frame {_NUMBER}(?: \(ASR alone {_NUMBER}\))?"
)


def _epoch_losses(epoch: int, train_loss: float, dev_loss: float, dev_asr_loss: Optional[float]) -> Dict[str, float]:
    """One epoch's losses; ``dev_asr_loss`` is the dev loss itself where the run had no KD term
    (teacher, ``none``) or its history predates the ASR-only loss."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "dev_loss": dev_loss,
        "dev_asr_loss": dev_loss if dev_asr_loss is None else dev_asr_loss,
    }


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
                asr = float(m.group(4)) if m.group(4) is not None else None
                by_epoch[epoch] = _epoch_losses(epoch, float(m.group(2)), float(m.group(3)), asr)
    return [by_epoch[e] for e in sorted(by_epoch)]


def load_loss_history(record_path: Path, train_summary: Optional[str] = None) -> Optional[List[Dict[str, float]]]:
    """A run's per-epoch train loss, dev loss and ASR-only dev loss (``dev_asr_loss``).

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
                    _epoch_losses(
                        int(h["epoch"]),
                        float(h["train_loss"]),
                        float(h["dev_loss"]),
                        None if h.get("dev_asr_loss") is None else float(h["dev_asr_loss"]),
                    )
                    for h in history
                ]
    train_log = run_dir / "log" / "train.log"
    if train_log.is_file():
        return parse_train_log(train_log) or None
    return None
