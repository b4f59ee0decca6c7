"""Hand-made run folders (record.json, errors.jsonl, train_summary.json) for the results tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

DECODING = "ctc-1best"
WORDS_PER_UTT = 10
TEACHER_SHA256 = "7e" * 32  # the teacher of every run unless a test names another


def utterance_errors(total_errors: int, num_utts: int = 10, first_utt: int = 0) -> List[int]:
    """``total_errors`` spread over ``num_utts`` utterances of 10 words, deterministically."""
    base, extra = divmod(total_errors, num_utts)
    return [base + (1 if (i + first_utt) % num_utts < extra else 0) for i in range(num_utts)]


def write_run(
    exp: Path,
    run: str,
    *,
    method: str = "none",
    chunk: Optional[int] = 4,
    seed: int = 1,
    wer: Optional[Dict[str, object]] = None,
    errors: Optional[Dict[str, Sequence[int]]] = None,
    kd_layers: Optional[str] = None,
    apc_shift: Optional[int] = None,
    kd_loss: Optional[str] = None,
    kd_weight: Optional[float] = None,
    history: Optional[List[Dict[str, float]]] = None,
    num_params: int = 1_500_000,
    decoding: str = DECODING,
    write_train_summary: bool = True,
    **extra,
) -> Path:
    """A run folder under ``exp``; returns its record path.

    ``errors`` gives per-utterance error counts per test set (10 reference words each); the
    WER in the record is computed from them unless ``wer`` overrides it.
    """
    run_dir = Path(exp) / run
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher = method == "teacher"
    wer_table: Dict[str, Dict[str, object]] = {}
    errors_table: Dict[str, Dict[str, str]] = {}
    for test_set, counts in (errors or {}).items():
        rel = f"decode/{test_set}-{decoding}/errors.jsonl"
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for i, n in enumerate(counts):
                f.write(
                    json.dumps(
                        {
                            "utt_id": f"utt{i:03d}",
                            "ref": "w " * WORDS_PER_UTT,
                            "hyp": "",
                            "ins": 0,
                            "dels": 0,
                            "subs": int(n),
                            "ref_words": WORDS_PER_UTT,
                            "errors": int(n),
                            "alignment": "",
                        }
                    )
                    + "\n"
                )
        errors_table.setdefault(test_set, {})[decoding] = rel
        wer_table.setdefault(test_set, {})[decoding] = round(100.0 * sum(counts) / (WORDS_PER_UTT * len(counts)), 4)
    for test_set, value in (wer or {}).items():
        wer_table.setdefault(test_set, {})[decoding] = value
    record = {
        "run": run,
        "role": "teacher" if teacher else "student",
        "method": method,
        "chunk_size": None if teacher else chunk,
        "left_chunks": None if teacher else -1,
        "seed": seed,
        "config_hash": f"hash-{run}",
        "num_params": num_params,
        "train_seconds": 60.0,
        "train_hours_of_audio": 0.1,
        "wer": wer_table,
        "errors": errors_table,
        "versions": {"python": "3.9"},
    }
    for key, value in (
        ("kd_layers", kd_layers),
        ("apc_shift", apc_shift),
        ("kd_loss", kd_loss),
        ("kd_weight", kd_weight),
    ):
        if value is not None:
            record[key] = value
    if method != "none":
        record["teacher_sha256"] = TEACHER_SHA256
    record.update(extra)
    if write_train_summary:
        history = history or [
            {"epoch": e, "train_loss": 2.0 / e + 0.1 * seed, "dev_loss": 2.2 / e + 0.1 * seed} for e in (1, 2, 3)
        ]
        (run_dir / "train_summary.json").write_text(json.dumps({"role": record["role"], "history": history}))
        record["train_summary"] = "train_summary.json"
    path = run_dir / "record.json"
    path.write_text(json.dumps(record, indent=2))
    return path
