"""The run record: one small JSON per decoded run, the unit the tables are built from.

A record names other files of its run (the per-utterance errors that significance tests
need, the training summary that loss curves are drawn from) by paths relative to the
record's own folder, so an experiment folder can be moved or copied as a whole. An absolute
path is kept as it is. :func:`resolve_record_path` turns either back into a usable path.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from streamkd.provenance import PROVENANCE_FIELDS, scored_set_digests
from streamkd.results.kd_settings import kd_settings, left_chunks_of
from streamkd.results.wer import WerSummary, per_utterance_rows, score
from streamkd.utils import atomic_path, write_json

REQUIRED_FIELDS = ("run", "role", "method", "chunk_size", "seed", "config_hash", "num_params", "train_seconds", "wer")


def read_hyps(path: Path) -> List[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hypothesis file not found: {path}")
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
                rows.append({"id": str(row["id"]), "ref": str(row["ref"]), "hyp": str(row["hyp"])})
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{line_no}: not a hypothesis record ({e})") from e
    if not rows:
        raise ValueError(f"{path}: no hypotheses")
    return rows


def score_hyps(hyps_path: Path, summary_path: Path, errors_path: Path) -> WerSummary:
    """Score a hypothesis file; write the totals (JSON) and per-utterance errors (JSON lines)."""
    summary = score((r["id"], r["ref"], r["hyp"]) for r in read_hyps(hyps_path))
    write_json(summary_path, summary.to_dict())
    with atomic_path(errors_path) as tmp:
        with open(tmp, "w") as f:
            for row in per_utterance_rows(summary):
                f.write(json.dumps(row) + "\n")
    return summary


def software_versions() -> Dict[str, Optional[str]]:
    import lhotse
    import sentencepiece
    import torch

    import streamkd

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "k2": _k2_version(),
        "lhotse": lhotse.__version__,
        "sentencepiece": sentencepiece.__version__,
        "streamkd": streamkd.__version__,
    }


def _k2_version() -> Optional[str]:
    """None in an environment without k2 (CTC heads, greedy decoding)."""
    from streamkd.k2_support import k2_available

    if not k2_available():
        return None
    import k2.version

    return k2.version.__version__


def relative_to_record(path: Union[str, Path], record_dir: Union[str, Path]) -> str:
    """How a record stores a path: relative to the record's folder (POSIX separators)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(record_dir))
    return Path(rel).as_posix()


def resolve_record_path(record_path: Union[str, Path], stored: str) -> Path:
    """The file a record's stored path names (relative paths start at the record's folder)."""
    stored_path = Path(stored)
    return stored_path if stored_path.is_absolute() else Path(record_path).parent / stored_path


WerKey = Union[str, Tuple[str, str]]  # a test set, or (test set, decoding method)


def _split_key(key: WerKey, decoding_method: Optional[str]) -> Tuple[str, str]:
    if isinstance(key, tuple):
        return key
    if decoding_method is None:
        raise ValueError(f"results for test set {key!r} name no decoding method")
    return key, decoding_method


def _decode_info(path: Path) -> Dict[str, Any]:
    """The per-decode facts a record keeps from a ``decode.json``."""
    try:
        stats = json.loads(Path(path).read_text())
        return {
            "rtf": stats["rtf"],
            "latency_ms": stats["latency_ms"],
            "streaming": bool(stats["streaming"]),
            "chunk_size": stats.get("chunk_size"),  # the chunk the decode ran at (None: full context)
        }
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read decoding statistics {path}: {e}") from e


DELAY_FIELDS = (
    "mean_ms",
    "median_ms",
    "p90_ms",
    "first_token_mean_ms",
    "first_token_median_ms",
    "num_matched",
    "num_reference",
    "share_matched",
    "reference",
    "mode",
)
EMISSIONS_FILE = "emissions.jsonl"  # beside each delay.json: what the delays are computed from


def _delay_info(path: Path) -> Dict[str, Any]:
    """The emission-delay facts a record keeps from a ``delay.json`` (streamkd emission-delay)."""
    try:
        summary = json.loads(Path(path).read_text())
        return {key: summary[key] for key in DELAY_FIELDS}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the emission-delay summary {path}: {e}") from e


def _excluded_count(report_path: Path) -> int:
    """Utterances of a test set that the data check left out (see streamkd/data/check.py)."""
    try:
        return int(json.loads(Path(report_path).read_text())["num_excluded"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"cannot read the data-check report {report_path}: {e}") from e


def teacher_digest(train: Mapping[str, Any]) -> Optional[str]:
    """The teacher a run's model came from, by model digest: the teacher's is its own.

    Summaries written before the model digest name the teacher by its file's digest.
    """
    if train.get("role") == "teacher":
        return train.get("teacher_sha256") or train.get("checkpoint_sha256")
    return train.get("teacher_sha256")


def provenance(train: Mapping[str, Any], test_cuts: Mapping[str, Path]) -> Dict[str, Any]:
    """The training summary's provenance (None where an older summary has none) and the test sets'."""
    kept = train.get("provenance") or {}
    fields: Dict[str, Any] = {key: kept.get(key) for key in PROVENANCE_FIELDS}
    fields["source_commit"] = fields["source_commit"] or train.get("source_commit")
    return {**fields, **scored_set_digests(test_cuts)}


def build_record(
    run: str,
    train_summary_path: Path,
    wer_paths: Mapping[WerKey, Path],
    decoding_method: Optional[str] = None,
    errors_paths: Optional[Mapping[WerKey, Path]] = None,
    record_dir: Optional[Path] = None,
    decode_stats: Optional[Mapping[WerKey, Path]] = None,
    delay_stats: Optional[Mapping[WerKey, Path]] = None,
    data_checks: Optional[Mapping[str, Path]] = None,
    decoded_model: str = "final",
    test_cuts: Optional[Mapping[str, Path]] = None,
) -> dict:
    """Combine the training summary and the WER of every test set and decoding method into one record.

    Keys of ``wer_paths``, ``errors_paths`` and ``decode_stats`` are ``(test_set, method)``
    pairs, or test sets alone when ``decoding_method`` names the method. ``errors_paths``
    point at the per-utterance ``errors.jsonl`` written by :func:`score_hyps`; with
    ``record_dir`` (the folder the record will be written to) the record stores them, and the
    training summary's path, relative to that folder. ``decode_stats`` point at the
    ``decode.json`` of each decode, whose RTF, algorithmic latency and streaming flag go to
    ``record["decoding"][test_set][method]``. ``delay_stats`` point at the ``delay.json`` of
    each emission-delay measurement (mean/median/p90 ms), kept in ``record["delay"]``.
    ``data_checks`` point at each test set's
    data-check report; the record keeps how many utterances it excluded, beside the number
    each WER was computed over (``scored_utterances``).
    ``decoded_model`` says which weights were
    decoded: ``final`` (``model.pt``) or ``avg-last-N`` (averaged over the last N epochs).
    ``test_cuts`` point at each scored test set's cut manifest: ``record["provenance"]`` adds
    their digests (and their feature archives') to the training summary's provenance.
    """
    train = json.loads(Path(train_summary_path).read_text())
    wer: Dict[str, Dict[str, float]] = {}
    scored: Dict[str, Dict[str, int]] = {}
    for key, path in wer_paths.items():
        test_set, method = _split_key(key, decoding_method)
        summary = json.loads(Path(path).read_text())
        wer.setdefault(test_set, {})[method] = summary["wer"]
        if "num_utterances" in summary:
            scored.setdefault(test_set, {})[method] = int(summary["num_utterances"])
    base = Path(record_dir) if record_dir is not None else Path.cwd()
    errors: Dict[str, Dict[str, str]] = {}
    for key, path in (errors_paths or {}).items():
        test_set, method = _split_key(key, decoding_method)
        if method not in wer.get(test_set, {}):
            raise ValueError(f"per-utterance errors given for {test_set}/{method}, which has no WER")
        if not Path(path).is_file():
            raise FileNotFoundError(f"per-utterance errors not found: {path}")
        errors.setdefault(test_set, {})[method] = relative_to_record(path, base)
    decoding: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for key, path in (decode_stats or {}).items():
        test_set, method = _split_key(key, decoding_method)
        decoding.setdefault(test_set, {})[method] = _decode_info(path)
    delay: Dict[str, Dict[str, Dict[str, Any]]] = {}
    emissions: Dict[str, Dict[str, str]] = {}
    for key, path in (delay_stats or {}).items():
        test_set, method = _split_key(key, decoding_method)
        delay.setdefault(test_set, {})[method] = _delay_info(path)
        emitted = Path(path).parent / EMISSIONS_FILE
        if emitted.is_file():
            emissions.setdefault(test_set, {})[method] = relative_to_record(emitted, base)
    unscored = sorted(set(test_cuts or {}) - set(wer))
    if unscored:
        raise ValueError(f"test cuts given for test set(s) without a WER: {', '.join(unscored)}")
    return {
        "run": run,
        "role": train["role"],
        "method": train["method"],
        "head": train.get("head", "ctc"),
        "kd_layers": train.get("kd_layers"),
        "kd_teacher_layers": train.get("kd_teacher_layers"),
        "apc_shift": train.get("apc_shift"),
        "kd_loss": train.get("kd_loss"),
        "kd_weight": train.get("kd_weight"),
        "kd": train.get("kd"),
        # The rest of what tells KD runs apart, flat, for the tables (see results.kd_settings).
        **kd_settings(train["method"], train.get("kd")),
        # An integer, or "dynamic": decodes are then keyed METHOD@chunkN (streamkd.dynamic_chunk).
        "chunk_size": train.get("chunk_size"),
        "dynamic_chunk": train.get("dynamic_chunk"),
        "left_chunks": left_chunks_of(train["role"], train.get("left_chunks")),
        "seed": train["seed"],
        "config_hash": train["config_hash"],
        # num_params counts the saved (decoded) model; training may add KD branches on top.
        "num_params": train["num_params"],
        "num_params_deployed": train["num_params"],
        "num_params_training": train.get("num_params_training", train["num_params"]),
        "train_seconds": train["train_seconds"],
        "train_cpu_seconds": train.get("train_cpu_seconds"),
        "hardware": train.get("hardware"),
        # The code the run trained with (None for runs from before it was recorded).
        "source_commit": train.get("source_commit"),
        "checkpoint_sha256": train.get("checkpoint_sha256"),
        "model_sha256": train.get("model_sha256"),
        "teacher_sha256": teacher_digest(train),
        "provenance": provenance(train, test_cuts or {}),
        "decoded_model": decoded_model,
        "train_hours_of_audio": train.get("train_hours_of_audio"),
        "wer": wer,
        "errors": errors,
        "decoding": decoding,
        "delay": delay,
        # Per-utterance emission times: delays can be recomputed against another reference.
        "emissions": emissions,
        "scored_utterances": scored,
        "excluded_utterances": {t: _excluded_count(p) for t, p in (data_checks or {}).items()},
        "train_summary": relative_to_record(train_summary_path, base),
        "versions": software_versions(),
    }


def write_record(path: Path, record: dict) -> None:
    write_json(path, record)
