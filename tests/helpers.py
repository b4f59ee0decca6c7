"""Helpers shared by the test modules (imported as ``from helpers import ...``).

Fixtures live in conftest.py; plain functions, constants and markers live here, so that no
test module imports conftest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


HAVE_TTS = shutil.which("espeak-ng") is not None and shutil.which("flite") is not None
requires_tts = pytest.mark.skipif(
    not HAVE_TTS,
    reason="espeak-ng and flite are needed (workflow/scripts/setup.sh installs them)",
)


DRY_RUN_TIMEOUT_S = 180


def run_snakemake(
    directory: Path, *args, configfiles=(), env=None, check: bool = False, timeout: float = 840
) -> subprocess.CompletedProcess:
    """``python -m snakemake ARGS`` with this repository's Snakefile, working in ``directory``.

    The timeout only guards against a hang: the micro pipeline takes about 3 minutes on an
    idle 2-core machine and several times that on a busy one; a dry run takes seconds.
    """
    if "-n" in args or "--dry-run" in args:
        timeout = min(timeout, DRY_RUN_TIMEOUT_S)
    configs = ["--configfile", *map(str, configfiles)] if configfiles else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *map(str, args),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(directory),
            *configs,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=check,
        timeout=timeout,
    )


def job_counts(dry_run_stdout: str) -> Counter:
    """Rule name -> number of jobs, read from the job-stats table ``snakemake -n`` prints."""
    return Counter(
        {
            p[0]: int(p[1])
            for p in (line.split() for line in dry_run_stdout.splitlines())
            if len(p) == 2 and p[1].isdigit()
        }
    )


def write_feature_cuts(directory: Path, feats, texts, name: str = "cuts"):
    """A lhotse cut manifest over in-test feature matrices (T_i, F), one supervision each."""
    from lhotse import CutSet, Features, LilcomChunkyWriter, MonoCut, SupervisionSegment

    directory.mkdir(parents=True, exist_ok=True)
    cuts = []
    with LilcomChunkyWriter(directory / f"{name}_feats") as writer:
        for i, (matrix, text) in enumerate(zip(feats, texts)):
            cut_id = f"{name}-{i:03d}"
            duration = matrix.shape[0] * 0.01
            key = writer.write(cut_id, matrix.numpy())
            features = Features(
                type="fbank",
                num_frames=matrix.shape[0],
                num_features=matrix.shape[1],
                frame_shift=0.01,
                sampling_rate=16000,
                start=0.0,
                duration=duration,
                storage_type=writer.name,
                storage_path=str(writer.storage_path),
                storage_key=key,
                channels=0,
                recording_id=cut_id,
            )
            supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, text=text)
            cuts.append(
                MonoCut(
                    id=cut_id, start=0.0, duration=duration, channel=0, supervisions=[supervision], features=features
                )
            )
    path = directory / f"{name}.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def train_tiny_bpe(directory: Path, sentences, vocab_size: int = 30) -> Path:
    """A small sentencepiece model over ``sentences`` (blank at id 0, as the pipeline's)."""
    from streamkd.data.tokenizer import train_bpe

    path = directory / "bpe.model"
    train_bpe(sentences, path, vocab_size)
    return path


def mixed_engine_corpus_config(**overrides):
    """An embedded-corpus config with voices of both engines (espeak-ng and flite).

    config.yaml's default corpus uses espeak-ng only; the synthesis tests need flite too.
    Seven voices plus a held-out one, so 8 test utterances give every voice one.
    """
    from dataclasses import replace

    from streamkd.data.embedded import CorpusConfig, Voice

    voices = [
        Voice("espeak-en-us", "espeak-ng", "en-us"),
        Voice("espeak-en-gb-scotland", "espeak-ng", "en-gb-scotland"),
        Voice("espeak-en-029-f2", "espeak-ng", "en-029+f2"),
        Voice("espeak-en-gb-x-rp-m3", "espeak-ng", "en-gb-x-rp+m3"),
        Voice("flite-kal16", "flite", "kal16"),
        Voice("flite-slt", "flite", "slt"),
        Voice("flite-rms", "flite", "rms"),
    ]
    config = CorpusConfig(
        seed=0,
        num_train=2000,
        num_dev=150,
        num_test=150,
        voices=voices,
        heldout_test_voice=Voice("espeak-en-us-f4", "espeak-ng", "en-us+f4"),
        speed_range=(0.85, 1.15),
        pitch_range=(30, 70),
        snr_db_range=(10.0, 30.0),
    )
    return replace(config, **overrides)


def default_corpus_config():
    """The embedded corpus of config.yaml, as the workflow passes it to ``prepare-embedded``."""
    import yaml

    from streamkd.data.embedded import CorpusConfig

    corpus = dict(yaml.safe_load((REPO / "config.yaml").read_text())["corpus"])
    for workflow_only in ("name", "num_jobs"):
        corpus.pop(workflow_only, None)
    return CorpusConfig.from_dict(corpus)


CLI_TIMEOUT = 300  # seconds for one streamkd command in a test


CTC_VOCAB = 6  # blank and five tokens: hand-written CTC posteriors


def ctc_posteriors(frames):
    """Log-posteriors that put (almost) all mass on the given token per frame."""
    logits = torch.full((len(frames), CTC_VOCAB), -8.0)
    for t, token in enumerate(frames):
        logits[t, token] = 4.0
    return logits.log_softmax(-1)


def ctc_batch(*utterances):
    """A padded (B, T, CTC_VOCAB) batch of :func:`ctc_posteriors` and its lengths."""
    max_len = max(len(u) for u in utterances)
    x = torch.full((len(utterances), max_len, CTC_VOCAB), -8.0).log_softmax(-1)
    for i, u in enumerate(utterances):
        x[i, : len(u)] = ctc_posteriors(u)
    return x, torch.tensor([len(u) for u in utterances])


def env_without_k2(directory: Path) -> dict:
    """The environment of a process in which ``import k2`` fails, as where k2 is not installed."""
    stub = directory / "hidden-k2" / "k2"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text('raise ImportError("k2 is hidden from this process")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(stub.parent), env.get("PYTHONPATH", "")) if p)
    return env


def streamkd_cli(*args, env=None) -> subprocess.CompletedProcess:
    """``python -m streamkd.cli ARGS``, output captured, with a timeout."""
    return subprocess.run(
        [sys.executable, "-m", "streamkd.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failing command prints; the test fails on a traceback."""
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]
