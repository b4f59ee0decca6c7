"""Data commands: corpora, manifests, features, the data check and the BPE model."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from streamkd.cli.common import LIBRISPEECH_CORPORA, ExistingPath, PathType, main
from streamkd.cli.support import json_option
from streamkd.schema import config_default

log = logging.getLogger("streamkd")


@main.command("prepare-embedded")
@click.option("--corpus-config", required=True, help="JSON object: the config's corpus section.")
@click.option("--out-dir", required=True, type=PathType)
@click.option("--num-jobs", default=config_default("corpus.num_jobs"), show_default=True)
def prepare_embedded(corpus_config: str, out_dir: Path, num_jobs: int) -> None:
    """Synthesise the embedded corpus and write its lhotse manifests."""
    from streamkd.data.embedded import CorpusConfig, prepare_embedded_corpus

    options = json_option(corpus_config, "--corpus-config")
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


@main.command("prepare-manifests")
@click.option("--corpus-config", required=True, help="JSON object: the config's corpus section (name: manifests).")
@click.option("--out-dir", required=True, type=PathType)
def prepare_manifests(corpus_config: str, out_dir: Path) -> None:
    """Check your own lhotse manifests and write the pipeline's train, dev and test splits."""
    from streamkd.data.manifests import prepare_manifests_corpus

    prepare_manifests_corpus(json_option(corpus_config, "--corpus-config"), out_dir)
