"""Sentencepiece BPE tokens; id 0 is reserved for the CTC blank."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable, List

import sentencepiece as spm

from streamkd.utils import atomic_path

log = logging.getLogger(__name__)

BLANK = "<blk>"


def train_bpe(texts: Iterable[str], model_path: Path, vocab_size: int, model_type: str = "bpe") -> None:
    """Train a sentencepiece model on transcripts and write it to ``model_path`` atomically.

    The trainer reads the transcripts from memory and writes the model to memory: given a
    file, sentencepiece stores its path (a fresh temporary name each time) in the model, and
    the same transcripts would then give a model with a different digest on every run.
    """
    model_path = Path(model_path)
    lines = [t for t in texts if t.strip()]
    if not lines:
        raise ValueError("no transcripts to train the BPE model on")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        # The blank takes id 0 so that CTC and k2's topologies can use their defaults.
        user_defined_symbols=[BLANK],
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        input_sentence_size=10_000_000,
        minloglevel=2,
    )
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(model.getvalue())
    log.info("trained a %d-token %s model -> %s", vocab_size, model_type, model_path)


class Tokenizer:
    """Thin wrapper over a sentencepiece model with the conventions the models rely on."""

    blank_id = 0

    def __init__(self, model_path: Path):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"BPE model not found: {model_path}")
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        if self.sp.id_to_piece(0) != BLANK:
            raise ValueError(f"{model_path}: token 0 is {self.sp.id_to_piece(0)!r}, expected the blank {BLANK!r}")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: List[str]) -> List[List[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, token_ids: List[List[int]]) -> List[str]:
        return self.sp.decode(token_ids)
