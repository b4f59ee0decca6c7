"""The run record: one small JSON per decoded run, the unit the tables are built from."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Dict, List, Mapping

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


def software_versions() -> Dict[str, str]:
    import k2.version
    import lhotse
    import sentencepiece
    import torch

    import streamkd

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "k2": k2.version.__version__,
        "lhotse": lhotse.__version__,
        "sentencepiece": sentencepiece.__version__,
        "streamkd": streamkd.__version__,
    }


def build_record(run: str, train_summary_path: Path, wer_paths: Mapping[str, Path], decoding_method: str) -> dict:
    """Combine the training summary and the WER of every test set into one record."""
    train = json.loads(Path(train_summary_path).read_text())
    wer: Dict[str, Dict[str, float]] = {}
    for test_set, path in wer_paths.items():
        wer.setdefault(test_set, {})[decoding_method] = json.loads(Path(path).read_text())["wer"]
    return {
        "run": run,
        "role": train["role"],
        "method": train["method"],
        "kd_layers": train.get("kd_layers"),
        "kd_teacher_layers": train.get("kd_teacher_layers"),
        "apc_shift": train.get("apc_shift"),
        "kd_loss": train.get("kd_loss"),
        "kd_weight": train.get("kd_weight"),
        "kd": train.get("kd"),
        "chunk_size": train.get("chunk_size"),
        "left_chunks": train.get("left_chunks"),
        "seed": train["seed"],
        "config_hash": train["config_hash"],
        # num_params counts the saved (decoded) model; training may add KD branches on top.
        "num_params": train["num_params"],
        "num_params_deployed": train["num_params"],
        "num_params_training": train.get("num_params_training", train["num_params"]),
        "train_seconds": train["train_seconds"],
        "train_hours_of_audio": train.get("train_hours_of_audio"),
        "wer": wer,
        "versions": software_versions(),
    }


def write_record(path: Path, record: dict) -> None:
    write_json(path, record)
