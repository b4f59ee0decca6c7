"""Saving and loading decodable models: the config that rebuilds them plus their weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from streamkd.utils import atomic_path, load_tagged_payload

FORMAT = "streamkd-asr-model-v1"


def save_model(path: Path, model: torch.nn.Module, meta: Optional[Dict[str, Any]] = None) -> None:
    """Write everything needed to rebuild ``model`` for decoding, and nothing used only in training."""
    payload = {
        "format": FORMAT,
        "model_config": model.config,
        "state_dict": model.state_dict(),
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def model_digest(path: Path) -> str:
    """SHA-256 of the model a checkpoint holds: its config and weights, not the file's bytes.

    The file also holds the run's summary (timings, paths) and torch's archive name, so the
    same weights saved twice make two different files. A teacher is named by this digest:
    a retrain that reproduces it bit for bit (another session, another machine) is the
    same teacher.
    """
    payload = load_tagged_payload(
        Path(path), FORMAT, "model checkpoint", f"a streamkd model checkpoint (format {FORMAT!r} expected)"
    )
    return weights_digest(payload["model_config"], payload["state_dict"])


def weights_digest(model_config: Dict[str, Any], state_dict: Dict[str, torch.Tensor]) -> str:
    """:func:`model_digest` of a model in memory: what :func:`save_model` writes of it."""
    digest = hashlib.sha256(json.dumps(model_config, sort_keys=True, default=str).encode())
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_model(path: Path, expected_vocab_size: Optional[int] = None) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; errors name the file and what is wrong with it."""
    from streamkd.model.asr import AsrModel

    path = Path(path)
    payload = load_tagged_payload(
        path, FORMAT, "model checkpoint", f"a streamkd model checkpoint (format {FORMAT!r} expected)"
    )
    config = dict(payload["model_config"])
    vocab_size = config.get("vocab_size")
    if expected_vocab_size is not None and vocab_size != expected_vocab_size:
        raise ValueError(
            f"{path}: the model has vocab_size={vocab_size} but the BPE model has {expected_vocab_size} tokens"
        )
    model = AsrModel.from_config(config)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the model config (missing: {missing}, unexpected: {unexpected})"
        )
    return model, payload["meta"]
