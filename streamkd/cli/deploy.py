"""Deployment commands: export a streaming student and transcribe audio files with it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import click

from streamkd.cli.common import ExistingPath, PathType, main
from streamkd.decode.methods import METHOD_NAMES

log = logging.getLogger("streamkd")


@main.command("export")
@click.option("--checkpoint", required=True, type=ExistingPath, help="A streaming student's model.pt.")
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out-dir", required=True, type=PathType, help="The model folder to write.")
@click.option(
    "--hlg",
    type=ExistingPath,
    default=None,
    help="HLG.pt to ship beside the model (ctc-hlg); with --format sherpa-onnx it is written as HLG.fst.",
)
@click.option("--chunk-size", type=int, default=None, help="Export with another chunk size than the model's.")
@click.option("--left-chunks", type=int, default=None, help="Export with another left context (-1 = all).")
@click.option("--onnx/--no-onnx", default=True, show_default=True)
@click.option("--torchscript/--no-torchscript", default=True, show_default=True)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["streamkd", "sherpa-onnx"]),
    default="streamkd",
    show_default=True,
    help="streamkd: the folder `streamkd transcribe` runs; sherpa-onnx: the files sherpa-onnx's "
    "OnlineRecognizer loads (needs a fixed --left-chunks).",
)
def export(checkpoint, bpe_model, out_dir, hlg, chunk_size, left_chunks, onnx, torchscript, export_format) -> None:
    """Write a model folder: model.pt, bpe.model, graphs, and the streaming encoder as ONNX and TorchScript.

    The encoder takes one chunk of fbank frames plus its states and returns the chunk's frames
    plus new states; chunk size, left context, lookahead, vocabulary and feature settings are
    embedded as metadata. `streamkd transcribe --model-dir OUT_DIR` decodes with the folder.
    With --format sherpa-onnx the folder holds tokens.txt and model.onnx (CTC head, sherpa-onnx's
    zipformer2-CTC contract) and/or encoder.onnx, decoder.onnx, joiner.onnx (transducer head,
    its ebranchformer contract).
    """
    if export_format == "sherpa-onnx":
        from streamkd.deploy.sherpa import export_sherpa_onnx

        sherpa = export_sherpa_onnx(
            checkpoint, bpe_model, out_dir, chunk_size=chunk_size, left_chunks=left_chunks, hlg=hlg
        )
        for name in sherpa["files"]:
            click.echo(f"{out_dir / name}\t{(out_dir / name).stat().st_size} bytes")
        return
    from streamkd.deploy.export import export_model_dir

    summary = export_model_dir(
        checkpoint,
        bpe_model,
        out_dir,
        hlg=hlg,
        chunk_size=chunk_size,
        left_chunks=left_chunks,
        onnx=onnx,
        torchscript=torchscript,
    )
    for name in summary["files"]:
        click.echo(f"{out_dir / name}\t{summary['bytes'][name]} bytes")


@main.command("transcribe")
@click.argument("inputs", nargs=-1, required=True, type=PathType)
@click.option(
    "--model-dir",
    type=ExistingPath,
    default=None,
    help="A folder written by `streamkd export` (model.pt, bpe.model, graphs, ONNX files).",
)
@click.option("--checkpoint", type=ExistingPath, default=None, help="model.pt (default: MODEL_DIR/model.pt).")
@click.option("--bpe-model", type=ExistingPath, default=None, help="Default: MODEL_DIR/bpe.model.")
@click.option("--graph", type=ExistingPath, default=None, help="Default: MODEL_DIR/ctc_topo.pt or MODEL_DIR/HLG.pt.")
@click.option(
    "--method",
    default=None,
    type=click.Choice(METHOD_NAMES),
    help="Decoding method (default: ctc-1best, or rnnt-greedy for a transducer-only model).",
)
@click.option("--onnx", is_flag=True, help="Run the exported encoder.onnx with onnxruntime instead of PyTorch.")
@click.option("--stream", is_flag=True, help="Feed the audio in real-time pieces, print partial results and latency.")
@click.option("--piece-ms", default=40.0, show_default=True, help="Audio per piece with --stream.")
@click.option("--channel", type=int, default=None, help="Use this channel (0-based) instead of the channel mean.")
@click.option("--chunk-size", type=int, default=None, help="Override the streaming model's chunk size (PyTorch).")
@click.option("--beam", default=4, show_default=True, help="Hypotheses kept by modified beam search.")
@click.option("--results", type=PathType, default=None, help="Also write one JSON line per file here.")
@click.option("--threads", type=int, default=1, show_default=True)
def transcribe(
    inputs,
    model_dir,
    checkpoint,
    bpe_model,
    graph,
    method,
    onnx,
    stream,
    piece_ms,
    channel,
    chunk_size,
    beam,
    results,
    threads,
) -> None:
    """Transcribe audio files or folders (WAV, FLAC, MP3, ...; any rate, resampled to 16 kHz).

    Prints one line per file, PATH<TAB>TEXT, on stdout. A file that cannot be read gets an
    error line on stderr naming it; the others are still transcribed and the exit status is 1.
    With --stream, partial results and each file's chunk latency go to stderr.
    """
    import torch

    from streamkd.decode.methods import parse_method
    from streamkd.decode.run import SearchOptions
    from streamkd.deploy.transcribe import ModelPaths, Transcriber, transcribe_files, write_results

    torch.set_num_threads(threads)
    method = method or _default_method(model_dir, checkpoint, onnx)
    paths = ModelPaths.resolve(parse_method(method), model_dir, checkpoint, bpe_model, graph)
    transcriber = Transcriber(
        paths,
        method,
        onnx=onnx,
        stream=stream,
        chunk_size=chunk_size,
        options=SearchOptions(beam=beam),
        threads=threads,
        piece_ms=piece_ms,
        channel=channel,
    )

    def show_partial(result, at: float, text: str) -> None:
        click.echo(f"{result.path} [{at:6.2f} s] {text}", err=True)

    def show(result) -> None:
        if result.error is not None:
            click.echo(f"error: {result.error}", err=True)
            return
        click.echo(f"{result.path}\t{result.text}")
        if result.chunk_latencies_ms:
            lat = result.chunk_latencies_ms
            click.echo(
                f"{result.path}: chunk-to-result latency mean {sum(lat) / len(lat):.1f} ms, worst "
                f"{max(lat):.1f} ms over {len(lat)} chunks (algorithmic latency "
                f"{transcriber.latency_ms:.0f} ms; pieces of {piece_ms:.0f} ms)",
                err=True,
            )

    done = transcribe_files(transcriber, inputs, on_result=show, on_partial=show_partial if stream else None)
    if results is not None:
        write_results(results, done)
    failed = [r for r in done if r.error is not None]
    if failed:
        click.echo(f"{len(failed)} of {len(done)} files could not be transcribed", err=True)
        raise SystemExit(1)


def _default_method(model_dir: Optional[Path], checkpoint: Optional[Path], onnx: bool) -> str:
    """ctc-1best when the model has a CTC head, else rnnt-greedy."""
    if model_dir is None and checkpoint is None:
        raise click.UsageError("give --model-dir, or --checkpoint and --bpe-model")
    if onnx and model_dir is not None:
        from streamkd.deploy.onnx_model import open_session, read_metadata

        head = read_metadata(open_session(model_dir / "encoder.onnx"))["head"]
    else:
        from streamkd.model.checkpoint import load_model

        head = load_model(checkpoint or model_dir / "model.pt")[0].head.type
    return "ctc-1best" if "ctc" in head else "rnnt-greedy"
