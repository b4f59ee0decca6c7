"""Build and train the teacher or a streaming student from plain config dicts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from streamkd.config import ConfigError, config_hash
from streamkd.data.loaders import load_cuts
from streamkd.data.tokenizer import Tokenizer
from streamkd.model.asr import build_asr_model
from streamkd.model.subsampling import SUBSAMPLING_FACTOR, INPUT_FRAME_SHIFT_MS
from streamkd.training.config import OptimisationConfig
from streamkd.training.objectives import CtcObjective
from streamkd.training.trainer import Trainer, seed_everything

log = logging.getLogger(__name__)

CMVN_CUTS = 1000  # utterances sampled for the global feature statistics
ENCODER_FRAME_SECONDS = SUBSAMPLING_FACTOR * INPUT_FRAME_SHIFT_MS / 1000


def check_chunk_fits(chunk_size: int, cuts, source: Path) -> None:
    """A chunk longer than every utterance would silently train a full-context model."""
    longest = max(c.duration for c in cuts)
    if chunk_size * ENCODER_FRAME_SECONDS >= longest:
        raise ConfigError(
            f"chunk_size={chunk_size} ({chunk_size * ENCODER_FRAME_SECONDS:.2f} s) is not shorter than "
            f"the longest training utterance in {source} ({longest:.2f} s): the student would not stream"
        )


def train_asr(
    *,
    role: str,
    train_cuts: Path,
    dev_cuts: Path,
    bpe_model: Path,
    out_dir: Path,
    encoder: Mapping[str, Any],
    optimisation: Mapping[str, Any],
    seed: int,
    chunk_size: Optional[int] = None,
    left_chunks: int = -1,
    threads: int = 1,
) -> Dict[str, Any]:
    """Train a full-context teacher (``role='teacher'``) or a streaming baseline student."""
    if role not in ("teacher", "student"):
        raise ValueError(f"unknown role {role!r}: expected 'teacher' or 'student'")
    torch.set_num_threads(threads)
    opt = OptimisationConfig.from_dict(optimisation)
    tokenizer = Tokenizer(bpe_model)
    train = load_cuts(train_cuts, opt.max_utterance_seconds).to_eager()
    dev = load_cuts(dev_cuts, opt.max_utterance_seconds).to_eager()
    streaming = role == "student"
    if streaming:
        if chunk_size is None or chunk_size < 1:
            raise ConfigError(f"a streaming student needs chunk_size >= 1, got {chunk_size}")
        check_chunk_fits(chunk_size, train, train_cuts)
    encoder_config = {
        **encoder,
        "causal": streaming,
        "chunk_size": chunk_size if streaming else None,
        "left_chunks": left_chunks,
    }
    seed_everything(seed)
    model = build_asr_model(encoder_config, tokenizer.vocab_size)
    model.encoder.cmvn.fit(c.load_features() for c in train.subset(first=CMVN_CUTS))
    meta = {
        "role": role,
        "method": "teacher" if role == "teacher" else "none",
        "chunk_size": chunk_size if streaming else None,
        "left_chunks": left_chunks if streaming else None,
        "config_hash": config_hash(dict(encoder_config), opt.to_dict(), {"seed": seed, "vocab": tokenizer.vocab_size}),
    }
    log.info("training %s: %s, %d parameters", role, encoder_config, model.num_parameters())
    trainer = Trainer(CtcObjective(model), tokenizer, train, dev, out_dir, opt, seed, meta)
    return trainer.run()
