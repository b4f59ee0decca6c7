"""The run record: one small JSON per decoded run, the unit the tables are built from."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

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


WerKey = Union[str, Tuple[str, str]]  # test set, or (test set, decoding method)


def _split_key(key: WerKey, decoding_method: Optional[str]) -> Tuple[str, str]:
    if isinstance(key, tuple):
        return key
    if decoding_method is None:
        raise ValueError(f"WER of test set {key!r} names no decoding method")
    return key, decoding_method


def _decode_info(path: Path) -> Dict[str, Any]:
    """The per-decode facts a record keeps from a ``decode.json``."""
    try:
        stats = json.loads(Path(path).read_text())
        return {"rtf": stats["rtf"], "latency_ms": stats["latency_ms"], "streaming": bool(stats["streaming"])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read decoding statistics {path}: {e}") from e


def build_record(
    run: str,
    train_summary_path: Path,
    wer_paths: Mapping[WerKey, Path],
    decoding_method: Optional[str] = None,
    decode_stats: Optional[Mapping[WerKey, Path]] = None,
) -> dict:
    """Combine the training summary, the WER of every test set and decoding method, and decoding facts.

    ``wer_paths`` maps ``(test_set, method)`` (or a test set, with ``decoding_method``) to a
    ``wer.json``; ``decode_stats`` maps the same keys to ``decode.json`` files, whose RTF,
    latency and streaming flag go to ``record["decoding"][test_set][method]``.
    """
    train = json.loads(Path(train_summary_path).read_text())
    wer: Dict[str, Dict[str, float]] = {}
    for key, path in wer_paths.items():
        test_set, method = _split_key(key, decoding_method)
        wer.setdefault(test_set, {})[method] = json.loads(Path(path).read_text())["wer"]
    decoding: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for key, path in (decode_stats or {}).items():
        test_set, method = _split_key(key, decoding_method)
        decoding.setdefault(test_set, {})[method] = _decode_info(path)
    return {
        "run": run,
        "role": train["role"],
        "method": train["method"],
        "head": train.get("head", "ctc"),
        "chunk_size": train.get("chunk_size"),
        "left_chunks": train.get("left_chunks"),
        "seed": train["seed"],
        "config_hash": train["config_hash"],
        "num_params": train["num_params"],
        "train_seconds": train["train_seconds"],
        "train_hours_of_audio": train.get("train_hours_of_audio"),
        "wer": wer,
        "decoding": decoding,
        "versions": software_versions(),
    }


def write_record(path: Path, record: dict) -> None:
    write_json(path, record)
