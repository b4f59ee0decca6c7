"""Decoding commands: graphs and the word LM, decoding, scoring, streaming checks and emission delays."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from streamkd.cli.common import ExistingPath, PathType, main, search_options
from streamkd.decode.methods import METHOD_NAMES
from streamkd.k2_support import require_k2
from streamkd.schema import config_default

log = logging.getLogger("streamkd")


@main.command("compile-ctc-topo")
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out", required=True, type=PathType)
def compile_ctc_topo(bpe_model: Path, out: Path) -> None:
    """Build the k2 CTC topology over the BPE vocabulary."""
    require_k2("the CTC topology (compile-ctc-topo)")
    from streamkd.data.tokenizer import Tokenizer
    from streamkd.decode.ctc import build_ctc_topo, save_graph

    vocab_size = Tokenizer(bpe_model).vocab_size
    save_graph(build_ctc_topo(vocab_size), out)
    log.info("wrote the CTC topology over %d tokens to %s", vocab_size, out)


@main.command("train-lm")
@click.option("--cuts", required=True, type=ExistingPath, help="Cuts whose transcripts the LM is trained on.")
@click.option("--order", default=config_default("decoding.lm.order"), show_default=True, type=click.IntRange(1, 6))
@click.option("--arpa", required=True, type=PathType, help="Output: the word n-gram LM in ARPA format.")
def train_lm(cuts: Path, order: int, arpa: Path) -> None:
    """Train a Kneser-Ney word n-gram LM on the transcripts."""
    from lhotse import load_manifest_lazy

    from streamkd.lang.ngram import train_ngram_lm

    train_ngram_lm((s.text for c in load_manifest_lazy(cuts) for s in c.supervisions), arpa, order)


@main.command("compile-hlg")
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--arpa", required=True, type=ExistingPath, help="Word n-gram LM (ARPA); its words make the lexicon.")
@click.option(
    "--order",
    default=config_default("decoding.lm.order"),
    show_default=True,
    type=click.IntRange(1, 6),
    help="Highest LM order to use.",
)
@click.option("--out", required=True, type=PathType)
def compile_hlg(bpe_model: Path, arpa: Path, order: int, out: Path) -> None:
    """Build the HLG graph (CTC topology, BPE lexicon, word LM) for ctc-hlg decoding."""
    require_k2("the HLG graph (compile-hlg)")
    from streamkd.lang.hlg import compile_hlg as run

    run(bpe_model, arpa, order).save(out)
    log.info("wrote %s", out)


@main.command("decode")
@click.option("--checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option(
    "--method",
    default=config_default("decoding.methods")[0],
    show_default=True,
    type=click.Choice(METHOD_NAMES),
    help="Decoding method; '-streaming' runs the encoder chunk by chunk with caches.",
)
@click.option("--graph", type=ExistingPath, default=None, help="ctc_topo.pt for ctc-1best, HLG.pt for ctc-hlg.")
@click.option("--hyps", required=True, type=PathType, help="Output: one JSON line per utterance.")
@click.option("--stats", type=PathType, default=None, help="Output: RTF, latency and settings (JSON).")
@click.option("--chunk-size", type=int, default=None, help="Override the streaming model's chunk size.")
@search_options
@click.option(
    "--max-duration",
    default=config_default("decoding.max_duration"),
    show_default=True,
    help="Seconds of audio per batch (of streams).",
)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def decode(
    checkpoint,
    cuts,
    bpe_model,
    method,
    graph,
    hyps,
    stats,
    chunk_size,
    search,
    max_duration,
    threads,
    device,
) -> None:
    """Decode with k2: CTC (topology or HLG) or transducer searches, whole-utterance or streaming."""
    import torch

    from streamkd.decode.run import SearchOptions, decode_cuts

    torch.set_num_threads(threads)
    options = SearchOptions(**search)
    result = decode_cuts(
        checkpoint,
        cuts,
        bpe_model,
        hyps,
        method=method,
        graph_path=graph,
        stats_path=stats,
        chunk_size=chunk_size,
        options=options,
        max_duration=max_duration,
        device=device,
    )
    log.info("decoding finished: %s", result)


@main.command("check-streaming")
@click.option("--checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath)
@click.option("--chunk-size", type=int, default=None)
@click.option("--left-chunks", type=int, default=None)
@click.option("--threads", type=int, default=1, show_default=True)
def check_streaming(checkpoint, cuts, chunk_size, left_chunks, threads) -> None:
    """Compare chunk-by-chunk (cached) encoder outputs with the masked whole-utterance forward."""
    import torch

    from streamkd.decode.agreement import streaming_agreement

    torch.set_num_threads(threads)
    click.echo(json.dumps(streaming_agreement(checkpoint, cuts, chunk_size, left_chunks), indent=2))


@main.command("compare-hyps")
@click.argument("first", type=ExistingPath)
@click.argument("second", type=ExistingPath)
def compare_hyps(first, second) -> None:
    """Count the utterances two hyps.jsonl files decode identically (streaming vs simulated)."""
    from streamkd.decode.agreement import hypothesis_agreement

    click.echo(json.dumps(hypothesis_agreement(first, second), indent=2))


@main.command("score")
@click.option("--hyps", required=True, type=ExistingPath)
@click.option("--summary", required=True, type=PathType, help="Output: WER totals (JSON).")
@click.option("--errors", required=True, type=PathType, help="Output: per-utterance errors (JSON lines).")
def score(hyps: Path, summary: Path, errors: Path) -> None:
    """WER with insertions, deletions and substitutions."""
    from streamkd.results.record import score_hyps

    result = score_hyps(hyps, summary, errors)
    log.info("%s: WER %.2f%% (%s)", hyps, result.wer, result.to_dict())


@main.command("align-reference")
@click.option("--checkpoint", required=True, type=ExistingPath, help="The full-context teacher.")
@click.option("--cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option(
    "--head",
    default="ctc",
    show_default=True,
    type=click.Choice(["ctc", "transducer"]),
    help="CTC: forced alignment over the CTC topology; transducer: the best RNN-T lattice path.",
)
@click.option("--out", required=True, type=PathType, help="Output: token and word times per utterance (JSON lines).")
@click.option("--max-duration", default=120.0, show_default=True, help="Seconds of audio per batch.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def align_reference(checkpoint, cuts, bpe_model, head, out, max_duration, threads, device) -> None:
    """Reference token and word times: the reference transcripts force-aligned with a full-context model."""
    import torch

    require_k2("the reference alignment (align-reference)")
    from streamkd.decode.align import align_cuts

    torch.set_num_threads(threads)
    log.info("reference alignment: %s", align_cuts(checkpoint, cuts, bpe_model, out, head, max_duration, device))


@main.command("compare-references")
@click.option("--cuts", required=True, type=ExistingPath, help="Cuts whose supervisions carry word alignments.")
@click.option("--teacher-alignment", required=True, type=ExistingPath, help="align-reference output for those cuts.")
@click.option("--out", type=PathType, default=None, help="Also write the summary here (JSON).")
def compare_references(cuts, teacher_alignment, out) -> None:
    """How far the teacher's forced-alignment word ends lie from the cuts' word alignments (ms)."""
    from lhotse import load_manifest

    from streamkd.decode.word_delay import reference_agreement, references_from_cuts, references_from_teacher
    from streamkd.utils import write_json

    words = references_from_cuts(load_manifest(cuts))
    if not any(words.values()):
        raise click.UsageError(f"{cuts}: no supervision carries a word alignment")
    summary = reference_agreement(words, references_from_teacher(teacher_alignment))
    summary.update(cuts=str(cuts), teacher_alignment=str(teacher_alignment))
    if out is not None:
        write_json(out, summary)
    click.echo(json.dumps(summary, indent=2))


@main.command("emission-delay")
@click.option("--checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option(
    "--teacher-alignment",
    type=ExistingPath,
    default=None,
    help="align-reference output: reference word times for cuts without word alignments.",
)
@click.option(
    "--method",
    default="ctc-1best-streaming",
    show_default=True,
    type=click.Choice(METHOD_NAMES),
    help="A token-level method: '-streaming' times chunk by chunk, others frame by frame (offline).",
)
@click.option("--graph", type=ExistingPath, default=None, help="ctc_topo.pt for ctc-1best.")
@click.option("--emissions", required=True, type=PathType, help="Output: per-utterance tokens, words, emission times.")
@click.option("--summary", required=True, type=PathType, help="Output: word-level delay summary (JSON).")
@click.option("--chunk-size", type=int, default=None, help="Override the streaming model's chunk size.")
@search_options
@click.option("--max-duration", default=120.0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def emission_delay(
    checkpoint,
    cuts,
    bpe_model,
    teacher_alignment,
    method,
    graph,
    emissions,
    summary,
    chunk_size,
    search,
    max_duration,
    threads,
    device,
) -> None:
    """When each hypothesis word is emitted, and its delay against the reference word times.

    Reference times are the cuts' word alignments (the synthesiser's, on the embedded corpus)
    and the teacher's forced alignment only where a cut has none."""
    import torch

    from streamkd.decode.emission import measure_emission_delay
    from streamkd.decode.run import SearchOptions

    torch.set_num_threads(threads)
    options = SearchOptions(**search)
    result = measure_emission_delay(
        checkpoint,
        cuts,
        bpe_model,
        emissions,
        summary,
        teacher_alignment=teacher_alignment,
        method=method,
        graph_path=graph,
        chunk_size=chunk_size,
        options=options,
        max_duration=max_duration,
        device=device,
    )
    log.info("emission delay: %s", result)
