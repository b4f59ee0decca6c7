"""Benchmark: sherpa-onnx against `streamkd transcribe --onnx --stream` on the same student and audio.

Exports the student twice (streamkd's own folder and `--format sherpa-onnx`), pads every WAV by
the sherpa-onnx tail rule (streamkd.deploy.sherpa.padded_length, so both see the same windows)
and decodes each file with both, one thread, CTC greedy search, feeding 40 ms of audio at a
time as a live stream would. Prints and writes (--out, JSON and Markdown):

- agreement: files whose hypotheses are identical;
- RTF: compute seconds over audio seconds (features included for sherpa-onnx, which computes
  them as audio arrives; streamkd's Transcriber computes a file's features first and counts
  only the chunk path, so its RTF excludes them: stated beside the table);
- per-chunk latency: the time of each call that produced a chunk's result (sherpa-onnx's
  decode_stream; streamkd's chunk-to-result latency on an audio clock), mean, median, p90, worst.

    python benchmarks/sherpa_speed.py --checkpoint exp/none-chunk4-seed1/model.pt \\
        --bpe-model data/lang/bpe.model --audio data/corpus/wav/test --out results/benchmarks/sherpa_speed.json

Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamkd.cpu import cpu_model  # noqa: E402
from streamkd.decode.methods import parse_method  # noqa: E402
from streamkd.deploy.audio import SAMPLE_RATE, load_audio  # noqa: E402
from streamkd.deploy.export import export_model_dir  # noqa: E402
from streamkd.deploy.sherpa import export_sherpa_onnx, padded_length  # noqa: E402
from streamkd.deploy.transcribe import ModelPaths, Transcriber  # noqa: E402
from streamkd.utils import write_json, write_text  # noqa: E402

PIECE_SAMPLES = 640  # 40 ms


def summary(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "worst": round(ordered[-1], 3),
    }


def sherpa_decode(folder: Path, wavs: List[Path], hlg: bool = False) -> Dict[str, object]:
    import sherpa_onnx

    recognizer = sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(
        tokens=str(folder / "tokens.txt"),
        model=str(folder / "model.onnx"),
        num_threads=1,
        ctc_graph=str(folder / "HLG.fst") if hlg else "",
    )
    hyps, chunk_ms, compute, audio = {}, [], 0.0, 0.0
    for path in wavs:
        samples, _ = sf.read(path, dtype="float32")
        audio += len(samples) / SAMPLE_RATE
        stream = recognizer.create_stream()
        for start in range(0, len(samples), PIECE_SAMPLES):
            began = time.perf_counter()
            stream.accept_waveform(SAMPLE_RATE, samples[start : start + PIECE_SAMPLES])
            if start + PIECE_SAMPLES >= len(samples):
                stream.input_finished()
            compute += time.perf_counter() - began
            while recognizer.is_ready(stream):
                began = time.perf_counter()
                recognizer.decode_stream(stream)
                spent = time.perf_counter() - began
                compute += spent
                chunk_ms.append(spent * 1000)
        hyps[path.stem] = recognizer.get_result(stream).strip()
    return {"hyps": hyps, "rtf": compute / audio, "chunk_ms": summary(chunk_ms), "chunks": len(chunk_ms)}


def streamkd_decode(model_dir: Path, wavs: List[Path], hlg: Path = None) -> Dict[str, object]:
    method = "ctc-hlg-streaming" if hlg else "ctc-greedy-streaming"
    paths = ModelPaths.resolve(parse_method(method), model_dir, None, None, hlg)
    transcriber = Transcriber(paths, method, onnx=True, stream=True, threads=1, piece_ms=40.0)
    hyps, chunk_ms, compute, audio = {}, [], 0.0, 0.0
    for path in wavs:
        result = transcriber.transcribe(path)
        hyps[path.stem] = result.text.strip()
        chunk_ms += result.chunk_latencies_ms
        compute += result.compute_seconds
        audio += result.audio_seconds
    return {"hyps": hyps, "rtf": compute / audio, "chunk_ms": summary(chunk_ms), "chunks": len(chunk_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a streaming student with a CTC head")
    parser.add_argument("--bpe-model", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True, help="a folder of 16 kHz WAV files")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="default: the model's own (needed for a dynamic one)"
    )
    parser.add_argument("--left-chunks", type=int, default=None, help="default: the model's own")
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument("--hlg", type=Path, default=None, help="HLG.pt: also compare HLG decoding")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="sherpa-speed-"))
    sherpa_dir, own_dir, padded = work / "sherpa", work / "streamkd", work / "audio"
    shape = {"chunk_size": args.chunk_size, "left_chunks": args.left_chunks}
    export_sherpa_onnx(args.checkpoint, args.bpe_model, sherpa_dir, hlg=args.hlg, **shape)
    export_model_dir(args.checkpoint, args.bpe_model, own_dir, torchscript=False, **shape)
    chunk = json.loads((sherpa_dir / "sherpa-onnx.json").read_text())["chunk_size"]
    padded.mkdir()
    wavs = []
    for path in sorted(args.audio.glob("*.wav"))[: args.limit]:
        samples = load_audio(path)
        samples = np.concatenate([samples, np.zeros(padded_length(len(samples), chunk) - len(samples), np.float32)])
        sf.write(padded / path.name, samples, SAMPLE_RATE, subtype="FLOAT")
        wavs.append(padded / path.name)

    ours, theirs = streamkd_decode(own_dir, wavs), sherpa_decode(sherpa_dir, wavs)
    same = sum(ours["hyps"][k] == theirs["hyps"][k] for k in ours["hyps"])
    same_hlg = None
    if args.hlg is not None:
        ours_hlg, theirs_hlg = streamkd_decode(own_dir, wavs, args.hlg), sherpa_decode(sherpa_dir, wavs, hlg=True)
        same_hlg = sum(ours_hlg["hyps"][k] == theirs_hlg["hyps"][k] for k in ours_hlg["hyps"])
    report = {
        "machine": cpu_model(),
        "threads": 1,
        "checkpoint": str(args.checkpoint),
        "files": len(wavs),
        "chunk_size": chunk,
        "left_chunks": json.loads((sherpa_dir / "sherpa-onnx.json").read_text())["left_chunks"],
        "identical_hypotheses": same,
        "identical_hypotheses_hlg": same_hlg,
        "sherpa_onnx": {k: v for k, v in theirs.items() if k != "hyps"},
        "streamkd_onnx_stream": {k: v for k, v in ours.items() if k != "hyps"},
    }
    rows = [
        "| runtime | RTF | chunks | ms per chunk: mean | median | p90 | worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, key in (
        ("sherpa-onnx 2.0.1", "sherpa_onnx"),
        ("streamkd transcribe --onnx --stream", "streamkd_onnx_stream"),
    ):
        r = report[key]
        c = r["chunk_ms"]
        rows.append(
            f"| {name} | {r['rtf']:.4f} | {r['chunks']} | {c['mean']} | {c['median']} | {c['p90']} | {c['worst']} |"
        )
    text = "\n".join(
        [
            f"{len(wavs)} files, chunk {chunk}, left chunks {report['left_chunks']}, 1 thread, {report['machine']}: "
            f"{same} of {len(wavs)} hypotheses identical (CTC greedy)"
            + (f", {same_hlg} of {len(wavs)} with HLG (ctc-hlg-streaming)." if same_hlg is not None else "."),
            "",
            *rows,
            "",
            "sherpa-onnx's RTF includes its features (computed as audio arrives); streamkd's counts the chunk path "
            "only (features computed per file first). streamkd's chunk latency is chunk-to-result time on an audio "
            "clock; sherpa-onnx's is the time of each decode_stream call.",
            "",
        ]
    )
    print(text)
    if args.out is not None:
        write_json(args.out, report)
        write_text(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
