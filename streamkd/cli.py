"""Command-line interface: one thin command per pipeline stage, each calling a library function.

Every Snakemake rule calls one of these commands, so every step of the workflow can also be
run, debugged or scripted by hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Tuple

import click

from streamkd.data.corpora import CORPORA
from streamkd.utils import setup_logging

log = logging.getLogger("streamkd")

PathType = click.Path(path_type=Path)
ExistingPath = click.Path(exists=True, path_type=Path)
LIBRISPEECH_CORPORA = [name for name, spec in CORPORA.items() if spec.download_parts]


def _json_option(value: str, name: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON: {e}", param_hint=name) from e
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object", param_hint=name)
    return parsed


@click.group()
@click.option("--log-file", type=PathType, default=None, help="Also append log lines to this file.")
def main(log_file: Optional[Path]) -> None:
    """streamkd: distil full-context ASR encoders into streaming ones."""
    setup_logging(log_file)


@main.command("prepare-embedded")
@click.option("--corpus-config", required=True, help="JSON object: the config's corpus section.")
@click.option("--out-dir", required=True, type=PathType)
@click.option("--num-jobs", default=1, show_default=True)
def prepare_embedded(corpus_config: str, out_dir: Path, num_jobs: int) -> None:
    """Synthesise the embedded corpus and write its lhotse manifests."""
    from streamkd.data.corpus import CorpusConfig, prepare_embedded_corpus

    options = _json_option(corpus_config, "--corpus-config")
    options.pop("name", None)
    options.pop("num_jobs", None)
    prepare_embedded_corpus(CorpusConfig.from_dict(options), out_dir, num_jobs=num_jobs)


@main.command("compute-fbank")
@click.option("--recordings", required=True, type=ExistingPath)
@click.option("--supervisions", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=PathType, help="Output cut manifest (.jsonl.gz).")
@click.option("--storage-dir", required=True, type=PathType)
@click.option("--num-mel-bins", default=80, show_default=True)
@click.option("--num-jobs", default=1, show_default=True)
@click.option("--speed-perturb/--no-speed-perturb", default=False, show_default=True,
              help="Add copies of every cut at speed 0.9 and 1.1.")
@click.option("--on-the-fly/--precomputed", default=False, show_default=True,
              help="Write cuts without features; the loaders compute fbank from the audio.")
def compute_fbank(recordings, supervisions, cuts, storage_dir, num_mel_bins, num_jobs, speed_perturb, on_the_fly) -> None:
    """Compute log-mel filterbank features with lhotse and store them with lilcom."""
    from streamkd.data.features import compute_fbank as run

    run(recordings, supervisions, cuts, storage_dir, num_mel_bins=num_mel_bins, num_jobs=num_jobs,
        speed_perturb=speed_perturb, on_the_fly=on_the_fly)


@main.command("prepare-librispeech")
@click.option("--corpus-dir", required=True, type=ExistingPath,
              help="The folder that holds LibriSpeech/ (or LibriSpeech/ itself).")
@click.option("--corpus", "corpus_name", required=True,
              type=click.Choice(LIBRISPEECH_CORPORA))
@click.option("--out-dir", required=True, type=PathType)
@click.option("--num-jobs", default=1, show_default=True)
def prepare_librispeech(corpus_dir: Path, corpus_name: str, out_dir: Path, num_jobs: int) -> None:
    """Write lhotse manifests of a LibriSpeech corpus (lhotse's prepare_librispeech)."""
    from streamkd.data.librispeech import prepare_librispeech_corpus

    prepare_librispeech_corpus(corpus_dir, corpus_name, out_dir, num_jobs=num_jobs)


@main.command("download-librispeech")
@click.option("--target-dir", required=True, type=PathType, help="LibriSpeech/ is unpacked here.")
@click.option("--corpus", "corpus_name", required=True,
              type=click.Choice(LIBRISPEECH_CORPORA))
def download_librispeech(target_dir: Path, corpus_name: str) -> None:
    """Download and unpack the LibriSpeech parts a corpus needs (from openslr.org)."""
    from streamkd.data.librispeech import download_librispeech_corpus

    click.echo(download_librispeech_corpus(target_dir, corpus_name))


@main.command("train-bpe")
@click.option("--cuts", required=True, type=ExistingPath, help="Training cuts whose transcripts are used.")
@click.option("--model", "model_path", required=True, type=PathType)
@click.option("--vocab-size", required=True, type=int)
@click.option("--model-type", default="bpe", show_default=True, type=click.Choice(["bpe", "unigram"]))
def train_bpe(cuts: Path, model_path: Path, vocab_size: int, model_type: str) -> None:
    """Train the sentencepiece model on the training transcripts."""
    from lhotse import load_manifest_lazy

    from streamkd.data.tokenizer import train_bpe as run

    texts = [s.text for c in load_manifest_lazy(cuts) for s in c.supervisions]
    run(texts, model_path, vocab_size, model_type)


@main.command("compile-ctc-topo")
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out", required=True, type=PathType)
def compile_ctc_topo(bpe_model: Path, out: Path) -> None:
    """Build the k2 CTC topology over the BPE vocabulary."""
    from streamkd.data.tokenizer import Tokenizer
    from streamkd.decode.ctc import build_ctc_topo, save_graph

    vocab_size = Tokenizer(bpe_model).vocab_size
    save_graph(build_ctc_topo(vocab_size), out)
    log.info("wrote the CTC topology over %d tokens to %s", vocab_size, out)


@main.command("train")
@click.option("--role", required=True, type=click.Choice(["teacher", "student"]))
@click.option("--train-cuts", required=True, type=ExistingPath)
@click.option("--dev-cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out-dir", required=True, type=PathType)
@click.option("--encoder", "encoder_json", required=True, help="JSON object of encoder options.")
@click.option("--optimisation", "optimisation_json", required=True, help="JSON object of optimisation options.")
@click.option("--seed", required=True, type=int)
@click.option("--chunk-size", type=int, default=None, help="Student chunk size in 40 ms encoder frames.")
@click.option("--left-chunks", type=int, default=-1, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True,
              help="CPU threads of the job, shared by the processes torchrun starts on this node.")
def train(role, train_cuts, dev_cuts, bpe_model, out_dir, encoder_json, optimisation_json, seed, chunk_size, left_chunks, threads) -> None:
    """Train the teacher or a streaming student; resumes from the last checkpoint.

    Data-parallel training runs under torchrun, e.g. ``torchrun --standalone --nproc_per_node 4
    --no_python streamkd train ...`` (one process per GPU; gloo processes on the CPU). On
    SIGTERM or SIGUSR1 training writes a checkpoint and exits with status 128 + the signal.
    """
    from streamkd.training.distributed import threads_per_process
    from streamkd.training.run import train_asr
    from streamkd.training.trainer import TrainingInterrupted

    try:
        train_asr(
            role=role,
            train_cuts=train_cuts,
            dev_cuts=dev_cuts,
            bpe_model=bpe_model,
            out_dir=out_dir,
            encoder=_json_option(encoder_json, "--encoder"),
            optimisation=_json_option(optimisation_json, "--optimisation"),
            seed=seed,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
            threads=threads_per_process(threads),
        )
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        raise SystemExit(128 + stop.signum)


@main.command("decode")
@click.option("--checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--graph", required=True, type=ExistingPath)
@click.option("--hyps", required=True, type=PathType, help="Output: one JSON line per utterance.")
@click.option("--chunk-size", type=int, default=None, help="Override the streaming model's chunk size.")
@click.option("--search-beam", default=20.0, show_default=True)
@click.option("--output-beam", default=8.0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
def decode(checkpoint, cuts, bpe_model, graph, hyps, chunk_size, search_beam, output_beam, threads) -> None:
    """CTC 1-best decoding with k2 (streaming models decode chunk-wise)."""
    import torch

    from streamkd.decode.run import decode_cuts

    torch.set_num_threads(threads)
    stats = decode_cuts(checkpoint, cuts, bpe_model, graph, hyps, chunk_size, search_beam, output_beam)
    log.info("decoding finished: %s", stats)


@main.command("score")
@click.option("--hyps", required=True, type=ExistingPath)
@click.option("--summary", required=True, type=PathType, help="Output: WER totals (JSON).")
@click.option("--errors", required=True, type=PathType, help="Output: per-utterance errors (JSON lines).")
def score(hyps: Path, summary: Path, errors: Path) -> None:
    """WER with insertions, deletions and substitutions."""
    from streamkd.results.record import score_hyps

    result = score_hyps(hyps, summary, errors)
    log.info("%s: WER %.2f%% (%s)", hyps, result.wer, result.to_dict())


@main.command("record")
@click.option("--run", "run_name", required=True)
@click.option("--train-summary", required=True, type=ExistingPath)
@click.option("--wer", "wer_items", multiple=True, required=True, help="TEST_SET=PATH of a WER summary.")
@click.option("--decoding-method", required=True)
@click.option("--out", required=True, type=PathType)
def record(run_name: str, train_summary: Path, wer_items: Tuple[str, ...], decoding_method: str, out: Path) -> None:
    """Write the run record that the tables are built from."""
    from streamkd.results.record import build_record, write_record

    wer_paths = {}
    for item in wer_items:
        test_set, sep, path = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected TEST_SET=PATH, got {item!r}", param_hint="--wer")
        wer_paths[test_set] = Path(path)
    write_record(out, build_record(run_name, train_summary, wer_paths, decoding_method))


@main.command("aggregate")
@click.option("--out-dir", required=True, type=PathType)
@click.argument("records", nargs=-1, required=True, type=ExistingPath)
def aggregate(out_dir: Path, records: Tuple[Path, ...]) -> None:
    """Aggregate run records into results tables (CSV and Markdown)."""
    from streamkd.results.aggregate import aggregate as run

    run(records, out_dir)
    click.echo((out_dir / "wer.md").read_text())


if __name__ == "__main__":
    main()
