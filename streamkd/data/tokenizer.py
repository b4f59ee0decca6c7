"""Sentencepiece BPE tokens; id 0 is reserved for the CTC blank."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List

import sentencepiece as spm

log = logging.getLogger(__name__)

BLANK = "<blk>"


def train_bpe(texts: Iterable[str], model_path: Path, vocab_size: int, model_type: str = "bpe") -> None:
    """Train a sentencepiece model on transcripts and write it to ``model_path`` atomically."""
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        text_file = Path(tmp) / "transcripts.txt"
        lines = [t for t in texts if t.strip()]
        if not lines:
            raise ValueError("no transcripts to train the BPE model on")
        text_file.write_text("\n".join(lines) + "\n")
        prefix = Path(tmp) / "bpe"
        spm.SentencePieceTrainer.train(
            input=str(text_file),
            model_prefix=str(prefix),
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
        shutil.move(str(prefix) + ".model", model_path)
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
