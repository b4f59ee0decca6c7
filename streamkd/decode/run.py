"""Decode a cut set with a saved model and write hypotheses (one JSON line per utterance)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import torch

from streamkd.data.loaders import eval_dataloader, load_cuts, unpack_batch
from streamkd.data.tokenizer import Tokenizer
from streamkd.decode.ctc import CtcOneBestDecoder, load_graph
from streamkd.model.checkpoint import load_model
from streamkd.utils import atomic_path, format_seconds

log = logging.getLogger(__name__)


@torch.no_grad()
def decode_cuts(
    checkpoint: Path,
    cuts_path: Path,
    bpe_model: Path,
    graph_path: Path,
    hyps_path: Path,
    chunk_size: Optional[int] = None,
    search_beam: float = 20.0,
    output_beam: float = 8.0,
    max_duration: float = 120.0,
) -> dict:
    """CTC 1-best decoding; a streaming model is decoded chunk-wise at ``chunk_size`` (default: its own)."""
    tokenizer = Tokenizer(bpe_model)
    model, meta = load_model(checkpoint, expected_vocab_size=tokenizer.vocab_size)
    model.eval()
    decoder = CtcOneBestDecoder(load_graph(graph_path), search_beam=search_beam, output_beam=output_beam)
    cuts = load_cuts(cuts_path)
    total_audio = sum(c.duration for c in cuts)
    rows, audio_done, start = [], 0.0, time.time()
    for raw in eval_dataloader(cuts, max_duration):
        batch = unpack_batch(raw)
        log_probs, lengths, _ = model(batch.feats, batch.feat_lens, chunk_size=chunk_size)
        hyps = tokenizer.decode(decoder(log_probs, lengths))
        for cut_id, ref, hyp in zip(batch.cut_ids, batch.texts, hyps):
            rows.append({"id": cut_id, "ref": ref, "hyp": hyp})
        audio_done += float(batch.feat_lens.sum()) / 100
        elapsed = time.time() - start
        log.info(
            "decoded %d utterances, %.0f/%.0f s of audio, RTF %.3f, ETA %s",
            len(rows), audio_done, total_audio, elapsed / audio_done,
            format_seconds(elapsed / audio_done * (total_audio - audio_done)),
        )
    if not rows:
        raise ValueError(f"{cuts_path}: no utterances to decode")
    with atomic_path(hyps_path) as tmp:
        with open(tmp, "w") as f:
            for row in sorted(rows, key=lambda r: r["id"]):
                f.write(json.dumps(row) + "\n")
    elapsed = time.time() - start
    return {"num_utterances": len(rows), "decode_seconds": round(elapsed, 2), "rtf": round(elapsed / total_audio, 4)}
