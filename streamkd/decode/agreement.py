"""Check that true streaming reproduces the simulated (masked, whole-utterance) student."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from streamkd.data.loaders import eval_dataloader, load_cuts, unpack_batch
from streamkd.decode.run import decode_streaming
from streamkd.model.checkpoint import load_model
from streamkd.model.streaming import StreamingEncoder

log = logging.getLogger(__name__)


class _CollectFrames:
    """A stand-in search that keeps every streamed encoder frame."""

    def __init__(self, batch_size: int):
        self.frames = [[] for _ in range(batch_size)]

    def advance(self, encoder_out, lengths) -> None:
        for b, n in enumerate(lengths.tolist()):
            self.frames[b].append(encoder_out[b, :n])

    def finish(self):
        return [torch.cat(f) for f in self.frames]


class _Collector:
    def new_search(self, batch_size: int) -> _CollectFrames:
        return _CollectFrames(batch_size)


@torch.no_grad()
def streaming_agreement(
    checkpoint: Path,
    cuts_path: Path,
    chunk_size: Optional[int] = None,
    left_chunks: Optional[int] = None,
    max_duration: float = 120.0,
) -> Dict[str, Any]:
    """Largest absolute difference between streamed and masked encoder outputs over a cut set."""
    model, _ = load_model(checkpoint)
    encoder = model.eval().encoder
    stream = StreamingEncoder(encoder, chunk_size, left_chunks)
    worst, frames, utterances = 0.0, 0, 0
    seconds = {"masked": 0.0, "streaming": 0.0}
    for raw in eval_dataloader(load_cuts(cuts_path), max_duration):
        batch = unpack_batch(raw)
        start = time.time()
        masked = encoder(batch.feats, batch.feat_lens, chunk_size=stream.chunk_size, left_chunks=stream.left_chunks)
        seconds["masked"] += time.time() - start
        start = time.time()
        streamed = decode_streaming(stream, _Collector(), batch)
        seconds["streaming"] += time.time() - start
        for b, out in enumerate(streamed):
            n = int(masked.lengths[b])
            if out.size(0) != n:
                raise AssertionError(f"{batch.cut_ids[b]}: {out.size(0)} streamed frames, {n} masked")
            worst = max(worst, float((out - masked.out[b, :n]).abs().max()) if n else 0.0)
            frames += n
        utterances += len(streamed)
        log.info("%d utterances, max |streamed - masked| so far %.2e", utterances, worst)
    return {
        "utterances": utterances,
        "encoder_frames": frames,
        "max_abs_diff": worst,
        "chunk_size": stream.chunk_size,
        "left_chunks": stream.left_chunks,
        "encoder_seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def hypothesis_agreement(streamed: Path, simulated: Path) -> Dict[str, Any]:
    """How many utterances two hypothesis files (e.g. streaming and simulated) decode identically.

    Both files must cover the same utterances; a missing or extra id is an error naming it.
    """
    from streamkd.results.record import read_hyps

    a = {r["id"]: r["hyp"] for r in read_hyps(streamed)}
    b = {r["id"]: r["hyp"] for r in read_hyps(simulated)}
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(
            f"{streamed} and {simulated} cover different utterances "
            f"(only in the first: {only_a[:5]}; only in the second: {only_b[:5]})"
        )
    differing = sorted(i for i in a if a[i] != b[i])
    return {"utterances": len(a), "identical": len(a) - len(differing), "differing_ids": differing}
