"""Command-line interface: one thin command per pipeline stage, each calling a library function.

Every Snakemake rule calls one of these commands, so every step of the workflow can also be
run, debugged or scripted by hand.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import click

from streamkd.cli_support import DEBUG_ENV, ErrorReportingGroup, json_option
from streamkd.data.corpora import CORPORA
from streamkd.decode.methods import METHOD_NAMES
from streamkd.distill.config import METHODS
from streamkd.k2_support import require_k2
from streamkd.schema import config_default
from streamkd.utils import setup_logging

log = logging.getLogger("streamkd")

PathType = click.Path(path_type=Path)
ExistingPath = click.Path(exists=True, path_type=Path)
LIBRISPEECH_CORPORA = [name for name, spec in CORPORA.items() if spec.download_parts]


def _json_option(value: str, name: str) -> dict:
    return json_option(value, name)


@click.group(cls=ErrorReportingGroup)
@click.option("--log-file", type=PathType, default=None, help="Also append log lines to this file.")
@click.option("--debug", is_flag=True, help=f"Show the Python traceback of a failure (also: {DEBUG_ENV}=1).")
def main(log_file: Optional[Path], debug: bool) -> None:
    """streamkd: distil full-context ASR encoders into streaming ones."""
    setup_logging(log_file)


@main.command("prepare-embedded")
@click.option("--corpus-config", required=True, help="JSON object: the config's corpus section.")
@click.option("--out-dir", required=True, type=PathType)
@click.option("--num-jobs", default=config_default("corpus.num_jobs"), show_default=True)
def prepare_embedded(corpus_config: str, out_dir: Path, num_jobs: int) -> None:
    """Synthesise the embedded corpus and write its lhotse manifests."""
    from streamkd.data.embedded import CorpusConfig, prepare_embedded_corpus

    options = _json_option(corpus_config, "--corpus-config")
    options.pop("name", None)
    options.pop("num_jobs", None)
    prepare_embedded_corpus(CorpusConfig.from_dict(options), out_dir, num_jobs=num_jobs)


@main.command("compute-fbank")
@click.option("--recordings", required=True, type=ExistingPath)
@click.option("--supervisions", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=PathType, help="Output cut manifest (.jsonl.gz).")
@click.option("--storage-dir", required=True, type=PathType)
@click.option("--num-mel-bins", default=config_default("features.num_mel_bins"), show_default=True)
@click.option("--num-jobs", default=config_default("features.num_jobs"), show_default=True)
@click.option(
    "--speed-perturb/--no-speed-perturb",
    default=config_default("features.speed_perturb"),
    show_default=True,
    help="Add copies of every cut at speed 0.9 and 1.1.",
)
@click.option(
    "--on-the-fly/--precomputed",
    default=config_default("features.on_the_fly"),
    show_default=True,
    help="Write cuts without features; the loaders compute fbank from the audio.",
)
def compute_fbank(
    recordings, supervisions, cuts, storage_dir, num_mel_bins, num_jobs, speed_perturb, on_the_fly
) -> None:
    """Compute log-mel filterbank features with lhotse and store them with lilcom."""
    from streamkd.data.features import compute_fbank as run

    run(
        recordings,
        supervisions,
        cuts,
        storage_dir,
        num_mel_bins=num_mel_bins,
        num_jobs=num_jobs,
        speed_perturb=speed_perturb,
        on_the_fly=on_the_fly,
    )


@main.command("prepare-librispeech")
@click.option(
    "--corpus-dir",
    required=True,
    type=ExistingPath,
    help="The folder that holds LibriSpeech/ (or LibriSpeech/ itself).",
)
@click.option("--corpus", "corpus_name", required=True, type=click.Choice(LIBRISPEECH_CORPORA))
@click.option("--out-dir", required=True, type=PathType)
@click.option("--num-jobs", default=1, show_default=True)
def prepare_librispeech(corpus_dir: Path, corpus_name: str, out_dir: Path, num_jobs: int) -> None:
    """Write lhotse manifests of a LibriSpeech corpus (lhotse's prepare_librispeech)."""
    from streamkd.data.librispeech import prepare_librispeech_corpus

    prepare_librispeech_corpus(corpus_dir, corpus_name, out_dir, num_jobs=num_jobs)


@main.command("download-librispeech")
@click.option("--target-dir", required=True, type=PathType, help="LibriSpeech/ is unpacked here.")
@click.option("--corpus", "corpus_name", required=True, type=click.Choice(LIBRISPEECH_CORPORA))
def download_librispeech(target_dir: Path, corpus_name: str) -> None:
    """Download and unpack the LibriSpeech parts a corpus needs (from openslr.org)."""
    from streamkd.data.librispeech import download_librispeech_corpus

    click.echo(download_librispeech_corpus(target_dir, corpus_name))


@main.command("train-bpe")
@click.option("--cuts", required=True, type=ExistingPath, help="Training cuts whose transcripts are used.")
@click.option("--model", "model_path", required=True, type=PathType)
@click.option("--vocab-size", required=True, type=int)
@click.option(
    "--model-type", default=config_default("bpe.model_type"), show_default=True, type=click.Choice(["bpe", "unigram"])
)
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


def _layer_list(value: Optional[str], name: str) -> Optional[List[int]]:
    """Parse a comma-separated list of layer numbers: '3,6' -> [3, 6]."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated layer numbers such as 3,6, got {value!r}", param_hint=name
        ) from None


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
@click.option("--left-chunks", type=int, default=config_default("model.left_chunks"), show_default=True)
@click.option(
    "--threads",
    type=int,
    default=config_default("training.threads"),
    show_default=True,
    help="CPU threads of the job, shared by the processes torchrun starts on this node.",
)
@click.option("--head", "head_json", default=None, help="JSON object of head options (default: a CTC head).")
@click.option(
    "--method",
    default="none",
    show_default=True,
    type=click.Choice(list(METHODS)),
    help="Distillation method of a student.",
)
@click.option("--kd-layers", default=None, help="Student layers to distil (1-based), e.g. 3,6 (layer, aux).")
@click.option("--kd-teacher-layers", default=None, help="Teacher layer for each student layer (default: proportional).")
@click.option(
    "--apc-shift", type=int, default=None, help="Target for position t is teacher frame t+k (aux; layer ablation)."
)
@click.option("--kd", "kd_json", default=None, help="JSON object: the config's kd section (loss, weight, aux, ...).")
@click.option("--teacher", "teacher_checkpoint", type=PathType, default=None, help="Teacher model.pt for KD methods.")
@click.option(
    "--teacher-encoder",
    "teacher_encoder_json",
    default=None,
    help="JSON object: the configured teacher encoder, checked against the checkpoint.",
)
@click.option(
    "--teacher-targets",
    type=ExistingPath,
    default=None,
    help="The teacher cache's cut manifest (kd.teacher_targets: cache), from `streamkd cache-teacher`.",
)
def train(
    role,
    train_cuts,
    dev_cuts,
    bpe_model,
    out_dir,
    encoder_json,
    optimisation_json,
    seed,
    chunk_size,
    left_chunks,
    threads,
    method,
    kd_layers,
    kd_teacher_layers,
    apc_shift,
    kd_json,
    teacher_checkpoint,
    teacher_encoder_json,
    head_json,
    teacher_targets,
) -> None:
    """Train the teacher or a streaming student; resumes from the last checkpoint.

    Data-parallel training runs under torchrun, e.g. ``torchrun --standalone --nproc_per_node 4
    --no_python streamkd train ...`` (one process per GPU; gloo processes on the CPU). On
    SIGTERM or SIGUSR1 training writes a checkpoint and exits with status 128 + the signal.
    """
    from streamkd.training.distributed import threads_per_process
    from streamkd.training.run import train_asr
    from streamkd.training.trainer import TrainingInterrupted

    kd = {"method": method, **(_json_option(kd_json, "--kd") if kd_json else {})}
    for key, value in (
        ("student_layers", _layer_list(kd_layers, "--kd-layers")),
        ("teacher_layers", _layer_list(kd_teacher_layers, "--kd-teacher-layers")),
        ("apc_shift", apc_shift),
    ):
        if value is not None:
            kd[key] = value
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
            kd=kd,
            teacher_checkpoint=teacher_checkpoint,
            teacher_encoder=_json_option(teacher_encoder_json, "--teacher-encoder") if teacher_encoder_json else None,
            head=_json_option(head_json, "--head") if head_json else None,
            teacher_targets=teacher_targets,
        )
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        raise SystemExit(128 + stop.signum) from stop


@main.command("cache-teacher")
@click.option("--teacher", "teacher_checkpoint", required=True, type=PathType, help="The teacher's model.pt.")
@click.option("--cuts", required=True, type=ExistingPath, help="Training cuts (with features) to compute targets for.")
@click.option(
    "--out-cuts",
    required=True,
    type=PathType,
    help="Output: the cuts with their targets (.jsonl.gz); targets.lca and summary.json go beside it.",
)
@click.option("--layers", default=None, help="Teacher layers (1-based) to store, e.g. 2,4.")
@click.option(
    "--posteriors/--no-posteriors",
    default=False,
    show_default=True,
    help="Also store the CTC log-posteriors (token KD).",
)
@click.option("--max-duration", default=60.0, show_default=True, help="Seconds of audio per teacher batch.")
@click.option("--threads", type=int, default=1, show_default=True)
def cache_teacher(teacher_checkpoint, cuts, out_cuts, layers, posteriors, max_duration, threads) -> None:
    """Run the frozen teacher once over the training cuts and store its KD targets (lilcom)."""
    import torch

    from streamkd.distill.teacher import load_teacher
    from streamkd.distill.teacher_cache import TargetSpec, build_teacher_cache

    torch.set_num_threads(threads)
    spec = TargetSpec(_layer_list(layers, "--layers") or (), posteriors)
    teacher = load_teacher(teacher_checkpoint, teacher_layers=spec.layers)
    build_teacher_cache(teacher, teacher_checkpoint, cuts, out_cuts, spec, max_duration=max_duration)


@main.command("bench-kd-step")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=ExistingPath,
    help="Experiment config: model.student, training.student, kd, and the grid's first chunk size and layer set.",
)
@click.option("--teacher", "teacher_checkpoint", required=True, type=ExistingPath)
@click.option("--train-cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out", required=True, type=PathType, help="Output JSON; a Markdown copy goes beside it.")
@click.option("--num-cuts", default=400, show_default=True)
@click.option("--steps", default=20, show_default=True, help="Timed steps per method and round.")
@click.option("--rounds", default=3, show_default=True)
def bench_kd_step(config_path, teacher_checkpoint, train_cuts, bpe_model, out, num_cuts, steps, rounds) -> None:
    """Seconds per training step of every KD method (live teacher vs teacher cache), one thread."""
    from streamkd.benchmarks.kd_step import benchmark_kd_step, markdown, write_report
    from streamkd.config import load_config

    report = benchmark_kd_step(
        teacher_checkpoint,
        train_cuts,
        bpe_model,
        load_config(config_path),
        num_cuts=num_cuts,
        steps=steps,
        rounds=rounds,
    )
    write_report(report, out)
    click.echo(markdown(report))


@main.command("bench-machine")
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=ExistingPath,
    help="Config file(s) merged over config.yaml: the student, batch size and KD layers timed.",
)
@click.option("--out", type=PathType, help="Also write the report as JSON here, with a Markdown copy beside it.")
@click.option(
    "--no-vendor-path", is_flag=True, help="Skip the GEMMs on the BLAS library's own code path (a child process)."
)
def bench_machine(config_files, out, no_vendor_path) -> None:
    """Processor, BLAS, float32 GEMM GFLOP/s and the default student's training step on this machine."""
    from streamkd.benchmarks.machine import benchmark_machine, markdown
    from streamkd.utils import write_json, write_text

    report = benchmark_machine(_merged_config(config_files), compare_vendor_path=not no_vendor_path)
    if out is not None:
        write_json(out, report)
        write_text(out.with_suffix(".md"), markdown(report))
    click.echo(markdown(report))


@main.command("analyse-aux")
@click.option(
    "--run-dir",
    required=True,
    type=ExistingPath,
    help="An aux (or layer) run: model.pt, train_summary.json, checkpoints/.",
)
@click.option("--teacher", "teacher_checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath, help="Held-out cuts, e.g. the dev set.")
@click.option("--max-shift", default=6, show_default=True, help="Largest shift and attention offset measured (frames).")
@click.option("--out", type=PathType, default=None, help="Also write the measurements here (JSON).")
def analyse_aux(run_dir, teacher_checkpoint, cuts, max_shift, out) -> None:
    """KD distance of a trained branch against teacher frame t+k, and its attention by offset."""
    from streamkd.distill.analysis import analyse_aux_run
    from streamkd.utils import write_json

    result = analyse_aux_run(run_dir, teacher_checkpoint, cuts, max_shift=max_shift)
    if out:
        write_json(out, result)
    click.echo(json.dumps(result, indent=1))


@main.command("archive-records")
@click.option("--exp-dir", required=True, type=ExistingPath)
@click.option("--out-dir", required=True, type=PathType, help="e.g. results/embedded-grid/records")
def archive_records(exp_dir, out_dir) -> None:
    """Copy every run record with the errors and training summary it names (to commit as reference results)."""
    from streamkd.results.archive import archive_records as archive

    copied = archive(exp_dir, out_dir)
    click.echo(f"{len(copied)} record(s) copied to {out_dir}")


# The beam settings of every search: option name, its config key under decoding, help.
SEARCH_OPTIONS = (
    ("--search-beam", "search_beam", "CTC graph search beam."),
    ("--output-beam", "output_beam", "CTC lattice beam."),
    ("--beam", "beam", "Hypotheses kept by modified beam search."),
    ("--fast-beam", "fast_beam", "Score beam of fast_beam_search."),
    ("--max-states", "max_states", "fast_beam_search states per frame."),
    ("--max-contexts", "max_contexts", "fast_beam_search contexts per frame."),
    ("--max-symbols-per-frame", "max_symbols_per_frame", "Greedy search."),
)


def search_options(func):
    """Adds the search options (defaults from the config schema), passed on as one ``search`` dict."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        kwargs["search"] = {key: kwargs.pop(key) for _, key, _ in SEARCH_OPTIONS}
        return func(*args, **kwargs)

    for flag, key, help_text in reversed(SEARCH_OPTIONS):
        option = click.option(flag, key, default=config_default(f"decoding.{key}"), show_default=True, help=help_text)
        wrapper = option(wrapper)
    return wrapper


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


def _test_set_paths(items: Tuple[str, ...], option: str) -> Dict[str, Path]:
    paths: Dict[str, Path] = {}
    for item in items:
        test_set, sep, path = item.partition("=")
        if not sep or not test_set or not path:
            raise click.BadParameter(f"expected TEST_SET=PATH, got {item!r}", param_hint=option)
        if test_set in paths:
            raise click.BadParameter(f"test set {test_set!r} given twice", param_hint=option)
        paths[test_set] = Path(path)
    return paths


@main.command("record")
@click.option("--run", "run_name", required=True)
@click.option("--train-summary", required=True, type=ExistingPath)
@click.option(
    "--wer",
    "wer_items",
    multiple=True,
    required=True,
    help="TEST_SET/METHOD=PATH of a WER summary (TEST_SET=PATH with --decoding-method).",
)
@click.option(
    "--errors",
    "errors_items",
    multiple=True,
    help="TEST_SET/METHOD=PATH of the per-utterance errors (errors.jsonl); needed for significance tests.",
)
@click.option(
    "--decode-stats",
    "stats_items",
    multiple=True,
    help="TEST_SET/METHOD=PATH of a decode.json (RTF, latency, streaming).",
)
@click.option(
    "--delay", "delay_items", multiple=True, help="TEST_SET/METHOD=PATH of an emission-delay summary (delay.json)."
)
@click.option("--decoding-method", default=None, help="Method of items that name none.")
@click.option(
    "--data-check",
    "check_items",
    multiple=True,
    help="TEST_SET=PATH of the test set's data-check report (the record counts the excluded utterances).",
)
@click.option(
    "--decoded-model",
    default="final",
    show_default=True,
    help="Which weights were decoded: final (model.pt) or avg-last-N (streamkd average-checkpoints).",
)
@click.option("--out", required=True, type=PathType)
def record(
    run_name: str,
    train_summary: Path,
    wer_items: Tuple[str, ...],
    errors_items: Tuple[str, ...],
    stats_items: Tuple[str, ...],
    decoding_method: Optional[str],
    out: Path,
    delay_items: Tuple[str, ...] = (),
    check_items: Tuple[str, ...] = (),
    decoded_model: str = "final",
) -> None:
    """Write the run record that the tables are built from.

    Paths stored in the record (errors, training summary) are relative to the record's folder.
    """
    from streamkd.results.record import build_record, write_record

    def keyed(items: Tuple[str, ...], option: str) -> dict:
        paths = {}
        for item in items:
            key, sep, path = item.partition("=")
            test_set, _, method = key.partition("/")
            method = method or decoding_method
            if not sep or not test_set or not path or not method:
                raise click.BadParameter(f"expected TEST_SET/METHOD=PATH, got {item!r}", param_hint=option)
            if (test_set, method) in paths:
                raise click.BadParameter(f"{test_set}/{method} given twice", param_hint=option)
            paths[(test_set, method)] = Path(path)
        return paths

    write_record(
        out,
        build_record(
            run_name,
            train_summary,
            keyed(wer_items, "--wer"),
            errors_paths=keyed(errors_items, "--errors"),
            record_dir=out.parent,
            decode_stats=keyed(stats_items, "--decode-stats"),
            delay_stats=keyed(delay_items, "--delay"),
            data_checks=_test_set_paths(check_items, "--data-check"),
            decoded_model=decoded_model,
        ),
    )


def _results_config(results_json: Optional[str], config_file: Optional[Path] = None):
    from streamkd.results.config import ResultsConfig, ResultsConfigError
    from streamkd.results.report import results_config_from_file

    try:
        if results_json is not None:
            return ResultsConfig.from_dict(_json_option(results_json, "--results-config"))
        return results_config_from_file(config_file)
    except ResultsConfigError as e:
        raise click.UsageError(str(e)) from e


def _fail_on_record_errors(func):
    """Bad run records end the command with their list, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from streamkd.results.load import RecordError
        from streamkd.results.significance import ErrorsFileError

        try:
            return func(*args, **kwargs)
        except (RecordError, ErrorsFileError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


RESULTS_CONFIG_HELP = (
    "JSON object: the config's results section (tables, significance, plots). Default: the standard wer table."
)
SKIP_INVALID_HELP = (
    "Leave out unusable run records (each is named in a warning and under the table) instead of failing."
)


@main.command("aggregate")
@click.option("--out-dir", required=True, type=PathType, help="Folder for the tables (e.g. results/tables).")
@click.option("--results-config", "results_json", default=None, help=RESULTS_CONFIG_HELP)
@click.option("--skip-invalid", is_flag=True, help=SKIP_INVALID_HELP)
@click.argument("records", nargs=-1, required=True, type=ExistingPath)
@_fail_on_record_errors
def aggregate(out_dir: Path, results_json: Optional[str], skip_invalid: bool, records: Tuple[Path, ...]) -> None:
    """Aggregate run records into tables: NAME.csv (tidy numbers), .md, .tex (booktabs), .html.

    Also writes runs.csv (every record's WER, unaveraged) and prints the main table.
    """
    from streamkd.results.config import MAIN_TABLE
    from streamkd.results.table_writer import aggregate as run

    run(records, out_dir, _results_config(results_json), skip_invalid=skip_invalid)
    click.echo((out_dir / f"{MAIN_TABLE}.md").read_text())


@main.command("plot")
@click.option("--out-dir", required=True, type=PathType, help="Folder for the figures (e.g. results/plots).")
@click.option("--results-config", "results_json", default=None, help=RESULTS_CONFIG_HELP)
@click.option("--skip-invalid", is_flag=True, help=SKIP_INVALID_HELP)
@click.argument("records", nargs=-1, required=True, type=ExistingPath)
@_fail_on_record_errors
def plot(out_dir: Path, results_json: Optional[str], skip_invalid: bool, records: Tuple[Path, ...]) -> None:
    """Plot WER vs chunk size, WER vs APC shift and the loss curves (PNG and PDF)."""
    from streamkd.results.load import load_records
    from streamkd.results.plots import build_plots

    runs = load_records(records, skip_invalid=skip_invalid).runs
    for paths in build_plots(runs, out_dir, _results_config(results_json)).values():
        for path in paths:
            click.echo(str(path))


@main.command("report")
@click.option(
    "--exp-dir",
    "exp_dirs",
    required=True,
    multiple=True,
    type=ExistingPath,
    help="Folder searched (recursively) for record.json files; repeat it to report several folders together.",
)
@click.option("--out-dir", required=True, type=PathType, help="Tables go to OUT_DIR/tables, plots to OUT_DIR/plots.")
@click.option(
    "--config",
    "config_file",
    type=ExistingPath,
    default=None,
    help="Experiment config (its results section is used) or a YAML file with only the results section.",
)
@click.option("--skip-invalid", is_flag=True, help=SKIP_INVALID_HELP)
@_fail_on_record_errors
def report(exp_dirs: Tuple[Path, ...], out_dir: Path, config_file: Optional[Path], skip_invalid: bool) -> None:
    """Rebuild every table and plot from a folder of run records, and OUT_DIR/report.html.

    report.html is one self-contained page (no scripts, nothing fetched) with every table,
    figure and caption.
    """
    from streamkd.results.config import MAIN_TABLE
    from streamkd.results.report import report_from_exp_dir

    outputs = report_from_exp_dir(exp_dirs, out_dir, _results_config(None, config_file), skip_invalid=skip_invalid)
    click.echo((outputs.table_dir / f"{MAIN_TABLE}.md").read_text())
    click.echo(f"tables: {outputs.table_dir}/{{{','.join(outputs.tables)}}}.{{csv,md,tex,html}}")
    click.echo(f"plots:  {out_dir / 'plots'}/{{{','.join(outputs.plots)}}}.{{png,pdf}}")
    click.echo(f"page:   {outputs.page}")


@main.command("export")
@click.option("--checkpoint", required=True, type=ExistingPath, help="A streaming student's model.pt.")
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out-dir", required=True, type=PathType, help="The model folder to write.")
@click.option("--hlg", type=ExistingPath, default=None, help="HLG.pt to ship beside the model (ctc-hlg).")
@click.option("--chunk-size", type=int, default=None, help="Export with another chunk size than the model's.")
@click.option("--left-chunks", type=int, default=None, help="Export with another left context (-1 = all).")
@click.option("--onnx/--no-onnx", default=True, show_default=True)
@click.option("--torchscript/--no-torchscript", default=True, show_default=True)
def export(checkpoint, bpe_model, out_dir, hlg, chunk_size, left_chunks, onnx, torchscript) -> None:
    """Write a model folder: model.pt, bpe.model, graphs, and the streaming encoder as ONNX and TorchScript.

    The encoder takes one chunk of fbank frames plus its states and returns the chunk's frames
    plus new states; chunk size, left context, lookahead, vocabulary and feature settings are
    embedded as metadata. `streamkd transcribe --model-dir OUT_DIR` decodes with the folder.
    """
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


@main.command("emission-delay")
@click.option("--checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--reference", required=True, type=ExistingPath, help="Reference times from align-reference.")
@click.option(
    "--method",
    default="ctc-1best-streaming",
    show_default=True,
    type=click.Choice(METHOD_NAMES),
    help="A token-level method: '-streaming' times chunk by chunk, others frame by frame (offline).",
)
@click.option("--graph", type=ExistingPath, default=None, help="ctc_topo.pt for ctc-1best.")
@click.option("--emissions", required=True, type=PathType, help="Output: per-utterance tokens, emission times, delays.")
@click.option("--summary", required=True, type=PathType, help="Output: mean/median/p90 delay (JSON).")
@click.option("--chunk-size", type=int, default=None, help="Override the streaming model's chunk size.")
@search_options
@click.option("--max-duration", default=120.0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def emission_delay(
    checkpoint,
    cuts,
    bpe_model,
    reference,
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
    """When each hypothesis token is emitted, and its delay against the reference times."""
    import torch

    from streamkd.decode.emission import measure_emission_delay
    from streamkd.decode.run import SearchOptions

    torch.set_num_threads(threads)
    options = SearchOptions(**search)
    result = measure_emission_delay(
        checkpoint,
        cuts,
        bpe_model,
        reference,
        emissions,
        summary,
        method=method,
        graph_path=graph,
        chunk_size=chunk_size,
        options=options,
        max_duration=max_duration,
        device=device,
    )
    log.info("emission delay: %s", result)


@main.command("check-data")
@click.option("--cuts", required=True, type=ExistingPath, help="Cut manifest written by compute-fbank.")
@click.option(
    "--supervisions",
    type=ExistingPath,
    default=None,
    help="The split's supervisions: those without a cut (audio lhotse could not read) count as excluded.",
)
@click.option(
    "--recordings", type=ExistingPath, default=None, help="The split's recordings, to say why audio was unreadable."
)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--split", required=True, help="Name of the split, for messages and the report.")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(["train", "dev", "test"]),
    help="train/dev: bad cuts are excluded up to a share; test: bad cuts fail unless allowed.",
)
@click.option(
    "--head",
    "head_type",
    default="ctc",
    show_default=True,
    type=click.Choice(["ctc", "transducer", "transducer+ctc"]),
    help="Which loss's length bound applies.",
)
@click.option(
    "--max-utterance-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="train/dev: longer utterances are excluded.",
)
@click.option(
    "--max-excluded-fraction",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="train/dev: fail when a larger share of the cuts is excluded.",
)
@click.option(
    "--allow-test-exclusion", is_flag=True, help="test: exclude bad cuts (and report them) instead of failing."
)
@click.option("--out-cuts", required=True, type=PathType, help="Output: the cuts that passed.")
@click.option(
    "--report",
    "report_path",
    required=True,
    type=PathType,
    help="Output: counts by reason and the excluded cut ids (JSON).",
)
def check_data(
    cuts,
    supervisions,
    recordings,
    bpe_model,
    split,
    kind,
    head_type,
    max_utterance_seconds,
    max_excluded_fraction,
    allow_test_exclusion,
    out_cuts,
    report_path,
) -> None:
    """Check a split's cuts before training or decoding; write the usable ones and a report."""
    from streamkd.data.check import CheckPolicy, run_data_check

    policy = CheckPolicy(
        kind=kind,
        head=head_type,
        max_utterance_seconds=max_utterance_seconds,
        max_excluded_fraction=max_excluded_fraction,
        allow_test_exclusion=allow_test_exclusion,
    )
    run_data_check(cuts, supervisions, bpe_model, out_cuts, report_path, policy, split, recordings_path=recordings)


@main.command("average-checkpoints")
@click.option("--run-dir", required=True, type=ExistingPath, help="A run folder: model.pt and checkpoints/epoch-K.pt.")
@click.option("--last", required=True, type=click.IntRange(min=1), help="Average the weights of the last N epochs.")
@click.option("--out", required=True, type=PathType, help="The averaged model, in model.pt's format.")
def average_checkpoints(run_dir: Path, last: int, out: Path) -> None:
    """Average the decodable model's weights over the last N epoch checkpoints (icefall's --avg)."""
    from streamkd.training.averaging import average_last_epochs

    click.echo(str(average_last_epochs(run_dir, last, out)))


def _merged_config(config_files: Tuple[Path, ...]) -> dict:
    """The repository's config.yaml with each file merged over it, as Snakemake's --configfile does."""
    import yaml
    from snakemake.utils import update_config

    from streamkd.config import validate_config

    # The workflow's default config: in the folder Snakemake runs in, or beside the package in a checkout.
    candidates = [Path.cwd() / "config.yaml", Path(__file__).resolve().parents[1] / "config.yaml"]
    base = next((c for c in candidates if c.is_file()), None)
    if base is None:
        raise click.UsageError(
            f"--config is merged over config.yaml, found in neither {' nor '.join(map(str, candidates))}"
        )
    config = yaml.safe_load(base.read_text())
    for path in config_files:
        update_config(config, yaml.safe_load(path.read_text()) or {})
    validate_config(config, source=" + ".join(map(str, config_files)))
    return config


@main.command("progress")
@click.argument("exp_dir", type=ExistingPath)
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=ExistingPath,
    help="The run's --configfile(s), merged over config.yaml: lists runs not started yet and their epochs.",
)
@click.option(
    "--parallel",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training jobs that run side by side (for the estimate of the rest).",
)
@click.option("--watch", is_flag=True, help="Redraw until every run has finished (Ctrl-C stops).")
@click.option("--interval", default=10.0, show_default=True, help="Seconds between redraws with --watch.")
@click.option(
    "--project",
    is_flag=True,
    help="Instead: the whole grid's training time on this machine, from step times measured now (needs --config).",
)
@click.option(
    "--train-cuts",
    type=PathType,
    default=None,
    help="With --project: the training cuts [default: DATA_DIR/fbank/cuts_train.checked.jsonl.gz].",
)
def progress(
    exp_dir: Path,
    config_files: Tuple[Path, ...],
    parallel: int,
    watch: bool,
    interval: float,
    project: bool,
    train_cuts: Optional[Path],
) -> None:
    """Per run of EXP_DIR: epoch of total, step, recent loss, audio s/s, ETA; and the rest of the workflow."""
    import time

    from streamkd.training.progress import estimate_rest, expected_epochs, expected_runs, experiment_progress, render

    config = _merged_config(config_files) if config_files else None
    if project:
        if config is None:
            raise click.UsageError("--project needs the grid's --config file(s)")
        from streamkd.benchmarks.projection import project_grid, render_projection
        from streamkd.utils import cpu_model

        cuts = train_cuts or Path(config["data_dir"]) / "fbank" / "cuts_train.checked.jsonl.gz"
        click.echo(render_projection(project_grid(config, cuts), parallel, cpu_model()))
        return
    runs_expected = expected_runs(config) if config else []
    epochs = expected_epochs(config) if config else {}
    while True:
        runs = experiment_progress(exp_dir, runs_expected)
        view = render(runs, estimate_rest(runs, epochs, parallel), parallel)
        if not watch:
            click.echo(view)
            return
        click.clear()
        click.echo(f"{exp_dir}  {time.strftime('%H:%M:%S')}\n\n{view}")
        if runs and all(r.status == "finished" for r in runs):
            return
        time.sleep(interval)


@main.command("prepare-manifests")
@click.option("--corpus-config", required=True, help="JSON object: the config's corpus section (name: manifests).")
@click.option("--out-dir", required=True, type=PathType)
def prepare_manifests(corpus_config: str, out_dir: Path) -> None:
    """Check your own lhotse manifests and write the pipeline's train, dev and test splits."""
    from streamkd.data.manifests import prepare_manifests_corpus

    prepare_manifests_corpus(_json_option(corpus_config, "--corpus-config"), out_dir)


if __name__ == "__main__":
    main()
