"""Benchmark: the exported streaming encoder (onnxruntime, TorchScript) against PyTorch streaming.

Prints the exported files' sizes, then for each backend the real-time factor (compute time /
audio time) and the mean, median and worst time per chunk, all on one thread, feeding one
chunk's worth of fbank frames per call as a live stream would. The CTC head runs in every
backend (the ONNX and TorchScript encoders return CTC posteriors themselves).

Without --checkpoint the model is a randomly initialised student of config.yaml's student size
(speed does not depend on the weights). Not a test: numbers depend on the machine and its load.

    python benchmarks/streaming_export.py                       # default-size student, chunk 4
    python benchmarks/streaming_export.py --checkpoint exp/.../model.pt --bpe-model data/lang/bpe.model
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamkd.deploy.chunk_encoder import ChunkEncoder  # noqa: E402
from streamkd.deploy.export import export_model_dir  # noqa: E402
from streamkd.deploy.onnx_model import OnnxModel  # noqa: E402
from streamkd.model import StreamingEncoder, build_asr_model  # noqa: E402
from streamkd.model.checkpoint import load_model, save_model  # noqa: E402


def random_student(config: Path, chunk_size: int, left_chunks: int, vocab_size: int):
    cfg = yaml.safe_load(config.read_text())
    encoder = dict(cfg["model"]["student"], causal=True, chunk_size=chunk_size, left_chunks=left_chunks)
    torch.manual_seed(0)
    return build_asr_model(encoder, vocab_size, cfg["model"].get("head")).eval()


def tiny_bpe(directory: Path, vocab_size: int) -> Path:
    import random

    from streamkd.data.tokenizer import train_bpe

    rng = random.Random(0)  # random letter strings: enough distinct pieces for any small vocabulary
    words = ["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(2, 8))) for _ in range(3000)]
    path = directory / "bpe.model"
    train_bpe([" ".join(words[k : k + 12]) for k in range(0, len(words), 12)], path, vocab_size)
    return path


def time_chunks(
    step: Callable[[torch.Tensor, bool], int], utterances: List[torch.Tensor], piece: int
) -> Tuple[float, List[float]]:
    """Feed ``piece`` frames per call; returns total seconds and the time of each call that produced a chunk."""
    total, per_chunk = 0.0, []
    for feats in utterances:
        for start in range(0, feats.size(0), piece):
            began = time.perf_counter()
            produced = step(feats[start : start + piece], start + piece >= feats.size(0))
            spent = time.perf_counter() - began
            total += spent
            if produced:
                per_chunk.append(spent / produced)
        step(None, True)  # a new stream for the next utterance
    return total, per_chunk


def pytorch_step(model):
    stream = StreamingEncoder(model.encoder)
    state = [stream.init_state(1)]

    @torch.no_grad()
    def step(feats, ended):
        if feats is None:
            state[0] = stream.init_state(1)
            return 0
        out, _ = stream.accept(state[0], feats.unsqueeze(0), ended=ended)
        if out.size(1):
            model.ctc(out)
        return out.size(1) // stream.chunk_size

    return step


def onnx_step(model_dir: Path):
    onnx_model = OnnxModel(model_dir, threads=1)
    stream = [onnx_model.new_stream()]

    def step(feats, ended):
        if feats is None:
            stream[0] = onnx_model.new_stream()
            return 0
        return len(stream[0].accept(feats.numpy(), ended))

    return step


def torchscript_step(path: Path, chunk: ChunkEncoder):
    scripted = torch.jit.load(str(path))
    buffer = [torch.zeros(0, chunk.model.encoder.config.feat_dim)]
    states = [chunk.initial_states(1)]

    @torch.no_grad()
    def step(feats, ended):
        if feats is None:
            buffer[0], states[0] = buffer[0][:0], chunk.initial_states(1)
            return 0
        buffer[0] = torch.cat([buffer[0], feats])
        produced = 0
        while buffer[0].size(0) >= chunk.input_frames:
            result = scripted(buffer[0][None, : chunk.input_frames], torch.tensor([chunk.input_frames]), *states[0])
            states[0], buffer[0], produced = result[2:6], buffer[0][chunk.shift_frames :], produced + 1
        return produced  # the last partial chunk is left out: it is the same work

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--bpe-model", type=Path)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--left-chunks", type=int, default=-1)
    parser.add_argument("--vocab-size", type=int, default=100)
    parser.add_argument("--utterances", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0, help="Length of each utterance.")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint is None:
            bpe = tiny_bpe(tmp, args.vocab_size)
            checkpoint = tmp / "model.pt"
            save_model(checkpoint, random_student(args.config, args.chunk_size, args.left_chunks, args.vocab_size))
        else:
            checkpoint, bpe = args.checkpoint, args.bpe_model
        export_model_dir(checkpoint, bpe, tmp / "export", chunk_size=args.chunk_size, left_chunks=args.left_chunks)
        model = load_model(checkpoint)[0].eval()
        chunk = ChunkEncoder(model, args.chunk_size, args.left_chunks)
        params = sum(p.numel() for p in model.encoder.parameters()) + sum(p.numel() for p in model.ctc.parameters())
        print(
            f"model: encoder+CTC {params / 1e6:.2f} M parameters, chunk {chunk.chunk_size} "
            f"({model.encoder.algorithmic_latency_ms(chunk.chunk_size):.0f} ms algorithmic latency), "
            f"left chunks {chunk.left_chunks}, 1 thread"
        )
        for name in ("model.pt", "encoder.onnx", "encoder.torchscript.pt"):
            print(f"size {name:24s} {(tmp / 'export' / name).stat().st_size / 1e6:7.2f} MB")

        torch.manual_seed(1)
        frames = int(args.seconds * 100)
        utterances = [torch.randn(frames, model.encoder.config.feat_dim) * 3 - 8 for _ in range(args.utterances)]
        audio = args.utterances * args.seconds
        piece = 4 * chunk.chunk_size
        backends = {
            "pytorch streaming": pytorch_step(model),
            "torchscript": torchscript_step(tmp / "export" / "encoder.torchscript.pt", chunk),
            "onnxruntime": onnx_step(tmp / "export"),
        }
        rows = {}
        for name, step in backends.items():
            time_chunks(step, utterances[:1], piece)  # warm-up
            total, per_chunk = time_chunks(step, utterances, piece)
            rows[name] = (
                total / audio,
                statistics.mean(per_chunk) * 1000,
                statistics.median(per_chunk) * 1000,
                max(per_chunk) * 1000,
            )
        print(f"{'backend':20s} {'RTF':>7s} {'chunk mean ms':>14s} {'median ms':>10s} {'worst ms':>9s}")
        for name, (rtf, mean, median, worst) in rows.items():
            print(f"{name:20s} {rtf:7.4f} {mean:14.2f} {median:10.2f} {worst:9.2f}")
        base = rows["pytorch streaming"][0]
        for name in ("torchscript", "onnxruntime"):
            print(f"{name} speed-up over PyTorch streaming: {base / rows[name][0]:.2f}x")


if __name__ == "__main__":
    main()
